//! Token stores: where issued service tokens go, and what the planner may know of them.
//!
//! The `TokenStore` port, with the verbs of the helper protocol (`docs/token-stores.md`):
//! `list` says which tokens are stored (never the tokens: the planner sees only
//! `model::StoredTokens`), `check` proves a store would succeed now (run before the first
//! token is issued: no token without a place to keep it), `store` keeps one durably, `delete`
//! drops one. Implementations: `DirStore` (`dir:PATH`, `--token-dir`), which writes
//! `<dir>/<lower-cased email>.json` atomically (temp file, fsync, rename) with mode 0600; and
//! `ExecStore` (`exec:COMMAND [ARGS…]`), which runs a helper program speaking the protocol.

use std::fs::File;
use std::time::Duration;

use crate::model::StoredTokens;
use crate::secret::Secret;

mod dir;
mod exec;

pub use dir::DirStore;
pub use exec::{ExecStore, PROTOCOL, redact};

/// An exclusive hold on a token store for one apply (`TokenStore::lock`). The directory store's
/// is an OS lock on `<dir>/.ozform.lock`, which names its holder while held; dropping the
/// guard empties the file and releases the lock (and the OS releases it if the process dies).
#[derive(Debug)]
pub struct StoreLock {
    file: File,
}

impl StoreLock {
    fn new(file: File) -> Self {
        Self { file }
    }
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        // Emptied before it is released, so that two quiet runs leave the directory as they
        // found it; best effort (the lock itself dies with the file descriptor regardless).
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

/// What `TokenStore::recover` did with what a killed run left behind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Complete records put in place (newer than what was stored under their name).
    pub recovered: usize,
    /// Incomplete or superseded leftovers removed.
    pub removed: usize,
}

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
    /// Hold the store exclusively for one apply, waiting up to `wait` for another holder to
    /// let go; `Ok(None)` for a store ozform does not lock (`exec:` stores rely on the CI's
    /// concurrency group).
    fn lock(&self, wait: Duration) -> Result<Option<StoreLock>, TokenStoreError> {
        let _ = wait;
        Ok(None)
    }
    /// Finish or clean up what a killed run left half-done (called under `lock`).
    fn recover(&self) -> Result<Recovery, TokenStoreError> {
        Ok(Recovery::default())
    }
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
    /// A helper that could not be started, exited non-zero or was killed. `stderr` is
    /// empty or a redacted, bounded quote of the helper's stderr, starting with a newline.
    #[error("token store helper `{helper}` failed `{verb}`: {problem}{stderr}")]
    #[diagnostic(
        code(ozform::token_store::helper_failed),
        help("run `{helper} {verb}` by hand to see why; the protocol is in docs/token-stores.md")
    )]
    HelperFailed { helper: String, verb: &'static str, problem: String, stderr: String },
    /// A helper that ran past `--store-timeout` and was killed.
    #[error("token store helper `{helper}` ran `{verb}` for longer than {timeout} and was stopped{stderr}")]
    #[diagnostic(
        code(ozform::token_store::helper_timeout),
        help("check that the store it talks to is reachable, or give it longer with `--store-timeout`")
    )]
    HelperTimeout { helper: String, verb: &'static str, timeout: String, stderr: String },
    /// A helper whose answer is not the protocol's JSON. The answer itself is never quoted (it
    /// may hold a token).
    #[error("token store helper `{helper}` answered `{verb}` outside the protocol: {problem}{stderr}")]
    #[diagnostic(
        code(ozform::token_store::helper_protocol),
        help(
            "the helper must print the JSON docs/token-stores.md describes on stdout, and its logs on stderr"
        )
    )]
    HelperProtocol { helper: String, verb: &'static str, problem: String, stderr: String },
    /// Another process holds the store's lock (`holder` says who, as it wrote it).
    #[error("the token store `{path}` is locked by another `ozform apply`: {holder}")]
    #[diagnostic(
        code(ozform::token_store::locked),
        help(
            "wait for that apply to finish, or pass `--lock-timeout 5m` to wait for it; the lock dies with its process, so there is no stale lock to delete. In CI, run applies one at a time (GitHub `concurrency:`, GitLab `resource_group:`)"
        )
    )]
    Locked { path: String, holder: String },
    /// A token directory others may write to (a token planted there would be deployed).
    #[error("the token directory `{path}` is writable by {who} (mode {mode:o}): refusing to use it")]
    #[diagnostic(
        code(ozform::token_store::shared_dir),
        help(
            "run `chmod go-w {path}` (ozform creates it 0700), or pass `--allow-shared-token-dir` if that is intended"
        )
    )]
    SharedDir { path: String, who: &'static str, mode: u32 },
}
