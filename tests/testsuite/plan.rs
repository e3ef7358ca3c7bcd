//! The planner as a table of cases (desired built with small constructors, observed as
//! fixtures, expected changes as one line each), the exact shape of each kind of change, and
//! three properties: determinism, the saved plan reading back equal, and convergence (apply
//! the plan through the executor to an in-memory world, plan again: no changes).
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use common::builders::{
    self, company, company_meta, desired, live_company, live_user, loc, user, with_token,
};
use common::fake_effects::FakeEffects;
use common::memory_store::MemoryStore;
use ozform::apply::{ExecuteOptions, Silent, execute, resolve_passwords};
use ozform::model::{
    Desired, DesiredCompany, DesiredUser, Email, LivePermissions, Observed, ObservedCompany, ObservedUser,
    Permissions, Prune, StoredToken, StoredTokens, TokenSpec, UNKNOWN_EXPIRY, UserKind,
};
use ozform::plan::{
    Action, Address, Payload, Plan, PlanError, PlanOptions, PruneScope, RemovalLimits, TokenReason,
    check_removals, compute, fingerprint, format, missing_secrets,
};
use ozform::secret::{PasswordSource, SecretRef};
use ozform::token_store::TokenStore as _;
use proptest::prelude::*;
use serde_json::{Value, json};

const URL: &str = "https://oz.test";
const NOW: f64 = 1_800_000_000.0;
const DAY: f64 = 86_400.0;

// ---------------------------------------------------------------------------------------------
// Builders.

fn observed(companies: Vec<ObservedCompany>, users: Vec<ObservedUser>) -> Observed {
    builders::observed(URL, companies, users)
}

/// A token stored for `user_id`, valid for a year.
fn stored(email: &str, user_id: &str) -> (String, StoredToken) {
    builders::stored(email, user_id, URL, NOW + 365.0 * DAY)
}

fn options() -> PlanOptions {
    PlanOptions { now: NOW, ..PlanOptions::default() }
}

/// A plan as one line per change, conflict, unmanaged user and warning: what the table compares.
fn describe(plan: &Plan) -> Vec<String> {
    let mut lines = Vec::new();
    for c in &plan.changes {
        let mut line = format!("{} {}", c.action().symbol(), c.address);
        let changed = c.fields();
        if !changed.is_empty() {
            let fields: Vec<&str> = changed.iter().map(|f| f.field.as_str()).collect();
            let _ = write!(line, " [{}]", fields.join(", "));
        }
        if let Some(r) = c.reason_text() {
            let _ = write!(line, ": {r}");
        }
        lines.push(line);
    }
    lines.extend(plan.conflicts.iter().map(|c| format!("! {}: {}", c.address, c.message)));
    lines.extend(plan.unmanaged.iter().map(|u| format!("? {} in {}", u.email, u.company)));
    lines.extend(plan.warnings.iter().map(|w| format!("warning: {w}")));
    lines
}

struct Case {
    name: &'static str,
    desired: Desired,
    observed: Observed,
    sink: StoredTokens,
    options: PlanOptions,
    expect: Vec<String>,
}

fn case(name: &'static str, desired: Desired, observed: Observed, expect: &[&str]) -> Case {
    Case {
        name,
        desired,
        observed,
        sink: StoredTokens::new(),
        options: options(),
        expect: expect.iter().map(|s| (*s).to_string()).collect(),
    }
}

fn cases() -> Vec<Case> {
    let acme = || vec![live_company("c1", "Acme")];
    let mut v = vec![
        case(
            "a missing company is created",
            desired(vec![company("Acme")], vec![]),
            observed(vec![], vec![]),
            &["+ company/Acme"],
        ),
        case(
            "a company whose metadata differs is updated",
            desired(vec![company_meta("Acme", json!({"tier": "gold"}))], vec![]),
            observed(
                vec![ObservedCompany {
                    technical_meta_data: json!({"tier": "silver"}),
                    ..live_company("c1", "Acme")
                }],
                vec![],
            ),
            &["~ company/Acme [technical_meta_data]"],
        ),
        case(
            "metadata not written in the manifest is not managed",
            desired(vec![company("Acme")], vec![]),
            observed(
                vec![ObservedCompany { technical_meta_data: json!({"x": 1}), ..live_company("c1", "Acme") }],
                vec![],
            ),
            &[],
        ),
        case(
            "metadata is compared as json, not as text",
            desired(vec![company_meta("Acme", json!({"a": 1, "b": [1, 2]}))], vec![]),
            observed(
                vec![ObservedCompany {
                    technical_meta_data: serde_json::from_str(r#"{"b":[1,2],"a":1}"#).unwrap(),
                    ..live_company("c1", "Acme")
                }],
                vec![],
            ),
            &[],
        ),
        case(
            "a company in deletion does not count and is created anew",
            desired(vec![company("Acme")], vec![]),
            observed(vec![ObservedCompany { in_deletion: true, ..live_company("c1", "Acme") }], vec![]),
            &["+ company/Acme"],
        ),
        case(
            "two live companies with the name block that company's subtree only",
            desired(
                vec![company("Acme"), company("Beta")],
                vec![with_token(user("a@x.test", "Acme")), user("b@x.test", "Beta")],
            ),
            observed(vec![live_company("c2", "Acme"), live_company("c1", "Acme")], vec![]),
            &[
                "+ company/Beta",
                "+ service_user/b@x.test",
                "! company/Acme: 2 live companies are named `Acme` (ids `c1`, `c2`); ozform cannot tell which one is meant",
            ],
        ),
        case(
            "a missing user of a live company is created",
            desired(vec![company("Acme")], vec![user("a@x.test", "Acme")]),
            observed(acme(), vec![]),
            &["+ service_user/a@x.test"],
        ),
        case(
            "a user of a company being created is created after it",
            desired(vec![company("Acme")], vec![user("a@x.test", "Acme")]),
            observed(vec![], vec![]),
            &["+ company/Acme", "+ service_user/a@x.test"],
        ),
        case(
            "managed user fields that differ are updated flag by flag",
            desired(
                vec![company("Acme")],
                vec![DesiredUser {
                    first_name: Some("Ann".into()),
                    active: false,
                    permissions: Some(Permissions {
                        documents: Some(false),
                        quality: Some(true),
                        ..Permissions::default()
                    }),
                    ..user("a@x.test", "Acme")
                }],
            ),
            observed(acme(), vec![live_user("u1", "a@x.test", "c1")]),
            &["~ service_user/a@x.test [first_name, active, permissions.documents]"],
        ),
        case(
            "users match by email case-insensitively and unmanaged fields are left alone",
            desired(vec![company("Acme")], vec![user("A@X.test", "Acme")]),
            observed(
                acme(),
                vec![ObservedUser { first_name: "Zed".into(), ..live_user("u1", "a@x.TEST", "c1") }],
            ),
            &[],
        ),
        case(
            "a user to create without a password is a conflict",
            desired(
                vec![company("Acme")],
                vec![with_token(DesiredUser { password: None, ..user("a@x.test", "Acme") })],
            ),
            observed(acme(), vec![]),
            &[
                "! service_user/a@x.test: `a@x.test` does not exist live, so it must be created, but it declares no `password`",
            ],
        ),
        case(
            "a live user needs no password",
            desired(vec![company("Acme")], vec![DesiredUser { password: None, ..user("a@x.test", "Acme") }]),
            observed(acme(), vec![live_user("u1", "a@x.test", "c1")]),
            &[],
        ),
        case(
            "a live user in another company is a conflict that blocks only its own subtree",
            desired(
                vec![company("Acme")],
                vec![with_token(user("a@x.test", "Acme")), user("b@x.test", "Acme")],
            ),
            observed(
                vec![live_company("c1", "Acme"), live_company("c9", "Other")],
                vec![live_user("u1", "a@x.test", "c9")],
            ),
            &[
                "+ service_user/b@x.test",
                "! service_user/a@x.test: `a@x.test` (user id `u1`) exists live in company `Other` (id `c9`), but the manifest puts it in `Acme` (id `c1`)",
            ],
        ),
        case(
            "a live user when its company is still to be created is in another company",
            desired(vec![company("Acme")], vec![user("a@x.test", "Acme")]),
            observed(vec![live_company("c9", "Other")], vec![live_user("u1", "a@x.test", "c9")]),
            &[
                "+ company/Acme",
                "! service_user/a@x.test: `a@x.test` (user id `u1`) exists live in company `Other` (id `c9`), but the manifest puts it in `Acme` (which does not exist live yet)",
            ],
        ),
        case(
            "a live user that is not a service user is a conflict",
            desired(vec![company("Acme")], vec![user("a@x.test", "Acme")]),
            observed(
                acme(),
                vec![ObservedUser { kind: UserKind::CompanyAdmin, ..live_user("u1", "a@x.test", "c1") }],
            ),
            &[
                "! service_user/a@x.test: `a@x.test` exists live as a company admin (id `u1`), not as a service user",
            ],
        ),
        case(
            "a live service user in no company is a conflict",
            desired(vec![company("Acme")], vec![user("a@x.test", "Acme")]),
            observed(acme(), vec![ObservedUser { company_id: None, ..live_user("u1", "a@x.test", "c1") }]),
            &[
                "! service_user/a@x.test: `a@x.test` (user id `u1`) exists live in no company, but the manifest puts it in `Acme` (id `c1`)",
            ],
        ),
        case(
            "a live user left in a company being deleted is a conflict, and the company is created anew",
            desired(vec![company("Acme")], vec![user("a@x.test", "Acme")]),
            observed(
                vec![ObservedCompany { in_deletion: true, ..live_company("c0", "Acme") }],
                vec![live_user("u1", "a@x.test", "c0")],
            ),
            &[
                "+ company/Acme",
                "! service_user/a@x.test: `a@x.test` (user id `u1`) exists live in company `Acme` (id `c0`, being deleted), but the manifest puts it in `Acme` (which does not exist live yet)",
            ],
        ),
        case(
            "two live users with the email are a conflict",
            desired(vec![company("Acme")], vec![user("a@x.test", "Acme")]),
            observed(acme(), vec![live_user("u2", "a@x.test", "c1"), live_user("u1", "A@x.test", "c1")]),
            &["! service_user/a@x.test: 2 live users have the email `a@x.test` (ids `u1`, `u2`)"],
        ),
        case(
            "a user naming an undeclared company is a conflict, not a panic",
            desired(vec![], vec![user("a@x.test", "Ghost")]),
            observed(vec![], vec![]),
            &["! service_user/a@x.test: `a@x.test` names company `Ghost`, which no manifest declares"],
        ),
        case(
            "a token is issued when the token store has none",
            desired(vec![company("Acme")], vec![with_token(user("a@x.test", "Acme"))]),
            observed(acme(), vec![live_user("u1", "a@x.test", "c1")]),
            &["* token/a@x.test: no token for this user in the token store"],
        ),
        case(
            "the token of a user being created is issued after it",
            desired(vec![company("Acme")], vec![with_token(user("a@x.test", "Acme"))]),
            observed(acme(), vec![]),
            &["+ service_user/a@x.test", "* token/a@x.test: the user is being created"],
        ),
        case(
            "the company filter plans only the named companies and warns about unknown names",
            desired(
                vec![company("Acme"), company("Beta")],
                vec![user("a@x.test", "Acme"), user("b@x.test", "Beta")],
            ),
            observed(vec![], vec![]),
            &[
                "+ company/Beta",
                "+ service_user/b@x.test",
                "warning: `--company Nope` matches no company declared in the manifests",
            ],
        ),
        case(
            "live users of declared companies that no manifest mentions are listed, sorted",
            desired(vec![company("Acme")], vec![user("a@x.test", "Acme")]),
            observed(
                vec![live_company("c1", "Acme"), live_company("c2", "Undeclared")],
                vec![
                    live_user("u3", "zed@x.test", "c1"),
                    live_user("u1", "a@x.test", "c1"),
                    live_user("u2", "Bob@x.test", "c1"),
                    live_user("u4", "c@x.test", "c2"),
                ],
            ),
            &["? Bob@x.test in Acme", "? zed@x.test in Acme"],
        ),
        case(
            "the company filter lists unmanaged users of the named companies only, and not users of other manifests",
            desired(
                vec![company("Acme"), company("Beta")],
                vec![user("a@x.test", "Acme"), user("b@x.test", "Beta")],
            ),
            observed(
                vec![live_company("c1", "Acme"), live_company("c2", "Beta")],
                vec![
                    live_user("u1", "a@x.test", "c2"),
                    live_user("u2", "b@x.test", "c2"),
                    live_user("u3", "x@x.test", "c1"),
                    live_user("u4", "y@x.test", "c2"),
                ],
            ),
            &["? y@x.test in Beta"],
        ),
        case(
            "a create needing a secret that is not available now is warned about",
            desired(vec![company("Acme")], vec![user("a@x.test", "Acme")]),
            observed(acme(), vec![]),
            &[
                "+ service_user/a@x.test",
                "warning: `service_user/a@x.test` will be created with the password from `{env: PW}`, but environment variable `PW` is not set now; `ozform apply` stops before its first request unless it is available",
            ],
        ),
    ];
    // Cases that need a sink or options.
    let token_case = |name, entry: StoredToken, opts: PlanOptions, expect: &str| Case {
        name,
        desired: desired(vec![company("Acme")], vec![with_token(user("a@x.test", "Acme"))]),
        observed: observed(vec![live_company("c1", "Acme")], vec![live_user("u1", "a@x.test", "c1")]),
        sink: StoredTokens::from([("a@x.test".to_string(), entry)]),
        options: opts,
        expect: if expect.is_empty() { vec![] } else { vec![expect.to_string()] },
    };
    let valid = stored("a@x.test", "u1").1;
    v.push(token_case("a valid stored token is kept", valid.clone(), options(), ""));
    v.push(token_case(
        "a token stored for another user id is issued again",
        StoredToken { user_id: "u0".into(), ..valid.clone() },
        options(),
        "* token/a@x.test: the stored token is for user id `u0`, the live user is `u1` (the user was recreated)",
    ));
    v.push(token_case(
        "a token stored for another api url is issued again",
        StoredToken { api_url: "https://old.test".into(), ..valid.clone() },
        options(),
        "* token/a@x.test: the stored token was issued by `https://old.test`, not `https://oz.test` (a new installation)",
    ));
    v.push(token_case(
        "a token expiring within rotate-before is issued again",
        StoredToken { expire_date: NOW + 3.0 * DAY, ..valid.clone() },
        options(),
        "* token/a@x.test: the stored token expires at 2027-01-18T08:00:00Z, in 3 days, within `--rotate-before` 30 days",
    ));
    v.push(token_case(
        "rotate-tokens issues every token again",
        valid.clone(),
        PlanOptions { rotate_tokens: true, ..options() },
        "* token/a@x.test: `--rotate-tokens` was given",
    ));
    v.push(token_case(
        "a token of unknown expiry is kept, with a warning that rotate-before cannot rotate it",
        StoredToken { expire_date: UNKNOWN_EXPIRY, ..valid.clone() },
        options(),
        "warning: the stored token of `a@x.test` has an unknown expiry (the API answered none a token can have when it was issued): `--rotate-before` cannot rotate it; `--rotate-tokens` issues a new one",
    ));
    v.push(token_case(
        "a token of an expiry no token can have, from an earlier ozform, is of unknown expiry",
        StoredToken { expire_date: -1e308, ..valid.clone() },
        options(),
        "warning: the stored token of `a@x.test` has an unknown expiry (the API answered none a token can have when it was issued): `--rotate-before` cannot rotate it; `--rotate-tokens` issues a new one",
    ));
    v.push(token_case(
        "a token of unknown expiry is issued again by rotate-tokens, without a warning",
        StoredToken { expire_date: UNKNOWN_EXPIRY, ..valid.clone() },
        PlanOptions { rotate_tokens: true, ..options() },
        "* token/a@x.test: `--rotate-tokens` was given",
    ));
    v.push(token_case(
        "a trailing slash does not make another api url",
        StoredToken { api_url: format!("{URL}/"), ..valid },
        options(),
        "",
    ));
    v.extend(removal_cases());
    // The filter and the missing secret.
    for c in &mut v {
        if c.name.starts_with("the company filter plans") {
            c.options.companies = vec!["Beta".into(), "Nope".into()];
        }
        if c.name.starts_with("the company filter lists") {
            c.options.companies = vec!["Beta".into()];
        }
        if c.name.starts_with("a pruning company filtered out") {
            c.options.companies = vec!["Beta".into()];
        }
        if c.name.starts_with("a create needing a secret") {
            c.options.missing_secrets = missing_secrets(&c.desired, |_| false);
        }
    }
    v
}

/// A company that prunes with `mode`.
fn pruning(name: &str, mode: Prune) -> DesiredCompany {
    DesiredCompany { prune: Some(mode), ..company(name) }
}

/// A live user of `c1` that is not a service user.
fn live_client(id: &str, email: &str) -> ObservedUser {
    ObservedUser { kind: UserKind::Client, ..live_user(id, email, "c1") }
}

fn removal_cases() -> Vec<Case> {
    let acme = || vec![live_company("c1", "Acme")];
    let keep = || user("keep@x.test", "Acme");
    let live_keep = || live_user("u0", "keep@x.test", "c1");
    vec![
        case(
            "prune delete deletes an undeclared live service user",
            desired(vec![pruning("Acme", Prune::Delete)], vec![keep()]),
            observed(acme(), vec![live_keep(), live_user("u1", "gone@x.test", "c1")]),
            &["- service_user/gone@x.test: not in any manifest; company `Acme` prunes with `delete`"],
        ),
        case(
            "prune delete deletes an undeclared service user that is inactive too",
            desired(vec![pruning("Acme", Prune::Delete)], vec![keep()]),
            observed(
                acme(),
                vec![live_keep(), ObservedUser { active: false, ..live_user("u1", "gone@x.test", "c1") }],
            ),
            &["- service_user/gone@x.test: not in any manifest; company `Acme` prunes with `delete`"],
        ),
        case(
            "prune deactivate deactivates an undeclared active service user",
            desired(vec![pruning("Acme", Prune::Deactivate)], vec![keep()]),
            observed(acme(), vec![live_keep(), live_user("u1", "gone@x.test", "c1")]),
            &[
                "! service_user/gone@x.test [active]: not in any manifest; company `Acme` prunes with `deactivate`",
            ],
        ),
        case(
            "prune deactivate leaves an undeclared user that is already inactive: no change, not unmanaged",
            desired(vec![pruning("Acme", Prune::Deactivate)], vec![keep()]),
            observed(
                acme(),
                vec![live_keep(), ObservedUser { active: false, ..live_user("u1", "gone@x.test", "c1") }],
            ),
            &[],
        ),
        case(
            "a declared user of a pruning company that was deactivated is activated again",
            desired(vec![pruning("Acme", Prune::Deactivate)], vec![keep()]),
            observed(acme(), vec![ObservedUser { active: false, ..live_keep() }]),
            &["~ service_user/keep@x.test [active]"],
        ),
        case(
            "a non-service user of a pruning company is never removed, only listed as unmanaged",
            desired(vec![pruning("Acme", Prune::Delete)], vec![keep()]),
            observed(acme(), vec![live_keep(), live_client("u1", "human@x.test")]),
            &["? human@x.test in Acme"],
        ),
        case(
            "a user of a company that does not prune is listed as unmanaged, not removed",
            desired(vec![company("Acme"), pruning("Beta", Prune::Delete)], vec![keep()]),
            observed(
                vec![live_company("c1", "Acme"), live_company("c2", "Beta")],
                vec![live_keep(), live_user("u1", "other@x.test", "c1")],
            ),
            &["? other@x.test in Acme"],
        ),
        case(
            "a user of a pruning company declared in another company is a conflict, not a removal",
            desired(
                vec![pruning("Acme", Prune::Delete), company("Beta")],
                vec![user("moved@x.test", "Beta")],
            ),
            observed(
                vec![live_company("c1", "Acme"), live_company("c2", "Beta")],
                vec![live_user("u1", "moved@x.test", "c1")],
            ),
            &[
                "! service_user/moved@x.test: `moved@x.test` (user id `u1`) exists live in company `Acme` (id `c1`), but the manifest puts it in `Beta` (id `c2`)",
            ],
        ),
        case(
            "a pruning company filtered out by --company removes nothing",
            desired(vec![pruning("Acme", Prune::Delete), company("Beta")], vec![keep()]),
            observed(
                vec![live_company("c1", "Acme"), live_company("c2", "Beta")],
                vec![live_keep(), live_user("u1", "gone@x.test", "c1")],
            ),
            &[],
        ),
        case(
            "two live users sharing an undeclared email are not removed but warned about",
            desired(vec![pruning("Acme", Prune::Delete)], vec![keep()]),
            observed(
                acme(),
                vec![live_keep(), live_user("u1", "twin@x.test", "c1"), live_user("u2", "TWIN@x.test", "c1")],
            ),
            &[
                "? twin@x.test in Acme",
                "? TWIN@x.test in Acme",
                "warning: `TWIN@x.test` is not removed although company `Acme` prunes: 2 live users have this email; delete or rename all but one in Oz",
            ],
        ),
        case(
            "a pruning company that does not exist yet is created and removes nothing",
            desired(vec![pruning("Acme", Prune::Delete)], vec![]),
            observed(vec![], vec![]),
            &["+ company/Acme"],
        ),
    ]
}

#[test]
fn every_case_of_the_table_plans_what_it_expects() {
    let mut failures = Vec::new();
    for c in cases() {
        let got = describe(&compute(&c.desired, &c.observed, &c.sink, &c.options));
        if got != c.expect {
            failures.push(format!("case `{}`\n  expected: {:#?}\n  got:      {:#?}", c.name, c.expect, got));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// The exact shape of each change kind: what the executor reads.

#[test]
fn a_user_create_records_its_company_password_source_and_hides_the_password() {
    let mut u = with_token(user("A@x.test", "Acme"));
    u.first_name = Some("Ann".into());
    u.permissions = Some(Permissions { documents: Some(false), ..Permissions::default() });
    let p = compute(
        &desired(vec![company("Acme")], vec![u]),
        &observed(vec![live_company("c1", "Acme")], vec![]),
        &StoredTokens::new(),
        &options(),
    );
    let create = &p.changes[0];
    assert_eq!(create.action(), Action::Create);
    assert_eq!(create.depends_on, vec![Address::Company("Acme".into())]);
    assert_eq!(create.before_json(), None);
    assert_eq!(
        create.after_json(),
        Some(json!({"email": "A@x.test", "company": "Acme", "company_id": "c1", "first_name": "Ann",
                    "active": true, "permissions": {"documents": false}, "password": "(sensitive)"}))
    );
    assert_eq!(create.password(), Some(&SecretRef::Env("PW".into()).into()));
    assert_eq!((create.live_id.as_ref(), create.fingerprint.as_ref()), (None, None));
    let token = &p.changes[1];
    assert_eq!(token.address, Address::Token(Email::new("a@x.test")));
    assert_eq!(token.depends_on, vec![Address::ServiceUser(Email::new("a@x.test"))]);
    assert_eq!(token.reason(), Some(&TokenReason::UserBeingCreated));
    assert_eq!(token.live_id, None);
    assert_eq!(
        token.after_json(),
        Some(json!({"email": "A@x.test", "user_id": null, "api_url": URL, "access_token": "(sensitive)",
                    "company": "Acme"}))
    );
    assert_eq!(p.summary().create + p.summary().issue, 2);
}

#[test]
fn a_user_created_with_a_generated_password_gets_a_token_to_keep_it_even_unasked() {
    let generating =
        |email: &str| DesiredUser { password: Some(PasswordSource::Generate), ..user(email, "Acme") };
    let p = compute(
        &desired(
            vec![company("Acme")],
            // One asks for a token, one does not, one exists already (no create: no password, no token).
            vec![
                with_token(generating("asked@x.test")),
                generating("unasked@x.test"),
                generating("live@x.test"),
            ],
        ),
        &observed(vec![live_company("c1", "Acme")], vec![live_user("u1", "live@x.test", "c1")]),
        &StoredTokens::new(),
        &PlanOptions {
            // Nothing to warn about: a generated password is not a secret to find.
            missing_secrets: BTreeSet::from([SecretRef::Env("PW".into())]),
            ..options()
        },
    );
    assert_eq!(
        describe(&p),
        [
            "+ service_user/asked@x.test",
            "+ service_user/unasked@x.test",
            "* token/asked@x.test: the user is being created",
            "* token/unasked@x.test: the user is being created with a generated password, which is kept with its token"
        ]
    );
    assert_eq!(p.changes[0].password(), Some(&PasswordSource::Generate));
    assert_eq!(p.changes[3].reason(), Some(&TokenReason::GeneratedPassword));
    let saved = format::to_json(&p);
    let json: Value = serde_json::from_str(&saved).unwrap();
    assert_eq!(json["changes"][0]["password"], json!({"generate": true}));
    assert_eq!(json["changes"][0]["after"]["password"], json!("(sensitive)"));
    assert_eq!(format::from_json(&saved).unwrap(), p, "a saved plan reads back its generated passwords");
}

#[test]
fn a_source_id_is_never_planned() {
    let untagged =
        desired(vec![company("Acme"), company("Beta")], vec![with_token(user("a@x.test", "Acme"))]);
    let mut tagged = untagged.clone();
    tagged.companies[0].source_id = Some("old-c1".into());
    tagged.companies[1].source_id = Some("old-c2".into());
    tagged.users[0].source_id = Some("old-u1".into());
    let live = observed(vec![live_company("c1", "Acme")], vec![]);
    let plan = |d: &Desired| compute(d, &live, &StoredTokens::new(), &options());
    // The old ids change nothing the plan does: only what it carries for `--id-map`.
    let (with_ids, without) = (plan(&tagged), plan(&untagged));
    assert_eq!(Plan { source_ids: BTreeMap::new(), ..with_ids.clone() }, without);
    assert_eq!(with_ids.changes.len(), 3, "Beta, the user and its token are created whatever their old ids");
    // Carried for the objects it creates; Acme is live, adopted, and not created.
    assert_eq!(
        with_ids.source_ids,
        BTreeMap::from([
            ("company/Beta".to_string(), "old-c2".to_string()),
            ("service_user/a@x.test".to_string(), "old-u1".to_string()),
        ])
    );
    assert!(without.source_ids.is_empty());
}

#[test]
fn a_user_create_in_a_company_being_created_has_no_company_id_and_depends_on_it() {
    let p = compute(
        &desired(vec![company("Acme")], vec![user("a@x.test", "Acme")]),
        &observed(vec![], vec![]),
        &StoredTokens::new(),
        &options(),
    );
    let create = &p.changes[1];
    assert_eq!(create.depends_on, vec![p.changes[0].address.clone()]);
    assert!(create.after_json().unwrap().get("company_id").is_none());
}

#[test]
fn an_update_holds_old_and_new_managed_fields_the_live_id_and_the_fingerprint() {
    let mut u = user("a@x.test", "Acme");
    u.last_name = Some("New".into());
    u.permissions = Some(Permissions { biometry: Some(false), ..Permissions::default() });
    let live = ObservedUser { last_name: "Old".into(), ..live_user("u1", "a@x.test", "c1") };
    let p = compute(
        &desired(vec![company("Acme")], vec![u]),
        &observed(vec![live_company("c1", "Acme")], vec![live.clone()]),
        &StoredTokens::new(),
        &options(),
    );
    let update = &p.changes[0];
    assert_eq!(update.action(), Action::Update);
    assert_eq!(update.live_id.as_deref(), Some("u1"));
    assert_eq!(update.fingerprint, Some(fingerprint::user(&live)));
    assert_eq!(update.depends_on, vec![Address::Company("Acme".into())]);
    assert_eq!(
        update.before_json(),
        Some(
            json!({"email": "a@x.test", "company": "Acme", "last_name": "Old", "active": true, "permissions": {"biometry": true}})
        )
    );
    assert_eq!(
        update.after_json(),
        Some(
            json!({"email": "a@x.test", "company": "Acme", "last_name": "New", "active": true, "permissions": {"biometry": false}})
        )
    );
    let changed = update.fields();
    let fields: Vec<(&str, &Value, &Value)> =
        changed.iter().map(|f| (f.field.as_str(), &f.before, &f.after)).collect();
    assert_eq!(
        fields,
        vec![
            ("last_name", &json!("Old"), &json!("New")),
            ("permissions.biometry", &json!(true), &json!(false))
        ]
    );
}

#[test]
fn a_removal_holds_the_live_user_its_id_fingerprint_and_company_and_the_plan_the_guard_figures() {
    let gone = ObservedUser { first_name: "Gone".into(), ..live_user("u1", "Gone@x.test", "c1") };
    let human = ObservedUser { kind: UserKind::Client, ..live_user("u2", "human@x.test", "c1") };
    let desired_state = desired(vec![pruning("Acme", Prune::Deactivate)], vec![user("keep@x.test", "Acme")]);
    let p = compute(
        &desired_state,
        &observed(
            vec![live_company("c1", "Acme")],
            vec![live_user("u0", "keep@x.test", "c1"), gone.clone(), human],
        ),
        &StoredTokens::new(),
        &options(),
    );
    assert_eq!(p.changes.len(), 1, "{:#?}", describe(&p));
    let removal = &p.changes[0];
    assert_eq!(removal.action(), Action::Deactivate);
    assert_eq!(removal.address, Address::ServiceUser(Email::new("Gone@x.test")));
    assert_eq!(removal.live_id.as_deref(), Some("u1"));
    assert_eq!(removal.fingerprint, Some(fingerprint::user(&gone)));
    assert_eq!(removal.depends_on, vec![Address::Company("Acme".into())]);
    let all = json!({"biometry": true, "collection": true, "documents": true, "quality": true});
    let before = json!({"email": "Gone@x.test", "company": "Acme", "first_name": "Gone", "last_name": "",
                        "middle_name": "", "active": true, "permissions": all});
    assert_eq!(removal.before_json(), Some(before.clone()));
    let mut after = before;
    after["active"] = json!(false);
    assert_eq!(removal.after_json(), Some(after));
    let Payload::DeactivateUser(fields) = &removal.payload else { panic!("{removal:?}") };
    assert_eq!(fields.company, "Acme");
    // The base counts every live service user of the company, declared or not; not the client.
    assert_eq!(
        p.prune,
        vec![PruneScope {
            company: "Acme".into(),
            mode: Prune::Deactivate,
            live_service_users: 2,
            declared_service_users: 1
        }]
    );
    let json: Value = serde_json::from_str(&format::to_json(&p)).unwrap();
    assert_eq!(json["summary"], json!({"create": 0, "update": 0, "issue": 0, "deactivate": 1, "delete": 0}));
    assert_eq!(json["changes"][0]["reason"], "not in any manifest; company `Acme` prunes with `deactivate`");
    assert_eq!(json["prune"][0]["live_service_users"], 2);

    // A delete's `after` is null.
    let mut deleting = desired_state;
    deleting.companies[0].prune = Some(Prune::Delete);
    let p = compute(
        &deleting,
        &observed(vec![live_company("c1", "Acme")], vec![gone]),
        &StoredTokens::new(),
        &options(),
    );
    assert_eq!((p.changes[0].action(), p.changes[0].after_json()), (Action::Delete, None));
}

/// A plan of Acme (pruning with `delete`) with `live` live service users, `declared` of them
/// declared: `live - declared` removals.
fn removal_plan(live: usize, declared: usize) -> Plan {
    let users: Vec<ObservedUser> =
        (0..live).map(|i| live_user(&format!("u{i}"), &format!("u{i}@x.test"), "c1")).collect();
    let declared_users = (0..declared).map(|i| user(&format!("u{i}@x.test"), "Acme")).collect();
    compute(
        &desired(vec![pruning("Acme", Prune::Delete)], declared_users),
        &observed(vec![live_company("c1", "Acme")], users),
        &StoredTokens::new(),
        &options(),
    )
}

#[test]
fn the_guard_refuses_more_than_30_percent_of_at_least_10_live_users_unless_allowed() {
    let limits = RemovalLimits::default();
    let allowed = RemovalLimits { allow_mass_removal: true, ..limits };
    // 31 of 100 trips; 30 of 100 does not.
    let err = check_removals(&removal_plan(100, 69), &limits).unwrap_err();
    assert!(matches!(err, PlanError::MassRemoval { removals: 31, base: 100, .. }), "{err:?}");
    assert!(err.to_string().contains("31 removals are 31% of the 100 live service users"), "{err}");
    check_removals(&removal_plan(100, 70), &limits).unwrap();
    check_removals(&removal_plan(100, 69), &allowed).unwrap();
    // Below 10 live users the percentage does not apply: 5 of 9 pass.
    check_removals(&removal_plan(9, 4), &limits).unwrap();
    // …but 4 of 10 (40%) do not.
    check_removals(&removal_plan(10, 6), &limits).unwrap_err();
    // The absolute cap applies whatever the base.
    let capped = RemovalLimits { max_removals: Some(2), ..limits };
    let err = check_removals(&removal_plan(9, 6), &capped).unwrap_err();
    assert!(err.to_string().contains("3 removals are more than `--max-removals` 2"), "{err}");
    check_removals(&removal_plan(9, 7), &capped).unwrap();
    // A pruning company with no declared user is refused whatever the figures, unless allowed.
    let err = check_removals(&removal_plan(1, 0), &limits).unwrap_err();
    assert!(
        err.to_string().contains("the manifests declare none of its service users, so all 1 would go"),
        "{err}"
    );
    check_removals(&removal_plan(1, 0), &allowed).unwrap();
    // No removal, no refusal: a pruning company with nothing live is fine with no user declared.
    check_removals(&removal_plan(0, 0), &limits).unwrap();
}

#[test]
fn a_saved_removal_outside_the_plans_prune_section_is_refused() {
    let plan = removal_plan(2, 1);
    let mut value: Value = serde_json::from_str(&format::to_json(&plan)).unwrap();
    value["prune"][0]["mode"] = json!("deactivate");
    let err = format::from_json(&value.to_string()).unwrap_err().to_string();
    assert!(
        err.contains("removes a user of company `Acme`, which its `prune` does not list with `delete`"),
        "{err}"
    );
    value.as_object_mut().unwrap().remove("prune");
    format::from_json(&value.to_string()).unwrap_err();
}

#[test]
fn a_company_update_names_the_live_company_and_its_fingerprint() {
    let live = ObservedCompany { technical_meta_data: json!({"t": 1}), ..live_company("c1", "Acme") };
    let p = compute(
        &desired(vec![company_meta("Acme", json!({"t": 2}))], vec![]),
        &observed(vec![live.clone()], vec![]),
        &StoredTokens::new(),
        &options(),
    );
    let update = &p.changes[0];
    assert_eq!(update.live_id.as_deref(), Some("c1"));
    assert_eq!(update.fingerprint, Some(fingerprint::company(&live)));
    assert_eq!(update.before_json(), Some(json!({"name": "Acme", "technical_meta_data": {"t": 1}})));
    assert_eq!(update.after_json(), Some(json!({"name": "Acme", "technical_meta_data": {"t": 2}})));
}

#[test]
fn a_token_of_a_live_user_names_the_user_and_shows_the_stored_token_without_secrets() {
    let live = live_user("u1", "a@x.test", "c1");
    let sink = StoredTokens::from([(
        "a@x.test".to_string(),
        StoredToken { user_id: "u0".into(), api_url: URL.into(), expire_date: NOW },
    )]);
    let p = compute(
        &desired(vec![company("Acme")], vec![with_token(user("a@x.test", "Acme"))]),
        &observed(vec![live_company("c1", "Acme")], vec![live.clone()]),
        &sink,
        &options(),
    );
    let token = &p.changes[0];
    assert_eq!(token.action(), Action::Issue);
    assert_eq!(token.live_id.as_deref(), Some("u1"));
    assert_eq!(token.fingerprint, Some(fingerprint::user(&live)));
    assert_eq!(token.before_json(), Some(json!({"user_id": "u0", "api_url": URL, "expire_date": NOW})));
}

#[test]
fn missing_secrets_lists_each_unavailable_source_once() {
    let mut b = user("b@x.test", "Acme");
    b.password = Some(SecretRef::operator_file("/nope").into());
    let d = desired(vec![company("Acme")], vec![user("a@x.test", "Acme"), user("c@x.test", "Acme"), b]);
    let missing = missing_secrets(&d, |r| matches!(r, SecretRef::File(_)));
    assert_eq!(missing, BTreeSet::from([SecretRef::Env("PW".into())]));
}

// ---------------------------------------------------------------------------------------------
// Properties.

const NAMES: [&str; 4] = ["Acme", "Beta", "Gamma", "Delta"];
const EMAILS: [&str; 6] = ["a@x.test", "B@x.test", "c@x.test", "d@X.test", "e@x.test", "f@x.test"];
/// Live users no manifest ever declares: what a company that prunes removes.
const UNDECLARED: [&str; 3] = ["old1@x.test", "old2@x.test", "old3@x.test"];

fn metas() -> impl Strategy<Value = Value> {
    prop_oneof![Just(json!({})), Just(json!({"tier": "gold"})), Just(json!({"tier": "silver", "n": [1, 2]}))]
}

fn desired_strategy() -> impl Strategy<Value = Desired> {
    (
        proptest::sample::subsequence(NAMES.to_vec(), 1..=4),
        proptest::collection::vec(proptest::option::of(metas()), 4),
        proptest::collection::vec(
            proptest::option::of(prop_oneof![Just(Prune::Deactivate), Just(Prune::Delete)]),
            4,
        ),
    )
        .prop_flat_map(|(names, metas, prunes)| {
            let companies: Vec<DesiredCompany> = names
                .iter()
                .zip(metas)
                .zip(prunes)
                .map(|((n, m), prune)| DesiredCompany {
                    name: (*n).to_string(),
                    technical_meta_data: m,
                    prune,
                    source_id: None,
                    location: loc(),
                })
                .collect();
            let user = (
                0..companies.len(),
                proptest::option::of(prop_oneof![Just("Ann"), Just("Bob")]),
                any::<bool>(),
                proptest::option::of((
                    proptest::option::of(any::<bool>()),
                    proptest::option::of(any::<bool>()),
                )),
                any::<bool>(),
                proptest::bool::weighted(0.9),
            );
            let users = proptest::collection::vec(user, EMAILS.len());
            (
                Just(companies),
                proptest::sample::subsequence((0..EMAILS.len()).collect::<Vec<_>>(), 0..=EMAILS.len()),
                users,
            )
        })
        .prop_map(|(companies, picked, specs)| {
            let users = picked
                .into_iter()
                .map(|i| {
                    let (c, first, active, perms, token, has_password) = specs[i];
                    DesiredUser {
                        email: Email::new(EMAILS[i]),
                        company: companies[c].name.clone(),
                        first_name: first.map(str::to_string),
                        last_name: None,
                        middle_name: None,
                        password: has_password.then(|| SecretRef::Env(format!("PW_{i}")).into()),
                        active,
                        permissions: perms.map(|(b, d)| Permissions {
                            biometry: b,
                            documents: d,
                            ..Permissions::default()
                        }),
                        token: TokenSpec { issue: token },
                        source_id: None,
                        location: loc(),
                    }
                })
                .collect();
            Desired { companies, users, files: vec![] }
        })
}

fn observed_strategy() -> impl Strategy<Value = (Observed, StoredTokens)> {
    let company = (0..NAMES.len(), proptest::bool::weighted(0.2), metas());
    let user = (
        0..EMAILS.len() + UNDECLARED.len(),
        proptest::option::weighted(0.9, 0..4usize),
        proptest::bool::weighted(0.85),
        prop_oneof![Just(""), Just("Ann")],
        any::<bool>(),
        any::<bool>(),
    );
    let token = (0..EMAILS.len(), 0..8usize, any::<bool>(), -40.0..400.0f64);
    (
        proptest::collection::vec(company, 0..6),
        proptest::collection::vec(user, 0..12),
        proptest::collection::vec(token, 0..6),
    )
        .prop_map(|(companies, users, tokens)| {
            let companies: Vec<ObservedCompany> = companies
                .into_iter()
                .enumerate()
                .map(|(i, (n, del, meta))| ObservedCompany {
                    id: format!("c{i}"),
                    name: NAMES[n].to_string(),
                    in_deletion: del,
                    technical_meta_data: meta,
                })
                .collect();
            let mut seen = BTreeSet::new();
            let users: Vec<ObservedUser> = users
                .into_iter()
                .enumerate()
                .filter(|(_, (e, ..))| seen.insert(*e))
                .map(|(i, (e, c, service, first, active, bio))| ObservedUser {
                    id: format!("u{i}"),
                    email: Email::new(
                        EMAILS.get(e).unwrap_or_else(|| &UNDECLARED[e - EMAILS.len()]).to_uppercase(),
                    ),
                    company_id: c.map(|c| format!("c{c}").into()),
                    kind: if service { UserKind::Service } else { UserKind::Client },
                    first_name: first.to_string(),
                    last_name: String::new(),
                    middle_name: String::new(),
                    active,
                    permissions: LivePermissions { biometry: bio, ..LivePermissions::default() },
                })
                .collect();
            let sink = tokens
                .into_iter()
                .map(|(e, u, same_url, days)| {
                    let entry = StoredToken {
                        user_id: format!("u{u}"),
                        api_url: if same_url { URL.to_string() } else { "https://old.test".to_string() },
                        expire_date: NOW + days * DAY,
                    };
                    (EMAILS[e].to_lowercase(), entry)
                })
                .collect();
            (observed(companies, users), sink)
        })
}

/// Apply `plan` through the executor to an in-memory world (`FakeEffects`) seeded with
/// `observed` and a token store seeded with `stored`: the live state and stored tokens after.
fn apply_through_the_executor(
    plan: &Plan,
    observed: &Observed,
    stored: &StoredTokens,
) -> (Observed, StoredTokens) {
    let fake = Arc::new(FakeEffects::new());
    fake.seed(observed);
    let store = Arc::new(MemoryStore::new());
    for (email, token) in stored {
        store.seed(email, token);
    }
    let passwords = resolve_passwords(plan, &|_| Some("pw".to_string())).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let report = runtime
        .block_on(execute(
            plan,
            Arc::clone(&fake),
            store.clone(),
            Arc::new(Silent),
            &ExecuteOptions::new(passwords),
        ))
        .unwrap();
    assert!(report.is_success(), "{report:?}");
    (fake.observed(&observed.api_url, observed.api_version), store.list().unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_same_input_gives_the_same_json_whatever_the_order_of_the_observed_lists(
        desired in desired_strategy(),
        (observed, sink) in observed_strategy(),
        rotate in any::<bool>(),
    ) {
        let opts = PlanOptions { rotate_tokens: rotate, ..options() };
        let first = format::to_json(&compute(&desired, &observed, &sink, &opts));
        prop_assert_eq!(&first, &format::to_json(&compute(&desired, &observed, &sink, &opts)));
        let mut reversed = observed.clone();
        reversed.companies.reverse();
        reversed.users.reverse();
        prop_assert_eq!(&first, &format::to_json(&compute(&desired, &reversed, &sink, &opts)));
    }

    #[test]
    fn any_plan_the_planner_makes_is_saved_and_read_back_equal(
        desired in desired_strategy(),
        (observed, sink) in observed_strategy(),
        rotate in any::<bool>(),
        rotate_days in 0..60u64,
    ) {
        let opts = PlanOptions {
            rotate_tokens: rotate,
            rotate_before: Duration::from_secs(rotate_days * 86_400),
            missing_secrets: missing_secrets(&desired, |r| matches!(r, SecretRef::File(_))),
            ..options()
        };
        let plan = compute(&desired, &observed, &sink, &opts);
        let text = format::to_json(&plan);
        let read = format::from_json(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(&read, &plan);
        prop_assert_eq!(format::to_json(&read), text);
    }

    #[test]
    fn applying_a_plan_and_planning_again_gives_no_changes(
        desired in desired_strategy(),
        (observed, sink) in observed_strategy(),
        rotate in any::<bool>(),
    ) {
        let first = compute(&desired, &observed, &sink, &PlanOptions { rotate_tokens: rotate, ..options() });
        let summary = first.summary();
        prop_assert_eq!(
            summary.create + summary.update + summary.issue + summary.deactivate + summary.delete,
            first.changes.len()
        );
        let (observed, sink) = apply_through_the_executor(&first, &observed, &sink);
        let second = compute(&desired, &observed, &sink, &options());
        prop_assert!(second.changes.is_empty(), "still planned after apply: {:#?}", describe(&second));
        let addresses = |p: &Plan| p.conflicts.iter().map(|c| c.address.to_string()).collect::<Vec<_>>();
        prop_assert_eq!(addresses(&first), addresses(&second));
    }
}

#[test]
fn stored_tokens_are_keyed_by_lower_cased_emails() {
    // A user written in capitals finds the token stored under its lower-cased email.
    let sink: StoredTokens = BTreeMap::from([stored("a@x.test", "u1")]);
    let p = compute(
        &desired(vec![company("Acme")], vec![with_token(user("A@X.TEST", "Acme"))]),
        &observed(vec![live_company("c1", "Acme")], vec![live_user("u1", "a@x.test", "c1")]),
        &sink,
        &options(),
    );
    assert!(p.changes.is_empty(), "{:#?}", describe(&p));
}
