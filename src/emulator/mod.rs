//! The built-in Oz API emulator: `LocalStack` for Oz, and the one fake of the Oz API the tests
//! use. An in-process HTTP server that speaks the API 5 or API 6 dialect (shared/oz-api.md)
//! with its error bodies, sessions (sliding TTL, refresh, expiry), companies, users and service
//! tokens, plus switchable quirks (list envelopes, capped limits, ignored filters and offset,
//! trailing slashes and redirects, sparse objects, expired sessions answered 403, hidden
//! permission flags) and fault injection, by seeded rates or exact counters (latency, 429, 500,
//! 503, dropped connections, creates that commit then fail or answer a body that is not JSON,
//! expiring sessions), and a hidden capacity (at most N requests served at once, the others
//! waiting in line, shed with a 503 after a while). Tests, benchmarks and `ozform demo` run on it.
//!
//! Files, one concept each: `config` (what a run is), `db` (the data and sessions, and their
//! public `Snapshot`), `dialect` (API 5 vs 6), `routes` (the HTTP surface), `quirks`,
//! `faults`, `gate` (holding requests until enough are in flight), `stats`, `request_log`,
//! `api_error` (Oz error bodies), `server` (the accept loop).
//!
//! Invariants: `start` returns once the listener is bound; the emulator never logs, dumps or
//! returns a password, and tokens only in the auth, refresh and service-token answers (the
//! request log redacts them from bodies and never records headers); it only ever listens where
//! it is told (tests use `127.0.0.1:0`). Its tokens start with `emu-session-`, `emu-refresh-` or
//! `emu-service-`, so that a test can scan output for any of them.
//!
//! Besides the Oz routes, `GET /_emulator/state` (the `Snapshot` JSON, which `--seed` reads back)
//! and `GET /_emulator/stats` serve people running `ozform emulator`; they are not counted.
//!
//! What tests read and steer on the `Handle`: `snapshot`, `stats` (counts per route, creates
//! per email and company name, most requests in flight and served, queue waits and shed
//! requests, user agents), `requests` (the request
//! log, with `EmulatorConfig::record_requests`), `reset_stats` (both), `set_quirks`,
//! `set_faults` / `faults` (what is left of the counters), `set_gate`, `expire_all_sessions`,
//! `forget_all_sessions` (refresh fails too), `advance_clock` (sessions expire without
//! sleeping), `update_user_raw` / `update_company_raw` (drift made outside ozform, no request
//! counted), `admin_email` / `admin_password`.

mod api_error;
mod capacity;
mod config;
mod db;
mod dialect;
mod faults;
mod gate;
mod quirks;
mod request_log;
mod routes;
mod server;
mod stats;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::model::ApiVersion;
use crate::secret::Secret;

pub use config::{DEFAULT_ADMIN_EMAIL, DEFAULT_ADMIN_PASSWORD, DEFAULT_SESSION_TTL, EmulatorConfig};
pub use db::{CompanyRecord, SERVICE_TOKEN_TTL, ServiceTokenRecord, Snapshot, UserRecord};
pub use faults::Faults;
pub use gate::Gate;
pub use quirks::{DEFAULT_LIMIT, Envelope, Quirks, TotalField, TrailingSlash};
pub use request_log::{RequestRecord, SENSITIVE};
pub use routes::TOKEN_HEADER;
pub use stats::Stats;

use capacity::Capacity;
use db::Db;
use faults::Injector;
use gate::Gatekeeper;
use request_log::RequestLog;
use stats::Recorder;

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum EmulatorError {
    #[error("cannot listen on `{addr}`: {reason}")]
    #[diagnostic(code(ozform::emulator::listen), help("pick a free address with `--listen`"))]
    Listen { addr: String, reason: String },
    #[error("cannot read the seed `{path}`: {reason}")]
    #[diagnostic(
        code(ozform::emulator::seed),
        help("a seed is JSON as the emulator dumps it: `{{\"companies\": [...], \"users\": [...]}}`")
    )]
    Seed { path: String, reason: String },
    #[error("the seed is not valid: {reason}")]
    #[diagnostic(
        code(ozform::emulator::seed_id),
        help("Oz ids are UUIDs: give each seeded object a UUID, or leave its id out for a fresh one")
    )]
    SeedId { reason: String },
}

/// State shared by the handlers, the middleware and the `Handle`.
pub(crate) struct Shared {
    api_version: ApiVersion,
    session_ttl: Duration,
    log_requests: bool,
    db: Mutex<Db>,
    quirks: RwLock<Quirks>,
    injector: Mutex<Injector>,
    /// Copies of the fault settings read on every request without taking the injector lock.
    faults_active: AtomicBool,
    latency_ms: AtomicU64,
    stats: Recorder,
    requests: RequestLog,
    gate: Gatekeeper,
    /// `--capacity`: the pool of workers, when limited.
    capacity: Option<Capacity>,
}

impl Shared {
    // Locks are never held across an await and no code in them panics on purpose; should one
    // be poisoned anyway, the data is still consistent per operation, so keep serving.
    fn db(&self) -> MutexGuard<'_, Db> {
        self.db.lock().unwrap_or_else(PoisonError::into_inner)
    }
    fn quirks(&self) -> RwLockReadGuard<'_, Quirks> {
        self.quirks.read().unwrap_or_else(PoisonError::into_inner)
    }
    fn injector(&self) -> MutexGuard<'_, Injector> {
        self.injector.lock().unwrap_or_else(PoisonError::into_inner)
    }
    fn faults_active(&self) -> bool {
        self.faults_active.load(Ordering::Relaxed)
    }
    fn latency_ms(&self) -> u64 {
        self.latency_ms.load(Ordering::Relaxed)
    }
    fn set_faults(&self, faults: Faults) {
        self.faults_active.store(faults.injects(), Ordering::Relaxed);
        self.latency_ms.store(faults.latency_ms, Ordering::Relaxed);
        *self.injector() = Injector::new(faults);
    }
}

/// Start an emulator. Returns once the listener is bound: requests can be sent at once. A
/// seed with an id that is not a UUID is refused (`EmulatorError::SeedId`).
pub async fn start(config: EmulatorConfig) -> Result<Handle, EmulatorError> {
    let listen_error =
        |e: std::io::Error| EmulatorError::Listen { addr: config.listen.to_string(), reason: e.to_string() };
    if let Some(seed) = &config.seed {
        seed.check_ids().map_err(|reason| EmulatorError::SeedId { reason })?;
    }
    let listener = tokio::net::TcpListener::bind(config.listen).await.map_err(listen_error)?;
    let addr = listener.local_addr().map_err(listen_error)?;
    let db = Db::new(config.seed.clone().unwrap_or_default(), &config.admin_email, &config.admin_password);
    let shared = Arc::new(Shared {
        api_version: config.api_version,
        session_ttl: config.session_ttl,
        log_requests: config.log_requests,
        db: Mutex::new(db),
        quirks: RwLock::new(config.quirks.clone()),
        injector: Mutex::new(Injector::new(Faults::default())),
        faults_active: AtomicBool::new(false),
        latency_ms: AtomicU64::new(0),
        stats: Recorder::default(),
        requests: RequestLog::new(config.record_requests),
        gate: Gatekeeper::default(),
        capacity: config.capacity.map(|n| Capacity::new(n, config.shed_after)),
    });
    shared.set_faults(config.faults.clone());
    let app = routes::router(Arc::clone(&shared));
    let (shutdown, watch_shutdown) = watch::channel(false);
    let task = tokio::spawn(server::serve(listener, app, watch_shutdown));
    tracing::debug!(%addr, api_version = %config.api_version, "emulator listening");
    Ok(Handle {
        addr,
        api_version: config.api_version,
        admin_email: config.admin_email,
        admin_password: config.admin_password,
        shared,
        shutdown,
        task,
    })
}

/// A running emulator. Dropping it stops the server too; `shutdown` also waits for that.
pub struct Handle {
    addr: SocketAddr,
    api_version: ApiVersion,
    admin_email: String,
    admin_password: Secret,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("addr", &self.addr)
            .field("api_version", &self.api_version)
            .finish_non_exhaustive()
    }
}

impl Handle {
    /// Base URL, like `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn api_version(&self) -> ApiVersion {
        self.api_version
    }
    /// Login of the built-in ADMIN account.
    pub fn admin_email(&self) -> &str {
        &self.admin_email
    }
    pub fn admin_password(&self) -> &Secret {
        &self.admin_password
    }
    /// Companies, users (without passwords) and issued token records, in creation order.
    pub fn snapshot(&self) -> Snapshot {
        self.shared.db().snapshot()
    }
    pub fn stats(&self) -> Stats {
        self.shared.stats.current()
    }
    /// The requests received since start or the last `reset_stats`, in arrival order (empty
    /// unless `EmulatorConfig::record_requests`). Holds no password or token.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.requests.records()
    }
    /// Zero the counters and clear the request log.
    pub fn reset_stats(&self) {
        self.shared.stats.reset();
        self.shared.requests.clear();
    }
    /// The faults in force, with what is left of their counters (`too_many_requests_next`, …).
    pub fn faults(&self) -> Faults {
        self.shared.injector().faults().clone()
    }
    /// Replace the faults (the RNG restarts from `faults.seed`).
    pub fn set_faults(&self, faults: Faults) {
        self.shared.set_faults(faults);
    }
    pub fn quirks(&self) -> Quirks {
        self.shared.quirks().clone()
    }
    pub fn set_quirks(&self, quirks: Quirks) {
        *self.shared.quirks.write().unwrap_or_else(PoisonError::into_inner) = quirks;
    }
    /// Hold the requests a gate matches until enough are in flight together (`None`: no gate;
    /// requests held at a gate that is replaced go on at once).
    pub fn set_gate(&self, gate: Option<Gate>) {
        self.shared.gate.set(gate);
    }
    /// Every login session expires now: the next request with it gets 401 (403 under the
    /// `auth_expired_403` quirk) with `error_code` 8, and its `expire_token` still refreshes it.
    /// Service tokens are not touched.
    pub fn expire_all_sessions(&self) {
        self.shared.db().expire_all_sessions();
    }
    /// Every login session is forgotten: 401 `error_code` 7, and refresh fails too.
    pub fn forget_all_sessions(&self) {
        self.shared.db().forget_all_sessions();
    }
    /// Move the emulator clock forward (sessions and token expiry follow it).
    pub fn advance_clock(&self, by: Duration) {
        self.shared.db().advance_clock(by);
    }
    /// Change the user with this email (case-insensitive) behind the API's back, e.g. to
    /// simulate drift. Returns false when there is no such user. The id cannot be changed.
    pub fn update_user_raw(&self, email: &str, change: impl FnOnce(&mut UserRecord)) -> bool {
        let mut db = self.shared.db();
        let Some(id) = db.user_by_email(email).map(|u| u.user_id.clone()) else { return false };
        db.update_user(&id, |user| {
            change(user);
            user.user_id.clone_from(&id);
        })
        .is_some()
    }
    /// Change the first company with this exact name behind the API's back. Returns false
    /// when there is none. The id cannot be changed.
    pub fn update_company_raw(&self, name: &str, change: impl FnOnce(&mut CompanyRecord)) -> bool {
        let mut db = self.shared.db();
        let Some(id) = db.companies().find(|c| c.name == name).map(|c| c.company_id.clone()) else {
            return false;
        };
        match db.company_mut(&id) {
            Some(company) => {
                change(company);
                company.company_id = id;
                true
            }
            None => false,
        }
    }
    /// Stop serving: close the listener and every connection, and wait for that.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}
