//! `ozform reconcile` (issue #23), through the real binary against the emulator: drift made
//! behind its back is repaired within two cycles and the metrics tell it (parsed by the
//! Prometheus Python client's own parser, scanned for secrets, emails and ids); invalid
//! manifests fail cycles without applying anything until `/readyz` says so, and the next valid
//! ones recover; SIGTERM mid-cycle exits 143 with every issued token stored; `--once` and
//! `--metrics-file`; and a thousand cycles with drift in each do not grow its memory. With a
//! project file (issue #24), two emulators (API 5 and API 6): drift in both is repaired within
//! two cycles, an installation down fails its part while the other is still repaired, the
//! metrics carry each installation's label, and `--once` exits with the most severe code.
//!
//! Nothing waits on a clock: each step waits (polling, with a hang guard) for what the run
//! printed, what the emulator holds or what the metrics server answers.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]
// Metric values are counts far below 2^52, exact in an `f64`: compared exactly.
#![allow(clippy::float_cmp, clippy::cast_precision_loss)]

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::installations::{DOWN, Project};
use common::world::{BASIC, World, canary};
use common::{Run, python_tools::python_tool, root};
use ozform::emulator::{EmulatorConfig, Faults};
use ozform::model::ApiVersion;
use serde_json::Value;

/// The hang guard of every wait: far longer than any step takes, so that only a hang trips it.
const HANG_GUARD: Duration = Duration::from_secs(120);

/// A `reconcile` running in the background, its output read as it comes (a full pipe would
/// stall it).
struct Loop {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    /// The summary line of each cycle so far, by number (kept as they come: a thousand cycles
    /// are not parsed again at every poll).
    cycles: Arc<Mutex<BTreeMap<u64, String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Loop {
    fn start(cli: common::Cli) -> Self {
        type Cycles = Arc<Mutex<BTreeMap<u64, String>>>;
        fn drain(
            from: impl std::io::Read + Send + 'static,
            into: Arc<Mutex<String>>,
            cycles: Option<Cycles>,
        ) -> std::thread::JoinHandle<()> {
            std::thread::spawn(move || {
                use std::io::BufRead as _;
                let mut reader = std::io::BufReader::new(from);
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if let Some(cycles) = &cycles {
                        cycles.lock().unwrap().extend(summaries(&line));
                    }
                    into.lock().unwrap().push_str(&line);
                    line.clear();
                }
            })
        }
        let mut child = cli.spawn();
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let cycles = Cycles::default();
        let readers = vec![
            drain(child.stdout.take().unwrap(), Arc::clone(&stdout), None),
            drain(child.stderr.take().unwrap(), Arc::clone(&stderr), Some(Arc::clone(&cycles))),
        ];
        Self { child, stdout, stderr, cycles, readers }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The summary lines of the cycles so far, by number.
    fn cycles(&self) -> BTreeMap<u64, String> {
        self.cycles.lock().unwrap().clone()
    }

    /// The number of the last cycle that ended.
    fn last_cycle(&self) -> u64 {
        self.cycles.lock().unwrap().keys().next_back().copied().unwrap_or(0)
    }

    /// Wait until cycle `n` has ended, and give its summary line.
    async fn cycle(&self, n: u64) -> String {
        self.until(&format!("cycle {n} ends"), || self.cycles.lock().unwrap().get(&n).cloned()).await
    }

    /// Wait until `check` gives something (polling, never a fixed sleep; a hang guard, not a
    /// timing assert).
    async fn until<T>(&self, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
        let waiting = async {
            loop {
                if let Some(found) = check() {
                    return found;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(HANG_GUARD, waiting)
            .await
            .unwrap_or_else(|_elapsed| panic!("never: {what}\n--- stderr\n{}", self.stderr()))
    }

    /// The metrics server's base URL, from the status line the loop prints.
    async fn metrics_url(&self) -> String {
        self.until("the metrics server's address is said", || {
            let stderr = self.stderr();
            let line = stderr.lines().find(|l| l.starts_with("serving metrics on http://"))?;
            let url = line.trim_start_matches("serving metrics on ").split_whitespace().next()?;
            Some(url.trim_end_matches("/metrics").to_string())
        })
        .await
    }

    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait for the run to end; keep what it printed for the world's canary scan.
    async fn finish(self, w: &World) -> Run {
        let run = self.end().await;
        w.printed.lock().unwrap().push((run.stdout.clone(), run.stderr.clone()));
        w.harvest_tokens();
        run
    }

    /// Wait for the run to end, and give what it printed.
    async fn end(self) -> Run {
        let Loop { mut child, stdout, stderr, readers, .. } = self;
        let status = tokio::task::spawn_blocking(move || {
            let status = child.wait().unwrap();
            for reader in readers {
                reader.join().unwrap();
            }
            status
        })
        .await
        .unwrap();
        Run {
            code: status.code().unwrap_or(-1),
            stdout: stdout.lock().unwrap().clone(),
            stderr: stderr.lock().unwrap().clone(),
        }
    }
}

/// The summary lines (`cycle N result in …`) of a run's stderr, by cycle number.
fn summaries(stderr: &str) -> BTreeMap<u64, String> {
    stderr
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("cycle ")?;
            let n = rest.split(' ').next()?.parse().ok()?;
            Some((n, line.to_string()))
        })
        .collect()
}

/// GET `url`, as (status, body).
async fn get(url: &str) -> (u16, String) {
    // reqwest is built without a default crypto provider; plain HTTP still wants one set.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let answer = reqwest::Client::builder().no_proxy().build().unwrap().get(url).send().await.unwrap();
    (answer.status().as_u16(), answer.text().await.unwrap())
}

/// One sample of a metric family, as the Prometheus Python client's parser read it.
#[derive(Debug, Clone)]
struct Sample {
    family: String,
    kind: String,
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parse metrics text with the Prometheus Python client's parser (as a scraper would); fails
/// the test on anything it refuses.
fn parse_metrics(text: &str) -> Vec<Sample> {
    use std::io::Write as _;
    let script = "import json, sys\n\
        from prometheus_client.parser import text_string_to_metric_families\n\
        out = []\n\
        for f in text_string_to_metric_families(sys.stdin.read()):\n\
        \x20   for s in f.samples:\n\
        \x20       out.append({'family': f.name, 'type': f.type, 'name': s.name, 'labels': s.labels, 'value': s.value})\n\
        print(json.dumps(out))\n";
    let mut child = std::process::Command::new(python_tool("python"))
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the parser refused the metrics:\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let samples: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    samples
        .into_iter()
        .map(|s| Sample {
            family: s["family"].as_str().unwrap().into(),
            kind: s["type"].as_str().unwrap().into(),
            name: s["name"].as_str().unwrap().into(),
            labels: serde_json::from_value(s["labels"].clone()).unwrap(),
            value: s["value"].as_f64().unwrap_or(f64::NAN),
        })
        .collect()
}

/// The value of the sample `name` with exactly these labels (0 when absent).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let want: BTreeMap<String, String> = labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
    samples.iter().find(|s| s.name == name && s.labels == want).map_or(0.0, |s| s.value)
}

/// No secret, no email and no id of the world in `text`.
fn assert_no_secret_email_or_id(w: &World, what: &str, text: &str) {
    w.harvest_tokens();
    let snapshot = w.emu.snapshot();
    let mut forbidden: Vec<(String, &str)> = vec![(w.admin_password.clone(), "the admin password")];
    forbidden.extend(w.passwords.values().map(|p| (p.clone(), "a password")));
    forbidden.extend(w.tokens.lock().unwrap().iter().map(|t| (t.clone(), "a token")));
    forbidden.extend(snapshot.users.iter().map(|u| (u.email.clone(), "an email")));
    forbidden.extend(snapshot.users.iter().map(|u| (u.user_id.clone(), "a user id")));
    forbidden.extend(snapshot.companies.iter().map(|c| (c.company_id.clone(), "a company id")));
    forbidden.extend(snapshot.service_tokens.iter().map(|t| (t.token_id.clone(), "a token id")));
    for (value, kind) in forbidden {
        assert!(!text.contains(&value), "{what} shows {kind}:\n{text}");
    }
    assert!(!text.contains('@'), "{what} shows something like an email:\n{text}");
}

/// The token file of `email` in the world's token directory.
fn token_file(w: &World, email: &str) -> std::path::PathBuf {
    let files = common::world::files_under(&w.token_dir());
    files
        .into_iter()
        .find(|f| f.file_name().is_some_and(|n| n.to_string_lossy() == format!("{email}.json")))
        .unwrap_or_else(|| panic!("no token file of {email}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_behind_its_back_is_repaired_within_two_cycles_and_the_metrics_tell_it() {
    let w = World::start(ApiVersion::V6).await;
    let run =
        Loop::start(w.command("reconcile", &["--interval", "1s", "--metrics-listen", "127.0.0.1:0", BASIC]));
    let base = run.metrics_url().await;
    let first = run.cycle(1).await;
    assert!(first.starts_with("cycle 1 success"), "{first}");
    assert!(first.contains("applied 5 create, 2 issue"), "{first}");
    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
    // Ready from the first successful cycle on (its metrics are kept before its summary is said).
    assert_eq!(get(&format!("{base}/readyz")).await.0, 200);

    // Drift, made behind ozform's back: a declared user deactivated, a permission changed, a
    // stored token deleted.
    let token = token_file(&w, "svc-claims@globex.example");
    let old_token = std::fs::read_to_string(&token).unwrap();
    let before = run.last_cycle();
    assert!(w.emu.update_user_raw("svc-web@acme.example", |u| u.is_active = false));
    assert!(w.emu.update_user_raw("svc-batch@acme.example", |u| u.permissions.collection = true));
    std::fs::remove_file(&token).unwrap();

    // The cycle running now may have read the installation before the drift; the next one
    // cannot have.
    let repaired = run.cycle(before + 2).await;
    assert!(w.user("svc-web@acme.example").is_active, "the user is active again by {repaired}");
    assert!(
        !w.user("svc-batch@acme.example").permissions.collection,
        "the permission is set back by {repaired}"
    );
    let new_token = std::fs::read_to_string(&token).expect("the token is issued and stored again");
    assert_ne!(new_token, old_token);
    let cycles = run.cycles();
    let applied: Vec<&String> = cycles.range(before + 1..=before + 2).map(|(_, l)| l).collect();
    assert!(
        applied.iter().any(|l| l.contains("applied 2 update, 1 issue")),
        "one cycle repaired all three:\n{applied:?}"
    );

    let (status, text) = get(&format!("{base}/metrics")).await;
    assert_eq!(status, 200);
    let samples = parse_metrics(&text);
    let cycles_ok = value(&samples, "ozform_reconcile_cycles_total", &[("result", "success")]);
    assert!(cycles_ok >= (before + 2) as f64, "{cycles_ok} successful cycles:\n{text}");
    assert_eq!(value(&samples, "ozform_reconcile_cycles_total", &[("result", "failure")]), 0.0);
    assert!(value(&samples, "ozform_reconcile_last_success_timestamp_seconds", &[]) > 1.7e9);
    assert!(value(&samples, "ozform_reconcile_cycle_duration_seconds_count", &[]) >= cycles_ok);
    assert_eq!(value(&samples, "ozform_apply_steps_total", &[("kind", "company"), ("result", "done")]), 2.0);
    assert_eq!(
        value(&samples, "ozform_apply_steps_total", &[("kind", "service_user"), ("result", "done")]),
        5.0
    );
    assert_eq!(value(&samples, "ozform_apply_steps_total", &[("kind", "token"), ("result", "done")]), 3.0);
    assert_eq!(value(&samples, "ozform_tokens_expiring", &[("within", "30d")]), 0.0);
    assert_eq!(value(&samples, "ozform_tokens_expiring", &[("within", "rotate_before")]), 0.0);
    for action in ["create", "update", "issue", "deactivate", "delete"] {
        assert_eq!(
            value(&samples, "ozform_drift_changes", &[("action", action)]),
            0.0,
            "the last plan: {action}"
        );
    }
    let route =
        |r: &str, s: &str| value(&samples, "ozform_oz_requests_total", &[("route", r), ("status", s)]);
    assert_eq!(route("/api/authorize/auth", "200"), 1.0, "one login for the whole loop");
    assert!(route("/api/users/{user_id}", "200") >= 2.0, "the two updates");
    assert!(route("/api/authorize/service_token/{user_id}", "200") >= 3.0);
    assert!(
        value(&samples, "ozform_oz_request_duration_seconds_count", &[("route", "/api/companies/")])
            >= cycles_ok
    );
    // `--parallelism auto`, the default: the client's adaptive limit, within 1 and 32.
    let limit = value(&samples, "ozform_oz_concurrency_limit", &[]);
    assert!((1.0..=32.0).contains(&limit), "ozform_oz_concurrency_limit {limit}");
    let routes: BTreeSet<&str> =
        samples.iter().filter_map(|s| s.labels.get("route").map(String::as_str)).collect();
    let templates: BTreeSet<&str> = ozform::oz::Route::ALL.iter().map(|r| r.as_str()).collect();
    assert!(routes.is_subset(&templates), "{routes:?}");
    let families: BTreeSet<(&str, &str)> =
        samples.iter().map(|s| (s.family.as_str(), s.kind.as_str())).collect();
    for family in [
        ("ozform_reconcile_cycles", "counter"),
        ("ozform_reconcile_cycle_duration_seconds", "histogram"),
        ("ozform_oz_request_duration_seconds", "histogram"),
        ("ozform_apply_steps", "counter"),
        ("ozform_oz_concurrency_limit", "gauge"),
    ] {
        assert!(families.contains(&family), "{family:?} in {families:?}");
    }
    assert_no_secret_email_or_id(&w, "the metrics", &text);

    run.signal("TERM");
    let run = run.finish(&w).await.code(143);
    assert!(
        run.stdout.contains("~ service_user/svc-web@acme.example"),
        "the drift's plan is shown:\n{}",
        run.stdout
    );
    w.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_manifests_fail_cycles_without_applying_until_readyz_says_so_and_valid_ones_recover() {
    let w = World::start(ApiVersion::V6).await;
    let manifests = w.path("manifests");
    std::fs::create_dir(&manifests).unwrap();
    for name in ["companies.yaml", "service-users.yaml"] {
        std::fs::copy(root().join(BASIC).join(name), manifests.join(name)).unwrap();
    }
    let dir = manifests.to_str().unwrap().to_string();
    let run =
        Loop::start(w.command("reconcile", &["--interval", "1s", "--metrics-listen", "127.0.0.1:0", &dir]));
    let base = run.metrics_url().await;
    assert!(run.cycle(1).await.starts_with("cycle 1 success"));
    assert_eq!(get(&format!("{base}/readyz")).await.0, 200);

    // Drift, then manifests that cannot be read: no cycle may repair the drift while they are.
    assert!(w.emu.update_user_raw("svc-web@acme.example", |u| u.is_active = false));
    let good = std::fs::read_to_string(manifests.join("service-users.yaml")).unwrap();
    std::fs::write(manifests.join("service-users.yaml"), format!("{good}\n  - email: [not, an, email]\n"))
        .unwrap();
    let failed =
        run.until("a cycle fails", || run.cycles().into_values().find(|l| l.contains(" failure in "))).await;
    assert!(failed.contains("applied none"), "{failed}");
    assert!(
        run.stderr().contains("service-users.yaml"),
        "the cycle's error names the file:\n{}",
        run.stderr()
    );
    let (_, text) = get(&format!("{base}/metrics")).await;
    assert!(value(&parse_metrics(&text), "ozform_reconcile_cycles_total", &[("result", "failure")]) >= 1.0);

    // Not ready once two intervals pass without a successful cycle; alive all along; and
    // nothing applied meanwhile.
    let url = format!("{base}/readyz");
    let waiting = async {
        loop {
            assert!(
                !w.user("svc-web@acme.example").is_active,
                "nothing is applied while the manifests are invalid"
            );
            if get(&url).await.0 == 503 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(HANG_GUARD, waiting).await.expect("/readyz turns 503");
    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
    assert!(!w.user("svc-web@acme.example").is_active, "nothing was applied");

    // Valid manifests again: the next cycle succeeds, repairs, and the loop is ready again.
    std::fs::write(manifests.join("service-users.yaml"), good).unwrap();
    let since = run.last_cycle();
    let recovered = run
        .until("a cycle succeeds again", || {
            run.cycles().range(since + 1..).map(|(_, l)| l.clone()).find(|l| l.contains(" success in "))
        })
        .await;
    assert!(recovered.contains("applied 1 update"), "{recovered}");
    assert!(w.user("svc-web@acme.example").is_active);
    assert_eq!(get(&format!("{base}/readyz")).await.0, 200, "ready again");
    run.signal("TERM");
    run.finish(&w).await.code(143);
    w.assert_no_secrets();
}

const PASSWORD_VAR: &str = "RECONCILE_SERVICE_PASSWORD";

/// A world whose emulator answers each request after `latency_ms`, with a canary password for
/// generated users.
async fn slow_world(latency_ms: u64) -> World {
    let mut config = EmulatorConfig::new(ApiVersion::V6);
    config.faults = Faults { latency_ms, ..Faults::default() };
    let mut w = World::with(config).await;
    w.passwords.insert(PASSWORD_VAR.into(), canary("pw"));
    w
}

/// `users` service users with tokens in one company, as one manifest in the world's dir.
fn many_users(w: &World, users: usize) -> String {
    let mut yaml = String::from("companies:\n  - name: Reconciled\nservice_users:\n");
    for u in 0..users {
        writeln!(
            yaml,
            "  - {{email: svc-{u:04}@reconcile.example, company: Reconciled, first_name: Svc, last_name: U{u}, \
             password: {{env: {PASSWORD_VAR}}}, token: {{issue: true}}}}"
        )
        .unwrap();
    }
    let path = w.path("many.yaml");
    std::fs::write(&path, yaml).unwrap();
    path.to_str().unwrap().to_string()
}

/// The token ids in the token directory (files and complete temp records: both durable).
fn stored_token_ids(dir: &Path) -> BTreeSet<String> {
    common::world::files_under(dir)
        .into_iter()
        .filter_map(|f| std::fs::read(f).ok())
        .filter_map(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .filter_map(|v| v["token_id"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_cycle_exits_143_with_every_issued_token_stored() {
    let w = slow_world(15).await;
    let manifest = many_users(&w, 60);
    let run = Loop::start(w.command("reconcile", &["--interval", "1s", "--parallelism", "4", &manifest]));
    run.until("the first cycle is issuing tokens", || {
        (w.emu.snapshot().service_tokens.len() >= 10).then_some(())
    })
    .await;
    run.signal("TERM");
    let run = run.finish(&w).await.code(143);
    let summary = summaries(&run.stderr).remove(&1).unwrap_or_else(|| panic!("no summary:\n{}", run.stderr));
    assert!(summary.contains("interrupted"), "{summary}");
    let issued: BTreeSet<String> = w.emu.snapshot().service_tokens.into_iter().map(|t| t.token_id).collect();
    assert!(!issued.is_empty() && issued.len() < 60, "stopped mid-cycle: {} issued", issued.len());
    let stored = stored_token_ids(&w.token_dir());
    assert!(
        issued.is_subset(&stored),
        "issued but not stored: {:?}",
        issued.difference(&stored).collect::<Vec<_>>()
    );
    assert!(summaries(&run.stderr).len() == 1, "no cycle after the signal:\n{}", run.stderr);
    w.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_runs_one_cycle_with_apply_s_exit_codes_and_writes_its_metrics_file() {
    let w = World::start(ApiVersion::V5).await;
    let metrics = w.path("ozform.prom");
    let file = metrics.to_str().unwrap().to_string();
    let run = w.run(w.command("reconcile", &["--once", "--metrics-file", &file, BASIC])).await.code(0);
    let summaries = summaries(&run.stderr);
    assert_eq!(summaries.len(), 1, "{}", run.stderr);
    assert!(summaries[&1].starts_with("cycle 1 success"), "{}", summaries[&1]);
    let text = std::fs::read_to_string(&metrics).unwrap();
    let samples = parse_metrics(&text);
    assert_eq!(value(&samples, "ozform_reconcile_cycles_total", &[("result", "success")]), 1.0);
    assert_eq!(value(&samples, "ozform_apply_steps_total", &[("kind", "token"), ("result", "done")]), 2.0);
    assert_no_secret_email_or_id(&w, "the metrics file", &text);

    // Nothing to do: 0 again. Invalid manifests: 1, with the located error.
    w.run(w.command("reconcile", &["--once", BASIC])).await.code(0);
    let bad = w.path("bad.yaml");
    std::fs::write(&bad, "companies:\n  - name: [a list]\n").unwrap();
    let run = w.run(w.command("reconcile", &["--once", bad.to_str().unwrap()])).await.code(1);
    assert!(run.stderr.contains("bad.yaml"), "{}", run.stderr);
    assert!(run.stderr.contains("cycle 1 failure"), "{}", run.stderr);
    // `--metrics-listen` serves a loop: refused with `--once`.
    let run = w.run(w.command("reconcile", &["--once", "--metrics-listen", "0", BASIC])).await.code(1);
    assert!(run.stderr.contains("--metrics-file"), "{}", run.stderr);
    w.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_and_apply_write_the_same_metrics_once_with_metrics_file() {
    let w = World::start(ApiVersion::V6).await;
    let prom = w.path("plan.prom");
    w.plan(&["--metrics-file", prom.to_str().unwrap(), BASIC]).await.code(0);
    let text = std::fs::read_to_string(&prom).unwrap();
    let samples = parse_metrics(&text);
    assert_eq!(value(&samples, "ozform_drift_changes", &[("action", "create")]), 5.0);
    assert_eq!(value(&samples, "ozform_drift_changes", &[("action", "issue")]), 2.0);
    assert!(
        value(&samples, "ozform_oz_requests_total", &[("route", "/api/users/"), ("status", "200")]) >= 1.0
    );
    assert!(!text.contains("ozform_reconcile_"), "a one-shot run has no loop families:\n{text}");

    let prom = w.path("apply.prom");
    w.apply(&["--auto-approve", "--metrics-file", prom.to_str().unwrap(), BASIC]).await.code(0);
    let text = std::fs::read_to_string(&prom).unwrap();
    let samples = parse_metrics(&text);
    assert_eq!(
        value(&samples, "ozform_apply_steps_total", &[("kind", "service_user"), ("result", "done")]),
        3.0
    );
    assert_eq!(value(&samples, "ozform_tokens_expiring", &[("within", "30d")]), 0.0);
    assert!(
        value(
            &samples,
            "ozform_oz_requests_total",
            &[("route", "/api/authorize/service_token/{user_id}"), ("status", "200")]
        ) >= 2.0
    );
    assert_no_secret_email_or_id(&w, "the metrics file", &text);
    w.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removals_are_held_back_without_allow_removals_and_applied_with_it() {
    let w = World::start(ApiVersion::V6).await;
    w.apply_basic().await;
    // An undeclared live service user in a company that prunes.
    let pruning = w.path("pruning");
    std::fs::create_dir(&pruning).unwrap();
    let companies = std::fs::read_to_string(root().join(BASIC).join("companies.yaml")).unwrap();
    std::fs::write(
        pruning.join("companies.yaml"),
        companies.replace("  - name: Globex Insurance", "  - name: Globex Insurance\n    prune: deactivate"),
    )
    .unwrap();
    let users = std::fs::read_to_string(root().join(BASIC).join("service-users.yaml")).unwrap();
    let kept = users.split("\n---\n").next().unwrap();
    std::fs::write(pruning.join("service-users.yaml"), kept).unwrap();
    let dir = pruning.to_str().unwrap();

    let run = w.run(w.command("reconcile", &["--once", dir])).await.code(0);
    assert!(
        run.stderr.contains("1 removal held back, not applied: pass `--allow-removals`"),
        "{}",
        run.stderr
    );
    assert!(summaries(&run.stderr)[&1].contains("1 removal held back"), "{}", run.stderr);
    assert!(w.user("svc-claims@globex.example").is_active, "held back");

    // With `--allow-removals`, still within the blast-radius guard: every user of the company
    // would go, so it holds them back and `--once` fails as `apply` would.
    let run = w.run(w.command("reconcile", &["--once", "--allow-removals", dir])).await.code(1);
    assert!(run.stderr.contains("ozform::plan::mass_removal"), "{}", run.stderr);
    assert!(summaries(&run.stderr)[&1].starts_with("cycle 1 partial"), "{}", run.stderr);
    assert!(w.user("svc-claims@globex.example").is_active, "held back by the guard");

    let run =
        w.run(w.command("reconcile", &["--once", "--allow-removals", "--allow-mass-removal", dir])).await;
    run.code(0);
    assert!(!w.user("svc-claims@globex.example").is_active, "deactivated with --allow-removals");
    w.assert_no_secrets();
}

/// `VmRSS` of a process, in bytes, from `/proc`.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

// The figures the issue asks for, shown with `--nocapture`.
#[allow(clippy::print_stderr)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_cycles_with_drift_in_each_do_not_grow_its_memory() {
    const MIB: u64 = 1 << 20;
    let w = World::start(ApiVersion::V6).await;
    // Drift in every cycle without a race: a `--rotate-before` longer than the emulator's token
    // lifetime makes each stored token due, so every cycle issues and stores both tokens (new
    // secrets, released when the cycle ends); and each summary seen, a user is deactivated
    // behind its back (repaired by the next cycle or the one after).
    let run = Loop::start(w.command(
        "reconcile",
        &[
            "--interval",
            "1ms",
            "--jitter",
            "0%",
            "--rotate-before",
            "6years",
            "--metrics-listen",
            "127.0.0.1:0",
            BASIC,
        ],
    ));
    let mut seen = 0;
    let mut at_100 = 0;
    while seen < 1000 {
        let next = seen + 1;
        let line = run.cycle(next).await;
        assert!(line.contains(" success in "), "{line}");
        assert!(line.contains("2 issue;"), "every cycle rotates both tokens: {line}");
        w.emu.update_user_raw("svc-batch@acme.example", |u| u.is_active = false);
        if next == 100 {
            at_100 = rss(run.pid());
        }
        seen = next;
    }
    let at_1000 = rss(run.pid());
    let grown = at_1000.saturating_sub(at_100);
    eprintln!(
        "RSS after cycle 100: {:.1} MiB, after cycle 1,000: {:.1} MiB",
        at_100 as f64 / MIB as f64,
        at_1000 as f64 / MIB as f64
    );
    assert!(
        grown <= 5 * MIB,
        "RSS grew by {grown} bytes from cycle 100 to cycle 1,000 ({at_100} → {at_1000})"
    );
    let (_, text) = get(&format!("{}/metrics", run.metrics_url().await)).await;
    assert!(
        value(&parse_metrics(&text), "ozform_reconcile_cycles_total", &[("result", "success")]) >= 1000.0
    );
    run.signal("TERM");
    // Not kept for the canary scan (a thousand plans); the tokens are harvested.
    let run = run.finish(&w).await.code(143);
    assert!(!run.stderr.contains(&w.admin_password));
}

/// A `RequestObserver` that keeps every attempt, and every concurrency limit it is told.
#[derive(Debug, Default)]
struct Attempts(Mutex<Vec<ozform::oz::Attempt>>, Mutex<Vec<usize>>);

impl ozform::oz::RequestObserver for Attempts {
    fn attempt(&self, attempt: &ozform::oz::Attempt) {
        self.0.lock().unwrap().push(*attempt);
    }

    fn concurrency_limit(&self, limit: usize) {
        self.1.lock().unwrap().push(limit);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_tells_its_observer_its_adaptive_limit_with_auto_and_never_with_a_fixed_parallelism() {
    let emu = common::emulator::Emulator::new(ApiVersion::V6)
        .seed(common::emulator::seed(ApiVersion::V6, &["Observed"], 30))
        .start()
        .await;
    for adaptive in [Some(8), None] {
        let attempts = Arc::new(Attempts::default());
        let observer: Arc<dyn ozform::oz::RequestObserver> = attempts.clone();
        let client = common::emulator::connect(&emu, |c| {
            c.observer = Some(observer);
            c.adaptive_limit = adaptive;
            c.page_size = 5;
        })
        .await;
        client.list_users(&ozform::oz::UserFilter::default()).await.unwrap();
        let limits = attempts.1.lock().unwrap().clone();
        let requests = attempts.0.lock().unwrap().len();
        if adaptive.is_some() {
            // Told when the client was made (the start, 4), then after every attempt.
            assert_eq!(limits.first(), Some(&4), "{limits:?}");
            assert_eq!(limits.len(), requests + 1, "{limits:?}");
            assert!(limits.iter().all(|l| (1..=8).contains(l)), "{limits:?}");
        } else {
            assert!(limits.is_empty(), "{limits:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_tells_its_observer_every_attempt_by_route_template_retries_and_failures_included() {
    use ozform::oz::Route;
    let emu = common::emulator::Emulator::new(ApiVersion::V6)
        .seed(common::emulator::seed(ApiVersion::V6, &["Observed"], 2))
        .start()
        .await;
    let attempts = Arc::new(Attempts::default());
    let observer: Arc<dyn ozform::oz::RequestObserver> = attempts.clone();
    let client = common::emulator::connect(&emu, |c| c.observer = Some(observer)).await;
    // One 503 then the answer (retried), and one connection dropped (retried too).
    emu.set_faults(Faults { unavailable_next: 1, drop_next: 1, ..Faults::default() });
    let users = client.list_users(&ozform::oz::UserFilter::default()).await.unwrap();
    let id = users.iter().find(|u| u.email.as_str() == common::emulator::email(0)).unwrap().id.clone();
    client.issue_token(&id).await.unwrap();
    let seen = attempts.0.lock().unwrap().clone();
    let of = |route: Route, status: Option<u16>| {
        seen.iter().filter(|a| a.route == route && a.status == status).count()
    };
    assert_eq!(of(Route::Auth, Some(200)), 1, "{seen:?}");
    assert_eq!(of(Route::Users, Some(503)), 1, "{seen:?}");
    assert_eq!(of(Route::Users, None), 1, "the dropped connection: {seen:?}");
    assert!(of(Route::Users, Some(200)) >= 1, "{seen:?}");
    assert_eq!(of(Route::ServiceTokenOfUser, Some(200)), 1, "{seen:?}");
    assert!(seen.iter().all(|a| a.route != Route::Other), "{seen:?}");
    assert!(seen.iter().any(|a| a.method == "POST") && seen.iter().any(|a| a.method == "GET"));
}

/// A YAML file of the repository as JSON (through `PyYAML`, which `kubernetes-validate` brings).
fn yaml_file(path: &str) -> Value {
    let out = std::process::Command::new(python_tool("python"))
        .args(["-c", "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))"])
        .arg(root().join(path))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn both_ci_recipes_have_a_scheduled_reconcile_once_off_by_default_and_never_beside_an_apply() {
    let github = yaml_file("contrib/ci/github/ozform.yml");
    let job = &github["jobs"]["reconcile"];
    assert_eq!(job["if"], "github.event_name == 'schedule' && vars.OZFORM_RECONCILE == 'true'");
    assert!(github["on"].get("schedule").is_none(), "no schedule until one is added: off by default");
    assert_eq!(job["concurrency"]["group"], github["jobs"]["apply"]["concurrency"]["group"]);
    let runs: Vec<&str> = job["steps"].as_array().unwrap().iter().filter_map(|s| s["run"].as_str()).collect();
    assert!(
        runs.iter().any(|r| r.trim() == "ozform reconcile --once ${MANIFESTS:+\"$MANIFESTS\"}"),
        "{runs:?}"
    );

    let gitlab = yaml_file("contrib/ci/gitlab/.gitlab-ci.yml");
    let job = &gitlab["ozform-reconcile"];
    assert_eq!(
        job["rules"],
        serde_json::json!([{"if": "$CI_PIPELINE_SOURCE == \"schedule\" && $OZFORM_SCHEDULE == \"reconcile\""}])
    );
    assert_eq!(job["resource_group"], gitlab["ozform-apply"]["resource_group"]);
    assert_eq!(job["script"], serde_json::json!(["ozform reconcile --once ${MANIFESTS:+\"$MANIFESTS\"}"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_log_format_json_each_cycle_ends_with_one_json_summary_event() {
    let w = World::start(ApiVersion::V6).await;
    let run = w.run(w.command("reconcile", &["--once", "--log-format", "json", BASIC])).await.code(0);
    let events: Vec<Value> = run
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == "cycle")
        .collect();
    assert_eq!(events.len(), 1, "{}", run.stderr);
    let event = &events[0];
    assert_eq!((event["cycle"].as_u64(), event["result"].as_str()), (Some(1), Some("success")), "{event}");
    assert_eq!(
        event["planned"],
        serde_json::json!({"create": 5, "update": 0, "issue": 2, "deactivate": 0, "delete": 0})
    );
    assert_eq!(event["applied"], event["planned"]);
    assert_eq!(event["failed"]["create"], 0);
    assert_eq!(event["removals_held_back"], 0);
    assert!(event["duration_seconds"].as_f64().is_some_and(|d| d >= 0.0));
    assert_eq!(event["level"], "INFO");
    w.assert_no_secrets();
}

/// Drift behind ozform's back in an installation: a declared user deactivated.
fn deactivate(w: &World) {
    assert!(w.emu.update_user_raw("svc-web@acme.example", |u| u.is_active = false));
}

/// Wait for a project's loop to end (after a signal), keeping what it printed for the canary
/// scan.
async fn end_project_loop(p: &mut Project, run: Loop) -> Run {
    let run = run.end().await;
    p.printed.push(format!("{}{}", run.stdout, run.stderr));
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_project_file_drift_in_both_installations_is_repaired_within_two_cycles() {
    let mut p = Project::start("").await;
    let run = Loop::start(p.cli(&["reconcile", "--interval", "1s", "--metrics-listen", "127.0.0.1:0"]));
    let base = run.metrics_url().await;
    let first = run.cycle(1).await;
    assert!(first.starts_with("cycle 1 success"), "{first}");
    // The totals of both, then each installation's part, on the one line of the cycle.
    assert!(first.contains("applied 10 create, 4 issue"), "{first}");
    assert!(
        first.contains("installation `eu` success: planned 5 create, 2 issue; applied 5 create, 2 issue")
    );
    assert!(
        first.contains("installation `us` success: planned 5 create, 2 issue; applied 5 create, 2 issue")
    );
    for name in ["eu", "us"] {
        let kept = std::fs::read_dir(p.dir.path().join("ozform-tokens").join(name)).unwrap().count();
        assert!(kept >= 2, "tokens of `{name}` in its own namespace");
    }

    let before = run.last_cycle();
    deactivate(&p.eu);
    deactivate(&p.us);
    let repaired = run.cycle(before + 2).await;
    assert!(p.eu.user("svc-web@acme.example").is_active, "repaired in `eu` by {repaired}");
    assert!(p.us.user("svc-web@acme.example").is_active, "repaired in `us` by {repaired}");
    let cycles = run.cycles();
    let lines: Vec<&String> = cycles.range(before + 1..=before + 2).map(|(_, l)| l).collect();
    for name in ["eu", "us"] {
        assert!(
            lines
                .iter()
                .any(|l| l
                    .contains(&format!("installation `{name}` success: planned 1 update; applied 1 update"))),
            "`{name}` repaired in one cycle:\n{lines:?}"
        );
    }

    // Each installation's series under its label; none without it.
    let (_, text) = get(&format!("{base}/metrics")).await;
    let samples = parse_metrics(&text);
    for name in ["eu", "us"] {
        let ok = value(
            &samples,
            "ozform_reconcile_cycles_total",
            &[("installation", name), ("result", "success")],
        );
        assert!(ok >= (before + 2) as f64, "{name}: {ok}\n{text}");
        assert_eq!(
            value(
                &samples,
                "ozform_apply_steps_total",
                &[("installation", name), ("kind", "service_user"), ("result", "done")]
            ),
            4.0,
            "{name}: 3 created, 1 reactivated"
        );
        assert_eq!(
            value(&samples, "ozform_drift_changes", &[("installation", name), ("action", "update")]),
            0.0
        );
        assert!(
            value(&samples, "ozform_reconcile_last_success_timestamp_seconds", &[("installation", name)])
                > 1.7e9
        );
    }
    for sample in &samples {
        if ["ozform_reconcile_cycles", "ozform_drift_changes", "ozform_apply_steps", "ozform_tokens_expiring"]
            .contains(&sample.family.as_str())
        {
            assert!(sample.labels.contains_key("installation"), "{sample:?}");
        }
    }
    assert_no_secret_email_or_id(&p.eu, "the metrics", &text);
    assert_no_secret_email_or_id(&p.us, "the metrics", &text);

    run.signal("TERM");
    let run = end_project_loop(&mut p, run).await.code(143);
    assert!(run.stdout.contains("=== installation `eu`"), "plans under their heading:\n{}", run.stdout);
    assert!(run.stdout.contains("=== installation `us`"), "{}", run.stdout);
    p.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_installation_down_fails_its_part_of_the_cycle_and_the_other_is_still_repaired() {
    let mut p = Project::start("").await;
    let run = Loop::start(p.cli(&[
        "reconcile",
        "--interval",
        "1s",
        "--installations-parallelism",
        "2",
        "--metrics-listen",
        "127.0.0.1:0",
    ]));
    let base = run.metrics_url().await;
    assert!(run.cycle(1).await.starts_with("cycle 1 success"));

    // `eu` answers every request 500 from now on; drift in both.
    p.eu.emu.set_faults(Faults { internal_error: 1.0, ..Faults::default() });
    deactivate(&p.eu);
    deactivate(&p.us);
    let before = run.last_cycle();
    let failed = run.cycle(before + 2).await;
    assert!(failed.starts_with(&format!("cycle {} failure", before + 2)), "{failed}");
    assert!(failed.contains("installation `eu` failure: planned none; applied none"), "{failed}");
    assert!(failed.contains("installation `us` success"), "{failed}");
    assert!(p.us.user("svc-web@acme.example").is_active, "`us` repaired while `eu` is down");
    assert!(!p.eu.user("svc-web@acme.example").is_active, "nothing applied to `eu`");
    assert!(run.stderr().contains("installation `eu`: "), "the part's error names it:\n{}", run.stderr());
    let (_, text) = get(&format!("{base}/metrics")).await;
    let samples = parse_metrics(&text);
    assert!(
        value(&samples, "ozform_reconcile_cycles_total", &[("installation", "eu"), ("result", "failure")])
            >= 1.0
    );
    assert_eq!(
        value(&samples, "ozform_reconcile_cycles_total", &[("installation", "us"), ("result", "failure")]),
        0.0
    );

    // `eu` back: repaired by a later cycle.
    p.eu.emu.set_faults(Faults::default());
    let since = run.last_cycle();
    let recovered = run
        .until("a cycle succeeds again", || {
            run.cycles().range(since + 1..).map(|(_, l)| l.clone()).find(|l| l.contains(" success in "))
        })
        .await;
    assert!(p.eu.user("svc-web@acme.example").is_active, "`eu` repaired by {recovered}");
    run.signal("TERM");
    end_project_loop(&mut p, run).await.code(143);
    p.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_project_file_once_exits_with_the_most_severe_code_of_the_installations() {
    let mut p = Project::start(DOWN).await;
    let metrics = p.dir.path().join("ozform.prom");
    let file = metrics.to_str().unwrap().to_string();
    let run = p
        .run(&[
            "reconcile",
            "--once",
            "--installation",
            "eu",
            "--installation",
            "us",
            "--log-format",
            "json",
            "--metrics-file",
            &file,
        ])
        .await
        .code(0);
    assert!(run.stdout.contains("Installation `eu`: Apply complete:"), "{}", run.stdout);
    assert!(run.stdout.contains("Installation `us`: Apply complete:"), "{}", run.stdout);
    let events: Vec<Value> = run
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == "cycle")
        .collect();
    assert_eq!(events.len(), 1, "one summary event for the cycle:\n{}", run.stderr);
    let event = &events[0];
    assert_eq!(event["result"], "success");
    assert_eq!(event["applied"]["create"], 10, "{event}");
    let parts = event["installations"].as_array().unwrap();
    let names: Vec<&str> = parts.iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["eu", "us"]);
    for part in parts {
        assert_eq!(part["result"], "success");
        assert_eq!(
            part["applied"],
            serde_json::json!({"create": 5, "update": 0, "issue": 2, "deactivate": 0, "delete": 0})
        );
    }
    let samples = parse_metrics(&std::fs::read_to_string(&metrics).unwrap());
    assert_eq!(
        value(&samples, "ozform_reconcile_cycles_total", &[("installation", "us"), ("result", "success")]),
        1.0
    );
    assert_eq!(
        value(&samples, "ozform_reconcile_cycles_total", &[("installation", "down"), ("result", "success")]),
        0.0
    );

    // Nothing to do: 0. One installation down: its part fails, the others' do not, exit 1.
    let run = p.run(&["reconcile", "--once", "--installation", "eu", "--installation", "us"]).await.code(0);
    assert!(run.stdout.contains("Installation `eu`: No changes."), "{}", run.stdout);
    deactivate(&p.us);
    let run = p.run(&["reconcile", "--once"]).await.code(1);
    assert!(run.stdout.contains("Installation `us`: Apply complete:"), "{}", run.stdout);
    assert!(run.stdout.contains("Installation `down`: failed"), "{}", run.stdout);
    assert!(run.stderr.contains("installation `down`"), "{}", run.stderr);
    assert!(summaries(&run.stderr)[&1].contains("installation `down` failure"), "{}", run.stderr);
    assert!(p.us.user("svc-web@acme.example").is_active);

    // Paths beside a project file are refused, as `plan` refuses them.
    let run = p.run(&["reconcile", "--once", "manifests"]).await.code(1);
    assert!(run.stderr.contains("manifest paths are given"), "{}", run.stderr);
    p.assert_no_secrets();
}
