//! `ozform demo`: flags → `ops::settings::DemoSettings`, then `ops::demo` with the terminal as
//! its view.

use crate::error::{Error, Exit};
use crate::ops::settings::DemoSettings;
use crate::output::Output;

use super::DemoArgs;
use super::report::{self, Terminal};

pub async fn run(args: DemoArgs, output: &Output) -> Result<Exit, Error> {
    let settings = DemoSettings { api_version: args.api_version, keep: args.keep };
    let outcome = crate::ops::demo::run(settings, &Terminal::new(output)).await?;
    report::plan_exit(&outcome.last_plan, false)
}
