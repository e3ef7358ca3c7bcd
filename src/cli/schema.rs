//! `ozform schema`: print the manifest JSON Schema (the copy in `schemas/` must equal it).

use crate::error::{Error, Exit};
use crate::manifest;
use crate::output::Output;

pub fn run(output: &Output) -> Result<Exit, Error> {
    let schema = serde_json::to_string_pretty(&manifest::schema()).map_err(|e| Error::Usage {
        message: format!("cannot print the schema: {e}"),
        help: "report this as a bug".into(),
    })?;
    output.print(&format!("{schema}\n"));
    Ok(Exit::Success)
}
