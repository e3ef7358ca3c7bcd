//! The terminal as the views of an operation over installations (`ops::Views`), and the
//! grouped output of a run with a project file: one section per installation, then a total;
//! the exit code the most severe of the installations' (1 > 3 > 2 > 0).
//!
//! Without a project file the one installation's view is the plain `Terminal`, and every
//! command prints and exits as before project files. With one, what an installation says on
//! stderr (warnings, status) is prefixed with its name; plans are either shown as they come
//! (`apply`, which asks for approval after showing each) or handed back for the command to lay
//! out in order once every installation has ended (`plan`, so that overlapping installations
//! still read as one section each). Every value shown was escaped for its medium: names and
//! URLs come from the project file, messages from servers.

use std::fmt::Write as _;
use std::sync::Arc;

use crate::apply::Progress;
use crate::error::{Error, Exit};
use crate::escape::{markdown_code, markdown_message, terminal};
use crate::ops::settings::{InstallationSettings, Installations};
use crate::ops::{Each, Ran, View, Views};
use crate::output::Output;
use crate::plan::Plan;

use super::report::{PlanFormat, Terminal};

/// The views of a run: the plain terminal for a run without a project file, a named section
/// per installation with one.
pub struct Sections {
    output: Output,
    terminal: Terminal,
    grouped: bool,
    /// Show each plan through the terminal as it comes (`apply`); otherwise plans are left to
    /// the command (`plan`).
    show_plans: bool,
}

impl Sections {
    pub fn new(output: &Output, terminal: Terminal, installations: &Installations, show_plans: bool) -> Self {
        Self { output: output.clone(), terminal, grouped: installations.project, show_plans }
    }
}

impl<T> Views<T> for Sections {
    fn start(&self, _: usize, installation: &InstallationSettings) -> Arc<dyn View> {
        if !self.grouped {
            return Arc::new(self.terminal.clone());
        }
        let name = installation.name.clone().unwrap_or_default();
        if self.show_plans {
            self.output
                .print(&heading(&name, installation.connection.api_url.as_deref().unwrap_or_default()));
        }
        Arc::new(Section {
            output: self.output.clone(),
            terminal: self.terminal.clone(),
            name,
            show_plans: self.show_plans,
        })
    }

    fn end(&self, _: usize, _: &Ran<T>) {}

    fn overall(&self) -> Arc<dyn View> {
        Arc::new(self.terminal.clone())
    }
}

/// One installation's view in a grouped run.
struct Section {
    output: Output,
    terminal: Terminal,
    name: String,
    show_plans: bool,
}

impl View for Section {
    fn warning(&self, text: &str) {
        self.output.warn(&format!("`{}`: {text}", self.name));
    }
    fn status(&self, text: &str) {
        self.output.status(&format!("`{}`: {text}", self.name));
    }
    fn plan(&self, plan: &Plan) {
        if self.show_plans {
            self.terminal.plan(plan);
        }
    }
    fn text(&self, text: &str) {
        self.terminal.text(text);
    }
    fn progress(&self, total: usize) -> Arc<dyn Progress> {
        self.terminal.progress(total)
    }
}

/// The heading of an installation's section in text.
pub fn heading(name: &str, api_url: &str) -> String {
    format!("\n=== installation `{}` ({}) ===\n\n", terminal(name), terminal(api_url))
}

/// The name of an outcome's installation (`None` only without a project file).
pub fn name<T>(each: &Each<T>) -> &str {
    each.name.as_deref().unwrap_or_default()
}

/// The most severe of two exit codes: a signal, then 1, then 3, then 2, then 0.
pub fn most_severe(a: Exit, b: Exit) -> Exit {
    let rank = |e: Exit| match e {
        Exit::Success => 0,
        Exit::Changes => 1,
        Exit::Removals => 2,
        Exit::Failure => 3,
        Exit::Interrupted | Exit::Terminated => 4,
    };
    if rank(b) > rank(a) { b } else { a }
}

/// Report an installation's error (scrubbed, located), naming the installation.
pub fn report_error(output: &Output, name: &str, error: Error) {
    if matches!(error, Error::Cancelled) {
        return;
    }
    output.report(&miette::Report::new(error).wrap_err(format!("installation `{}`", terminal(name))));
}

/// The one-line outcome of an installation's plan: the footer, or why there is none.
fn plan_line<T>(each: &Each<T>, plan: impl Fn(&T) -> &Plan) -> String {
    match &each.ran {
        Ran::Done(outcome) => {
            let plan = plan(outcome);
            match crate::render::conflict_note(plan) {
                Some(note) => format!("{} {note}", crate::render::footer(plan)),
                None => crate::render::footer(plan),
            }
        }
        Ran::Failed(error) => format!("failed: {error}"),
        Ran::NotStarted => "not planned".to_string(),
    }
}

/// The total of a grouped plan: the changes of every installation planned, summed, and those
/// that failed.
pub fn total<T>(outcomes: &[Each<T>], plan: impl Fn(&T) -> &Plan) -> String {
    let plans: Vec<&Plan> = outcomes.iter().filter_map(|e| e.ran.done()).map(&plan).collect();
    let mut sum = crate::plan::Summary::default();
    for p in &plans {
        let s = p.summary();
        sum.create += s.create;
        sum.update += s.update;
        sum.issue += s.issue;
        sum.deactivate += s.deactivate;
        sum.delete += s.delete;
    }
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|e| !matches!(e.ran, Ran::Done(_)))
        .map(|e| format!("`{}`", name(e)))
        .collect();
    let count = crate::words::count(outcomes.len(), "installation", "installations");
    let changes = if sum == crate::plan::Summary::default() {
        "no changes".to_string()
    } else {
        let tokens = if sum.issue == 1 { "token" } else { "tokens" };
        let removals = if sum.removals() > 0 {
            format!(", {} to deactivate, {} to delete", sum.deactivate, sum.delete)
        } else {
            String::new()
        };
        format!(
            "{} to create, {} to update, {} {tokens} to issue{removals}",
            sum.create, sum.update, sum.issue
        )
    };
    let conflicts: usize = plans.iter().map(|p| p.conflicts.len()).sum();
    let mut line = format!("Total of {count}: {changes}");
    if conflicts > 0 {
        let _ = write!(line, "; {}", crate::words::count(conflicts, "conflict", "conflicts"));
    }
    if !failed.is_empty() {
        let _ = write!(line, "; not planned: {}", failed.join(", "));
    }
    line.push('.');
    line
}

/// The combined plan id of a grouped run, when every installation was planned.
pub fn combined_id<T>(outcomes: &[Each<T>], plan: impl Fn(&T) -> &Plan) -> Option<String> {
    let plans: Option<Vec<(&str, &Plan)>> =
        outcomes.iter().map(|e| e.ran.done().map(|outcome| (name(e), plan(outcome)))).collect();
    plans.map(crate::plan::id::combined_id)
}

/// A grouped plan as text: each installation's section in order, then the total and the
/// combined plan id.
pub fn plans_text<T>(outcomes: &[Each<T>], color: bool, plan: impl Fn(&T) -> &Plan) -> String {
    let mut out = String::new();
    for each in outcomes {
        out.push_str(&heading(name(each), &each.api_url));
        match &each.ran {
            Ran::Done(outcome) => {
                out.push_str(&super::report::rendered(plan(outcome), PlanFormat::Text, color, None));
            }
            Ran::Failed(error) => {
                let _ = writeln!(out, "Planning failed: {}", terminal(&error.to_string()));
            }
            Ran::NotStarted => out.push_str("Not planned.\n"),
        }
    }
    let _ = writeln!(out, "\n{}", terminal(&total(outcomes, &plan)));
    if let Some(id) = combined_id(outcomes, &plan) {
        let _ = writeln!(out, "Plan id (all installations): {id}");
    }
    out
}

/// A grouped plan as Markdown, within `max_bytes` when given: a head (title, the combined
/// plan id as a comment CI finds first, a table of the installations, the total), then a
/// section per installation, each given an equal share of what is left when the whole would
/// not fit.
pub fn plans_markdown<T>(
    outcomes: &[Each<T>],
    max_bytes: Option<usize>,
    plan: impl Fn(&T) -> &Plan,
) -> String {
    let mut head = String::new();
    let _ = writeln!(
        head,
        "## ozform plan: {}\n",
        crate::words::count(outcomes.len(), "installation", "installations")
    );
    let combined = combined_id(outcomes, &plan);
    if let Some(id) = &combined {
        let _ = writeln!(head, "<!-- ozform-plan-id: {id} -->\n");
    }
    let _ = writeln!(head, "| installation | API | plan |");
    let _ = writeln!(head, "|---|---|---|");
    for each in outcomes {
        let _ = writeln!(
            head,
            "| {} | {} | {} |",
            markdown_code(name(each)),
            markdown_code(&each.api_url),
            markdown_message(&plan_line(each, &plan)).replace('|', "\\|")
        );
    }
    let _ = writeln!(head, "\n**{}**\n", markdown_message(&total(outcomes, &plan)));
    if let Some(id) = &combined {
        let _ = writeln!(head, "Plan id (all installations): `{id}`\n");
    }
    let section = |each: &Each<T>, budget: Option<usize>| {
        let mut out = format!("---\n\n#### Installation {}\n\n", markdown_code(name(each)));
        match &each.ran {
            Ran::Done(outcome) => out.push_str(&crate::render::markdown_within(plan(outcome), budget)),
            Ran::Failed(error) => {
                let _ = writeln!(out, "Planning failed: {}", markdown_message(&error.to_string()));
            }
            Ran::NotStarted => out.push_str("Not planned.\n"),
        }
        out.push('\n');
        out
    };
    let whole: Vec<String> = outcomes.iter().map(|e| section(e, None)).collect();
    let fits = max_bytes.is_none_or(|max| head.len() + whole.iter().map(String::len).sum::<usize>() <= max);
    let sections = if fits {
        whole
    } else {
        let left = max_bytes.unwrap_or_default().saturating_sub(head.len());
        let share = (left / outcomes.len().max(1)).saturating_sub(64).max(1024);
        outcomes.iter().map(|e| section(e, Some(share))).collect()
    };
    head + &sections.concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_severe_exit_is_failure_then_removals_then_changes_then_success() {
        use Exit::{Changes, Failure, Removals, Success};
        let all = |exits: &[Exit]| exits.iter().copied().fold(Success, most_severe);
        assert_eq!(all(&[Success, Changes]), Changes);
        assert_eq!(all(&[Changes, Removals, Success]), Removals);
        assert_eq!(all(&[Removals, Failure, Changes]), Failure);
        assert_eq!(all(&[Success, Success]), Success);
        assert_eq!(all(&[Failure, Exit::Interrupted]), Exit::Interrupted);
    }
}
