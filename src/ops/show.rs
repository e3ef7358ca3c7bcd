//! `show`: a saved plan read and checked, for the command line to render as `plan` renders it
//! (text, Markdown within `--max-bytes`, or the saved plan format again), for a reviewer or a
//! CI job holding only the file. No network, no manifests, no token store: the plan is all
//! there is. `apply --plan` reads its plan the same way.
//!
//! The file is untrusted input: it is read only when it is a regular file of at most
//! `MAX_PLAN_BYTES`, checked whole by `plan::format::from_json` (its `plan_id` included), and
//! every value it holds is escaped by the renderers.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::plan::{Plan, PlanError, format};

/// The most saved plans `show DIR` and `apply --plan DIR` read from one directory.
pub const MAX_SAVED_PLANS: usize = 1000;

/// The largest saved plan `show` and `apply --plan` read: far beyond a plan of 100,000 changes.
pub const MAX_PLAN_BYTES: u64 = 256 * 1024 * 1024;

/// The saved plan at `path`, read and checked whole, for the command line to render.
pub fn run(path: &Path) -> Result<Plan, Error> {
    read(path)
}

/// Each saved plan of a directory (`plan --out DIR`), in the order of their file names, with
/// the name of its installation: the one it records, else its file's stem.
pub fn run_dir(dir: &Path) -> Result<Vec<(String, Plan)>, Error> {
    let mut plans = Vec::new();
    for file in plan_files(dir)? {
        let plan = read(&file)?;
        let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        plans.push((plan.installation.clone().unwrap_or(stem), plan));
    }
    if plans.is_empty() {
        return Err(Error::Usage {
            message: format!("`{}` holds no saved plan", crate::escape::terminal(&dir.display().to_string())),
            help: "save plans there with `ozform plan --out DIR`".into(),
        });
    }
    Ok(plans)
}

/// The `*.json` files directly in `dir` (not hidden: the atomic writes' temp files are),
/// sorted; at most `MAX_SAVED_PLANS`.
pub fn plan_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let io = |e: std::io::Error| Error::Io {
        action: "read",
        path: dir.display().to_string(),
        reason: e.to_string(),
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.starts_with('.') || path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        files.push(path);
        if files.len() > MAX_SAVED_PLANS {
            return Err(Error::Usage {
                message: format!("`{}` holds more than {MAX_SAVED_PLANS} plans", dir.display()),
                help: "give a directory that `ozform plan --out DIR` wrote".into(),
            });
        }
    }
    files.sort();
    Ok(files)
}

/// Read and check a saved plan (`show`, `apply --plan`): a regular file, at most `MAX_PLAN_BYTES`, UTF-8, a valid plan.
pub(super) fn read(path: &Path) -> Result<Plan, Error> {
    let unreadable = |reason: String| PlanError::Unreadable {
        path: crate::escape::terminal(&path.display().to_string()).into_owned(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| unreadable(e.kind().to_string()))?;
    let meta = file.metadata().map_err(|e| unreadable(e.kind().to_string()))?;
    if !meta.is_file() {
        return Err(unreadable("it is not a regular file".into()).into());
    }
    let mut bytes = Vec::new();
    file.take(MAX_PLAN_BYTES + 1).read_to_end(&mut bytes).map_err(|e| unreadable(e.kind().to_string()))?;
    if bytes.len() as u64 > MAX_PLAN_BYTES {
        return Err(unreadable(format!("it is larger than {} MiB", MAX_PLAN_BYTES / 1024 / 1024)).into());
    }
    let text = String::from_utf8(bytes).map_err(|_| unreadable("it is not UTF-8 text".into()))?;
    Ok(format::from_json(&text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_or_a_missing_file_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("it is not a regular file"), "{err}");
        let err = read(&dir.path().join("nope.json")).unwrap_err().to_string();
        assert!(err.starts_with("cannot read plan file") && err.contains("nope.json"), "{err}");
        std::fs::write(dir.path().join("bad.json"), b"\xff\xfe").unwrap();
        let err = read(&dir.path().join("bad.json")).unwrap_err().to_string();
        assert!(err.contains("it is not UTF-8 text"), "{err}");
    }
}
