//! The text plan, like Terraform's: a header naming the API, one block per change (`+`
//! create, `~` update with old → new per field, `*` issue with its reason, `!` deactivate and
//! `-` delete with theirs), then conflicts,
//! unmanaged users, warnings, the footer and the plan id. ANSI colour only when `Style::color`. Pure.
//!
//! The renderer escapes every value itself (`escape::terminal`; the details come escaped from
//! `detail`), since its own colour codes must pass: `output` writes the text as it is.

use std::fmt::Write as _;

use super::Style;
use super::detail::{Detail, details, field_width, planned};
use crate::escape::terminal;
use crate::plan::{Action, Plan};

const RESET: &str = "\x1b[0m";
const BOLD: &str = "\x1b[1m";
const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const MAGENTA: &str = "\x1b[35m";
const CYAN: &str = "\x1b[36m";

/// Wraps text in ANSI codes when colour is on; plain otherwise.
struct Paint(bool);

impl Paint {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.0 { format!("{code}{text}{RESET}") } else { text.to_string() }
    }
}

/// The plan as text for a terminal (or a log), ending with a newline.
pub fn text(plan: &Plan, style: &Style) -> String {
    let p = Paint(style.color);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Plan for {} (Oz API {}{})",
        terminal(&plan.api_url),
        plan.api_version,
        super::detected(plan)
    );
    out.push('\n');

    if plan.has_changes() {
        // The removal symbols join the legend only when there are removals, so that additive
        // plans read as they always did.
        let removals = if plan.has_removals() {
            format!(", {} deactivate, {} delete", p.paint(MAGENTA, "!"), p.paint(RED, "-"))
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "ozform will perform these actions ({} create, {} update, {} issue{removals}):",
            p.paint(GREEN, "+"),
            p.paint(YELLOW, "~"),
            p.paint(CYAN, "*")
        );
        out.push('\n');
    }
    let planned = planned(plan);
    for change in &plan.changes {
        let colour = match change.action() {
            Action::Create => GREEN,
            Action::Update => YELLOW,
            Action::Issue => CYAN,
            Action::Deactivate => MAGENTA,
            Action::Delete => RED,
        };
        let symbol = change.action().symbol().to_string();
        let _ = writeln!(
            out,
            "  {} {} {}",
            p.paint(colour, &symbol),
            p.paint(BOLD, &terminal(&change.address.to_string())),
            verb(change.action())
        );
        let details = details(change, &planned);
        let width = field_width(&details);
        for detail in &details {
            match detail {
                Detail::Note(note) => {
                    let _ = writeln!(out, "      # {}", terminal(note));
                }
                Detail::Set { field, lines } => {
                    let (first, rest) = lines.split_first().map_or(("", &[][..]), |(f, r)| (f.as_str(), r));
                    let _ = writeln!(out, "      {field:<width$} = {first}");
                    for line in rest {
                        let _ = writeln!(out, "      {:width$}   {line}", "");
                    }
                }
                Detail::Gone { field, lines } => {
                    let (first, rest) = lines.split_first().map_or(("", &[][..]), |(f, r)| (f.as_str(), r));
                    let _ = writeln!(out, "      {}", p.paint(RED, &format!("{field:<width$} = {first}")));
                    for line in rest {
                        let _ = writeln!(out, "      {}", p.paint(RED, &format!("{:width$}   {line}", "")));
                    }
                }
                Detail::Change { field, before, after } => {
                    let _ = writeln!(
                        out,
                        "      {field:<width$} = {} → {}",
                        p.paint(RED, before),
                        p.paint(GREEN, after)
                    );
                }
                Detail::Diff { field, lines } => {
                    let _ = writeln!(out, "      {field}:");
                    for (sign, line) in lines {
                        let body = format!("{sign} {line}");
                        let painted = match sign {
                            '-' => p.paint(RED, &body),
                            '+' => p.paint(GREEN, &body),
                            _ => body,
                        };
                        let _ = writeln!(out, "        {}", painted.trim_end());
                    }
                }
            }
        }
        out.push('\n');
    }

    if !plan.conflicts.is_empty() {
        let _ = writeln!(out, "{}", p.paint(RED, "Conflicts (not planned; fix them by hand):"));
        out.push('\n');
        for conflict in &plan.conflicts {
            let _ = writeln!(
                out,
                "  {} {}",
                p.paint(RED, "!"),
                p.paint(BOLD, &terminal(&conflict.address.to_string()))
            );
            let _ = writeln!(out, "      {}", terminal(&conflict.message));
            let _ = writeln!(out, "      help: {}", terminal(&conflict.help));
        }
        out.push('\n');
    }

    if !plan.unmanaged.is_empty() {
        let _ = writeln!(out, "Live users of declared companies that no manifest mentions (left alone):");
        out.push('\n');
        for u in &plan.unmanaged {
            let _ = writeln!(out, "  - {} (company {})", terminal(u.email.as_str()), terminal(&u.company));
        }
        out.push('\n');
    }

    if !plan.warnings.is_empty() {
        let _ = writeln!(out, "{}", p.paint(YELLOW, "Warnings:"));
        out.push('\n');
        for warning in &crate::plan::group_warnings(&plan.warnings) {
            let _ = writeln!(out, "  {} {}", p.paint(YELLOW, "!"), terminal(warning));
        }
        out.push('\n');
    }

    if let Some(note) = super::conflict_note(plan) {
        let _ = writeln!(out, "{}", p.paint(RED, &note));
    }
    let _ = writeln!(out, "{}", p.paint(BOLD, &super::footer(plan)));
    let _ = writeln!(out, "{}", super::plan_id_line(plan));
    out
}

fn verb(action: Action) -> &'static str {
    match action {
        Action::Create => "will be created",
        Action::Update => "will be updated in place",
        Action::Issue => "will be issued",
        Action::Deactivate => "will be deactivated",
        Action::Delete => "will be deleted",
    }
}
