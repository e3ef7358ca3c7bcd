//! The pull-request flow of the CI recipes (`contrib/ci/`), with `contrib/ci/ozform-ci.sh` run for
//! real against the emulator and a fake GitHub or GitLab API on loopback (`common::ci::Forge`),
//! each scenario on both forges:
//! - the review: plan (saved, with its id), and one plan comment posted, then updated, by the
//!   CI's account; a failing plan fails the script and the comment says why;
//! - the merge: the merged request found from the commit, its comments paged through, the last
//!   plan comment of the CI's account read; a plan equal to the reviewed one is applied; one
//!   that changed, or was never reviewed, applies nothing and comments the new plan; a plan
//!   with removals is applied only with the label;
//! - the drift check opens, updates and closes one issue `ozform drift: NAME`;
//! - a 2,000-change plan's comment fits under GitHub's 65,536 characters, the whole plan in
//!   `plan.md`.
//!
//! Every scenario ends with the canary scan: no password or token in anything the script printed
//! or wrote, and the forge's token only in what reached the forge.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use crate::common;

use std::fmt::Write as _;

use common::ci::{self, BOT, Flavor, Forge};
use common::emulator::service_user;
use common::world::{BASIC, BASIC_USERS, World};
use ozform::emulator::{CompanyRecord, EmulatorConfig, Snapshot, UserRecord};
use ozform::model::ApiVersion;
use serde_json::Value;

const SHA: &str = "4f1c2b9e0d7a6c5b4a3928171605f4e3d2c1b0a9";
const PLAN_MARKER: &str = "<!-- ozform-plan -->\n";
const MERGE_MARKER: &str = "<!-- ozform-merge -->\n";
const DEFAULT_LABEL: &str = "ozform:removals-approved";

/// Run `scenario(flavor)` once per forge, as two tests of a module named after it.
macro_rules! on_both_forges {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_github() {
                super::$scenario(super::Flavor::GitHub).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_gitlab() {
                super::$scenario(super::Flavor::GitLab).await;
            }
        }
    )*};
}

/// The pull-request job: plan `paths`, comment on request `number`; returns the plan id.
async fn review(world: &World, forge: &Forge, number: u64, paths: &[&str]) -> String {
    let mut args = vec!["plan"];
    args.extend_from_slice(paths);
    let (code, printed) = ci::script(world, &args, &[]).await;
    assert_eq!(code, 0, "{printed}");
    let (code, printed) = ci::script(world, &["comment", forge.name()], &forge.env("", number)).await;
    assert_eq!(code, 0, "{printed}");
    let id = ci::file(world, "plan-id").trim().to_string();
    assert_eq!(id.len(), 64, "a plan id: {id:?}");
    id
}

/// The merge job on commit `sha`, planning `paths`, with `env` on top of the forge's.
async fn merge(
    world: &World,
    forge: &Forge,
    sha: &str,
    paths: &[&str],
    env: &[(&str, String)],
) -> (i32, String) {
    let mut args = vec!["merge", forge.name()];
    args.extend_from_slice(paths);
    let mut all = forge.env(sha, 0);
    all.retain(|(name, _)| *name != "OZFORM_CI_PR" && *name != "CI_MERGE_REQUEST_IID");
    all.extend(env.iter().cloned());
    ci::script(world, &args, &all).await
}

fn service_users(world: &World) -> Vec<String> {
    let mut users: Vec<String> =
        world.emu.snapshot().users.into_iter().filter(|u| u.is_service).map(|u| u.email).collect();
    users.sort();
    users
}

/// The last comment of the CI's account on request `number`.
fn last_bot_comment(forge: &Forge, number: u64) -> String {
    forge.bot_comments(number).pop().expect("a comment by the CI's account")
}

// The review.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ci_script_plans_applies_and_plans_no_changes_against_the_emulator() {
    let world = World::start(ApiVersion::V6).await;

    let (code, printed) = ci::script(&world, &["plan", BASIC], &[]).await;
    assert_eq!(code, 0, "{printed}");
    assert_eq!(ci::file(&world, "exit-code"), "2\n");
    assert_eq!(ci::file(&world, "exit-class"), "changes\n");
    let saved: Value = serde_json::from_str(&ci::file(&world, "plan.json")).unwrap();
    let id = ci::file(&world, "plan-id").trim().to_string();
    assert_eq!(saved["plan_id"], id.as_str(), "plan-id is the saved plan's");
    let comment = ci::file(&world, "comment.md");
    assert!(
        comment
            .starts_with(&format!("{PLAN_MARKER}<!-- ozform-plan-id: {id} -->\n### ozform plan: changes\n")),
        "{comment}"
    );
    assert!(comment.contains("<details><summary>Plan (exit code 2)</summary>"), "{comment}");
    assert!(comment.contains(&ci::file(&world, "plan.md")), "the comment holds the Markdown plan");
    assert!(ci::file(&world, "plan.md").contains("svc-web@acme.example"));
    assert_eq!(comment.matches("<details>").count(), comment.matches("</details>").count());
    assert!(service_users(&world).is_empty(), "plan changed nothing");

    let (code, printed) = ci::script(&world, &["apply", BASIC], &[]).await;
    assert_eq!(code, 0, "{printed}");
    assert!(world.token_files().contains_key("svc-web@acme.example.json"), "tokens went to OZ_TOKEN_DIR");

    let (code, printed) = ci::script(&world, &["plan", BASIC], &[]).await;
    assert_eq!(code, 0, "{printed}");
    assert_eq!(ci::file(&world, "exit-code"), "0\n");
    assert!(ci::file(&world, "comment.md").contains("### ozform plan: no changes\n"));
    assert!(ci::file(&world, "plan.md").contains("No changes."));

    world.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_plan_fails_the_script_and_its_comment_says_why() {
    let world = World::start(ApiVersion::V5).await;
    let wrong = [("OZ_ADMIN_PASSWORD", common::world::canary("wrong-admin-pw"))];
    world.other_secrets.lock().unwrap().push(wrong[0].1.clone());
    let (code, printed) = ci::script(&world, &["plan", BASIC], &wrong).await;
    assert_eq!(code, 1, "{printed}");
    assert_eq!(ci::file(&world, "exit-code"), "1\n");
    assert_eq!(ci::file(&world, "plan-id"), "", "no plan, no id");
    assert!(!world.path("ci/plan.json").exists());
    let comment = ci::file(&world, "comment.md");
    assert!(comment.starts_with(&format!("{PLAN_MARKER}### ozform plan: failed (exit 1)\n")), "{comment}");
    assert!(comment.contains("_no plan: ozform failed"), "{comment}");
    assert!(comment.contains("<details><summary>ozform output</summary>"), "{comment}");
    assert!(comment.contains(ci::file(&world, "plan.log").trim()), "{comment}");

    // A manifest that does not validate stops before planning.
    let bad = world.path("bad.yaml");
    std::fs::write(&bad, "companies:\n  - nme: Typo\n").unwrap();
    let (code, printed) = ci::script(&world, &["plan", bad.to_str().unwrap()], &[]).await;
    assert_eq!(code, 1, "{printed}");
    assert!(ci::file(&world, "comment.md").contains("nme"), "the validation error is in the comment");
    world.assert_no_secrets();
}

/// One plan comment per request, posted by the CI's account and then updated in place; other
/// people's comments (one even starting with the plan marker) are neither read as the plan
/// comment nor edited.
async fn the_plan_comment_is_posted_once_then_updated(flavor: Flavor) {
    let world = World::start(ApiVersion::V6).await;
    let forge = Forge::start(flavor, &world).await;
    forge.comment(12, "alice", "LGTM");
    forge.comment(12, "mallory", &format!("{PLAN_MARKER}### ozform plan: no changes\n"));

    review(&world, &forge, 12, &[BASIC]).await;
    let notes = match flavor {
        Flavor::GitHub => "…/issues/12/comments",
        Flavor::GitLab => "…/merge_requests/12/notes",
    };
    let mut expected = Vec::new();
    if flavor == Flavor::GitLab {
        expected.push("GET /api/v4/user".to_string());
    }
    expected.extend([format!("GET {notes}"), format!("POST {notes}")]);
    assert_eq!(forge.lines(), expected);
    assert_eq!(forge.bot_comments(12), [ci::file(&world, "comment.md")]);

    ci::script(&world, &["apply", BASIC], &[]).await;
    review(&world, &forge, 12, &[BASIC]).await;
    let id = forge.comments(12).iter().find(|c| c.author == BOT).unwrap().id;
    let update = match flavor {
        Flavor::GitHub => format!("PATCH …/issues/comments/{id}"),
        Flavor::GitLab => format!("PUT {notes}/{id}"),
    };
    assert_eq!(forge.lines()[expected.len()..].last().unwrap(), &update);
    let comments = forge.comments(12);
    assert_eq!(comments.len(), 3, "one plan comment, updated: {comments:?}");
    assert!(comments[2].body.contains("### ozform plan: no changes"), "{}", comments[2].body);
    assert_eq!(comments[1].body, format!("{PLAN_MARKER}### ozform plan: no changes\n"), "not edited");
    assert!(
        forge
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path.ends_with(notes.trim_start_matches('…')))
            .all(|r| r.query == "per_page=100&page=1")
    );
    assert_eq!(forge.unauthorized(), 0);
    world.assert_no_secrets();
}

// The merge.

/// A merge whose plan equals the reviewed one applies it: the plan comment found on the second
/// page of comments, past a forged one by someone else; an open request holding the same commit
/// is not taken for the merged one.
async fn a_merge_whose_plan_was_reviewed_applies_it(flavor: Flavor) {
    let world = World::start(ApiVersion::V6).await;
    let forge = Forge::start(flavor, &world).await;
    forge.open_request_with(11, SHA);
    forge.merged(12, SHA, &[]);
    for i in 0..120 {
        forge.comment(12, "alice", &format!("comment {i}"));
    }
    let reviewed = review(&world, &forge, 12, &[BASIC]).await;
    forge.comment(12, "mallory", &format!("{PLAN_MARKER}<!-- ozform-plan-id: {} -->\n", "0".repeat(64)));

    let (code, printed) = merge(&world, &forge, SHA, &[BASIC], &[]).await;
    assert_eq!(code, 0, "{printed}");
    assert_eq!(service_users(&world), {
        let mut users = BASIC_USERS.map(String::from).to_vec();
        users.sort();
        users
    });
    assert!(world.token_files().contains_key("svc-web@acme.example.json"));
    let comment = last_bot_comment(&forge, 12);
    assert!(comment.starts_with(&format!("{MERGE_MARKER}### ozform merge: applied\n")), "{comment}");
    assert!(comment.contains(&format!("Applied the reviewed plan `{reviewed}`")), "{comment}");
    assert!(comment.contains("<details><summary>ozform apply output</summary>"), "{comment}");

    let lines = forge.lines();
    let lookup = match flavor {
        Flavor::GitHub => format!("GET …/commits/{SHA}/pulls"),
        Flavor::GitLab => format!("GET …/repository/commits/{SHA}/merge_requests"),
    };
    assert!(lines.contains(&lookup), "{lines:?}");
    let pages: Vec<String> = forge
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && (r.path.ends_with("/12/comments") || r.path.ends_with("/12/notes")))
        .map(|r| r.query)
        .collect();
    assert!(
        pages.ends_with(&["per_page=100&page=1".to_string(), "per_page=100&page=2".to_string()]),
        "{pages:?}"
    );
    world.assert_converged(&[BASIC]).await;
    assert_eq!(forge.unauthorized(), 0);
    world.assert_no_secrets();
}

/// The merged manifests plan something else than what was reviewed: nothing is applied, the
/// job fails, and the comment says so with the new plan. The same without any reviewed plan,
/// and for a commit that is no merged request's (no comment: there is nowhere to put one).
async fn a_merge_whose_plan_changed_since_review_applies_nothing_and_comments(flavor: Flavor) {
    let world = World::start(ApiVersion::V6).await;
    let forge = Forge::start(flavor, &world).await;
    forge.merged(12, SHA, &[]);
    let reviewed = review(&world, &forge, 12, &[BASIC]).await;

    // What was merged differs from what was reviewed (the default branch moved meanwhile).
    let merged = world.path("merged");
    std::fs::create_dir(&merged).unwrap();
    for name in ["companies.yaml", "service-users.yaml"] {
        let text = std::fs::read_to_string(common::root().join(BASIC).join(name)).unwrap();
        std::fs::write(merged.join(name), text.replace("last_name: Web", "last_name: Website")).unwrap();
    }
    let merged = merged.to_str().unwrap().to_string();
    let (code, printed) = merge(&world, &forge, SHA, &[&merged], &[]).await;
    assert_eq!(code, 1, "{printed}");
    assert!(printed.contains("the plan changed since review"), "{printed}");
    assert!(service_users(&world).is_empty(), "nothing applied");
    assert!(world.emu.snapshot().companies.is_empty(), "nothing applied");
    let now = ci::file(&world, "plan-id").trim().to_string();
    assert_ne!(now, reviewed);
    let comment = last_bot_comment(&forge, 12);
    assert!(
        comment.starts_with(&format!(
            "{MERGE_MARKER}### ozform merge: the plan changed since review, nothing applied\n"
        )),
        "{comment}"
    );
    assert!(
        comment.contains(&format!("plan id `{now}`")) && comment.contains(&format!("`{reviewed}`")),
        "{comment}"
    );
    assert!(comment.contains("\"Website\""), "the comment shows the new plan: {comment}");
    assert!(comment.len() < 65_536);

    // A merged request nobody reviewed a plan on.
    forge.merged(14, "b0b0", &[]);
    let (code, printed) = merge(&world, &forge, "b0b0", &[BASIC], &[]).await;
    assert_eq!(code, 1, "{printed}");
    let comment = last_bot_comment(&forge, 14);
    assert!(comment.contains("no plan was reviewed on this pull request"), "{comment}");
    assert!(comment.contains("the plan changed since review"), "{comment}");

    // A commit of no merged request (a push straight to the default branch).
    let before = forge.requests().len();
    let (code, printed) = merge(&world, &forge, "c0ffee", &[BASIC], &[]).await;
    assert_eq!(code, 1, "{printed}");
    assert!(printed.contains("commit c0ffee is no merged pull request's: nothing applied"), "{printed}");
    assert!(forge.requests()[before..].iter().all(|r| r.method == "GET"), "nothing posted");
    assert!(service_users(&world).is_empty(), "nothing applied");
    assert_eq!(forge.unauthorized(), 0);
    world.assert_no_secrets();
}

const KEEP: &str = "svc-keep@acme.example";
const GONE: &str = "svc-gone@acme.example";

/// A plan with removals (exit 3) is applied on merge only when the request carries the label:
/// without it nothing is applied and the comment names the label to add; with it (after a
/// re-run) the removal is applied. On GitLab the label is a configured one.
async fn removals_are_applied_on_merge_only_with_the_label(flavor: Flavor) {
    let version = ApiVersion::V6;
    let acme = CompanyRecord::new("Acme Bank");
    let users: Vec<UserRecord> = [KEEP, GONE]
        .iter()
        .map(|email| UserRecord { email: (*email).into(), ..service_user(version, 0, &acme.company_id) })
        .collect();
    let mut config = EmulatorConfig::new(version);
    config.seed = Some(Snapshot { companies: vec![acme], users, ..Snapshot::default() });
    let world = World::with(config).await;
    let forge = Forge::start(flavor, &world).await;
    let manifest = world.path("acme.yaml");
    std::fs::write(
        &manifest,
        format!("companies:\n  - name: Acme Bank\n    prune: deactivate\nservice_users:\n  - email: {KEEP}\n    company: Acme Bank\n"),
    )
    .unwrap();
    let manifest = manifest.to_str().unwrap().to_string();
    let (label, env) = match flavor {
        Flavor::GitHub => (DEFAULT_LABEL, vec![]),
        Flavor::GitLab => ("removals-ok", vec![("OZFORM_CI_REMOVALS_LABEL", "removals-ok".to_string())]),
    };
    forge.merged(12, SHA, &["documentation"]);
    review(&world, &forge, 12, &[&manifest]).await;
    assert_eq!(ci::file(&world, "exit-code"), "3\n");

    let (code, printed) = merge(&world, &forge, SHA, &[&manifest], &env).await;
    assert_eq!(code, 1, "{printed}");
    assert!(world.user(GONE).is_active, "nothing applied without the label");
    let comment = last_bot_comment(&forge, 12);
    assert!(
        comment.starts_with(&format!(
            "{MERGE_MARKER}### ozform merge: removals not approved, nothing applied\n"
        )),
        "{comment}"
    );
    assert!(comment.contains(&format!("add the label `{label}` to this pull request")), "{comment}");
    assert!(comment.contains(GONE), "the comment shows the plan: {comment}");

    if flavor == Flavor::GitLab {
        // The default label is not the configured one.
        forge.add_label(12, DEFAULT_LABEL);
        let (code, printed) = merge(&world, &forge, SHA, &[&manifest], &env).await;
        assert_eq!(code, 1, "{printed}");
        assert!(world.user(GONE).is_active);
    }
    forge.add_label(12, label);
    let (code, printed) = merge(&world, &forge, SHA, &[&manifest], &env).await;
    assert_eq!(code, 0, "{printed}");
    assert!(!world.user(GONE).is_active, "deactivated once approved");
    assert!(world.user(KEEP).is_active);
    assert!(last_bot_comment(&forge, 12).contains("### ozform merge: applied\n"));
    world.assert_no_secrets();
}

// The drift check.

/// The drift check opens one issue while the plan shows changes, updates it as they change,
/// and closes it once there are none; issues by other people or pull requests of the same
/// title are left alone.
async fn the_drift_check_opens_updates_and_closes_one_issue(flavor: Flavor) {
    let world = World::start(ApiVersion::V6).await;
    let forge = Forge::start(flavor, &world).await;
    let (title, env) = match flavor {
        Flavor::GitHub => ("ozform drift: prod".to_string(), vec![("OZFORM_CI_NAME", "prod".to_string())]),
        // By default the name is the API URL's origin.
        Flavor::GitLab => (format!("ozform drift: {}", world.emu.url().trim_end_matches('/')), vec![]),
    };
    let theirs = forge.issue("alice", &title, false);
    forge.issue(BOT, &title, true); // a pull request (GitHub lists them among issues)
    let mut all = forge.env("", 0);
    all.extend(env);
    let drift = |paths: &'static [&'static str]| {
        let mut args = vec!["drift", forge.name()];
        args.extend_from_slice(paths);
        let (world, all) = (&world, all.clone());
        async move { ci::script(world, &args, &all).await }
    };
    let ours = || -> Vec<common::ci::Issue> {
        forge.issues().into_iter().filter(|i| i.author == BOT && !i.pull_request).collect()
    };

    let (code, printed) = drift(&[BASIC]).await;
    assert_eq!(code, 0, "{printed}");
    let opened = ours();
    assert_eq!(opened.len(), 1, "{opened:?}");
    assert_eq!(opened[0].title, title);
    assert!(opened[0].open);
    assert!(opened[0].body.starts_with("<!-- ozform-drift -->\n"), "{}", opened[0].body);
    assert!(opened[0].body.contains("<code>company/Acme Bank</code>"), "{}", opened[0].body);
    assert!(opened[0].body.contains(&ci::file(&world, "plan-id").trim().to_string()));

    // Part of the drift is fixed: the same issue now holds the new plan.
    let (code, printed) = ci::script(&world, &["apply", "examples/basic/companies.yaml"], &[]).await;
    assert_eq!(code, 0, "{printed}");
    let (code, printed) = drift(&[BASIC]).await;
    assert_eq!(code, 0, "{printed}");
    let updated = ours();
    assert_eq!(updated.len(), 1, "{updated:?}");
    assert_eq!(updated[0].number, opened[0].number);
    assert!(!updated[0].body.contains("<code>company/Acme Bank</code>"), "{}", updated[0].body);
    assert!(updated[0].body.contains("svc-web@acme.example"), "{}", updated[0].body);

    // No drift left: closed, with a comment saying why.
    let (code, printed) = ci::script(&world, &["apply", BASIC], &[]).await;
    assert_eq!(code, 0, "{printed}");
    let (code, printed) = drift(&[BASIC]).await;
    assert_eq!(code, 0, "{printed}");
    let closed = ours();
    assert_eq!(closed.len(), 1);
    assert!(!closed[0].open, "closed once the plan shows no changes");
    assert_eq!(
        forge.bot_comments(closed[0].number),
        ["The plan shows no changes any more: closed by the drift check."]
    );
    let alices = forge.issues().into_iter().find(|i| i.number == theirs).unwrap();
    assert!(alices.open && alices.body == "by hand", "someone else's issue is left alone");

    // And nothing to do when there is no drift and no issue.
    let before = forge.requests().len();
    let (code, printed) = drift(&[BASIC]).await;
    assert_eq!(code, 0, "{printed}");
    assert!(forge.requests()[before..].iter().all(|r| r.method == "GET"), "{:?}", forge.lines());
    assert_eq!(forge.unauthorized(), 0);
    world.assert_no_secrets();
}

on_both_forges!(
    the_plan_comment_is_posted_once_then_updated,
    a_merge_whose_plan_was_reviewed_applies_it,
    a_merge_whose_plan_changed_since_review_applies_nothing_and_comments,
    removals_are_applied_on_merge_only_with_the_label,
    the_drift_check_opens_updates_and_closes_one_issue,
);

// Comments that fit.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_thousand_change_plan_comments_under_65536_characters_and_keeps_the_whole_plan() {
    let world = World::start(ApiVersion::V6).await;
    let forge = Forge::start(Flavor::GitHub, &world).await;
    let mut yaml = String::from("companies:\n  - name: Big Bank\nservice_users:\n");
    for i in 0..1000 {
        let _ = write!(
            yaml,
            "  - email: svc-{i:04}@big.example\n    company: Big Bank\n    password: {{env: BIG_PASSWORD}}\n    token: {{issue: true}}\n"
        );
    }
    let manifest = world.path("big.yaml");
    std::fs::write(&manifest, yaml).unwrap();
    review(&world, &forge, 12, &[manifest.to_str().unwrap()]).await;

    let saved: Value = serde_json::from_str(&ci::file(&world, "plan.json")).unwrap();
    assert_eq!(saved["changes"].as_array().unwrap().len(), 2001);
    let whole = ci::file(&world, "plan.md");
    for i in [0, 499, 999] {
        assert!(whole.contains(&format!("svc-{i:04}@big.example")), "plan.md holds every change");
    }
    let posted = forge.bot_comments(12).pop().unwrap();
    assert_eq!(posted, ci::file(&world, "comment.md"));
    let characters = posted.chars().count();
    assert!(characters < 65_536, "the comment has {characters} characters");
    assert!(posted.contains("more changes: the whole plan is in the job's artifact `plan.md`"), "{posted}");
    assert!(posted.contains(saved["plan_id"].as_str().unwrap()), "the comment carries the plan id");
    world.assert_no_secrets();
}
