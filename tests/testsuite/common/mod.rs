//! Shared helpers for integration tests: a CLI test builder in the style of `just`'s `Test`,
//! and the test doubles of the seams: `fake_effects` (an in-memory `Effects`), `memory_store`
//! (an in-memory `TokenStore`), `recording` (a `Progress` that keeps every event), and
//! `builders` (desired and observed objects for planner and renderer tests); and (in
//! `emulator`) builders of emulators, clients and seeds; `hostile` puts a hostile server in
//! front of the emulator and runs the binary reading its peak memory; `world` runs the binary
//! against an emulator with canary secrets and scans everything it printed; `python_tools`
//! finds (and on first need installs) the real Python tools some tests drive; `ci` runs the CI
//! recipes' script and fakes the GitHub and GitLab APIs it talks to.
#![allow(dead_code, clippy::unwrap_used, clippy::missing_panics_doc)]

pub mod builders;
pub mod ci;
pub mod emulator;
pub mod fake_effects;
pub mod hostile;
pub mod memory_store;
pub mod python_tools;
pub mod recording;
#[macro_use]
pub mod world;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Run the `ozform` binary: `Cli::new().args(["validate", "x"]).run()`.
pub struct Cli {
    cmd: Command,
    stdin: Option<String>,
}

/// The variables ozform reads that a test run must not inherit from the test's environment.
pub const OZFORM_VARIABLES: [&str; 7] = [
    "OZ_API_URL",
    "OZ_ADMIN_EMAIL",
    "OZ_ADMIN_PASSWORD",
    "OZ_API_VERSION",
    "OZ_TOKEN_DIR",
    "OZ_TOKEN_STORE",
    "RUST_LOG",
];

impl Cli {
    pub fn new() -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ozform"));
        // A clean, colourless, non-interactive environment.
        for var in OZFORM_VARIABLES {
            cmd.env_remove(var);
        }
        cmd.env("NO_COLOR", "1");
        Self { cmd, stdin: None }
    }
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd.args(args);
        self
    }
    pub fn env(mut self, k: &str, v: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.env(k, v);
        self
    }
    /// Remove a variable the test process (or an earlier `env`) would pass on.
    pub fn env_remove(mut self, k: &str) -> Self {
        self.cmd.env_remove(k);
        self
    }
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.cmd.current_dir(dir);
        self
    }
    pub fn stdin(mut self, s: &str) -> Self {
        self.stdin = Some(s.to_string());
        self
    }
    /// Start the binary and return at once (stdin closed, stdout and stderr piped), for tests
    /// that signal or kill it mid-run.
    pub fn spawn(mut self) -> std::process::Child {
        self.cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        self.cmd.spawn().unwrap()
    }
    pub fn run(mut self) -> Run {
        use std::io::Write;
        self.cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = self.cmd.spawn().unwrap();
        let input = self.stdin.take().unwrap_or_default();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let out: Output = child.wait_with_output().unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// What a run printed and returned.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Assert the exit code, showing both streams when it differs.
    pub fn code(self, expected: i32) -> Self {
        assert_eq!(
            self.code, expected,
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// The repository root (for examples and fixtures).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What `Cli::run_closing` does with one of the child's output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// Close it at once, before the child writes (`cmd >&-`-like: every write fails).
    Closed,
    /// Read one line, then close it (`cmd | head -1`).
    OneLine,
    /// Read it to the end.
    All,
}

impl Cli {
    /// Run with stdout and stderr read as given (`Reader`); what was read is returned. Each
    /// stream is read on its own thread, so a child blocked on one never stalls the other.
    pub fn run_closing(mut self, stdout: Reader, stderr: Reader) -> Run {
        use std::io::{BufRead, BufReader, Read};
        fn read(stream: impl Read + Send + 'static, how: Reader) -> std::thread::JoinHandle<String> {
            std::thread::spawn(move || {
                let mut text = String::new();
                let mut reader = BufReader::new(stream);
                match how {
                    Reader::Closed => {}
                    Reader::OneLine => {
                        let _ = reader.read_line(&mut text);
                    }
                    Reader::All => {
                        let _ = reader.read_to_string(&mut text);
                    }
                }
                text
            })
        }
        self.cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = self.cmd.spawn().unwrap();
        let out = read(child.stdout.take().unwrap(), stdout);
        let err = read(child.stderr.take().unwrap(), stderr);
        let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
        let status = child.wait().unwrap();
        Run { code: status.code().unwrap_or(-1), stdout, stderr }
    }
}
