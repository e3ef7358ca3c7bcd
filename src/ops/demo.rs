//! `demo`: the whole job on the built-in emulator, in seconds, on any machine.
//!
//! Starts the emulator in-process on an ephemeral loopback port, writes the `examples/basic`
//! manifests (compiled into the binary, so the demo runs from any directory) to a fresh
//! directory, then runs plan, apply and plan again. The demo supplies the example's passwords
//! itself (random per run, never printed); tokens go to a directory store in that directory,
//! which is removed at the end, whether the run succeeded or not, unless `--keep`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::apply::{ExecuteOptions, resolve_passwords};
use crate::emulator::{self, EmulatorConfig};
use crate::error::Error;
use crate::manifest;
use crate::oz::{ClientConfig, OzClient, VersionSetting};
use crate::plan::Plan;
use crate::token_store::{DirStore, Installation};

use super::settings::{DemoSettings, StoreSpec, Tokens};
use super::{Target, View, plan_options};

/// The example manifests, as shipped in `examples/basic`.
const MANIFESTS: [(&str, &str); 2] = [
    ("companies.yaml", include_str!("../../examples/basic/companies.yaml")),
    ("service-users.yaml", include_str!("../../examples/basic/service-users.yaml")),
];

/// What the demo ends with: the second plan (nothing left to do when all went well).
#[derive(Debug)]
pub struct DemoOutcome {
    pub last_plan: Plan,
}

pub async fn run(settings: DemoSettings, view: &dyn View) -> Result<DemoOutcome, Error> {
    let dir = demo_dir()?;
    let result = run_in(&dir, &settings, view).await;
    if settings.keep {
        view.status(&format!("kept {} (manifests and token files)", dir.display()));
    } else if let Err(e) = std::fs::remove_dir_all(&dir) {
        view.warning(&format!("cannot remove the demo directory {}: {e}", dir.display()));
    }
    result
}

async fn run_in(dir: &Path, settings: &DemoSettings, view: &dyn View) -> Result<DemoOutcome, Error> {
    let api_version = settings.api_version;
    let manifests = dir.join("manifests");
    write_manifests(&manifests)?;
    let token_dir = dir.join("tokens");

    let handle = emulator::start(EmulatorConfig::new(api_version)).await?;
    view.status(&format!("emulator: Oz API {api_version} at {}", handle.url()));
    view.status(&format!("manifests: {}", manifests.display()));

    // Passwords of the example's users: made up per run, known only to this process.
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let env = move |name: &str| -> Option<String> {
        if name.ends_with("_PASSWORD") {
            Some(format!("demo-{run_id}-{name}"))
        } else {
            std::env::var(name).ok()
        }
    };

    let mut config = ClientConfig::new(handle.url(), handle.admin_email(), handle.admin_password().clone());
    config.api_version = VersionSetting::Auto;
    let client = OzClient::connect(config).await?;
    let tokens = Tokens::new(StoreSpec::Dir(token_dir.clone()));
    let installation = Installation::of_api(&handle.url());
    let store = DirStore::new(&token_dir, installation.clone());
    // The directory store keeps the tokens in the installation's directory (the emulator's origin).
    let kept = store.dir().to_path_buf();
    let target = Target::new(client, Arc::new(store), installation);
    let desired = manifest::load(std::slice::from_ref(&manifests), &env)?;
    let options = plan_options(&desired, &tokens, &[], &env);

    view.text("\n== 1. ozform plan\n\n");
    let first = target.plan(&desired, &options).await?;
    view.plan(&first);

    view.text("\n== 2. ozform apply --auto-approve\n\n");
    let passwords = resolve_passwords(&first, &env)?;
    let report =
        target.apply(&first, &ExecuteOptions::new(passwords), view.progress(first.changes.len())).await?;
    view.text(&format!("{}\n", report.summary_line()));
    report.into_result()?;

    handle.reset_stats();
    view.text("\n== 3. ozform plan (again: nothing left to do)\n\n");
    let options = plan_options(&desired, &tokens, &[], &env);
    let second = target.plan(&desired, &options).await?;
    view.plan(&second);
    let stats = handle.stats();

    view.text(&format!("\nTokens were written to {} (mode 0600):\n", kept.display()));
    for name in token_files(&kept)? {
        view.text(&format!("  {name}\n"));
    }
    if !settings.keep {
        view.text(
            "They are removed with the demo's directory at the end; `ozform demo --keep` keeps them.\n",
        );
    }
    view.text(&format!(
        "The second plan read live state in {} requests and changed nothing ({} mutating).\n",
        stats.total_requests, stats.mutating_requests
    ));
    handle.shutdown().await;
    Ok(DemoOutcome { last_plan: second })
}

/// A fresh directory for this run's manifests and tokens.
fn demo_dir() -> Result<PathBuf, Error> {
    let dir = std::env::temp_dir().join(format!("ozform-demo-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).map_err(|e| io_error("create", &dir, &e))?;
    Ok(dir)
}

fn write_manifests(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| io_error("create", dir, &e))?;
    for (name, text) in MANIFESTS {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| io_error("write", &path, &e))?;
    }
    Ok(())
}

fn token_files(dir: &Path) -> Result<Vec<String>, Error> {
    let entries = std::fs::read_dir(dir).map_err(|e| io_error("read", dir, &e))?;
    let mut names: Vec<String> =
        entries.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    Ok(names)
}

fn io_error(action: &'static str, path: &Path, e: &std::io::Error) -> Error {
    Error::Io { action, path: path.display().to_string(), reason: e.to_string() }
}
