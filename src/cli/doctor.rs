//! `ozform doctor`: flags → `ops::doctor::DoctorSettings`, then `ops::doctor::run`; the report
//! it returns rendered as text or JSON, and its verdict as the exit code (0 usable, 1 not).
//!
//! The findings hold what the server sent (field names, a certificate's subject, error
//! messages): the text report escapes every character a terminal would act on, and the JSON
//! report writes them as `\u` escapes (`crate::escape`, one function per medium).

use std::fmt::Write as _;

use crate::error::{Error, Exit};
use crate::escape::terminal;
use crate::ops::Ran;
use crate::ops::doctor::{DoctorSettings, Report};
use crate::output::Output;
use crate::secret::process_env;

use super::installations::{self, Tokenless, Wanted};
use super::report::Terminal;
use super::sections::{self, Sections};
use super::{DoctorArgs, DoctorFormat};

pub async fn run(args: DoctorArgs, output: &Output) -> Result<Exit, Error> {
    let wanted = Wanted::connection_only();
    let (installations, _) = installations::installations(
        &args.project,
        &args.connection,
        Tokenless::Tokens(&args.tokens),
        wanted,
        &process_env,
    )?;
    let grouped = installations.project;
    let views = Sections::new(output, Terminal::new(output), &installations, false);
    let settings = DoctorSettings { installations };
    let outcomes = crate::ops::doctor::run(&settings, &views, &process_env).await;
    if !grouped {
        let report = super::plan::single(outcomes)?;
        match args.format {
            DoctorFormat::Json => output.print(&format!("{}\n", json(&report)?)),
            DoctorFormat::Text => output.print(&text(&report)),
        }
        return Ok(exit(&report));
    }
    // With a project file: a section (text) or an entry (JSON) per installation.
    let mut code = Exit::Success;
    let mut entries = Vec::new();
    let mut shown = String::new();
    let mut errors = Vec::new();
    for each in outcomes {
        let name = sections::name(&each).to_string();
        match each.ran {
            Ran::Done(report) => {
                code = sections::most_severe(code, exit(&report));
                shown.push_str(&sections::heading(&name, &report.api_url));
                shown.push_str(&text(&report));
                entries.push(serde_json::json!({"installation": name, "report": report}));
            }
            Ran::Failed(error) => {
                code = Exit::Failure;
                shown.push_str(&sections::heading(&name, &each.api_url));
                let _ = writeln!(
                    shown,
                    "ozform doctor could not look at this installation: {}",
                    terminal(&error.to_string())
                );
                entries.push(serde_json::json!({"installation": name, "error": error.to_string()}));
                errors.push((name, error));
            }
            Ran::NotStarted => code = Exit::Failure,
        }
    }
    match args.format {
        DoctorFormat::Json => output.print(&format!("{}\n", json(&entries)?)),
        DoctorFormat::Text => output.print(&shown),
    }
    for (name, error) in errors {
        sections::report_error(output, &name, error);
    }
    Ok(code)
}

/// 0 when ozform can work with the installation, 1 when a finding fails.
fn exit(report: &Report) -> Exit {
    if report.usable { Exit::Success } else { Exit::Failure }
}

/// `{"api_url", "usable", "findings": [{"check", "status", "summary", "meaning"}]}`, pretty;
/// with a project file, a list of `{"installation", "report"}` (or `"error"`).
fn json<T: serde::Serialize + ?Sized>(report: &T) -> Result<String, Error> {
    crate::escape::json_pretty(report).map_err(|e| Error::Usage {
        message: format!("cannot print the report: {e}"),
        help: "report this as a bug".into(),
    })
}

/// The report as text: one line per finding, its meaning indented below, then the verdict.
fn text(report: &Report) -> String {
    let mut text = format!("ozform doctor: {}\n\n", terminal(&report.api_url));
    for f in &report.findings {
        // Writing to a String cannot fail.
        let _ = writeln!(text, "{:<4}  {:<12} {}", f.status.label(), f.check, terminal(&f.summary));
        let _ = writeln!(text, "{:18} {}", "", terminal(&f.meaning));
    }
    text.push_str(if report.usable {
        "\nozform can work with this installation.\n"
    } else {
        "\nozform cannot work with this installation as it is: see the FAIL lines above.\n"
    });
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::doctor::{Finding, Status};

    fn report(usable: bool, summary: &str) -> Report {
        Report {
            api_url: "https://oz.example".into(),
            usable,
            findings: vec![Finding {
                check: "objects",
                status: if usable { Status::Ok } else { Status::Fail },
                summary: summary.into(),
                meaning: "read as they are".into(),
            }],
        }
    }

    #[test]
    fn the_text_report_is_a_line_per_finding_its_meaning_below_and_the_verdict_last() {
        assert_eq!(
            text(&report(true, "user objects carry every field")),
            "ozform doctor: https://oz.example\n\n\
             ok    objects      user objects carry every field\n\
             \x20                  read as they are\n\n\
             ozform can work with this installation.\n"
        );
        let failed = text(&report(false, "x"));
        assert!(failed.contains("FAIL  objects"), "{failed}");
        assert!(failed.ends_with("see the FAIL lines above.\n"), "{failed}");
    }

    #[test]
    fn what_a_server_sent_cannot_drive_the_terminal() {
        let shown = text(&report(true, "fields: `\u{1b}]0;owned\u{7}`, `a\nok    forged`, `\u{202e}txt`"));
        assert!(
            !shown.contains('\u{1b}') && !shown.contains('\u{7}') && !shown.contains('\u{202e}'),
            "{shown}"
        );
        assert!(shown.contains("`\\u{1b}]0;owned\\u{7}`"), "{shown}");
        assert!(!shown.contains("\nok    forged"), "{shown}");
        assert_eq!(shown.lines().count(), 6, "{shown}");
    }

    #[test]
    fn the_verdict_is_the_exit_code() {
        assert_eq!(exit(&report(true, "x")), Exit::Success);
        assert_eq!(exit(&report(false, "x")), Exit::Failure);
    }
}
