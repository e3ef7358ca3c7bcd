//! `ozform plan`: load the manifests, read live state through a read-only client, read the
//! sink, plan, render. The only side effect is `--out FILE`.

use std::collections::HashSet;

use crate::error::{Error, Exit};
use crate::model::Desired;
use crate::output::Output;
use crate::oz::OzClient;
use crate::plan::{Plan, PlanOptions};
use crate::secret::{SecretRef, process_env};
use crate::sink::{FileSink, TokenSink};
use crate::{manifest, plan, render};

use super::{PlanArgs, PlanFormat, TokenArgs, connection, files};

pub async fn run(args: PlanArgs, output: &Output) -> Result<Exit, Error> {
    let desired = manifest::load_with(
        &args.paths,
        &manifest::LoadOptions {
            warn: &|w| output.warn(&w.to_string()),
            ..manifest::LoadOptions::new(&process_env)
        },
    )?;
    let config = connection::client_config(&args.connection, &process_env, true, None)?;
    let client = OzClient::connect(config).await?;
    let sink = FileSink::new(&args.tokens.token_dir);
    let plan = make_plan(&client, &desired, &sink, &args.tokens, &args.companies, &process_env).await?;
    if let Some(path) = &args.out {
        files::write_atomically(path, render::json(&plan).as_bytes())?;
    }
    output.print(&match args.format {
        PlanFormat::Text => render::text(&plan, &render::Style { color: output.color }),
        PlanFormat::Json => render::json(&plan),
        PlanFormat::Markdown => render::markdown(&plan),
    });
    if let Some(path) = &args.out {
        output.status(&format!(
            "saved the plan to `{}`; run `ozform apply --plan {}`",
            path.display(),
            path.display()
        ));
    }
    finish(&plan, args.detailed_exitcode)
}

/// Observe, read the sink index and plan. Shared by `plan`, `apply` and `demo`.
pub async fn make_plan(
    client: &OzClient,
    desired: &Desired,
    sink: &dyn TokenSink,
    tokens: &TokenArgs,
    companies: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Plan, Error> {
    // With `--company`, the emails those companies' users are declared with: one that lives
    // in another company must show as a conflict, as it does without the filter.
    let declared: HashSet<String> = if companies.is_empty() {
        HashSet::new()
    } else {
        desired.users.iter().filter(|u| companies.contains(&u.company)).map(|u| u.email.key()).collect()
    };
    let observed = client.observe_for(companies, &declared).await?;
    let index = sink.index()?;
    let options = PlanOptions {
        now: now_epoch(),
        rotate_before: tokens.rotate_before,
        rotate_tokens: tokens.rotate_tokens,
        companies: companies.to_vec(),
        missing_secrets: plan::missing_secrets(desired, |r: &SecretRef| r.is_available(env)),
    };
    Ok(plan::plan(desired, &observed, &index, &options))
}

/// Exit status of a finished plan: conflicts are errors; `--detailed-exitcode` says 2 for changes.
pub fn finish(plan: &Plan, detailed_exitcode: bool) -> Result<Exit, Error> {
    if !plan.conflicts.is_empty() {
        return Err(Error::Usage {
            message: format!(
                "{} conflict(s) need a manual fix before the manifests can converge",
                plan.conflicts.len()
            ),
            help: "see the conflicts above; each says how to fix it".into(),
        });
    }
    Ok(if detailed_exitcode && plan.has_changes() { Exit::Changes } else { Exit::Success })
}

pub fn now_epoch() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}
