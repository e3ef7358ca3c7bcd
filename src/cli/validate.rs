//! `ozform validate`.

use crate::error::{Error, Exit};
use crate::output::Output;

pub fn run(_args: super::ValidateArgs, _output: &Output) -> Result<Exit, Error> {
    Err(super::not_built("validate"))
}
