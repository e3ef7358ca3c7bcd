//! Metrics: what the operations measure (`ops::Measure`) and what the Oz client's requests
//! were (`oz::RequestObserver`), kept as Prometheus families with the Prometheus project's
//! client (`prometheus-client`) and written in the Prometheus text format (0.0.4): served by
//! `reconcile --metrics-listen` (`server`), or written once by `--metrics-file` for the node
//! exporter's textfile collector.
//!
//! | family | labels | from |
//! |---|---|---|
//! | `ozform_reconcile_cycles_total` | `result` (`success`, `partial`, `failure`) | each cycle |
//! | `ozform_reconcile_last_success_timestamp_seconds` | | a successful cycle |
//! | `ozform_reconcile_cycle_duration_seconds` (histogram) | | each cycle |
//! | `ozform_drift_changes` | `action` (the five actions) | the last plan |
//! | `ozform_apply_steps_total` | `kind` (`company`, `service_user`, `token`), `result` (`done`, a step error kind, `skipped`, `not_started`) | each apply |
//! | `ozform_tokens_expiring` | `within` (`rotate_before`, `30d`) | the token store's `list` |
//! | `ozform_oz_requests_total` | `route` (a path template), `status` (the HTTP status, or `error`) | each HTTP attempt |
//! | `ozform_oz_request_duration_seconds` (histogram) | `route` | each HTTP attempt |
//! | `ozform_oz_concurrency_limit` | | the client's adaptive limit (`--parallelism auto`), only then |
//!
//! The `ozform_reconcile_*` families exist only in a reconcile loop's metrics.
//!
//! A `reconcile` with a project file adds an `installation` label (the project file's name for
//! it) to the `ozform_reconcile_*`, `ozform_drift_changes`, `ozform_apply_steps_total` and
//! `ozform_tokens_expiring` families: each installation's cycles, drift, steps and tokens are
//! its own series, and summing over `installation` gives the loop's totals. Without a project
//! file there is no such label, and the series are those of a one-installation loop. Names are
//! a closed set too: those of the project file, of 1 to 63 lower-case letters, digits, `-`, `_` and `.` (see
//! `manifest::project`), so that a name is safe as a label value. The request families carry
//! no installation label: a route's latency is the client's, and their sum is the loop's load.
//!
//! Invariant: no label and no value holds a secret, an email or an id. Labels take values from
//! closed sets (actions, address kinds, step error kinds, `oz::Route` templates) or are HTTP
//! status codes; values are counts, durations and timestamps. Nothing here reads an address's
//! identity, only its kind.
//!
//! Readiness (`/readyz`): a reconcile loop is ready from its first successful cycle until two
//! intervals pass without another. Health (`/healthz`): the loop is running (not stopping).

pub mod server;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::apply::ApplyReport;
use crate::model::{StoredTokens, known_expiry};
use crate::ops::Measure;
use crate::ops::reconcile::{CycleResult, CycleSummary};
use crate::oz::{Attempt, RequestObserver};
use crate::plan::{Action, Address, Plan};

/// The second window of `ozform_tokens_expiring`, besides `--rotate-before`.
const THIRTY_DAYS: Duration = Duration::from_secs(30 * 24 * 3600);

/// Upper bounds of the cycle duration buckets, in seconds.
const CYCLE_BUCKETS: [f64; 13] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];
/// Upper bounds of the request duration buckets, in seconds.
const REQUEST_BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

type Labels1 = [(&'static str, &'static str); 1];
/// The labels of a family that gains `installation` with a project file: a label set of either
/// size, never both in one loop.
type Labels = Vec<(&'static str, String)>;

/// `pairs`, with `installation` first when there is one.
fn labels(installation: Option<&str>, pairs: &[(&'static str, &str)]) -> Labels {
    installation
        .map(|name| ("installation", name.to_string()))
        .into_iter()
        .chain(pairs.iter().map(|(k, v)| (*k, (*v).to_string())))
        .collect()
}

fn cycle_histogram() -> Histogram {
    Histogram::new(CYCLE_BUCKETS)
}

fn request_histogram() -> Histogram {
    Histogram::new(REQUEST_BUCKETS)
}

/// The families of the Oz requests, shared with the client (`Measure::requests`).
#[derive(Debug, Clone)]
struct Requests {
    total: Family<[(&'static str, String); 2], Counter>,
    duration: Family<Labels1, Histogram, fn() -> Histogram>,
    /// A family of one unlabelled gauge, made when the client first tells its limit: with a
    /// fixed parallelism there is no limit, and no sample rather than a misleading 0.
    concurrency_limit: Family<[(&'static str, &'static str); 0], Gauge>,
}

impl RequestObserver for Requests {
    fn attempt(&self, attempt: &Attempt) {
        let route = attempt.route.as_str();
        let status = attempt.status.map_or_else(|| "error".to_string(), |s| s.to_string());
        self.total.get_or_create(&[("route", route.to_string()), ("status", status)]).inc();
        self.duration.get_or_create(&[("route", route)]).observe(attempt.elapsed.as_secs_f64());
    }

    fn concurrency_limit(&self, limit: usize) {
        self.concurrency_limit.get_or_create(&[]).set(i64::try_from(limit).unwrap_or(i64::MAX));
    }
}

/// The families of a reconcile loop and its readiness.
#[derive(Debug)]
struct Loop {
    interval: Duration,
    cycles: Family<Labels, Counter>,
    last_success: Family<Labels, Gauge<f64, AtomicU64>>,
    duration: Family<Labels, Histogram, fn() -> Histogram>,
    /// When the last successful cycle ended.
    succeeded: Mutex<Option<Instant>>,
    /// Cleared when the loop is stopping.
    running: AtomicBool,
}

/// Every metric of one run of ozform.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    drift: Family<Labels, Gauge>,
    steps: Family<Labels, Counter>,
    tokens_expiring: Family<Labels, Gauge>,
    requests: Requests,
    reconcile: Option<Loop>,
}

impl Metrics {
    /// The metrics of a one-shot run (`plan`, `apply`): drift, steps, tokens, requests.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let drift = Family::<Labels, Gauge>::default();
        registry.register(
            "ozform_drift_changes",
            "Changes of the last plan by action: the drift between the manifests and the installation",
            drift.clone(),
        );
        let steps = Family::<Labels, Counter>::default();
        registry.register(
            "ozform_apply_steps",
            "Steps carried out by apply, by address kind and result (done, a step error kind, skipped, not_started)",
            steps.clone(),
        );
        let tokens_expiring = Family::<Labels, Gauge>::default();
        registry.register(
            "ozform_tokens_expiring",
            "Stored tokens of known expiry that expire within --rotate-before (within=rotate_before) or 30 days (within=30d)",
            tokens_expiring.clone(),
        );
        let requests = Requests {
            total: Family::default(),
            duration: Family::new_with_constructor(request_histogram),
            concurrency_limit: Family::default(),
        };
        registry.register(
            "ozform_oz_requests",
            "HTTP attempts to the Oz API by route template and status (error: no answer)",
            requests.total.clone(),
        );
        registry.register(
            "ozform_oz_request_duration_seconds",
            "Duration of HTTP attempts to the Oz API by route template",
            requests.duration.clone(),
        );
        registry.register(
            "ozform_oz_concurrency_limit",
            "Requests the client lets in flight now, adapted to the server (--parallelism auto only)",
            requests.concurrency_limit.clone(),
        );
        Self { registry, drift, steps, tokens_expiring, requests, reconcile: None }
    }

    /// The metrics of a reconcile loop of this interval: the one-shot ones and the loop's. With
    /// a project file, `installations` names those reconciled (each series gains its label);
    /// empty without one.
    pub fn reconcile(interval: Duration, installations: &[String]) -> Self {
        let mut metrics = Self::new();
        let cycles = Family::<Labels, Counter>::default();
        let last_success = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        let duration = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(cycle_histogram);
        // Every series from the start, so that `rate()` and `increase()` see the first cycle.
        let names: Vec<Option<&str>> = if installations.is_empty() {
            vec![None]
        } else {
            installations.iter().map(|n| Some(n.as_str())).collect()
        };
        for name in names {
            for result in [CycleResult::Success, CycleResult::Partial, CycleResult::Failure] {
                let _ = cycles.get_or_create(&labels(name, &[("result", result.as_str())]));
            }
            let _ = last_success.get_or_create(&labels(name, &[]));
            let _ = duration.get_or_create(&labels(name, &[]));
        }
        metrics.registry.register(
            "ozform_reconcile_cycles",
            "Reconcile cycles by result (failure: nothing applied)",
            cycles.clone(),
        );
        metrics.registry.register(
            "ozform_reconcile_last_success_timestamp_seconds",
            "When the last successful reconcile cycle ended, Unix epoch seconds",
            last_success.clone(),
        );
        metrics.registry.register(
            "ozform_reconcile_cycle_duration_seconds",
            "Duration of reconcile cycles",
            duration.clone(),
        );
        metrics.reconcile = Some(Loop {
            interval,
            cycles,
            last_success,
            duration,
            succeeded: Mutex::new(None),
            running: AtomicBool::new(true),
        });
        metrics
    }

    /// Every family in the Prometheus text format (0.0.4).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a `String` cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        text
    }

    /// A reconcile loop is ready from its first successful cycle until two intervals pass
    /// without one; a one-shot run is never ready.
    pub fn ready(&self) -> bool {
        let Some(reconcile) = &self.reconcile else { return false };
        let succeeded = *reconcile.succeeded.lock().unwrap_or_else(PoisonError::into_inner);
        succeeded.is_some_and(|at| at.elapsed() <= reconcile.interval.saturating_mul(2))
    }

    /// Whether the loop is running (not stopping).
    pub fn healthy(&self) -> bool {
        self.reconcile.as_ref().is_some_and(|r| r.running.load(Ordering::Relaxed))
    }

    /// The loop is stopping (a signal came): `/healthz` answers 503 from now on.
    pub fn stopping(&self) {
        if let Some(reconcile) = &self.reconcile {
            reconcile.running.store(false, Ordering::Relaxed);
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The kind of an address, as the `kind` label says it (never its identity).
fn kind(address: &Address) -> &'static str {
    match address {
        Address::Company(_) => "company",
        Address::ServiceUser(_) => "service_user",
        Address::Token(_) => "token",
    }
}

fn action_label(action: Action) -> &'static str {
    match action {
        Action::Create => "create",
        Action::Update => "update",
        Action::Issue => "issue",
        Action::Deactivate => "deactivate",
        Action::Delete => "delete",
    }
}

impl Measure for Metrics {
    fn requests(&self) -> Option<Arc<dyn RequestObserver>> {
        Some(Arc::new(self.requests.clone()))
    }

    fn planned(&self, plan: &Plan) {
        self.planned_in(None, plan);
    }

    fn stored(&self, stored: &StoredTokens, now: f64, rotate_before: Duration) {
        self.stored_in(None, stored, now, rotate_before);
    }

    fn applied(&self, report: &ApplyReport) {
        self.applied_in(None, report);
    }

    fn planned_in(&self, installation: Option<&str>, plan: &Plan) {
        let summary = plan.summary();
        let counts = [
            (Action::Create, summary.create),
            (Action::Update, summary.update),
            (Action::Issue, summary.issue),
            (Action::Deactivate, summary.deactivate),
            (Action::Delete, summary.delete),
        ];
        for (action, n) in counts {
            self.drift
                .get_or_create(&labels(installation, &[("action", action_label(action))]))
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    fn stored_in(
        &self,
        installation: Option<&str>,
        stored: &StoredTokens,
        now: f64,
        rotate_before: Duration,
    ) {
        for (within, window) in [("rotate_before", rotate_before), ("30d", THIRTY_DAYS)] {
            let n = stored
                .values()
                .filter_map(|token| known_expiry(token.expire_date))
                .filter(|expiry| expiry - now < window.as_secs_f64())
                .count();
            self.tokens_expiring
                .get_or_create(&labels(installation, &[("within", within)]))
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    fn applied_in(&self, installation: Option<&str>, report: &ApplyReport) {
        let step = |address: &Address, result: &'static str| {
            self.steps
                .get_or_create(&labels(installation, &[("kind", kind(address)), ("result", result)]))
                .inc();
        };
        for done in &report.done {
            step(&done.address, "done");
        }
        for failed in &report.failed {
            step(&failed.address, failed.error.kind.as_str());
        }
        for skipped in &report.skipped {
            step(&skipped.address, "skipped");
        }
        for address in &report.not_started {
            step(address, "not_started");
        }
    }

    fn cycle(&self, summary: &CycleSummary) {
        let Some(reconcile) = &self.reconcile else { return };
        // Without a project file the cycle is the one installation's; with one, each
        // installation's part is counted under its name.
        let parts: Vec<(Option<&str>, CycleResult, Duration)> = if summary.installations.is_empty() {
            vec![(None, summary.result, summary.duration)]
        } else {
            summary.installations.iter().map(|p| (Some(p.name.as_str()), p.result, p.duration)).collect()
        };
        for (name, result, duration) in parts {
            reconcile.cycles.get_or_create(&labels(name, &[("result", result.as_str())])).inc();
            reconcile.duration.get_or_create(&labels(name, &[])).observe(duration.as_secs_f64());
            if result == CycleResult::Success {
                reconcile.last_success.get_or_create(&labels(name, &[])).set(summary.ended_at);
            }
        }
        // Ready when the whole cycle succeeded: every installation.
        if summary.result == CycleResult::Success {
            *reconcile.succeeded.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::StoredToken;

    #[test]
    fn tokens_expiring_counts_known_expiries_within_each_window() {
        let metrics = Metrics::new();
        let now = 1_000_000_000.0;
        let day = 86_400.0;
        let token = |days: f64| StoredToken {
            user_id: "u".into(),
            api_url: "a".into(),
            expire_date: now + days * day,
        };
        let stored: StoredTokens = [
            ("a".to_string(), token(-1.0)),
            ("b".to_string(), token(3.0)),
            ("c".to_string(), token(20.0)),
            ("d".to_string(), token(400.0)),
            ("e".to_string(), StoredToken { expire_date: 0.0, ..token(0.0) }),
        ]
        .into();
        metrics.stored(&stored, now, Duration::from_secs(7 * 86_400));
        let text = metrics.encode();
        assert!(text.contains("ozform_tokens_expiring{within=\"rotate_before\"} 2\n"), "{text}");
        assert!(text.contains("ozform_tokens_expiring{within=\"30d\"} 3\n"), "{text}");
    }

    #[test]
    fn the_concurrency_limit_gauge_has_a_sample_only_once_the_client_tells_one() {
        let metrics = Metrics::new();
        assert!(!metrics.encode().contains("ozform_oz_concurrency_limit "), "a fixed parallelism: no sample");
        let observer = metrics.requests().expect("an observer");
        observer.concurrency_limit(4);
        observer.concurrency_limit(9);
        let text = metrics.encode();
        assert!(text.contains("# TYPE ozform_oz_concurrency_limit gauge\n"), "{text}");
        assert!(text.contains("\nozform_oz_concurrency_limit 9\n"), "{text}");
    }

    #[test]
    fn a_one_shot_run_has_no_loop_families_and_is_never_ready() {
        let metrics = Metrics::new();
        assert!(!metrics.encode().contains("ozform_reconcile_"));
        assert!(!metrics.ready() && !metrics.healthy());
        let looping = Metrics::reconcile(Duration::from_secs(60), &[]);
        let text = looping.encode();
        assert!(text.contains("ozform_reconcile_cycles_total{result=\"failure\"} 0\n"), "{text}");
        assert!(!looping.ready() && looping.healthy());
        looping.stopping();
        assert!(!looping.healthy());
    }
}
