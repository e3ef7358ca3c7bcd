//! `max_rps`: requests start at least `1 / rps` apart, across every call of one client.
//!
//! A single next-slot instant behind a mutex (no burst): simple, fair in arrival order, and
//! enough for a reconciler whose request count is small next to the server's capacity. Waiting
//! happens outside the lock.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    next: Mutex<Option<Instant>>,
}

impl Throttle {
    /// `None` when `rps` is not a positive finite number (no limit).
    pub fn new(rps: f64) -> Option<Self> {
        (rps.is_finite() && rps > 0.0)
            .then(|| Self { interval: Duration::from_secs_f64(1.0 / rps), next: Mutex::new(None) })
    }

    /// Wait for this request's slot.
    pub async fn wait(&self) {
        let slot = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let slot = next.map_or(now, |n| n.max(now));
            *next = Some(slot + self.interval);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_that_is_not_positive_means_no_limit() {
        assert!(Throttle::new(0.0).is_none());
        assert!(Throttle::new(f64::NAN).is_none());
        assert_eq!(Throttle::new(4.0).map(|t| t.interval), Some(Duration::from_millis(250)));
    }
}
