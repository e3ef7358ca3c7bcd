//! `ozform reconcile`: flags → `ops::settings::ReconcileSettings`, the metrics (served with
//! `--metrics-listen`, written with `--metrics-file`), then `ops::reconcile` with the terminal as
//! its view. Its installations are found as `plan` and `apply` find them (`cli::installations`):
//! the project file's (each plan shown under its installation's heading, its warnings prefixed
//! with its name), or without one those of `PATHS` and the connection flags. A loop ends only on
//! a signal (130 / 143, once the steps in flight are done and their tokens stored); `--once`
//! ends with `apply`'s exit codes, with a project file the most severe of the installations'.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Exit};
use crate::metrics::Metrics;
use crate::metrics::server::Server;
use crate::ops::Measure;
use crate::ops::reconcile::{Once, ReconcileOutcome};
use crate::ops::settings::{ReconcileSettings, Schedule};
use crate::ops::{Each, Ran};
use crate::output::Output;
use crate::secret::process_env;

use super::ReconcileArgs;
use super::connection::Url;
use super::installations::{self, Tokenless, Wanted};
use super::interrupt::{Interrupt, Signal};
use super::report::{self, Terminal};
use super::sections::{self, Sections};

pub async fn run(args: ReconcileArgs, interrupt: &Interrupt, output: &Output) -> Result<Exit, Error> {
    check(&args)?;
    let parallelism = args.parallelism.setting(args.max_parallelism);
    let secrets_dirs = args.secrets.dirs();
    let wanted = Wanted {
        paths: args.paths,
        manifests: true,
        url: Url::Required,
        parallelism,
        secrets_dirs: &secrets_dirs,
    };
    let (installations, warning) = installations::installations(
        &args.project,
        &args.connection,
        Tokenless::Tokens(&args.tokens),
        wanted,
        &process_env,
    )?;
    if let Some(warning) = warning {
        output.warn(&warning);
    }
    let names: Vec<String> = if installations.project {
        installations.each.iter().filter_map(|i| i.name.clone()).collect()
    } else {
        Vec::new()
    };
    let views = Sections::for_loop(output, Terminal::new(output), &installations);
    let schedule = Schedule { interval: args.interval, jitter: args.jitter, once: args.once };
    let settings = ReconcileSettings {
        installations,
        parallelism,
        allow_removals: args.allow_removals,
        removals: args.removals.limits(),
        lock_timeout: args.lock_timeout,
        secrets_dirs,
        schedule,
    };
    let metrics = Arc::new(Metrics::reconcile(args.interval, &names));
    let server = match args.metrics_listen {
        Some(addr) => {
            let server = Server::start(addr, Arc::clone(&metrics)).await?;
            // Said as a status line so that whoever started the loop on port 0 learns the port.
            output.status(&format!(
                "serving metrics on http://{addr}/metrics (health: /healthz, readiness: /readyz)",
                addr = server.addr()
            ));
            Some(server)
        }
        None => None,
    };
    if !args.once {
        output.status(&format!(
            "reconciling every {} (jitter {}%); a signal stops after the steps in flight",
            humantime::format_duration(args.interval),
            (args.jitter * 100.0).round()
        ));
    }
    // `/healthz` turns 503 as soon as a stop is asked for.
    let mut stop = interrupt.cancel();
    let stopping = Arc::clone(&metrics);
    let watcher = tokio::spawn(async move {
        if stop.wait_for(|stop| *stop).await.is_ok() {
            stopping.stopping();
        }
    });
    let measure =
        Files { metrics: Arc::clone(&metrics), file: args.metrics_file.clone(), output: output.clone() };
    let outcome = crate::ops::reconcile::run(settings, &views, &measure, interrupt.cancel()).await;
    watcher.abort();
    if let Some(server) = server {
        server.shutdown().await;
    }
    let outcome = outcome?;
    if args.once {
        return once_exit(outcome, !names.is_empty(), interrupt.signal(), output);
    }
    Ok(interrupt.signal().map_or(Exit::Success, Signal::exit))
}

/// Cross-flag checks, before anything runs.
fn check(args: &ReconcileArgs) -> Result<(), Error> {
    if args.once && args.metrics_listen.is_some() {
        return Err(Error::Usage {
            message: "`--metrics-listen` serves a running loop, and `--once` runs one cycle".into(),
            help: "with `--once`, write the metrics with `--metrics-file PATH` instead".into(),
        });
    }
    if !args.once && args.interval < Duration::from_millis(1) {
        return Err(Error::Usage {
            message: "`--interval` must be at least 1ms".into(),
            help: "pass a pause between cycles, e.g. `--interval 5m`, or run one cycle with `--once`".into(),
        });
    }
    Ok(())
}

/// `--once`: the codes of `apply`: 0 when every change was applied, 1 for a failed cycle, a
/// partial apply, conflicts or removals the blast-radius guard refused, 130 / 143 when a signal
/// stopped it. With a project file, one line per installation, then each failed one's error;
/// the code is the most severe of the installations'.
fn once_exit(
    outcome: ReconcileOutcome,
    grouped: bool,
    signal: Option<Signal>,
    output: &Output,
) -> Result<Exit, Error> {
    if let Some(signal) = signal {
        return Ok(signal.exit());
    }
    if !grouped {
        return match outcome.once.into_iter().next().map(|each| each.ran) {
            Some(Ran::Done(once)) => installation_exit(once),
            Some(Ran::Failed(error)) => Err(error),
            Some(Ran::NotStarted) => Err(Error::Cancelled),
            None => Ok(Exit::Success),
        };
    }
    let mut exit = Exit::Success;
    let mut lines = String::from("\n");
    let mut errors = Vec::new();
    for Each { name, ran, .. } in outcome.once {
        let name = name.unwrap_or_default();
        let (line, this) = match ran {
            Ran::Done(once) => {
                let line = once
                    .report
                    .as_ref()
                    .map_or_else(|| "No changes.".to_string(), crate::apply::ApplyReport::summary_line);
                (line, installation_exit(once))
            }
            Ran::Failed(error) => ("failed: see the error below.".to_string(), Err(error)),
            Ran::NotStarted => ("not reconciled: the run was stopped.".to_string(), Ok(Exit::Failure)),
        };
        let _ = writeln!(lines, "Installation `{}`: {line}", crate::escape::terminal(&name));
        match this {
            Ok(code) => exit = sections::most_severe(exit, code),
            Err(error) => {
                exit = sections::most_severe(exit, Exit::Failure);
                errors.push((name, error));
            }
        }
    }
    output.print(&lines);
    for (name, error) in errors {
        sections::report_error(output, &name, error);
    }
    Ok(exit)
}

/// The code of one installation's part of a `--once` cycle that did not fail outright.
fn installation_exit(once: Once) -> Result<Exit, Error> {
    if let Some(report) = once.report {
        report.into_result()?;
    }
    if let Some(plan) = &once.plan {
        report::plan_exit(plan, false)?;
    }
    if let Some(guard) = once.guard {
        return Err(guard.into());
    }
    Ok(Exit::Success)
}

/// The metrics as the loop's `Measure`, also written to `--metrics-file` after every cycle.
struct Files {
    metrics: Arc<Metrics>,
    file: Option<std::path::PathBuf>,
    output: Output,
}

impl Measure for Files {
    fn requests(&self) -> Option<Arc<dyn crate::oz::RequestObserver>> {
        self.metrics.requests()
    }
    fn planned(&self, plan: &crate::plan::Plan) {
        self.metrics.planned(plan);
    }
    fn stored(&self, stored: &crate::model::StoredTokens, now: f64, rotate_before: Duration) {
        self.metrics.stored(stored, now, rotate_before);
    }
    fn applied(&self, report: &crate::apply::ApplyReport) {
        self.metrics.applied(report);
    }
    fn planned_in(&self, installation: Option<&str>, plan: &crate::plan::Plan) {
        self.metrics.planned_in(installation, plan);
    }
    fn stored_in(
        &self,
        installation: Option<&str>,
        stored: &crate::model::StoredTokens,
        now: f64,
        rotate_before: Duration,
    ) {
        self.metrics.stored_in(installation, stored, now, rotate_before);
    }
    fn applied_in(&self, installation: Option<&str>, report: &crate::apply::ApplyReport) {
        self.metrics.applied_in(installation, report);
    }
    fn cycle(&self, summary: &crate::ops::reconcile::CycleSummary) {
        self.metrics.cycle(summary);
        report::write_metrics_file(self.file.as_deref(), Some(&self.metrics), &self.output);
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::cli::{Cli, Command};
    use crate::ops::settings::Parallelism;

    fn parallelism(flags: &[&str]) -> Parallelism {
        let command_line = ["ozform", "reconcile"].iter().chain(flags).chain(&["m.yaml"]).copied();
        match Cli::try_parse_from(command_line).expect("valid flags").command {
            Command::Reconcile(args) => args.parallelism.setting(args.max_parallelism),
            other => panic!("not reconcile: {other:?}"),
        }
    }

    #[test]
    fn a_loop_runs_at_parallelism_auto_up_to_32_as_apply_does_unless_a_number_fixes_it() {
        assert_eq!(parallelism(&[]), Parallelism::Auto { max: 32 });
        assert_eq!(parallelism(&["--max-parallelism", "6"]), Parallelism::Auto { max: 6 });
        assert_eq!(parallelism(&["--parallelism", "4"]), Parallelism::Fixed(4));
    }
}
