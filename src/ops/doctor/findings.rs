//! What the doctor's facts mean: each function judges wire facts (`oz::probe`), the login's
//! outcome or the token store's check into one `Finding`, saying what was seen and what it
//! means for plan and apply. Pure: no I/O, the clock passed in; the words are the contract of
//! `ozform doctor`'s report (docs/cli.md).

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::model::ApiVersion;
use crate::oz::{
    CompaniesPage, DialectEvidence, Fault, ListShape, OzError, ServerCertificate, Unanswered, UserFields,
    UsersPage,
};
use crate::words::count;

use super::super::settings::StoreSpec;

/// The page size the doctor asks for, to find the largest page the server gives.
pub const BIG_PAGE: usize = 1000;
/// Clock skew beyond this is worth a warning.
const SKEW_WARN: Duration = Duration::from_secs(60);
/// A certificate expiring within this long is worth a warning.
const CERT_WARN: Duration = Duration::from_secs(30 * 86_400);

/// A page of users as a probe answered it, or why it did not.
pub type UsersAnswer = Result<UsersPage, Unanswered>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    /// How the text report shows it.
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        }
    }
}

/// One thing the doctor looked at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// A stable name: `reachable`, `login`, `api_version`, `list_shape`, `objects`,
    /// `permissions` (only when hidden), `path_form` (only when flipped), `page_size`, `offset`,
    /// `filters`, `companies`, `clock`, `session`, `faults`, `token_store`.
    pub check: &'static str,
    pub status: Status,
    /// What was seen.
    pub summary: String,
    /// What it means for plan and apply.
    pub meaning: String,
}

fn finding(
    check: &'static str,
    status: Status,
    summary: impl Into<String>,
    meaning: impl Into<String>,
) -> Finding {
    Finding { check, status, summary: summary.into(), meaning: meaning.into() }
}

const CANNOT: &str = "plan, apply and export cannot run";

/// The API answered, over HTTPS (trusted through the system roots or `--ca-cert`) or plain HTTP.
pub fn reachable(api_url: &str, private_ca: bool) -> Finding {
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
    } else if super::super::is_loopback(api_url) {
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

/// The admin login worked.
pub fn logged_in(admin_email: &str) -> Finding {
    finding(
        "login",
        Status::Ok,
        format!("logged in as `{admin_email}`"),
        "plan, apply and export can read the installation",
    )
}

/// The findings for a failed connect (after the client's retries): where it stopped, and what
/// to do.
pub fn connect_failure(e: &OzError, api_url: &str, private_ca: bool, admin_email: &str) -> Vec<Finding> {
    let tls = api_url.starts_with("https://");
    match e {
        OzError::Unreachable { help, .. } => {
            let meaning = match help {
                Some(help) => format!("{CANNOT}: {help}"),
                None => format!("{CANNOT}: check the URL, the network path and that the API is up"),
            };
            vec![finding("reachable", Status::Fail, e.to_string(), meaning)]
        }
        OzError::Transport { reason, .. } => {
            let tls_problem =
                tls && ["certificate", "tls", "handshake"].iter().any(|w| reason.to_lowercase().contains(w));
            let meaning = if tls_problem {
                format!("{CANNOT}: the server's certificate is not trusted; give its CA with `--ca-cert`")
            } else {
                format!("{CANNOT}: check the URL, the network path and that the API is up")
            };
            vec![finding("reachable", Status::Fail, e.to_string(), meaning)]
        }
        OzError::Login { .. } => vec![
            reachable(api_url, private_ca),
            finding(
                "login",
                Status::Fail,
                e.to_string(),
                format!("{CANNOT}: check the admin email and password; the account must be an ADMIN"),
            ),
        ],
        // Connecting fails this way only after logging in, when `auto` finds nothing to decide by.
        OzError::Config { message, help: Some(help) } if help.contains("--api-version") => vec![
            reachable(api_url, private_ca),
            finding("login", Status::Ok, format!("logged in as `{admin_email}`"), "the admin account works"),
            finding(
                "api_version",
                Status::Fail,
                message.clone(),
                format!("{CANNOT} with `--api-version auto`: pass `--api-version 5` or `6`"),
            ),
        ],
        other => vec![finding("reachable", Status::Fail, other.to_string(), CANNOT)],
    }
}

/// The first page of users could not be read: nothing else about the lists can be told.
pub fn users_unread(why: &Unanswered) -> Finding {
    finding("list_shape", Status::Fail, why.to_string(), "plan and apply cannot read the users")
}

/// Add the server certificate's subject and expiry to the `reachable` finding.
pub fn certificate(reachable: &mut Finding, certificate: &ServerCertificate, now: SystemTime) {
    // Writing to a String cannot fail.
    let _ = write!(
        reachable.summary,
        "; certificate for {}, valid until {}",
        certificate.subject, certificate.not_after_text
    );
    match certificate.not_after.duration_since(now) {
        Err(_) => {
            reachable.status = Status::Fail;
            reachable.meaning =
                "the server's certificate has expired: requests will be refused once clocks agree; renew it"
                    .into();
        }
        Ok(left) if left < CERT_WARN => {
            reachable.status = Status::Warn;
            reachable.meaning = format!(
                "the server's certificate expires in {}: renew it before ozform's requests are refused",
                count(left.as_secs() / 86_400, "day", "days")
            );
        }
        Ok(_) => {}
    }
}

/// The dialect, detected or configured, against what the users say.
pub fn api_version(version: ApiVersion, detected: bool, evidence: &DialectEvidence) -> Finding {
    let seen = format!(
        "permissions spelt the API 5 way by {}, the API 6 way by {}; {}, {}",
        count(evidence.v5_spelling, "user", "users"),
        count(evidence.v6_spelling, "user", "users"),
        count(evidence.v6_roles, "API 6 role", "API 6 roles"),
        count(evidence.v5_flags, "API 5 service/admin flag", "API 5 service/admin flags")
    );
    if detected {
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

/// How lists are shaped, and so how ozform pages through them.
pub fn list_shape(shape: &ListShape) -> Finding {
    let (summary, meaning) = match (shape.envelope, shape.total) {
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

/// How user objects are spelled: fields ozform does not know, optional fields left out.
pub fn objects(fields: &UserFields) -> Finding {
    let quoted = |names: &mut dyn Iterator<Item = &str>| names.map(|n| format!("`{n}`")).collect::<Vec<_>>();
    let mut seen = Vec::new();
    if !fields.unknown.is_empty() {
        let mut names = quoted(&mut fields.unknown.iter().map(String::as_str));
        if fields.more_unknown > 0 {
            names.push(format!("and {} more", fields.more_unknown));
        }
        seen.push(format!("fields ozform does not know: {}", names.join(", ")));
    }
    if !fields.omitted.is_empty() {
        let names = quoted(&mut fields.omitted.iter().copied());
        seen.push(format!("optional fields left out: {}", names.join(", ")));
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

/// A warning when no user object shows a permission flag (in either spelling): then ozform
/// cannot read permissions.
pub fn permissions(first: &UsersPage) -> Option<Finding> {
    let shown = first.evidence.v5_spelling + first.evidence.v6_spelling;
    (first.len > 0 && shown == 0).then(|| {
        finding(
            "permissions",
            Status::Warn,
            format!("none of {} shows a permission flag", count(first.len, "user", "users")),
            "ozform cannot read permissions: manifests that write `permissions` plan an update on every run; leave them out to keep permissions unmanaged",
        )
    })
}

/// A warning when only the undocumented trailing-slash form of the users path is routed.
pub fn path_form(first: &UsersPage) -> Option<Finding> {
    (first.path != first.asked).then(|| {
        finding(
            "path_form",
            Status::Warn,
            format!("`{}` is not routed; `{}` is", first.asked, first.path),
            "ozform learns the routed form on the first miss: one extra request per kind of path",
        )
    })
}

/// The largest page the server gives: fewer than asked while more exist means a cap. `next`
/// is the page after the first, asked when the first gave no total and held fewer than asked.
pub fn page_size(first: &UsersPage, next: Option<&UsersAnswer>) -> Finding {
    let given = first.len;
    let capped = match (first.shape.total, next) {
        (Some((_, total)), _) => u64::try_from(given).is_ok_and(|g| g < total.min(BIG_PAGE as u64)),
        // No total: more exist when the next offset still answers other users.
        (None, Some(Ok(next))) => next.first_id.is_some() && next.first_id != first.first_id,
        (None, _) => false,
    };
    if capped {
        finding(
            "page_size",
            Status::Warn,
            format!(
                "at most {} per page, whatever `limit` asks ({BIG_PAGE} asked)",
                count(given, "user", "users")
            ),
            "ozform reads as many pages as it takes: more requests, same result",
        )
    } else {
        finding(
            "page_size",
            Status::Ok,
            format!("{} in one page of {BIG_PAGE} asked: no cap seen", count(given, "user", "users")),
            "ozform reads lists in pages of 100",
        )
    }
}

/// Whether `offset` moves through the list: the first user of the pages of one at offsets 0
/// and 1 (asked when there are 2 users or more) differ.
pub fn offset(pages: Option<&(UsersAnswer, UsersAnswer)>) -> Finding {
    match pages {
        None => finding(
            "offset",
            Status::Ok,
            "not tested: fewer than 2 users",
            "paging is tested once there are 2 users or more",
        ),
        Some((Err(e), _) | (_, Err(e))) => finding(
            "offset",
            Status::Warn,
            format!("not tested: {e}"),
            "ozform refuses to read a list whose `offset` is ignored: plan would say so",
        ),
        Some((Ok(a), Ok(b))) if a.first_id.is_some() && a.first_id == b.first_id => finding(
            "offset",
            Status::Fail,
            "ignored: `offset=1` answers the same first user as `offset=0`",
            "every page would be the first: ozform refuses to read such lists, so plan and apply stop",
        ),
        Some(_) => finding("offset", Status::Ok, "honoured", "ozform pages through every list"),
    }
}

/// Whether the `email` filter narrows the list: an email no one has (asked when there are
/// users) must answer no user.
pub fn filters(answer: Option<&UsersAnswer>) -> Finding {
    match answer {
        None => {
            finding("filters", Status::Ok, "not tested: no users", "filters are tested once there are users")
        }
        Some(Ok(page)) if page.len > 0 => finding(
            "filters",
            Status::Warn,
            "ignored: asking for an email no one has answers users anyway",
            "filters ignored: ozform filters on its side, so a lookup by email or company reads the whole list",
        ),
        Some(Ok(_)) => finding(
            "filters",
            Status::Ok,
            "honoured",
            "lookups by email and company read only what they need",
        ),
        Some(Err(Unanswered::NotAList { .. })) => {
            finding("filters", Status::Warn, "not answered as a list", "ozform filters on its side")
        }
        Some(Err(e)) => {
            finding("filters", Status::Warn, format!("not tested: {e}"), "ozform filters on its side")
        }
    }
}

/// The companies list: how many, and how many are being deleted (still listed, with
/// `in_deletion`).
pub fn companies(answer: &Result<CompaniesPage, Unanswered>) -> Finding {
    let page = match answer {
        Ok(page) => page,
        Err(e) => {
            return finding(
                "companies",
                Status::Fail,
                format!("the companies list could not be read: {e}"),
                "plan and apply cannot read the companies",
            );
        }
    };
    let total = page.shape.total.map_or(page.len as u64, |(_, t)| t);
    if page.in_deletion == 0 {
        finding(
            "companies",
            Status::Ok,
            format!("{}, none being deleted", count(total, "company", "companies")),
            "ozform reads them all",
        )
    } else {
        finding(
            "companies",
            Status::Ok,
            format!(
                "{}, {} being deleted and still listed (`in_deletion`)",
                count(total, "company", "companies"),
                page.in_deletion
            ),
            "ozform never matches a company being deleted by name (a manifest naming it plans a new one), a user still in one is a conflict, and export leaves it out",
        )
    }
}

/// Clock skew of this machine (`now`) from the server's `Date`.
pub fn clock(server: Option<SystemTime>, now: SystemTime) -> Finding {
    let Some(server) = server else {
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
pub fn session(expire_date: Option<f64>, now: SystemTime) -> Finding {
    let renews = "ozform renews it when a request is answered \"expired\" (refresh, else log in again), whatever its length";
    let Some(expire) = expire_date.filter(|e| e.is_finite() && *e > 0.0) else {
        return finding("session", Status::Ok, "the login answer gives no expiry", renews);
    };
    let now = crate::model::epoch_seconds(now);
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
    // minutes, the nearest minute is as exact as this can be. `left` is positive and finite
    // (both terms are), and far below `u64::MAX` seconds for any date a server sends.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let left = if left >= 120.0 { (left / 60.0).round() as u64 * 60 } else { left.round() as u64 };
    finding(
        "session",
        Status::Ok,
        format!("the admin session lasts about {}", humantime::format_duration(Duration::from_secs(left))),
        renews,
    )
}

/// The transient failures the probes met and tried again, counted by kind in the order first met.
pub fn faults(seen: &[Fault]) -> Finding {
    if seen.is_empty() {
        return finding("faults", Status::Ok, "none seen", "no retries were needed");
    }
    let mut counted: Vec<(String, usize)> = Vec::new();
    for what in seen.iter().map(fault_words) {
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

fn fault_words(fault: &Fault) -> String {
    match fault {
        Fault::TooManyRequests { retry_after: Some(wait) } => {
            format!("429 Too Many Requests (Retry-After {} s)", seconds(*wait))
        }
        Fault::TooManyRequests { retry_after: None } => "429 Too Many Requests (no Retry-After)".into(),
        Fault::ServerError(status) => format!("{status} (server error)"),
        Fault::NoAnswer => "no answer (connection closed or timed out)".into(),
        Fault::SessionExpired(status) => format!("the admin session expired ({status})"),
    }
}

/// `2` for two seconds, `0.5` for half of one.
fn seconds(d: Duration) -> String {
    if d.subsec_nanos() == 0 { d.as_secs().to_string() } else { d.as_secs_f64().to_string() }
}

/// The token store, as the finding names it: the directory, or the helper's command line.
pub fn store_name(store: &StoreSpec) -> String {
    match store {
        StoreSpec::Dir(dir) => format!("the token directory `{}`", dir.display()),
        StoreSpec::Exec(argv) => {
            let command = shlex::try_join(argv.iter().map(String::as_str)).unwrap_or_else(|_| argv.join(" "));
            format!("the token store helper `{command}`")
        }
    }
}

/// The token store's `check` (`Err` holds why it cannot keep tokens).
pub fn token_store(store: &StoreSpec, checked: Result<(), String>) -> Finding {
    let name = store_name(store);
    match checked {
        Ok(()) => {
            let how = match store {
                StoreSpec::Dir(_) => "a probe file was written and removed",
                StoreSpec::Exec(_) => "it answered `check`",
            };
            finding(
                "token_store",
                Status::Ok,
                format!("{name} can keep tokens ({how})"),
                "apply can issue tokens: a token step is done only once its token is stored, and at most `--parallelism` tokens are ever issued but not yet stored",
            )
        }
        Err(why) => finding(
            "token_store",
            Status::Fail,
            format!("{name} cannot keep tokens: {why}"),
            "apply would stop before issuing any token: it checks the token store the same way first",
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use std::time::UNIX_EPOCH;

    fn users(len: usize, first_id: Option<&str>) -> UsersPage {
        UsersPage {
            asked: "/api/users/",
            path: "/api/users/".into(),
            shape: ListShape { envelope: None, total: None },
            len,
            first_id: first_id.map(str::to_string),
            fields: UserFields::default(),
            evidence: crate::oz::dialect_evidence(&[]),
            certificate: None,
            date: None,
        }
    }

    #[test]
    fn a_clock_off_by_more_than_a_minute_is_a_warning_naming_the_direction() {
        let server = httpdate::parse_http_date("Mon, 30 Nov 2026 06:00:00 GMT").ok();
        let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(1_796_018_400 + secs);
        assert_eq!(clock(server, at(30)).status, Status::Ok);
        let ahead = clock(server, at(600));
        assert_eq!(ahead.status, Status::Warn);
        assert!(ahead.summary.contains("600 s ahead of"), "{}", ahead.summary);
        let behind = clock(server, UNIX_EPOCH + Duration::from_secs(1_796_018_400 - 120));
        assert!(behind.summary.contains("120 s behind"), "{}", behind.summary);
        assert_eq!(clock(None, at(0)).status, Status::Warn);
    }

    #[test]
    fn a_certificate_close_to_its_expiry_is_a_warning_and_an_expired_one_fails() {
        let cert = ServerCertificate {
            subject: "CN=oz".into(),
            not_after: UNIX_EPOCH + Duration::from_secs(1_000 * 86_400),
            not_after_text: "t".into(),
        };
        let base = || finding("reachable", Status::Ok, "answered over HTTPS", "fine");
        let mut far = base();
        certificate(&mut far, &cert, UNIX_EPOCH + Duration::from_secs(900 * 86_400));
        assert_eq!(
            (far.status, far.summary.as_str()),
            (Status::Ok, "answered over HTTPS; certificate for CN=oz, valid until t")
        );
        let mut near = base();
        certificate(&mut near, &cert, UNIX_EPOCH + Duration::from_secs(990 * 86_400));
        assert_eq!(near.status, Status::Warn);
        assert!(near.meaning.contains("expires in 10 days"), "{}", near.meaning);
        let mut past = base();
        certificate(&mut past, &cert, UNIX_EPOCH + Duration::from_secs(1_001 * 86_400));
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
    fn faults_are_counted_by_kind_in_the_order_first_met() {
        let seen = [
            Fault::ServerError(503),
            Fault::TooManyRequests { retry_after: Some(Duration::from_millis(500)) },
            Fault::ServerError(503),
            Fault::NoAnswer,
            Fault::TooManyRequests { retry_after: None },
            Fault::SessionExpired(401),
        ];
        assert_eq!(
            faults(&seen).summary,
            "transient failures, each tried again: 503 (server error) ×2, 429 Too Many Requests (Retry-After 0.5 s) ×1, \
             no answer (connection closed or timed out) ×1, 429 Too Many Requests (no Retry-After) ×1, \
             the admin session expired (401) ×1"
        );
        assert_eq!((faults(&[]).status, faults(&seen).status), (Status::Ok, Status::Warn));
    }

    #[test]
    fn the_token_store_finding_names_the_store_and_the_bound_of_tokens_not_yet_stored() {
        let dir = StoreSpec::Dir("/srv/ozform tokens".into());
        let ok = token_store(&dir, Ok(()));
        assert_eq!(
            ok.summary,
            "the token directory `/srv/ozform tokens` can keep tokens (a probe file was written and removed)"
        );
        assert!(ok.meaning.contains("at most `--parallelism` tokens are ever issued but not yet stored"));
        let helper = StoreSpec::Exec(vec!["kube-store".into(), "--namespace".into(), "prod ns".into()]);
        let failed = token_store(&helper, Err("token store helper … failed `check`: exit 3".into()));
        assert_eq!(failed.status, Status::Fail);
        assert!(
            failed.summary.starts_with(
                "the token store helper `kube-store --namespace 'prod ns'` cannot keep tokens: "
            ),
            "{}",
            failed.summary
        );
    }

    #[test]
    fn paging_is_judged_from_the_first_users_of_the_pages_asked() {
        let first = users(4, Some("a"));
        assert_eq!(page_size(&first, Some(&Ok(users(4, Some("e"))))).status, Status::Warn);
        assert_eq!(page_size(&first, Some(&Ok(users(4, Some("a"))))).status, Status::Ok);
        assert_eq!(page_size(&first, Some(&Ok(users(0, None)))).status, Status::Ok);
        let mut total = users(4, Some("a"));
        total.shape.total = Some(("total", 9));
        assert_eq!(page_size(&total, None).status, Status::Warn);

        let same = (Ok(users(1, Some("a"))), Ok(users(1, Some("a"))));
        assert_eq!(offset(Some(&same)).status, Status::Fail);
        let moved = (Ok(users(1, Some("a"))), Ok(users(1, Some("b"))));
        assert_eq!(offset(Some(&moved)).summary, "honoured");
        let unanswered =
            (Ok(users(1, Some("a"))), Err(Unanswered::Status { path: "/api/users/".into(), status: 503 }));
        let judged = offset(Some(&unanswered));
        assert_eq!(
            (judged.status, judged.summary.as_str()),
            (Status::Warn, "not tested: GET /api/users/ answered 503")
        );
        assert_eq!(offset(None).status, Status::Ok);
    }

    #[test]
    fn unknown_fields_past_those_named_are_counted() {
        let fields = UserFields {
            unknown: BTreeSet::from(["_links".to_string()]),
            more_unknown: 3,
            omitted: BTreeSet::from(["is_admin"]),
        };
        assert_eq!(
            objects(&fields).summary,
            "fields ozform does not know: `_links`, and 3 more; optional fields left out: `is_admin`"
        );
    }
}
