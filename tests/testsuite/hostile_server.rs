//! A hostile or broken Oz API cannot exhaust the runner (issue #20, "Bounds against hostile
//! servers"). The real binary runs against `common::hostile`, a server on loopback in front of
//! the built-in emulator that answers some requests itself: endless full pages without a
//! total, a `total` of 10^12, a page repeating the previous one, an endless chunked body, a
//! `Content-Length` of 10^12, a body that drips forever, a 30 MB token, an empty one, a token
//! with a space, an empty session token, and `expire_date`s no token can have.
//!
//! Each run must end with the error that names the bound and its flag (through the bounds and
//! the small request timeouts set here, never a timing assertion), and its peak resident memory
//! (`VmHWM`, read from `/proc/<pid>/status` of the child until it exits) must stay under
//! 200 MiB. No token that cannot be one is stored or printed.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use crate::common;

use common::Cli;
use common::hostile::{self, Hostility, Measured, Server, run_measured};
use common::world::{BASIC, BASIC_TOKEN_USERS, World, canary};
use ozform::model::ApiVersion;
use serde_json::{Value, json};

/// The bound every run of this file must stay under.
const PEAK_MIB: u64 = 200;

/// `cli` against `url` instead of the world's emulator; what it printed is kept for the
/// world's canary scan.
async fn run_against(world: &World, cli: Cli, url: &str) -> Measured {
    let cli = cli.env("OZ_API_URL", url);
    let measured = tokio::task::spawn_blocking(move || run_measured(cli)).await.unwrap();
    world.printed.lock().unwrap().push((measured.run.stdout.clone(), measured.run.stderr.clone()));
    measured
}

/// A plan of `examples/basic` against a hostile server of `hostility`, with `args`.
async fn plan_against(hostility: Hostility, args: &[&str]) -> (World, Measured, Server) {
    let world = World::start(ApiVersion::V6).await;
    let server = hostile::start(&world.emu.url(), hostility).await;
    let mut all = args.to_vec();
    all.push(BASIC);
    let measured = run_against(&world, world.command("plan", &all), &server.url).await;
    (world, measured, server)
}

/// An apply of `examples/basic` against a hostile server of `hostility`, with `args`.
async fn apply_against(hostility: Hostility, args: &[&str]) -> (World, Measured, Server) {
    let world = World::start(ApiVersion::V6).await;
    let server = hostile::start(&world.emu.url(), hostility).await;
    let mut all = vec!["--auto-approve"];
    all.extend_from_slice(args);
    all.push(BASIC);
    let measured = run_against(&world, world.command("apply", &all), &server.url).await;
    (world, measured, server)
}

/// `text` with every run of whitespace as one space, and without the `|` miette starts the
/// continued lines of a wrapped message with: the words of a message, however it was wrapped.
fn flat(text: &str) -> String {
    text.split_whitespace().filter(|w| *w != "|").collect::<Vec<_>>().join(" ")
}

/// At most the first 4000 characters of `text`, for a failure message.
fn head(text: &str) -> String {
    text.chars().take(4000).collect()
}

// ---------------------------------------------------------------------------------------------
// Lists.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_full_pages_without_a_total_end_at_max_objects() {
    let (world, m, server) = plan_against(Hostility::EndlessPages, &["--max-objects", "3000"]).await;
    let run = &m.run;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        flat(&run.stderr).contains(&format!(
            "GET {}/api/companies/: the list holds more than 3000 objects, the limit of `--max-objects`",
            server.url
        )),
        "{}",
        run.stderr
    );
    assert!(flat(&run.stderr).contains("raise `--max-objects`"), "{}", run.stderr);
    // Pages of 100 in windows of 1, 2, 4, 8 and 16 pages: 3100 objects.
    assert_eq!(server.hostile_answers(), 31);
    m.assert_peak_under(PEAK_MIB);
    world.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_total_is_refused_at_once_and_nothing_is_sized_from_it() {
    // The default `--max-objects`: the total alone is refused, before any page is asked for.
    let (_world, m, server) = plan_against(Hostility::HugeTotal, &[]).await;
    let run = &m.run;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        flat(&run.stderr).contains(
            "the API says the list holds 1000000000000 objects, more than 1000000, the limit of `--max-objects`"
        ),
        "{}",
        run.stderr
    );
    assert_eq!(server.hostile_answers(), 1, "one page, then the error");
    m.assert_peak_under(PEAK_MIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_repeating_the_previous_page_ends_paging_with_an_error() {
    let (_world, m, server) = plan_against(Hostility::RepeatedPage, &[]).await;
    let run = &m.run;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        flat(&run.stderr).contains(&format!(
            "GET {}/api/companies/: the page at offset 100 repeats only ids already seen: the server ignores `offset`",
            server.url
        )),
        "{}",
        run.stderr
    );
    m.assert_peak_under(PEAK_MIB);
}

// ---------------------------------------------------------------------------------------------
// Bodies.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_chunked_body_ends_at_max_response_bytes() {
    // The default bound, 64 MiB: read whole, then refused, never more.
    let (world, m, server) = plan_against(Hostility::EndlessBody, &[]).await;
    let run = &m.run;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        flat(&run.stderr).contains(&format!(
            "GET {}/api/companies/: the answer is larger than 64 MiB, the limit of `--max-response-bytes`",
            server.url
        )),
        "{}",
        run.stderr
    );
    assert!(flat(&run.stderr).contains("raise `--max-response-bytes`"), "{}", run.stderr);
    m.assert_peak_under(PEAK_MIB);
    // The 64 MiB were held, and the readings saw them: the figure above is no blind spot.
    assert!(m.peak_kib >= 64 * 1024, "peak {} KiB: the body was not read up to the bound", m.peak_kib);
    assert_eq!(server.hostile_answers(), 1, "a body too large is not asked for again");
    world.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smaller_max_response_bytes_ends_an_endless_body_sooner() {
    let (_world, m, _) = plan_against(Hostility::EndlessBody, &["--max-response-bytes", "2MiB"]).await;
    let run = &m.run;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        flat(&run.stderr).contains("the answer is larger than 2 MiB, the limit of `--max-response-bytes`"),
        "{}",
        run.stderr
    );
    m.assert_peak_under(64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_length_past_the_bound_is_refused_before_reading() {
    let (_world, m, _) = plan_against(Hostility::HugeContentLength, &[]).await;
    let run = &m.run;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        flat(&run.stderr).contains("the answer is larger than 64 MiB, the limit of `--max-response-bytes`"),
        "{}",
        run.stderr
    );
    // Nothing was buffered, let alone preallocated from the announced length.
    m.assert_peak_under(64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dripping_answer_ends_with_the_request_timeout() {
    let (world, m, server) = apply_against(Hostility::DripToken, &["--request-timeout", "1s"]).await;
    let run = &m.run;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(flat(&run.stderr).contains("/api/authorize/service_token/"), "{}", run.stderr);
    assert!(flat(&run.stderr).contains("no answer within 1s"), "{}", run.stderr);
    assert!(world.token_files().is_empty(), "{:?}", world.token_files());
    // Each token sent 6 times in all (a timeout leaves its outcome unknown: apply issues again,
    // up to its limit of sends), each attempt ended by the 1 s timeout.
    assert_eq!(server.hostile_answers(), 6 * BASIC_TOKEN_USERS.len());
    m.assert_peak_under(PEAK_MIB);
    world.assert_no_secrets();
}

// ---------------------------------------------------------------------------------------------
// Tokens.

/// Apply with every issued service token replaced by `token`: the token steps fail with
/// `expected`, nothing is stored, the token is never printed.
async fn a_token_that_cannot_be_one_is_refused(token: &str, expected: &str) {
    let (world, m, server) = apply_against(Hostility::ServiceToken(json!(token)), &[]).await;
    let run = &m.run;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        flat(&run.stderr)
            .contains(&format!("the service token the API issued cannot be a token: {expected}")),
        "{}",
        head(&run.stderr)
    );
    assert!(flat(&run.stdout).contains("Apply failed: "), "{}", run.stdout);
    assert!(world.token_files().is_empty(), "nothing is stored: {:?}", world.token_files().keys());
    assert_eq!(server.hostile_answers(), BASIC_TOKEN_USERS.len(), "one token each, never issued again");
    if !token.is_empty() {
        let piece = &token[..token.len().min(40)];
        assert!(
            !flat(&run.stdout).contains(piece) && !flat(&run.stderr).contains(piece),
            "the token was printed"
        );
    }
    m.assert_peak_under(PEAK_MIB);
    world.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30_mb_token_fails_its_step_and_is_never_stored() {
    let token = canary("token").repeat(30 * 1024 * 1024 / 45);
    let expected = format!("it is {} bytes long, more than the 4096 a token may have", token.len());
    a_token_that_cannot_be_one_is_refused(&token, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_token_fails_its_step() {
    a_token_that_cannot_be_one_is_refused("", "it is empty").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_with_a_space_fails_its_step_without_being_quoted() {
    let token = format!("{} {}", canary("token"), canary("token"));
    let position = token.find(' ').unwrap() + 1;
    a_token_that_cannot_be_one_is_refused(&token, &format!("byte {position} of it is not printable ASCII"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_session_token_is_refused_at_login() {
    let world = World::start(ApiVersion::V6).await;
    let server = hostile::start(&world.emu.url(), Hostility::SessionToken(json!(""))).await;
    let m = run_against(&world, world.command("plan", &[BASIC]), &server.url).await;
    let run = &m.run;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        flat(&run.stderr).contains(&format!(
            "POST {}/api/authorize/auth: the session token the API issued cannot be a token: it is empty",
            server.url
        )),
        "{}",
        run.stderr
    );
    m.assert_peak_under(PEAK_MIB);
}

/// The `expire_date` of every token file, by file name.
fn stored_expiries(world: &World) -> Vec<(String, Value)> {
    world.token_files().into_iter().map(|(name, file)| (name, file["expire_date"].clone())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expire_date_no_token_can_have_is_stored_as_unknown_with_a_warning() {
    // -1e308, NaN and infinity (as the numeric strings the API may send), 1000 years ahead,
    // and a week ago.
    let thousand_years = 1.8e9 + 1000.0 * 365.25 * 86_400.0;
    let week_ago = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
        - 7.0 * 86_400.0;
    for date in [json!(-1e308), json!("NaN"), json!("inf"), json!(thousand_years), json!(week_ago)] {
        let (world, m, server) = apply_against(Hostility::ServiceTokenExpiry(date.clone()), &[]).await;
        let run = &m.run;
        assert_eq!(run.code, 0, "{date}: {}", run.stderr);
        assert!(
            flat(&run.stderr).contains("the API answered an `expire_date` no service token can have"),
            "{date}: {}",
            run.stderr
        );
        assert!(flat(&run.stderr).contains("stored with an unknown expiry"), "{date}: {}", run.stderr);
        let expected: Vec<(String, Value)> =
            BASIC_TOKEN_USERS.iter().map(|u| (format!("{u}.json"), json!(0.0))).collect();
        assert_eq!(stored_expiries(&world), expected, "{date}: unknown expiry is stored as 0");
        m.assert_peak_under(PEAK_MIB);

        // Planned against the faithful emulator: an unknown expiry is not rotated (the plan
        // would never converge against such an API), the plan says so, and `--rotate-tokens`
        // rotates it.
        let plan =
            run_against(&world, world.command("plan", &["--detailed-exitcode", BASIC]), &server.url).await;
        let plan = plan.run.code(0);
        assert!(plan.stdout.contains("No changes."), "{date}: {}", plan.stdout);
        for user in BASIC_TOKEN_USERS {
            assert!(
                flat(&plan.stdout).contains(&format!(
                    "the stored token of `{user}` has an unknown expiry (the API answered none a token can have"
                )),
                "{date}: {}",
                plan.stdout
            );
        }
        let args = ["--detailed-exitcode", "--rotate-tokens", BASIC];
        let rotate = run_against(&world, world.command("plan", &args), &server.url).await.run.code(2);
        for user in BASIC_TOKEN_USERS {
            assert!(rotate.stdout.contains(&format!("token/{user}")), "{}", rotate.stdout);
        }
        world.assert_no_secrets();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plausible_expire_date_is_stored_as_it_was_answered() {
    let in_a_year = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
        + 365.0 * 86_400.0;
    let (world, m, server) = apply_against(Hostility::ServiceTokenExpiry(json!(in_a_year)), &[]).await;
    assert_eq!(m.run.code, 0, "{}", m.run.stderr);
    assert!(!m.run.stderr.contains("expire_date"), "{}", m.run.stderr);
    for (name, date) in stored_expiries(&world) {
        assert_eq!(date.as_f64(), Some(in_a_year), "{name}");
    }
    let plan = run_against(&world, world.command("plan", &["--detailed-exitcode", BASIC]), &server.url).await;
    let plan = plan.run.code(0);
    assert!(plan.stdout.contains("No changes."), "{}", plan.stdout);
    assert!(!plan.stdout.contains("unknown expiry"), "{}", plan.stdout);
}
