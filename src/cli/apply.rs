//! `ozform apply`: flags → `ops::settings::ApplySettings`, then `ops::apply` with the terminal as
//! its view and prompt; the summary line and the exit code from the outcome. With a project
//! file, each installation's plan under its heading, one summary line per installation, and the
//! exit code the most severe of theirs.

use std::fmt::Write as _;

use crate::error::{Error, Exit};
use crate::ops::Ran;
use crate::ops::settings::{ApplySettings, ApplySource, Parallelism};
use crate::output::Output;
use crate::secret::process_env;

use super::ApplyArgs;
use super::connection::Url;
use super::installations::{self, Tokenless, Wanted};
use super::interrupt::Interrupt;
use super::report::{self, Prompt, Terminal};
use super::sections::{self, Sections};

pub async fn run(args: ApplyArgs, interrupt: &Interrupt, output: &Output) -> Result<Exit, Error> {
    let parallelism = parallelism(&args);
    let metrics_file = args.metrics_file.clone();
    let url = if args.plan.is_some() { Url::ForSavedPlan } else { Url::Required };
    let secrets_dirs = args.secrets.dirs();
    let wanted = Wanted {
        paths: args.paths,
        manifests: args.plan.is_none(),
        url,
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
    if installations.parallelism > 1
        && installations.each.len() > 1
        && args.plan.is_none()
        && !args.auto_approve
    {
        return Err(Error::Usage {
            message: "`--installations-parallelism` above 1 overlaps installations, and each plan needs approval".into(),
            help: "approve beforehand with `--auto-approve`, apply reviewed plans with `--plan DIR`, or apply one \
                   installation after another"
                .into(),
        });
    }
    if args.id_map.is_some() && installations.each.len() > 1 {
        return Err(Error::Usage {
            message: "`--id-map FILE` maps one installation, and this run applies several".into(),
            help: "name the installation with `--installation NAME`, one run and one map each".into(),
        });
    }
    // clap refuses paths or `--company` together with `--plan`.
    let source = match args.plan {
        Some(path) => ApplySource::SavedPlan(path),
        None => ApplySource::Manifests { companies: args.companies },
    };
    let grouped = installations.project;
    let views = Sections::new(output, Terminal::new(output), &installations, true);
    let settings = ApplySettings {
        source,
        installations,
        parallelism,
        removals: args.removals.limits(),
        lock_timeout: args.lock_timeout,
        secrets_dirs,
        keep_going: args.keep_going,
        id_map: args.id_map,
    };
    let prompt = Prompt::new(output, args.auto_approve);
    let metrics = metrics_file.as_ref().map(|_| crate::metrics::Metrics::new());
    let measure: &dyn crate::ops::Measure = match &metrics {
        Some(metrics) => metrics,
        None => &crate::ops::Unmeasured,
    };
    let outcomes = crate::ops::apply::run(settings, &views, &prompt, measure, interrupt.cancel()).await;
    // Written whatever the outcome: a failed run's requests are worth a dashboard too.
    report::write_metrics_file(metrics_file.as_deref(), metrics.as_ref(), output);
    let outcomes = outcomes?;
    if !grouped {
        return report::apply_exit(super::plan::single(outcomes)?, interrupt.signal(), output);
    }
    let signal = interrupt.signal();
    let mut exit = Exit::Success;
    let mut lines = String::from("\n");
    let mut errors = Vec::new();
    for each in outcomes {
        let name = sections::name(&each).to_string();
        let (line, this) = match each.ran {
            Ran::Done(outcome) => match outcome.report {
                Some(report) => {
                    let line = match report::tokens_stored(&report, &outcome.tokens_stored_in) {
                        Some(tokens) => format!("{} {tokens}", report.summary_line()),
                        None => report.summary_line(),
                    };
                    let this = match report.into_result() {
                        Ok(_) => report::plan_exit(&outcome.plan, false),
                        Err(e) => Err(e.into()),
                    };
                    (line, this)
                }
                None => ("No changes.".to_string(), report::plan_exit(&outcome.plan, false)),
            },
            Ran::Failed(error) => ("failed: see the error below.".to_string(), Err(error)),
            Ran::NotStarted if signal.is_some() => {
                ("not applied: the run was stopped.".to_string(), Ok(Exit::Failure))
            }
            Ran::NotStarted => (
                "not applied: an installation before it failed (`--keep-going` goes on after a failure)."
                    .to_string(),
                Ok(Exit::Failure),
            ),
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
    Ok(signal.map_or(exit, super::interrupt::Signal::exit))
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
