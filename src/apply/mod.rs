//! Apply: run a `Plan` as a dependency graph against `Effects`, keeping tokens in a
//! `TokenStore`, telling `Progress` about each step.
//!
//! The ordering (`order`) is pure; the executor reads each change's typed payload (the plan's
//! own types) and does I/O only through the `Effects`, `TokenStore` and `Progress` seams, so
//! it is tested against in-memory fakes as well as the emulator. This module owns its seams'
//! vocabulary: `Effects` fails with an `EffectError` of its own kinds (the Oz client converts
//! at its edge), so nothing here knows the client.
//!
//! The phases of `ozform apply`, in the caller's order:
//! 1. `resolve_passwords`: every password a user create needs, before any request; all
//!    missing ones are reported together and nothing is executed.
//! 2. `check_fresh` (saved plans): re-read every planned object and refuse the whole plan if
//!    one moved since it was made, or if an id the plan carries (a `live_id`, a create's
//!    `company_id`, a token's `user_id`) is not the id of the live object at its address.
//! 3. `execute`: steps start as soon as their dependencies are done, at most `parallelism` at a
//!    time; a failed step skips its dependents only. The result is an `ApplyReport`.
//!
//! Invariants: a create is never re-sent blindly; when its outcome is unknown (or the API says
//! the object exists) the object is read back by its natural key and adopted. No secret
//! (password, token) is in an error, a report, or a progress event: they hold `Secret`s or
//! nothing.

mod effects;
mod executor;
mod fresh;
pub mod order;
mod passwords;
mod progress;
mod step_error;

pub use effects::{EffectError, EffectErrorKind, Effects};
pub use executor::{ApplyReport, DoneStep, ExecuteOptions, FailedStep, SkippedStep, execute};
pub use fresh::check_fresh;
pub use passwords::{Passwords, anchor_secrets, resolve_passwords};
pub use progress::{Outcome, Progress, Silent};
pub use step_error::{StepError, StepErrorKind};

/// Why an apply failed as a whole, or was refused before it started.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ApplyError {
    #[error("apply was not approved")]
    #[diagnostic(code(ozform::apply::not_approved), help("answer `yes`, or pass `--auto-approve`"))]
    NotApproved,

    /// Passwords that user creates need and that cannot be resolved (sources named, never
    /// values): one related item per user, shown one per line (a list in `--log-format json`).
    #[error("cannot resolve {}", crate::words::count(missing.len(), "password", "passwords"))]
    #[diagnostic(
        code(ozform::apply::missing_passwords),
        help("set the environment variables or create the files named; nothing was changed")
    )]
    MissingPasswords {
        #[related]
        missing: Vec<MissingPassword>,
    },

    /// Live objects that moved since the plan was made (`moved`: their addresses), and ids or
    /// assumptions of the plan that are not those of the live objects at their addresses
    /// (`wrong`: a sentence each, naming the address and both sides).
    #[error("the plan is stale: {} — run `ozform plan` again", stale_parts(moved, wrong))]
    #[diagnostic(
        code(ozform::apply::stale),
        help(
            "make a new plan with `ozform plan --out FILE`, review it, and apply that; nothing was changed \
             (an id that is not the live object's means the object was recreated, or the plan file was edited)"
        )
    )]
    Stale { moved: Vec<String>, wrong: Vec<String> },

    /// Reading live state for the stale-plan check failed.
    #[error("cannot check that `{address}` is unchanged since the plan was made: {source}")]
    #[diagnostic(code(ozform::apply::fresh_read), help("check the connection and run `ozform apply` again"))]
    FreshRead {
        address: String,
        #[source]
        source: EffectError,
    },

    #[error("the plan's changes depend on each other in a cycle: {}", addresses.join(", "))]
    #[diagnostic(
        code(ozform::apply::cycle),
        help("the plan file was edited or is corrupt: make it again with `ozform plan --out FILE`")
    )]
    Cycle { addresses: Vec<String> },

    #[error("the change of `{address}` depends on `{dependency}`, which is not in the plan")]
    #[diagnostic(
        code(ozform::apply::unknown_dependency),
        help("the plan file was edited or is corrupt: make it again with `ozform plan --out FILE`")
    )]
    UnknownDependency { address: String, dependency: String },

    #[error("the plan changes `{address}` more than once")]
    #[diagnostic(
        code(ozform::apply::duplicate_change),
        help("the plan file was edited or is corrupt: make it again with `ozform plan --out FILE`")
    )]
    DuplicateChange { address: String },

    /// The token store cannot keep a token: found before any token was issued, so nothing was
    /// changed. Shown as the store's own error (its code and help: a directory's, a helper's).
    #[error("the token store cannot keep tokens, so no token was issued: {store}")]
    #[diagnostic(transparent)]
    TokenStoreUnusable { store: crate::token_store::TokenStoreError },

    /// Some steps failed (and their dependents were skipped); the others were done.
    #[error(
        "apply failed: {failed} step{} failed, {skipped} skipped, {done} done{}",
        plural(*failed),
        first.as_ref().map(|f| format!(" (first failure: {f})")).unwrap_or_default()
    )]
    #[diagnostic(
        code(ozform::apply::partial),
        help("fix the cause and run `ozform apply` again: what was done is not repeated")
    )]
    Partial { done: usize, failed: usize, skipped: usize, first: Option<String> },
}

/// What a stale plan's message lists: the moved addresses, then each wrong id.
fn stale_parts(moved: &[String], wrong: &[String]) -> String {
    let mut parts = Vec::with_capacity(wrong.len() + 1);
    if !moved.is_empty() {
        let addresses: Vec<String> = moved.iter().map(|a| crate::escape::quote(a)).collect();
        parts.push(format!("{} changed since it was made", addresses.join(", ")));
    }
    parts.extend(wrong.iter().cloned());
    parts.join("; ")
}

/// One password a user create needs that cannot be resolved: the user and why (the variable or
/// file named, never a value).
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("`{email}`: {reason}")]
pub struct MissingPassword {
    pub email: String,
    pub reason: String,
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
