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

use tokio::sync::watch;

use crate::apply::{ApplyError, ApplyReport, ExecuteOptions, resolve_passwords};
use crate::error::Error;
use crate::oz::VersionSetting;
use crate::plan::{Plan, check_removals};
use crate::secret::{SecretRoots, process_env};

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
    let parallelism = settings.parallelism.max(1);
    match &settings.source {
        ApplySource::SavedPlan(path) => {
            let mut plan = super::show::read(path)?;
            // Secret files named by the plan are placed under this run's checkout and
            // `--secrets-dir`s, with the confinement the manifests had.
            crate::apply::anchor_secrets(&mut plan, &SecretRoots::for_saved_plan(&settings.secrets_dirs));
            // The figures are the plan's own: the same check `plan` made, before any request.
            check_removals(&plan, &settings.removals)?;
            let mut connection = settings.connection.clone();
            match &connection.api_url {
                Some(url) if url.trim_end_matches('/') != plan.api_url.trim_end_matches('/') => {
                    return Err(Error::Usage {
                        message: format!("the plan was made for `{}`, not `{url}`", plan.api_url),
                        help:
                            "apply a saved plan to the API it was made for (drop `--api-url`), or make a new plan"
                                .into(),
                    });
                }
                Some(_) => {}
                None => connection.api_url = Some(plan.api_url.trim_end_matches('/').to_string()),
            }
            connection.api_version = VersionSetting::Fixed(plan.api_version);
            let passwords = resolve_passwords(&plan, &process_env)?;
            let secrets = plan.changes.iter().filter_map(|c| c.password());
            let target =
                Target::open(&connection, &settings.tokens, Access::ReadWrite, secrets, &process_env)?
                    .observed_by(measure.requests());
            // Held until this function returns, whatever path it takes.
            let _held = lock(&target, &settings, view, cancel.clone()).await?;
            target.check_fresh(&plan, parallelism).await?;
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
            let _held = lock(&target, &settings, view, cancel.clone()).await?;
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

/// Take the token store's lock, saying what recovering a killed run's leftovers did.
async fn lock(
    target: &Target,
    settings: &ApplySettings,
    view: &dyn View,
    cancel: watch::Receiver<bool>,
) -> Result<Held, Error> {
    let held = target.lock(settings.lock_timeout, cancel).await?;
    let recovery = held.recovery;
    if recovery.recovered > 0 || recovery.removed > 0 {
        view.status(&format!(
            "recovered {} token{} a killed run had issued but not yet stored, and removed {} incomplete or superseded temp file{}",
            recovery.recovered,
            if recovery.recovered == 1 { "" } else { "s" },
            recovery.removed,
            if recovery.removed == 1 { "" } else { "s" },
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
