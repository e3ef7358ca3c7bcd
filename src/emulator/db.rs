//! The emulator's data: companies, users, issued service tokens and sessions, with the indexes
//! that keep every request O(log n), and the emulator clock. `Db` enforces its own
//! invariants (ids and lower-cased emails are unique, lists keep creation order) and knows
//! nothing of HTTP beyond returning Oz error bodies. The routes module holds the lock.
//!
//! `Snapshot` is the public, serializable picture of the `Db` (dumps, seeds, test assertions).
//! It never carries a password or a token: a seed user may bring a `password`, which is read
//! but never written back.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::model::LivePermissions;
use crate::secret::Secret;

use super::api_error::{ApiError, Code};
use super::dialect::ADMIN;

/// How long an issued service token lives (the Oz default `OZ_SESSION_LONGLIVE_TTL`, 5 years).
pub const SERVICE_TOKEN_TTL: Duration = Duration::from_secs(5 * 365 * 24 * 60 * 60);

/// Companies, users and token records, each in creation order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    #[serde(default)]
    pub companies: Vec<CompanyRecord>,
    #[serde(default)]
    pub users: Vec<UserRecord>,
    /// Tokens issued (ids and expiry only: the token itself is never kept in a dump).
    #[serde(default)]
    pub service_tokens: Vec<ServiceTokenRecord>,
}

impl Snapshot {
    /// Check that every id is a UUID, as Oz ids are: the API answers a non-UUID id with 400,
    /// so a seeded object with one could never be read, changed or deleted. Names the first
    /// id that is not.
    pub fn check_ids(&self) -> Result<(), String> {
        let bad = |what: String, id: &str| {
            uuid::Uuid::try_parse(id)
                .map(|_| ())
                .map_err(|_| format!("{what} has the id `{id}`, which is not a UUID"))
        };
        for company in &self.companies {
            bad(format!("company `{}`", company.name), &company.company_id)?;
        }
        for user in &self.users {
            bad(format!("user `{}`", user.email), &user.user_id)?;
            if let Some(company_id) = &user.company_id {
                bad(format!("the company of user `{}`", user.email), company_id)?;
            }
        }
        for token in &self.service_tokens {
            bad("a service token".to_string(), &token.token_id)?;
            bad(format!("the user of service token `{}`", token.token_id), &token.user_id)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompanyRecord {
    #[serde(default = "new_id")]
    pub company_id: String,
    pub name: String,
    #[serde(default)]
    pub in_deletion: bool,
    #[serde(default = "empty_object")]
    pub technical_meta_data: Value,
}

impl CompanyRecord {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            company_id: new_id(),
            name: name.into(),
            in_deletion: false,
            technical_meta_data: empty_object(),
        }
    }
}

/// A user, dialect-neutral: `user_type` as stored (`CLIENT_SERVICE` exists only under API 6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRecord {
    #[serde(default = "new_id")]
    pub user_id: String,
    pub email: String,
    pub user_type: String,
    #[serde(default)]
    pub company_id: Option<String>,
    #[serde(default)]
    pub first_name: String,
    #[serde(default)]
    pub last_name: String,
    #[serde(default)]
    pub middle_name: String,
    #[serde(default = "yes")]
    pub is_active: bool,
    #[serde(default)]
    pub is_service: bool,
    #[serde(default)]
    pub is_admin: bool,
    #[serde(default)]
    pub permissions: LivePermissions,
    /// Login password: read from a seed, never serialized.
    #[serde(default, skip_serializing, deserialize_with = "password")]
    pub password: Option<Secret>,
}

impl UserRecord {
    /// An active user with a fresh id, empty names, all permissions and no password.
    pub fn new(email: String, user_type: String, company_id: Option<String>) -> Self {
        Self {
            user_id: new_id(),
            email,
            user_type,
            company_id,
            first_name: String::new(),
            last_name: String::new(),
            middle_name: String::new(),
            is_active: true,
            is_service: false,
            is_admin: false,
            permissions: LivePermissions::default(),
            password: None,
        }
    }
}

/// A service token as recorded (the token value itself is not kept).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceTokenRecord {
    pub token_id: String,
    pub user_id: String,
    /// Unix epoch seconds.
    pub expire_date: f64,
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}
fn yes() -> bool {
    true
}
fn password<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.map(Secret::new))
}
/// An unguessable bearer value. The prefix (`emu-session-`, `emu-refresh-`, `emu-service-`)
/// says what it is, so that a test can look for any token of a kind in what a run printed.
fn new_token(prefix: &str) -> String {
    format!("{prefix}{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

/// Who a request is made by.
#[derive(Debug, Clone)]
pub(crate) struct Principal {
    pub user_id: String,
    pub admin: bool,
}

/// Tokens handed out by a login or a refresh.
#[derive(Debug, Clone)]
pub(crate) struct SessionTokens {
    pub access_token: String,
    pub expire_token: String,
    pub expire_date: f64,
}

#[derive(Debug, Clone)]
struct SessionRecord {
    user_id: String,
    /// `None` for service tokens, which cannot be refreshed.
    expire_token: Option<String>,
    expires_at: f64,
    /// Sliding lifetime of login sessions; service tokens have a fixed expiry.
    ttl: Option<f64>,
}

#[derive(Debug, Default)]
pub(crate) struct Db {
    next: u64,
    companies: BTreeMap<u64, CompanyRecord>,
    company_ix: HashMap<String, u64>,
    users: BTreeMap<u64, UserRecord>,
    user_ix: HashMap<String, u64>,
    email_ix: HashMap<String, u64>,
    tokens: Vec<ServiceTokenRecord>,
    /// Keyed by access token.
    sessions: HashMap<String, SessionRecord>,
    /// Expire token → access token.
    refresh_ix: HashMap<String, String>,
    clock_offset: Duration,
    /// The users' keys in list order, so that a page at any offset starts there without
    /// walking the users before it; dropped whenever a user is added or removed, rebuilt by
    /// the next listing that needs it.
    user_order: Option<Vec<u64>>,
}

impl Db {
    /// A `Db` holding `seed` and the built-in ADMIN account. A seed user with the admin's
    /// email keeps its record but gets the configured password and the ADMIN type.
    pub(crate) fn new(seed: Snapshot, admin_email: &str, admin_password: &Secret) -> Self {
        let mut db = Db::default();
        for company in seed.companies {
            db.insert_company(company);
        }
        let admin_key = admin_email.to_lowercase();
        let mut admin_seen = false;
        for mut user in seed.users {
            if user.email.to_lowercase() == admin_key {
                admin_seen = true;
                user.user_type = ADMIN.to_string();
                user.company_id = None;
                user.password = Some(admin_password.clone());
            }
            // A seed with a repeated email keeps the first: the `Db`'s invariant wins.
            if !db.email_ix.contains_key(&user.email.to_lowercase()) {
                db.insert_user(user);
            }
        }
        if !admin_seen {
            let mut admin = UserRecord::new(admin_email.to_string(), ADMIN.to_string(), None);
            admin.password = Some(admin_password.clone());
            admin.first_name = "Emulator".into();
            admin.last_name = "Admin".into();
            db.insert_user(admin);
        }
        db.tokens = seed.service_tokens;
        db
    }

    // ----- clock -------------------------------------------------------------------------

    /// Emulator time in Unix epoch seconds (wall clock plus `advance_clock`), to the
    /// microsecond like the real API's `expire_date` (`1904659888.282587`).
    pub(crate) fn now(&self) -> f64 {
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let micros = (wall + self.clock_offset).as_micros();
        // Epoch microseconds are about 2^51 today: exact in an f64 for a long while yet.
        #[expect(clippy::cast_precision_loss)]
        let secs = micros as f64 / 1e6;
        secs
    }

    pub(crate) fn advance_clock(&mut self, by: Duration) {
        self.clock_offset += by;
    }

    // ----- snapshot ----------------------------------------------------------------------

    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            companies: self.companies.values().cloned().collect(),
            // A dump never holds a password, not even in memory.
            users: self.users.values().map(|u| UserRecord { password: None, ..u.clone() }).collect(),
            service_tokens: self.tokens.clone(),
        }
    }

    // ----- sessions ----------------------------------------------------------------------

    /// Who holds `token`; slides a login session's expiry.
    pub(crate) fn authenticate(&mut self, token: &str) -> Result<Principal, ApiError> {
        let now = self.now();
        let Some(session) = self.sessions.get_mut(token) else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                Code::AuthInvalid,
                "access token is not valid",
            ));
        };
        if session.expires_at <= now {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                Code::AuthExpired,
                "access token has expired",
            ));
        }
        if let Some(ttl) = session.ttl {
            session.expires_at = now + ttl;
        }
        let user_id = session.user_id.clone();
        let user = self.user(&user_id).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                Code::AuthInvalid,
                "the user of this token no longer exists",
            )
        })?;
        if !user.is_active {
            return Err(ApiError::forbidden("the user of this token is not active"));
        }
        Ok(Principal { admin: user.user_type == ADMIN, user_id })
    }

    /// Log in with email (case-insensitive) and password; opens a sliding session of `ttl`.
    pub(crate) fn login(
        &mut self,
        email: &str,
        password: &str,
        ttl: Duration,
    ) -> Result<(SessionTokens, UserRecord), ApiError> {
        let invalid =
            || ApiError::new(StatusCode::UNAUTHORIZED, Code::AuthInvalid, "invalid email or password");
        let user = self.user_by_email(email).ok_or_else(invalid)?;
        if user.password.as_ref().is_none_or(|p| p.expose() != password) {
            return Err(invalid());
        }
        if !user.is_active {
            return Err(ApiError::forbidden("this user is not active"));
        }
        let user = user.clone();
        let tokens = self.open_session(&user.user_id, ttl);
        Ok((tokens, user))
    }

    fn open_session(&mut self, user_id: &str, ttl: Duration) -> SessionTokens {
        let tokens = SessionTokens {
            access_token: new_token("emu-session-"),
            expire_token: new_token("emu-refresh-"),
            expire_date: self.now() + ttl.as_secs_f64(),
        };
        self.sessions.insert(
            tokens.access_token.clone(),
            SessionRecord {
                user_id: user_id.to_string(),
                expire_token: Some(tokens.expire_token.clone()),
                expires_at: tokens.expire_date,
                ttl: Some(ttl.as_secs_f64()),
            },
        );
        self.refresh_ix.insert(tokens.expire_token.clone(), tokens.access_token.clone());
        tokens
    }

    fn close_session(&mut self, access_token: &str) {
        if let Some(SessionRecord { expire_token: Some(expire_token), .. }) =
            self.sessions.remove(access_token)
        {
            self.refresh_ix.remove(&expire_token);
        }
    }

    /// Trade `expire_token` for a new session. `caller` is the access token sent in the header
    /// (possibly expired): it must belong to the same user.
    pub(crate) fn refresh(
        &mut self,
        caller: &str,
        expire_token: &str,
        ttl: Duration,
    ) -> Result<(SessionTokens, UserRecord), ApiError> {
        let not_found = || ApiError::new(StatusCode::UNAUTHORIZED, Code::AuthInvalid, "Session not found");
        let old_access = self.refresh_ix.get(expire_token).cloned().ok_or_else(not_found)?;
        let owner = self.sessions.get(&old_access).map(|s| s.user_id.clone()).ok_or_else(not_found)?;
        let caller_user = self.sessions.get(caller).map(|s| s.user_id.clone()).ok_or_else(not_found)?;
        if caller_user != owner {
            return Err(ApiError::forbidden("this session belongs to another user"));
        }
        let user = self.user(&owner).cloned().ok_or_else(not_found)?;
        self.close_session(&old_access);
        let tokens = self.open_session(&owner, ttl);
        Ok((tokens, user))
    }

    /// Every login session expires now (they can still be refreshed); service tokens live on.
    pub(crate) fn expire_all_sessions(&mut self) {
        let past = self.now() - 1.0;
        for session in self.sessions.values_mut().filter(|s| s.ttl.is_some()) {
            session.expires_at = past;
        }
    }

    /// Every login session is forgotten (refresh fails too: the client must log in again).
    pub(crate) fn forget_all_sessions(&mut self) {
        self.sessions.retain(|_, s| s.ttl.is_none());
        self.refresh_ix.clear();
    }

    /// Issue a service token for `user_id` (which must exist: checked by the caller).
    pub(crate) fn issue_service_token(&mut self, user_id: &str) -> (ServiceTokenRecord, String) {
        let expire_date = self.now() + SERVICE_TOKEN_TTL.as_secs_f64();
        let record = ServiceTokenRecord { token_id: new_id(), user_id: user_id.to_string(), expire_date };
        let token = new_token("emu-service-");
        self.sessions.insert(
            token.clone(),
            SessionRecord {
                user_id: user_id.to_string(),
                expire_token: None,
                expires_at: expire_date,
                ttl: None,
            },
        );
        self.tokens.push(record.clone());
        (record, token)
    }

    // ----- companies ---------------------------------------------------------------------

    pub(crate) fn companies(&self) -> impl Iterator<Item = &CompanyRecord> + Clone {
        self.companies.values()
    }

    pub(crate) fn company(&self, id: &str) -> Option<&CompanyRecord> {
        self.company_ix.get(id).and_then(|seq| self.companies.get(seq))
    }

    pub(crate) fn company_mut(&mut self, id: &str) -> Option<&mut CompanyRecord> {
        self.company_ix.get(id).and_then(|seq| self.companies.get_mut(seq))
    }

    /// A live (not in deletion) company with this exact name, if any.
    pub(crate) fn live_company_named(&self, name: &str) -> Option<&CompanyRecord> {
        self.companies.values().find(|c| !c.in_deletion && c.name == name)
    }

    pub(crate) fn insert_company(&mut self, company: CompanyRecord) {
        let seq = self.next_seq();
        if let Some(old) = self.company_ix.insert(company.company_id.clone(), seq) {
            self.companies.remove(&old);
        }
        self.companies.insert(seq, company);
    }

    /// Mark the company in deletion and, unless it must linger, remove it with its users.
    pub(crate) fn delete_company(&mut self, id: &str, linger: bool) {
        if let Some(company) = self.company_mut(id) {
            company.in_deletion = true;
        }
        let members: Vec<String> = self
            .users
            .values()
            .filter(|u| u.company_id.as_deref() == Some(id))
            .map(|u| u.user_id.clone())
            .collect();
        for user_id in members {
            self.delete_user(&user_id);
        }
        if linger {
            return;
        }
        if let Some(seq) = self.company_ix.remove(id) {
            self.companies.remove(&seq);
        }
    }

    // ----- users -------------------------------------------------------------------------

    pub(crate) fn users(&self) -> impl Iterator<Item = &UserRecord> + Clone {
        self.users.values()
    }

    pub(crate) fn user_count(&self) -> usize {
        self.users.len()
    }

    /// The users in list order from the `offset`-th on, found without walking those before.
    pub(crate) fn users_from(&mut self, offset: usize) -> impl Iterator<Item = &UserRecord> + Clone {
        let order = self.user_order.get_or_insert_with(|| self.users.keys().copied().collect());
        let users = &self.users;
        order.get(offset..).unwrap_or_default().iter().filter_map(move |seq| users.get(seq))
    }

    pub(crate) fn user(&self, id: &str) -> Option<&UserRecord> {
        self.user_ix.get(id).and_then(|seq| self.users.get(seq))
    }

    pub(crate) fn user_by_email(&self, email: &str) -> Option<&UserRecord> {
        self.email_ix.get(&email.to_lowercase()).and_then(|seq| self.users.get(seq))
    }

    /// Insert a user whose email is not taken (the caller checks with `user_by_email`).
    pub(crate) fn insert_user(&mut self, user: UserRecord) {
        let seq = self.next_seq();
        self.email_ix.insert(user.email.to_lowercase(), seq);
        if let Some(old) = self.user_ix.insert(user.user_id.clone(), seq) {
            self.users.remove(&old);
        }
        self.users.insert(seq, user);
        self.user_order = None;
    }

    /// Change a user in place; the email index follows an email change (the caller checks
    /// that a new email is free).
    pub(crate) fn update_user<R>(
        &mut self,
        id: &str,
        change: impl FnOnce(&mut UserRecord) -> R,
    ) -> Option<R> {
        let seq = *self.user_ix.get(id)?;
        let user = self.users.get_mut(&seq)?;
        let before = user.email.to_lowercase();
        let result = change(user);
        let after = user.email.to_lowercase();
        if before != after {
            self.email_ix.remove(&before);
            self.email_ix.insert(after, seq);
        }
        Some(result)
    }

    /// Remove a user and every session it holds.
    pub(crate) fn delete_user(&mut self, id: &str) -> bool {
        let Some(seq) = self.user_ix.remove(id) else { return false };
        if let Some(user) = self.users.remove(&seq) {
            self.email_ix.remove(&user.email.to_lowercase());
        }
        self.user_order = None;
        let gone: Vec<String> =
            self.sessions.iter().filter(|(_, s)| s.user_id == id).map(|(t, _)| t.clone()).collect();
        for token in gone {
            self.close_session(&token);
        }
        true
    }

    fn next_seq(&mut self) -> u64 {
        self.next += 1;
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Db {
        Db::new(Snapshot::default(), "Admin@Test.Local", &Secret::new("pw"))
    }

    #[test]
    fn the_admin_exists_from_the_start_and_logs_in_case_insensitively() {
        let mut db = db();
        assert_eq!(db.users().count(), 1);
        let (tokens, user) = db.login("admin@test.local", "pw", Duration::from_secs(60)).expect("login");
        assert_eq!(user.user_type, ADMIN);
        assert!(db.authenticate(&tokens.access_token).expect("auth").admin);
        assert!(db.login("admin@test.local", "nope", Duration::from_secs(60)).is_err());
    }

    #[test]
    fn sessions_slide_and_expire_on_the_emulator_clock() {
        let mut db = db();
        let (tokens, _) = db.login("admin@test.local", "pw", Duration::from_secs(60)).expect("login");
        db.advance_clock(Duration::from_secs(50));
        assert!(db.authenticate(&tokens.access_token).is_ok());
        db.advance_clock(Duration::from_secs(50));
        assert!(db.authenticate(&tokens.access_token).is_ok(), "the previous request slid the expiry");
        db.advance_clock(Duration::from_secs(61));
        let err = db.authenticate(&tokens.access_token).expect_err("expired");
        assert_eq!(err.code, Code::AuthExpired);
    }

    #[test]
    fn a_refresh_replaces_the_session_and_the_old_token_stops_working() {
        let mut db = db();
        let (old, _) = db.login("admin@test.local", "pw", Duration::from_secs(60)).expect("login");
        db.expire_all_sessions();
        let (new, _) =
            db.refresh(&old.access_token, &old.expire_token, Duration::from_secs(60)).expect("refresh");
        assert!(db.authenticate(&new.access_token).is_ok());
        assert_eq!(db.authenticate(&old.access_token).map_err(|e| e.code).err(), Some(Code::AuthInvalid));
        assert!(db.refresh(&new.access_token, &old.expire_token, Duration::from_secs(60)).is_err());
    }

    #[test]
    fn email_changes_move_the_index_and_deleting_a_company_removes_its_users() {
        let mut db = db();
        let company = CompanyRecord::new("Acme");
        let company_id = company.company_id.clone();
        db.insert_company(company);
        let user = UserRecord::new("a@x.test".into(), "CLIENT".into(), Some(company_id.clone()));
        let user_id = user.user_id.clone();
        db.insert_user(user);
        db.update_user(&user_id, |u| u.email = "B@x.test".into());
        assert!(db.user_by_email("a@x.test").is_none());
        assert_eq!(db.user_by_email("b@X.test").map(|u| u.user_id.clone()), Some(user_id.clone()));
        db.delete_company(&company_id, true);
        assert!(db.user(&user_id).is_none());
        assert_eq!(db.company(&company_id).map(|c| c.in_deletion), Some(true));
        db.delete_company(&company_id, false);
        assert!(db.company(&company_id).is_none());
    }

    #[test]
    fn a_snapshot_with_an_id_that_is_not_a_uuid_is_named() {
        let mut snapshot = Snapshot { companies: vec![CompanyRecord::new("Acme")], ..Snapshot::default() };
        assert_eq!(snapshot.check_ids(), Ok(()));
        let mut user = UserRecord::new("u@x.test".into(), "CLIENT".into(), Some("c1".into()));
        snapshot.users.push(user.clone());
        assert_eq!(
            snapshot.check_ids(),
            Err("the company of user `u@x.test` has the id `c1`, which is not a UUID".into())
        );
        user.company_id = None;
        user.user_id = "u1".into();
        snapshot.users = vec![user];
        assert_eq!(snapshot.check_ids(), Err("user `u@x.test` has the id `u1`, which is not a UUID".into()));
    }

    #[test]
    fn dumps_never_carry_a_password() {
        let seed: Snapshot = serde_json::from_str(
            r#"{"users":[{"email":"s@x.test","user_type":"CLIENT","password":"canary-pw-1"}]}"#,
        )
        .expect("seed");
        let db = Db::new(seed, "admin@test.local", &Secret::new("canary-pw-2"));
        let dump = serde_json::to_string(&db.snapshot()).expect("dump");
        assert!(!dump.contains("canary"), "{dump}");
        assert!(db.snapshot().users.iter().all(|u| u.password.is_none()));
        assert!(db.user_by_email("s@x.test").and_then(|u| u.password.as_ref()).is_some());
    }
}
