//! The only writer to the terminal. Knows whether stdout/stderr are terminals, whether colour
//! is wanted (never with `NO_COLOR`, never off a terminal unless forced), the verbosity, and the
//! log format. A broken pipe on stdout ends output quietly.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{IsTerminal, Write};

mod progress;

pub use progress::{Bar, JsonLines, LineWriter, PlainLines, plain_line};

/// Log line format for `tracing` (stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct Output {
    pub stdout_tty: bool,
    pub stderr_tty: bool,
    /// Colour on stdout.
    pub color: bool,
    /// -1 quiet, 0 normal, 1.. more.
    pub verbosity: i8,
    pub log_format: LogFormat,
}

impl Output {
    pub fn new(verbose: u8, quiet: bool, log_format: LogFormat) -> Self {
        let stdout_tty = std::io::stdout().is_terminal();
        let stderr_tty = std::io::stderr().is_terminal();
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let verbosity = if quiet { -1 } else { i8::try_from(verbose).unwrap_or(i8::MAX) };
        Self { stdout_tty, stderr_tty, color: stdout_tty && !no_color, verbosity, log_format }
    }

    /// Set up `tracing` on stderr: `RUST_LOG` wins, else the verbosity picks a level.
    pub fn init_tracing(&self) {
        use tracing_subscriber::EnvFilter;
        let default = match self.verbosity {
            i8::MIN..=-1 => "error",
            0 => "warn",
            1 => "info",
            2 => "debug",
            _ => "trace",
        };
        let filter =
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(format!("ozform={default}")));
        let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let _ = match self.log_format {
            LogFormat::Json => builder.json().try_init(),
            LogFormat::Text => builder.with_ansi(self.stderr_tty && !no_color).try_init(),
        };
    }

    /// Write to stdout. A closed pipe (`ozform plan | head`) is not an error.
    pub fn print(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    }

    /// Write a status line to stderr unless quiet.
    pub fn status(&self, text: &str) {
        if self.verbosity >= 0 {
            eprintln!("{text}");
        }
    }

    /// Write a warning to stderr (shown even when quiet).
    pub fn warn(&self, text: &str) {
        eprintln!("warning: {text}");
    }

    /// Ask a yes/no question on the terminal (stderr), Terraform-style: only `yes` approves.
    /// Returns false when stdin is not a terminal: a pipeline must say `--auto-approve`.
    pub fn confirm(&self, question: &str) -> bool {
        if !std::io::stdin().is_terminal() {
            return false;
        }
        eprint!("{question}\n  Only 'yes' will be accepted to approve.\n\n  Enter a value: ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer).is_ok() && answer.trim() == "yes"
    }

    /// Whether stdin is a terminal (an interactive user can be asked).
    pub fn stdin_tty(&self) -> bool {
        std::io::stdin().is_terminal()
    }

    /// Render a diagnostic to stderr (with source snippets when it has them).
    pub fn report(&self, report: &miette::Report) {
        eprintln!("{report:?}");
    }
}
