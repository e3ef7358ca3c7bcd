//! `plan`: load the manifests, read live state through a read-only client, list the stored
//! tokens, plan, render. The only side effect is `--out FILE`.

use crate::error::{Error, Exit};
use crate::output::Output;
use crate::plan::{check_removals, format};
use crate::render;
use crate::secret::process_env;

use super::settings::{PlanFormat, PlanSettings};
use super::{
    check_company_filter, connect, files, load_manifests, make_plan, open_store, plan_exit, plan_options,
    required_url,
};

pub async fn run(settings: PlanSettings, output: &Output) -> Result<Exit, Error> {
    let desired = load_manifests(&settings.paths, output)?;
    check_company_filter(&desired, &settings.companies)?;
    let url = required_url(&settings.connection)?;
    let client = connect(&settings.connection, url, true, &process_env).await?;
    let sources = desired.users.iter().filter_map(|u| u.password.as_ref());
    let store =
        open_store(&settings.tokens, url, sources.chain([&settings.connection.admin_password]), &process_env);
    let options = plan_options(&desired, &settings.tokens, &settings.companies, &process_env);
    let plan = make_plan(&client, &desired, store.as_ref(), &options).await?;
    output.print(&match settings.format {
        PlanFormat::Text => render::text(&plan, &render::Style { color: output.color }),
        PlanFormat::Json => format::to_json(&plan),
        PlanFormat::Markdown => render::markdown(&plan),
    });
    // Shown first, so the reviewer sees what would go; refused before it can be saved.
    check_removals(&plan, &settings.removals)?;
    if let Some(path) = &settings.out {
        files::write_atomically(path, format::to_json(&plan).as_bytes())?;
        output.status(&format!(
            "saved the plan to `{}`; run `ozform apply --plan {}`",
            path.display(),
            path.display()
        ));
    }
    plan_exit(&plan, settings.detailed_exitcode)
}
