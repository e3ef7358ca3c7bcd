//! `export`: read live state through a read-only client and write it as a manifest (adoption
//! of an existing installation, disaster recovery). The conversion is the pure
//! `manifest::export::to_document`; this file only connects, observes and writes.
//!
//! The only side effect is `--out FILE`, written atomically (temp file in the same directory,
//! fsync, rename): a reader never sees half a manifest. Without `--out` the manifest goes to
//! stdout and every note to stderr, so `ozform export > all.yaml` stays a clean manifest.

use crate::error::{Error, Exit};
use crate::manifest::export::{ExportOptions, LeftOut, to_document};
use crate::output::Output;
use crate::secret::process_env;

use super::files::write_atomically;
use super::settings::ExportSettings;
use super::{connect, required_url};

pub async fn run(settings: ExportSettings, output: &Output) -> Result<Exit, Error> {
    let url = required_url(&settings.connection)?;
    let client = connect(&settings.connection, url, true, &process_env).await?;
    let observed = client.observe(&settings.companies).await?;
    let options = ExportOptions { companies: settings.companies.clone(), tokens: settings.tokens };
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
    if let Some(path) = &settings.out {
        write_atomically(path, yaml.as_bytes())?;
        output.status(&format!("{summary} to `{}`", path.display()));
    } else {
        output.print(&yaml);
        output.status(&summary);
    }
    Ok(Exit::Success)
}
