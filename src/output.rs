//! The only writer to the terminal. Knows whether stdout/stderr are terminals, whether colour
//! is wanted (never with `NO_COLOR`, never off a terminal unless forced), the verbosity, and the
//! log format.
//!
//! Every byte goes out through one private `write`, which
//! - scrubs the text against the registry of live secrets (`redact::scrub`): a password or a
//!   token is blanked here even if some layer forgot to, in any escaped form;
//! - then escapes it for the terminal (`crate::escape`) as its `Medium` says: a status line or a
//!   warning whole (`escape::terminal`: control, bidirectional and invisible characters, line
//!   breaks included, as `\u{…}`); a text log line all but the colour codes `tracing` emits
//!   (it escapes ESC in values itself); a JSON log line as JSON (`escape::json_line`). What
//!   its producer escaped already (a plan with its colours, a diagnostic laid out by miette
//!   from escaped parts, JSON written by `escape::json_*`) goes as it is;
//! - ignores write errors: a closed or failing stdout or stderr (`ozform apply 2>&1 | head -1`)
//!   never panics and never stops the work. There is no print macro in this module (they panic
//!   on a closed stream); the lints `print_stdout` and `print_stderr` hold here as everywhere.
//!
//! The `tracing` writer (`log_writer`) and diagnostics (`report`) go the same way. A diagnostic
//! is scrubbed and escaped part by part before miette lays it out, since wrapping could split a
//! secret across lines, and miette's own colours must pass. The apply progress bar is indicatif's: it draws on stderr by itself, only when
//! stderr is a terminal, and ignores its own draw errors (a test below holds indicatif to that);
//! its text is addresses and counts, never a secret.
//!
//! Tests point an `Output` at in-memory writers (`Output::to_writers`, `Capture`).

use std::borrow::Cow;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex, PoisonError};

use miette::{Diagnostic, LabeledSpan, ReportHandler, Severity, SourceCode};

use crate::{escape, redact};

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

/// How a text is escaped on its way out, after it is scrubbed (so that a secret is found in the
/// form it was given).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Medium {
    /// Escaped by its producer already: a rendered plan (with its colours), a diagnostic laid
    /// out by miette from escaped parts, JSON written by `escape::json_*`, ozform's own prompt.
    AsIs,
    /// A status line or a warning: escaped whole (`escape::terminal`) but its final line break.
    Message,
    /// Data for stdout (an exported manifest): as it is into a pipe or a file, where it must
    /// read back exactly; on a terminal, each line escaped (`escape::terminal`), since the
    /// values in it came from a server.
    Data,
    /// A `tracing` event: a JSON line (`escape::json_line`) or a text line whose own colour
    /// codes are kept.
    Log,
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

    /// The one way out: scrub, escape for `medium`, write, flush, and ignore a failure (a
    /// closed pipe, a full disk): output is never a reason to stop.
    fn write(&self, stream: Stream, text: &str, medium: Medium) {
        let text = redact::scrub(text);
        let escaped = match medium {
            Medium::Message => changed(terminal_line(&text)),
            Medium::Data if self.stdout_tty => changed(terminal_lines(&text)),
            // Data into a pipe or a file reads back exactly.
            Medium::AsIs | Medium::Data => None,
            Medium::Log if self.log_format == LogFormat::Json => changed(escape::json_line(&text)),
            Medium::Log => changed(log_line(&text)),
        };
        let text = escaped.map_or(text, Cow::Owned);
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

    /// Write to stdout, as it is: what is printed (a plan, a manifest, a schema, a man page)
    /// was escaped for its medium by whatever made it. A closed pipe (`ozform plan | head`) is
    /// not an error.
    pub fn print(&self, text: &str) {
        self.write(Stream::Stdout, text, Medium::AsIs);
    }

    /// Write data to stdout (an exported manifest): exactly as given into a pipe or a file, each
    /// line escaped for the terminal on a terminal (a server's value may hold a direction
    /// override or a control that the YAML writer keeps raw).
    pub fn print_data(&self, text: &str) {
        self.write(Stream::Stdout, text, Medium::Data);
    }

    /// Write a status line to stderr unless quiet; escaped whole, line breaks included (one
    /// call, one line).
    pub fn status(&self, text: &str) {
        if self.verbosity >= 0 {
            self.write(Stream::Stderr, &format!("{text}\n"), Medium::Message);
        }
    }

    /// Write a warning to stderr (shown even when quiet); escaped as a status line is.
    pub fn warn(&self, text: &str) {
        self.write(Stream::Stderr, &format!("warning: {text}\n"), Medium::Message);
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
            Medium::AsIs,
        );
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer).is_ok() && answer.trim() == "yes"
    }

    /// Whether stdin is a terminal (an interactive user can be asked).
    pub fn stdin_tty(&self) -> bool {
        std::io::stdin().is_terminal()
    }

    /// Render a diagnostic to stderr (with source snippets when it has them), every text of it
    /// scrubbed and escaped: for a terminal part by part before miette lays it out (its own
    /// colours kept), for `--log-format json` as JSON.
    pub fn report(&self, report: &miette::Report) {
        self.diagnostic(report.as_ref());
    }

    /// As `report`, for a diagnostic held by reference (a failed cycle of a loop that goes on).
    pub fn diagnostic(&self, report: &dyn Diagnostic) {
        if self.log_format == LogFormat::Json {
            // One JSON line, like every other event of `--log-format json`, escaped as JSON.
            let shown = Scrubbed::of(report, false);
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
            let related: Vec<String> =
                report.related().into_iter().flatten().map(|r| scrubbed(&r, false)).collect();
            if !related.is_empty() {
                line["related"] = serde_json::json!(related);
            }
            // Serializing a `Value` cannot fail (string keys only).
            let text = escape::json_compact(&line).unwrap_or_default();
            self.write(Stream::Stderr, &format!("{text}\n"), Medium::AsIs);
            return;
        }
        let color = self.stderr_color();
        let handler = miette::MietteHandlerOpts::new().color(color).unicode(color).build();
        let scrubbed = Scrubbed::of(report, true);
        self.write(
            Stream::Stderr,
            &format!("{:?}\n", Rendered { handler: &handler, diagnostic: &scrubbed }),
            Medium::AsIs,
        );
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
            self.output.write(Stream::Stderr, &String::from_utf8_lossy(&self.buf), Medium::Log);
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

/// `text` scrubbed, then escaped for a terminal when `escape` (whole: a diagnostic's parts
/// hold no line break of their own that miette needs; it wraps them itself).
fn scrubbed(text: &dyn std::fmt::Display, escape: bool) -> String {
    let scrubbed = redact::scrub(&text.to_string()).into_owned();
    if escape { escape::terminal(&scrubbed).into_owned() } else { scrubbed }
}

/// The escaped text when escaping changed it.
fn changed(text: Cow<'_, str>) -> Option<String> {
    match text {
        Cow::Borrowed(_) => None,
        Cow::Owned(escaped) => Some(escaped),
    }
}

/// A status or warning line: everything but its final line break escaped for a terminal.
fn terminal_line(text: &str) -> Cow<'_, str> {
    let body = text.strip_suffix('\n').unwrap_or(text);
    match escape::terminal(body) {
        Cow::Borrowed(_) => Cow::Borrowed(text),
        Cow::Owned(mut escaped) => {
            escaped.push_str(&text[body.len()..]);
            Cow::Owned(escaped)
        }
    }
}

/// Text of several lines for a terminal: each line escaped as a status line is, the line
/// breaks kept.
fn terminal_lines(text: &str) -> Cow<'_, str> {
    if text.chars().all(|c| c == '\n' || escape::is_safe(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&escape::terminal(line));
    }
    Cow::Owned(out)
}

/// A text log line of `tracing`: escaped as a status line, but for the colour codes
/// (`ESC [ digits ; … m`) its formatter writes when stderr is a terminal. `tracing` escapes ESC
/// in the values it logs (`\x1b`), so an ESC still raw here is its own.
fn log_line(text: &str) -> Cow<'_, str> {
    let body = text.strip_suffix('\n').unwrap_or(text);
    if body.chars().all(escape::is_safe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = body;
    while let Some(c) = rest.chars().next() {
        if c == '\u{1b}' {
            let sgr = rest[1..]
                .strip_prefix('[')
                .map(|after| after.bytes().take_while(|b| b.is_ascii_digit() || *b == b';').count())
                .filter(|&n| rest.as_bytes().get(2 + n) == Some(&b'm'))
                .map(|n| &rest[..3 + n]);
            if let Some(sgr) = sgr {
                out.push_str(sgr);
                rest = &rest[sgr.len()..];
                continue;
            }
        }
        escape::push_terminal(&mut out, c);
        rest = &rest[c.len_utf8()..];
    }
    out.push_str(&text[body.len()..]);
    Cow::Owned(out)
}

impl<'a> Scrubbed<'a> {
    /// The diagnostic's texts scrubbed, and escaped for a terminal when `escape`. On a terminal
    /// (`escape`), a related diagnostic that is nothing but a message (no code, help, labels,
    /// cause or related of its own: a list item, such as one missing password) becomes a line
    /// `- item` of this one's message, each line escaped on its own; the others stay related
    /// diagnostics, which miette shows as blocks of their own.
    fn of(inner: &'a dyn Diagnostic, escape: bool) -> Self {
        let is_item = |d: &dyn Diagnostic| {
            d.code().is_none()
                && d.help().is_none()
                && d.labels().is_none()
                && d.related().is_none()
                && d.source().is_none()
        };
        let mut message = scrubbed(inner, escape);
        let mut related = inner.related().map(Iterator::collect::<Vec<_>>);
        if escape && let Some(all) = &mut related {
            for item in all.iter().filter(|d| is_item(**d)) {
                message.push_str("\n- ");
                message.push_str(&scrubbed(item, escape));
            }
            all.retain(|d| !is_item(*d));
        }
        Self {
            inner,
            message,
            code: inner.code().map(|c| scrubbed(&c, escape)),
            help: inner.help().map(|h| scrubbed(&h, escape)),
            url: inner.url().map(|u| scrubbed(&u, escape)),
            labels: inner.labels().map(|labels| {
                labels
                    .map(|l| {
                        let label = l.label().map(|t| scrubbed(&t, escape));
                        if l.primary() {
                            LabeledSpan::new_primary_with_span(label, *l.inner())
                        } else {
                            LabeledSpan::new_with_span(label, *l.inner())
                        }
                    })
                    .collect()
            }),
            cause: inner.source().map(|s| Box::new(Cause::of(s, escape))),
            diagnostic_source: inner.diagnostic_source().map(|d| Box::new(Scrubbed::of(d, escape))),
            related: related
                .filter(|rest| !rest.is_empty())
                .map(|rest| rest.into_iter().map(|d| Scrubbed::of(d, escape)).collect()),
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
    fn of(error: &dyn std::error::Error, escape: bool) -> Self {
        Self {
            message: scrubbed(&error, escape),
            source: error.source().map(|s| Box::new(Cause::of(s, escape))),
        }
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
    fn data_reaches_a_pipe_exactly_and_a_terminal_escaped_line_by_line() {
        let data = "companies:\n- name: r\u{202e}l \"\\e[31m\"\n\tx\u{9b}\n";
        let (output, out, _) = captured(0, LogFormat::Text);
        output.print_data(data);
        assert_eq!(out.text(), data);

        let (mut output, out, _) = captured(0, LogFormat::Text);
        output.stdout_tty = true;
        output.print_data(data);
        assert_eq!(out.text(), "companies:\n- name: r\\u{202e}l \"\\e[31m\"\n\\tx\\u{9b}\n");
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

    /// A value as a hostile manifest or server gives it.
    const HOSTILE: &str = "x\u{1b}]0;owned\u{7}\u{1b}[2J\u{202e}y\u{feff}\u{85}\nforged line";

    fn no_raw_unsafe(text: &str) -> bool {
        text.chars().all(|c| escape::is_safe(c) || c == '\n')
    }

    #[test]
    fn status_lines_and_warnings_are_escaped_whole() {
        let (output, _, err) = captured(0, LogFormat::Text);
        output.status(&format!("status {HOSTILE}"));
        output.warn(&format!("careful {HOSTILE}"));
        let err = err.text();
        assert_eq!(err.lines().count(), 2, "{err}");
        assert!(no_raw_unsafe(&err), "{err:?}");
        assert!(
            err.contains("x\\u{1b}]0;owned\\u{7}\\u{1b}[2J\\u{202e}y\\u{feff}\\u{85}\\nforged line\n"),
            "{err}"
        );
    }

    #[test]
    fn a_diagnostic_is_escaped_part_by_part_and_keeps_miettes_colours() {
        #[derive(Debug, thiserror::Error, Diagnostic)]
        #[error("company `{0}` is wrong")]
        #[diagnostic(code(ozform::test::hostile), help("rename `{0}`"))]
        struct Hostile(String);
        let hostile = Hostile(HOSTILE.into());
        let handler = miette::MietteHandlerOpts::new().color(true).unicode(true).width(80).build();
        let shown =
            format!("{:?}", Rendered { handler: &handler, diagnostic: &Scrubbed::of(&hostile, true) });
        assert!(shown.contains("\u{1b}["), "miette's colours are kept: {shown:?}");
        assert!(shown.contains("x\\u{1b}]0;owned\\u{7}"), "{shown:?}");
        let without_colours = log_line(&shown).into_owned();
        assert!(!without_colours.contains("\u{1b}]") && !without_colours.contains('\u{202e}'), "{shown:?}");
        assert!(!shown.contains("\nforged line"), "{shown:?}");
    }

    #[test]
    fn a_json_diagnostic_is_one_json_line_escaped_as_json() {
        let (output, _, err) = captured(0, LogFormat::Json);
        output.report(&miette::Report::msg(format!("bad {HOSTILE}")));
        let err = err.text();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.is_ascii(), "{err:?}");
        let line: serde_json::Value = serde_json::from_str(&err).unwrap();
        assert_eq!(line["message"], format!("bad {HOSTILE}"));
    }

    #[test]
    fn log_lines_are_escaped_but_keep_tracings_colours() {
        let line = format!("\u{1b}[33m WARN\u{1b}[0m ozform: server said {}\n", "\u{202e}evil\u{7}\nnext");
        assert_eq!(
            log_line(&line),
            "\u{1b}[33m WARN\u{1b}[0m ozform: server said \\u{202e}evil\\u{7}\\nnext\n"
        );
        for format in [LogFormat::Text, LogFormat::Json] {
            let (output, _, err) = captured(0, format);
            tracing::subscriber::with_default(output.subscriber(), || {
                tracing::warn!(answer = HOSTILE, "the server said {HOSTILE}");
            });
            let err = err.text();
            assert_eq!(err.lines().count(), 1, "{format:?}: {err:?}");
            assert!(no_raw_unsafe(&err), "{format:?}: {err:?}");
            if format == LogFormat::Json {
                let line: serde_json::Value = serde_json::from_str(&err).unwrap();
                assert_eq!(line["fields"]["answer"], HOSTILE, "{err}");
            }
        }
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
        let scrubbed =
            format!("{:?}", Rendered { handler: &handler, diagnostic: &Scrubbed::of(&outer, true) });
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
