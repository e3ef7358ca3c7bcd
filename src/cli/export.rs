//! `ozform export`: flags → `ops::settings::ExportSettings`, then `ops::export`.

use crate::error::{Error, Exit};
use crate::ops::settings::ExportSettings;
use crate::output::Output;
use crate::secret::process_env;

use super::ExportArgs;
use super::connection::{self, Url};

pub async fn run(args: ExportArgs, output: &Output) -> Result<Exit, Error> {
    let (connection, _) = connection::connection(&args.connection, &process_env, Url::Required, 1)?;
    let settings =
        ExportSettings { connection, companies: args.companies, out: args.out, tokens: args.tokens };
    crate::ops::export::run(settings, output).await
}
