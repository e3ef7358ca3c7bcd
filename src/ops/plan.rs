//! `plan`: for each installation, load its manifests, read live state through a read-only
//! client, list the stored tokens, plan, show. The only side effect is `--out` (a file, or a
//! directory of one plan per installation).
//!
//! Installations plan one after another (or overlapping, `--installations-parallelism`); one
//! that fails (invalid manifests, an API down) does not stop the others. With `--out DIR`, an
//! installation that fails leaves no plan of an earlier run behind in `DIR`, so that
//! `apply --plan DIR` never finds a plan older than the run that wrote the directory.

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::Error;
use crate::plan::{Plan, check_removals, format};
use crate::secret::{PasswordSource, process_env};

use super::each::{Each, Order, Views, each};
use super::files;
use super::settings::{InstallationSettings, Out, PlanSettings};
use super::{Access, Measure, Target, View, check_company_filter, load_manifests, plan_options};

/// What `plan` made of one installation: the plan (already shown through its view), and where
/// it was saved.
#[derive(Debug)]
pub struct PlanOutcome {
    pub plan: Plan,
    /// `--out`: the file the plan was saved to.
    pub saved: Option<PathBuf>,
}

/// Plan each installation of the settings; one outcome each, in their order.
/// `measure` is told of every installation's plan (a metrics file sums them).
pub async fn run(
    settings: PlanSettings,
    views: &dyn Views<PlanOutcome>,
    measure: &dyn Measure,
) -> Vec<Each<PlanOutcome>> {
    let installations = settings.installations.refs();
    let order = Order { parallelism: settings.installations.parallelism, stop_after_failure: false };
    each(
        &installations,
        order,
        views,
        None,
        |_| false,
        |index: usize, view: Arc<dyn View>| {
            plan_installation(&settings, &settings.installations.each[index], view, measure)
        },
    )
    .await
}

/// Plan one installation; with `--out DIR`, a failure removes its plan of an earlier run.
async fn plan_installation(
    settings: &PlanSettings,
    installation: &InstallationSettings,
    view: Arc<dyn View>,
    measure: &dyn Measure,
) -> Result<PlanOutcome, Error> {
    let out = settings.out.as_ref().map(|out| out.file_for(installation.name.as_deref(), "json"));
    let planned = plan_one(settings, installation, &*view, measure, out.as_deref()).await;
    if planned.is_err()
        && let (Some(Out::Dir(_)), Some(stale)) = (&settings.out, &out)
    {
        // Best effort: a file that is not there is what is wanted.
        let _ = std::fs::remove_file(stale);
    }
    planned
}

async fn plan_one(
    settings: &PlanSettings,
    installation: &InstallationSettings,
    view: &dyn View,
    measure: &dyn Measure,
    out: Option<&std::path::Path>,
) -> Result<PlanOutcome, Error> {
    let connection = &installation.connection;
    let desired =
        load_manifests(&installation.manifests, &settings.secrets_dirs, &connection.admin_password, view)?;
    check_company_filter(&desired, &settings.companies)?;
    let secrets =
        desired.users.iter().filter_map(|u| u.password.as_ref().and_then(PasswordSource::read_from));
    let target = Target::open(connection, &installation.tokens, Access::ReadOnly, secrets, &process_env)?
        .observed_by(measure.requests());
    let options = plan_options(&desired, &installation.tokens, &settings.companies, &process_env);
    let (mut plan, stored) = target.plan_and_stored(&desired, &options).await?;
    measure.planned(&plan);
    measure.stored(&stored, options.now, installation.tokens.rotate_before);
    plan.installation.clone_from(&installation.name);
    view.plan(&plan);
    // Shown first, so the reviewer sees what would go; refused before it can be saved.
    check_removals(&plan, &settings.removals)?;
    if let Some(path) = out {
        if let Some(dir) = path.parent().filter(|_| matches!(settings.out, Some(Out::Dir(_)))) {
            std::fs::create_dir_all(dir).map_err(|e| Error::Io {
                action: "create",
                path: dir.display().to_string(),
                reason: e.to_string(),
            })?;
        }
        files::write_atomically(path, format::to_json(&plan).as_bytes())?;
        let apply = match &settings.out {
            Some(Out::Dir(dir)) => dir.display().to_string(),
            _ => path.display().to_string(),
        };
        view.status(&format!("saved the plan to `{}`; run `ozform apply --plan {apply}`", path.display()));
    }
    Ok(PlanOutcome { plan, saved: out.map(std::path::Path::to_path_buf) })
}
