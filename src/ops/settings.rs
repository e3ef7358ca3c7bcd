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
    /// The settings' defaults (those of the flags) for the API at `api_url`, logging in as
    /// `admin_email` with the password of `OZ_ADMIN_PASSWORD`.
    pub fn new(api_url: &str, admin_email: &str) -> Self {
        Self {
            api_url: Some(api_url.trim_end_matches('/').to_string()),
            admin_email: admin_email.to_string(),
            admin_password: SecretRef::Env("OZ_ADMIN_PASSWORD".into()),
            api_version: VersionSetting::Auto,
            ca_cert: None,
            max_rps: None,
            max_in_flight: 16,
            // As `plan`'s flags: no adaptive limit (`apply --parallelism auto` sets one).
            adaptive_limit: None,
            request_timeout: Duration::from_secs(30),
            allow_insecure_http: false,
            max_response_bytes: crate::oz::DEFAULT_MAX_RESPONSE_BYTES,
            max_objects: crate::oz::DEFAULT_MAX_OBJECTS,
        }
    }

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

pub use crate::token_store::StoreSpec;

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

/// One installation a run acts on: what it is named, how to reach it, where its tokens go,
/// and its manifests.
#[derive(Debug, Clone)]
pub struct InstallationSettings {
    /// Its name in the project file; `None` without a project file (the one installation of
    /// the run, shown as before project files).
    pub name: Option<String>,
    pub connection: Connection,
    pub tokens: Tokens,
    /// Its manifests (`plan`, `apply`): the project file's `manifests`, or `PATHS`.
    pub manifests: Vec<PathBuf>,
}

/// The installations a run acts on, and how many at once.
#[derive(Debug, Clone)]
pub struct Installations {
    /// At least one, in the project file's order.
    pub each: Vec<InstallationSettings>,
    /// How many run at once (`--installations-parallelism`, at least 1).
    pub parallelism: usize,
    /// Whether they come from a project file (each named): outcomes are shown grouped.
    pub project: bool,
}

impl Installations {
    /// The one installation of a run without a project file.
    pub fn one(installation: InstallationSettings) -> Self {
        Self { each: vec![installation], parallelism: 1, project: false }
    }

    /// Each, by reference (what `each::each` takes).
    pub fn refs(&self) -> Vec<&InstallationSettings> {
        self.each.iter().collect()
    }
}

/// Where `--out` writes: one file, or a directory holding `<installation>.<extension>` for
/// each installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    File(PathBuf),
    Dir(PathBuf),
}

impl Out {
    /// The file `name`'s output goes to (`extension` without its dot): the file, or
    /// `DIR/<name>.<extension>` (`name` is a project file's installation name: a plain file
    /// name).
    pub fn file_for(&self, name: Option<&str>, extension: &str) -> PathBuf {
        match self {
            Out::File(path) => path.clone(),
            Out::Dir(dir) => dir.join(format!("{}.{extension}", name.unwrap_or("ozform"))),
        }
    }
}

#[derive(Debug, Clone)]
pub struct PlanSettings {
    pub installations: Installations,
    /// Also save each plan as JSON there.
    pub out: Option<Out>,
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
    /// Plan each installation's manifests now (only these companies when given).
    Manifests { companies: Vec<String> },
    /// Execute this saved plan exactly, or each saved plan of this directory (each on the
    /// project file's installation it names).
    SavedPlan(PathBuf),
}

#[derive(Debug, Clone)]
pub struct ApplySettings {
    pub source: ApplySource,
    pub installations: Installations,
    /// Steps talking to the API at once.
    pub parallelism: Parallelism,
    /// The blast-radius guard of removals.
    pub removals: RemovalLimits,
    /// How long to wait for another apply's lock on the token store.
    pub lock_timeout: Duration,
    /// Where `{file: PATH}` secrets may lie besides the manifest paths, or for a saved plan
    /// besides the checkout (`--secrets-dir`).
    pub secrets_dirs: Vec<PathBuf>,
    /// Go on with the next installations after one fails (`--keep-going`).
    pub keep_going: bool,
    /// Where to write the map of old ids to new (`--id-map`).
    pub id_map: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct ExportSettings {
    pub installations: Installations,
    pub companies: Vec<String>,
    pub out: Option<Out>,
    /// Write `token: {issue: true}` on every user.
    pub tokens: bool,
    /// What each user's `password` says (`--password-env`).
    pub passwords: crate::manifest::export::ExportPasswords,
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
    /// The installations reconciled, each with its manifests (files or directories, read again
    /// at each cycle): the project file's, or the one of `PATHS` and the connection flags.
    pub installations: Installations,
    /// Steps talking to the API at once: `auto` or a fixed number.
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
