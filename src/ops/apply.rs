//! `apply`: plan (or read a saved plan), show, approve, then execute in dependency order,
//! keeping issued tokens in the token store.
//!
//! Order of phases, each before the next can change anything: load and plan (through a
//! read-only view of the client), or read the saved plan and check it is fresh; resolve every
//! password a create needs; ask (or require `--auto-approve`); check the token store when
//! tokens are to be issued; execute. A missing password, a stale plan or a token store that
//! cannot keep a token stops before the first mutating request.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::apply::{ApplyError, check_fresh, resolve_passwords};
use crate::error::{Error, Exit};
use crate::output::Output;
use crate::oz::VersionSetting;
use crate::plan::{Plan, PlanError, check_removals, format};
use crate::render;
use crate::secret::{SecretRef, process_env};
use crate::token_store::{StoreLock, TokenStore, TokenStoreError};

use super::interrupt::{Interrupt, Signal};
use super::settings::{ApplySettings, ApplySource};
use super::{
    apply_exit, check_company_filter, connect, execute, load_manifests, make_plan, open_store, plan_exit,
    plan_options, required_url,
};

pub async fn run(settings: ApplySettings, interrupt: &Interrupt, output: &Output) -> Result<Exit, Error> {
    let style = render::Style { color: output.color };
    let parallelism = settings.parallelism.steps();
    match &settings.source {
        ApplySource::SavedPlan(path) => {
            let plan = read_plan(path)?;
            // The figures are the plan's own: the same check `plan` made, before any request.
            check_removals(&plan, &settings.removals)?;
            let mut connection = settings.connection.clone();
            if let Some(url) = &connection.api_url
                && url.trim_end_matches('/') != plan.api_url.trim_end_matches('/')
            {
                return Err(Error::Usage {
                    message: format!("the plan was made for `{}`, not `{url}`", plan.api_url),
                    help:
                        "apply a saved plan to the API it was made for (drop `--api-url`), or make a new plan"
                            .into(),
                });
            }
            connection.api_version = VersionSetting::Fixed(plan.api_version);
            let passwords = resolve_passwords(&plan, &process_env)?;
            // The lock is held until this function returns, whatever path it takes.
            let (store, _lock) =
                open_locked(&settings, plan.changes.iter().filter_map(|c| c.password()), interrupt, output)
                    .await?;
            let client = connect(&connection, &plan.api_url, false, &process_env).await?;
            check_fresh(&plan, &client.read_only(), parallelism).await?;
            output.print(&render::text(&plan, &style));
            let report = execute(&plan, client, store, passwords, parallelism, interrupt, output).await?;
            apply_exit(&plan, &report, interrupt, output)
        }
        ApplySource::Manifests { paths, companies } => {
            let desired = load_manifests(paths, output)?;
            check_company_filter(&desired, companies)?;
            let sources = desired.users.iter().filter_map(|u| u.password.as_ref());
            let (store, _lock) = open_locked(&settings, sources, interrupt, output).await?;
            let url = required_url(&settings.connection)?;
            let client = connect(&settings.connection, url, false, &process_env).await?;
            let options = plan_options(&desired, &settings.tokens, companies, &process_env);
            let plan = make_plan(&client, &desired, store.as_ref(), &options).await?;
            output.print(&render::text(&plan, &style));
            if !plan.has_changes() {
                return plan_exit(&plan, false);
            }
            check_removals(&plan, &settings.removals)?;
            // Before asking: a missing password would stop the apply anyway, so say it now.
            let passwords = resolve_passwords(&plan, &process_env)?;
            approve(settings.auto_approve, output)?;
            let report = execute(&plan, client, store, passwords, parallelism, interrupt, output).await?;
            apply_exit(&plan, &report, interrupt, output)
        }
    }
}

/// Open the token store (a helper store gets neither the admin password nor those `sources`
/// name), take its lock and recover what a killed run left.
async fn open_locked<'a>(
    settings: &'a ApplySettings,
    sources: impl IntoIterator<Item = &'a SecretRef>,
    interrupt: &Interrupt,
    output: &Output,
) -> Result<(Arc<dyn TokenStore>, Option<StoreLock>), Error> {
    let sources = sources.into_iter().chain([&settings.connection.admin_password]);
    let store = open_store(&settings.tokens, sources, &process_env);
    let lock = lock_and_recover(&store, settings.lock_timeout, interrupt, output).await?;
    Ok((store, lock))
}

/// Take the token store's lock (waiting up to `wait`), then recover what a killed run left,
/// saying so. Blocking file I/O, so on the blocking pool.
async fn lock_and_recover(
    store: &Arc<dyn TokenStore>,
    wait: Duration,
    interrupt: &Interrupt,
    output: &Output,
) -> Result<Option<StoreLock>, Error> {
    let store = Arc::clone(store);
    let locking = tokio::task::spawn_blocking(move || {
        let lock = store.lock(wait)?;
        let recovery = store.recover()?;
        Ok::<_, TokenStoreError>((lock, recovery))
    });
    let mut cancel = interrupt.cancel();
    let (lock, recovery) = tokio::select! {
        locked = locking => locked.map_err(|e| Error::Io {
            action: "lock",
            path: "the token store".into(),
            reason: e.to_string(),
        })??,
        Ok(_) = cancel.wait_for(|cancelled| *cancelled) => {
            // Nothing was done yet; the thread polling the lock (up to `--lock-timeout`) cannot
            // be stopped, and a runtime waits for its blocking threads when dropped: exit now.
            let code = interrupt.signal().map_or(Exit::Interrupted, Signal::exit);
            std::process::exit(code as i32);
        }
    };
    if recovery.recovered > 0 || recovery.removed > 0 {
        output.status(&format!(
            "recovered {} token{} a killed run had issued but not yet stored, and removed {} incomplete or superseded temp file{}",
            recovery.recovered,
            if recovery.recovered == 1 { "" } else { "s" },
            recovery.removed,
            if recovery.removed == 1 { "" } else { "s" },
        ));
    }
    Ok(lock)
}

fn approve(auto_approve: bool, output: &Output) -> Result<(), Error> {
    if auto_approve {
        return Ok(());
    }
    if !output.stdin_tty() {
        return Err(Error::Usage {
            message: "apply needs approval, and there is no terminal to ask on".into(),
            help:
                "review the plan above and pass `--auto-approve`, or apply a reviewed plan with `--plan FILE`"
                    .into(),
        });
    }
    if output.confirm("Do you want to perform these actions?") {
        Ok(())
    } else {
        Err(ApplyError::NotApproved.into())
    }
}

fn read_plan(path: &Path) -> Result<Plan, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| PlanError::Unreadable {
        path: path.display().to_string(),
        reason: e.kind().to_string(),
    })?;
    Ok(format::from_json(&text)?)
}
