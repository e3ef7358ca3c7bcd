//! `ozform plan`.

use crate::error::{Error, Exit};
use crate::output::Output;

#[allow(clippy::unused_async)]
pub async fn run(_args: super::PlanArgs, _output: &Output) -> Result<Exit, Error> {
    Err(super::not_built("plan"))
}
