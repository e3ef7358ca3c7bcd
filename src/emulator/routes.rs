//! The HTTP surface: the axum router of the Oz endpoints (each with and without its trailing
//! slash), request parsing into Oz error bodies, and the middleware that counts requests,
//! applies the trailing-slash quirk and injects faults. Handlers hold the `Db` lock for the
//! whole of one operation, so every request is atomic. Ids are UUIDs, as Oz documents: an id
//! that is not one (in a path, or the `user_id` of an API 5 token request) is an invalid value
//! (400, `error_code` 4), a UUID that names nothing does not exist (404, `error_code` 10).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use crate::model::ApiVersion;
use crate::secret::Secret;

use super::Shared;
use super::api_error::{ApiError, Code};
use super::db::{CompanyRecord, Db, Principal, SessionTokens, UserRecord};
use super::dialect::{self, CLIENT, CLIENT_SERVICE};
use super::faults::{After, Before};
use super::quirks::{self, DEFAULT_LIMIT, PageRequest, Quirks, Shape, SlashVerdict};
use super::request_log::{self, RequestLog, RequestRecord, Ticket};
use super::server::ConnDrop;

/// The header that carries an access token.
pub const TOKEN_HEADER: &str = "x-forensic-access-token";

type Reply = Result<Response, ApiError>;
type App = State<Arc<Shared>>;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let mut router = Router::new();
    let mut both = |path: &str, method_router: axum::routing::MethodRouter<Arc<Shared>>| {
        let other = match path.strip_suffix('/') {
            Some(bare) => bare.to_string(),
            None => format!("{path}/"),
        };
        router = std::mem::take(&mut router).route(path, method_router.clone()).route(&other, method_router);
    };
    both("/api/authorize/auth", post(login));
    both("/api/authorize/refresh", post(refresh));
    match shared.api_version {
        ApiVersion::V6 => both("/api/authorize/service_token/{user_id}", post(service_token_v6)),
        ApiVersion::V5 => both("/api/authorize/service_token", post(service_token_v5)),
    }
    both("/api/companies/", get(list_companies).post(create_company));
    both("/api/companies/{company_id}", get(get_company).patch(patch_company).delete(delete_company));
    both("/api/users/", get(list_users).post(create_user));
    both("/api/users/{user_id}", get(get_user).patch(patch_user).delete(delete_user));
    // Inspection for people running `ozform emulator` (not part of the Oz API, not counted in
    // stats): the state as JSON, which `--seed` reads back, and the counters.
    router = router.route("/_emulator/state", get(dump_state)).route("/_emulator/stats", get(dump_stats));
    router
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(shared.clone(), around))
        .with_state(shared)
}

// ---------------------------------------------------------------------------------------------
// Middleware: counting, request log, gate, capacity, trailing-slash quirk, faults, tracing.

/// What the middleware needs to know about the route a request matched.
struct RouteInfo {
    /// `"METHOD /canonical/path"`, the key of `Stats::requests_by_route`.
    key: String,
    collection: bool,
    auth: bool,
    mutating: bool,
    create: bool,
    matched: bool,
}

impl RouteInfo {
    fn of(method: &Method, matched: Option<&str>) -> Self {
        let Some(path) = matched else {
            return Self {
                key: "unmatched".into(),
                collection: false,
                auth: false,
                mutating: false,
                create: false,
                matched: false,
            };
        };
        let mut canonical = path.trim_end_matches('/').to_string();
        let collection = canonical.ends_with("/companies") || canonical.ends_with("/users");
        if collection {
            canonical.push('/');
        }
        let auth = canonical == "/api/authorize/auth" || canonical == "/api/authorize/refresh";
        let writes = matches!(*method, Method::POST | Method::PATCH | Method::DELETE);
        let create =
            *method == Method::POST && (collection || canonical.starts_with("/api/authorize/service_token"));
        Self {
            key: format!("{method} {canonical}"),
            collection,
            auth,
            mutating: writes && !auth,
            create,
            matched: true,
        }
    }
}

async fn around(State(shared): App, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    if path.starts_with("/_emulator/") {
        return next.run(request).await;
    }
    let route = RouteInfo::of(&method, request.extensions().get::<MatchedPath>().map(MatchedPath::as_str));
    let conn = request.extensions().get::<ConnDrop>().cloned();
    let user_agent = request.headers().get(header::USER_AGENT).and_then(|v| v.to_str().ok());
    let _in_flight = shared.stats.request(&route.key, route.mutating, user_agent);
    let offset = query_offset(request.uri().query());
    let (request, ticket) = match record(&shared.requests, request).await {
        Ok(recorded) => recorded,
        Err(response) => return response,
    };
    shared.gate.pass(&route.key, offset).await;

    // In line for one of `--capacity` places, held until the answer is made.
    let place = match &shared.capacity {
        Some(capacity) => capacity.enter(&shared.stats).await.map(Some),
        None => Ok(None),
    };
    let response = match place {
        Ok(_place) => handle_with_faults(&shared, &route, &path, conn, request, next).await,
        Err(waited) => shed(waited),
    };
    if let Some(ticket) = ticket {
        shared.requests.answered(ticket, response.status().as_u16());
    }

    if shared.log_requests {
        tracing::info!(
            method = %method,
            path = %path,
            route = %route.key,
            status = response.status().as_u16(),
            elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "emulator request"
        );
    }
    response
}

/// The `offset` query parameter (0 without one), which the gate looks at.
fn query_offset(query: Option<&str>) -> usize {
    query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("offset="))
        .and_then(|offset| offset.parse().ok())
        .unwrap_or(0)
}

/// Put the request in the request log when it is kept: its body is read (and put back) to keep
/// a redacted copy of its JSON.
async fn record(log: &RequestLog, request: Request) -> Result<(Request, Option<Ticket>), Response> {
    if !log.enabled() {
        return Ok((request, None));
    }
    let (parts, body) = request.into_parts();
    let mut entry = RequestRecord {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        body: None,
        status: None,
    };
    // The limit of axum's `Bytes` extractor, which reads the body next.
    let Ok(bytes) = axum::body::to_bytes(body, 2 * 1024 * 1024).await else {
        let refused = ApiError::structure("the request body could not be read");
        entry.status = Some(refused.status.as_u16());
        log.arrived(entry);
        return Err(refused.into_response());
    };
    entry.body = serde_json::from_slice::<Value>(&bytes).ok().map(|mut body| {
        request_log::redact(&mut body);
        body
    });
    let ticket = log.arrived(entry);
    Ok((Request::from_parts(parts, axum::body::Body::from(bytes)), Some(ticket)))
}

async fn handle_with_faults(
    shared: &Shared,
    route: &RouteInfo,
    path: &str,
    conn: Option<ConnDrop>,
    request: Request,
    next: Next,
) -> Response {
    if route.matched {
        let verdict = quirks::slash_verdict(shared.quirks().trailing_slash, path, route.collection);
        match verdict {
            SlashVerdict::Route => {}
            SlashVerdict::NotFound => return no_route_error(request.method(), path).into_response(),
            SlashVerdict::Redirect(target) => {
                let location = match request.uri().query() {
                    Some(query) => format!("{target}?{query}"),
                    None => target,
                };
                return (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, location)]).into_response();
            }
        }
    }
    let latency = shared.latency_ms();
    if latency > 0 {
        // Injected latency is the point of this sleep: it simulates a slow server.
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    if shared.faults_active() {
        let (expire, before) = {
            let mut injector = shared.injector();
            (injector.expire_sessions_now(), injector.before(route.auth))
        };
        if expire {
            shared.db().expire_all_sessions();
        }
        match before {
            Before::Handle => {}
            Before::TooManyRequests { retry_after_secs } => {
                let mut error = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    Code::Unknown,
                    "too many requests (injected fault)",
                );
                error.retry_after_secs = Some(retry_after_secs);
                return error.into_response();
            }
            Before::InternalError => return injected(StatusCode::INTERNAL_SERVER_ERROR),
            Before::Unavailable => return injected(StatusCode::SERVICE_UNAVAILABLE),
            Before::Drop => return drop_connection(conn).await,
        }
    }
    let response = next.run(request).await;
    if route.create && response.status().is_success() && shared.faults_active() {
        let after = shared.injector().after_commit();
        match after {
            After::Answer => {}
            After::InternalError => return injected(StatusCode::INTERNAL_SERVER_ERROR),
            After::Drop => return drop_connection(conn).await,
            After::Garbled => return garbled_created(),
        }
    }
    response
}

/// A 201 whose body is not JSON: the object exists, the client cannot read its id.
fn garbled_created() -> Response {
    let page = "<html><body><h1>201 Created</h1></body></html>";
    (StatusCode::CREATED, [(header::CONTENT_TYPE, "text/html")], page).into_response()
}

/// A request that waited too long in line for a place: 503, not handled.
fn shed(waited: Duration) -> Response {
    let message = format!("the server is busy: no worker was free within {} ms", waited.as_millis());
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, Code::Unknown, message).into_response()
}

fn injected(status: StatusCode) -> Response {
    let what = if status == StatusCode::SERVICE_UNAVAILABLE { "unavailable" } else { "internal error" };
    ApiError::new(status, Code::Unknown, format!("{what} (injected fault)")).into_response()
}

/// Close the connection without answering: signal the connection task, then never finish (the
/// task drops this future with the connection).
async fn drop_connection(conn: Option<ConnDrop>) -> Response {
    match conn {
        Some(conn) => {
            conn.drop_now();
            std::future::pending::<Response>().await
        }
        // Only the emulator's own accept loop serves this router, and it always sets `ConnDrop`.
        None => injected(StatusCode::INTERNAL_SERVER_ERROR),
    }
}

async fn no_route(method: Method, request: Request) -> ApiError {
    no_route_error(&method, request.uri().path())
}

fn no_route_error(method: &Method, path: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, Code::NotExist, format!("no route for `{method} {path}`"))
}

async fn method_not_allowed(method: Method, request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        Code::NotAllowed,
        format!("method `{method}` is not allowed on `{}`", request.uri().path()),
    )
}

async fn dump_state(State(shared): App) -> Response {
    let snapshot = shared.db().snapshot();
    axum::Json(snapshot).into_response()
}

async fn dump_stats(State(shared): App) -> Response {
    axum::Json(shared.stats.current()).into_response()
}

// ---------------------------------------------------------------------------------------------
// Parsing helpers.

fn body_object(body: &Bytes) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::structure("the request body must be a JSON object")),
        Err(_) => Err(ApiError::structure("the request body is not valid JSON")),
    }
}

fn opt_str<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::type_of(key, "a string")),
    }
}

fn opt_bool(obj: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::type_of(key, "a boolean")),
    }
}

fn opt_object<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a Map<String, Value>>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(ApiError::type_of(key, "an object")),
    }
}

fn required_str<'a>(obj: &'a Map<String, Value>, key: &str, name: &str) -> Result<&'a str, ApiError> {
    opt_str(obj, key)?.ok_or_else(|| ApiError::structure(format!("`{name}` is required")))
}

fn token(headers: &HeaderMap) -> Result<&str, ApiError> {
    headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok()).filter(|t| !t.is_empty()).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            Code::AuthNotProvided,
            "the `X-Forensic-Access-Token` header is missing",
        )
    })
}

/// The company `id` names: 400 (`error_code` 4, invalid value) when `id` is not a UUID, as the
/// Oz documentation gives for a malformed id, and 404 (`error_code` 10) when none has it.
fn find_company<'a>(db: &'a Db, id: &str) -> Result<&'a CompanyRecord, ApiError> {
    check_id("company", id)?;
    db.company(id).ok_or_else(|| ApiError::not_exist("company", id))
}

/// The user `id` names, refused as `find_company` refuses.
fn find_user<'a>(db: &'a Db, id: &str) -> Result<&'a UserRecord, ApiError> {
    check_id("user", id)?;
    db.user(id).ok_or_else(|| ApiError::not_exist("user", id))
}

fn check_id(what: &str, id: &str) -> Result<(), ApiError> {
    match uuid::Uuid::try_parse(id) {
        Ok(_) => Ok(()),
        Err(_) => Err(ApiError::value(format!("`{id}` is not a valid {what} id: ids are UUIDs"))
            .with_details(json!({ "field": format!("{what}_id") }))),
    }
}

/// Who sends this request. An expired session is 401 (`error_code` 8), or 403 under the
/// `auth_expired_403` quirk.
fn authenticate(shared: &Shared, db: &mut Db, headers: &HeaderMap) -> Result<Principal, ApiError> {
    db.authenticate(token(headers)?).map_err(|mut error| {
        if error.code == Code::AuthExpired && shared.quirks().auth_expired_403 {
            error.status = StatusCode::FORBIDDEN;
        }
        error
    })
}

fn require_admin(shared: &Shared, db: &mut Db, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let who = authenticate(shared, db, headers)?;
    if who.admin { Ok(who) } else { Err(ApiError::forbidden("this call needs an ADMIN session")) }
}

// Handlers end with `reply(..)`: returning the `Reply` here keeps each of them one flat chain.
#[expect(clippy::unnecessary_wraps)]
fn reply(status: StatusCode, body: Value) -> Reply {
    Ok((status, axum::Json(body)).into_response())
}

fn duplicate(quirks: &Quirks, message: String) -> ApiError {
    let status = if quirks.duplicate_conflict_409 { StatusCode::CONFLICT } else { StatusCode::BAD_REQUEST };
    ApiError::new(status, Code::InvalidValue, message)
}

/// `offset`, `limit` and `total_omit` of a list request.
/// What a list request asks, read the one way for every collection: its filters (the query)
/// and the page.
struct ListRequest {
    query: HashMap<String, String>,
    page: PageRequest,
    /// The client's `total_omit` parameter.
    omit_total: bool,
}

type ListQuery = Result<Query<HashMap<String, String>>, QueryRejection>;

impl ListRequest {
    fn read(query: ListQuery) -> Result<Self, ApiError> {
        let query =
            query.map(|Query(q)| q).map_err(|_| ApiError::structure("the query string is not valid"))?;
        let number = |key: &str, default: usize| -> Result<usize, ApiError> {
            match query.get(key) {
                None => Ok(default),
                Some(raw) => {
                    raw.trim().parse::<usize>().map_err(|_| ApiError::type_of(key, "a non-negative integer"))
                }
            }
        };
        let page = PageRequest { offset: number("offset", 0)?, limit: number("limit", DEFAULT_LIMIT)? };
        let omit_total = query.get("total_omit").is_some_and(|v| matches!(v.as_str(), "true" | "1" | "True"));
        Ok(Self { query, page, omit_total })
    }

    /// The filter `key`, unless the server ignores filters.
    fn filter(&self, key: &str, quirks: &Quirks) -> Option<&String> {
        self.query.get(key).filter(|_| !quirks.ignore_filters)
    }

    /// The page of `matching` (lazy, filtered, in list order), rendered by `render`.
    fn page<T>(
        &self,
        matching: impl Iterator<Item = T> + Clone,
        render: impl FnMut(T) -> Value,
        quirks: &Quirks,
    ) -> Value {
        quirks::page(matching, render, self.page, quirks, self.omit_total)
    }
}

// ---------------------------------------------------------------------------------------------
// authorize/*

fn session_body(shared: &Shared, tokens: &SessionTokens, user: &UserRecord) -> Value {
    let quirks = shared.quirks().clone();
    json!({
        "access_token": tokens.access_token,
        "expire_token": tokens.expire_token,
        "expire_date": quirks::expire_date(&quirks, tokens.expire_date),
        "user": user_out(shared.api_version, &quirks, user),
    })
}

/// A user as sent: the dialect's fields, shaped by the object quirks.
fn user_out(version: ApiVersion, quirks: &Quirks, user: &UserRecord) -> Value {
    quirks::shape(quirks, Shape::User, dialect::user_json(version, user))
}

/// A company as sent, shaped by the object quirks.
fn company_out(quirks: &Quirks, company: &CompanyRecord) -> Value {
    quirks::shape(quirks, Shape::Company, company_json(company))
}

async fn login(State(shared): App, body: Bytes) -> Reply {
    let body = body_object(&body)?;
    let credentials =
        opt_object(&body, "credentials")?.ok_or_else(|| ApiError::structure("`credentials` is required"))?;
    let email = required_str(credentials, "email", "credentials.email")?;
    let password = required_str(credentials, "password", "credentials.password")?;
    let (tokens, user) = shared.db().login(email, password, shared.session_ttl)?;
    reply(StatusCode::OK, session_body(&shared, &tokens, &user))
}

async fn refresh(State(shared): App, headers: HeaderMap, body: Bytes) -> Reply {
    let body = body_object(&body)?;
    let expire_token = opt_str(&body, "expire_token")?
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::structure("`expire_token` is required"))?;
    let caller = token(&headers)?;
    let (tokens, user) = shared.db().refresh(caller, expire_token, shared.session_ttl)?;
    reply(StatusCode::OK, session_body(&shared, &tokens, &user))
}

async fn service_token_v6(State(shared): App, headers: HeaderMap, Path(user_id): Path<String>) -> Reply {
    issue_service_token(&shared, &headers, &user_id)
}

async fn service_token_v5(State(shared): App, headers: HeaderMap, body: Bytes) -> Reply {
    // Authenticate before reading the body, as for every admin call.
    require_admin(&shared, &mut shared.db(), &headers)?;
    let body = body_object(&body)?;
    let user_id = required_str(&body, "user_id", "user_id")?;
    issue_service_token(&shared, &headers, user_id)
}

fn issue_service_token(shared: &Shared, headers: &HeaderMap, user_id: &str) -> Reply {
    let mut db = shared.db();
    require_admin(shared, &mut db, headers)?;
    let user = find_user(&db, user_id)?;
    if !dialect::is_service(shared.api_version, user) {
        return Err(ApiError::value(format!("user `{user_id}` is not a service user")));
    }
    let (record, access_token) = db.issue_service_token(user_id);
    drop(db);
    let expire_date = quirks::expire_date(&shared.quirks(), record.expire_date);
    reply(
        StatusCode::OK,
        json!({
            "token_id": record.token_id,
            "user_id": record.user_id,
            "access_token": access_token,
            "expire_date": expire_date,
            "session_id": 0,
        }),
    )
}

// ---------------------------------------------------------------------------------------------
// companies

fn company_json(company: &CompanyRecord) -> Value {
    json!({
        "company_id": company.company_id,
        "name": company.name,
        "in_deletion": company.in_deletion,
        "technical_meta_data": company.technical_meta_data,
    })
}

fn company_name(body: &Map<String, Value>) -> Result<Option<String>, ApiError> {
    match opt_str(body, "name")? {
        Some(name) if name.trim().is_empty() => Err(ApiError::value("`name` must not be empty")),
        other => Ok(other.map(str::to_string)),
    }
}

fn meta_data(body: &Map<String, Value>) -> Result<Option<Value>, ApiError> {
    Ok(opt_object(body, "technical_meta_data")?.map(|m| Value::Object(m.clone())))
}

async fn list_companies(State(shared): App, headers: HeaderMap, query: ListQuery) -> Reply {
    let list = ListRequest::read(query)?;
    let quirks = shared.quirks().clone();
    let mut db = shared.db();
    require_admin(&shared, &mut db, &headers)?;
    let name = list.filter("name", &quirks);
    let matching = db.companies().filter(|c| name.is_none_or(|n| &c.name == n));
    let body = list.page(matching, |c| company_out(&quirks, c), &quirks);
    drop(db);
    reply(StatusCode::OK, body)
}

async fn create_company(State(shared): App, headers: HeaderMap, body: Bytes) -> Reply {
    let quirks = shared.quirks().clone();
    let mut db = shared.db();
    require_admin(&shared, &mut db, &headers)?;
    let body = body_object(&body)?;
    let name = company_name(&body)?.ok_or_else(|| ApiError::structure("`name` is required"))?;
    if quirks.unique_company_names && db.live_company_named(&name).is_some() {
        return Err(duplicate(&quirks, format!("a company named `{name}` already exists")));
    }
    let mut company = CompanyRecord::new(name.clone());
    if let Some(meta) = meta_data(&body)? {
        company.technical_meta_data = meta;
    }
    let answer = company_out(&quirks, &company);
    db.insert_company(company);
    drop(db);
    shared.stats.company_created(&name);
    reply(StatusCode::CREATED, answer)
}

async fn get_company(State(shared): App, headers: HeaderMap, Path(id): Path<String>) -> Reply {
    let quirks = shared.quirks().clone();
    let mut db = shared.db();
    require_admin(&shared, &mut db, &headers)?;
    let company = find_company(&db, &id)?;
    reply(StatusCode::OK, company_out(&quirks, company))
}

async fn patch_company(State(shared): App, headers: HeaderMap, Path(id): Path<String>, body: Bytes) -> Reply {
    let quirks = shared.quirks().clone();
    let mut db = shared.db();
    require_admin(&shared, &mut db, &headers)?;
    let company = find_company(&db, &id)?;
    if company.in_deletion {
        return Err(ApiError::value(format!("company `{id}` is being deleted")));
    }
    let body = body_object(&body)?;
    let name = company_name(&body)?;
    let meta = meta_data(&body)?;
    if let Some(name) = &name {
        let taken = db.live_company_named(name).is_some_and(|c| c.company_id != id);
        if quirks.unique_company_names && taken {
            return Err(duplicate(&quirks, format!("a company named `{name}` already exists")));
        }
    }
    let company = db.company_mut(&id).ok_or_else(|| ApiError::not_exist("company", &id))?;
    if let Some(name) = name {
        company.name = name;
    }
    if let Some(meta) = meta {
        company.technical_meta_data = meta;
    }
    reply(StatusCode::OK, company_out(&quirks, company))
}

async fn delete_company(State(shared): App, headers: HeaderMap, Path(id): Path<String>) -> Reply {
    let linger = shared.quirks().keep_deleted_companies;
    let mut db = shared.db();
    require_admin(&shared, &mut db, &headers)?;
    if find_company(&db, &id)?.in_deletion {
        return Err(ApiError::not_exist("company", &id));
    }
    db.delete_company(&id, linger);
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---------------------------------------------------------------------------------------------
// users

/// Check where a user of `user_type` may belong: `CLIENT*` users in a live company, platform
/// users (ADMIN, OPERATOR) in none.
fn check_company(db: &Db, user_type: &str, company_id: Option<&str>) -> Result<(), ApiError> {
    match (dialect::needs_company(user_type), company_id) {
        (true, None) => Err(ApiError::value(format!("`company_id` is required for `{user_type}` users"))),
        (true, Some(id)) => match db.company(id) {
            Some(c) if !c.in_deletion => Ok(()),
            _ => Err(ApiError::value(format!("company `{id}` does not exist"))
                .with_details(json!({ "field": "company_id" }))),
        },
        (false, Some(_)) => Err(ApiError::value(format!("`{user_type}` users belong to no company"))),
        (false, None) => Ok(()),
    }
}

/// Names, activity, roles and permission flags from a profile (create or update).
fn apply_profile(
    version: ApiVersion,
    user: &mut UserRecord,
    profile: &Map<String, Value>,
) -> Result<(), ApiError> {
    let permissions = dialect::read_permissions(version, profile, user.permissions)?;
    let first = opt_str(profile, "first_name")?;
    let last = opt_str(profile, "last_name")?;
    let middle = opt_str(profile, "middle_name")?;
    let active = opt_bool(profile, "is_active")?;
    let service = opt_bool(profile, "is_service")?;
    let admin = opt_bool(profile, "is_admin")?;
    user.permissions = permissions;
    if let Some(v) = first {
        user.first_name = v.to_string();
    }
    if let Some(v) = last {
        user.last_name = v.to_string();
    }
    if let Some(v) = middle {
        user.middle_name = v.to_string();
    }
    if let Some(v) = active {
        user.is_active = v;
    }
    if let Some(v) = service {
        user.is_service = v;
    }
    if let Some(v) = admin {
        user.is_admin = v;
    }
    if user.user_type == CLIENT_SERVICE {
        user.is_service = true;
    }
    Ok(())
}

fn check_email(email: &str) -> Result<String, ApiError> {
    let email = email.trim();
    if email.is_empty() || !email.contains('@') {
        return Err(ApiError::value("`credentials.email` is not an email address"));
    }
    Ok(email.to_string())
}

async fn list_users(State(shared): App, headers: HeaderMap, query: ListQuery) -> Reply {
    let list = ListRequest::read(query)?;
    let quirks = shared.quirks().clone();
    let mut db = shared.db();
    require_admin(&shared, &mut db, &headers)?;
    let email = list.filter("email", &quirks).map(|e| e.to_lowercase());
    let company = list.filter("company_id", &quirks);
    let render = |u| user_out(shared.api_version, &quirks, u);
    let body = if email.is_none() && company.is_none() {
        // Every user: the page starts at its offset at once (pages of 100,000 users stay cheap).
        let count = db.user_count();
        let from = db.users_from(quirks::page_offset(list.page, &quirks));
        quirks::page_from(from, || count, render, list.page, &quirks, list.omit_total)
    } else {
        let matching = db
            .users()
            .filter(|u| email.as_ref().is_none_or(|e| &u.email.to_lowercase() == e))
            .filter(|u| company.is_none_or(|c| u.company_id.as_ref() == Some(c)));
        list.page(matching, render, &quirks)
    };
    drop(db);
    reply(StatusCode::OK, body)
}

async fn create_user(State(shared): App, headers: HeaderMap, body: Bytes) -> Reply {
    let quirks = shared.quirks().clone();
    let version = shared.api_version;
    let mut db = shared.db();
    require_admin(&shared, &mut db, &headers)?;
    let body = body_object(&body)?;
    let credentials =
        opt_object(&body, "credentials")?.ok_or_else(|| ApiError::structure("`credentials` is required"))?;
    let email = check_email(required_str(credentials, "email", "credentials.email")?)?;
    let password = required_str(credentials, "password", "credentials.password")?;
    if password.is_empty() {
        return Err(ApiError::value("`credentials.password` must not be empty"));
    }
    let empty = Map::new();
    let profile = opt_object(&body, "profile")?.unwrap_or(&empty);
    let user_type = opt_str(profile, "user_type")?.unwrap_or(CLIENT);
    dialect::check_user_type(version, user_type)?;
    let company_id = opt_str(profile, "company_id")?;
    check_company(&db, user_type, company_id)?;
    if db.user_by_email(&email).is_some() {
        return Err(duplicate(&quirks, format!("a user with email `{email}` already exists")));
    }
    let mut user = UserRecord::new(email, user_type.to_string(), company_id.map(str::to_string));
    apply_profile(version, &mut user, profile)?;
    user.password = Some(Secret::new(password));
    let answer = user_out(version, &quirks, &user);
    let email = user.email.clone();
    db.insert_user(user);
    drop(db);
    shared.stats.user_created(&email);
    reply(StatusCode::CREATED, answer)
}

async fn get_user(State(shared): App, headers: HeaderMap, Path(id): Path<String>) -> Reply {
    let quirks = shared.quirks().clone();
    let mut db = shared.db();
    let who = authenticate(&shared, &mut db, &headers)?;
    // A non-admin may read itself (this is how a service token proves it works), nothing else.
    if !who.admin && who.user_id != id {
        return Err(ApiError::forbidden("this call needs an ADMIN session"));
    }
    let user = find_user(&db, &id)?;
    reply(StatusCode::OK, user_out(shared.api_version, &quirks, user))
}

async fn patch_user(State(shared): App, headers: HeaderMap, Path(id): Path<String>, body: Bytes) -> Reply {
    let quirks = shared.quirks().clone();
    let version = shared.api_version;
    let mut db = shared.db();
    require_admin(&shared, &mut db, &headers)?;
    let current = find_user(&db, &id)?.clone();
    let body = body_object(&body)?;
    // The update may come as `{"profile": {...}}` (as on create) or as flat fields.
    let profile = opt_object(&body, "profile")?.unwrap_or(&body);
    let credentials = opt_object(&body, "credentials")?;
    let mut user = current.clone();
    if let Some(user_type) = opt_str(profile, "user_type")? {
        dialect::check_user_type(version, user_type)?;
        if current.user_type == CLIENT_SERVICE && user_type != CLIENT_SERVICE {
            // Leaving the API 6 service role leaves the service flag it implied (unless re-sent).
            user.is_service = false;
        }
        user.user_type = user_type.to_string();
    }
    if let Some(company_id) = opt_str(profile, "company_id")? {
        user.company_id = Some(company_id.to_string());
    }
    if !dialect::needs_company(&user.user_type)
        && current.company_id.is_some()
        && user.company_id == current.company_id
    {
        // Becoming a platform user leaves the company.
        user.company_id = None;
    }
    if user.company_id != current.company_id || user.user_type != current.user_type {
        check_company(&db, &user.user_type, user.company_id.as_deref())?;
    }
    if let Some(credentials) = credentials {
        if let Some(email) = opt_str(credentials, "email")? {
            let email = check_email(email)?;
            if db.user_by_email(&email).is_some_and(|u| u.user_id != id) {
                return Err(duplicate(&quirks, format!("a user with email `{email}` already exists")));
            }
            user.email = email;
        }
        if let Some(password) = opt_str(credentials, "password")? {
            if password.is_empty() {
                return Err(ApiError::value("`credentials.password` must not be empty"));
            }
            user.password = Some(Secret::new(password));
        }
    }
    apply_profile(version, &mut user, profile)?;
    let answer = user_out(version, &quirks, &user);
    db.update_user(&id, |stored| *stored = user);
    reply(StatusCode::OK, answer)
}

async fn delete_user(State(shared): App, headers: HeaderMap, Path(id): Path<String>) -> Reply {
    let mut db = shared.db();
    let who = require_admin(&shared, &mut db, &headers)?;
    find_user(&db, &id)?;
    if who.user_id == id {
        return Err(ApiError::value("a user cannot delete itself"));
    }
    db.delete_user(&id);
    Ok(StatusCode::NO_CONTENT.into_response())
}
