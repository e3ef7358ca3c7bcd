//! `ozform show PLAN.json`: read and check a saved plan (`ops::show`), then print it as `plan`
//! prints it: the formats and `--max-bytes` are `plan`'s.

use std::path::PathBuf;

use clap::Args;

use crate::error::{Error, Exit};
use crate::output::Output;

use super::PlanFormat;
use super::report;

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// A saved plan, as `ozform plan --out FILE` wrote it
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
    let plan = crate::ops::show::run(&args.plan)?;
    output.print(&report::rendered(&plan, super::plan::format(args.format), output.color, args.max_bytes));
    Ok(Exit::Success)
}
