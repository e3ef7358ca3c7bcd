//! The read side at scale: `OzClient::observe` (what every plan starts with) on 10,000 service
//! users in 1,000 companies, served by the in-process emulator with 10 ms latency per request.
//! Printed for each list shape the client must handle: a bare array (no total: the client asks
//! for pages in windows of 1, 2, 4, … up to its bound of requests in flight while they come back
//! full, and a window past the end is spent) and an `items` envelope with a `total` (the client
//! asks for the remaining pages at once, within that bound).
//!
//! Run: `cargo bench --bench bench_observe` (env: `BENCH_USERS`, default 10000;
//! `BENCH_COMPANIES`, default 1000; `BENCH_LATENCY_MS`, default 10). A measurement, never a test.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used, clippy::cast_precision_loss)]

use std::time::{Duration, Instant};

use ozform::emulator::{self, CompanyRecord, EmulatorConfig, Envelope, Faults, Quirks, Snapshot, UserRecord};
use ozform::model::ApiVersion;
use ozform::oz::{ClientConfig, OzClient, VersionSetting};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn seed(companies: usize, users: usize) -> Snapshot {
    let companies: Vec<CompanyRecord> =
        (0..companies).map(|c| CompanyRecord::new(format!("Bench Company {c:05}"))).collect();
    let users = (0..users)
        .map(|u| {
            let company = &companies[u % companies.len()];
            let mut user = UserRecord::new(
                format!("svc-{u:06}@bench.example"),
                "CLIENT_SERVICE".into(),
                Some(company.company_id.clone()),
            );
            user.is_service = true;
            user.first_name = "Service".into();
            user.last_name = format!("User {u}");
            user
        })
        .collect();
    Snapshot { companies, users, service_tokens: Vec::new() }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(|_| "unknown".into(), |s| s.trim().to_string())
}

#[tokio::main]
async fn main() {
    let companies = env_or("BENCH_COMPANIES", 1000).max(1);
    let users = env_or("BENCH_USERS", 10_000);
    let latency_ms = env_or("BENCH_LATENCY_MS", 10) as u64;
    let mut config = EmulatorConfig::new(ApiVersion::V6);
    config.seed = Some(seed(companies, users));
    config.faults = Faults { latency_ms, ..Faults::default() };
    let handle = emulator::start(config).await.expect("emulator");
    let mut client_config =
        ClientConfig::new(handle.url(), handle.admin_email(), handle.admin_password().clone());
    client_config.api_version = VersionSetting::Fixed(ApiVersion::V6);
    let in_flight = client_config.max_in_flight;
    let page_size = client_config.page_size;
    let client = OzClient::connect(client_config).await.expect("connect");
    println!(
        "bench_observe: {companies} companies, {users} service users (+ the admin); latency {latency_ms} ms, \
         pages of {page_size}, client max_in_flight {in_flight}; load average {}",
        load_average()
    );

    let shapes = [
        ("bare array, no total", Quirks::default()),
        ("`items` + `total`", Quirks { envelope: Envelope::Items, ..Quirks::default() }),
    ];
    for (label, quirks) in shapes {
        handle.set_quirks(quirks);
        handle.reset_stats();
        let started = Instant::now();
        let observed = client.observe(&[]).await.expect("observe");
        let wall = started.elapsed();
        let stats = handle.stats();
        let floor = Duration::from_millis(latency_ms).mul_f64(stats.total_requests as f64 / in_flight as f64);
        println!(
            "  {label:<22} {:>5} companies {:>6} users  {:>4} requests (max {} in flight)  wall {:>7.1} ms  \
             bound {:>6.1} ms  ratio {:>5.2}",
            observed.companies.len(),
            observed.users.len(),
            stats.total_requests,
            stats.max_in_flight,
            wall.as_secs_f64() * 1000.0,
            floor.as_secs_f64() * 1000.0,
            wall.as_secs_f64() / floor.as_secs_f64(),
        );
        for (route, n) in &stats.requests_by_route {
            println!("      {n:>5}  {route}");
        }
    }
    handle.shutdown().await;
}
