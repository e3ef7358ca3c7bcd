//! Operations: what `plan`, `apply`, `export`, `demo` and `doctor` do, over validated settings
//! (`settings`), knowing nothing of clap. The command line turns flags into settings and
//! calls one operation; operations never call each other, they share the steps below.
//!
//! This is the imperative shell around the pure core: it connects, reads the token store,
//! calls the planner, renders, executes, and says what happened through `Output`. Planning
//! always runs through a read-only view of the client (`OzClient::read_only`), also inside
//! `apply`, so no code path of planning can send a mutating request.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use crate::apply::{ApplyReport, ExecuteOptions, Passwords};
use crate::error::{Error, Exit};
use crate::model::Desired;
use crate::output::Output;
use crate::oz::OzClient;
use crate::plan::{Plan, PlanOptions};
use crate::secret::{Secret, SecretRef};
use crate::token_store::{DirStore, ExecStore, Installation, TokenStore};

pub mod apply;
pub mod demo;
pub mod doctor;
pub mod export;
mod files;
pub mod interrupt;
pub mod plan;
pub mod settings;

use interrupt::Interrupt;
use settings::{Connection, StoreSpec, Tokens};

/// Log in at `api_url` (the settings' own, or a saved plan's).
async fn connect(
    connection: &Connection,
    api_url: &str,
    read_only: bool,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<OzClient, Error> {
    check_insecure_http(api_url, connection.allow_insecure_http)?;
    let config = connection.client_config(api_url, read_only, env)?;
    Ok(OzClient::connect(config).await?)
}

/// Whether the URL's host is this machine: `localhost`, 127.0.0.0/8 or `::1`.
fn is_loopback(api_url: &str) -> bool {
    reqwest::Url::parse(api_url).ok().is_some_and(|url| {
        let host = url.host_str().unwrap_or_default();
        let ip = host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>();
        host.eq_ignore_ascii_case("localhost") || ip.is_ok_and(|ip| ip.is_loopback())
    })
}

/// Plain `http://` only to a loopback host (`localhost`, 127.0.0.0/8, `::1`), unless allowed:
/// the admin password, the session and every issued token would cross the network in clear.
/// Checked before any connection is made.
fn check_insecure_http(api_url: &str, allowed: bool) -> Result<(), Error> {
    let Ok(url) = reqwest::Url::parse(api_url) else { return Ok(()) }; // the client names a bad URL
    if url.scheme() != "http" || allowed {
        return Ok(());
    }
    if is_loopback(api_url) {
        return Ok(());
    }
    Err(Error::Usage {
        message: format!(
            "`{api_url}` is plain HTTP to a host that is not this machine: the admin password, the session and every issued token would cross the network unencrypted"
        ),
        help: "use `https://`, or pass `--allow-insecure-http` if the network in between is trusted".into(),
    })
}

/// The API URL of settings that must name one.
fn required_url(connection: &Connection) -> Result<&str, Error> {
    connection.api_url.as_deref().ok_or_else(|| Error::Usage {
        message: "no Oz API URL given".into(),
        help: "pass `--api-url https://…` or set `OZ_API_URL`".into(),
    })
}

/// The token store the settings name. A helper (`exec:`) runs without `OZ_ADMIN_PASSWORD` and
/// without the variables the secrets in `sources` (the admin password's, every password a
/// manifest or saved plan names) come from: they are data for the Oz API, not for the store.
/// Their values, as far as `env` and the files hold them, are redacted from its messages.
/// The store sees the tokens of one installation: `--installation`, else `api_url`'s origin.
fn open_store<'a>(
    tokens: &Tokens,
    api_url: &str,
    sources: impl IntoIterator<Item = &'a SecretRef>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Arc<dyn TokenStore> {
    let installation = Installation::new(tokens.installation.as_deref(), api_url);
    match &tokens.store {
        StoreSpec::Dir(dir) => {
            Arc::new(DirStore::new(dir, installation).allow_shared_dir(tokens.allow_shared_dir))
        }
        StoreSpec::Exec(argv) => {
            let mut hidden: BTreeSet<String> = BTreeSet::from(["OZ_ADMIN_PASSWORD".to_string()]);
            let mut secrets: Vec<Secret> = env("OZ_ADMIN_PASSWORD").map(Secret::new).into_iter().collect();
            for source in sources {
                if let SecretRef::Env(name) = source {
                    hidden.insert(name.clone());
                }
                // Best effort: a secret that cannot be read now cannot be echoed by the helper
                // either (it does not get the variable, and the file is read only here).
                secrets.extend(source.resolve(env).ok());
            }
            Arc::new(
                ExecStore::new(argv.clone(), tokens.store_timeout, installation)
                    .hide_env(hidden)
                    .redact(secrets),
            )
        }
    }
}

/// Load the manifests, each warning (a special file skipped in a directory) on stderr.
fn load_manifests(paths: &[std::path::PathBuf], output: &Output) -> Result<Desired, Error> {
    let options = crate::manifest::LoadOptions {
        warn: &|w| output.warn(&w.to_string()),
        ..crate::manifest::LoadOptions::new(&crate::secret::process_env)
    };
    Ok(crate::manifest::load_with(paths, &options)?)
}

/// Every `--company` name must name a company the manifests declare: a typo in a pipeline
/// would otherwise plan (and apply) nothing and exit 0.
fn check_company_filter(desired: &Desired, companies: &[String]) -> Result<(), Error> {
    let declared: Vec<&str> = desired.companies.iter().map(|c| c.name.as_str()).collect();
    let unknown: Vec<&String> = companies.iter().filter(|n| !declared.contains(&n.as_str())).collect();
    let Some(first) = unknown.first() else { return Ok(()) };
    let names = unknown.iter().map(|n| format!("`--company {n}`")).collect::<Vec<_>>().join(", ");
    let help = match crate::manifest::suggest::closest(first, declared.iter().copied()) {
        Some(near) => format!(
            "did you mean `{near}`? `--company` takes a company name exactly as the manifests declare it"
        ),
        None => {
            "`--company` takes a company name exactly as the manifests declare it (`companies[].name`)".into()
        }
    };
    Err(Error::Usage { message: format!("{names} matches no company declared in the manifests"), help })
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
    interrupt: &Interrupt,
    output: &Output,
) -> Result<ApplyReport, Error> {
    let progress = output.progress(plan.changes.len());
    let mut options = ExecuteOptions::new(passwords);
    options.parallelism = parallelism.max(1);
    options.cancel = Some(interrupt.cancel());
    Ok(crate::apply::execute(plan, Arc::new(client), store, progress, &options).await?)
}

/// The exit status of a finished plan: conflicts are errors; with `detailed_exitcode`, 2 says
/// there are changes, 3 that at least one of them is a removal (a pipeline can apply additive
/// plans on its own and hold destructive ones for a person).
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
    Ok(match (detailed_exitcode, plan.has_changes(), plan.has_removals()) {
        (true, _, true) => Exit::Removals,
        (true, true, false) => Exit::Changes,
        _ => Exit::Success,
    })
}

/// Print the summary line of an apply; an interrupted apply ends with the signal's code (130,
/// 143), a partial apply or unresolved conflicts with exit 1.
fn apply_exit(
    plan: &Plan,
    report: &ApplyReport,
    interrupt: &Interrupt,
    output: &Output,
) -> Result<Exit, Error> {
    output.print(&format!("\n{}\n", report.summary_line()));
    if let Some(signal) = interrupt.signal() {
        for failed in &report.failed {
            output.warn(&format!("`{}` failed: {}", failed.address, failed.error));
        }
        return Ok(signal.exit());
    }
    report.clone().into_result()?;
    plan_exit(plan, false)
}

fn now_epoch() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::check_insecure_http;

    #[test]
    fn plain_http_is_refused_only_off_this_machine_unless_allowed() {
        for ok in [
            "http://localhost:8080",
            "http://127.0.0.1:1",
            "http://127.9.9.9",
            "http://[::1]:80",
            "https://oz.example",
        ] {
            assert!(check_insecure_http(ok, false).is_ok(), "{ok}");
        }
        for refused in
            ["http://oz.example", "http://10.0.0.1:8080", "http://[::2]", "http://localhost.evil.example"]
        {
            let err = check_insecure_http(refused, false).expect_err(refused).to_string();
            assert!(err.contains("plain HTTP"), "{err}");
            assert!(check_insecure_http(refused, true).is_ok(), "{refused} with --allow-insecure-http");
        }
    }
}
