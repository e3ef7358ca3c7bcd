//! `apply`: plan (or read a saved plan), show, approve, then execute in dependency order,
//! keeping issued tokens in the token store.
//!
//! Order of phases, each before the next can change anything: load the manifests (or read the
//! saved plan and its guard); open the target (token store and login) and take the token
//! store's lock; plan through a read-only view of the client (or check the saved plan is
//! fresh); resolve every password a create needs; approve (`Approve`); check the token store
//! when tokens are to be issued; execute. A missing password, a stale plan or a token store
//! that cannot keep a token stops before the first mutating request. A stop asked for on the
//! cancel channel lets the steps in flight finish and store their tokens; the report says what
//! was not started.
//!
//! A saved plan is untrusted: it is applied only to the API configured for the run (a plan
//! naming another, or a run naming none, is refused before any connection, so the admin
//! credentials never go where a plan file says), and the fresh check refuses it whole when an
//! id it carries is not the live object's at its address (`apply::check_fresh`).

use std::time::Duration;

use tokio::sync::watch;

use crate::apply::{ApplyError, ApplyReport, ExecuteOptions, resolve_passwords};
use crate::error::Error;
use crate::escape::quote;
use crate::oz::VersionSetting;
use crate::plan::{Plan, check_removals};
use crate::secret::{SecretRoots, process_env};
use crate::words::count;

use super::settings::{ApplySettings, ApplySource};
use super::{
    Access, Approval, Approve, Held, Measure, Target, View, check_company_filter, load_manifests,
    plan_options,
};

/// What `apply` did: the plan it carried out (shown through the view before approval), and the
/// executor's report, or `None` when the plan had no changes and nothing was executed.
#[derive(Debug)]
pub struct ApplyOutcome {
    pub plan: Plan,
    pub report: Option<ApplyReport>,
}

pub async fn run(
    settings: ApplySettings,
    view: &dyn View,
    approve: &dyn Approve,
    measure: &dyn Measure,
    cancel: watch::Receiver<bool>,
) -> Result<ApplyOutcome, Error> {
    let parallelism = settings.parallelism.steps();
    match &settings.source {
        ApplySource::SavedPlan(path) => {
            let mut plan = super::show::read(path)?;
            // Secret files named by the plan are placed under this run's checkout and
            // `--secrets-dir`s, with the confinement the manifests had.
            crate::apply::anchor_secrets(&mut plan, &SecretRoots::for_saved_plan(&settings.secrets_dirs));
            // The figures are the plan's own: the same check `plan` made, before any request.
            check_removals(&plan, &settings.removals)?;
            // Credentials go only to the API configured for the run: the plan names its API,
            // it does not choose it.
            let mut connection = settings.connection.clone();
            match &connection.api_url {
                Some(url) if url.trim_end_matches('/') != plan.api_url.trim_end_matches('/') => {
                    return Err(Error::Usage {
                        message: format!(
                            "the plan was made for {}, not {}",
                            quote(&plan.api_url),
                            quote(url)
                        ),
                        help: "apply a saved plan to the API it was made for (`--api-url`/`OZ_API_URL`), or make a new plan"
                            .into(),
                    });
                }
                Some(_) => {}
                None => return Err(no_url_for_saved_plan()),
            }
            connection.api_version = VersionSetting::Fixed(plan.api_version);
            let passwords = resolve_passwords(&plan, &process_env)?;
            let secrets = plan.changes.iter().filter_map(|c| c.password());
            let target =
                Target::open(&connection, &settings.tokens, Access::ReadWrite, secrets, &process_env)?
                    .observed_by(measure.requests());
            // Held until this function returns, whatever path it takes.
            let _held = lock(&target, settings.lock_timeout, view, cancel.clone()).await?;
            target.check_fresh(&plan, parallelism).await?;
            // The warnings that hold now: every password resolved above, none of plan time's
            // "is not set now" does.
            plan.warnings = crate::plan::warnings_now(&plan, |source| source.is_available(&process_env));
            measure.planned(&plan);
            view.plan(&plan);
            let report = execute(&target, &plan, passwords, parallelism, view, cancel).await?;
            measured(&target, &report, &settings, measure).await;
            Ok(ApplyOutcome { plan, report: Some(report) })
        }
        ApplySource::Manifests { paths, companies } => {
            let desired = load_manifests(paths, &settings.secrets_dirs, view)?;
            check_company_filter(&desired, companies)?;
            let secrets = desired.users.iter().filter_map(|u| u.password.as_ref());
            let target = Target::open(
                &settings.connection,
                &settings.tokens,
                Access::ReadWrite,
                secrets,
                &process_env,
            )?
            .observed_by(measure.requests());
            let _held = lock(&target, settings.lock_timeout, view, cancel.clone()).await?;
            let options = plan_options(&desired, &settings.tokens, companies, &process_env);
            let (plan, stored) = target.plan_and_stored(&desired, &options).await?;
            measure.planned(&plan);
            measure.stored(&stored, options.now, settings.tokens.rotate_before);
            view.plan(&plan);
            if !plan.has_changes() {
                return Ok(ApplyOutcome { plan, report: None });
            }
            check_removals(&plan, &settings.removals)?;
            // Before asking: a missing password would stop the apply anyway, so say it now.
            let passwords = resolve_passwords(&plan, &process_env)?;
            match approve.approve(&plan) {
                Approval::Approved => {}
                Approval::Declined => return Err(ApplyError::NotApproved.into()),
                Approval::CannotAsk => {
                    return Err(Error::Usage {
                        message: "apply needs approval, and there is no terminal to ask on".into(),
                        help: "review the plan above and pass `--auto-approve`, or apply a reviewed plan with `--plan FILE`"
                            .into(),
                    });
                }
            }
            let report = execute(&target, &plan, passwords, parallelism, view, cancel).await?;
            measured(&target, &report, &settings, measure).await;
            Ok(ApplyOutcome { plan, report: Some(report) })
        }
    }
}

/// `apply --plan` without `--api-url`/`OZ_API_URL` (a usage error): the saved plan's `api_url`
/// is never taken, or an edited plan would send the admin email and password wherever it names.
pub fn no_url_for_saved_plan() -> Error {
    Error::Usage {
        message: "no Oz API URL given: `apply --plan` sends the admin credentials only to the API \
                  configured for the run, never to the one a plan file names"
            .into(),
        help: "pass `--api-url https://…` or set `OZ_API_URL` to the API the plan was made for \
               (its `api_url`: `ozform show PLAN` names it)"
            .into(),
    }
}

/// Tell `measure` the apply's steps, and what the token store holds once the tokens it issued
/// are stored (read only for metrics; a failing read is no reason to fail an apply that is done).
async fn measured(target: &Target, report: &ApplyReport, settings: &ApplySettings, measure: &dyn Measure) {
    measure.applied(report);
    let issued = report.done.iter().any(|d| d.action == crate::plan::Action::Issue);
    if issued
        && measure.is_measuring()
        && let Ok(stored) = target.stored().await
    {
        measure.stored(&stored, crate::model::now_epoch(), settings.tokens.rotate_before);
    }
}

/// Take the token store's lock (waiting up to `wait`), saying what recovering a killed run's
/// leftovers did. Shared by `apply` and each applying cycle of `reconcile`.
pub(super) async fn lock(
    target: &Target,
    wait: Duration,
    view: &dyn View,
    cancel: watch::Receiver<bool>,
) -> Result<Held, Error> {
    let held = target.lock(wait, cancel).await?;
    let recovery = held.recovery;
    if recovery.recovered > 0 || recovery.removed > 0 {
        view.status(&format!(
            "recovered {} a killed run had issued but not yet stored, and removed {}",
            count(recovery.recovered, "token", "tokens"),
            count(
                recovery.removed,
                "incomplete or superseded temp file",
                "incomplete or superseded temp files"
            ),
        ));
    }
    // Said once: what was moved is not found in the old layout again.
    if recovery.migrated > 0 {
        view.status(&format!(
            "moved {} of this API, stored before tokens were kept per installation, under installation `{}`",
            count(recovery.migrated, "token", "tokens"),
            target.installation(),
        ));
    }
    Ok(held)
}

/// Run `plan` through the executor, with progress through the view.
async fn execute(
    target: &Target,
    plan: &Plan,
    passwords: crate::apply::Passwords,
    parallelism: usize,
    view: &dyn View,
    cancel: watch::Receiver<bool>,
) -> Result<ApplyReport, Error> {
    let mut options = ExecuteOptions::new(passwords);
    options.parallelism = parallelism;
    options.cancel = Some(cancel);
    target.apply(plan, &options, view.progress(plan.changes.len())).await
}
