//! `ozform demo`: flags → `ops::settings::DemoSettings`, then `ops::demo`.

use crate::error::{Error, Exit};
use crate::model::ApiVersion;
use crate::ops::settings::DemoSettings;
use crate::output::Output;

use super::DemoArgs;

pub async fn run(args: DemoArgs, output: &Output) -> Result<Exit, Error> {
    let api_version = if args.api_version == "5" { ApiVersion::V5 } else { ApiVersion::V6 };
    crate::ops::demo::run(DemoSettings { api_version, keep: args.keep }, output).await
}
