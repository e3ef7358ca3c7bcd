//! Probes for `ozform doctor`: single GETs through the client's own session and HTTP client,
//! answered raw (status, `Date` header, JSON body, the server's certificate), outside paging, retries and the
//! trailing-slash fallback, so that the doctor sees how the server answers rather than what
//! the client makes of it. Only GET is ever sent here; the read-only guard of `send` is not
//! needed because no other method can be built. Bodies are read with the client's
//! `--max-response-bytes` bound, as every other answer.

use serde_json::Value;

use super::OzError;
use super::client::{COMPANIES, OzClient, USERS};
use super::dialect::Evidence;
use super::transport::{Failed, TOKEN_HEADER, read_body};
use super::wire::WireError;
use crate::model::ApiVersion;

/// One raw answer to a probe.
#[derive(Debug, Clone)]
pub struct ProbeAnswer {
    /// The path asked (the documented form, or the other one when only that is routed).
    pub path: String,
    pub status: u16,
    /// The `Date` header, as sent.
    pub date: Option<String>,
    /// The JSON body (`Null` when empty or not JSON).
    pub body: Value,
    /// The server's leaf certificate (DER), over HTTPS.
    pub peer_certificate: Option<Vec<u8>>,
    /// `Retry-After`, in seconds, when given as a number.
    pub retry_after_secs: Option<u64>,
    /// The API's `error_code`, on an error answer.
    pub error_code: Option<i64>,
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

/// The users collection, as `OzClient` lists it.
pub const USERS_PATH: &str = USERS;
/// The companies collection, as `OzClient` lists it.
pub const COMPANIES_PATH: &str = COMPANIES;

impl OzClient {
    /// `GET path?query` once, with the admin session; a 404 or 405 is asked again once in the
    /// other trailing-slash form (the server routes only that one). Transport failures are
    /// `OzError::Transport`; any HTTP status is an answer.
    pub async fn probe_get(&self, path: &str, query: &[(&str, String)]) -> Result<ProbeAnswer, OzError> {
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

    async fn probe_once(&self, path: &str, query: &[(&str, String)]) -> Result<ProbeAnswer, OzError> {
        let transport = &self.transport;
        let mut request = transport.http.get(format!("{}{path}", transport.api_url));
        if !query.is_empty() {
            request = request.query(query);
        }
        if let (Some(token), _) = transport.session.current() {
            request = request.header(TOKEN_HEADER, token.expose());
        }
        let failed = |e: &reqwest::Error| OzError::Transport {
            method: "GET".into(),
            path: transport.where_(path),
            reason: e.to_string(),
            outcome_unknown: false,
        };
        let response = request.send().await.map_err(|e| failed(&e))?;
        let status = response.status().as_u16();
        let peer_certificate = response
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(reqwest::tls::TlsInfo::peer_certificate)
            .map(<[u8]>::to_vec);
        let date =
            response.headers().get(reqwest::header::DATE).and_then(|v| v.to_str().ok()).map(str::to_string);
        let retry_after_secs = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let bytes = match read_body(response, transport.config.max_response_bytes).await {
            Ok(bytes) => bytes,
            Err(Failed::Http(e)) => return Err(failed(&e)),
            Err(Failed::TooLarge) => return Err(transport.too_large("GET", path)),
        };
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let error_code =
            if (200..300).contains(&status) { None } else { WireError::parse(&bytes).error_code };
        Ok(ProbeAnswer {
            path: path.to_string(),
            status,
            date,
            body,
            peer_certificate,
            retry_after_secs,
            error_code,
        })
    }

    /// When the admin session expires (Unix seconds), if the login answer said so.
    pub fn session_expire_date(&self) -> Option<f64> {
        self.transport.session.expire_date()
    }

    /// Renew the admin session (refresh, else log in again), as a request answered "auth
    /// expired" would.
    pub async fn probe_renew(&self) -> Result<(), OzError> {
        let (_, generation) = self.transport.session.current();
        self.transport.renew(generation).await
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
