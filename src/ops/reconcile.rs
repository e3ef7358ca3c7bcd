//! `reconcile`: plan and apply in a loop, so that drift made behind ozform's back (a user
//! deactivated by hand, a permission changed in the admin UI, a token deleted or expiring) is
//! repaired without anyone running ozform, in the manner of Flux's and Crossplane's controllers.
//!
//! One target, opened once (one login, one session renewed as it expires). Each cycle:
//! 1. read the manifests again (a git-sync sidecar or a mounted `ConfigMap` updates them);
//! 2. plan through the target (the read-only view of the client) and tell `Measure` the drift
//!    and what the token store holds;
//! 3. hold back the removals unless `--allow-removals`, and then still those the blast-radius
//!    guard refuses: they are shown and counted, never applied;
//! 4. when there is anything left to do: resolve its passwords, take the token store's lock
//!    (held only while applying), apply with approval given beforehand, release the lock.
//!
//! A cycle that fails before applying (invalid manifests, a missing password, the API down, the
//! lock held by another apply) applies nothing; the loop goes on, waiting longer after each
//! consecutive failure (`backoff`). Cycles never overlap: the next starts `--interval` (give
//! or take `--jitter`) after the previous one ended.
//!
//! The loop never prints and never ends the process: each cycle ends with one summary through
//! `View::cycle` (with its error, if any) and `Measure::cycle`. A stop asked for on the cancel
//! channel lets the steps in flight finish and store their tokens, then ends the loop; a stop
//! while planning or waiting ends it at once (nothing was being changed).
//!
//! State kept across cycles is the target, the cycle count and the count of consecutive
//! failures; everything a cycle reads (manifests, plan, passwords, report) is dropped with it,
//! so memory does not grow with the number of cycles (the redaction registry is bounded by
//! itself: see `redact`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::apply::{ApplyReport, ExecuteOptions, resolve_passwords};
use crate::error::Error;
use crate::plan::{Action, Plan, PlanError, Summary, check_removals};
use crate::secret::{SecretRef, process_env};

use super::measure::Measure;
use super::settings::{ReconcileSettings, Schedule};
use super::{Access, Target, View, load_manifests, plan_options};

/// The longest a failing loop waits between cycles, unless `--interval` is longer still.
pub const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);

/// How a cycle ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CycleResult {
    /// Planned, and applied every change it was to apply (possibly none).
    Success,
    /// Applied, but not everything: a step failed or was skipped, a conflict needs a person,
    /// the blast-radius guard refused the removals `--allow-removals` asked for, or a stop
    /// came before every step had started.
    Partial,
    /// Nothing was applied: the manifests, a password, the API or the token store failed.
    Failure,
}

impl CycleResult {
    /// The word for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            CycleResult::Success => "success",
            CycleResult::Partial => "partial",
            CycleResult::Failure => "failure",
        }
    }
}

/// What one cycle did: the one summary event of a cycle. Counts only, no address or value.
#[derive(Debug, Clone, PartialEq)]
pub struct CycleSummary {
    /// 1 for the first cycle of the loop.
    pub cycle: u64,
    pub duration: Duration,
    pub result: CycleResult,
    /// The plan's changes by action (removals held back included).
    pub planned: Summary,
    /// Steps done, by action.
    pub applied: Summary,
    /// Steps failed, by action.
    pub failed: Summary,
    /// Steps skipped (their dependency failed) or not started (a stop), by action.
    pub skipped: Summary,
    /// Removals planned but not applied: no `--allow-removals`, or the guard refused them.
    pub removals_held_back: usize,
    /// Conflicts in the plan (each needs a manual fix).
    pub conflicts: usize,
    /// A stop was asked for during the cycle.
    pub interrupted: bool,
    /// When the cycle ended, Unix epoch seconds.
    pub ended_at: f64,
}

/// What the loop did, when it ended.
#[derive(Debug)]
pub struct ReconcileOutcome {
    pub cycles: u64,
    /// The last cycle's summary.
    pub last: Option<CycleSummary>,
    /// `--once`: the plan of the cycle and the report of its apply, for the exit code.
    pub plan: Option<Plan>,
    pub report: Option<ApplyReport>,
    /// `--once` with `--allow-removals`: why the blast-radius guard held the removals back.
    pub guard: Option<PlanError>,
}

/// Run the loop until the cancel channel says stop (or, `--once`, one cycle). With `--once`, a
/// failed cycle is returned as its error (after its summary went to the view, without it).
pub async fn run(
    settings: ReconcileSettings,
    view: &dyn View,
    measure: &dyn Measure,
    mut cancel: watch::Receiver<bool>,
) -> Result<ReconcileOutcome, Error> {
    let mut reconciler =
        Reconciler { settings: &settings, view, measure, cancel: cancel.clone(), target: None };
    let mut failures: u32 = 0;
    let mut number = 0;
    loop {
        number += 1;
        let cycle = reconciler.cycle(number).await;
        if matches!(cycle.error, Some(Error::Cancelled)) {
            // Stopped while reading or waiting: nothing was changed, nothing to report.
            return if settings.schedule.once {
                Err(Error::Cancelled)
            } else {
                Ok(ReconcileOutcome { cycles: number - 1, last: None, plan: None, report: None, guard: None })
            };
        }
        measure.cycle(&cycle.summary);
        if settings.schedule.once {
            view.cycle(&cycle.summary, None);
            if let Some(error) = cycle.error {
                return Err(error);
            }
            return Ok(ReconcileOutcome {
                cycles: 1,
                last: Some(cycle.summary),
                plan: cycle.plan,
                report: cycle.report,
                guard: cycle.guard,
            });
        }
        view.cycle(&cycle.summary, cycle.error.as_ref());
        failures = if cycle.summary.result == CycleResult::Failure { failures.saturating_add(1) } else { 0 };
        let last = Some(cycle.summary);
        if *cancel.borrow() {
            return Ok(ReconcileOutcome { cycles: number, last, plan: None, report: None, guard: None });
        }
        let pause = pause(&settings.schedule, failures, fastrand::f64());
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = cancel.wait_for(|stop| *stop) => {
                return Ok(ReconcileOutcome { cycles: number, last, plan: None, report: None, guard: None });
            }
        }
    }
}

/// The pause before the next cycle: the interval, doubled for each consecutive failure after the
/// first (up to `MAX_BACKOFF`, or the interval when that is longer), then moved by up to
/// `jitter` of itself: `random` (in 0..1) picks where in that range.
pub fn pause(schedule: &Schedule, failures: u32, random: f64) -> Duration {
    let base = if failures <= 1 {
        schedule.interval
    } else {
        let factor = 1u32 << (failures - 1).min(16);
        schedule.interval.saturating_mul(factor).min(MAX_BACKOFF.max(schedule.interval))
    };
    let jitter = schedule.jitter.clamp(0.0, 1.0);
    base.mul_f64((1.0 + jitter * (2.0 * random.clamp(0.0, 1.0) - 1.0)).max(0.0))
}

/// One cycle's result: its summary, the error that failed it, and for `--once` what the exit
/// code reads.
struct Cycle {
    summary: CycleSummary,
    error: Option<Error>,
    plan: Option<Plan>,
    report: Option<ApplyReport>,
    guard: Option<PlanError>,
}

/// The loop's state across cycles: the settings and ports, and the target once opened, with the
/// secret sources its token store was opened for.
struct Reconciler<'a> {
    settings: &'a ReconcileSettings,
    view: &'a dyn View,
    measure: &'a dyn Measure,
    cancel: watch::Receiver<bool>,
    target: Option<(Target, BTreeSet<SecretRef>)>,
}

/// What a cycle has learned so far, for its summary.
#[derive(Default)]
struct Tally {
    planned: Summary,
    held_back: usize,
    guard: Option<PlanError>,
    conflicts: usize,
    plan: Option<Plan>,
    report: Option<ApplyReport>,
}

impl Reconciler<'_> {
    async fn cycle(&mut self, number: u64) -> Cycle {
        let started = Instant::now();
        let mut tally = Tally::default();
        let error = self.attempt(&mut tally).await.err();
        let report = tally.report.take();
        let mut summary = CycleSummary {
            cycle: number,
            duration: started.elapsed(),
            result: CycleResult::Success,
            planned: tally.planned,
            applied: Summary::default(),
            failed: Summary::default(),
            skipped: Summary::default(),
            removals_held_back: tally.held_back,
            conflicts: tally.conflicts,
            interrupted: *self.cancel.borrow(),
            ended_at: crate::model::now_epoch(),
        };
        if let Some(report) = &report {
            for done in &report.done {
                count(&mut summary.applied, done.action);
            }
            for failed in &report.failed {
                count(&mut summary.failed, failed.action);
            }
            for skipped in &report.skipped {
                count(&mut summary.skipped, skipped.action);
            }
            if let Some(plan) = &tally.plan {
                for address in &report.not_started {
                    if let Some(change) = plan.changes.iter().find(|c| &c.address == address) {
                        count(&mut summary.skipped, change.action());
                    }
                }
            }
        }
        summary.result = if error.is_some() {
            CycleResult::Failure
        } else if report.as_ref().is_some_and(|r| !r.is_success())
            || tally.conflicts > 0
            || tally.guard.is_some()
        {
            CycleResult::Partial
        } else {
            CycleResult::Success
        };
        Cycle { summary, error, plan: tally.plan, report, guard: tally.guard }
    }

    /// Read, plan, and apply what may be applied; `tally` keeps what was learned even when a
    /// later phase fails.
    async fn attempt(&mut self, tally: &mut Tally) -> Result<(), Error> {
        let settings = self.settings;
        let desired = load_manifests(
            &settings.paths,
            &settings.secrets_dirs,
            &settings.connection.admin_password,
            self.view,
        )?;
        let sources: BTreeSet<SecretRef> = desired.users.iter().filter_map(|u| u.password.clone()).collect();
        let target = self.target(&sources)?;
        let options = plan_options(&desired, &settings.tokens, &[], &process_env);
        // A stop while planning loses nothing: end the cycle at once. Once applying, the executor
        // reads the cancel channel itself and finishes its steps in flight.
        let mut cancel = self.cancel.clone();
        let (plan, stored) = tokio::select! {
            planned = target.plan_and_stored(&desired, &options) => planned?,
            _ = cancel.wait_for(|stop| *stop) => return Err(Error::Cancelled),
        };
        self.measure.planned(&plan);
        self.measure.stored(&stored, options.now, settings.tokens.rotate_before);
        tally.planned = plan.summary();
        tally.conflicts = plan.conflicts.len();
        if plan.has_changes() || !plan.conflicts.is_empty() {
            self.view.plan(&plan);
        }
        let (to_apply, held) = self.hold_back_removals(&plan);
        tally.held_back = held.count;
        tally.guard = held.refused;
        if !to_apply.has_changes() {
            tally.plan = Some(plan);
            return Ok(());
        }
        let passwords = resolve_passwords(&to_apply, &process_env)?;
        let held_lock =
            super::apply::lock(&target, settings.lock_timeout, self.view, self.cancel.clone()).await?;
        let mut options = ExecuteOptions::new(passwords);
        options.parallelism = settings.parallelism.steps();
        options.cancel = Some(self.cancel.clone());
        let report = target.apply(&to_apply, &options, self.view.progress(to_apply.changes.len())).await;
        // The lock is held only while applying.
        drop(held_lock);
        let report = report?;
        self.measure.applied(&report);
        if self.measure.is_measuring() && report.done.iter().any(|d| d.action == Action::Issue) {
            // The tokens just stored expire later than those the plan saw; a failing list is
            // no reason to fail a cycle that applied.
            if let Ok(stored) = target.stored().await {
                self.measure.stored(&stored, crate::model::now_epoch(), settings.tokens.rotate_before);
            }
        }
        tally.plan = Some(to_apply);
        tally.report = Some(report);
        Ok(())
    }

    /// The target, opened on the first cycle; its token store opened again when the manifests
    /// name a secret source it was not opened for (a helper must not see those variables).
    fn target(&mut self, sources: &BTreeSet<SecretRef>) -> Result<Target, Error> {
        let settings = self.settings;
        match &self.target {
            Some((target, known)) if sources.is_subset(known) => Ok(target.clone()),
            Some((target, known)) => {
                let all: BTreeSet<SecretRef> = known.union(sources).cloned().collect();
                let target = target.with_store_for(
                    &settings.tokens,
                    &all,
                    &settings.connection.admin_password,
                    &process_env,
                );
                self.target = Some((target.clone(), all));
                Ok(target)
            }
            None => {
                let target = Target::open(
                    &settings.connection,
                    &settings.tokens,
                    Access::ReadWrite,
                    sources,
                    &process_env,
                )?
                .observed_by(self.measure.requests());
                self.target = Some((target.clone(), sources.clone()));
                Ok(target)
            }
        }
    }

    /// The plan to apply: `plan` without its removals unless `--allow-removals` and the
    /// blast-radius guard let them through; what was held back is said through the view.
    fn hold_back_removals(&self, plan: &Plan) -> (Plan, HeldBack) {
        let removals = plan.summary().removals();
        if removals == 0 {
            return (plan.clone(), HeldBack::default());
        }
        let refused = if self.settings.allow_removals {
            match check_removals(plan, &self.settings.removals) {
                Ok(()) => return (plan.clone(), HeldBack::default()),
                Err(e) => Some(e),
            }
        } else {
            None
        };
        let why = match &refused {
            Some(e) => format!("the blast-radius guard refuses them: {e}"),
            None => "pass `--allow-removals` to apply them".into(),
        };
        self.view.warning(&format!(
            "{removals} removal{} held back, not applied: {why}",
            if removals == 1 { "" } else { "s" }
        ));
        let mut kept = plan.clone();
        kept.changes.retain(|c| !c.action().is_removal());
        (kept, HeldBack { count: removals, refused })
    }
}

#[derive(Debug, Default)]
struct HeldBack {
    count: usize,
    /// The guard's refusal, when `--allow-removals` asked for them.
    refused: Option<PlanError>,
}

fn count(summary: &mut Summary, action: Action) {
    match action {
        Action::Create => summary.create += 1,
        Action::Update => summary.update += 1,
        Action::Issue => summary.issue += 1,
        Action::Deactivate => summary.deactivate += 1,
        Action::Delete => summary.delete += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(interval_secs: u64, jitter: f64) -> Schedule {
        Schedule { interval: Duration::from_secs(interval_secs), jitter, once: false }
    }

    #[test]
    fn the_pause_is_the_interval_moved_by_at_most_the_jitter() {
        let s = schedule(100, 0.1);
        assert_eq!(pause(&s, 0, 0.5), Duration::from_secs(100));
        assert_eq!(pause(&s, 0, 0.0), Duration::from_secs(90));
        assert_eq!(pause(&s, 0, 1.0), Duration::from_secs(110));
        assert_eq!(pause(&schedule(100, 0.0), 0, 0.9), Duration::from_secs(100));
    }

    #[test]
    fn consecutive_failures_double_the_pause_up_to_the_longest_backoff() {
        let s = schedule(60, 0.0);
        let pauses: Vec<u64> = (0..8).map(|f| pause(&s, f, 0.5).as_secs()).collect();
        assert_eq!(pauses, [60, 60, 120, 240, 480, 900, 900, 900]);
        // An interval longer than the longest backoff is never shortened.
        assert_eq!(pause(&schedule(3600, 0.0), 5, 0.5), Duration::from_secs(3600));
        assert_eq!(pause(&s, u32::MAX, 0.5), MAX_BACKOFF);
    }
}
