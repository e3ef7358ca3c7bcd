//! The order of a plan: its changes as a dependency graph (DAG).
//!
//! Pure. Invariants of a `Graph` once built: every address occurs once, every edge joins two
//! changes of the same plan, and there is no cycle, so a scheduler that starts a step when its
//! dependencies are done reaches every step. A `depends_on` naming an object the plan leaves
//! unchanged (the planner lists a user's company and a token's user either way) is no edge:
//! that object is live already.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::ApplyError;
use crate::plan::{Address, Change};

/// Changes by index into `plan.changes`, with edges both ways.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Graph {
    /// For each change, the indices of the changes it depends on (sorted, without repeats).
    pub depends_on: Vec<Vec<usize>>,
    /// For each change, the indices of the changes that depend on it (sorted).
    pub dependents: Vec<Vec<usize>>,
}

/// Whether `dependency` of `address` is one the planner writes even when it has no change of its
/// own (a user's company, a token's own user); anything else outside the plan is corruption.
fn may_be_unchanged(address: &Address, dependency: &Address) -> bool {
    match (address, dependency) {
        (Address::ServiceUser(_), Address::Company(_)) => true,
        (Address::Token(email), Address::ServiceUser(user)) => email.key() == user.key(),
        _ => false,
    }
}

impl Graph {
    /// Build and check the graph of `changes`.
    pub fn new(changes: &[Change]) -> Result<Self, ApplyError> {
        let mut index: BTreeMap<&Address, usize> = BTreeMap::new();
        for (i, change) in changes.iter().enumerate() {
            if index.insert(&change.address, i).is_some() {
                return Err(ApplyError::DuplicateChange { address: change.address.to_string() });
            }
        }
        let mut depends_on = vec![Vec::new(); changes.len()];
        let mut dependents = vec![Vec::new(); changes.len()];
        for (i, change) in changes.iter().enumerate() {
            let mut deps = BTreeSet::new();
            for dep in &change.depends_on {
                match index.get(dep) {
                    Some(&j) => {
                        deps.insert(j);
                    }
                    // The planner names a user's company and a token's user whether or not they
                    // change; one the plan leaves unchanged is live already: nothing to wait for.
                    None if may_be_unchanged(&change.address, dep) => {}
                    None => {
                        return Err(ApplyError::UnknownDependency {
                            address: change.address.to_string(),
                            dependency: dep.to_string(),
                        });
                    }
                }
            }
            for &j in &deps {
                dependents[j].push(i);
            }
            depends_on[i] = deps.into_iter().collect();
        }
        let graph = Self { depends_on, dependents };
        graph.check_acyclic(changes)?;
        Ok(graph)
    }

    pub fn len(&self) -> usize {
        self.depends_on.len()
    }

    pub fn is_empty(&self) -> bool {
        self.depends_on.is_empty()
    }

    /// A sequential order that respects every dependency (Kahn's algorithm, lowest index
    /// first, so it is deterministic). The executor does not use it; it documents and tests
    /// the graph, and a caller may use it to show the order.
    pub fn topological(&self) -> Vec<usize> {
        let mut waiting: Vec<usize> = self.depends_on.iter().map(Vec::len).collect();
        let mut ready: BTreeSet<usize> = (0..self.len()).filter(|&i| waiting[i] == 0).collect();
        let mut order = Vec::with_capacity(self.len());
        while let Some(i) = ready.pop_first() {
            order.push(i);
            for &d in &self.dependents[i] {
                waiting[d] -= 1;
                if waiting[d] == 0 {
                    ready.insert(d);
                }
            }
        }
        order
    }

    /// Every change reachable from `i` through `dependents` (not `i` itself), in index order.
    pub fn downstream(&self, i: usize) -> Vec<usize> {
        let mut seen = BTreeSet::new();
        let mut queue: VecDeque<usize> = self.dependents[i].iter().copied().collect();
        while let Some(j) = queue.pop_front() {
            if seen.insert(j) {
                queue.extend(self.dependents[j].iter().copied());
            }
        }
        seen.into_iter().collect()
    }

    fn check_acyclic(&self, changes: &[Change]) -> Result<(), ApplyError> {
        let order = self.topological();
        if order.len() == self.len() {
            return Ok(());
        }
        let placed: BTreeSet<usize> = order.into_iter().collect();
        let addresses =
            (0..self.len()).filter(|i| !placed.contains(i)).map(|i| changes[i].address.to_string()).collect();
        Err(ApplyError::Cycle { addresses })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{CompanyFields, Payload, TokenIssue, TokenReason, Update, UserFields};

    /// A change of `address` (in its `kind/identity` form) with these dependencies. The order
    /// reads only addresses and dependencies, so the payload is the plainest of its kind.
    fn change(address: &str, _action: &str, depends_on: &[&str]) -> Change {
        let address: Address = address.parse().expect("an address");
        let payload = match &address {
            Address::Company(name) => {
                let fields = CompanyFields { name: name.clone(), technical_meta_data: None };
                Payload::UpdateCompany(Update { before: fields.clone(), after: fields })
            }
            Address::ServiceUser(email) => {
                let fields = UserFields {
                    email: email.clone(),
                    company: String::new(),
                    first_name: None,
                    last_name: None,
                    middle_name: None,
                    active: true,
                    permissions: None,
                };
                Payload::UpdateUser(Update { before: fields.clone(), after: fields })
            }
            Address::Token(_) => Payload::IssueToken(TokenIssue {
                user_id: None,
                api_url: String::new(),
                stored: None,
                reason: TokenReason::NoToken,
                company: None,
            }),
        };
        let depends_on = depends_on.iter().map(|d| d.parse().expect("an address")).collect();
        Change { address, depends_on, live_id: None, fingerprint: None, payload }
    }

    #[test]
    fn dependencies_come_before_their_dependents_in_the_order() {
        // Listed backwards on purpose: the order must not rely on the plan's sorting.
        let changes = vec![
            change("token/a@x", "issue", &["service_user/a@x"]),
            change("service_user/a@x", "create", &["company/A"]),
            change("company/A", "create", &[]),
        ];
        let graph = Graph::new(&changes).expect("valid");
        assert_eq!(graph.topological(), vec![2, 1, 0]);
        assert_eq!(graph.downstream(2), vec![0, 1]);
    }

    #[test]
    fn a_dependency_the_planner_could_not_have_written_is_rejected() {
        for (address, dependency) in [
            ("token/a@x", "service_user/b@x"),
            ("company/A", "company/B"),
            ("service_user/a@x", "service_user/b@x"),
        ] {
            let changes = vec![change(address, "update", &[dependency])];
            let err = Graph::new(&changes).expect_err("dangling").to_string();
            assert!(
                err.contains(&format!("`{address}`")) && err.contains(&format!("`{dependency}`")),
                "{err}"
            );
        }
    }

    #[test]
    fn an_unchanged_company_or_user_outside_the_plan_is_no_edge() {
        // What the planner writes for a user of a live company and a token of a live user.
        let changes = vec![
            change("service_user/a@x", "create", &["company/Live"]),
            change("token/b@x", "issue", &["service_user/b@x"]),
        ];
        let graph = Graph::new(&changes).expect("valid");
        assert_eq!(graph.depends_on, vec![Vec::<usize>::new(), vec![]]);
        assert_eq!(graph.topological(), vec![0, 1]);
    }

    #[test]
    fn a_cycle_is_rejected_naming_its_members() {
        let changes = vec![
            change("company/A", "update", &["service_user/a@x"]),
            change("service_user/a@x", "update", &["company/A"]),
            change("company/B", "update", &[]),
        ];
        let err = Graph::new(&changes).expect_err("cycle");
        let ApplyError::Cycle { addresses } = &err else { panic!("{err:?}") };
        assert_eq!(addresses, &vec!["company/A".to_string(), "service_user/a@x".to_string()]);
    }

    #[test]
    fn the_same_address_twice_is_rejected() {
        let changes = vec![change("company/A", "create", &[]), change("company/A", "update", &[])];
        assert!(matches!(Graph::new(&changes), Err(ApplyError::DuplicateChange { .. })));
    }
}
