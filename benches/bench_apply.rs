//! The apply benchmark of issue #6: 2,000 service users with tokens in 20 companies, applied to
//! the in-process emulator with 10 ms latency per request at parallelism 16, through the same
//! library path `ozform apply` takes (`manifest::load` → `OzClient::connect` → `observe` →
//! `plan::compute` → `apply::execute` with a `DirStore`). Then a second plan (no changes: as many
//! requests as there are list pages), a second apply (zero mutating requests), and a third apply
//! adding 10% more users to the existing companies. The whole sequence runs under API 6, then
//! API 5, then once more under API 6 with 10,000 users (`BENCH_LARGE_USERS`, 0 to skip): the
//! token store's bound (at most `parallelism` tokens issued but not yet stored, issue #12) must
//! not cost more as the run grows.
//!
//! Each row prints the requests by route (from the emulator's own counters), the wall time, the
//! bound `requests × latency / parallelism` (what a perfectly packed run would take; the client's
//! `max_in_flight` instead when that is lower) and the ratio of the two; the issue's target is a
//! ratio under 1.3 for the apply. A read phase pages through lists; when the server gives no
//! total (the emulator's default) the client asks for pages in windows that double while pages
//! come back full, each window once the one before has answered, so reads also show the round
//! trips of their longest list.
//!
//! Run: `cargo bench --bench bench_apply` (env: `BENCH_USERS`, default 2000;
//! `BENCH_COMPANIES`, default 20; `BENCH_PARALLELISM`, default 16; `BENCH_LATENCY_MS`, default
//! 10; `BENCH_MAX_IN_FLIGHT`, default 16 or the parallelism if higher, as `ozform apply`;
//! `BENCH_TOKEN_DIR`, the directory the temp dir of tokens goes in, e.g. `/dev/shm` to leave
//! the disk out; `BENCH_STORE=memory` for the tests' `MemoryStore`). Each row also shows the CPU time of this
//! process (client, emulator and the token store's file system calls together). Figures depend on the
//! machine and its load, printed alongside: a measurement, never a test.
//!
//! Then the capacity table of issue #22: the same 2,000 users with tokens, applied to an emulator
//! with a hidden capacity (`--capacity` 4, 8, 16 and 32: at most that many requests served at
//! once, the others in line, shed with a 503 after 30 ms), with `--parallelism auto` and with a
//! fixed 8 and 32, tokens kept in the tests' `MemoryStore` (the table is about the server, not
//! the disk), the emulator on a runtime of its own (a server is a process of its own: the
//! client's work must not hold up its timers). Each row prints the apply's wall time against the bound `requests × latency /
//! capacity`, the queue wait the emulator measured (average and largest: what the server's other
//! users pay), the shed requests, the failed steps and `auto`'s limit (its average over the
//! apply, read every millisecond, and where it ended). Targets for
//! `auto`: a ratio within 1.15, an average wait of at most 2 ms, nothing shed
//! (`BENCH_CAPACITIES`, default `4,8,16,32`, empty to skip; `BENCH_SEQUENCE=0` runs the table
//! alone; `RUST_LOG=ozform::oz::limiter=debug` prints each decision of `auto` on stderr). Last,
//! the CPU time per token issued, from the apply of 2,000 and of 10,000 users above.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used, clippy::cast_precision_loss)]

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

// The tests' in-memory token store; the benchmark uses only its `TokenStore` side.
#[path = "../tests/testsuite/common/memory_store.rs"]
#[allow(dead_code)]
mod memory_store;

use memory_store::MemoryStore;
use ozform::apply::{self, ExecuteOptions, Silent};
use ozform::emulator::{self, EmulatorConfig, Faults, Handle, Stats};
use ozform::model::{ApiVersion, Desired};
use ozform::oz::{ClientConfig, OzClient, VersionSetting};
use ozform::plan::{self, Plan, PlanOptions};
use ozform::secret::SecretRef;
use ozform::token_store::{DirStore, TokenStore};

const PASSWORD_VAR: &str = "BENCH_SERVICE_PASSWORD";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The passwords of the generated users: one made-up value for all, known only to this process.
fn bench_env(name: &str) -> Option<String> {
    (name == PASSWORD_VAR).then(|| "bench-only-password-0000".to_string())
}

/// One manifest file with `companies` companies and `users` service users spread evenly over them.
fn write_manifest(dir: &std::path::Path, companies: usize, users: usize) -> PathBuf {
    let mut yaml = String::from("companies:\n");
    for c in 0..companies {
        writeln!(yaml, "  - name: Bench Company {c:04}\n    technical_meta_data: {{tier: gold, index: {c}}}")
            .unwrap();
    }
    yaml.push_str("service_users:\n");
    for u in 0..users {
        let c = u % companies;
        writeln!(
            yaml,
            "  - email: svc-{u:06}@company-{c:04}.example\n    company: Bench Company {c:04}\n    \
             first_name: Service\n    last_name: User {u}\n    password: {{env: {PASSWORD_VAR}}}\n    \
             permissions: {{biometry: true, collection: true, documents: false, quality: true}}\n    \
             token: {{issue: true}}"
        )
        .unwrap();
    }
    let path = dir.join("bench.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// What `ozform plan` does after connecting (`cli::plan::make_plan`, which is crate-private),
/// with the time of each part: observe (HTTP), the token store's list (disk), `plan::compute` (CPU).
async fn make_plan(client: &OzClient, desired: &Desired, store: &dyn TokenStore) -> (Plan, String) {
    let started = Instant::now();
    let observed = client.observe(&[]).await.expect("observe");
    let observe = started.elapsed();
    let started = Instant::now();
    let index = store.list().expect("token store list");
    let indexed = started.elapsed();
    let options = PlanOptions {
        now: now_epoch(),
        rotate_before: Duration::from_secs(30 * 24 * 3600),
        rotate_tokens: false,
        companies: Vec::new(),
        missing_secrets: plan::missing_secrets(desired, |r: &SecretRef| r.is_available(&bench_env)),
    };
    let started = Instant::now();
    let plan = plan::compute(desired, &observed, &index, &options);
    let planned = started.elapsed();
    let parts = format!(
        "observe {:.1} ms, token store list {:.1} ms ({} tokens), plan {:.1} ms",
        ms(observe),
        ms(indexed),
        index.len(),
        ms(planned)
    );
    (plan, parts)
}

fn now_epoch() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// What `ozform apply` does with an approved plan (`cli::apply::execute`), without the terminal.
/// `Err` when the executor refuses the plan before its first request.
async fn execute(
    plan: &Plan,
    client: &OzClient,
    store: &Arc<dyn TokenStore>,
    parallelism: usize,
) -> Result<(), apply::ApplyError> {
    let report = execute_report(plan, client, store, parallelism).await?;
    assert!(report.is_success(), "apply failed: {}", report.summary_line());
    Ok(())
}

/// As `execute`, returning the report whatever it says.
async fn execute_report(
    plan: &Plan,
    client: &OzClient,
    store: &Arc<dyn TokenStore>,
    parallelism: usize,
) -> Result<apply::ApplyReport, apply::ApplyError> {
    let passwords = apply::resolve_passwords(plan, &bench_env)?;
    let mut options = ExecuteOptions::new(passwords);
    options.parallelism = parallelism;
    apply::execute(plan, Arc::new(client.clone()), Arc::clone(store), Arc::new(Silent), &options).await
}

struct Bench {
    latency: Duration,
    parallelism: usize,
    /// The client's bound of requests in flight (`--max-in-flight`).
    max_in_flight: usize,
}

impl Bench {
    /// Print one phase: requests by route, wall time, bound, ratio.
    fn row(&self, label: &str, stats: &Stats, wall: Duration, extra: &str) {
        let requests = stats.total_requests;
        // Requests at once: the executor's parallelism, unless the client allows fewer.
        let at_once = self.parallelism.min(self.max_in_flight);
        let bound = self.latency.mul_f64(requests as f64 / at_once as f64);
        let ratio = if bound.is_zero() { f64::NAN } else { wall.as_secs_f64() / bound.as_secs_f64() };
        println!(
            "  {label:<22} {requests:>6} requests ({} mutating, max {} in flight)  wall {:>8.1} ms  \
             bound {:>8.1} ms  ratio {ratio:>5.2}{extra}",
            stats.mutating_requests,
            stats.max_in_flight,
            ms(wall),
            ms(bound),
        );
        for (route, n) in &stats.requests_by_route {
            println!("      {n:>6}  {route}");
        }
    }

    /// The critical path of a read phase: the round trips of its longest list, each one
    /// latency. With no total the client asks for pages in windows of 1, 2, 4, … up to
    /// `max_in_flight` at once, each window once the one before has answered.
    fn page_chain(&self, stats: &Stats) -> String {
        let longest = ["GET /api/users/", "GET /api/companies/"]
            .iter()
            .map(|r| stats.requests_by_route.get(*r).copied().unwrap_or(0))
            .max()
            .unwrap_or(0);
        let (mut rounds, mut asked, mut window) = (0_u32, 0, 1);
        while asked < longest {
            asked += window;
            rounds += 1;
            window = (window * 2).min(self.max_in_flight as u64);
        }
        let floor = self.latency * rounds;
        format!("  (longest list: {longest} pages in {rounds} round trips ≥ {:.1} ms)", ms(floor))
    }
}

/// CPU time of this process so far (user, system), from `/proc/self/stat` (Linux only; in
/// clock ticks, taken as the usual 100 per second).
fn cpu_times() -> Option<(Duration, Duration)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| fields.get(i)?.parse::<u64>().ok().map(|t| Duration::from_millis(t * 10));
    Some((tick(11)?, tick(12)?))
}

/// Wall and CPU time of one phase.
struct Clock {
    wall: Instant,
    cpu: Option<(Duration, Duration)>,
}

impl Clock {
    fn start() -> Self {
        Self { wall: Instant::now(), cpu: cpu_times() }
    }
    /// CPU time (user + system) since `start`.
    fn cpu(&self) -> Option<Duration> {
        let ((u0, s0), (u1, s1)) = (self.cpu?, cpu_times()?);
        Some(u1.saturating_sub(u0) + s1.saturating_sub(s0))
    }
    fn stop(&self) -> (Duration, String) {
        let wall = self.wall.elapsed();
        let cpu = match (self.cpu, cpu_times()) {
            (Some((u0, s0)), Some((u1, s1))) => {
                format!(
                    "  cpu {:.0} ms user + {:.0} ms sys",
                    ms(u1.saturating_sub(u0)),
                    ms(s1.saturating_sub(s0))
                )
            }
            _ => String::new(),
        };
        (wall, cpu)
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(|_| "unknown".into(), |s| s.trim().to_string())
}

/// Runs the whole sequence under `version`. Returns the temp dir of the manifests and tokens,
/// for `main` to remove once every figure is taken: removing thousands of files just before
/// the next apply would slow that apply's file creates on some file systems (ext4 without a
/// journal, as on the VM these figures were first taken on, skips inodes freed in the last
/// minute or more when allocating, and pays for that in kernel CPU).
async fn run(
    version: ApiVersion,
    bench: &Bench,
    companies: usize,
    users: usize,
) -> (tempfile::TempDir, Option<Duration>) {
    // `BENCH_TOKEN_DIR` picks the file system the tokens go to (e.g. `/dev/shm` to leave the
    // disk out of the figures); `BENCH_STORE=memory` leaves files out altogether.
    let dir = match std::env::var_os("BENCH_TOKEN_DIR") {
        Some(parent) => tempfile::tempdir_in(parent).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let manifest = write_manifest(dir.path(), companies, users);
    let started = Instant::now();
    let desired = ozform::manifest::load(&[manifest], &bench_env).expect("manifest");
    let load = started.elapsed();

    let mut config = EmulatorConfig::new(version);
    config.faults =
        Faults { latency_ms: u64::try_from(bench.latency.as_millis()).unwrap(), ..Faults::default() };
    let handle: Handle = emulator::start(config).await.expect("emulator");
    let mut client_config =
        ClientConfig::new(handle.url(), handle.admin_email(), handle.admin_password().clone());
    client_config.api_version = VersionSetting::Fixed(version);
    client_config.max_in_flight = bench.max_in_flight;
    let started = Instant::now();
    let client = OzClient::connect(client_config).await.expect("connect");
    let connect = started.elapsed();
    let store: Arc<dyn TokenStore> = if std::env::var("BENCH_STORE").as_deref() == Ok("memory") {
        Arc::new(MemoryStore::new())
    } else {
        Arc::new(DirStore::new(
            dir.path().join("tokens"),
            ozform::token_store::Installation::of_api(&handle.url()),
        ))
    };

    println!(
        "\nAPI {version}: {} companies, {} service users with tokens; manifest::load {:.1} ms",
        desired.companies.len(),
        desired.users.len(),
        ms(load)
    );
    let stats = handle.stats();
    bench.row("connect (login)", &stats, connect, "");

    handle.reset_stats();
    let clock = Clock::start();
    let (first, parts) = make_plan(&client, &desired, store.as_ref()).await;
    let (wall, cpu) = clock.stop();
    let stats = handle.stats();
    bench.row("plan 1", &stats, wall, &(bench.page_chain(&stats) + &cpu));
    println!(
        "      {parts}; {} create, {} update, {} issue",
        first.summary().create,
        first.summary().update,
        first.summary().issue
    );

    handle.reset_stats();
    let clock = Clock::start();
    execute(&first, &client, &store, bench.parallelism).await.expect("execute");
    let (wall, cpu) = clock.stop();
    let issued = first.summary().issue;
    let cpu_per_token = clock.cpu().map(|cpu| cpu / u32::try_from(issued.max(1)).unwrap());
    let per_token = cpu_per_token.map_or_else(String::new, |c| format!(" ({:.2} ms per token)", ms(c)));
    bench.row("apply 1 (execute)", &handle.stats(), wall, &(cpu + &per_token));

    handle.reset_stats();
    let clock = Clock::start();
    let (second, parts) = make_plan(&client, &desired, store.as_ref()).await;
    let (wall, cpu) = clock.stop();
    let stats = handle.stats();
    bench.row("plan 2", &stats, wall, &(bench.page_chain(&stats) + &cpu));
    println!(
        "      {parts}; {} create, {} update, {} issue",
        second.summary().create,
        second.summary().update,
        second.summary().issue
    );

    // A second `ozform apply`: plan, and execute only if there is anything to do.
    handle.reset_stats();
    let clock = Clock::start();
    let (again, _) = make_plan(&client, &desired, store.as_ref()).await;
    if again.has_changes() {
        execute(&again, &client, &store, bench.parallelism).await.expect("execute");
    }
    let (wall, cpu) = clock.stop();
    let stats = handle.stats();
    bench.row("apply 2 (plan+execute)", &stats, wall, &(bench.page_chain(&stats) + &cpu));

    // New users in companies that exist and are unchanged: their creates need the company ids,
    // which the executor looks up by name (`GET /api/companies/?name=…`).
    let extra = users / 10;
    let manifest = write_manifest(dir.path(), companies, users + extra);
    let desired = ozform::manifest::load(&[manifest], &bench_env).expect("manifest");
    handle.reset_stats();
    let clock = Clock::start();
    let (third, _) = make_plan(&client, &desired, store.as_ref()).await;
    let outcome = execute(&third, &client, &store, bench.parallelism).await;
    let (wall, cpu) = clock.stop();
    let label = format!("apply 3 (+{extra} users)");
    bench.row(&label, &handle.stats(), wall, &cpu);
    if let Err(e) = outcome {
        // Executors before main's 203675a refuse dependencies on unchanged objects.
        println!("      refused by the executor: {e}");
    }
    println!(
        "      plan: {} create, {} update, {} issue",
        third.summary().create,
        third.summary().update,
        third.summary().issue
    );
    handle.shutdown().await;
    (dir, cpu_per_token)
}

/// An emulator on a runtime of its own (its own threads), as a server is a process of its own:
/// its 10 ms of latency are timers that the client's work on the bench's runtime does not hold
/// up. Dropping it stops the emulator.
struct Server {
    handle: Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(config: EmulatorConfig) -> Self {
        let (started, handle) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let handle = emulator::start(config).await.expect("emulator");
                started.send(handle).expect("the bench waits");
                // Serve (on this runtime) until the bench is done with this emulator.
                let _ = stopped.await;
            });
        });
        let handle = handle.recv().expect("an emulator");
        Self { handle, stop: Some(stop), thread: Some(thread) }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One row of the capacity table: the apply of `users` users with tokens (plan, then execute)
/// on an emulator serving at most `capacity` requests at once.
async fn capacity_row(
    companies: usize,
    users: usize,
    latency: Duration,
    capacity: usize,
    parallelism: Option<usize>,
) {
    const MAX_PARALLELISM: usize = 32;
    const SHED_AFTER: Duration = Duration::from_millis(30);
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(dir.path(), companies, users);
    let desired = ozform::manifest::load(&[manifest], &bench_env).expect("manifest");
    let mut config = EmulatorConfig::new(ApiVersion::V6);
    config.faults = Faults { latency_ms: u64::try_from(latency.as_millis()).unwrap(), ..Faults::default() };
    config.capacity = Some(capacity);
    config.shed_after = Some(SHED_AFTER);
    let server = Server::start(config);
    let handle = &server.handle;
    let mut client_config =
        ClientConfig::new(handle.url(), handle.admin_email(), handle.admin_password().clone());
    client_config.api_version = VersionSetting::Fixed(ApiVersion::V6);
    // As `ozform apply`: the executor runs `--max-parallelism` steps with `auto` (the client's
    // limit decides how many requests go out), the number given otherwise; `--max-in-flight`
    // is 16, or that if higher.
    let steps = parallelism.unwrap_or(MAX_PARALLELISM);
    client_config.max_in_flight = steps.max(client_config.max_in_flight);
    client_config.adaptive_limit = parallelism.is_none().then_some(MAX_PARALLELISM);
    let client = OzClient::connect(client_config).await.expect("connect");
    let store: Arc<dyn TokenStore> = Arc::new(MemoryStore::new());
    let (plan, _) = make_plan(&client, &desired, store.as_ref()).await;
    handle.reset_stats();
    let clock = Clock::start();
    // `auto`'s limit, read every millisecond while the apply runs: its average over the run.
    let sampled = {
        let watched = client.clone();
        let (done, mut finished) = tokio::sync::oneshot::channel::<()>();
        let sampler = tokio::spawn(async move {
            let (mut sum, mut n) = (0_u64, 0_u64);
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        sum += watched.concurrency_limit().unwrap_or(0) as u64;
                        n += 1;
                    }
                    _ = &mut finished => break,
                }
            }
            sum as f64 / n.max(1) as f64
        });
        let report = execute_report(&plan, &client, &store, steps).await.expect("execute");
        let _ = done.send(());
        (report, sampler.await.unwrap_or(f64::NAN))
    };
    let (report, average_limit) = sampled;
    let wall = clock.wall.elapsed();
    let stats = handle.stats();
    let bound = latency.mul_f64(stats.total_requests as f64 / capacity as f64);
    let ratio = wall.as_secs_f64() / bound.as_secs_f64();
    let mode = parallelism.map_or_else(|| "auto".to_string(), |n| n.to_string());
    let limit =
        client.concurrency_limit().map_or_else(|| "-".to_string(), |l| format!("{average_limit:.1}/{l}"));
    let verdict = match parallelism {
        Some(_) => "",
        None if ratio <= 1.15 && stats.average_queue_wait_us <= 2_000 && stats.shed_requests == 0 => "  met",
        None => "  MISSED",
    };
    println!(
        "  {capacity:>8}  {mode:>11}  {:>8}  {:>9.0} ms  {:>8.0} ms  {ratio:>5.2}  {:>8.2} ms  {:>8.1} ms  {:>5}  {:>6}  {limit:>9}{verdict}",
        stats.total_requests,
        ms(wall),
        ms(bound),
        stats.average_queue_wait_us as f64 / 1000.0,
        stats.max_queue_wait_us as f64 / 1000.0,
        stats.shed_requests,
        report.failed.len() + report.skipped.len(),
    );
    drop(server);
}

#[tokio::main]
async fn main() {
    // `RUST_LOG=ozform::oz::limiter=debug` shows each decision of `--parallelism auto`.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let companies = env_or("BENCH_COMPANIES", 20).max(1);
    let users = env_or("BENCH_USERS", 2000);
    let parallelism = env_or("BENCH_PARALLELISM", 16).max(1);
    // As `ozform apply` without `--max-in-flight`: the client bound is at least the parallelism.
    let default_in_flight =
        ClientConfig::new("http://x", "x", ozform::secret::Secret::new("x")).max_in_flight;
    let bench = Bench {
        latency: Duration::from_millis(env_or("BENCH_LATENCY_MS", 10) as u64),
        parallelism,
        max_in_flight: env_or("BENCH_MAX_IN_FLIGHT", default_in_flight.max(parallelism)).max(1),
    };
    println!(
        "bench_apply: latency {} ms, parallelism {}, client max_in_flight {}; load average {}",
        bench.latency.as_millis(),
        bench.parallelism,
        bench.max_in_flight,
        load_average()
    );
    let mut dirs = Vec::new();
    let mut per_token = Vec::new();
    // `BENCH_SEQUENCE=0`: the capacity table only.
    let sequence = std::env::var("BENCH_SEQUENCE").as_deref() != Ok("0");
    for version in [ApiVersion::V6, ApiVersion::V5].into_iter().filter(|_| sequence) {
        let (dir, cpu) = run(version, &bench, companies, users).await;
        dirs.push(dir);
        per_token.push((users, version, cpu));
    }
    let large = env_or("BENCH_LARGE_USERS", 10_000);
    if large > 0 && sequence {
        let (dir, cpu) = run(ApiVersion::V6, &bench, companies, large).await;
        dirs.push(dir);
        per_token.push((large, ApiVersion::V6, cpu));
    }
    drop(dirs);

    let capacities: Vec<usize> = std::env::var("BENCH_CAPACITIES")
        .unwrap_or_else(|_| "4,8,16,32".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    if !capacities.is_empty() {
        println!(
            "\ncapacity table: {users} users with tokens, API 6, latency {} ms, shed after 30 ms in line; load average {}",
            bench.latency.as_millis(),
            load_average()
        );
        println!(
            "  capacity  parallelism  requests       wall       bound  ratio  avg wait  max wait   shed  failed  limit avg/end"
        );
        for &capacity in &capacities {
            for parallelism in [None, Some(8), Some(32)] {
                capacity_row(companies, users, bench.latency, capacity, parallelism).await;
            }
        }
    }

    println!("\nCPU time per token issued (apply 1: client, emulator and token store together):");
    for (n, version, cpu) in per_token {
        let shown = cpu.map_or_else(|| "n/a".to_string(), |c| format!("{:.2} ms", ms(c)));
        println!("  {n:>6} users, API {version}: {shown}");
    }
    println!("load average at the end: {}", load_average());
}
