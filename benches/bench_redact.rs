//! How long output-level scrubbing (`redact::scrub`, which `Output` runs on every write) takes
//! for 1 MB of output with 10,000 service tokens registered, and what the registry costs in
//! memory. Then 2 MB and 4 MB, to show that the time grows linearly with the text.
//!
//! Run: `cargo bench --bench bench_redact`. Tokens are 64 random hex characters
//! (the emulator's shape), registered the way the client does it: by creating a `Secret`. Two
//! texts: plan-like lines without escapes (read once), and JSON log lines whose `\"` make the
//! scrubber read them through a second layer too. A careless message echoing a token is
//! planted every 100 lines; every one must come out blanked. A baseline scans the plan text
//! against a single token: the difference is what 10,000 cost.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::cast_precision_loss)]

use std::fmt::Write as _;
use std::time::Instant;

use ozform::redact;
use ozform::secret::Secret;

const TOKENS: usize = 10_000;
const RUNS: usize = 5;
const MB: usize = 1 << 20;

/// A random-looking token of 64 hex characters, as the emulator issues.
fn token(rng: &mut fastrand::Rng) -> String {
    format!("{:032x}{:032x}", rng.u128(..), rng.u128(..))
}

/// About `size` bytes of output in the given style, with a token every 100 lines.
fn text(size: usize, json: bool, tokens: &[Secret]) -> (String, usize) {
    let mut out = String::with_capacity(size + 256);
    let mut planted = 0;
    let mut line = 0;
    while out.len() < size {
        let echo = if line % 100 == 99 {
            planted += 1;
            // A careless message that echoes a token (JSON-escaped once more in a JSON line).
            format!(" (error_message: \"token {}\")", tokens[line % tokens.len()].expose())
        } else {
            String::new()
        };
        if json {
            let message = format!("POST /api/users/ answered 400{echo} for svc-{line}@company.example");
            writeln!(
                out,
                "{}",
                serde_json::json!({"timestamp": "2026-11-30T12:00:00Z", "level": "DEBUG",
                    "fields": {"message": message, "status": 400}, "target": "ozform::oz::transport"})
            )
            .unwrap();
        } else {
            writeln!(
                out,
                "  + service_user/svc-{line}@company-{}.example{echo}\n      first_name: \"Service\"\n      password:   (sensitive)",
                line / 10
            )
            .unwrap();
        }
        line += 1;
    }
    (out, planted)
}

fn main() {
    let start = Instant::now();
    let mut rng = fastrand::Rng::with_seed(14);
    let tokens: Vec<Secret> = (0..TOKENS).map(|_| Secret::new(token(&mut rng))).collect();
    let registered = start.elapsed().as_secs_f64();
    let memory = redact::registry_memory_estimate();
    println!(
        "registry: {TOKENS} tokens of 64 characters registered in {:.0} ms; hash tables about {:.1} MiB ({:.0} bytes per token)",
        registered * 1e3,
        memory as f64 / MB as f64,
        memory as f64 / TOKENS as f64
    );
    let mut one = redact::Redactor::new(redact::MIN_REGISTERED_LEN);
    one.insert(tokens[0].expose());
    let (sample, _) = text(MB, false, &tokens);
    let mut best = f64::MAX;
    for _ in 0..RUNS {
        let start = Instant::now();
        let scrubbed = one.redact(&sample);
        best = best.min(start.elapsed().as_secs_f64());
        assert_eq!(scrubbed.matches(redact::SENSITIVE).count(), sample.matches(redact::SENSITIVE).count());
    }
    println!("baseline: 1 MiB of plan text against 1 token in {:.1} ms", best * 1e3);
    println!("{:>6} {:>6} {:>12} {:>12} {:>10}", "text", "MiB", "best scrub", "per MiB", "blanked");
    for json in [false, true] {
        for scale in [1, 2, 4] {
            let (text, planted) = text(scale * MB, json, &tokens);
            let mut best = f64::MAX;
            let mut blanked = 0;
            for _ in 0..RUNS {
                let start = Instant::now();
                let scrubbed = redact::scrub(&text);
                best = best.min(start.elapsed().as_secs_f64());
                blanked = scrubbed.matches(redact::SENSITIVE).count();
            }
            let expected = planted + if json { 0 } else { text.matches(redact::SENSITIVE).count() };
            assert_eq!(blanked, expected, "every planted token is blanked");
            println!(
                "{:>6} {:>6.1} {:>9.1} ms {:>9.1} ms {:>10}",
                if json { "json" } else { "plan" },
                text.len() as f64 / MB as f64,
                best * 1e3,
                best * 1e3 / (text.len() as f64 / MB as f64),
                planted
            );
        }
    }
}
