//! `ozform plan`: flags → `ops::settings::PlanSettings`, then `ops::plan`.

use crate::error::{Error, Exit};
use crate::ops::settings::{PlanFormat as Format, PlanSettings};
use crate::output::Output;
use crate::secret::process_env;

use super::connection::{self, Url};
use super::{PlanArgs, PlanFormat};

pub async fn run(args: PlanArgs, output: &Output) -> Result<Exit, Error> {
    super::check_max_bytes(args.max_bytes, args.format)?;
    let (connection, warning) = connection::connection(&args.connection, &process_env, Url::Required, 1)?;
    if let Some(warning) = warning {
        output.warn(&warning);
    }
    let settings = PlanSettings {
        paths: args.paths,
        connection,
        tokens: connection::tokens(&args.tokens)?,
        format: format(args.format),
        max_bytes: args.max_bytes,
        out: args.out,
        detailed_exitcode: args.detailed_exitcode,
        companies: args.companies,
        removals: args.removals.limits(),
    };
    crate::ops::plan::run(settings, output).await
}

/// The plan format of the settings (shared with `show`).
pub(super) fn format(format: PlanFormat) -> Format {
    match format {
        PlanFormat::Text => Format::Text,
        PlanFormat::Json => Format::Json,
        PlanFormat::Markdown => Format::Markdown,
    }
}
