//! How long `manifest::load` takes for large manifests: 10,000 service users in 1,000
//! companies (1x), then 2x and 4x, to show that the time grows linearly. Then how long
//! finding and reporting problems takes (load, and rendering the diagnostic as the commands
//! print it): 10,000 and 100,000 unknown fields, and the 10 MB of `- ` lines the fuzzer found
//! (3.5 million problems), to show that it grows linearly with the number of problems too.
//!
//! Run: `cargo bench --bench bench_validate`. The manifests are generated in a
//! temporary directory as 10 files of several documents each, with interpolation and secret
//! references, so that every stage of the loader is exercised.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::cast_precision_loss)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

const FILES: usize = 10;
const RUNS: usize = 3;

fn generate(dir: &Path, companies: usize, users_per_company: usize) -> Vec<PathBuf> {
    let per_file = companies / FILES;
    (0..FILES)
        .map(|f| {
            let mut text = String::from("# yaml-language-server: $schema=../schemas/ozform.schema.json\n");
            for c in f * per_file..(f + 1) * per_file {
                writeln!(text, "---\ncompanies:\n  - name: Company {c:05} (${{OZ_VAR_ENV:-bench}})").unwrap();
                writeln!(text, "    technical_meta_data: {{tier: gold, index: {c}}}\nservice_users:").unwrap();
                for u in 0..users_per_company {
                    write!(
                        text,
                        "  - email: svc-{u}@company-{c}.example\n    company: Company {c:05} (${{OZ_VAR_ENV:-bench}})\n\
                         \x20   first_name: Service\n    last_name: User {u}\n    password: {{env: PW_{c}_{u}}}\n\
                         \x20   permissions: {{biometry: true, collection: false, documents: true, quality: true}}\n\
                         \x20   token: {{issue: {}}}\n",
                        u % 2 == 0
                    )
                    .unwrap();
                }
            }
            let path = dir.join(format!("m{f:02}.yaml"));
            std::fs::write(&path, text).unwrap();
            path
        })
        .collect()
}

/// A manifest with `n` problems: unknown fields of one company, or (`flood`) empty items.
fn problems(dir: &Path, n: usize, flood: bool) -> PathBuf {
    let mut text = String::from("companies:\n");
    if flood {
        text.push_str(&"- \n".repeat(n));
    } else {
        text.push_str("  - name: Acme Bank\n");
        for i in 0..n {
            writeln!(text, "    field_{i}: {i}").unwrap();
        }
    }
    let path = dir.join("problems.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn bench_problems() {
    println!(
        "\n{:>10} {:>10} {:>12} {:>12} {:>14} {:>14}",
        "problems", "MiB", "best load", "render", "rendered KiB", "per 1k problems"
    );
    let env = |_: &str| None;
    for (n, flood) in [(10_000, false), (100_000, false), (3_500_000, true)] {
        let dir = tempfile::tempdir().unwrap();
        let file = problems(dir.path(), n, flood);
        let bytes = std::fs::metadata(&file).unwrap().len();
        let (mut best_load, mut best_render, mut size) = (f64::MAX, f64::MAX, 0);
        for _ in 0..RUNS {
            let start = Instant::now();
            let err = ozform::manifest::load(std::slice::from_ref(&file), &env).unwrap_err();
            best_load = best_load.min(start.elapsed().as_secs_f64());
            assert_eq!(err.total, n);
            let start = Instant::now();
            let rendered = format!("{:?}", miette::Report::new(err));
            best_render = best_render.min(start.elapsed().as_secs_f64());
            size = rendered.len();
        }
        println!(
            "{n:>10} {:>10.1} {:>10.3} s {:>10.3} s {:>14.1} {:>11.3} ms",
            bytes as f64 / (1024.0 * 1024.0),
            best_load,
            best_render,
            size as f64 / 1024.0,
            (best_load + best_render) * 1000.0 / (n as f64 / 1000.0)
        );
    }
}

fn main() {
    let env = |name: &str| (name == "OZ_VAR_ENV").then(|| "bench".to_string());
    println!(
        "{:>6} {:>10} {:>10} {:>10} {:>12} {:>14}",
        "size", "companies", "users", "MiB", "best load", "per 1k users"
    );
    for scale in [1, 2, 4] {
        let dir = tempfile::tempdir().unwrap();
        let (companies, users_per_company) = (1_000 * scale, 10);
        let files = generate(dir.path(), companies, users_per_company);
        let bytes: u64 = files.iter().map(|f| std::fs::metadata(f).unwrap().len()).sum();
        let mut best = f64::MAX;
        for _ in 0..RUNS {
            let start = Instant::now();
            let desired = ozform::manifest::load(&[dir.path().to_path_buf()], &env).unwrap();
            best = best.min(start.elapsed().as_secs_f64());
            assert_eq!(desired.users.len(), companies * users_per_company);
        }
        let users = companies * users_per_company;
        println!(
            "{:>5}x {companies:>10} {users:>10} {:>10.1} {:>10.3} s {:>11.2} ms",
            scale,
            bytes as f64 / (1024.0 * 1024.0),
            best,
            best * 1000.0 / (users as f64 / 1000.0)
        );
    }
    bench_problems();
}
