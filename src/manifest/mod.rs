//! Manifest loading and validation: files and directories → `model::Desired`.

/// All problems found in the manifests, reported together.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("the manifests have {} problem(s)", problems.len())]
#[diagnostic(code(ozform::manifest::invalid))]
pub struct ManifestError {
    #[related]
    pub problems: Vec<miette::Report>,
}
