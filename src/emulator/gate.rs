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
    //! Each future is polled by hand (`futures::poll!`) on a paused clock: a request still held
    //! is `Pending`, one let through is `Ready`, and time moves only when a test advances it.
    //! A gate that held nothing, or let its requests through one at a time, fails these.

    use std::future::Future;
    use std::pin::Pin;

    use futures::poll;

    use super::*;

    const USERS: &str = "GET /api/users/";
    const MAX_WAIT: Duration = Duration::from_secs(60);

    fn gate(together: usize) -> Gate {
        Gate { route: USERS.into(), min_offset: 100, together, max_wait: MAX_WAIT }
    }

    /// `(held, open)` of the gate set, if any.
    fn state(keeper: &Gatekeeper) -> Option<(usize, bool)> {
        keeper.setting().armed.as_ref().map(|a| (a.held, *a.open.borrow()))
    }

    fn request<'a>(keeper: &'a Gatekeeper, offset: usize) -> Pin<Box<dyn Future<Output = ()> + 'a>> {
        Box::pin(keeper.pass(USERS, offset))
    }

    #[tokio::test(start_paused = true)]
    async fn requests_are_held_until_enough_are_held_at_once_then_released_together() {
        let keeper = Gatekeeper::default();
        keeper.set(Some(gate(3)));
        let mut first = request(&keeper, 100);
        let mut second = request(&keeper, 200);
        assert!(poll!(&mut first).is_pending());
        assert!(poll!(&mut second).is_pending());
        assert_eq!(state(&keeper), Some((2, false)), "two held at once");
        // Polled again without a third, they stay held.
        assert!(poll!(&mut first).is_pending());
        assert!(poll!(&mut second).is_pending());

        // The third fills the gate: it goes on at once, and so do the two it waited with.
        assert!(poll!(request(&keeper, 300)).is_ready());
        assert_eq!(state(&keeper), Some((3, true)));
        assert!(poll!(&mut first).is_ready());
        assert!(poll!(&mut second).is_ready());

        // Open from then on: a later request of the route is not held.
        assert!(poll!(request(&keeper, 900)).is_ready());
        assert_eq!(state(&keeper), Some((3, true)), "not counted");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_at_another_route_or_below_the_offset_passes_at_once_and_is_not_counted() {
        let keeper = Gatekeeper::default();
        assert!(poll!(request(&keeper, 500)).is_ready(), "no gate set");
        keeper.set(Some(gate(2)));
        assert!(poll!(Box::pin(keeper.pass("GET /api/companies/", 500))).is_ready());
        assert!(poll!(Box::pin(keeper.pass("POST /api/users/", 500))).is_ready());
        assert!(poll!(request(&keeper, 0)).is_ready());
        assert!(poll!(request(&keeper, 99)).is_ready());
        assert_eq!(state(&keeper), Some((0, false)), "none of them counts toward the gate");
        // From `min_offset` on, a request is held.
        let mut at_the_offset = request(&keeper, 100);
        assert!(poll!(&mut at_the_offset).is_pending());
        assert_eq!(state(&keeper), Some((1, false)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_replaced_or_removed_gate_releases_its_waiters() {
        let keeper = Gatekeeper::default();
        keeper.set(Some(gate(3)));
        let mut held = request(&keeper, 100);
        assert!(poll!(&mut held).is_pending());
        keeper.set(Some(gate(3)));
        assert!(poll!(&mut held).is_ready(), "released by the new gate");
        assert_eq!(state(&keeper), Some((0, false)), "the new gate starts empty and closed");

        let mut held = request(&keeper, 100);
        assert!(poll!(&mut held).is_pending());
        keeper.set(None);
        assert!(poll!(&mut held).is_ready(), "released by the removal");
        assert_eq!(state(&keeper), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_request_goes_on_after_the_longest_wait_and_no_longer_counts() {
        let keeper = Gatekeeper::default();
        keeper.set(Some(gate(2)));
        let mut lone = request(&keeper, 100);
        assert!(poll!(&mut lone).is_pending());
        tokio::time::advance(MAX_WAIT.saturating_sub(Duration::from_millis(1))).await;
        assert!(poll!(&mut lone).is_pending(), "held until the longest wait");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(poll!(&mut lone).is_ready(), "goes on at the longest wait");
        assert_eq!(state(&keeper), Some((0, false)), "it went on alone: the gate stays closed, empty");

        // The one that timed out is not counted: a second request alone is held again.
        let mut next = request(&keeper, 200);
        assert!(poll!(&mut next).is_pending());
        assert_eq!(state(&keeper), Some((1, false)));
        assert!(poll!(request(&keeper, 300)).is_ready());
        assert!(poll!(&mut next).is_ready(), "released with the one that filled the gate");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_of_a_replaced_gate_goes_on_without_touching_the_new_gates_count() {
        let keeper = Gatekeeper::default();
        keeper.set(Some(gate(2)));
        let mut old = request(&keeper, 100);
        assert!(poll!(&mut old).is_pending());
        keeper.set(Some(gate(3)));
        let mut new = request(&keeper, 100);
        assert!(poll!(&mut new).is_pending());
        assert_eq!(state(&keeper), Some((1, false)));
        // Polled only now, past its longest wait too, the old waiter goes on; the count of the
        // new gate is not its own.
        tokio::time::advance(MAX_WAIT * 2).await;
        assert!(poll!(&mut old).is_ready());
        assert_eq!(state(&keeper), Some((1, false)));
        // The new one, alone past its own longest wait, goes on and leaves the gate empty.
        assert!(poll!(&mut new).is_ready());
        assert_eq!(state(&keeper), Some((0, false)));
    }
}
