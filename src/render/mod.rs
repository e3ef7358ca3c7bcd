//! Renderers: a `Plan` as text (Terraform-like, for terminals) and Markdown (pull-request
//! comments). The JSON of a plan is the saved plan format, written and read by
//! `plan::format` alone.
//!
//! Pure; no I/O: every function returns a `String` and `output` decides where it goes. A plan
//! holds no secret value, and the renderers show a secret field only as `(sensitive)` (with
//! the source of a password: `{env: NAME}` or `{file: PATH}`, never its value).

mod detail;
mod markdown;
mod text;

pub use markdown::{markdown, markdown_within};
pub use text::text;

/// How to render for a terminal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Style {
    /// Emit ANSI colour codes (only on a terminal and never with `NO_COLOR`; `output` decides).
    pub color: bool,
}

/// `, detected` in the header when the API version was detected rather than given.
pub(crate) fn detected(plan: &crate::plan::Plan) -> &'static str {
    if plan.api_version_detected { ", detected" } else { "" }
}

/// The line before the footer when conflicts block part of the manifests, so that `No changes.`
/// is never read as "everything converged" (the plan command exits 1 on conflicts).
pub fn conflict_note(plan: &crate::plan::Plan) -> Option<String> {
    match plan.conflicts.len() {
        0 => None,
        1 => Some("1 conflict is not planned and needs a manual fix (see Conflicts above).".to_string()),
        n => Some(format!("{n} conflicts are not planned and need a manual fix (see Conflicts above).")),
    }
}

/// The footer line of every plan: `Plan: N to create, N to update, N tokens to issue.` (`1
/// token`), with `, N to deactivate, N to delete` before the period when there are removals;
/// or `No changes.`
pub fn footer(plan: &crate::plan::Plan) -> String {
    if !plan.has_changes() {
        return "No changes.".to_string();
    }
    let s = plan.summary();
    let tokens = if s.issue == 1 { "token" } else { "tokens" };
    let removals = if s.removals() > 0 {
        format!(", {} to deactivate, {} to delete", s.deactivate, s.delete)
    } else {
        String::new()
    };
    format!("Plan: {} to create, {} to update, {} {tokens} to issue{removals}.", s.create, s.update, s.issue)
}

/// The line after the footer: `Plan id: <64 hex digits>` (`plan::id::plan_id`), the id CI
/// compares with the one of the reviewed plan.
pub fn plan_id_line(plan: &crate::plan::Plan) -> String {
    format!("Plan id: {}", crate::plan::id::plan_id(plan))
}
