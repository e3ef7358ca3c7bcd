//! Safe in a pipeline (issue #12), through the real binary on the emulator: usage errors exit
//! 1 (2 is `plan --detailed-exitcode`'s), no token is issued without a place to keep it, a
//! killed run's tokens are recovered, one apply at a time per token directory, cancellation
//! stores every issued token, and twin companies made by concurrent applies are found at once.
//!
//! Timing never comes from sleeps: a run is killed or signalled once the emulator shows the
//! progress the scenario needs (users exist), with latency injected so the run is still going.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod common;

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
    let run = usage(&["apply", "--auto-approve"]).code(1);
    assert!(run.stderr.contains("required arguments were not provided"), "{}", run.stderr);
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
