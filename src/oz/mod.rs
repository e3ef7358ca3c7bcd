//! The Oz API client: the only code that speaks HTTP to an Oz API.
//!
//! One concept per file:
//! - `config`: `ClientConfig`, `VersionSetting`
//! - `client`: `OzClient::connect`, typed list calls
//! - `session`: login, refresh, one shared re-login on expiry
//! - `transport`: the single `send` every request goes through (read-only guard, concurrency
//!   bound, rate limit, auth renewal, trailing-slash fallback, retries, tracing, the
//!   `--max-response-bytes` bound on every answer)
//! - `dialect`: every API 5 / API 6 difference, and version detection
//! - `wire`: tolerant serde shapes of the API and list envelopes
//! - `paging`: offset/limit paging as a pure state machine, bounded by `--max-objects`
//! - `retry`: which failures are retried and how long to wait
//! - `throttle`: `max_rps`
//! - `limiter`: `--parallelism auto`, the adaptive bound on requests in flight
//! - `observe`: live state as `model::Observed`
//! - `effects`: the writes and lookups by natural key, and `apply::Effects` for `OzClient`
//! - `observer`: `RequestObserver`, told about every attempt by its route template (metrics)
//! - `probe`: single raw GETs for `ozform doctor`, answered as wire facts (list shape, fields,
//!   paging, certificate, the server's date), never a write
//!
//! Invariants: no secret (password, session or service token) is logged or put in an error;
//! a read-only client sends no POST, PATCH or DELETE except login and refresh; a create that
//! may have happened is never re-sent (its error says `outcome_unknown()`); whatever the
//! server answers, no more than `--max-response-bytes` of an answer is held, no listing grows
//! past `--max-objects`, and no token that cannot be one is kept (`OzError::Limit`).

mod client;
mod config;
mod dialect;
mod effects;
mod error;
mod limiter;
mod observe;
mod observer;
mod paging;
mod probe;
mod retry;
mod session;
mod throttle;
mod transport;
mod wire;

pub use client::{OzClient, UserFilter};
pub use config::{ClientConfig, DEFAULT_MAX_OBJECTS, DEFAULT_MAX_RESPONSE_BYTES, VersionSetting};
pub use error::OzError;
pub use observer::{Attempt, RequestObserver, Route};
pub use probe::{
    CompaniesPage, DialectEvidence, Fault, ListQuery, ListShape, Prober, ServerCertificate, Unanswered,
    UserFields, UsersPage, dialect_evidence,
};
pub use retry::RetryPolicy;
