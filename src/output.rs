//! The only writer to the terminal. Knows whether stdout/stderr are terminals, whether colour
//! is wanted (never with `NO_COLOR`, never off a terminal unless forced), the verbosity, and the
//! log format.
//!
//! Every byte goes out through one private `write`, which
//! - scrubs the text against the registry of live secrets (`redact::scrub`): a password or a
//!   token is blanked here even if some layer forgot to, in any escaped form;
//! - ignores write errors: a closed or failing stdout or stderr (`ozform apply 2>&1 | head -1`)
//!   never panics and never stops the work. There is no print macro in this module (they panic
//!   on a closed stream); the lints `print_stdout` and `print_stderr` hold here as everywhere.
//!
//! The `tracing` writer (`log_writer`) and diagnostics (`report`) go the same way. A diagnostic
//! is scrubbed part by part before miette lays it out, since wrapping could split a secret
//! across lines. The apply progress bar is indicatif's: it draws on stderr by itself, only when
//! stderr is a terminal, and ignores its own draw errors (a test below holds indicatif to that);
//! its text is addresses and counts, never a secret.
//!
//! Tests point an `Output` at in-memory writers (`Output::to_writers`, `Capture`).

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex, PoisonError};

use miette::{Diagnostic, LabeledSpan, ReportHandler, Severity, SourceCode};

use crate::redact;

mod progress;

pub use progress::{Bar, JsonLines, LineWriter, PlainLines, plain_line};

/// Log line format for `tracing` (stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone)]
pub struct Output {
    pub stdout_tty: bool,
    pub stderr_tty: bool,
    /// Colour on stdout.
    pub color: bool,
    /// -1 quiet, 0 normal, 1.. more.
    pub verbosity: i8,
    pub log_format: LogFormat,
    sinks: Sinks,
}

/// Where the bytes go.
#[derive(Clone)]
enum Sinks {
    /// The process's stdout and stderr.
    Process,
    /// Writers given by a test.
    Writers { stdout: SharedWriter, stderr: SharedWriter },
}

type SharedWriter = Arc<Mutex<dyn Write + Send>>;

#[derive(Debug, Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output")
            .field("stdout_tty", &self.stdout_tty)
            .field("stderr_tty", &self.stderr_tty)
            .field("color", &self.color)
            .field("verbosity", &self.verbosity)
            .field("log_format", &self.log_format)
            .field("sinks", &matches!(self.sinks, Sinks::Process).then_some("process").unwrap_or("writers"))
            .finish()
    }
}

fn no_color_env() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

impl Output {
    pub fn new(verbose: u8, quiet: bool, log_format: LogFormat) -> Self {
        let stdout_tty = std::io::stdout().is_terminal();
        let stderr_tty = std::io::stderr().is_terminal();
        let verbosity = if quiet { -1 } else { i8::try_from(verbose).unwrap_or(i8::MAX) };
        Self {
            stdout_tty,
            stderr_tty,
            color: stdout_tty && !no_color_env(),
            verbosity,
            log_format,
            sinks: Sinks::Process,
        }
    }

    /// An `Output` that writes to these writers instead of stdout and stderr (tests): no
    /// terminal, no colour. Everything is scrubbed as it would be on the terminal.
    pub fn to_writers(
        stdout: impl Write + Send + 'static,
        stderr: impl Write + Send + 'static,
        verbosity: i8,
        log_format: LogFormat,
    ) -> Self {
        Self {
            stdout_tty: false,
            stderr_tty: false,
            color: false,
            verbosity,
            log_format,
            sinks: Sinks::Writers {
                stdout: Arc::new(Mutex::new(stdout)),
                stderr: Arc::new(Mutex::new(stderr)),
            },
        }
    }

    /// The one way out: scrub, write, flush, and ignore a failure (a closed pipe, a full
    /// disk): output is never a reason to stop.
    fn write(&self, stream: Stream, text: &str) {
        let text = redact::scrub(text);
        let bytes = text.as_bytes();
        let _ = match (&self.sinks, stream) {
            (Sinks::Process, Stream::Stdout) => {
                let mut out = std::io::stdout().lock();
                out.write_all(bytes).and_then(|()| out.flush())
            }
            (Sinks::Process, Stream::Stderr) => {
                let mut err = std::io::stderr().lock();
                err.write_all(bytes).and_then(|()| err.flush())
            }
            (Sinks::Writers { stdout: w, .. }, Stream::Stdout)
            | (Sinks::Writers { stderr: w, .. }, Stream::Stderr) => {
                // A writer that panicked once is still worth writing to.
                let mut w = w.lock().unwrap_or_else(PoisonError::into_inner);
                w.write_all(bytes).and_then(|()| w.flush())
            }
        };
    }

    /// Colour and Unicode on stderr (diagnostics, log lines).
    fn stderr_color(&self) -> bool {
        self.stderr_tty && !no_color_env()
    }

    /// Set up `tracing` on stderr (through `log_writer`): `RUST_LOG` wins, else the verbosity
    /// picks a level.
    pub fn init_tracing(&self) {
        use tracing_subscriber::util::SubscriberInitExt;
        let _ = self.subscriber().try_init();
    }

    /// The subscriber `init_tracing` installs; tests may install it for a scope.
    pub fn subscriber(&self) -> Box<dyn tracing::Subscriber + Send + Sync> {
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
        // `log_internal_errors` would report a failed write with `eprintln!`, which panics
        // when stderr is closed; the writer ignores failures anyway.
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(self.log_writer())
            .log_internal_errors(false);
        match self.log_format {
            LogFormat::Json => Box::new(builder.json().finish()),
            LogFormat::Text => Box::new(builder.with_ansi(self.stderr_color()).finish()),
        }
    }

    /// A `tracing` writer: each event is collected, then scrubbed and written to stderr whole.
    pub fn log_writer(&self) -> LogWriter {
        LogWriter { output: self.clone() }
    }

    /// Write to stdout. A closed pipe (`ozform plan | head`) is not an error.
    pub fn print(&self, text: &str) {
        self.write(Stream::Stdout, text);
    }

    /// Write a status line to stderr unless quiet.
    pub fn status(&self, text: &str) {
        if self.verbosity >= 0 {
            self.write(Stream::Stderr, &format!("{text}\n"));
        }
    }

    /// Write a warning to stderr (shown even when quiet).
    pub fn warn(&self, text: &str) {
        self.write(Stream::Stderr, &format!("warning: {text}\n"));
    }

    /// Ask a yes/no question on the terminal (stderr), Terraform-style: only `yes` approves.
    /// Returns false when stdin is not a terminal: a pipeline must say `--auto-approve`.
    pub fn confirm(&self, question: &str) -> bool {
        if !std::io::stdin().is_terminal() {
            return false;
        }
        self.write(
            Stream::Stderr,
            &format!("{question}\n  Only 'yes' will be accepted to approve.\n\n  Enter a value: "),
        );
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer).is_ok() && answer.trim() == "yes"
    }

    /// Whether stdin is a terminal (an interactive user can be asked).
    pub fn stdin_tty(&self) -> bool {
        std::io::stdin().is_terminal()
    }

    /// Render a diagnostic to stderr (with source snippets when it has them).
    pub fn report(&self, report: &miette::Report) {
        if self.log_format == LogFormat::Json {
            // One JSON line, like every other event of `--log-format json`.
            let shown = Scrubbed::of(report.as_ref());
            let mut line = serde_json::json!({
                "timestamp": now_rfc3339(),
                "level": "ERROR",
                "message": shown.message,
            });
            if let Some(code) = &shown.code {
                line["code"] = serde_json::json!(code);
            }
            if let Some(help) = &shown.help {
                line["help"] = serde_json::json!(help);
            }
            let related: Vec<String> = report.related().into_iter().flatten().map(|r| scrubbed(&r)).collect();
            if !related.is_empty() {
                line["related"] = serde_json::json!(related);
            }
            self.write(Stream::Stderr, &format!("{line}\n"));
            return;
        }
        let color = self.stderr_color();
        let handler = miette::MietteHandlerOpts::new().color(color).unicode(color).build();
        let scrubbed = Scrubbed::of(report.as_ref());
        self.write(Stream::Stderr, &format!("{:?}\n", Rendered { handler: &handler, diagnostic: &scrubbed }));
    }
}

/// `Output::log_writer`: a `tracing_subscriber::fmt::MakeWriter` through `Output`.
#[derive(Debug, Clone)]
pub struct LogWriter {
    output: Output,
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine<'a>;

    fn make_writer(&'a self) -> LogLine<'a> {
        LogLine { output: &self.output, buf: Vec::new() }
    }
}

/// One event's bytes, written (scrubbed, whole) when dropped: a secret cannot be split
/// between two writes.
#[derive(Debug)]
pub struct LogLine<'a> {
    output: &'a Output,
    buf: Vec<u8>,
}

impl Write for LogLine<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine<'_> {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.output.write(Stream::Stderr, &String::from_utf8_lossy(&self.buf));
        }
    }
}

/// An in-memory writer for tests: give clones to `Output::to_writers`, read with `text`.
#[derive(Debug, Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }
}

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A diagnostic rendered by a miette handler (through `Debug`, which is how miette renders).
struct Rendered<'a> {
    handler: &'a miette::MietteHandler,
    diagnostic: &'a dyn Diagnostic,
}

impl std::fmt::Debug for Rendered<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.handler.debug(self.diagnostic, f)
    }
}

/// A diagnostic with every text it shows scrubbed, and everything else (source code, spans,
/// severity) passed through, so miette lays it out exactly as it would the original.
#[derive(Debug)]
struct Scrubbed<'a> {
    inner: &'a dyn Diagnostic,
    message: String,
    code: Option<String>,
    help: Option<String>,
    url: Option<String>,
    labels: Option<Vec<LabeledSpan>>,
    cause: Option<Box<Cause>>,
    diagnostic_source: Option<Box<Scrubbed<'a>>>,
    related: Option<Vec<Scrubbed<'a>>>,
}

/// Now, RFC 3339 in UTC with microseconds, as `tracing`'s JSON lines stamp theirs.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}

fn scrubbed(text: &dyn std::fmt::Display) -> String {
    redact::scrub(&text.to_string()).into_owned()
}

impl<'a> Scrubbed<'a> {
    fn of(inner: &'a dyn Diagnostic) -> Self {
        Self {
            inner,
            message: scrubbed(inner),
            code: inner.code().map(|c| scrubbed(&c)),
            help: inner.help().map(|h| scrubbed(&h)),
            url: inner.url().map(|u| scrubbed(&u)),
            labels: inner.labels().map(|labels| {
                labels
                    .map(|l| {
                        let label = l.label().map(|t| redact::scrub(t).into_owned());
                        if l.primary() {
                            LabeledSpan::new_primary_with_span(label, *l.inner())
                        } else {
                            LabeledSpan::new_with_span(label, *l.inner())
                        }
                    })
                    .collect()
            }),
            cause: inner.source().map(|s| Box::new(Cause::of(s))),
            diagnostic_source: inner.diagnostic_source().map(|d| Box::new(Scrubbed::of(d))),
            related: inner.related().map(|related| related.map(Scrubbed::of).collect()),
        }
    }
}

impl std::fmt::Display for Scrubbed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Scrubbed<'_> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause.as_deref().map(|c| c as &(dyn std::error::Error + 'static))
    }
}

impl Diagnostic for Scrubbed<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn std::fmt::Display + 'b>> {
        self.code.as_ref().map(|c| Box::new(c) as Box<dyn std::fmt::Display>)
    }
    fn severity(&self) -> Option<Severity> {
        self.inner.severity()
    }
    fn help<'b>(&'b self) -> Option<Box<dyn std::fmt::Display + 'b>> {
        self.help.as_ref().map(|h| Box::new(h) as Box<dyn std::fmt::Display>)
    }
    fn url<'b>(&'b self) -> Option<Box<dyn std::fmt::Display + 'b>> {
        self.url.as_ref().map(|u| Box::new(u) as Box<dyn std::fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.inner.source_code()
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.labels.as_ref().map(|l| Box::new(l.iter().cloned()) as Box<dyn Iterator<Item = LabeledSpan>>)
    }
    fn related<'b>(&'b self) -> Option<Box<dyn Iterator<Item = &'b dyn Diagnostic> + 'b>> {
        self.related.as_ref().map(|r| {
            Box::new(r.iter().map(|d| d as &dyn Diagnostic)) as Box<dyn Iterator<Item = &dyn Diagnostic>>
        })
    }
    fn diagnostic_source(&self) -> Option<&dyn Diagnostic> {
        self.diagnostic_source.as_deref().map(|d| d as &dyn Diagnostic)
    }
}

/// One link of an error's `source()` chain, scrubbed (owned, so it can be `'static`).
#[derive(Debug)]
struct Cause {
    message: String,
    source: Option<Box<Cause>>,
}

impl Cause {
    fn of(error: &dyn std::error::Error) -> Self {
        Self { message: scrubbed(&error), source: error.source().map(|s| Box::new(Cause::of(s))) }
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|c| c as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that fails every write, as a closed pipe does.
    struct Closed;

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
    }

    fn captured(verbosity: i8, format: LogFormat) -> (Output, Capture, Capture) {
        let (out, err) = (Capture::default(), Capture::default());
        (Output::to_writers(out.clone(), err.clone(), verbosity, format), out, err)
    }

    #[test]
    fn closed_streams_swallow_every_kind_of_output() {
        let output = Output::to_writers(Closed, Closed, 3, LogFormat::Text);
        output.print("plan\n");
        output.status("status");
        output.warn("warning");
        output.report(&miette::Report::msg("an error"));
        tracing::subscriber::with_default(output.subscriber(), || tracing::error!("a log line"));
    }

    #[test]
    fn streams_go_where_they_belong() {
        let (output, out, err) = captured(0, LogFormat::Text);
        output.print("plan\n");
        output.status("status");
        output.warn("careful");
        assert_eq!(out.text(), "plan\n");
        assert_eq!(err.text(), "status\nwarning: careful\n");
    }

    #[test]
    fn quiet_drops_status_lines_but_not_warnings() {
        let (output, _, err) = captured(-1, LogFormat::Text);
        output.status("status");
        output.warn("careful");
        assert_eq!(err.text(), "warning: careful\n");
    }

    #[test]
    fn everything_written_is_scrubbed() {
        let secret = crate::secret::Secret::new("output-canary-\"ä\"-41c7d2");
        let (output, out, err) = captured(2, LogFormat::Json);
        output.print(&format!("a {} b\n", secret.expose()));
        output.status(r#"c output-canary-\"\u00e4\"-41c7d2 d"#);
        output.warn("e output-canary-%22%C3%A4%22-41c7d2 f");
        tracing::subscriber::with_default(output.subscriber(), || {
            tracing::warn!(value = secret.expose(), "g {} h", secret.expose());
        });
        assert_eq!(out.text(), "a (sensitive) b\n");
        let err = err.text();
        assert!(err.contains("c (sensitive) d\nwarning: e (sensitive) f\n"), "{err}");
        assert!(err.contains("g (sensitive) h") && err.contains(r#""value":"(sensitive)""#), "{err}");
        assert!(!err.contains("41c7d2"), "{err}");
    }

    #[test]
    fn a_diagnostic_is_scrubbed_before_it_is_wrapped() {
        let token = crate::secret::Secret::new("diag-canary-0123456789abcdef0123456789abcdef0123456789");
        // Long enough that miette would wrap it across lines.
        let message = format!("{} {}", "word ".repeat(14), token.expose());
        let report = miette::Report::msg(message).wrap_err(format!("outer {}", token.expose()));
        let (output, _, err) = captured(0, LogFormat::Text);
        output.report(&report);
        let err = err.text();
        assert!(err.contains("outer (sensitive)") && err.contains("(sensitive)"), "{err}");
        assert!(!err.contains("0123456789") && !err.contains("diag-canary"), "{err}");
    }

    #[test]
    fn a_scrubbed_diagnostic_renders_like_the_original() {
        #[derive(Debug, thiserror::Error, Diagnostic)]
        #[error("outer problem")]
        #[diagnostic(code(ozform::test::outer), help("do this"), url("https://example.com"))]
        struct Outer {
            #[source_code]
            src: String,
            #[label("here")]
            at: miette::SourceSpan,
            #[related]
            related: Vec<Inner>,
            #[source]
            cause: std::io::Error,
        }
        #[derive(Debug, thiserror::Error, Diagnostic)]
        #[error("inner problem")]
        #[diagnostic(code(ozform::test::inner), severity(Warning))]
        struct Inner;
        let outer = Outer {
            src: "key: value\n".into(),
            at: (5, 5).into(),
            related: vec![Inner],
            cause: std::io::Error::other("the cause"),
        };
        let handler = miette::MietteHandlerOpts::new().color(false).unicode(false).width(80).build();
        let original = format!("{:?}", Rendered { handler: &handler, diagnostic: &outer });
        let scrubbed = format!("{:?}", Rendered { handler: &handler, diagnostic: &Scrubbed::of(&outer) });
        assert_eq!(scrubbed, original);
        assert!(original.contains("the cause") && original.contains("inner problem"), "{original}");
    }

    /// A terminal whose every write fails, as a closed or hung-up stderr does.
    #[derive(Debug)]
    struct ClosedTerm;

    impl indicatif::TermLike for ClosedTerm {
        fn width(&self) -> u16 {
            80
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn write_line(&self, _: &str) -> std::io::Result<()> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn write_str(&self, _: &str) -> std::io::Result<()> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&self) -> std::io::Result<()> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
    }

    /// The apply progress bar draws on stderr by itself: it relies on indicatif ignoring its
    /// draw errors. Hold indicatif to that, for every call the apply observer makes.
    #[test]
    fn the_progress_bar_survives_a_closed_terminal() {
        let target = indicatif::ProgressDrawTarget::term_like(Box::new(ClosedTerm));
        let bar = indicatif::ProgressBar::with_draw_target(Some(3), target);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {wide_msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message("+ company/Acme");
        bar.inc(1);
        bar.suspend(|| {});
        bar.inc(2);
        bar.finish_and_clear();
        assert_eq!(bar.position(), 3);
    }
}
