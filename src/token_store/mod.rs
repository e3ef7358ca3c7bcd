//! Token stores: where issued service tokens go, and what the planner may know of them.
//!
//! The `TokenStore` port, with the verbs of the helper protocol (`docs/token-stores.md`):
//! `list` says which tokens are stored (never the tokens: the planner sees only
//! `model::StoredTokens`), `check` proves a store would succeed now (run before the first
//! token is issued: no token without a place to keep it), `store` keeps one durably, `delete`
//! drops one. Implementations: `DirStore` (`dir:PATH`, `--token-dir`), which writes
//! `<dir>/<lower-cased email>.json` atomically (temp file, fsync, rename) with mode 0600.

use crate::model::StoredTokens;
use crate::secret::Secret;

mod dir;

pub use dir::DirStore;

/// A stored token, with its secret. Not `Debug`-leaky: `access_token` is a `Secret`.
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

/// Where tokens are kept. Blocking calls (the executor runs them on tokio's blocking pool).
pub trait TokenStore: Send + Sync {
    /// Every stored token by lower-cased email, without the tokens.
    fn list(&self) -> Result<StoredTokens, TokenStoreError>;
    /// `Ok` when a `store` would succeed now (permissions, credentials, reachability). Leaves
    /// nothing behind that `list` would show.
    fn check(&self) -> Result<(), TokenStoreError>;
    /// Keep `record`, replacing what is stored for its email; `Ok` only once it is durable.
    fn store(&self, record: &TokenRecord) -> Result<(), TokenStoreError>;
    /// Drop the token stored for `email` (lower-cased); none stored is not an error.
    fn delete(&self, email: &str) -> Result<(), TokenStoreError>;
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum TokenStoreError {
    #[error("cannot {action} `{path}`: {reason}")]
    #[diagnostic(
        code(ozform::token_store::io),
        help("check that the token directory exists and is writable")
    )]
    Io { action: &'static str, path: String, reason: String },
    /// A stored token file that cannot be read as one. The reason names a position and a
    /// category, never the file's content (it holds a token).
    #[error("token file `{path}` is corrupt: {reason}")]
    #[diagnostic(
        code(ozform::token_store::corrupt),
        help("move the file away (or delete it) and run `ozform apply` again to issue a new token")
    )]
    Corrupt { path: String, reason: String },
}
