//! Secret hygiene (issue #14) and output that never kills the work (issue #12).
//!
//! The built-in emulator never echoes a request, so the echoing cases run against a careless
//! server started here on loopback: it answers a failed login and a user create with error
//! messages that echo the credentials, the session tokens and a service token it issued,
//! spelled as the knob says (JSON-escaped, `\u`-escaped in either case, percent-encoded).
//! Every canary holds `CANARY`; a check finds none of them, in any spelling or any 16-character
//! piece, in the client's errors, in what `Output` writes, or in what the binary prints.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use crate::common;

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use common::{Cli, Reader, Run, root};
use ozform::model::{ApiVersion, Email, NewUser, Permissions};
use ozform::output::{Capture, LogFormat, Output};
use ozform::oz::{ClientConfig, OzClient, OzError, VersionSetting};
use ozform::secret::Secret;

const ADMIN: &str = "admin@careless.example";
/// The admin password the careless server accepts: `"`, `\` and non-ASCII.
const ADMIN_PASSWORD: &str = r#"adm"in\CANARY-ä-7e21"#;
/// Wrong admin passwords tried (each is echoed back by the failed login).
const WRONG_PASSWORDS: [&str; 3] =
    [r#"wrong"pw\CANARY-ö-1"#, "Pässwörd-CANARY-1234567", "sp ace+CANARY/€😀-9"];
const USER_PASSWORDS: [&str; 2] = [r#"CANARYuser"pw1\x"#, "Pässwörd-CANARY-7654321"];
const SESSION_TOKEN: &str = "sess-CANARY-0f1e2d3c4b5a69788796a5b4c3d2e1f0";
const EXPIRE_TOKEN: &str = "exp-CANARY-8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d";
const SERVICE_TOKEN: &str = "svc-CANARY-1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d";

// ---------------------------------------------------------------------------------------------
// Spellings a server may echo a value in.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// As received: the JSON text of the request (`\"`, `\\`, non-ASCII raw).
    Raw,
    /// `\uXXXX` for non-ASCII, lower-case hex (Python's `json.dumps`).
    JsonAscii,
    /// `\uXXXX` for `"`, `\`, `/` and non-ASCII, upper-case hex, and `\/` (PHP-like).
    JsonAsciiUpper,
    /// Form encoding: unreserved raw, space as `+`, upper-case hex.
    Percent,
    /// Every byte percent-encoded, lower-case hex.
    PercentAll,
}

const FORMS: [Form; 5] = [Form::Raw, Form::JsonAscii, Form::JsonAsciiUpper, Form::Percent, Form::PercentAll];

fn utf16_escapes(c: char, upper: bool) -> String {
    let mut units = [0u16; 2];
    c.encode_utf16(&mut units)
        .iter()
        .map(|u| if upper { format!("\\u{u:04X}") } else { format!("\\u{u:04x}") })
        .collect()
}

fn spell(value: &str, form: Form) -> String {
    let json = serde_json::to_string(value).unwrap();
    let json = &json[1..json.len() - 1];
    match form {
        Form::Raw => json.to_string(),
        Form::JsonAscii => {
            json.chars().map(|c| if c.is_ascii() { c.to_string() } else { utf16_escapes(c, false) }).collect()
        }
        Form::JsonAsciiUpper => value
            .chars()
            .map(|c| match c {
                '"' | '\\' => utf16_escapes(c, true),
                '/' => "\\/".to_string(),
                c if c.is_ascii() => c.to_string(),
                c => utf16_escapes(c, true),
            })
            .collect(),
        Form::Percent => value.bytes().fold(String::new(), |mut out, b| {
            match b {
                b' ' => out.push('+'),
                b if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) => out.push(char::from(b)),
                b => write!(out, "%{b:02X}").unwrap(),
            }
            out
        }),
        Form::PercentAll => value.bytes().fold(String::new(), |mut out, b| {
            write!(out, "%{b:02x}").unwrap();
            out
        }),
    }
}

/// Every canary of this file.
fn canaries() -> Vec<&'static str> {
    let mut all = vec![ADMIN_PASSWORD, SESSION_TOKEN, EXPIRE_TOKEN, SERVICE_TOKEN];
    all.extend(WRONG_PASSWORDS);
    all.extend(USER_PASSWORDS);
    all
}

/// No canary in `text`: not `CANARY` itself, and no 16-character piece (or the whole, when
/// shorter) of any canary in any spelling.
fn assert_clean(text: &str) {
    assert!(!text.contains("CANARY"), "a canary leaked:\n{text}");
    for canary in canaries() {
        for form in FORMS {
            let spelled: Vec<char> = spell(canary, form).chars().collect();
            for piece in spelled.windows(16.min(spelled.len())) {
                let piece: String = piece.iter().collect();
                assert!(!text.contains(&piece), "a piece `{piece}` of a canary ({form:?}) leaked:\n{text}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The careless server.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Echo {
    Password,
    Session,
    Expire,
    Service,
}

#[derive(Debug)]
struct Knobs {
    form: Form,
    echo: Echo,
}

type Shared = Arc<Mutex<Knobs>>;

fn api_error(status: u16, code: u8, message: &str) -> Response {
    let body = json!({"error_code": code, "error_message": message, "details": null});
    (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
}

async fn login(State(knobs): State<Shared>, body: String) -> Response {
    let parsed: Value = serde_json::from_str(&body).unwrap_or_default();
    let password = parsed["credentials"]["password"].as_str().unwrap_or_default();
    if password == ADMIN_PASSWORD {
        return axum::Json(json!({
            "access_token": SESSION_TOKEN,
            "expire_token": EXPIRE_TOKEN,
            "expire_date": 4_102_444_800u64,
            "user": {"user_id": "admin-1", "email": ADMIN, "user_type": "ADMIN"},
        }))
        .into_response();
    }
    let form = knobs.lock().unwrap().form;
    let echoed = match form {
        // The request body itself, as it came.
        Form::Raw => body,
        form => format!("password {}", spell(password, form)),
    };
    api_error(401, 7, &format!("invalid credentials: {echoed}"))
}

async fn service_token() -> Response {
    axum::Json(json!({
        "token_id": "t-1", "user_id": "u-1", "access_token": SERVICE_TOKEN, "expire_date": 4_102_444_800u64,
    }))
    .into_response()
}

async fn create_user(State(knobs): State<Shared>, headers: HeaderMap, body: String) -> Response {
    let (form, echo) = {
        let k = knobs.lock().unwrap();
        (k.form, k.echo)
    };
    let parsed: Value = serde_json::from_str(&body).unwrap_or_default();
    let echoed = match echo {
        Echo::Password if form == Form::Raw => parsed["credentials"].to_string(),
        Echo::Password => spell(parsed["credentials"]["password"].as_str().unwrap_or_default(), form),
        Echo::Session => {
            let sent =
                headers.get("X-Forensic-Access-Token").and_then(|v| v.to_str().ok()).unwrap_or_default();
            spell(sent, form)
        }
        Echo::Expire => spell(EXPIRE_TOKEN, form),
        Echo::Service => spell(SERVICE_TOKEN, form),
    };
    api_error(400, 4, &format!("cannot create {echoed}"))
}

async fn careless_server() -> (String, Shared) {
    let knobs: Shared = Arc::new(Mutex::new(Knobs { form: Form::Raw, echo: Echo::Password }));
    let app = Router::new()
        .route("/api/authorize/auth", post(login))
        .route("/api/authorize/service_token/{user_id}", post(service_token))
        .route("/api/users/", post(create_user))
        .with_state(Arc::clone(&knobs));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, knobs)
}

fn config(url: &str, password: &str) -> ClientConfig {
    let mut config = ClientConfig::new(url, ADMIN, Secret::new(password));
    config.api_version = VersionSetting::Fixed(ApiVersion::V6);
    config
}

fn new_user(password: &str) -> NewUser {
    NewUser {
        email: Email::new("svc@careless.example"),
        company_id: "c-1".into(),
        first_name: "Svc".into(),
        last_name: "User".into(),
        middle_name: String::new(),
        password: Secret::new(password),
        active: true,
        permissions: Permissions::default(),
    }
}

/// Everything an error shows: its message and its debug form.
fn shown(err: &OzError) -> String {
    format!("{err}\n{err:?}")
}

/// An `Output` writing to buffers, with debug logs.
fn captured_output() -> (Output, Capture, Capture) {
    let (out, err) = (Capture::default(), Capture::default());
    (Output::to_writers(out.clone(), err.clone(), 2, LogFormat::Json), out, err)
}

// ---------------------------------------------------------------------------------------------
// The client's errors.

#[tokio::test]
async fn a_failed_login_echoing_the_admin_password_in_any_spelling_shows_none_of_it() {
    let (url, knobs) = careless_server().await;
    for password in WRONG_PASSWORDS {
        for form in FORMS {
            knobs.lock().unwrap().form = form;
            let err = OzClient::connect(config(&url, password)).await.unwrap_err();
            assert!(matches!(err, OzError::Login { status: 401, .. }), "{err:?}");
            let text = shown(&err);
            assert!(text.contains("invalid credentials") && text.contains("(sensitive)"), "{text}");
            assert_clean(&text);
        }
    }
}

#[tokio::test]
async fn a_short_admin_password_is_still_redacted_exactly_from_a_login_error() {
    // Below the registry's minimum length: only request-scoped redaction can catch it.
    let password = r#"p"ä\"#;
    let (url, knobs) = careless_server().await;
    for form in FORMS {
        knobs.lock().unwrap().form = form;
        let err = OzClient::connect(config(&url, password)).await.unwrap_err();
        let text = shown(&err);
        assert!(text.contains("(sensitive)"), "{text}");
        assert!(!text.contains(&spell(password, form)) && !text.contains(password), "{form:?}: {text}");
    }
}

#[tokio::test]
async fn a_failed_create_echoing_passwords_and_tokens_in_any_spelling_shows_none_of_them() {
    let (url, knobs) = careless_server().await;
    let client = OzClient::connect(config(&url, ADMIN_PASSWORD)).await.unwrap();
    let issued = client.issue_token("u-1").await.unwrap();
    assert_eq!(issued.access_token.expose(), SERVICE_TOKEN);
    let (output, out, err) = captured_output();
    for echo in [Echo::Password, Echo::Session, Echo::Expire, Echo::Service] {
        for form in FORMS {
            *knobs.lock().unwrap() = Knobs { form, echo };
            for password in USER_PASSWORDS {
                let error = client.create_user(&new_user(password)).await.unwrap_err();
                assert_eq!(error.status(), Some(400));
                let text = shown(&error);
                assert!(text.contains("cannot create") && text.contains("(sensitive)"), "{text}");
                assert_clean(&text);
                output.report(&miette::Report::new(ozform::error::Error::from(error)));
            }
        }
    }
    assert_clean(&out.text());
    let err = err.text();
    assert_eq!(err.matches("cannot create").count(), 40, "every error was reported:\n{err}");
    assert_clean(&err);
}

// ---------------------------------------------------------------------------------------------
// What `Output` writes, when a layer forgot to redact.

#[tokio::test]
async fn output_blanks_every_live_secret_in_any_spelling_on_every_stream() {
    // Log in and issue a token: the session and service tokens are now live secrets.
    let (url, _knobs) = careless_server().await;
    let client = OzClient::connect(config(&url, ADMIN_PASSWORD)).await.unwrap();
    client.issue_token("u-1").await.unwrap();
    let _passwords: Vec<Secret> =
        USER_PASSWORDS.iter().chain(&WRONG_PASSWORDS).map(|p| Secret::new(*p)).collect();
    let (output, out, err) = captured_output();
    let logs = tracing::Dispatch::new(output.subscriber());
    for canary in canaries() {
        for form in FORMS {
            let spelled = spell(canary, form);
            output.print(&format!("plan line {spelled}\n"));
            output.status(&format!("status {spelled}"));
            output.warn(&format!("warning {spelled}"));
            output.report(&miette::Report::msg(format!("a careless message {spelled} and more words")));
            tracing::dispatcher::with_default(&logs, || {
                // The filter lets through `ozform` targets only.
                tracing::warn!(target: "ozform::test", echo = %spelled, "a log line with {}", spelled);
            });
        }
    }
    let (out, err) = (out.text(), err.text());
    let written = canaries().len() * FORMS.len();
    assert_eq!(out.matches("plan line (sensitive)\n").count(), written, "{out}");
    for line in [
        "status (sensitive)\n",
        "warning (sensitive)\n",
        "a careless message (sensitive) and",
        "a log line with (sensitive)",
    ] {
        assert_eq!(err.matches(line).count(), written, "`{line}` in:\n{err}");
    }
    assert_clean(&out);
    assert_clean(&err);
}

// ---------------------------------------------------------------------------------------------
// Through the binary.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_against_a_server_echoing_the_admin_password_exits_1_and_prints_none_of_it() {
    let (url, knobs) = careless_server().await;
    // Not the password the server accepts: the login fails and echoes it.
    let password = r#"plan"admin\CANARY-ä-Ω-55"#;
    for (form, logs) in FORMS.iter().zip([&["-vv"][..], &["-vv", "--log-format", "json"], &[], &[], &["-q"]])
    {
        knobs.lock().unwrap().form = *form;
        let cli = Cli::new()
            .current_dir(root())
            .env("OZ_API_URL", &url)
            .env("OZ_ADMIN_EMAIL", ADMIN)
            .env("OZ_ADMIN_PASSWORD", password)
            .args(["plan", "--api-version", "6", "examples/basic"])
            .args(logs);
        let run: Run = tokio::task::spawn_blocking(move || cli.run()).await.unwrap().code(1);
        assert!(run.stderr.contains("cannot log in") && run.stderr.contains("(sensitive)"), "{}", run.stderr);
        let both = format!("{}\n{}", run.stdout, run.stderr);
        assert!(!both.contains(password) && !both.contains(&spell(password, *form)), "{both}");
        assert_clean(&both);
    }
}

// ---------------------------------------------------------------------------------------------
// Output never kills the work (#12): closed or failing stdout and stderr.

fn assert_survived(run: &Run, what: &str) {
    assert!(matches!(run.code, 0 | 1), "{what}: exit {}\n{}\n{}", run.code, run.stdout, run.stderr);
    for text in [&run.stdout, &run.stderr] {
        assert!(!text.contains("panicked") && !text.contains("Broken pipe"), "{what}:\n{text}");
    }
}

const CLOSINGS: [(Reader, Reader); 5] = [
    (Reader::OneLine, Reader::OneLine),
    (Reader::Closed, Reader::Closed),
    (Reader::Closed, Reader::OneLine),
    (Reader::All, Reader::Closed),
    (Reader::Closed, Reader::All),
];

#[test]
fn validate_with_closed_stdout_or_stderr_exits_1_without_panicking() {
    for (stdout, stderr) in CLOSINGS {
        let run = Cli::new()
            .current_dir(root())
            .args(["validate", "tests/fixtures/invalid"])
            .run_closing(stdout, stderr);
        assert_survived(&run, &format!("validate, stdout {stdout:?}, stderr {stderr:?}"));
        assert_eq!(run.code, 1, "the manifests are invalid");
        if stderr == Reader::All {
            assert!(
                run.stderr.contains("ozform::manifest"),
                "the diagnostics still come out: {}",
                run.stderr
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_with_closed_stdout_or_stderr_finishes_without_panicking() {
    let emu = ozform::emulator::start(ozform::emulator::EmulatorConfig::new(ApiVersion::V6)).await.unwrap();
    let tokens = tempfile::tempdir().unwrap();
    for (stdout, stderr) in CLOSINGS {
        let cli = Cli::new()
            .current_dir(root())
            .env("OZ_API_URL", emu.url())
            .env("OZ_ADMIN_EMAIL", emu.admin_email())
            .env("OZ_ADMIN_PASSWORD", emu.admin_password().expose())
            // Debug logs: many writes to stderr while the plan is being made.
            .args(["plan", "-vv", "examples/basic", "--token-dir"])
            .args([tokens.path()]);
        let run = tokio::task::spawn_blocking(move || cli.run_closing(stdout, stderr)).await.unwrap();
        assert_survived(&run, &format!("plan, stdout {stdout:?}, stderr {stderr:?}"));
        assert_eq!(run.code, 0, "the plan was made: {}", run.stderr);
        if stdout == Reader::All {
            assert!(
                run.stdout.contains("Plan:"),
                "the whole plan is printed with stderr closed: {}",
                run.stdout
            );
        }
    }
}
