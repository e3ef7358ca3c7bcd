//! Two measurements of planning at scale.
//!
//! First, end to end, what `ozform plan` does against a large installation (issue #22): an
//! emulator holding 100,000 live users in 1,000 companies, 10 ms latency per request; manifests
//! declaring 1,000 of them (service users in 100 companies, converged); then `manifest::load`,
//! `OzClient::connect`, `observe` (every user, page by page), the token store's `list`,
//! `plan::compute` and the text rendering. Printed: the wall time of each phase and of the whole,
//! and the peak resident memory (`VmHWM`). Targets: under 2 s and under 150 MiB. The emulator
//! runs in a child process (this benchmark started again with `BENCH_PLAN_EMULATOR` set), so that
//! the peak is the client's alone: in the same process, the emulator's own copy of 100,000 users
//! and its JSON answers would count too. Its peak is printed beside, read from
//! `/proc/<child>/status`. The peak of this process is reset (`/proc/self/clear_refs`) before
//! the plan starts, where the kernel allows it; otherwise it runs first and includes the
//! runtime's baseline, printed too. (`BENCH_LIVE_USERS`, default 100000; `BENCH_DECLARED_USERS`,
//! default 1000; `BENCH_LATENCY_MS`, default 10; `BENCH_PLAN_TEXT=FILE` keeps the plan's text;
//! `BENCH_COMPUTE=0` skips the second measurement.) The CPU time of this process and of the
//! emulator's during the plan are printed too, with the load average: on a shared machine the
//! wall time depends on them.
//!
//! Then `plan::compute()` alone on a large in-memory state: 100,000 desired
//! service users in 10,000 companies (1x), then twice that (2x), with matching observed state
//! and some drift (metadata changes, renamed and missing users, missing and expiring tokens).
//! Linear growth shows as the 2x time and memory being about twice the 1x ones.
//!
//! Run: `cargo bench --bench bench_plan`. Linux only for the memory figures (`/proc`).
#![allow(clippy::print_stdout)] // an example that exists to print its figures
#![allow(clippy::cast_precision_loss)] // counts far below 2^52 turned into f64 for display
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a failure is a panic with its message

use std::fmt::Write as _;
use std::io::{BufRead as _, Write as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ozform::model::{
    ApiVersion, Desired, DesiredCompany, DesiredUser, Email, LivePermissions, Location, Observed,
    ObservedCompany, ObservedUser, Permissions, StoredToken, StoredTokens, TokenSpec, UserKind,
};
use ozform::plan::{PlanOptions, compute};
use ozform::secret::SecretRef;
use serde_json::json;

const USERS_PER_COMPANY: usize = 10;
const NOW: f64 = 1_800_000_000.0;
const URL: &str = "https://oz.bench";

fn build(companies: usize) -> (Desired, Observed, StoredTokens) {
    let location = Location { file: Arc::new(PathBuf::from("bench.yaml")), line: 1, column: 1 };
    let mut desired = Desired::default();
    let mut observed = Observed {
        api_url: URL.into(),
        api_version: ApiVersion::V6,
        api_version_detected: false,
        companies: vec![],
        users: vec![],
    };
    let mut store = StoredTokens::new();
    for c in 0..companies {
        let name = format!("Company {c:06}");
        let id = format!("c-{c:06}");
        desired.companies.push(DesiredCompany {
            name: name.clone(),
            technical_meta_data: Some(json!({"tier": "gold", "index": c})),
            prune: None,
            source_id: None,
            location: location.clone(),
        });
        // Every 50th company has drifted metadata: an update.
        let tier = if c % 50 == 0 { "silver" } else { "gold" };
        observed.companies.push(ObservedCompany {
            id: id.clone(),
            name: name.clone(),
            in_deletion: false,
            technical_meta_data: json!({"tier": tier, "index": c}),
        });
        for u in 0..USERS_PER_COMPANY {
            let n = c * USERS_PER_COMPANY + u;
            let email = format!("svc-{n:07}@company-{c:06}.example");
            desired.users.push(DesiredUser {
                email: Email::new(email.clone()),
                company: name.clone(),
                first_name: Some("Service".into()),
                last_name: Some(format!("User {n}")),
                middle_name: None,
                password: Some(SecretRef::Env(format!("PW_{n}")).into()),
                active: true,
                permissions: Some(Permissions { documents: Some(false), ..Permissions::default() }),
                token: TokenSpec { issue: true },
                source_id: None,
                location: location.clone(),
            });
            // 1% missing live (create + token), 1% renamed live (update).
            if n % 100 == 1 {
                continue;
            }
            let user_id = format!("u-{n:07}");
            observed.users.push(ObservedUser {
                id: user_id.clone(),
                email: Email::new(email.to_uppercase()),
                company_id: Some(id.as_str().into()),
                kind: UserKind::Service,
                first_name: if n % 100 == 2 { "Old".into() } else { "Service".into() },
                last_name: format!("User {n}"),
                middle_name: String::new(),
                active: true,
                permissions: LivePermissions { documents: false, ..LivePermissions::default() },
            });
            // 1% without a token, 1% expiring in a week.
            if n % 100 != 3 {
                let days = if n % 100 == 4 { 7.0 } else { 400.0 };
                store.insert(
                    email.to_lowercase(),
                    StoredToken { user_id, api_url: URL.into(), expire_date: NOW + days * 86_400.0 },
                );
            }
        }
    }
    // A few live users nobody declared.
    for c in (0..companies).step_by(100) {
        observed.users.push(ObservedUser {
            id: format!("u-legacy-{c}"),
            email: Email::new(format!("legacy@company-{c:06}.example")),
            company_id: Some(format!("c-{c:06}").into()),
            kind: UserKind::Client,
            first_name: String::new(),
            last_name: String::new(),
            middle_name: String::new(),
            active: true,
            permissions: LivePermissions::default(),
        });
    }
    (desired, observed, store)
}

/// Peak resident memory of this process so far, in MiB (`VmHWM`), if the OS tells.
fn peak_mib() -> Option<f64> {
    status_mib("/proc/self/status", "VmHWM:")
}

/// A memory figure of `/proc/<pid>/status` (`VmHWM:`, `VmRSS:`), in MiB.
fn status_mib(path: &str, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(path).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn mib(m: Option<f64>) -> String {
    m.map_or_else(|| "n/a".to_string(), |m| format!("{m:.1} MiB"))
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

const CHILD: &str = "BENCH_PLAN_EMULATOR";
const LIVE_COMPANIES: usize = 1_000;
const DECLARED_COMPANIES: usize = 100;

fn declared_email(u: usize) -> String {
    format!("svc-{u:06}@company-{:04}.example", u % DECLARED_COMPANIES)
}

/// The child: an emulator holding `live` users in `LIVE_COMPANIES` companies, the first
/// `declared` of them service users as the manifests declare them, the others plain clients.
/// Prints its URL, then serves until its standard input closes.
fn serve_emulator(spec: &str) {
    use ozform::emulator::{self, CompanyRecord, EmulatorConfig, Faults, Snapshot, UserRecord};
    let numbers: Vec<usize> = spec.split(',').map(|n| n.parse().expect("a number")).collect();
    let (live, declared, latency_ms) = (numbers[0], numbers[1], numbers[2] as u64);
    let companies: Vec<CompanyRecord> =
        (0..LIVE_COMPANIES).map(|c| CompanyRecord::new(format!("Company {c:04}"))).collect();
    let users = (0..live)
        .map(|u| {
            if u < declared {
                let company = &companies[u % DECLARED_COMPANIES];
                let mut user = UserRecord::new(
                    declared_email(u),
                    "CLIENT_SERVICE".into(),
                    Some(company.company_id.clone()),
                );
                user.is_service = true;
                user.first_name = "Service".into();
                user.last_name = format!("User {u}");
                user
            } else {
                let company = &companies[u % LIVE_COMPANIES];
                let mut user = UserRecord::new(
                    format!("person-{u:06}@bank-{:04}.example", u % LIVE_COMPANIES),
                    "CLIENT".into(),
                    Some(company.company_id.clone()),
                );
                user.first_name = "Person".into();
                user.last_name = format!("Number {u}");
                user
            }
        })
        .collect();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut config = EmulatorConfig::new(ApiVersion::V6);
        config.seed = Some(Snapshot { companies, users, service_tokens: Vec::new() });
        config.faults = Faults { latency_ms, ..Faults::default() };
        let handle = emulator::start(config).await.expect("emulator");
        println!("{}", handle.url());
        std::io::stdout().flush().expect("stdout");
        // Serve until the parent closes our standard input.
        tokio::task::spawn_blocking(|| std::io::stdin().lock().lines().count()).await.expect("stdin");
        handle.shutdown().await;
    });
}

/// Manifests declaring `declared` service users in `DECLARED_COMPANIES` companies, as live.
fn write_manifests(dir: &std::path::Path, declared: usize) -> PathBuf {
    let mut yaml = String::from("companies:\n");
    for c in 0..DECLARED_COMPANIES {
        writeln!(yaml, "  - name: Company {c:04}").unwrap();
    }
    yaml.push_str("service_users:\n");
    for u in 0..declared {
        writeln!(
            yaml,
            "  - email: {}\n    company: Company {:04}\n    first_name: Service\n    last_name: User {u}\n    \
             password: {{env: BENCH_PLAN_PASSWORD}}",
            declared_email(u),
            u % DECLARED_COMPANIES
        )
        .unwrap();
    }
    let path = dir.join("declared.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// CPU time (user + system) of a process so far, from its `/proc/<pid>/stat` (in clock
/// ticks, taken as the usual 100 per second).
fn cpu_of(stat: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(stat).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

/// Try to reset this process's peak resident memory to its current size.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn end_to_end() {
    use ozform::oz::{ClientConfig, OzClient};
    use ozform::token_store::{DirStore, TokenStore};
    let live = env_or("BENCH_LIVE_USERS", 100_000);
    let declared = env_or("BENCH_DECLARED_USERS", 1_000).min(live);
    let latency_ms = env_or("BENCH_LATENCY_MS", 10);
    let mut child = std::process::Command::new(std::env::current_exe().expect("this benchmark"))
        .env(CHILD, format!("{live},{declared},{latency_ms}"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the emulator");
    let mut url = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut url).expect("its URL");
    let url = url.trim().to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = write_manifests(dir.path(), declared);
    let env = |name: &str| (name == "BENCH_PLAN_PASSWORD").then(|| "bench-only".to_string());

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let child_stat = format!("/proc/{}/stat", child.id());
    let cpu_before = (cpu_of("/proc/self/stat"), cpu_of(&child_stat));
    let baseline = peak_mib();
    let reset = reset_peak();
    let mut phases: Vec<(&str, Duration, Option<f64>)> = Vec::new();
    let started = Instant::now();
    let mut lap = Instant::now();
    let mut mark = |phases: &mut Vec<(&str, Duration, Option<f64>)>, name| {
        phases.push((name, lap.elapsed(), peak_mib()));
        lap = Instant::now();
    };
    let desired = ozform::manifest::load(&[manifest], &env).expect("manifests");
    mark(&mut phases, "load");
    let (observed, users_listed) = runtime.block_on(async {
        let config = ClientConfig::new(
            &url,
            ozform::emulator::DEFAULT_ADMIN_EMAIL,
            ozform::secret::Secret::new(ozform::emulator::DEFAULT_ADMIN_PASSWORD),
        );
        let client = OzClient::connect(config).await.expect("connect");
        let observed = client.observe(&[]).await.expect("observe");
        let n = observed.users.len();
        (observed, n)
    });
    mark(&mut phases, "connect+observe");
    let store = DirStore::new(dir.path().join("tokens"), ozform::token_store::Installation::of_api(&url));
    let stored = store.list().expect("token store list");
    mark(&mut phases, "store list");
    let options = PlanOptions {
        now: NOW,
        missing_secrets: ozform::plan::missing_secrets(&desired, |r| r.is_available(&env)),
        ..PlanOptions::default()
    };
    let plan = compute(&desired, &observed, &stored, &options);
    mark(&mut phases, "compute");
    let text = ozform::render::text(&plan, &ozform::render::Style { color: false });
    mark(&mut phases, "render");
    let wall = started.elapsed();
    let cpu_after = (cpu_of("/proc/self/stat"), cpu_of(&child_stat));
    let peak = peak_mib();
    if let Ok(path) = std::env::var("BENCH_PLAN_TEXT") {
        std::fs::write(path, &text).expect("write the plan text");
    }
    let child_peak = status_mib(&format!("/proc/{}/status", child.id()), "VmHWM:");
    drop(child.stdin.take());
    let _ = child.wait();

    println!(
        "end to end: {users_listed} live users listed ({declared} declared in {DECLARED_COMPANIES} companies), \
         latency {latency_ms} ms; {} changes, plan text {} KiB",
        plan.changes.len(),
        text.len() / 1024
    );
    let split: Vec<String> =
        phases.iter().map(|(name, took, _)| format!("{name} {:.0} ms", took.as_secs_f64() * 1e3)).collect();
    println!("  wall {:.2} s  ({})   target < 2 s", wall.as_secs_f64(), split.join(", "));
    let peaks: Vec<String> =
        phases.iter().map(|(name, _, peak)| format!("after {name} {}", mib(*peak))).collect();
    println!(
        "  peak RSS {} (VmHWM of this process{}; {})   target < 150 MiB",
        mib(peak),
        if reset { ", reset before the plan" } else { ", not resettable here: includes the baseline" },
        peaks.join(", ")
    );
    println!(
        "  baseline before the plan {}; the emulator (a child process, not counted) peaked at {}",
        mib(baseline),
        mib(child_peak)
    );
    let spent = |before: Option<Duration>, after: Option<Duration>| match (before, after) {
        (Some(b), Some(a)) => format!("{:.2} s", a.saturating_sub(b).as_secs_f64()),
        _ => "n/a".to_string(),
    };
    println!(
        "  CPU: ozform {} (this process), the emulator {}; load average {}",
        spent(cpu_before.0, cpu_after.0),
        spent(cpu_before.1, cpu_after.1),
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD) {
        serve_emulator(&spec);
        return;
    }
    end_to_end();
    if std::env::var("BENCH_COMPUTE").as_deref() == Ok("0") {
        return;
    }
    println!();
    // The end-to-end figures above are not this table's.
    reset_peak();
    let options = PlanOptions { now: NOW, ..PlanOptions::default() };
    println!("size  companies  users    changes  conflicts  unmanaged  plan() best of 3  peak RSS (VmHWM)");
    for scale in [1, 2] {
        let (desired, observed, store) = build(10_000 * scale);
        let mut best = f64::INFINITY;
        let mut last = None;
        for _ in 0..3 {
            let start = Instant::now();
            let p = compute(&desired, &observed, &store, &options);
            best = best.min(start.elapsed().as_secs_f64());
            last = Some(p);
        }
        let Some(p) = last else { return };
        let peak = peak_mib().map_or_else(|| "n/a".to_string(), |m| format!("{m:.0} MiB"));
        println!(
            "{scale}x    {:<9}  {:<7}  {:<7}  {:<9}  {:<9}  {:>10.1} ms     {peak}",
            desired.companies.len(),
            desired.users.len(),
            p.changes.len(),
            p.conflicts.len(),
            p.unmanaged.len(),
            best * 1000.0,
        );
        println!(
            "      summary: {} create, {} update, {} issue",
            p.summary().create,
            p.summary().update,
            p.summary().issue
        );
    }
}
