//! `ozform doctor` against the emulator: on a plain one every finding is `ok` and it exits 0;
//! with each quirk a read can see switched on, the finding that quirk is about says so (and
//! only a quirk ozform cannot work with fails the run); a wrong password, an unreachable URL, a configured
//! dialect the users contradict and an unusable token store each fail their own finding; each
//! kind of transient fault (429, 503, a dropped connection, an expired session) is tried again
//! and named in the `faults` finding.
//! Every run is checked to send nothing but GETs and the session's login and refresh.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use crate::common;

use common::Cli;
use common::emulator::{Emulator, seed, tls_proxy};
use ozform::emulator::{Envelope, Faults, Handle, Quirks, TotalField, TrailingSlash};
use ozform::model::ApiVersion;
use serde_json::Value;

/// `ozform doctor --format json` against `emu` with `extra` flags; the report and exit code.
async fn doctor(emu: &Handle, password: &str, extra: &[&str]) -> (Value, i32) {
    let dir = tempfile::tempdir().unwrap();
    let token_dir = dir.path().join("tokens");
    let cli = Cli::new()
        .env("OZ_API_URL", emu.url())
        .env("OZ_ADMIN_EMAIL", emu.admin_email())
        .env("OZ_ADMIN_PASSWORD", password)
        .args(["doctor", "--format", "json"])
        .args(extra);
    let cli = if extra.contains(&"--token-dir") {
        cli
    } else {
        cli.args(["--token-dir", token_dir.to_str().unwrap()])
    };
    let run = tokio::task::spawn_blocking(move || cli.run()).await.unwrap();
    assert!(!run.stdout.contains(password) && !run.stderr.contains(password), "the password was shown");
    let report: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("not a JSON report ({e}):\n{}\n{}", run.stdout, run.stderr));
    assert_eq!(report["usable"], run.code == 0, "{report:#}");
    assert_read_only(emu);
    (report, run.code)
}

/// Nothing but GETs and the session's login and refresh (what the client's read-only guard
/// lets through) reached the emulator.
fn assert_read_only(emu: &Handle) {
    for request in emu.requests() {
        let line = request.to_string();
        assert!(
            line.starts_with("GET ")
                || line.starts_with("POST /api/authorize/auth")
                || line.starts_with("POST /api/authorize/refresh"),
            "doctor sent a request that is not a GET, the login or a refresh: {line}"
        );
    }
}

fn finding<'a>(report: &'a Value, check: &str) -> &'a Value {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == check)
        .unwrap_or_else(|| panic!("no `{check}` finding in {report:#}"))
}

fn status_of(report: &Value, check: &str) -> String {
    finding(report, check)["status"].as_str().unwrap().to_string()
}

fn summary_of(report: &Value, check: &str) -> String {
    finding(report, check)["summary"].as_str().unwrap().to_string()
}

/// The checks of `report` that are not `ok`, as `check=status`.
fn not_ok(report: &Value) -> Vec<String> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["status"] != "ok")
        .map(|f| format!("{}={}", f["check"].as_str().unwrap(), f["status"].as_str().unwrap()))
        .collect()
}

/// An emulator of `version` holding 10 service users in 2 companies, with `quirks`.
async fn emulator(version: ApiVersion, quirks: Quirks) -> Handle {
    Emulator::new(version).seed(seed(version, &["Acme", "Globex"], 10)).quirks(quirks).start().await
}

fn password(emu: &Handle) -> String {
    emu.admin_password().expose().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_plain_emulator_everything_is_fine_under_both_dialects() {
    for version in [ApiVersion::V6, ApiVersion::V5] {
        let emu = emulator(version, Quirks::default()).await;
        let (report, code) = doctor(&emu, &password(&emu), &[]).await;
        assert_eq!(code, 0, "{report:#}");
        assert_eq!(not_ok(&report), Vec::<String>::new(), "{report:#}");
        let checks: Vec<&str> =
            report["findings"].as_array().unwrap().iter().map(|f| f["check"].as_str().unwrap()).collect();
        assert_eq!(
            checks,
            [
                "reachable",
                "login",
                "api_version",
                "list_shape",
                "objects",
                "page_size",
                "offset",
                "filters",
                "companies",
                "clock",
                "session",
                "faults",
                "token_store"
            ]
        );
        assert!(
            summary_of(&report, "api_version").starts_with(&format!("API {}, detected", version.number()))
        );
        assert_eq!(summary_of(&report, "list_shape"), "a bare JSON array, no total");
        assert_eq!(summary_of(&report, "offset"), "honoured");
        assert_eq!(summary_of(&report, "filters"), "honoured");
        let lasts = humantime::format_duration(ozform::emulator::DEFAULT_SESSION_TTL).to_string();
        assert_eq!(summary_of(&report, "session"), format!("the admin session lasts about {lasts}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_text_report_says_what_each_finding_means_and_whether_ozform_can_work() {
    let emu = emulator(ApiVersion::V6, Quirks { ignore_filters: true, ..Quirks::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let run = Cli::new()
        .env("OZ_API_URL", emu.url())
        .env("OZ_ADMIN_EMAIL", emu.admin_email())
        .env("OZ_ADMIN_PASSWORD", password(&emu))
        .args(["doctor", "--token-dir", dir.path().join("t").to_str().unwrap()])
        .run()
        .code(0);
    assert!(run.stdout.starts_with(&format!("ozform doctor: {}\n", emu.url())), "{}", run.stdout);
    assert!(run.stdout.contains("warn  filters"), "{}", run.stdout);
    assert!(run.stdout.contains("filters ignored: ozform filters on its side"), "{}", run.stdout);
    assert!(run.stdout.ends_with("ozform can work with this installation.\n"), "{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_list_quirk_is_named_by_its_own_finding() {
    // (quirks, the one finding not `ok` and its status, words of its summary, exit code)
    type Case = (Quirks, Option<(&'static str, &'static str)>, &'static str, i32);
    let cases: Vec<Case> = vec![
        (
            Quirks { envelope: Envelope::Items, total_field: TotalField::Total, ..Quirks::default() },
            None,
            "an object envelope: `items` with a total in `total`",
            0,
        ),
        (
            Quirks { envelope: Envelope::Results, total_field: TotalField::Omitted, ..Quirks::default() },
            None,
            "an object envelope: `results`, no total",
            0,
        ),
        (
            Quirks {
                envelope: Envelope::Data,
                total_field: TotalField::Count,
                max_limit: Some(3),
                ..Quirks::default()
            },
            Some(("page_size", "warn")),
            "at most 3 users per page",
            0,
        ),
        (
            Quirks { max_limit: Some(4), ..Quirks::default() },
            Some(("page_size", "warn")),
            "at most 4 users per page",
            0,
        ),
        (Quirks { ignore_filters: true, ..Quirks::default() }, Some(("filters", "warn")), "ignored", 0),
        (Quirks { ignore_offset: true, ..Quirks::default() }, Some(("offset", "fail")), "ignored", 1),
        (
            Quirks { trailing_slash: TrailingSlash::Opposite, ..Quirks::default() },
            Some(("path_form", "warn")),
            "`/api/users` is",
            0,
        ),
        (
            Quirks { trailing_slash: TrailingSlash::RedirectToUndocumented, ..Quirks::default() },
            Some(("path_form", "warn")),
            "`/api/users` is",
            0,
        ),
    ];
    for (quirks, off, words, expected_code) in cases {
        let emu = emulator(ApiVersion::V6, quirks.clone()).await;
        let (report, code) = doctor(&emu, &password(&emu), &[]).await;
        assert_eq!(code, expected_code, "{quirks:?}\n{report:#}");
        match off {
            None => {
                assert_eq!(not_ok(&report), Vec::<String>::new(), "{quirks:?}\n{report:#}");
                assert_eq!(summary_of(&report, "list_shape"), words, "{quirks:?}");
            }
            Some((check, status)) => {
                assert_eq!(not_ok(&report), [format!("{check}={status}")], "{quirks:?}\n{report:#}");
                assert!(summary_of(&report, check).contains(words), "{quirks:?}\n{report:#}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_installation_whose_dialect_cannot_be_told_fails_the_version_finding() {
    // Only the admin, and no permission flags on the wire: nothing tells API 5 from API 6.
    let emu = Emulator::new(ApiVersion::V6)
        .quirks(Quirks { hide_permissions: true, ..Quirks::default() })
        .start()
        .await;
    let (report, code) = doctor(&emu, &password(&emu), &[]).await;
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(not_ok(&report), ["api_version=fail"], "{report:#}");
    assert!(finding(&report, "api_version")["meaning"].as_str().unwrap().contains("--api-version"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_dialect_the_users_contradict_fails_the_version_finding() {
    let emu = emulator(ApiVersion::V6, Quirks::default()).await;
    let (report, code) = doctor(&emu, &password(&emu), &["--api-version", "5"]).await;
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(not_ok(&report), ["api_version=fail"], "{report:#}");
    assert!(
        summary_of(&report, "api_version").contains("configured as API 5, but the users look like API 6")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_the_login_finding() {
    let emu = emulator(ApiVersion::V6, Quirks::default()).await;
    let (report, code) = doctor(&emu, "not-the-password-canary", &[]).await;
    assert_eq!(code, 1);
    assert_eq!(status_of(&report, "reachable"), "ok");
    assert_eq!(status_of(&report, "login"), "fail");
    assert!(report["findings"].as_array().unwrap().iter().all(|f| f["check"] != "list_shape"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_fails_the_reachable_finding() {
    // A port bound and not listening: every connection is refused, and no other test's
    // emulator can take the port while the doctor retries (a shut-down emulator's port could
    // be taken by the next test that starts one).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let url = format!("http://{}", socket.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let run = Cli::new()
        .env("OZ_API_URL", &url)
        .env("OZ_ADMIN_EMAIL", "admin@ozform.local")
        .env("OZ_ADMIN_PASSWORD", "x")
        .args(["doctor", "--format", "json", "--token-dir", dir.path().join("t").to_str().unwrap()])
        .run()
        .code(1);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(not_ok(&report), ["reachable=fail"], "{report:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_store_that_cannot_keep_tokens_fails_its_finding() {
    let emu = emulator(ApiVersion::V6, Quirks::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, "").unwrap();
    let (report, code) = doctor(&emu, &password(&emu), &["--token-dir", not_a_dir.to_str().unwrap()]).await;
    assert_eq!(code, 1);
    assert_eq!(not_ok(&report), ["token_store=fail"], "{report:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_store_finding_names_the_store_it_checked_and_how_many_tokens_may_be_unstored() {
    let emu = emulator(ApiVersion::V6, Quirks::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    let (report, code) = doctor(&emu, &password(&emu), &["--token-dir", tokens.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(
        summary_of(&report, "token_store"),
        format!(
            "the token directory `{}` can keep tokens (a probe file was written and removed)",
            tokens.display()
        )
    );
    // docs/lifecycle.md: "at most `--parallelism` tokens are ever issued but not yet stored".
    let meaning = finding(&report, "token_store")["meaning"].as_str().unwrap().to_string();
    assert!(
        meaning.contains("at most `--parallelism` tokens are ever issued but not yet stored"),
        "{meaning}"
    );

    // A helper: named by its command line, as its own errors name it.
    let helpers = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/helpers");
    for (helper, code, words) in [
        ("healthy", 0, "can keep tokens (it answered `check`)"),
        ("fails-check", 1, "cannot keep tokens: token store helper"),
    ] {
        let command = format!("{} --label 'two words'", helpers.join(helper).display());
        let cli = Cli::new()
            .env("OZ_API_URL", emu.url())
            .env("OZ_ADMIN_EMAIL", emu.admin_email())
            .env("OZ_ADMIN_PASSWORD", password(&emu))
            .env("OZFORM_TEST_STORE_DIR", dir.path().join("helper-store"))
            .args(["doctor", "--format", "json", "--token-store", &format!("exec:{command}")]);
        let run = tokio::task::spawn_blocking(move || cli.run()).await.unwrap().code(code);
        let report: Value = serde_json::from_str(&run.stdout).unwrap();
        let summary = summary_of(&report, "token_store");
        assert!(summary.starts_with(&format!("the token store helper `{command}` {words}")), "{summary}");
    }
    assert_read_only(&emu);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_the_certificate_subject_and_expiry_are_shown_and_an_untrusted_one_fails() {
    let emu = emulator(ApiVersion::V6, Quirks::default()).await;
    let url = tls_proxy(&emu).await;
    let ca = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls/ca.pem");
    let dir = tempfile::tempdir().unwrap();
    let run_with = |extra: Vec<String>| {
        let cli = Cli::new()
            .env("OZ_API_URL", &url)
            .env("OZ_ADMIN_EMAIL", emu.admin_email())
            .env("OZ_ADMIN_PASSWORD", password(&emu))
            .args(["doctor", "--format", "json", "--token-dir", dir.path().join("t").to_str().unwrap()])
            .args(extra);
        async move { tokio::task::spawn_blocking(move || cli.run()).await.unwrap() }
    };

    let run = run_with(vec!["--ca-cert".into(), ca.display().to_string()]).await.code(0);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(not_ok(&report), Vec::<String>::new(), "{report:#}");
    assert_eq!(
        summary_of(&report, "reachable"),
        "answered over HTTPS; its certificate is trusted through `--ca-cert`; certificate for CN=127.0.0.1, valid until 2126-11-05 03:53:42 UTC"
    );

    let run = run_with(Vec::new()).await.code(1);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(not_ok(&report), ["reachable=fail"], "{report:#}");
    assert!(finding(&report, "reachable")["meaning"].as_str().unwrap().contains("--ca-cert"), "{report:#}");
    assert_read_only(&emu);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_transient_fault_is_tried_again_and_named_in_the_faults_finding() {
    // With `--api-version 6` connecting is the login alone, which gets no fault: the first
    // probe meets the fault. Session expiry counts the login as request 1.
    let cases = [
        (
            Faults { too_many_requests_next: 1, retry_after_secs: 0, ..Faults::default() },
            "429 Too Many Requests (Retry-After 0 s) ×1",
        ),
        (Faults { unavailable_next: 2, ..Faults::default() }, "503 (server error) ×2"),
        (Faults { drop_next: 1, ..Faults::default() }, "no answer (connection closed or timed out) ×1"),
        (Faults { expire_sessions_at: 2, ..Faults::default() }, "the admin session expired (401) ×1"),
    ];
    let expired_403 =
        (Faults { expire_sessions_at: 2, ..Faults::default() }, "the admin session expired (403) ×1");
    for (i, (faults, words)) in cases.into_iter().chain([expired_403]).enumerate() {
        // The last case: a server that answers an expired session 403 (the `auth_expired_403` quirk).
        let quirks = Quirks { auth_expired_403: i == 4, ..Quirks::default() };
        let emu = Emulator::new(ApiVersion::V6)
            .seed(seed(ApiVersion::V6, &["Acme"], 4))
            .quirks(quirks)
            .faults(faults.clone())
            .start()
            .await;
        let (report, code) = doctor(&emu, &password(&emu), &["--api-version", "6"]).await;
        assert_eq!(code, 0, "{faults:?}\n{report:#}");
        assert_eq!(not_ok(&report), ["faults=warn"], "{faults:?}\n{report:#}");
        assert_eq!(
            summary_of(&report, "faults"),
            format!("transient failures, each tried again: {words}"),
            "{faults:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fields_and_fields_left_out_are_named_in_the_objects_finding() {
    let plain = emulator(ApiVersion::V6, Quirks::default()).await;
    let (report, _) = doctor(&plain, &password(&plain), &[]).await;
    assert_eq!(summary_of(&report, "objects"), "user objects carry every field, and only known ones");

    let extra = emulator(ApiVersion::V6, Quirks { extra_fields: true, ..Quirks::default() }).await;
    let (report, code) = doctor(&extra, &password(&extra), &[]).await;
    assert_eq!((code, not_ok(&report)), (0, Vec::<String>::new()), "{report:#}");
    assert_eq!(summary_of(&report, "objects"), "fields ozform does not know: `_links`, `meta_data`");

    let sparse = emulator(ApiVersion::V6, Quirks { sparse_objects: true, ..Quirks::default() }).await;
    let (report, code) = doctor(&sparse, &password(&sparse), &[]).await;
    assert_eq!((code, not_ok(&report)), (0, Vec::<String>::new()), "{report:#}");
    let summary = summary_of(&report, "objects");
    assert!(summary.starts_with("optional fields left out: ") && summary.contains("`is_admin`"), "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_permission_flags_are_a_warning_of_their_own() {
    // API 6 roles still tell the dialect; the permissions cannot be read.
    let emu = emulator(ApiVersion::V6, Quirks { hide_permissions: true, ..Quirks::default() }).await;
    let (report, code) = doctor(&emu, &password(&emu), &[]).await;
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(not_ok(&report), ["permissions=warn"], "{report:#}");
    assert_eq!(summary_of(&report, "permissions"), "none of 11 users shows a permission flag");
    assert!(summary_of(&report, "api_version").starts_with("API 6, detected"), "{report:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn companies_being_deleted_and_still_listed_are_counted() {
    let mut state = seed(ApiVersion::V6, &["Acme", "Globex"], 2);
    state.companies[1].in_deletion = true;
    let emu = Emulator::new(ApiVersion::V6)
        .seed(state)
        .quirks(Quirks { keep_deleted_companies: true, ..Quirks::default() })
        .start()
        .await;
    let (report, code) = doctor(&emu, &password(&emu), &[]).await;
    assert_eq!((code, not_ok(&report)), (0, Vec::<String>::new()), "{report:#}");
    assert_eq!(
        summary_of(&report, "companies"),
        "2 companies, 1 being deleted and still listed (`in_deletion`)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_twenty_percent_faults_the_verdict_is_reached_in_twenty_runs_of_twenty() {
    // What `ozform emulator --fault-rate 0.2` serves (429 with `Retry-After: 1`, 500, 503 and
    // dropped connections, a fifth of the requests in all), the login and its refresh included;
    // each run from its own seed, so that a failure can be replayed.
    let runs = (0..20_u64).map(|run| async move {
        let faults = Faults { include_auth: true, seed: run, ..Faults::mixed(0.2, 0) };
        let emu = Emulator::new(ApiVersion::V6)
            .seed(seed(ApiVersion::V6, &["Acme", "Globex"], 10))
            .faults(faults)
            .start()
            .await;
        let (report, code) = doctor(&emu, &password(&emu), &[]).await;
        (run, emu, report, code)
    });
    let mut faulted = 0;
    let mut faulted_logins = 0;
    for (run, emu, report, code) in futures::future::join_all(runs).await {
        assert_eq!(code, 0, "run {run}:\n{report:#}");
        let off = not_ok(&report);
        assert!(off.iter().all(|f| f == "faults=warn"), "run {run}: {off:?}\n{report:#}");
        let fault = |r: &ozform::emulator::RequestRecord| !r.status.is_some_and(|s| (200..300).contains(&s));
        let requests = emu.requests();
        faulted += requests.iter().filter(|r| fault(r)).count();
        faulted_logins +=
            requests.iter().filter(|r| fault(r) && r.path.starts_with("/api/authorize/auth")).count();
    }
    // The runs met faults, the login among them: the verdicts above were reached through them.
    assert!(faulted >= 20, "only {faulted} faulted requests in 20 runs");
    assert!(faulted_logins > 0, "no login was faulted in 20 runs");
}
