//! The details of one change as a renderer-neutral list, shared by the text and Markdown
//! renderers so that both show the same facts. Pure.
//!
//! Every string of a `Detail` is already escaped for a terminal (`escape::terminal`): values
//! come from manifests, the server and saved plans, and both renderers write these lines as
//! they are (the text plan on a terminal, the Markdown plan inside a fenced code block).

use std::collections::HashSet;

use serde_json::Value;
use similar::{ChangeTag, TextDiff};

use crate::escape::terminal;
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
        out.push(Detail::Note(terminal(&format!("depends on: {}", deps.join(", "))).into_owned()));
    }
    if let Some(id) = &change.live_id {
        let what = if change.action() == Action::Issue { "user id" } else { "live id" };
        out.push(Detail::Note(format!("{what}: {}", terminal(id))));
    }
    if let Some(reason) = change.reason_text().filter(|r| !r.is_empty()) {
        out.push(Detail::Note(format!("reason: {}", terminal(&reason))));
    }
    match change.action() {
        Action::Create => {
            if let Some(Value::Object(after)) = change.after_json() {
                for (field, value) in &after {
                    let lines = if field == "password" {
                        vec![match change.password() {
                            Some(source) => format!("{SENSITIVE} from {}", terminal(&source.to_string())),
                            None => SENSITIVE.to_string(),
                        }]
                    } else {
                        value_lines(value)
                    };
                    out.push(Detail::Set { field: terminal(field).into_owned(), lines });
                }
            }
        }
        Action::Delete => {
            if let Some(Value::Object(before)) = change.before_json() {
                for (field, value) in &before {
                    out.push(Detail::Gone { field: terminal(field).into_owned(), lines: value_lines(value) });
                }
            }
        }
        Action::Update | Action::Deactivate => {
            for field in &change.fields() {
                let (before, after) = (value_lines(&field.before), value_lines(&field.after));
                if before.len() == 1 && after.len() == 1 {
                    out.push(Detail::Change {
                        field: terminal(&field.field).into_owned(),
                        before: before.concat(),
                        after: after.concat(),
                    });
                } else {
                    out.push(Detail::Diff {
                        field: terminal(&field.field).into_owned(),
                        lines: diff(&before, &after),
                    });
                }
            }
        }
        Action::Issue => {}
    }
    out
}

/// A value as one line of compact JSON, or pretty JSON lines when long, escaped for a
/// terminal (`serde_json` escapes C0 controls; `escape::terminal` the rest). The sensitive
/// marker is shown bare, not as a JSON string.
pub(crate) fn value_lines(value: &Value) -> Vec<String> {
    if value.as_str() == Some(SENSITIVE) {
        return vec![SENSITIVE.to_string()];
    }
    let compact = value.to_string();
    if compact.len() <= LONG {
        return vec![terminal(&compact).into_owned()];
    }
    // Pretty-printing a `Value` cannot fail (string keys only); fall back to compact anyway.
    serde_json::to_string_pretty(value)
        .unwrap_or(compact)
        .lines()
        .map(|line| terminal(line).into_owned())
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_for_a_terminal_beyond_what_json_escapes() {
        assert_eq!(value_lines(&serde_json::json!("a\u{1b}b\u{202e}c")), vec![r#""a\u001bb\u{202e}c""#]);
    }

    #[test]
    fn long_values_are_pretty_printed_and_short_ones_stay_on_one_line() {
        assert_eq!(value_lines(&serde_json::json!({"a": 1})), vec![r#"{"a":1}"#]);
        assert_eq!(value_lines(&serde_json::json!("(sensitive)")), vec!["(sensitive)"]);
        let long = serde_json::json!({"key": "x".repeat(LONG)});
        assert_eq!(value_lines(&long).len(), 3);
    }
}
