//! The planner: a pure function from (desired, observed, sink index, options) to a `Plan`.
//!
//! Pure; no I/O. The clock, the secrets' availability and the sink contents are passed in
//! through `PlanOptions` and `SinkIndex`, so the same input always gives the same plan (same
//! bytes once rendered). The types here (`Plan`, `Change`, `Action`, `Address`) are the contract
//! of the saved plan format (`format_version` 1) and are read by the renderers and the executor.
//!
//! Invariants of a `Plan` made by `plan()`: at most one change per address; changes sorted by
//! address (companies, then service users, then tokens; then identity); every `depends_on`
//! names a company or user address of the desired state (present in `changes` only when that
//! object itself changes); `summary` counts `changes`; no field ever holds a secret value.

mod decode;
pub mod fingerprint;
mod planner;
mod reason;
mod types;

use std::collections::BTreeSet;
use std::time::Duration;

pub use planner::{missing_secrets, plan};
pub use reason::TokenReason;
pub use types::*;

use crate::secret::SecretRef;

/// Everything besides desired, observed and sink that a plan depends on. Plain values, so
/// planning stays pure: the CLI reads the clock and checks the secrets before calling `plan`.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanOptions {
    /// The time the plan is made, Unix epoch seconds (token expiry is judged against it).
    pub now: f64,
    /// Issue a new token when the stored one expires within this long (`--rotate-before`).
    pub rotate_before: Duration,
    /// Issue a new token for every user with `token.issue: true` (`--rotate-tokens`).
    pub rotate_tokens: bool,
    /// Plan only these companies and their users (`--company`); empty plans all.
    pub companies: Vec<String>,
    /// Secret sources that cannot be resolved now; a planned create needing one gets a warning.
    /// Compute it with `missing_secrets(&desired, |r| r.is_available(&secret::process_env))`.
    pub missing_secrets: BTreeSet<SecretRef>,
}

impl Default for PlanOptions {
    fn default() -> Self {
        Self {
            now: 0.0,
            // The contract's default for `--rotate-before`: 30 days.
            rotate_before: Duration::from_secs(30 * 24 * 3600),
            rotate_tokens: false,
            companies: Vec::new(),
            missing_secrets: BTreeSet::new(),
        }
    }
}

/// Why planning or reading a saved plan failed as a whole (conflicts of single objects are
/// `Conflict`s in the plan).
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum PlanError {
    #[error("cannot read plan file `{path}`: {reason}")]
    #[diagnostic(code(ozform::plan::unreadable), help("pass a file written by `ozform plan --out`"))]
    Unreadable { path: String, reason: String },
    #[error("the saved plan is not valid JSON of the plan format: {reason}")]
    #[diagnostic(
        code(ozform::plan::invalid),
        help("pass a file written by `ozform plan --out`, unedited; or run `ozform plan --out FILE` again")
    )]
    Invalid { reason: String },
    #[error("the saved plan has `format_version` {found}, this ozform reads only version {supported}")]
    #[diagnostic(
        code(ozform::plan::unsupported_version),
        help(
            "make the plan again with this ozform (`ozform plan --out FILE`), or apply it with the ozform that made it"
        )
    )]
    UnsupportedVersion { found: String, supported: u32 },
}
