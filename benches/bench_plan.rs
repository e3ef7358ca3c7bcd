//! Times `plan::compute()` on a large in-memory state and prints the figures: 100,000 desired
//! service users in 10,000 companies (1x), then twice that (2x), with matching observed state
//! and some drift (metadata changes, renamed and missing users, missing and expiring tokens).
//! Linear growth shows as the 2x time and memory being about twice the 1x ones.
//!
//! Run: `cargo bench --bench bench_plan`. No I/O besides reading
//! `/proc/self/status` for the peak resident memory (`VmHWM`, Linux only).
#![allow(clippy::print_stdout)] // an example that exists to print its figures
#![allow(clippy::cast_precision_loss)] // counts far below 2^52 turned into f64 for display

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

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
                company_id: Some(id.clone()),
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
            company_id: Some(format!("c-{c:06}")),
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
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() {
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
