//! The helper store (`exec:COMMAND [ARGS…]`): a program of the user's that keeps the tokens
//! (a Kubernetes Secret, Vault, a cloud secret manager), spoken to with the helper protocol,
//! version 1 (`docs/token-stores.md`): `COMMAND ARGS… VERB`, a JSON record on stdin for
//! `store` and `delete`, a JSON answer on stdout, the exit status as the verdict.
//!
//! Does process I/O only. Invariants:
//! - the helper runs without a shell (the argv was split once, by the command line), with
//!   ozform's environment minus the variables `hide_env` names (the admin password and every
//!   variable a manifest password comes from: they are data for the Oz API, not for the store);
//! - a helper never outlives its step by more than `timeout`: at the deadline its whole process
//!   group is killed (it runs in a group of its own, which also keeps a terminal's Ctrl-C from
//!   killing a `store` in flight that ozform still waits for);
//! - no error ever holds the helper's stdout (a confused helper may print a token there), and
//!   its stderr is quoted only bounded and with every secret ozform knows of redacted: the
//!   secrets given to `redact`, and every `access_token` this store was handed so far, raw and
//!   JSON-escaped;
//! - at most `max_parallel_stores` (from the helper's `list` answer) `store` calls run at once;
//!   the executor bounds them by `--parallelism` in any case.

use std::collections::BTreeSet;
use std::io::{self, Read, Write as _};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::json;

use super::{TokenRecord, TokenStore, TokenStoreError};
use crate::model::{StoredToken, StoredTokens};
use crate::secret::Secret;

/// The protocol version this store speaks; every message carries it.
pub const PROTOCOL: u64 = 1;

/// At most this much of a helper's stdout is read (a `list` of many thousand entries fits).
const MAX_STDOUT: usize = 16 << 20;
/// At most this much of a helper's stderr is kept, and at most `SHOWN_STDERR` chars quoted.
const MAX_STDERR: usize = 64 << 10;
const SHOWN_STDERR: usize = 2000;

/// Tokens kept by a helper program.
pub struct ExecStore {
    argv: Vec<String>,
    timeout: Duration,
    hidden_env: BTreeSet<String>,
    redact: Vec<Secret>,
    /// Every `access_token` handed to `store` so far: redacted from every later message.
    handed: Mutex<Vec<Secret>>,
    /// The helper's `max_parallel_stores`, once a `list` answer said (or did not say) it.
    /// A mutex rather than a `OnceLock`: concurrent first stores wait for one `list`.
    limit: Mutex<Bound>,
    /// `store` calls running now, and the signal that one ended.
    storing: Mutex<usize>,
    store_ended: Condvar,
}

impl std::fmt::Debug for ExecStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecStore")
            .field("argv", &self.argv)
            .field("timeout", &self.timeout)
            .field("hidden_env", &self.hidden_env)
            .finish_non_exhaustive()
    }
}

/// What the helper said about `store` calls at once.
#[derive(Debug, Clone, Copy)]
enum Bound {
    /// No `list` answer seen yet.
    NotAsked,
    /// `max_parallel_stores` of the last `list` answer (`None`: not given, the executor's bound).
    Said(Option<usize>),
}

/// `list`'s answer. Unknown fields are ignored (the protocol lets helpers add their own).
#[derive(Deserialize)]
struct ListAnswer {
    protocol: u64,
    entries: Vec<Entry>,
    #[serde(default)]
    max_parallel_stores: Option<usize>,
}

/// One stored token as `list` shows it; an `access_token` a helper sends anyway is dropped by
/// serde unread.
#[derive(Deserialize)]
struct Entry {
    email: String,
    user_id: String,
    api_url: String,
    expire_date: f64,
}

/// The optional answer of `check`, `store` and `delete`.
#[derive(Deserialize)]
struct Ack {
    protocol: u64,
}

/// How a helper run ended, before the verb's own reading of stdout.
struct Finished {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl ExecStore {
    /// A store run as `argv[0] argv[1..] VERB`, each run stopped after `timeout`.
    pub fn new(argv: Vec<String>, timeout: Duration) -> Self {
        Self {
            argv,
            timeout,
            hidden_env: BTreeSet::new(),
            redact: Vec::new(),
            handed: Mutex::new(Vec::new()),
            limit: Mutex::new(Bound::NotAsked),
            storing: Mutex::new(0),
            store_ended: Condvar::new(),
        }
    }

    /// Run the helper without these environment variables.
    #[must_use]
    pub fn hide_env(mut self, names: impl IntoIterator<Item = String>) -> Self {
        self.hidden_env.extend(names);
        self
    }

    /// Never quote these in an error (a helper's stderr may echo them).
    #[must_use]
    pub fn redact(mut self, secrets: impl IntoIterator<Item = Secret>) -> Self {
        self.redact.extend(secrets.into_iter().filter(|s| !s.expose().is_empty()));
        self
    }

    /// The helper as the user wrote it, for messages.
    fn name(&self) -> String {
        shlex::try_join(self.argv.iter().map(String::as_str)).unwrap_or_else(|_| self.argv.join(" "))
    }

    /// The helper's bound on `store` calls at once (`None`: the executor's). Learned from the
    /// `list` of planning; an apply of a saved plan, which does not list, asks once here.
    fn store_limit(&self) -> Result<Option<usize>, TokenStoreError> {
        let mut known = self.limit.lock().unwrap_or_else(PoisonError::into_inner);
        if let Bound::Said(limit) = *known {
            return Ok(limit);
        }
        let limit = self.list_answer()?.max_parallel_stores.map(|n| n.max(1));
        *known = Bound::Said(limit);
        Ok(limit)
    }

    /// Run `list` and read its answer.
    fn list_answer(&self) -> Result<ListAnswer, TokenStoreError> {
        let finished = self.run("list", None)?;
        let answer: ListAnswer = serde_json::from_slice(&finished.stdout).map_err(|e| {
            self.unreadable(
                "list",
                not_protocol_json(&e, "`{\"protocol\": 1, \"entries\": […]}`"),
                &finished.stderr,
            )
        })?;
        self.protocol("list", answer.protocol, &finished.stderr)?;
        Ok(answer)
    }

    /// Run `VERB` with `stdin`, to the end or to the timeout.
    fn run(&self, verb: &'static str, stdin: Option<Vec<u8>>) -> Result<Finished, TokenStoreError> {
        let Some((program, args)) = self.argv.split_first() else {
            return Err(self.failed(verb, "the helper command is empty".into(), &[]));
        };
        let mut cmd = Command::new(program);
        cmd.args(args).arg(verb);
        for name in &self.hidden_env {
            cmd.env_remove(name);
        }
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt as _;
            cmd.process_group(0);
        }
        let mut child = cmd.spawn().map_err(|e| self.failed(verb, format!("cannot start it: {e}"), &[]))?;

        // One thread per pipe, so that a helper blocked writing one pipe never deadlocks us
        // writing or reading another. A writer that meets a closed pipe (a helper that did not
        // read its input) leaves the verdict to the exit status.
        if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
            thread::spawn(move || {
                let _ = pipe.write_all(&bytes);
            });
        }
        // Each reader fills its buffer as bytes come (so a timeout can quote what a hung
        // helper said so far) and reports when its pipe closes.
        let buffers = [Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new()))];
        let (tx, rx) = mpsc::channel();
        let pipes: [Option<Box<dyn Read + Send>>; 2] = [
            child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
            child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
        ];
        for ((pipe, buffer), cap) in pipes.into_iter().zip(&buffers).zip([MAX_STDOUT, MAX_STDERR]) {
            let (tx, buffer) = (tx.clone(), Arc::clone(buffer));
            thread::spawn(move || {
                if let Some(pipe) = pipe {
                    read_capped(pipe, &buffer, cap);
                }
                let _ = tx.send(());
            });
        }
        drop(tx);
        let take = |i: usize| std::mem::take(&mut *buffers[i].lock().unwrap_or_else(PoisonError::into_inner));

        let deadline = Instant::now() + self.timeout;
        let mut closed = 0;
        let status = loop {
            if closed == 2 {
                // Both pipes are closed: the helper has exited or is about to.
                if let Some(status) = wait_until(&mut child, deadline) {
                    break status;
                }
                stop(&mut child, &rx, closed);
                return Err(self.timed_out(verb, &take(1)));
            }
            if rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).is_err() {
                stop(&mut child, &rx, closed);
                return Err(self.timed_out(verb, &take(1)));
            }
            closed += 1;
        };
        let finished = Finished { stdout: take(0), stderr: take(1) };
        if !status.success() {
            return Err(self.failed(verb, describe(status), &finished.stderr));
        }
        Ok(finished)
    }

    /// Say that the helper ran too long (it has been stopped).
    fn timed_out(&self, verb: &'static str, stderr: &[u8]) -> TokenStoreError {
        TokenStoreError::HelperTimeout {
            helper: self.name(),
            verb,
            timeout: humantime::format_duration(self.timeout).to_string(),
            stderr: self.quote(stderr),
        }
    }

    fn failed(&self, verb: &'static str, problem: String, stderr: &[u8]) -> TokenStoreError {
        TokenStoreError::HelperFailed { helper: self.name(), verb, problem, stderr: self.quote(stderr) }
    }

    /// A helper that answered, but not in protocol JSON. Never quotes the answer.
    fn unreadable(&self, verb: &'static str, problem: String, stderr: &[u8]) -> TokenStoreError {
        TokenStoreError::HelperProtocol { helper: self.name(), verb, problem, stderr: self.quote(stderr) }
    }

    /// `stderr` for a message: lossily decoded, every secret redacted, bounded, indented.
    fn quote(&self, stderr: &[u8]) -> String {
        let handed = self.handed.lock().unwrap_or_else(PoisonError::into_inner);
        let text = redact(&String::from_utf8_lossy(stderr), self.redact.iter().chain(handed.iter()));
        let text = text.trim();
        if text.is_empty() {
            return String::new();
        }
        let shown: String = text.chars().take(SHOWN_STDERR).collect();
        let more = if shown.len() < text.len() { "\n  … (cut)" } else { "" };
        format!("\nits stderr:\n  {}{more}", shown.replace('\n', "\n  "))
    }

    /// The answer of `check`, `store` or `delete`: nothing, or `{"protocol": 1, …}`.
    fn ack(&self, verb: &'static str, finished: &Finished) -> Result<(), TokenStoreError> {
        if finished.stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let ack: Ack = serde_json::from_slice(&finished.stdout).map_err(|e| {
            self.unreadable(verb, not_protocol_json(&e, "`{\"protocol\": 1}` or nothing"), &finished.stderr)
        })?;
        self.protocol(verb, ack.protocol, &finished.stderr)
    }

    fn protocol(&self, verb: &'static str, protocol: u64, stderr: &[u8]) -> Result<(), TokenStoreError> {
        if protocol == PROTOCOL {
            Ok(())
        } else {
            Err(self.unreadable(
                verb,
                format!("it speaks protocol {protocol}; this ozform speaks protocol {PROTOCOL}"),
                stderr,
            ))
        }
    }
}

impl TokenStore for ExecStore {
    fn list(&self) -> Result<StoredTokens, TokenStoreError> {
        let answer = self.list_answer()?;
        *self.limit.lock().unwrap_or_else(PoisonError::into_inner) =
            Bound::Said(answer.max_parallel_stores.map(|n| n.max(1)));
        Ok(answer
            .entries
            .into_iter()
            .map(|e| {
                let stored =
                    StoredToken { user_id: e.user_id, api_url: e.api_url, expire_date: e.expire_date };
                (e.email.to_lowercase(), stored)
            })
            .collect())
    }

    fn check(&self) -> Result<(), TokenStoreError> {
        let finished = self.run("check", None)?;
        self.ack("check", &finished)
    }

    fn store(&self, record: &TokenRecord) -> Result<(), TokenStoreError> {
        let limit = self.store_limit()?;
        self.handed.lock().unwrap_or_else(PoisonError::into_inner).push(record.access_token.clone());
        let input = json!({
            "protocol": PROTOCOL,
            "email": record.email.to_lowercase(),
            "user_id": record.user_id,
            "token_id": record.token_id,
            "access_token": record.access_token.expose(),
            "expire_date": record.expire_date,
            "api_url": record.api_url,
            "issued_at": record.issued_at,
        });
        let mut bytes = input.to_string().into_bytes();
        bytes.push(b'\n');

        let _slot = limit.map(|limit| self.enter(limit));
        let finished = self.run("store", Some(bytes))?;
        self.ack("store", &finished)
    }

    fn delete(&self, email: &str) -> Result<(), TokenStoreError> {
        let mut bytes = json!({"protocol": PROTOCOL, "email": email.to_lowercase()}).to_string().into_bytes();
        bytes.push(b'\n');
        let finished = self.run("delete", Some(bytes))?;
        self.ack("delete", &finished)
    }
}

/// A running `store`, counted until dropped.
struct Slot<'a>(&'a ExecStore);

impl ExecStore {
    /// Wait until fewer than `limit` stores run, and count this one.
    fn enter(&self, limit: usize) -> Slot<'_> {
        let mut running = self.storing.lock().unwrap_or_else(PoisonError::into_inner);
        while *running >= limit {
            running = self.store_ended.wait(running).unwrap_or_else(PoisonError::into_inner);
        }
        *running += 1;
        Slot(self)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut running = self.0.storing.lock().unwrap_or_else(PoisonError::into_inner);
        *running -= 1;
        self.0.store_ended.notify_one();
    }
}

/// Read to the end into `kept`, keeping at most `cap` bytes (the rest is drained, so the
/// helper never blocks on a full pipe).
fn read_capped(mut pipe: impl Read, kept: &Mutex<Vec<u8>>, cap: usize) {
    let mut buf = [0u8; 8192];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let mut kept = kept.lock().unwrap_or_else(PoisonError::into_inner);
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}

/// Wait for `child` to exit until `deadline`. Its pipes are closed already, so this is the
/// moment between closing them and exiting (or a helper that closed them and hangs): short
/// naps, growing, rather than a thread per helper run.
fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    let mut nap = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            // Not waitable (cannot happen for our own child): treat as hung, it gets killed.
            Err(_) => return None,
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        thread::sleep(nap.min(left));
        nap = (nap * 2).min(Duration::from_millis(50));
    }
}

/// Kill the helper's process group, reap it, and give the pipes' readers a moment to take
/// what is left. Not longer: a grandchild that left the group could hold a pipe open forever
/// (its reader thread then ends when it does).
fn stop(child: &mut Child, closed_rx: &mpsc::Receiver<()>, mut closed: usize) {
    kill(child);
    let _ = child.wait();
    let grace = Instant::now() + Duration::from_secs(1);
    while closed < 2 && closed_rx.recv_timeout(grace.saturating_duration_since(Instant::now())).is_ok() {
        closed += 1;
    }
}

/// Kill the helper and everything it started (its process group), or at least the helper.
fn kill(child: &mut Child) {
    #[cfg(unix)]
    {
        let group = rustix::process::Pid::from_child(child);
        if rustix::process::kill_process_group(group, rustix::process::Signal::KILL).is_ok() {
            return;
        }
    }
    let _ = child.kill();
}

fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("it exited with status {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt as _;
        if let Some(signal) = status.signal() {
            return format!("it was killed by signal {signal}");
        }
    }
    "it ended without an exit status".into()
}

/// What was wrong with an answer, by serde's category and position: never serde's message,
/// which quotes the offending value.
fn not_protocol_json(e: &serde_json::Error, expected: &str) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "something that is not JSON",
        serde_json::error::Category::Data => {
            "JSON of the wrong shape (a field is missing or of the wrong type)"
        }
        serde_json::error::Category::Eof => "truncated JSON",
    };
    format!("it printed {what} (line {}, column {}) where {expected} was expected", e.line(), e.column())
}

/// `text` with every secret, raw and JSON-escaped, replaced by `(sensitive)`.
pub fn redact<'a>(text: &str, secrets: impl IntoIterator<Item = &'a Secret>) -> String {
    let mut text = text.to_string();
    for secret in secrets {
        let raw = secret.expose();
        if raw.is_empty() {
            continue;
        }
        let escaped = serde_json::to_string(raw).unwrap_or_default();
        let escaped = escaped.trim_matches('"');
        for form in [raw, escaped] {
            if !form.is_empty() && text.contains(form) {
                text = text.replace(form, "(sensitive)");
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_covers_the_raw_and_the_json_escaped_form() {
        let secret = Secret::new("to\"k/en\\1");
        let text = format!(
            "raw {} json {}",
            secret.expose(),
            serde_json::to_string(secret.expose()).unwrap_or_default()
        );
        let redacted = redact(&text, [&secret]);
        assert_eq!(redacted, "raw (sensitive) json \"(sensitive)\"");
    }

    #[test]
    fn an_empty_secret_redacts_nothing() {
        assert_eq!(redact("abc", [&Secret::new("")]), "abc");
    }

    #[test]
    fn json_errors_name_a_category_and_a_position_never_the_value() {
        let e = serde_json::from_slice::<Ack>(b"{\"protocol\": \"secret-value\"}")
            .err()
            .map(|e| not_protocol_json(&e, "x"));
        let message = e.unwrap_or_default();
        assert!(message.contains("wrong shape"), "{message}");
        assert!(!message.contains("secret-value"), "{message}");
    }
}
