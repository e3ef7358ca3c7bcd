//! `export`: read live state through a read-only client and write it as a manifest (adoption
//! of an existing installation, disaster recovery). The conversion is the pure
//! `manifest::export::to_document`; this file only connects, observes and writes.
//!
//! The only side effect is `--out FILE`, written atomically (temp file in the same directory,
//! fsync, rename): a reader never sees half a manifest. Without `--out` the manifest is handed
//! back for the command line to print on stdout, with every note through the view (stderr), so
//! `ozform export > all.yaml` stays a clean manifest. A `--company` that matches no live company
//! is an error, as in `plan` and `apply`, and nothing is written. The schema comment points at
//! the nearest `schemas/ozform.schema.json` up from the file's directory (the working directory
//! for stdout), found here: the only other file access.

use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::manifest::export::{
    ExportOptions, LeftOut, SCHEMA_FILE, schema_path, to_document, unmatched_companies,
};
use crate::secret::process_env;
use crate::words::count;

use super::View;
use super::files::write_atomically;
use super::settings::ExportSettings;
use super::target::connect_to;

/// What `export` made.
#[derive(Debug)]
pub struct ExportOutcome {
    /// The manifest, when it was not written to a file (`--out`).
    pub manifest: Option<String>,
    /// The file it was written to.
    pub written: Option<PathBuf>,
    /// `exported 2 companies and 3 service users from URL (API 6)`.
    pub summary: String,
}

pub async fn run(settings: ExportSettings, view: &dyn View) -> Result<ExportOutcome, Error> {
    let client = connect_to(&settings.connection, true, &process_env).await?;
    let observed = client.observe(&settings.companies).await?;
    let options = ExportOptions { companies: settings.companies.clone(), tokens: settings.tokens };
    let unmatched = unmatched_companies(&observed, &options);
    if !unmatched.is_empty() {
        let names = unmatched.iter().map(|n| format!("`--company {n}`")).collect::<Vec<_>>().join(", ");
        return Err(Error::Usage {
            message: format!("{names} matches no live company; nothing was exported"),
            help: "`--company` takes a live company's name exactly, as `ozform export` without it writes it"
                .into(),
        });
    }
    let export = to_document(&observed, &options);
    let yaml = export.to_yaml(&schema_path(schema_levels_up(settings.out.as_deref())));

    let not_service = export.left_out.iter().filter(|n| matches!(n, LeftOut::NotServiceUser { .. })).count();
    if not_service > 0 {
        view.warning(&format!(
            "left out {} of exported companies that are not service users (ozform manages only service \
             users); the manifest lists them in comments at its end",
            count(not_service, "user", "users")
        ));
    }
    for note in export.left_out.iter().filter(|n| !matches!(n, LeftOut::NotServiceUser { .. })) {
        view.warning(&note.to_string());
    }
    let summary = format!(
        "exported {} and {} from {} (API {})",
        count(export.document.companies.len(), "company", "companies"),
        count(export.document.service_users.len(), "service user", "service users"),
        export.api_url,
        export.api_version
    );
    if let Some(path) = &settings.out {
        write_atomically(path, yaml.as_bytes())?;
        return Ok(ExportOutcome { manifest: None, written: Some(path.clone()), summary });
    }
    Ok(ExportOutcome { manifest: Some(yaml), written: None, summary })
}

/// How many directories up from the manifest's directory (that of `out`, else the working
/// directory) the nearest `schemas/ozform.schema.json` lies; 0 when there is none, so that the
/// comment names the directory's own `schemas/`, where `ozform schema` can put it.
fn schema_levels_up(out: Option<&Path>) -> usize {
    let dir = match out.and_then(Path::parent) {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Ok(dir) = dir.canonicalize() else { return 0 };
    dir.ancestors().position(|ancestor| ancestor.join(SCHEMA_FILE).is_file()).unwrap_or(0)
}
