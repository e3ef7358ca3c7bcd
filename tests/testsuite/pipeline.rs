//! Safe in a pipeline (issue #12), through the real binary on the emulator: usage errors exit
//! 1 (2 is `plan --detailed-exitcode`'s), no token is issued without a place to keep it, a
//! killed run's tokens are recovered, one apply at a time per token directory, cancellation
//! stores every issued token, and twin companies made by concurrent applies are found at once.
//!
//! Timing never comes from sleeps: a run is killed or signalled once the emulator shows the
//! progress the scenario needs (users exist), with latency injected so the run is still going.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use crate::common;

use common::Cli;

// ---------------------------------------------------------------------------------------------
// Usage errors: exit 1 with clap's message; help and version exit 0.

fn usage(args: &[&str]) -> common::Run {
    Cli::new().args(args).run()
}

#[test]
fn an_unknown_flag_exits_1_with_clap_s_message() {
    let run = usage(&["plan", "--no-such-flag", "m.yaml"]).code(1);
    assert!(run.stderr.contains("unexpected argument '--no-such-flag'"), "{}", run.stderr);
    let run = usage(&["validate", "--detailed-exitcod", "m.yaml"]).code(1);
    assert!(run.stderr.contains("--detailed-exitcod"), "{}", run.stderr);
}

#[test]
fn a_bad_value_exits_1_with_clap_s_message() {
    let run = usage(&["apply", "--parallelism", "many", "m.yaml"]).code(1);
    assert!(run.stderr.contains("invalid value 'many'"), "{}", run.stderr);
    let run = usage(&["plan", "--format", "yaml", "m.yaml"]).code(1);
    assert!(run.stderr.contains("invalid value 'yaml'"), "{}", run.stderr);
    let run = usage(&["plan", "--rotate-before", "soon", "m.yaml"]).code(1);
    assert!(run.stderr.contains("is not a duration"), "{}", run.stderr);
}

#[test]
fn a_missing_argument_exits_1_with_clap_s_message() {
    let run = usage(&["validate"]).code(1);
    assert!(run.stderr.contains("required arguments were not provided"), "{}", run.stderr);
    // PATHS may be left out when a project file names the manifests (#24): without one, the
    // missing manifests are said by ozform rather than clap, still with exit 1.
    let run = usage(&["apply", "--auto-approve"]).code(1);
    assert!(run.stderr.contains("no manifests given, and there is no project file"), "{}", run.stderr);
    // No command at all: clap prints the help, on stderr, as an error.
    let run = usage(&[]).code(1);
    assert!(run.stderr.contains("Usage:"), "{}", run.stderr);
}

#[test]
fn conflicting_flags_exit_1_with_clap_s_message() {
    let run = usage(&["apply", "--plan", "plan.json", "m.yaml"]).code(1);
    assert!(run.stderr.contains("cannot be used with"), "{}", run.stderr);
    let run = usage(&["validate", "-q", "-v", "m.yaml"]).code(1);
    assert!(run.stderr.contains("cannot be used with"), "{}", run.stderr);
}

#[test]
fn help_and_version_still_exit_0_on_stdout() {
    for args in [&["--help"][..], &["-h"], &["apply", "--help"], &["help", "plan"]] {
        let run = usage(args).code(0);
        assert!(run.stdout.contains("Usage:"), "{args:?}: {}", run.stdout);
    }
    let run = usage(&["--version"]).code(0);
    assert!(run.stdout.starts_with("ozform "), "{}", run.stdout);
}

// ---------------------------------------------------------------------------------------------
// On the emulator: many users, latency so that a run is still going when the test acts.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Run;
use common::world::{World, canary};
use ozform::emulator::{EmulatorConfig, Faults, Snapshot};
use ozform::model::ApiVersion;
use ozform::token_store::{DirStore, TokenStore as _};
use serde_json::Value;

const PASSWORD_VAR: &str = "PIPELINE_SERVICE_PASSWORD";
const PARALLELISM: usize = 8;

/// A world whose emulator answers each request after `latency_ms`, with a canary password
/// for the generated users.
async fn slow_world(latency_ms: u64) -> World {
    let mut config = EmulatorConfig::new(ApiVersion::V6);
    config.faults = Faults { latency_ms, ..Faults::default() };
    let mut w = World::with(config).await;
    w.passwords.insert(PASSWORD_VAR.into(), canary("pw"));
    w
}

/// `users` service users with tokens in three companies, as one manifest in the world's dir.
fn many_users(w: &World, users: usize) -> String {
    let mut yaml = String::from("companies:\n");
    for c in 0..3 {
        writeln!(yaml, "  - name: Pipeline {c}").unwrap();
    }
    yaml.push_str("service_users:\n");
    for u in 0..users {
        writeln!(
            yaml,
            "  - {{email: svc-{u:04}@pipeline.example, company: Pipeline {}, first_name: Svc, \
             last_name: U{u}, password: {{env: {PASSWORD_VAR}}}, token: {{issue: true}}}}",
            u % 3
        )
        .unwrap();
    }
    let path = w.path("many.yaml");
    std::fs::write(&path, yaml).unwrap();
    path.to_str().unwrap().to_string()
}

fn parallelism() -> String {
    PARALLELISM.to_string()
}

/// A run of the binary in the background, its output read as it comes (a full pipe would
/// stall it).
struct Running {
    child: Child,
    stdout: std::thread::JoinHandle<Vec<u8>>,
    stderr: std::thread::JoinHandle<Vec<u8>>,
    /// What the run has written to stderr so far.
    stderr_so_far: Arc<Mutex<Vec<u8>>>,
}

impl Running {
    fn start(cli: common::Cli) -> Self {
        fn drain(
            mut from: impl std::io::Read + Send + 'static,
            so_far: Arc<Mutex<Vec<u8>>>,
        ) -> std::thread::JoinHandle<Vec<u8>> {
            std::thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n @ 1..) = from.read(&mut chunk) {
                    so_far.lock().unwrap().extend_from_slice(&chunk[..n]);
                }
                so_far.lock().unwrap().clone()
            })
        }
        let mut child = cli.spawn();
        let stdout = drain(child.stdout.take().unwrap(), Arc::default());
        let stderr_so_far = Arc::default();
        let stderr = drain(child.stderr.take().unwrap(), Arc::clone(&stderr_so_far));
        Self { child, stdout, stderr, stderr_so_far }
    }
    fn id(&self) -> u32 {
        self.child.id()
    }
    /// Wait (polling what it printed, never a fixed sleep) until the run has said `words` on stderr.
    async fn said(&self, words: &str) {
        let waiting = async {
            while !String::from_utf8_lossy(&self.stderr_so_far.lock().unwrap()).contains(words) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        // A hang guard, not a timing assert.
        tokio::time::timeout(Duration::from_secs(120), waiting)
            .await
            .unwrap_or_else(|_| panic!("never said: {words}"));
    }
}

/// Start `ozform apply --auto-approve --parallelism 8 <manifest> <extra…>` without waiting.
fn spawn_apply(w: &World, manifest: &str, extra: &[&str]) -> Running {
    let p = parallelism();
    Running::start(w.command("apply", &["--auto-approve", "--parallelism", &p, manifest]).args(extra))
}

/// A diagnostic as one line: miette wraps long messages and prefixes continuation lines.
fn flat(text: &str) -> String {
    text.lines()
        .map(|l| l.trim().trim_start_matches(['|', 'x']).trim())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Wait (polling the emulator, never a fixed sleep) until `ready` holds of its state.
async fn wait_until(w: &World, what: &str, ready: impl Fn(&Snapshot) -> bool) {
    let waiting = async {
        while !ready(&w.emu.snapshot()) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    // A hang guard, not a timing assert.
    tokio::time::timeout(Duration::from_secs(120), waiting)
        .await
        .unwrap_or_else(|_| panic!("never reached: {what}"));
}

fn service_users(s: &Snapshot) -> usize {
    s.users.iter().filter(|u| u.user_type != "ADMIN").count()
}

/// Wait for a spawned run to end and keep what it printed for the canary scan.
async fn finish(w: &World, running: Running) -> Run {
    let Running { mut child, stdout, stderr, .. } = running;
    let (status, stdout, stderr) = tokio::task::spawn_blocking(move || {
        (child.wait().unwrap(), stdout.join().unwrap(), stderr.join().unwrap())
    })
    .await
    .unwrap();
    let run = Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    };
    w.printed.lock().unwrap().push((run.stdout.clone(), run.stderr.clone()));
    w.harvest_tokens();
    run
}

/// Send `signal` (`INT`, `TERM`) to a spawned run.
fn send(child: &Running, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([format!("-{signal}"), child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// The token ids in the token directory: in token files and in complete temp records (both
/// durable: what a killed run stored or had ready to recover).
fn stored_token_ids(dir: &Path) -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return BTreeSet::new() };
    entries
        .filter_map(|e| std::fs::read(e.unwrap().path()).ok())
        .filter_map(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .filter_map(|v| v["token_id"].as_str().map(str::to_string))
        .collect()
}

fn issued_token_ids(w: &World) -> BTreeSet<String> {
    w.emu.snapshot().service_tokens.into_iter().map(|t| t.token_id).collect()
}

/// Hidden temp files of interrupted stores left in the token directory.
fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".json.tmp-"))
        .collect()
}

/// Every user once, every token file valid, 0600, of a live user, no temp file left.
fn assert_whole(w: &World, users: usize) {
    let snapshot = w.emu.snapshot();
    let emails: BTreeSet<&str> =
        snapshot.users.iter().filter(|u| u.user_type != "ADMIN").map(|u| u.email.as_str()).collect();
    assert_eq!(service_users(&snapshot), users, "every user exists once");
    assert_eq!(emails.len(), users);
    let names: BTreeSet<&str> = snapshot.companies.iter().map(|c| c.name.as_str()).collect();
    assert_eq!((snapshot.companies.len(), names.len()), (3, 3), "every company once");
    let files = w.token_files();
    assert_eq!(files.len(), users, "a token file per user");
    for (name, token) in &files {
        let email = token["email"].as_str().unwrap();
        assert_eq!(format!("{email}.json"), *name);
        assert!(emails.contains(email), "{email}");
        assert!(token["access_token"].as_str().is_some_and(|t| !t.is_empty()), "{name}");
        let mode = std::fs::metadata(w.store_dir().join(name)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name}");
    }
    assert_eq!(temp_files(&w.store_dir()), Vec::<String>::new(), "no temp file left");
}

/// When to kill a run: a description, and the emulator state to wait for.
type KillPoint = (&'static str, fn(&Snapshot) -> bool);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_several_points_loses_at_most_the_parallelism_and_a_rerun_makes_it_whole() {
    let w = slow_world(15).await;
    let manifest = many_users(&w, 300);
    let kill_points: [KillPoint; 3] = [
        ("some users exist", |s| service_users(s) >= 40),
        ("more tokens are issued", |s| s.service_tokens.len() >= 120),
        ("more tokens are issued again", |s| s.service_tokens.len() >= 220),
    ];
    let mut lost = 0;
    for (what, point) in kill_points {
        let mut child = spawn_apply(&w, &manifest, &[]);
        wait_until(&w, what, point).await;
        child.child.kill().unwrap();
        let run = finish(&w, child).await;
        assert_eq!(run.code, -1, "killed: {}", run.stderr);
        // Tokens issued in Oz and recorded nowhere (no file, no complete temp record).
        let unrecorded = issued_token_ids(&w).difference(&stored_token_ids(&w.store_dir())).count();
        // (Saturating: should the API drop a superseded token, the count could only shrink.)
        let new = unrecorded.saturating_sub(lost);
        assert!(
            new <= PARALLELISM,
            "killed when {what}: {new} tokens issued but not stored (parallelism {PARALLELISM})"
        );
        lost = lost.max(unrecorded);
    }

    let run = finish(&w, spawn_apply(&w, &manifest, &[])).await.code(0);
    assert!(run.stdout.contains("Apply complete"), "{}", run.stdout);
    assert_whole(&w, 300);
    assert_eq!(w.emu.stats().creates_per_email.values().copied().max(), Some(1), "no user was created twice");
    w.assert_converged(&[&manifest]).await;
    w.assert_no_secrets();
}

async fn a_signal_stops_the_apply_gracefully(signal: &str, code: i32) {
    let w = slow_world(15).await;
    let manifest = many_users(&w, 300);
    let child = spawn_apply(&w, &manifest, &[]);
    wait_until(&w, "some tokens are issued", |s| s.service_tokens.len() >= 20).await;
    send(&child, signal);
    let run = finish(&w, child).await.code(code);

    let summary = run
        .stdout
        .lines()
        .find(|l| l.starts_with("Apply interrupted: "))
        .unwrap_or_else(|| panic!("no summary\n--- stdout\n{}\n--- stderr\n{}", run.stdout, run.stderr));
    let not_started: usize = summary.split(", ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(not_started > 0, "{summary}");
    // Every token issued is in its file, nothing half-written, the lock let go.
    let issued = issued_token_ids(&w);
    assert!(!issued.is_empty());
    assert!(issued.is_subset(&stored_token_ids(&w.store_dir())), "a token was lost");
    assert_eq!(temp_files(&w.store_dir()), Vec::<String>::new());
    assert_eq!(std::fs::read(w.store_dir().join(".ozform.lock")).unwrap(), b"", "the lock file is emptied");

    let run = finish(&w, spawn_apply(&w, &manifest, &[])).await.code(0);
    assert!(run.stdout.contains("Apply complete"), "{}", run.stdout);
    assert_whole(&w, 300);
    w.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_finishes_the_steps_in_flight_stores_their_tokens_and_exits_130() {
    a_signal_stops_the_apply_gracefully("INT", 130).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_steps_in_flight_stores_their_tokens_and_exits_143() {
    a_signal_stops_the_apply_gracefully("TERM", 143).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once_with_the_first_signal_s_code() {
    let w = slow_world(15).await;
    let manifest = many_users(&w, 300);
    let child = spawn_apply(&w, &manifest, &[]);
    wait_until(&w, "some users exist", |s| service_users(s) >= 20).await;
    send(&child, "TERM");
    // The first signal must have been taken before the second is sent: both pending at once
    // are seen in no particular order.
    child.said("interrupted: finishing the steps in flight").await;
    send(&child, "INT");
    finish(&w, child).await.code(143);
    // The lock died with the process; what it left is recovered by the next run.
    let run = finish(&w, spawn_apply(&w, &manifest, &[])).await.code(0);
    assert!(run.stdout.contains("Apply complete"), "{}", run.stdout);
    assert_whole(&w, 300);
    w.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_directory_that_cannot_be_made_issues_no_token_and_names_it() {
    let w = slow_world(0).await;
    let manifest = many_users(&w, 5);
    // Tests run as root, which ignores modes: a regular file where a directory must be.
    std::fs::write(w.path("not-a-dir"), "").unwrap();
    let token_dir = w.path("not-a-dir").join("tokens");
    let run = w
        .run(w.cli().args(["apply", "--auto-approve", &manifest, "--token-dir"]).args([&token_dir]))
        .await
        .code(1);
    assert!(run.stderr.contains(token_dir.to_str().unwrap()), "{}", run.stderr);
    assert!(run.stderr.contains("ozform::token_store"), "{}", run.stderr);
    assert!(w.emu.snapshot().service_tokens.is_empty(), "no token issued");
    assert_eq!(service_users(&w.emu.snapshot()), 0, "nothing changed");
    w.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_apply_on_the_same_token_directory_fails_naming_the_holder_or_waits() {
    let w = slow_world(15).await;
    let manifest = many_users(&w, 60);
    let first = spawn_apply(&w, &manifest, &[]);
    wait_until(&w, "the first apply is executing", |s| service_users(s) >= 5).await;

    let second = w.apply(&["--auto-approve", &manifest]).await.code(1);
    let message = flat(&second.stderr);
    assert!(message.contains("is locked by another `ozform apply`"), "{message}");
    assert!(message.contains(&format!("pid {} on ", first.id())), "{message}");
    assert!(message.contains("--lock-timeout"), "{message}");

    // One that waits gets the lock once the first is done, and finds nothing left to do.
    let third = spawn_apply(&w, &manifest, &["--lock-timeout", "10m"]);
    finish(&w, first).await.code(0);
    let third = finish(&w, third).await.code(0);
    assert!(third.stdout.contains("No changes."), "{}", third.stdout);

    assert!(w.emu.stats().creates_per_company_name.values().all(|&n| n == 1), "no company twice");
    assert_eq!(w.emu.snapshot().companies.len(), 3);
    assert_eq!(w.token_files().len(), 60);
    w.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_quiet_applies_leave_the_token_directory_byte_identical_and_plans_take_no_lock() {
    let w = slow_world(0).await;
    let manifest = many_users(&w, 4);
    w.apply(&["--auto-approve", &manifest]).await.code(0);
    let contents = |dir: &Path| -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap())
            })
            .collect();
        files.sort();
        files
    };
    let before = contents(&w.store_dir());
    assert!(before.iter().any(|(n, bytes)| n == ".ozform.lock" && bytes.is_empty()), "{before:?}");
    for _ in 0..2 {
        let run = w.apply(&["--auto-approve", &manifest]).await.code(0);
        assert!(run.stdout.contains("No changes."), "{}", run.stdout);
    }
    assert_eq!(contents(&w.store_dir()), before);

    // A plan runs while an apply holds the lock.
    let store = DirStore::new(w.token_dir(), Installation::of_api(&w.emu.url()));
    let lock = store.lock(Duration::ZERO).unwrap();
    w.plan(&["--detailed-exitcode", &manifest]).await.code(0);
    let refused = w.apply(&["--auto-approve", &manifest]).await.code(1);
    assert!(flat(&refused.stderr).contains(&format!("pid {} on ", std::process::id())), "{}", refused.stderr);
    drop(lock);
    w.assert_no_secrets();
}

// ---------------------------------------------------------------------------------------------
// The directory store: recovery and hostile directories (issue #14).

use ozform::secret::Secret;
use ozform::token_store::{Installation, Recovery, TokenRecord, TokenStoreError};

fn record(email: &str, token: &str, issued_at: &str) -> TokenRecord {
    TokenRecord {
        email: email.into(),
        user_id: format!("user-of-{email}"),
        token_id: format!("id-{token}"),
        access_token: Secret::new(token.to_string()),
        expire_date: 2_000_000_000.0,
        api_url: "http://127.0.0.1:9".into(),
        issued_at: issued_at.into(),
        password: None,
        company: None,
    }
}

/// The installation of the API these records name (`http://127.0.0.1:9`).
fn installation() -> Installation {
    Installation::of_api("http://127.0.0.1:9")
}

/// The JSON of a token file, as a killed store leaves it in its temp file.
fn record_json(email: &str, token: &str, issued_at: &str) -> String {
    serde_json::json!({
        "email": email, "user_id": format!("user-of-{email}"), "token_id": format!("id-{token}"),
        "access_token": token, "expire_date": 2_000_000_000.0, "api_url": "http://127.0.0.1:9",
        "issued_at": issued_at,
    })
    .to_string()
}

fn token_of(store: &DirStore, email: &str) -> String {
    store.get(email).unwrap().unwrap().access_token.expose().to_string()
}

#[test]
fn recovery_puts_complete_newer_temp_records_in_place_and_removes_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let store = DirStore::new(tmp.path().join("tokens"), installation());
    let dir = store.dir().to_path_buf();
    store.store(&record("a@x.example", "stored-a", "2026-11-30T06:00:00Z")).unwrap();
    store.store(&record("b@x.example", "stored-b", "2026-11-30T07:00:00Z")).unwrap();
    let leave = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
    // Newer than the stored one: put in place.
    leave(".a@x.example.json.tmp-0001", &record_json("a@x.example", "temp-a", "2026-11-30T06:30:00Z"));
    // Older than the stored one: removed.
    leave(".b@x.example.json.tmp-0002", &record_json("b@x.example", "temp-b", "2026-11-30T06:30:00Z"));
    // Nothing stored yet: put in place.
    leave(".c@x.example.json.tmp-0003", &record_json("c@x.example", "temp-c", "2026-11-30T06:30:00Z"));
    // Cut short while writing, naming another email, a probe of `check`: removed.
    let whole = record_json("d@x.example", "temp-d", "2026-11-30T06:30:00Z");
    leave(".d@x.example.json.tmp-0004", &whole[..whole.len() / 2]);
    leave(".e@x.example.json.tmp-0005", &record_json("f@x.example", "temp-f", "2026-11-30T06:30:00Z"));
    leave(".ozform-probe-0006", "{}\n");

    assert_eq!(store.recover().unwrap(), Recovery { recovered: 2, removed: 4, migrated: 0 });
    assert_eq!(
        (token_of(&store, "a@x.example"), token_of(&store, "b@x.example"), token_of(&store, "c@x.example")),
        ("temp-a".into(), "stored-b".into(), "temp-c".into())
    );
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["a@x.example.json", "b@x.example.json", "c@x.example.json"]);
    assert_eq!(std::fs::metadata(dir.join("c@x.example.json")).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(store.recover().unwrap(), Recovery::default(), "nothing left to do");
}

#[test]
fn entries_that_are_not_regular_files_are_ignored_and_symlinks_never_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let store = DirStore::new(tmp.path().join("tokens"), installation());
    let dir = store.dir().to_path_buf();
    store.store(&record("a@x.example", "stored-a", "2026-11-30T06:00:00Z")).unwrap();
    // A token planted outside, linked in under a token file's name and over a stored one.
    let outside = tmp.path().join("planted.json");
    std::fs::write(&outside, record_json("evil@x.example", "planted", "2026-11-30T06:00:00Z")).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("evil@x.example.json")).unwrap();
    std::fs::create_dir(dir.join("dir@x.example.json")).unwrap();
    let fifo = std::process::Command::new("mkfifo").arg(dir.join("fifo@x.example.json")).status().unwrap();
    assert!(fifo.success());

    let listed = store.list().unwrap();
    assert_eq!(listed.keys().collect::<Vec<_>>(), ["a@x.example"]);
    assert!(store.get("evil@x.example").unwrap().is_none());
    assert!(store.get("fifo@x.example").unwrap().is_none());

    // A symlink in place of a stored token file is not read through either.
    std::fs::remove_file(dir.join("a@x.example.json")).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("a@x.example.json")).unwrap();
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn a_token_directory_others_may_write_to_is_refused_unless_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let store = DirStore::new(tmp.path().join("tokens"), installation());
    let dir = store.dir().to_path_buf();
    store.check().unwrap();
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
    for (mode, who) in [(0o777, "everyone"), (0o770, "its group")] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
        for err in
            [store.list().unwrap_err(), store.check().unwrap_err(), store.lock(Duration::ZERO).unwrap_err()]
        {
            assert!(matches!(err, TokenStoreError::SharedDir { .. }), "{err:?}");
            assert!(err.to_string().contains(who), "{err}");
        }
        let allowed = DirStore::new(tmp.path().join("tokens"), installation()).allow_shared_dir(true);
        allowed.list().unwrap();
        allowed.check().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_refuses_a_shared_token_directory_before_any_request_and_says_how_to_fix_it() {
    let w = slow_world(0).await;
    let manifest = many_users(&w, 3);
    std::fs::create_dir(w.token_dir()).unwrap();
    std::fs::set_permissions(w.token_dir(), std::fs::Permissions::from_mode(0o777)).unwrap();
    w.emu.reset_stats();
    let run = w.apply(&["--auto-approve", &manifest]).await.code(1);
    let message = flat(&run.stderr);
    assert!(message.contains("writable by everyone") && message.contains("chmod go-w"), "{message}");
    assert_eq!(w.emu.stats().total_requests, 0, "refused before the first request");
    w.apply(&["--auto-approve", "--allow-shared-token-dir", &manifest]).await.code(0);
    assert_eq!(w.token_files().len(), 3);
    w.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_says_how_many_tokens_it_recovered_from_a_killed_run() {
    let w = slow_world(0).await;
    let manifest = many_users(&w, 3);
    w.apply(&["--auto-approve", &manifest]).await.code(0);
    // As if a rotation was killed between fsync and rename: the same token, issued later.
    let (name, mut token) = w.token_files().into_iter().next().unwrap();
    token["issued_at"] = "2099-01-01T00:00:00Z".into();
    std::fs::write(w.store_dir().join(format!(".{name}.tmp-00c0ffee")), token.to_string()).unwrap();
    std::fs::write(w.store_dir().join(".x@pipeline.example.json.tmp-00000001"), "{\"email\": \"x@").unwrap();

    let run = w.apply(&["--auto-approve", &manifest]).await.code(0);
    assert!(
        run.stderr.contains("recovered 1 token a killed run had issued but not yet stored, and removed 1"),
        "{}",
        run.stderr
    );
    assert_eq!(w.token_files()[&name]["issued_at"], "2099-01-01T00:00:00Z");
    assert_eq!(temp_files(&w.store_dir()), Vec::<String>::new());
    w.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_applies_on_two_token_directories_put_users_in_at_most_one_of_twins() {
    let w = slow_world(20).await;
    let manifest = many_users(&w, 30);
    let p = parallelism();
    let other_dir = w.path("other-tokens");
    let other_dir = other_dir.to_str().unwrap();
    let runs = [
        Running::start(w.command("apply", &["--auto-approve", "--parallelism", &p, &manifest])),
        Running::start(w.cli().args([
            "apply",
            "--auto-approve",
            "--parallelism",
            &p,
            &manifest,
            "--token-dir",
            other_dir,
        ])),
    ];
    let mut printed = String::new();
    for run in runs {
        let run = finish(&w, run).await;
        assert!(run.code == 0 || run.code == 1, "{run:?}");
        printed.push_str(&flat(&run.stderr));
    }
    let snapshot = w.emu.snapshot();
    let mut twins = 0;
    for name in ["Pipeline 0", "Pipeline 1", "Pipeline 2"] {
        let ids: Vec<&str> =
            snapshot.companies.iter().filter(|c| c.name == name).map(|c| c.company_id.as_str()).collect();
        if ids.len() < 2 {
            continue;
        }
        twins += 1;
        let holding = ids
            .iter()
            .filter(|id| snapshot.users.iter().any(|u| u.company_id.as_deref() == Some(**id)))
            .count();
        assert!(holding <= 1, "{name}: {holding} of the twins hold users");
        // The run that found them named both ids and the likely cause.
        assert!(ids.iter().all(|id| printed.contains(id)), "{printed}");
        assert!(printed.contains("another apply probably ran at the same time"), "{printed}");
    }
    if twins > 0 {
        let plan = w.plan(&[&manifest]).await.code(1);
        assert!(
            flat(&plan.stdout).contains("most likely two `ozform apply` runs created it"),
            "{}",
            plan.stdout
        );
    }
    w.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_while_waiting_for_the_lock_exits_at_once_with_its_code() {
    let w = slow_world(0).await;
    let manifest = many_users(&w, 3);
    let held = DirStore::new(w.token_dir(), Installation::of_api(&w.emu.url())).lock(Duration::ZERO).unwrap();
    let waiting = spawn_apply(&w, &manifest, &["--lock-timeout", "1h"]);
    // Observable progress: the waiting apply has the lock file open (Linux `/proc`).
    let fds = format!("/proc/{}/fd", waiting.id());
    let has_lock_open = || {
        std::fs::read_dir(&fds).is_ok_and(|fds| {
            fds.filter_map(Result::ok)
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|p| p.ends_with(".ozform.lock")))
        })
    };
    let opened = async {
        while !has_lock_open() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), opened)
        .await
        .expect("the apply never opened the lock file");
    send(&waiting, "INT");
    finish(&w, waiting).await.code(130);
    assert_eq!(w.emu.stats().mutating_requests, 0);
    drop(held);
    w.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_and_export_stop_at_once_on_a_signal_with_its_code() {
    // Slow enough that each command is still reading when the signal comes.
    let w = slow_world(500).await;
    let manifest = many_users(&w, 3);
    for (command, signal, code) in [("plan", "INT", 130), ("export", "TERM", 143)] {
        w.emu.reset_stats();
        let args: &[&str] = if command == "plan" { &[&manifest] } else { &[] };
        let cli = if command == "plan" { w.command("plan", args) } else { w.cli().args(["export"]) };
        let running = Running::start(cli);
        wait_until(&w, "a request was sent", |_| w.emu.stats().total_requests >= 1).await;
        send(&running, signal);
        let run = finish(&w, running).await.code(code);
        assert!(!run.stdout.contains("Plan:"), "{}", run.stdout);
    }
    w.assert_no_secrets();
}

// ---------------------------------------------------------------------------------------------
// Output never kills the work: `ozform apply … 2>&1 | head -1`.

/// Both streams closed after their first line (as `2>&1 | head -1` does to a pipeline's log):
/// the apply still finishes, stores its tokens and exits with its own status, never 101.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_whose_output_is_closed_after_one_line_finishes_and_never_panics() {
    use common::Reader;
    let w = World::start(ApiVersion::V6).await;
    let cli = w.command("apply", &["--auto-approve", common::world::BASIC]);
    let run =
        tokio::task::spawn_blocking(move || cli.run_closing(Reader::OneLine, Reader::OneLine)).await.unwrap();
    assert!(matches!(run.code, 0 | 1), "exit {} (101 is a panic)\n{}", run.code, run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    assert_eq!(w.token_files().len(), common::world::BASIC_TOKEN_USERS.len(), "every token was stored");
    w.assert_converged(&[common::world::BASIC]).await;
    w.assert_no_secrets();
}

/// With `--log-format json` the final error is one JSON line too, with a timestamp and a level,
/// so a log pipeline parses every line of stderr.
#[test]
fn with_log_format_json_the_final_error_is_a_json_line() {
    let run = Cli::new().args(["--log-format", "json", "validate", "no/such/manifests"]).run().code(1);
    let lines: Vec<Value> = run.stderr.lines().map(|l| serde_json::from_str(l).expect(l)).collect();
    let last = lines.last().expect("an error line");
    assert_eq!(last["level"], "ERROR", "{last}");
    assert!(humantime::parse_rfc3339(last["timestamp"].as_str().unwrap()).is_ok(), "{last}");
    assert_eq!(last["code"], "ozform::manifest::invalid", "{last}");
    assert!(last["related"].to_string().contains("no/such/manifests"), "{last}");
}
