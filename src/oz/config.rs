//! Client configuration: where the API is, who logs in, and how hard the client may push.
//!
//! Plain data with defaults; validated when `OzClient::connect` builds the HTTP client. The
//! bounds against a broken or hostile server (`max_response_bytes`, `max_objects`) are here too.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::model::ApiVersion;
use crate::secret::Secret;

use super::observer::RequestObserver;
use super::retry::RetryPolicy;

/// Which dialect to speak: fixed by the user, or detected from what the live API returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSetting {
    Auto,
    Fixed(ApiVersion),
}

/// Everything `OzClient::connect` needs. Build with `ClientConfig::new` and adjust fields.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Base URL, e.g. `https://oz.example.com` (a trailing `/` is ignored).
    pub api_url: String,
    pub admin_email: String,
    pub admin_password: Secret,
    pub api_version: VersionSetting,
    /// Requests in flight at once, shared by every call of one client (at least 1).
    pub max_in_flight: usize,
    /// `Some(max)`: requests in flight are also bounded by an adaptive limit (`--parallelism
    /// auto`, see `limiter`) that starts at 4 and stays within 1 and `max` (and `max_in_flight`).
    /// `None`: only `max_in_flight` bounds them.
    pub adaptive_limit: Option<usize>,
    /// Requests started per second, shared by every call; `None` is unlimited.
    pub max_rps: Option<f64>,
    pub connect_timeout: Duration,
    /// Whole-request timeout (connect, send, read the body).
    pub request_timeout: Duration,
    /// An extra PEM root certificate to trust besides the system roots.
    pub ca_cert: Option<PathBuf>,
    /// Refuse every mutating request (planning and export).
    pub read_only: bool,
    /// `limit` asked for on each list page (at least 1).
    pub page_size: usize,
    pub retry: RetryPolicy,
    /// The largest answer read, in bytes (`--max-response-bytes`): a body past it is an error,
    /// found while it streams in, whatever `Content-Length` says.
    pub max_response_bytes: usize,
    /// The most objects one listing may hold (`--max-objects`): more is an error.
    pub max_objects: usize,
    /// Told about every HTTP attempt (metrics); `None` tells no one.
    pub observer: Option<Arc<dyn RequestObserver>>,
}

/// `--max-response-bytes`' default: 64 MiB, far above any answer of a real installation (a
/// page of 100 users is about 50 KB), far below what would exhaust a CI runner.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// `--max-objects`' default: one million companies or users in one listing.
pub const DEFAULT_MAX_OBJECTS: usize = 1_000_000;

impl ClientConfig {
    /// Defaults: auto-detected dialect, 16 in flight, no adaptive limit, no rate limit, 10 s
    /// connect and 30 s request timeouts, system roots only, read-write, pages of 100,
    /// `RetryPolicy::default()`, answers of at most 64 MiB and listings of at most 1,000,000
    /// objects, no request observer.
    pub fn new(api_url: impl Into<String>, admin_email: impl Into<String>, admin_password: Secret) -> Self {
        Self {
            api_url: api_url.into(),
            admin_email: admin_email.into(),
            admin_password,
            api_version: VersionSetting::Auto,
            max_in_flight: 16,
            adaptive_limit: None,
            max_rps: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            ca_cert: None,
            read_only: false,
            page_size: 100,
            retry: RetryPolicy::default(),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_objects: DEFAULT_MAX_OBJECTS,
            observer: None,
        }
    }
}
