//! Validated settings of each operation: plain values, made by the command line from its
//! flags and environment (every cross-flag check done there, before any I/O), read by the
//! operations. Nothing here knows clap.

use std::path::PathBuf;
use std::time::Duration;

use crate::model::ApiVersion;
use crate::oz::{ClientConfig, VersionSetting};
use crate::plan::{PlanOptions, RemovalLimits};
use crate::secret::{Secret, SecretRef};

/// How to reach and log in to the Oz API.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Base URL without a trailing `/`; `None` only for `apply --plan`, which takes the plan's.
    pub api_url: Option<String>,
    pub admin_email: String,
    /// Where the admin password comes from; read when connecting.
    pub admin_password: SecretRef,
    pub api_version: VersionSetting,
    pub ca_cert: Option<PathBuf>,
    pub max_rps: Option<f64>,
    /// Requests in flight at once (already raised to the parallelism when not given).
    pub max_in_flight: usize,
    /// `--parallelism auto`: requests in flight adapt to the server, up to this many.
    pub adaptive_limit: Option<usize>,
    pub request_timeout: Duration,
    /// Allow plain `http://` to a host that is not loopback (`--allow-insecure-http`).
    pub allow_insecure_http: bool,
    /// The largest answer read (`--max-response-bytes`).
    pub max_response_bytes: usize,
    /// The most objects one listing may hold (`--max-objects`).
    pub max_objects: usize,
}

impl Connection {
    /// The client configuration for `api_url`, with the admin password resolved through `env`.
    pub fn client_config(
        &self,
        api_url: &str,
        read_only: bool,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ClientConfig, crate::secret::SecretError> {
        let password: Secret = self.admin_password.resolve(env)?;
        let mut config = ClientConfig::new(api_url.trim_end_matches('/'), &self.admin_email, password);
        config.api_version = self.api_version;
        config.max_in_flight = self.max_in_flight.max(1);
        config.adaptive_limit = self.adaptive_limit;
        config.max_rps = self.max_rps;
        config.request_timeout = self.request_timeout;
        config.connect_timeout = Duration::from_secs(10).min(self.request_timeout);
        config.ca_cert.clone_from(&self.ca_cert);
        config.read_only = read_only;
        config.max_response_bytes = self.max_response_bytes;
        config.max_objects = self.max_objects;
        Ok(config)
    }
}

/// Where tokens are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// `dir:PATH` (`--token-dir`): one file per token.
    Dir(PathBuf),
    /// `exec:COMMAND [ARGS…]`: a helper program speaking the token store protocol; the
    /// program and its arguments, split as a shell would (no shell runs it).
    Exec(Vec<String>),
}

/// How long a token store helper may take for one verb before it is killed.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(30);

/// The token store and when to issue tokens.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub store: StoreSpec,
    /// Issue a new token when the stored one expires within this long.
    pub rotate_before: Duration,
    /// Issue a new token for every user with `token.issue: true`.
    pub rotate_tokens: bool,
    /// How long a helper store (`exec:`) may take for one verb.
    pub store_timeout: Duration,
    /// Use a token directory that group or others may write to (`--allow-shared-token-dir`).
    pub allow_shared_dir: bool,
    /// The installation stored tokens are kept under (`--installation`); `None`: the API
    /// URL's origin.
    pub installation: Option<String>,
}

impl Tokens {
    /// The contract's defaults (`--rotate-before 30d`, no forced rotation) with this store.
    pub fn new(store: StoreSpec) -> Self {
        Self {
            store,
            rotate_before: PlanOptions::default().rotate_before,
            rotate_tokens: false,
            store_timeout: DEFAULT_STORE_TIMEOUT,
            allow_shared_dir: false,
            installation: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct PlanSettings {
    pub paths: Vec<PathBuf>,
    pub connection: Connection,
    pub tokens: Tokens,
    /// Also save the plan as JSON here.
    pub out: Option<PathBuf>,
    /// Plan only these companies (empty: all).
    pub companies: Vec<String>,
    /// The blast-radius guard of removals.
    pub removals: RemovalLimits,
    /// Where `{file: PATH}` secrets may lie besides the manifest paths (`--secrets-dir`).
    pub secrets_dirs: Vec<PathBuf>,
}

/// How many steps `apply` runs at once (`--parallelism`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parallelism {
    /// `auto`: as many as the client's adaptive limit lets through (`Connection::adaptive_limit`),
    /// never more than `max` (`--max-parallelism`).
    Auto { max: usize },
    /// This many (at least 1).
    Fixed(usize),
}

impl Parallelism {
    /// The executor's parallelism: steps talking to the API at once and token slots. With
    /// `auto`, the ceiling: the client's limit decides how many of those steps' requests are
    /// sent at once, the others wait for it.
    pub fn steps(self) -> usize {
        match self {
            Parallelism::Auto { max } | Parallelism::Fixed(max) => max.max(1),
        }
    }
}

/// What `apply` executes.
#[derive(Debug, Clone)]
pub enum ApplySource {
    /// Plan the manifests now (only these companies when given).
    Manifests { paths: Vec<PathBuf>, companies: Vec<String> },
    /// Execute this saved plan exactly.
    SavedPlan(PathBuf),
}

#[derive(Debug, Clone)]
pub struct ApplySettings {
    pub source: ApplySource,
    pub connection: Connection,
    pub tokens: Tokens,
    /// Steps talking to the API at once.
    pub parallelism: Parallelism,
    /// The blast-radius guard of removals.
    pub removals: RemovalLimits,
    /// How long to wait for another apply's lock on the token store.
    pub lock_timeout: Duration,
    /// Where `{file: PATH}` secrets may lie besides the manifest paths, or for a saved plan
    /// besides the checkout (`--secrets-dir`).
    pub secrets_dirs: Vec<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct ExportSettings {
    pub connection: Connection,
    pub companies: Vec<String>,
    pub out: Option<PathBuf>,
    /// Write `token: {issue: true}` on every user.
    pub tokens: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct DemoSettings {
    pub api_version: ApiVersion,
    /// Keep the run's directory (manifests, token files) instead of removing it at the end.
    pub keep: bool,
}

/// When `reconcile` runs its cycles.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// The pause between the end of one cycle and the start of the next (`--interval`).
    pub interval: Duration,
    /// Each pause is the interval give or take up to this fraction of it, at random
    /// (`--jitter`, 0 to 1): loops started together drift apart.
    pub jitter: f64,
    /// One cycle, then exit with `apply`'s codes (`--once`).
    pub once: bool,
}

#[derive(Debug, Clone)]
pub struct ReconcileSettings {
    /// Manifest files or directories, read again at each cycle.
    pub paths: Vec<PathBuf>,
    pub connection: Connection,
    pub tokens: Tokens,
    /// Steps talking to the API at once.
    pub parallelism: Parallelism,
    /// Apply removals (`--allow-removals`), still within `removals`; otherwise they are
    /// reported and held back.
    pub allow_removals: bool,
    /// The blast-radius guard of removals.
    pub removals: RemovalLimits,
    /// How long a cycle waits for another apply's lock on the token store.
    pub lock_timeout: Duration,
    /// Where `{file: PATH}` secrets may lie besides the manifest paths (`--secrets-dir`).
    pub secrets_dirs: Vec<PathBuf>,
    pub schedule: Schedule,
}
