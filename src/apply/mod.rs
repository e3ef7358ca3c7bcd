//! Apply: run a `Plan` as a dependency graph against `Effects`, writing tokens to a `TokenSink`.
//!
//! The ordering (`order`) and the decoding of changes into requests (the plan format's own
//! decoders, `Change::new_company` and kin in `plan`) are pure; the executor does
//! I/O only through the `Effects`, `TokenSink` and `Observer` seams, so it is tested against
//! in-memory fakes (`fake::FakeEffects`, `sink::MemorySink`) as well as the emulator.
//!
//! The phases of `ozform apply`, in the caller's order:
//! 1. `resolve_passwords`: every password a user create needs, before any request; all
//!    missing ones are reported together and nothing is executed.
//! 2. `check_fresh` (saved plans): re-read every planned object and refuse the whole plan if
//!    one moved since it was made.
//! 3. `execute`: steps start as soon as their dependencies are done, at most `parallelism` at a
//!    time; a failed step skips its dependents only. The result is an `ApplyReport`.
//!
//! Invariants: a create is never re-sent; when its outcome is unknown (or the API says the
//! object exists) the object is read back by its natural key and adopted. No secret (password,
//! token) is in an error, a report, or an observer line: they hold `Secret`s or nothing.
//!
//! Fields of updates, as the planner writes them in `Change::fields[].field`: company
//! `technical_meta_data`; service user `first_name`, `last_name`, `middle_name`, `active`,
//! `permissions.biometry`, `permissions.collection`, `permissions.documents`,
//! `permissions.quality`. A user create reads `after.{first_name,last_name,middle_name,active,
//! permissions}` and its company from its `company/…` dependency (else `after.company`).

mod effects;
mod executor;
pub mod fake;
mod fresh;
mod observer;
pub mod order;
mod passwords;

pub use effects::Effects;
pub use executor::{ApplyReport, DoneStep, ExecuteOptions, FailedStep, SkippedStep, check_plan, execute};
pub use fresh::check_fresh;
pub use observer::{
    Event, JsonObserver, LineWriter, Observer, Outcome, PlainObserver, ProgressObserver, RecordingObserver,
    for_output as observer_for_output,
};
pub use passwords::{Passwords, resolve_passwords};

/// Why an apply failed as a whole, or was refused before it started.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ApplyError {
    #[error("apply was not approved")]
    #[diagnostic(code(ozform::apply::not_approved), help("answer `yes`, or pass `--auto-approve`"))]
    NotApproved,

    /// Passwords that user creates need and that cannot be resolved (sources named, never values).
    #[error("cannot resolve {} password{}: {}", missing.len(), plural(missing.len()), missing.join("; "))]
    #[diagnostic(
        code(ozform::apply::missing_passwords),
        help("set the environment variables or create the files named; nothing was changed")
    )]
    MissingPasswords { missing: Vec<String> },

    /// Live objects that moved since the plan was made.
    #[error(
        "the plan is stale: {} changed since it was made — run `ozform plan` again",
        moved.iter().map(|a| format!("`{a}`")).collect::<Vec<_>>().join(", ")
    )]
    #[diagnostic(
        code(ozform::apply::stale),
        help(
            "make a new plan with `ozform plan --out FILE`, review it, and apply that; nothing was changed"
        )
    )]
    Stale { moved: Vec<String> },

    /// Reading live state for the stale-plan check failed.
    #[error("cannot check that `{address}` is unchanged since the plan was made: {source}")]
    #[diagnostic(code(ozform::apply::fresh_read), help("check the connection and run `ozform apply` again"))]
    FreshRead {
        address: String,
        #[source]
        source: crate::oz::OzError,
    },

    #[error("the plan has format version {found}, this ozform reads version {expected}")]
    #[diagnostic(
        code(ozform::apply::format_version),
        help("make the plan again with this ozform (`ozform plan --out FILE`)")
    )]
    FormatVersion { found: u32, expected: u32 },

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

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
