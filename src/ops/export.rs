//! `export`: read live state through a read-only client and write it as a manifest (adoption
//! of an existing installation, disaster recovery). The conversion is the pure
//! `manifest::export::to_document`; this file only connects, observes and writes.
//!
//! The only side effect is `--out FILE`, written atomically (temp file in the same directory,
//! fsync, rename): a reader never sees half a manifest. Without `--out` the manifest is handed
//! back for the command line to print on stdout, with every note through the view (stderr), so
//! `ozform export > all.yaml` stays a clean manifest.

use std::path::PathBuf;

use crate::error::Error;
use crate::manifest::export::{ExportOptions, LeftOut, to_document};
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
    let export = to_document(&observed, &options);
    let yaml = export.to_yaml();

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
