//! Identical warnings given once, with a count: 200 users created with one unreadable password
//! file are one warning, "… (the same for 199 more users)", in every format (the planner
//! groups the plan's warnings; the renderers group again whatever else was added). Pure.
//!
//! Two warnings are the same when they say the same of different subjects: a warning whose
//! first piece is a value (a code span, `escape::quote`) has that value as its subject, and
//! the rest of it as what it says; any other warning says all of itself. The first warning of
//! each kind is kept, in the order they came, with the count of the others after it.

use std::collections::HashMap;

use super::Address;
use crate::escape::{Segment, segments};

/// `warnings`, each kind once: the first of each, with ` (the same for N more users)` (or
/// tokens, companies; or ` (N more times)` when the subject is not an address) when there were
/// others. Grouping grouped warnings changes nothing.
pub fn group_warnings(warnings: &[String]) -> Vec<String> {
    let mut order: Vec<(&String, usize)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(warnings.len());
    for warning in warnings {
        let key = what_it_says(warning);
        if let Some(&i) = index.get(key) {
            order[i].1 += 1;
        } else {
            index.insert(key, order.len());
            order.push((warning, 0));
        }
    }
    order.into_iter().map(|(warning, more)| with_count(warning, more)).collect()
}

/// The warning but its subject: from the end of its first code span, when it starts with one.
fn what_it_says(warning: &str) -> &str {
    match segments(warning).first() {
        Some(Segment::Code(subject)) => {
            // The span ends with the closing fence after the subject; the rest follows it.
            let fence = warning.bytes().take_while(|&b| b == b'`').count();
            let start = fence + subject.len();
            warning[start..].find(&"`".repeat(fence)).map_or(warning, |end| &warning[start + end + fence..])
        }
        _ => warning,
    }
}

fn with_count(warning: &str, more: usize) -> String {
    if more == 0 {
        return warning.to_string();
    }
    let noun = match segments(warning).first() {
        Some(Segment::Code(subject)) => match subject.parse::<Address>() {
            Ok(Address::ServiceUser(_)) => Some(("user", "users")),
            Ok(Address::Token(_)) => Some(("token", "tokens")),
            Ok(Address::Company(_)) => Some(("company", "companies")),
            Err(_) => None,
        },
        _ => None,
    };
    match noun {
        Some((one, many)) => {
            format!("{warning} (the same for {more} more {})", if more == 1 { one } else { many })
        }
        None => format!("{warning} ({more} more {})", if more == 1 { "time" } else { "times" }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::escape::quote;

    fn missing(email: &str, path: &str) -> String {
        format!(
            "{} will be created with the password from {}, but it cannot be read now",
            quote(&format!("service_user/{email}")),
            quote(path)
        )
    }

    #[test]
    fn the_same_warning_for_many_users_is_given_once_with_a_count() {
        let mut warnings: Vec<String> = (0..200).map(|i| missing(&format!("u{i}@x"), "/run/pw")).collect();
        warnings.insert(1, missing("other@x", "/run/other"));
        warnings.push("a warning without a subject".into());
        warnings.push("a warning without a subject".into());
        let grouped = group_warnings(&warnings);
        assert_eq!(
            grouped,
            [
                format!("{} (the same for 199 more users)", missing("u0@x", "/run/pw")),
                missing("other@x", "/run/other"),
                "a warning without a subject (1 more time)".to_string(),
            ]
        );
        assert_eq!(group_warnings(&grouped), grouped);
    }

    #[test]
    fn a_subject_with_backticks_is_told_from_what_follows() {
        let a = format!("{} is odd", quote("token/a`b@x"));
        let b = format!("{} is odd", quote("token/c@x"));
        assert_eq!(group_warnings(&[a.clone(), b]), [format!("{a} (the same for 1 more token)")]);
        assert_eq!(what_it_says("``unclosed"), "``unclosed");
    }
}
