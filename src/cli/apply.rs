//! `ozform apply`: flags → `ops::settings::ApplySettings`, then `ops::apply` with the terminal as
//! its view and prompt; the summary line and the exit code from the outcome.

use crate::error::{Error, Exit};
use crate::ops::settings::{ApplySettings, ApplySource, Parallelism};
use crate::output::Output;
use crate::secret::process_env;

use super::ApplyArgs;
use super::connection::{self, Url};
use super::interrupt::Interrupt;
use super::report::{self, Prompt, Terminal};

pub async fn run(args: ApplyArgs, interrupt: &Interrupt, output: &Output) -> Result<Exit, Error> {
    let parallelism = parallelism(&args);
    let metrics_file = args.metrics_file.clone();
    let url = if args.plan.is_some() { Url::ForSavedPlan } else { Url::Required };
    let connection = connection::for_steps(&args.connection, &process_env, url, parallelism, output)?;
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

/// `--parallelism auto|N` and `--max-parallelism` as a setting.
fn parallelism(args: &ApplyArgs) -> Parallelism {
    args.parallelism.setting(args.max_parallelism)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn apply_args(flags: &[&str]) -> ApplyArgs {
        let command_line = ["ozform", "apply"].iter().chain(flags).chain(&["m.yaml"]).copied();
        match Cli::try_parse_from(command_line).expect("valid flags").command {
            Command::Apply(args) => args,
            other => panic!("not apply: {other:?}"),
        }
    }

    #[test]
    fn parallelism_is_auto_up_to_32_unless_a_number_fixes_it() {
        assert_eq!(parallelism(&apply_args(&[])), Parallelism::Auto { max: 32 });
        assert_eq!(parallelism(&apply_args(&["--max-parallelism", "12"])), Parallelism::Auto { max: 12 });
        assert_eq!(parallelism(&apply_args(&["--parallelism", "8"])), Parallelism::Fixed(8));
        assert_eq!(parallelism(&apply_args(&["--parallelism", "auto"])).steps(), 32);
        assert_eq!(Parallelism::Fixed(0).steps(), 1);
        let refused = Cli::try_parse_from(["ozform", "apply", "--max-parallelism", "0", "m.yaml"]);
        assert!(refused.is_err(), "a ceiling of 0 is refused");
    }
}
