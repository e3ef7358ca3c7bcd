//! Outcomes to the terminal and to exit codes: the one place that knows both.
//!
//! Operations (`ops`) never print and never end the process; they talk through the `View` and
//! `Approve` ports and hand back outcomes. Here are the terminal's implementations of those
//! ports (`Terminal`, `Prompt`) and the exit-code policy of the contract:
//! 0 success, 1 error (usage, API, partial apply, stale plan, conflicts, guard), 2/3 from
//! `plan --detailed-exitcode` (changes / changes with a removal), 130/143 an apply stopped by
//! SIGINT/SIGTERM after finishing its steps in flight.

use std::fmt::Write as _;
use std::sync::Arc;

use crate::apply::{ApplyReport, Progress};
use crate::error::{Error, Exit};
use crate::metrics::Metrics;
use crate::ops::apply::ApplyOutcome;
use crate::ops::reconcile::{CycleResult, CycleSummary};
use crate::ops::{Approval, Approve, View};
use crate::output::{LogFormat, Output};
use crate::plan::{Plan, Summary, format};
use crate::render;

use super::interrupt::Signal;

/// How a plan is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanFormat {
    Text,
    Json,
    Markdown,
}

/// The terminal as an operation's `View`: plans on stdout in `format`, warnings and status lines
/// on stderr, progress as `Output` draws it.
#[derive(Debug, Clone)]
pub struct Terminal {
    output: Output,
    format: PlanFormat,
    /// Markdown only: at most this many bytes (`--max-bytes`).
    max_bytes: Option<usize>,
}

impl Terminal {
    /// Plans shown as the Terraform-like text.
    pub fn new(output: &Output) -> Self {
        Self::with_format(output, PlanFormat::Text, None)
    }

    pub fn with_format(output: &Output, format: PlanFormat, max_bytes: Option<usize>) -> Self {
        Self { output: output.clone(), format, max_bytes }
    }
}

/// `plan` in `format`, as `plan` and `show` print it: text (coloured when `color`), the saved
/// plan's JSON, or Markdown (within `max_bytes` when given).
pub fn rendered(plan: &Plan, format: PlanFormat, color: bool, max_bytes: Option<usize>) -> String {
    match format {
        PlanFormat::Text => render::text(plan, &render::Style { color }),
        PlanFormat::Json => format::to_json(plan),
        PlanFormat::Markdown => render::markdown_within(plan, max_bytes),
    }
}

impl View for Terminal {
    fn warning(&self, text: &str) {
        self.output.warn(text);
    }
    fn status(&self, text: &str) {
        self.output.status(text);
    }
    fn plan(&self, plan: &Plan) {
        self.output.print(&rendered(plan, self.format, self.output.color, self.max_bytes));
    }
    fn text(&self, text: &str) {
        self.output.print(text);
    }
    fn progress(&self, total: usize) -> Arc<dyn Progress> {
        self.output.progress(total)
    }
    fn cycle(&self, summary: &CycleSummary, error: Option<&Error>) {
        if let Some(error) = error {
            self.output.diagnostic(error);
        }
        match self.output.log_format {
            LogFormat::Json => self.output.status(&cycle_json(summary)),
            LogFormat::Text => self.output.status(&cycle_line(summary)),
        }
    }
}

/// The counts of a summary, each action that has any: `1 create, 2 issue`, or `none`.
fn counts(summary: &Summary) -> String {
    let parts: Vec<String> = [
        ("create", summary.create),
        ("update", summary.update),
        ("issue", summary.issue),
        ("deactivate", summary.deactivate),
        ("delete", summary.delete),
    ]
    .iter()
    .filter(|(_, n)| *n > 0)
    .map(|(action, n)| format!("{n} {action}"))
    .collect();
    if parts.is_empty() { "none".into() } else { parts.join(", ") }
}

/// The text summary of a cycle, e.g. `cycle 3 success in 0.42s: planned 1 update, 1 issue;
/// applied 1 update, 1 issue; failed none; skipped none; 0 removals held back`.
pub fn cycle_line(summary: &CycleSummary) -> String {
    let mut line = format!(
        "cycle {} {} in {:.2}s: planned {}; applied {}; failed {}; skipped {}; {} removal{} held back",
        summary.cycle,
        summary.result.as_str(),
        summary.duration.as_secs_f64(),
        counts(&summary.planned),
        counts(&summary.applied),
        counts(&summary.failed),
        counts(&summary.skipped),
        summary.removals_held_back,
        if summary.removals_held_back == 1 { "" } else { "s" },
    );
    if summary.conflicts > 0 {
        let _ = write!(line, "; {}", crate::words::count(summary.conflicts, "conflict", "conflicts"));
    }
    if summary.interrupted {
        line.push_str("; interrupted");
    }
    line
}

/// The JSON summary event of a cycle (`--log-format json`), one line:
/// `{"timestamp","level","event":"cycle","cycle","result","duration_seconds","planned":{…},
/// "applied":{…},"failed":{…},"skipped":{…},"removals_held_back","conflicts","interrupted"}`.
pub fn cycle_json(summary: &CycleSummary) -> String {
    let level = match summary.result {
        CycleResult::Success => "INFO",
        CycleResult::Partial => "WARN",
        CycleResult::Failure => "ERROR",
    };
    let line = serde_json::json!({
        "timestamp": crate::output::now_rfc3339(),
        "level": level,
        "event": "cycle",
        "cycle": summary.cycle,
        "result": summary.result.as_str(),
        "duration_seconds": summary.duration.as_secs_f64(),
        "planned": summary.planned,
        "applied": summary.applied,
        "failed": summary.failed,
        "skipped": summary.skipped,
        "removals_held_back": summary.removals_held_back,
        "conflicts": summary.conflicts,
        "interrupted": summary.interrupted,
    });
    // Serializing a `Value` cannot fail (string keys only).
    crate::escape::json_compact(&line).unwrap_or_default()
}

/// `--metrics-file PATH`: the run's metrics in the Prometheus text format, written atomically
/// (the textfile collector never reads half a file). A failure to write is a warning: the run's
/// own outcome decides the exit code.
pub fn write_metrics_file(path: Option<&std::path::Path>, metrics: Option<&Metrics>, output: &Output) {
    let (Some(path), Some(metrics)) = (path, metrics) else { return };
    if let Err(e) = crate::ops::files::write_atomically(path, metrics.encode().as_bytes()) {
        output.warn(&format!("the metrics were not written: {e}"));
    }
}

/// Approval on the terminal, Terraform-style (only `yes` approves), or given beforehand with
/// `--auto-approve`.
#[derive(Debug, Clone)]
pub struct Prompt {
    output: Output,
    auto_approve: bool,
}

impl Prompt {
    pub fn new(output: &Output, auto_approve: bool) -> Self {
        Self { output: output.clone(), auto_approve }
    }
}

impl Approve for Prompt {
    fn approve(&self, _: &Plan) -> Approval {
        if self.auto_approve {
            Approval::Approved
        } else if !self.output.stdin_tty() {
            Approval::CannotAsk
        } else if self.output.confirm("Do you want to perform these actions?") {
            Approval::Approved
        } else {
            Approval::Declined
        }
    }
}

/// The exit status of a finished plan: conflicts are errors; with `detailed_exitcode`, 2 says
/// there are changes, 3 that at least one of them is a removal (a pipeline can apply additive
/// plans on its own and hold destructive ones for a person).
pub fn plan_exit(plan: &Plan, detailed_exitcode: bool) -> Result<Exit, Error> {
    if !plan.conflicts.is_empty() {
        return Err(Error::Usage {
            message: format!(
                "{} a manual fix before the manifests can converge",
                match plan.conflicts.len() {
                    1 => "1 conflict needs".to_string(),
                    n => format!("{n} conflicts need"),
                }
            ),
            help: "see the conflicts above; each says how to fix it".into(),
        });
    }
    Ok(match (detailed_exitcode, plan.has_changes(), plan.has_removals()) {
        (true, _, true) => Exit::Removals,
        (true, true, false) => Exit::Changes,
        _ => Exit::Success,
    })
}

/// Print the summary line of an apply; an apply stopped by a signal ends with the signal's
/// code (130, 143), a partial apply or unresolved conflicts with exit 1.
pub fn apply_exit(outcome: ApplyOutcome, signal: Option<Signal>, output: &Output) -> Result<Exit, Error> {
    let Some(report) = outcome.report else { return plan_exit(&outcome.plan, false) };
    output.print(&format!("\n{}\n", report.summary_line()));
    if let Some(signal) = signal {
        warn_failures(&report, output);
        return Ok(signal.exit());
    }
    report.into_result()?;
    plan_exit(&outcome.plan, false)
}

/// An interrupted apply has no error to end with: its failures are said as warnings.
fn warn_failures(report: &ApplyReport, output: &Output) {
    for failed in &report.failed {
        output.warn(&format!("`{}` failed: {}", failed.address, failed.error));
    }
}

/// The exit code of an operation's error. Every error of the contract is 1, except a stop by a
/// signal before anything was done, which ends with the signal's code (and says nothing more:
/// the signal's handler said it).
pub fn error_exit(error: &Error, signal: Option<Signal>) -> Exit {
    match error {
        Error::Cancelled => signal.map_or(Exit::Interrupted, Signal::exit),
        Error::Manifest(_)
        | Error::Oz(_)
        | Error::Plan(_)
        | Error::Apply(_)
        | Error::TokenStore(_)
        | Error::Secret(_)
        | Error::Emulator(_)
        | Error::Usage { .. }
        | Error::Io { .. } => Exit::Failure,
    }
}

/// Report `error` (scrubbed, located) unless it is a stop by a signal, and give its exit code.
pub fn fail(error: Error, signal: Option<Signal>, output: &Output) -> Exit {
    let exit = error_exit(&error, signal);
    if !matches!(error, Error::Cancelled) {
        output.report(&miette::Report::new(error));
    }
    exit
}
