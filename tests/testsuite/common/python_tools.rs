//! The Python tools some tests drive as real neighbours (moto's server, the aws CLI,
//! check-jsonschema, hadolint, shellcheck), from the virtualenv that
//! `.ci/python-tools` makes under the target directory. A test that needs one never skips:
//! when they cannot be installed it fails and says why.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The path of the tool `name` (e.g. `moto_server`, `aws`, `shellcheck`), installing the
/// tools on first need.
pub fn python_tool(name: &str) -> PathBuf {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let bin = BIN.get_or_init(|| {
        let script = super::root().join(".ci/python-tools");
        let out = Command::new(&script)
            .env("CARGO_TARGET_DIR", target_dir())
            .output()
            .map_err(|e| format!("cannot run `{}`: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "`{}` failed ({}): the Python test tools come from PyPI into a virtualenv under the \
                 target directory\n{}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    });
    match bin {
        Ok(dir) => {
            let tool = dir.join(name);
            assert!(tool.exists(), "the Python tools have no `{name}` in {}", dir.display());
            tool
        }
        Err(why) => panic!("{why}"),
    }
}

/// The target directory this test was built in (`CARGO_TARGET_TMPDIR` is its `tmp`).
fn target_dir() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().map_or(tmp.clone(), std::path::Path::to_path_buf)
}
