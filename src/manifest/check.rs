//! Checks across all documents: duplicate company names, duplicate emails (case-insensitive)
//! and users naming a company that no document declares. Pure.

use std::collections::HashMap;
use std::sync::Arc;

use super::problem::{Kind, Problem, Problems};
use super::read::Declared;

/// Report duplicates and dangling company names; drop the later duplicates from `declared`.
///
/// `complete` is false when a file could not be parsed: its companies are unknown, so an
/// undeclared company could be a false alarm and is not reported. The same holds when a
/// company entry could not be read.
pub fn across_documents(declared: &mut Declared, complete: bool, problems: &mut Problems) {
    let mut first_company = HashMap::with_capacity(declared.companies.len());
    declared.companies.retain(|c| match first_company.get(&c.company.name) {
        None => {
            first_company.insert(c.company.name.clone(), (c.name_at, c.company.location.clone()));
            true
        }
        Some((first_at, first_location)) => {
            let kind = Kind::DuplicateCompany { name: c.company.name.clone(), first: first_location.clone() };
            problems.push(
                Problem::at(kind, c.name_at, "declared again here").also(*first_at, "first declared here"),
            );
            false
        }
    });

    let mut first_user = HashMap::with_capacity(declared.users.len());
    declared.users.retain(|u| match first_user.get(&u.user.email.key()) {
        None => {
            first_user.insert(u.user.email.key(), (u.email_at, u.user.location.clone()));
            true
        }
        Some((first_at, first_location)) => {
            let kind =
                Kind::DuplicateEmail { email: u.user.email.to_string(), first: first_location.clone() };
            problems.push(
                Problem::at(kind, u.email_at, "declared again here").also(*first_at, "first declared here"),
            );
            false
        }
    });

    if complete && !declared.company_unreadable {
        // The did-you-mean is worked out only for the problems shown (see `Kind::help`): for
        // every undeclared company against every declared one, it would grow as their product.
        let mut names: Vec<String> = first_company.keys().cloned().collect();
        names.sort();
        let names: Arc<[String]> = names.into();
        for u in &declared.users {
            if !first_company.contains_key(&u.user.company) {
                let kind =
                    Kind::UndeclaredCompany { company: u.user.company.clone(), declared: Arc::clone(&names) };
                problems.push(Problem::at(kind, u.company_at, "not declared under `companies`"));
            }
        }
    }
}
