//! The saved plan format: `json()` writes it (also `plan --format json` and `--out`),
//! `parse_plan()` reads it back for `apply --plan`, refusing a version it does not know. Pure.

use serde_json::Value;

use crate::plan::{Action, FORMAT_VERSION, Plan, PlanError, Summary};

/// The plan as the contract's versioned JSON: pretty, keys in a fixed order, trailing newline.
pub fn json(plan: &Plan) -> String {
    // Serializing a `Plan` cannot fail: every map has string keys and serde_json writes
    // non-finite floats as `null` instead of failing.
    let mut out = serde_json::to_string_pretty(plan).unwrap_or_else(|_| unreachable!());
    out.push('\n');
    out
}

/// Read a saved plan. The version is checked before the shape, so a plan from a newer ozform
/// is refused with a clear message instead of a confusing field error.
pub fn parse_plan(text: &str) -> Result<Plan, PlanError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| PlanError::Invalid { reason: e.to_string() })?;
    match value.get("format_version") {
        None => return Err(PlanError::Invalid { reason: "it has no `format_version`".into() }),
        Some(v) if v.as_u64() == Some(u64::from(FORMAT_VERSION)) => {}
        Some(v) => {
            return Err(PlanError::UnsupportedVersion { found: v.to_string(), supported: FORMAT_VERSION });
        }
    }
    // Parsed from the text again (not from `value`) so that errors carry line and column.
    let plan: Plan = serde_json::from_str(text).map_err(|e| PlanError::Invalid { reason: e.to_string() })?;
    let mut counted = Summary::default();
    for change in &plan.changes {
        match change.action {
            Action::Create => counted.create += 1,
            Action::Update => counted.update += 1,
            Action::Issue => counted.issue += 1,
        }
    }
    if counted != plan.summary {
        return Err(PlanError::Invalid { reason: "its `summary` does not match its `changes`".into() });
    }
    Ok(plan)
}
