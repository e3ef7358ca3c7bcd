//! `Measure`: what an operation tells whoever keeps its metrics (the Prometheus metrics of
//! `reconcile --metrics-listen`, the textfile of `--metrics-file`), beside what it shows through
//! the `View`. Every method has a default that ignores what it is told: an operation run
//! without metrics passes `Unmeasured`.
//!
//! What goes through here are values the operation has anyway (the plan, what the token store
//! holds, the apply's report, a cycle's summary) and the request observer its client is given;
//! an implementation keeps counts of them, never a secret, an email or an id.

use std::sync::Arc;
use std::time::Duration;

use crate::apply::ApplyReport;
use crate::model::StoredTokens;
use crate::oz::RequestObserver;
use crate::plan::Plan;

use super::reconcile::CycleSummary;

pub trait Measure: Send + Sync {
    /// Whether anything is kept: an operation reads nothing only for its metrics (the token
    /// store again after an apply) when this is false.
    fn is_measuring(&self) -> bool {
        true
    }
    /// The observer the operation's client tells about every request it sends.
    fn requests(&self) -> Option<Arc<dyn RequestObserver>> {
        None
    }
    /// A plan was made: its changes are the drift between the manifests and the installation.
    fn planned(&self, _plan: &Plan) {}
    /// What the token store holds (never the tokens), read at `now` (epoch seconds), and the
    /// window in which a stored token is rotated (`--rotate-before`).
    fn stored(&self, _stored: &StoredTokens, _now: f64, _rotate_before: Duration) {}
    /// An apply finished: its steps.
    fn applied(&self, _report: &ApplyReport) {}
    /// A cycle of `reconcile` finished.
    fn cycle(&self, _summary: &CycleSummary) {}
}

/// Keeps no metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct Unmeasured;

impl Measure for Unmeasured {
    fn is_measuring(&self) -> bool {
        false
    }
}
