//! `scripts/test`, the README's test command, run for real under a `PATH` this test builds: the
//! tools it looks for present or missing as each case needs, `apt-get`, `sudo`, `id`, `python3`
//! and `cargo` replaced by recording stand-ins, so that the script is proven to ask for the right
//! Debian packages, through sudo when it is not root, and to pass its arguments to
//! `cargo test --locked`, without installing anything on this machine. The script and the other
//! shell scripts of the gate (`.ci/run`, `.ci/python-tools`) pass shellcheck.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::python_tools::python_tool;
use crate::common::root;

/// The programs the script looks for and the Debian package each comes from, in its order.
const TOOLS: [(&str, &str); 7] = [
    ("fish", "fish"),
    ("zsh", "zsh"),
    ("man", "man-db"),
    ("groff", "groff-base"),
    ("jq", "jq"),
    ("curl", "curl"),
    ("kubectl", "kubernetes-client"),
];

/// The real programs the script and `.ci/python-tools` need to run at all.
const REAL: [&str; 6] = ["bash", "env", "dirname", "mkdir", "flock", "cmp"];

struct Machine {
    dir: tempfile::TempDir,
}

struct Case {
    uid: u32,
    sudo: bool,
    tools_present: bool,
    venv_works: bool,
    cargo_exit: i32,
}

impl Default for Case {
    fn default() -> Self {
        Self { uid: 0, sudo: false, tools_present: false, venv_works: true, cargo_exit: 0 }
    }
}

struct Ran {
    code: i32,
    stderr: String,
    /// Each stand-in call, in order: `apt-get update -qq`, `sudo apt-get …`, `cargo test …`.
    calls: Vec<String>,
}

fn stand_in(bin: &Path, name: &str, body: &str) {
    let path = bin.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn real_path_of(program: &str) -> PathBuf {
    let out = Command::new("sh").args(["-c", &format!("command -v {program}")]).output().unwrap();
    assert!(out.status.success(), "`{program}` is needed to run scripts/test and is not installed");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

impl Machine {
    fn new(case: &Case) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        for program in REAL {
            std::os::unix::fs::symlink(real_path_of(program), bin.join(program)).unwrap();
        }
        let record = r#"printf '%s\n' "${0##*/} $*" >>"$RECORD""#;
        stand_in(&bin, "apt-get", record);
        stand_in(&bin, "cargo", &format!("{record}\nexit {}", case.cargo_exit));
        stand_in(&bin, "id", &format!("[ \"$1\" = -u ] && echo {}", case.uid));
        // `python3 -c 'import ensurepip, venv'` is the script's only use of Python here: the
        // virtualenv of the tools is already up to date (`python_tool` made it).
        stand_in(&bin, "python3", if case.venv_works { "exit 0" } else { "exit 1" });
        if case.sudo {
            stand_in(&bin, "sudo", &format!("{record}\nexec \"$@\""));
        }
        if case.tools_present {
            for (program, _) in TOOLS {
                stand_in(&bin, program, "exit 0");
            }
        }
        Self { dir }
    }

    fn run(&self, args: &[&str]) -> Ran {
        let record = self.dir.path().join("calls");
        std::fs::write(&record, "").unwrap();
        // The virtualenv of the Python tools exists and is current: the script only finds it.
        let tools = python_tool("shellcheck");
        let venv = tools.parent().unwrap().parent().unwrap().to_path_buf();
        let out = Command::new(root().join("scripts/test"))
            .args(args)
            .env_clear()
            .env("PATH", self.dir.path().join("bin"))
            .env("HOME", self.dir.path())
            .env("RECORD", &record)
            .env("OZFORM_TOOLS_VENV", &venv)
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        Ran {
            code: out.status.code().unwrap_or(-1),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            calls: std::fs::read_to_string(&record).unwrap().lines().map(str::to_string).collect(),
        }
    }
}

fn packages(extra: &[&str]) -> String {
    TOOLS.iter().map(|(_, package)| *package).chain(extra.iter().copied()).collect::<Vec<_>>().join(" ")
}

#[test]
fn as_root_on_a_bare_machine_it_installs_every_missing_package_then_runs_cargo_test_with_its_arguments() {
    let machine = Machine::new(&Case { venv_works: false, ..Case::default() });
    let ran = machine.run(&["e2e::", "--", "--nocapture"]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let wanted = packages(&["python3-venv"]);
    assert_eq!(
        ran.calls,
        [
            "apt-get update -qq".to_string(),
            format!("apt-get install -y -qq --no-install-recommends {wanted}"),
            "cargo test --locked e2e:: -- --nocapture".to_string(),
        ]
    );
    assert!(ran.stderr.contains(&format!("installing Debian packages: {wanted}")), "{}", ran.stderr);
    assert!(ran.stderr.contains("Python tools in "), "{}", ran.stderr);
}

#[test]
fn without_root_it_installs_through_sudo() {
    let machine = Machine::new(&Case { uid: 1000, sudo: true, ..Case::default() });
    let ran = machine.run(&[]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let wanted = packages(&[]);
    assert_eq!(
        ran.calls,
        [
            "sudo apt-get update -qq".to_string(),
            "apt-get update -qq".to_string(),
            format!(
                "sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends {wanted}"
            ),
            format!("apt-get install -y -qq --no-install-recommends {wanted}"),
            "cargo test --locked".to_string(),
        ]
    );
}

#[test]
fn without_root_or_sudo_it_names_what_to_install_and_still_runs_the_tests() {
    let machine = Machine::new(&Case { uid: 1000, ..Case::default() });
    let ran = machine.run(&["plan::"]);
    assert_eq!(ran.calls, ["cargo test --locked plan::"], "no apt-get without root: {}", ran.stderr);
    assert!(
        ran.stderr.contains(&format!("`apt-get install {}` as root", packages(&[]))),
        "it says what to install: {}",
        ran.stderr
    );
    assert!(ran.stderr.contains("the tests that need them will fail"), "{}", ran.stderr);
}

#[test]
fn with_every_tool_present_it_installs_nothing_and_passes_on_cargos_exit_code() {
    let machine = Machine::new(&Case { tools_present: true, cargo_exit: 101, ..Case::default() });
    let ran = machine.run(&[]);
    assert_eq!(ran.calls, ["cargo test --locked"]);
    assert!(!ran.stderr.contains("installing"), "{}", ran.stderr);
    assert_eq!(ran.code, 101, "a failing test run fails the script");
}

#[test]
fn the_scripts_of_the_gate_pass_shellcheck() {
    for script in ["scripts/test", ".ci/run", ".ci/python-tools"] {
        let out = Command::new(python_tool("shellcheck"))
            .arg("--severity=style")
            .arg(root().join(script))
            .output()
            .unwrap();
        assert!(out.status.success(), "shellcheck {script}:\n{}", String::from_utf8_lossy(&out.stdout));
    }
}
