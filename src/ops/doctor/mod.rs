//! `doctor`: a read-only check of a live installation, the first command to run against a
//! real Oz API. It connects as `plan` does (the same read-only client, the same retry policy:
//! the login and the version detection are tried again on a transient fault like every read
//! of `plan`), asks a few single GETs through `oz::Prober` (wire facts; each transient fault
//! tried again under that same policy and counted), and checks the token store; `findings`
//! judges what was seen. Each finding says what was seen and what it means for plan and apply;
//! a `fail` finding means ozform cannot work with the installation.
//!
//! An operation: it returns a `Report` and never writes to the terminal or ends the process
//! (the command line renders the report and maps `usable` to the exit code). Never a mutating
//! request: the client is read-only and probes only ever GET (an expired session is renewed by
//! the session's own refresh or login). The token store's `check` writes and removes a probe in
//! the store (creating a directory store's directory, as `apply` would), on the blocking pool.

mod findings;

use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use crate::error::Error;
use crate::oz::{ListQuery, OzClient};
use crate::secret::SecretRef;
use crate::token_store::Installation;

use super::each::{Each, Order, Views, each};
use super::settings::{Connection, InstallationSettings, Installations, Tokens};
use super::{View, open_store};

use findings::BIG_PAGE;
pub use findings::{Finding, Status};

/// An email no installation holds, to see whether the `email` filter is honoured.
const NO_SUCH_EMAIL: &str = "ozform-doctor-probe@doctor.invalid";

/// What `ozform doctor` needs: the installations to look at.
#[derive(Debug, Clone)]
pub struct DoctorSettings {
    pub installations: Installations,
}

/// Everything the doctor found, and its verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub api_url: String,
    /// The verdict: whether ozform can work with this installation (no `fail` finding).
    pub usable: bool,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn finding(&self, check: &str) -> Option<&Finding> {
        self.findings.iter().find(|f| f.check == check)
    }
}

/// Look at each installation and its token store, one report each; one that cannot be looked
/// at does not stop the others.
pub async fn run(
    settings: &DoctorSettings,
    views: &dyn Views<Report>,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Vec<Each<Report>> {
    let installations = settings.installations.refs();
    let order = Order { parallelism: settings.installations.parallelism, stop_after_failure: false };
    each(
        &installations,
        order,
        views,
        None,
        |_| false,
        |index, _view: Arc<dyn View>| {
            let installation: &InstallationSettings = &settings.installations.each[index];
            examine_installation(&installation.connection, &installation.tokens, env)
        },
    )
    .await
}

/// Look at one installation and its token store. `Err` only for settings that stop the doctor
/// before it asks anything (no password source); whatever the installation answers is a finding.
async fn examine_installation(
    connection: &Connection,
    tokens: &Tokens,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Report, Error> {
    let api_url = connection.api_url.clone().unwrap_or_default();
    let config = connection.client_config(&api_url, true, env)?;
    let private_ca = connection.ca_cert.is_some();
    let mut findings = Vec::new();
    match OzClient::connect(config).await {
        Ok(client) => {
            findings.push(findings::reachable(&api_url, private_ca));
            findings.push(findings::logged_in(&connection.admin_email));
            examine(&client, &mut findings).await;
        }
        Err(e) => {
            findings.extend(findings::connect_failure(&e, &api_url, private_ca, &connection.admin_email));
        }
    }
    findings.push(token_store(tokens, &api_url, &connection.admin_password, env).await);
    let usable = findings.iter().all(|f| f.status != Status::Fail);
    Ok(Report { api_url, usable, findings })
}

/// What the API says once logged in: version, lists, clock, and the faults met on the way.
async fn examine(client: &OzClient, findings: &mut Vec<Finding>) {
    let prober = client.prober();
    match prober.users(&ListQuery::page(0, BIG_PAGE)).await {
        Err(why) => findings.push(findings::users_unread(&why)),
        Ok(first) => {
            if let Some(certificate) = &first.certificate
                && let Some(reachable) = findings.iter_mut().find(|f| f.check == "reachable")
            {
                findings::certificate(reachable, certificate, SystemTime::now());
            }
            findings.push(findings::api_version(
                client.api_version(),
                client.api_version_detected(),
                &first.evidence,
            ));
            findings.push(findings::list_shape(&first.shape));
            findings.push(findings::objects(&first.fields));
            findings.extend(findings::permissions(&first));
            findings.extend(findings::path_form(&first));

            // Without a total, a short first page is a cap only if the next offset answers more.
            let next = if first.shape.total.is_none() && first.len > 0 && first.len < BIG_PAGE {
                Some(prober.users(&ListQuery::page(first.len, BIG_PAGE)).await)
            } else {
                None
            };
            findings.push(findings::page_size(&first, next.as_ref()));

            let known = first.shape.total.map_or(first.len as u64, |(_, total)| total);
            let pages_of_one = if known >= 2 {
                let at_0 = prober.users(&ListQuery::page(0, 1)).await;
                Some((at_0, prober.users(&ListQuery::page(1, 1)).await))
            } else {
                None
            };
            findings.push(findings::offset(pages_of_one.as_ref()));

            let no_such = if first.len > 0 {
                Some(prober.users(&ListQuery::email(NO_SUCH_EMAIL, 1)).await)
            } else {
                None
            };
            findings.push(findings::filters(no_such.as_ref()));

            findings.push(findings::companies(&prober.companies(&ListQuery::page(0, BIG_PAGE)).await));
            findings.push(findings::clock(first.date, SystemTime::now()));
            let server_now = first.date.unwrap_or_else(SystemTime::now);
            findings.push(findings::session(client.session_expire_date(), server_now));
        }
    }
    findings.push(findings::faults(&prober.faults()));
}

/// Whether the token store can keep tokens, by its own `check` (blocking: a file written and
/// removed, or the helper run), named as the settings name it.
async fn token_store(
    tokens: &Tokens,
    api_url: &str,
    admin_password: &SecretRef,
    env: &dyn Fn(&str) -> Option<String>,
) -> Finding {
    // The store's helper (if any) gets neither the admin password's variable nor its value.
    let store =
        open_store(tokens, Installation::new(tokens.installation.as_deref(), api_url), [admin_password], env);
    let checked = match tokio::task::spawn_blocking(move || store.check()).await {
        Ok(checked) => checked.map_err(|e| e.to_string()),
        Err(e) => Err(format!("the check stopped before it could tell: {e}")),
    };
    findings::token_store(&tokens.store, checked)
}
