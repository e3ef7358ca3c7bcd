//! The executor against in-memory fakes: order, concurrency, failure isolation, exactly-once
//! creates, passwords, stale plans, the token store, convergence, and no secret in any output.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::missing_panics_doc,
    clippy::needless_pass_by_value
)]

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::builders::live_user;
use common::fake_effects::{FakeEffects, Fault, Op};
use common::memory_store::MemoryStore;
use common::recording::{Event, Recording};
use ozform::apply::{
    ApplyError, ApplyReport, ExecuteOptions, Outcome, Progress, StepErrorKind, check_fresh, execute,
    resolve_passwords,
};
use ozform::model::{ApiVersion, Email, ObservedUser, Permissions, StoredToken, StoredTokens, UserKind};
use ozform::output::{JsonLines, PlainLines};
use ozform::plan::{
    Action, Address, Change, CompanyFields, Payload, Plan, TokenIssue, TokenReason, Update, UserCreate,
    UserFields, fingerprint,
};
use ozform::secret::{PasswordSource, Secret, SecretRef};
use ozform::token_store::{TokenRecord, TokenStore, TokenStoreError};
use serde_json::{Value, json};

const CANARY_PASSWORD: &str = "canary-password-51d2e8";
const CANARY_TOKEN: &str = "canary-token-9b7c04-";
const API_URL: &str = "http://127.0.0.1:9";

// --- Plan builders --------------------------------------------------------------------------

fn change(address: Address, depends_on: Vec<Address>, payload: Payload) -> Change {
    Change { address, depends_on, live_id: None, fingerprint: None, payload }
}

fn company(name: &str) -> Address {
    Address::Company(name.into())
}
fn user(email: &str) -> Address {
    Address::ServiceUser(Email::new(email))
}
fn token(email: &str) -> Address {
    Address::Token(Email::new(email))
}

fn create_company(name: &str, meta: Value) -> Change {
    let fields = CompanyFields { name: name.into(), technical_meta_data: Some(meta) };
    change(company(name), vec![], Payload::CreateCompany(fields))
}

fn update_company(name: &str, before: Value, after: Value) -> Change {
    let side = |meta| CompanyFields { name: name.into(), technical_meta_data: Some(meta) };
    let mut c = change(
        company(name),
        vec![],
        Payload::UpdateCompany(Update { before: side(before), after: side(after) }),
    );
    c.live_id = Some(format!("id-of-{name}"));
    c
}

/// The fields the planner would want for a user `Svc <email>` of `company_name` whose
/// `documents` permission is off.
fn user_fields(email: &str, company_name: &str) -> UserFields {
    UserFields {
        email: Email::new(email),
        company: company_name.into(),
        first_name: Some("Svc".into()),
        last_name: Some(email.into()),
        middle_name: None,
        active: true,
        permissions: Some(Permissions { documents: Some(false), ..Permissions::default() }),
    }
}

fn create_user(email: &str, company_name: &str) -> Change {
    let create = UserCreate {
        fields: user_fields(email, company_name),
        company_id: None,
        password: SecretRef::Env(format!("PW_{email}")).into(),
    };
    change(user(email), vec![company(company_name)], Payload::CreateUser(create))
}

/// A token of a user that `user_id` names (`None`: the user is made by this plan).
fn token_issue(email: &str, user_id: Option<&str>) -> Change {
    let issue = TokenIssue {
        user_id: user_id.map(str::to_string),
        api_url: API_URL.into(),
        stored: None,
        reason: if user_id.is_some() { TokenReason::NoToken } else { TokenReason::UserBeingCreated },
        company: None,
    };
    let mut c = change(token(email), vec![user(email)], Payload::IssueToken(issue));
    c.live_id = user_id.map(str::to_string);
    c
}

fn issue_token(email: &str) -> Change {
    token_issue(email, None)
}

/// Company, service user and token for each `(company, email)`.
fn stack(pairs: &[(&str, &str)]) -> Vec<Change> {
    let mut changes = Vec::new();
    for (c, e) in pairs {
        changes.push(create_company(c, json!({"tier": "gold"})));
        changes.push(create_user(e, c));
        changes.push(issue_token(e));
    }
    changes
}

fn plan(mut changes: Vec<Change>) -> Plan {
    changes.sort_by(|a, b| a.address.cmp(&b.address));
    Plan {
        installation: None,
        api_url: API_URL.into(),
        api_version: ApiVersion::V6,
        api_version_detected: false,
        changes,
        conflicts: vec![],
        unmanaged: vec![],
        warnings: vec![],
        prune: vec![],
        source_ids: std::collections::BTreeMap::new(),
    }
}

/// Every `PW_*` variable is set to the canary password.
fn env(name: &str) -> Option<String> {
    name.starts_with("PW_").then(|| CANARY_PASSWORD.to_string())
}

// --- Running --------------------------------------------------------------------------------

struct World {
    fake: Arc<FakeEffects>,
    store: Arc<MemoryStore>,
    recorder: Arc<Recording>,
}

impl World {
    fn new() -> Self {
        let fake = Arc::new(FakeEffects::new());
        fake.set_token_prefix(CANARY_TOKEN);
        Self { fake, store: Arc::new(MemoryStore::new()), recorder: Arc::new(Recording::new()) }
    }

    fn options(plan: &Plan, parallelism: usize) -> ExecuteOptions {
        let mut options = ExecuteOptions::new(resolve_passwords(plan, &env).unwrap());
        options.parallelism = parallelism;
        options
    }

    async fn apply(&self, plan: &Plan, parallelism: usize) -> ApplyReport {
        execute(
            plan,
            Arc::clone(&self.fake),
            self.store(),
            self.progress(),
            &Self::options(plan, parallelism),
        )
        .await
        .unwrap()
    }

    fn store(&self) -> Arc<dyn TokenStore> {
        self.store.clone()
    }

    fn progress(&self) -> Arc<dyn Progress> {
        self.recorder.clone()
    }
}

/// A hang guard for tests that wait on the executor: not a timing assert, it only turns a
/// deadlock (the property under test failing) into a failure instead of a stuck run.
async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f).await.expect("the executor deadlocked")
}

fn addresses<T>(items: &[T], address: impl Fn(&T) -> &Address) -> Vec<String> {
    items.iter().map(|i| address(i).to_string()).collect()
}

fn position(log: &[(Op, String)], op: Op, key: &str) -> usize {
    log.iter()
        .position(|(o, k)| *o == op && k == key)
        .unwrap_or_else(|| panic!("no {op:?} of {key} in {log:?}"))
}

// --- Order and concurrency ------------------------------------------------------------------

#[tokio::test]
async fn a_company_its_user_and_its_token_are_made_in_dependency_order() {
    let w = World::new();
    let plan = plan(stack(&[("Acme", "svc@acme.example")]));
    let report = w.apply(&plan, 8).await;
    assert!(report.is_success(), "{report:?}");
    assert_eq!(report.done.len(), 3);

    let log = w.fake.call_log();
    assert!(position(&log, Op::CreateCompany, "Acme") < position(&log, Op::CreateUser, "svc@acme.example"));
    assert!(
        position(&log, Op::CreateUser, "svc@acme.example")
            < position(&log, Op::IssueToken, "svc@acme.example")
    );
    let events = w.recorder.events();
    assert_eq!(events.iter().filter(|e| matches!(e, Event::Started { .. })).count(), 3);
    assert_eq!(events.last(), Some(&Event::AllFinished), "told last that the apply is over");
    // The company id came from the company step, so no lookup by name was needed: the one
    // read of companies is the read-back after the create that looks for a twin.
    assert_eq!(w.fake.calls(Op::FindCompanies), 1);
    assert_eq!(w.fake.call_log().iter().filter(|(o, _)| *o == Op::FindCompanies).count(), 1);
    assert!(position(&log, Op::CreateCompany, "Acme") < position(&log, Op::FindCompanies, "Acme"));

    let live = w.fake.user("svc@acme.example").unwrap();
    assert_eq!(live.company_id.as_deref(), Some(w.fake.companies()[0].id.as_str()));
    assert!(!live.permissions.documents && live.permissions.biometry);
    assert_eq!(w.fake.password_of("svc@acme.example").unwrap().expose(), CANARY_PASSWORD);

    let stored = w.store.get("svc@acme.example").unwrap();
    let issued = &w.fake.tokens()[0];
    assert_eq!(
        (stored.user_id.as_str(), stored.token_id.as_str()),
        (live.id.as_str(), issued.token_id.as_str())
    );
    assert_eq!(stored.access_token, issued.access_token);
    assert_eq!(stored.api_url, API_URL);
    assert!(humantime::parse_rfc3339(&stored.issued_at).is_ok(), "{}", stored.issued_at);
}

#[tokio::test]
async fn a_step_starts_as_soon_as_its_own_dependencies_are_done_not_in_waves() {
    let w = World::new();
    let plan = plan(vec![
        create_company("Slow", json!({})),
        create_company("Fast", json!({})),
        create_user("b@fast.example", "Fast"),
    ]);
    let hold = w.fake.hold(Op::CreateCompany, "Slow");
    let (fake, store, progress) = (Arc::clone(&w.fake), w.store(), w.progress());
    let options = World::options(&plan, 8);
    let run = tokio::spawn(async move { execute(&plan, fake, store, progress, &options).await });
    // `Slow`'s create is still held, yet the user of `Fast` gets created.
    within(w.fake.wait_for_call(Op::CreateUser, "b@fast.example")).await;
    assert_eq!(w.fake.companies().iter().filter(|c| c.name == "Slow").count(), 0);
    hold.release();
    let report = within(run).await.unwrap().unwrap();
    assert!(report.is_success(), "{report:?}");
}

#[tokio::test]
async fn independent_steps_reach_but_never_exceed_the_parallelism_bound() {
    let w = World::new();
    let changes: Vec<Change> = (0..12).map(|i| create_company(&format!("C{i:02}"), json!({}))).collect();
    let plan = plan(changes);
    // Every call waits until four are in flight: the run completes only if the bound is reached.
    w.fake.gate_until_in_flight(4);
    let report = within(w.apply(&plan, 4)).await;
    assert!(report.is_success(), "{report:?}");
    assert_eq!(w.fake.max_in_flight(), 4);
    assert_eq!(w.fake.companies().len(), 12);
}

#[tokio::test]
async fn a_parallelism_of_one_runs_one_step_at_a_time() {
    let w = World::new();
    let plan = plan(stack(&[("A", "a@a.example"), ("B", "b@b.example"), ("C", "c@c.example")]));
    let report = w.apply(&plan, 1).await;
    assert!(report.is_success(), "{report:?}");
    assert_eq!(w.fake.max_in_flight(), 1);
}

// --- Failures -------------------------------------------------------------------------------

#[tokio::test]
async fn a_failed_step_skips_its_dependents_and_nothing_else() {
    let w = World::new();
    let plan = plan(stack(&[("A", "a@a.example"), ("B", "b@b.example")]));
    w.fake.inject(Op::CreateCompany, "A", Fault::Fail);
    let report = w.apply(&plan, 8).await;

    assert_eq!(addresses(&report.failed, |f| &f.address), ["company/A"]);
    assert!(report.failed[0].error.message.contains("403"), "{}", report.failed[0].error);
    assert_eq!(report.failed[0].error.kind, StepErrorKind::Refused);
    assert_eq!(addresses(&report.skipped, |s| &s.address), ["service_user/a@a.example", "token/a@a.example"]);
    assert!(report.skipped.iter().all(|s| s.dependency == company("A")));
    assert_eq!(
        addresses(&report.done, |d| &d.address),
        ["company/B", "service_user/b@b.example", "token/b@b.example"]
    );
    assert_eq!(w.fake.calls(Op::CreateUser), 1, "the user of A was never attempted");

    let skipped_events = w
        .recorder
        .events()
        .into_iter()
        .filter(|e| matches!(e, Event::Finished { outcome: Outcome::Skipped { .. }, .. }))
        .count();
    assert_eq!(skipped_events, 2);

    assert!(!report.is_success());
    let err = report.into_result().unwrap_err();
    assert!(matches!(err, ApplyError::Partial { done: 3, failed: 1, skipped: 2, .. }), "{err:?}");
    assert!(err.to_string().contains("`company/A`"), "{err}");
}

#[tokio::test]
async fn a_create_that_committed_before_the_connection_dropped_is_adopted_once() {
    let w = World::new();
    let plan = plan(stack(&[("Acme", "svc@acme.example")]));
    w.fake.inject(Op::CreateCompany, "Acme", Fault::OutcomeUnknownAfterCommit);
    w.fake.inject(Op::CreateUser, "svc@acme.example", Fault::OutcomeUnknownAfterCommit);
    let report = w.apply(&plan, 8).await;

    assert!(report.is_success(), "{report:?}");
    let adopted: Vec<String> =
        report.done.iter().filter(|d| d.adopted).map(|d| d.address.to_string()).collect();
    assert_eq!(adopted, ["company/Acme", "service_user/svc@acme.example"]);
    assert_eq!((w.fake.calls(Op::CreateCompany), w.fake.calls(Op::CreateUser)), (1, 1), "never re-sent");
    assert_eq!((w.fake.companies().len(), w.fake.users().len()), (1, 1));
    // The token went to the adopted user.
    assert_eq!(w.store.get("svc@acme.example").unwrap().user_id, w.fake.users()[0].id);
    assert_eq!(w.fake.calls(Op::UpdateUser), 0, "the adopted user already matched");
}

#[tokio::test]
async fn a_create_lost_before_it_reached_the_api_fails_without_being_re_sent() {
    let w = World::new();
    let plan = plan(stack(&[("Acme", "svc@acme.example")]));
    w.fake.inject(Op::CreateCompany, "Acme", Fault::OutcomeUnknownBeforeCommit);
    let report = w.apply(&plan, 8).await;
    assert_eq!(addresses(&report.failed, |f| &f.address), ["company/Acme"]);
    assert!(report.failed[0].error.message.contains("connection closed"), "{}", report.failed[0].error);
    assert_eq!(w.fake.calls(Op::CreateCompany), 1);
    assert_eq!(w.fake.calls(Op::FindCompanies), 1, "read back once");
    assert_eq!(report.skipped.len(), 2);
}

#[tokio::test]
async fn a_create_answered_500_and_not_found_by_the_read_back_is_sent_again() {
    let w = World::new();
    let plan = plan(stack(&[("Acme", "svc@acme.example")]));
    for _ in 0..2 {
        w.fake.inject(Op::CreateCompany, "Acme", Fault::ServerError);
        w.fake.inject(Op::CreateUser, "svc@acme.example", Fault::ServerError);
    }
    let report = w.apply(&plan, 8).await;

    assert!(report.is_success(), "{report:?}");
    assert!(report.done.iter().all(|d| !d.adopted), "{report:?}");
    assert_eq!((w.fake.calls(Op::CreateCompany), w.fake.calls(Op::CreateUser)), (3, 3));
    // Read back after each failed create, and once after the one that succeeded (twins).
    assert_eq!((w.fake.calls(Op::FindCompanies), w.fake.calls(Op::FindUser)), (3, 2), "read back each time");
    assert_eq!((w.fake.companies().len(), w.fake.users().len()), (1, 1), "made once");
}

#[tokio::test]
async fn a_create_that_keeps_answering_500_fails_after_six_sends() {
    let w = World::new();
    let plan = plan(stack(&[("Acme", "svc@acme.example")]));
    for _ in 0..10 {
        w.fake.inject(Op::CreateCompany, "Acme", Fault::ServerError);
    }
    let report = w.apply(&plan, 8).await;

    assert_eq!(addresses(&report.failed, |f| &f.address), ["company/Acme"]);
    assert!(report.failed[0].error.message.contains("answered 500"), "{}", report.failed[0].error);
    assert_eq!(w.fake.calls(Op::CreateCompany), 6);
    assert!(w.fake.companies().is_empty());
}

#[tokio::test]
async fn a_token_issue_whose_outcome_is_unknown_is_sent_again_and_the_last_token_stored() {
    let w = World::new();
    let plan = plan(stack(&[("Acme", "svc@acme.example")]));
    w.fake.inject(Op::IssueToken, "svc@acme.example", Fault::OutcomeUnknownAfterCommit);
    w.fake.inject(Op::IssueToken, "svc@acme.example", Fault::ServerError);
    let report = w.apply(&plan, 8).await;

    assert!(report.is_success(), "{report:?}");
    assert_eq!(w.fake.calls(Op::IssueToken), 3);
    let stored = w.store.get("svc@acme.example").unwrap();
    let issued = w.fake.tokens();
    assert_eq!(issued.len(), 2, "the first issue committed, its answer was lost");
    assert_eq!(stored.token_id, issued[1].token_id);
}

#[tokio::test]
async fn a_duplicate_create_adopts_the_existing_object_and_converges_its_fields() {
    let w = World::new();
    // Someone made the company first, with other metadata.
    w.fake.add_company("Acme", json!({"tier": "bronze"}));
    let plan = plan(stack(&[("Acme", "svc@acme.example")]));
    w.fake.inject(Op::CreateUser, "svc@acme.example", Fault::Duplicate);
    let report = w.apply(&plan, 8).await;

    assert!(report.is_success(), "{report:?}");
    assert!(report.done.iter().take(2).all(|d| d.adopted), "{report:?}");
    assert_eq!(w.fake.companies().len(), 1);
    assert_eq!(
        w.fake.companies()[0].technical_meta_data,
        json!({"tier": "gold"}),
        "the managed field converged"
    );
    assert_eq!(w.fake.calls(Op::CreateUser), 1);
}

#[tokio::test]
async fn an_existing_user_of_another_company_is_a_conflict_not_an_adoption() {
    let w = World::new();
    let other = w.fake.add_company("Other", json!({}));
    w.fake.add_user(service_user("u-9", "svc@acme.example", &other));
    let plan = plan(stack(&[("Acme", "svc@acme.example")]));
    let report = w.apply(&plan, 8).await;
    assert_eq!(addresses(&report.failed, |f| &f.address), ["service_user/svc@acme.example"]);
    assert!(report.failed[0].error.message.contains("another company"), "{}", report.failed[0].error);
    assert_eq!(addresses(&report.skipped, |s| &s.address), ["token/svc@acme.example"]);
    assert_eq!(w.fake.user("svc@acme.example").unwrap().company_id.as_deref(), Some(other.as_str()));
}

/// A live service user `Svc <email>` with every permission on.
fn service_user(id: &str, email: &str, company_id: &str) -> ObservedUser {
    ObservedUser { first_name: "Svc".into(), last_name: email.into(), ..live_user(id, email, company_id) }
}

// --- Updates and tokens of existing users ---------------------------------------------------

#[tokio::test]
async fn updates_send_only_the_planned_fields_to_the_live_ids() {
    let w = World::new();
    let acme = w.fake.add_company("Acme", json!({"tier": "bronze"}));
    w.fake.add_user(service_user("u-1", "svc@acme.example", &acme));

    let mut cu = update_company("Acme", json!({"tier": "bronze"}), json!({"tier": "gold"}));
    cu.live_id = Some(acme.clone());
    let managed = UserFields {
        first_name: None,
        last_name: None,
        middle_name: Some(String::new()),
        permissions: Some(Permissions { quality: Some(true), ..Permissions::default() }),
        ..user_fields("svc@acme.example", "Acme")
    };
    let wanted = UserFields {
        middle_name: Some("Q".into()),
        active: false,
        permissions: Some(Permissions { quality: Some(false), ..Permissions::default() }),
        ..managed.clone()
    };
    let update = Update { before: managed, after: wanted };
    let mut uu = change(user("svc@acme.example"), vec![company("Acme")], Payload::UpdateUser(update));
    uu.live_id = Some("u-1".into());
    // A token whose user is live and unchanged: the id comes from the plan.
    let t = token_issue("svc@acme.example", Some("u-1"));
    let report = w.apply(&plan(vec![cu, uu, t]), 8).await;

    assert!(report.is_success(), "{report:?}");
    assert_eq!(w.fake.companies()[0].technical_meta_data, json!({"tier": "gold"}));
    let u = w.fake.user("svc@acme.example").unwrap();
    assert_eq!(
        (u.active, u.permissions.quality, u.middle_name.as_str(), u.first_name.as_str()),
        (false, false, "Q", "Svc")
    );
    assert!(u.permissions.documents, "an unplanned field is left alone");
    assert_eq!(w.store.get("svc@acme.example").unwrap().user_id, "u-1");
    assert_eq!(w.fake.calls(Op::FindUser), 0);
}

#[tokio::test]
async fn a_user_of_an_unchanged_company_finds_it_by_name_and_a_token_without_id_finds_its_user() {
    let w = World::new();
    let acme = w.fake.add_company("Acme", json!({}));
    w.fake.add_user(service_user("u-7", "old@acme.example", &acme));
    // The company and the token's user are live and unchanged, so not in the plan; the
    // planner still names them in `depends_on`, as here.
    let cu = create_user("new@acme.example", "Acme");
    let cu2 = create_user("new2@acme.example", "Acme");
    // A token whose user's id the plan does not name (an edited plan): found by email.
    let mut t = token_issue("old@acme.example", None);
    t.depends_on = vec![user("old@acme.example")];
    // One step at a time, so the second user finds the company in the run's cache.
    let report = w.apply(&plan(vec![cu, cu2, t]), 1).await;

    assert!(report.is_success(), "{report:?}");
    assert_eq!(w.fake.user("new@acme.example").unwrap().company_id.as_deref(), Some(acme.as_str()));
    assert_eq!(w.fake.user("new2@acme.example").unwrap().company_id.as_deref(), Some(acme.as_str()));
    assert_eq!(w.fake.calls(Op::FindCompanies), 1, "looked up once per run");
    assert_eq!(w.store.get("old@acme.example").unwrap().user_id, "u-7");
}

#[tokio::test]
async fn users_of_a_live_company_whose_id_is_in_the_plan_make_no_lookup_at_all() {
    let w = World::new();
    let acme = w.fake.add_company("Acme", json!({}));
    // What the planner writes when the company is live: its id in `after.company_id`.
    let with_id = |email: &str| {
        let mut c = create_user(email, "Acme");
        if let Payload::CreateUser(create) = &mut c.payload {
            create.company_id = Some(acme.clone());
        }
        c
    };
    let report = w.apply(&plan(vec![with_id("a@acme.example"), with_id("b@acme.example")]), 8).await;

    assert!(report.is_success(), "{report:?}");
    assert_eq!(w.fake.user("a@acme.example").unwrap().company_id.as_deref(), Some(acme.as_str()));
    assert_eq!(w.fake.user("b@acme.example").unwrap().company_id.as_deref(), Some(acme.as_str()));
    assert_eq!(w.fake.calls(Op::FindCompanies), 0, "the plan already names the company id");
}

#[tokio::test]
async fn a_token_is_stored_only_after_it_was_issued_and_a_sink_failure_fails_that_step() {
    let w = World::new();
    let plan = plan(stack(&[("A", "a@a.example"), ("B", "b@b.example"), ("C", "c@c.example")]));
    w.store.fail_next_store("a@a.example");
    w.fake.inject(Op::IssueToken, "c@c.example", Fault::Fail);
    let report = w.apply(&plan, 8).await;

    assert_eq!(addresses(&report.failed, |f| &f.address), ["token/a@a.example", "token/c@c.example"]);
    let sink_error = &report.failed[0].error;
    assert!(
        sink_error.message.contains("memory:a@a.example") && sink_error.message.contains("not stored"),
        "{sink_error}"
    );
    assert_eq!(sink_error.kind, StepErrorKind::StoreFailed, "the token was issued, the store failed");
    assert!(w.store.get("c@c.example").is_none(), "nothing stored when the issue failed");
    assert_eq!(w.store.records().keys().collect::<Vec<_>>(), ["b@b.example"]);
    assert_eq!(w.fake.calls(Op::IssueToken), 3);
}

/// A token store whose stores block (on the blocking pool, as a directory store's fsync does)
/// until the test opens it, counting how many are inside `store` at once.
#[derive(Default)]
struct GatedStore {
    inner: MemoryStore,
    open: Mutex<bool>,
    opened: std::sync::Condvar,
    inside: std::sync::atomic::AtomicUsize,
    max_inside: std::sync::atomic::AtomicUsize,
    /// Open by itself once this many stores are inside at once (0: only `open`).
    open_at: usize,
}

impl GatedStore {
    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

impl TokenStore for GatedStore {
    fn list(&self) -> Result<StoredTokens, TokenStoreError> {
        self.inner.list()
    }
    fn check(&self) -> Result<(), TokenStoreError> {
        self.inner.check()
    }
    fn delete(&self, email: &str) -> Result<(), TokenStoreError> {
        self.inner.delete(email)
    }
    fn store(&self, record: &TokenRecord) -> Result<(), TokenStoreError> {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.inside.fetch_add(1, SeqCst) + 1;
        self.max_inside.fetch_max(now, SeqCst);
        if self.open_at > 0 && now >= self.open_at {
            self.open();
        }
        // A hang guard like `within`: a gate never opened fails the store instead of blocking
        // the runtime's shutdown (it waits for blocking tasks) and with it the test.
        let (open, timeout) = self
            .opened
            .wait_timeout_while(self.open.lock().unwrap(), Duration::from_secs(60), |o| !*o)
            .unwrap();
        drop(open);
        self.inside.fetch_sub(1, SeqCst);
        if timeout.timed_out() {
            return Err(TokenStoreError::Io {
                action: "store",
                path: record.email.clone(),
                reason: "the test never opened the gate".into(),
            });
        }
        self.inner.store(record)
    }
}

/// Token steps for `n` live service users `t0@acme.example`…, ids `u-0`….
fn live_tokens(w: &World, n: usize) -> Plan {
    let acme = w.fake.add_company("Acme", json!({}));
    let changes = (0..n)
        .map(|i| {
            let email = format!("t{i}@acme.example");
            w.fake.add_user(service_user(&format!("u-{i}"), &email, &acme));
            token_issue(&email, Some(&format!("u-{i}")))
        })
        .collect();
    plan(changes)
}

#[tokio::test]
async fn a_token_being_stored_holds_its_token_slot_but_not_its_api_slot() {
    let w = World::new();
    let mut plan = live_tokens(&w, 2);
    // A step that is not a token, last in plan order: it may only start once the first token's
    // store (blocked here) gave the one API slot back.
    plan.changes.push(create_company("Other", json!({})));
    let sink = Arc::new(GatedStore::default());
    let options = World::options(&plan, 1);
    let run = execute(&plan, Arc::clone(&w.fake), sink.clone(), w.progress(), &options);
    let while_the_first_store_waits = async {
        w.fake.wait_for_call(Op::IssueToken, "t0@acme.example").await;
        w.fake.wait_for_call(Op::CreateCompany, "Other").await;
        w.fake.wait_for_call(Op::FindCompanies, "Other").await;
        // The second token needs the one token slot, which the first holds until it is stored.
        let issued = w.fake.calls(Op::IssueToken);
        let tokens_finished = w
            .recorder
            .events()
            .iter()
            .filter(|e| matches!(e, Event::Finished { address: Address::Token(_), .. }))
            .count();
        sink.open();
        (issued, tokens_finished)
    };
    let (report, (issued, tokens_finished)) =
        within(async { tokio::join!(run, while_the_first_store_waits) }).await;
    let report = report.unwrap();

    assert!(report.is_success(), "{report:?}");
    assert_eq!(issued, 1, "no second token while the first is issued but not stored");
    assert_eq!(tokens_finished, 0, "a token step is not done before its token is stored");
    assert_eq!(sink.max_inside.load(std::sync::atomic::Ordering::SeqCst), 1, "stores at once <= parallelism");
    assert_eq!(sink.inner.records().len(), 2);
    assert_eq!(w.fake.max_in_flight(), 1);
}

#[tokio::test]
async fn a_ready_token_step_starts_before_other_steps_while_a_token_slot_is_free() {
    let w = World::new();
    let mut plan = live_tokens(&w, 2);
    // Both companies sort before the tokens in plan order.
    plan.changes.insert(0, create_company("Other", json!({})));
    plan.changes.insert(0, create_company("Another", json!({})));
    let report = w.apply(&plan, 1).await;
    assert!(report.is_success(), "{report:?}");
    let order: Vec<(Op, String)> =
        w.fake.call_log().into_iter().filter(|(op, _)| *op != Op::FindCompanies).collect();
    let issue = |email: &str| (Op::IssueToken, email.to_string());
    let create = |name: &str| (Op::CreateCompany, name.to_string());
    // One slot of each: the first token, then (its slot taken until stored) the lowest other
    // step, the second token once the first is stored, and the last company.
    assert_eq!(order[0], issue("t0@acme.example"), "{order:?}");
    assert_eq!(order.len(), 4, "{order:?}");
    assert!(order.contains(&issue("t1@acme.example")) && order.contains(&create("Another")), "{order:?}");
}

/// A gated store that measures, at each store, how many tokens were issued but not yet stored.
struct BacklogStore {
    fake: Arc<FakeEffects>,
    gated: GatedStore,
    stored: std::sync::atomic::AtomicUsize,
    max_backlog: std::sync::atomic::AtomicUsize,
}

impl TokenStore for BacklogStore {
    fn list(&self) -> Result<StoredTokens, TokenStoreError> {
        self.gated.list()
    }
    fn check(&self) -> Result<(), TokenStoreError> {
        self.gated.check()
    }
    fn delete(&self, email: &str) -> Result<(), TokenStoreError> {
        self.gated.delete(email)
    }
    fn store(&self, record: &TokenRecord) -> Result<(), TokenStoreError> {
        use std::sync::atomic::Ordering::SeqCst;
        let result = self.gated.store(record);
        let backlog = self.fake.calls(Op::IssueToken) - self.stored.load(SeqCst);
        self.max_backlog.fetch_max(backlog, SeqCst);
        self.stored.fetch_add(1, SeqCst);
        result
    }
}

#[tokio::test]
async fn tokens_issued_but_not_stored_never_exceed_the_parallelism_with_a_slow_store() {
    let w = World::new();
    let plan = live_tokens(&w, 20);
    // The API answers at once; stores wait until three are inside: a backlog would grow here.
    let sink = Arc::new(BacklogStore {
        fake: Arc::clone(&w.fake),
        gated: GatedStore { open_at: 3, ..GatedStore::default() },
        stored: 0.into(),
        max_backlog: 0.into(),
    });
    let report =
        within(execute(&plan, Arc::clone(&w.fake), sink.clone(), w.progress(), &World::options(&plan, 3)))
            .await
            .unwrap();

    assert!(report.is_success(), "{report:?}");
    assert_eq!(sink.max_backlog.load(std::sync::atomic::Ordering::SeqCst), 3, "reached, never exceeded");
    assert_eq!(sink.gated.inner.records().len(), 20);
}

/// A store that cannot keep anything (a read-only disk, a missing permission).
struct Unusable(MemoryStore);

impl TokenStore for Unusable {
    fn list(&self) -> Result<StoredTokens, TokenStoreError> {
        self.0.list()
    }
    fn check(&self) -> Result<(), TokenStoreError> {
        Err(TokenStoreError::Io {
            action: "create",
            path: "/tokens/.probe".into(),
            reason: "read-only".into(),
        })
    }
    fn delete(&self, email: &str) -> Result<(), TokenStoreError> {
        self.0.delete(email)
    }
    fn store(&self, record: &TokenRecord) -> Result<(), TokenStoreError> {
        self.0.store(record)
    }
}

#[tokio::test]
async fn a_store_that_fails_its_check_stops_the_apply_before_any_request() {
    let w = World::new();
    let plan = plan(stack(&[("Acme", "svc@acme.example")]));
    let store = Arc::new(Unusable(MemoryStore::new()));
    let err = execute(&plan, Arc::clone(&w.fake), store, w.progress(), &World::options(&plan, 4))
        .await
        .unwrap_err();
    assert!(matches!(err, ApplyError::TokenStoreUnusable { .. }), "{err:?}");
    let text = format!("{err}");
    assert!(text.contains("/tokens/.probe") && text.contains("no token was issued"), "{text}");
    assert_eq!((w.fake.calls(Op::IssueToken), w.fake.mutating_calls()), (0, 0));

    // A plan without tokens does not need the store.
    let plan = plan_without_tokens();
    let report = w.apply(&plan, 4).await;
    assert!(report.is_success(), "{report:?}");
}

fn plan_without_tokens() -> Plan {
    plan(vec![create_company("Acme", json!({})), create_user("svc@acme.example", "Acme")])
}

#[tokio::test]
async fn a_cancelled_apply_starts_no_new_step_finishes_those_in_flight_and_stores_their_tokens() {
    let w = World::new();
    let plan = live_tokens(&w, 10);
    let holds =
        [w.fake.hold(Op::IssueToken, "t0@acme.example"), w.fake.hold(Op::IssueToken, "t1@acme.example")];
    let (cancel, cancelled) = tokio::sync::watch::channel(false);
    let mut options = World::options(&plan, 2);
    options.cancel = Some(cancelled);
    let run = execute(&plan, Arc::clone(&w.fake), w.store(), w.progress(), &options);
    let cancel_while_two_are_in_flight = async {
        w.fake.wait_for_call(Op::IssueToken, "t0@acme.example").await;
        w.fake.wait_for_call(Op::IssueToken, "t1@acme.example").await;
        cancel.send(true).unwrap();
        for hold in holds {
            hold.release();
        }
    };
    let (report, ()) = within(async { tokio::join!(run, cancel_while_two_are_in_flight) }).await;
    let report = report.unwrap();

    assert!(report.interrupted && !report.is_success(), "{report:?}");
    assert_eq!(addresses(&report.done, |d| &d.address), ["token/t0@acme.example", "token/t1@acme.example"]);
    assert_eq!(report.not_started.len(), 8);
    assert_eq!(w.fake.calls(Op::IssueToken), 2);
    assert_eq!(w.store.records().len(), 2, "every token issued was stored");
    assert_eq!(report.summary_line(), "Apply interrupted: 2 done, 8 not started.");
}

#[tokio::test]
async fn a_twin_found_after_a_create_fails_that_step_and_creates_no_user_into_either() {
    let w = World::new();
    let plan = plan(stack(&[("Acme", "svc@acme.example")]));
    // Another apply creates `Acme` too, between this create and its read-back.
    let hold = w.fake.hold(Op::FindCompanies, "Acme");
    let (fake, store, progress) = (Arc::clone(&w.fake), w.store(), w.progress());
    let options = World::options(&plan, 4);
    let run = tokio::spawn(async move { execute(&plan, fake, store, progress, &options).await });
    w.fake.wait_for_call(Op::FindCompanies, "Acme").await;
    let twin = w.fake.add_company("Acme", json!({}));
    hold.release();
    let report = within(run).await.unwrap().unwrap();

    assert_eq!(addresses(&report.failed, |f| &f.address), ["company/Acme"]);
    let error = &report.failed[0].error;
    let ours = w.fake.companies().into_iter().find(|c| c.id != twin).unwrap().id;
    assert!(error.message.contains(&ours) && error.message.contains(&twin), "{error}");
    assert!(error.message.contains("another apply"), "{error}");
    assert_eq!(error.kind, StepErrorKind::Conflict, "a twin is for a person to settle");
    assert_eq!(report.skipped.len(), 2);
    assert_eq!(w.fake.calls(Op::CreateUser), 0);
}

#[tokio::test]
async fn token_stores_reach_but_never_exceed_the_parallelism_bound() {
    let w = World::new();
    let plan = live_tokens(&w, 12);
    // Stores wait until four are inside at once: the run completes only if the bound is reached.
    let sink = Arc::new(GatedStore { open_at: 4, ..GatedStore::default() });
    let report =
        within(execute(&plan, Arc::clone(&w.fake), sink.clone(), w.progress(), &World::options(&plan, 4)))
            .await
            .unwrap();

    assert!(report.is_success(), "{report:?}");
    assert_eq!(sink.max_inside.load(std::sync::atomic::Ordering::SeqCst), 4);
    assert_eq!(sink.inner.records().len(), 12);
}

// --- Before the first request ---------------------------------------------------------------

#[tokio::test]
async fn missing_passwords_are_reported_together_and_nothing_is_executed() {
    let w = World::new();
    let mut changes = stack(&[("A", "a@a.example"), ("B", "b@b.example")]);
    for (i, unset) in [(4, "UNSET_B"), (1, "UNSET_A")] {
        if let Payload::CreateUser(create) = &mut changes[i].payload {
            create.password = SecretRef::Env(unset.into()).into();
        }
    }
    let plan = plan(changes);

    let err = resolve_passwords(&plan, &env).unwrap_err();
    let ApplyError::MissingPasswords { missing } = &err else { panic!("{err:?}") };
    assert_eq!(err.to_string(), "cannot resolve 2 passwords");
    let items: Vec<String> = missing.iter().map(ToString::to_string).collect();
    assert_eq!(items.len(), 2);
    assert!(items[0].starts_with("`a@a.example`: ") && items[0].contains("`UNSET_A`"), "{items:?}");
    assert!(items[1].starts_with("`b@b.example`: ") && items[1].contains("`UNSET_B`"), "{items:?}");

    // `execute` checks too, before its first request.
    let err = execute(&plan, Arc::clone(&w.fake), w.store(), w.progress(), &ExecuteOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ApplyError::MissingPasswords { .. }), "{err:?}");
    assert!(w.fake.call_log().is_empty());
    assert!(w.recorder.events().is_empty());
}

#[tokio::test]
async fn an_invalid_plan_is_refused_before_the_first_request() {
    let w = World::new();
    // A token can only depend on its own user: another user outside the plan is corruption.
    let mut dangling = issue_token("a@a.example");
    dangling.depends_on = vec![user("b@b.example")];
    let mut cycle_a = update_company("A", json!({}), json!({"a": 1}));
    cycle_a.depends_on = vec![company("B")];
    let mut cycle_b = update_company("B", json!({}), json!({"b": 1}));
    cycle_b.depends_on = vec![company("A")];
    let twice = vec![create_company("A", json!({})), update_company("A", json!({}), json!({"a": 1}))];

    for (p, code) in [
        (plan(vec![create_company("X", json!({})), cycle_a, cycle_b]), "cycle"),
        (plan(vec![dangling]), "unknown_dependency"),
        (plan(twice), "duplicate_change"),
    ] {
        let err = execute(&p, Arc::clone(&w.fake), w.store(), w.progress(), &ExecuteOptions::default())
            .await
            .unwrap_err();
        let shown = format!("{:?}", miette::Report::new(err));
        assert!(shown.contains(&format!("ozform::apply::{code}")), "{shown}");
    }
    assert!(w.fake.call_log().is_empty());
}

#[tokio::test]
async fn a_stale_plan_is_refused_whole_with_every_moved_address_and_no_mutating_call() {
    let w = World::new();
    let acme = w.fake.add_company("Acme", json!({"tier": "gold"}));
    w.fake.add_user(service_user("u-1", "kept@acme.example", &acme));
    w.fake.add_user(service_user("u-2", "late@acme.example", &acme));
    let kept = fingerprint::user(&w.fake.user("kept@acme.example").unwrap());

    // Planned against an Acme with other metadata, and before `late@` existed.
    let mut was = w.fake.companies()[0].clone();
    was.technical_meta_data = json!({"tier": "silver"});
    let mut cu = update_company("Acme", json!({"tier": "silver"}), json!({"tier": "platinum"}));
    cu.live_id = Some(acme.clone());
    cu.fingerprint = Some(fingerprint::company(&was));
    let mut late = create_user("late@acme.example", "Acme");
    late.depends_on.clear();
    let mut t = token_issue("kept@acme.example", Some("u-1"));
    t.fingerprint = Some(kept);
    let stale = plan(vec![cu.clone(), late, t.clone()]);

    let err = check_fresh(&stale, w.fake.as_ref(), 4).await.unwrap_err();
    let ApplyError::Stale { moved, wrong } = &err else { panic!("{err:?}") };
    assert_eq!(moved, &["company/Acme".to_string(), "service_user/late@acme.example".to_string()]);
    assert!(wrong.is_empty(), "every id is the live object's: {wrong:?}");
    assert!(
        err.to_string().starts_with(
            "the plan is stale: `company/Acme`, `service_user/late@acme.example` changed since it was made — run `ozform plan` again"
        ),
        "{err}"
    );
    assert_eq!(w.fake.mutating_calls(), 0);

    // The same plan made against what is live now is fresh.
    cu.fingerprint = Some(fingerprint::company(&w.fake.companies()[0]));
    check_fresh(&plan(vec![cu, t]), w.fake.as_ref(), 4).await.unwrap();
    assert_eq!(w.fake.mutating_calls(), 0);
}

/// A user update of `email` in `company` (its first name changed) acting on `live`.
fn update_user_of(email: &str, company: &str, live: &ObservedUser) -> Change {
    let before = user_fields(email, company);
    let after = UserFields { first_name: Some("Renamed".into()), ..before.clone() };
    let mut c =
        change(user(email), vec![self::company(company)], Payload::UpdateUser(Update { before, after }));
    c.live_id = Some(live.id.clone());
    c.fingerprint = Some(fingerprint::user(live));
    c
}

/// The sentences of a plan refused for its ids (and for nothing that moved).
fn wrong_of(err: &ApplyError) -> Vec<String> {
    let ApplyError::Stale { moved, wrong } = err else { panic!("{err:?}") };
    assert!(moved.is_empty(), "{moved:?}");
    wrong.clone()
}

#[tokio::test]
async fn a_saved_plan_whose_ids_are_not_the_live_objects_at_their_addresses_is_refused_naming_both() {
    let w = World::new();
    let acme = w.fake.add_company("Acme", json!({"tier": "gold"}));
    let globex = w.fake.add_company("Globex", json!({}));
    w.fake.add_user(service_user("u-1", "a@acme.example", &acme));
    w.fake.add_user(service_user("u-2", "b@globex.example", &globex));
    let a = w.fake.user("a@acme.example").unwrap();
    let b = w.fake.user("b@globex.example").unwrap();

    // Every id the planner writes, each edited to another live object's; the fingerprints are
    // left as planned, so only the ids give the edit away.
    let mut cu = update_company("Acme", json!({"tier": "gold"}), json!({"tier": "platinum"}));
    cu.live_id = Some(globex.clone());
    cu.fingerprint = Some(fingerprint::company(&w.fake.companies()[0]));
    let mut uu = update_user_of("a@acme.example", "Acme", &a);
    uu.live_id = Some(b.id.clone());
    let mut create = create_user("new@acme.example", "Acme");
    if let Payload::CreateUser(c) = &mut create.payload {
        c.company_id = Some(globex.clone());
    }
    let mut t = token_issue("b@globex.example", Some("u-1"));
    t.fingerprint = Some(fingerprint::user(&b));
    let wrong = wrong_of(&check_fresh(&plan(vec![cu, uu, create, t]), w.fake.as_ref(), 4).await.unwrap_err());
    assert_eq!(
        wrong,
        [
            format!("`company/Acme` acts on company id `{globex}`, but the live company `Acme` has id `{acme}`"),
            "`service_user/a@acme.example` acts on user id `u-2`, but the live user `a@acme.example` has id `u-1`"
                .to_string(),
            format!(
                "`service_user/new@acme.example` creates its user in company id `{globex}`, but the live company \
                 `Acme` has id `{acme}`"
            ),
            "`token/b@globex.example` acts on user id `u-1`, but the live user `b@globex.example` has id `u-2`"
                .to_string(),
        ]
    );
    assert_eq!(w.fake.mutating_calls(), 0);

    // A token's `user_id` alone (a plan without `live_id`), and an id of an object that is gone.
    let mut t = token_issue("b@globex.example", None);
    if let Payload::IssueToken(issue) = &mut t.payload {
        issue.user_id = Some("u-1".into());
    }
    t.fingerprint = Some(fingerprint::user(&b));
    let mut gone = update_user_of("gone@acme.example", "Acme", &a);
    gone.fingerprint = None;
    let wrong = wrong_of(&check_fresh(&plan(vec![t, gone]), w.fake.as_ref(), 4).await.unwrap_err());
    assert_eq!(
        wrong,
        [
            "`service_user/gone@acme.example` acts on user id `u-1`, but no live user has the email \
             `gone@acme.example`",
            "`token/b@globex.example` issues a token for user id `u-1`, but the live user `b@globex.example` has \
             id `u-2`",
        ]
    );
    let err = check_fresh(&plan(vec![update_user_of("gone@acme.example", "Acme", &a)]), w.fake.as_ref(), 4)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the plan is stale: `service_user/gone@acme.example` acts on user id `u-1`, but no live user has the \
         email `gone@acme.example` — run `ozform plan` again"
    );
}

#[tokio::test]
async fn a_saved_plan_cannot_aim_at_an_admin_even_by_its_address_and_fingerprint() {
    let w = World::new();
    let acme = w.fake.add_company("Acme", json!({}));
    let admin =
        ObservedUser { kind: UserKind::Admin, ..service_user("u-admin", "admin@acme.example", &acme) };
    w.fake.add_user(admin.clone());
    // As if the attacker read the admin from the API: its id and fingerprint are right.
    let update = update_user_of("admin@acme.example", "Acme", &admin);
    let mut removal = removal("admin@acme.example", true);
    removal.live_id = Some(admin.id.clone());
    removal.fingerprint = Some(fingerprint::user(&admin));
    let mut t = token_issue("admin@acme.example", Some("u-admin"));
    t.fingerprint = Some(fingerprint::user(&admin));
    let is_admin =
        "acts on a service user, but the live user `admin@acme.example` (id `u-admin`) is an ADMIN";
    for change in [update, removal, t] {
        let address = change.address.to_string();
        let wrong = wrong_of(&check_fresh(&plan(vec![change]), w.fake.as_ref(), 4).await.unwrap_err());
        assert_eq!(wrong, [format!("`{address}` {is_admin}")]);
    }
    assert_eq!(w.fake.mutating_calls(), 0);
}

#[tokio::test]
async fn a_saved_removal_or_update_of_a_user_of_another_company_than_it_names_is_refused() {
    let w = World::new();
    let acme = w.fake.add_company("Acme", json!({}));
    let globex = w.fake.add_company("Globex", json!({}));
    w.fake.add_user(service_user("u-g", "g@globex.example", &globex));
    let g = w.fake.user("g@globex.example").unwrap();
    // Its id and fingerprint right, its company the one that prunes: Acme.
    let mut removal = removal("g@globex.example", true);
    removal.live_id = Some(g.id.clone());
    removal.fingerprint = Some(fingerprint::user(&g));
    let update = update_user_of("g@globex.example", "Acme", &g);
    for change in [removal, update] {
        let address = change.address.to_string();
        let wrong = wrong_of(&check_fresh(&plan(vec![change]), w.fake.as_ref(), 4).await.unwrap_err());
        assert_eq!(
            wrong,
            [format!(
                "`{address}` acts on a user of company `Acme` (id `{acme}`), but the live user `g@globex.example` \
                 (id `u-g`) is in company id `{globex}`"
            )]
        );
    }
    // A company that is not (one) live company.
    let update = update_user_of("g@globex.example", "Nowhere", &g);
    let wrong = wrong_of(&check_fresh(&plan(vec![update]), w.fake.as_ref(), 4).await.unwrap_err());
    assert_eq!(
        wrong,
        [format!(
            "`service_user/g@globex.example` acts on a user of company `Nowhere`, but no live company has that \
             name (the live user `g@globex.example` (id `u-g`) is in company id `{globex}`)"
        )]
    );
    // The same change in its own company is fresh.
    check_fresh(&plan(vec![update_user_of("g@globex.example", "Globex", &g)]), w.fake.as_ref(), 4)
        .await
        .unwrap();
    assert_eq!(w.fake.mutating_calls(), 0);
}

#[tokio::test]
async fn a_token_whose_user_is_found_by_email_at_apply_time_is_issued_only_for_a_service_user() {
    // A token planned while its user was being created, whose email is an admin's by the time
    // the executor looks it up (made by someone else since the plan was checked).
    let w = World::new();
    let acme = w.fake.add_company("Acme", json!({}));
    let admin =
        ObservedUser { kind: UserKind::Admin, ..service_user("u-admin", "admin@acme.example", &acme) };
    w.fake.add_user(admin);
    let mut t = issue_token("admin@acme.example");
    t.depends_on.clear();
    let report = w.apply(&plan(vec![t]), 1).await;
    assert_eq!(addresses(&report.failed, |f| &f.address), ["token/admin@acme.example"]);
    assert!(report.failed[0].error.message.contains("is not a service user (an ADMIN)"), "{report:?}");
    assert_eq!(w.fake.calls(Op::IssueToken), 0);
    assert!(w.store.records().is_empty());
}

// --- Convergence and secrets ----------------------------------------------------------------

#[tokio::test]
async fn running_the_same_plan_again_after_a_partial_failure_converges() {
    let w = World::new();
    let plan = plan(stack(&[("A", "a@a.example"), ("B", "b@b.example")]));
    w.fake.inject(Op::CreateCompany, "A", Fault::Fail);
    w.fake.inject(Op::CreateUser, "b@b.example", Fault::OutcomeUnknownBeforeCommit);
    let first = w.apply(&plan, 8).await;
    assert_eq!(addresses(&first.failed, |f| &f.address), ["company/A", "service_user/b@b.example"]);

    // The faults were one-off. What the first run made is adopted, the rest is made.
    let second = w.apply(&plan, 8).await;
    assert!(second.is_success(), "{second:?}");
    let adopted: Vec<String> =
        second.done.iter().filter(|d| d.adopted).map(|d| d.address.to_string()).collect();
    assert_eq!(adopted, ["company/B"]);
    let mut names: Vec<String> = w.fake.companies().into_iter().map(|c| c.name).collect();
    names.sort();
    assert_eq!(names, ["A", "B"]);
    assert_eq!(w.fake.users().len(), 2);
    assert_eq!(w.store.records().keys().collect::<Vec<_>>(), ["a@a.example", "b@b.example"]);
    for email in ["a@a.example", "b@b.example"] {
        assert_eq!(w.store.get(email).unwrap().user_id, w.fake.user(email).unwrap().id);
    }
}

/// Several progress renderings at once.
struct Both(Vec<Arc<dyn Progress>>, Arc<Recording>);
impl Progress for Both {
    fn started(&self, a: &Address, action: Action) {
        self.0.iter().for_each(|o| o.started(a, action));
        self.1.started(a, action);
    }
    fn finished(&self, a: &Address, action: Action, outcome: &Outcome) {
        self.0.iter().for_each(|o| o.finished(a, action, outcome));
        self.1.finished(a, action, outcome);
    }
}

#[tokio::test]
async fn no_password_or_token_appears_in_reports_progress_lines_or_errors() {
    let w = World::new();
    let plan = plan(stack(&[
        ("A", "a@a.example"),
        ("B", "b@b.example"),
        ("C", "c@c.example"),
        ("D", "d@d.example"),
    ]));
    w.fake.inject(Op::CreateUser, "a@a.example", Fault::OutcomeUnknownAfterCommit);
    w.fake.inject(Op::CreateUser, "b@b.example", Fault::Fail);
    w.store.fail_next_store("c@c.example");

    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let (text_lines, json_lines) = (Arc::clone(&lines), Arc::clone(&lines));
    let renderings: Vec<Arc<dyn Progress>> = vec![
        Arc::new(PlainLines::new(move |l| text_lines.lock().unwrap().push(l.to_string()))),
        Arc::new(JsonLines::new(move |l| json_lines.lock().unwrap().push(l.to_string()))),
    ];
    let progress: Arc<dyn Progress> = Arc::new(Both(renderings, Arc::clone(&w.recorder)));
    let options = World::options(&plan, 8);
    let report = execute(&plan, Arc::clone(&w.fake), w.store(), progress, &options).await.unwrap();

    // The canaries did flow: into the API and into the token store.
    assert_eq!(w.fake.password_of("d@d.example").unwrap().expose(), CANARY_PASSWORD);
    assert!(w.store.get("d@d.example").unwrap().access_token.expose().starts_with(CANARY_TOKEN));
    assert_eq!((report.failed.len(), report.done.len()), (2, 9), "{report:?}");

    let mut seen = vec![
        format!("{report:?}"),
        serde_json::to_string(&report).unwrap(),
        format!("{options:?}"),
        format!("{:?}", w.recorder.events()),
        w.recorder.lines().join("\n"),
        lines.lock().unwrap().join("\n"),
        format!("{:?}", w.fake.tokens()),
        format!("{:?}", w.store.records()),
    ];
    let err = report.into_result().unwrap_err();
    seen.push(format!("{err} {err:?}"));
    seen.push(format!("{:?}", miette::Report::new(err)));
    let err = resolve_passwords(&plan, &|_| None).unwrap_err();
    seen.push(format!("{err} {err:?}"));
    for text in &seen {
        assert!(
            !text.contains(CANARY_PASSWORD) && !text.contains(CANARY_TOKEN),
            "a secret leaked into: {text}"
        );
    }
    assert!(lines.lock().unwrap().len() >= 24, "plain and JSON lines were written");
}

#[tokio::test]
async fn the_stale_check_reads_each_key_once_concurrently_within_the_bound() {
    let w = World::new();
    let mut changes = Vec::new();
    for i in 0..6 {
        let email = format!("u{i}@x.example");
        changes.push(create_user(&email, "X"));
        // The token shares its user's read.
        changes.push(issue_token(&email));
    }
    changes.push(create_company("X", json!({})));
    let plan = plan(changes);
    w.fake.gate_until_in_flight(3);
    within(check_fresh(&plan, w.fake.as_ref(), 3)).await.unwrap();
    assert_eq!(w.fake.max_in_flight(), 3);
    assert_eq!((w.fake.calls(Op::FindUser), w.fake.calls(Op::FindCompanies)), (6, 1));
    assert_eq!(w.fake.mutating_calls(), 0);
}

#[tokio::test]
async fn an_existing_account_of_another_kind_is_not_adopted_as_a_service_user() {
    let w = World::new();
    let acme = w.fake.add_company("Acme", json!({}));
    let mut admin = service_user("u-3", "svc@acme.example", &acme);
    admin.kind = UserKind::CompanyAdmin;
    w.fake.add_user(admin);
    let mut cu = create_user("svc@acme.example", "Acme");
    cu.depends_on.clear();
    let report = w.apply(&plan(vec![cu]), 8).await;
    assert_eq!(addresses(&report.failed, |f| &f.address), ["service_user/svc@acme.example"]);
    assert!(report.failed[0].error.message.contains("not a service user"), "{}", report.failed[0].error);
    assert_eq!(w.fake.calls(Op::UpdateUser), 0);
}

// --- Properties -----------------------------------------------------------------------------

/// A random company: whether its create fails, and its users (create fails, token wanted, token issue fails).
type Shape = Vec<(bool, Vec<(bool, bool, bool)>)>;

/// What the outcome of each address must be, given which steps fail.
fn expected(shape: &Shape) -> std::collections::BTreeMap<String, &'static str> {
    let mut out = std::collections::BTreeMap::new();
    for (ci, (company_fails, users)) in shape.iter().enumerate() {
        let c = if *company_fails { "failed" } else { "done" };
        out.insert(format!("company/C{ci}"), c);
        for (ui, (user_fails, wants_token, token_fails)) in users.iter().enumerate() {
            let u = match (c, user_fails) {
                ("done", false) => "done",
                ("done", true) => "failed",
                _ => "skipped",
            };
            out.insert(format!("service_user/u{ui}@c{ci}.example"), u);
            if *wants_token {
                let t = match (u, token_fails) {
                    ("done", false) => "done",
                    ("done", true) => "failed",
                    _ => "skipped",
                };
                out.insert(format!("token/u{ui}@c{ci}.example"), t);
            }
        }
    }
    out
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    #[test]
    fn every_step_ends_as_its_dependencies_dictate_and_the_bound_holds(
        shape in proptest::collection::vec(
            (proptest::bool::weighted(0.2),
             proptest::collection::vec(
                 (proptest::bool::weighted(0.2), proptest::bool::ANY, proptest::bool::weighted(0.2)), 0..4)),
            1..5),
        parallelism in 1usize..5,
    ) {
        let w = World::new();
        let mut changes = Vec::new();
        for (ci, (company_fails, users)) in shape.iter().enumerate() {
            let name = format!("C{ci}");
            changes.push(create_company(&name, json!({})));
            if *company_fails {
                w.fake.inject(Op::CreateCompany, &name, Fault::Fail);
            }
            for (ui, (user_fails, wants_token, token_fails)) in users.iter().enumerate() {
                let email = format!("u{ui}@c{ci}.example");
                changes.push(create_user(&email, &name));
                if *user_fails {
                    w.fake.inject(Op::CreateUser, &email, Fault::Fail);
                }
                if *wants_token {
                    changes.push(issue_token(&email));
                    if *token_fails {
                        w.fake.inject(Op::IssueToken, &email, Fault::Fail);
                    }
                }
            }
        }
        let plan = plan(changes);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let report = runtime.block_on(w.apply(&plan, parallelism));

        let mut got = std::collections::BTreeMap::new();
        for d in &report.done { got.insert(d.address.to_string(), "done"); }
        for f in &report.failed { got.insert(f.address.to_string(), "failed"); }
        for s in &report.skipped { got.insert(s.address.to_string(), "skipped"); }
        proptest::prop_assert_eq!(report.done.len() + report.failed.len() + report.skipped.len(), plan.changes.len());
        proptest::prop_assert_eq!(got, expected(&shape));
        proptest::prop_assert!(w.fake.max_in_flight() <= parallelism);
        // Every user create came after its company's create, every issue after its user's.
        let log = w.fake.call_log();
        for (i, (op, key)) in log.iter().enumerate() {
            let before = |o: Op, k: &str| log[..i].iter().any(|(o2, k2)| *o2 == o && k2 == k);
            match op {
                Op::CreateUser => {
                    let company = key.split('@').nth(1).unwrap().trim_end_matches(".example").to_uppercase();
                    proptest::prop_assert!(before(Op::CreateCompany, &company), "{key} before {company}");
                }
                Op::IssueToken => proptest::prop_assert!(before(Op::CreateUser, key)),
                _ => {}
            }
        }
    }
}

// --- Removals -------------------------------------------------------------------------------

/// A removal of the live user `u-<email>` of company `Acme`: deactivate or delete.
fn removal(email: &str, delete: bool) -> Change {
    let fields =
        UserFields { email: Email::new(email), company: "Acme".into(), ..user_fields(email, "Acme") };
    let payload = if delete { Payload::DeleteUser(fields) } else { Payload::DeactivateUser(fields) };
    let mut c = change(user(email), vec![company("Acme")], payload);
    c.live_id = Some(format!("u-{email}"));
    c
}

/// A world holding the live service users `emails` (ids `u-<email>`), each with a stored token.
fn world_with_tokens(emails: &[&str]) -> World {
    let w = World::new();
    let company_id = w.fake.add_company("Acme", json!({}));
    for email in emails {
        w.fake.add_user(live_user(&format!("u-{email}"), email, &company_id));
        let stored = ozform::model::StoredToken {
            user_id: format!("u-{email}"),
            api_url: API_URL.into(),
            expire_date: 2_000_000_000.0,
        };
        w.store.seed(email, &stored);
    }
    w
}

#[tokio::test]
async fn a_removal_deactivates_or_deletes_the_user_then_drops_its_stored_token() {
    let w = world_with_tokens(&["off@x.test", "gone@x.test", "kept@x.test"]);
    let plan = plan(vec![removal("off@x.test", false), removal("gone@x.test", true)]);
    let report = w.apply(&plan, 2).await;
    assert!(report.is_success(), "{report:?}");
    assert_eq!(
        report.done.iter().map(|d| (d.address.to_string(), d.action)).collect::<Vec<_>>(),
        [
            ("service_user/gone@x.test".to_string(), Action::Delete),
            ("service_user/off@x.test".to_string(), Action::Deactivate)
        ]
    );
    assert!(w.fake.user("gone@x.test").is_none(), "deleted");
    assert!(w.fake.user("off@x.test").is_some_and(|u| !u.active), "deactivated, not deleted");
    assert_eq!((w.fake.calls(Op::DeleteUser), w.fake.calls(Op::UpdateUser)), (1, 1));
    assert_eq!(
        w.store.records().keys().collect::<Vec<_>>(),
        ["kept@x.test"],
        "only the removed users' tokens go"
    );
}

#[tokio::test]
async fn a_removal_that_fails_keeps_the_user_and_its_stored_token() {
    let w = world_with_tokens(&["gone@x.test", "off@x.test"]);
    w.fake.inject(Op::DeleteUser, "gone@x.test", Fault::Fail);
    w.fake.inject(Op::UpdateUser, "off@x.test", Fault::OutcomeUnknownBeforeCommit);
    let report = w.apply(&plan(vec![removal("gone@x.test", true), removal("off@x.test", false)]), 2).await;
    assert_eq!(report.failed.len(), 2, "{report:?}");
    assert!(report.failed[0].error.message.contains("DELETE /api/users/u-gone@x.test"), "{report:?}");
    assert!(w.fake.user("gone@x.test").is_some() && w.fake.user("off@x.test").is_some_and(|u| u.active));
    assert_eq!(w.store.records().len(), 2, "a token is dropped only after its user is removed");
}

#[tokio::test]
async fn a_saved_removal_is_stale_once_its_user_changed() {
    let w = world_with_tokens(&["gone@x.test"]);
    let live = w.fake.user("gone@x.test").unwrap();
    let mut change = removal("gone@x.test", true);
    change.fingerprint = Some(fingerprint::user(&live));
    let plan = plan(vec![change]);
    check_fresh(&plan, w.fake.as_ref(), 4).await.unwrap();
    // Renamed behind ozform's back.
    let patch = ozform::model::UserPatch { first_name: Some("Changed".into()), ..Default::default() };
    ozform::apply::Effects::update_user(w.fake.as_ref(), &live.id, &patch).await.unwrap();
    let err = check_fresh(&plan, w.fake.as_ref(), 4).await.unwrap_err();
    assert!(
        matches!(&err, ApplyError::Stale { moved, wrong } if moved == &["service_user/gone@x.test"] && wrong.is_empty()),
        "{err:?}"
    );
}

// --- Generated passwords --------------------------------------------------------------------

/// A user of `company_name` created with `password: {generate: true}`.
fn create_user_generating(email: &str, company_name: &str) -> Change {
    let mut c = create_user(email, company_name);
    if let Payload::CreateUser(create) = &mut c.payload {
        create.password = PasswordSource::Generate;
    }
    c
}

/// Company, a user created with a generated password, and its token (naming the company).
fn generating_stack(company_name: &str, email: &str) -> Vec<Change> {
    let mut token = issue_token(email);
    if let Payload::IssueToken(issue) = &mut token.payload {
        issue.company = Some(company_name.into());
    }
    vec![create_company(company_name, json!({})), create_user_generating(email, company_name), token]
}

#[tokio::test]
async fn a_generated_password_is_sent_with_the_create_and_kept_in_the_token_record() {
    let w = World::new();
    let plan = plan(generating_stack("Acme", "svc@acme.example"));
    let report = w.apply(&plan, 8).await;

    assert!(report.is_success(), "{report:?}");
    let sent = w.fake.password_of("svc@acme.example").expect("created with a password");
    assert_eq!(sent.expose().len(), 32);
    let record = w.store.get("svc@acme.example").unwrap();
    assert_eq!(record.password.as_ref().map(Secret::expose), Some(sent.expose()), "the one sent is kept");
    assert_eq!(record.company.as_deref(), Some("Acme"));
    let kept: Vec<(String, bool)> =
        report.done.iter().map(|d| (d.address.to_string(), d.password_kept)).collect();
    assert_eq!(
        kept,
        [
            ("company/Acme".into(), false),
            ("service_user/svc@acme.example".into(), false),
            ("token/svc@acme.example".into(), true)
        ]
    );
    // Each user gets its own.
    let w2 = World::new();
    w2.apply(&plan, 8).await;
    assert_ne!(w2.fake.password_of("svc@acme.example").unwrap().expose(), sent.expose());
}

#[tokio::test]
async fn a_generated_password_survives_an_unknown_outcome_and_the_resends_carry_the_same_one() {
    let w = World::new();
    let plan = plan([generating_stack("A", "a@a.example"), generating_stack("B", "b@b.example")].concat());
    // a: made, the answer lost, adopted by the read-back. b: 500 twice, then made.
    w.fake.inject(Op::CreateUser, "a@a.example", Fault::OutcomeUnknownAfterCommit);
    w.fake.inject(Op::CreateUser, "b@b.example", Fault::ServerError);
    w.fake.inject(Op::CreateUser, "b@b.example", Fault::ServerError);
    let report = w.apply(&plan, 8).await;

    assert!(report.is_success(), "{report:?}");
    assert_eq!(w.fake.calls(Op::CreateUser), 4);
    for email in ["a@a.example", "b@b.example"] {
        let live = w.fake.password_of(email).unwrap();
        let kept = w.store.get(email).unwrap().password.unwrap();
        assert_eq!(kept.expose(), live.expose(), "{email}: the password kept is the one the user has");
    }
}

#[tokio::test]
async fn a_user_that_already_existed_gets_its_token_but_no_password_that_is_not_its_own() {
    let w = World::new();
    let plan = plan(generating_stack("Acme", "svc@acme.example"));
    // Someone else made the user first (with their own password): the first send is a duplicate.
    w.fake.inject(Op::CreateUser, "svc@acme.example", Fault::Duplicate);
    let report = w.apply(&plan, 8).await;

    assert!(report.is_success(), "{report:?}");
    assert!(report.done.iter().any(|d| d.adopted && d.address == user("svc@acme.example")), "{report:?}");
    let record = w.store.get("svc@acme.example").unwrap();
    assert!(record.password.is_none(), "the generated password was never the user's");
}

#[tokio::test]
async fn a_generated_password_that_cannot_be_kept_is_said_to_be_lost_and_how_to_recover() {
    let w = World::new();
    let plan = plan([generating_stack("A", "a@a.example"), generating_stack("B", "b@b.example")].concat());
    w.fake.inject(Op::IssueToken, "a@a.example", Fault::Fail);
    w.store.fail_next_store("b@b.example");
    let report = w.apply(&plan, 8).await;

    assert_eq!(addresses(&report.failed, |f| &f.address), ["token/a@a.example", "token/b@b.example"]);
    for failed in &report.failed {
        let message = &failed.error.message;
        assert!(
            message
                .contains("was created with a generated password that could not be kept, so nobody knows it")
                && message.contains("no later apply can recover it")
                && message.contains("set a new password for")
                && message.contains("delete the user in Oz and run `ozform apply` again"),
            "{message}"
        );
        for email in ["a@a.example", "b@b.example"] {
            let password = w.fake.password_of(email).unwrap();
            assert!(!message.contains(password.expose()), "the password itself is never in a message");
        }
    }
}

#[tokio::test]
async fn a_stop_asked_for_after_a_generated_create_still_keeps_its_password() {
    let w = World::new();
    let plan = plan([generating_stack("A", "a@a.example"), generating_stack("B", "b@b.example")].concat());
    let hold = w.fake.hold(Op::CreateUser, "a@a.example");
    let (cancel, cancelled) = tokio::sync::watch::channel(false);
    let mut options = World::options(&plan, 1);
    options.cancel = Some(cancelled);
    let run = execute(&plan, Arc::clone(&w.fake), w.store(), w.progress(), &options);
    let cancel_while_the_create_is_in_flight = async {
        w.fake.wait_for_call(Op::CreateUser, "a@a.example").await;
        cancel.send(true).unwrap();
        hold.release();
    };
    let (report, ()) = within(async { tokio::join!(run, cancel_while_the_create_is_in_flight) }).await;
    let report = report.unwrap();

    assert!(report.interrupted, "{report:?}");
    // The user create in flight finished; its token, which keeps the password, started anyway;
    // nothing else did (one step at a time: both companies came first, by plan order).
    assert_eq!(
        addresses(&report.done, |d| &d.address),
        ["company/A", "company/B", "service_user/a@a.example", "token/a@a.example"]
    );
    let kept = w.store.get("a@a.example").unwrap().password.unwrap();
    assert_eq!(kept.expose(), w.fake.password_of("a@a.example").unwrap().expose());
    assert!(w.fake.user("b@b.example").is_none());
}

#[tokio::test]
async fn a_rotated_token_carries_the_password_of_the_same_user_over_and_not_of_another() {
    let w = World::new();
    let acme = w.fake.add_company("Acme", json!({}));
    w.fake.add_user(service_user("u-same", "same@acme.example", &acme));
    w.fake.add_user(service_user("u-new", "recreated@acme.example", &acme));
    let seed = |email: &str, user_id: &str| {
        let stored =
            StoredToken { user_id: user_id.into(), api_url: API_URL.into(), expire_date: 2_000_000_000.0 };
        w.store.seed(email, &stored);
        let mut record = w.store.get(email).unwrap();
        record.password = Some(Secret::new(format!("canary-kept-password-{user_id}")));
        w.store.store(&record).unwrap();
        stored
    };
    let same = seed("same@acme.example", "u-same");
    let old = seed("recreated@acme.example", "u-old");
    let rotate = |email: &str, user_id: &str, stored: StoredToken, reason: TokenReason| {
        let mut c = token_issue(email, Some(user_id));
        if let Payload::IssueToken(issue) = &mut c.payload {
            issue.stored = Some(stored);
            issue.reason = reason;
        }
        c
    };
    let plan = plan(vec![
        rotate("same@acme.example", "u-same", same, TokenReason::Rotation),
        rotate(
            "recreated@acme.example",
            "u-new",
            old,
            TokenReason::OtherUser { stored: "u-old".into(), live: "u-new".into() },
        ),
    ]);
    let report = w.apply(&plan, 2).await;

    assert!(report.is_success(), "{report:?}");
    let same = w.store.get("same@acme.example").unwrap();
    assert!(same.access_token.expose().starts_with(CANARY_TOKEN), "a new token");
    assert_eq!(same.password.unwrap().expose(), "canary-kept-password-u-same");
    assert!(w.store.get("recreated@acme.example").unwrap().password.is_none(), "not the old user's");
}

#[tokio::test]
async fn a_plan_that_creates_a_user_with_a_generated_password_but_no_token_is_refused_before_any_request() {
    let w = World::new();
    let plan =
        plan(vec![create_company("Acme", json!({})), create_user_generating("svc@acme.example", "Acme")]);
    let err = execute(&plan, Arc::clone(&w.fake), w.store(), w.progress(), &World::options(&plan, 4))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ApplyError::GeneratedWithoutToken { address } if address == "service_user/svc@acme.example"),
        "{err:?}"
    );
    assert_eq!(w.fake.mutating_calls(), 0);
}
