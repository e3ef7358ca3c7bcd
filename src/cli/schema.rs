//! `ozform schema`.

use crate::error::{Error, Exit};
use crate::output::Output;

pub fn run(_output: &Output) -> Result<Exit, Error> {
    Err(super::not_built("schema"))
}
