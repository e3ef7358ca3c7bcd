//! `Progress`: what the executor says about each step as it starts and as it ends. The terminal
//! renderings (plain lines, JSON lines, a progress bar) live with the command line
//! (`cli::progress`); tests record the events.
//!
//! Events carry addresses, actions and error messages, never a secret: the executor holds
//! passwords and tokens only as `Secret`s and puts none into an `Outcome`.

use super::StepError;
use crate::plan::{Action, Address};

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The request succeeded (and, for a token, the token store kept it).
    Done,
    /// A create whose object turned out to exist already (an earlier attempt or a concurrent
    /// writer made it); the existing object was read back and adopted.
    Adopted,
    /// The step failed; the error's message names the request or the token store, never a secret.
    Failed { error: StepError },
    /// Not attempted because `dependency` (a change it depends on, directly or not) failed.
    Skipped { dependency: Address },
}

impl Outcome {
    /// A short word for logs: `done`, `adopted`, `failed`, `skipped`.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Adopted => "adopted",
            Outcome::Failed { .. } => "failed",
            Outcome::Skipped { .. } => "skipped",
        }
    }
}

/// Told about each step as it starts and as it ends. Called from the executor's task; must
/// not block for long. A skipped step is `finished` (with `Outcome::Skipped`) without having
/// `started`; every other step gets `started` then `finished`, once each.
pub trait Progress: Send + Sync {
    fn started(&self, address: &Address, action: Action);
    fn finished(&self, address: &Address, action: Action, outcome: &Outcome);
    /// Every step has finished (the executor calls this once, last).
    fn all_finished(&self) {}
}

/// Says nothing (a caller that wants only the report).
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Progress for Silent {
    fn started(&self, _: &Address, _: Action) {}
    fn finished(&self, _: &Address, _: Action, _: &Outcome) {}
}
