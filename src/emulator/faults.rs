//! Fault injection: latency, 429 with `Retry-After`, 500, 503, dropped connections, creates that
//! commit and then fail (500, a dropped connection, or a 201 whose body is not JSON), and
//! expiring every session at once.
//!
//! Two kinds of knob. Rates (`too_many_requests`, `commit_then_error`, …) are fractions of
//! requests drawn from a seeded `fastrand::Rng`, so a run with the same seed and the same
//! request order injects the same faults. Counters (`too_many_requests_next`,
//! `unavailable_next`, `drop_next`, `expire_sessions_at`) are exact: "the next N requests",
//! for tests that assert request counts; they are used up first, and `Handle::faults` shows
//! what is left of them. The login route (`authorize/auth`) and `authorize/refresh` get no
//! fault but latency unless `include_auth` is set (session expiry counts every request). No
//! I/O here: the routes module acts on the decisions.

/// Faults for a run; every rate is a fraction of requests in `0.0..=1.0`. `Default`: none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Delay added to every request before it is handled.
    pub latency_ms: u64,
    /// Fraction answered 429 with `Retry-After: retry_after_secs`.
    pub too_many_requests: f64,
    /// `Retry-After` of injected 429s, in seconds (0 is allowed, for fast tests).
    pub retry_after_secs: u64,
    /// Fraction answered 500 without being handled.
    pub internal_error: f64,
    /// Fraction answered 503 without being handled.
    pub unavailable: f64,
    /// Fraction whose TCP connection is closed without any HTTP answer, before being handled.
    pub drop_connection: f64,
    /// Fraction of successful creates (company, user, service token) that commit and then answer 500.
    pub commit_then_error: f64,
    /// Fraction of successful creates that commit and then close the connection without answering.
    pub commit_then_drop: f64,
    /// Fraction of successful creates that commit and then answer 201 with a body that is not
    /// JSON (an HTML page): the object exists, but the client cannot learn its id.
    pub commit_then_garble: f64,
    /// Answer the next N requests 429 with `Retry-After: retry_after_secs`, without handling them.
    pub too_many_requests_next: u64,
    /// Answer the next N requests 503 without handling them (after the 429s above).
    pub unavailable_next: u64,
    /// Close the connection of the next N requests without any HTTP answer, before handling
    /// them (after the 503s above). With `include_auth`, a dropped login.
    pub drop_next: u64,
    /// Expire every login session just before each N-th request (0: never).
    pub expire_sessions_every: u64,
    /// Expire every login session once, just before the N-th request counted from when these
    /// faults were set (1: the next request; 0: never).
    pub expire_sessions_at: u64,
    /// Inject faults on `authorize/auth` and `authorize/refresh` too.
    pub include_auth: bool,
    /// Seed of the fault RNG (reset whenever faults are set).
    pub seed: u64,
}

impl Faults {
    /// `rate` spread evenly over 429 (`Retry-After: 1`), 500, 503 and dropped connections,
    /// plus `latency_ms`: what `ozform emulator --fault-rate R --latency-ms N` serves.
    pub fn mixed(rate: f64, latency_ms: u64) -> Self {
        let share = rate.clamp(0.0, 1.0) / 4.0;
        Self {
            latency_ms,
            too_many_requests: share,
            retry_after_secs: 1,
            internal_error: share,
            unavailable: share,
            drop_connection: share,
            ..Self::default()
        }
    }

    /// `rate` spread evenly over every kind of request fault (429 with `Retry-After: 0`, 500,
    /// 503, dropped connection) and, for creates, commit-then-500 and commit-then-drop, from
    /// `seed`: what a client must retry through without creating anything twice.
    pub fn flaky(rate: f64, seed: u64) -> Self {
        let share = rate.clamp(0.0, 1.0) / 4.0;
        Self {
            too_many_requests: share,
            retry_after_secs: 0,
            internal_error: share,
            unavailable: share,
            drop_connection: share,
            commit_then_error: rate.clamp(0.0, 1.0) / 2.0,
            commit_then_drop: rate.clamp(0.0, 1.0) / 2.0,
            seed,
            ..Self::default()
        }
    }

    /// Whether anything beyond latency is configured (lets the hot path skip the RNG lock).
    pub(crate) fn injects(&self) -> bool {
        self.too_many_requests > 0.0
            || self.internal_error > 0.0
            || self.unavailable > 0.0
            || self.drop_connection > 0.0
            || self.commit_then_error > 0.0
            || self.commit_then_drop > 0.0
            || self.commit_then_garble > 0.0
            || self.too_many_requests_next > 0
            || self.unavailable_next > 0
            || self.drop_next > 0
            || self.expire_sessions_every > 0
            || self.expire_sessions_at > 0
    }
}

/// What to do to a request before handling it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Before {
    Handle,
    TooManyRequests { retry_after_secs: u64 },
    InternalError,
    Unavailable,
    Drop,
}

/// What to do to a create after it committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum After {
    Answer,
    InternalError,
    Drop,
    /// 201 with a body that is not JSON.
    Garbled,
}

/// The faults in force (their counters used up as requests come) and their RNG.
#[derive(Debug)]
pub(crate) struct Injector {
    faults: Faults,
    rng: fastrand::Rng,
    requests: u64,
}

impl Injector {
    pub(crate) fn new(faults: Faults) -> Self {
        let rng = fastrand::Rng::with_seed(faults.seed);
        Self { faults, rng, requests: 0 }
    }

    pub(crate) fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Count a request; true when all sessions must expire before it is handled.
    pub(crate) fn expire_sessions_now(&mut self) -> bool {
        self.requests += 1;
        let every = self.faults.expire_sessions_every;
        (every > 0 && self.requests.is_multiple_of(every)) || self.faults.expire_sessions_at == self.requests
    }

    /// The fault (if any) of a request: a counter that is not used up yet, else one draw.
    pub(crate) fn before(&mut self, auth_route: bool) -> Before {
        if auth_route && !self.faults.include_auth {
            return Before::Handle;
        }
        let f = &mut self.faults;
        if take_one(&mut f.too_many_requests_next) {
            return Before::TooManyRequests { retry_after_secs: f.retry_after_secs };
        }
        if take_one(&mut f.unavailable_next) {
            return Before::Unavailable;
        }
        if take_one(&mut f.drop_next) {
            return Before::Drop;
        }
        let roll = self.rng.f64();
        let mut edge = f.too_many_requests;
        if roll < edge {
            return Before::TooManyRequests { retry_after_secs: f.retry_after_secs };
        }
        edge += f.internal_error;
        if roll < edge {
            return Before::InternalError;
        }
        edge += f.unavailable;
        if roll < edge {
            return Before::Unavailable;
        }
        edge += f.drop_connection;
        if roll < edge {
            return Before::Drop;
        }
        Before::Handle
    }

    /// One draw decides what happens to a create that committed.
    pub(crate) fn after_commit(&mut self) -> After {
        let f = &self.faults;
        if f.commit_then_error <= 0.0 && f.commit_then_drop <= 0.0 && f.commit_then_garble <= 0.0 {
            return After::Answer;
        }
        let roll = self.rng.f64();
        if roll < f.commit_then_error {
            After::InternalError
        } else if roll < f.commit_then_error + f.commit_then_drop {
            After::Drop
        } else if roll < f.commit_then_error + f.commit_then_drop + f.commit_then_garble {
            After::Garbled
        } else {
            After::Answer
        }
    }
}

/// Use up one of `counter`; false when it is already 0.
fn take_one(counter: &mut u64) -> bool {
    if *counter == 0 {
        return false;
    }
    *counter -= 1;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draws(faults: &Faults, n: usize) -> Vec<Before> {
        let mut injector = Injector::new(faults.clone());
        (0..n).map(|_| injector.before(false)).collect()
    }

    #[test]
    fn the_same_seed_injects_the_same_faults() {
        let faults = Faults::mixed(0.5, 0);
        assert_eq!(draws(&faults, 200), draws(&faults, 200));
        assert!(draws(&faults, 200).iter().any(|b| *b != Before::Handle));
    }

    #[test]
    fn auth_routes_are_spared_unless_asked() {
        let faults = Faults { internal_error: 1.0, ..Faults::default() };
        let mut injector = Injector::new(faults.clone());
        assert_eq!(injector.before(true), Before::Handle);
        assert_eq!(injector.before(false), Before::InternalError);
        let mut included = Injector::new(Faults { include_auth: true, ..faults });
        assert_eq!(included.before(true), Before::InternalError);
    }

    #[test]
    fn sessions_expire_on_every_nth_request() {
        let mut injector = Injector::new(Faults { expire_sessions_every: 3, ..Faults::default() });
        let hits: Vec<bool> = (0..6).map(|_| injector.expire_sessions_now()).collect();
        assert_eq!(hits, [false, false, true, false, false, true]);
    }

    #[test]
    fn counters_inject_exactly_the_next_n_faults_in_order_and_spare_auth_routes() {
        let faults = Faults {
            too_many_requests_next: 2,
            unavailable_next: 1,
            drop_next: 1,
            retry_after_secs: 0,
            ..Faults::default()
        };
        let mut injector = Injector::new(faults);
        assert_eq!(injector.before(true), Before::Handle);
        let seen: Vec<Before> = (0..5).map(|_| injector.before(false)).collect();
        let too_many = Before::TooManyRequests { retry_after_secs: 0 };
        assert_eq!(seen, [too_many, too_many, Before::Unavailable, Before::Drop, Before::Handle]);
        assert_eq!(injector.faults().too_many_requests_next + injector.faults().drop_next, 0);
    }

    #[test]
    fn sessions_expire_once_at_the_nth_request() {
        let mut injector = Injector::new(Faults { expire_sessions_at: 2, ..Faults::default() });
        let hits: Vec<bool> = (0..4).map(|_| injector.expire_sessions_now()).collect();
        assert_eq!(hits, [false, true, false, false]);
    }

    #[test]
    fn no_faults_means_every_request_is_handled_and_answered() {
        let mut injector = Injector::new(Faults::default());
        assert!((0..100).all(|_| injector.before(false) == Before::Handle));
        assert!((0..100).all(|_| injector.after_commit() == After::Answer));
        assert!(!Faults::default().injects());
    }
}
