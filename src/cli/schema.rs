//! `ozform schema`: print the manifest JSON Schema, or with `--project-file` the project
//! file's (the copies in `schemas/` must equal them).

use crate::error::{Error, Exit};
use crate::manifest;
use crate::output::Output;

pub fn run(args: &super::SchemaArgs, output: &Output) -> Result<Exit, Error> {
    let schema = if args.project_file { manifest::project::schema() } else { manifest::schema() };
    let schema = serde_json::to_string_pretty(&schema).map_err(|e| Error::Usage {
        message: format!("cannot print the schema: {e}"),
        help: "report this as a bug".into(),
    })?;
    output.print(&format!("{schema}\n"));
    Ok(Exit::Success)
}
