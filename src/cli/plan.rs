//! `ozform plan`: flags → `ops::settings::PlanSettings`, then `ops::plan`; the plan shown in
//! the format asked for, the exit code from the outcome.

use crate::error::{Error, Exit};
use crate::ops::settings::PlanSettings;
use crate::output::Output;
use crate::secret::process_env;

use super::connection::{self, Url};
use super::report::{self, Terminal};
use super::{PlanArgs, PlanFormat};

pub async fn run(args: PlanArgs, output: &Output) -> Result<Exit, Error> {
    super::check_max_bytes(args.max_bytes, args.format)?;
    let (connection, warning) = connection::connection(&args.connection, &process_env, Url::Required, 1)?;
    if let Some(warning) = warning {
        output.warn(&warning);
    }
    let format = format(args.format);
    let settings = PlanSettings {
        paths: args.paths,
        connection,
        tokens: connection::tokens(&args.tokens)?,
        out: args.out,
        companies: args.companies,
        removals: args.removals.limits(),
        secrets_dirs: args.secrets.dirs(),
    };
    let view = Terminal::with_format(output, format, args.max_bytes);
    let metrics = args.metrics_file.as_ref().map(|_| crate::metrics::Metrics::new());
    let measure: &dyn crate::ops::Measure = match &metrics {
        Some(metrics) => metrics,
        None => &crate::ops::Unmeasured,
    };
    let outcome = crate::ops::plan::run(settings, &view, measure).await;
    // Written whatever the outcome: a failed run's requests are worth a dashboard too.
    report::write_metrics_file(args.metrics_file.as_deref(), metrics.as_ref(), output);
    report::plan_exit(&outcome?.plan, args.detailed_exitcode)
}

/// How a plan is shown, from the flag (shared with `show`).
pub(super) fn format(format: PlanFormat) -> report::PlanFormat {
    match format {
        PlanFormat::Text => report::PlanFormat::Text,
        PlanFormat::Json => report::PlanFormat::Json,
        PlanFormat::Markdown => report::PlanFormat::Markdown,
    }
}
