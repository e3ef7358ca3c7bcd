//! The saved plan format across ozform versions: a plan saved by an earlier ozform (format 1,
//! committed as a fixture, written before changes carried `token_reason`) still loads, every
//! change decodes to the payload the executor runs, and it is written back byte for byte (with
//! the `plan_id` it did not have).
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use ozform::plan::format::{from_json, to_json};
use ozform::plan::{Action, Payload, TokenReason};

const SAVED_BY_0_1: &str = include_str!("../fixtures/plans/format-1-ozform-0.1.json");

#[test]
fn a_format_1_plan_saved_by_an_earlier_ozform_loads_and_writes_back_byte_for_byte() {
    let plan = from_json(SAVED_BY_0_1).unwrap();
    let kinds: Vec<(String, Action)> =
        plan.changes.iter().map(|c| (c.address.to_string(), c.action())).collect();
    assert_eq!(
        kinds,
        [
            ("company/Acme Bank".to_string(), Action::Create),
            ("company/Beta Corp".to_string(), Action::Update),
            ("service_user/svc-api@beta.example".to_string(), Action::Update),
            ("service_user/svc-web@acme.example".to_string(), Action::Create),
            ("token/svc-api@beta.example".to_string(), Action::Issue),
            ("token/svc-batch@beta.example".to_string(), Action::Issue),
            ("token/svc-web@acme.example".to_string(), Action::Issue),
        ]
    );
    // Written back byte for byte, but for the `plan_id` a plan now carries right after its
    // `format_version` (an additive field of format 1: the fixture predates it).
    let id = ozform::plan::id::plan_id(&plan);
    let with_id = SAVED_BY_0_1.replacen(
        "  \"format_version\": 1,\n",
        &format!("  \"format_version\": 1,\n  \"plan_id\": \"{id}\",\n"),
        1,
    );
    assert_ne!(with_id, SAVED_BY_0_1);
    assert_eq!(to_json(&plan), with_id);
    assert_eq!(from_json(&with_id).unwrap(), plan);
}

#[test]
fn the_payloads_of_an_earlier_plan_are_the_requests_it_meant() {
    let plan = from_json(SAVED_BY_0_1).unwrap();
    let Payload::UpdateUser(update) = &plan.changes[2].payload else { panic!("{:?}", plan.changes[2]) };
    let patch = update.patch();
    assert_eq!((patch.first_name.as_deref(), patch.active), (Some("Renamed"), Some(false)));
    assert_eq!((patch.last_name, patch.permissions.documents), (None, None));
    let Payload::CreateUser(create) = &plan.changes[3].payload else { panic!() };
    assert_eq!(create.fields.company, "Acme Bank");
    assert_eq!(create.company_id, None);
    assert_eq!(create.password.to_string(), "{env: ACME_WEB_PASSWORD}");
    let Payload::UpdateCompany(update) = &plan.changes[1].payload else { panic!() };
    assert_eq!(update.patch().technical_meta_data.unwrap()["tier"], "gold");
    // A reason saved as a sentence only is kept as that sentence.
    assert_eq!(
        plan.changes[5].reason(),
        Some(&TokenReason::Stated("no token for this user in the sink".into()))
    );
}
