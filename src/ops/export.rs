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
//! for stdout), found here: the only other file access. With several installations (a project
//! file), each is exported to `--out DIR/<installation>.yaml`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::Error;
use crate::manifest::export::{
    ExportOptions, LeftOut, SCHEMA_FILE, schema_path, to_document, unmatched_companies,
};
use crate::secret::process_env;
use crate::words::count;

use super::View;
use super::each::{Each, Order, Views, each};
use super::files::write_atomically;
use super::settings::{ExportSettings, InstallationSettings, Out};
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

/// Export each installation of the settings (with several, each to `--out DIR/<name>.yaml`);
/// one failing does not stop the others.
pub async fn run(settings: ExportSettings, views: &dyn Views<ExportOutcome>) -> Vec<Each<ExportOutcome>> {
    let installations = settings.installations.refs();
    let order = Order { parallelism: settings.installations.parallelism, stop_after_failure: false };
    each(
        &installations,
        order,
        views,
        None,
        |_| false,
        |index: usize, view: Arc<dyn View>| export_one(&settings, &settings.installations.each[index], view),
    )
    .await
}

async fn export_one(
    settings: &ExportSettings,
    installation: &InstallationSettings,
    view: Arc<dyn View>,
) -> Result<ExportOutcome, Error> {
    let view = &*view;
    let client = connect_to(&installation.connection, true, &process_env).await?;
    let observed = client.observe(&settings.companies).await?;
    let options = ExportOptions {
        companies: settings.companies.clone(),
        tokens: settings.tokens,
        passwords: settings.passwords,
    };
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
    let out = settings.out.as_ref().map(|out| out.file_for(installation.name.as_deref(), "yaml"));
    let yaml = export.to_yaml(&schema_path(schema_levels_up(out.as_deref())));

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
    if let Some(path) = out {
        if let Some(Out::Dir(dir)) = &settings.out {
            std::fs::create_dir_all(dir).map_err(|e| Error::Io {
                action: "create",
                path: dir.display().to_string(),
                reason: e.to_string(),
            })?;
        }
        write_atomically(&path, yaml.as_bytes())?;
        return Ok(ExportOutcome { manifest: None, written: Some(path), summary });
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
