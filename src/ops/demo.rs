//! `demo`: the whole job on the built-in emulator, in seconds, on any machine.
//!
//! Starts the emulator in-process on an ephemeral loopback port, writes the `examples/basic`
//! manifests (compiled into the binary, so the demo runs from any directory) to a fresh
//! directory, then runs plan, apply and plan again. The demo supplies the example's passwords
//! itself (random per run, never printed); tokens go to a directory store in that directory,
//! which is removed at the end, whether the run succeeded or not, unless `--keep`.

use std::path::{Path, PathBuf};

use crate::apply::resolve_passwords;
use crate::emulator::{self, EmulatorConfig};
use crate::error::{Error, Exit};
use crate::manifest;
use crate::output::Output;
use crate::oz::{ClientConfig, OzClient, VersionSetting};
use crate::render;
use crate::token_store::{DirStore, Installation};

use super::interrupt::Interrupt;
use super::settings::{DemoSettings, StoreSpec, Tokens};
use super::{execute, make_plan, open_store, plan_exit, plan_options};

/// The example manifests, as shipped in `examples/basic`.
const MANIFESTS: [(&str, &str); 2] = [
    ("companies.yaml", include_str!("../../examples/basic/companies.yaml")),
    ("service-users.yaml", include_str!("../../examples/basic/service-users.yaml")),
];

pub async fn run(settings: DemoSettings, output: &Output) -> Result<Exit, Error> {
    let dir = demo_dir()?;
    let result = run_in(&dir, &settings, output).await;
    if settings.keep {
        output.status(&format!("kept {} (manifests and token files)", dir.display()));
    } else if let Err(e) = std::fs::remove_dir_all(&dir) {
        output.warn(&format!("cannot remove the demo directory {}: {e}", dir.display()));
    }
    result
}

async fn run_in(dir: &Path, settings: &DemoSettings, output: &Output) -> Result<Exit, Error> {
    let api_version = settings.api_version;
    let manifests = dir.join("manifests");
    write_manifests(&manifests)?;
    let token_dir = dir.join("tokens");

    let handle = emulator::start(EmulatorConfig::new(api_version)).await?;
    output.status(&format!("emulator: Oz API {api_version} at {}", handle.url()));
    output.status(&format!("manifests: {}", manifests.display()));

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
    let store = open_store(&tokens, &handle.url(), [], &env);
    let style = render::Style { color: output.color };
    let desired = manifest::load(std::slice::from_ref(&manifests), &env)?;
    let options = plan_options(&desired, &tokens, &[], &env);

    output.print("\n== 1. ozform plan\n\n");
    let first = make_plan(&client, &desired, store.as_ref(), &options).await?;
    output.print(&render::text(&first, &style));

    output.print("\n== 2. ozform apply --auto-approve\n\n");
    let passwords = resolve_passwords(&first, &env)?;
    let report =
        execute(&first, client.clone(), store.clone(), passwords, 8, &Interrupt::never(), output).await?;
    output.print(&format!("{}\n", report.summary_line()));
    report.into_result()?;

    handle.reset_stats();
    output.print("\n== 3. ozform plan (again: nothing left to do)\n\n");
    let options = plan_options(&desired, &tokens, &[], &env);
    let second = make_plan(&client, &desired, store.as_ref(), &options).await?;
    output.print(&render::text(&second, &style));
    let stats = handle.stats();

    // The directory store keeps them in the installation's directory (the emulator's origin).
    let kept = DirStore::new(&token_dir, Installation::of_api(&handle.url())).dir().to_path_buf();
    output.print(&format!("\nTokens were written to {} (mode 0600):\n", kept.display()));
    for name in token_files(&kept)? {
        output.print(&format!("  {name}\n"));
    }
    if !settings.keep {
        output.print(
            "They are removed with the demo's directory at the end; `ozform demo --keep` keeps them.\n",
        );
    }
    output.print(&format!(
        "The second plan read live state in {} requests and changed nothing ({} mutating).\n",
        stats.total_requests, stats.mutating_requests
    ));
    handle.shutdown().await;
    plan_exit(&second, false)
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
