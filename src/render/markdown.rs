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

use std::collections::HashSet;

use super::detail::{Detail, details, planned};
use crate::escape::{html, markdown_code as code, markdown_message as message};
use crate::plan::{Action, Address, Change, Plan, group_warnings};

/// The plan as Markdown, ending with a newline.
pub fn markdown(plan: &Plan) -> String {
    markdown_within(plan, None)
}

/// The plan as Markdown, at most `max_bytes` long when given (a pull-request comment has a
/// size limit): when the whole plan is longer, the head (the summary, the plan id, the removal
/// alert) and, as they fit, the removals, the conflicts, the warnings, the other changes and
/// the unmanaged users, in that order of priority; each section then ends with "… N more
/// changes: the whole plan is in the job's artifact `plan.md`" (or conflicts, warnings,
/// users). Every section left is whole (`<details>` closed), so the document is valid. The
/// head alone is always written, even past `max_bytes`.
pub fn markdown_within(plan: &Plan, max_bytes: Option<usize>) -> String {
    let head = head(plan);
    let mut sections = sections(plan);
    let whole = head.len() + sections.iter().map(Section::whole_len).sum::<usize>();
    if max_bytes.is_none_or(|max| whole <= max) {
        sections.iter_mut().for_each(Section::include_all);
    } else if let Some(max) = max_bytes {
        fit(&mut sections, max.saturating_sub(head.len()));
    }
    let mut out = head;
    for section in &sections {
        section.write(&mut out);
    }
    out
}

/// The title, the API, the summary table, the footer, the plan id and the removal alert.
fn head(plan: &Plan) -> String {
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
    let _ = writeln!(out, "| warnings | {} |", group_warnings(&plan.warnings).len());
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
    out
}

/// One section of the plan below its head: a header, items (each whole Markdown), a footer.
struct Section {
    header: String,
    footer: String,
    /// What the items are, in the note of those left out: (one, many).
    noun: (&'static str, &'static str),
    items: Vec<Item>,
    /// The bytes of the items included, and how many are not (kept as items are included, so
    /// that fitting a plan of many changes stays linear).
    included_len: usize,
    omitted: usize,
}

struct Item {
    text: String,
    /// Tried before the other items when the plan does not fit (removals).
    first: bool,
    included: bool,
}

impl Section {
    fn new(header: String, footer: &str, noun: (&'static str, &'static str), items: Vec<Item>) -> Self {
        let omitted = items.len();
        Self { header, footer: footer.to_string(), noun, items, included_len: 0, omitted }
    }

    /// The length of the section with every item.
    fn whole_len(&self) -> usize {
        if self.items.is_empty() {
            return 0;
        }
        self.header.len() + self.footer.len() + self.items.iter().map(|i| i.text.len()).sum::<usize>()
    }

    fn include_all(&mut self) {
        for i in 0..self.items.len() {
            self.include(i);
        }
    }

    fn include(&mut self, i: usize) {
        if !self.items[i].included {
            self.items[i].included = true;
            self.included_len += self.items[i].text.len();
            self.omitted -= 1;
        }
    }

    fn exclude(&mut self, i: usize) {
        if self.items[i].included {
            self.items[i].included = false;
            self.included_len -= self.items[i].text.len();
            self.omitted += 1;
        }
    }

    /// The line saying how many items were left out, or nothing.
    fn note(&self, omitted: usize) -> String {
        if omitted == 0 {
            return String::new();
        }
        let noun = if omitted == 1 { self.noun.0 } else { self.noun.1 };
        format!("… {omitted} more {noun}: the whole plan is in the job's artifact `plan.md`\n\n")
    }

    /// The length of the section as it stands.
    fn len(&self) -> usize {
        if self.items.is_empty() {
            return 0;
        }
        self.header.len() + self.included_len + self.note(self.omitted).len() + self.footer.len()
    }

    fn write(&self, out: &mut String) {
        if self.items.is_empty() {
            return;
        }
        out.push_str(&self.header);
        for item in self.items.iter().filter(|i| i.included) {
            out.push_str(&item.text);
        }
        out.push_str(&self.note(self.omitted));
        out.push_str(&self.footer);
    }
}

/// Include items while the sections fit in `budget` bytes: first the items marked `first`
/// (removals), then every section's other items in the order of the sections, each section's
/// in order, up to the first that does not fit.
fn fit(sections: &mut [Section], budget: usize) {
    let mut used: usize = sections.iter().map(Section::len).sum();
    for first in [true, false] {
        for section in sections.iter_mut() {
            for i in 0..section.items.len() {
                if section.items[i].first != first {
                    continue;
                }
                let before = section.len();
                section.include(i);
                let after = section.len();
                if used - before + after > budget {
                    section.exclude(i);
                    break;
                }
                used = used - before + after;
            }
        }
    }
}

/// The sections below the head, every item not yet included.
fn sections(plan: &Plan) -> Vec<Section> {
    let item = |text: String, first: bool| Item { text, first, included: false };
    let conflicts = plan
        .conflicts
        .iter()
        .map(|c| {
            let text = format!(
                "- **{}**: {}  \n  help: {}\n",
                code(&c.address.to_string()),
                message(&c.message),
                message(&c.help)
            );
            item(text, false)
        })
        .collect();
    let warnings =
        group_warnings(&plan.warnings).iter().map(|w| item(format!("- {}\n", message(w)), false)).collect();
    let planned = planned(plan);
    let changes =
        plan.changes.iter().map(|c| item(change_section(c, &planned), c.action().is_removal())).collect();
    let unmanaged = plan
        .unmanaged
        .iter()
        .map(|u| item(format!("- {} (company {})\n", code(u.email.as_str()), code(&u.company)), false))
        .collect();
    vec![
        Section::new(
            "#### Conflicts (not planned; fix them by hand)\n\n".into(),
            "\n",
            ("conflict", "conflicts"),
            conflicts,
        ),
        Section::new("#### Warnings\n\n".into(), "\n", ("warning", "warnings"), warnings),
        Section::new("#### Changes\n\n".into(), "", ("change", "changes"), changes),
        Section::new(
            format!(
                "<details><summary>Live users of declared companies that no manifest mentions ({})</summary>\n\n",
                plan.unmanaged.len()
            ),
            "\n</details>\n",
            ("user", "users"),
            unmanaged,
        ),
    ]
}

/// One change: a collapsed `<details>` whose summary names the action and the address, with a
/// `diff` block of its details.
fn change_section(change: &Change, planned: &HashSet<&Address>) -> String {
    let mut out = String::new();
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
    for detail in details(change, planned) {
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
