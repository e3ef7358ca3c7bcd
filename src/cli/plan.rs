//! `ozform plan`: flags → `ops::settings::PlanSettings`, then `ops::plan`; the plan shown in
//! the format asked for, the exit code from the outcome. With a project file, one section per
//! installation and a total (`sections`), the exit code the most severe of theirs.

use crate::error::{Error, Exit};
use crate::ops::plan::PlanOutcome;
use crate::ops::settings::PlanSettings;
use crate::ops::{Each, Ran};
use crate::output::Output;
use crate::secret::process_env;

use super::connection::Url;
use super::installations::{self, Tokenless, Wanted};
use super::report::{self, Terminal};
use super::sections::{self, Sections};
use super::{PlanArgs, PlanFormat};

pub async fn run(args: PlanArgs, output: &Output) -> Result<Exit, Error> {
    super::check_max_bytes(args.max_bytes, args.format)?;
    let secrets_dirs = args.secrets.dirs();
    let wanted = Wanted {
        paths: args.paths,
        manifests: true,
        url: Url::Required,
        parallelism: crate::ops::settings::Parallelism::Fixed(1),
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
    if args.format == PlanFormat::Json && installations.each.len() > 1 {
        return Err(Error::Usage {
            message: "`--format json` prints one plan, and this run plans several installations".into(),
            help: "save each installation's plan with `--out DIR` (`DIR/<installation>.json`), or name one with \
                   `--installation NAME`"
                .into(),
        });
    }
    let format = format(args.format);
    let view = Terminal::with_format(output, format, args.max_bytes);
    let views = Sections::new(output, view, &installations, false);
    let grouped = installations.project;
    let settings = PlanSettings {
        out: installations::out(args.out, &installations),
        installations,
        companies: args.companies,
        removals: args.removals.limits(),
        secrets_dirs,
    };
    let metrics_file = args.metrics_file.clone();
    let metrics = metrics_file.as_ref().map(|_| crate::metrics::Metrics::new());
    let measure: &dyn crate::ops::Measure = match &metrics {
        Some(metrics) => metrics,
        None => &crate::ops::Unmeasured,
    };
    let outcomes = crate::ops::plan::run(settings, &views, measure).await;
    // Written whatever the outcome: a failed run's requests are worth a dashboard too.
    report::write_metrics_file(metrics_file.as_deref(), metrics.as_ref(), output);
    if !grouped {
        let plan = single(outcomes)?.plan;
        return report::plan_exit(&plan, args.detailed_exitcode);
    }
    match format {
        report::PlanFormat::Text => output.print(&sections::plans_text(&outcomes, output.color, plan_of)),
        report::PlanFormat::Markdown => {
            output.print(&sections::plans_markdown(&outcomes, args.max_bytes, plan_of));
        }
        // One installation (checked above): its plan, as without a project file.
        report::PlanFormat::Json => {
            for plan in outcomes.iter().filter_map(|e| e.ran.done()) {
                output.print(&report::rendered(&plan.plan, format, false, None));
            }
        }
    }
    let mut exit = Exit::Success;
    for each in outcomes {
        let name = sections::name(&each).to_string();
        let this = match each.ran {
            Ran::Done(outcome) => report::plan_exit(&outcome.plan, args.detailed_exitcode),
            Ran::Failed(error) => Err(error),
            Ran::NotStarted => Ok(Exit::Failure),
        };
        exit = sections::most_severe(
            exit,
            this.unwrap_or_else(|error| {
                sections::report_error(output, &name, error);
                Exit::Failure
            }),
        );
    }
    Ok(exit)
}

fn plan_of(outcome: &PlanOutcome) -> &crate::plan::Plan {
    &outcome.plan
}

/// The outcome of the one installation of a run without a project file, its error as the
/// run's.
pub(super) fn single<T>(mut outcomes: Vec<Each<T>>) -> Result<T, Error> {
    match outcomes.pop().map(|each| each.ran) {
        Some(Ran::Done(outcome)) => Ok(outcome),
        Some(Ran::Failed(error)) => Err(error),
        Some(Ran::NotStarted) | None => Err(Error::Cancelled),
    }
}

/// How a plan is shown, from the flag (shared with `show`).
pub(super) fn format(format: PlanFormat) -> report::PlanFormat {
    match format {
        PlanFormat::Text => report::PlanFormat::Text,
        PlanFormat::Json => report::PlanFormat::Json,
        PlanFormat::Markdown => report::PlanFormat::Markdown,
    }
}
