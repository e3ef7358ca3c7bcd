//! The conformance suite of `apply::Effects`, in the manner of OpenTofu's `backend/testing.go`:
//! one set of cases, each run against every implementation — the in-memory `FakeEffects` the
//! executor tests use, and the real `OzClient` on the built-in emulator under API 5 and API 6.
//! A case sees only the seam (and the `Subject` knobs below for what the seam cannot do: a
//! server setting the Oz documentation leaves open, and the faults a test provokes), so the
//! fake is held to what the client does, and the executor tests that run on the fake predict
//! what `ozform apply` does against an Oz API.
//!
//! Every subject starts from the same `World`, with the same ids (UUIDs, as Oz ids are).
//! `conformance!` makes one module per case with one test per subject:
//! `cargo test --test testsuite effects_contract::` runs them all.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use crate::common;

use std::future::Future;

use common::builders::new_company;
use common::fake_effects::{FakeEffects, Fault, Op};
use ozform::apply::{EffectError, EffectErrorKind, Effects};
use ozform::emulator::{CompanyRecord, Faults, Handle, Quirks, Snapshot, UserRecord};
use ozform::model::{
    ApiVersion, CompanyPatch, Email, LivePermissions, NewCompany, NewUser, Observed, ObservedCompany,
    ObservedUser, Permissions, UserKind, UserPatch,
};
use ozform::oz::{OzClient, VersionSetting};
use serde_json::{Value, json};

// --- The world every subject starts from -----------------------------------------------------

/// A UUID that names nothing in any world.
const UNKNOWN_ID: &str = "00000000-0000-4000-8000-000000000000";

const SVC: &str = "svc@acme.example";
const MIXED: &str = "Mixed.Case@Acme.example";
const CLIENT: &str = "client@acme.example";

/// The ids of the seeded objects. Companies: `Acme` (`{"tier": "gold"}`), `acme` and
/// `Acme Corp` (names near `Acme`), two live `Twin`s, a `Moving` in deletion beside a live one,
/// and a `Leaving` only in deletion. Users, all in `Acme`: the service users `SVC` (`Svc One`,
/// `documents` off) and `MIXED` (its email in mixed case), and the plain client user `CLIENT`.
#[derive(Debug, Clone)]
struct World {
    acme: String,
    acme_lower: String,
    acme_corp: String,
    twins: [String; 2],
    moving_live: String,
    moving_gone: String,
    leaving: String,
    svc: String,
    mixed: String,
    client: String,
}

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl World {
    fn new() -> Self {
        Self {
            acme: uuid(),
            acme_lower: uuid(),
            acme_corp: uuid(),
            twins: [uuid(), uuid()],
            moving_live: uuid(),
            moving_gone: uuid(),
            leaving: uuid(),
            svc: uuid(),
            mixed: uuid(),
            client: uuid(),
        }
    }

    /// `(id, name, in_deletion, technical_meta_data)` of every company.
    fn companies(&self) -> Vec<(String, &'static str, bool, Value)> {
        vec![
            (self.acme.clone(), "Acme", false, json!({"tier": "gold"})),
            (self.acme_lower.clone(), "acme", false, json!({})),
            (self.acme_corp.clone(), "Acme Corp", false, json!({})),
            (self.twins[0].clone(), "Twin", false, json!({})),
            (self.twins[1].clone(), "Twin", false, json!({})),
            (self.moving_gone.clone(), "Moving", true, json!({})),
            (self.moving_live.clone(), "Moving", false, json!({})),
            (self.leaving.clone(), "Leaving", true, json!({})),
        ]
    }

    /// Every user, as the API holds it (dialect-neutral).
    fn users(&self) -> Vec<ObservedUser> {
        let user = |id: &str, email: &str, kind: UserKind| ObservedUser {
            id: id.into(),
            email: Email::new(email),
            company_id: Some(self.acme.as_str().into()),
            kind,
            first_name: String::new(),
            last_name: String::new(),
            middle_name: String::new(),
            active: true,
            permissions: LivePermissions::default(),
        };
        vec![
            ObservedUser {
                first_name: "Svc".into(),
                last_name: "One".into(),
                permissions: LivePermissions { documents: false, ..LivePermissions::default() },
                ..user(&self.svc, SVC, UserKind::Service)
            },
            user(&self.mixed, MIXED, UserKind::Service),
            user(&self.client, CLIENT, UserKind::Client),
        ]
    }

    /// The world as the fake starts from it.
    fn observed(&self) -> Observed {
        let companies = self
            .companies()
            .into_iter()
            .map(|(id, name, in_deletion, technical_meta_data)| ObservedCompany {
                id,
                name: name.into(),
                in_deletion,
                technical_meta_data,
            })
            .collect();
        Observed {
            api_url: "http://127.0.0.1:9".into(),
            api_version: ApiVersion::V6,
            api_version_detected: false,
            companies,
            users: self.users(),
        }
    }

    /// The world as the emulator of `version` starts from it, each user spelled as that
    /// dialect stores it.
    fn snapshot(&self, version: ApiVersion) -> Snapshot {
        let companies = self
            .companies()
            .into_iter()
            .map(|(company_id, name, in_deletion, technical_meta_data)| CompanyRecord {
                company_id,
                in_deletion,
                technical_meta_data,
                ..CompanyRecord::new(name)
            })
            .collect();
        let users = self
            .users()
            .into_iter()
            .map(|u| {
                let service = u.kind == UserKind::Service;
                let user_type = match version {
                    ApiVersion::V6 if service => "CLIENT_SERVICE",
                    _ => "CLIENT",
                };
                UserRecord {
                    user_id: u.id,
                    first_name: u.first_name,
                    last_name: u.last_name,
                    middle_name: u.middle_name,
                    is_active: u.active,
                    is_service: service,
                    permissions: u.permissions,
                    ..UserRecord::new(
                        u.email.as_str().into(),
                        user_type.into(),
                        u.company_id.as_deref().map(String::from),
                    )
                }
            })
            .collect();
        Snapshot { companies, users, ..Snapshot::default() }
    }
}

// --- The subjects ----------------------------------------------------------------------------

/// What a case provokes on the next create (of a company, a user, or a token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Provoked {
    /// The API answers 500 without making anything.
    ServerError,
    /// The API makes the object, then the connection drops before the answer.
    DropAfterCommit,
    /// The API makes the object, then answers 201 with a body that is not JSON.
    GarbledAfterCommit,
    /// The connection drops before the API handles the request: nothing is made.
    DropBeforeCommit,
}

/// One implementation of `Effects` under test, with the knobs a case needs beyond the seam.
trait Subject {
    type Effects: Effects;
    fn effects(&self) -> &Self::Effects;
    /// Whether the API refuses a second live company of one name (oz-api.md leaves it open).
    fn unique_company_names(&self, unique: bool);
    /// Make the next create `op` of `key` (a company name, or an email for a user or its token)
    /// fail that way. The fake fails that one call; the emulator fails every request that way
    /// until `calm` (the next one only, for a connection dropped before handling), so a case
    /// provokes, makes the one call, and calms.
    fn provoke(&self, op: Op, key: &str, provoked: Provoked);
    /// Stop provoking.
    fn calm(&self);
    /// How many service tokens were ever issued for `user_id` (the seam cannot read a token back).
    fn tokens_issued(&self, user_id: &str) -> usize;
}

impl Subject for FakeEffects {
    type Effects = FakeEffects;
    fn effects(&self) -> &FakeEffects {
        self
    }
    fn unique_company_names(&self, unique: bool) {
        self.set_unique_company_names(unique);
    }
    fn provoke(&self, op: Op, key: &str, provoked: Provoked) {
        let fault = match provoked {
            Provoked::ServerError => Fault::ServerError,
            Provoked::DropAfterCommit | Provoked::GarbledAfterCommit => Fault::OutcomeUnknownAfterCommit,
            Provoked::DropBeforeCommit => Fault::OutcomeUnknownBeforeCommit,
        };
        self.inject(op, key, fault);
    }
    fn calm(&self) {
        // The fake's faults are used up by the one call they were injected for.
    }
    fn tokens_issued(&self, user_id: &str) -> usize {
        self.tokens().iter().filter(|t| t.user_id == user_id).count()
    }
}

/// The real client, connected as the admin to an emulator.
struct Emulated {
    handle: Handle,
    client: OzClient,
}

impl Subject for Emulated {
    type Effects = OzClient;
    fn effects(&self) -> &OzClient {
        &self.client
    }
    fn unique_company_names(&self, unique: bool) {
        self.handle.set_quirks(Quirks { unique_company_names: unique, ..self.handle.quirks() });
    }
    fn provoke(&self, _op: Op, _key: &str, provoked: Provoked) {
        let faults = match provoked {
            Provoked::ServerError => Faults { internal_error: 1.0, ..Faults::default() },
            Provoked::DropAfterCommit => Faults { commit_then_drop: 1.0, ..Faults::default() },
            Provoked::GarbledAfterCommit => Faults { commit_then_garble: 1.0, ..Faults::default() },
            Provoked::DropBeforeCommit => Faults { drop_next: 1, ..Faults::default() },
        };
        self.handle.set_faults(faults);
    }
    fn calm(&self) {
        self.handle.set_faults(Faults::default());
    }
    fn tokens_issued(&self, user_id: &str) -> usize {
        self.handle.snapshot().service_tokens.iter().filter(|t| t.user_id == user_id).count()
    }
}

/// A subject started on a fresh `World`, as a case receives it.
struct Run<S> {
    subject: S,
    world: World,
}

impl<S: Subject> Run<S> {
    fn effects(&self) -> &S::Effects {
        self.subject.effects()
    }
}

async fn on_fake<F, Fut>(case: F)
where
    F: FnOnce(Run<FakeEffects>) -> Fut,
    Fut: Future<Output = ()>,
{
    let world = World::new();
    let fake = FakeEffects::new();
    fake.seed(&world.observed());
    case(Run { subject: fake, world }).await;
}

async fn on_emulator<F, Fut>(version: ApiVersion, case: F)
where
    F: FnOnce(Run<Emulated>) -> Fut,
    Fut: Future<Output = ()>,
{
    let world = World::new();
    let handle = common::emulator::Emulator::new(version).seed(world.snapshot(version)).start().await;
    let client = common::emulator::connect(&handle, |c| c.api_version = VersionSetting::Fixed(version)).await;
    case(Run { subject: Emulated { handle, client }, world }).await;
}

/// One module per case, with one test per subject.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            use ozform::model::ApiVersion;

            #[tokio::test]
            async fn on_the_fake() {
                super::on_fake(super::$case).await;
            }

            #[tokio::test]
            async fn on_the_client_and_the_emulator_of_api_5() {
                super::on_emulator(ApiVersion::V5, super::$case).await;
            }

            #[tokio::test]
            async fn on_the_client_and_the_emulator_of_api_6() {
                super::on_emulator(ApiVersion::V6, super::$case).await;
            }
        }
    )*};
}

conformance!(
    finding_companies_matches_the_exact_name_and_skips_those_in_deletion,
    finding_a_user_ignores_the_case_of_the_email,
    a_created_company_comes_back_with_its_fields_and_is_found,
    where_names_are_unique_a_taken_name_is_already_exists_and_a_name_in_deletion_is_free,
    where_names_may_repeat_a_second_company_of_a_name_is_a_twin_that_finding_shows,
    an_updated_company_comes_back_changed_and_is_found_so,
    updating_a_company_in_deletion_or_unknown_is_refused,
    a_created_user_comes_back_as_a_service_user_with_its_fields_and_is_found,
    creating_a_user_whose_email_exists_in_any_case_is_already_exists,
    creating_a_user_in_a_company_that_is_not_live_fails_and_makes_nothing,
    an_updated_user_comes_back_changed_and_is_found_so,
    making_a_plain_user_a_service_user_lets_it_have_a_token,
    updating_an_unknown_user_is_refused,
    an_issued_token_names_its_user_and_each_issue_is_a_new_token,
    issuing_a_token_for_an_unknown_or_plain_user_is_refused,
    a_deleted_user_is_gone_and_deleting_a_gone_user_succeeds,
    a_create_answered_500_is_an_answered_unknown_outcome_that_made_nothing,
    a_create_whose_answer_is_lost_after_the_commit_is_an_unanswered_unknown_outcome_that_made_it,
    a_create_answered_with_an_unreadable_body_is_an_unanswered_unknown_outcome_that_made_it,
    a_create_lost_before_the_api_handled_it_is_an_unanswered_unknown_outcome_that_made_nothing,
);

// --- Helpers of the cases ----------------------------------------------------------------------

/// A new company `name` with this metadata.
fn new_company_with(name: &str, meta: Value) -> NewCompany {
    NewCompany { technical_meta_data: Some(meta), ..new_company(name) }
}

/// A new user `New M User` of `company_id` (`common::builders::new_user`, with a middle name).
fn new_user(email: &str, company_id: &str) -> NewUser {
    NewUser { middle_name: "M".into(), ..common::builders::new_user(email, company_id) }
}

/// The kind of the error, or a failure naming what came back instead.
#[track_caller]
fn kind<T: std::fmt::Debug>(result: Result<T, EffectError>) -> EffectErrorKind {
    match result {
        Err(e) => {
            assert!(!e.message.is_empty(), "an effect error names its request");
            e.kind
        }
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

async fn ids_named<E: Effects>(effects: &E, name: &str) -> Vec<String> {
    let mut ids: Vec<String> =
        effects.find_companies(name).await.unwrap().into_iter().map(|c| c.id).collect();
    ids.sort();
    ids
}

async fn found_user<E: Effects>(effects: &E, email: &str) -> Option<ObservedUser> {
    effects.find_user(&Email::new(email)).await.unwrap()
}

// --- Finding ----------------------------------------------------------------------------------

async fn finding_companies_matches_the_exact_name_and_skips_those_in_deletion<S: Subject>(run: Run<S>) {
    let (e, w) = (run.effects(), &run.world);
    let acme = e.find_companies("Acme").await.unwrap();
    let expected = ObservedCompany {
        id: w.acme.clone(),
        name: "Acme".into(),
        in_deletion: false,
        technical_meta_data: json!({"tier": "gold"}),
    };
    assert_eq!(acme, [expected], "exactly `Acme`: not `acme`, not `Acme Corp`");
    assert_eq!(ids_named(e, "acme").await, [w.acme_lower.as_str()]);
    assert_eq!(ids_named(e, "Acme Corp").await, [w.acme_corp.as_str()]);
    assert_eq!(ids_named(e, "Acm").await, Vec::<String>::new(), "no prefix match");
    let mut twins = w.twins.to_vec();
    twins.sort();
    assert_eq!(ids_named(e, "Twin").await, twins, "both of an ambiguous name");
    assert_eq!(ids_named(e, "Moving").await, [w.moving_live.as_str()], "not the one in deletion");
    assert_eq!(ids_named(e, "Leaving").await, Vec::<String>::new(), "in deletion is not there");
    assert_eq!(ids_named(e, "Nobody").await, Vec::<String>::new());
}

async fn finding_a_user_ignores_the_case_of_the_email<S: Subject>(run: Run<S>) {
    let (e, w) = (run.effects(), &run.world);
    let svc = found_user(e, "SVC@Acme.EXAMPLE").await.unwrap();
    assert_eq!(svc, w.users()[0], "every field as seeded");
    assert_eq!(found_user(e, "mixed.case@acme.example").await.map(|u| u.id), Some(w.mixed.clone()));
    assert_eq!(found_user(e, MIXED).await.map(|u| u.id), Some(w.mixed.clone()));
    let client = found_user(e, CLIENT).await.unwrap();
    assert_eq!((client.id, client.kind), (w.client.clone(), UserKind::Client));
    assert_eq!(found_user(e, "nobody@acme.example").await, None);
    assert_eq!(found_user(e, "svc@acme").await, None, "no prefix match");
}

// --- Companies --------------------------------------------------------------------------------

async fn a_created_company_comes_back_with_its_fields_and_is_found<S: Subject>(run: Run<S>) {
    let e = run.effects();
    let fresh = e.create_company(&new_company_with("Fresh", json!({"k": [1, "two"]}))).await.unwrap();
    assert!(!fresh.id.is_empty());
    assert_eq!(
        (fresh.name.as_str(), fresh.in_deletion, &fresh.technical_meta_data),
        ("Fresh", false, &json!({"k": [1, "two"]}))
    );
    assert_eq!(e.find_companies("Fresh").await.unwrap(), std::slice::from_ref(&fresh));
    let bare = e.create_company(&new_company("Bare")).await.unwrap();
    assert_eq!(bare.technical_meta_data, json!({}), "no metadata is an empty object");
    assert_ne!(bare.id, fresh.id);
    assert_eq!(e.find_companies("Bare").await.unwrap(), [bare]);
}

async fn where_names_are_unique_a_taken_name_is_already_exists_and_a_name_in_deletion_is_free<S: Subject>(
    run: Run<S>,
) {
    run.subject.unique_company_names(true);
    let (e, w) = (run.effects(), &run.world);
    assert_eq!(kind(e.create_company(&new_company("Acme")).await), EffectErrorKind::AlreadyExists);
    assert_eq!(ids_named(e, "Acme").await, [w.acme.as_str()], "nothing made");
    let made = e.create_company(&new_company("Leaving")).await.unwrap();
    assert_eq!(ids_named(e, "Leaving").await, [made.id.as_str()], "a company in deletion holds no name");
}

async fn where_names_may_repeat_a_second_company_of_a_name_is_a_twin_that_finding_shows<S: Subject>(
    run: Run<S>,
) {
    run.subject.unique_company_names(false);
    let (e, w) = (run.effects(), &run.world);
    let twin = e.create_company(&new_company("Acme")).await.unwrap();
    assert_ne!(twin.id, w.acme);
    let mut both = vec![w.acme.clone(), twin.id];
    both.sort();
    assert_eq!(ids_named(e, "Acme").await, both);
}

async fn an_updated_company_comes_back_changed_and_is_found_so<S: Subject>(run: Run<S>) {
    let (e, w) = (run.effects(), &run.world);
    let unchanged = e.update_company(&w.acme, &CompanyPatch::default()).await.unwrap();
    assert_eq!(
        e.find_companies("Acme").await.unwrap(),
        std::slice::from_ref(&unchanged),
        "an empty patch changes nothing"
    );
    assert_eq!(unchanged.technical_meta_data, json!({"tier": "gold"}));

    let meta =
        CompanyPatch { technical_meta_data: Some(json!({"tier": "platinum"})), ..CompanyPatch::default() };
    let updated = e.update_company(&w.acme, &meta).await.unwrap();
    assert_eq!(
        (updated.id.as_str(), updated.name.as_str(), &updated.technical_meta_data),
        (w.acme.as_str(), "Acme", &json!({"tier": "platinum"}))
    );
    assert_eq!(e.find_companies("Acme").await.unwrap(), [updated]);

    let rename = CompanyPatch { name: Some("Acme Renamed".into()), ..CompanyPatch::default() };
    let renamed = e.update_company(&w.acme, &rename).await.unwrap();
    assert_eq!(
        (renamed.name.as_str(), &renamed.technical_meta_data),
        ("Acme Renamed", &json!({"tier": "platinum"}))
    );
    assert_eq!(ids_named(e, "Acme").await, Vec::<String>::new());
    assert_eq!(e.find_companies("Acme Renamed").await.unwrap(), [renamed]);
}

async fn updating_a_company_in_deletion_or_unknown_is_refused<S: Subject>(run: Run<S>) {
    let (e, w) = (run.effects(), &run.world);
    let meta = CompanyPatch { technical_meta_data: Some(json!({"tier": "x"})), ..CompanyPatch::default() };
    assert_eq!(kind(e.update_company(&w.moving_gone, &meta).await), EffectErrorKind::Refused);
    assert_eq!(kind(e.update_company(UNKNOWN_ID, &meta).await), EffectErrorKind::Refused);
    assert_eq!(
        e.find_companies("Moving").await.unwrap()[0].technical_meta_data,
        json!({}),
        "the live twin untouched"
    );
}

// --- Users ------------------------------------------------------------------------------------

async fn a_created_user_comes_back_as_a_service_user_with_its_fields_and_is_found<S: Subject>(run: Run<S>) {
    let (e, w) = (run.effects(), &run.world);
    let created = e.create_user(&new_user("New.User@Acme.example", &w.acme)).await.unwrap();
    assert!(!created.id.is_empty());
    let expected = ObservedUser {
        id: created.id.clone(),
        email: Email::new("New.User@Acme.example"),
        company_id: Some(w.acme.as_str().into()),
        kind: UserKind::Service,
        first_name: "New".into(),
        last_name: "User".into(),
        middle_name: "M".into(),
        active: true,
        permissions: LivePermissions { documents: false, ..LivePermissions::default() },
    };
    assert_eq!(created, expected, "a flag left unset is on, as the API defaults it");
    assert_eq!(created.email.as_str(), "New.User@Acme.example", "the email as written");
    assert_eq!(found_user(e, "new.user@acme.example").await, Some(expected));

    let inactive = NewUser { active: false, ..new_user("idle@acme.example", &w.acme_corp) };
    let idle = e.create_user(&inactive).await.unwrap();
    assert_eq!((idle.active, idle.company_id.as_deref()), (false, Some(w.acme_corp.as_str())));
    assert_eq!(found_user(e, "idle@acme.example").await.map(|u| u.active), Some(false));
}

async fn creating_a_user_whose_email_exists_in_any_case_is_already_exists<S: Subject>(run: Run<S>) {
    let (e, w) = (run.effects(), &run.world);
    assert_eq!(
        kind(e.create_user(&new_user("SVC@ACME.example", &w.acme)).await),
        EffectErrorKind::AlreadyExists
    );
    assert_eq!(kind(e.create_user(&new_user(SVC, &w.acme_corp)).await), EffectErrorKind::AlreadyExists);
    assert_eq!(found_user(e, SVC).await.as_ref(), Some(&w.users()[0]), "the existing user untouched");
}

/// The API answers a create into a company that is not live with 400 `error_code` 4, as it
/// answers a duplicate (oz-api.md sections 6 and 7.6): the client cannot tell the two apart,
/// so the kind is `AlreadyExists`, and apply reads back by email (and finds nothing).
async fn creating_a_user_in_a_company_that_is_not_live_fails_and_makes_nothing<S: Subject>(run: Run<S>) {
    let (e, w) = (run.effects(), &run.world);
    for company in [&w.leaving, &w.moving_gone, UNKNOWN_ID] {
        let email = format!("nowhere-{company}@acme.example");
        let err = e.create_user(&new_user(&email, company)).await.unwrap_err();
        assert_eq!(err.kind, EffectErrorKind::AlreadyExists, "{err}");
        assert_eq!(found_user(e, &email).await, None, "nothing made");
    }
}

async fn an_updated_user_comes_back_changed_and_is_found_so<S: Subject>(run: Run<S>) {
    let (e, w) = (run.effects(), &run.world);
    let unchanged = e.update_user(&w.svc, &UserPatch::default()).await.unwrap();
    assert_eq!(unchanged, w.users()[0], "an empty patch changes nothing");

    let patch = UserPatch {
        first_name: Some("Renamed".into()),
        middle_name: Some("Q".into()),
        active: Some(false),
        permissions: Permissions { quality: Some(false), documents: Some(true), ..Permissions::default() },
        ..UserPatch::default()
    };
    let updated = e.update_user(&w.svc, &patch).await.unwrap();
    let expected = ObservedUser {
        first_name: "Renamed".into(),
        middle_name: "Q".into(),
        active: false,
        permissions: LivePermissions { quality: false, ..LivePermissions::default() },
        ..w.users()[0].clone()
    };
    assert_eq!(updated, expected, "the fields patched, the others as they were");
    assert_eq!(found_user(e, SVC).await, Some(expected));
}

async fn making_a_plain_user_a_service_user_lets_it_have_a_token<S: Subject>(run: Run<S>) {
    let (e, w) = (run.effects(), &run.world);
    let patch = UserPatch { make_service: true, ..UserPatch::default() };
    let made = e.update_user(&w.client, &patch).await.unwrap();
    assert_eq!((made.kind, made.company_id.as_deref()), (UserKind::Service, Some(w.acme.as_str())));
    assert_eq!(found_user(e, CLIENT).await.map(|u| u.kind), Some(UserKind::Service));
    let token = e.issue_token(&w.client).await.unwrap();
    assert_eq!(token.user_id, w.client);
}

async fn updating_an_unknown_user_is_refused<S: Subject>(run: Run<S>) {
    let e = run.effects();
    let patch = UserPatch { active: Some(false), ..UserPatch::default() };
    assert_eq!(kind(e.update_user(UNKNOWN_ID, &patch).await), EffectErrorKind::Refused);
}

// --- Tokens and deletion ----------------------------------------------------------------------

async fn an_issued_token_names_its_user_and_each_issue_is_a_new_token<S: Subject>(run: Run<S>) {
    let (e, w) = (run.effects(), &run.world);
    let now = ozform::model::now_epoch();
    let first = e.issue_token(&w.svc).await.unwrap();
    assert_eq!(first.user_id, w.svc);
    assert!(!first.token_id.is_empty() && !first.access_token.expose().is_empty());
    let years = |n: f64| n * 365.25 * 86_400.0;
    assert!(
        first.expire_date > now && first.expire_date < now + years(100.0),
        "a fresh token expires ahead of now: {}",
        first.expire_date
    );
    let second = e.issue_token(&w.mixed).await.unwrap();
    let third = e.issue_token(&w.svc).await.unwrap();
    assert_eq!(second.user_id, w.mixed);
    assert_ne!(first.token_id, third.token_id);
    assert_ne!(first.access_token.expose(), third.access_token.expose());
    assert_ne!(second.access_token.expose(), third.access_token.expose());
}

async fn issuing_a_token_for_an_unknown_or_plain_user_is_refused<S: Subject>(run: Run<S>) {
    let (e, w) = (run.effects(), &run.world);
    assert_eq!(kind(e.issue_token(UNKNOWN_ID).await), EffectErrorKind::Refused);
    assert_eq!(kind(e.issue_token(&w.client).await), EffectErrorKind::Refused, "not a service user");
}

async fn a_deleted_user_is_gone_and_deleting_a_gone_user_succeeds<S: Subject>(run: Run<S>) {
    let (e, w) = (run.effects(), &run.world);
    e.delete_user(&w.svc).await.unwrap();
    assert_eq!(found_user(e, SVC).await, None);
    e.delete_user(&w.svc).await.unwrap();
    e.delete_user(UNKNOWN_ID).await.unwrap();
    assert_eq!(kind(e.issue_token(&w.svc).await), EffectErrorKind::Refused, "no token for a gone user");
    assert_eq!(kind(e.update_user(&w.svc, &UserPatch::default()).await), EffectErrorKind::Refused);
    let again = e.create_user(&new_user(SVC, &w.acme)).await.unwrap();
    assert_ne!(again.id, w.svc, "the email is free again, for a new user");
    assert_eq!(found_user(e, MIXED).await.map(|u| u.id), Some(w.mixed.clone()), "the others stay");
}

// --- Creates whose outcome is unknown ---------------------------------------------------------

/// Provoke `provoked` on a create of each kind (company, user, token) and assert that each
/// fails with `expected`, and that each object exists afterwards or not, as `made` says.
async fn each_create_fails_so<S: Subject>(
    run: Run<S>,
    provoked: Provoked,
    expected: EffectErrorKind,
    made: bool,
) {
    let (s, e, w) = (&run.subject, run.effects(), &run.world);
    let mut seen = Vec::new();

    s.provoke(Op::CreateCompany, "Half", provoked);
    let company = e.create_company(&new_company("Half")).await;
    s.calm();
    seen.push(("company", kind(company), !ids_named(e, "Half").await.is_empty()));

    s.provoke(Op::CreateUser, "half@acme.example", provoked);
    let user = e.create_user(&new_user("half@acme.example", &w.acme)).await;
    s.calm();
    seen.push(("user", kind(user), found_user(e, "half@acme.example").await.is_some()));

    s.provoke(Op::IssueToken, SVC, provoked);
    let token = e.issue_token(&w.svc).await;
    s.calm();
    seen.push(("token", kind(token), s.tokens_issued(&w.svc) == 1));

    assert_eq!(seen, [("company", expected, made), ("user", expected, made), ("token", expected, made)]);
}

async fn a_create_answered_500_is_an_answered_unknown_outcome_that_made_nothing<S: Subject>(run: Run<S>) {
    each_create_fails_so(
        run,
        Provoked::ServerError,
        EffectErrorKind::OutcomeUnknown { answered: true },
        false,
    )
    .await;
}

async fn a_create_whose_answer_is_lost_after_the_commit_is_an_unanswered_unknown_outcome_that_made_it<
    S: Subject,
>(
    run: Run<S>,
) {
    let unanswered = EffectErrorKind::OutcomeUnknown { answered: false };
    each_create_fails_so(run, Provoked::DropAfterCommit, unanswered, true).await;
}

async fn a_create_answered_with_an_unreadable_body_is_an_unanswered_unknown_outcome_that_made_it<
    S: Subject,
>(
    run: Run<S>,
) {
    let unanswered = EffectErrorKind::OutcomeUnknown { answered: false };
    each_create_fails_so(run, Provoked::GarbledAfterCommit, unanswered, true).await;
}

async fn a_create_lost_before_the_api_handled_it_is_an_unanswered_unknown_outcome_that_made_nothing<
    S: Subject,
>(
    run: Run<S>,
) {
    let unanswered = EffectErrorKind::OutcomeUnknown { answered: false };
    each_create_fails_so(run, Provoked::DropBeforeCommit, unanswered, false).await;
}
