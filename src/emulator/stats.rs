//! Request statistics: what tests assert on (no duplicate creates, zero mutating requests on a
//! converged plan, bounded concurrency, the user agents seen) and what benchmarks print (the
//! queue in front of a limited capacity: waits and shed requests). Counting only; no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// A snapshot of the counters since start or the last `Handle::reset_stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Keyed `"METHOD /canonical/route"`, e.g. `"GET /api/users/"`, `"PATCH /api/users/{user_id}"`;
    /// requests no route matched count under `"unmatched"`.
    pub requests_by_route: BTreeMap<String, u64>,
    pub total_requests: u64,
    /// POST, PATCH and DELETE requests received, except `authorize/auth` and `authorize/refresh`
    /// (faulted ones included: they reached the server).
    pub mutating_requests: u64,
    /// Users created (committed), by lower-cased email.
    pub creates_per_email: BTreeMap<String, u64>,
    /// Companies created (committed), by name.
    pub creates_per_company_name: BTreeMap<String, u64>,
    /// The most requests being handled at once (waiting in line included).
    pub max_in_flight: u64,
    /// With a capacity (`--capacity`): the most requests served at once (never above it).
    pub max_serving: u64,
    /// With a capacity: the time requests waited in line for a place, in all, in µs (shed
    /// requests included).
    pub queue_wait_us: u64,
    /// With a capacity: the longest one request waited in line, in µs.
    pub max_queue_wait_us: u64,
    /// `queue_wait_us` over `total_requests`.
    pub average_queue_wait_us: u64,
    /// With a capacity and `--shed-after-ms`: requests answered 503 after waiting that long,
    /// not handled.
    pub shed_requests: u64,
    /// Every `User-Agent` header value seen.
    pub user_agents: BTreeSet<String>,
}

#[derive(Debug, Default)]
pub(crate) struct Recorder {
    counts: Mutex<Stats>,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    serving: AtomicU64,
    max_serving: AtomicU64,
}

/// Decrements the count of requests being served when the request ends, however it ends.
pub(crate) struct Serving<'a>(&'a Recorder);

impl Drop for Serving<'_> {
    fn drop(&mut self) {
        self.0.serving.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Decrements the in-flight count when the request ends, however it ends (a dropped
/// connection drops the request future).
pub(crate) struct InFlight<'a>(&'a Recorder);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Recorder {
    fn counts(&self) -> std::sync::MutexGuard<'_, Stats> {
        // Counters stay meaningful after a panic elsewhere: take them anyway.
        self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn request(&self, route: &str, mutating: bool, user_agent: Option<&str>) -> InFlight<'_> {
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_in_flight.fetch_max(now, Ordering::Relaxed);
        let mut counts = self.counts();
        counts.total_requests += 1;
        if mutating {
            counts.mutating_requests += 1;
        }
        if let Some(n) = counts.requests_by_route.get_mut(route) {
            *n += 1;
        } else {
            counts.requests_by_route.insert(route.to_string(), 1);
        }
        if let Some(agent) = user_agent
            && !counts.user_agents.contains(agent)
        {
            counts.user_agents.insert(agent.to_string());
        }
        InFlight(self)
    }

    /// A request waited `waited` in line for a place (and was shed, when `shed`).
    pub(crate) fn waited(&self, waited: Duration, shed: bool) {
        let us = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
        let mut counts = self.counts();
        counts.queue_wait_us = counts.queue_wait_us.saturating_add(us);
        counts.max_queue_wait_us = counts.max_queue_wait_us.max(us);
        if shed {
            counts.shed_requests += 1;
        }
    }

    /// A request got a place and is being served.
    pub(crate) fn serving(&self) -> Serving<'_> {
        let now = self.serving.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_serving.fetch_max(now, Ordering::Relaxed);
        Serving(self)
    }

    pub(crate) fn user_created(&self, email: &str) {
        *self.counts().creates_per_email.entry(email.to_lowercase()).or_default() += 1;
    }

    pub(crate) fn company_created(&self, name: &str) {
        *self.counts().creates_per_company_name.entry(name.to_string()).or_default() += 1;
    }

    pub(crate) fn current(&self) -> Stats {
        let mut stats = self.counts().clone();
        stats.max_in_flight = self.max_in_flight.load(Ordering::Relaxed);
        stats.max_serving = self.max_serving.load(Ordering::Relaxed);
        stats.average_queue_wait_us = stats.queue_wait_us.checked_div(stats.total_requests).unwrap_or(0);
        stats
    }

    pub(crate) fn reset(&self) {
        *self.counts() = Stats::default();
        self.max_in_flight.store(self.in_flight.load(Ordering::Relaxed), Ordering::Relaxed);
        self.max_serving.store(self.serving.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}
