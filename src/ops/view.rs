//! The ports through which an operation talks to its user, in the manner of OpenTofu's
//! `backend.Operation` with its `View`: an operation never prints and never ends the process;
//! it says what happens through a `View`, asks through an `Approve`, and hands back an outcome
//! value that the command line maps to text and an exit code (`cli::report`).
//!
//! Implementations: the terminal (`cli::report`), and whatever a caller holding an operation
//! as a value wants (a long-running loop, a test recording events).

use std::sync::Arc;

use crate::apply::{Progress, Silent};
use crate::error::Error;
use crate::plan::Plan;

use super::reconcile::CycleSummary;

/// What an operation says while it runs. Every method may be called from any task; none may
/// block for long.
pub trait View: Send + Sync {
    /// A warning that does not stop the operation (a special file skipped in a directory, a
    /// flag that caps another).
    fn warning(&self, text: &str);
    /// A line about what the operation did besides its result (a plan saved, a recovery).
    fn status(&self, text: &str);
    /// Show a plan (the one `plan` made, or the one `apply` is about to carry out).
    fn plan(&self, plan: &Plan);
    /// Narration of a composed story (`demo`): headings and lines, shown as they come.
    fn text(&self, text: &str);
    /// Where an apply of `total` steps reports its steps.
    fn progress(&self, total: usize) -> Arc<dyn Progress>;
    /// A cycle of `reconcile` ended: its one summary event, and why it failed when it did (a
    /// loop goes on after a failed cycle, so its error is said here rather than returned).
    fn cycle(&self, _summary: &CycleSummary, _error: Option<&Error>) {}
}

/// A view that shows nothing (callers that want only the outcome).
#[derive(Debug, Default, Clone, Copy)]
pub struct Quiet;

impl View for Quiet {
    fn warning(&self, _: &str) {}
    fn status(&self, _: &str) {}
    fn plan(&self, _: &Plan) {}
    fn text(&self, _: &str) {}
    fn progress(&self, _: usize) -> Arc<dyn Progress> {
        Arc::new(Silent)
    }
}

/// The answer to "carry out this plan?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approval {
    Approved,
    /// Asked, and the answer was not yes.
    Declined,
    /// There is no one to ask (no terminal) and approval was not given beforehand.
    CannotAsk,
}

/// Asks whether a plan (already shown through the `View`) may be carried out.
pub trait Approve: Send + Sync {
    fn approve(&self, plan: &Plan) -> Approval;
}

/// Approval given beforehand (`--auto-approve`, a saved plan, a reconcile loop).
#[derive(Debug, Default, Clone, Copy)]
pub struct Approved;

impl Approve for Approved {
    fn approve(&self, _: &Plan) -> Approval {
        Approval::Approved
    }
}
