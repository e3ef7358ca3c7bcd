//! `reconcile`: plan and apply in a loop, so that drift made behind ozform's back (a user
//! deactivated by hand, a permission changed in the admin UI, a token deleted or expiring) is
//! repaired without anyone running ozform, in the manner of Flux's and Crossplane's controllers.
//!
//! Without a project file, one installation: the manifests `PATHS` against the connection and
//! token flags. With one (`ozform.yaml`, or `--config`), every installation it names (or those
//! `--installation` selects), each with its own manifests, target, token store and lock. The
//! project file is read once, when the loop starts; each installation's manifests are read again
//! at every cycle.
//!
//! Each installation's target is opened once (one login, one session renewed as it expires) and
//! kept across cycles. Each cycle, for each installation (one after another, or
//! `--installations-parallelism` at once, through `each`):
//! 1. read its manifests again (a git-sync sidecar or a mounted `ConfigMap` updates them);
//! 2. plan through its target (the read-only view of the client) and tell `Measure` the drift
//!    and what its token store holds;
//! 3. hold back the removals unless `--allow-removals`, and then still those the blast-radius
//!    guard refuses: they are shown and counted, never applied;
//! 4. when there is anything left to do: resolve its passwords, take its token store's lock
//!    (held only while applying), apply with approval given beforehand, release the lock.
//!
//! An installation whose part fails before applying (invalid manifests, a missing password, the
//! API down, the lock held by another apply) applies nothing; the other installations' parts
//! go on, and the cycle is a failure (any part failed), a partial (any part partial) or a
//! success. The loop goes on, waiting longer after each consecutive failed cycle (`backoff`).
//! Cycles never overlap: the next starts `--interval` (give or take `--jitter`) after the
//! previous one ended.
//!
//! The loop never prints and never ends the process: each cycle ends with one summary through
//! `View::cycle` (its totals, with one part per installation when there is a project file, and
//! the errors of the parts that failed) and `Measure::cycle`. A stop asked for on the cancel
//! channel lets the steps in flight finish and store their tokens, then ends the loop; a stop
//! while planning or waiting ends it at once (nothing was being changed).
//!
//! State kept across cycles is the targets, the cycle count and the count of consecutive
//! failures; everything a cycle reads (manifests, plans, passwords, reports) is dropped with it,
//! so memory does not grow with the number of cycles (the redaction registry is bounded by
//! itself: see `redact`).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::apply::{ApplyReport, ExecuteOptions, resolve_passwords};
use crate::error::Error;
use crate::plan::{Action, Plan, PlanError, Summary, check_removals};
use crate::secret::{PasswordSource, SecretRef, process_env};

use super::each::{Each, Order, Ran, Views, each};
use super::measure::Measure;
use super::settings::{InstallationSettings, ReconcileSettings, Schedule};
use super::{Access, Target, View, load_manifests, plan_options};

/// The longest a failing loop waits between cycles, unless `--interval` is longer still.
pub const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);

/// How a cycle (or one installation's part of it) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CycleResult {
    /// Planned, and applied every change it was to apply (possibly none).
    Success,
    /// Applied, but not everything: a step failed or was skipped, a conflict needs a person,
    /// the blast-radius guard refused the removals `--allow-removals` asked for, or a stop
    /// came before every step had started.
    Partial,
    /// Nothing was applied: the manifests, a password, the API or the token store failed.
    /// A cycle is a failure when any installation's part is.
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
/// The counts are those of every installation summed; with a project file, `installations`
/// holds each installation's part (empty without one).
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
    /// With a project file: each installation's part, in the file's order.
    pub installations: Vec<InstallationCycle>,
}

/// One installation's part of a cycle (with a project file).
#[derive(Debug, Clone, PartialEq)]
pub struct InstallationCycle {
    /// The project file's name for it (restricted to a safe set of characters: see
    /// `manifest::project`).
    pub name: String,
    pub duration: Duration,
    pub result: CycleResult,
    pub planned: Summary,
    pub applied: Summary,
    pub failed: Summary,
    pub skipped: Summary,
    pub removals_held_back: usize,
    pub conflicts: usize,
}

/// `--once`: what one installation's part of the cycle leaves for the exit code.
#[derive(Debug, Default)]
pub struct Once {
    /// The plan it applied (or, when nothing was to be applied, the plan it made).
    pub plan: Option<Plan>,
    pub report: Option<ApplyReport>,
    /// `--allow-removals`: why the blast-radius guard held the removals back.
    pub guard: Option<PlanError>,
}

/// What the loop did, when it ended.
#[derive(Debug)]
pub struct ReconcileOutcome {
    pub cycles: u64,
    /// The last cycle's summary.
    pub last: Option<CycleSummary>,
    /// `--once`: each installation's part of the cycle (its error when it failed), in order;
    /// empty for a loop.
    pub once: Vec<Each<Once>>,
}

/// One installation's part of a cycle, as it ended (what `Views` are told of).
#[derive(Debug)]
pub struct Part {
    tally: Tally,
    error: Option<Error>,
    duration: Duration,
}

/// Run the loop until the cancel channel says stop (or, `--once`, one cycle). With `--once`,
/// each installation's part is handed back (a failed one as its error) after the cycle's
/// summary went to the view, without the errors.
pub async fn run(
    settings: ReconcileSettings,
    views: &dyn Views<Part>,
    measure: &dyn Measure,
    mut cancel: watch::Receiver<bool>,
) -> Result<ReconcileOutcome, Error> {
    let reconciler = Reconciler {
        settings: &settings,
        measure,
        cancel: cancel.clone(),
        targets: settings.installations.each.iter().map(|_| Mutex::new(None)).collect(),
    };
    let overall = views.overall();
    let mut failures: u32 = 0;
    let mut number = 0;
    loop {
        number += 1;
        let Some(cycle) = reconciler.cycle(number, views).await else {
            // Stopped while reading or waiting: nothing was changed, nothing to report.
            return if settings.schedule.once {
                Err(Error::Cancelled)
            } else {
                Ok(ReconcileOutcome { cycles: number - 1, last: None, once: Vec::new() })
            };
        };
        measure.cycle(&cycle.summary);
        if settings.schedule.once {
            overall.cycle(&cycle.summary, &[]);
            return Ok(ReconcileOutcome { cycles: 1, last: Some(cycle.summary), once: cycle.parts });
        }
        let errors: Vec<(&str, &Error)> = cycle
            .parts
            .iter()
            .filter_map(|part| match &part.ran {
                Ran::Failed(error) if !matches!(error, Error::Cancelled) => {
                    Some((part.name.as_deref().unwrap_or_default(), error))
                }
                _ => None,
            })
            .collect();
        overall.cycle(&cycle.summary, &errors);
        failures = if cycle.summary.result == CycleResult::Failure { failures.saturating_add(1) } else { 0 };
        let last = Some(cycle.summary);
        if *cancel.borrow() {
            return Ok(ReconcileOutcome { cycles: number, last, once: Vec::new() });
        }
        let pause = pause(&settings.schedule, failures, fastrand::f64());
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = cancel.wait_for(|stop| *stop) => {
                return Ok(ReconcileOutcome { cycles: number, last, once: Vec::new() });
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

/// One cycle's result: its summary, and each installation's part (for `--once`'s exit code
/// and the errors said with the summary).
struct Cycle {
    summary: CycleSummary,
    parts: Vec<Each<Once>>,
}

/// An installation's target once opened, with the secret sources its token store was opened for.
type Opened = Option<(Target, BTreeSet<SecretRef>)>;

/// The loop's state across cycles: the settings and ports, and each installation's target once
/// opened (locked only to take or replace it, never across an await).
struct Reconciler<'a> {
    settings: &'a ReconcileSettings,
    measure: &'a dyn Measure,
    cancel: watch::Receiver<bool>,
    targets: Vec<Mutex<Opened>>,
}

/// What an installation's part has learned so far, for its summary.
#[derive(Debug, Default)]
struct Tally {
    planned: Summary,
    held_back: usize,
    guard: Option<PlanError>,
    conflicts: usize,
    plan: Option<Plan>,
    report: Option<ApplyReport>,
}

impl Reconciler<'_> {
    /// One cycle over every installation; `None` when a stop came before any part got past
    /// planning (nothing was changed, nothing to report).
    async fn cycle(&self, number: u64, views: &dyn Views<Part>) -> Option<Cycle> {
        let started = Instant::now();
        let installations = self.settings.installations.refs();
        let order = Order { parallelism: self.settings.installations.parallelism, stop_after_failure: false };
        let ran = each(
            &installations,
            order,
            views,
            Some(&self.cancel),
            |_| false,
            |index: usize, view: Arc<dyn View>| self.part(index, view),
        )
        .await;
        let stopped = ran.iter().all(|each| match &each.ran {
            Ran::Done(part) => matches!(part.error, Some(Error::Cancelled)),
            Ran::NotStarted => true,
            Ran::Failed(_) => false,
        });
        if stopped {
            return None;
        }
        let mut summary = CycleSummary {
            cycle: number,
            duration: Duration::ZERO,
            result: CycleResult::Success,
            planned: Summary::default(),
            applied: Summary::default(),
            failed: Summary::default(),
            skipped: Summary::default(),
            removals_held_back: 0,
            conflicts: 0,
            interrupted: *self.cancel.borrow(),
            ended_at: 0.0,
            installations: Vec::new(),
        };
        let mut parts = Vec::with_capacity(ran.len());
        for each in ran {
            let name = each.name.clone().unwrap_or_default();
            let (part, once) = match each.ran {
                Ran::Done(part) => installation_cycle(name, part),
                // `part` never fails (its error is kept in the part), and an installation is
                // left unstarted only by a stop.
                Ran::Failed(error) => (not_started(name), Ran::Failed(error)),
                Ran::NotStarted => (not_started(name), Ran::NotStarted),
            };
            add(&mut summary.planned, &part.planned);
            add(&mut summary.applied, &part.applied);
            add(&mut summary.failed, &part.failed);
            add(&mut summary.skipped, &part.skipped);
            summary.removals_held_back += part.removals_held_back;
            summary.conflicts += part.conflicts;
            summary.result = summary.result.max(part.result);
            summary.installations.push(part);
            parts.push(Each { name: each.name, api_url: each.api_url, ran: once });
        }
        if !self.settings.installations.project {
            summary.installations.clear();
        }
        summary.duration = started.elapsed();
        summary.ended_at = crate::model::now_epoch();
        Some(Cycle { summary, parts })
    }

    /// One installation's part of a cycle; its error is kept in the part (the others go on).
    async fn part(&self, index: usize, view: Arc<dyn View>) -> Result<Part, Error> {
        let started = Instant::now();
        let mut tally = Tally::default();
        let error = self.attempt(index, &*view, &mut tally).await.err();
        Ok(Part { tally, error, duration: started.elapsed() })
    }

    /// Read, plan, and apply what may be applied; `tally` keeps what was learned even when a
    /// later phase fails.
    async fn attempt(&self, index: usize, view: &dyn View, tally: &mut Tally) -> Result<(), Error> {
        let settings = self.settings;
        let installation = &settings.installations.each[index];
        let name = installation.name.as_deref();
        let desired = load_manifests(
            &installation.manifests,
            &settings.secrets_dirs,
            &installation.connection.admin_password,
            view,
        )?;
        let sources: BTreeSet<SecretRef> = desired
            .users
            .iter()
            .filter_map(|u| u.password.as_ref().and_then(PasswordSource::read_from).cloned())
            .collect();
        let target = self.target(index, installation, &sources)?;
        let options = plan_options(&desired, &installation.tokens, &[], &process_env);
        // A stop while planning loses nothing: end the part at once. Once applying, the executor
        // reads the cancel channel itself and finishes its steps in flight.
        let mut cancel = self.cancel.clone();
        let (plan, stored) = tokio::select! {
            planned = target.plan_and_stored(&desired, &options) => planned?,
            _ = cancel.wait_for(|stop| *stop) => return Err(Error::Cancelled),
        };
        self.measure.planned_in(name, &plan);
        self.measure.stored_in(name, &stored, options.now, installation.tokens.rotate_before);
        tally.planned = plan.summary();
        tally.conflicts = plan.conflicts.len();
        if plan.has_changes() || !plan.conflicts.is_empty() {
            view.plan(&plan);
        }
        let (to_apply, held) = self.hold_back_removals(&plan, view);
        tally.held_back = held.count;
        tally.guard = held.refused;
        if !to_apply.has_changes() {
            tally.plan = Some(plan);
            return Ok(());
        }
        let passwords = resolve_passwords(&to_apply, &process_env)?;
        let held_lock = super::apply::lock(&target, settings.lock_timeout, view, self.cancel.clone()).await?;
        let mut options = ExecuteOptions::new(passwords);
        options.parallelism = settings.parallelism.steps();
        options.cancel = Some(self.cancel.clone());
        let report = target.apply(&to_apply, &options, view.progress(to_apply.changes.len())).await;
        // The lock is held only while applying.
        drop(held_lock);
        let report = report?;
        self.measure.applied_in(name, &report);
        if self.measure.is_measuring() && report.done.iter().any(|d| d.action == Action::Issue) {
            // The tokens just stored expire later than those the plan saw; a failing list is
            // no reason to fail a cycle that applied.
            if let Ok(stored) = target.stored().await {
                self.measure.stored_in(
                    name,
                    &stored,
                    crate::model::now_epoch(),
                    installation.tokens.rotate_before,
                );
            }
        }
        tally.plan = Some(to_apply);
        tally.report = Some(report);
        Ok(())
    }

    /// The installation's target, opened on its first cycle; its token store opened again when
    /// the manifests name a secret source it was not opened for (a helper must not see those
    /// variables).
    fn target(
        &self,
        index: usize,
        installation: &InstallationSettings,
        sources: &BTreeSet<SecretRef>,
    ) -> Result<Target, Error> {
        let mut opened = self.targets[index].lock().unwrap_or_else(PoisonError::into_inner);
        match &*opened {
            Some((target, known)) if sources.is_subset(known) => Ok(target.clone()),
            Some((target, known)) => {
                let all: BTreeSet<SecretRef> = known.union(sources).cloned().collect();
                let target = target.with_store_for(
                    &installation.tokens,
                    &all,
                    &installation.connection.admin_password,
                    &process_env,
                );
                *opened = Some((target.clone(), all));
                Ok(target)
            }
            None => {
                let target = Target::open(
                    &installation.connection,
                    &installation.tokens,
                    Access::ReadWrite,
                    sources,
                    &process_env,
                )?
                .observed_by(self.measure.requests());
                *opened = Some((target.clone(), sources.clone()));
                Ok(target)
            }
        }
    }

    /// The plan to apply: `plan` without its removals unless `--allow-removals` and the
    /// blast-radius guard let them through; what was held back is said through the view.
    fn hold_back_removals(&self, plan: &Plan, view: &dyn View) -> (Plan, HeldBack) {
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
        view.warning(&format!(
            "{removals} removal{} held back, not applied: {why}",
            if removals == 1 { "" } else { "s" }
        ));
        let mut kept = plan.clone();
        kept.changes.retain(|c| !c.action().is_removal());
        (kept, HeldBack { count: removals, refused })
    }
}

/// An installation's part as its summary, and what `--once` reads of it.
fn installation_cycle(name: String, part: Part) -> (InstallationCycle, Ran<Once>) {
    let Part { mut tally, error, duration } = part;
    let report = tally.report.take();
    let mut cycle = InstallationCycle {
        name,
        duration,
        result: CycleResult::Success,
        planned: tally.planned,
        applied: Summary::default(),
        failed: Summary::default(),
        skipped: Summary::default(),
        removals_held_back: tally.held_back,
        conflicts: tally.conflicts,
    };
    if let Some(report) = &report {
        for done in &report.done {
            count(&mut cycle.applied, done.action);
        }
        for failed in &report.failed {
            count(&mut cycle.failed, failed.action);
        }
        for skipped in &report.skipped {
            count(&mut cycle.skipped, skipped.action);
        }
        if let Some(plan) = &tally.plan {
            for address in &report.not_started {
                if let Some(change) = plan.changes.iter().find(|c| &c.address == address) {
                    count(&mut cycle.skipped, change.action());
                }
            }
        }
    }
    cycle.result = if error.is_some() {
        CycleResult::Failure
    } else if report.as_ref().is_some_and(|r| !r.is_success()) || tally.conflicts > 0 || tally.guard.is_some()
    {
        CycleResult::Partial
    } else {
        CycleResult::Success
    };
    let once = match error {
        Some(error) => Ran::Failed(error),
        None => Ran::Done(Once { plan: tally.plan, report, guard: tally.guard }),
    };
    (cycle, once)
}

/// The part of an installation a stop left unstarted: nothing planned, nothing applied.
fn not_started(name: String) -> InstallationCycle {
    InstallationCycle {
        name,
        duration: Duration::ZERO,
        result: CycleResult::Failure,
        planned: Summary::default(),
        applied: Summary::default(),
        failed: Summary::default(),
        skipped: Summary::default(),
        removals_held_back: 0,
        conflicts: 0,
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

fn add(sum: &mut Summary, part: &Summary) {
    sum.create += part.create;
    sum.update += part.update;
    sum.issue += part.issue;
    sum.deactivate += part.deactivate;
    sum.delete += part.delete;
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
