//! Hostile manifests through the binary (issue #14): what a pull request can put in a manifest
//! directory must not make `ozform validate` or `ozform plan` print a secret of the CI job,
//! write control characters to its terminal, hang, or exhaust its memory. Every run has canary
//! secrets in its environment; `plan` points at a closed loopback port and must fail while
//! loading, before any connection.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use crate::common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use common::{Cli, Run};

const ADMIN_CANARY: &str = "canary-admin-5d1c7e";
const WEB_CANARY: &str = "canary-web-0b9f42";
const OTHER_CANARY: &str = "canary-other-e83a11";

/// `ozform ARGS…` with the secrets a CI job holds.
fn ozform<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(args: I) -> Cli {
    Cli::new()
        .args(args)
        .env("OZ_ADMIN_PASSWORD", ADMIN_CANARY)
        .env("ACME_WEB_PASSWORD", WEB_CANARY)
        .env("SOME_CI_TOKEN", OTHER_CANARY)
}

/// `ozform validate PATH`, run in `dir` (so that messages name short relative paths).
fn validate(dir: &Path, path: &str) -> Run {
    ozform(["validate", path]).current_dir(dir).run()
}

/// `ozform plan PATH` in `dir`, against a closed port: it must fail while loading the
/// manifests.
fn plan(dir: &Path, path: &str) -> Run {
    ozform(["plan", path, "--api-url", "http://127.0.0.1:9", "--admin-email", "a@b.c"]).current_dir(dir).run()
}

/// Nothing secret and nothing a terminal would act on was printed.
fn assert_clean(run: &Run) {
    for output in [&run.stdout, &run.stderr] {
        for canary in [ADMIN_CANARY, WEB_CANARY, OTHER_CANARY] {
            assert!(!output.contains(canary), "{canary} printed:\n{output}");
        }
        assert!(!output.contains('\u{1b}'), "ESC printed:\n{output:?}");
    }
}

/// A run that failed loading the manifests with `code`, before any connection.
fn assert_refused(run: &Run, code: &str) {
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains(&format!("ozform::manifest::{code}")), "{}", run.stderr);
    assert!(!run.stderr.contains("ozform::oz::"), "it connected:\n{}", run.stderr);
    assert_clean(run);
}

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

const MANIFEST: &str = "companies: [{name: Acme Bank}]\n";

#[test]
fn a_link_to_proc_self_environ_is_refused_and_the_environment_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m");
    write(&m.join("a.yaml"), MANIFEST);
    symlink("/proc/self/environ", m.join("zz.yaml")).unwrap();
    for run in [validate(dir.path(), "m"), plan(dir.path(), "m")] {
        assert_refused(&run, "link_outside");
        assert!(run.stderr.contains("`m/zz.yaml` is a symbolic link to a place outside the paths given"));
        assert!(!run.stderr.contains("/proc"), "the target is named:\n{}", run.stderr);
    }
    // A shell glob hands the link over by name: it stands for itself, not its target.
    let run = ozform(["validate", "m/a.yaml", "m/zz.yaml"]).current_dir(dir.path()).run();
    assert_refused(&run, "link_outside");
}

#[test]
fn a_link_to_a_file_outside_the_paths_given_is_refused_naming_the_link() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m");
    write(&m.join("a.yaml"), MANIFEST);
    let outside = write(&dir.path().join("outside/shadow.yaml"), &format!("root:{ADMIN_CANARY}:19000:0\n"));
    symlink(&outside, m.join("shadow.yaml")).unwrap();
    for run in [validate(dir.path(), "m"), plan(dir.path(), "m")] {
        assert_refused(&run, "link_outside");
        assert!(run.stderr.contains("`m/shadow.yaml` is a symbolic link"), "{}", run.stderr);
        assert!(!run.stderr.contains("outside/"), "the target is named:\n{}", run.stderr);
    }
}

#[test]
fn a_link_inside_the_paths_given_is_followed_and_its_file_read_once() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m");
    write(&m.join("shared/companies.yaml"), MANIFEST);
    symlink("shared/companies.yaml", m.join("companies.yaml")).unwrap();
    symlink("shared", m.join("again")).unwrap();
    let run = validate(dir.path(), "m").code(0);
    assert_eq!(run.stdout, "ok: 1 company, 0 service users, 0 tokens in 1 file\n");
    assert_clean(&run);
}

#[test]
fn a_value_that_interpolates_the_admin_password_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("m.yaml"),
        "companies:\n  - name: Acme Bank\n    technical_meta_data: {note: \"${OZ_ADMIN_PASSWORD}\"}\n\
         service_users:\n  - {email: \"${OZ_ADMIN_PASSWORD:-x}@acme.example\", company: Acme Bank}\n",
    );
    for run in [validate(dir.path(), "m.yaml"), plan(dir.path(), "m.yaml")] {
        assert_refused(&run, "secret_interpolation");
        assert!(run.stderr.contains("the manifests have 2 problems"), "{}", run.stderr);
    }
}

#[test]
fn a_value_that_interpolates_a_service_users_password_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("a.yaml"), "companies:\n  - name: \"Acme ${ACME_WEB_PASSWORD}\"\n");
    write(
        &dir.path().join("b.yaml"),
        "service_users:\n  - {email: svc@acme.example, company: Acme, password: {env: ACME_WEB_PASSWORD}}\n",
    );
    assert_refused(&validate(dir.path(), "."), "secret_interpolation");
}

#[test]
fn terminal_escapes_in_a_manifest_never_reach_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("m.yaml"),
        "companies:\n  - name: \"\\e]0;owned\\a\\e[2J\"\n  - name: \"\\e]0;owned\\a\\e[2J\"\n\
         service_users:\n  - {email: \"\\e[31mx\", company: \"\\e[2J\"}\n",
    );
    let run = validate(dir.path(), "m.yaml");
    assert_refused(&run, "duplicate_company");
    assert!(run.stderr.contains("`\\u{1b}]0;owned\\u{7}\\u{1b}[2J`"), "{}", run.stderr);
    // Raw in the source, too.
    write(&dir.path().join("m.yaml"), "companies:\n  - name: Acme \u{1b}[2J\u{1b}]0;owned\u{7}\n");
    assert_refused(&validate(dir.path(), "m.yaml"), "yaml_syntax");
}

#[test]
fn dev_zero_is_refused_without_reading_it() {
    assert_refused(&validate(Path::new("/"), "/dev/zero"), "not_a_file");
}

#[test]
fn a_fifo_is_refused_when_named_and_skipped_with_a_warning_in_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe.yaml");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    // Should ozform open the FIFO, this writer hands it a manifest and the assertions below
    // fail, instead of ozform blocking forever.
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            use std::io::Write as _;
            let mut pipe = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
            let _ = pipe.write_all(b"companies: [{name: read from the FIFO}]\n");
        })
    };
    let run = validate(dir.path(), "pipe.yaml");
    assert_refused(&run, "not_a_file");
    assert!(run.stderr.contains("`pipe.yaml` is not a regular file or directory: it is a FIFO"));
    write(&dir.path().join("a.yaml"), MANIFEST);
    let run = validate(dir.path(), ".").code(0);
    assert_eq!(run.stdout, "ok: 1 company, 0 service users, 0 tokens in 1 file\n");
    assert_eq!(run.stderr, "warning: skipped `./pipe.yaml`: it is a FIFO, not a regular file\n");
    assert_clean(&run);
    // Nobody read it: open it here, so that the writer finishes.
    let _ = std::fs::read(&fifo);
    writer.join().unwrap();
}

#[test]
fn a_50_mb_file_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::File::create(dir.path().join("big.yaml")).unwrap().set_len(50 << 20).unwrap();
    let run = validate(dir.path(), "big.yaml");
    assert_refused(&run, "too_large");
    assert!(run.stderr.contains("`big.yaml` is larger than 16 MiB, the limit for one manifest file"));
}

#[test]
fn ten_thousand_problems_are_reported_capped_with_a_count_of_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("companies:\n  - name: Acme Bank\n");
    for i in 0..10_000 {
        text.push_str("    x");
        text.push_str(&i.to_string());
        text.push_str(": 1\n");
    }
    write(&dir.path().join("flood.yaml"), &text);
    for run in [validate(dir.path(), "flood.yaml"), plan(dir.path(), "flood.yaml")] {
        assert_refused(&run, "unknown_field");
        assert!(run.stderr.contains("the manifests have 10000 problems"), "{}", run.stderr);
        assert_eq!(run.stderr.matches("ozform::manifest::unknown_field").count(), 100);
        assert!(run.stderr.contains("and 9900 more problems"), "{}", run.stderr);
    }
}
