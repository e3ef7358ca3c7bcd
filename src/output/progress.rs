//! Progress of an apply on the terminal: the `apply::Progress` seam as plain lines, JSON lines
//! or a progress bar.
//!
//! These never write to the terminal themselves: they hand finished lines to a `LineWriter`
//! callback built from `Output`. The one exception is `Bar`, whose indicatif bar draws itself
//! on stderr. Events carry addresses, actions and error messages, never a secret. Lines are
//! escaped on their way out (`Output::status`); JSON lines are written with
//! `escape::json_compact`, so they hold nothing left to escape; the bar's message, which
//! indicatif draws itself, is escaped here.

use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::{LogFormat, Output};
use crate::apply::{Outcome, Progress};
use crate::plan::{Action, Address};

impl Output {
    /// The progress an apply of `total` steps shows: JSON lines with `--log-format json`, a
    /// bar when stderr is a terminal, else plain lines; all on stderr, none when quiet.
    pub fn progress(&self, total: usize) -> Arc<dyn Progress> {
        let status = |output: &Output| {
            let output = output.clone();
            move |line: &str| output.status(line)
        };
        match self.log_format {
            LogFormat::Json => Arc::new(JsonLines::new(status(self))),
            LogFormat::Text if self.stderr_tty && self.verbosity >= 0 => {
                Arc::new(Bar::new(u64::try_from(total).unwrap_or(u64::MAX), status(self)))
            }
            LogFormat::Text => Arc::new(PlainLines::new(status(self))),
        }
    }
}

/// Where a progress's lines go (e.g. `move |l| output.status(l)`). Lines have no newline.
pub type LineWriter = Box<dyn Fn(&str) + Send + Sync>;

fn past_tense(action: Action) -> &'static str {
    match action {
        Action::Create => "created",
        Action::Update => "updated",
        Action::Issue => "issued and stored",
        Action::Deactivate => "deactivated",
        Action::Delete => "deleted",
    }
}

/// The text line of a finished step, e.g. `+ company/Acme: created`.
pub fn plain_line(address: &Address, action: Action, outcome: &Outcome) -> String {
    let symbol = action.symbol();
    match outcome {
        Outcome::Done => format!("{symbol} {address}: {}", past_tense(action)),
        Outcome::Adopted => format!("{symbol} {address}: already existed, adopted"),
        Outcome::Failed { error } => format!("{symbol} {address}: {action} failed: {error}"),
        Outcome::Skipped { dependency } => {
            format!("{symbol} {address}: skipped because `{dependency}` failed")
        }
    }
}

/// One text line per finished step.
pub struct PlainLines {
    write: LineWriter,
}

impl PlainLines {
    pub fn new(write: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Self { write: Box::new(write) }
    }
}

impl Progress for PlainLines {
    fn started(&self, _: &Address, _: Action) {}
    fn finished(&self, address: &Address, action: Action, outcome: &Outcome) {
        (self.write)(&plain_line(address, action, outcome));
    }
}

/// One JSON object per line for every event (`--log-format json`):
/// `{"event":"started","address":…,"action":…}` and
/// `{"event":"finished","address":…,"action":…,"outcome":"done|adopted|failed|skipped"[,"error":…,"error_kind":…][,"dependency":…]}`
/// (`error_kind`: `refused`, `conflict`, `outcome_unknown`, `store_failed` or `failed`).
pub struct JsonLines {
    write: LineWriter,
}

impl JsonLines {
    pub fn new(write: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Self { write: Box::new(write) }
    }
}

impl Progress for JsonLines {
    fn started(&self, address: &Address, action: Action) {
        let line = json!({"timestamp": super::now_rfc3339(), "level": "INFO", "event": "started",
                          "address": address, "action": action});
        (self.write)(&json_line(&line));
    }
    fn finished(&self, address: &Address, action: Action, outcome: &Outcome) {
        let mut line = json!({"timestamp": super::now_rfc3339(), "event": "finished", "address": address,
                   "action": action, "outcome": outcome.kind()});
        line["level"] = json!(if matches!(outcome, Outcome::Failed { .. }) { "ERROR" } else { "INFO" });
        match outcome {
            Outcome::Failed { error } => {
                line["error"] = json!(error.message);
                line["error_kind"] = json!(error.kind);
            }
            Outcome::Skipped { dependency } => line["dependency"] = json!(dependency),
            Outcome::Done | Outcome::Adopted => {}
        }
        (self.write)(&json_line(&line));
    }
}

/// A JSON event as one line, escaped as JSON (`escape::json_compact`).
fn json_line(line: &serde_json::Value) -> String {
    // Serializing a `Value` cannot fail (string keys only).
    crate::escape::json_compact(line).unwrap_or_default()
}

/// A progress bar on a terminal; failures and skips are also written as lines above the bar.
pub struct Bar {
    bar: ProgressBar,
    write: LineWriter,
}

impl Bar {
    /// A bar of `total` steps drawn on stderr.
    pub fn new(total: u64, write: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Self::with_bar(ProgressBar::new(total), write)
    }

    /// Use this bar (e.g. `ProgressBar::hidden()` in tests).
    pub fn with_bar(bar: ProgressBar, write: impl Fn(&str) + Send + Sync + 'static) -> Self {
        // The template is a constant; if indicatif ever rejected it, the default style is fine.
        let style = ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        Self { bar, write: Box::new(write) }
    }

    /// Steps finished so far.
    pub fn position(&self) -> u64 {
        self.bar.position()
    }

    /// Remove the bar (the executor does, through `all_finished`, before the summary is printed).
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Progress for Bar {
    fn started(&self, address: &Address, action: Action) {
        let address = address.to_string();
        self.bar.set_message(format!("{} {}", action.symbol(), crate::escape::terminal(&address)));
    }
    fn finished(&self, address: &Address, action: Action, outcome: &Outcome) {
        self.bar.inc(1);
        if matches!(outcome, Outcome::Failed { .. } | Outcome::Skipped { .. }) {
            let line = plain_line(address, action, outcome);
            self.bar.suspend(|| (self.write)(&line));
        }
    }
    fn all_finished(&self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::apply::{StepError, StepErrorKind};
    use crate::model::Email;

    fn collector() -> (Arc<Mutex<Vec<String>>>, impl Fn(&str) + Send + Sync + 'static) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        (lines, move |l: &str| sink.lock().expect("lock").push(l.to_string()))
    }

    #[test]
    fn plain_lines_are_one_line_per_finished_step() {
        let (lines, write) = collector();
        let o = PlainLines::new(write);
        let a = Address::Company("Acme".into());
        o.started(&a, Action::Create);
        o.finished(&a, Action::Create, &Outcome::Done);
        let t = Address::Token(Email::new("a@x"));
        o.finished(&t, Action::Issue, &Outcome::Skipped { dependency: a.clone() });
        assert_eq!(
            *lines.lock().expect("lock"),
            vec![
                "+ company/Acme: created".to_string(),
                "* token/a@x: skipped because `company/Acme` failed".to_string()
            ]
        );
    }

    #[test]
    fn json_lines_are_one_object_per_event() {
        let (lines, write) = collector();
        let o = JsonLines::new(write);
        let a = Address::ServiceUser(Email::new("a@x"));
        o.started(&a, Action::Update);
        let error = StepError::new(StepErrorKind::Refused, "PATCH /api/users/1 answered 403");
        o.finished(&a, Action::Update, &Outcome::Failed { error });
        let lines = lines.lock().expect("lock").clone();
        let parsed: Vec<serde_json::Value> =
            lines.iter().map(|l| serde_json::from_str(l).expect("json line")).collect();
        assert!(humantime::parse_rfc3339(parsed[0]["timestamp"].as_str().expect("a timestamp")).is_ok());
        assert_eq!((parsed[0]["level"].as_str(), parsed[1]["level"].as_str()), (Some("INFO"), Some("ERROR")));
        assert_eq!(
            (&parsed[0]["event"], &parsed[0]["address"], &parsed[0]["action"]),
            (&json!("started"), &json!("service_user/a@x"), &json!("update"))
        );
        assert_eq!(parsed[1]["outcome"], "failed");
        assert_eq!(parsed[1]["error"], "PATCH /api/users/1 answered 403");
        assert_eq!(parsed[1]["error_kind"], "refused");
    }

    #[test]
    fn the_bar_counts_steps_and_writes_only_problems() {
        let (lines, write) = collector();
        let o = Bar::with_bar(ProgressBar::hidden(), write);
        let a = Address::Company("Acme".into());
        o.finished(&a, Action::Create, &Outcome::Done);
        o.finished(&a, Action::Update, &Outcome::Failed { error: StepError::failed("boom") });
        assert_eq!(o.position(), 2);
        assert_eq!(*lines.lock().expect("lock"), vec!["~ company/Acme: update failed: boom".to_string()]);
        o.finish();
    }
}
