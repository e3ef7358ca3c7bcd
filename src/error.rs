//! The top-level error: every layer's error converges here. The exit codes of the contract are
//! `Exit`; which error ends with which is decided by the command line (`cli::report`).

use crate::{apply, emulator, manifest, oz, plan, secret, token_store};

/// Process exit codes of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success (and, with `plan --detailed-exitcode`, no changes).
    Success = 0,
    /// Bad input, API failure, partial apply, stale plan.
    Failure = 1,
    /// `plan --detailed-exitcode` succeeded and there are changes, none of them a removal.
    Changes = 2,
    /// `plan --detailed-exitcode` succeeded and at least one change is a removal.
    Removals = 3,
    /// Stopped by SIGINT (an apply after finishing its steps in flight and storing their tokens).
    Interrupted = 130,
    /// Stopped by SIGTERM (likewise).
    Terminated = 143,
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum Error {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Manifest(#[from] manifest::ManifestError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Oz(#[from] oz::OzError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Plan(#[from] plan::PlanError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Apply(#[from] apply::ApplyError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    TokenStore(#[from] token_store::TokenStoreError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Secret(#[from] secret::SecretError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Emulator(#[from] emulator::EmulatorError),
    /// The command line asks for something that cannot be done as asked.
    #[error("{message}")]
    #[diagnostic(code(ozform::usage), help("{help}"))]
    Usage { message: String, help: String },
    #[error("cannot {action} `{path}`: {reason}")]
    #[diagnostic(code(ozform::io))]
    Io { action: &'static str, path: String, reason: String },
    /// A stop asked for (SIGINT, SIGTERM) before the operation changed anything; the command
    /// line ends with the signal's exit code.
    #[error("stopped before anything was changed")]
    #[diagnostic(code(ozform::cancelled))]
    Cancelled,
}
