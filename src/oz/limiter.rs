//! `--parallelism auto`: how many requests one client may have in flight, adapted to what the
//! server shows of its capacity, in the spirit of TCP Vegas and the gradient limiter of
//! Netflix's `concurrency-limits`.
//!
//! A server with a fixed pool of workers serves requests in about the same time until the pool
//! is full; past that, requests wait in its queue and their latency grows by the wait. So
//! latency near the smallest seen means the server has room, and latency above it means a
//! queue is building, at the cost of the server's other users. The limit:
//! - starts at `INITIAL` (4, or the ceiling if lower);
//! - is judged once per *round*: the first requests sent at the current limit, as many as the
//!   limit (at least `MIN_ROUND`), once every one of them has answered. Taken in the order they
//!   were sent, not in the order they come back: the first answers back are those that waited
//!   least, and a round of them hid the queue that the slow start's doubling had made (in the
//!   capacity table, 4 → 8 → 16 against 4 workers, judged at 8 on answers 1.06 times the
//!   smallest, and a request shed). Answers to requests sent before a change describe the old
//!   limit and are not counted, so one episode is never punished twice. Each answer's
//!   latency is divided by the smallest seen on its route (a list page and a create do not cost
//!   the same, so each is compared with its own kind; the first `ROUTE_WARM_UP` answers of a
//!   route only teach its smallest, and a round in which a route warmed up never grows the
//!   limit, so that a route learns its smallest at a limit judged free of a queue), and the
//!   round's figure is the average of those ratios (a
//!   queue in front of a few workers delays some answers a lot and others not at all: the
//!   average sees it, a median may not);
//! - compares that figure with the *floor*: the smallest figure of the last `FLOOR_ROUNDS`
//!   rounds. The smallest single latency is an extreme, which the typical answer never comes
//!   back to even when no request waits (timers, the network, a loaded client); the floor is
//!   what the latency looks like, here and now, when nothing queues. Every `DRAIN_EVERY`
//!   rounds one round runs at half the limit, so that the floor always holds a round without
//!   a queue (as BBR drains to measure its minimum round-trip time): a floor made only of
//!   rounds at a limit with a standing queue would take it for the norm, and the limit would
//!   creep up past the server's capacity. The window is short enough for the floor to follow
//!   a machine growing busier;
//! - grows while the figure stays within `TOLERANCE` of the floor ("near the smallest seen"):
//!   doubling each round at first (slow start, until the first decrease), then one more per
//!   round, and past the limit where a queue was last seen (the knee) one more only every
//!   `PROBE_ROUNDS` good rounds, so that probing above the server's capacity is brief (and
//!   rarer after each probe that meets a queue or a refusal: every 3, 6, 12, … up to 64
//!   rounds); a round in which the client never used its whole limit is no evidence that the
//!   limit is too low, and does not grow it;
//! - shrinks when latency is above the floor by more than `TOLERANCE` two rounds running (one
//!   slow round may be a busy machine; a queue of this client's making shows in every round;
//!   in slow start, where overshooting is expected, after one):
//!   in proportion (limit × floor / figure: the queue drains in one step), or by half when
//!   latency is past twice the smallest; and by half at once on a 429, a 503 (a request the
//!   server shed), a 504 or a timeout, the server's own word. A shrink for latency is undone
//!   when the next round, at the lower limit, is hardly faster (`UNDO_BELOW`): a queue of this
//!   client's making drains when it sends fewer requests, while a busy machine or another
//!   client's load does not (as TCP undoes a window cut for a spurious timeout);
//! - is never above the ceiling (`--max-parallelism`, and `--max-in-flight` when lower) nor
//!   below 1.
//!
//! Only 2xx answers are latency samples: a 404, a redirect or a 401 may be answered without the
//! work (by a proxy, before the handler), and a fast one would make every real answer look
//! queued. Other failures (a refused or dropped connection, a cancelled request) say nothing of
//! the load and are ignored.
//!
//! `Gradient` is the decision, pure (latencies are given, no clock); `Limiter` makes callers
//! wait for a slot, in arrival order, and logs each change as a `tracing` debug event (target
//! `ozform::oz::limiter`). `Limiter::limit` is the current limit, for a gauge.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;

use super::paging::ListKind;

/// The limit a client starts with.
pub const INITIAL: usize = 4;
/// How far above the floor a round's figure may be and still count as near the smallest: a
/// queue of one request in front of 4 workers (25% more latency) is seen, noise is not.
const TOLERANCE: f64 = 0.2;
/// The fewest answers a round is judged on: an average of fewer is noise.
const MIN_ROUND: usize = 8;
/// Rounds whose figures make the floor: more than `DRAIN_EVERY`, so that it always holds a
/// drain's (once one came), and few enough that it follows the machine's load within a second
/// or so at 10 ms a request.
const FLOOR_ROUNDS: usize = 60;
/// Rounds between two drains (a round at half the limit, to see the latency without a queue).
const DRAIN_EVERY: u32 = 50;
/// A shrink for latency is undone when the next round's figure is still at least this part
/// of the one that caused it: fewer requests in flight did not make them faster.
const UNDO_BELOW: f64 = 0.9;
/// Good rounds needed for one step past the knee; doubled after each probe the server
/// refused (up to `MAX_PROBE_ROUNDS`), back to this after one it took.
const PROBE_ROUNDS: u32 = 3;
const MAX_PROBE_ROUNDS: u32 = 64;
/// Routes whose smallest latency is remembered; a client uses a handful. More share one entry.
const MAX_ROUTES: usize = 64;
/// Answers of a route that only teach its smallest latency: the first ones may all have
/// waited in a queue (a route first used while the server is busy), and compared with
/// themselves they would look like no queue at all.
const ROUTE_WARM_UP: u32 = 8;

/// What became of one request, as far as the server's load is concerned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sample {
    /// A 2xx answer, this long after the request was sent.
    Answered(Duration),
    /// The server refused it for load: 429, or 503 (what a server shedding its queue answers).
    Refused(u16),
    /// No answer in time: a client timeout, or a 504 from a gateway.
    TimedOut,
    /// Nothing to learn: another status, a refused or dropped connection, a cancelled request.
    Neutral,
}

/// Why the limit changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Doubled: no queue seen yet.
    SlowStart,
    /// One more: latency stayed near the smallest.
    Grow,
    /// One more past the knee, after `PROBE_ROUNDS` good rounds.
    Probe,
    /// Latency above the smallest: shrunk in proportion.
    Queueing,
    /// Latency past twice the smallest: halved.
    LatencyDoubled,
    /// One round at half the limit, to measure the latency without a queue.
    Drain,
    /// Back from a drain.
    Restore,
    /// A shrink for latency undone: the lower limit did not bring latency down, so the
    /// latency was not a queue of this client's making (a busy machine, another client).
    Undo,
    /// 429 or 503: halved.
    Refused(u16),
    /// A timeout: halved.
    TimedOut,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::SlowStart => f.write_str("latency near the smallest seen (slow start)"),
            Reason::Grow => f.write_str("latency near the smallest seen"),
            Reason::Probe => f.write_str("latency near the smallest seen (probing past the last queue)"),
            Reason::Queueing => f.write_str("latency above the smallest seen: the server queues"),
            Reason::LatencyDoubled => f.write_str("latency past twice the smallest seen"),
            Reason::Drain => f.write_str("one round at half the limit, to see the latency without a queue"),
            Reason::Restore => f.write_str("back from the round at half the limit"),
            Reason::Undo => {
                f.write_str("the lower limit did not bring latency down: back to the limit before")
            }
            Reason::Refused(status) => write!(f, "the server answered {status}"),
            Reason::TimedOut => f.write_str("a request timed out"),
        }
    }
}

/// A change of the limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub from: usize,
    pub to: usize,
    pub reason: Reason,
    /// The round's figure: the average latency over the smallest (1.0 for a refusal or a
    /// timeout).
    pub ratio: f64,
}

/// The decision: the limit, the smallest latency per route, the round in progress. Pure.
#[derive(Debug)]
pub struct Gradient {
    limit: f64,
    ceiling: usize,
    in_flight: usize,
    /// Per route: the smallest latency seen, and how many answers it was seen over.
    smallest: HashMap<String, (Duration, u32)>,
    slow_start: bool,
    /// The limit at which a queue or a refusal was last seen.
    knee: Option<f64>,
    good_rounds: u32,
    /// Good rounds needed for a probe now.
    probe_rounds: u32,
    /// The last change was a probe: the next round says whether the server took it.
    probing: bool,
    /// Bumped on every change: a request carries the epoch it was sent in.
    epoch: u64,
    round: Round,
    /// The figures of the last `FLOOR_ROUNDS` rounds.
    figures: VecDeque<f64>,
    rounds_since_drain: u32,
    /// During a drain: the limit to go back to.
    restore: Option<f64>,
    /// After a shrink for latency: what to go back to if the next round says it was no queue.
    undo: Option<Undo>,
    /// The last round was above the floor: one more and the limit shrinks.
    suspect: bool,
}

/// What a shrink for latency changed, and the figure that caused it.
#[derive(Debug, Clone, Copy)]
struct Undo {
    limit: f64,
    knee: Option<f64>,
    slow_start: bool,
    probe_rounds: u32,
    ratio: f64,
}

/// What a request carries from its start to its `finish`: the epoch it was sent in, and whether
/// it is one of the requests its round is judged on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ticket {
    epoch: u64,
    sampled: bool,
}

#[derive(Debug, Default)]
struct Round {
    /// Requests sent in the round.
    sent: usize,
    /// Of the requests the round is judged on (the first `size` sent), those that ended.
    ended: usize,
    /// Each answer's latency over the smallest of its route.
    ratios: Vec<f64>,
    /// The most requests in flight during the round.
    peak: usize,
    /// A route warmed up during the round (its answers taught only its smallest latency).
    warming: bool,
}

impl Gradient {
    /// A limit of `INITIAL` (at most `ceiling`) that never exceeds `ceiling` (at least 1).
    pub fn new(ceiling: usize) -> Self {
        let ceiling = ceiling.max(1);
        Self {
            limit: count(INITIAL.min(ceiling)),
            ceiling,
            in_flight: 0,
            smallest: HashMap::new(),
            slow_start: true,
            knee: None,
            good_rounds: 0,
            probe_rounds: PROBE_ROUNDS,
            probing: false,
            epoch: 0,
            round: Round::default(),
            figures: VecDeque::with_capacity(FLOOR_ROUNDS),
            rounds_since_drain: 0,
            restore: None,
            undo: None,
            suspect: false,
        }
    }

    /// Requests allowed in flight now.
    pub fn limit(&self) -> usize {
        // `limit` is kept within [1, ceiling]; the cast only drops the fraction (a hair above
        // it, so that 16 × 0.625 is 10 and not 9.999…).
        #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let whole = (self.limit + 1e-9).floor() as usize;
        whole.clamp(1, self.ceiling)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Start a request if the limit allows: the ticket to give back to `finish`.
    pub fn try_start(&mut self) -> Option<Ticket> {
        (self.in_flight < self.limit()).then(|| self.start())
    }

    /// Start a request whatever the limit (a slot handed over in `Limiter::finish`).
    fn start(&mut self) -> Ticket {
        self.in_flight += 1;
        self.round.peak = self.round.peak.max(self.in_flight);
        self.round.sent += 1;
        Ticket { epoch: self.epoch, sampled: self.round.sent <= self.round_size() }
    }

    /// How many requests a round is judged on: as many as the limit, at least `MIN_ROUND`.
    fn round_size(&self) -> usize {
        self.limit().max(MIN_ROUND)
    }

    /// A request started with `ticket` on `route` ended with `sample`: the change it makes,
    /// if any.
    pub fn finish(&mut self, ticket: Ticket, route: &str, sample: Sample) -> Option<Decision> {
        self.in_flight = self.in_flight.saturating_sub(1);
        let ratio = match sample {
            Sample::Answered(latency) => self.ratio(route, latency),
            _ => None,
        };
        if ticket.epoch != self.epoch {
            return None;
        }
        match sample {
            // The server's own word, whichever request of the round it came to.
            Sample::Refused(status) => Some(self.back_off(0.5, Reason::Refused(status), 1.0)),
            Sample::TimedOut => Some(self.back_off(0.5, Reason::TimedOut, 1.0)),
            _ if !ticket.sampled => None,
            Sample::Neutral => self.ended(),
            Sample::Answered(_) => {
                match ratio {
                    Some(ratio) => self.round.ratios.push(ratio),
                    // A route still warming up teaches its smallest latency only.
                    None => self.round.warming = true,
                }
                self.ended()
            }
        }
    }

    /// One of the requests the round is judged on ended: judge it once they all have.
    fn ended(&mut self) -> Option<Decision> {
        self.round.ended += 1;
        if self.round.ended < self.round_size() {
            return None;
        }
        if self.round.ratios.is_empty() {
            // Nothing but neutral answers and warm-ups: nothing to judge.
            self.new_round();
            return None;
        }
        self.judge_round()
    }

    /// `latency` over the smallest seen on `route` (which it may become); `None` while the
    /// route warms up (`ROUTE_WARM_UP`).
    fn ratio(&mut self, route: &str, latency: Duration) -> Option<f64> {
        let key =
            if self.smallest.len() < MAX_ROUTES || self.smallest.contains_key(route) { route } else { "" };
        let (smallest, seen) = if let Some((smallest, seen)) = self.smallest.get_mut(key) {
            *smallest = (*smallest).min(latency);
            *seen = seen.saturating_add(1);
            (*smallest, *seen)
        } else {
            self.smallest.insert(key.to_string(), (latency, 1));
            (latency, 1)
        };
        if seen <= ROUTE_WARM_UP {
            return None;
        }
        Some(if smallest.is_zero() { 1.0 } else { latency.as_secs_f64() / smallest.as_secs_f64() })
    }

    fn judge_round(&mut self) -> Option<Decision> {
        let ratios = &self.round.ratios;
        let ratio = ratios.iter().sum::<f64>() / count(ratios.len());
        if self.figures.len() == FLOOR_ROUNDS {
            self.figures.pop_front();
        }
        self.figures.push_back(ratio);
        let floor = self.figures.iter().copied().fold(ratio, f64::min);
        if let Some(limit) = self.restore.take() {
            // The drain round's figure is in the floor now: back to where the limit was.
            self.rounds_since_drain = 0;
            return Some(self.set(limit, Reason::Restore, ratio));
        }
        if let Some(undo) = self.undo.take()
            && ratio >= undo.ratio * UNDO_BELOW
        {
            self.knee = undo.knee;
            self.slow_start = undo.slow_start;
            self.probe_rounds = undo.probe_rounds;
            return Some(self.set(undo.limit, Reason::Undo, ratio));
        }
        if ratio > floor * (1.0 + TOLERANCE) {
            // In slow start an overshoot is what to expect: no second look before shrinking.
            if !std::mem::replace(&mut self.suspect, true) && !self.slow_start {
                // One slow round may be a busy machine: hold, and let the next one say.
                self.new_round();
                return None;
            }
            self.suspect = false;
            return Some(if ratio > 2.0 {
                self.latency_back_off(0.5, Reason::LatencyDoubled, ratio)
            } else {
                self.latency_back_off(floor / ratio, Reason::Queueing, ratio)
            });
        }
        self.suspect = false;
        if std::mem::take(&mut self.probing) {
            // The server took the last probe: probe at the usual pace again.
            self.probe_rounds = PROBE_ROUNDS;
        }
        self.rounds_since_drain += 1;
        if !self.slow_start && self.rounds_since_drain >= DRAIN_EVERY && self.limit >= 2.0 {
            // A floor made only of rounds at this limit would take a standing queue for the
            // latency without one, and let the limit creep up past the server's capacity.
            self.restore = Some(self.limit);
            return Some(self.set(self.limit / 2.0, Reason::Drain, ratio));
        }
        let limit = self.limit();
        if self.round.peak < limit {
            // The client did not use its whole limit: nothing says more would be served as fast.
            self.new_round();
            return None;
        }
        if self.round.warming {
            // A route is learning its smallest latency: at a higher limit it might learn a
            // queued one, and then take every later queue for none (in the capacity table,
            // the slow start went on to 16 against 4 workers as the users' creates began).
            // Hold until it has learned it at a limit judged free of a queue.
            self.new_round();
            return None;
        }
        let (to, reason) = if self.slow_start {
            (self.limit * 2.0, Reason::SlowStart)
        } else if self.knee.is_none_or(|knee| self.limit + 1.0 < knee) {
            (self.limit + 1.0, Reason::Grow)
        } else {
            self.good_rounds += 1;
            if self.good_rounds < self.probe_rounds {
                self.new_round();
                return None;
            }
            self.good_rounds = 0;
            self.probing = true;
            (self.limit + 1.0, Reason::Probe)
        };
        Some(self.set(to, reason, ratio))
    }

    /// A shrink for latency, undone if the next round shows that it did not help.
    fn latency_back_off(&mut self, factor: f64, reason: Reason, ratio: f64) -> Decision {
        let undo = Undo {
            limit: self.restore.unwrap_or(self.limit),
            knee: self.knee,
            slow_start: self.slow_start,
            probe_rounds: self.probe_rounds,
            ratio,
        };
        let decision = self.back_off(factor, reason, ratio);
        self.undo = Some(undo);
        decision
    }

    fn back_off(&mut self, factor: f64, reason: Reason, ratio: f64) -> Decision {
        // A refusal or a timeout is the server's own word: no undoing the shrink before it.
        self.undo = None;
        if let Some(limit) = self.restore.take() {
            // Refused during a drain: from the limit it drained from.
            self.limit = limit;
        }
        if std::mem::take(&mut self.probing) {
            // The server did not take the last probe: probe less often.
            self.probe_rounds = (self.probe_rounds * 2).min(MAX_PROBE_ROUNDS);
        }
        self.slow_start = false;
        self.knee = Some(self.limit);
        self.good_rounds = 0;
        self.set(self.limit * factor.clamp(0.5, 1.0), reason, ratio)
    }

    fn set(&mut self, limit: f64, reason: Reason, ratio: f64) -> Decision {
        let from = self.limit();
        self.limit = limit.clamp(1.0, count(self.ceiling));
        self.new_round();
        Decision { from, to: self.limit(), reason, ratio }
    }

    fn new_round(&mut self) {
        self.epoch += 1;
        self.round.sent = 0;
        self.round.ended = 0;
        self.round.ratios.clear();
        self.round.peak = self.in_flight;
        self.round.warming = false;
    }
}

/// A count (a limit, a number of samples: far below 2^52) as a float.
#[expect(clippy::cast_precision_loss)]
fn count(n: usize) -> f64 {
    n as f64
}

/// The waiting side: callers wait for a slot in arrival order.
#[derive(Debug)]
pub struct Limiter {
    inner: Mutex<Inner>,
    /// The current limit, readable without the lock (a gauge).
    current: AtomicUsize,
}

#[derive(Debug)]
struct Inner {
    gradient: Gradient,
    /// Each waiter is handed the ticket of its slot.
    waiters: VecDeque<oneshot::Sender<Ticket>>,
}

impl Limiter {
    pub fn new(ceiling: usize) -> Self {
        let gradient = Gradient::new(ceiling);
        let current = AtomicUsize::new(gradient.limit());
        Self { inner: Mutex::new(Inner { gradient, waiters: VecDeque::new() }), current }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // No code panics while holding it; should one, the counts are still whole.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    /// Wait in line for a slot. Dropping the future gives back a slot it was handed.
    pub async fn acquire(&self) -> Permit<'_> {
        self.wait_for_slot(false).await
    }

    /// As `acquire`, for another attempt of a request that already had its turn (a retry, a
    /// renewed session): first in line. Sent to the back, a retry after a renewed session could
    /// meet the next expiry, behind every request that came meanwhile.
    pub async fn acquire_again(&self) -> Permit<'_> {
        self.wait_for_slot(true).await
    }

    async fn wait_for_slot(&self, first: bool) -> Permit<'_> {
        let receiver = {
            let mut inner = self.inner();
            if (first || inner.waiters.is_empty())
                && let Some(ticket) = inner.gradient.try_start()
            {
                return Permit { limiter: self, ticket, done: false };
            }
            let (sender, receiver) = oneshot::channel();
            if first {
                inner.waiters.push_front(sender);
            } else {
                inner.waiters.push_back(sender);
            }
            // Room left by waiters that gave up goes to the first one still waiting.
            Self::hand_over(&mut inner);
            receiver
        };
        let mut waiting = Waiting { limiter: self, receiver: Some(receiver) };
        let ticket = match waiting.receiver.as_mut() {
            // The sender is only dropped once the limiter is: no slot to hand back then.
            Some(receiver) => receiver.await.unwrap_or_default(),
            None => Ticket::default(),
        };
        waiting.receiver = None;
        Permit { limiter: self, ticket, done: false }
    }

    /// A request ended: learn from it, then hand free slots to waiters.
    fn finish(&self, ticket: Ticket, route: &str, sample: Sample) {
        let mut inner = self.inner();
        let decision = inner.gradient.finish(ticket, route, sample);
        Self::hand_over(&mut inner);
        let limit = inner.gradient.limit();
        drop(inner);
        self.current.store(limit, Ordering::Relaxed);
        if let Some(d) = decision
            && (d.from != d.to || matches!(d.reason, Reason::Refused(_) | Reason::TimedOut))
        {
            tracing::debug!(
                target: "ozform::oz::limiter",
                limit = d.to,
                previous = d.from,
                latency_ratio = format!("{:.2}", d.ratio),
                "concurrency limit {} → {}: {}",
                d.from,
                d.to,
                d.reason
            );
        }
    }

    /// Give free slots to the waiters, first come first served; one that stopped waiting
    /// passes its turn.
    fn hand_over(inner: &mut Inner) {
        while inner.gradient.in_flight() < inner.gradient.limit() {
            let Some(waiter) = inner.waiters.pop_front() else { break };
            let ticket = inner.gradient.start();
            if waiter.send(ticket).is_err() {
                inner.gradient.in_flight = inner.gradient.in_flight.saturating_sub(1);
            }
        }
    }
}

/// A waiter: if it is dropped after being handed a slot, the slot goes back.
struct Waiting<'a> {
    limiter: &'a Limiter,
    receiver: Option<oneshot::Receiver<Ticket>>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(mut receiver) = self.receiver.take() {
            receiver.close();
            if let Ok(ticket) = receiver.try_recv() {
                self.limiter.finish(ticket, "", Sample::Neutral);
            }
        }
    }
}

/// One slot. `finish` says how the request went; dropped unfinished, it counts as neutral.
#[derive(Debug)]
pub struct Permit<'a> {
    limiter: &'a Limiter,
    ticket: Ticket,
    done: bool,
}

impl Permit<'_> {
    /// The request on `route` (a key from `route_key`) ended with `sample`.
    pub fn finish(mut self, route: &str, sample: Sample) {
        self.done = true;
        self.limiter.finish(self.ticket, route, sample);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.limiter.finish(self.ticket, "", Sample::Neutral);
        }
    }
}

/// The route a request's latency is compared within: its method and its path with ids
/// replaced, and whether it is a look-up (a list filtered by a natural key) or a page.
pub fn route_key(method: &str, path: &str, query: &[(&'static str, String)]) -> String {
    let mut key = String::with_capacity(method.len() + path.len() + 8);
    key.push_str(method);
    key.push(' ');
    for segment in path.trim_end_matches('/').split('/').skip(1) {
        key.push('/');
        let id = uuid::Uuid::try_parse(segment).is_ok()
            || (!segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()));
        key.push_str(if id { "{id}" } else { segment });
    }
    if ListKind::of(query) == ListKind::Lookup {
        key.push_str("?lookup");
    } else if query.iter().any(|(k, _)| *k == "offset") {
        key.push_str("?page");
    }
    key
}

#[cfg(test)]
#[allow(clippy::cast_precision_loss)] // figures of a simulation, far below 2^52
mod tests {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// One round as a client keeping the limit full sends it: as many requests as the limit
    /// allows at once, then all their answers (`sample`), again until the round is judged (a
    /// round has at least `MIN_ROUND` answers) or something changed. The changes made.
    fn round(g: &mut Gradient, route: &str, sample: Sample) -> Vec<Decision> {
        let need = g.limit().max(MIN_ROUND);
        let (mut answered, mut decisions) = (0, Vec::new());
        while answered < need && decisions.is_empty() {
            let tickets: Vec<Ticket> = std::iter::from_fn(|| g.try_start()).collect();
            answered += tickets.len();
            decisions.extend(tickets.into_iter().filter_map(|ticket| g.finish(ticket, route, sample)));
        }
        decisions
    }

    /// A gradient whose routes have warmed up (`ROUTE_WARM_UP` answers each, one at a time),
    /// with these latencies.
    fn warmed(ceiling: usize, routes: &[(&str, Duration)]) -> Gradient {
        let mut g = Gradient::new(ceiling);
        for (route, latency) in routes {
            for _ in 0..ROUTE_WARM_UP {
                let ticket = g.try_start().expect("room");
                assert_eq!(g.finish(ticket, route, Sample::Answered(*latency)), None, "warming up");
            }
        }
        // The warm-up is behind: the next round is judged on its own.
        g.new_round();
        assert_eq!(g.limit(), INITIAL.min(ceiling));
        g
    }

    /// A gradient whose test routes have warmed up at 10 ms.
    fn warm(ceiling: usize) -> Gradient {
        warmed(ceiling, &[("GET /api/users?page", 10 * MS), ("POST /api/users", 10 * MS), ("GET /", 10 * MS)])
    }

    fn rounds(g: &mut Gradient, n: usize, latency: Duration) -> Vec<Decision> {
        (0..n).flat_map(|_| round(g, "GET /api/users?page", Sample::Answered(latency))).collect()
    }

    #[test]
    fn the_limit_starts_at_four_and_doubles_while_latency_stays_near_the_smallest_up_to_the_ceiling() {
        let mut g = Gradient::new(32);
        assert_eq!(g.limit(), INITIAL);
        let decisions = rounds(&mut g, 6, 10 * MS);
        let steps: Vec<(usize, usize)> = decisions.iter().map(|d| (d.from, d.to)).collect();
        assert_eq!(steps[..4], [(4, 8), (8, 16), (16, 32), (32, 32)]);
        assert!(decisions.iter().all(|d| d.reason == Reason::SlowStart));
        assert_eq!(g.limit(), 32, "never above the ceiling");
        assert_eq!(Gradient::new(2).limit(), 2, "the start is at most the ceiling");
    }

    #[test]
    fn after_the_first_decrease_the_limit_grows_by_one_per_round_and_past_the_knee_only_every_few_rounds() {
        let mut g = warm(32);
        rounds(&mut g, 2, 10 * MS);
        assert_eq!(g.limit(), 16);
        let d = round(&mut g, "GET /", Sample::Refused(503));
        assert_eq!((d[0].from, d[0].to), (16, 8));
        let grown: Vec<usize> = (0..7)
            .map(|_| {
                rounds(&mut g, 1, 10 * MS);
                g.limit()
            })
            .collect();
        // One per round up to just below the knee (16), then one every `PROBE_ROUNDS` rounds.
        assert_eq!(grown, [9, 10, 11, 12, 13, 14, 15]);
        let probing: Vec<usize> = (0..6)
            .map(|_| {
                rounds(&mut g, 1, 10 * MS);
                g.limit()
            })
            .collect();
        assert_eq!(probing, [15, 15, 16, 16, 16, 17]);
        // A probe the server refuses: the next one waits twice as many good rounds.
        let d = round(&mut g, "GET /", Sample::Refused(503));
        assert_eq!((d[0].from, d[0].to), (17, 8));
        let limits: Vec<usize> = (0..14)
            .map(|_| {
                rounds(&mut g, 1, 10 * MS);
                g.limit()
            })
            .collect();
        assert_eq!(limits, [9, 10, 11, 12, 13, 14, 15, 16, 16, 16, 16, 16, 16, 17]);
    }

    #[test]
    fn a_503_or_a_429_or_a_timeout_halves_the_limit_once_per_episode() {
        let mut g = warm(32);
        rounds(&mut g, 3, 10 * MS);
        assert_eq!(g.limit(), 32);
        // 32 answers 503: the first halves the limit; the others were sent at the old limit
        // and belong to the same episode.
        let d = round(&mut g, "POST /api/users", Sample::Refused(503));
        assert_eq!(
            d.iter().map(|d| (d.from, d.to, d.reason)).collect::<Vec<_>>(),
            [(32, 16, Reason::Refused(503))]
        );
        let d = round(&mut g, "POST /api/users", Sample::TimedOut);
        assert_eq!(
            d.iter().map(|d| (d.from, d.to, d.reason)).collect::<Vec<_>>(),
            [(16, 8, Reason::TimedOut)]
        );
        let d = round(&mut g, "POST /api/users", Sample::Refused(429));
        assert_eq!(d.iter().map(|d| (d.from, d.to)).collect::<Vec<_>>(), [(8, 4)]);
    }

    #[test]
    fn latency_past_twice_the_smallest_halves_and_a_smaller_rise_shrinks_in_proportion() {
        let mut g = warm(32);
        rounds(&mut g, 3, 10 * MS);
        assert_eq!(g.limit(), 32);
        // In slow start, where an overshoot is expected, at once.
        let d = rounds(&mut g, 1, 25 * MS);
        assert_eq!((d[0].from, d[0].to, d[0].reason), (32, 16, Reason::LatencyDoubled));
        // Then one slow round is held, and the second shrinks in proportion.
        assert!(rounds(&mut g, 1, 16 * MS).is_empty(), "one slow round is held");
        let d = rounds(&mut g, 1, 16 * MS);
        assert_eq!((d[0].from, d[0].to, d[0].reason), (16, 10, Reason::Queueing));
        // Near the smallest again (within 20% of the floor): it grows.
        let d = rounds(&mut g, 1, 11 * MS);
        assert_eq!((d[0].from, d[0].to, d[0].reason), (10, 11, Reason::Grow));
        // Past twice the smallest two rounds running: halved.
        assert!(rounds(&mut g, 1, 25 * MS).is_empty(), "one slow round is held");
        let d = rounds(&mut g, 1, 25 * MS);
        assert_eq!((d[0].from, d[0].to, d[0].reason), (11, 5, Reason::LatencyDoubled));
    }

    #[test]
    fn a_shrink_for_latency_that_a_lower_limit_does_not_cure_is_undone() {
        let mut g = warm(8);
        rounds(&mut g, 1, 10 * MS);
        // Out of slow start: a refusal at 8, then back up to 8 (by one, then a probe).
        round(&mut g, "GET /", Sample::Refused(503));
        rounds(&mut g, 6, 10 * MS);
        assert_eq!(g.limit(), 8);
        // One slow round is held, not acted on.
        assert!(rounds(&mut g, 1, 18 * MS).is_empty());
        rounds(&mut g, 1, 10 * MS);
        assert_eq!(g.limit(), 8);
        // The machine is busy: latency 1.8 times the smallest whatever the limit. Two slow
        // rounds shrink the limit; the next, as slow at the lower limit, undoes it.
        assert!(rounds(&mut g, 1, 18 * MS).is_empty());
        let d = rounds(&mut g, 1, 18 * MS);
        assert_eq!((d[0].from, d[0].to, d[0].reason), (8, 4, Reason::Queueing));
        let d = rounds(&mut g, 1, 18 * MS);
        assert_eq!((d[0].from, d[0].to, d[0].reason), (4, 8, Reason::Undo));
        // A queue of this client's making drains at the lower limit: the shrink stays.
        rounds(&mut g, 1, 10 * MS);
        assert!(rounds(&mut g, 1, 15 * MS).is_empty());
        let d = rounds(&mut g, 1, 15 * MS);
        assert_eq!((d[0].from, d[0].to, d[0].reason), (8, 5, Reason::Queueing));
        rounds(&mut g, 1, 10 * MS);
        assert!((5..8).contains(&g.limit()), "{}", g.limit());
    }

    #[test]
    fn a_round_in_which_a_new_route_warms_up_holds_the_limit() {
        let mut g = warm(32);
        // Half the answers of each round on a route used for the first time (the users'
        // creates beginning after the companies'): it learns its smallest, the limit holds.
        let mut held = 0;
        while g.smallest.get("POST /api/companies").is_none_or(|(_, seen)| *seen <= ROUTE_WARM_UP) {
            let tickets: Vec<Ticket> = std::iter::from_fn(|| g.try_start()).collect();
            for (i, ticket) in tickets.into_iter().enumerate() {
                let route = if i % 2 == 0 { "POST /api/companies" } else { "GET /api/users?page" };
                assert_eq!(g.finish(ticket, route, Sample::Answered(10 * MS)), None);
            }
            held += 1;
        }
        assert!(held >= 2, "{held} rounds");
        assert_eq!(g.limit(), INITIAL, "held while the route warmed up");
        // Once it has, rounds on both grow the limit again.
        let d = rounds(&mut g, 1, 10 * MS);
        assert_eq!((d[0].from, d[0].to, d[0].reason), (4, 8, Reason::SlowStart));
    }

    #[test]
    fn a_round_is_judged_on_the_requests_sent_first_not_on_the_answers_back_first() {
        // Slow start has doubled to 8 against a server with 4 workers.
        let mut g = warm(32);
        let d = rounds(&mut g, 1, 10 * MS);
        assert_eq!((d[0].from, d[0].to), (4, 8));
        let first: Vec<Ticket> = std::iter::from_fn(|| g.try_start()).collect();
        assert_eq!(first.len(), 8);
        let (served, queued) = first.split_at(4);
        // The 4 served at once answer first; 4 more are sent in their place and, with the
        // 4 queued ones gone to the workers, answer fast too: 8 answers near the smallest...
        for ticket in served {
            assert_eq!(g.finish(*ticket, "GET /api/users?page", Sample::Answered(10 * MS)), None);
        }
        let next: Vec<Ticket> = std::iter::from_fn(|| g.try_start()).collect();
        assert_eq!(next.len(), 4);
        for ticket in next {
            assert_eq!(g.finish(ticket, "GET /api/users?page", Sample::Answered(10 * MS)), None);
        }
        // ... but the round is the first 8 sent, and half of them waited their turn.
        let decisions: Vec<Decision> = queued
            .iter()
            .filter_map(|ticket| g.finish(*ticket, "GET /api/users?page", Sample::Answered(20 * MS)))
            .collect();
        assert_eq!(decisions.len(), 1, "{decisions:?}");
        assert_eq!((decisions[0].from, decisions[0].to), (8, 5), "{decisions:?}");
        assert_eq!(decisions[0].reason, Reason::Queueing);
    }

    #[test]
    fn the_limit_never_goes_below_one() {
        let mut g = Gradient::new(8);
        for _ in 0..10 {
            round(&mut g, "GET /", Sample::Refused(503));
        }
        assert_eq!(g.limit(), 1);
        assert!(g.try_start().is_some() && g.try_start().is_none(), "one in flight at a time");
    }

    #[test]
    fn a_client_that_does_not_use_its_limit_does_not_grow_it() {
        let mut g = Gradient::new(32);
        for _ in 0..100 {
            let ticket = g.try_start().expect("room");
            g.finish(ticket, "GET /", Sample::Answered(10 * MS));
        }
        assert_eq!(g.limit(), INITIAL, "one request at a time says nothing of the room for more");
    }

    #[test]
    fn neutral_answers_teach_nothing_and_each_route_is_compared_with_its_own_smallest() {
        let mut g = warmed(32, &[("GET ?page", 40 * MS), ("POST /", 10 * MS)]);
        assert!(round(&mut g, "GET /", Sample::Neutral).is_empty());
        assert_eq!(g.limit(), INITIAL);
        // Pages take 40 ms and creates 10 ms: each near its own smallest, so the limit grows.
        for _ in 0..4 {
            let tickets: Vec<Ticket> = std::iter::from_fn(|| g.try_start()).collect();
            for (i, ticket) in tickets.into_iter().enumerate() {
                let (route, latency) = if i % 2 == 0 { ("GET ?page", 40 * MS) } else { ("POST /", 10 * MS) };
                g.finish(ticket, route, Sample::Answered(latency));
            }
        }
        assert_eq!(g.limit(), 32);
    }

    #[test]
    fn route_keys_ignore_ids_and_tell_look_ups_from_pages() {
        let q = |pairs: &[(&'static str, &str)]| -> Vec<(&'static str, String)> {
            pairs.iter().map(|(k, v)| (*k, (*v).to_string())).collect()
        };
        let id = "4f1c2b1e-9d0a-4c55-8a55-2b9b2d1f0a11";
        assert_eq!(route_key("PATCH", &format!("/api/users/{id}"), &[]), "PATCH /api/users/{id}");
        assert_eq!(
            route_key("POST", &format!("/api/authorize/service_token/{id}"), &[]),
            "POST /api/authorize/service_token/{id}"
        );
        assert_eq!(route_key("GET", "/api/users/", &q(&[("offset", "0")])), "GET /api/users?page");
        assert_eq!(
            route_key("GET", "/api/users", &q(&[("offset", "0"), ("email", "a@b.c")])),
            "GET /api/users?lookup"
        );
    }

    // -----------------------------------------------------------------------------------------
    // A scripted server on a fake clock: `capacity` workers, each request `service` long (plus
    // a fixed jitter pattern), a FIFO queue that sheds requests waiting past `shed_after`
    // (answered 503). The client keeps the limiter full with `requests` requests. Time is
    // a number of microseconds advanced from event to event; nothing sleeps.

    struct Figures {
        /// Requests answered 2xx.
        served: usize,
        shed: usize,
        /// Total queue wait, in µs, of the requests served.
        waited_us: u64,
        /// The fake clock when the last answer came, in µs.
        end_us: u64,
        /// Limit × time, to average the limit over the run.
        limit_us: u64,
        decisions: Vec<Decision>,
        final_limit: usize,
    }

    #[derive(PartialEq, Eq, PartialOrd, Ord)]
    enum Event {
        /// A worker finishes request `id`.
        Done { id: usize },
        /// Request `id` has waited `shed_after`.
        ShedCheck { id: usize },
    }

    fn scripted_server(capacity: usize, ceiling: usize, requests: usize, shed_after_us: u64) -> Figures {
        let service_us = |id: usize| 10_000 + (id as u64 * 7919) % 1_000;
        let mut g = Gradient::new(ceiling);
        let mut now = 0_u64;
        let mut events: BinaryHeap<Reverse<(u64, Event)>> = BinaryHeap::new();
        // Per request: its ticket, sent at.
        let mut sent: Vec<(Ticket, u64)> = Vec::new();
        let mut queue: VecDeque<(usize, u64)> = VecDeque::new();
        let mut busy = 0;
        let mut f = Figures {
            served: 0,
            shed: 0,
            waited_us: 0,
            end_us: 0,
            limit_us: 0,
            decisions: Vec::new(),
            final_limit: 0,
        };
        let mut last_change = 0;
        let mut to_send = requests;
        loop {
            // The client sends all the limit allows.
            while to_send > 0 {
                let Some(ticket) = g.try_start() else { break };
                to_send -= 1;
                let id = sent.len();
                sent.push((ticket, now));
                if busy < capacity {
                    busy += 1;
                    events.push(Reverse((now + service_us(id), Event::Done { id })));
                } else {
                    queue.push_back((id, now));
                    events.push(Reverse((now + shed_after_us, Event::ShedCheck { id })));
                }
            }
            let Some(Reverse((at, event))) = events.pop() else { break };
            f.limit_us += g.limit() as u64 * (at - last_change);
            last_change = at;
            now = at;
            let (id, sample) = match event {
                Event::Done { id } => {
                    busy -= 1;
                    if let Some((next, queued_at)) = queue.pop_front() {
                        busy += 1;
                        f.waited_us += now - queued_at;
                        events.push(Reverse((now + service_us(next), Event::Done { id: next })));
                    }
                    f.served += 1;
                    (id, Sample::Answered(Duration::from_micros(now - sent[id].1)))
                }
                Event::ShedCheck { id } => {
                    let Some(i) = queue.iter().position(|(q, _)| *q == id) else { continue };
                    queue.remove(i);
                    f.shed += 1;
                    to_send += 1; // retried later
                    (id, Sample::Refused(503))
                }
            };
            f.decisions.extend(g.finish(sent[id].0, "POST /api/users", sample));
            f.end_us = now;
        }
        // A run that ends in a drain round (one round at half the limit, every `DRAIN_EVERY`)
        // ends at the limit that round goes back to.
        #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let settled = g.restore.map_or(g.limit(), |limit| (limit + 1e-9).floor() as usize);
        f.final_limit = settled;
        f
    }

    #[test]
    fn against_a_scripted_server_the_limit_settles_at_its_capacity_with_a_short_queue_and_nothing_shed() {
        for capacity in [4, 8, 16] {
            let f = scripted_server(capacity, 32, 4_000, 30_000);
            assert_eq!(f.shed, 0, "capacity {capacity}");
            assert_eq!(f.served, 4_000);
            // The limit, averaged over the run and at its end, stays between one below the
            // capacity and the queue the tolerance allows (15% of the service time: a few
            // requests past a large capacity, none past a small one)...
            let (low, high) = (capacity as f64 - 1.0, capacity as f64 * (1.0 + TOLERANCE) + 1.0);
            let average_limit = f.limit_us as f64 / f.end_us as f64;
            assert!(
                (low..=high).contains(&average_limit),
                "capacity {capacity}: average limit {average_limit:.2}"
            );
            assert!(
                (low..=high).contains(&(f.final_limit as f64)),
                "capacity {capacity}: ended at {}",
                f.final_limit
            );
            // ... and requests wait in the server's line less than a fifth of the service time.
            let wait_per_request_us = f.waited_us / 4_000;
            assert!(wait_per_request_us < 2_000, "capacity {capacity}: {wait_per_request_us} µs");
            assert!(
                f.decisions.iter().any(|d| d.reason == Reason::Queueing),
                "it met the queue and backed off"
            );
        }
    }

    #[test]
    fn against_a_server_with_more_room_than_the_ceiling_the_limit_stays_at_the_ceiling() {
        let f = scripted_server(64, 32, 4_000, 30_000);
        assert_eq!((f.shed, f.final_limit), (0, 32));
        assert!(f.decisions.iter().all(|d| d.to >= d.from), "never shrank: {:?}", f.decisions);
    }

    #[test]
    fn a_server_shedding_its_queue_halves_the_limit_until_nothing_is_shed() {
        // Sheds after 5 ms of waiting: the slow start's first overshoot to 8 meets it.
        let f = scripted_server(4, 32, 2_000, 5_000);
        assert!(f.decisions.iter().any(|d| d.reason == Reason::Refused(503)), "{:?}", f.decisions);
        assert!(f.shed < 20, "shed {} of 2,000", f.shed);
        assert_eq!(f.served, 2_000, "every shed request was sent again and served");
    }

    // -----------------------------------------------------------------------------------------
    // The waiting side.

    #[tokio::test]
    async fn waiters_get_slots_in_arrival_order_and_a_dropped_waiter_passes_its_turn() {
        let limiter = Limiter::new(1);
        assert_eq!(limiter.limit(), 1);
        let first = limiter.acquire().await;
        let order = std::sync::Mutex::new(Vec::new());
        let second = async {
            let permit = limiter.acquire().await;
            order.lock().expect("lock").push(2);
            permit.finish("GET /", Sample::Neutral);
        };
        let third = async {
            let permit = limiter.acquire().await;
            order.lock().expect("lock").push(3);
            permit.finish("GET /", Sample::Neutral);
        };
        // A waiter that gives up before its turn.
        let mut gone = Box::pin(limiter.acquire());
        assert!(futures::poll!(gone.as_mut()).is_pending());
        let release = async {
            tokio::task::yield_now().await;
            drop(gone);
            first.finish("GET /", Sample::Answered(MS));
        };
        tokio::join!(second, third, release);
        assert_eq!(*order.lock().expect("lock"), [2, 3]);

        // Another attempt of a request that had its turn goes first.
        let held = limiter.acquire().await;
        let order = std::sync::Mutex::new(Vec::new());
        let queued = async {
            let permit = limiter.acquire().await;
            order.lock().expect("lock").push("queued");
            permit.finish("GET /", Sample::Neutral);
        };
        let retry = async {
            tokio::task::yield_now().await;
            let permit = limiter.acquire_again().await;
            order.lock().expect("lock").push("retry");
            permit.finish("GET /", Sample::Neutral);
        };
        let release = async {
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
            held.finish("GET /", Sample::Neutral);
        };
        tokio::join!(queued, retry, release);
        assert_eq!(*order.lock().expect("lock"), ["retry", "queued"]);
        let again = limiter.acquire().await;
        drop(again);
        assert_eq!(limiter.inner().gradient.in_flight(), 0, "every slot came back");
    }
}
