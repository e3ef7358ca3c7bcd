//! When a failed request may be sent again, and how long to wait first.
//!
//! Pure decisions, no I/O. The transport asks `Retrier::next_delay` after each failed
//! attempt. Policy (section 7.8 of the Oz API notes):
//! - Retried: 429, 500, 502, 503, 504 and transport failures (connect error, timeout, dropped
//!   connection) on requests that are safe to repeat (500 too, since the API notes say "5xx" and
//!   repeating a safe request costs nothing): `GET`, and `PATCH` (a PATCH sets fields
//!   to absolute values, so sending the same body twice leaves the same state), and the session
//!   calls (`authorize/auth`, `authorize/refresh`: a second session is harmless).
//! - A `POST` that creates something (company, user, service token) is re-sent only when the
//!   server certainly did not act on it: a 429 answer, or a connect error (nothing was sent).
//!   A timeout, a dropped connection or a 5xx leaves its outcome unknown: it is returned as an
//!   error whose `outcome_unknown()` is true, and the caller reads back by natural key.
//! - `Retry-After` (seconds, integer or decimal) replaces the backoff delay when present. The
//!   client gives up when the attempts or the total time budget would be exceeded.
//! - Delays grow exponentially with jitter (backon's `ExponentialBuilder`).

use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// Bounds of the retry loop of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: usize,
    /// First backoff delay (jitter adds up to as much again).
    pub min_delay: Duration,
    /// Largest backoff delay.
    pub max_delay: Duration,
    /// Total time a request may spend, waits included; no retry starts past it.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    /// 6 attempts, 250 ms growing to 8 s, within 90 s in all.
    fn default() -> Self {
        Self {
            max_attempts: 6,
            min_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
            max_elapsed: Duration::from_secs(90),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        Self { max_attempts: 1, ..Self::default() }
    }
}

/// How a request may be repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// Safe to send again after any transient failure (GET, PATCH, session calls).
    Safe,
    /// A create: only when the server certainly did not act (429, connect error).
    OnlyIfNotProcessed,
}

/// What went wrong with one attempt, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// An answer with this status and optional `Retry-After`.
    Status { status: u16, retry_after: Option<Duration> },
    /// No connection could be made: the request was never sent.
    Connect,
    /// Timeout or dropped connection after the request may have been sent.
    Transport,
}

/// Whether this failure is worth another attempt for this kind of request.
pub fn is_retryable(repeat: Repeat, failure: Failure) -> bool {
    match failure {
        Failure::Status { status: 429, .. } | Failure::Connect => true,
        Failure::Status { status: 500 | 502..=504, .. } | Failure::Transport => repeat == Repeat::Safe,
        Failure::Status { .. } => false,
    }
}

/// The `Retry-After` header in seconds (integer or decimal). An HTTP date is not honoured:
/// the backoff delay is used instead.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
}

/// The retry state of one request.
#[derive(Debug)]
pub struct Retrier {
    policy: RetryPolicy,
    backoff: ExponentialBackoff,
    started: Instant,
    attempts: usize,
}

impl Retrier {
    pub fn new(policy: RetryPolicy) -> Self {
        let backoff = ExponentialBuilder::new()
            .with_jitter()
            .with_min_delay(policy.min_delay)
            .with_max_delay(policy.max_delay)
            .with_max_times(policy.max_attempts.saturating_sub(1))
            .build();
        Self { policy, backoff, started: Instant::now(), attempts: 1 }
    }

    /// Attempts made so far (the first counts).
    pub fn attempts(&self) -> usize {
        self.attempts
    }

    /// After a failed attempt: how long to wait before the next one, or `None` to give up.
    pub fn next_delay(&mut self, repeat: Repeat, failure: Failure) -> Option<Duration> {
        if !is_retryable(repeat, failure) {
            return None;
        }
        let backoff = self.backoff.next()?;
        let delay = match failure {
            Failure::Status { retry_after: Some(after), .. } => after,
            _ => backoff,
        };
        if self.started.elapsed() + delay > self.policy.max_elapsed {
            return None;
        }
        self.attempts += 1;
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(4),
            max_elapsed: Duration::from_secs(5),
        }
    }

    #[test]
    fn a_create_is_repeated_only_when_the_server_did_not_act() {
        let create = Repeat::OnlyIfNotProcessed;
        assert!(is_retryable(create, Failure::Status { status: 429, retry_after: None }));
        assert!(is_retryable(create, Failure::Connect));
        assert!(!is_retryable(create, Failure::Transport));
        assert!(!is_retryable(create, Failure::Status { status: 503, retry_after: None }));
        assert!(!is_retryable(create, Failure::Status { status: 500, retry_after: None }));
    }

    #[test]
    fn safe_requests_are_repeated_on_gateway_errors_but_not_on_client_errors() {
        for status in [429, 500, 502, 503, 504] {
            assert!(is_retryable(Repeat::Safe, Failure::Status { status, retry_after: None }));
        }
        for status in [400, 401, 404, 409, 501] {
            assert!(!is_retryable(Repeat::Safe, Failure::Status { status, retry_after: None }));
        }
        assert!(is_retryable(Repeat::Safe, Failure::Transport));
    }

    #[test]
    fn retry_after_replaces_the_backoff_delay() {
        let mut r = Retrier::new(fast());
        let after = Some(Duration::from_millis(300));
        let delay = r.next_delay(Repeat::Safe, Failure::Status { status: 429, retry_after: after });
        assert_eq!(delay, after);
    }

    #[test]
    fn attempts_are_bounded() {
        let mut r = Retrier::new(fast());
        let fail = Failure::Status { status: 503, retry_after: None };
        assert!(r.next_delay(Repeat::Safe, fail).is_some());
        assert!(r.next_delay(Repeat::Safe, fail).is_some());
        assert_eq!(r.next_delay(Repeat::Safe, fail), None);
        assert_eq!(r.attempts(), 3);
    }

    #[test]
    fn a_retry_after_beyond_the_time_budget_gives_up() {
        let mut r = Retrier::new(fast());
        let long = Failure::Status { status: 429, retry_after: Some(Duration::from_secs(60)) };
        assert_eq!(r.next_delay(Repeat::Safe, long), None);
    }

    #[test]
    fn retry_after_accepts_integer_and_decimal_seconds() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("0.05"), Some(Duration::from_millis(50)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }
}
