//! `ozform export`: read live state through a read-only client and write it as a manifest
//! (adoption of an existing installation, disaster recovery). The conversion is the pure
//! `manifest::export::to_document`; this file only connects, observes and writes.
//!
//! The only side effect is `--out FILE`, written atomically (temp file in the same directory,
//! fsync, rename): a reader never sees half a manifest. Without `--out` the manifest goes to
//! stdout and every note to stderr, so `ozform export > all.yaml` stays a clean manifest.

use std::io::Write as _;
use std::path::Path;

use crate::error::{Error, Exit};
use crate::manifest::export::{ExportOptions, LeftOut, to_document};
use crate::output::Output;
use crate::oz::OzClient;
use crate::secret::process_env;

use super::{ExportArgs, connection};

pub async fn run(args: ExportArgs, output: &Output) -> Result<Exit, Error> {
    let config = connection::client_config(&args.connection, &process_env, true, None)?;
    let client = OzClient::connect(config).await?;
    let observed = client.observe(&args.companies).await?;
    let options = ExportOptions { companies: args.companies.clone(), tokens: args.tokens };
    let export = to_document(&observed, &options);
    let yaml = export.to_yaml();

    let not_service = export.left_out.iter().filter(|n| matches!(n, LeftOut::NotServiceUser { .. })).count();
    if not_service > 0 {
        output.warn(&format!(
            "left out {not_service} user(s) of exported companies that are not service users (ozform manages \
             only service users); the manifest lists them in comments at its end"
        ));
    }
    for note in export.left_out.iter().filter(|n| !matches!(n, LeftOut::NotServiceUser { .. })) {
        output.warn(&note.to_string());
    }
    let summary = format!(
        "exported {} companies and {} service users from {} (API {})",
        export.document.companies.len(),
        export.document.service_users.len(),
        export.api_url,
        export.api_version
    );
    if let Some(path) = &args.out {
        write_atomically(path, yaml.as_bytes())?;
        output.status(&format!("{summary} to `{}`", path.display()));
    } else {
        output.print(&yaml);
        output.status(&summary);
    }
    Ok(Exit::Success)
}

/// Write `bytes` to a fresh temp file next to `path`, fsync it, and rename it over `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let io = |action: &'static str, at: &Path, e: &std::io::Error| Error::Io {
        action,
        path: at.display().to_string(),
        reason: e.to_string(),
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().map_or_else(|| "export".into(), |n| n.to_string_lossy().into_owned());
    let temp = dir.join(format!(".{name}.tmp-{:016x}", fastrand::u64(..)));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .and_then(|mut file| file.write_all(bytes).and_then(|()| file.sync_all()))
        .map_err(|e| io("write", &temp, &e))
        .and_then(|()| std::fs::rename(&temp, path).map_err(|e| io("rename into place", path, &e)));
    if written.is_err() {
        // Best effort: do not leave the temp file behind.
        let _ = std::fs::remove_file(&temp);
    }
    written
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_atomic_write_replaces_the_file_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.yaml");
        std::fs::write(&path, "old").unwrap();
        write_atomically(&path, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn an_atomic_write_into_a_missing_directory_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_atomically(&dir.path().join("no/such/out.yaml"), b"x").unwrap_err();
        assert!(err.to_string().starts_with("cannot write"), "{err}");
    }
}
