//! The plan as GitHub-flavoured Markdown for pull-request comments: the summary table first,
//! conflicts and warnings visible, then each change in a collapsed `<details>` section with a
//! `diff` block. Pure.
//!
//! Every value (from a manifest, the server or a saved plan) lands in one of three places, each
//! with its escaping from `crate::escape`: a code span (`markdown_code`; messages through
//! `markdown_message`, which puts their values in code spans), the `<code>` of a `<summary>`
//! line (`html`), or a fenced `diff` block (lines escaped by `detail`, the fence longer than
//! any backtick run inside). None can start a block, an image, a link, a mention or an HTML
//! element, nor close a `<details>`.

use std::fmt::Write as _;

use super::detail::{Detail, details, planned};
use crate::escape::{html, markdown_code as code, markdown_message as message};
use crate::plan::{Action, Plan};

/// The plan as Markdown, ending with a newline.
pub fn markdown(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### ozform plan");
    out.push('\n');
    let _ = writeln!(out, "{} · Oz API {}{}", code(&plan.api_url), plan.api_version, super::detected(plan));
    out.push('\n');
    let s = plan.summary();
    let _ = writeln!(out, "| | count |");
    let _ = writeln!(out, "|---|---:|");
    let _ = writeln!(out, "| `+` to create | {} |", s.create);
    let _ = writeln!(out, "| `~` to update | {} |", s.update);
    let _ = writeln!(out, "| `*` tokens to issue | {} |", s.issue);
    // Removal rows only when there are removals, so that additive plans read as they always did.
    if s.removals() > 0 {
        let _ = writeln!(out, "| `!` to deactivate | {} |", s.deactivate);
        let _ = writeln!(out, "| `-` to delete | {} |", s.delete);
    }
    let _ = writeln!(out, "| conflicts | {} |", plan.conflicts.len());
    let _ = writeln!(out, "| warnings | {} |", plan.warnings.len());
    out.push('\n');
    let _ = writeln!(out, "**{}**", super::footer(plan));
    out.push('\n');
    // The id twice: for the reader, and as a comment a CI script finds (`ozform-plan-id: `).
    let id = crate::plan::id::plan_id(plan);
    let _ = writeln!(out, "Plan id: `{id}`");
    out.push('\n');
    let _ = writeln!(out, "<!-- ozform-plan-id: {id} -->");
    out.push('\n');
    if s.removals() > 0 {
        // Said before anything else is read: a reviewer must not approve a removal unawares.
        let users = if s.removals() == 1 { "service user" } else { "service users" };
        let _ = writeln!(
            out,
            "> [!WARNING]\n> This plan removes {} {users}: {} to deactivate, {} to delete (see below).",
            s.removals(),
            s.deactivate,
            s.delete
        );
        out.push('\n');
    }

    if !plan.conflicts.is_empty() {
        let _ = writeln!(out, "#### Conflicts (not planned; fix them by hand)");
        out.push('\n');
        for c in &plan.conflicts {
            let _ = writeln!(out, "- **{}**: {}  ", code(&c.address.to_string()), message(&c.message));
            let _ = writeln!(out, "  help: {}", message(&c.help));
        }
        out.push('\n');
    }

    if !plan.warnings.is_empty() {
        let _ = writeln!(out, "#### Warnings");
        out.push('\n');
        for w in &plan.warnings {
            let _ = writeln!(out, "- {}", message(w));
        }
        out.push('\n');
    }

    if plan.has_changes() {
        let _ = writeln!(out, "#### Changes");
        out.push('\n');
    }
    let planned = planned(plan);
    for change in &plan.changes {
        let verb = match change.action() {
            Action::Create => "create",
            Action::Update => "update",
            Action::Issue => "issue",
            Action::Deactivate => "deactivate",
            Action::Delete => "delete",
        };
        let _ = writeln!(
            out,
            "<details><summary><code>{}</code> {verb} <code>{}</code></summary>",
            change.action().symbol(),
            html(&change.address.to_string())
        );
        out.push('\n');
        let mut block = String::new();
        for detail in details(change, &planned) {
            match detail {
                Detail::Note(note) => {
                    let _ = writeln!(block, "# {note}");
                }
                Detail::Set { field, lines } => {
                    for (i, line) in lines.iter().enumerate() {
                        if i == 0 {
                            let _ = writeln!(block, "+ {field} = {line}");
                        } else {
                            let _ = writeln!(block, "+   {line}");
                        }
                    }
                }
                Detail::Gone { field, lines } => {
                    for (i, line) in lines.iter().enumerate() {
                        if i == 0 {
                            let _ = writeln!(block, "- {field} = {line}");
                        } else {
                            let _ = writeln!(block, "-   {line}");
                        }
                    }
                }
                Detail::Change { field, before, after } => {
                    let _ = writeln!(block, "- {field} = {before}");
                    let _ = writeln!(block, "+ {field} = {after}");
                }
                Detail::Diff { field, lines } => {
                    let _ = writeln!(block, "  {field}:");
                    for (sign, line) in lines {
                        let _ = writeln!(block, "{}", format!("{sign}   {line}").trim_end());
                    }
                }
            }
        }
        if block.is_empty() {
            let _ = writeln!(
                block,
                "{} {}",
                change.action().symbol(),
                crate::escape::terminal(&change.address.to_string())
            );
        }
        let fence = fence(&block);
        let _ = write!(out, "{fence}diff\n{block}{fence}\n");
        out.push('\n');
        let _ = writeln!(out, "</details>");
        out.push('\n');
    }

    if !plan.unmanaged.is_empty() {
        let _ = writeln!(
            out,
            "<details><summary>Live users of declared companies that no manifest mentions ({})</summary>",
            plan.unmanaged.len()
        );
        out.push('\n');
        for u in &plan.unmanaged {
            let _ = writeln!(out, "- {} (company {})", code(u.email.as_str()), code(&u.company));
        }
        out.push('\n');
        let _ = writeln!(out, "</details>");
    }
    out
}

/// A code-block fence longer than any backtick run in `block` (at least three).
fn fence(block: &str) -> String {
    "`".repeat((crate::escape::longest_backtick_run(block) + 1).max(3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_code_survives_backticks_in_names() {
        assert_eq!(code("Acme"), "`Acme`");
        assert_eq!(code("a`b"), "`` a`b ``");
    }

    #[test]
    fn a_code_block_fence_is_longer_than_any_backtick_run_inside() {
        assert_eq!(fence("plain"), "```");
        assert_eq!(fence("x ```` y"), "`````");
    }

    #[test]
    fn html_in_summaries_is_escaped() {
        assert_eq!(html("company/<b>&"), "company/&lt;b&gt;&amp;");
    }

    #[test]
    fn inline_code_escapes_line_breaks_and_controls() {
        assert_eq!(code("a\n</details>\u{202e}"), "`a\\n</details>\\u{202e}`");
    }
}
