//! Operations: what `plan`, `apply`, `reconcile`, `export`, `demo`, `doctor` and `show` do, over validated settings
//! (`settings`), knowing nothing of clap and nothing of the terminal. The command line turns
//! flags into settings and calls one operation; operations never call each other, they share
//! the steps below and one installation as a value (`Target`). `plan`, `apply`, `export` and
//! `doctor` act on each installation of a run (`each`: one, or those of a project file), with
//! the same code for one or many.
//!
//! This is the imperative shell around the pure core: it loads, connects, reads the token
//! store, calls the planner, executes. An operation says what happens through a `View`, asks
//! for approval through an `Approve`, tells what it measures through a `Measure`, stops when its cancel flag (a `watch` channel) says so,
//! and hands back an outcome value (`PlanOutcome`, `ApplyOutcome`, …): it never prints and
//! never ends the process (`cli::report` maps outcomes to text and exit codes). Planning
//! always runs through a read-only view of the client (`OzClient::read_only`), also inside
//! `apply`, so no code path of planning can send a mutating request.

use crate::error::Error;
use crate::model::Desired;
use crate::plan::PlanOptions;
use crate::secret::SecretRef;

pub mod apply;
pub mod demo;
pub mod doctor;
pub mod each;
pub mod export;
pub mod files;
mod measure;
pub mod plan;
pub mod reconcile;
pub mod settings;
pub mod show;
mod target;
pub mod view;

pub use each::{Each, Ran, Views};
pub use measure::{Measure, Unmeasured};
pub use target::{Access, Held, Target};
pub use view::{Approval, Approve, Approved, Quiet, View};

use settings::Tokens;
use target::{is_loopback, open_store};

/// Load the manifests, each warning (a special file skipped in a directory) through the view;
/// `{file: PATH}` secrets confined to the manifest paths and `secrets_dirs`; no value may
/// interpolate the variable the admin password comes from.
fn load_manifests(
    paths: &[std::path::PathBuf],
    secrets_dirs: &[std::path::PathBuf],
    admin_password: &SecretRef,
    view: &dyn View,
) -> Result<Desired, Error> {
    let mut secret_variables: Vec<&str> = crate::manifest::SECRET_VARIABLES.to_vec();
    if let SecretRef::Env(name) = admin_password {
        secret_variables.push(name);
    }
    let options = crate::manifest::LoadOptions {
        warn: &|w| view.warning(&w.to_string()),
        secrets_dirs,
        secret_variables: &secret_variables,
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
        now: crate::model::now_epoch(),
        rotate_before: tokens.rotate_before,
        rotate_tokens: tokens.rotate_tokens,
        companies: companies.to_vec(),
        missing_secrets: crate::plan::missing_secrets(desired, |r: &SecretRef| r.is_available(env)),
    }
}
