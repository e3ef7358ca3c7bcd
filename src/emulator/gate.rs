//! The gate: holds the requests of one route (from some `offset` on) until a number of them are
//! held at once, then lets them all through and stays open. A test proves with it that a client
//! sends requests together: a client asking one at a time never fills the gate, so each of its
//! requests waits out `max_wait` and goes on alone, and the test fails (on what it then sees)
//! instead of hanging. Waiting is this file's purpose; it does no other I/O.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

/// Which requests to hold, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    /// The route, as `Stats::requests_by_route` names it, e.g. `"GET /api/users/"`.
    pub route: String,
    /// Only requests whose `offset` query parameter is at least this (none counts as 0).
    pub min_offset: usize,
    /// Held until this many are held at once.
    pub together: usize,
    /// The longest one request is held; then it goes on alone.
    pub max_wait: Duration,
}

#[derive(Debug)]
struct Armed {
    gate: Gate,
    /// Tells a timed-out waiter whether the gate it waited at is still the one set.
    generation: u64,
    held: usize,
    open: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct Setting {
    generations: u64,
    armed: Option<Armed>,
}

#[derive(Debug, Default)]
pub(crate) struct Gatekeeper {
    setting: Mutex<Setting>,
}

impl Gatekeeper {
    fn setting(&self) -> MutexGuard<'_, Setting> {
        // Counts stay usable after a panic elsewhere: take them anyway.
        self.setting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Set a gate (closed), or remove it; requests held at a replaced gate go on at once.
    pub(crate) fn set(&self, gate: Option<Gate>) {
        let mut setting = self.setting();
        setting.generations += 1;
        let generation = setting.generations;
        setting.armed = gate.map(|gate| Armed { gate, generation, held: 0, open: watch::Sender::new(false) });
    }

    /// Return when a request of `route` at `offset` may be handled.
    pub(crate) async fn pass(&self, route: &str, offset: usize) {
        let (mut open, generation, max_wait) = {
            let mut setting = self.setting();
            let Some(armed) = setting.armed.as_mut() else { return };
            if armed.gate.route != route || offset < armed.gate.min_offset || *armed.open.borrow() {
                return;
            }
            armed.held += 1;
            if armed.held >= armed.gate.together {
                armed.open.send_replace(true);
                return;
            }
            (armed.open.subscribe(), armed.generation, armed.gate.max_wait)
        };
        // An error means the gate was replaced or removed (its sender dropped): go on too.
        let waited = tokio::time::timeout(max_wait, open.wait_for(|open| *open)).await;
        if waited.is_err()
            && let Some(armed) = self.setting().armed.as_mut()
            && armed.generation == generation
            && !*armed.open.borrow()
        {
            armed.held -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(together: usize, max_wait_ms: u64) -> Gate {
        Gate {
            route: "GET /api/users/".into(),
            min_offset: 100,
            together,
            max_wait: Duration::from_millis(max_wait_ms),
        }
    }

    #[tokio::test]
    async fn requests_wait_until_enough_are_held_together_and_others_pass() {
        let keeper = Gatekeeper::default();
        keeper.set(Some(gate(3, 60_000)));
        // Not held: another route, or an offset below the gate's.
        keeper.pass("GET /api/companies/", 500).await;
        keeper.pass("GET /api/users/", 0).await;
        let three = (0..3).map(|i| keeper.pass("GET /api/users/", 100 * (i + 1)));
        futures::future::join_all(three).await;
        // Open from now on.
        keeper.pass("GET /api/users/", 900).await;
    }

    #[tokio::test]
    async fn a_lone_request_goes_on_after_the_longest_wait_without_opening_the_gate() {
        let keeper = Gatekeeper::default();
        keeper.set(Some(gate(2, 1)));
        keeper.pass("GET /api/users/", 100).await;
        assert_eq!(keeper.setting().armed.as_ref().map(|a| (a.held, *a.open.borrow())), Some((0, false)));
    }
}
