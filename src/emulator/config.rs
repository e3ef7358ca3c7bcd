//! How an emulator run is set up: dialect, address, the built-in ADMIN account, session TTL,
//! quirks, faults and the seed snapshot. Plain data; `start` reads it once (quirks and faults can
//! be changed later on the running `Handle`).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::model::ApiVersion;
use crate::secret::Secret;

use super::db::Snapshot;
use super::faults::Faults;
use super::quirks::Quirks;

/// Email of the built-in ADMIN account unless configured otherwise.
pub const DEFAULT_ADMIN_EMAIL: &str = "admin@ozform.local";
/// Password of the built-in ADMIN account unless configured otherwise (a test fixture, not a secret).
pub const DEFAULT_ADMIN_PASSWORD: &str = "emulator-admin";
/// The Oz default `OZ_SESSION_TTL`.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(15 * 60);

/// Everything `emulator::start` needs.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// The dialect spoken for the whole run.
    pub api_version: ApiVersion,
    /// Where to listen; port 0 picks a free port (read it back with `Handle::url`).
    pub listen: SocketAddr,
    /// The built-in ADMIN account, present from the start and listed among the users.
    pub admin_email: String,
    pub admin_password: Secret,
    /// Lifetime of a login session, extended by each request made with it.
    pub session_ttl: Duration,
    pub quirks: Quirks,
    pub faults: Faults,
    /// Companies, users (a seed user may carry a `password`) and token records to start from.
    pub seed: Option<Snapshot>,
    /// Log one `tracing` line at info per request (method, route, status, duration).
    pub log_requests: bool,
    /// Keep the request log that `Handle::requests` reads (it grows with every request).
    pub record_requests: bool,
    /// At most this many requests served at once (latency and faults included); the others
    /// wait in line, in arrival order (`--capacity`). `None`: no limit.
    pub capacity: Option<usize>,
    /// With a capacity: a request that waited this long in line is answered 503 and not
    /// handled (`--shed-after-ms`). `None`: requests wait as long as it takes.
    pub shed_after: Option<Duration>,
}

impl EmulatorConfig {
    /// Defaults: `127.0.0.1:0`, `admin@ozform.local` / `emulator-admin`, 15-minute sessions,
    /// default quirks (bare-array lists), no faults, nothing seeded, no request logging or
    /// recording, no capacity limit.
    pub fn new(api_version: ApiVersion) -> Self {
        Self {
            api_version,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            admin_email: DEFAULT_ADMIN_EMAIL.to_string(),
            admin_password: Secret::new(DEFAULT_ADMIN_PASSWORD),
            session_ttl: DEFAULT_SESSION_TTL,
            quirks: Quirks::default(),
            faults: Faults::default(),
            seed: None,
            log_requests: false,
            record_requests: false,
            capacity: None,
            shed_after: None,
        }
    }
}
