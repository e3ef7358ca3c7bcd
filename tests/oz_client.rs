//! The Oz client against servers on loopback: a small scriptable fake (axum) for shapes that are
//! easy to fake, and a raw TCP server for dropped connections.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc, clippy::too_many_lines)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use ozform::model::{ApiVersion, CompanyPatch, Email, NewCompany, NewUser, Permissions, UserKind, UserPatch};
use ozform::oz::{ClientConfig, OzClient, OzError, RetryPolicy, UserFilter, VersionSetting};
use ozform::secret::Secret;

const ADMIN: &str = "admin@fake.local";
const PASSWORD: &str = "canary-admin-password-7731";

// ---------------------------------------------------------------------------------------------
// The fake Oz API.

#[derive(Debug, Clone, Copy, Default, PartialEq)]
enum Envelope {
    #[default]
    Bare,
    Items,
    ResultsCount,
    DataTotal,
}

#[derive(Debug, Default)]
struct Knobs {
    envelope: Envelope,
    /// The server gives at most this many items whatever `limit` says.
    cap: Option<usize>,
    ignore_offset: bool,
    /// Apply `email` / `company_id` filters (a server may ignore them).
    honour_filters: bool,
    /// Answer the next N requests (after login) with 429 and `Retry-After: 0`.
    throttle_next: usize,
    /// Answer the next N requests (after login) with 503.
    unavailable_next: usize,
    /// Forget every session once this many list pages have been served.
    expire_after_pages: Option<usize>,
    /// Create the object, then answer 500.
    fail_after_create: bool,
    /// Collections answer only without a trailing slash (404 with it).
    bare_collections_only: bool,
    /// Collections with a trailing slash answer a redirect to the bare form.
    redirect_slashed: bool,
    /// The status of an auth-expired answer (401 by default; some servers say 403).
    expired_status: Option<u16>,
    /// A create commits and answers 201 with a body that is not JSON.
    garbled_create: bool,
    /// Hold each request this long, so that concurrent ones overlap.
    hold: Duration,
    /// Hold each users page at this offset or later until as many such pages as the barrier
    /// counts are in flight together (10 s at most, so that a client asking for them one at a
    /// time fails the test instead of hanging it).
    gate_pages_from: Option<(usize, Arc<tokio::sync::Barrier>)>,
}

#[derive(Debug, Default)]
struct Fake {
    knobs: Knobs,
    companies: Vec<Value>,
    users: Vec<Value>,
    sessions: HashSet<String>,
    expire_tokens: HashSet<String>,
    /// `METHOD path?query` of every request, in arrival order.
    log: Vec<String>,
    user_agents: HashSet<String>,
    logins: usize,
    refreshes: usize,
    pages_served: usize,
    in_flight: usize,
    max_in_flight: usize,
    next_id: usize,
    /// Raw bodies of POST/PATCH requests to users and tokens, to check the dialect encoding.
    bodies: Vec<(String, Value)>,
}

type Shared = Arc<Mutex<Fake>>;

fn answer(status: u16, body: &Value) -> Response {
    (StatusCode::from_u16(status).unwrap(), axum::Json(body.clone())).into_response()
}

fn api_error(status: u16, code: i64, message: &str) -> Response {
    answer(status, &json!({"error_code": code, "error_message": message, "details": null}))
}

fn new_session(f: &mut Fake) -> Value {
    f.next_id += 1;
    let (access, expire) = (format!("tok-{}", f.next_id), format!("exp-{}", f.next_id));
    f.sessions.insert(access.clone());
    f.expire_tokens.insert(expire.clone());
    json!({"access_token": access, "expire_token": expire, "expire_date": 1_904_659_888.282_587,
           "user": {"user_id": "admin-id", "user_type": "ADMIN"}})
}

fn token_answer(f: &mut Fake, user_id: &str) -> Response {
    f.next_id += 1;
    answer(
        200,
        &json!({"token_id": format!("t-{}", f.next_id), "user_id": user_id,
                "access_token": format!("service-secret-{}", f.next_id), "expire_date": 1_904_659_888, "session_id": 0}),
    )
}

async fn handle(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (hold, gate) = {
        let mut f = shared.lock().unwrap();
        f.in_flight += 1;
        f.max_in_flight = f.max_in_flight.max(f.in_flight);
        (f.knobs.hold, f.knobs.gate_pages_from.clone())
    };
    if !hold.is_zero() {
        tokio::time::sleep(hold).await;
    }
    let offset = uri.query().unwrap_or("").split('&').find_map(|kv| kv.strip_prefix("offset="));
    if let (Some((from, barrier)), Some(offset)) = (gate, offset)
        && uri.path().starts_with("/api/users")
        && offset.parse::<usize>().unwrap() >= from
    {
        let _ = tokio::time::timeout(Duration::from_secs(10), barrier.wait()).await;
    }
    let response = respond(&shared, &method, &uri, &headers, &body);
    shared.lock().unwrap().in_flight -= 1;
    response
}

fn respond(shared: &Shared, method: &Method, uri: &Uri, headers: &HeaderMap, body: &Bytes) -> Response {
    let mut guard = shared.lock().unwrap();
    let f = &mut *guard;
    let raw_path = uri.path().to_string();
    f.log.push(format!("{method} {}", uri.path_and_query().map_or(raw_path.as_str(), |p| p.as_str())));
    if let Some(ua) = headers.get("user-agent").and_then(|v| v.to_str().ok()) {
        f.user_agents.insert(ua.to_string());
    }
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let query: HashMap<String, String> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace("%40", "@")))
        .collect();

    match (method.as_str(), raw_path.as_str()) {
        ("POST", "/api/authorize/auth") => {
            let ok = body["credentials"]["email"] == ADMIN && body["credentials"]["password"] == PASSWORD;
            if !ok {
                // A careless server that echoes what it was sent.
                let echo = format!("invalid credentials: {}", body["credentials"]);
                return api_error(401, 7, &echo);
            }
            f.logins += 1;
            let s = new_session(f);
            return answer(200, &s);
        }
        ("POST", "/api/authorize/refresh") => {
            let expire = body["expire_token"].as_str().unwrap_or_default().to_string();
            if !f.expire_tokens.remove(&expire) {
                return api_error(401, 8, "Session not found");
            }
            f.refreshes += 1;
            let s = new_session(f);
            return answer(200, &s);
        }
        _ => {}
    }
    let token = headers.get("x-forensic-access-token").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !f.sessions.contains(token) {
        return api_error(f.knobs.expired_status.unwrap_or(401), 8, "auth expired");
    }
    if f.knobs.throttle_next > 0 {
        f.knobs.throttle_next -= 1;
        let mut r = api_error(429, 0, "slow down");
        r.headers_mut().insert("retry-after", "0".parse().unwrap());
        return r;
    }
    if f.knobs.unavailable_next > 0 {
        f.knobs.unavailable_next -= 1;
        return api_error(503, 0, "unavailable");
    }
    let is_collection =
        matches!(raw_path.as_str(), "/api/users/" | "/api/companies/" | "/api/users" | "/api/companies");
    if is_collection && f.knobs.bare_collections_only && raw_path.ends_with('/') {
        return api_error(404, 10, "not found");
    }
    if is_collection && f.knobs.redirect_slashed && raw_path.ends_with('/') {
        let location = raw_path.trim_end_matches('/').to_string();
        return (StatusCode::MOVED_PERMANENTLY, [("location", location)]).into_response();
    }
    let path = raw_path.trim_end_matches('/');
    match (method.as_str(), path) {
        ("GET", "/api/users" | "/api/companies") => {
            let items = if path == "/api/users" { &f.users } else { &f.companies };
            let honour = f.knobs.honour_filters;
            let matching: Vec<Value> = items
                .iter()
                .filter(|item| {
                    !honour
                        || ["email", "company_id", "name"].iter().all(|k| {
                            query.get(*k).is_none_or(|want| item[*k].as_str() == Some(want.as_str()))
                        })
                })
                .cloned()
                .collect();
            let offset =
                if f.knobs.ignore_offset { 0 } else { query.get("offset").map_or(0, |o| o.parse().unwrap()) };
            let mut limit: usize = query.get("limit").map_or(100, |l| l.parse().unwrap());
            if let Some(cap) = f.knobs.cap {
                limit = limit.min(cap);
            }
            let total = matching.len();
            let page: Vec<Value> = matching.into_iter().skip(offset).take(limit).collect();
            f.pages_served += 1;
            if f.knobs.expire_after_pages == Some(f.pages_served) {
                f.sessions.clear();
            }
            let body = match f.knobs.envelope {
                Envelope::Bare => Value::Array(page),
                Envelope::Items => json!({"items": page}),
                Envelope::ResultsCount => json!({"results": page, "count": total}),
                Envelope::DataTotal => json!({"data": page, "total": total}),
            };
            answer(200, &body)
        }
        ("POST", "/api/companies") => {
            f.next_id += 1;
            let company = json!({"company_id": format!("c-{}", f.next_id), "name": body["name"],
                                 "in_deletion": false, "technical_meta_data": body.get("technical_meta_data").cloned().unwrap_or(json!({}))});
            f.companies.push(company.clone());
            if f.knobs.fail_after_create {
                api_error(500, 0, "internal error")
            } else if f.knobs.garbled_create {
                (StatusCode::CREATED, "<html>created</html>").into_response()
            } else {
                answer(201, &company)
            }
        }
        ("POST", "/api/users") => {
            f.bodies.push((raw_path.clone(), body.clone()));
            f.next_id += 1;
            let mut user = body["profile"].as_object().cloned().unwrap_or_default();
            user.insert("user_id".into(), json!(format!("u-{}", f.next_id)));
            user.insert("email".into(), body["credentials"]["email"].clone());
            let user = Value::Object(user);
            f.users.push(user.clone());
            if f.knobs.fail_after_create { api_error(500, 0, "internal error") } else { answer(201, &user) }
        }
        ("POST", "/api/authorize/service_token") => {
            f.bodies.push((raw_path.clone(), body.clone()));
            let user_id = body["user_id"].as_str().unwrap_or_default().to_string();
            token_answer(f, &user_id)
        }
        ("POST", p) if p.starts_with("/api/authorize/service_token/") => {
            f.bodies.push((raw_path.clone(), body.clone()));
            let user_id = p.rsplit('/').next().unwrap_or_default().to_string();
            token_answer(f, &user_id)
        }
        ("PATCH", p) if p.starts_with("/api/users/") || p.starts_with("/api/companies/") => {
            f.bodies.push((raw_path.clone(), body.clone()));
            let id = p.rsplit('/').next().unwrap_or_default();
            let (items, key) = if p.starts_with("/api/users/") {
                (&mut f.users, "user_id")
            } else {
                (&mut f.companies, "company_id")
            };
            let Some(item) = items.iter_mut().find(|i| i[key] == id) else {
                return api_error(404, 10, "not found");
            };
            for (k, v) in body.as_object().cloned().unwrap_or_default() {
                item[k.as_str()] = v;
            }
            answer(200, item)
        }
        _ => api_error(404, 10, "not found"),
    }
}

struct Server {
    url: String,
    fake: Shared,
}

impl Server {
    async fn start(fake: Fake) -> Self {
        let fake = Arc::new(Mutex::new(fake));
        let app = Router::new().fallback(handle).with_state(fake.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Server { url, fake }
    }
    fn with<R>(&self, f: impl FnOnce(&mut Fake) -> R) -> R {
        f(&mut self.fake.lock().unwrap())
    }
    fn config(&self) -> ClientConfig {
        config(&self.url)
    }
    /// A fake with `n` users (`fake_with_users`) and the knobs `knobs` sets.
    async fn with_users(n: usize, knobs: impl FnOnce(&mut Knobs)) -> Self {
        let mut fake = fake_with_users(n);
        knobs(&mut fake.knobs);
        Self::start(fake).await
    }
    async fn client(&self) -> OzClient {
        OzClient::connect(self.config()).await.unwrap()
    }
    /// A client of the test configuration as `adjust` changes it.
    async fn client_with(&self, adjust: impl FnOnce(&mut ClientConfig)) -> OzClient {
        let mut cfg = self.config();
        adjust(&mut cfg);
        OzClient::connect(cfg).await.unwrap()
    }
    /// Requests logged so far whose `METHOD path?query` starts with `prefix`.
    fn count(&self, prefix: &str) -> usize {
        self.with(|f| f.log.iter().filter(|l| l.starts_with(prefix)).count())
    }
}

fn config(url: &str) -> ClientConfig {
    let mut c = ClientConfig::new(url, ADMIN, Secret::new(PASSWORD));
    c.retry = RetryPolicy {
        max_attempts: 4,
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        max_elapsed: Duration::from_secs(10),
    };
    c.request_timeout = Duration::from_secs(5);
    c
}

fn v6_user(i: usize, company: &str) -> Value {
    json!({"user_id": format!("u{i}"), "email": format!("user{i}@x.test"), "company_id": company,
           "user_type": "CLIENT_SERVICE", "is_service": true, "is_active": true,
           "first_name": "F", "last_name": "L", "middle_name": null,
           "can_start_analysis_biometry": true, "can_start_analysis_collection": true,
           "can_start_analysis_documents": false, "can_start_analysis_quality": true, "extra_field": [1, 2]})
}

fn v5_user(i: usize, company: &str) -> Value {
    json!({"user_id": format!("u{i}"), "email": format!("user{i}@x.test"), "company_id": company,
           "user_type": "CLIENT", "is_service": true, "is_active": true,
           "first_name": "F", "last_name": "L",
           "can_start_analyse_biometry": true, "can_start_analyse_collection": true,
           "can_start_analyse_documents": false, "can_start_analyse_quality": true})
}

fn fake_with_users(n: usize) -> Fake {
    Fake {
        companies: vec![
            json!({"company_id": "c1", "name": "Acme"}),
            json!({"company_id": "c2", "name": "Beta"}),
        ],
        users: (0..n).map(|i| v6_user(i, if i % 2 == 0 { "c1" } else { "c2" })).collect(),
        ..Fake::default()
    }
}

/// An update that turns off the `quality` permission and nothing else.
fn quality_off() -> UserPatch {
    UserPatch {
        permissions: Permissions { quality: Some(false), ..Permissions::default() },
        ..UserPatch::default()
    }
}

fn new_company(name: &str) -> NewCompany {
    NewCompany { name: name.into(), technical_meta_data: None }
}

fn new_user(email: &str) -> NewUser {
    NewUser {
        email: Email::new(email),
        company_id: "c1".into(),
        first_name: "New".into(),
        last_name: "User".into(),
        middle_name: String::new(),
        password: Secret::new("canary-user-password-4410"),
        active: true,
        permissions: Permissions { documents: Some(false), ..Permissions::default() },
    }
}

// ---------------------------------------------------------------------------------------------
// Session and headers.

#[tokio::test]
async fn connect_logs_in_and_every_request_carries_the_session_token_and_user_agent() {
    let server = Server::start(fake_with_users(3)).await;
    let client = server.client().await;
    assert_eq!(client.api_version(), ApiVersion::V6);
    assert_eq!(client.api_url(), server.url);
    let users = client.list_users(&UserFilter::default()).await.unwrap();
    assert_eq!(users.len(), 3);
    // Every request after login passed the token check (the fake answers 401 otherwise).
    server.with(|f| {
        assert_eq!(f.logins, 1);
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(f.user_agents, HashSet::from([format!("ozform/{version}")]));
    });
}

#[tokio::test]
async fn a_refused_login_names_the_account_but_never_the_password() {
    let server = Server::start(Fake::default()).await;
    let mut cfg = server.config();
    cfg.admin_password = Secret::new("canary-wrong-password-0042");
    let err = OzClient::connect(cfg).await.unwrap_err();
    assert!(matches!(err, OzError::Login { status: 401, .. }), "{err:?}");
    let shown = format!("{err} {err:?}");
    assert!(shown.contains(ADMIN), "{shown}");
    assert!(!shown.contains("canary"), "{shown}");
    assert!(shown.contains("(sensitive)"), "the echoed password was blanked out: {shown}");
}

#[tokio::test]
async fn a_session_that_expires_in_the_middle_of_a_listing_is_renewed_once_and_the_listing_completes() {
    let server = Server::with_users(250, |k| k.expire_after_pages = Some(2)).await;
    let client = server.client_with(|c| c.api_version = VersionSetting::Fixed(ApiVersion::V6)).await;
    let users = client.list_users(&UserFilter::default()).await.unwrap();
    assert_eq!(users.len(), 250);
    server.with(|f| assert_eq!((f.logins, f.refreshes), (1, 1), "one refresh, no new login"));
}

#[tokio::test]
async fn concurrent_requests_share_one_renewal_of_an_expired_session() {
    let server = Server::start(fake_with_users(10)).await;
    let client = server.client().await;
    server.with(|f| {
        f.sessions.clear();
        f.knobs.hold = Duration::from_millis(5);
    });
    let finds = (0..8).map(|i| {
        let client = client.clone();
        async move { client.find_user(&Email::new(format!("USER{i}@x.test"))).await }
    });
    let found = futures::future::join_all(finds).await;
    for (i, f) in found.into_iter().enumerate() {
        assert_eq!(f.unwrap().map(|u| u.id), Some(format!("u{i}")));
    }
    server.with(|f| assert_eq!(f.logins + f.refreshes, 2, "the first login, then one shared renewal"));
}

// ---------------------------------------------------------------------------------------------
// Paging.

#[tokio::test]
async fn every_envelope_shape_lists_every_item_in_pages() {
    for envelope in [Envelope::Bare, Envelope::Items, Envelope::ResultsCount, Envelope::DataTotal] {
        let server = Server::with_users(250, |k| k.envelope = envelope).await;
        let client = server.client().await;
        let before = server.count("GET /api/users");
        let users = client.list_users(&UserFilter::default()).await.unwrap();
        assert_eq!(users.len(), 250, "{envelope:?}");
        let ids: HashSet<_> = users.iter().map(|u| u.id.clone()).collect();
        assert_eq!(ids.len(), 250, "{envelope:?}: no duplicates");
        // 100 + 100 + 50: a short page (or the total) ends the listing.
        assert_eq!(server.count("GET /api/users") - before, 3, "{envelope:?}");
        let companies = client.list_companies().await.unwrap();
        assert_eq!(companies.len(), 2, "{envelope:?}");
        assert_eq!(companies[0].technical_meta_data, json!({}), "missing meta data reads as empty");
    }
}

#[tokio::test]
async fn a_server_that_caps_limit_is_paged_at_its_own_page_size() {
    let server = Server::with_users(95, |k| k.cap = Some(30)).await;
    let client = server.client().await;
    let before = server.with(|f| f.log.len());
    let users = client.list_users(&UserFilter::default()).await.unwrap();
    assert_eq!(users.len(), 95);
    assert_eq!(users.iter().map(|u| u.id.as_str()).collect::<HashSet<_>>().len(), 95);
    // 30 + 30 + 30 + 5 at offsets stepped by the server's 30, never the 100 asked for: the
    // first page alone, then 2, then 4 at once (no total, so windows double while pages are
    // full); the 5 at offset 90 end the list, the 2 pages after it were asked for with it.
    let offsets = server.with(|f| users_page_offsets(&f.log[before..]));
    assert_eq!(offsets, [0, 30, 60, 90, 120, 150, 180]);
}

#[tokio::test]
async fn a_server_that_ignores_offset_is_a_paging_error_naming_the_path() {
    let server = Server::with_users(150, |k| k.ignore_offset = true).await;
    let client = server.client_with(|c| c.api_version = VersionSetting::Fixed(ApiVersion::V6)).await;
    let err = client.list_users(&UserFilter::default()).await.unwrap_err();
    match &err {
        OzError::Paging { path, reason } => {
            assert!(path.ends_with("/api/users/"), "{path}");
            assert!(reason.contains("offset"), "{reason}");
        }
        other => panic!("expected a paging error, got {other:?}"),
    }
}

/// The `offset` of each users page request in `log`, in arrival order.
fn users_page_offsets(log: &[String]) -> Vec<usize> {
    log.iter()
        .filter(|l| l.starts_with("GET /api/users"))
        .map(|l| {
            let offset = l.split(['?', '&']).find_map(|kv| kv.strip_prefix("offset="));
            offset.unwrap_or_else(|| panic!("no offset in `{l}`")).parse().unwrap()
        })
        .collect()
}

#[tokio::test]
async fn without_a_total_the_next_pages_are_asked_for_together_in_doubling_windows() {
    // 650 users in pages of 100 and no total: the page at 0 alone, then 100 and 200 together,
    // then 300 to 600 together; the short page at 600 ends the list. The gate holds the four
    // pages from 300 on until all four are in flight: a client asking for them one at a time
    // would stall on it (10 s) and see at most one in flight.
    let barrier = Arc::new(tokio::sync::Barrier::new(4));
    let server = Server::with_users(650, |k| k.gate_pages_from = Some((300, barrier))).await;
    let client = server.client_with(|c| c.api_version = VersionSetting::Fixed(ApiVersion::V6)).await;
    server.with(|f| {
        f.log.clear();
        f.max_in_flight = 0;
    });
    let users = client.list_users(&UserFilter::default()).await.unwrap();
    assert_eq!(users.len(), 650);
    assert_eq!(users.iter().map(|u| u.id.as_str()).collect::<HashSet<_>>().len(), 650);
    let mut offsets = server.with(|f| users_page_offsets(&f.log));
    // Arrival order within one window is the network's; the windows follow one another.
    offsets[1..3].sort_unstable();
    offsets[3..].sort_unstable();
    assert_eq!(offsets, [0, 100, 200, 300, 400, 500, 600]);
    assert_eq!(server.with(|f| f.max_in_flight), 4, "the window of four was in flight at once");
}

#[tokio::test]
async fn a_window_is_never_wider_than_max_in_flight_and_one_means_one_page_at_a_time() {
    for (max_in_flight, expected) in [
        (1, vec![0, 100, 200, 300, 400, 500, 600]),
        // Windows of 1, 2, 2, 2: 0 | 100 200 | 300 400 | 500 600.
        (2, vec![0, 100, 200, 300, 400, 500, 600]),
    ] {
        let server = Server::with_users(650, |_| {}).await;
        let client = server.client_with(|c| c.max_in_flight = max_in_flight).await;
        server.with(|f| {
            f.log.clear();
            f.max_in_flight = 0;
        });
        assert_eq!(client.list_users(&UserFilter::default()).await.unwrap().len(), 650);
        assert_eq!(server.with(|f| users_page_offsets(&f.log)), expected, "max_in_flight {max_in_flight}");
        assert!(server.with(|f| f.max_in_flight) <= max_in_flight, "max_in_flight {max_in_flight}");
    }
}

#[tokio::test]
async fn page_size_is_configurable() {
    let server = Server::start(fake_with_users(50)).await;
    let client = server.client_with(|c| c.page_size = 20).await;
    let before = server.count("GET /api/users");
    assert_eq!(client.list_users(&UserFilter::default()).await.unwrap().len(), 50);
    assert_eq!(server.count("GET /api/users") - before, 3);
    assert!(server.with(|f| f.log.iter().any(|l| l.contains("limit=20"))));
}

// ---------------------------------------------------------------------------------------------
// Filters.

#[tokio::test]
async fn filters_are_sent_and_applied_again_when_the_server_ignores_them() {
    for honour in [false, true] {
        let server = Server::with_users(40, |k| k.honour_filters = honour).await;
        let client = server.client().await;
        let found = client.find_user(&Email::new("User7@X.test")).await.unwrap();
        assert_eq!(found.map(|u| u.id), Some("u7".to_string()));
        assert!(
            server.with(|f| f
                .log
                .iter()
                .any(|l| l.contains("email=user7%40x.test") || l.contains("email=User7")))
        );
        assert_eq!(client.find_user(&Email::new("nobody@x.test")).await.unwrap(), None);
        let companies = client.find_companies("Beta").await.unwrap();
        assert_eq!(companies.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["c2"]);
        let observed = client.observe(&["Acme".to_string()]).await.unwrap();
        assert_eq!(observed.companies.len(), 1);
        assert_eq!(observed.users.len(), 20, "honour={honour}");
        assert!(observed.users.iter().all(|u| u.company_id.as_deref() == Some("c1")));
        assert!(server.with(|f| f.log.iter().any(|l| l.contains("company_id=c1"))));
    }
}

#[tokio::test]
async fn observe_for_some_companies_finds_a_declared_email_living_in_another_company() {
    // Users alternate between Acme (c1, even) and Beta (c2, odd); the server honours filters.
    let server = Server::with_users(40, |k| k.honour_filters = true).await;
    let client = server.client().await;
    let acme = ["Acme".to_string()];
    let keys = |emails: &[&str]| emails.iter().map(|e| Email::new(*e).key()).collect::<HashSet<String>>();
    let unfiltered = |s: &Server| {
        s.count("GET /api/users/?offset=0&limit=100")
            - s.count("GET /api/users/?offset=0&limit=100&company_id")
    };

    // Every declared user is among Acme's: no listing beyond Acme's users.
    let before = unfiltered(&server);
    let observed = client.observe_for(&acme, &keys(&["user0@x.test", "USER2@x.test"])).await.unwrap();
    assert_eq!(unfiltered(&server), before, "{:?}", server.with(|f| f.log.clone()));
    assert_eq!(observed.users.len(), 20);
    assert_eq!(observed.companies.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["Acme"]);

    // user7 lives in Beta and user99 nowhere: every user is listed once more, user7 and Beta
    // (to name it) are added, nothing else of Beta's.
    let observed =
        client.observe_for(&acme, &keys(&["user0@x.test", "user7@x.test", "user99@x.test"])).await.unwrap();
    assert_eq!(unfiltered(&server), before + 1);
    assert_eq!(observed.users.len(), 21);
    let user7 = observed.users.iter().find(|u| u.email == Email::new("user7@x.test")).unwrap();
    assert_eq!(user7.company_id.as_deref(), Some("c2"));
    assert_eq!(observed.companies.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["Acme", "Beta"]);
}

#[tokio::test]
async fn observe_without_companies_reads_everything_in_neutral_form() {
    let server = Server::start(fake_with_users(5)).await;
    let client = server.client().await;
    let observed = client.observe(&[]).await.unwrap();
    assert_eq!((observed.companies.len(), observed.users.len()), (2, 5));
    assert_eq!(observed.api_version, ApiVersion::V6);
    let u = &observed.users[0];
    assert_eq!(u.kind, UserKind::Service);
    assert!(!u.permissions.documents && u.permissions.biometry);
    assert_eq!(u.middle_name, "", "null reads as empty");
}

// ---------------------------------------------------------------------------------------------
// Retries.

#[tokio::test]
async fn rate_limited_reads_are_retried_after_retry_after() {
    let server = Server::start(fake_with_users(5)).await;
    let client = server.client().await;
    server.with(|f| f.knobs.throttle_next = 2);
    assert_eq!(client.list_users(&UserFilter::default()).await.unwrap().len(), 5);
    assert_eq!(server.with(|f| f.knobs.throttle_next), 0);
}

#[tokio::test]
async fn a_rate_limited_create_is_retried_because_the_server_did_not_act() {
    let server = Server::start(fake_with_users(0)).await;
    let client = server.client_with(|c| c.api_version = VersionSetting::Fixed(ApiVersion::V6)).await;
    server.with(|f| f.knobs.throttle_next = 1);
    let c = client.create_company(&new_company("Gamma")).await.unwrap();
    assert_eq!(c.name, "Gamma");
    assert_eq!(server.count("POST /api/companies"), 2);
}

#[tokio::test]
async fn unavailable_reads_are_retried_but_an_unavailable_create_is_not() {
    let server = Server::start(fake_with_users(5)).await;
    let client = server.client().await;
    server.with(|f| f.knobs.unavailable_next = 2);
    assert_eq!(client.list_users(&UserFilter::default()).await.unwrap().len(), 5);

    server.with(|f| f.knobs.unavailable_next = 1);
    let err = client.create_user(&new_user("new@x.test")).await.unwrap_err();
    assert_eq!(err.status(), Some(503));
    assert!(err.outcome_unknown());
    assert_eq!(server.count("POST /api/users"), 1, "never re-sent");
}

#[tokio::test]
async fn reads_give_up_after_the_configured_attempts() {
    let server = Server::start(fake_with_users(5)).await;
    let client = server.client().await;
    server.with(|f| f.knobs.unavailable_next = 100);
    let before = server.count("GET /api/users");
    let err = client.list_users(&UserFilter::default()).await.unwrap_err();
    assert_eq!(err.status(), Some(503));
    assert_eq!(server.count("GET /api/users") - before, 4);
    let shown = err.to_string();
    assert!(shown.contains("GET") && shown.contains("/api/users/") && shown.contains("503"), "{shown}");
    assert!(shown.contains("error_code 0: unavailable"), "{shown}");
}

#[tokio::test]
async fn a_create_answered_500_after_committing_is_outcome_unknown_and_found_by_natural_key() {
    let server = Server::start(fake_with_users(2)).await;
    let client = server.client().await;
    server.with(|f| f.knobs.fail_after_create = true);
    let err = client.create_user(&new_user("Adopt@x.test")).await.unwrap_err();
    assert!(err.outcome_unknown(), "{err:?}");
    assert_eq!(server.count("POST /api/users"), 1, "a create is never re-sent");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("canary"), "{shown}");
    let adopted = client.find_user(&Email::new("adopt@X.test")).await.unwrap().unwrap();
    assert_eq!(adopted.kind, UserKind::Service);
    assert!(!adopted.permissions.documents);

    let err = client.create_company(&new_company("Delta")).await.unwrap_err();
    assert!(err.outcome_unknown());
    assert_eq!(client.find_companies("Delta").await.unwrap().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Dropped and refused connections (a raw TCP server).

/// Accept connections; read each request whole, then answer it with `reply` when `answers`
/// says so for its number (1 for the first) and drop the connection otherwise. Counts requests.
async fn raw_server(answers: fn(usize) -> bool, reply: &'static str) -> (String, Arc<Mutex<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(0usize));
    let counter = seen.clone();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                // Read until the end of the headers and the announced body.
                loop {
                    let n = socket.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap())
                            })
                            .unwrap_or(0);
                        if got.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                let n = {
                    let mut c = counter.lock().unwrap();
                    *c += 1;
                    *c
                };
                if answers(n) {
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
                        reply.len()
                    );
                    socket.write_all(response.as_bytes()).await.unwrap();
                }
                // Dropping the socket closes the connection, answered or not.
            });
        }
    });
    (url, seen)
}

const LOGIN_REPLY: &str =
    r#"{"access_token":"a","expire_token":"e","expire_date":1904659888,"user":{"user_type":"ADMIN"}}"#;

#[tokio::test]
async fn a_dropped_login_is_retried_up_to_the_attempt_bound() {
    // The first connection is dropped, the second answered: a session call is safe to repeat.
    let (url, seen) = raw_server(|n| n > 1, LOGIN_REPLY).await;
    let mut cfg = config(&url);
    cfg.api_version = VersionSetting::Fixed(ApiVersion::V6);
    OzClient::connect(cfg).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), 2);

    let (url, seen) = raw_server(|_| false, LOGIN_REPLY).await;
    let err = OzClient::connect(config(&url)).await.unwrap_err();
    assert!(matches!(err, OzError::Transport { .. }), "{err:?}");
    assert_eq!(*seen.lock().unwrap(), 4, "max_attempts is 4");
}

#[tokio::test]
async fn a_create_whose_connection_drops_is_outcome_unknown_and_sent_once() {
    let (url, seen) = raw_server(|n| n == 1, LOGIN_REPLY).await;
    let mut cfg = config(&url);
    cfg.api_version = VersionSetting::Fixed(ApiVersion::V6);
    let client = OzClient::connect(cfg).await.unwrap();
    let err = client.create_company(&new_company("X")).await.unwrap_err();
    assert!(err.outcome_unknown(), "{err:?}");
    assert!(matches!(err, OzError::Transport { .. }));
    assert_eq!(*seen.lock().unwrap(), 2, "login, then the create once");
    // A read that meets the same failure is retried up to the attempt bound.
    let err = client.list_companies().await.unwrap_err();
    assert!(matches!(err, OzError::Transport { .. }));
    assert_eq!(*seen.lock().unwrap(), 2 + 4);
}

#[tokio::test]
async fn a_refused_connection_is_a_transport_error_with_a_known_outcome() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let err = OzClient::connect(config(&url)).await.unwrap_err();
    match &err {
        OzError::Transport { method, path, outcome_unknown, .. } => {
            assert_eq!(method, "POST");
            assert!(path.ends_with("/api/authorize/auth"), "{path}");
            assert!(!outcome_unknown);
        }
        other => panic!("expected a transport error, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Trailing slash.

#[tokio::test]
async fn a_collection_that_404s_with_a_trailing_slash_is_tried_once_without_it_and_remembered() {
    let server = Server::with_users(5, |k| k.bare_collections_only = true).await;
    let client = server.client().await;
    assert_eq!(client.list_users(&UserFilter::default()).await.unwrap().len(), 5);
    let slashed = server.count("GET /api/users/");
    assert_eq!(client.list_users(&UserFilter::default()).await.unwrap().len(), 5);
    assert_eq!(server.count("GET /api/users/"), slashed, "the working form is remembered");
    let c = client.create_company(&new_company("Slash")).await.unwrap();
    assert_eq!(c.name, "Slash");
    assert_eq!(server.count("POST /api/companies"), 1, "collections are sent in the form that worked");
    assert_eq!(server.count("POST /api/companies/"), 0);
    assert_eq!(server.with(|f| f.companies.len()), 3);
}

// ---------------------------------------------------------------------------------------------
// Read-only, concurrency.

#[tokio::test]
async fn a_read_only_client_refuses_every_mutation_before_sending_it() {
    let server = Server::start(fake_with_users(2)).await;
    let client = server.client_with(|c| c.read_only = true).await;
    let before = server.with(|f| f.log.len());
    let results = [
        client.create_company(&new_company("No")).await.map(|_| ()),
        client
            .update_company("c1", &CompanyPatch { name: Some("No".into()), ..CompanyPatch::default() })
            .await
            .map(|_| ()),
        client.create_user(&new_user("no@x.test")).await.map(|_| ()),
        client
            .update_user("u0", &UserPatch { active: Some(false), ..UserPatch::default() })
            .await
            .map(|_| ()),
        client.issue_token("u0").await.map(|_| ()),
    ];
    for r in results {
        assert!(matches!(r, Err(OzError::ReadOnly { .. })), "{r:?}");
    }
    assert_eq!(server.with(|f| f.log.len()), before, "nothing was sent");
    assert_eq!(client.list_users(&UserFilter::default()).await.unwrap().len(), 2, "reads still work");
}

#[tokio::test]
async fn requests_in_flight_never_exceed_max_in_flight() {
    let server = Server::start(fake_with_users(10)).await;
    let client = server.client_with(|c| c.max_in_flight = 2).await;
    server.with(|f| f.knobs.hold = Duration::from_millis(5));
    let finds = (0..10).map(|i| {
        let client = client.clone();
        async move { client.find_user(&Email::new(format!("user{i}@x.test"))).await }
    });
    for r in futures::future::join_all(finds).await {
        assert!(r.unwrap().is_some());
    }
    let max = server.with(|f| f.max_in_flight);
    assert!((1..=2).contains(&max), "{max}");
}

// ---------------------------------------------------------------------------------------------
// Dialects.

#[tokio::test]
async fn api_6_writes_client_service_and_analysis_spelling_and_the_token_path() {
    let server = Server::start(fake_with_users(1)).await;
    let client = server.client().await;
    let u = client.create_user(&new_user("six@x.test")).await.unwrap();
    assert_eq!(u.kind, UserKind::Service);
    let patched = client.update_user(&u.id, &quality_off()).await.unwrap();
    assert!(!patched.permissions.quality);
    let token = client.issue_token(&u.id).await.unwrap();
    assert_eq!(token.user_id, u.id);
    assert!((token.expire_date - 1_904_659_888.0).abs() < 1e-6);
    assert_eq!(format!("{:?}", token.access_token), "(sensitive)");
    server.with(|f| {
        let (_, create) = &f.bodies[0];
        assert_eq!(create["profile"]["user_type"], "CLIENT_SERVICE");
        assert_eq!(create["profile"]["can_start_analysis_documents"], false);
        assert_eq!(f.bodies[1].1, json!({"can_start_analysis_quality": false}));
        assert_eq!(f.bodies[2].0, format!("/api/authorize/service_token/{}", u.id));
    });
}

#[tokio::test]
async fn api_5_writes_client_with_is_service_and_analyse_spelling_and_the_token_body() {
    let fake = Fake { users: vec![v5_user(0, "c1")], ..Fake::default() };
    let server = Server::start(fake).await;
    let client = server.client().await;
    assert_eq!(client.api_version(), ApiVersion::V5, "detected from the users list");
    let u = client.create_user(&new_user("five@x.test")).await.unwrap();
    assert_eq!(u.kind, UserKind::Service);
    assert!(!u.permissions.documents);
    client.update_user(&u.id, &quality_off()).await.unwrap();
    let token = client.issue_token(&u.id).await.unwrap();
    assert_eq!(token.user_id, u.id);
    server.with(|f| {
        let (_, create) = &f.bodies[0];
        assert_eq!(create["profile"]["user_type"], "CLIENT");
        assert_eq!(create["profile"]["is_service"], true);
        assert_eq!(create["profile"]["can_start_analyse_documents"], false);
        assert_eq!(f.bodies[1].1, json!({"can_start_analyse_quality": false}));
        assert_eq!(f.bodies[2], ("/api/authorize/service_token".to_string(), json!({"user_id": u.id})));
    });
}

#[tokio::test]
async fn auto_detection_that_cannot_decide_asks_for_api_version() {
    let fake = Fake {
        users: vec![json!({"user_id": "a", "email": ADMIN, "user_type": "ADMIN"})],
        ..Fake::default()
    };
    let server = Server::start(fake).await;
    let err = OzClient::connect(server.config()).await.unwrap_err();
    match &err {
        OzError::Config { help: Some(help), .. } => assert!(help.contains("--api-version"), "{help}"),
        other => panic!("expected a config error, got {other:?}"),
    }
    let mut cfg = server.config();
    cfg.api_version = VersionSetting::Fixed(ApiVersion::V5);
    assert_eq!(OzClient::connect(cfg).await.unwrap().api_version(), ApiVersion::V5);
}

// ---------------------------------------------------------------------------------------------
// Secrets, configuration.

#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every log line of this test binary from the first call on, at trace level. Global (not a
/// scoped default) because tracing caches per-callsite interest across threads.
fn captured_logs() -> LogBuffer {
    static LOGS: std::sync::OnceLock<LogBuffer> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = LogBuffer::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        logs
    })
    .clone()
}

#[tokio::test]
async fn no_password_or_token_reaches_the_logs_at_trace_level() {
    let logs = captured_logs();
    let server = Server::start(fake_with_users(3)).await;
    let client = server.client().await;
    let user = client.create_user(&new_user("logged@x.test")).await.unwrap();
    let token = client.issue_token(&user.id).await.unwrap();
    server.with(|f| f.sessions.clear());
    client.list_users(&UserFilter::default()).await.unwrap();

    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).to_string();
    assert!(text.contains("oz_request{method=POST path=/api/users/"), "requests are traced in spans");
    assert!(text.contains("status=201"));
    let canaries = [PASSWORD, "canary", token.access_token.expose(), "service-secret", "tok-", "exp-"];
    for secret in canaries {
        assert!(!text.contains(secret), "`{secret}` leaked into the logs");
    }
}

#[tokio::test]
async fn a_session_that_cannot_be_refreshed_is_replaced_by_a_new_login() {
    let server = Server::start(fake_with_users(3)).await;
    let client = server.client().await;
    server.with(|f| {
        f.sessions.clear();
        f.expire_tokens.clear();
    });
    assert_eq!(client.list_users(&UserFilter::default()).await.unwrap().len(), 3);
    server.with(|f| assert_eq!((f.logins, f.refreshes), (2, 0)));
}

#[tokio::test]
async fn patches_are_retried_because_the_same_body_twice_leaves_the_same_state() {
    let server = Server::start(fake_with_users(3)).await;
    let client = server.client().await;
    server.with(|f| f.knobs.unavailable_next = 1);
    let c = client
        .update_company("c1", &CompanyPatch { name: Some("Acme 2".into()), ..CompanyPatch::default() })
        .await
        .unwrap();
    assert_eq!(c.name, "Acme 2");
    assert_eq!(server.count("PATCH /api/companies/c1"), 2);
}

#[tokio::test]
async fn bad_connection_settings_are_config_errors_before_any_request() {
    for url in ["not a url", "ftp://example.com"] {
        let err = OzClient::connect(config(url)).await.unwrap_err();
        assert!(matches!(err, OzError::Config { .. }), "{url}: {err:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config("https://127.0.0.1:9");
    cfg.ca_cert = Some(dir.path().join("missing.pem"));
    let err = OzClient::connect(cfg.clone()).await.unwrap_err();
    assert!(err.to_string().contains("missing.pem"), "{err}");
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    cfg.ca_cert = Some(not_pem);
    let err = OzClient::connect(cfg).await.unwrap_err();
    assert!(matches!(err, OzError::Config { .. }), "{err:?}");
}

/// An HTTPS server with a certificate from the test CA in `tests/fixtures/tls`, answering every
/// request with an admin login (enough for `connect` with a fixed dialect).
async fn tls_login_server() -> String {
    use tokio_rustls::rustls::pki_types::pem::PemObject as _;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(dir.join("server.pem")).unwrap().map(Result::unwrap).collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let tls = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that does not trust the CA aborts the handshake: nothing to answer.
                let Ok(mut stream) = acceptor.accept(tcp).await else { return };
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // Read the head and the (small) body the Content-Length announces.
                loop {
                    let Ok(n) = stream.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text
                            .lines()
                            .find_map(|l| {
                                l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0))
                            })
                            .unwrap_or(0usize);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                let body = json!({"access_token": "tls-session", "expire_token": "tls-refresh",
                                  "expire_date": 4_102_444_800.0_f64,
                                  "user": {"user_id": "admin", "user_type": "ADMIN"}})
                .to_string();
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    url
}

#[tokio::test]
async fn a_private_ca_given_with_ca_cert_is_trusted_and_without_it_the_server_is_refused() {
    let url = tls_login_server().await;
    let mut cfg = config(&url);
    cfg.api_version = VersionSetting::Fixed(ApiVersion::V6);
    cfg.retry = RetryPolicy::none();

    // Without the CA: the certificate is not trusted, and the error says it is a TLS matter.
    let err = OzClient::connect(cfg.clone()).await.unwrap_err();
    assert!(matches!(err, OzError::Transport { .. }), "{err:?}");
    assert!(err.to_string().contains("certificate"), "{err}");

    cfg.ca_cert = Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls/ca.pem"));
    let client = OzClient::connect(cfg).await.expect("the private CA is trusted");
    assert_eq!(client.api_version(), ApiVersion::V6);
}

// ---------------------------------------------------------------------------------------------
// Against the built-in emulator.

use ozform::emulator::{self, EmulatorConfig, Faults, Handle, Quirks};

async fn emulator(version: ApiVersion, seed: Option<emulator::Snapshot>) -> Handle {
    let mut cfg = EmulatorConfig::new(version);
    cfg.seed = seed;
    emulator::start(cfg).await.unwrap()
}

fn emulator_config(handle: &Handle) -> ClientConfig {
    let mut c = config(&handle.url());
    c.admin_email = handle.admin_email().to_string();
    c.admin_password = handle.admin_password().clone();
    c
}

/// A client of the emulator's admin account, its configuration as `adjust` changes it.
async fn emulator_client(handle: &Handle, adjust: impl FnOnce(&mut ClientConfig)) -> OzClient {
    let mut cfg = emulator_config(handle);
    adjust(&mut cfg);
    OzClient::connect(cfg).await.unwrap()
}

/// One company and `n` service users in it, spelled as `version` stores them.
fn seed(version: ApiVersion, n: usize) -> emulator::Snapshot {
    let company = emulator::CompanyRecord::new("Seeded");
    let users = (0..n)
        .map(|i| {
            let user_type = if version == ApiVersion::V6 { "CLIENT_SERVICE" } else { "CLIENT" };
            let mut u = emulator::UserRecord::new(
                format!("svc{i}@seed.test"),
                user_type.into(),
                Some(company.company_id.clone()),
            );
            u.is_service = true;
            u
        })
        .collect();
    emulator::Snapshot { companies: vec![company], users, ..emulator::Snapshot::default() }
}

fn emulated_user(email: &str, company_id: &str) -> NewUser {
    NewUser { company_id: company_id.to_string(), ..new_user(email) }
}

#[tokio::test]
async fn the_client_detects_and_speaks_both_dialects_of_the_emulator() {
    for version in [ApiVersion::V5, ApiVersion::V6] {
        let handle = emulator(version, None).await;
        let client = emulator_client(&handle, |_| {}).await;
        assert_eq!(client.api_version(), version);
        let company = client
            .create_company(&NewCompany {
                name: "Acme".into(),
                technical_meta_data: Some(json!({"tier": "gold"})),
            })
            .await
            .unwrap();
        let created = client.create_user(&emulated_user("Svc@Acme.test", &company.id)).await.unwrap();
        assert_eq!(created.kind, UserKind::Service, "{version:?}");
        let patch = UserPatch {
            active: Some(false),
            permissions: Permissions { quality: Some(false), ..Permissions::default() },
            ..UserPatch::default()
        };
        client.update_user(&created.id, &patch).await.unwrap();
        let token = client.issue_token(&created.id).await.unwrap();
        assert_eq!(token.user_id, created.id);
        assert!(token.expire_date > 1.0e9);

        let observed = client.observe(&[]).await.unwrap();
        assert_eq!(observed.api_version, version);
        let user = observed.users.iter().find(|u| u.email == Email::new("svc@acme.test")).unwrap();
        assert_eq!(user.kind, UserKind::Service, "{version:?}");
        assert_eq!(user.company_id.as_deref(), Some(company.id.as_str()));
        assert!(!user.active);
        let p = user.permissions;
        assert_eq!(
            (p.biometry, p.collection, p.documents, p.quality),
            (true, true, false, false),
            "{version:?}"
        );
        assert_eq!(observed.companies[0].technical_meta_data, json!({"tier": "gold"}));
        assert_eq!(handle.stats().creates_per_email.get("svc@acme.test"), Some(&1));
    }
}

#[tokio::test]
async fn an_emulator_session_expiring_in_the_middle_of_a_listing_is_renewed_and_the_listing_completes() {
    let handle = emulator(ApiVersion::V6, Some(seed(ApiVersion::V6, 250))).await;
    // Pages one at a time: every 5th request finds every session expired, so a listing of 26
    // pages meets it 5 times, each time with one request.
    let client = emulator_client(&handle, |c| {
        c.page_size = 10;
        c.max_in_flight = 1;
    })
    .await;
    handle.set_faults(Faults { expire_sessions_every: 5, ..Faults::default() });
    let users = client.list_users(&UserFilter::default()).await.unwrap();
    assert_eq!(users.len(), 251, "250 seeded and the admin");
    let refreshes = |h: &Handle| h.stats().requests_by_route.get("POST /api/authorize/refresh").copied();
    assert!(refreshes(&handle) >= Some(4), "{:?}", refreshes(&handle));

    // Pages in windows of up to 16: every 25th request finds every session expired, so the
    // 26 pages (and the 5 asked for past the end) meet it with a window in flight, which one
    // shared renewal serves. (An expiry every few requests, shorter than a window, is not a
    // case a 15-minute sliding session produces: see the e2e test of apply.)
    let client = emulator_client(&handle, |c| c.page_size = 10).await;
    handle.set_faults(Faults::default());
    handle.reset_stats();
    handle.set_faults(Faults { expire_sessions_every: 25, ..Faults::default() });
    let users = client.list_users(&UserFilter::default()).await.unwrap();
    assert_eq!(users.len(), 251, "250 seeded and the admin");
    assert!(refreshes(&handle) >= Some(1), "{:?}", refreshes(&handle));
}

#[tokio::test]
async fn concurrent_calls_share_one_renewal_when_the_emulator_expires_every_session() {
    let handle = emulator(ApiVersion::V5, Some(seed(ApiVersion::V5, 20))).await;
    let client = emulator_client(&handle, |_| {}).await;
    handle.expire_all_sessions();
    handle.reset_stats();
    let finds = (0..10).map(|i| {
        let client = client.clone();
        async move { client.find_user(&Email::new(format!("svc{i}@seed.test"))).await }
    });
    for r in futures::future::join_all(finds).await {
        assert!(r.unwrap().is_some());
    }
    let stats = handle.stats();
    let renewals = ["POST /api/authorize/refresh", "POST /api/authorize/auth"]
        .iter()
        .map(|k| stats.requests_by_route.get(*k).copied().unwrap_or(0))
        .sum::<u64>();
    assert_eq!(renewals, 1, "{stats:?}");
}

#[tokio::test]
async fn emulator_429s_with_retry_after_are_retried_until_every_call_succeeds() {
    let handle = emulator(ApiVersion::V6, Some(seed(ApiVersion::V6, 30))).await;
    let client = emulator_client(&handle, |c| {
        c.page_size = 5;
        c.retry.max_attempts = 10;
    })
    .await;
    handle.set_faults(Faults { too_many_requests: 0.3, retry_after_secs: 0, seed: 11, ..Faults::default() });
    assert_eq!(client.list_users(&UserFilter::default()).await.unwrap().len(), 31);
    let company = client.create_company(&new_company("Busy")).await.unwrap();
    client.create_user(&emulated_user("busy@x.test", &company.id)).await.unwrap();
    let stats = handle.stats();
    assert_eq!(stats.creates_per_email.get("busy@x.test"), Some(&1));
    assert!(stats.total_requests > 8, "some requests were answered 429 and repeated: {stats:?}");
}

#[tokio::test]
async fn a_create_the_emulator_commits_then_fails_is_adopted_by_find_and_never_sent_twice() {
    for version in [ApiVersion::V5, ApiVersion::V6] {
        let handle = emulator(version, None).await;
        let client = emulator_client(&handle, |_| {}).await;
        handle.set_faults(Faults { commit_then_error: 1.0, ..Faults::default() });
        let err = client.create_company(&new_company("Half")).await.unwrap_err();
        assert!(err.outcome_unknown(), "{err:?}");
        handle.set_faults(Faults { commit_then_drop: 1.0, ..Faults::default() });
        let found = client.find_companies("Half").await.unwrap();
        assert_eq!(found.len(), 1);
        let err = client.create_user(&emulated_user("half@x.test", &found[0].id)).await.unwrap_err();
        assert!(err.outcome_unknown(), "{err:?}");
        assert!(matches!(err, OzError::Transport { .. }), "a dropped connection: {err:?}");
        handle.set_faults(Faults::default());
        let adopted = client.find_user(&Email::new("HALF@x.test")).await.unwrap().unwrap();
        assert_eq!(adopted.kind, UserKind::Service);
        let stats = handle.stats();
        assert_eq!(stats.creates_per_email.get("half@x.test"), Some(&1));
        assert_eq!(stats.requests_by_route.get("POST /api/users/"), Some(&1), "{stats:?}");
        assert_eq!(stats.requests_by_route.get("POST /api/companies/"), Some(&1), "{stats:?}");
    }
}

#[tokio::test]
async fn a_read_only_client_sends_no_mutating_request_to_the_emulator() {
    let handle = emulator(ApiVersion::V6, Some(seed(ApiVersion::V6, 3))).await;
    let client = emulator_client(&handle, |c| c.read_only = true).await;
    let observed = client.observe(&[]).await.unwrap();
    let company_id = observed.companies[0].id.clone();
    let err = client.create_company(&new_company("No")).await.unwrap_err();
    assert!(matches!(err, OzError::ReadOnly { .. }));
    let err = client.create_user(&emulated_user("no@x.test", &company_id)).await.unwrap_err();
    assert!(matches!(err, OzError::ReadOnly { .. }));
    let err = client.issue_token(&observed.users[0].id).await.unwrap_err();
    assert!(matches!(err, OzError::ReadOnly { .. }));
    assert_eq!(handle.stats().mutating_requests, 0);
}

#[tokio::test]
async fn listing_ten_thousand_users_takes_a_request_per_page_with_a_total_and_at_most_a_window_more_without()
{
    let handle = emulator(ApiVersion::V6, Some(seed(ApiVersion::V6, 10_000))).await;
    for (page_size, envelope) in [(500, emulator::Envelope::Bare), (1000, emulator::Envelope::Items)] {
        let mut cfg = emulator_config(&handle);
        cfg.page_size = page_size;
        cfg.api_version = VersionSetting::Fixed(ApiVersion::V6);
        handle.set_quirks(Quirks { envelope, ..Quirks::default() });
        let client = OzClient::connect(cfg).await.unwrap();
        handle.reset_stats();
        let users = client.list_users(&UserFilter::default()).await.unwrap();
        assert_eq!(users.len(), 10_001, "the seeded users and the admin");
        let pages = handle.stats().requests_by_route.get("GET /api/users/").copied().unwrap_or(0);
        let expected = match envelope {
            // No total: 21 pages (20 full, one short) asked for in windows of 1, 2, 4, 8 and
            // 16, the last one reaching 10 pages past the end.
            emulator::Envelope::Bare => 31,
            // A total: one page, then the 10 others at once; exactly one request per page.
            _ => 10_001_u64.div_ceil(page_size as u64),
        };
        assert_eq!(pages, expected, "page size {page_size}");
    }
}

#[tokio::test]
async fn the_emulator_quirks_are_tolerated_capped_limit_envelopes_ignored_filters_and_slashes() {
    let handle = emulator(ApiVersion::V5, Some(seed(ApiVersion::V5, 45))).await;
    handle.set_quirks(Quirks {
        envelope: emulator::Envelope::Results,
        total_field: emulator::TotalField::Count,
        max_limit: Some(7),
        ignore_filters: true,
        trailing_slash: emulator::TrailingSlash::Opposite,
        ..Quirks::default()
    });
    let client = emulator_client(&handle, |_| {}).await;
    assert_eq!(client.api_version(), ApiVersion::V5);
    assert_eq!(client.list_users(&UserFilter::default()).await.unwrap().len(), 46);
    let found = client.find_user(&Email::new("svc44@seed.test")).await.unwrap().unwrap();
    assert_eq!(found.email, Email::new("svc44@seed.test"));
    let company = client.find_companies("Seeded").await.unwrap();
    assert_eq!(company.len(), 1);
    let observed = client.observe(&["Seeded".to_string()]).await.unwrap();
    assert_eq!(observed.users.len(), 45);

    handle.set_quirks(Quirks { ignore_offset: true, ..Quirks::default() });
    let err = client.list_users(&UserFilter::default()).await.unwrap_err();
    assert!(matches!(err, OzError::Paging { .. }), "{err:?}");
}

#[tokio::test]
async fn reads_survive_a_mix_of_429_500_503_and_dropped_connections() {
    let handle = emulator(ApiVersion::V5, Some(seed(ApiVersion::V5, 60))).await;
    let client = emulator_client(&handle, |c| {
        c.page_size = 10;
        c.retry.max_attempts = 12;
    })
    .await;
    handle.set_faults(Faults {
        too_many_requests: 0.1,
        internal_error: 0.1,
        unavailable: 0.1,
        drop_connection: 0.1,
        retry_after_secs: 0,
        seed: 5,
        ..Faults::default()
    });
    let observed = client.observe(&[]).await.unwrap();
    assert_eq!((observed.companies.len(), observed.users.len()), (1, 61));
    assert_eq!(handle.stats().mutating_requests, 0);
}

/// What apply does with a create whose outcome is unknown or that meets a duplicate: read back
/// by natural key and adopt, never send it again blindly.
/// Returns the user and whether it was adopted.
async fn create_or_adopt_user(client: &OzClient, user: &NewUser) -> (ozform::model::ObservedUser, bool) {
    loop {
        match client.create_user(user).await {
            Ok(created) => return (created, false),
            Err(e) if e.outcome_unknown() || e.is_duplicate() => {
                if let Some(found) = client.find_user(&user.email).await.unwrap() {
                    return (found, true);
                }
            }
            Err(e) => panic!("{e:?}"),
        }
    }
}

#[tokio::test]
async fn every_tolerable_quirk_and_flaky_faults_still_give_exactly_one_create_per_user() {
    for version in [ApiVersion::V5, ApiVersion::V6] {
        let handle = emulator(version, None).await;
        handle.set_quirks(Quirks::tolerable());
        let client = emulator_client(&handle, |c| c.retry.max_attempts = 12).await;
        assert_eq!(client.api_version(), version, "detected through sparse objects and extra fields");
        let company = client.create_company(&new_company("Quirky")).await.unwrap();
        handle.set_faults(Faults::flaky(0.3, 17));
        let mut adopted = 0;
        for i in 0..12 {
            let (user, was_adopted) =
                create_or_adopt_user(&client, &emulated_user(&format!("q{i}@x.test"), &company.id)).await;
            assert_eq!(user.kind, UserKind::Service, "{version:?}");
            adopted += usize::from(was_adopted);
        }
        assert!(adopted > 0, "{version:?}: the faults hit some creates");
        handle.set_faults(Faults::default());
        let observed = client.observe(&["Quirky".to_string()]).await.unwrap();
        assert_eq!(observed.users.len(), 12, "{version:?}");
        let stats = handle.stats();
        for i in 0..12 {
            assert_eq!(
                stats.creates_per_email.get(&format!("q{i}@x.test")),
                Some(&1),
                "{version:?}: {stats:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_redirected_collection_is_tried_once_in_the_other_form_and_a_post_never_becomes_a_get() {
    let server = Server::with_users(4, |k| k.redirect_slashed = true).await;
    // A fixed version: no detection listing teaches the client the bare form before the create.
    let client = server.client_with(|c| c.api_version = VersionSetting::Fixed(ApiVersion::V6)).await;
    let c = client.create_company(&new_company("Moved")).await.unwrap();
    assert_eq!(c.name, "Moved");
    assert_eq!((server.count("POST /api/companies/"), server.count("POST /api/companies")), (1, 2));
    assert_eq!(server.count("GET /api/companies"), 0, "the redirect was not followed as a GET");
    assert_eq!(client.list_users(&UserFilter::default()).await.unwrap().len(), 4);
}

#[tokio::test]
async fn an_auth_error_code_renews_the_session_whatever_the_status() {
    let server = Server::with_users(4, |k| k.expired_status = Some(403)).await;
    let client = server.client().await;
    server.with(|f| f.sessions.clear());
    assert_eq!(client.list_users(&UserFilter::default()).await.unwrap().len(), 4);
    server.with(|f| assert_eq!(f.refreshes, 1));
}

#[tokio::test]
async fn a_create_answered_with_an_unreadable_body_is_outcome_unknown() {
    let server = Server::with_users(1, |k| k.garbled_create = true).await;
    let client = server.client().await;
    let err = client.create_company(&new_company("Garbled")).await.unwrap_err();
    assert!(matches!(err, OzError::Decode { .. }), "{err:?}");
    assert!(err.outcome_unknown(), "the company exists but its id is unknown: read back");
    assert!(!err.to_string().contains("<html>"), "no body in errors: {err}");
    assert_eq!(client.find_companies("Garbled").await.unwrap().len(), 1);
}
