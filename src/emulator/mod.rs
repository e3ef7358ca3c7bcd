//! The built-in Oz API emulator (API 5 and API 6 dialects) with quirks and fault injection.

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum EmulatorError {
    #[error("cannot listen on `{addr}`: {reason}")]
    #[diagnostic(code(ozform::emulator::listen), help("pick a free address with `--listen`"))]
    Listen { addr: String, reason: String },
}
