//! `ozform apply`: flags → `ops::settings::ApplySettings`, then `ops::apply` with the terminal as
//! its view and prompt; the summary line and the exit code from the outcome.

use crate::error::{Error, Exit};
use crate::ops::settings::{ApplySettings, ApplySource};
use crate::output::Output;
use crate::secret::process_env;

use super::ApplyArgs;
use super::connection::{self, Url};
use super::interrupt::Interrupt;
use super::report::{self, Prompt, Terminal};

pub async fn run(args: ApplyArgs, interrupt: &Interrupt, output: &Output) -> Result<Exit, Error> {
    let parallelism = args.parallelism.max(1);
    let metrics_file = args.metrics_file.clone();
    let url = if args.plan.is_some() { Url::ForSavedPlan } else { Url::Required };
    let (connection, warning) = connection::connection(&args.connection, &process_env, url, parallelism)?;
    if let Some(warning) = warning {
        output.warn(&warning);
    }
    // clap refuses paths or `--company` together with `--plan`, and neither of them.
    let source = match args.plan {
        Some(path) => ApplySource::SavedPlan(path),
        None => ApplySource::Manifests { paths: args.paths, companies: args.companies },
    };
    let settings = ApplySettings {
        source,
        connection,
        tokens: connection::tokens(&args.tokens)?,
        parallelism,
        removals: args.removals.limits(),
        lock_timeout: args.lock_timeout,
        secrets_dirs: args.secrets.dirs(),
        id_map: args.id_map,
    };
    let view = Terminal::new(output);
    let prompt = Prompt::new(output, args.auto_approve);
    let metrics = metrics_file.as_ref().map(|_| crate::metrics::Metrics::new());
    let measure: &dyn crate::ops::Measure = match &metrics {
        Some(metrics) => metrics,
        None => &crate::ops::Unmeasured,
    };
    let outcome = crate::ops::apply::run(settings, &view, &prompt, measure, interrupt.cancel()).await;
    // Written whatever the outcome: a failed run's requests are worth a dashboard too.
    report::write_metrics_file(metrics_file.as_deref(), metrics.as_ref(), output);
    report::apply_exit(outcome?, interrupt.signal(), output)
}
