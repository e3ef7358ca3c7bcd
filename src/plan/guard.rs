//! The blast-radius guard: a pure check of a plan's removals against thresholds, run by `plan`
//! and `apply` (also on a saved plan) before anything is sent, after octoDNS's
//! `Plan.raise_if_unsafe`. The figures it needs are in the plan itself (`Plan::prune`, the
//! live service users of each pruning company when the plan was made), so a saved plan is
//! judged by the same numbers it was made with.
//!
//! Pure; no I/O.

use super::{Plan, PlanError};

/// The thresholds (`--max-removal-percent`, `--min-live-for-percent`, `--max-removals`) and the
/// override (`--allow-mass-removal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemovalLimits {
    /// Refuse removals of more than this percentage of the pruning companies' live service users…
    pub max_percent: u32,
    /// …when those number at least this many.
    pub min_live_for_percent: usize,
    /// Refuse more removals than this, whatever the base.
    pub max_removals: Option<usize>,
    /// Lift the guard.
    pub allow_mass_removal: bool,
}

impl Default for RemovalLimits {
    /// The contract's defaults: 30% of at least 10, no absolute cap, guarded.
    fn default() -> Self {
        Self { max_percent: 30, min_live_for_percent: 10, max_removals: None, allow_mass_removal: false }
    }
}

/// `Ok` unless `plan`'s removals trip a threshold of `limits`; then an error naming every
/// figure that tripped. A plan without removals always passes.
pub fn check_removals(plan: &Plan, limits: &RemovalLimits) -> Result<(), PlanError> {
    let removals = plan.summary().removals();
    if removals == 0 || limits.allow_mass_removal {
        return Ok(());
    }
    let base: usize = plan.prune.iter().map(|p| p.live_service_users).sum();
    let mut reasons = Vec::new();
    if base >= limits.min_live_for_percent
        && removals.saturating_mul(100) > (limits.max_percent as usize).saturating_mul(base)
    {
        reasons.push(format!(
            "{removals} removals are {} of the {base} live service users of the pruning companies, more than \
             `--max-removal-percent` {}%",
            percent(removals, base),
            limits.max_percent
        ));
    }
    if let Some(max) = limits.max_removals
        && removals > max
    {
        reasons.push(format!("{removals} removals are more than `--max-removals` {max}"));
    }
    for scope in plan.prune.iter().filter(|p| p.declared_service_users == 0) {
        let here =
            plan.changes.iter().filter(|c| c.removed().is_some_and(|u| u.company == scope.company)).count();
        if here > 0 {
            reasons.push(format!(
                "company `{}` prunes with `{}` but the manifests declare none of its service users, so all \
                 {here} would go",
                scope.company, scope.mode
            ));
        }
    }
    if reasons.is_empty() {
        return Ok(());
    }
    Err(PlanError::MassRemoval { removals, base, reasons: reasons.join("; ") })
}

/// `part` of `whole` as a percentage with at most one decimal, e.g. `31%`, `33.3%`.
fn percent(part: usize, whole: usize) -> String {
    if whole == 0 {
        return "all".into();
    }
    #[allow(clippy::cast_precision_loss)] // counts of users, far below 2^52
    let p = (part as f64 * 1000.0 / whole as f64).round() / 10.0;
    format!("{p}%")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_read_plainly() {
        assert_eq!(percent(31, 100), "31%");
        assert_eq!(percent(1, 3), "33.3%");
    }
}
