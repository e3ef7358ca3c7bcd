//! `doctor`: a read-only check of a live installation, the first command to run against a
//! real Oz API. It logs in through a read-only client (no retries: it reports the server as
//! it answers), then asks single raw GETs (`OzClient::probe_get`, each tried again on a
//! transient fault, which the `faults` finding counts) to see how lists answer,
//! reads the clock from the `Date` header, and checks the token store. Each finding says what
//! was seen and what it means for plan and apply; a `fail` finding means ozform cannot work
//! with the installation (exit 1).
//!
//! Never a mutating request: the client is read-only and probes only ever GET (an expired
//! session is renewed by the session's own refresh or login). The token
//! store's `check` writes and removes a probe file in the store (creating a directory store's
//! directory, as `apply` would).

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Exit};
use crate::output::Output;
use crate::oz::{COMPANIES_PATH, OzClient, OzError, ProbeAnswer, RetryPolicy, USERS_PATH, dialect_evidence};
use crate::secret::process_env;

use super::open_store;
use super::settings::{Connection, Tokens};

/// Clock skew beyond this is worth a warning.
const SKEW_WARN: Duration = Duration::from_secs(60);
/// The page size the doctor asks for, to find the largest page the server gives.
const BIG_PAGE: usize = 1000;
/// An email no installation holds, to see whether the `email` filter is honoured.
const NO_SUCH_EMAIL: &str = "ozform-doctor-probe@doctor.invalid";

/// What `ozform doctor` needs.
#[derive(Debug, Clone)]
pub struct DoctorSettings {
    pub connection: Connection,
    pub tokens: Tokens,
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        }
    }
}

/// One thing the doctor looked at.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// A stable name: `reachable`, `login`, `api_version`, `list_shape`, `objects`,
    /// `permissions` (only when hidden),
    /// `path_form`, `page_size`, `offset`, `filters`, `companies`, `clock`, `session`, `faults`,
    /// `token_store`.
    pub check: &'static str,
    pub status: Status,
    /// What was seen.
    pub summary: String,
    /// What it means for plan and apply.
    pub meaning: String,
}

/// Everything the doctor found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub api_url: String,
    /// Whether ozform can work with this installation (no `fail` finding).
    pub usable: bool,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn finding(&self, check: &str) -> Option<&Finding> {
        self.findings.iter().find(|f| f.check == check)
    }
}

fn finding(
    check: &'static str,
    status: Status,
    summary: impl Into<String>,
    meaning: impl Into<String>,
) -> Finding {
    Finding { check, status, summary: summary.into(), meaning: meaning.into() }
}

pub async fn run(settings: DoctorSettings, output: &Output) -> Result<Exit, Error> {
    let report = examine(&settings, &process_env).await?;
    if settings.json {
        let json = serde_json::to_string_pretty(&report).map_err(|e| Error::Usage {
            message: format!("cannot print the report: {e}"),
            help: "report this as a bug".into(),
        })?;
        output.print(&format!("{json}\n"));
    } else {
        output.print(&render_text(&report));
    }
    Ok(if report.usable { Exit::Success } else { Exit::Failure })
}

/// The report as text: one line per finding, its meaning indented below.
pub fn render_text(report: &Report) -> String {
    let mut text = format!("ozform doctor: {}\n\n", report.api_url);
    for f in &report.findings {
        // Writing to a String cannot fail.
        let _ = writeln!(text, "{:<4}  {:<12} {}", f.status.label(), f.check, f.summary);
        let _ = writeln!(text, "{:18} {}", "", f.meaning);
    }
    text.push_str(if report.usable {
        "\nozform can work with this installation.\n"
    } else {
        "\nozform cannot work with this installation as it is: see the FAIL lines above.\n"
    });
    text
}

/// Look at the installation; `Err` only for settings that stop the doctor before it asks
/// anything (no password source).
pub async fn examine(
    settings: &DoctorSettings,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Report, Error> {
    let api_url = settings.connection.api_url.clone().unwrap_or_default();
    let mut config = settings.connection.client_config(&api_url, true, env)?;
    config.retry = RetryPolicy::none();
    let tls = api_url.starts_with("https://");
    let mut findings = Vec::new();
    match OzClient::connect(config).await {
        Ok(client) => {
            findings.push(reachable_ok(&api_url, settings.connection.ca_cert.is_some()));
            findings.push(finding(
                "login",
                Status::Ok,
                format!("logged in as `{}`", settings.connection.admin_email),
                "plan, apply and export can read the installation",
            ));
            examine_api(&client, &mut findings).await;
        }
        Err(e) => findings.extend(connect_failure(&e, tls, &settings.connection)),
    }
    findings.push(token_store(&settings.tokens, &api_url, &settings.connection.admin_password));
    let usable = findings.iter().all(|f| f.status != Status::Fail);
    Ok(Report { api_url, usable, findings })
}

fn reachable_ok(api_url: &str, private_ca: bool) -> Finding {
    let tls = api_url.starts_with("https://");
    let summary = match (tls, private_ca) {
        (true, true) => "answered over HTTPS; its certificate is trusted through `--ca-cert`",
        (true, false) => "answered over HTTPS; its certificate is trusted by the system roots",
        (false, _) => "answered over plain HTTP (no TLS)",
    };
    if tls {
        finding(
            "reachable",
            Status::Ok,
            summary,
            "requests are encrypted and the server is who it says it is",
        )
    } else if super::is_loopback(api_url) {
        finding("reachable", Status::Ok, summary, "on loopback: nothing crosses the network")
    } else {
        finding(
            "reachable",
            Status::Warn,
            summary,
            "passwords and tokens cross the network unencrypted: use https:// outside a lab",
        )
    }
}

/// The findings for a failed connect: where it stopped, and what to do.
fn connect_failure(e: &OzError, tls: bool, connection: &Connection) -> Vec<Finding> {
    let cannot = "plan, apply and export cannot run";
    match e {
        OzError::Unreachable { help, .. } => {
            let meaning = match help {
                Some(help) => format!("{cannot}: {help}"),
                None => format!("{cannot}: check the URL, the network path and that the API is up"),
            };
            vec![finding("reachable", Status::Fail, e.to_string(), meaning)]
        }
        OzError::Transport { reason, .. } => {
            let tls_problem =
                tls && ["certificate", "tls", "handshake"].iter().any(|w| reason.to_lowercase().contains(w));
            let meaning = if tls_problem {
                format!("{cannot}: the server's certificate is not trusted; give its CA with `--ca-cert`")
            } else {
                format!("{cannot}: check the URL, the network path and that the API is up")
            };
            vec![finding("reachable", Status::Fail, e.to_string(), meaning)]
        }
        OzError::Login { .. } => vec![
            reachable_ok(connection.api_url.as_deref().unwrap_or_default(), connection.ca_cert.is_some()),
            finding(
                "login",
                Status::Fail,
                e.to_string(),
                format!("{cannot}: check the admin email and password; the account must be an ADMIN"),
            ),
        ],
        // Connecting fails this way only after logging in, when `auto` finds nothing to decide by.
        OzError::Config { message, help: Some(help) } if help.contains("--api-version") => vec![
            reachable_ok(connection.api_url.as_deref().unwrap_or_default(), connection.ca_cert.is_some()),
            finding(
                "login",
                Status::Ok,
                format!("logged in as `{}`", connection.admin_email),
                "the admin account works",
            ),
            finding(
                "api_version",
                Status::Fail,
                message.clone(),
                format!("{cannot} with `--api-version auto`: pass `--api-version 5` or `6`"),
            ),
        ],
        other => vec![finding("reachable", Status::Fail, other.to_string(), cannot)],
    }
}

/// What the API says once logged in: version, lists, clock.
async fn examine_api(client: &OzClient, findings: &mut Vec<Finding>) {
    let prober = Prober { client, seen: std::sync::Mutex::default() };
    examine_lists(client, &prober, findings).await;
    findings.push(prober.finding());
}

async fn examine_lists(client: &OzClient, prober: &Prober<'_>, findings: &mut Vec<Finding>) {
    let first = prober.get(USERS_PATH, &page(0, BIG_PAGE)).await;
    let first = match first {
        Ok(answer) if (200..300).contains(&answer.status) => answer,
        Ok(answer) => {
            findings.push(finding(
                "list_shape",
                Status::Fail,
                format!("GET {} answered {}", answer.path, answer.status),
                "plan and apply cannot read the users",
            ));
            return;
        }
        Err(e) => {
            findings.push(finding(
                "list_shape",
                Status::Fail,
                e.to_string(),
                "plan and apply cannot read the users",
            ));
            return;
        }
    };
    let Some(shape) = Shape::of(&first.body) else {
        findings.push(finding(
            "list_shape",
            Status::Fail,
            "the users list is neither an array nor an object with `items`, `results` or `data`",
            "plan and apply cannot read the users",
        ));
        return;
    };
    if let Some(facts) = first.peer_certificate.as_deref().and_then(certificate_facts)
        && let Some(reachable) = findings.iter_mut().find(|f| f.check == "reachable")
    {
        certificate_finding(reachable, &facts, SystemTime::now());
    }
    findings.push(api_version(client, &shape.items));
    findings.push(shape.finding());
    findings.push(objects(&shape.items));
    if let Some(hidden) = permissions_hidden(&shape.items) {
        findings.push(hidden);
    }
    if first.path != USERS_PATH {
        findings.push(finding(
            "path_form",
            Status::Warn,
            format!("`{USERS_PATH}` is not routed; `{}` is", first.path),
            "ozform learns the routed form on the first miss: one extra request per kind of path",
        ));
    }
    findings.push(page_size(prober, &shape).await);
    findings.push(offset(prober, &shape).await);
    findings.push(filters(prober, &shape).await);
    findings.push(companies(prober).await);
    let server_now = first.date.as_deref().and_then(parse_http_date);
    findings.push(clock(first.date.as_deref(), SystemTime::now()));
    findings.push(session(client.session_expire_date(), server_now.unwrap_or_else(SystemTime::now)));
}

/// A certificate expiring within this long is worth a warning.
const CERT_WARN: Duration = Duration::from_secs(30 * 86_400);

/// Add the server certificate's subject and expiry to the `reachable` finding.
fn certificate_finding(reachable: &mut Finding, facts: &CertFacts, now: SystemTime) {
    let _ = write!(
        reachable.summary,
        "; certificate for {}, valid until {}",
        facts.subject, facts.not_after_text
    );
    match facts.not_after.duration_since(now) {
        Err(_) => {
            reachable.status = Status::Fail;
            reachable.meaning =
                "the server's certificate has expired: requests will be refused once clocks agree; renew it"
                    .into();
        }
        Ok(left) if left < CERT_WARN => {
            reachable.status = Status::Warn;
            reachable.meaning = format!(
                "the server's certificate expires in {} day(s): renew it before ozform's requests are refused",
                left.as_secs() / 86_400
            );
        }
        Ok(_) => {}
    }
}

/// What the doctor shows of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    /// `CN=…, O=…` (the common name, organisation, unit and country, in certificate order).
    pub subject: String,
    pub not_after: SystemTime,
    /// `2126-11-05 03:53:42 UTC`.
    pub not_after_text: String,
}

/// One DER element of `input`: its tag, its content and what follows it. `None` for anything
/// malformed (the certificate comes from the network: every length is checked).
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let len = rest.get(..n)?.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, rest.get(n..)?)
    };
    Some((tag, rest.get(..len)?, rest.get(len..)?))
}

/// The subject and expiry of a DER X.509 certificate.
pub fn certificate_facts(cert: &[u8]) -> Option<CertFacts> {
    const SEQUENCE: u8 = 0x30;
    let (SEQUENCE, certificate, _) = der(cert)? else { return None };
    let (SEQUENCE, tbs, _) = der(certificate)? else { return None };
    let mut rest = tbs;
    // [0] version (absent in v1), serial number, signature algorithm, issuer.
    if der(rest)?.0 == 0xa0 {
        rest = der(rest)?.2;
    }
    for _ in 0..3 {
        rest = der(rest)?.2;
    }
    let (SEQUENCE, validity, rest) = der(rest)? else { return None };
    let (_, _, after_not_before) = der(validity)?;
    let (time_tag, not_after, _) = der(after_not_before)?;
    let (SEQUENCE, subject, _) = der(rest)? else { return None };
    let (not_after, not_after_text) = der_time(time_tag, not_after)?;
    Some(CertFacts { subject: subject_text(subject), not_after, not_after_text })
}

/// `CN=…, O=…` of a DER `Name` (the attributes worth showing; others are left out).
fn subject_text(mut name: &[u8]) -> String {
    let mut parts = Vec::new();
    while let Some((_, set, rest)) = der(name) {
        name = rest;
        let mut attributes = set;
        while let Some((_, attribute, rest)) = der(attributes) {
            attributes = rest;
            let Some((0x06, oid, value)) = der(attribute) else { continue };
            let label = match oid {
                [0x55, 0x04, 0x03] => "CN",
                [0x55, 0x04, 0x0a] => "O",
                [0x55, 0x04, 0x0b] => "OU",
                [0x55, 0x04, 0x06] => "C",
                _ => continue,
            };
            if let Some((_, text, _)) = der(value) {
                parts.push(format!("{label}={}", String::from_utf8_lossy(text)));
            }
        }
    }
    if parts.is_empty() { "(no common name)".into() } else { parts.join(", ") }
}

/// A DER `UTCTime` (`YYMMDDHHMMSSZ`) or `GeneralizedTime` (`YYYYMMDDHHMMSSZ`).
fn der_time(tag: u8, bytes: &[u8]) -> Option<(SystemTime, String)> {
    let text = std::str::from_utf8(bytes).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 => {
            let yy: i64 = text.get(..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, text.get(2..)?)
        }
        0x18 => (text.get(..4)?.parse().ok()?, text.get(4..)?),
        _ => return None,
    };
    let field = |i: usize| -> Option<i64> { rest.get(i * 2..i * 2 + 2)?.parse().ok() };
    let (month, day, h, m, s) = (field(0)?, field(1)?, field(2)?, field(3)?, field(4)?);
    let seconds = days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s;
    let time = UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).ok()?);
    Some((time, format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02} UTC")))
}

/// Attempts per probe: transient faults are tried again, as ozform's reads are.
const PROBE_ATTEMPTS: usize = 4;
/// The longest `Retry-After` the doctor waits for.
const MOST_WAIT: Duration = Duration::from_secs(5);

/// Probes through one client, trying transient faults again (429, 5xx, no answer, an expired
/// session) and keeping a note of each, for the `faults` finding.
struct Prober<'a> {
    client: &'a OzClient,
    seen: std::sync::Mutex<Vec<String>>,
}

impl Prober<'_> {
    fn note(&self, what: String) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.push(what);
        }
    }

    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<ProbeAnswer, OzError> {
        let mut attempt = 1;
        loop {
            let last = attempt == PROBE_ATTEMPTS;
            attempt += 1;
            let answer = match self.client.probe_get(path, query).await {
                Err(e) if !last => {
                    self.note("no answer (connection closed or timed out)".into());
                    tracing::debug!(error = %e, "doctor: trying again");
                    continue;
                }
                other => other?,
            };
            match answer.status {
                429 if !last => {
                    let wait = answer.retry_after_secs.unwrap_or(1);
                    self.note(format!("429 Too Many Requests (Retry-After {wait} s)"));
                    tokio::time::sleep(Duration::from_secs(wait).min(MOST_WAIT)).await;
                }
                500 | 502 | 503 | 504 if !last => {
                    self.note(format!("{} (server error)", answer.status));
                }
                401 | 403 if !last && matches!(answer.error_code, Some(6..=8)) => {
                    self.note(format!("the admin session expired ({})", answer.status));
                    self.client.probe_renew().await?;
                }
                _ => return Ok(answer),
            }
        }
    }

    fn finding(&self) -> Finding {
        let seen = self.seen.lock().map(|s| s.clone()).unwrap_or_default();
        if seen.is_empty() {
            return finding("faults", Status::Ok, "none seen", "no retries were needed");
        }
        let mut counted: Vec<(String, usize)> = Vec::new();
        for what in seen {
            match counted.iter_mut().find(|(w, _)| *w == what) {
                Some((_, n)) => *n += 1,
                None => counted.push((what, 1)),
            }
        }
        let summary = counted.iter().map(|(w, n)| format!("{w} ×{n}")).collect::<Vec<_>>().join(", ");
        finding(
            "faults",
            Status::Warn,
            format!("transient failures, each tried again: {summary}"),
            "ozform retries reads with backoff (honouring Retry-After) and renews expired sessions; a create whose outcome is unknown is read back before it is sent again; `--max-rps` lowers the pressure",
        )
    }
}

/// `limit` and `offset` query parameters.
fn page(offset: usize, limit: usize) -> Vec<(&'static str, String)> {
    vec![("limit", limit.to_string()), ("offset", offset.to_string())]
}

fn api_version(client: &OzClient, users: &[Value]) -> Finding {
    let evidence = dialect_evidence(users);
    let seen = format!(
        "{} user(s) spell permissions the API 5 way, {} the API 6 way; {} API 6 role(s), {} API 5 service/admin flag(s)",
        evidence.v5_spelling, evidence.v6_spelling, evidence.v6_roles, evidence.v5_flags
    );
    let version = client.api_version();
    if client.api_version_detected() {
        return finding(
            "api_version",
            Status::Ok,
            format!("API {}, detected ({seen})", version.number()),
            format!("ozform speaks the API {} dialect to it", version.number()),
        );
    }
    match evidence.decided {
        Some(other) if other != version => finding(
            "api_version",
            Status::Fail,
            format!(
                "configured as API {}, but the users look like API {} ({seen})",
                version.number(),
                other.number()
            ),
            format!(
                "every service user would be read wrongly and show as a conflict: pass `--api-version {}` or `auto`",
                other.number()
            ),
        ),
        _ => finding(
            "api_version",
            Status::Ok,
            format!("API {}, configured ({seen})", version.number()),
            format!("ozform speaks the API {} dialect to it", version.number()),
        ),
    }
}

/// How one list answer is shaped.
struct Shape {
    items: Vec<Value>,
    /// The envelope key, `None` for a bare array.
    envelope: Option<&'static str>,
    /// The total key and value, if the server gives one.
    total: Option<(&'static str, u64)>,
}

impl Shape {
    fn of(body: &Value) -> Option<Shape> {
        match body {
            Value::Array(items) => Some(Shape { items: items.clone(), envelope: None, total: None }),
            Value::Object(map) => {
                let envelope = ["items", "results", "data"]
                    .into_iter()
                    .find(|k| map.get(*k).is_some_and(Value::is_array))?;
                let items = map.get(envelope).and_then(Value::as_array).cloned().unwrap_or_default();
                let total = ["total", "count"]
                    .into_iter()
                    .find_map(|k| map.get(k).and_then(Value::as_u64).map(|t| (k, t)));
                Some(Shape { items, envelope: Some(envelope), total })
            }
            _ => None,
        }
    }

    fn finding(&self) -> Finding {
        let (summary, meaning) = match (self.envelope, self.total) {
            (None, _) => (
                "a bare JSON array, no total".to_string(),
                "ozform asks for pages in doubling windows until one comes back short",
            ),
            (Some(key), Some((total_key, _))) => (
                format!("an object envelope: `{key}` with a total in `{total_key}`"),
                "ozform asks for all remaining pages at once",
            ),
            (Some(key), None) => (
                format!("an object envelope: `{key}`, no total"),
                "ozform asks for pages in doubling windows until one comes back short",
            ),
        };
        finding("list_shape", Status::Ok, summary, meaning)
    }
}

/// Fields of a user object ozform reads (both permission spellings aside).
const KNOWN_USER_FIELDS: [&str; 11] = [
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
];
/// Optional fields of a user object that some servers leave out when empty or false.
const OPTIONAL_USER_FIELDS: [&str; 5] = ["first_name", "last_name", "middle_name", "is_admin", "is_service"];

/// How user objects are spelled: fields ozform does not know, optional fields left out.
fn objects(users: &[Value]) -> Finding {
    let mut unknown = std::collections::BTreeSet::new();
    let mut missing = std::collections::BTreeSet::new();
    for user in users {
        let Value::Object(map) = user else { continue };
        for key in map.keys() {
            if !KNOWN_USER_FIELDS.contains(&key.as_str()) && !key.starts_with("can_start_analys") {
                unknown.insert(format!("`{key}`"));
            }
        }
        for key in OPTIONAL_USER_FIELDS {
            if !map.contains_key(key) {
                missing.insert(format!("`{key}`"));
            }
        }
    }
    let join = |set: std::collections::BTreeSet<String>| set.into_iter().collect::<Vec<_>>().join(", ");
    let mut seen = Vec::new();
    if !unknown.is_empty() {
        seen.push(format!("fields ozform does not know: {}", join(unknown)));
    }
    if !missing.is_empty() {
        seen.push(format!("optional fields left out: {}", join(missing)));
    }
    if seen.is_empty() {
        finding(
            "objects",
            Status::Ok,
            "user objects carry every field, and only known ones",
            "read as they are",
        )
    } else {
        finding(
            "objects",
            Status::Ok,
            seen.join("; "),
            "ozform ignores fields it does not know and reads a field left out as empty or false",
        )
    }
}

/// A warning when no user object shows a permission flag (in either spelling), top-level or
/// under `profile`: then ozform cannot read permissions.
fn permissions_hidden(users: &[Value]) -> Option<Finding> {
    let shows = |user: &Value| {
        let has =
            |map: &serde_json::Map<String, Value>| map.keys().any(|k| k.starts_with("can_start_analys"));
        user.as_object().is_some_and(has) || user.get("profile").and_then(Value::as_object).is_some_and(has)
    };
    (!users.is_empty() && !users.iter().any(shows)).then(|| {
        finding(
            "permissions",
            Status::Warn,
            format!("none of {} user(s) shows a permission flag", users.len()),
            "ozform cannot read permissions: manifests that write `permissions` plan an update on every run; leave them out to keep permissions unmanaged",
        )
    })
}

fn id_of(item: &Value) -> Option<&str> {
    item.get("user_id").and_then(Value::as_str)
}

/// The largest page the server gives: fewer than asked while more exist means a cap.
async fn page_size(prober: &Prober<'_>, first: &Shape) -> Finding {
    let given = first.items.len();
    let capped = match first.total {
        Some((_, total)) => u64::try_from(given).is_ok_and(|g| g < total.min(BIG_PAGE as u64)),
        None if given > 0 && given < BIG_PAGE => {
            // No total: more exist when the next offset still answers other users.
            match prober.get(USERS_PATH, &page(given, BIG_PAGE)).await.ok().and_then(|a| Shape::of(&a.body)) {
                Some(next) => next
                    .items
                    .first()
                    .and_then(id_of)
                    .is_some_and(|id| Some(id) != first.items.first().and_then(id_of)),
                None => false,
            }
        }
        None => false,
    };
    if capped {
        finding(
            "page_size",
            Status::Warn,
            format!("at most {given} users per page, whatever `limit` asks ({BIG_PAGE} asked)"),
            "ozform reads as many pages as it takes: more requests, same result",
        )
    } else {
        finding(
            "page_size",
            Status::Ok,
            format!("{given} user(s) in one page of {BIG_PAGE} asked: no cap seen"),
            "ozform reads lists in pages of 100",
        )
    }
}

/// Whether `offset` moves through the list: the first user of page 1 and of page 2 differ.
async fn offset(prober: &Prober<'_>, first: &Shape) -> Finding {
    let known = first.total.map_or(first.items.len() as u64, |(_, t)| t);
    if known < 2 {
        return finding(
            "offset",
            Status::Ok,
            "not tested: fewer than 2 users",
            "paging is tested once there are 2 users or more",
        );
    }
    let one = |offset| async move {
        let answer: Option<ProbeAnswer> = prober.get(USERS_PATH, &page(offset, 1)).await.ok();
        answer
            .and_then(|a| Shape::of(&a.body))
            .and_then(|s| s.items.first().and_then(id_of).map(str::to_string))
    };
    let (a, b) = (one(0).await, one(1).await);
    if a.is_some() && a == b {
        finding(
            "offset",
            Status::Fail,
            "ignored: `offset=1` answers the same first user as `offset=0`",
            "every page would be the first: ozform refuses to read such lists, so plan and apply stop",
        )
    } else {
        finding("offset", Status::Ok, "honoured", "ozform pages through every list")
    }
}

/// The companies list: how many, and how many are being deleted (still listed, with
/// `in_deletion`).
async fn companies(prober: &Prober<'_>) -> Finding {
    let answer = prober.get(COMPANIES_PATH, &page(0, BIG_PAGE)).await;
    let Some(shape) = answer.ok().filter(|a| (200..300).contains(&a.status)).and_then(|a| Shape::of(&a.body))
    else {
        return finding(
            "companies",
            Status::Fail,
            "the companies list could not be read",
            "plan and apply cannot read the companies",
        );
    };
    let total = shape.total.map_or(shape.items.len() as u64, |(_, t)| t);
    let deleting =
        shape.items.iter().filter(|c| c.get("in_deletion").and_then(Value::as_bool) == Some(true)).count();
    if deleting == 0 {
        finding(
            "companies",
            Status::Ok,
            format!("{total} compan(ies), none being deleted"),
            "ozform reads them all",
        )
    } else {
        finding(
            "companies",
            Status::Ok,
            format!("{total} compan(ies), {deleting} being deleted and still listed (`in_deletion`)"),
            "ozform never matches a company being deleted by name (a manifest naming it plans a new one), a user still in one is a conflict, and export leaves it out",
        )
    }
}

/// Whether the `email` filter narrows the list: an email no one has must answer no user.
async fn filters(prober: &Prober<'_>, first: &Shape) -> Finding {
    if first.items.is_empty() {
        return finding(
            "filters",
            Status::Ok,
            "not tested: no users",
            "filters are tested once there are users",
        );
    }
    let query = vec![("email", NO_SUCH_EMAIL.to_string()), ("limit", "1".to_string())];
    let answer = prober.get(USERS_PATH, &query).await.ok().and_then(|a| Shape::of(&a.body));
    match answer {
        Some(shape) if !shape.items.is_empty() => finding(
            "filters",
            Status::Warn,
            "ignored: asking for an email no one has answers users anyway",
            "filters ignored: ozform filters on its side, so a lookup by email or company reads the whole list",
        ),
        Some(_) => finding(
            "filters",
            Status::Ok,
            "honoured",
            "lookups by email and company read only what they need",
        ),
        None => finding("filters", Status::Warn, "not answered as a list", "ozform filters on its side"),
    }
}

/// Clock skew from the `Date` header against this machine's clock.
fn clock(date: Option<&str>, now: SystemTime) -> Finding {
    let Some(server) = date.and_then(parse_http_date) else {
        return finding(
            "clock",
            Status::Warn,
            "no readable `Date` header: clock skew unknown",
            "token expiry is judged by this machine's clock; keep it in sync (NTP)",
        );
    };
    let (ahead, skew) = match now.duration_since(server) {
        Ok(d) => (true, d),
        Err(e) => (false, e.duration()),
    };
    let seconds = skew.as_secs();
    if skew <= SKEW_WARN {
        finding(
            "clock",
            Status::Ok,
            format!("within {seconds} s of the server's `Date`"),
            "token expiry dates mean the same here and there",
        )
    } else {
        let direction = if ahead { "ahead of" } else { "behind" };
        finding(
            "clock",
            Status::Warn,
            format!("this machine is {seconds} s {direction} the server's `Date`"),
            "token expiry is judged by this machine's clock: tokens are rotated that much early or late; `--rotate-before` (default 30d) must cover it",
        )
    }
}

/// How long the admin session lasts, from the login answer's `expire_date` and the server's
/// clock. `now` is the server's `Date` when it sent one.
fn session(expire_date: Option<f64>, now: SystemTime) -> Finding {
    let renews = "ozform renews it when a request is answered \"expired\" (refresh, else log in again), whatever its length";
    let Some(expire) = expire_date.filter(|e| e.is_finite() && *e > 0.0) else {
        return finding("session", Status::Ok, "the login answer gives no expiry", renews);
    };
    let now = now.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    let left = expire - now;
    if left <= 0.0 {
        return finding(
            "session",
            Status::Warn,
            "the admin session expired as it was issued (its expiry is at or before the server's `Date`)",
            "every request may have to log in again first: check the server's clock",
        );
    }
    // The `Date` header has whole seconds and the login came a moment before it: beyond two
    // minutes, the nearest minute is as exact as this can be.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let left = if left >= 120.0 { (left / 60.0).round() as u64 * 60 } else { left.round() as u64 };
    finding(
        "session",
        Status::Ok,
        format!("the admin session lasts about {}", humantime::format_duration(Duration::from_secs(left))),
        renews,
    )
}

fn token_store(tokens: &Tokens, api_url: &str, admin_password: &crate::secret::SecretRef) -> Finding {
    // The store's helper (if any) gets neither the admin password's variable nor its value.
    let store = open_store(tokens, api_url, [admin_password], &crate::secret::process_env);
    match store.check() {
        Ok(()) => finding(
            "token_store",
            Status::Ok,
            "the token store can keep tokens (a probe was written and removed)",
            "apply can issue tokens: each is stored before the next is issued",
        ),
        Err(e) => finding(
            "token_store",
            Status::Fail,
            e.to_string(),
            "apply would stop before issuing any token; plan cannot read stored tokens",
        ),
    }
}

/// An HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110's IMF-fixdate) as a time.
pub fn parse_http_date(text: &str) -> Option<SystemTime> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else { return None };
    let day: i64 = day.parse().ok()?;
    let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        .iter()
        .position(|m| m == month)?;
    let year: i64 = year.parse().ok()?;
    let hms: Vec<i64> = time.split(':').map(str::parse).collect::<Result<_, _>>().ok()?;
    let [h, m, s] = hms.as_slice() else { return None };
    let days = days_from_civil(year, i64::try_from(month).ok()? + 1, day);
    let seconds = days * 86_400 + h * 3600 + m * 60 + s;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).ok()?))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http_date_reads_as_the_time_it_names() {
        let t = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(t.duration_since(UNIX_EPOCH).unwrap().as_secs(), 784_111_777);
        let t = parse_http_date("Mon, 30 Nov 2026 06:00:00 GMT").unwrap();
        assert_eq!(t.duration_since(UNIX_EPOCH).unwrap().as_secs(), 1_796_018_400);
        assert!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT").is_none());
        assert!(parse_http_date("").is_none());
    }

    #[test]
    fn a_clock_off_by_more_than_a_minute_is_a_warning_naming_the_direction() {
        let server = "Mon, 30 Nov 2026 06:00:00 GMT";
        let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(1_796_018_400 + secs);
        assert_eq!(clock(Some(server), at(30)).status, Status::Ok);
        let ahead = clock(Some(server), at(600));
        assert_eq!(ahead.status, Status::Warn);
        assert!(ahead.summary.contains("600 s ahead of"), "{}", ahead.summary);
        let behind = clock(Some(server), UNIX_EPOCH + Duration::from_secs(1_796_018_400 - 120));
        assert!(behind.summary.contains("120 s behind"), "{}", behind.summary);
        assert_eq!(clock(None, at(0)).status, Status::Warn);
    }

    #[test]
    fn a_certificate_tells_its_subject_and_expiry_and_garbage_tells_nothing() {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject as _;
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls/server.pem");
        let cert = CertificateDer::from_pem_file(path).unwrap();
        let facts = certificate_facts(&cert).unwrap();
        assert_eq!(facts.subject, "CN=127.0.0.1");
        assert_eq!(facts.not_after_text, "2126-11-05 03:53:42 UTC");
        for cut in 0..cert.len() {
            assert!(certificate_facts(&cert[..cut]).is_none(), "a certificate cut at {cut}");
        }
        assert!(certificate_facts(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_none());
        assert!(certificate_facts(b"").is_none());
    }

    #[test]
    fn a_certificate_close_to_its_expiry_is_a_warning_and_an_expired_one_fails() {
        let facts = CertFacts {
            subject: "CN=oz".into(),
            not_after: UNIX_EPOCH + Duration::from_secs(1_000 * 86_400),
            not_after_text: "t".into(),
        };
        let base = || finding("reachable", Status::Ok, "answered over HTTPS", "fine");
        let mut far = base();
        certificate_finding(&mut far, &facts, UNIX_EPOCH + Duration::from_secs(900 * 86_400));
        assert_eq!(
            (far.status, far.summary.as_str()),
            (Status::Ok, "answered over HTTPS; certificate for CN=oz, valid until t")
        );
        let mut near = base();
        certificate_finding(&mut near, &facts, UNIX_EPOCH + Duration::from_secs(990 * 86_400));
        assert_eq!(near.status, Status::Warn);
        assert!(near.meaning.contains("expires in 10 day(s)"), "{}", near.meaning);
        let mut past = base();
        certificate_finding(&mut past, &facts, UNIX_EPOCH + Duration::from_secs(1_001 * 86_400));
        assert_eq!(past.status, Status::Fail);
    }

    #[test]
    fn the_session_lifetime_is_told_from_its_expiry_and_the_servers_clock() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(session(Some(1_000_000.0 + 901.4), now).summary, "the admin session lasts about 15m");
        assert_eq!(session(Some(1_000_000.0 + 898.6), now).summary, "the admin session lasts about 15m");
        assert_eq!(session(Some(1_000_000.0 + 90.4), now).summary, "the admin session lasts about 1m 30s");
        assert_eq!(session(None, now).status, Status::Ok);
        assert_eq!(session(Some(999_000.0), now).status, Status::Warn);
        assert_eq!(session(Some(f64::NAN), now).summary, "the login answer gives no expiry");
    }

    #[test]
    fn list_shapes_are_told_apart() {
        let bare = Shape::of(&serde_json::json!([{"user_id": "a"}])).unwrap();
        assert!(bare.envelope.is_none() && bare.total.is_none() && bare.items.len() == 1);
        let results = Shape::of(&serde_json::json!({"results": [], "count": 7})).unwrap();
        assert_eq!((results.envelope, results.total), (Some("results"), Some(("count", 7))));
        assert!(Shape::of(&serde_json::json!({"users": []})).is_none());
    }
}
