//! Messages as a user reads them: counts with real plurals (no `user(s)` in any message of
//! `src/`); the passwords an apply cannot resolve one per line (a list in `--log-format json`);
//! URLs in errors with their scheme; help that puts the global options under their own heading;
//! the manual pages' EXIT STATUS, ENVIRONMENT and EXAMPLES sections.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use crate::common;

/// `.rs` files under `dir`, recursively.
fn sources(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

#[test]
fn no_message_counts_with_a_plural_in_parentheses() {
    let mut found = Vec::new();
    for file in sources(&common::root().join("src")) {
        let text = std::fs::read_to_string(&file).unwrap();
        for (number, line) in text.lines().enumerate() {
            for suffix in ["(s)", "(es)", "(ies)"] {
                for (at, _) in line.match_indices(suffix) {
                    // A word's plural in parentheses, inside a string literal (an odd number of
                    // quotes before it): `user(s)`, not `Str(s)` in code.
                    let word = line[..at].chars().next_back().is_some_and(|c| c.is_ascii_lowercase());
                    let in_string = line[..at].matches('"').count() % 2 == 1;
                    if word && in_string && !line[..at].ends_with("http") {
                        found.push(format!("{}:{}: {}", file.display(), number + 1, line.trim()));
                    }
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "messages should say `1 user` / `2 users` (crate::words::count):\n{}",
        found.join("\n")
    );
}
