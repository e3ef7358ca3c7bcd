//! Plans: the planner, a pure function from (desired, observed, stored tokens, options) to a
//! `Plan`, and the saved plan format.
//!
//! Pure; no I/O. The clock, the secrets' availability and the token store's contents are
//! passed in through `PlanOptions` and `StoredTokens`, so the same input always gives the same
//! plan (same bytes once written).
//!
//! One concept per file: `change` (the plan as a value: `Plan`, `Change`, its typed `Payload`),
//! `planner` (`compute`), `diff` (the one field diff, shared with the executor's adoption),
//! `reason` (`TokenReason`), `fingerprint` (stale-plan checks), `format` (the only reader and
//! writer of the saved plan, `format_version` 1), `guard` (the blast-radius check of removals),
//! `id` (the plan id: a hash of the changes, which CI compares with the reviewed one),
//! `warnings` (identical warnings given once with a count).
//!
//! Invariants of a `Plan` made by `compute()`: at most one change per address; changes sorted
//! by address (companies, then service users, then tokens; then identity); every `depends_on`
//! names a company or user address of the desired state (present in `changes` only when that
//! object itself changes); no field ever holds a secret value.

mod change;
mod diff;
pub mod fingerprint;
pub mod format;
mod guard;
pub mod id;
mod planner;
mod reason;
mod warnings;

use std::collections::BTreeSet;
use std::time::Duration;

pub use change::*;
pub use diff::{company_update, user_update};
pub use guard::{RemovalLimits, check_removals};
pub use planner::{compute, missing_secrets, warnings_now};
pub use reason::TokenReason;
pub use warnings::group_warnings;

use crate::secret::SecretRef;

/// Everything besides desired, observed and the stored tokens that a plan depends on. Plain
/// values, so planning stays pure: the caller reads the clock and checks the secrets.
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
    #[error(
        "the saved plan's `plan_id` does not match its changes: it was edited after `ozform plan` wrote it (`plan_id` {written}, its changes hash to {computed})"
    )]
    #[diagnostic(
        code(ozform::plan::id_mismatch),
        help(
            "apply a saved plan only as `ozform plan --out` wrote it: make the plan again (`ozform plan --out FILE`) and review that one"
        )
    )]
    IdMismatch { written: String, computed: String },
    #[error(
        "the plan removes {removals} of {base} live service users, which the blast-radius guard refuses: {reasons}"
    )]
    #[diagnostic(
        code(ozform::plan::mass_removal),
        help(
            "check the manifest paths (a missing file declares nothing, so its users would go); if these removals are meant, pass `--allow-mass-removal` (or raise `--max-removal-percent` / `--max-removals`)"
        )
    )]
    MassRemoval { removals: usize, base: usize, reasons: String },
}
