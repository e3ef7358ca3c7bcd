//! Token stores: where issued service tokens go, and what the planner may know of them.
//!
//! The `TokenStore` port, with the verbs of the helper protocol (`docs/token-stores.md`):
//! `list` says which tokens are stored (never the tokens: the planner sees only
//! `model::StoredTokens`), `check` proves a store would succeed now (run before the first
//! token is issued: no token without a place to keep it), `store` keeps one durably, `get`
//! gives one back whole (with the password kept beside it), `delete` drops one, and `lock`
//! holds the store for one apply. Implementations: `DirStore` (`dir:PATH`, `--token-dir`),
//! which writes `<dir>/<installation>/<email>.json` (both names encoded by `naming::encode`)
//! atomically (temp file, fsync, rename) with mode 0600; and `ExecStore`
//! (`exec:COMMAND [ARGS…]`), which runs a helper program speaking the protocol.
//!
//! Invariant: a store is opened for one `Installation` and sees only that installation's
//! records (and those kept before installations existed that belong to it): two installations
//! sharing one store never list, overwrite or delete each other's tokens.

use std::fs;
use std::time::Duration;

use crate::model::StoredTokens;
use crate::secret::Secret;

mod dir;
mod exec;
pub mod naming;
mod spec;

pub use dir::DirStore;
pub use exec::{DEFAULT_LOCK_TTL, ExecStore, PROTOCOL, redact};
pub use naming::Installation;
pub use spec::{SpecError, StoreSpec};

/// An exclusive hold on a token store for one apply (`TokenStore::lock`), released when
/// dropped. What it holds depends on the store: the directory store's is an OS lock on
/// `<dir>/<installation>/.ozform.lock` (the OS releases it if the process dies); a helper
/// store's is a lease the helper keeps, renewed in the background before its TTL and given
/// back with `unlock` (a lease whose holder died expires after its TTL).
pub struct StoreLock {
    /// The store's own guard; its `Drop` releases the lock.
    _held: Box<dyn Send + Sync>,
}

impl StoreLock {
    /// A lock held as long as `guard` lives: dropping the `StoreLock` drops the guard.
    pub fn new(guard: impl Send + Sync + 'static) -> Self {
        Self { _held: Box::new(guard) }
    }
}

impl std::fmt::Debug for StoreLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreLock")
    }
}

/// What `TokenStore::recover` did with what a killed run, or an older ozform, left behind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Complete records put in place (newer than what was stored under their name).
    pub recovered: usize,
    /// Incomplete or superseded leftovers removed.
    pub removed: usize,
    /// Records kept before installations existed, moved under this run's installation.
    pub migrated: usize,
}

/// A stored token, with its secrets. Not `Debug`-leaky: `access_token` and `password` are
/// `Secret`s. The installation is the store's (`Installation`), not the record's.
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
    /// The user's password, when ozform generated it (kept with the token, never listed).
    pub password: Option<Secret>,
    /// The name of the user's company, when known (for people and for the recipes' labels).
    pub company: Option<String>,
}

/// Where tokens are kept. Blocking calls (the executor runs them on tokio's blocking pool).
pub trait TokenStore: Send + Sync {
    /// Every stored token of this store's installation by lower-cased email, without the tokens.
    fn list(&self) -> Result<StoredTokens, TokenStoreError>;
    /// `Ok` when a `store` would succeed now (permissions, credentials, reachability). Leaves
    /// nothing behind that `list` would show.
    fn check(&self) -> Result<(), TokenStoreError>;
    /// Keep `record`, replacing what is stored for its email; `Ok` only once it is durable.
    fn store(&self, record: &TokenRecord) -> Result<(), TokenStoreError>;
    /// Drop the token stored for `email` (lower-cased); none stored is not an error.
    fn delete(&self, email: &str) -> Result<(), TokenStoreError>;
    /// The whole stored record of `email` (its token and password included), if there is one.
    /// A store that cannot give records back says so (`TokenStoreError::Unsupported`).
    fn get(&self, email: &str) -> Result<Option<TokenRecord>, TokenStoreError> {
        let _ = email;
        Err(TokenStoreError::Unsupported { store: "this token store".into(), verb: "get" })
    }
    /// Hold the store exclusively for one apply, waiting up to `wait` for another holder to
    /// let go; `Ok(None)` for a store that offers no lock (an `exec:` helper that does not
    /// advertise `lock`: the CI's concurrency group must keep applies apart).
    fn lock(&self, wait: Duration) -> Result<Option<StoreLock>, TokenStoreError> {
        let _ = wait;
        Ok(None)
    }
    /// Finish or clean up what a killed run left half-done, and move the records kept before
    /// installations that belong to this one (called under `lock`).
    fn recover(&self) -> Result<Recovery, TokenStoreError> {
        Ok(Recovery::default())
    }
}

/// This machine's name, for lock holders (Linux; elsewhere `HOSTNAME` or "unknown host").
pub(crate) fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown host".into())
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
    /// Another apply holds a helper store's lock (`holder` and `since` as the helper said them,
    /// escaped and bounded).
    #[error("the token store `{helper}` is locked by another `ozform apply`: {holder}")]
    #[diagnostic(
        code(ozform::token_store::locked),
        help(
            "wait for that apply to finish, or pass `--lock-timeout 5m` to wait for it; a lock whose holder died expires by itself after {ttl}. In CI, run applies one at a time (GitHub `concurrency:`, GitLab `resource_group:`)"
        )
    )]
    HelperLocked { helper: String, holder: String, ttl: String },
    /// A verb the store does not offer (a helper that does not advertise it).
    #[error("the token store `{store}` does not offer `{verb}`")]
    #[diagnostic(
        code(ozform::token_store::unsupported),
        help(
            "a helper advertises the optional verbs it offers in its `check` answer: `{{\"protocol\": 1, \"capabilities\": [\"lock\", \"get\"]}}` (docs/token-stores.md)"
        )
    )]
    Unsupported { store: String, verb: &'static str },
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
