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
//! id it carries is not the live object's at its address (`apply::check_fresh`). With a
//! project file, a saved plan names its installation (`installation`): it is applied there,
//! with that installation's credentials, and only if its `api_url` is that installation's. A
//! directory of plans (`plan --out DIR`) is read whole before any installation is touched.
//!
//! Several installations are applied one after another (or overlapping, with
//! `--installations-parallelism`), each with its own lock and target; the run stops at the
//! first that fails (a step failed, conflicts, an error) unless `--keep-going`, and a stop
//! asked for on the cancel channel starts no further installation.
//!
//! With `--id-map FILE` (`id_map`, one installation), the map of old ids to new is written once
//! the plan is approved (what was live already) and again after each object made; a saved plan
//! carries the `source_id` of each object it creates (`Plan::source_ids`), and its map holds
//! only what it made.

use std::path::Path;
use std::sync::{Arc, Mutex};

use std::time::Duration;

use tokio::sync::watch;

use crate::apply::{ApplyError, ApplyReport, ExecuteOptions, resolve_passwords};
use crate::error::Error;
use crate::escape::quote;
use crate::oz::VersionSetting;
use crate::plan::{Plan, check_removals};
use crate::secret::{PasswordSource, SecretRoots, process_env};
use crate::words::count;

use super::each::{Each, Order, Views, each};
use super::id_map::IdMap;
use super::settings::{ApplySettings, ApplySource, InstallationSettings, Installations, StoreSpec, Tokens};
use super::{
    Access, Approval, Approve, Held, Measure, Target, View, check_company_filter, load_manifests,
    plan_options,
};

/// What `apply` did to one installation: the plan it carried out (shown through the view
/// before approval), and the executor's report, or `None` when the plan had no changes and
/// nothing was executed.
#[derive(Debug)]
pub struct ApplyOutcome {
    pub plan: Plan,
    pub report: Option<ApplyReport>,
    /// Where issued tokens are kept: `dir:PATH` (the installation's directory) or
    /// `exec:COMMAND … (installation NAME)`, for the summary.
    pub tokens_stored_in: String,
    /// `--id-map`: the file and how many objects it maps, once written.
    pub id_map: Option<(std::path::PathBuf, usize)>,
}

impl ApplyOutcome {
    /// Whether the apply did less than the manifests ask: a step failed, was skipped or not
    /// started, or conflicts were left for a person to fix.
    pub fn failed(&self) -> bool {
        self.report.as_ref().is_some_and(|r| !r.is_success()) || !self.plan.conflicts.is_empty()
    }
}

/// Apply to each installation of the settings, one after another (or overlapping, with
/// `--installations-parallelism`), stopping at the first that fails unless `--keep-going`.
/// `Err` only for what stops the run before any installation: a saved plan that cannot be
/// read, or that names no installation of the run.
pub async fn run(
    settings: ApplySettings,
    views: &dyn Views<ApplyOutcome>,
    approve: &dyn Approve,
    measure: &dyn Measure,
    cancel: watch::Receiver<bool>,
) -> Result<Vec<Each<ApplyOutcome>>, Error> {
    let order =
        Order { parallelism: settings.installations.parallelism, stop_after_failure: !settings.keep_going };
    match &settings.source {
        ApplySource::Manifests { companies } => {
            let installations = settings.installations.refs();
            Ok(each(
                &installations,
                order,
                views,
                Some(&cancel),
                ApplyOutcome::failed,
                |index: usize, view: Arc<dyn View>| {
                    let installation = &settings.installations.each[index];
                    apply_manifests(
                        &settings,
                        installation,
                        companies,
                        view,
                        approve,
                        measure,
                        cancel.clone(),
                    )
                },
            )
            .await)
        }
        ApplySource::SavedPlan(path) => {
            let plans = saved_plans(path, &settings.installations, &*views.overall())?;
            let installations: Vec<&InstallationSettings> =
                plans.iter().map(|(index, _)| &settings.installations.each[*index]).collect();
            let plans: Vec<Mutex<Option<Plan>>> =
                plans.into_iter().map(|(_, plan)| Mutex::new(Some(plan))).collect();
            Ok(each(
                &installations,
                order,
                views,
                Some(&cancel),
                ApplyOutcome::failed,
                |index: usize, view: Arc<dyn View>| {
                    // Each plan is taken once: `each` runs each index once.
                    let plan = plans[index].lock().ok().and_then(|mut plan| plan.take());
                    apply_saved(&settings, installations[index], plan, view, measure, cancel.clone())
                },
            )
            .await)
        }
    }
}

/// The saved plans of `path`, each with the index of the installation of the run it goes to,
/// their secret files placed under this run's checkout and `--secrets-dir`s. Without a project
/// file: the one plan of a file, for the one installation. With one: a file, or each
/// `<installation>.json` of a directory, each naming an installation of the run (`installation`)
/// whose name is its file's.
fn saved_plans(
    path: &Path,
    installations: &Installations,
    view: &dyn View,
) -> Result<Vec<(usize, Plan)>, Error> {
    if !installations.project {
        if path.is_dir() {
            return Err(Error::Usage {
                message: format!("`{}` is a directory: a directory of saved plans needs a project file", path.display()),
                help: "give the plan's file (`--plan FILE`), or run where the project file `ozform.yaml` is (or \
                       with `--config PATH`)"
                    .into(),
            });
        }
        return Ok(vec![(0, super::show::read(path)?)]);
    }
    let named = |plan: Plan, file: &Path| -> Result<(usize, Plan), Error> {
        let Some(name) = plan.installation.clone() else {
            return Err(Error::Usage {
                message: format!("the saved plan `{}` names no installation", file.display()),
                help: "with a project file, apply plans it made: `ozform plan --out FILE` (or `--out DIR`) names \
                       each plan's installation"
                    .into(),
            });
        };
        match installations.each.iter().position(|i| i.name.as_deref() == Some(name.as_str())) {
            Some(index) => Ok((index, plan)),
            None => Err(Error::Usage {
                message: format!(
                    "the saved plan `{}` is for installation {}, which this run does not act on",
                    file.display(),
                    quote(&name)
                ),
                help: "name it with `--installation`, or check the plan was made with this project file"
                    .into(),
            }),
        }
    };
    if !path.is_dir() {
        return Ok(vec![named(super::show::read(path)?, path)?]);
    }
    let mut plans: Vec<(usize, Plan)> = Vec::new();
    for file in super::show::plan_files(path)? {
        let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        if !installations.each.iter().any(|i| i.name.as_deref() == Some(stem.as_str())) {
            view.warning(&format!(
                "`{}` is not the plan of an installation this run acts on: not applied",
                file.display()
            ));
            continue;
        }
        let (index, plan) = named(super::show::read(&file)?, &file)?;
        if plan.installation.as_deref() != Some(stem.as_str()) {
            return Err(Error::Usage {
                message: format!(
                    "the saved plan `{}` is for installation {}, not `{stem}` as its name says",
                    file.display(),
                    quote(plan.installation.as_deref().unwrap_or_default())
                ),
                help: "save plans with `ozform plan --out DIR`, which names each `<installation>.json`"
                    .into(),
            });
        }
        plans.push((index, plan));
    }
    for (index, installation) in installations.each.iter().enumerate() {
        if !plans.iter().any(|(i, _)| *i == index) {
            view.status(&format!(
                "no saved plan of installation `{}` in `{}`: not applied",
                installation.name.as_deref().unwrap_or_default(),
                path.display()
            ));
        }
    }
    if plans.is_empty() {
        return Err(Error::Usage {
            message: format!("`{}` holds no saved plan of an installation this run acts on", path.display()),
            help: "save plans there with `ozform plan --out DIR` first".into(),
        });
    }
    plans.sort_by_key(|(index, _)| *index);
    Ok(plans)
}

/// Execute one saved plan on its installation.
async fn apply_saved(
    settings: &ApplySettings,
    installation: &InstallationSettings,
    plan: Option<Plan>,
    view: Arc<dyn View>,
    measure: &dyn Measure,
    cancel: watch::Receiver<bool>,
) -> Result<ApplyOutcome, Error> {
    let view = &*view;
    let parallelism = settings.parallelism.steps();
    let Some(mut plan) = plan else {
        return Err(Error::Io {
            action: "apply",
            path: "a saved plan".into(),
            reason: "it was taken twice (a bug)".into(),
        });
    };
    // Secret files named by the plan are placed under this run's checkout and
    // `--secrets-dir`s, with the confinement the manifests had.
    crate::apply::anchor_secrets(&mut plan, &SecretRoots::for_saved_plan(&settings.secrets_dirs));
    // The figures are the plan's own: the same check `plan` made, before any request.
    check_removals(&plan, &settings.removals)?;
    // Credentials go only to the API configured for the run (the command line, or the
    // project file's installation): the plan names its API, it does not choose it.
    let mut connection = installation.connection.clone();
    match &connection.api_url {
        Some(url) if url.trim_end_matches('/') != plan.api_url.trim_end_matches('/') => {
            return Err(Error::Usage {
                message: format!("the plan was made for {}, not {}", quote(&plan.api_url), quote(url)),
                help:
                    "apply a saved plan to the API it was made for (`--api-url`/`OZ_API_URL`, or the project \
                       file's `api_url`), or make a new plan"
                        .into(),
            });
        }
        Some(_) => {}
        None => return Err(no_url_for_saved_plan()),
    }
    connection.api_version = VersionSetting::Fixed(plan.api_version);
    let passwords = resolve_passwords(&plan, &process_env)?;
    let secrets = plan.changes.iter().filter_map(|c| c.password().and_then(PasswordSource::read_from));
    let target = Target::open(&connection, &installation.tokens, Access::ReadWrite, secrets, &process_env)?
        .observed_by(measure.requests());
    // Held until this function returns, whatever path it takes.
    let _held = lock(&target, settings.lock_timeout, view, cancel.clone()).await?;
    target.check_fresh(&plan, parallelism).await?;
    // The warnings that hold now: every password resolved above, none of plan time's
    // "is not set now" does.
    plan.warnings = crate::plan::warnings_now(&plan, |source| source.is_available(&process_env));
    measure.planned(&plan);
    view.plan(&plan);
    let tokens_stored_in = stored_in(&installation.tokens, target.installation());
    let map = settings.id_map.as_deref().map(|path| Arc::new(IdMap::for_saved_plan(path, &plan)));
    let report = execute(&target, &plan, passwords, parallelism, view, cancel, map.as_ref()).await?;
    measured(&target, &report, installation, measure).await;
    let id_map = finish_map(map.as_deref(), view);
    Ok(ApplyOutcome { plan, report: Some(report), tokens_stored_in, id_map })
}

/// Plan one installation's manifests, show, approve, execute.
async fn apply_manifests(
    settings: &ApplySettings,
    installation: &InstallationSettings,
    companies: &[String],
    view: Arc<dyn View>,
    approve: &dyn Approve,
    measure: &dyn Measure,
    cancel: watch::Receiver<bool>,
) -> Result<ApplyOutcome, Error> {
    let view = &*view;
    let parallelism = settings.parallelism.steps();
    let connection = &installation.connection;
    let desired =
        load_manifests(&installation.manifests, &settings.secrets_dirs, &connection.admin_password, view)?;
    check_company_filter(&desired, companies)?;
    let secrets =
        desired.users.iter().filter_map(|u| u.password.as_ref().and_then(PasswordSource::read_from));
    let target = Target::open(connection, &installation.tokens, Access::ReadWrite, secrets, &process_env)?
        .observed_by(measure.requests());
    let _held = lock(&target, settings.lock_timeout, view, cancel.clone()).await?;
    let options = plan_options(&desired, &installation.tokens, companies, &process_env);
    let (mut plan, observed, stored) = target.plan_with_inputs(&desired, &options).await?;
    plan.installation.clone_from(&installation.name);
    measure.planned(&plan);
    measure.stored(&stored, options.now, installation.tokens.rotate_before);
    view.plan(&plan);
    let tokens_stored_in = stored_in(&installation.tokens, target.installation());
    // What was live already is adopted: the map holds it from the start.
    let map = settings.id_map.as_deref().map(|path| {
        let map = IdMap::new(path, &desired);
        map.adopt_live(&desired, &observed, companies);
        Arc::new(map)
    });
    drop(observed);
    if !plan.has_changes() {
        if let Some(map) = &map {
            map.write()?;
        }
        let id_map = map.as_deref().map(|m| (m.path().to_path_buf(), m.len()));
        return Ok(ApplyOutcome { plan, report: None, tokens_stored_in, id_map });
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
    let report = execute(&target, &plan, passwords, parallelism, view, cancel, map.as_ref()).await?;
    measured(&target, &report, installation, measure).await;
    let id_map = finish_map(map.as_deref(), view);
    Ok(ApplyOutcome { plan, report: Some(report), tokens_stored_in, id_map })
}

/// Where the token store keeps this installation's tokens, as the summary names it: the
/// directory of the installation (`dir:ozform-tokens/eu-prod`), or the helper and the
/// installation it keeps them under.
fn stored_in(tokens: &Tokens, installation: &crate::token_store::Installation) -> String {
    match &tokens.store {
        StoreSpec::Dir(root) => {
            let dir = root.join(crate::token_store::naming::encode(installation.name()));
            // `./ozform-tokens` (the default) is named as a user writes it: `ozform-tokens`.
            format!("dir:{}", dir.strip_prefix(".").unwrap_or(&dir).display())
        }
        StoreSpec::Exec(argv) => {
            let command = shlex::try_join(argv.iter().map(String::as_str)).unwrap_or_else(|_| argv.join(" "));
            format!("exec:{command} (installation `{installation}`)")
        }
    }
}

/// The id map after the run: written once more (a write that failed during the run may work
/// now), or a warning that says what the file holds.
fn finish_map(map: Option<&IdMap>, view: &dyn View) -> Option<(std::path::PathBuf, usize)> {
    let map = map?;
    match map.write() {
        Ok(()) => Some((map.path().to_path_buf(), map.len())),
        Err(e) => {
            let earlier =
                map.failure().map(|f| format!(" (first failure during the run: {f})")).unwrap_or_default();
            view.warning(&format!(
                "the id map {} could not be written: {e}{earlier}; it holds what was done up to its last \
                 good write. Run `ozform apply --id-map FILE` again with the same manifests: it maps \
                 everything live, made by this run or not",
                quote(&map.path().display().to_string())
            ));
            None
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
async fn measured(
    target: &Target,
    report: &ApplyReport,
    installation: &InstallationSettings,
    measure: &dyn Measure,
) {
    measure.applied(report);
    let issued = report.done.iter().any(|d| d.action == crate::plan::Action::Issue);
    if issued
        && measure.is_measuring()
        && let Ok(stored) = target.stored().await
    {
        measure.stored(&stored, crate::model::now_epoch(), installation.tokens.rotate_before);
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
    map: Option<&Arc<IdMap>>,
) -> Result<ApplyReport, Error> {
    let mut options = ExecuteOptions::new(passwords);
    options.parallelism = parallelism;
    options.cancel = Some(cancel);
    let mut progress = view.progress(plan.changes.len());
    if let Some(map) = map {
        // Before the first change: an unwritable path stops the run while nothing is done.
        map.write()?;
        progress = map.recording(progress);
    }
    target.apply(plan, &options, progress).await
}
