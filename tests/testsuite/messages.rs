//! Messages as a user reads them: counts with real plurals (no `user(s)` in any message of
//! `src/`); the passwords an apply cannot resolve one per line (a list in `--log-format json`);
//! URLs in errors with their scheme; help that puts the global options under their own heading;
//! the manual pages' EXIT STATUS, ENVIRONMENT and EXAMPLES sections.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use crate::common;

use common::Cli;
use common::world::{BASIC, World};
use ozform::model::ApiVersion;
use ozform::oz::{ClientConfig, OzClient, RetryPolicy};
use ozform::secret::Secret;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_passwords_an_apply_cannot_resolve_are_one_per_line_and_a_list_in_json() {
    let world = World::start(ApiVersion::V6).await;
    let token_dir = world.token_dir().to_str().unwrap().to_string();
    let apply = |format: &str| {
        let mut cli = world.cli().args([
            "apply",
            "--auto-approve",
            "--log-format",
            format,
            "--token-dir",
            &token_dir,
            BASIC,
        ]);
        for name in world.passwords.keys() {
            cli = cli.env_remove(name);
        }
        cli
    };
    let run = world.run(apply("text")).await.code(1);
    // Each user starts a line of its own (miette may wrap a long one).
    let lines: Vec<&str> = run.stderr.lines().filter(|l| l.contains("- `svc-")).collect();
    assert_eq!(lines.len(), 3, "one line per user:\n{}", run.stderr);
    let flat = run.stderr.split_whitespace().filter(|w| *w != "|" && *w != "│").collect::<Vec<_>>().join(" ");
    for (line, (email, variable)) in lines.iter().zip([
        ("svc-batch@acme.example", "ACME_BATCH_PASSWORD"),
        ("svc-claims@globex.example", "GLOBEX_CLAIMS_PASSWORD"),
        ("svc-web@acme.example", "ACME_WEB_PASSWORD"),
    ]) {
        assert!(line.contains(&format!("- `{email}`: ")), "{line}\n{}", run.stderr);
        assert!(
            flat.contains(&format!("- `{email}`: environment variable `{variable}` is not set")),
            "{}",
            run.stderr
        );
    }
    assert!(run.stderr.contains("cannot resolve 3 passwords"), "{}", run.stderr);

    let run = world.run(apply("json")).await.code(1);
    let error: Value = run
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["code"] == "ozform::apply::missing_passwords")
        .unwrap_or_else(|| panic!("no JSON error line:\n{}", run.stderr));
    assert_eq!(error["message"], "cannot resolve 3 passwords");
    let related: Vec<&str> =
        error["related"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    assert_eq!(related.len(), 3, "{error}");
    assert!(related[0].starts_with("`svc-batch@acme.example`: "), "{related:?}");
    assert!(world.emu.snapshot().users.iter().all(|u| !u.email.starts_with("svc-")), "nothing was changed");
    world.assert_no_secrets();
}

#[tokio::test]
async fn a_transport_error_names_the_url_with_its_scheme_and_without_its_user_and_password() {
    // Nothing listens on port 1 of loopback: the connection is refused (once: no retries here).
    for (url, shown) in [
        ("http://127.0.0.1:1", "http://127.0.0.1:1/api/authorize/auth"),
        ("http://someone:url-secret@127.0.0.1:1/oz/", "http://127.0.0.1:1/oz/api/authorize/auth"),
    ] {
        let mut config = ClientConfig::new(url, "admin@example.com", Secret::new("not-a-real-password"));
        config.retry = RetryPolicy::none();
        let err = OzClient::connect(config).await.unwrap_err();
        let said = format!("{:?}", miette::Report::new(err));
        let said = said.split_whitespace().filter(|w| *w != "│" && *w != "|").collect::<Vec<_>>().join(" ");
        assert!(said.contains(&format!("POST {shown} failed: cannot connect")), "{said}");
        assert!(!said.contains("url-secret") && !said.contains("someone"), "{said}");
    }
}

#[test]
fn subcommand_help_puts_the_global_options_under_their_own_heading() {
    for command in ["plan", "apply", "export", "doctor", "show"] {
        let help = Cli::new().args([command, "--help"]).run().code(0).stdout;
        let (own, global) =
            help.split_once("\nGlobal options:\n").unwrap_or_else(|| panic!("{command}:\n{help}"));
        for flag in ["--verbose", "--quiet", "--log-format"] {
            assert!(global.contains(flag), "`{command} --help`: {flag} is not under Global options:\n{help}");
            assert!(
                !own.contains(flag),
                "`{command} --help`: {flag} is among the command's options:\n{help}"
            );
        }
        assert!(own.contains("\nOptions:\n"), "{help}");
    }
}

#[test]
fn every_manual_page_has_exit_status_environment_and_examples() {
    let dir = tempfile::tempdir().unwrap();
    Cli::new().args(["man", "--out-dir"]).args([dir.path()]).run().code(0);
    let mut pages = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let page = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        pages += 1;
        let at = |section: &str| page.find(section).unwrap_or_else(|| panic!("no {section}:\n{page}"));
        // In the order man-pages(7) gives, before VERSION.
        assert!(at(".SH \"EXIT STATUS\"") < at(".SH ENVIRONMENT"), "{page}");
        assert!(at(".SH ENVIRONMENT") < at(".SH EXAMPLES"), "{page}");
        if let Some(version) = page.find(".SH VERSION") {
            assert!(at(".SH EXAMPLES") < version, "{page}");
        }
        assert_eq!(page.matches(".ds Aq").count(), 2, "one preamble:\n{page}");
    }
    assert!(pages >= 12, "{pages}");
    let plan = std::fs::read_to_string(dir.path().join("ozform-plan.1")).unwrap();
    for text in
        ["OZ_API_URL", "OZ_ADMIN_PASSWORD", "OZ_VAR_*", "\\-\\-detailed\\-exitcode manifests/", "130, 143"]
    {
        assert!(plan.contains(text), "ozform-plan(1) lacks {text}:\n{plan}");
    }
}

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
