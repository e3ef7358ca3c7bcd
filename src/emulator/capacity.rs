//! The emulator's hidden capacity: a fixed pool of workers, as a real installation has. At most
//! `capacity` requests are served at once (their latency and faults included); the others wait
//! in line in arrival order, and one that has waited `shed_after` is shed: answered 503 without
//! being handled, so it takes no effect. Every wait is counted in the stats (total, largest,
//! shed), which is how a client's politeness is measured: the wait is what the server's other
//! users pay for it. Waiting is this file's purpose; it does no other I/O.

use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit};

use super::stats::{Recorder, Serving};

/// The pool of workers of one emulator.
#[derive(Debug)]
pub(crate) struct Capacity {
    workers: Semaphore,
    shed_after: Option<Duration>,
}

/// A place in the pool, held while a request is served.
pub(crate) struct Place<'a> {
    _permit: SemaphorePermit<'a>,
    _serving: Serving<'a>,
}

impl Capacity {
    pub(crate) fn new(capacity: usize, shed_after: Option<Duration>) -> Self {
        Self { workers: Semaphore::new(capacity.max(1)), shed_after }
    }

    /// Wait in line for a place; `Err(waited)` when the request is shed instead.
    pub(crate) async fn enter<'a>(&'a self, stats: &'a Recorder) -> Result<Place<'a>, Duration> {
        let started = Instant::now();
        let permit = match self.workers.try_acquire() {
            Ok(permit) => Some(permit),
            Err(_) => match self.shed_after {
                Some(limit) => {
                    tokio::time::timeout(limit, self.workers.acquire()).await.ok().and_then(Result::ok)
                }
                // The semaphore is never closed: `acquire` cannot fail.
                None => self.workers.acquire().await.ok(),
            },
        };
        let waited = started.elapsed();
        stats.waited(waited, permit.is_none());
        match permit {
            Some(permit) => Ok(Place { _permit: permit, _serving: stats.serving() }),
            None => Err(waited),
        }
    }
}
