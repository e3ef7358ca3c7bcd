//! Token sinks: where issued service tokens go, and what the planner may know of them.
//!
//! The planner sees only a `SinkIndex` (no secrets). The file sink writes
//! `<token-dir>/<lower-cased email>.json` atomically (temp file, fsync, rename) with mode 0600.

use std::collections::BTreeMap;

use crate::secret::Secret;

mod file;
mod memory;

pub use file::FileSink;
pub use memory::MemorySink;

/// A stored token. Not `Debug`-leaky: `access_token` is a `Secret`.
#[derive(Debug, Clone)]
pub struct TokenRecord {
    /// Lower-cased email.
    pub email: String,
    pub user_id: String,
    pub token_id: String,
    pub access_token: Secret,
    /// Unix epoch seconds.
    pub expire_date: f64,
    pub api_url: String,
    /// RFC 3339 UTC.
    pub issued_at: String,
}

/// What the planner may know of a stored token.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkEntry {
    pub user_id: String,
    pub api_url: String,
    pub expire_date: f64,
}

/// Stored tokens by lower-cased email.
pub type SinkIndex = BTreeMap<String, SinkEntry>;

pub trait TokenSink: Send + Sync {
    fn index(&self) -> Result<SinkIndex, SinkError>;
    fn store(&self, record: &TokenRecord) -> Result<(), SinkError>;
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum SinkError {
    #[error("cannot {action} `{path}`: {reason}")]
    #[diagnostic(code(ozform::sink::io), help("check that the token directory exists and is writable"))]
    Io { action: &'static str, path: String, reason: String },
    /// A stored token file that cannot be read as one. The reason names a position and a
    /// category, never the file's content (it holds a token).
    #[error("token file `{path}` is corrupt: {reason}")]
    #[diagnostic(
        code(ozform::sink::corrupt),
        help("move the file away (or delete it) and run `ozform apply` again to issue a new token")
    )]
    Corrupt { path: String, reason: String },
}
