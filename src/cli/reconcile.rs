//! `ozform reconcile`: flags → `ops::settings::ReconcileSettings`, the metrics (served with
//! `--metrics-listen`, written with `--metrics-file`), then `ops::reconcile` with the terminal as
//! its view. A loop ends only on a signal (130 / 143, once the steps in flight are done and
//! their tokens stored); `--once` ends with `apply`'s exit codes.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Exit};
use crate::metrics::Metrics;
use crate::metrics::server::Server;
use crate::ops::Measure;
use crate::ops::reconcile::ReconcileOutcome;
use crate::ops::settings::{ReconcileSettings, Schedule};
use crate::output::Output;
use crate::secret::process_env;

use super::ReconcileArgs;
use super::connection::{self, Url};
use super::interrupt::{Interrupt, Signal};
use super::report::{self, Terminal};

pub async fn run(args: ReconcileArgs, interrupt: &Interrupt, output: &Output) -> Result<Exit, Error> {
    check(&args)?;
    let parallelism = args.parallelism.setting(args.max_parallelism);
    let connection =
        connection::for_steps(&args.connection, &process_env, Url::Required, parallelism, output)?;
    let schedule = Schedule { interval: args.interval, jitter: args.jitter, once: args.once };
    let settings = ReconcileSettings {
        paths: args.paths,
        connection,
        tokens: connection::tokens(&args.tokens)?,
        parallelism,
        allow_removals: args.allow_removals,
        removals: args.removals.limits(),
        lock_timeout: args.lock_timeout,
        secrets_dirs: args.secrets.dirs(),
        schedule,
    };
    let metrics = Arc::new(Metrics::reconcile(args.interval));
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
    let view = Terminal::new(output);
    let measure =
        Files { metrics: Arc::clone(&metrics), file: args.metrics_file.clone(), output: output.clone() };
    let outcome = crate::ops::reconcile::run(settings, &view, &measure, interrupt.cancel()).await;
    watcher.abort();
    if let Some(server) = server {
        server.shutdown().await;
    }
    let outcome = outcome?;
    if args.once {
        return once_exit(outcome, interrupt.signal());
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

/// `--once`: the codes of `apply`: 0 when every change was applied, 1 for a partial apply,
/// conflicts or removals the blast-radius guard refused, 130 / 143 when a signal stopped it.
fn once_exit(outcome: ReconcileOutcome, signal: Option<Signal>) -> Result<Exit, Error> {
    if let Some(signal) = signal {
        return Ok(signal.exit());
    }
    if let Some(report) = outcome.report {
        report.into_result()?;
    }
    if let Some(plan) = &outcome.plan {
        report::plan_exit(plan, false)?;
    }
    if let Some(guard) = outcome.guard {
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
