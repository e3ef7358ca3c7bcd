//! `ozform show PLAN.json`: read and check a saved plan (`ops::show`), then print it as `plan`
//! prints it: the formats and `--max-bytes` are `plan`'s.

use std::path::PathBuf;

use clap::Args;

use crate::error::{Error, Exit};
use crate::ops::{Each, Ran};
use crate::output::Output;
use crate::plan::Plan;

use super::PlanFormat;
use super::report;
use super::sections;

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// A saved plan, as `ozform plan --out FILE` wrote it, or a directory of them (`plan --out
    /// DIR`), shown as one section per installation
    #[arg(value_name = "PLAN.json")]
    pub plan: PathBuf,
    /// How to print the plan
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,
    /// With `--format markdown`: at most this many bytes (GitHub refuses comments over 65,536
    /// characters); past it, the summary, the removals and as many changes as fit
    #[arg(long, value_name = "N", value_parser = super::parse_max_bytes)]
    pub max_bytes: Option<usize>,
}

pub fn run(args: &ShowArgs, output: &Output) -> Result<Exit, Error> {
    super::check_max_bytes(args.max_bytes, args.format)?;
    if args.plan.is_dir() {
        return run_dir(args, output);
    }
    let plan = crate::ops::show::run(&args.plan)?;
    output.print(&report::rendered(&plan, super::plan::format(args.format), output.color, args.max_bytes));
    Ok(Exit::Success)
}

/// The plans of a directory, grouped as `plan` groups a project file's installations.
fn run_dir(args: &ShowArgs, output: &Output) -> Result<Exit, Error> {
    let plans = crate::ops::show::run_dir(&args.plan)?;
    let outcomes: Vec<Each<Plan>> = plans
        .into_iter()
        .map(|(name, plan)| Each { name: Some(name), api_url: plan.api_url.clone(), ran: Ran::Done(plan) })
        .collect();
    match args.format {
        PlanFormat::Text => output.print(&sections::plans_text(&outcomes, output.color, plan_of)),
        PlanFormat::Markdown => output.print(&sections::plans_markdown(&outcomes, args.max_bytes, plan_of)),
        PlanFormat::Json => {
            return Err(Error::Usage {
                message:
                    "`--format json` prints one plan, and the directory holds the plans of installations"
                        .into(),
                help: "show one plan file of the directory with `--format json`".into(),
            });
        }
    }
    Ok(Exit::Success)
}

fn plan_of(plan: &Plan) -> &Plan {
    plan
}
