//! `ops::Target`, one installation as a value: planning reads the token store on the blocking
//! pool, so a slow `exec:` helper never holds up the runtime's workers.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ozform::model::ApiVersion;
use ozform::ops::Target;
use ozform::plan::PlanOptions;
use ozform::token_store::{ExecStore, Installation};

use crate::common::emulator::{Emulator, connect};

/// A helper whose `list` says it started (`started` in `dir`), then waits, up to 10 s, until
/// the file `go` appears there; only then does it answer. It gives up (exit 1) otherwise.
fn waiting_helper(dir: &Path) -> Vec<String> {
    let script = dir.join("helper");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$1\" in\nlist)\n  : > '{dir}/started'\n  i=0\n  while [ ! -e '{dir}/go' ]; do\n    i=$((i+1)); [ \"$i\" -gt 1000 ] && {{ echo 'nobody said go' >&2; exit 1; }}\n    sleep 0.01\n  done\n  echo '{{\"protocol\": 1, \"entries\": []}}' ;;\n*) exit 1 ;;\nesac\n",
            dir = dir.display()
        ),
    )
    .unwrap();
    std::process::Command::new("chmod").arg("+x").arg(&script).status().unwrap();
    vec![script.display().to_string()]
}

#[test]
fn a_slow_exec_helper_s_list_leaves_the_runtime_free_for_other_futures() {
    // One worker thread: if `list` ran on it, nothing else could run until the helper gave up.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let emu = Emulator::new(ApiVersion::V6).start().await;
        let client = connect(&emu, |_| {}).await;
        let installation = Installation::of_api(&emu.url());
        let store = ExecStore::new(waiting_helper(&dir), Duration::from_secs(30), installation.clone());
        let target = Target::new(client, Arc::new(store), installation);
        let desired = ozform::manifest::load(&[crate::common::root().join("examples/basic")], &|name| {
            name.ends_with("_PASSWORD").then(|| "unused".to_string())
        })
        .unwrap();

        // Another future on the same thread: it sees the helper start, then tells it to go on.
        let meanwhile = async {
            while !dir.join("started").exists() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            std::fs::write(dir.join("go"), "").unwrap();
        };
        let options = PlanOptions::default();
        let (plan, ()) = tokio::join!(target.plan(&desired, &options), meanwhile);
        let plan = plan.expect("the plan, made while the other future ran");
        assert!(plan.has_changes(), "the basic example against an empty installation");
        emu.shutdown().await;
    });
}
