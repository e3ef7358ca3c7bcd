//! Throughput of the built-in emulator on loopback: many concurrent keep-alive reqwest clients
//! drive one read route and two write routes for a bounded time each, then print requests/s.
//!
//! `cargo bench --bench bench_emulator` (env: `BENCH_SECS` per route, default 3;
//! `BENCH_CONCURRENCY`, default 64). Figures depend on the machine and its load, which is
//! printed alongside: this is a measurement, never a test.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used, clippy::cast_precision_loss)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ozform::emulator::{self, EmulatorConfig};
use ozform::model::ApiVersion;
use serde_json::{Value, json};

/// Tasks sharing one reqwest client (and its connection pool).
const TASKS_PER_CLIENT: usize = 8;

#[derive(Clone, Copy)]
enum Route {
    ReadUser,
    PatchUser,
    CreateCompany,
}

impl Route {
    fn label(self) -> &'static str {
        match self {
            Route::ReadUser => "GET   /api/users/{user_id}",
            Route::PatchUser => "PATCH /api/users/{user_id}",
            Route::CreateCompany => "POST  /api/companies/",
        }
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(|_| "unknown".into(), |s| s.trim().to_string())
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let secs = env_or("BENCH_SECS", 3).clamp(1, 60);
    let concurrency = usize::try_from(env_or("BENCH_CONCURRENCY", 64).clamp(1, 1024)).unwrap();

    let handle = emulator::start(EmulatorConfig::new(ApiVersion::V6)).await.expect("emulator");
    let base = handle.url();
    let setup = reqwest::Client::new();
    let login: Value = setup
        .post(format!("{base}/api/authorize/auth"))
        .json(&json!({"credentials": {"email": handle.admin_email(), "password": handle.admin_password().expose()}}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("login body");
    let token = login["access_token"].as_str().expect("token").to_string();
    let company: Value = setup
        .post(format!("{base}/api/companies/"))
        .header(emulator::TOKEN_HEADER, &token)
        .json(&json!({"name": "Bench"}))
        .send()
        .await
        .expect("company")
        .json()
        .await
        .expect("company body");
    let user: Value = setup
        .post(format!("{base}/api/users/"))
        .header(emulator::TOKEN_HEADER, &token)
        .json(&json!({"credentials": {"email": "bench@x.test", "password": "pw"},
                      "profile": {"company_id": company["company_id"], "user_type": "CLIENT_SERVICE"}}))
        .send()
        .await
        .expect("user")
        .json()
        .await
        .expect("user body");
    let user_id = user["user_id"].as_str().expect("user id").to_string();

    println!(
        "emulator bench: {concurrency} concurrent keep-alive clients, {secs}s per route, {} cores, load before: {}",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        load_average()
    );
    for route in [Route::ReadUser, Route::PatchUser, Route::CreateCompany] {
        handle.reset_stats();
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs(secs);
        let started = Instant::now();
        let mut tasks = Vec::new();
        let clients: Vec<reqwest::Client> =
            (0..concurrency.div_ceil(TASKS_PER_CLIENT)).map(|_| reqwest::Client::new()).collect();
        for task in 0..concurrency {
            let client = clients[task / TASKS_PER_CLIENT].clone();
            let (ok, failed) = (Arc::clone(&ok), Arc::clone(&failed));
            let (base, token, user_id) = (base.clone(), token.clone(), user_id.clone());
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    n += 1;
                    let request = match route {
                        Route::ReadUser => client.get(format!("{base}/api/users/{user_id}")),
                        Route::PatchUser => client
                            .patch(format!("{base}/api/users/{user_id}"))
                            .json(&json!({"profile": {"first_name": format!("t{task}-{n}")}})),
                        Route::CreateCompany => client
                            .post(format!("{base}/api/companies/"))
                            .json(&json!({"name": format!("c{task}-{n}")})),
                    };
                    let answer = request.header(emulator::TOKEN_HEADER, &token).send().await;
                    match answer {
                        Ok(response) if response.status().is_success() => {
                            let _ = response.bytes().await;
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        for task in tasks {
            task.await.expect("bench task");
        }
        let elapsed = started.elapsed().as_secs_f64();
        let ok = ok.load(Ordering::Relaxed);
        let stats = handle.stats();
        println!(
            "{}: {:>8.0} req/s ({ok} ok, {} failed, max in flight {})",
            route.label(),
            ok as f64 / elapsed,
            failed.load(Ordering::Relaxed),
            stats.max_in_flight
        );
    }
    println!("load after: {}", load_average());
    handle.shutdown().await;
}
