//! Removals end to end (#15), each scenario under API 6 and API 5 on the emulator: a company
//! that opts in with `prune:` has its undeclared live service users deactivated or deleted,
//! their stored tokens dropped; nothing else is ever touched (non-service users, users of
//! companies that do not prune); the blast-radius guard refuses mass removals unless
//! `--allow-mass-removal`; `plan --detailed-exitcode` says 0, 2 or 3.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use crate::common;

use std::fmt::Write as _;

use common::emulator::service_user;
use common::world::World;
use ozform::emulator::{CompanyRecord, EmulatorConfig, Snapshot, UserRecord};
use ozform::model::ApiVersion;
use serde_json::Value;

const ACME: &str = "Acme Bank";
const GLOBEX: &str = "Globex";
const KEEP: &str = "svc-keep@acme.example";
const GONE: &str = "svc-gone@acme.example";
const HUMAN: &str = "human@acme.example";
const OTHER: &str = "svc-other@globex.example";

/// A plain client user (not a service user) of `company_id`, as `version` stores one.
fn client_user(version: ApiVersion, email: &str, company_id: &str) -> UserRecord {
    let _ = version; // both dialects spell a plain client user `CLIENT` without `is_service`
    UserRecord::new(email.into(), "CLIENT".into(), Some(company_id.into()))
}

/// A service user `email` of `company_id`, as `version` stores one.
fn svc(version: ApiVersion, email: &str, company_id: &str) -> UserRecord {
    UserRecord { email: email.into(), ..service_user(version, 0, company_id) }
}

/// Acme Bank (two service users and a plain client user) and Globex (one service user).
async fn small_world(version: ApiVersion) -> World {
    let acme = CompanyRecord::new(ACME);
    let globex = CompanyRecord::new(GLOBEX);
    let users = vec![
        svc(version, KEEP, &acme.company_id),
        svc(version, GONE, &acme.company_id),
        client_user(version, HUMAN, &acme.company_id),
        svc(version, OTHER, &globex.company_id),
    ];
    let mut config = EmulatorConfig::new(version);
    config.seed = Some(Snapshot { companies: vec![acme, globex], users, ..Snapshot::default() });
    World::with(config).await
}

/// Write `manifest.yaml` in the world's dir and return its path.
fn manifest(w: &World, name: &str, yaml: &str) -> String {
    let path = w.path(name);
    std::fs::write(&path, yaml).unwrap();
    path.to_str().unwrap().to_string()
}

/// Acme Bank pruning with `prune` (none when empty), Globex not pruning; `users` declared in
/// Acme Bank (with a token each), none in Globex.
fn acme_manifest(prune: &str, users: &[&str]) -> String {
    let mut yaml = String::from("companies:\n  - name: Acme Bank\n");
    if !prune.is_empty() {
        let _ = writeln!(yaml, "    prune: {prune}");
    }
    yaml.push_str("  - name: Globex\n");
    if !users.is_empty() {
        yaml.push_str("service_users:\n");
        for email in users {
            let _ = write!(yaml, "  - email: {email}\n    company: Acme Bank\n    token: {{issue: true}}\n");
        }
    }
    yaml
}

/// Whether `stderr` says `needle`, whatever the line wrapping of the diagnostic (whitespace
/// and miette's `|` gutter are ignored on both sides).
fn says(stderr: &str, needle: &str) -> bool {
    let squash = |s: &str| s.chars().filter(|c| !c.is_whitespace() && *c != '|').collect::<String>();
    squash(stderr).contains(&squash(needle))
}

fn live(w: &World, email: &str) -> Option<UserRecord> {
    w.emu.snapshot().users.into_iter().find(|u| u.email == email)
}

fn token_file(email: &str) -> String {
    format!("{email}.json")
}

/// Both service users declared with tokens, applied: the starting point of the prune scenarios.
async fn with_tokens_stored(w: &World) {
    let both = manifest(w, "before.yaml", &acme_manifest("", &[KEEP, GONE]));
    w.apply(&["--auto-approve", &both]).await.code(0);
    let files = w.token_files();
    assert!(files.contains_key(&token_file(GONE)) && files.contains_key(&token_file(KEEP)), "{files:?}");
}

/// The users no prune may touch are as they were seeded.
fn untouched(w: &World, version: ApiVersion) {
    for (email, why) in [
        (HUMAN, "a plain client user is never removed"),
        (OTHER, "a user of a company that does not prune is never removed"),
        (KEEP, "a declared user is never removed"),
    ] {
        assert!(live(w, email).is_some_and(|u| u.is_active), "{why} ({version:?})");
    }
}

async fn prune_with_delete_deletes_the_undeclared_service_user_and_drops_its_token(version: ApiVersion) {
    let w = small_world(version).await;
    with_tokens_stored(&w).await;
    let pruned = manifest(&w, "pruned.yaml", &acme_manifest("delete", &[KEEP]));

    let run = w.plan(&["--detailed-exitcode", &pruned]).await.code(3);
    assert!(run.stdout.contains(&format!("- service_user/{GONE} will be deleted")), "{}", run.stdout);
    assert!(
        run.stdout.contains("reason: not in any manifest; company `Acme Bank` prunes with `delete`"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("Plan: 0 to create, 0 to update, 0 tokens to issue, 0 to deactivate, 1 to delete.")
    );
    // The plain client user stays listed as unmanaged, as does the user of Globex (no prune).
    assert!(run.stdout.contains(&format!("  - {HUMAN} (company Acme Bank)")), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("  - {OTHER} (company Globex)")), "{}", run.stdout);
    let json: Value =
        serde_json::from_str(&w.plan(&["--format", "json", &pruned]).await.code(0).stdout).unwrap();
    assert_eq!(json["summary"]["delete"], 1);
    assert_eq!(json["prune"][0]["live_service_users"], 2);
    let change = &json["changes"][0];
    assert_eq!((change["action"].as_str(), change["after"].is_null()), (Some("delete"), true));
    assert_eq!(change["before"]["email"], GONE);

    w.apply(&["--auto-approve", &pruned]).await.code(0);
    assert!(live(&w, GONE).is_none(), "the undeclared service user is deleted");
    assert!(!w.token_files().contains_key(&token_file(GONE)), "its stored token is dropped");
    assert!(w.token_files().contains_key(&token_file(KEEP)), "other tokens stay");
    untouched(&w, version);
    w.assert_converged(&[&pruned]).await;
    w.assert_no_secrets();
}

async fn prune_with_deactivate_is_reversible_by_declaring_the_user_again(version: ApiVersion) {
    let w = small_world(version).await;
    with_tokens_stored(&w).await;
    let pruned = manifest(&w, "pruned.yaml", &acme_manifest("deactivate", &[KEEP]));

    let run = w.plan(&["--detailed-exitcode", &pruned]).await.code(3);
    assert!(run.stdout.contains(&format!("! service_user/{GONE} will be deactivated")), "{}", run.stdout);
    assert!(run.stdout.contains("active = true → false"), "{}", run.stdout);

    w.apply(&["--auto-approve", &pruned]).await.code(0);
    assert!(live(&w, GONE).is_some_and(|u| !u.is_active), "deactivated, not deleted");
    assert!(!w.token_files().contains_key(&token_file(GONE)), "its stored token is dropped");
    untouched(&w, version);
    // An undeclared user that is already inactive is no change: exit 0.
    w.assert_converged(&[&pruned]).await;

    // Declared again: an update back to active (exit 2, no removal), and a new token.
    let again = manifest(&w, "again.yaml", &acme_manifest("deactivate", &[KEEP, GONE]));
    let run = w.plan(&["--detailed-exitcode", &again]).await.code(2);
    assert!(
        run.stdout.contains(&format!("~ service_user/{GONE} will be updated in place")),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("active = false → true"), "{}", run.stdout);
    w.apply(&["--auto-approve", &again]).await.code(0);
    assert!(live(&w, GONE).unwrap().is_active, "re-declaring re-activates");
    assert!(w.token_files().contains_key(&token_file(GONE)), "and its token is issued again");
    w.assert_converged(&[&again]).await;
    w.assert_no_secrets();
}

async fn without_prune_nothing_is_removed_and_exit_codes_are_0_and_2(version: ApiVersion) {
    let w = small_world(version).await;
    let keep_only = manifest(&w, "keep.yaml", &acme_manifest("", &[KEEP]));
    let run = w.plan(&["--detailed-exitcode", &keep_only]).await.code(2);
    assert!(run.stdout.contains("Plan: 0 to create, 0 to update, 1 token to issue."), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("  - {GONE} (company Acme Bank)")), "{}", run.stdout);
    w.apply(&["--auto-approve", &keep_only]).await.code(0);
    assert!(live(&w, GONE).unwrap().is_active, "a company without `prune` keeps its users");
    w.assert_converged(&[&keep_only]).await;
    assert_eq!(w.emu.snapshot().users.len(), 5, "the admin and the four seeded users");
}

async fn a_pruning_company_that_declares_no_user_is_refused_without_the_flag(version: ApiVersion) {
    let w = small_world(version).await;
    let empty = manifest(&w, "empty.yaml", &acme_manifest("delete", &[]));
    let run = w.plan(&[&empty]).await.code(1);
    assert!(says(&run.stderr, "ozform::plan::mass_removal"), "{}", run.stderr);
    assert!(
        says(
            &run.stderr,
            "company `Acme Bank` prunes with `delete` but the manifests declare none of its service users"
        ),
        "{}",
        run.stderr
    );
    assert!(says(&run.stderr, "pass `--allow-mass-removal`"), "{}", run.stderr);
    w.apply(&["--auto-approve", &empty]).await.code(1);
    assert_eq!(w.emu.stats().mutating_requests, 0, "refused before any change");
    assert!(live(&w, KEEP).is_some() && live(&w, GONE).is_some());

    w.plan(&["--detailed-exitcode", "--allow-mass-removal", &empty]).await.code(3);
    w.apply(&["--auto-approve", "--allow-mass-removal", &empty]).await.code(0);
    assert!(live(&w, KEEP).is_none() && live(&w, GONE).is_none());
    assert!(live(&w, HUMAN).is_some() && live(&w, OTHER).is_some());
    w.assert_no_secrets();
}

/// Acme Bank with 100 live service users `user{i}@x.test`, pruning with `deactivate`.
async fn hundred_world(version: ApiVersion) -> World {
    let acme = CompanyRecord::new(ACME);
    let users = (0..100).map(|i| service_user(version, i, &acme.company_id)).collect();
    let mut config = EmulatorConfig::new(version);
    config.seed = Some(Snapshot { companies: vec![acme], users, ..Snapshot::default() });
    World::with(config).await
}

/// A manifest declaring `user{from}..user99` in Acme Bank, which prunes with `deactivate`.
fn declaring_from(from: usize) -> String {
    let mut yaml = String::from("companies:\n  - name: Acme Bank\n    prune: deactivate\nservice_users:\n");
    for i in from..100 {
        let _ = write!(yaml, "  - email: user{i}@x.test\n    company: Acme Bank\n");
    }
    yaml
}

async fn the_guard_trips_at_31_percent_and_not_at_30(version: ApiVersion) {
    let w = hundred_world(version).await;
    let thirty_one = manifest(&w, "31.yaml", &declaring_from(31));
    let thirty = manifest(&w, "30.yaml", &declaring_from(30));

    let run = w.plan(&["--detailed-exitcode", &thirty_one]).await.code(1);
    assert!(
        says(
            &run.stderr,
            "31 removals are 31% of the 100 live service users of the pruning companies, more than \
             `--max-removal-percent` 30%"
        ),
        "{}",
        run.stderr
    );
    // The plan is shown before it is refused, so the reviewer sees what would go.
    assert!(run.stdout.contains("31 to deactivate"), "{}", run.stdout);
    let saved = w.path("31.json");
    let saved = saved.to_str().unwrap();
    w.plan(&["--out", saved, &thirty_one]).await.code(1);
    assert!(!std::path::Path::new(saved).exists(), "a refused plan is not saved");
    w.apply(&["--auto-approve", &thirty_one]).await.code(1);
    assert_eq!(w.emu.stats().mutating_requests, 0, "refused before any change");

    // The thresholds are settings.
    w.plan(&["--detailed-exitcode", "--max-removal-percent", "31", &thirty_one]).await.code(3);
    w.plan(&["--detailed-exitcode", "--min-live-for-percent", "101", &thirty_one]).await.code(3);
    w.plan(&["--detailed-exitcode", &thirty]).await.code(3);
    let run = w.plan(&["--max-removals", "29", &thirty]).await.code(1);
    assert!(says(&run.stderr, "30 removals are more than `--max-removals` 29"), "{}", run.stderr);

    // A saved plan is judged by its own figures: made with the flag, refused without it.
    w.plan(&["--out", saved, "--allow-mass-removal", &thirty_one]).await.code(0);
    let run = w.apply(&["--plan", saved]).await.code(1);
    assert!(says(&run.stderr, "ozform::plan::mass_removal"), "{}", run.stderr);
    assert_eq!(w.emu.stats().mutating_requests, 0);
    w.apply(&["--plan", saved, "--allow-mass-removal"]).await.code(0);
    let inactive = w.emu.snapshot().users.iter().filter(|u| !u.is_active).count();
    assert_eq!(inactive, 31);
    // Undeclared and already inactive: no change, whatever the guard.
    w.assert_converged(&[&thirty_one]).await;
    w.assert_no_secrets();
}

async fn a_saved_plan_whose_removed_user_changed_since_is_stale(version: ApiVersion) {
    let w = small_world(version).await;
    let pruned = manifest(&w, "pruned.yaml", &acme_manifest("delete", &[KEEP]));
    let saved = w.path("plan.json");
    let saved = saved.to_str().unwrap();
    w.plan(&["--out", saved, &pruned]).await.code(0);
    // Behind ozform's back: the user to delete is renamed.
    let (http, token) = w.admin_session().await;
    let id = live(&w, GONE).unwrap().user_id;
    let answer = http
        .patch(format!("{}/api/users/{id}", w.emu.url()))
        .header("X-Forensic-Access-Token", token)
        .json(&serde_json::json!({"first_name": "Renamed"}))
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{answer:?}");
    let run = w.apply(&["--plan", saved]).await.code(1);
    assert!(says(&run.stderr, &format!("service_user/{GONE}")), "{}", run.stderr);
    assert!(live(&w, GONE).is_some(), "a stale plan deletes nothing");
}

under_both_dialects!(
    prune_with_delete_deletes_the_undeclared_service_user_and_drops_its_token,
    prune_with_deactivate_is_reversible_by_declaring_the_user_again,
    without_prune_nothing_is_removed_and_exit_codes_are_0_and_2,
    a_pruning_company_that_declares_no_user_is_refused_without_the_flag,
    the_guard_trips_at_31_percent_and_not_at_30,
    a_saved_plan_whose_removed_user_changed_since_is_stale,
);
