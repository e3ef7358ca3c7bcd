//! The details of one change as a renderer-neutral list, shared by the text and Markdown
//! renderers so that both show the same facts. Pure.

use std::borrow::Cow;
use std::collections::HashSet;

use serde_json::Value;
use similar::{ChangeTag, TextDiff};

use crate::plan::format::SENSITIVE;
use crate::plan::{Action, Address, Change, Plan};

/// Values longer than this (as compact JSON) are shown pretty-printed over several lines and,
/// in updates, diffed line by line.
const LONG: usize = 60;

/// One line (or block) of a change's details.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Detail {
    /// Context: dependencies, the live id, a token's reason.
    Note(String),
    /// A field a create sets; one line, or several for a long value.
    Set { field: String, lines: Vec<String> },
    /// A short field of an update: old → new.
    Change { field: String, before: String, after: String },
    /// A long field of an update, diffed line by line: (sign, line) with sign ' ', '-' or '+'.
    Diff { field: String, lines: Vec<(char, String)> },
    /// A field of an object that a delete removes, as it is live.
    Gone { field: String, lines: Vec<String> },
}

/// The addresses that have a change in `plan`: a dependency is worth showing only then.
pub(crate) fn planned(plan: &Plan) -> HashSet<&Address> {
    plan.changes.iter().map(|c| &c.address).collect()
}

/// The details of `change`, in a fixed order: dependencies, live id, reason, fields.
pub(crate) fn details(change: &Change, planned: &HashSet<&Address>) -> Vec<Detail> {
    let mut out = Vec::new();
    let deps: Vec<String> =
        change.depends_on.iter().filter(|d| planned.contains(d)).map(ToString::to_string).collect();
    if !deps.is_empty() {
        out.push(Detail::Note(format!("depends on: {}", deps.join(", "))));
    }
    if let Some(id) = &change.live_id {
        let what = if change.action() == Action::Issue { "user id" } else { "live id" };
        out.push(Detail::Note(format!("{what}: {id}")));
    }
    if let Some(reason) = change.reason_text().filter(|r| !r.is_empty()) {
        out.push(Detail::Note(format!("reason: {reason}")));
    }
    match change.action() {
        Action::Create => {
            if let Some(Value::Object(after)) = change.after_json() {
                for (field, value) in &after {
                    let lines = if field == "password" {
                        vec![match change.password() {
                            Some(source) => format!("{SENSITIVE} from {source}"),
                            None => SENSITIVE.to_string(),
                        }]
                    } else {
                        value_lines(value)
                    };
                    out.push(Detail::Set { field: field.clone(), lines });
                }
            }
        }
        Action::Delete => {
            if let Some(Value::Object(before)) = change.before_json() {
                for (field, value) in &before {
                    out.push(Detail::Gone { field: field.clone(), lines: value_lines(value) });
                }
            }
        }
        Action::Update | Action::Deactivate => {
            for field in &change.fields() {
                let (before, after) = (value_lines(&field.before), value_lines(&field.after));
                if before.len() == 1 && after.len() == 1 {
                    out.push(Detail::Change {
                        field: field.field.clone(),
                        before: before.concat(),
                        after: after.concat(),
                    });
                } else {
                    out.push(Detail::Diff { field: field.field.clone(), lines: diff(&before, &after) });
                }
            }
        }
        Action::Issue => {}
    }
    out
}

/// A value as one line of compact JSON, or pretty JSON lines when long. The sensitive marker
/// is shown bare, not as a JSON string.
pub(crate) fn value_lines(value: &Value) -> Vec<String> {
    if value.as_str() == Some(SENSITIVE) {
        return vec![SENSITIVE.to_string()];
    }
    let compact = value.to_string();
    if compact.len() <= LONG {
        return vec![compact];
    }
    // Pretty-printing a `Value` cannot fail (string keys only); fall back to compact anyway.
    serde_json::to_string_pretty(value).unwrap_or(compact).lines().map(str::to_string).collect()
}

fn diff(before: &[String], after: &[String]) -> Vec<(char, String)> {
    let old = before.join("\n") + "\n";
    let new = after.join("\n") + "\n";
    TextDiff::from_lines(&old, &new)
        .iter_all_changes()
        .map(|c| {
            let sign = match c.tag() {
                ChangeTag::Equal => ' ',
                ChangeTag::Delete => '-',
                ChangeTag::Insert => '+',
            };
            (sign, c.value().trim_end_matches('\n').to_string())
        })
        .collect()
}

/// Width of the widest field name among `details`, to align `=` and `:` as Terraform does.
pub(crate) fn field_width(details: &[Detail]) -> usize {
    details
        .iter()
        .filter_map(|d| match d {
            Detail::Set { field, .. } | Detail::Change { field, .. } | Detail::Gone { field, .. } => {
                Some(field.chars().count())
            }
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

/// Text from manifests or the API with control characters escaped, so that a name holding a
/// newline or an ANSI escape cannot forge lines or colours in a terminal.
pub(crate) fn clean(s: &str) -> Cow<'_, str> {
    if s.chars().any(char::is_control) {
        Cow::Owned(
            s.chars()
                .map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() })
                .collect(),
        )
    } else {
        Cow::Borrowed(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_plain_text_is_untouched() {
        assert_eq!(clean("Acme\n\u{1b}[31mBank"), "Acme\\n\\u{1b}[31mBank");
        assert!(matches!(clean("Acme Bank"), Cow::Borrowed(_)));
    }

    #[test]
    fn long_values_are_pretty_printed_and_short_ones_stay_on_one_line() {
        assert_eq!(value_lines(&serde_json::json!({"a": 1})), vec![r#"{"a":1}"#]);
        assert_eq!(value_lines(&serde_json::json!("(sensitive)")), vec!["(sensitive)"]);
        let long = serde_json::json!({"key": "x".repeat(LONG)});
        assert_eq!(value_lines(&long).len(), 3);
    }
}
