//! `plan`: load the manifests, read live state through a read-only client, list the stored
//! tokens, plan, show. The only side effect is `--out FILE`.

use std::path::PathBuf;

use crate::error::Error;
use crate::plan::{Plan, check_removals, format};
use crate::secret::process_env;

use super::files;
use super::settings::PlanSettings;
use super::{Access, Measure, Target, View, check_company_filter, load_manifests, plan_options};

/// What `plan` made: the plan (already shown through the view), and where it was saved.
#[derive(Debug)]
pub struct PlanOutcome {
    pub plan: Plan,
    /// `--out`: the file the plan was saved to.
    pub saved: Option<PathBuf>,
}

pub async fn run(
    settings: PlanSettings,
    view: &dyn View,
    measure: &dyn Measure,
) -> Result<PlanOutcome, Error> {
    let desired = load_manifests(&settings.paths, &settings.secrets_dirs, view)?;
    check_company_filter(&desired, &settings.companies)?;
    let secrets = desired.users.iter().filter_map(|u| u.password.as_ref());
    let target =
        Target::open(&settings.connection, &settings.tokens, Access::ReadOnly, secrets, &process_env)?
            .observed_by(measure.requests());
    let options = plan_options(&desired, &settings.tokens, &settings.companies, &process_env);
    let (plan, stored) = target.plan_and_stored(&desired, &options).await?;
    measure.planned(&plan);
    measure.stored(&stored, options.now, settings.tokens.rotate_before);
    view.plan(&plan);
    // Shown first, so the reviewer sees what would go; refused before it can be saved.
    check_removals(&plan, &settings.removals)?;
    if let Some(path) = &settings.out {
        files::write_atomically(path, format::to_json(&plan).as_bytes())?;
        view.status(&format!(
            "saved the plan to `{}`; run `ozform apply --plan {}`",
            path.display(),
            path.display()
        ));
    }
    Ok(PlanOutcome { plan, saved: settings.out })
}
