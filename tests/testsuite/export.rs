//! `ozform export` end to end: the binary against the in-process emulator (API 5 and 6),
//! seeded by applying `examples/basic` with the binary and by a seed state holding what a
//! manifest cannot declare. Checks the contract: read-only (zero mutating requests), the
//! output validates, and planned back against the same live state it plans no change.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::path::Path;

use common::{Cli, Run, root};
use ozform::emulator::{self, CompanyRecord, EmulatorConfig, Handle, Snapshot, UserRecord};
use ozform::model::ApiVersion;
use serde_json::{Value, json};

const PASSWORDS: [&str; 3] = ["ACME_WEB_PASSWORD", "ACME_BATCH_PASSWORD", "GLOBEX_CLAIMS_PASSWORD"];

/// Live state besides `examples/basic`: a company with users that are not service users and a
/// service user without a last name (a manifest cannot write a blank one), and a company being
/// deleted. (`examples/basic` creates its own companies: the seed does not hold them.)
fn seed(version: ApiVersion) -> Snapshot {
    let mut initech = CompanyRecord::new("Initech");
    initech.technical_meta_data = json!({"tier": "silver", "contacts": ["ops@initech.example"], "seats": 12});
    let mut old = CompanyRecord::new("Old Corp");
    old.in_deletion = true;
    let clerk =
        UserRecord::new("clerk@initech.example".into(), "CLIENT".into(), Some(initech.company_id.clone()));
    let mut boss =
        UserRecord::new("boss@initech.example".into(), "CLIENT".into(), Some(initech.company_id.clone()));
    let mut legacy = UserRecord::new(
        "Legacy.Feed@initech.example".into(),
        "CLIENT".into(),
        Some(initech.company_id.clone()),
    );
    legacy.first_name = "Legacy".into();
    legacy.is_active = false;
    legacy.permissions.quality = false;
    match version {
        ApiVersion::V5 => {
            boss.is_admin = true;
            legacy.is_service = true;
        }
        ApiVersion::V6 => {
            boss.user_type = "CLIENT_ADMIN".into();
            legacy.user_type = "CLIENT_SERVICE".into();
        }
    }
    let mut gone = UserRecord::new("gone@old.example".into(), "CLIENT".into(), Some(old.company_id.clone()));
    gone.is_service = true;
    Snapshot { companies: vec![initech, old], users: vec![clerk, boss, legacy, gone], service_tokens: vec![] }
}

/// Run the binary off the async runtime, so that the emulator keeps serving meanwhile.
async fn ozform(cli: Cli) -> Run {
    tokio::task::spawn_blocking(move || cli.run()).await.unwrap()
}

fn connected(handle: &Handle) -> Cli {
    Cli::new()
        .env("OZ_API_URL", handle.url())
        .env("OZ_ADMIN_EMAIL", handle.admin_email())
        .env("OZ_ADMIN_PASSWORD", handle.admin_password().expose())
}

/// An emulator holding `seed` plus `examples/basic`, applied by the binary.
async fn live(version: ApiVersion, tokens: &Path) -> Handle {
    let mut config = EmulatorConfig::new(version);
    config.seed = Some(seed(version));
    let handle = emulator::start(config).await.unwrap();
    let mut apply =
        connected(&handle).args(["apply", "--auto-approve"]).args([root().join("examples/basic")]);
    apply = apply.env("OZ_TOKEN_DIR", tokens);
    for name in PASSWORDS {
        apply = apply.env(name, format!("canary-{name}"));
    }
    ozform(apply).await.code(0);
    handle
}

/// Plan `manifest` as JSON against `handle` with the given token directory.
async fn plan_json(handle: &Handle, manifest: &Path, tokens: &Path) -> Value {
    let run = ozform(
        connected(handle).args(["plan", "--format", "json"]).args([manifest]).env("OZ_TOKEN_DIR", tokens),
    )
    .await
    .code(0);
    serde_json::from_str(&run.stdout).unwrap()
}

fn addresses(plan: &Value) -> Vec<String> {
    plan["changes"].as_array().unwrap().iter().map(|c| c["address"].as_str().unwrap().to_string()).collect()
}

async fn the_export_validates_and_plans_back_to_no_changes(version: ApiVersion) {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    let handle = live(version, &tokens).await;

    handle.reset_stats();
    let run = ozform(connected(&handle).args(["export"])).await.code(0);
    assert_eq!(handle.stats().mutating_requests, 0, "export must not change anything");
    assert!(
        run.stderr.contains("left out 2 users of exported companies that are not service users"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("company `Old Corp` is being deleted"), "{}", run.stderr);
    let admin_password = handle.admin_password().expose();
    for text in [&run.stdout, &run.stderr] {
        assert!(!text.contains("canary-") && !text.contains(admin_password), "a secret leaked:\n{text}");
    }

    let manifest = dir.path().join("export.yaml");
    std::fs::write(&manifest, &run.stdout).unwrap();
    let validated = ozform(Cli::new().args(["validate"]).args([&manifest])).await.code(0);
    assert_eq!(validated.stdout, "ok: 3 companies, 4 service users, 0 tokens in 1 file\n");

    let plan = plan_json(&handle, &manifest, &tokens).await;
    assert_eq!(addresses(&plan), Vec::<String>::new(), "{plan:#}");
    assert_eq!(plan["conflicts"], json!([]));
    let unmanaged: Vec<&str> =
        plan["unmanaged"].as_array().unwrap().iter().map(|u| u["email"].as_str().unwrap()).collect();
    assert_eq!(unmanaged, ["boss@initech.example", "clerk@initech.example"]);

    let url = handle.url();
    insta::with_settings!({
        snapshot_suffix => format!("api{}", version.number()),
        filters => vec![
            (url.as_str(), "http://127.0.0.1:[PORT]"),
            (r"source_id: [0-9a-f-]{36}", "source_id: [ID]"),
        ],
    }, {
        insta::assert_snapshot!("exported_manifest", run.stdout);
    });
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_6_export_validates_and_plans_back_to_no_changes() {
    the_export_validates_and_plans_back_to_no_changes(ApiVersion::V6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_5_export_validates_and_plans_back_to_no_changes() {
    the_export_validates_and_plans_back_to_no_changes(ApiVersion::V5).await;
}

async fn the_company_filter_and_tokens(version: ApiVersion) {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    let handle = live(version, &tokens).await;
    let manifest = dir.path().join("globex.yaml");

    handle.reset_stats();
    // A name that matches no live company is an error, as in plan and apply: nothing is written.
    let run = ozform(
        connected(&handle)
            .args(["export", "--company", "Globex Insurance", "--company", "Nowhere", "--tokens", "--out"])
            .args([&manifest]),
    )
    .await
    .code(1);
    assert!(run.stderr.contains("`--company Nowhere` matches no live company"), "{}", run.stderr);
    assert!(!manifest.exists(), "nothing was written");

    let run = ozform(
        connected(&handle)
            .args(["export", "--company", "Globex Insurance", "--tokens", "--out"])
            .args([&manifest]),
    )
    .await
    .code(0);
    assert_eq!(handle.stats().mutating_requests, 0);
    assert_eq!(run.stdout, "", "with --out nothing goes to stdout");
    assert!(run.stderr.contains("exported 1 company and 1 service user"), "{}", run.stderr);

    let yaml = std::fs::read_to_string(&manifest).unwrap();
    assert!(yaml.contains("name: Globex Insurance") && !yaml.contains("Acme"), "{yaml}");
    // The API gives no password back: ozform generates one if it has to create the user.
    assert!(yaml.contains("password:\n    generate: true"), "{yaml}");
    // Each object's id here, for `apply --id-map` to pair with the new one.
    let live = handle.snapshot();
    let claims = live.users.iter().find(|u| u.email == "svc-claims@globex.example").unwrap();
    let globex = live.companies.iter().find(|c| c.name == "Globex Insurance").unwrap();
    assert!(yaml.contains(&format!("source_id: {}", claims.user_id)), "{yaml}");
    assert!(yaml.contains(&format!("source_id: {}", globex.company_id)), "{yaml}");
    ozform(Cli::new().args(["validate"]).args([&manifest])).await.code(0);

    // The token the apply wrote is in the sink: nothing to do. An empty sink: only issues.
    let plan = plan_json(&handle, &manifest, &tokens).await;
    assert_eq!(addresses(&plan), Vec::<String>::new(), "{plan:#}");
    let plan = plan_json(&handle, &manifest, &dir.path().join("empty-sink")).await;
    assert_eq!(addresses(&plan), ["token/svc-claims@globex.example"], "{plan:#}");
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_6_export_of_one_company_with_tokens_plans_only_missing_tokens() {
    the_company_filter_and_tokens(ApiVersion::V6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_5_export_of_one_company_with_tokens_plans_only_missing_tokens() {
    the_company_filter_and_tokens(ApiVersion::V5).await;
}

/// `--tokens` marks only active users: Initech's inactive service user gets no token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_marked_for_active_users_only() {
    let dir = tempfile::tempdir().unwrap();
    let handle = live(ApiVersion::V6, &dir.path().join("tokens")).await;
    let run = ozform(connected(&handle).args(["export", "--company", "Initech", "--tokens"])).await.code(0);
    let document: Value = serde_saphyr::from_str(&run.stdout).unwrap();
    let users = document["service_users"].as_array().unwrap();
    let legacy = users.iter().find(|u| u["email"] == "Legacy.Feed@initech.example").unwrap();
    assert_eq!(legacy["active"], false);
    assert!(legacy.get("token").is_none(), "an inactive user is marked for a token:\n{}", run.stdout);
    let plan = {
        let manifest = dir.path().join("initech.yaml");
        std::fs::write(&manifest, &run.stdout).unwrap();
        plan_json(&handle, &manifest, &dir.path().join("empty-sink")).await
    };
    assert!(
        addresses(&plan).iter().all(|a| !a.starts_with("token/")),
        "no token for an inactive user: {plan:#}"
    );
    handle.shutdown().await;
}

/// The schema comment points at the nearest `schemas/ozform.schema.json` up from the file
/// written, else at `schemas/` next to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_comment_is_relative_to_the_file_written() {
    let dir = tempfile::tempdir().unwrap();
    let handle = live(ApiVersion::V6, &dir.path().join("tokens")).await;
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(repo.join("schemas")).unwrap();
    std::fs::create_dir_all(repo.join("manifests/prod")).unwrap();
    std::fs::copy(root().join("schemas/ozform.schema.json"), repo.join("schemas/ozform.schema.json"))
        .unwrap();
    let first_line = |path: &Path| std::fs::read_to_string(path).unwrap().lines().next().unwrap().to_string();
    for (out, schema) in [
        ("manifests/prod/live.yaml", "../../schemas/ozform.schema.json"),
        ("live.yaml", "schemas/ozform.schema.json"),
    ] {
        ozform(connected(&handle).current_dir(&repo).args(["export", "--out", out])).await.code(0);
        assert_eq!(first_line(&repo.join(out)), format!("# yaml-language-server: $schema={schema}"));
    }
    // No schema up the tree: the directory's own `schemas/`, where `ozform schema` can write it.
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    ozform(connected(&handle).current_dir(&elsewhere).args(["export", "--out", "live.yaml"])).await.code(0);
    assert_eq!(
        first_line(&elsewhere.join("live.yaml")),
        "# yaml-language-server: $schema=schemas/ozform.schema.json"
    );
    // On stdout, relative to the working directory.
    let run = ozform(connected(&handle).current_dir(repo.join("manifests")).args(["export"])).await.code(0);
    assert!(
        run.stdout.starts_with("# yaml-language-server: $schema=../schemas/ozform.schema.json\n"),
        "{}",
        run.stdout
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_live_state_exports_to_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let handle = live(ApiVersion::V6, &dir.path().join("tokens")).await;
    let one = ozform(connected(&handle).args(["export"])).await.code(0);
    let two = ozform(connected(&handle).args(["export"])).await.code(0);
    assert_eq!(one.stdout, two.stdout);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_5_export_applied_to_a_fresh_api_6_installation_recreates_every_service_user() {
    let dir = tempfile::tempdir().unwrap();
    let source = live(ApiVersion::V5, &dir.path().join("tokens")).await;
    let manifest = dir.path().join("dr.yaml");
    // Passwords from a variable per user (`--password-env`); `disaster_recovery` generates them.
    ozform(connected(&source).args(["export", "--tokens", "--password-env", "--out"]).args([&manifest]))
        .await
        .code(0);

    let fresh = emulator::start(EmulatorConfig::new(ApiVersion::V6)).await.unwrap();
    let new_tokens = dir.path().join("new-tokens");
    let yaml = std::fs::read_to_string(&manifest).unwrap();
    let mut apply = connected(&fresh)
        .args(["apply", "--auto-approve"])
        .args([&manifest])
        .env("OZ_TOKEN_DIR", &new_tokens);
    for line in yaml.lines().filter_map(|l| l.trim().strip_prefix("env: ")) {
        apply = apply.env(line, format!("canary-{line}"));
    }
    let applied = ozform(apply).await.code(0);
    assert!(applied.stdout.contains("Apply complete"), "{}", applied.stdout);

    let plan = plan_json(&fresh, &manifest, &new_tokens).await;
    assert_eq!(addresses(&plan), Vec::<String>::new(), "{plan:#}");
    let mut emails: Vec<String> =
        fresh.snapshot().users.iter().filter(|u| u.user_type != "ADMIN").map(|u| u.email.clone()).collect();
    emails.sort();
    assert_eq!(
        emails,
        [
            "Legacy.Feed@initech.example",
            "svc-batch@acme.example",
            "svc-claims@globex.example",
            "svc-web@acme.example"
        ]
    );
    // Token files, in the new installation's directory (its URL's origin, encoded); the
    // directory also holds apply's (empty) lock file, `.ozform.lock`.
    let installation = ozform::token_store::Installation::of_api(&fresh.url());
    let kept = new_tokens.join(ozform::token_store::naming::encode(installation.name()));
    let token_files = std::fs::read_dir(&kept)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".json"))
        .count();
    // `Legacy.Feed` is inactive: `--tokens` marks no token for it (#21).
    assert_eq!(token_files, 3, "every active user's token is in the new sink");
    source.shutdown().await;
    fresh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_without_a_connection_says_what_is_missing() {
    let run = ozform(Cli::new().args(["export"])).await.code(1);
    assert!(run.stderr.contains("no Oz API URL given"), "{}", run.stderr);
}

// ---------------------------------------------------------------------------------------------
// The round trip as a property, at the library level: any live state, exported, loads without
// a problem and plans no change and no conflict against that same live state.

mod round_trip {
    use ozform::manifest::{self, export};
    use ozform::model::StoredTokens;
    use ozform::model::{Email, LivePermissions, Observed, ObservedCompany, ObservedUser, UserKind};
    use ozform::plan::{self, PlanOptions};
    use proptest::prelude::*;

    use super::*;

    /// Names YAML or the loader could misread, twins, a blank one.
    const COMPANIES: [&str; 7] = ["Acme", "yes", "2024", "${HOME}", "a: b # c", "Acme", " "];
    const EMAILS: [&str; 7] =
        ["a@x.test", "A@X.test", "b.c@x.test", "b-c@x.test", "no-at-sign", "d@x.test", "e'\"@x.test"];
    const NAMES: [&str; 5] = ["", " ", "Ann", "null", "$${x}"];

    fn kind() -> impl Strategy<Value = UserKind> {
        prop_oneof![
            4 => Just(UserKind::Service),
            1 => Just(UserKind::Client),
            1 => Just(UserKind::CompanyAdmin),
            1 => Just(UserKind::Other("CLIENT_OPERATOR".into())),
        ]
    }

    fn meta() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(json!({})),
            Just(Value::Null),
            Just(json!({"tier": "gold", "list": [1, 2.5, null, "yes"], "deep": {"${X}": "$${y}"}})),
            Just(json!(["not", "a", "map"])),
        ]
    }

    fn observed() -> impl Strategy<Value = Observed> {
        let company = (0..COMPANIES.len(), proptest::bool::weighted(0.2), meta());
        let user = (
            0..EMAILS.len(),
            proptest::option::weighted(0.9, 0..COMPANIES.len()),
            kind(),
            (0..NAMES.len(), 0..NAMES.len(), 0..NAMES.len()),
            any::<bool>(),
            any::<[bool; 4]>(),
        );
        (proptest::collection::vec(company, 0..6), proptest::collection::vec(user, 0..8)).prop_map(
            |(companies, users)| Observed {
                api_url: "http://oz.test".into(),
                api_version: ApiVersion::V6,
                api_version_detected: false,
                companies: companies
                    .into_iter()
                    .enumerate()
                    .map(|(i, (name, in_deletion, technical_meta_data))| ObservedCompany {
                        id: format!("c{i}"),
                        name: COMPANIES[name].into(),
                        in_deletion,
                        technical_meta_data,
                    })
                    .collect(),
                users: users
                    .into_iter()
                    .enumerate()
                    .map(|(i, (email, company, kind, (f, l, m), active, [b, c, d, q]))| ObservedUser {
                        id: format!("u{i}"),
                        email: Email::new(EMAILS[email]),
                        company_id: company.map(|c| format!("c{c}").into()),
                        kind,
                        first_name: NAMES[f].into(),
                        last_name: NAMES[l].into(),
                        middle_name: NAMES[m].into(),
                        active,
                        permissions: LivePermissions { biometry: b, collection: c, documents: d, quality: q },
                    })
                    .collect(),
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        #[test]
        fn any_live_state_exported_loads_and_plans_back_to_no_changes(observed in observed()) {
            let export = export::to_document(&observed, &export::ExportOptions::default());
            let yaml = export.to_yaml(&export::schema_path(0));
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("export.yaml");
            std::fs::write(&file, &yaml).unwrap();
            let desired = manifest::load(&[file], &|_| None)
                .map_err(|e| format!("{:?}\n{yaml}", miette::Report::new(e)))
                .unwrap();
            prop_assert_eq!(desired.companies.len(), export.document.companies.len());
            prop_assert_eq!(desired.users.len(), export.document.service_users.len());
            let plan = plan::compute(&desired, &observed, &StoredTokens::new(), &PlanOptions::default());
            prop_assert!(plan.changes.is_empty(), "{:#?}\n{}", plan.changes, yaml);
            prop_assert!(plan.conflicts.is_empty(), "{:#?}\n{}", plan.conflicts, yaml);
        }
    }
}
