//! The plan as a reviewable artefact (#21): `ozform show` renders a saved plan as `plan`
//! printed it; the Markdown plan fits a pull-request comment (`--max-bytes`) and stays valid
//! Markdown; identical warnings are given once with a count in every format.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use ozform::model::{ApiVersion, Desired, Observed, Prune, StoredTokens};
use ozform::plan::format::{from_json, to_json};
use ozform::plan::{Plan, PlanOptions, compute, missing_secrets};
use ozform::render::{Style, markdown, markdown_within, text};
use ozform::secret::{SecretFile, SecretRef};
use serde_json::Value;

use crate::common::builders::{company, live_company, live_user, user, with_token};
use crate::common::world::{BASIC, World};
use crate::common::{Cli, root};
use crate::escaping::render_gfm;

/// A plan of over 2,000 changes: 900 users to create with their tokens (200 of them with a
/// password file that cannot be read now: one warning, 200 times), 300 users to update, and
/// 40 removals in a company that prunes; and a live user no manifest mentions.
fn big_plan() -> Plan {
    let mut companies = vec![company("Acme Bank"), company("Beta Corp")];
    companies.push(ozform::model::DesiredCompany { prune: Some(Prune::Delete), ..company("Gamma Ltd") });
    let mut users = Vec::new();
    for i in 0..900 {
        let mut u = with_token(user(&format!("svc-{i:04}@acme.example"), "Acme Bank"));
        u.first_name = Some(format!("Service {i}"));
        if i < 200 {
            u.password = Some(SecretRef::File(SecretFile::recorded("/run/secrets/shared-password")));
        }
        users.push(u);
    }
    for i in 0..300 {
        let mut u = user(&format!("old-{i:04}@beta.example"), "Beta Corp");
        u.first_name = Some(format!("Renamed {i}"));
        users.push(u);
    }
    users.push(user("keep@gamma.example", "Gamma Ltd"));
    let desired = Desired { companies, users, files: vec![] };
    let mut live_users: Vec<_> = (0..300)
        .map(|i| live_user(&format!("u-old-{i}"), &format!("old-{i:04}@beta.example"), "c-beta"))
        .collect();
    live_users.push(live_user("u-keep", "keep@gamma.example", "c-gamma"));
    live_users.push(live_user("u-stranger", "stranger@beta.example", "c-beta"));
    live_users.extend(
        (0..40).map(|i| live_user(&format!("u-gone-{i}"), &format!("gone-{i:02}@gamma.example"), "c-gamma")),
    );
    let observed = Observed {
        api_url: "https://oz.example".into(),
        api_version: ApiVersion::V6,
        api_version_detected: false,
        companies: vec![
            live_company("c-acme", "Acme Bank"),
            live_company("c-beta", "Beta Corp"),
            live_company("c-gamma", "Gamma Ltd"),
        ],
        users: live_users,
    };
    let options = PlanOptions {
        now: 1_800_000_000.0,
        missing_secrets: missing_secrets(&desired, |r| matches!(r, SecretRef::Env(_))),
        ..PlanOptions::default()
    };
    compute(&desired, &observed, &StoredTokens::new(), &options)
}

/// The artifact sentence, and how many changes it says were left out.
fn more_changes(md: &str) -> Option<usize> {
    let line = md
        .lines()
        .find(|l| l.ends_with("more changes: the whole plan is in the job's artifact `plan.md`"))?;
    line.strip_prefix("… ")?.split(' ').next()?.parse().ok()
}

#[test]
fn a_plan_of_2000_changes_fits_a_pull_request_comment_and_stays_valid_markdown() {
    let plan = big_plan();
    assert!(plan.changes.len() >= 2000, "{}", plan.changes.len());
    let whole = markdown(&plan);
    assert!(whole.len() > 200_000, "the whole plan is much larger: {}", whole.len());
    let fitted = markdown_within(&plan, Some(60_000));
    assert!(fitted.len() < 60_000, "{} bytes", fitted.len());
    assert!(fitted.chars().count() < 65_536);
    // The head is whole: the summary, the footer, the plan id.
    assert!(fitted.starts_with(&whole[..whole.find("#### Warnings").unwrap()]), "{fitted}");
    // Every removal is there; then as many other changes as fit, and how many more there are.
    let shown = fitted.matches("<details><summary><code>").count();
    assert_eq!(fitted.matches("<details><summary><code>-</code> delete").count(), 40);
    assert_eq!(more_changes(&fitted), Some(plan.changes.len() - shown), "{fitted}");
    assert!(shown > 40 && shown < plan.changes.len(), "{shown}");
    // GitHub renders it with the same elements as the whole plan, every section closed.
    let rendered = render_gfm(&[whole.clone(), fitted.clone()]);
    let count = |r: &Value, tag: &str| r["elements"][tag].as_u64().unwrap_or(0);
    let (whole_html, fitted_html) = (&rendered[0].1, &rendered[1].1);
    let kinds = |r: &Value| r["elements"].as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(kinds(fitted_html), kinds(whole_html));
    assert_eq!(count(fitted_html, "details"), count(fitted_html, "summary"));
    assert_eq!(count(fitted_html, "details"), shown as u64 + 1, "the changes shown and the unmanaged users");
    assert_eq!(count(fitted_html, "pre"), shown as u64);
    assert_eq!(rendered[1].0.matches("<details>").count(), rendered[1].0.matches("</details>").count());
    assert_eq!(count(whole_html, "details"), plan.changes.len() as u64 + 1);
    // Without a limit, or with one it is under, the plan is whole.
    assert_eq!(markdown_within(&plan, Some(whole.len())), whole);
    assert_eq!(markdown_within(&plan, None), whole);
}

#[test]
fn the_same_warning_for_200_users_is_given_once_with_a_count_in_every_format() {
    let plan = big_plan();
    assert_eq!(plan.warnings.len(), 1, "{:?}", plan.warnings);
    let sentence = "(the same for 199 more users)";
    assert!(plan.warnings[0].ends_with(sentence), "{}", plan.warnings[0]);
    let shown = text(&plan, &Style::default());
    assert_eq!(shown.matches("cannot be read now").count(), 1);
    assert!(shown.contains(sentence));
    let md = markdown(&plan);
    assert_eq!(md.matches("cannot be read now").count(), 1);
    assert!(md.contains(sentence) && md.contains("| warnings | 1 |"), "{md}");
    let saved: Value = serde_json::from_str(&to_json(&plan)).unwrap();
    assert_eq!(saved["warnings"].as_array().unwrap().len(), 1);
    assert!(saved["warnings"][0].as_str().unwrap().ends_with(sentence));
    assert_eq!(from_json(&to_json(&plan)).unwrap(), plan);
}

// ---------------------------------------------------------------------------------------------
// `ozform show`, through the binary.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_renders_a_saved_plan_as_plan_printed_it_in_every_format() {
    let world = World::start(ApiVersion::V6).await;
    let saved = world.path("plan.json");
    let saved = saved.to_str().unwrap();
    let text_run = world.plan(&["--out", saved, BASIC]).await.code(0);
    let markdown_run = world.plan(&["--format", "markdown", BASIC]).await.code(0);
    let json_run = world.plan(&["--format", "json", BASIC]).await.code(0);
    // No connection settings, no token store: the file is all `show` reads.
    let show = |args: &[&str]| Cli::new().current_dir(root()).args(["show"]).args(args).args([saved]).run();
    assert_eq!(show(&[]).code(0).stdout, text_run.stdout);
    assert_eq!(show(&["--format", "markdown"]).code(0).stdout, markdown_run.stdout);
    assert_eq!(show(&["--format", "json"]).code(0).stdout, json_run.stdout);
    assert_eq!(std::fs::read_to_string(saved).unwrap(), json_run.stdout);
    assert!(text_run.stdout.contains("Plan id: "), "{}", text_run.stdout);
    world.assert_no_secrets();
}

/// A plan saved where the passwords were not set warns about each; `apply --plan` where they
/// are set shows the warnings that hold now: none of those. `show` still renders the plan as it
/// was made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_of_a_saved_plan_shows_the_warnings_that_hold_now() {
    let world = World::start(ApiVersion::V6).await;
    let saved = world.path("plan.json");
    let saved = saved.to_str().unwrap();
    let mut plan = world.command("plan", &["--out", saved, BASIC]);
    for name in world.passwords.keys() {
        plan = plan.env_remove(name);
    }
    let planned = world.run(plan).await.code(0);
    assert_eq!(planned.stdout.matches("is not set now").count(), 3, "{}", planned.stdout);

    let applied = world.apply(&["--plan", saved]).await.code(0);
    assert!(applied.stdout.contains("Apply complete"), "{}", applied.stdout);
    assert!(
        !applied.stdout.contains("is not set now"),
        "a warning of plan time that no longer holds:\n{}",
        applied.stdout
    );
    assert!(!applied.stdout.contains("Warnings:"), "{}", applied.stdout);

    let shown = Cli::new().current_dir(root()).args(["show", saved]).run().code(0);
    assert_eq!(shown.stdout.matches("is not set now").count(), 3, "show renders the plan as made");
    world.assert_no_secrets();
}

#[test]
fn the_warnings_that_hold_now_drop_grouped_ones_whose_password_is_available() {
    let plan = big_plan();
    let missing: Vec<&String> = plan.warnings.iter().filter(|w| w.contains("cannot be read now")).collect();
    assert_eq!(missing.len(), 1, "one grouped warning: {:?}", plan.warnings);
    assert!(missing[0].contains("(the same for 199 more users)"), "{}", missing[0]);
    let now = ozform::plan::warnings_now(&plan, |_| true);
    assert!(now.iter().all(|w| !w.contains("cannot be read now")), "{now:?}");
    assert_eq!(now.len(), plan.warnings.len() - 1, "the other warnings stay: {now:?}");
    assert_eq!(ozform::plan::warnings_now(&plan, |_| false), plan.warnings, "nothing available: as saved");
}

#[test]
fn show_fits_a_big_plan_in_a_comment_and_refuses_an_edited_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.json");
    let saved = to_json(&big_plan());
    std::fs::write(&path, &saved).unwrap();
    let run =
        Cli::new().args(["show", "--format", "markdown", "--max-bytes", "60000"]).args([&path]).run().code(0);
    assert!(run.stdout.len() < 60_000 && more_changes(&run.stdout).is_some(), "{}", run.stdout.len());
    assert_eq!(run.stdout, markdown_within(&from_json(&saved).unwrap(), Some(60_000)));

    let edited = saved.replacen("\"u-old-0\"", "\"u-of-another-company\"", 1);
    assert_ne!(edited, saved);
    std::fs::write(&path, edited).unwrap();
    let run = Cli::new().args(["show"]).args([&path]).run().code(1);
    assert!(run.stderr.contains("the saved plan's `plan_id` does not match its changes"), "{}", run.stderr);
    assert!(run.stderr.contains("ozform::plan::id_mismatch") && run.stdout.is_empty(), "{}", run.stderr);
}

#[test]
fn show_reads_a_plan_saved_before_plan_ids_and_gives_it_its_id() {
    let fixture = root().join("tests/fixtures/plans/format-1-ozform-0.1.json");
    let run = Cli::new().args(["show"]).args([&fixture]).run().code(0);
    let plan = from_json(&std::fs::read_to_string(&fixture).unwrap()).unwrap();
    assert_eq!(run.stdout, text(&plan, &Style::default()));
    assert!(run.stdout.contains(&format!("Plan id: {}", ozform::plan::id::plan_id(&plan))));
}

#[test]
fn max_bytes_is_for_markdown_only_and_not_below_1024() {
    let fixture = root().join("tests/fixtures/plans/format-1-ozform-0.1.json");
    let run = Cli::new().args(["show", "--max-bytes", "60000"]).args([&fixture]).run().code(1);
    assert!(run.stderr.contains("`--max-bytes` applies to `--format markdown` only"), "{}", run.stderr);
    let run = Cli::new()
        .args(["show", "--format", "markdown", "--max-bytes", "100"])
        .args([&fixture])
        .run()
        .code(1);
    assert!(run.stderr.contains("is not a byte count of at least 1024"), "{}", run.stderr);
    let run = Cli::new().args(["plan", "--format", "json", "--max-bytes", "60000", "x"]).run().code(1);
    assert!(run.stderr.contains("`--max-bytes` applies to `--format markdown` only"), "{}", run.stderr);
    let run = Cli::new().args(["show", "/nonexistent/plan.json"]).run().code(1);
    assert!(run.stderr.contains("cannot read plan file `/nonexistent/plan.json`"), "{}", run.stderr);
}
