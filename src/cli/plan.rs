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
    let (connection, warning) = connection::connection(&args.connection, &process_env, Url::Required, 1)?;
    if let Some(warning) = warning {
        output.warn(&warning);
    }
    let format = match args.format {
        PlanFormat::Text => report::PlanFormat::Text,
        PlanFormat::Json => report::PlanFormat::Json,
        PlanFormat::Markdown => report::PlanFormat::Markdown,
    };
    let settings = PlanSettings {
        paths: args.paths,
        connection,
        tokens: connection::tokens(&args.tokens)?,
        out: args.out,
        companies: args.companies,
        removals: args.removals.limits(),
        secrets_dirs: args.secrets.dirs(),
    };
    let outcome = crate::ops::plan::run(settings, &Terminal::with_format(output, format)).await?;
    report::plan_exit(&outcome.plan, args.detailed_exitcode)
}
