//! Snapshots of the three renderers on one plan that has every kind of change, a conflict,
//! unmanaged users and a warning; the saved plan format round-trips and refuses unknown
//! versions; no rendering ever holds a secret value (canary passwords).
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use crate::common;

use common::builders::{self, loc};
use ozform::model::{
    ApiVersion, Desired, DesiredCompany, DesiredUser, Email, LivePermissions, Observed, ObservedCompany,
    ObservedUser, Permissions, Prune, StoredToken, StoredTokens, TokenSpec, UserKind,
};
use ozform::plan::format::{from_json as parse_plan, to_json as json};
use ozform::plan::{Plan, PlanError, PlanOptions, compute, missing_secrets};
use ozform::render::{Style, markdown, text};
use ozform::secret::{SecretFile, SecretRef};
use serde_json::json;

const NOW: f64 = 1_800_000_000.0;
const URL: &str = "https://oz.example";

fn user(email: &str, company: &str, password: SecretRef) -> DesiredUser {
    DesiredUser {
        email: Email::new(email),
        company: company.into(),
        first_name: Some("Svc".into()),
        last_name: Some("Web".into()),
        middle_name: None,
        password: Some(password),
        active: true,
        permissions: Some(Permissions { documents: Some(false), ..Permissions::default() }),
        token: TokenSpec { issue: true },
        location: loc(),
    }
}

/// A live service user `Svc Web` whose `documents` permission is off, as the manifest wants.
fn live_user(id: &str, email: &str, company_id: &str) -> ObservedUser {
    ObservedUser {
        first_name: "Svc".into(),
        last_name: "Web".into(),
        permissions: LivePermissions { documents: false, ..LivePermissions::default() },
        ..builders::live_user(id, email, company_id)
    }
}

/// Desired, observed and sink of a plan with: a company create and a company update (long
/// metadata, diffed), a user create (in the new company) and a user update, tokens for a user
/// being created, with none in the sink and expiring; a user in another company (conflict);
/// unmanaged live users; a password source that is not available (warning).
fn fixture(secret_web: SecretRef, secret_new: SecretRef) -> (Desired, Observed, StoredTokens) {
    let desired = Desired {
        companies: vec![
            DesiredCompany {
                name: "Acme Bank".into(),
                technical_meta_data: Some(json!({"tier": "gold"})),
                prune: None,
                location: loc(),
            },
            DesiredCompany {
                name: "Beta Corp".into(),
                technical_meta_data: Some(
                    json!({"tier": "gold", "region": "eu-west", "contacts": ["ops@beta.example", "sec@beta.example"]}),
                ),
                prune: None,
                location: loc(),
            },
        ],
        users: vec![
            user("svc-web@acme.example", "Acme Bank", secret_web),
            DesiredUser {
                first_name: Some("Renamed".into()),
                active: false,
                ..user("svc-api@beta.example", "Beta Corp", secret_new.clone())
            },
            user("svc-batch@beta.example", "Beta Corp", secret_new.clone()),
            user("svc-moved@beta.example", "Beta Corp", secret_new.clone()),
            DesiredUser {
                token: TokenSpec { issue: true },
                ..user("svc-ok@beta.example", "Beta Corp", secret_new)
            },
        ],
        files: vec![],
    };
    let observed = Observed {
        api_url: URL.into(),
        api_version: ApiVersion::V6,
        // Detected (`--api-version auto`): the header says so.
        api_version_detected: true,
        companies: vec![
            ObservedCompany {
                id: "c-beta".into(),
                name: "Beta Corp".into(),
                in_deletion: false,
                technical_meta_data: json!({"tier": "silver", "region": "eu-west", "contacts": ["ops@beta.example"]}),
            },
            ObservedCompany {
                id: "c-other".into(),
                name: "Other Ltd".into(),
                in_deletion: false,
                technical_meta_data: json!({}),
            },
        ],
        users: vec![
            live_user("u-api", "svc-api@beta.example", "c-beta"),
            live_user("u-batch", "svc-batch@beta.example", "c-beta"),
            live_user("u-moved", "svc-moved@beta.example", "c-other"),
            live_user("u-ok", "svc-ok@beta.example", "c-beta"),
            ObservedUser {
                kind: UserKind::CompanyAdmin,
                ..live_user("u-admin", "admin@beta.example", "c-beta")
            },
            live_user("u-legacy", "legacy@beta.example", "c-beta"),
        ],
    };
    let sink = StoredTokens::from([
        (
            "svc-api@beta.example".to_string(),
            StoredToken { user_id: "u-api".into(), api_url: URL.into(), expire_date: NOW + 5.0 * 86_400.0 },
        ),
        (
            "svc-ok@beta.example".to_string(),
            StoredToken { user_id: "u-ok".into(), api_url: URL.into(), expire_date: NOW + 900.0 * 86_400.0 },
        ),
    ]);
    (desired, observed, sink)
}

fn every_kind_plan() -> Plan {
    let (desired, observed, sink) =
        fixture(SecretRef::Env("ACME_WEB_PASSWORD".into()), SecretRef::operator_file("/run/secrets/beta"));
    let options = PlanOptions {
        now: NOW,
        missing_secrets: missing_secrets(&desired, |r| matches!(r, SecretRef::File(_))),
        ..PlanOptions::default()
    };
    compute(&desired, &observed, &sink, &options)
}

#[test]
fn the_text_plan_reads_like_terraform() {
    insta::assert_snapshot!(text(&every_kind_plan(), &Style { color: false }));
}

#[test]
fn the_text_plan_is_coloured_only_when_asked() {
    let plan = every_kind_plan();
    let coloured = text(&plan, &Style { color: true });
    assert!(coloured.contains("\x1b[32m+\x1b[0m"));
    assert!(!text(&plan, &Style { color: false }).contains('\x1b'));
    // Without the escape codes the coloured plan says the same.
    let stripped = coloured
        .replace("\x1b[0m", "")
        .replace("\x1b[1m", "")
        .replace("\x1b[31m", "")
        .replace("\x1b[32m", "")
        .replace("\x1b[33m", "")
        .replace("\x1b[36m", "");
    assert_eq!(stripped, text(&plan, &Style { color: false }));
}

#[test]
fn the_markdown_plan_puts_the_summary_first_and_details_in_sections() {
    insta::assert_snapshot!(markdown(&every_kind_plan()));
}

#[test]
fn the_json_plan_is_the_versioned_contract() {
    insta::assert_snapshot!(json(&every_kind_plan()));
}

/// A plan with removals: Acme Bank prunes with `delete` (one undeclared service user, one
/// company admin that is never touched), Beta Corp with `deactivate` (one undeclared active
/// user, one already inactive: no change), beside an update and a token.
fn removals_plan() -> Plan {
    let company = |name: &str, prune: Prune| DesiredCompany {
        name: name.into(),
        technical_meta_data: None,
        prune: Some(prune),
        location: loc(),
    };
    let desired = Desired {
        companies: vec![company("Acme Bank", Prune::Delete), company("Beta Corp", Prune::Deactivate)],
        users: vec![
            user("svc-web@acme.example", "Acme Bank", SecretRef::Env("ACME_WEB_PASSWORD".into())),
            DesiredUser {
                first_name: Some("Renamed".into()),
                token: TokenSpec { issue: false },
                ..user("svc-api@beta.example", "Beta Corp", SecretRef::Env("BETA_PASSWORD".into()))
            },
        ],
        files: vec![],
    };
    let company = |id: &str, name: &str| ObservedCompany {
        id: id.into(),
        name: name.into(),
        in_deletion: false,
        technical_meta_data: json!({}),
    };
    let observed = Observed {
        api_url: URL.into(),
        api_version: ApiVersion::V6,
        api_version_detected: false,
        companies: vec![company("c-acme", "Acme Bank"), company("c-beta", "Beta Corp")],
        users: vec![
            live_user("u-web", "svc-web@acme.example", "c-acme"),
            live_user("u-old", "svc-old@acme.example", "c-acme"),
            ObservedUser {
                kind: UserKind::CompanyAdmin,
                ..live_user("u-admin", "admin@acme.example", "c-acme")
            },
            live_user("u-api", "svc-api@beta.example", "c-beta"),
            live_user("u-idle", "svc-idle@beta.example", "c-beta"),
            ObservedUser { active: false, ..live_user("u-asleep", "svc-asleep@beta.example", "c-beta") },
        ],
    };
    let options = PlanOptions { now: NOW, ..PlanOptions::default() };
    compute(&desired, &observed, &StoredTokens::new(), &options)
}

#[test]
fn the_text_plan_shows_removals_with_their_symbols_reasons_and_counts() {
    insta::assert_snapshot!(text(&removals_plan(), &Style { color: false }));
}

#[test]
fn the_markdown_plan_shows_removals_in_the_summary_and_in_red() {
    insta::assert_snapshot!(markdown(&removals_plan()));
}

#[test]
fn the_json_plan_of_removals_records_the_guard_figures() {
    insta::assert_snapshot!(json(&removals_plan()));
    assert_eq!(parse_plan(&json(&removals_plan())).unwrap(), removals_plan());
}

#[test]
fn removals_are_coloured_magenta_deactivate_and_red_delete() {
    let coloured = text(&removals_plan(), &Style { color: true });
    assert!(coloured.contains("\x1b[35m!\x1b[0m \x1b[1mservice_user/svc-idle@beta.example"), "{coloured}");
    assert!(coloured.contains("\x1b[31m-\x1b[0m \x1b[1mservice_user/svc-old@acme.example"), "{coloured}");
}

#[test]
fn an_empty_plan_says_no_changes() {
    let observed = Observed {
        api_url: URL.into(),
        api_version: ApiVersion::V5,
        api_version_detected: false,
        companies: vec![],
        users: vec![],
    };
    let p = compute(&Desired::default(), &observed, &StoredTokens::new(), &PlanOptions::default());
    insta::assert_snapshot!(text(&p, &Style::default()), @r"
    Plan for https://oz.example (Oz API 5)

    No changes.
    Plan id: 54fef742922693d4a8761baf96c3c504451b0619e1b761d18830f38ade4f42bd
    ");
    assert!(markdown(&p).contains("**No changes.**"));
}

#[test]
fn a_saved_plan_reads_back_equal() {
    let plan = every_kind_plan();
    assert_eq!(parse_plan(&json(&plan)).unwrap(), plan);
}

#[test]
fn a_saved_plan_of_an_unknown_version_is_refused_clearly() {
    let mut value: serde_json::Value = serde_json::from_str(&json(&every_kind_plan())).unwrap();
    value["format_version"] = json!(2);
    let err = parse_plan(&value.to_string()).unwrap_err();
    assert!(matches!(err, PlanError::UnsupportedVersion { .. }));
    assert_eq!(err.to_string(), "the saved plan has `format_version` 2, this ozform reads only version 1");
}

#[test]
fn a_saved_plan_that_is_not_a_plan_is_refused_with_the_reason() {
    let err = parse_plan("{\"format_version\": 1}").unwrap_err();
    assert!(
        err.to_string().starts_with("the saved plan is not valid JSON of the plan format: missing field"),
        "{err}"
    );
    let err = parse_plan("[]").unwrap_err();
    assert_eq!(
        err.to_string(),
        "the saved plan is not valid JSON of the plan format: it has no `format_version`"
    );
}

#[test]
fn no_rendering_holds_a_secret_value() {
    const CANARY_ENV: &str = "canary-env-7f3a9c";
    const CANARY_FILE: &str = "canary-file-51be02";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("beta-password");
    std::fs::write(&file, format!("{CANARY_FILE}\n")).unwrap();
    let (desired, observed, sink) =
        fixture(SecretRef::Env("ACME_WEB_PASSWORD".into()), SecretRef::operator_file(file));
    let env = |name: &str| (name == "ACME_WEB_PASSWORD").then(|| CANARY_ENV.to_string());
    let options = PlanOptions {
        now: NOW,
        missing_secrets: missing_secrets(&desired, |r| r.is_available(&env)),
        ..PlanOptions::default()
    };
    let plan = compute(&desired, &observed, &sink, &options);
    // The secrets are available (no warnings) and creates are planned that will need them.
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
    assert!(plan.changes.iter().any(|c| c.password().is_some()));
    let outputs = [
        text(&plan, &Style { color: false }),
        text(&plan, &Style { color: true }),
        markdown(&plan),
        json(&plan),
    ];
    // Every rendering shows the password fields, as `(sensitive)`; the `Debug` of the plan
    // holds only where passwords come from.
    assert!(outputs.iter().all(|out| out.contains("(sensitive)")));
    for out in outputs.iter().chain([&format!("{plan:?}")]) {
        for canary in [CANARY_ENV, CANARY_FILE] {
            assert!(!out.contains(canary), "secret leaked into:\n{out}");
        }
    }
}

#[test]
fn the_plan_id_covers_the_changes_not_the_layout_the_warnings_or_the_time() {
    use ozform::plan::id::plan_id;
    let plan = every_kind_plan();
    let id = plan_id(&plan);
    let saved: serde_json::Value = serde_json::from_str(&json(&plan)).unwrap();
    assert_eq!(saved["plan_id"], json!(id));
    // Laid out otherwise (compact, keys in another order): the same plan, the same id.
    assert_eq!(parse_plan(&saved.to_string()).unwrap(), plan);
    // Made an hour later, the secret now available: the expiring token's reason says another
    // time and the warning is gone; the id is the same.
    let (desired, observed, sink) = fixture(
        SecretRef::Env("ACME_WEB_PASSWORD".into()),
        SecretRef::File(SecretFile::recorded("/run/secrets/beta")),
    );
    let later = PlanOptions { now: NOW + 3600.0, ..PlanOptions::default() };
    let later = compute(&desired, &observed, &sink, &later);
    assert_ne!(json(&later), json(&plan));
    assert_eq!(plan_id(&later), id);
    // Any id, fingerprint or field of a change moves it, and a saved plan so edited is refused.
    for (pointer, edit) in [
        ("/changes/1/live_id", json!("c-other")),
        ("/changes/2/fingerprint", json!("00000000000000000000000000000000")),
        ("/changes/3/after/first_name", json!("Other")),
        ("/changes/3/password", json!({"env": "OTHER"})),
    ] {
        let mut edited = saved.clone();
        *edited.pointer_mut(pointer).unwrap_or_else(|| panic!("{pointer}")) = edit;
        let err = parse_plan(&edited.to_string()).unwrap_err();
        assert!(matches!(err, PlanError::IdMismatch { .. }), "{pointer}: {err}");
        assert!(err.to_string().contains(&id), "{err}");
    }
}
