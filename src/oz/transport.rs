//! The HTTP core: one function, `Transport::send`, through which every request passes.
//!
//! It enforces, in this order: the read-only guard, the concurrency bound (a semaphore shared
//! by all calls), the adaptive limit when there is one (`limiter`, told how each attempt
//! went), `max_rps`, the session token, re-login once on an auth failure (shared by
//! concurrent requests), the trailing-slash fallback, and the retry policy of `retry`. It logs one debug event per attempt (method, path, status, duration) and never
//! logs a header or a body: they hold passwords and tokens. Redirects are not followed (a
//! redirected POST would silently become a GET); like a 404 or 405 they trigger the
//! trailing-slash fallback instead: the same request once more with the other form of the path
//! (`/api/users/` ↔ `/api/users`). Safe for every method, since such an answer means the
//! request was not acted on. The form that worked is remembered per class of path (collections,
//! which are documented with a slash, and the others, documented without), so a server that
//! routes only the other form costs one extra request per class, not one per request.
//!
//! A body is read as it streams in and never past `max_response_bytes` (`--max-response-bytes`):
//! a `Content-Length` beyond it is refused before reading, a longer body (chunked, or whatever
//! it announced) as soon as it crosses it; neither is retried. A body that never ends but stays
//! under the bound (a drip) is ended by the whole-request timeout, like any other slow answer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode, header};
use serde_json::Value;
use tokio::sync::Semaphore;
use tracing::Instrument;

use super::OzError;
use super::config::ClientConfig;
use super::limiter::{Limiter, Sample, route_key};
use super::observer::{Attempt, Route};
use super::paging::PageCap;
use super::retry::{Failure, Repeat, Retrier, parse_retry_after};
use super::session::{AUTH_PATH, AdminSession, REFRESH_PATH};
use super::throttle::Throttle;
use crate::secret::Secret;

/// The header that carries the session token (not `Authorization`).
pub const TOKEN_HEADER: &str = "X-Forensic-Access-Token";

/// Which token a request carries.
#[derive(Debug, Clone)]
pub enum Auth {
    /// The current admin session; renewed on an auth failure (at most `MAX_RENEWALS` times per request).
    Session,
    /// This token, never renewed (refresh).
    Token(Secret),
    /// None (login).
    Anonymous,
}

/// One logical request (possibly several attempts).
#[derive(Debug, Clone)]
pub struct Call<'a> {
    pub method: Method,
    pub path: String,
    pub query: Vec<(&'static str, String)>,
    pub body: Option<&'a Value>,
    pub repeat: Repeat,
    pub auth: Auth,
}

impl<'a> Call<'a> {
    pub fn get(path: impl Into<String>) -> Self {
        Self {
            method: Method::GET,
            path: path.into(),
            query: Vec::new(),
            body: None,
            repeat: Repeat::Safe,
            auth: Auth::Session,
        }
    }
    pub fn patch(path: impl Into<String>, body: &'a Value) -> Self {
        Self { method: Method::PATCH, body: Some(body), ..Self::get(path) }
    }
    /// A DELETE: safe to send again (a second one finds the object gone: 404).
    pub fn delete(path: impl Into<String>) -> Self {
        Self { method: Method::DELETE, ..Self::get(path) }
    }
    /// A POST that creates something: never re-sent once the server may have acted on it.
    pub fn create(path: impl Into<String>, body: &'a Value) -> Self {
        Self { method: Method::POST, body: Some(body), repeat: Repeat::OnlyIfNotProcessed, ..Self::get(path) }
    }
    pub fn query(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.query.push((key, value.into()));
        self
    }
}

/// Why one attempt got no usable answer.
#[derive(Debug)]
pub(super) enum Failed {
    /// The HTTP exchange failed: no connection, a timeout, a dropped connection.
    Http(reqwest::Error),
    /// The body is longer than `max_response_bytes`.
    TooLarge,
}

/// What is reserved up front for a body, at most, whatever `Content-Length` announces: the
/// buffer grows with what actually arrives.
const PREALLOCATE: usize = 1024 * 1024;

/// Read a response's body, at most `cap` bytes: a `Content-Length` past the cap is refused
/// before a byte is read, and any body (chunked, or longer than it announced) is refused as soon
/// as it would pass the cap, so no more than `cap` bytes are ever held.
pub(super) async fn read_body(mut response: reqwest::Response, cap: usize) -> Result<Vec<u8>, Failed> {
    let announced = response.content_length();
    if announced.is_some_and(|n| n > u64::try_from(cap).unwrap_or(u64::MAX)) {
        return Err(Failed::TooLarge);
    }
    let reserve = announced.map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX)).min(PREALLOCATE);
    let mut body = Vec::with_capacity(reserve);
    while let Some(chunk) = response.chunk().await.map_err(Failed::Http)? {
        if chunk.len() > cap.saturating_sub(body.len()) {
            return Err(Failed::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `n` bytes as people read a size: `64 MiB`, `512 KiB`, or `1000 bytes`.
pub(super) fn size_text(n: usize) -> String {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * KIB;
    const GIB: usize = 1024 * MIB;
    match n {
        0 => "0 bytes".into(),
        n if n % GIB == 0 => format!("{} GiB", n / GIB),
        n if n % MIB == 0 => format!("{} MiB", n / MIB),
        n if n % KIB == 0 => format!("{} KiB", n / KIB),
        n => format!("{n} bytes"),
    }
}

/// A raw answer to one attempt.
struct Answer {
    status: StatusCode,
    retry_after: Option<Duration>,
    body: Vec<u8>,
}

#[derive(Debug)]
pub struct Transport {
    pub(super) http: reqwest::Client,
    pub(super) api_url: String,
    /// `scheme://host[:port]` for messages: the origin, never a user or password in the URL.
    origin: String,
    /// The origin and the API URL's path, to which a request's path is appended in messages.
    base: String,
    pub(super) config: ClientConfig,
    permits: Semaphore,
    /// `--parallelism auto`: an adaptive limit within `permits`.
    limiter: Option<Limiter>,
    throttle: Option<Throttle>,
    pub(super) session: AdminSession,
    /// Per class of path (0: documented with a trailing slash, 1: without), whether the other
    /// form is the one the server routes.
    flipped: [AtomicBool; 2],
    /// What the lists read so far (or `ozform doctor`) showed of the server's page size.
    page_cap: std::sync::Mutex<PageCap>,
}

impl Transport {
    pub fn new(config: ClientConfig) -> Result<Self, OzError> {
        // The crate builds reqwest without a default crypto provider; ring is the one linked.
        // An `Err` only means a provider is already installed (by us or the host program).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let api_url = config.api_url.trim_end_matches('/').to_string();
        let url = reqwest::Url::parse(&api_url).map_err(|e| OzError::Config {
            message: format!("`{api_url}` is not a valid API URL: {e}"),
            help: Some("write it with its scheme, e.g. `https://oz.example.com`".into()),
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(OzError::Config {
                message: format!("`{api_url}` is not an http(s) URL"),
                help: Some("write it with its scheme, e.g. `https://oz.example.com`".into()),
            });
        }
        // `Url::origin` gives the scheme and `host[:port]` (the default port left out), without
        // the user and password a URL may hold: URLs in messages keep their scheme.
        let origin = url.origin().ascii_serialization();
        let base = format!("{origin}{}", url.path().trim_end_matches('/'));
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("ozform/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            // The server's certificate, for `ozform doctor` (probe.rs) to show.
            .tls_info(true);
        if let Some(path) = &config.ca_cert {
            let pem = std::fs::read(path).map_err(|e| OzError::Config {
                message: format!("cannot read the CA certificate `{}`: {}", path.display(), e.kind()),
                help: Some("check the path given to `--ca-cert`".into()),
            })?;
            let not_pem = || OzError::Config {
                message: format!("`{}` holds no PEM certificate", path.display()),
                help: Some("give `--ca-cert` a PEM file (`-----BEGIN CERTIFICATE-----`)".into()),
            };
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|_| not_pem())?;
            if certs.is_empty() {
                return Err(not_pem());
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| OzError::Config {
            message: format!("cannot set up the HTTP client: {}", root_cause(&e)),
            help: None,
        })?;
        let limiter = config.adaptive_limit.map(|max| Limiter::new(max.min(config.max_in_flight.max(1))));
        if let (Some(observer), Some(limiter)) = (&config.observer, &limiter) {
            observer.concurrency_limit(limiter.limit());
        }
        Ok(Self {
            http,
            api_url,
            origin,
            base,
            permits: Semaphore::new(config.max_in_flight.max(1)),
            limiter,
            throttle: config.max_rps.and_then(Throttle::new),
            session: AdminSession::default(),
            flipped: [AtomicBool::new(false), AtomicBool::new(false)],
            page_cap: std::sync::Mutex::new(PageCap::Unknown),
            config,
        })
    }

    /// `scheme://host[:port]`, as messages name the API.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// What is known of the server's page size.
    pub(super) fn page_cap(&self) -> PageCap {
        *self.page_cap.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Remember what a list (or `ozform doctor`) showed of the server's page size. Whole pages
    /// seen once stay known: a cap is only ever learned while nothing is known.
    pub(super) fn learn_page_cap(&self, learned: PageCap) {
        let mut cap = self.page_cap.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if matches!((*cap, learned), (_, PageCap::Whole) | (PageCap::Unknown, PageCap::At(_))) {
            *cap = learned;
        }
    }

    /// The adaptive limit of requests in flight now (`--parallelism auto`), if there is one.
    pub fn concurrency_limit(&self) -> Option<usize> {
        self.limiter.as_ref().map(Limiter::limit)
    }

    /// The URL of `path` as errors name it, scheme included (`https://oz.example.com/api/users/`).
    pub fn where_(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The error of an answer longer than `--max-response-bytes`.
    pub(super) fn too_large(&self, method: &str, path: &str) -> OzError {
        OzError::Limit {
            method: method.to_string(),
            path: self.where_(path),
            reason: format!(
                "the answer is larger than {}, the limit of `--max-response-bytes`",
                size_text(self.config.max_response_bytes)
            ),
            help: Some(
                "raise `--max-response-bytes` if the API really answers that much; otherwise the API, or \
                 a proxy in front of it, is broken: nothing more was read"
                    .into(),
            ),
        }
    }

    /// Send a call and return its JSON body (`Value::Null` for an empty body). Runs in a
    /// debug span `oz_request` (method, path, last status, total duration).
    pub async fn send(&self, call: Call<'_>) -> Result<Value, OzError> {
        let method = call.method.as_str().to_string();
        let (body, path) = self.send_raw(call).await?;
        decode_json(&body).map_err(|reason| OzError::Decode { method, path: self.where_(&path), reason })
    }

    /// As `send`, the body as received (for a caller that decodes it into its own types),
    /// with the path that answered (the other slash form, when that is the one the server
    /// routes).
    pub async fn send_raw(&self, call: Call<'_>) -> Result<(Vec<u8>, String), OzError> {
        let span = tracing::debug_span!(
            "oz_request",
            method = %call.method,
            path = %call.path,
            status = tracing::field::Empty,
            elapsed_ms = tracing::field::Empty,
        );
        let started = Instant::now();
        let result = self.send_in_span(call).instrument(span.clone()).await;
        span.record("elapsed_ms", started.elapsed().as_millis());
        result
    }

    async fn send_in_span(&self, call: Call<'_>) -> Result<(Vec<u8>, String), OzError> {
        let method = call.method.as_str().to_string();
        let session_path = call.path == AUTH_PATH || call.path == REFRESH_PATH;
        if self.config.read_only && call.method != Method::GET && !session_path {
            return Err(OzError::ReadOnly { method, path: self.where_(&call.path) });
        }
        let route = Route::of(&call.path);
        let mut path = self.learned_form(&call);
        let mut retrier = Retrier::new(self.config.retry);
        let mut renewals = 0;
        let mut slash_tried = false;
        loop {
            let (token, generation) = match &call.auth {
                Auth::Session => {
                    let (token, generation) = self.session.current();
                    (token, Some(generation))
                }
                Auth::Token(t) => (Some(t.clone()), None),
                Auth::Anonymous => (None, None),
            };
            let again = retrier.attempts() > 1 || renewals > 0 || slash_tried;
            let delay = match self.attempt(&call, route, &path, token.as_ref(), again).await {
                Ok(answer) if answer.status.is_success() => {
                    self.flipped[class(&call.path)].store(path != call.path, Ordering::Relaxed);
                    return Ok((answer.body, path));
                }
                Ok(answer) => {
                    let status = answer.status.as_u16();
                    let wire = super::wire::WireError::parse(&answer.body);
                    let auth_failed = status == 401 || matches!(wire.error_code, Some(6..=8));
                    if let (true, Some(seen), true) = (auth_failed, generation, renewals < MAX_RENEWALS) {
                        renewals += 1;
                        tracing::info!(method = %method, path = %path, "the admin session expired: logging in again");
                        // Boxed: renewing logs in, which sends a request (async recursion).
                        Box::pin(self.renew(seen)).await?;
                        continue;
                    }
                    let misplaced = matches!(status, 404 | 405) || answer.status.is_redirection();
                    if misplaced && !slash_tried {
                        slash_tried = true;
                        path = other_form(&path);
                        tracing::debug!(status, path = %path, "trying the other trailing-slash form");
                        continue;
                    }
                    let failure = Failure::Status { status, retry_after: answer.retry_after };
                    match retrier.next_delay(call.repeat, failure) {
                        Some(delay) => delay,
                        None => {
                            return Err(OzError::Http {
                                method,
                                path: self.where_(&path),
                                status,
                                error_code: wire.error_code,
                                error_message: wire
                                    .error_message
                                    .map(|m| clip(&self.redact(&m, call.body, token.as_ref()))),
                            });
                        }
                    }
                }
                Err(Failed::TooLarge) => return Err(self.too_large(&method, &path)),
                Err(Failed::Http(e)) => {
                    if let Some(lasting) = lasting_failure(&e) {
                        return Err(OzError::Unreachable {
                            url: self.where_(&path),
                            reason: lasting.reason,
                            help: Some(lasting.help),
                        });
                    }
                    let failure = if e.is_connect() { Failure::Connect } else { Failure::Transport };
                    match retrier.next_delay(call.repeat, failure) {
                        Some(delay) => {
                            // Said at the default level: an unreachable API otherwise looks
                            // like a hang for as long as the retry budget lasts.
                            if failure == Failure::Connect {
                                tracing::warn!(
                                    "{}: {}; trying again in {} ms",
                                    self.where_(&path),
                                    transport_reason(&e, self.config.request_timeout),
                                    delay.as_millis()
                                );
                            }
                            delay
                        }
                        None => {
                            return Err(OzError::Transport {
                                method,
                                path: self.where_(&path),
                                reason: transport_reason(&e, self.config.request_timeout),
                                outcome_unknown: failure == Failure::Transport,
                            });
                        }
                    }
                }
            };
            tracing::debug!(method = %method, path = %path, delay_ms = delay.as_millis(), attempt = retrier.attempts(), "retrying");
            tokio::time::sleep(delay).await;
        }
    }

    /// One attempt: take a permit (first in line when `again`, another attempt of the same
    /// request) and a rate slot, send, read the whole body (at most `max_response_bytes` of it).
    async fn attempt(
        &self,
        call: &Call<'_>,
        route: Route,
        path: &str,
        token: Option<&Secret>,
        again: bool,
    ) -> Result<Answer, Failed> {
        // The semaphore is never closed, so `acquire` cannot fail; a failure would only mean
        // running unbounded, which is still correct.
        let _permit = self.permits.acquire().await.ok();
        let slot = match &self.limiter {
            // Another attempt of a request that had its turn does not wait in line again.
            Some(limiter) if again => Some(limiter.acquire_again().await),
            Some(limiter) => Some(limiter.acquire().await),
            None => None,
        };
        if let Some(throttle) = &self.throttle {
            throttle.wait().await;
        }
        let started = Instant::now();
        let mut request = self.http.request(call.method.clone(), format!("{}{path}", self.api_url));
        if !call.query.is_empty() {
            request = request.query(&call.query);
        }
        if let Some(token) = token {
            request = request.header(TOKEN_HEADER, token.expose());
        }
        if let Some(body) = call.body {
            request = request.json(body);
        }
        let result = async {
            let response = request.send().await.map_err(Failed::Http)?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            let body = read_body(response, self.config.max_response_bytes).await?;
            Ok(Answer { status, retry_after, body })
        }
        .await;
        let elapsed = started.elapsed();
        if let Some(slot) = slot {
            slot.finish(&route_key(call.method.as_str(), path, &call.query), load_sample(&result, elapsed));
        }
        if let Some(observer) = &self.config.observer {
            let status = result.as_ref().ok().map(|a| a.status.as_u16());
            observer.attempt(&Attempt { route, method: method_name(&call.method), status, elapsed });
            if let Some(limiter) = &self.limiter {
                observer.concurrency_limit(limiter.limit());
            }
        }
        let elapsed_ms = elapsed.as_millis();
        match &result {
            Ok(a) => {
                tracing::Span::current().record("status", a.status.as_u16());
                tracing::debug!(method = %call.method, path, status = a.status.as_u16(), elapsed_ms, "oz request");
            }
            Err(Failed::Http(e)) => {
                tracing::debug!(method = %call.method, path, error = %root_cause(e), elapsed_ms, "oz request failed");
            }
            Err(Failed::TooLarge) => {
                tracing::debug!(method = %call.method, path, elapsed_ms, "oz answer larger than --max-response-bytes");
            }
        }
        result
    }

    /// A message built from the server's answer to a request, made safe to show. A server may
    /// echo what it was sent, escaped or encoded: blank, in every form (`redact`), the token
    /// sent, every `password`, `expire_token` or `access_token` in `body`, the admin password
    /// and the session tokens, whatever their length, and every registered secret.
    pub(super) fn redact(&self, message: &str, body: Option<&Value>, token: Option<&Secret>) -> String {
        fn collect<'v>(v: &'v Value, out: &mut Vec<&'v str>) {
            match v {
                Value::Object(map) => {
                    for (k, v) in map {
                        match (k.as_str(), v) {
                            ("password" | "expire_token" | "access_token", Value::String(s)) => out.push(s),
                            _ => collect(v, out),
                        }
                    }
                }
                Value::Array(items) => items.iter().for_each(|i| collect(i, out)),
                _ => {}
            }
        }
        let session = self.session.secrets();
        let mut secrets: Vec<&str> = session.iter().map(Secret::expose).collect();
        secrets.push(self.config.admin_password.expose());
        if let Some(body) = body {
            collect(body, &mut secrets);
        }
        if let Some(token) = token {
            secrets.push(token.expose());
        }
        crate::redact::redact(message, &secrets)
    }

    fn learned_form(&self, call: &Call<'_>) -> String {
        if self.flipped[class(&call.path)].load(Ordering::Relaxed) {
            other_form(&call.path)
        } else {
            call.path.clone()
        }
    }
}

/// What one attempt says of the server's load (see `limiter`): a 2xx answer is a latency
/// sample; 429 and 503 are refusals; a timeout or a 504 means no answer in time; anything else
/// (another status, a refused or dropped connection) says nothing.
fn load_sample(result: &Result<Answer, Failed>, elapsed: Duration) -> Sample {
    match result {
        Ok(a) if a.status.is_success() => Sample::Answered(elapsed),
        Ok(a) if matches!(a.status.as_u16(), 429 | 503) => Sample::Refused(a.status.as_u16()),
        Ok(a) if a.status.as_u16() == 504 => Sample::TimedOut,
        Err(Failed::Http(e)) if e.is_timeout() => Sample::TimedOut,
        _ => Sample::Neutral,
    }
}

/// Session renewals one request may ask for. More than one: a request that met an expired
/// session often finds another request already renewed it (its renewal is a no-op), and its
/// retry can still meet the next expiry while a burst of concurrent requests goes through.
/// Renewals are shared (see `session`), so this bounds a loop, not the cost.
const MAX_RENEWALS: u8 = 3;

/// The method's name as a `&'static str` (the client sends no other methods).
fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        _ => "OTHER",
    }
}

/// The class of a documented path for the trailing-slash memory.
fn class(path: &str) -> usize {
    usize::from(!path.ends_with('/'))
}

/// `/a/b/` ↔ `/a/b`.
fn other_form(path: &str) -> String {
    match path.strip_suffix('/') {
        Some(bare) => bare.to_string(),
        None => format!("{path}/"),
    }
}

fn decode_json(body: &[u8]) -> Result<Value, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body).map_err(|e| format!("the body is not JSON ({e})"))
}

/// Server messages are shown to users; keep them to one readable line.
fn clip(message: &str) -> String {
    let line: String = message.chars().filter(|c| !c.is_control()).take(200).collect();
    line
}

fn transport_reason(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        format!("no answer within {}", humantime::format_duration(timeout))
    } else if e.is_connect() {
        format!("cannot connect: {}", root_cause(e))
    } else {
        format!("the connection failed: {}", root_cause(e))
    }
}

/// Why a connection cannot be made, when trying again cannot fix it.
#[derive(Debug, PartialEq, Eq)]
struct Lasting {
    reason: String,
    help: String,
}

/// Classify a failed attempt by its causes: a refused or reset connection, a timeout or a
/// dropped answer is transient (`None`: the retry policy decides); a name that does not
/// resolve, a refused TLS handshake or certificate, and plain HTTP answering a TLS handshake
/// are lasting, and said at once in words.
fn lasting_failure(e: &(dyn std::error::Error + 'static)) -> Option<Lasting> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        let text = c.to_string();
        // The TLS error's type does not survive the HTTP stack's wrapping (a boxed `io::Error`
        // inside the connector's error), so it is recognised by its words.
        if let Some(tls) = tls_error_in_words(&text) {
            return Some(tls_failure(&tls));
        }
        if text.contains("dns error") || text.contains("failed to lookup address") {
            return Some(Lasting {
                reason: format!("the host name does not resolve ({})", root_cause(c)),
                help: "check the host name in `--api-url` (or `OZ_API_URL`)".into(),
            });
        }
        cause = c.source();
    }
    None
}

/// A rustls error recognised by how it displays (the error chain no longer has its type).
fn tls_error_in_words(text: &str) -> Option<rustls::Error> {
    use rustls::{CertificateError, Error};
    if text.contains("corrupt message") || text.contains("InvalidContentType") {
        return Some(Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType));
    }
    let rest = text.split("invalid peer certificate: ").nth(1)?;
    Some(Error::InvalidCertificate(match rest {
        r if r.starts_with("UnknownIssuer") => CertificateError::UnknownIssuer,
        r if r.starts_with("NotValidForName") => CertificateError::NotValidForName,
        r if r.starts_with("Expired") => CertificateError::Expired,
        r if r.starts_with("NotValidYet") => CertificateError::NotValidYet,
        r => CertificateError::Other(rustls::OtherError(std::sync::Arc::new(std::io::Error::other(
            r.to_string(),
        )))),
    }))
}

fn tls_failure(e: &rustls::Error) -> Lasting {
    use rustls::{CertificateError, Error};
    let text = format!("{e:?}");
    match e {
        Error::InvalidMessage(_) => Lasting {
            reason: "the server does not speak TLS: it answered the TLS handshake with something else".into(),
            help: "the server speaks plain HTTP: use `http://` in `--api-url` (and `--allow-insecure-http` if it is not this machine)".into(),
        },
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => Lasting {
            reason: "the server's TLS certificate is not signed by a trusted certificate authority".into(),
            help: "pass the PEM certificate of the CA that signed it with `--ca-cert FILE`".into(),
        },
        Error::InvalidCertificate(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }) => Lasting {
            reason: "the server's TLS certificate is not issued for this host name".into(),
            help: "use the host name the certificate names in `--api-url`, or have the server's certificate issued for this one".into(),
        },
        Error::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. } | CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }) => Lasting {
            reason: "the server's TLS certificate is expired or not valid yet".into(),
            help: "renew the server's certificate (or check this machine's clock)".into(),
        },
        _ if text.contains("CaUsedAsEndEntity") => Lasting {
            reason: "the server presents a CA certificate (basicConstraints CA:TRUE) as its own certificate, which TLS clients refuse even when that certificate is given with `--ca-cert`".into(),
            help: "issue the server a certificate of its own, signed by that CA (basicConstraints \
                   CA:FALSE, the server's name in subjectAltName), and keep giving the CA with `--ca-cert`"
                .into(),
        },
        other => Lasting {
            reason: format!("the TLS handshake failed: {other}"),
            help: "check the server's TLS setup and `--ca-cert`".into(),
        },
    }
}

/// The innermost cause: the useful words ("connection refused"), without reqwest's URL.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_that_does_not_resolve_and_tls_refusals_are_lasting_and_a_refused_connection_is_not() {
        let dns = std::io::Error::other(
            "dns error: failed to lookup address information: Name or service not known",
        );
        let lasting = lasting_failure(&dns).expect("lasting");
        assert!(lasting.reason.starts_with("the host name does not resolve"), "{lasting:?}");
        let refused =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused (os error 111)");
        assert_eq!(lasting_failure(&refused), None);
        let plain = rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType);
        assert!(tls_failure(&plain).help.contains("use `http://`"));
        let untrusted = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        assert!(tls_failure(&untrusted).help.contains("--ca-cert"));
    }

    #[test]
    fn the_other_slash_form_toggles_the_trailing_slash() {
        assert_eq!(other_form("/api/users/"), "/api/users");
        assert_eq!(other_form("/api/users"), "/api/users/");
    }

    fn transport(admin_password: &str) -> Transport {
        let config = ClientConfig::new("http://127.0.0.1:9", "admin@x.example", Secret::new(admin_password));
        Transport::new(config).expect("a valid config")
    }

    #[test]
    fn secrets_echoed_by_the_server_are_blanked_out() {
        let t = transport("admin-pw");
        let body = serde_json::json!({"credentials": {"email": "a@b.c", "password": "hunter2"}});
        let token = Secret::new("tok-9");
        let shown = t.redact("bad password hunter2 for tok-9 (a@b.c)", Some(&body), Some(&token));
        assert_eq!(shown, "bad password (sensitive) for (sensitive) (a@b.c)");
    }

    #[test]
    fn escaped_echoes_of_body_secrets_and_the_admin_password_are_blanked_out() {
        let t = transport("ädmin\\\"pw");
        let body = serde_json::json!({"credentials": {"password": "CANARYuser\"pw1\\x"}});
        let shown = t.redact(
            r#"body {"password":"CANARYuser\"pw1\\x"} admin \u00e4dmin\\\"pw or %C3%A4dmin%5C%22pw"#,
            Some(&body),
            None,
        );
        assert_eq!(shown, r#"body {"password":"(sensitive)"} admin (sensitive) or (sensitive)"#);
    }

    #[test]
    fn an_empty_body_reads_as_null() {
        assert_eq!(decode_json(b""), Ok(Value::Null));
        assert!(decode_json(b"<html>").is_err());
    }
}
