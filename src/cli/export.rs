//! `ozform export`: flags → `ops::settings::ExportSettings`, then `ops::export`; the manifest on
//! stdout (unless written to `--out`), the summary on stderr. With a project file, each
//! installation's manifest (several need `--out DIR`: `DIR/<installation>.yaml`), its summary
//! named, and exit 1 when any installation failed.

use crate::error::{Error, Exit};
use crate::manifest::export::ExportPasswords;
use crate::ops::Ran;
use crate::ops::export::ExportOutcome;
use crate::ops::settings::ExportSettings;
use crate::output::Output;
use crate::secret::process_env;

use super::ExportArgs;
use super::installations::{self, Tokenless, Wanted};
use super::report::Terminal;
use super::sections::{self, Sections};

pub async fn run(args: ExportArgs, output: &Output) -> Result<Exit, Error> {
    let wanted = Wanted::connection_only();
    let (installations, _) = installations::installations(
        &args.project,
        &args.connection,
        Tokenless::Names(&args.installation),
        wanted,
        &process_env,
    )?;
    if installations.each.len() > 1 && args.out.is_none() {
        return Err(Error::Usage {
            message: "this run exports several installations, and stdout holds one manifest".into(),
            help: "write each to a directory with `--out DIR` (`DIR/<installation>.yaml`), or name one with \
                   `--installation NAME`"
                .into(),
        });
    }
    let grouped = installations.project;
    let views = Sections::new(output, Terminal::new(output), &installations, false);
    let settings = ExportSettings {
        out: installations::out(args.out, &installations),
        installations,
        companies: args.companies,
        tokens: args.tokens,
        passwords: if args.password_env { ExportPasswords::Env } else { ExportPasswords::Generate },
    };
    let outcomes = crate::ops::export::run(settings, &views).await;
    if !grouped {
        show(&super::plan::single(outcomes)?, None, output);
        return Ok(Exit::Success);
    }
    let mut exit = Exit::Success;
    for each in outcomes {
        let name = sections::name(&each).to_string();
        match each.ran {
            Ran::Done(outcome) => show(&outcome, Some(&name), output),
            Ran::Failed(error) => {
                sections::report_error(output, &name, error);
                exit = Exit::Failure;
            }
            Ran::NotStarted => exit = Exit::Failure,
        }
    }
    Ok(exit)
}

/// The manifest on stdout, or where it was written, and the summary (named with the project
/// file's installation).
fn show(outcome: &ExportOutcome, name: Option<&str>, output: &Output) {
    let summary = match name {
        Some(name) => format!("`{name}`: {}", outcome.summary),
        None => outcome.summary.clone(),
    };
    match (&outcome.manifest, &outcome.written) {
        (_, Some(path)) => output.status(&format!("{summary} to `{}`", path.display())),
        (Some(manifest), None) => {
            output.print_data(manifest);
            output.status(&summary);
        }
        (None, None) => output.status(&summary),
    }
}
