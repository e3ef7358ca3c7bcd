//! Apply: run a `Plan` as a dependency graph against `Effects`, writing tokens to a `TokenSink`.
//!
//! The ordering is pure; the executor does I/O only through the `Effects`, `TokenSink` and
//! `Observer` seams, so it is tested against in-memory fakes as well as the emulator.

mod effects;

pub use effects::Effects;

/// Why an apply failed as a whole.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ApplyError {
    #[error("apply was not approved")]
    #[diagnostic(code(ozform::apply::not_approved), help("answer `yes`, or pass `--auto-approve`"))]
    NotApproved,
}
