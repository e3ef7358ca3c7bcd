//! `Target`: one Oz installation as a value, in the manner of octoDNS's targets and OpenTofu's
//! backends: the client logged in to its API and the token store its tokens go to. An
//! operation opens one (`Target::open`), plans against it, and applies to it; a long-running
//! loop or a run over several installations holds as many as it needs.
//!
//! Invariants:
//! - planning runs through the client's read-only view, whatever the target was opened for;
//! - every call into the token store (blocking: files, fsync, helper processes) runs on tokio's
//!   blocking pool, never on an async worker;
//! - the store's lock is not part of the target: `lock` hands back a guard held as long as the
//!   caller needs (an `apply`, one cycle of a loop) and released when dropped;
//! - opening does no I/O besides reading the admin password: the client logs in on first use,
//!   so `apply` takes the store's lock (and refuses a store it cannot use) before its first
//!   request.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OnceCell, watch};

use crate::apply::{ApplyReport, ExecuteOptions, Progress, check_fresh};
use crate::error::Error;
use crate::model::{Desired, StoredTokens};
use crate::oz::{ClientConfig, OzClient, RequestObserver};
use crate::plan::{Plan, PlanOptions};
use crate::secret::{Secret, SecretRef};
use crate::token_store::{
    DirStore, ExecStore, Installation, Recovery, StoreLock, TokenStore, TokenStoreError,
};

use super::settings::{Connection, StoreSpec, Tokens};

/// What a target is opened for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `plan`, `export`: the client refuses every mutating request itself.
    ReadOnly,
    /// `apply`: planning still goes through the read-only view.
    ReadWrite,
}

/// One Oz installation: its client (logged in on first use) and its token store, which keeps
/// the tokens of this installation apart from those of others sharing it.
#[derive(Clone)]
pub struct Target {
    /// How to log in; `None` for a target made of a client already logged in.
    config: Option<ClientConfig>,
    client: Arc<OnceCell<OzClient>>,
    store: Arc<dyn TokenStore>,
    /// What the token store keeps this installation's tokens under.
    installation: Installation,
}

/// The token store's lock, held until dropped, and what opening it found of a killed run.
#[derive(Debug)]
pub struct Held {
    /// `None` for a store that takes no lock.
    _lock: Option<StoreLock>,
    pub recovery: Recovery,
}

impl Target {
    /// Open the token store the settings name and log in to the API at the settings' URL.
    /// `secrets`: the sources of every secret the run may read (the manifests' or a saved
    /// plan's passwords); a helper store (`exec:`) runs without their variables and without
    /// `OZ_ADMIN_PASSWORD`, and their values are redacted from what it says.
    pub fn open<'a>(
        connection: &Connection,
        tokens: &Tokens,
        access: Access,
        secrets: impl IntoIterator<Item = &'a SecretRef>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, Error> {
        let config = client_config(connection, access == Access::ReadOnly, env)?;
        let mut sources: Vec<&SecretRef> = secrets.into_iter().collect();
        sources.push(&connection.admin_password);
        let installation = Installation::new(tokens.installation.as_deref(), &config.api_url);
        let store = open_store(tokens, installation.clone(), sources, env);
        Ok(Self { config: Some(config), client: Arc::new(OnceCell::new()), store, installation })
    }

    /// Tell `observer` about every request the client sends (metrics). Only before the client
    /// has logged in, that is before the first `plan`, `lock` or `apply`; a target made of a
    /// client (`new`) keeps the client's own observer.
    #[must_use]
    pub fn observed_by(mut self, observer: Option<Arc<dyn RequestObserver>>) -> Self {
        if let Some(config) = &mut self.config {
            config.observer = observer;
        }
        self
    }

    /// The same installation, with the token store opened again for other secret sources (a
    /// loop whose manifests now name a password the store's helper must not see); the client
    /// and its session are shared.
    #[must_use]
    pub fn with_store_for<'a>(
        &self,
        tokens: &Tokens,
        secrets: impl IntoIterator<Item = &'a SecretRef>,
        admin_password: &SecretRef,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Self {
        let mut sources: Vec<&SecretRef> = secrets.into_iter().collect();
        sources.push(admin_password);
        Self {
            config: self.config.clone(),
            client: Arc::clone(&self.client),
            store: open_store(tokens, self.installation.clone(), sources, env),
            installation: self.installation.clone(),
        }
    }

    /// A target of parts made elsewhere (the demo's emulator, tests, benchmarks); `installation`:
    /// what `store` keeps its tokens under.
    pub fn new(client: OzClient, store: Arc<dyn TokenStore>, installation: Installation) -> Self {
        Self { config: None, client: Arc::new(OnceCell::new_with(Some(client))), store, installation }
    }

    /// What the token store keeps this installation's tokens under.
    pub fn installation(&self) -> &Installation {
        &self.installation
    }

    /// The client, logged in (on the first call).
    pub async fn client(&self) -> Result<&OzClient, Error> {
        self.client
            .get_or_try_init(|| async {
                // `new` fills the cell, so a target without a config never gets here.
                let config = self.config.clone().ok_or_else(|| Error::Io {
                    action: "log in to",
                    path: "the installation".into(),
                    reason: "the target was made without connection settings".into(),
                })?;
                Ok::<_, Error>(OzClient::connect(config).await?)
            })
            .await
    }

    pub fn store(&self) -> &Arc<dyn TokenStore> {
        &self.store
    }

    /// Observe (through the read-only view of the client), list the stored tokens, and plan.
    pub async fn plan(&self, desired: &Desired, options: &PlanOptions) -> Result<Plan, Error> {
        Ok(self.plan_and_stored(desired, options).await?.0)
    }

    /// As `plan`, and what the token store held when planning (for metrics).
    pub async fn plan_and_stored(
        &self,
        desired: &Desired,
        options: &PlanOptions,
    ) -> Result<(Plan, StoredTokens), Error> {
        let reader = self.client().await?.read_only();
        // With `--company`, the emails those companies' users are declared with: one that
        // lives in another company must show as a conflict, as it does without the filter.
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
        let (observed, stored) =
            tokio::join!(reader.observe_for(&options.companies, &declared), self.stored());
        let stored = stored?;
        Ok((crate::plan::compute(desired, &observed?, &stored, options), stored))
    }

    /// What the token store holds (never the tokens), read on the blocking pool.
    pub async fn stored(&self) -> Result<StoredTokens, Error> {
        let store = Arc::clone(&self.store);
        blocking("list", move || store.list()).await
    }

    /// Take the token store's lock (waiting up to `wait` for another holder), then recover
    /// what a killed run left. A stop asked for on `cancel` while waiting ends the wait with
    /// `Error::Cancelled`: nothing was done yet. (The thread polling the lock cannot be
    /// stopped; the command line does not wait for it when it exits.)
    pub async fn lock(&self, wait: Duration, mut cancel: watch::Receiver<bool>) -> Result<Held, Error> {
        let store = Arc::clone(&self.store);
        let locking = blocking("lock", move || {
            let lock = store.lock(wait)?;
            let recovery = store.recover()?;
            Ok::<_, TokenStoreError>((lock, recovery))
        });
        tokio::select! {
            locked = locking => {
                let (lock, recovery) = locked?;
                Ok(Held { _lock: lock, recovery })
            }
            Ok(_) = cancel.wait_for(|cancelled| *cancelled) => Err(Error::Cancelled),
        }
    }

    /// Refuse a saved plan whole if an object it was made against has moved (reads only).
    pub async fn check_fresh(&self, plan: &Plan, parallelism: usize) -> Result<(), Error> {
        Ok(check_fresh(plan, &self.client().await?.read_only(), parallelism).await?)
    }

    /// Carry out `plan`: steps in dependency order, tokens into the token store.
    pub async fn apply(
        &self,
        plan: &Plan,
        options: &ExecuteOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<ApplyReport, Error> {
        let client = Arc::new(self.client().await?.clone());
        Ok(crate::apply::execute(plan, client, Arc::clone(&self.store), progress, options).await?)
    }
}

/// Run a blocking token store call on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    action: &'static str,
    call: impl FnOnce() -> Result<T, TokenStoreError> + Send + 'static,
) -> Result<T, Error> {
    match tokio::task::spawn_blocking(call).await {
        Ok(result) => Ok(result?),
        Err(join) => Err(Error::Io { action, path: "the token store".into(), reason: join.to_string() }),
    }
}

/// The API URL of settings that must name one.
fn required_url(connection: &Connection) -> Result<&str, Error> {
    connection.api_url.as_deref().ok_or_else(|| Error::Usage {
        message: "no Oz API URL given".into(),
        help: "pass `--api-url https://…` or set `OZ_API_URL`".into(),
    })
}

/// The client configuration for the settings' API URL: refused before any connection when
/// the URL is missing or plain HTTP off this machine; the admin password read through `env`.
fn client_config(
    connection: &Connection,
    read_only: bool,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ClientConfig, Error> {
    let api_url = required_url(connection)?;
    check_insecure_http(api_url, connection.allow_insecure_http)?;
    Ok(connection.client_config(api_url, read_only, env)?)
}

/// Log in at the settings' API URL (for an operation that needs no token store: `export`).
pub(super) async fn connect_to(
    connection: &Connection,
    read_only: bool,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<OzClient, Error> {
    Ok(OzClient::connect(client_config(connection, read_only, env)?).await?)
}

/// Whether the URL's host is this machine: `localhost`, 127.0.0.0/8 or `::1`.
pub(super) fn is_loopback(api_url: &str) -> bool {
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

/// The token store the settings name. A helper (`exec:`) runs without `OZ_ADMIN_PASSWORD` and
/// without the variables the secrets in `sources` come from: they are data for the Oz API, not
/// for the store. Their values, as far as `env` and the files hold them, are redacted from its
/// messages. The store sees the tokens of `installation` only (`--installation`, else the API
/// URL's origin).
pub(super) fn open_store<'a>(
    tokens: &Tokens,
    installation: Installation,
    sources: impl IntoIterator<Item = &'a SecretRef>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Arc<dyn TokenStore> {
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
