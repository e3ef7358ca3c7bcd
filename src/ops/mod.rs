//! Operations: what `plan`, `apply`, `export`, `demo` and `doctor` do, over validated settings
//! (`settings`), knowing nothing of clap. The command line turns flags into settings and
//! calls one operation; operations never call each other, they share the steps below.
//!
//! This is the imperative shell around the pure core: it connects, reads the token store,
//! calls the planner, renders, executes, and says what happened through `Output`. Planning
//! always runs through a read-only view of the client (`OzClient::read_only`), also inside
//! `apply`, so no code path of planning can send a mutating request.

use std::collections::HashSet;
use std::sync::Arc;

use crate::apply::{ApplyReport, ExecuteOptions, Passwords};
use crate::error::{Error, Exit};
use crate::model::Desired;
use crate::output::Output;
use crate::oz::OzClient;
use crate::plan::{Plan, PlanOptions};
use crate::secret::SecretRef;
use crate::token_store::{DirStore, TokenStore};

pub mod apply;
pub mod demo;
pub mod doctor;
pub mod export;
mod files;
pub mod plan;
pub mod settings;

use settings::{Connection, StoreSpec, Tokens};

/// Log in at `api_url` (the settings' own, or a saved plan's).
async fn connect(
    connection: &Connection,
    api_url: &str,
    read_only: bool,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<OzClient, Error> {
    let config = connection.client_config(api_url, read_only, env)?;
    Ok(OzClient::connect(config).await?)
}

/// The API URL of settings that must name one.
fn required_url(connection: &Connection) -> Result<&str, Error> {
    connection.api_url.as_deref().ok_or_else(|| Error::Usage {
        message: "no Oz API URL given".into(),
        help: "pass `--api-url https://…` or set `OZ_API_URL`".into(),
    })
}

/// The token store the settings name.
fn open_store(spec: &StoreSpec) -> Arc<dyn TokenStore> {
    match spec {
        StoreSpec::Dir(dir) => Arc::new(DirStore::new(dir)),
    }
}

/// The planner's options: the clock now, the rotation settings, the company filter, and which
/// secrets of `desired` cannot be resolved now (each planned create needing one gets a warning).
fn plan_options(
    desired: &Desired,
    tokens: &Tokens,
    companies: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> PlanOptions {
    PlanOptions {
        now: now_epoch(),
        rotate_before: tokens.rotate_before,
        rotate_tokens: tokens.rotate_tokens,
        companies: companies.to_vec(),
        missing_secrets: crate::plan::missing_secrets(desired, |r: &SecretRef| r.is_available(env)),
    }
}

/// Observe (through a read-only view of `client`), list the stored tokens, and plan.
async fn make_plan(
    client: &OzClient,
    desired: &Desired,
    store: &dyn TokenStore,
    options: &PlanOptions,
) -> Result<Plan, Error> {
    let reader = client.read_only();
    // With `--company`, the emails those companies' users are declared with: one that lives
    // in another company must show as a conflict, as it does without the filter.
    let declared: HashSet<String> = if options.companies.is_empty() {
        HashSet::new()
    } else {
        desired
            .users
            .iter()
            .filter(|u| options.companies.contains(&u.company))
            .map(|u| u.email.key())
            .collect()
    };
    let observed = reader.observe_for(&options.companies, &declared).await?;
    let stored = store.list()?;
    Ok(crate::plan::compute(desired, &observed, &stored, options))
}

/// Run `plan` through the executor, with progress on the terminal (or JSON lines).
async fn execute(
    plan: &Plan,
    client: OzClient,
    store: Arc<dyn TokenStore>,
    passwords: Passwords,
    parallelism: usize,
    output: &Output,
) -> Result<ApplyReport, Error> {
    let progress = output.progress(plan.changes.len());
    let mut options = ExecuteOptions::new(passwords);
    options.parallelism = parallelism.max(1);
    Ok(crate::apply::execute(plan, Arc::new(client), store, progress, &options).await?)
}

/// The exit status of a finished plan: conflicts are errors; with `detailed_exitcode`, 2 says
/// there are changes.
fn plan_exit(plan: &Plan, detailed_exitcode: bool) -> Result<Exit, Error> {
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

/// Print the summary line of an apply; a partial apply or unresolved conflicts end with exit 1.
fn apply_exit(plan: &Plan, report: &ApplyReport, output: &Output) -> Result<Exit, Error> {
    output.print(&format!("\n{}\n", report.summary_line()));
    report.clone().into_result()?;
    plan_exit(plan, false)
}

fn now_epoch() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}
