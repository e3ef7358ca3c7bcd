//! `ozform export`: flags → `ops::settings::ExportSettings`, then `ops::export`; the manifest on
//! stdout (unless written to `--out`), the summary on stderr.

use crate::error::{Error, Exit};
use crate::ops::settings::ExportSettings;
use crate::output::Output;
use crate::secret::process_env;

use super::ExportArgs;
use super::connection::{self, Url};
use super::report::Terminal;

pub async fn run(args: ExportArgs, output: &Output) -> Result<Exit, Error> {
    let (connection, _) = connection::connection(&args.connection, &process_env, Url::Required, 1)?;
    let settings =
        ExportSettings { connection, companies: args.companies, out: args.out, tokens: args.tokens };
    let outcome = crate::ops::export::run(settings, &Terminal::new(output)).await?;
    match (&outcome.manifest, &outcome.written) {
        (_, Some(path)) => output.status(&format!("{} to `{}`", outcome.summary, path.display())),
        (Some(manifest), None) => {
            output.print(manifest);
            output.status(&outcome.summary);
        }
        (None, None) => output.status(&outcome.summary),
    }
    Ok(Exit::Success)
}
