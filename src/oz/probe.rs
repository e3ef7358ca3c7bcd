//! Probes for `ozform doctor`: what the server answers to a few single GETs, as wire facts —
//! how a list is shaped and under which key (the keys of `wire`), which fields user objects
//! carry, where a page starts, the server's certificate and its clock — never what they mean
//! for ozform: `ops::doctor` judges them.
//!
//! Each probe is one GET through the client's own session and HTTP client, answered raw,
//! outside paging and the transport's trailing-slash memory, so that the doctor sees how the
//! server answers rather than what the client makes of it: a 404, 405 or redirect is asked once
//! more in the other trailing-slash form, and the form that answered is told. A transient
//! failure is tried again under the client's own retry policy (`ClientConfig::retry` through
//! `retry::Retrier`: the same failures, backoff, `Retry-After` and bounds as every read of
//! `plan`), and an expired session is renewed as the transport renews it; each is kept as a
//! `Fault` for the doctor to count.
//!
//! Only GET is ever sent here (besides the session's own refresh or login): no other method
//! can be built, so the read-only guard of `send` is not needed. Answers come from the network:
//! a body is read up to the client's `--max-response-bytes` (as every answer), field names are
//! kept up to `MAX_NAMED` of them and clipped,
//! the certificate is read with `x509-cert` and the `Date` header with `httpdate`, and anything
//! they cannot read is simply not a fact.

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::OzError;
use super::client::{COMPANIES, OzClient, USERS};
use super::dialect::Evidence;
use super::retry::{Failure, Repeat, Retrier, parse_retry_after};
use super::transport::{Failed, TOKEN_HEADER, read_body};
use super::wire::{WireError, envelope_key, envelope_words, total_of};
use crate::model::ApiVersion;

/// At most this many unknown field names are kept; the others are only counted.
const MAX_NAMED: usize = 20;
/// A field name or a certificate subject is cut past this many characters.
const MAX_CHARS: usize = 100;
/// Session renewals one probe may ask for (as the transport's `MAX_RENEWALS`).
const MAX_RENEWALS: u8 = 3;

/// Fields of a user object ozform reads (`WireUser`), both permission spellings aside.
const KNOWN_USER_FIELDS: [&str; 12] = [
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
    "profile",
    "credentials",
];
/// Optional fields of a user object that some servers leave out when empty or false.
const OPTIONAL_USER_FIELDS: [&str; 5] = ["first_name", "last_name", "middle_name", "is_admin", "is_service"];
/// What every permission flag starts with, in either dialect's spelling.
const PERMISSION_PREFIX: &str = "can_start_analys";

/// Which page of a list to ask for, and with which filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListQuery<'q> {
    pub offset: Option<usize>,
    pub limit: usize,
    /// The `email` filter.
    pub email: Option<&'q str>,
}

impl ListQuery<'_> {
    /// `limit` items from `offset`.
    pub fn page(offset: usize, limit: usize) -> Self {
        Self { offset: Some(offset), limit, email: None }
    }

    fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        if let Some(email) = self.email {
            pairs.push(("email", email.to_string()));
        }
        pairs.push(("limit", self.limit.to_string()));
        if let Some(offset) = self.offset {
            pairs.push(("offset", offset.to_string()));
        }
        pairs
    }
}

impl<'q> ListQuery<'q> {
    /// At most `limit` users with this email.
    pub fn email(email: &'q str, limit: usize) -> Self {
        Self { offset: None, limit, email: Some(email) }
    }
}

/// How one list answer is shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListShape {
    /// The envelope key (one of `wire::ENVELOPE_KEYS`); `None` for a bare array.
    pub envelope: Option<&'static str>,
    /// The key (one of `wire::TOTAL_KEYS`) and value of the total, when the answer gives one.
    pub total: Option<(&'static str, u64)>,
}

/// One page of the users list, as facts.
#[derive(Debug, Clone, PartialEq)]
pub struct UsersPage {
    /// The users path as documented (`/api/users/`).
    pub asked: &'static str,
    /// The form of it that answered: `asked`, or the other trailing-slash form where only that
    /// one is routed.
    pub path: String,
    pub shape: ListShape,
    /// How many users the page holds.
    pub len: usize,
    /// The first user's `user_id`.
    pub first_id: Option<String>,
    /// How the user objects are spelled.
    pub fields: UserFields,
    /// What they say about the dialect.
    pub evidence: DialectEvidence,
    /// The server's leaf certificate, over HTTPS, when it can be read.
    pub certificate: Option<ServerCertificate>,
    /// The server's clock: the `Date` header, when there is one that reads as a date.
    pub date: Option<SystemTime>,
}

/// Which fields the user objects of one page carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserFields {
    /// Top-level fields ozform does not read, sorted, at most `MAX_NAMED`, each clipped.
    pub unknown: BTreeSet<String>,
    /// How many more unknown fields there were.
    pub more_unknown: usize,
    /// Optional fields at least one user object leaves out, sorted.
    pub omitted: BTreeSet<&'static str>,
}

/// One page of the companies list, as facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompaniesPage {
    pub shape: ListShape,
    /// How many companies the page holds.
    pub len: usize,
    /// How many of them are being deleted and still listed (`in_deletion`).
    pub in_deletion: usize,
}

/// What the doctor shows of the server's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCertificate {
    /// `CN=…, O=…`: the common name, organisation, unit and country, in certificate order,
    /// escaped as RFC 4514 writes them.
    pub subject: String,
    pub not_after: SystemTime,
    /// `not_after` as the certificate says it: `2126-11-05 03:53:42 UTC`.
    pub not_after_text: String,
}

/// What the user objects of one raw page say about the dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DialectEvidence {
    pub v5_spelling: usize,
    pub v6_spelling: usize,
    pub v6_roles: usize,
    pub v5_flags: usize,
    /// The dialect this evidence decides, if any.
    pub decided: Option<ApiVersion>,
}

/// A transient failure a probe met and tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 429, with its `Retry-After` when it gave one.
    TooManyRequests { retry_after: Option<Duration> },
    /// 500, 502, 503 or 504.
    ServerError(u16),
    /// No answer: the connection was refused, closed or timed out.
    NoAnswer,
    /// The session was answered expired (401 or 403 with an expiry `error_code`) and renewed.
    SessionExpired(u16),
}

/// Why a probe has no list to show.
#[derive(Debug, Clone)]
pub enum Unanswered {
    /// Answered with a status that is not a success, after the retries.
    Status { path: String, status: u16 },
    /// Answered with a success whose body is not a list.
    NotAList { list: &'static str },
    /// No answer, after the retries.
    Failed(OzError),
}

impl std::fmt::Display for Unanswered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unanswered::Status { path, status } => write!(f, "GET {path} answered {status}"),
            Unanswered::NotAList { list } => {
                write!(f, "the {list} list is neither an array nor an object with {}", envelope_words())
            }
            Unanswered::Failed(e) => e.fmt(f),
        }
    }
}

/// One raw answer.
struct Raw {
    /// The path asked (the documented form, or the other one when only that is routed).
    path: String,
    status: u16,
    date: Option<SystemTime>,
    /// The JSON body (`Null` when empty or not JSON).
    body: Value,
    certificate: Option<ServerCertificate>,
    retry_after: Option<Duration>,
    /// The API's `error_code`, on an error answer.
    error_code: Option<i64>,
}

/// A probe that got no answer to read.
struct NoAnswer {
    error: OzError,
    /// How the retry policy sees it; `None`: trying again cannot help.
    failure: Option<Failure>,
}

/// Probes through one connected client, keeping every transient failure it tried again.
pub struct Prober<'a> {
    client: &'a OzClient,
    faults: Mutex<Vec<Fault>>,
}

impl OzClient {
    /// A prober over this client's session and HTTP client.
    pub fn prober(&self) -> Prober<'_> {
        Prober { client: self, faults: Mutex::default() }
    }

    /// When the admin session expires (Unix seconds), if the login answer said so.
    pub fn session_expire_date(&self) -> Option<f64> {
        self.transport.session.expire_date()
    }
}

impl Prober<'_> {
    /// One page of the users list.
    pub async fn users(&self, query: &ListQuery<'_>) -> Result<UsersPage, Unanswered> {
        let raw = self.list(USERS, query).await?;
        let (shape, items) = shape_of(&raw.body).ok_or(Unanswered::NotAList { list: "users" })?;
        Ok(UsersPage {
            asked: USERS,
            path: raw.path,
            shape,
            len: items.len(),
            first_id: items
                .first()
                .and_then(|u| u.get("user_id"))
                .and_then(Value::as_str)
                .map(str::to_string),
            fields: user_fields(items),
            evidence: dialect_evidence(items),
            certificate: raw.certificate,
            date: raw.date,
        })
    }

    /// One page of the companies list.
    pub async fn companies(&self, query: &ListQuery<'_>) -> Result<CompaniesPage, Unanswered> {
        let raw = self.list(COMPANIES, query).await?;
        let (shape, items) = shape_of(&raw.body).ok_or(Unanswered::NotAList { list: "companies" })?;
        let in_deletion =
            items.iter().filter(|c| c.get("in_deletion").and_then(Value::as_bool) == Some(true)).count();
        Ok(CompaniesPage { shape, len: items.len(), in_deletion })
    }

    /// The transient failures met so far, in order.
    pub fn faults(&self) -> Vec<Fault> {
        self.faults.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn note(&self, fault: Fault) {
        self.faults.lock().unwrap_or_else(PoisonError::into_inner).push(fault);
    }

    /// A GET of a list that answered with a success.
    async fn list(&self, path: &str, query: &ListQuery<'_>) -> Result<Raw, Unanswered> {
        let raw = self.get(path, &query.pairs()).await.map_err(Unanswered::Failed)?;
        if (200..300).contains(&raw.status) {
            Ok(raw)
        } else {
            Err(Unanswered::Status { path: raw.path, status: raw.status })
        }
    }

    /// `GET path?query`, tried again as the client's retry policy allows; the last answer
    /// (whatever its status) or the last failure once it gives up.
    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Raw, OzError> {
        let mut retrier = Retrier::new(self.client.transport.config.retry);
        let mut renewals = 0;
        loop {
            let (fault, failure, last) = match self.client.probe_get(path, query).await {
                Ok(raw) if (200..300).contains(&raw.status) => return Ok(raw),
                Ok(raw)
                    if matches!(raw.status, 401 | 403)
                        && matches!(raw.error_code, Some(6..=8))
                        && renewals < MAX_RENEWALS =>
                {
                    renewals += 1;
                    self.note(Fault::SessionExpired(raw.status));
                    tracing::debug!(path, status = raw.status, "doctor: the session expired; renewing it");
                    self.client.probe_renew().await?;
                    continue;
                }
                Ok(raw) => {
                    let fault = match raw.status {
                        429 => Fault::TooManyRequests { retry_after: raw.retry_after },
                        status => Fault::ServerError(status),
                    };
                    (
                        fault,
                        Some(Failure::Status { status: raw.status, retry_after: raw.retry_after }),
                        Ok(raw),
                    )
                }
                Err(NoAnswer { error, failure }) => (Fault::NoAnswer, failure, Err(error)),
            };
            // A status the policy does not retry (404, 400…) is an answer to report as it is.
            match failure.and_then(|failure| retrier.next_delay(Repeat::Safe, failure)) {
                Some(delay) => {
                    self.note(fault);
                    tracing::debug!(path, ?fault, delay_ms = delay.as_millis(), "doctor: trying again");
                    tokio::time::sleep(delay).await;
                }
                None => return last,
            }
        }
    }
}

impl OzClient {
    /// `GET path?query` once, with the admin session; a 404, 405 or redirect is asked again
    /// once in the other trailing-slash form (the server routes only that one).
    async fn probe_get(&self, path: &str, query: &[(&str, String)]) -> Result<Raw, NoAnswer> {
        let first = self.probe_once(path, query).await?;
        if matches!(first.status, 404 | 405) || (300..400).contains(&first.status) {
            let other = match path.strip_suffix('/') {
                Some(bare) => bare.to_string(),
                None => format!("{path}/"),
            };
            let second = self.probe_once(&other, query).await?;
            if (200..300).contains(&second.status) {
                return Ok(second);
            }
        }
        Ok(first)
    }

    async fn probe_once(&self, path: &str, query: &[(&str, String)]) -> Result<Raw, NoAnswer> {
        let transport = &self.transport;
        let mut request = transport.http.get(format!("{}{path}", transport.api_url));
        if !query.is_empty() {
            request = request.query(query);
        }
        if let (Some(token), _) = transport.session.current() {
            request = request.header(TOKEN_HEADER, token.expose());
        }
        let failed = |reason: String, failure: Option<Failure>| NoAnswer {
            error: OzError::Transport {
                method: "GET".into(),
                path: transport.where_(path),
                reason,
                outcome_unknown: false,
            },
            failure,
        };
        let unanswered = |e: &reqwest::Error| {
            failed(e.to_string(), Some(if e.is_connect() { Failure::Connect } else { Failure::Transport }))
        };
        let response = request.send().await.map_err(|e| unanswered(&e))?;
        let status = response.status().as_u16();
        let certificate = response
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(reqwest::tls::TlsInfo::peer_certificate)
            .and_then(certificate);
        let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok());
        let date = header(reqwest::header::DATE).and_then(|v| httpdate::parse_http_date(v).ok());
        let retry_after = header(reqwest::header::RETRY_AFTER).and_then(parse_retry_after);
        let bytes = match read_body(response, transport.config.max_response_bytes).await {
            Ok(bytes) => bytes,
            Err(Failed::Http(e)) => return Err(unanswered(&e)),
            Err(Failed::TooLarge) => {
                return Err(NoAnswer { error: transport.too_large("GET", path), failure: None });
            }
        };
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let error_code =
            if (200..300).contains(&status) { None } else { WireError::parse(&bytes).error_code };
        Ok(Raw { path: path.to_string(), status, date, body, certificate, retry_after, error_code })
    }

    /// Renew the admin session (refresh, else log in again, each under the client's retry
    /// policy), as a request answered "auth expired" would.
    async fn probe_renew(&self) -> Result<(), OzError> {
        let (_, generation) = self.transport.session.current();
        self.transport.renew(generation).await
    }
}

/// The shape of a list answer and its items (the envelope rules of `wire`).
fn shape_of(body: &Value) -> Option<(ListShape, &[Value])> {
    match body {
        Value::Array(items) => Some((ListShape { envelope: None, total: None }, items.as_slice())),
        Value::Object(map) => {
            let envelope = envelope_key(map)?;
            let items = map.get(envelope).and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
            Some((ListShape { envelope: Some(envelope), total: total_of(map) }, items))
        }
        _ => None,
    }
}

/// Which fields the user objects carry: the ones ozform does not read, the optional ones left out.
fn user_fields(users: &[Value]) -> UserFields {
    let mut fields = UserFields::default();
    let mut unknown: BTreeSet<&str> = BTreeSet::new();
    for user in users {
        let Value::Object(map) = user else { continue };
        for key in map.keys() {
            if !KNOWN_USER_FIELDS.contains(&key.as_str()) && !key.starts_with(PERMISSION_PREFIX) {
                unknown.insert(key);
            }
        }
        fields.omitted.extend(OPTIONAL_USER_FIELDS.into_iter().filter(|k| !map.contains_key(*k)));
    }
    fields.more_unknown = unknown.len().saturating_sub(MAX_NAMED);
    fields.unknown = unknown.into_iter().take(MAX_NAMED).map(clip).collect();
    fields
}

/// At most `MAX_CHARS` characters of `text`, with `…` where cut.
fn clip(text: &str) -> String {
    match text.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// What raw user objects say about the dialect (the evidence `--api-version auto` uses).
pub fn dialect_evidence(users: &[Value]) -> DialectEvidence {
    let mut evidence = Evidence::default();
    for user in users {
        evidence.add(user);
    }
    DialectEvidence {
        v5_spelling: evidence.v5_spelling,
        v6_spelling: evidence.v6_spelling,
        v6_roles: evidence.v6_roles,
        v5_flags: evidence.v5_flags,
        decided: evidence.decide().map(super::dialect::Dialect::version),
    }
}

/// The subject and expiry of a DER certificate; `None` for anything `x509-cert` cannot read.
fn certificate(der: &[u8]) -> Option<ServerCertificate> {
    use x509_cert::der::Decode as _;
    use x509_cert::der::oid::db::rfc4519::{
        COMMON_NAME, COUNTRY_NAME, ORGANIZATION_NAME, ORGANIZATIONAL_UNIT_NAME,
    };
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    let tbs = cert.tbs_certificate();
    let shown = [COMMON_NAME, ORGANIZATION_NAME, ORGANIZATIONAL_UNIT_NAME, COUNTRY_NAME];
    let parts: Vec<String> =
        tbs.subject().iter().filter(|a| shown.contains(&a.oid)).map(|a| clip(&a.to_string())).collect();
    let not_after = tbs.validity().not_after;
    let at = not_after.to_date_time();
    Some(ServerCertificate {
        subject: if parts.is_empty() { "(no common name)".into() } else { parts.join(", ") },
        not_after: not_after.to_system_time(),
        not_after_text: format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            at.year(),
            at.month(),
            at.day(),
            at.hour(),
            at.minutes(),
            at.seconds()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn list_shapes_are_told_apart_by_the_wire_envelope_keys() {
        let bare = json!([{"user_id": "a"}]);
        let (shape, items) = shape_of(&bare).unwrap();
        assert_eq!((shape, items.len()), (ListShape { envelope: None, total: None }, 1));
        let results = json!({"results": [], "count": 7});
        let (shape, _) = shape_of(&results).unwrap();
        assert_eq!(shape, ListShape { envelope: Some("results"), total: Some(("count", 7)) });
        assert!(shape_of(&json!({"users": []})).is_none());
        assert!(shape_of(&json!("users")).is_none());
    }

    #[test]
    fn unknown_fields_are_named_bounded_and_clipped_and_fields_left_out_are_named() {
        let users = [
            json!({"user_id": "a", "email": "a@x", "user_type": "CLIENT", "is_active": true,
                   "can_start_analysis_quality": true, "_links": {}, "meta_data": null}),
            json!({"user_id": "b", "first_name": "B", "last_name": "C", "middle_name": "",
                   "is_admin": false, "is_service": true}),
        ];
        let fields = user_fields(&users);
        assert_eq!(fields.unknown.iter().map(String::as_str).collect::<Vec<_>>(), ["_links", "meta_data"]);
        assert_eq!(fields.more_unknown, 0);
        assert_eq!(
            fields.omitted.into_iter().collect::<Vec<_>>(),
            ["first_name", "is_admin", "is_service", "last_name", "middle_name"]
        );

        let many: serde_json::Map<String, Value> =
            (0..50).map(|i| (format!("{i:02}{}", "x".repeat(200)), Value::Null)).collect();
        let fields = user_fields(&[Value::Object(many)]);
        assert_eq!((fields.unknown.len(), fields.more_unknown), (MAX_NAMED, 50 - MAX_NAMED));
        assert!(fields.unknown.iter().all(|k| k.chars().count() == MAX_CHARS + 1 && k.ends_with('…')));
    }

    #[test]
    fn every_field_called_known_is_one_the_wire_user_reads() {
        use super::super::wire::WireUser;
        let base = || json!({"user_id": "u"});
        let plain = format!("{:?}", WireUser::from_value(base()).unwrap());
        for field in
            KNOWN_USER_FIELDS.into_iter().filter(|f| !matches!(*f, "user_id" | "profile" | "credentials"))
        {
            let mut user = base();
            let value = if field.starts_with("is_") { json!(true) } else { json!("v@x") };
            user[field] = value;
            let read = format!("{:?}", WireUser::from_value(user).unwrap());
            assert_ne!(read, plain, "`{field}` is called known but the wire user does not read it");
        }
        // `profile` and `credentials` are read by lifting what they hold.
        let nested = json!({"user_id": "u", "profile": {"first_name": "F"}, "credentials": {"email": "e@x"}});
        let read = WireUser::from_value(nested).unwrap();
        assert_eq!((read.first_name.as_str(), read.email.as_str()), ("F", "e@x"));
    }

    #[test]
    fn a_certificate_tells_its_subject_and_expiry_and_garbage_tells_nothing() {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject as _;
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls/server.pem");
        let cert = CertificateDer::from_pem_file(path).unwrap();
        let facts = certificate(&cert).unwrap();
        assert_eq!(facts.subject, "CN=127.0.0.1");
        assert_eq!(facts.not_after_text, "2126-11-05 03:53:42 UTC");
        assert_eq!(facts.not_after, httpdate::parse_http_date("Tue, 05 Nov 2126 03:53:42 GMT").unwrap());
        for cut in 0..cert.len() {
            assert!(certificate(&cert[..cut]).is_none(), "a certificate cut at {cut}");
        }
        assert!(certificate(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_none());
        assert!(certificate(b"").is_none());
    }

    #[test]
    fn a_page_query_and_an_email_query_ask_what_they_say() {
        assert_eq!(
            ListQuery::page(3, 1000).pairs(),
            [("limit", "1000".to_string()), ("offset", "3".to_string())]
        );
        assert_eq!(
            ListQuery::email("a@x", 1).pairs(),
            [("email", "a@x".to_string()), ("limit", "1".to_string())]
        );
    }
}
