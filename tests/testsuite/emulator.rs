//! Contract tests of the built-in Oz API emulator, spoken to with a plain HTTP client: every
//! endpoint under both dialects, each error code, paging in every envelope, quirks, faults,
//! session expiry and refresh, and service-token authentication.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use crate::common;

use std::collections::BTreeSet;

use common::emulator::Emulator;
use ozform::emulator::{
    self, EmulatorConfig, Envelope, Faults, Gate, Handle, Quirks, SENSITIVE, TotalField, TrailingSlash,
};
use ozform::model::ApiVersion;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const BOTH: [ApiVersion; 2] = [ApiVersion::V5, ApiVersion::V6];

/// An HTTP client bound to one emulator, optionally holding an access token.
struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// One answer: status, `Retry-After`, and the JSON body (`Null` when empty).
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    retry_after: Option<String>,
    body: Value,
}

impl Answer {
    /// Assert an Oz error body with this status and `error_code`.
    fn error(&self, status: u16, code: u64) {
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        assert_eq!(self.body["error_code"], json!(code), "{self:?}");
        assert!(self.body["error_message"].is_string(), "{self:?}");
        assert!(self.body.get("details").is_some(), "{self:?}");
    }
    fn ok(&self, status: u16) -> &Value {
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        &self.body
    }
}

impl Api {
    fn new(handle: &Handle) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self { http: reqwest::Client::new(), base: handle.url(), token: None }
    }

    /// A request with the token (if any) and a JSON body (if any), to send as it is.
    fn request(&self, method: Method, path: &str, body: Option<Value>) -> reqwest::RequestBuilder {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.header("X-Forensic-Access-Token", token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Result<Answer, reqwest::Error> {
        let response = self.request(method, path, body).send().await?;
        let status = response.status();
        let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
        let bytes = response.bytes().await?;
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        Ok(Answer { status, retry_after, body })
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        self.send(method, path, body).await.unwrap()
    }
    async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, None).await
    }
    async fn post(&self, path: &str, body: Value) -> Answer {
        self.call(Method::POST, path, Some(body)).await
    }
    async fn patch(&self, path: &str, body: Value) -> Answer {
        self.call(Method::PATCH, path, Some(body)).await
    }
    async fn delete(&self, path: &str) -> Answer {
        self.call(Method::DELETE, path, None).await
    }

    /// Log in and keep the token; returns the whole auth answer.
    async fn login(&mut self, email: &str, password: &str) -> Value {
        let answer = self
            .post("/api/authorize/auth", json!({"credentials": {"email": email, "password": password}}))
            .await;
        let body = answer.ok(200).clone();
        self.token = Some(body["access_token"].as_str().unwrap().to_string());
        body
    }

    async fn admin(handle: &Handle) -> (Self, Value) {
        let mut api = Self::new(handle);
        let session = api.login(handle.admin_email(), handle.admin_password().expose()).await;
        (api, session)
    }

    async fn company(&self, name: &str) -> String {
        let body = self.post("/api/companies/", json!({"name": name})).await;
        body.ok(201)["company_id"].as_str().unwrap().to_string()
    }

    /// Create a service user in the dialect's way; returns its id.
    async fn service_user(&self, version: ApiVersion, email: &str, company_id: &str) -> String {
        let profile = match version {
            ApiVersion::V6 => json!({"company_id": company_id, "user_type": "CLIENT_SERVICE"}),
            ApiVersion::V5 => json!({"company_id": company_id, "user_type": "CLIENT", "is_service": true}),
        };
        let body = self
            .post(
                "/api/users/",
                json!({"credentials": {"email": email, "password": "pw-1"}, "profile": profile}),
            )
            .await;
        body.ok(201)["user_id"].as_str().unwrap().to_string()
    }

    async fn issue_token(&self, version: ApiVersion, user_id: &str) -> Answer {
        match version {
            ApiVersion::V6 => self.post(&format!("/api/authorize/service_token/{user_id}"), json!({})).await,
            ApiVersion::V5 => self.post("/api/authorize/service_token", json!({"user_id": user_id})).await,
        }
    }
}

/// An emulator speaking `version`, an admin session on it, and the id of its company `Acme`.
/// Keep the handle bound (`_handle`, not `_`): dropping it stops the emulator.
async fn with_acme(version: ApiVersion) -> (Handle, Api, String) {
    let handle = Emulator::new(version).start().await;
    let (api, _) = Api::admin(&handle).await;
    let company = api.company("Acme").await;
    (handle, api, company)
}

fn flag(version: ApiVersion, name: &str) -> String {
    match version {
        ApiVersion::V5 => format!("can_start_analyse_{name}"),
        ApiVersion::V6 => format!("can_start_analysis_{name}"),
    }
}

fn ids(list: &Value, key: &str) -> Vec<String> {
    list.as_array().unwrap().iter().map(|i| i[key].as_str().unwrap().to_string()).collect()
}

// ---------------------------------------------------------------------------------------------
// Authentication and sessions

#[tokio::test]
async fn login_answers_tokens_a_float_expiry_and_the_admin_user_in_both_dialects() {
    for version in BOTH {
        let handle = Emulator::new(version).start().await;
        assert!(handle.url().starts_with("http://127.0.0.1:"));
        let (_, session) = Api::admin(&handle).await;
        assert!(session["access_token"].is_string());
        assert!(session["expire_token"].is_string());
        assert!(session["expire_date"].is_f64());
        assert_eq!(session["user"]["user_type"], "ADMIN");
        assert_eq!(session["user"]["email"], emulator::DEFAULT_ADMIN_EMAIL);
        assert_eq!(session["user"][flag(version, "biometry")], true);
        handle.shutdown().await;
    }
}

#[tokio::test]
async fn login_errors_are_oz_error_bodies() {
    let handle = Emulator::new(ApiVersion::V6).start().await;
    let api = Api::new(&handle);
    let wrong = json!({"credentials": {"email": "ADMIN@ozform.local", "password": "wrong"}});
    api.post("/api/authorize/auth", wrong).await.error(401, 7);
    api.post("/api/authorize/auth", json!({"email": "x"})).await.error(400, 3);
    api.post("/api/authorize/auth", json!({"credentials": {"email": 1, "password": "x"}}))
        .await
        .error(400, 5);
    api.call(Method::POST, "/api/authorize/auth", None).await.error(400, 3);
    api.get("/api/authorize/auth").await.error(405, 1);
    api.get("/api/nothing/here").await.error(404, 10);
}

#[tokio::test]
async fn login_email_is_case_insensitive() {
    let handle = Emulator::new(ApiVersion::V5).start().await;
    let mut api = Api::new(&handle);
    let session = api.login("Admin@OZFORM.local", "emulator-admin").await;
    assert_eq!(session["user"]["user_type"], "ADMIN");
}

#[tokio::test]
async fn calls_without_a_token_or_with_a_bad_one_are_refused() {
    let handle = Emulator::new(ApiVersion::V6).start().await;
    let mut api = Api::new(&handle);
    api.get("/api/users/").await.error(401, 6);
    api.token = Some("not-a-token".into());
    api.get("/api/users/").await.error(401, 7);
}

#[tokio::test]
async fn expired_sessions_answer_auth_expired_and_refresh_gives_a_new_token() {
    for version in BOTH {
        let handle = Emulator::new(version).start().await;
        let (mut api, session) = Api::admin(&handle).await;
        handle.expire_all_sessions();
        api.get("/api/companies/").await.error(401, 8);
        let refreshed = api
            .post("/api/authorize/refresh", json!({"expire_token": session["expire_token"]}))
            .await
            .ok(200)
            .clone();
        assert!(refreshed["expire_date"].is_f64());
        assert_eq!(refreshed["user"]["user_type"], "ADMIN");
        assert_ne!(refreshed["access_token"], session["access_token"]);
        api.get("/api/companies/").await.error(401, 7);
        api.token = refreshed["access_token"].as_str().map(str::to_string);
        api.get("/api/companies/").await.ok(200);
    }
}

#[tokio::test]
async fn sessions_slide_with_use_and_expire_after_the_ttl_on_the_emulator_clock() {
    let handle = Emulator::new(ApiVersion::V6).start().await;
    let (api, _) = Api::admin(&handle).await;
    let ttl = emulator::DEFAULT_SESSION_TTL;
    handle.advance_clock(ttl / 2 + ttl / 4);
    api.get("/api/users/").await.ok(200);
    handle.advance_clock(ttl / 2 + ttl / 4);
    api.get("/api/users/").await.ok(200);
    handle.advance_clock(ttl * 2);
    api.get("/api/users/").await.error(401, 8);
}

#[tokio::test]
async fn refresh_errors_follow_the_documentation() {
    let handle = Emulator::new(ApiVersion::V6).start().await;
    let (api, session) = Api::admin(&handle).await;
    api.post("/api/authorize/refresh", json!({})).await.error(400, 3);
    let unknown = api.post("/api/authorize/refresh", json!({"expire_token": "nope"})).await;
    unknown.error(401, 7);
    assert_eq!(unknown.body["error_message"], "Session not found");

    // Another user may not refresh the admin's session.
    let company = api.company("Acme").await;
    api.post(
        "/api/users/",
        json!({"credentials": {"email": "op@x.test", "password": "pw"}, "profile": {"company_id": company}}),
    )
    .await
    .ok(201);
    let mut other = Api::new(&handle);
    other.login("op@x.test", "pw").await;
    other
        .post("/api/authorize/refresh", json!({"expire_token": session["expire_token"]}))
        .await
        .error(403, 9);

    // Without the current token in the header.
    let anonymous = Api::new(&handle);
    anonymous
        .post("/api/authorize/refresh", json!({"expire_token": session["expire_token"]}))
        .await
        .error(401, 6);

    // Forgotten sessions cannot be refreshed: log in again.
    handle.forget_all_sessions();
    api.post("/api/authorize/refresh", json!({"expire_token": session["expire_token"]})).await.error(401, 7);
}

// ---------------------------------------------------------------------------------------------
// Companies

#[tokio::test]
async fn companies_are_created_read_listed_patched_and_deleted() {
    for version in BOTH {
        let handle = Emulator::new(version).start().await;
        let (api, _) = Api::admin(&handle).await;
        let created = api.post("/api/companies/", json!({"name": "Acme Bank"})).await;
        let company = created.ok(201).clone();
        assert_eq!(company["name"], "Acme Bank");
        assert_eq!(company["in_deletion"], false);
        assert_eq!(company["technical_meta_data"], json!({}));
        let id = company["company_id"].as_str().unwrap();
        assert!(uuid::Uuid::parse_str(id).is_ok());

        assert_eq!(api.get(&format!("/api/companies/{id}")).await.ok(200), &company);
        assert_eq!(api.get("/api/companies").await.ok(200), &json!([company]));

        let patched = api
            .patch(
                &format!("/api/companies/{id}/"),
                json!({"name": "Acme", "technical_meta_data": {"tier": 2}}),
            )
            .await;
        assert_eq!(patched.ok(200)["technical_meta_data"], json!({"tier": 2}));
        assert_eq!(handle.snapshot().companies[0].name, "Acme");

        assert_eq!(api.delete(&format!("/api/companies/{id}")).await.status, StatusCode::NO_CONTENT);
        api.get(&format!("/api/companies/{id}")).await.error(404, 10);
        api.delete(&format!("/api/companies/{id}")).await.error(404, 10);
        api.patch(&format!("/api/companies/{id}"), json!({"name": "x"})).await.error(404, 10);
        assert_eq!(handle.stats().creates_per_company_name.get("Acme Bank"), Some(&1));
    }
}

#[tokio::test]
async fn company_bodies_are_validated() {
    let handle = Emulator::new(ApiVersion::V6).start().await;
    let (api, _) = Api::admin(&handle).await;
    api.post("/api/companies/", json!({})).await.error(400, 3);
    api.post("/api/companies/", json!({"name": 5})).await.error(400, 5);
    api.post("/api/companies/", json!({"name": "  "})).await.error(400, 4);
    api.post("/api/companies/", json!({"name": "A", "technical_meta_data": [1]})).await.error(400, 5);
    api.call(Method::PUT, "/api/companies/", None).await.error(405, 1);
}

#[tokio::test]
async fn a_deleted_company_can_linger_in_deletion_with_its_users_gone() {
    let quirks = Quirks { keep_deleted_companies: true, ..Quirks::default() };
    let handle = Emulator::new(ApiVersion::V6).quirks(quirks).start().await;
    let (api, _) = Api::admin(&handle).await;
    let id = api.company("Old").await;
    api.service_user(ApiVersion::V6, "svc@old.test", &id).await;
    api.delete(&format!("/api/companies/{id}")).await.ok(204);
    assert_eq!(api.get(&format!("/api/companies/{id}")).await.ok(200)["in_deletion"], true);
    api.patch(&format!("/api/companies/{id}"), json!({"name": "x"})).await.error(400, 4);
    let users = api.get("/api/users/?email=svc@old.test").await;
    assert_eq!(users.ok(200), &json!([]));
    // A company in deletion takes no users.
    let body =
        json!({"credentials": {"email": "n@old.test", "password": "p"}, "profile": {"company_id": id}});
    api.post("/api/users/", body).await.error(400, 4);
}

#[tokio::test]
async fn duplicate_company_names_are_allowed_unless_the_quirk_forbids_them() {
    let handle = Emulator::new(ApiVersion::V6).start().await;
    let (api, _) = Api::admin(&handle).await;
    api.company("Twin").await;
    api.company("Twin").await;
    assert_eq!(handle.stats().creates_per_company_name.get("Twin"), Some(&2));
    handle.set_quirks(Quirks { unique_company_names: true, ..Quirks::default() });
    api.post("/api/companies/", json!({"name": "Twin"})).await.error(400, 4);
    handle.set_quirks(Quirks {
        unique_company_names: true,
        duplicate_conflict_409: true,
        ..Quirks::default()
    });
    api.post("/api/companies/", json!({"name": "Twin"})).await.error(409, 4);
}

// ---------------------------------------------------------------------------------------------
// Users

#[tokio::test]
async fn users_carry_every_field_with_flags_in_the_dialect_spelling() {
    for version in BOTH {
        let (handle, api, company) = with_acme(version).await;
        let id = api.service_user(version, "Svc@Acme.test", &company).await;
        let user = api.get(&format!("/api/users/{id}")).await.ok(200).clone();
        for key in [
            "user_id",
            "email",
            "user_type",
            "company_id",
            "first_name",
            "last_name",
            "middle_name",
            "is_active",
            "is_service",
            "is_admin",
        ] {
            assert!(user.get(key).is_some(), "{key} missing in {user}");
        }
        for name in ["biometry", "collection", "documents", "quality"] {
            assert_eq!(user[flag(version, name)], true, "{user}");
        }
        let other = match version {
            ApiVersion::V5 => ApiVersion::V6,
            ApiVersion::V6 => ApiVersion::V5,
        };
        assert!(user.get(flag(other, "biometry")).is_none());
        let expected_type = if version == ApiVersion::V6 { "CLIENT_SERVICE" } else { "CLIENT" };
        assert_eq!(user["user_type"], expected_type);
        assert_eq!(user["is_service"], true);
        assert_eq!(user["is_active"], true);
        assert_eq!(user["company_id"], company.as_str());
        assert_eq!(handle.stats().creates_per_email.get("svc@acme.test"), Some(&1));
    }
}

#[tokio::test]
async fn api_5_rejects_client_service() {
    let (_handle, api, company) = with_acme(ApiVersion::V5).await;
    let body = json!({"credentials": {"email": "s@x.test", "password": "p"},
                      "profile": {"company_id": company, "user_type": "CLIENT_SERVICE"}});
    api.post("/api/users/", body).await.error(400, 4);
}

#[tokio::test]
async fn flags_in_the_other_dialects_spelling_are_silently_ignored() {
    for version in BOTH {
        let (_handle, api, company) = with_acme(version).await;
        let id = api.service_user(version, "s@x.test", &company).await;
        let other = if version == ApiVersion::V5 {
            "can_start_analysis_quality"
        } else {
            "can_start_analyse_quality"
        };
        let own = flag(version, "documents");
        let patched =
            api.patch(&format!("/api/users/{id}"), json!({ other: false, own.clone(): false })).await;
        let patched = patched.ok(200);
        assert_eq!(patched[flag(version, "quality")], true);
        assert_eq!(patched[own], false);
        assert!(patched.get(other).is_none());
    }
}

#[tokio::test]
async fn duplicate_emails_are_refused_case_insensitively() {
    let (handle, api, company) = with_acme(ApiVersion::V6).await;
    api.service_user(ApiVersion::V6, "dup@x.test", &company).await;
    let again =
        json!({"credentials": {"email": "DUP@x.test", "password": "p"}, "profile": {"company_id": company}});
    api.post("/api/users/", again.clone()).await.error(400, 4);
    handle.set_quirks(Quirks { duplicate_conflict_409: true, ..Quirks::default() });
    api.post("/api/users/", again).await.error(409, 4);
    assert_eq!(handle.stats().creates_per_email.get("dup@x.test"), Some(&1));
}

#[tokio::test]
async fn user_bodies_are_validated() {
    let (_handle, api, company) = with_acme(ApiVersion::V6).await;
    let post = |body: Value| api.post("/api/users/", body);
    post(json!({"profile": {}})).await.error(400, 3);
    post(json!({"credentials": {"email": "a@x.test"}})).await.error(400, 3);
    post(json!({"credentials": {"email": "nope", "password": "p"}, "profile": {"company_id": company}}))
        .await
        .error(400, 4);
    post(json!({"credentials": {"email": "a@x.test", "password": "p"}})).await.error(400, 4);
    post(json!({"credentials": {"email": "a@x.test", "password": "p"}, "profile": {"company_id": "nope"}}))
        .await
        .error(400, 4);
    post(json!({"credentials": {"email": "a@x.test", "password": "p"},
                "profile": {"company_id": company, "user_type": "ROOT"}}))
    .await
    .error(400, 4);
    post(json!({"credentials": {"email": "a@x.test", "password": "p"},
                "profile": {"company_id": company, "is_active": "yes"}}))
    .await
    .error(400, 5);
    post(json!([1, 2])).await.error(400, 3);
}

#[tokio::test]
async fn users_are_patched_and_deleted() {
    for version in BOTH {
        let handle = Emulator::new(version).start().await;
        let (api, session) = Api::admin(&handle).await;
        let company = api.company("Acme").await;
        let id = api.service_user(version, "s@x.test", &company).await;
        let path = format!("/api/users/{id}/");
        let patched = api
            .patch(&path, json!({"profile": {"first_name": "Web", "is_active": false}, "credentials": {"email": "t@x.test"}}))
            .await;
        let patched = patched.ok(200);
        assert_eq!(patched["first_name"], "Web");
        assert_eq!(patched["is_active"], false);
        assert_eq!(patched["email"], "t@x.test");
        let flat = api.patch(&path, json!({"last_name": "Svc"})).await;
        assert_eq!(flat.ok(200)["last_name"], "Svc");
        api.patch(&path, json!({"credentials": {"email": "ADMIN@ozform.local"}})).await.error(400, 4);
        assert_eq!(api.delete(&path).await.status, StatusCode::NO_CONTENT);
        api.get(&path).await.error(404, 10);
        api.delete(&path).await.error(404, 10);
        let admin_id = session["user"]["user_id"].as_str().unwrap();
        api.delete(&format!("/api/users/{admin_id}")).await.error(400, 4);
    }
}

#[tokio::test]
async fn an_id_that_is_not_a_uuid_is_an_invalid_value_and_an_unknown_uuid_does_not_exist() {
    for version in BOTH {
        let (_handle, api, _) = with_acme(version).await;
        for collection in ["users", "companies"] {
            let bad = format!("/api/{collection}/not-a-uuid");
            api.get(&bad).await.error(400, 4);
            api.patch(&bad, json!({"name": "x"})).await.error(400, 4);
            api.delete(&bad).await.error(400, 4);
            let unknown = format!("/api/{collection}/{}", uuid::Uuid::new_v4());
            api.get(&unknown).await.error(404, 10);
            api.patch(&unknown, json!({"name": "x"})).await.error(404, 10);
            api.delete(&unknown).await.error(404, 10);
        }
        api.issue_token(version, "not-a-uuid").await.error(400, 4);
    }
}

#[tokio::test]
async fn a_seed_with_an_id_that_is_not_a_uuid_is_refused_at_start() {
    let mut config = EmulatorConfig::new(ApiVersion::V6);
    let mut company = emulator::CompanyRecord::new("Acme");
    company.company_id = "c1".into();
    config.seed = Some(emulator::Snapshot { companies: vec![company], ..emulator::Snapshot::default() });
    let err = emulator::start(config).await.unwrap_err();
    assert!(err.to_string().contains("company `Acme` has the id `c1`, which is not a UUID"), "{err}");
}

#[tokio::test]
async fn the_admin_is_listed_among_users_first() {
    for version in BOTH {
        let handle = Emulator::new(version).start().await;
        let (api, _) = Api::admin(&handle).await;
        let users = api.get("/api/users/").await.ok(200).clone();
        assert_eq!(users[0]["email"], "admin@ozform.local");
        assert_eq!(users[0]["company_id"], Value::Null);
        assert_eq!(users[0][flag(version, "quality")], true);
    }
}

// ---------------------------------------------------------------------------------------------
// Service tokens

#[tokio::test]
async fn service_tokens_are_issued_to_service_users_and_authenticate_them() {
    for version in BOTH {
        let (handle, api, company) = with_acme(version).await;
        let id = api.service_user(version, "svc@x.test", &company).await;
        let issued = api.issue_token(version, &id).await.ok(200).clone();
        assert_eq!(issued["user_id"], id.as_str());
        assert_eq!(issued["session_id"], 0);
        assert!(issued["token_id"].is_string());
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let expire = issued["expire_date"].as_f64().unwrap();
        assert!(expire > now + 4.0 * 365.0 * 86400.0, "a service token lives years");
        assert_eq!(handle.snapshot().service_tokens.len(), 1);

        let mut service = Api::new(&handle);
        service.token = issued["access_token"].as_str().map(str::to_string);
        assert_eq!(service.get(&format!("/api/users/{id}")).await.ok(200)["email"], "svc@x.test");
        service.get("/api/users/").await.error(403, 9);
        service.post("/api/companies/", json!({"name": "X"})).await.error(403, 9);
        service.issue_token(version, &id).await.error(403, 9);
        // Expiring login sessions does not touch service tokens.
        handle.expire_all_sessions();
        service.get(&format!("/api/users/{id}")).await.ok(200);
    }
}

#[tokio::test]
async fn service_tokens_are_refused_for_missing_and_non_service_users() {
    for version in BOTH {
        let handle = Emulator::new(version).start().await;
        let (api, session) = Api::admin(&handle).await;
        let missing = uuid::Uuid::new_v4().to_string();
        api.issue_token(version, &missing).await.error(404, 10);
        let admin_id = session["user"]["user_id"].as_str().unwrap();
        api.issue_token(version, admin_id).await.error(400, 4);
    }
}

#[tokio::test]
async fn each_dialect_serves_only_its_own_service_token_route() {
    let v6 = Emulator::new(ApiVersion::V6).start().await;
    let (api6, _) = Api::admin(&v6).await;
    api6.post("/api/authorize/service_token", json!({"user_id": "x"})).await.error(404, 10);
    let v5 = Emulator::new(ApiVersion::V5).start().await;
    let (api5, _) = Api::admin(&v5).await;
    api5.post("/api/authorize/service_token/x", json!({})).await.error(404, 10);
    api5.post("/api/authorize/service_token", json!({})).await.error(400, 3);
}

// ---------------------------------------------------------------------------------------------
// Lists, paging and quirks

async fn seeded_users(version: ApiVersion, quirks: Quirks, n: usize) -> (Handle, Api, String) {
    let handle = Emulator::new(version).quirks(quirks).start().await;
    let (api, _) = Api::admin(&handle).await;
    let company = api.company("Acme").await;
    for i in 0..n {
        api.service_user(version, &format!("u{i:02}@x.test"), &company).await;
    }
    (handle, api, company)
}

/// Items of a list body in any envelope.
fn items(body: &Value, envelope: Envelope) -> Value {
    match envelope {
        Envelope::Bare => body.clone(),
        Envelope::Items => body["items"].clone(),
        Envelope::Results => body["results"].clone(),
        Envelope::Data => body["data"].clone(),
    }
}

#[tokio::test]
async fn lists_page_with_offset_and_limit_in_every_envelope() {
    for envelope in [Envelope::Bare, Envelope::Items, Envelope::Results, Envelope::Data] {
        let quirks = Quirks { envelope, ..Quirks::default() };
        let (_handle, api, _) = seeded_users(ApiVersion::V6, quirks, 5).await;
        // 6 users: the admin and u00..u04, in creation order.
        let mut seen = Vec::new();
        for offset in [0, 2, 4, 6] {
            let body = api.get(&format!("/api/users/?offset={offset}&limit=2")).await.ok(200).clone();
            if envelope != Envelope::Bare {
                assert_eq!(body["total"], 6, "{body}");
            }
            seen.extend(ids(&items(&body, envelope), "email"));
        }
        let expected: Vec<String> = std::iter::once("admin@ozform.local".to_string())
            .chain((0..5).map(|i| format!("u{i:02}@x.test")))
            .collect();
        assert_eq!(seen, expected, "{envelope:?}");
    }
}

#[tokio::test]
async fn the_total_may_be_a_count_or_absent() {
    let quirks = Quirks { envelope: Envelope::Items, total_field: TotalField::Count, ..Quirks::default() };
    let (handle, api, _) = seeded_users(ApiVersion::V5, quirks, 1).await;
    assert_eq!(api.get("/api/users/").await.ok(200)["count"], 2);
    assert!(api.get("/api/users/?total_omit=true").await.ok(200).get("count").is_none());
    handle.set_quirks(Quirks {
        envelope: Envelope::Data,
        total_field: TotalField::Omitted,
        ..Quirks::default()
    });
    assert_eq!(api.get("/api/users/").await.ok(200).as_object().unwrap().len(), 1);
}

#[tokio::test]
async fn the_default_limit_is_one_hundred_and_the_cap_wins() {
    let (handle, api, _) = seeded_users(ApiVersion::V6, Quirks::default(), 104).await;
    assert_eq!(api.get("/api/users/").await.ok(200).as_array().unwrap().len(), 100);
    handle.set_quirks(Quirks { max_limit: Some(7), ..Quirks::default() });
    assert_eq!(api.get("/api/users/?limit=50").await.ok(200).as_array().unwrap().len(), 7);
    api.get("/api/users/?limit=many").await.error(400, 5);
    api.get("/api/users/?offset=-1").await.error(400, 5);
}

#[tokio::test]
async fn filters_select_by_email_and_company_unless_ignored() {
    let (handle, api, company) = seeded_users(ApiVersion::V6, Quirks::default(), 3).await;
    let other = api.company("Other").await;
    api.service_user(ApiVersion::V6, "o@other.test", &other).await;
    assert_eq!(ids(api.get("/api/users/?email=U01@X.TEST").await.ok(200), "email"), ["u01@x.test"]);
    assert_eq!(
        ids(api.get(&format!("/api/users/?company_id={other}")).await.ok(200), "email"),
        ["o@other.test"]
    );
    let in_company = ids(api.get(&format!("/api/users/?company_id={company}")).await.ok(200), "email");
    assert_eq!(in_company.len(), 3);
    assert_eq!(ids(api.get("/api/companies/?name=Other").await.ok(200), "name"), ["Other"]);

    handle.set_quirks(Quirks { ignore_filters: true, ..Quirks::default() });
    assert_eq!(api.get("/api/users/?email=u01@x.test").await.ok(200).as_array().unwrap().len(), 5);
    assert_eq!(api.get("/api/companies/?name=Other").await.ok(200).as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn an_ignored_offset_always_answers_the_first_page() {
    let quirks = Quirks { ignore_offset: true, ..Quirks::default() };
    let (_handle, api, _) = seeded_users(ApiVersion::V5, quirks, 4).await;
    let first = ids(api.get("/api/users/?offset=0&limit=2").await.ok(200), "user_id");
    let second = ids(api.get("/api/users/?offset=2&limit=2").await.ok(200), "user_id");
    assert_eq!(first, second);
}

#[tokio::test]
async fn paths_work_with_and_without_the_trailing_slash_unless_a_quirk_says_otherwise() {
    let handle = Emulator::new(ApiVersion::V6).start().await;
    let (api, _) = Api::admin(&handle).await;
    api.get("/api/users").await.ok(200);
    api.get("/api/users/").await.ok(200);
    handle.set_quirks(Quirks { trailing_slash: TrailingSlash::Documented, ..Quirks::default() });
    api.get("/api/users/").await.ok(200);
    api.get("/api/users").await.error(404, 10);
    api.post("/api/authorize/auth/", json!({})).await.error(404, 10);
    handle.set_quirks(Quirks { trailing_slash: TrailingSlash::Opposite, ..Quirks::default() });
    api.get("/api/users").await.ok(200);
    api.get("/api/users/").await.error(404, 10);
}

// ---------------------------------------------------------------------------------------------
// Faults

#[tokio::test]
async fn injected_429s_carry_retry_after() {
    let faults = Faults { too_many_requests: 1.0, retry_after_secs: 0, ..Faults::default() };
    let handle = Emulator::new(ApiVersion::V6).faults(faults).start().await;
    let (api, _) = Api::admin(&handle).await; // the login route is spared
    let answer = api.get("/api/users/").await;
    answer.error(429, 0);
    assert_eq!(answer.retry_after.as_deref(), Some("0"));
}

#[tokio::test]
async fn injected_5xx_answer_error_bodies_and_change_nothing() {
    let handle = Emulator::new(ApiVersion::V6).start().await;
    let (api, _) = Api::admin(&handle).await;
    handle.set_faults(Faults { internal_error: 1.0, ..Faults::default() });
    api.post("/api/companies/", json!({"name": "A"})).await.error(500, 0);
    handle.set_faults(Faults { unavailable: 1.0, ..Faults::default() });
    api.post("/api/companies/", json!({"name": "A"})).await.error(503, 0);
    assert!(handle.snapshot().companies.is_empty());
    assert_eq!(handle.stats().mutating_requests, 2);
}

#[tokio::test]
async fn creates_can_commit_and_then_answer_500() {
    let handle = Emulator::new(ApiVersion::V5).start().await;
    let (api, _) = Api::admin(&handle).await;
    handle.set_faults(Faults { commit_then_error: 1.0, ..Faults::default() });
    api.post("/api/companies/", json!({"name": "Ghost"})).await.error(500, 0);
    assert_eq!(handle.snapshot().companies.len(), 1, "the create committed");
    assert_eq!(handle.stats().creates_per_company_name.get("Ghost"), Some(&1));
    // Reads are not creates: they answer normally.
    api.get("/api/companies/").await.ok(200);
}

#[tokio::test]
async fn dropped_connections_close_without_an_answer() {
    let handle = Emulator::new(ApiVersion::V6).start().await;
    let (api, _) = Api::admin(&handle).await;
    handle.set_faults(Faults { drop_connection: 1.0, ..Faults::default() });
    let err = api.send(Method::GET, "/api/users/", None).await.unwrap_err();
    assert!(!err.is_status(), "{err}");
    handle.set_faults(Faults { commit_then_drop: 1.0, ..Faults::default() });
    let company = api.send(Method::POST, "/api/companies/", Some(json!({"name": "Lost"}))).await;
    assert!(company.is_err(), "{company:?}");
    assert_eq!(handle.snapshot().companies.len(), 1, "the create committed before the drop");
    handle.set_faults(Faults::default());
    api.get("/api/users/").await.ok(200);
}

#[tokio::test]
async fn counted_faults_answer_exactly_the_next_requests_and_say_what_is_left() {
    let faults = Faults { too_many_requests_next: 2, unavailable_next: 1, drop_next: 1, ..Faults::default() };
    let handle = Emulator::new(ApiVersion::V6).faults(faults).start().await;
    let (api, _) = Api::admin(&handle).await; // the login route is spared
    let answer = api.get("/api/users/").await;
    answer.error(429, 0);
    assert_eq!(answer.retry_after.as_deref(), Some("0"));
    assert_eq!(handle.faults().too_many_requests_next, 1);
    api.get("/api/users/").await.error(429, 0);
    let unavailable = api.get("/api/users/").await;
    unavailable.error(503, 0);
    assert_eq!(unavailable.body["error_message"], "unavailable (injected fault)");
    assert!(api.send(Method::GET, "/api/users/", None).await.is_err(), "the connection was dropped");
    api.get("/api/users/").await.ok(200);
    let left = handle.faults();
    assert_eq!((left.too_many_requests_next, left.unavailable_next, left.drop_next), (0, 0, 0));
}

#[tokio::test]
async fn a_counted_drop_can_take_the_login() {
    let faults = Faults { drop_next: 1, include_auth: true, ..Faults::default() };
    let handle = Emulator::new(ApiVersion::V5).faults(faults).start().await;
    let credentials =
        json!({"credentials": {"email": handle.admin_email(), "password": handle.admin_password().expose()}});
    let api = Api::new(&handle);
    assert!(api.send(Method::POST, "/api/authorize/auth", Some(credentials.clone())).await.is_err());
    api.post("/api/authorize/auth", credentials).await.ok(200);
}

#[tokio::test]
async fn sessions_can_expire_once_at_a_given_request() {
    let handle = Emulator::new(ApiVersion::V6).start().await;
    let (mut api, session) = Api::admin(&handle).await;
    handle.set_faults(Faults { expire_sessions_at: 2, ..Faults::default() });
    api.get("/api/users/").await.ok(200);
    api.get("/api/users/").await.error(401, 8);
    let refreshed =
        api.post("/api/authorize/refresh", json!({"expire_token": session["expire_token"]})).await;
    api.token = refreshed.ok(200)["access_token"].as_str().map(str::to_string);
    for _ in 0..3 {
        api.get("/api/users/").await.ok(200);
    }
}

#[tokio::test]
async fn creates_can_commit_and_answer_a_body_that_is_not_json() {
    let faults = Faults { commit_then_garble: 1.0, ..Faults::default() };
    let handle = Emulator::new(ApiVersion::V5).faults(faults).start().await;
    let (api, _) = Api::admin(&handle).await;
    let raw =
        api.request(Method::POST, "/api/companies/", Some(json!({"name": "Garbled"}))).send().await.unwrap();
    assert_eq!(raw.status(), StatusCode::CREATED);
    let text = raw.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
    assert_eq!(handle.snapshot().companies.len(), 1, "the create committed");
    // Reads are not creates: they answer normally.
    api.get("/api/companies/").await.ok(200);
}

#[tokio::test]
async fn sessions_can_expire_every_nth_request() {
    let faults = Faults { expire_sessions_every: 2, ..Faults::default() };
    let handle = Emulator::new(ApiVersion::V6).faults(faults).start().await;
    let (api, _) = Api::admin(&handle).await; // request 1
    api.get("/api/users/").await.error(401, 8); // request 2 expires the session first
}

#[tokio::test]
async fn the_login_route_is_faulted_only_when_asked() {
    let faults = Faults { internal_error: 1.0, ..Faults::default() };
    let handle = Emulator::new(ApiVersion::V6).faults(faults.clone()).start().await;
    Api::admin(&handle).await;
    handle.set_faults(Faults { include_auth: true, ..faults });
    let api = Api::new(&handle);
    let body = json!({"credentials": {"email": "admin@ozform.local", "password": "emulator-admin"}});
    api.post("/api/authorize/auth", body).await.error(500, 0);
}

#[tokio::test]
async fn faults_from_the_same_seed_repeat_and_latency_still_answers() {
    async fn statuses(seed: u64) -> Vec<u16> {
        let faults =
            Faults { internal_error: 0.3, unavailable: 0.3, latency_ms: 1, seed, ..Faults::default() };
        let handle = Emulator::new(ApiVersion::V6).faults(faults).start().await;
        let (api, _) = Api::admin(&handle).await;
        let mut out = Vec::new();
        for _ in 0..30 {
            out.push(api.get("/api/companies/").await.status.as_u16());
        }
        out
    }
    let first = statuses(7).await;
    assert_eq!(first, statuses(7).await);
    let kinds: BTreeSet<u16> = first.into_iter().collect();
    assert_eq!(kinds, BTreeSet::from([200, 500, 503]));
}

// ---------------------------------------------------------------------------------------------
// Observability

#[tokio::test]
async fn stats_count_routes_mutations_and_concurrency() {
    let handle = Emulator::new(ApiVersion::V6).start().await;
    let (api, _) = Api::admin(&handle).await;
    let id = api.company("Acme").await;
    api.get(&format!("/api/companies/{id}/")).await.ok(200);
    api.get(&format!("/api/companies/{id}")).await.ok(200);
    api.patch(&format!("/api/companies/{id}"), json!({"name": "B"})).await.ok(200);
    let stats = handle.stats();
    assert_eq!(stats.requests_by_route.get("POST /api/authorize/auth"), Some(&1));
    assert_eq!(stats.requests_by_route.get("GET /api/companies/{company_id}"), Some(&2));
    assert_eq!(stats.total_requests, 5);
    assert_eq!(stats.mutating_requests, 2);
    assert!(stats.max_in_flight >= 1);

    handle.reset_stats();
    let calls = (0..8).map(|_| api.get("/api/users/"));
    for answer in futures::future::join_all(calls).await {
        answer.ok(200);
    }
    let stats = handle.stats();
    assert_eq!(stats.total_requests, 8);
    assert_eq!(stats.mutating_requests, 0);
    assert!((1..=8).contains(&stats.max_in_flight));
}

#[tokio::test]
async fn the_request_log_holds_each_request_in_order_with_its_status_and_no_secret() {
    let handle = Emulator::new(ApiVersion::V6).start().await;
    let (api, session) = Api::admin(&handle).await;
    let company = api.company("Acme").await;
    let id = api.service_user(ApiVersion::V6, "svc@x.test", &company).await;
    let issued = api.issue_token(ApiVersion::V6, &id).await.ok(200).clone();
    let listed =
        api.request(Method::GET, "/api/users/?offset=0&limit=2", None).header("user-agent", "contract/1");
    assert_eq!(listed.send().await.unwrap().status(), StatusCode::OK);
    handle.set_faults(Faults { drop_next: 1, ..Faults::default() });
    assert!(api.send(Method::GET, "/api/companies/", None).await.is_err());
    let refreshed =
        api.post("/api/authorize/refresh", json!({"expire_token": session["expire_token"]})).await;
    let refreshed = refreshed.ok(200).clone();

    let log = handle.requests();
    let lines: Vec<String> = log.iter().map(ToString::to_string).collect();
    let token_path = format!("POST /api/authorize/service_token/{id}");
    let expected = [
        "POST /api/authorize/auth",
        "POST /api/companies/",
        "POST /api/users/",
        &token_path,
        "GET /api/users/?offset=0&limit=2",
        "GET /api/companies/",
        "POST /api/authorize/refresh",
    ];
    assert_eq!(lines, expected);
    let statuses: Vec<Option<u16>> = log.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [Some(200), Some(201), Some(201), Some(200), Some(200), None, Some(200)]);
    let login = json!({"credentials": {"email": "admin@ozform.local", "password": SENSITIVE}});
    assert_eq!(log[0].body, Some(login));
    assert_eq!(log[1].body, Some(json!({"name": "Acme"})));
    assert_eq!(log[2].body.as_ref().unwrap()["credentials"]["password"], SENSITIVE);
    assert_eq!(log[6].body, Some(json!({"expire_token": SENSITIVE})));
    assert_eq!(handle.stats().user_agents, BTreeSet::from(["contract/1".to_string()]));

    // Tokens say what they are, and none of them (nor a password) is in the log.
    let tokens = [
        (&session["access_token"], "emu-session-"),
        (&session["expire_token"], "emu-refresh-"),
        (&refreshed["access_token"], "emu-session-"),
        (&refreshed["expire_token"], "emu-refresh-"),
        (&issued["access_token"], "emu-service-"),
    ];
    let shown = format!("{log:?}");
    for (token, prefix) in tokens {
        let token = token.as_str().unwrap();
        assert!(token.starts_with(prefix), "{token}");
        assert!(!shown.contains(token), "{shown}");
    }
    for password in [handle.admin_password().expose(), "pw-1"] {
        assert!(!shown.contains(password), "{shown}");
    }
    assert!(!shown.contains("emu-"), "{shown}");

    handle.reset_stats();
    assert!(handle.requests().is_empty());
}

#[tokio::test]
async fn the_request_log_is_kept_only_when_asked() {
    let handle = emulator::start(EmulatorConfig::new(ApiVersion::V6)).await.unwrap();
    let (api, _) = Api::admin(&handle).await;
    api.get("/api/users/").await.ok(200);
    assert!(handle.requests().is_empty());
    assert_eq!(handle.stats().total_requests, 2);
}

#[tokio::test]
async fn a_capacity_serves_that_many_at_once_and_the_others_wait_in_line_counted_in_the_stats() {
    let handle = Emulator::new(ApiVersion::V6)
        .capacity(2)
        .faults(Faults { latency_ms: 20, ..Faults::default() })
        .start()
        .await;
    let (api, _) = Api::admin(&handle).await;
    // The gate lets the six requests go on together: two are served, four wait in line.
    handle.set_gate(Some(Gate {
        route: "GET /api/users/".into(),
        min_offset: 0,
        together: 6,
        max_wait: std::time::Duration::from_secs(10),
    }));
    handle.reset_stats();
    let paths: Vec<String> = (0..6).map(|i| format!("/api/users/?offset={i}")).collect();
    let calls = paths.iter().map(|path| api.get(path));
    for answer in futures::future::join_all(calls).await {
        answer.ok(200);
    }
    let stats = handle.stats();
    assert_eq!((stats.total_requests, stats.max_in_flight, stats.max_serving), (6, 6, 2), "{stats:?}");
    assert_eq!(stats.shed_requests, 0);
    assert!(stats.max_queue_wait_us > 0 && stats.queue_wait_us >= stats.max_queue_wait_us, "{stats:?}");
    assert_eq!(stats.average_queue_wait_us, stats.queue_wait_us / 6);
}

#[tokio::test]
async fn a_request_that_waits_past_shed_after_is_answered_503_and_takes_no_effect() {
    // One worker, busy for 300 ms with each request; a request waiting 1 ms is shed.
    let handle = Emulator::new(ApiVersion::V6)
        .capacity(1)
        .shed_after(std::time::Duration::from_millis(1))
        .faults(Faults { latency_ms: 300, ..Faults::default() })
        .start()
        .await;
    let (api, _) = Api::admin(&handle).await;
    handle.set_gate(Some(Gate {
        route: "POST /api/companies/".into(),
        min_offset: 0,
        together: 2,
        max_wait: std::time::Duration::from_secs(10),
    }));
    handle.reset_stats();
    let creates = ["First", "Second"].map(|name| api.post("/api/companies/", json!({"name": name})));
    let answers = futures::future::join_all(creates).await;
    let mut statuses: Vec<u16> = answers.iter().map(|a| a.status.as_u16()).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 503], "{answers:?}");
    let shed = answers.iter().find(|a| a.status == StatusCode::SERVICE_UNAVAILABLE).unwrap();
    shed.error(503, 0);
    assert_eq!(handle.snapshot().companies.len(), 1, "the shed create did nothing");
    let stats = handle.stats();
    assert_eq!(stats.shed_requests, 1);
    assert!(stats.max_queue_wait_us >= 1_000, "{stats:?}");
    assert_eq!(stats.max_serving, 1);
}

#[tokio::test]
async fn a_gate_holds_matching_requests_until_enough_are_in_flight_together() {
    let handle = Emulator::new(ApiVersion::V6).start().await;
    let (api, _) = Api::admin(&handle).await;
    let gate =
        |together, max_wait| Gate { route: "GET /api/users/".into(), min_offset: 2, together, max_wait };
    handle.set_gate(Some(gate(3, std::time::Duration::from_secs(10))));
    handle.reset_stats();
    // Not held: below the gate's offset, or another route.
    api.get("/api/users/?offset=1").await.ok(200);
    api.get("/api/companies/?offset=5").await.ok(200);
    let paths = [2, 3, 4].map(|offset| format!("/api/users/?offset={offset}"));
    let held = paths.iter().map(|path| api.get(path));
    for answer in futures::future::join_all(held).await {
        answer.ok(200);
    }
    assert_eq!(handle.stats().max_in_flight, 3);
    api.get("/api/users/?offset=9").await.ok(200);

    // A request alone goes on after the longest wait, without opening the gate.
    handle.set_gate(Some(gate(2, std::time::Duration::from_millis(1))));
    api.get("/api/users/?offset=2").await.ok(200);
    api.get("/api/users/?offset=3").await.ok(200);
}

#[tokio::test]
async fn seeds_load_and_dumps_hold_no_password() {
    let seed: emulator::Snapshot = serde_json::from_value(json!({
        "companies": [{"company_id": "8d1f4c1e-0000-4000-8000-000000000001", "name": "Seeded"}],
        "users": [{"email": "seed@x.test", "user_type": "CLIENT", "is_service": true, "password": "canary-seed-pw",
                   "company_id": "8d1f4c1e-0000-4000-8000-000000000001"}]
    }))
    .unwrap();
    let handle = Emulator::new(ApiVersion::V5).seed(seed).start().await;
    let mut api = Api::new(&handle);
    let session = api.login("seed@x.test", "canary-seed-pw").await;
    assert_eq!(session["user"]["is_service"], true);
    let dump = serde_json::to_string(&handle.snapshot()).unwrap();
    assert!(!dump.contains("canary"), "{dump}");
    assert!(!dump.contains("emulator-admin"), "{dump}");
    assert!(dump.contains("Seeded"));
}

#[tokio::test]
async fn raw_updates_simulate_drift_without_requests() {
    let (handle, api, company) = with_acme(ApiVersion::V6).await;
    let id = api.service_user(ApiVersion::V6, "d@x.test", &company).await;
    handle.reset_stats();
    assert!(handle.update_user_raw("D@x.test", |u| u.permissions.quality = false));
    assert!(handle.update_company_raw("Acme", |c| c.technical_meta_data = json!({"drift": true})));
    assert!(!handle.update_user_raw("nobody@x.test", |_| {}));
    assert_eq!(handle.stats().total_requests, 0);
    assert_eq!(api.get(&format!("/api/users/{id}")).await.ok(200)["can_start_analysis_quality"], false);
    assert_eq!(
        api.get(&format!("/api/companies/{company}")).await.ok(200)["technical_meta_data"]["drift"],
        true
    );
}

#[tokio::test]
async fn start_fails_with_a_located_error_when_the_address_is_taken() {
    let handle = Emulator::new(ApiVersion::V6).start().await;
    let mut config = EmulatorConfig::new(ApiVersion::V6);
    config.listen = handle.addr();
    let err = emulator::start(config).await.unwrap_err();
    assert!(err.to_string().contains(&handle.addr().to_string()), "{err}");
}

#[tokio::test]
async fn api_6_users_leaving_the_service_role_stop_being_service_users() {
    let (_handle, api, company) = with_acme(ApiVersion::V6).await;
    let id = api.service_user(ApiVersion::V6, "s@x.test", &company).await;
    let patched = api.patch(&format!("/api/users/{id}"), json!({"profile": {"user_type": "CLIENT"}})).await;
    assert_eq!(patched.ok(200)["is_service"], false);
    api.issue_token(ApiVersion::V6, &id).await.error(400, 4);
    let back =
        api.patch(&format!("/api/users/{id}"), json!({"profile": {"user_type": "CLIENT_SERVICE"}})).await;
    assert_eq!(back.ok(200)["is_service"], true);
}

/// Run `ozform emulator` with `OZ_ADMIN_PASSWORD` set to `password` (or unset), read its
/// stderr up to the Ctrl-C line, stop it, and return all it wrote (stderr, then stdout).
fn emulator_command_output(password: Option<&str>) -> String {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let mut command = Command::new(env!("CARGO_BIN_EXE_ozform"));
    command
        .args(["emulator", "--listen", "127.0.0.1:0", "--api-version", "5"])
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .env_remove("OZ_ADMIN_PASSWORD")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(password) = password {
        command.env("OZ_ADMIN_PASSWORD", password);
    }
    let mut child = command.spawn().unwrap();
    let mut lines = Vec::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        let done = line.contains("Ctrl-C");
        lines.push(line);
        if done {
            break;
        }
    }
    child.kill().unwrap();
    let stdout = child.wait_with_output().unwrap().stdout;
    lines.push(String::from_utf8_lossy(&stdout).into_owned());
    lines.join("\n")
}

#[test]
fn the_emulator_command_says_where_it_listens_and_never_prints_a_given_password() {
    let text = emulator_command_output(Some("canary-cli-pw"));
    assert!(text.contains("listening on http://127.0.0.1:"), "{text}");
    assert!(text.contains("admin@ozform.local"), "{text}");
    assert!(!text.contains("canary-cli-pw"), "{text}");
    assert!(!text.contains("default admin password"), "{text}");
}

#[test]
fn without_a_password_source_the_emulator_command_names_the_default_but_never_prints_it() {
    let text = emulator_command_output(None);
    assert!(text.contains("listening on http://127.0.0.1:"), "{text}");
    assert!(text.contains("the default admin password is in use, see `ozform emulator --help`"), "{text}");
    assert!(!text.contains(emulator::DEFAULT_ADMIN_PASSWORD), "{text}");
}

#[tokio::test]
async fn inactive_users_can_neither_log_in_nor_use_their_tokens() {
    for version in BOTH {
        let (handle, api, company) = with_acme(version).await;
        let id = api.service_user(version, "off@x.test", &company).await;
        let issued = api.issue_token(version, &id).await.ok(200).clone();
        api.patch(&format!("/api/users/{id}"), json!({"is_active": false})).await.ok(200);
        let mut service = Api::new(&handle);
        service.token = issued["access_token"].as_str().map(str::to_string);
        service.get(&format!("/api/users/{id}")).await.error(403, 9);
        let login = json!({"credentials": {"email": "off@x.test", "password": "pw-1"}});
        Api::new(&handle).post("/api/authorize/auth", login).await.error(403, 9);
    }
}

#[tokio::test]
async fn the_http_state_dump_seeds_an_identical_emulator_without_passwords() {
    let (handle, api, company) = with_acme(ApiVersion::V6).await;
    api.service_user(ApiVersion::V6, "svc@x.test", &company).await;
    api.issue_token(ApiVersion::V6, &handle.snapshot().users[1].user_id).await.ok(200);
    let before = handle.stats();
    let dump = Api::new(&handle).get("/_emulator/state").await.ok(200).clone();
    let stats = Api::new(&handle).get("/_emulator/stats").await.ok(200).clone();
    assert_eq!(stats["total_requests"], before.total_requests);
    assert_eq!(handle.stats(), before, "inspection is not counted");
    let text = dump.to_string();
    assert!(
        !text.contains("pw-1") && !text.contains("emulator-admin") && !text.contains("access_token"),
        "{text}"
    );

    let copy = Emulator::new(ApiVersion::V6).seed(serde_json::from_value(dump).unwrap()).start().await;
    let (copied, original) = (copy.snapshot(), handle.snapshot());
    assert_eq!(copied.companies, original.companies);
    assert_eq!(copied.users, original.users);
    // serde_json reads floats to within one ulp, so token expiries are compared loosely.
    let (a, b) = (&copied.service_tokens, &original.service_tokens);
    assert_eq!(a.len(), b.len());
    let same = |x: &emulator::ServiceTokenRecord, y: &emulator::ServiceTokenRecord| {
        x.token_id == y.token_id && x.user_id == y.user_id && (x.expire_date - y.expire_date).abs() < 1e-3
    };
    assert!(a.iter().zip(b).all(|(x, y)| same(x, y)), "{a:?} {b:?}");
    // Passwords were not in the dump: the seeded service user cannot log in.
    let login = json!({"credentials": {"email": "svc@x.test", "password": "pw-1"}});
    Api::new(&copy).post("/api/authorize/auth", login).await.error(401, 7);
}

#[tokio::test]
async fn either_path_form_can_redirect_to_the_other_and_a_redirected_request_is_not_acted_on() {
    use TrailingSlash::{RedirectToDocumented, RedirectToUndocumented};
    // The quirk, the collection paths that redirect under it, and how an object path that
    // redirects ends.
    for (trailing_slash, companies, users, object) in [
        (RedirectToDocumented, "/api/companies", "/api/users", "/"),
        (RedirectToUndocumented, "/api/companies/", "/api/users/", ""),
    ] {
        let handle = Emulator::new(ApiVersion::V6)
            .quirks(Quirks { trailing_slash, ..Quirks::default() })
            .start()
            .await;
        // reqwest follows a 308 and re-sends the same method and body (under
        // `RedirectToUndocumented`, the login's too).
        let (mut api, session) = Api::admin(&handle).await;
        api.post(companies, json!({"name": "Via redirect"})).await.ok(201);
        assert_eq!(api.get(&format!("{companies}?limit=5")).await.ok(200).as_array().unwrap().len(), 1);
        api.http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let other = |path: &str| match path.strip_suffix('/') {
            Some(bare) => bare.to_string(),
            None => format!("{path}/"),
        };
        let raw = api.request(Method::GET, &format!("{users}?limit=1"), None).send().await.unwrap();
        assert_eq!(raw.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(raw.headers()["location"], format!("{}?limit=1", other(users)).as_str());
        let id = session["user"]["user_id"].as_str().unwrap();
        let raw = api.request(Method::GET, &format!("/api/users/{id}{object}"), None).send().await.unwrap();
        assert_eq!(raw.headers()["location"], other(&format!("/api/users/{id}{object}")).as_str());
        let raw = api.request(Method::POST, companies, Some(json!({"name": "Moved"}))).send().await.unwrap();
        assert_eq!(raw.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(
            handle.snapshot().companies.len(),
            1,
            "{trailing_slash:?}: a redirected create is not acted on"
        );
    }
}

#[tokio::test]
async fn an_expired_session_can_be_answered_403_still_with_the_auth_expired_code() {
    let quirks = Quirks { auth_expired_403: true, ..Quirks::default() };
    let handle = Emulator::new(ApiVersion::V6).quirks(quirks).start().await;
    let (mut api, session) = Api::admin(&handle).await;
    handle.expire_all_sessions();
    api.get("/api/users/").await.error(403, 8);
    let refreshed =
        api.post("/api/authorize/refresh", json!({"expire_token": session["expire_token"]})).await;
    let fresh = refreshed.ok(200)["access_token"].as_str().map(str::to_string);
    // Only expiry is answered 403: the replaced session is still 401.
    api.get("/api/users/").await.error(401, 7);
    api.token = fresh;
    api.get("/api/users/").await.ok(200);
}

#[tokio::test]
async fn permission_flags_can_be_hidden_in_both_dialects() {
    for version in BOTH {
        let quirks = Quirks { hide_permissions: true, ..Quirks::default() };
        let handle = Emulator::new(version).quirks(quirks).start().await;
        let (api, session) = Api::admin(&handle).await;
        let users = api.get("/api/users/").await.ok(200).clone();
        for user in [&session["user"], &users[0]] {
            assert_eq!(user["user_type"], "ADMIN");
            for name in ["biometry", "collection", "documents", "quality"] {
                assert!(user.get(flag(version, name)).is_none(), "{user}");
            }
        }
    }
}

#[tokio::test]
async fn objects_can_be_sparse_carry_unknown_fields_and_expire_dates_can_be_integers() {
    for version in BOTH {
        let quirks = Quirks {
            sparse_objects: true,
            extra_fields: true,
            integer_expire_dates: true,
            ..Quirks::default()
        };
        let handle = Emulator::new(version).quirks(quirks).start().await;
        let (api, session) = Api::admin(&handle).await;
        assert!(session["expire_date"].is_i64(), "{session}");
        assert_eq!(session["user"]["meta_data"], json!({}));
        assert!(session["user"].get("company_id").is_none(), "{session}");
        let company = api.post("/api/companies/", json!({"name": "Sparse"})).await.ok(201).clone();
        assert!(
            company.get("in_deletion").is_none() && company.get("technical_meta_data").is_none(),
            "{company}"
        );
        let id = api.service_user(version, "s@x.test", company["company_id"].as_str().unwrap()).await;
        let user = api.get(&format!("/api/users/{id}")).await.ok(200).clone();
        assert!(user.get("middle_name").is_none() && user.get("is_admin").is_none(), "{user}");
        assert_eq!(user["is_service"], true);
        assert_eq!(user[flag(version, "quality")], true);
        assert!(api.issue_token(version, &id).await.ok(200)["expire_date"].is_i64());
    }
}

#[tokio::test]
async fn shutdown_closes_the_listener_and_open_connections() {
    let handle = Emulator::new(ApiVersion::V6).start().await;
    let (api, _) = Api::admin(&handle).await; // holds a keep-alive connection
    handle.shutdown().await;
    assert!(api.send(Method::GET, "/api/users/", None).await.is_err());
}

#[tokio::test]
async fn a_persistent_client_gets_through_flaky_faults_and_tolerable_quirks() {
    for version in BOTH {
        let handle =
            Emulator::new(version).quirks(Quirks::tolerable()).faults(Faults::flaky(0.3, 11)).start().await;
        let (api, _) = Api::admin(&handle).await;
        // Retry each read until it answers; every kind of fault must have shown up on the way.
        let mut statuses = BTreeSet::new();
        let mut drops = 0;
        let mut answered = 0;
        while answered < 40 {
            match api.send(Method::GET, "/api/users/", None).await {
                Ok(answer) if answer.status.is_success() => {
                    answered += 1;
                    let body = answer.body;
                    assert!(body["results"].as_array().unwrap().len() <= 3);
                    assert_eq!(body["count"], 1);
                }
                Ok(answer) => {
                    statuses.insert(answer.status.as_u16());
                }
                Err(_) => drops += 1,
            }
        }
        assert_eq!(statuses, BTreeSet::from([429, 500, 503]), "{version:?}");
        assert!(drops > 0);
        api.get("/api/users").await.error(404, 10);
    }
}
