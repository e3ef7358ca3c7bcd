//! The Oz client against the built-in emulator on loopback, the one fake of the Oz API
//! (builders in `tests/testsuite/common/emulator.rs`): sessions, paging, filters, retries, dropped
//! connections, trailing slashes, dialects, secrets, and `--ca-cert` through a small
//! TLS-terminating proxy in front of the emulator. One raw TCP server remains, for the one
//! behaviour the emulator must never have: echoing a password back.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc, clippy::too_many_lines)]

use crate::common;

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::builders::{new_company, new_user};
use common::emulator::{
    Emulator, client_config, company_id, connect, count, count_ok, email, seed, tls_proxy, tls_proxy_with,
    user_id,
};
use ozform::emulator::{Envelope, Faults, Gate, Handle, Quirks, TotalField, TrailingSlash};
use ozform::model::{
    ApiVersion, CompanyPatch, Email, NewCompany, NewUser, ObservedUser, Permissions, UserKind, UserPatch,
};
use ozform::oz::{ClientConfig, OzClient, OzError, RetryPolicy, UserFilter, VersionSetting};
use ozform::secret::Secret;

const BOTH: [ApiVersion; 2] = [ApiVersion::V5, ApiVersion::V6];
/// The admin password of the emulators here: a canary, so that any leak of it shows.
const ADMIN_PASSWORD: &str = "canary-admin-password-7731";

/// An API 6 emulator holding the companies Acme and Beta and `n` service users
/// `user{i}@x.test` (`common::emulator::seed`: the even ones in Acme, the odd ones in Beta),
/// its admin password a canary. Besides them, the API lists its admin among the users.
fn acme_beta(n: usize) -> Emulator {
    Emulator::new(ApiVersion::V6)
        .seed(seed(ApiVersion::V6, &["Acme", "Beta"], n))
        .with(|c| c.admin_password = Secret::new(ADMIN_PASSWORD))
}

/// An update that turns off the `quality` permission and nothing else.
fn quality_off() -> UserPatch {
    UserPatch {
        permissions: Permissions { quality: Some(false), ..Permissions::default() },
        ..UserPatch::default()
    }
}

/// Path and body of each user create or update and each token request, in order.
fn user_and_token_writes(handle: &Handle) -> Vec<(String, Value)> {
    handle
        .requests()
        .into_iter()
        .filter(|r| matches!(r.method.as_str(), "POST" | "PATCH"))
        .filter(|r| r.path.starts_with("/api/users") || r.path.starts_with("/api/authorize/service_token"))
        .map(|r| (r.path, r.body.unwrap_or(Value::Null)))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Session and headers.

#[tokio::test]
async fn connect_logs_in_and_every_request_carries_the_session_token_and_user_agent() {
    let handle = acme_beta(3).start().await;
    let client = connect(&handle, |_| {}).await;
    assert_eq!(client.api_version(), ApiVersion::V6);
    assert_eq!(client.api_url(), handle.url());
    let users = client.list_users(&UserFilter::default()).await.unwrap();
    assert_eq!(users.len(), 4, "3 seeded and the admin");
    // Every request after login passed the token check (the emulator answers 401 otherwise,
    // and the client would have logged in again).
    assert_eq!(count(&handle, "POST /api/authorize/auth"), 1);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(handle.stats().user_agents, BTreeSet::from([format!("ozform/{version}")]));
}

#[tokio::test]
async fn a_refused_login_names_the_account_but_never_the_password() {
    let handle = acme_beta(0).start().await;
    let mut cfg = client_config(&handle);
    cfg.admin_password = Secret::new("canary-wrong-password-0042");
    let err = OzClient::connect(cfg.clone()).await.unwrap_err();
    assert!(matches!(err, OzError::Login { status: 401, .. }), "{err:?}");
    let shown = format!("{err} {err:?}");
    assert!(shown.contains(handle.admin_email()), "{shown}");
    assert!(!shown.contains("canary"), "{shown}");

    // A careless server may echo what it was sent; the emulator never does.
    cfg.api_url = echoing_server().await;
    let err = OzClient::connect(cfg).await.unwrap_err();
    assert!(matches!(err, OzError::Login { status: 401, .. }), "{err:?}");
    let shown = format!("{err} {err:?}");
    assert!(shown.contains(handle.admin_email()), "{shown}");
    assert!(!shown.contains("canary"), "{shown}");
    assert!(shown.contains("(sensitive)"), "the echoed password was blanked out: {shown}");
}

/// A server that answers every request 401 with a message echoing the credentials it was sent.
/// The one server of its own this file keeps: echoing a password is what the emulator must
/// never do (it never returns a password), so it cannot be an emulator quirk.
async fn echoing_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Some(body) = read_request_body(&mut socket).await else { return };
                let sent: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let message = format!("invalid credentials: {}", sent["credentials"]);
                let body = json!({"error_code": 7, "error_message": message, "details": null}).to_string();
                let answer = format!(
                    "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    url
}

/// Read one HTTP/1.1 request from `socket` and return its body (as long as its
/// `Content-Length` says); `None` when the connection closes first.
async fn read_request_body(socket: &mut TcpStream) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = socket.read(&mut buf).await.ok().filter(|n| *n > 0)?;
        got.extend_from_slice(&buf[..n]);
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if got.len() >= end + 4 + length {
                return Some(got[end + 4..end + 4 + length].to_vec());
            }
        }
    }
}

#[tokio::test]
async fn a_session_that_expires_in_the_middle_of_a_listing_is_renewed_once_and_the_listing_completes() {
    let handle = acme_beta(250).start().await;
    let client = connect(&handle, |c| c.api_version = VersionSetting::Fixed(ApiVersion::V6)).await;
    // Every session expires once, just before the second page request (the first of the
    // window after the page at 0) is handled.
    handle.set_faults(Faults { expire_sessions_at: 2, ..Faults::default() });
    let users = client.list_users(&UserFilter::default()).await.unwrap();
    assert_eq!(users.len(), 251, "250 seeded and the admin");
    let (logins, refreshes) =
        (count_ok(&handle, "POST /api/authorize/auth"), count_ok(&handle, "POST /api/authorize/refresh"));
    assert_eq!((logins, refreshes), (1, 1), "one refresh, no new login");
}

#[tokio::test]
async fn concurrent_requests_share_one_renewal_of_an_expired_session() {
    for version in BOTH {
        let handle = Emulator::new(version).seed(seed(version, &["Acme", "Beta"], 10)).start().await;
        let client = connect(&handle, |_| {}).await;
        handle.expire_all_sessions();
        // A little latency, so that the finds overlap.
        handle.set_faults(Faults { latency_ms: 5, ..Faults::default() });
        let finds = (0..10).map(|i| {
            let client = client.clone();
            async move { client.find_user(&Email::new(format!("USER{i}@x.test"))).await }
        });
        let found = futures::future::join_all(finds).await;
        for (i, f) in found.into_iter().enumerate() {
            assert_eq!(f.unwrap().map(|u| u.id), Some(user_id(&handle, &email(i))), "{version:?}");
        }
        let renewals =
            count(&handle, "POST /api/authorize/auth") + count(&handle, "POST /api/authorize/refresh");
        assert_eq!(renewals, 2, "{version:?}: the first login, then one shared renewal");
    }
}

// ---------------------------------------------------------------------------------------------
// Paging.

#[tokio::test]
async fn every_envelope_shape_lists_every_item_in_pages() {
    let shapes = [
        (Envelope::Bare, TotalField::Total),
        (Envelope::Items, TotalField::Omitted),
        (Envelope::Results, TotalField::Count),
        (Envelope::Data, TotalField::Total),
    ];
    for (envelope, total_field) in shapes {
        // Sparse objects: a company's empty `technical_meta_data` is left out.
        let quirks = Quirks { envelope, total_field, sparse_objects: true, ..Quirks::default() };
        let handle = acme_beta(250).quirks(quirks).start().await;
        let client = connect(&handle, |_| {}).await;
        let before = count(&handle, "GET /api/users");
        let users = client.list_users(&UserFilter::default()).await.unwrap();
        assert_eq!(users.len(), 251, "{envelope:?}: 250 seeded and the admin");
        let ids: HashSet<_> = users.iter().map(|u| u.id.clone()).collect();
        assert_eq!(ids.len(), 251, "{envelope:?}: no duplicates");
        // 100 + 100 + 51: a short page (or the total) ends the listing.
        assert_eq!(count(&handle, "GET /api/users") - before, 3, "{envelope:?}");
        let companies = client.list_companies().await.unwrap();
        assert_eq!(companies.len(), 2, "{envelope:?}");
        assert_eq!(companies[0].technical_meta_data, json!({}), "missing meta data reads as empty");
    }
}

#[tokio::test]
async fn a_server_that_caps_limit_is_paged_at_its_own_page_size() {
    let handle = acme_beta(95).quirks(Quirks { max_limit: Some(30), ..Quirks::default() }).start().await;
    let client = connect(&handle, |_| {}).await;
    handle.reset_stats();
    let users = client.list_users(&UserFilter::default()).await.unwrap();
    assert_eq!(users.len(), 96, "95 seeded and the admin");
    assert_eq!(users.iter().map(|u| u.id.as_str()).collect::<HashSet<_>>().len(), 96);
    // 30 + 30 + 30 + 6 at offsets stepped by the server's 30, never the 100 asked for: the
    // first page alone, then 2, then 4 at once (no total, so windows double while pages are
    // full); the 6 at offset 90 end the list, the 2 pages after it were asked for with it.
    assert_eq!(users_page_offsets(&handle), [0, 30, 60, 90, 120, 150, 180]);
}

#[tokio::test]
async fn a_server_that_ignores_offset_is_a_paging_error_naming_the_path() {
    let handle = acme_beta(150).quirks(Quirks { ignore_offset: true, ..Quirks::default() }).start().await;
    let client = connect(&handle, |c| c.api_version = VersionSetting::Fixed(ApiVersion::V6)).await;
    let err = client.list_users(&UserFilter::default()).await.unwrap_err();
    match &err {
        OzError::Paging { path, reason } => {
            assert!(path.ends_with("/api/users/"), "{path}");
            assert!(reason.contains("offset"), "{reason}");
        }
        other => panic!("expected a paging error, got {other:?}"),
    }
}

/// The `offset` of each users page request in the request log, in arrival order.
fn users_page_offsets(handle: &Handle) -> Vec<usize> {
    handle
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.starts_with("/api/users"))
        .map(|r| {
            let query = r.query.as_deref().unwrap_or_default();
            let offset = query.split('&').find_map(|kv| kv.strip_prefix("offset="));
            offset.unwrap_or_else(|| panic!("no offset in `{r}`")).parse().unwrap()
        })
        .collect()
}

#[tokio::test]
async fn without_a_total_the_next_pages_are_asked_for_together_in_doubling_windows() {
    // 650 users and the admin in pages of 100 and no total: the page at 0 alone, then 100 and
    // 200 together, then 300 to 600 together; the short page at 600 ends the list. The gate
    // holds the four pages from 300 on until all four are in flight: a client asking for them
    // one at a time would stall on it (10 s) and see at most one in flight.
    let handle = acme_beta(650).start().await;
    let client = connect(&handle, |c| c.api_version = VersionSetting::Fixed(ApiVersion::V6)).await;
    handle.set_gate(Some(Gate {
        route: "GET /api/users/".into(),
        min_offset: 300,
        together: 4,
        max_wait: Duration::from_secs(10),
    }));
    handle.reset_stats();
    let users = client.list_users(&UserFilter::default()).await.unwrap();
    assert_eq!(users.len(), 651, "650 seeded and the admin");
    assert_eq!(users.iter().map(|u| u.id.as_str()).collect::<HashSet<_>>().len(), 651);
    let mut offsets = users_page_offsets(&handle);
    // Arrival order within one window is the network's; the windows follow one another.
    offsets[1..3].sort_unstable();
    offsets[3..].sort_unstable();
    assert_eq!(offsets, [0, 100, 200, 300, 400, 500, 600]);
    assert_eq!(handle.stats().max_in_flight, 4, "the window of four was in flight at once");
}

#[tokio::test]
async fn a_window_is_never_wider_than_max_in_flight_and_one_means_one_page_at_a_time() {
    for (max_in_flight, expected) in [
        (1, vec![0, 100, 200, 300, 400, 500, 600]),
        // Windows of 1, 2, 2, 2: 0 | 100 200 | 300 400 | 500 600.
        (2, vec![0, 100, 200, 300, 400, 500, 600]),
    ] {
        let handle = acme_beta(650).start().await;
        let client = connect(&handle, |c| c.max_in_flight = max_in_flight).await;
        handle.reset_stats();
        assert_eq!(client.list_users(&UserFilter::default()).await.unwrap().len(), 651);
        assert_eq!(users_page_offsets(&handle), expected, "max_in_flight {max_in_flight}");
        assert!(handle.stats().max_in_flight <= max_in_flight as u64, "max_in_flight {max_in_flight}");
    }
}

#[tokio::test]
async fn page_size_is_configurable() {
    let handle = acme_beta(50).start().await;
    let client = connect(&handle, |c| c.page_size = 20).await;
    let before = count(&handle, "GET /api/users");
    assert_eq!(client.list_users(&UserFilter::default()).await.unwrap().len(), 51, "50 seeded and the admin");
    // 20 + 20 + 11.
    assert_eq!(count(&handle, "GET /api/users") - before, 3);
    assert!(handle.requests().iter().any(|r| r.query.as_deref().is_some_and(|q| q.contains("limit=20"))));
}

#[tokio::test]
async fn the_users_of_one_company_share_one_copy_of_its_id() {
    let handle = acme_beta(6).start().await;
    let client = connect(&handle, |_| {}).await;
    let users = client.list_users(&UserFilter::default()).await.unwrap();
    let acme = company_id(&handle, "Acme");
    let ids: Vec<_> =
        users.iter().filter_map(|u| u.company_id.clone()).filter(|id| **id == *acme.as_str()).collect();
    assert_eq!(ids.len(), 3, "users 0, 2 and 4");
    assert!(ids.iter().all(|id| Arc::ptr_eq(id, &ids[0])), "one shared copy");
}

// ---------------------------------------------------------------------------------------------
// Filters.

#[tokio::test]
async fn filters_are_sent_and_applied_again_when_the_server_ignores_them() {
    for honour in [false, true] {
        let handle =
            acme_beta(40).quirks(Quirks { ignore_filters: !honour, ..Quirks::default() }).start().await;
        let client = connect(&handle, |_| {}).await;
        let found = client.find_user(&Email::new("User7@X.test")).await.unwrap();
        assert_eq!(found.map(|u| u.id), Some(user_id(&handle, "user7@x.test")));
        assert!(handle.requests().iter().any(|r| {
            let line = r.to_string();
            line.contains("email=user7%40x.test") || line.contains("email=User7")
        }));
        assert_eq!(client.find_user(&Email::new("nobody@x.test")).await.unwrap(), None);
        let companies = client.find_companies("Beta").await.unwrap();
        let beta = company_id(&handle, "Beta");
        assert_eq!(companies.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), [beta.as_str()]);
        let observed = client.observe(&["Acme".to_string()]).await.unwrap();
        assert_eq!(observed.companies.len(), 1);
        assert_eq!(observed.users.len(), 20, "honour={honour}");
        let acme = company_id(&handle, "Acme");
        assert!(observed.users.iter().all(|u| u.company_id.as_deref() == Some(acme.as_str())));
        assert!(handle.requests().iter().any(|r| r.to_string().contains(&format!("company_id={acme}"))));
    }
}

#[tokio::test]
async fn observe_for_some_companies_finds_a_declared_email_living_in_another_company() {
    // Users alternate between Acme (even) and Beta (odd); the server honours filters.
    let handle = acme_beta(40).start().await;
    let client = connect(&handle, |_| {}).await;
    let acme = ["Acme".to_string()];
    let keys = |emails: &[&str]| emails.iter().map(|e| Email::new(*e).key()).collect::<HashSet<String>>();
    let unfiltered = |h: &Handle| {
        count(h, "GET /api/users/?offset=0&limit=100")
            - count(h, "GET /api/users/?offset=0&limit=100&company_id")
    };

    // Every declared user is among Acme's: no listing beyond Acme's users.
    let before = unfiltered(&handle);
    let observed = client.observe_for(&acme, &keys(&["user0@x.test", "USER2@x.test"])).await.unwrap();
    assert_eq!(unfiltered(&handle), before, "{:?}", handle.requests());
    assert_eq!(observed.users.len(), 20);
    assert_eq!(observed.companies.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["Acme"]);

    // user7 lives in Beta and user99 nowhere: every user is listed once more, user7 and Beta
    // (to name it) are added, nothing else of Beta's.
    let observed =
        client.observe_for(&acme, &keys(&["user0@x.test", "user7@x.test", "user99@x.test"])).await.unwrap();
    assert_eq!(unfiltered(&handle), before + 1);
    assert_eq!(observed.users.len(), 21);
    let user7 = observed.users.iter().find(|u| u.email == Email::new("user7@x.test")).unwrap();
    assert_eq!(user7.company_id.as_deref(), Some(company_id(&handle, "Beta").as_str()));
    assert_eq!(observed.companies.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["Acme", "Beta"]);
}

#[tokio::test]
async fn observe_without_companies_reads_everything_in_neutral_form() {
    // Sparse objects with unknown fields: the empty middle name is left out.
    let quirks = Quirks { sparse_objects: true, extra_fields: true, ..Quirks::default() };
    let handle = acme_beta(5).quirks(quirks).start().await;
    let client = connect(&handle, |_| {}).await;
    let observed = client.observe(&[]).await.unwrap();
    assert_eq!((observed.companies.len(), observed.users.len()), (2, 6), "5 seeded users and the admin");
    assert_eq!(observed.api_version, ApiVersion::V6);
    let u = observed.users.iter().find(|u| u.email == Email::new(email(0))).unwrap();
    assert_eq!(u.kind, UserKind::Service);
    assert!(!u.permissions.documents && u.permissions.biometry);
    // (A `null` reads as empty too: the emulator never sends one, `oz::wire`'s tests check it.)
    assert_eq!(u.middle_name, "", "missing reads as empty");
}

#[tokio::test]
async fn a_look_up_whose_first_page_is_short_is_one_request() {
    // A look-up's short first page used not to be enough: it could not be told from a server
    // capping `limit` at that size, so two more pages were asked for (3 requests for one
    // company, after every company create in apply). Now it is complete unless the server is
    // known to cap pages at that size.
    let handle = acme_beta(4).start().await;
    // A fixed dialect: no detection listing teaches the client anything first.
    let client = connect(&handle, |c| c.api_version = VersionSetting::Fixed(ApiVersion::V6)).await;
    handle.reset_stats();
    let beta = client.find_companies("Beta").await.unwrap();
    assert_eq!(beta.iter().map(|c| c.id.clone()).collect::<Vec<_>>(), [company_id(&handle, "Beta")]);
    let found = client.find_user(&Email::new(email(1))).await.unwrap();
    assert_eq!(found.map(|u| u.id), Some(user_id(&handle, &email(1))));
    assert_eq!(client.find_user(&Email::new("nobody@x.test")).await.unwrap(), None);
    let stats = handle.stats();
    assert_eq!(stats.requests_by_route.get("GET /api/companies/"), Some(&1), "{stats:?}");
    assert_eq!(stats.requests_by_route.get("GET /api/users/"), Some(&2), "{stats:?}");
}

#[tokio::test]
async fn a_look_up_pages_on_where_the_server_is_known_to_cap_pages_whether_learned_or_told() {
    // One item a page, whatever `limit` asks, and two companies of the same name.
    let quirks = Quirks { max_limit: Some(1), ..Quirks::default() };
    let handle = Emulator::new(ApiVersion::V6)
        .seed(seed(ApiVersion::V6, &["Twin", "Twin", "Other"], 0))
        .quirks(quirks)
        .start()
        .await;
    let fixed = |c: &mut ClientConfig| c.api_version = VersionSetting::Fixed(ApiVersion::V6);

    // Told, as `ozform doctor` finds it: both twins, a page each and an empty one after them.
    let client = connect(&handle, fixed).await;
    client.know_page_cap(Some(1));
    handle.reset_stats();
    assert_eq!(client.find_companies("Twin").await.unwrap().len(), 2);
    assert_eq!(handle.stats().requests_by_route.get("GET /api/companies/"), Some(&3));

    // Learned from a listing whose short first page was followed by more items.
    let client = connect(&handle, fixed).await;
    assert_eq!(client.list_companies().await.unwrap().len(), 3);
    handle.reset_stats();
    assert_eq!(client.find_companies("Twin").await.unwrap().len(), 2);
    assert_eq!(handle.stats().requests_by_route.get("GET /api/companies/"), Some(&3));

    // Known to give whole pages: a listing whose first page is short ends there too.
    handle.set_quirks(Quirks::default());
    let client = connect(&handle, fixed).await;
    client.know_page_cap(None);
    handle.reset_stats();
    assert_eq!(client.list_companies().await.unwrap().len(), 3);
    assert_eq!(handle.stats().requests_by_route.get("GET /api/companies/"), Some(&1));
}

// ---------------------------------------------------------------------------------------------
// Retries.

#[tokio::test]
async fn rate_limited_reads_are_retried_after_retry_after() {
    let handle = acme_beta(5).start().await;
    let client = connect(&handle, |_| {}).await;
    // `Retry-After: 0`.
    handle.set_faults(Faults { too_many_requests_next: 2, retry_after_secs: 0, ..Faults::default() });
    assert_eq!(client.list_users(&UserFilter::default()).await.unwrap().len(), 6, "5 seeded and the admin");
    assert_eq!(handle.faults().too_many_requests_next, 0);
}

#[tokio::test]
async fn a_rate_limited_create_is_retried_because_the_server_did_not_act() {
    let handle = acme_beta(0).start().await;
    let client = connect(&handle, |c| c.api_version = VersionSetting::Fixed(ApiVersion::V6)).await;
    handle.set_faults(Faults { too_many_requests_next: 1, ..Faults::default() });
    let c = client.create_company(&new_company("Gamma")).await.unwrap();
    assert_eq!(c.name, "Gamma");
    assert_eq!(count(&handle, "POST /api/companies"), 2);
}

#[tokio::test]
async fn unavailable_reads_are_retried_but_an_unavailable_create_is_not() {
    let handle = acme_beta(5).start().await;
    let client = connect(&handle, |_| {}).await;
    handle.set_faults(Faults { unavailable_next: 2, ..Faults::default() });
    assert_eq!(client.list_users(&UserFilter::default()).await.unwrap().len(), 6, "5 seeded and the admin");

    handle.set_faults(Faults { unavailable_next: 1, ..Faults::default() });
    let err = client.create_user(&new_user("new@x.test", &company_id(&handle, "Acme"))).await.unwrap_err();
    assert_eq!(err.status(), Some(503));
    assert!(err.outcome_unknown());
    assert_eq!(count(&handle, "POST /api/users"), 1, "never re-sent");
}

#[tokio::test]
async fn reads_give_up_after_the_configured_attempts() {
    let handle = acme_beta(5).start().await;
    let client = connect(&handle, |_| {}).await;
    handle.set_faults(Faults { unavailable_next: 100, ..Faults::default() });
    let before = count(&handle, "GET /api/users");
    let err = client.list_users(&UserFilter::default()).await.unwrap_err();
    assert_eq!(err.status(), Some(503));
    assert_eq!(count(&handle, "GET /api/users") - before, 4);
    let shown = err.to_string();
    assert!(shown.contains("GET") && shown.contains("/api/users/") && shown.contains("503"), "{shown}");
    assert!(shown.contains("error_code 0: unavailable"), "{shown}");
}

#[tokio::test]
async fn a_create_answered_500_after_committing_is_outcome_unknown_and_found_by_natural_key() {
    let handle = acme_beta(2).start().await;
    let client = connect(&handle, |_| {}).await;
    handle.set_faults(Faults { commit_then_error: 1.0, ..Faults::default() });
    let err = client.create_user(&new_user("Adopt@x.test", &company_id(&handle, "Acme"))).await.unwrap_err();
    assert!(err.outcome_unknown(), "{err:?}");
    assert_eq!(count(&handle, "POST /api/users"), 1, "a create is never re-sent");
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
// Dropped and refused connections.

#[tokio::test]
async fn a_dropped_login_is_retried_up_to_the_attempt_bound() {
    // The first login's connection is dropped, the second answered: a session call is safe
    // to repeat.
    let drop_logins = |n| Faults { drop_next: n, include_auth: true, ..Faults::default() };
    let handle = Emulator::new(ApiVersion::V6).faults(drop_logins(1)).start().await;
    connect(&handle, |c| c.api_version = VersionSetting::Fixed(ApiVersion::V6)).await;
    assert_eq!(count(&handle, "POST /api/authorize/auth"), 2);

    let handle = Emulator::new(ApiVersion::V6).faults(drop_logins(100)).start().await;
    let err = OzClient::connect(client_config(&handle)).await.unwrap_err();
    assert!(matches!(err, OzError::Transport { .. }), "{err:?}");
    assert_eq!(count(&handle, "POST /api/authorize/auth"), 4, "max_attempts is 4");
}

#[tokio::test]
async fn a_create_whose_connection_drops_is_outcome_unknown_and_sent_once() {
    let handle = Emulator::new(ApiVersion::V6).start().await;
    let client = connect(&handle, |c| c.api_version = VersionSetting::Fixed(ApiVersion::V6)).await;
    // From now on every connection is dropped once its request is read.
    handle.set_faults(Faults { drop_next: 100, ..Faults::default() });
    let err = client.create_company(&new_company("X")).await.unwrap_err();
    assert!(err.outcome_unknown(), "{err:?}");
    assert!(matches!(err, OzError::Transport { .. }));
    assert_eq!(handle.stats().total_requests, 2, "login, then the create once");
    // A read that meets the same failure is retried up to the attempt bound.
    let err = client.list_companies().await.unwrap_err();
    assert!(matches!(err, OzError::Transport { .. }));
    assert_eq!(handle.stats().total_requests, 2 + 4);
}

#[tokio::test]
async fn a_refused_connection_is_a_transport_error_with_a_known_outcome() {
    let handle = Emulator::new(ApiVersion::V6).start().await;
    let cfg = client_config(&handle);
    handle.shutdown().await;
    let err = OzClient::connect(cfg).await.unwrap_err();
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
    // Only the undocumented forms are routed: collections without a slash (and the login with
    // one, which the client learns the same way).
    let quirks = Quirks { trailing_slash: TrailingSlash::Opposite, ..Quirks::default() };
    let handle = acme_beta(5).quirks(quirks).start().await;
    let client = connect(&handle, |_| {}).await;
    assert_eq!(client.list_users(&UserFilter::default()).await.unwrap().len(), 6, "5 seeded and the admin");
    let slashed = count(&handle, "GET /api/users/");
    assert_eq!(client.list_users(&UserFilter::default()).await.unwrap().len(), 6);
    assert_eq!(count(&handle, "GET /api/users/"), slashed, "the working form is remembered");
    let c = client.create_company(&new_company("Slash")).await.unwrap();
    assert_eq!(c.name, "Slash");
    assert_eq!(count(&handle, "POST /api/companies"), 1, "collections are sent in the form that worked");
    assert_eq!(count(&handle, "POST /api/companies/"), 0);
    assert_eq!(handle.snapshot().companies.len(), 3);
}

#[tokio::test]
async fn a_redirected_collection_is_tried_once_in_the_other_form_and_a_post_never_becomes_a_get() {
    let quirks = Quirks { trailing_slash: TrailingSlash::RedirectToUndocumented, ..Quirks::default() };
    let handle = acme_beta(4).quirks(quirks).start().await;
    // A fixed version: no detection listing teaches the client the bare form before the create.
    let client = connect(&handle, |c| c.api_version = VersionSetting::Fixed(ApiVersion::V6)).await;
    let c = client.create_company(&new_company("Moved")).await.unwrap();
    assert_eq!(c.name, "Moved");
    assert_eq!((count(&handle, "POST /api/companies/"), count(&handle, "POST /api/companies")), (1, 2));
    assert_eq!(count(&handle, "GET /api/companies"), 0, "the redirect was not followed as a GET");
    assert_eq!(client.list_users(&UserFilter::default()).await.unwrap().len(), 5, "4 seeded and the admin");
}

#[tokio::test]
async fn delete_user_sends_delete_in_both_dialects_and_counts_a_user_already_gone_as_deleted() {
    for version in BOTH {
        let handle = Emulator::new(version).seed(seed(version, &["Acme"], 2)).start().await;
        let client = connect(&handle, |_| {}).await;
        let id = user_id(&handle, &email(0));
        client.delete_user(&id).await.unwrap();
        assert!(handle.snapshot().users.iter().all(|u| u.user_id != id), "{version:?}: deleted");
        assert_eq!(count_ok(&handle, &format!("DELETE /api/users/{id}")), 1, "{version:?}: answered 2xx");
        let status =
            handle.requests().iter().find(|r| r.to_string().starts_with("DELETE")).and_then(|r| r.status);
        assert_eq!(status, Some(204), "{version:?}: the documented status");
        // Sent again (an answer lost on the way): the API says 404, and the user is gone.
        client.delete_user(&id).await.unwrap();
        assert!(client.find_user(&Email::new(email(1))).await.unwrap().is_some(), "{version:?}: others stay");
    }
}

// ---------------------------------------------------------------------------------------------
// Read-only, concurrency.

#[tokio::test]
async fn a_read_only_client_refuses_every_mutation_before_sending_it() {
    let handle = acme_beta(2).start().await;
    let client = connect(&handle, |c| c.read_only = true).await;
    let observed = client.observe(&[]).await.unwrap();
    let (acme, user0) = (company_id(&handle, "Acme"), user_id(&handle, &email(0)));
    assert!(observed.companies.iter().any(|c| c.id == acme) && observed.users.iter().any(|u| u.id == user0));
    let before = handle.requests().len();
    let results = [
        client.create_company(&new_company("No")).await.map(|_| ()),
        client
            .update_company(&acme, &CompanyPatch { name: Some("No".into()), ..CompanyPatch::default() })
            .await
            .map(|_| ()),
        client.create_user(&new_user("no@x.test", &acme)).await.map(|_| ()),
        client
            .update_user(&user0, &UserPatch { active: Some(false), ..UserPatch::default() })
            .await
            .map(|_| ()),
        client.issue_token(&user0).await.map(|_| ()),
        client.delete_user(&user0).await,
    ];
    for r in results {
        assert!(matches!(r, Err(OzError::ReadOnly { .. })), "{r:?}");
    }
    assert_eq!(handle.requests().len(), before, "nothing was sent");
    assert_eq!(client.list_users(&UserFilter::default()).await.unwrap().len(), 3, "reads still work");
    assert_eq!(handle.stats().mutating_requests, 0);
}

#[tokio::test]
async fn requests_in_flight_never_exceed_max_in_flight() {
    let handle = acme_beta(10).start().await;
    let client = connect(&handle, |c| c.max_in_flight = 2).await;
    // A little latency, so that concurrent requests overlap.
    handle.set_faults(Faults { latency_ms: 5, ..Faults::default() });
    handle.reset_stats();
    let finds = (0..10).map(|i| {
        let client = client.clone();
        async move { client.find_user(&Email::new(email(i))).await }
    });
    for r in futures::future::join_all(finds).await {
        assert!(r.unwrap().is_some());
    }
    let max = handle.stats().max_in_flight;
    assert!((1..=2).contains(&max), "{max}");
}

// ---------------------------------------------------------------------------------------------
// Dialects.

#[tokio::test]
async fn api_6_writes_client_service_and_analysis_spelling_and_the_token_path() {
    let handle = acme_beta(1).start().await;
    let client = connect(&handle, |_| {}).await;
    let u = client.create_user(&new_user("six@x.test", &company_id(&handle, "Acme"))).await.unwrap();
    assert_eq!(u.kind, UserKind::Service);
    let patched = client.update_user(&u.id, &quality_off()).await.unwrap();
    assert!(!patched.permissions.quality);
    let token = client.issue_token(&u.id).await.unwrap();
    assert_eq!(token.user_id, u.id);
    let issued = handle.snapshot().service_tokens.into_iter().find(|t| t.user_id == u.id).unwrap();
    assert!((token.expire_date - issued.expire_date).abs() < 1e-6, "the expiry the API gave");
    assert_eq!(format!("{:?}", token.access_token), "(sensitive)");
    let writes = user_and_token_writes(&handle);
    let (_, create) = &writes[0];
    assert_eq!(create["profile"]["user_type"], "CLIENT_SERVICE");
    assert_eq!(create["profile"]["can_start_analysis_documents"], false);
    assert_eq!(writes[1].1, json!({"can_start_analysis_quality": false}));
    assert_eq!(writes[2].0, format!("/api/authorize/service_token/{}", u.id));
}

#[tokio::test]
async fn api_5_writes_client_with_is_service_and_analyse_spelling_and_the_token_body() {
    // Permission flags hidden while connecting: the admin in the login answer says nothing,
    // so the dialect is decided by the users list (a `CLIENT` user flagged `is_service`).
    let handle = Emulator::new(ApiVersion::V5)
        .seed(seed(ApiVersion::V5, &["Acme"], 1))
        .quirks(Quirks { hide_permissions: true, ..Quirks::default() })
        .start()
        .await;
    let client = connect(&handle, |_| {}).await;
    assert_eq!(client.api_version(), ApiVersion::V5, "detected from the users list");
    assert_eq!(count(&handle, "GET /api/users/"), 1);
    handle.set_quirks(Quirks::default());
    let u = client.create_user(&new_user("five@x.test", &company_id(&handle, "Acme"))).await.unwrap();
    assert_eq!(u.kind, UserKind::Service);
    assert!(!u.permissions.documents);
    client.update_user(&u.id, &quality_off()).await.unwrap();
    let token = client.issue_token(&u.id).await.unwrap();
    assert_eq!(token.user_id, u.id);
    let writes = user_and_token_writes(&handle);
    let (_, create) = &writes[0];
    assert_eq!(create["profile"]["user_type"], "CLIENT");
    assert_eq!(create["profile"]["is_service"], true);
    assert_eq!(create["profile"]["can_start_analyse_documents"], false);
    assert_eq!(writes[1].1, json!({"can_start_analyse_quality": false}));
    assert_eq!(writes[2], ("/api/authorize/service_token".to_string(), json!({"user_id": u.id})));
}

#[tokio::test]
async fn auto_detection_that_cannot_decide_asks_for_api_version() {
    // Only the admin, and no permission flags to tell the dialect by.
    let quirks = Quirks { hide_permissions: true, ..Quirks::default() };
    let handle = Emulator::new(ApiVersion::V5).quirks(quirks).start().await;
    let err = OzClient::connect(client_config(&handle)).await.unwrap_err();
    match &err {
        OzError::Config { help: Some(help), .. } => assert!(help.contains("--api-version"), "{help}"),
        other => panic!("expected a config error, got {other:?}"),
    }
    let mut cfg = client_config(&handle);
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
    let handle = acme_beta(3).start().await;
    let client = connect(&handle, |_| {}).await;
    let user = client.create_user(&new_user("logged@x.test", &company_id(&handle, "Acme"))).await.unwrap();
    let token = client.issue_token(&user.id).await.unwrap();
    handle.expire_all_sessions();
    client.list_users(&UserFilter::default()).await.unwrap();
    assert_eq!(count_ok(&handle, "POST /api/authorize/refresh"), 1, "the session was refreshed");

    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).to_string();
    assert!(text.contains("oz_request{method=POST path=/api/users/"), "requests are traced in spans");
    assert!(text.contains("status=201"));
    // The emulator's session, refresh and service tokens start with these.
    let canaries = [
        ADMIN_PASSWORD,
        "canary",
        token.access_token.expose(),
        "emu-service-",
        "emu-session-",
        "emu-refresh-",
    ];
    for secret in canaries {
        assert!(!text.contains(secret), "`{secret}` leaked into the logs");
    }
}

#[tokio::test]
async fn a_session_that_cannot_be_refreshed_is_replaced_by_a_new_login() {
    let handle = acme_beta(3).start().await;
    let client = connect(&handle, |_| {}).await;
    handle.forget_all_sessions();
    assert_eq!(client.list_users(&UserFilter::default()).await.unwrap().len(), 4, "3 seeded and the admin");
    // The refresh was tried and refused (`Session not found`), then the client logged in again.
    let (logins, refreshes) =
        (count_ok(&handle, "POST /api/authorize/auth"), count_ok(&handle, "POST /api/authorize/refresh"));
    assert_eq!((logins, refreshes), (2, 0));
}

#[tokio::test]
async fn patches_are_retried_because_the_same_body_twice_leaves_the_same_state() {
    let handle = acme_beta(3).start().await;
    let client = connect(&handle, |_| {}).await;
    handle.set_faults(Faults { unavailable_next: 1, ..Faults::default() });
    let acme = company_id(&handle, "Acme");
    let c = client
        .update_company(&acme, &CompanyPatch { name: Some("Acme 2".into()), ..CompanyPatch::default() })
        .await
        .unwrap();
    assert_eq!(c.name, "Acme 2");
    assert_eq!(count(&handle, &format!("PATCH /api/companies/{acme}")), 2);
}

#[tokio::test]
async fn bad_connection_settings_are_config_errors_before_any_request() {
    let config = |url: &str| ClientConfig::new(url, "admin@x.test", Secret::new(ADMIN_PASSWORD));
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

#[tokio::test]
async fn a_private_ca_given_with_ca_cert_is_trusted_and_without_it_the_server_is_refused() {
    let handle = acme_beta(2).start().await;
    let mut cfg = client_config(&handle);
    cfg.api_url = tls_proxy(&handle).await;
    cfg.api_version = VersionSetting::Fixed(ApiVersion::V6);
    cfg.retry = RetryPolicy::none();

    // Without the CA: the certificate is not trusted, and the error says so and what to do.
    let err = OzClient::connect(cfg.clone()).await.unwrap_err();
    assert!(matches!(err, OzError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains("not signed by a trusted certificate authority"), "{err}");
    assert!(
        err.to_string().starts_with(&format!("cannot connect to `{}/api/authorize/auth`", cfg.api_url)),
        "{err}"
    );
    let shown = format!("{:?}", miette::Report::new(err));
    assert!(
        shown.split_whitespace().collect::<Vec<_>>().join(" ").contains("with `--ca-cert FILE`"),
        "{shown}"
    );
    assert_eq!(handle.stats().total_requests, 0, "nothing reached the emulator");

    cfg.ca_cert = Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls/ca.pem"));
    let client = OzClient::connect(cfg).await.expect("the private CA is trusted");
    assert_eq!(client.api_version(), ApiVersion::V6);
    let users = client.list_users(&UserFilter::default()).await.unwrap();
    assert_eq!(users.len(), 3, "the emulator answers through TLS: 2 seeded users and the admin");
}

#[tokio::test]
async fn a_ca_certificate_presented_as_the_servers_own_is_refused_in_words_that_say_what_to_make() {
    let handle = acme_beta(0).start().await;
    let mut cfg = client_config(&handle);
    cfg.api_url = tls_proxy_with(&handle, "ca-as-server").await;
    cfg.ca_cert =
        Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls/ca-as-server.pem"));
    let err = OzClient::connect(cfg).await.unwrap_err();
    let shown = format!("{:?}", miette::Report::new(err));
    let said = shown.split_whitespace().filter(|w| *w != "│").collect::<Vec<_>>().join(" ");
    assert!(said.contains("presents a CA certificate (basicConstraints CA:TRUE) as its own"), "{shown}");
    assert!(said.contains("signed by that CA"), "{shown}");
    assert!(!shown.contains("CaUsedAsEndEntity"), "no library jargon: {shown}");
}

#[tokio::test]
async fn https_against_a_plain_http_server_is_said_at_once_with_the_scheme_and_never_retried() {
    // A server that answers every connection with plain HTTP, counting them: the client's TLS
    // handshake meets an HTTP answer (as `https://` against the emulator would).
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let accepted = Arc::new(Mutex::new(0usize));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            *counter.lock().unwrap() += 1;
            let mut buf = [0u8; 512];
            let _ = tcp.read(&mut buf).await;
            let _ = tcp.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").await;
        }
    });
    let cfg = ClientConfig::new(&url, "admin@ozform.local", Secret::new(ADMIN_PASSWORD));
    let err = OzClient::connect(cfg).await.unwrap_err();
    let shown = format!("{:?}", miette::Report::new(err));
    let said = shown.split_whitespace().filter(|w| *w != "│").collect::<Vec<_>>().join(" ");
    assert!(said.contains(&format!("cannot connect to `{url}/api/authorize/auth`")), "{shown}");
    assert!(said.contains("the server speaks plain HTTP: use `http://`"), "{shown}");
    assert_eq!(*accepted.lock().unwrap(), 1, "a lasting failure is not retried");
}

// ---------------------------------------------------------------------------------------------
// Whole scenarios on the emulator, under both dialects.

#[tokio::test]
async fn the_client_detects_and_speaks_both_dialects_of_the_emulator() {
    for version in BOTH {
        let handle = Emulator::new(version).start().await;
        let client = connect(&handle, |_| {}).await;
        assert_eq!(client.api_version(), version);
        let company = client
            .create_company(&NewCompany {
                name: "Acme".into(),
                technical_meta_data: Some(json!({"tier": "gold"})),
            })
            .await
            .unwrap();
        let created = client.create_user(&new_user("Svc@Acme.test", &company.id)).await.unwrap();
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
    let handle = Emulator::new(ApiVersion::V6).seed(seed(ApiVersion::V6, &["Seeded"], 250)).start().await;
    // Pages one at a time: every 5th request finds every session expired, so a listing of 26
    // pages meets it 5 times, each time with one request.
    let client = connect(&handle, |c| {
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
    let client = connect(&handle, |c| c.page_size = 10).await;
    handle.set_faults(Faults::default());
    handle.reset_stats();
    handle.set_faults(Faults { expire_sessions_every: 25, ..Faults::default() });
    let users = client.list_users(&UserFilter::default()).await.unwrap();
    assert_eq!(users.len(), 251, "250 seeded and the admin");
    assert!(refreshes(&handle) >= Some(1), "{:?}", refreshes(&handle));
}

#[tokio::test]
async fn emulator_429s_with_retry_after_are_retried_until_every_call_succeeds() {
    let handle = Emulator::new(ApiVersion::V6).seed(seed(ApiVersion::V6, &["Seeded"], 30)).start().await;
    let client = connect(&handle, |c| {
        c.page_size = 5;
        c.retry.max_attempts = 10;
    })
    .await;
    handle.set_faults(Faults { too_many_requests: 0.3, retry_after_secs: 0, seed: 11, ..Faults::default() });
    assert_eq!(client.list_users(&UserFilter::default()).await.unwrap().len(), 31);
    let company = client.create_company(&new_company("Busy")).await.unwrap();
    client.create_user(&new_user("busy@x.test", &company.id)).await.unwrap();
    let stats = handle.stats();
    assert_eq!(stats.creates_per_email.get("busy@x.test"), Some(&1));
    assert!(stats.total_requests > 8, "some requests were answered 429 and repeated: {stats:?}");
}

#[tokio::test]
async fn a_create_the_emulator_commits_then_fails_is_adopted_by_find_and_never_sent_twice() {
    for version in BOTH {
        let handle = Emulator::new(version).start().await;
        let client = connect(&handle, |_| {}).await;
        handle.set_faults(Faults { commit_then_error: 1.0, ..Faults::default() });
        let err = client.create_company(&new_company("Half")).await.unwrap_err();
        assert!(err.outcome_unknown(), "{err:?}");
        handle.set_faults(Faults { commit_then_drop: 1.0, ..Faults::default() });
        let found = client.find_companies("Half").await.unwrap();
        assert_eq!(found.len(), 1);
        let err = client.create_user(&new_user("half@x.test", &found[0].id)).await.unwrap_err();
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
async fn listing_ten_thousand_users_takes_a_request_per_page_with_a_total_and_at_most_a_window_more_without()
{
    let handle = Emulator::new(ApiVersion::V6).seed(seed(ApiVersion::V6, &["Seeded"], 10_000)).start().await;
    for (page_size, envelope) in [(500, Envelope::Bare), (1000, Envelope::Items)] {
        let mut cfg = client_config(&handle);
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
            Envelope::Bare => 31,
            // A total: one page, then the 10 others at once; exactly one request per page.
            _ => 10_001_u64.div_ceil(page_size as u64),
        };
        assert_eq!(pages, expected, "page size {page_size}");
    }
}

#[tokio::test]
async fn the_emulator_quirks_are_tolerated_capped_limit_envelopes_ignored_filters_and_slashes() {
    let handle = Emulator::new(ApiVersion::V5).seed(seed(ApiVersion::V5, &["Seeded"], 45)).start().await;
    handle.set_quirks(Quirks {
        envelope: Envelope::Results,
        total_field: TotalField::Count,
        max_limit: Some(7),
        ignore_filters: true,
        trailing_slash: TrailingSlash::Opposite,
        ..Quirks::default()
    });
    let client = connect(&handle, |_| {}).await;
    assert_eq!(client.api_version(), ApiVersion::V5);
    assert_eq!(client.list_users(&UserFilter::default()).await.unwrap().len(), 46);
    let found = client.find_user(&Email::new("user44@x.test")).await.unwrap().unwrap();
    assert_eq!(found.email, Email::new("user44@x.test"));
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
    let handle = Emulator::new(ApiVersion::V5).seed(seed(ApiVersion::V5, &["Seeded"], 60)).start().await;
    let client = connect(&handle, |c| {
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
async fn create_or_adopt_user(client: &OzClient, user: &NewUser) -> (ObservedUser, bool) {
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
    for version in BOTH {
        let handle = Emulator::new(version).start().await;
        handle.set_quirks(Quirks::tolerable());
        let client = connect(&handle, |c| c.retry.max_attempts = 12).await;
        assert_eq!(client.api_version(), version, "detected through sparse objects and extra fields");
        let company = client.create_company(&new_company("Quirky")).await.unwrap();
        handle.set_faults(Faults::flaky(0.3, 17));
        let mut adopted = 0;
        for i in 0..12 {
            let (user, was_adopted) =
                create_or_adopt_user(&client, &new_user(&format!("q{i}@x.test"), &company.id)).await;
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
async fn an_auth_error_code_renews_the_session_whatever_the_status() {
    let quirks = Quirks { auth_expired_403: true, ..Quirks::default() };
    let handle = acme_beta(4).quirks(quirks).start().await;
    let client = connect(&handle, |_| {}).await;
    handle.expire_all_sessions();
    assert_eq!(client.list_users(&UserFilter::default()).await.unwrap().len(), 5, "4 seeded and the admin");
    assert_eq!(count(&handle, "GET /api/users/?offset=0"), 2, "a 403 (error_code 8), then the retry");
    assert_eq!(count_ok(&handle, "POST /api/authorize/refresh"), 1);
}

#[tokio::test]
async fn a_create_answered_with_an_unreadable_body_is_outcome_unknown() {
    let handle = acme_beta(1).faults(Faults { commit_then_garble: 1.0, ..Faults::default() }).start().await;
    let client = connect(&handle, |_| {}).await;
    let err = client.create_company(&new_company("Garbled")).await.unwrap_err();
    assert!(matches!(err, OzError::Decode { .. }), "{err:?}");
    assert!(err.outcome_unknown(), "the company exists but its id is unknown: read back");
    assert!(!err.to_string().contains("<html>"), "no body in errors: {err}");
    assert_eq!(client.find_companies("Garbled").await.unwrap().len(), 1);
}
