//! `FakeEffects`, an in-memory `apply::Effects` for executor tests (not compiled into the
//! product). A `Mutex`'d store of companies and users with the API's
//! behaviours that matter to apply (duplicate creates refused — company names as a setting —,
//! `in_deletion` companies neither found nor changed, emails compared case-insensitively,
//! tokens only for service users), its errors of the kinds the Oz client gives them. The
//! conformance suite (`effects_contract`) holds it to the client on the emulator. Plus what
//! tests need to provoke and observe:
//! - one-shot faults per operation and natural key (`inject`): a plain failure, an outcome
//!   unknown before or after the commit, a duplicate (someone else created it first);
//! - holds (`hold`): a call waits until the test releases it, to prove steps overlap;
//! - a gate (`gate_until_in_flight`): calls wait until `n` are in flight at once, to prove
//!   the executor reaches its concurrency bound without sleeping;
//! - counters: calls per operation, the call log, the most calls ever in flight at once.
//!
//! No `std` lock is held across an `.await`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;

use ozform::apply::{EffectError, EffectErrorKind, Effects};
use ozform::model::{
    ApiVersion, CompanyPatch, Email, IssuedToken, LivePermissions, NewCompany, NewUser, Observed,
    ObservedCompany, ObservedUser, UserKind, UserPatch,
};
use ozform::secret::Secret;

/// An `Effects` operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    FindCompanies,
    FindUser,
    CreateCompany,
    UpdateCompany,
    CreateUser,
    UpdateUser,
    IssueToken,
    DeleteUser,
}

impl Op {
    /// Whether the operation changes the world (everything but the two finds).
    pub fn is_mutating(self) -> bool {
        !matches!(self, Op::FindCompanies | Op::FindUser)
    }
}

/// A fault to inject into the next call of one operation on one natural key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The API refuses (403): nothing happened, and the outcome is known.
    Fail,
    /// The change is made, then the connection drops before the answer.
    OutcomeUnknownAfterCommit,
    /// The connection drops before the request reaches the API: nothing happened.
    OutcomeUnknownBeforeCommit,
    /// Someone else made the same object first; the API answers 409.
    Duplicate,
    /// The API answers 500 without having made anything (it finished with the request).
    ServerError,
}

/// The natural key of a call: company name, or lower-cased user email.
pub type Key = String;

#[derive(Default)]
struct State {
    companies: Vec<ObservedCompany>,
    users: Vec<ObservedUser>,
    passwords: BTreeMap<String, Secret>,
    tokens: Vec<IssuedToken>,
    faults: Vec<(Op, Key, Fault)>,
    holds: BTreeMap<(Op, Key), watch::Receiver<bool>>,
    gate: Option<(usize, watch::Sender<bool>)>,
    calls: Vec<(Op, Key)>,
    next_id: u64,
    token_prefix: String,
    /// A second live company of a name is refused as a duplicate (see `set_unique_company_names`).
    unique_company_names: bool,
}

/// The in-memory Oz API. See the module docs.
pub struct FakeEffects {
    state: Mutex<State>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// Bumped on every call, so a test can wait for a call without polling.
    calls_seen: watch::Sender<u64>,
}

impl Default for FakeEffects {
    fn default() -> Self {
        Self::new()
    }
}

/// Lets a held call go on (see `FakeEffects::hold`). Dropping it releases too.
pub struct Release(watch::Sender<bool>);

impl Release {
    /// Let the held calls go on now.
    pub fn release(self) {
        self.0.send_replace(true);
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl FakeEffects {
    pub fn new() -> Self {
        let state =
            State { token_prefix: "fake-token-".into(), unique_company_names: true, ..State::default() };
        Self {
            state: Mutex::new(state),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            calls_seen: watch::Sender::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is plain data, consistent after any panic of a test thread.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    // --- Setting up -------------------------------------------------------------------------

    /// Add a live company; returns its id.
    pub fn add_company(&self, name: &str, technical_meta_data: serde_json::Value) -> String {
        let mut s = self.lock();
        let id = next_id(&mut s, "c");
        s.companies.push(ObservedCompany {
            id: id.clone(),
            name: name.into(),
            in_deletion: false,
            technical_meta_data,
        });
        id
    }

    /// Add a live user as given (any kind, any company).
    pub fn add_user(&self, user: ObservedUser) {
        self.lock().users.push(user);
    }

    /// Start from this live state: its companies (those `in_deletion` too) and users, ids kept.
    pub fn seed(&self, observed: &Observed) {
        let mut s = self.lock();
        s.companies.extend(observed.companies.iter().cloned());
        s.users.extend(observed.users.iter().cloned());
    }

    /// The live state now, as `oz::observe` would read it from an API at `api_url`.
    pub fn observed(&self, api_url: &str, api_version: ApiVersion) -> Observed {
        let s = self.lock();
        Observed {
            api_url: api_url.into(),
            api_version,
            api_version_detected: false,
            companies: s.companies.clone(),
            users: s.users.clone(),
        }
    }

    /// Access tokens will be `<prefix><n>` (e.g. a canary).
    pub fn set_token_prefix(&self, prefix: &str) {
        self.lock().token_prefix = prefix.into();
    }

    /// Whether a create of a company whose name a live company has is refused as a duplicate
    /// (on by default) or makes a twin, as the emulator does by default: oz-api.md leaves name
    /// uniqueness open, and the emulator has both (`Quirks::unique_company_names`).
    pub fn set_unique_company_names(&self, unique: bool) {
        self.lock().unique_company_names = unique;
    }

    /// Make the next call of `op` on `key` (company name or email) fail with `fault`.
    pub fn inject(&self, op: Op, key: &str, fault: Fault) {
        self.lock().faults.push((op, normalise(op, key), fault));
    }

    /// Make calls of `op` on `key` wait until the returned `Release` is released or dropped.
    pub fn hold(&self, op: Op, key: &str) -> Release {
        let (tx, rx) = watch::channel(false);
        self.lock().holds.insert((op, normalise(op, key)), rx);
        Release(tx)
    }

    /// Make every call wait until `n` calls are in flight at once; from then on, none waits.
    pub fn gate_until_in_flight(&self, n: usize) {
        self.lock().gate = Some((n, watch::Sender::new(false)));
    }

    // --- Observing --------------------------------------------------------------------------

    pub fn companies(&self) -> Vec<ObservedCompany> {
        self.lock().companies.clone()
    }

    pub fn users(&self) -> Vec<ObservedUser> {
        self.lock().users.clone()
    }

    pub fn user(&self, email: &str) -> Option<ObservedUser> {
        let email = Email::new(email);
        self.lock().users.iter().find(|u| u.email == email).cloned()
    }

    /// The password a user was created with.
    pub fn password_of(&self, email: &str) -> Option<Secret> {
        self.lock().passwords.get(&email.to_lowercase()).cloned()
    }

    /// Every token issued, in order.
    pub fn tokens(&self) -> Vec<IssuedToken> {
        self.lock().tokens.clone()
    }

    /// How many calls of `op` were made (including failed ones).
    pub fn calls(&self, op: Op) -> usize {
        self.lock().calls.iter().filter(|(o, _)| *o == op).count()
    }

    /// How many calls changed or tried to change something.
    pub fn mutating_calls(&self) -> usize {
        self.lock().calls.iter().filter(|(o, _)| o.is_mutating()).count()
    }

    /// Every call, in the order they were made.
    pub fn call_log(&self) -> Vec<(Op, Key)> {
        self.lock().calls.clone()
    }

    /// The most calls that were ever in flight at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    /// Wait until `op` has been called on `key`.
    pub async fn wait_for_call(&self, op: Op, key: &str) {
        let key = normalise(op, key);
        let mut rx = self.calls_seen.subscribe();
        // `wait_for` checks the current value first, so a call made before we subscribed counts.
        let _ = rx.wait_for(|_| self.lock().calls.iter().any(|(o, k)| *o == op && *k == key)).await;
    }

    // --- The machinery of a call ------------------------------------------------------------

    /// Record the call, count it in flight, then wait at the gate and at a hold if any.
    async fn enter(&self, op: Op, key: &str) -> (InFlight<'_>, Option<Fault>) {
        let key = normalise(op, key);
        let (gate, hold, fault) = {
            let mut s = self.lock();
            s.calls.push((op, key.clone()));
            let fault =
                s.faults.iter().position(|(o, k, _)| *o == op && *k == key).map(|i| s.faults.remove(i).2);
            let gate = s.gate.as_ref().map(|(n, tx)| (*n, tx.clone()));
            (gate, s.holds.get(&(op, key)).cloned(), fault)
        };
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let guard = InFlight(&self.in_flight);
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        self.calls_seen.send_modify(|n| *n += 1);
        if let Some((n, tx)) = gate {
            if now >= n {
                tx.send_replace(true);
            } else {
                let _ = tx.subscribe().wait_for(|open| *open).await;
            }
            // Do not finish in the same poll: an executor that started more calls than its
            // bound gets them polled (and counted in flight) before any call completes.
            tokio::task::yield_now().await;
        }
        if let Some(mut rx) = hold {
            let _ = rx.wait_for(|released| *released).await;
        }
        (guard, fault)
    }
}

fn next_id(s: &mut State, prefix: &str) -> String {
    s.next_id += 1;
    format!("{prefix}-{}", s.next_id)
}

fn normalise(op: Op, key: &str) -> Key {
    match op {
        Op::FindCompanies | Op::CreateCompany | Op::UpdateCompany => key.to_string(),
        Op::FindUser | Op::CreateUser | Op::UpdateUser | Op::IssueToken | Op::DeleteUser => {
            key.to_lowercase()
        }
    }
}

/// An answer of `op` with an error body, of the kind the Oz client gives it (`oz/effects.rs`):
/// on a create (of a company or a user), a 409 or a 400 with `error_code` 3 or 4 may be a
/// duplicate, since the API answers a duplicate as it answers any invalid value (oz-api.md
/// 7.6), so it is `AlreadyExists` and apply reads back; a token issue is not such a create.
fn http(op: Op, method: &str, path: &str, status: u16, code: i64, message: &str) -> EffectError {
    let creating = matches!(op, Op::CreateCompany | Op::CreateUser);
    let kind = match (status, code) {
        (409, _) | (400, 3 | 4) if creating => EffectErrorKind::AlreadyExists,
        (500 | 503, _) => EffectErrorKind::OutcomeUnknown { answered: true },
        _ => EffectErrorKind::Refused,
    };
    EffectError::new(kind, format!("{method} {path} answered {status} (error_code {code}: {message})"))
}

/// The error a fault of `op` stands for.
fn fault_error(fault: Fault, op: Op, method: &str, path: &str) -> EffectError {
    match fault {
        Fault::Fail => http(op, method, path, 403, 9, "forbidden (injected)"),
        Fault::Duplicate => http(op, method, path, 409, 3, "already exists (injected)"),
        Fault::ServerError => http(op, method, path, 500, 0, "internal error (injected)"),
        Fault::OutcomeUnknownAfterCommit | Fault::OutcomeUnknownBeforeCommit => EffectError::new(
            EffectErrorKind::OutcomeUnknown { answered: false },
            format!("{method} {path} failed: connection closed before the answer (injected)"),
        ),
    }
}

/// Run a mutating call of `op` under `fault`: `commit` happens unless the fault says it did not.
fn with_fault<T>(
    fault: Option<Fault>,
    op: Op,
    method: &str,
    path: &str,
    commit: impl FnOnce() -> Result<T, EffectError>,
) -> Result<T, EffectError> {
    match fault {
        None => commit(),
        Some(f @ (Fault::Fail | Fault::OutcomeUnknownBeforeCommit | Fault::ServerError)) => {
            Err(fault_error(f, op, method, path))
        }
        Some(f @ (Fault::OutcomeUnknownAfterCommit | Fault::Duplicate)) => {
            // The commit's own error (e.g. a natural duplicate) is hidden behind the fault's, as
            // a dropped connection would hide it.
            let _ = commit();
            Err(fault_error(f, op, method, path))
        }
    }
}

fn apply_user_patch(user: &mut ObservedUser, patch: &UserPatch) {
    if let Some(v) = &patch.first_name {
        user.first_name.clone_from(v);
    }
    if let Some(v) = &patch.last_name {
        user.last_name.clone_from(v);
    }
    if let Some(v) = &patch.middle_name {
        user.middle_name.clone_from(v);
    }
    if let Some(v) = patch.active {
        user.active = v;
    }
    let p = &mut user.permissions;
    let set = |flag: &mut bool, v: Option<bool>| {
        if let Some(v) = v {
            *flag = v;
        }
    };
    set(&mut p.biometry, patch.permissions.biometry);
    set(&mut p.collection, patch.permissions.collection);
    set(&mut p.documents, patch.permissions.documents);
    set(&mut p.quality, patch.permissions.quality);
    if patch.make_service {
        user.kind = UserKind::Service;
    }
}

impl Effects for FakeEffects {
    async fn find_companies(&self, name: &str) -> Result<Vec<ObservedCompany>, EffectError> {
        let (_guard, fault) = self.enter(Op::FindCompanies, name).await;
        if let Some(f) = fault {
            return Err(fault_error(f, Op::FindCompanies, "GET", "/api/companies/"));
        }
        Ok(self.lock().companies.iter().filter(|c| c.name == name && !c.in_deletion).cloned().collect())
    }

    async fn find_user(&self, email: &Email) -> Result<Option<ObservedUser>, EffectError> {
        let (_guard, fault) = self.enter(Op::FindUser, email.as_str()).await;
        if let Some(f) = fault {
            return Err(fault_error(f, Op::FindUser, "GET", "/api/users/"));
        }
        Ok(self.lock().users.iter().find(|u| u.email == *email).cloned())
    }

    async fn create_company(&self, company: &NewCompany) -> Result<ObservedCompany, EffectError> {
        let (_guard, fault) = self.enter(Op::CreateCompany, &company.name).await;
        with_fault(fault, Op::CreateCompany, "POST", "/api/companies/", || {
            let mut s = self.lock();
            if s.unique_company_names && s.companies.iter().any(|c| c.name == company.name && !c.in_deletion)
            {
                return Err(http(
                    Op::CreateCompany,
                    "POST",
                    "/api/companies/",
                    409,
                    3,
                    "company already exists",
                ));
            }
            let id = next_id(&mut s, "c");
            let meta = company.technical_meta_data.clone().unwrap_or_else(|| serde_json::json!({}));
            let created = ObservedCompany {
                id,
                name: company.name.clone(),
                in_deletion: false,
                technical_meta_data: meta,
            };
            s.companies.push(created.clone());
            Ok(created)
        })
    }

    async fn update_company(&self, id: &str, patch: &CompanyPatch) -> Result<ObservedCompany, EffectError> {
        let key = self
            .lock()
            .companies
            .iter()
            .find(|c| c.id == id)
            .map_or_else(|| id.to_string(), |c| c.name.clone());
        let (_guard, fault) = self.enter(Op::UpdateCompany, &key).await;
        let url = format!("/api/companies/{id}");
        with_fault(fault, Op::UpdateCompany, "PATCH", &url, || {
            let mut s = self.lock();
            let Some(c) = s.companies.iter_mut().find(|c| c.id == id) else {
                return Err(http(Op::UpdateCompany, "PATCH", &url, 404, 10, "company not found"));
            };
            if c.in_deletion {
                return Err(http(Op::UpdateCompany, "PATCH", &url, 400, 4, "company is being deleted"));
            }
            if let Some(name) = &patch.name {
                c.name.clone_from(name);
            }
            if let Some(meta) = &patch.technical_meta_data {
                c.technical_meta_data = meta.clone();
            }
            Ok(c.clone())
        })
    }

    async fn create_user(&self, user: &NewUser) -> Result<ObservedUser, EffectError> {
        let (_guard, fault) = self.enter(Op::CreateUser, user.email.as_str()).await;
        with_fault(fault, Op::CreateUser, "POST", "/api/users/", || {
            let mut s = self.lock();
            // The company first, as the API checks it.
            if !s.companies.iter().any(|c| c.id == user.company_id && !c.in_deletion) {
                return Err(http(Op::CreateUser, "POST", "/api/users/", 400, 4, "company does not exist"));
            }
            if s.users.iter().any(|u| u.email == user.email) {
                let message = "a user with this email already exists";
                return Err(http(Op::CreateUser, "POST", "/api/users/", 400, 4, message));
            }
            let id = next_id(&mut s, "u");
            let d = LivePermissions::default();
            let p = user.permissions;
            let created = ObservedUser {
                id,
                email: user.email.clone(),
                company_id: Some(user.company_id.as_str().into()),
                kind: UserKind::Service,
                first_name: user.first_name.clone(),
                last_name: user.last_name.clone(),
                middle_name: user.middle_name.clone(),
                active: user.active,
                permissions: LivePermissions {
                    biometry: p.biometry.unwrap_or(d.biometry),
                    collection: p.collection.unwrap_or(d.collection),
                    documents: p.documents.unwrap_or(d.documents),
                    quality: p.quality.unwrap_or(d.quality),
                },
            };
            s.passwords.insert(user.email.key(), user.password.clone());
            s.users.push(created.clone());
            Ok(created)
        })
    }

    async fn update_user(&self, id: &str, patch: &UserPatch) -> Result<ObservedUser, EffectError> {
        let key =
            self.lock().users.iter().find(|u| u.id == id).map_or_else(|| id.to_string(), |u| u.email.key());
        let (_guard, fault) = self.enter(Op::UpdateUser, &key).await;
        let url = format!("/api/users/{id}");
        with_fault(fault, Op::UpdateUser, "PATCH", &url, || {
            let mut s = self.lock();
            let Some(u) = s.users.iter_mut().find(|u| u.id == id) else {
                return Err(http(Op::UpdateUser, "PATCH", &url, 404, 10, "user not found"));
            };
            apply_user_patch(u, patch);
            Ok(u.clone())
        })
    }

    async fn delete_user(&self, id: &str) -> Result<(), EffectError> {
        let key =
            self.lock().users.iter().find(|u| u.id == id).map_or_else(|| id.to_string(), |u| u.email.key());
        let (_guard, fault) = self.enter(Op::DeleteUser, &key).await;
        let url = format!("/api/users/{id}");
        with_fault(fault, Op::DeleteUser, "DELETE", &url, || {
            // Already gone counts as deleted, as the Oz client treats a 404.
            self.lock().users.retain(|u| u.id != id);
            Ok(())
        })
    }

    async fn issue_token(&self, user_id: &str) -> Result<IssuedToken, EffectError> {
        let key = self
            .lock()
            .users
            .iter()
            .find(|u| u.id == user_id)
            .map_or_else(|| user_id.to_string(), |u| u.email.key());
        let (_guard, fault) = self.enter(Op::IssueToken, &key).await;
        let path = format!("/api/authorize/service_token/{user_id}");
        with_fault(fault, Op::IssueToken, "POST", &path, || {
            let mut s = self.lock();
            match s.users.iter().find(|u| u.id == user_id) {
                None => return Err(http(Op::IssueToken, "POST", &path, 404, 10, "user not found")),
                Some(u) if u.kind != UserKind::Service => {
                    let message = "the user is not a service user";
                    return Err(http(Op::IssueToken, "POST", &path, 400, 4, message));
                }
                Some(_) => {}
            }
            let token_id = next_id(&mut s, "t");
            let token = IssuedToken {
                access_token: Secret::new(format!("{}{token_id}", s.token_prefix)),
                token_id,
                user_id: user_id.to_string(),
                expire_date: 1_904_659_888.282_587,
            };
            s.tokens.push(token.clone());
            Ok(token)
        })
    }
}
