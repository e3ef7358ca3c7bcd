//! The planner: a pure function from (desired, observed, sink index, options) to a `Plan`.
//!
//! Pure; no I/O. The clock, the environment lookup and the sink contents are passed in.
//! The types here (`Plan`, `Change`, `Action`, `Address`) are the contract of the saved plan
//! format (`format_version` 1) and are read by the renderers and the executor.

pub mod fingerprint;
mod types;

pub use types::*;

/// Why planning failed as a whole (conflicts of single objects are `Conflict`s in the plan).
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum PlanError {
    #[error("cannot read plan file `{path}`: {reason}")]
    #[diagnostic(code(ozform::plan::unreadable), help("pass a file written by `ozform plan --out`"))]
    Unreadable { path: String, reason: String },
}
