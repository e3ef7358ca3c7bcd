//! `ozform doctor`: flags → `ops::doctor::DoctorSettings`, then `ops::doctor`.

use crate::error::{Error, Exit};
use crate::ops::doctor::DoctorSettings;
use crate::output::Output;
use crate::secret::process_env;

use super::connection::{self, Url};
use super::{DoctorArgs, DoctorFormat};

pub async fn run(args: DoctorArgs, output: &Output) -> Result<Exit, Error> {
    let (connection, _) = connection::connection(&args.connection, &process_env, Url::Required, 1)?;
    let settings = DoctorSettings {
        connection,
        tokens: connection::tokens(&args.tokens)?,
        json: args.format == DoctorFormat::Json,
    };
    crate::ops::doctor::run(settings, output).await
}
