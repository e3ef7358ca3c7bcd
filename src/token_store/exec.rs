//! The helper store (`exec:COMMAND [ARGS…]`): a program of the user's that keeps the tokens
//! (a Kubernetes Secret, Vault, a cloud secret manager), spoken to with the helper protocol,
//! version 1 (`docs/token-stores.md`): `COMMAND ARGS… VERB`, a JSON request on stdin, a JSON
//! answer on stdout, the exit status as the verdict.
//!
//! Does process I/O only. Invariants:
//! - the helper runs without a shell (the argv was split once, by the command line), with
//!   ozform's environment minus the variables `hide_env` names (the admin password and every
//!   variable a manifest password comes from: they are data for the Oz API, not for the store);
//! - a helper never outlives its call by more than `timeout`: at the deadline its whole process
//!   group is killed (it runs in a group of its own, which also keeps a terminal's Ctrl-C from
//!   killing a `store` in flight that ozform still waits for);
//! - no error ever holds the helper's stdout (a confused helper may print a token there), and
//!   its stderr is quoted only bounded and with every secret ozform knows of redacted: the
//!   secrets given to `redact`, and every `access_token` and `password` this store handed to
//!   the helper or got back from it so far, raw and JSON-escaped;
//! - every request names this store's installation, and `list` answers are filtered to it
//!   (and to the records kept before installations that belong to it): two installations
//!   sharing a helper's store never see each other's records;
//! - at most `max_parallel_stores` (from the helper's `list` answer) `store` calls run at once;
//!   the executor bounds them by `--parallelism` in any case;
//! - a lock (`lock`, for a helper whose `check` advertises it) is renewed by a thread of its
//!   own every third of its TTL, and given back (`unlock`) when the `StoreLock` is dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write as _};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use serde_json::{Value, json};

use super::naming::Installation;
use super::{Recovery, StoreLock, TokenRecord, TokenStore, TokenStoreError};
use crate::model::{StoredToken, StoredTokens};
use crate::secret::Secret;

/// The protocol version this store speaks; every message carries it.
pub const PROTOCOL: u64 = 1;

/// How long a helper's lock lasts unless renewed (`ttl_seconds` of `lock`): long enough for
/// a renewal to survive a slow helper call, short enough that a killed apply does not block
/// the next for long.
pub const DEFAULT_LOCK_TTL: Duration = Duration::from_secs(120);

/// At most this much of a helper's stdout is read (a `list` of many thousand entries fits).
const MAX_STDOUT: usize = 16 << 20;
/// At most this much of a helper's stderr is kept, and at most `SHOWN_STDERR` chars quoted.
const MAX_STDERR: usize = 64 << 10;
const SHOWN_STDERR: usize = 2000;
/// At most this many characters of a lock holder's description are shown.
const SHOWN_HOLDER: usize = 200;
/// The exit status of `lock` that says another holds the lock.
const LOCK_HELD_BY_ANOTHER: i32 = 3;

/// Tokens of one installation kept by a helper program.
pub struct ExecStore {
    helper: Arc<Helper>,
    installation: Installation,
    lock_ttl: Duration,
    /// The helper's `max_parallel_stores`, once a `list` answer said (or did not say) it.
    /// A mutex rather than a `OnceLock`: concurrent first stores wait for one `list`.
    limit: Mutex<Bound>,
    /// `store` calls running now, and the signal that one ended.
    storing: Mutex<usize>,
    store_ended: Condvar,
    /// What the helper's last `check` said it offers.
    capabilities: Mutex<Option<Capabilities>>,
    /// The emails `list` showed kept before installations and this installation's (`None`:
    /// not listed yet), so that `get` asks for such a record only when there is one.
    unkeyed: Mutex<Option<BTreeSet<String>>>,
}

/// The program, and what is needed to run it and to speak of it safely.
struct Helper {
    argv: Vec<String>,
    timeout: Duration,
    hidden_env: BTreeSet<String>,
    redact: Vec<Secret>,
    /// Every secret handed to the helper or got back from it so far: redacted from every
    /// later message.
    handed: Mutex<Vec<Secret>>,
}

impl std::fmt::Debug for ExecStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecStore")
            .field("argv", &self.helper.argv)
            .field("timeout", &self.helper.timeout)
            .field("hidden_env", &self.helper.hidden_env)
            .field("installation", &self.installation)
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

/// The optional verbs a helper offers, from its `check` answer.
#[derive(Debug, Clone, Copy, Default)]
struct Capabilities {
    lock: bool,
    get: bool,
}

/// `list`'s answer. Unknown fields are ignored (the protocol lets helpers add their own).
#[derive(Deserialize)]
struct ListAnswer {
    protocol: u64,
    entries: Vec<Entry>,
    #[serde(default)]
    max_parallel_stores: Option<usize>,
}

/// One stored token as `list` shows it; an `access_token` or `password` a helper sends anyway
/// is dropped by serde unread.
#[derive(Deserialize)]
struct Entry {
    /// Absent for a record kept before installations.
    #[serde(default)]
    installation: Option<String>,
    email: String,
    user_id: String,
    api_url: String,
    expire_date: f64,
}

/// The answer of `check`, `store`, `delete`, `lock` and `unlock`, when there is one.
#[derive(Deserialize)]
struct Ack {
    protocol: u64,
    #[serde(default)]
    capabilities: Vec<String>,
}

/// The answer of `get`.
#[derive(Deserialize)]
struct GetAnswer {
    protocol: u64,
    record: Option<Record>,
}

/// A whole record, as `get` gives it back.
#[derive(Deserialize)]
struct Record {
    #[serde(default)]
    installation: Option<String>,
    email: String,
    user_id: String,
    token_id: String,
    access_token: String,
    expire_date: f64,
    api_url: String,
    issued_at: String,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    company: Option<String>,
}

/// The answer of a `lock` that found the lock held (exit 3).
#[derive(Deserialize)]
struct Busy {
    protocol: u64,
    #[serde(default)]
    holder: Option<String>,
    #[serde(default)]
    since: Option<Value>,
}

/// How a helper run ended, before the verb's own reading of stdout.
struct Finished {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    status: ExitStatus,
}

/// One attempt at the lock.
enum Attempt {
    Held,
    /// Held by another, as the helper described it.
    Busy(String),
}

impl ExecStore {
    /// A store of `installation`'s tokens run as `argv[0] argv[1..] VERB`, each run stopped
    /// after `timeout`.
    pub fn new(argv: Vec<String>, timeout: Duration, installation: Installation) -> Self {
        Self {
            helper: Arc::new(Helper {
                argv,
                timeout,
                hidden_env: BTreeSet::new(),
                redact: Vec::new(),
                handed: Mutex::new(Vec::new()),
            }),
            installation,
            lock_ttl: DEFAULT_LOCK_TTL,
            limit: Mutex::new(Bound::NotAsked),
            storing: Mutex::new(0),
            store_ended: Condvar::new(),
            capabilities: Mutex::new(None),
            unkeyed: Mutex::new(None),
        }
    }

    /// Run the helper without these environment variables. (Like `redact`, a builder step of a
    /// new store: only a held lock shares the helper, and a store is built before it locks.)
    #[must_use]
    pub fn hide_env(mut self, names: impl IntoIterator<Item = String>) -> Self {
        if let Some(helper) = Arc::get_mut(&mut self.helper) {
            helper.hidden_env.extend(names);
        }
        self
    }

    /// Never quote these in an error (a helper's stderr may echo them).
    #[must_use]
    pub fn redact(mut self, secrets: impl IntoIterator<Item = Secret>) -> Self {
        if let Some(helper) = Arc::get_mut(&mut self.helper) {
            helper.redact.extend(secrets.into_iter().filter(|s| !s.expose().is_empty()));
        }
        self
    }

    /// How long a lock lasts unless renewed (at least a second; renewed every third of it).
    #[must_use]
    pub fn lock_ttl(mut self, ttl: Duration) -> Self {
        self.lock_ttl = ttl.max(Duration::from_secs(1));
        self
    }

    /// The installation whose records this store reads and writes.
    pub fn installation(&self) -> &Installation {
        &self.installation
    }

    /// The helper's bound on `store` calls at once (`None`: the executor's). Learned from the
    /// `list` of planning; an apply of a saved plan, which does not list, asks once here.
    fn store_limit(&self) -> Result<Option<usize>, TokenStoreError> {
        let mut known = self.limit.lock().unwrap_or_else(PoisonError::into_inner);
        if let Bound::Said(limit) = *known {
            return Ok(limit);
        }
        let limit = self.helper.list_answer()?.max_parallel_stores.map(|n| n.max(1));
        *known = Bound::Said(limit);
        Ok(limit)
    }

    /// What the helper offers: its last `check` answer, or a `check` now.
    fn capabilities(&self) -> Result<Capabilities, TokenStoreError> {
        if let Some(known) = *self.capabilities.lock().unwrap_or_else(PoisonError::into_inner) {
            return Ok(known);
        }
        self.check()?;
        Ok(self.capabilities.lock().unwrap_or_else(PoisonError::into_inner).unwrap_or_default())
    }

    /// The request naming `email` of this installation, or (`keyed` false) the record of
    /// `email` kept before installations.
    fn addressed(&self, email: &str, keyed: bool) -> Vec<u8> {
        let mut request = json!({"protocol": PROTOCOL, "email": email.to_lowercase()});
        if keyed {
            request["installation"] = json!(self.installation.name());
        }
        line(&request)
    }

    /// `get` of `email`, of this installation or (`keyed` false) kept before installations.
    fn get_record(&self, email: &str, keyed: bool) -> Result<Option<TokenRecord>, TokenStoreError> {
        if !self.capabilities()?.get {
            return Err(TokenStoreError::Unsupported { store: self.helper.name(), verb: "get" });
        }
        let finished = self.helper.run("get", Some(self.addressed(email, keyed)))?;
        let helper = &self.helper;
        let answer: GetAnswer = serde_json::from_slice(&finished.stdout).map_err(|e| {
            helper.unreadable(
                "get",
                not_protocol_json(&e, "`{\"protocol\": 1, \"record\": {…} or null}`"),
                &finished.stderr,
            )
        })?;
        helper.protocol("get", answer.protocol, &finished.stderr)?;
        let Some(record) = answer.record else { return Ok(None) };
        // Whatever it answered, its secrets are never quoted from now on.
        {
            let mut handed = helper.handed.lock().unwrap_or_else(PoisonError::into_inner);
            handed.push(Secret::new(record.access_token.clone()));
            handed.extend(record.password.clone().map(Secret::new));
        }
        let same_installation = match (&record.installation, keyed) {
            (Some(name), true) => self.installation.is(name),
            (None, false) => true,
            _ => false,
        };
        if record.email.to_lowercase() != email.to_lowercase() || !same_installation {
            return Err(helper.unreadable(
                "get",
                "it answered with the record of another email or installation".into(),
                &finished.stderr,
            ));
        }
        Ok(Some(TokenRecord {
            email: record.email.to_lowercase(),
            user_id: record.user_id,
            token_id: record.token_id,
            access_token: Secret::new(record.access_token),
            expire_date: record.expire_date,
            api_url: record.api_url,
            issued_at: record.issued_at,
            password: record.password.map(Secret::new),
            company: record.company,
        }))
    }
}

impl Helper {
    /// The helper as the user wrote it, for messages.
    fn name(&self) -> String {
        shlex::try_join(self.argv.iter().map(String::as_str)).unwrap_or_else(|_| self.argv.join(" "))
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

    /// Run `VERB` with `stdin` to the end, failing unless it exits 0.
    fn run(&self, verb: &'static str, stdin: Option<Vec<u8>>) -> Result<Finished, TokenStoreError> {
        let finished = self.run_to_end(verb, stdin)?;
        if !finished.status.success() {
            return Err(self.failed(verb, describe(finished.status), &finished.stderr));
        }
        Ok(finished)
    }

    /// Run `VERB` with `stdin`, to the end or to the timeout, whatever its exit status.
    fn run_to_end(&self, verb: &'static str, stdin: Option<Vec<u8>>) -> Result<Finished, TokenStoreError> {
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
        Ok(Finished { stdout: take(0), stderr: take(1), status })
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

    /// The answer of `check`, `store`, `delete`, `lock` or `unlock`: nothing, or
    /// `{"protocol": 1, …}`.
    fn ack(&self, verb: &'static str, finished: &Finished) -> Result<Ack, TokenStoreError> {
        if finished.stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(Ack { protocol: PROTOCOL, capabilities: Vec::new() });
        }
        let ack: Ack = serde_json::from_slice(&finished.stdout).map_err(|e| {
            self.unreadable(verb, not_protocol_json(&e, "`{\"protocol\": 1}` or nothing"), &finished.stderr)
        })?;
        self.protocol(verb, ack.protocol, &finished.stderr)?;
        Ok(ack)
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

    /// One `lock` call with `request`: held (exit 0), held by another (exit 3, saying who), or
    /// an error.
    fn try_lock(&self, request: &[u8]) -> Result<Attempt, TokenStoreError> {
        let finished = self.run_to_end("lock", Some(request.to_vec()))?;
        if finished.status.success() {
            self.ack("lock", &finished)?;
            return Ok(Attempt::Held);
        }
        if finished.status.code() != Some(LOCK_HELD_BY_ANOTHER) {
            return Err(self.failed("lock", describe(finished.status), &finished.stderr));
        }
        let busy: Busy = serde_json::from_slice(&finished.stdout).map_err(|e| {
            self.unreadable(
                "lock",
                not_protocol_json(
                    &e,
                    "`{\"protocol\": 1, \"holder\": \"…\", \"since\": …}` with exit status 3",
                ),
                &finished.stderr,
            )
        })?;
        self.protocol("lock", busy.protocol, &finished.stderr)?;
        Ok(Attempt::Busy(self.holder(&busy)))
    }

    /// Who holds the lock, as the helper said it: bounded, each control or invisible
    /// formatting character escaped, every known secret redacted.
    fn holder(&self, busy: &Busy) -> String {
        let holder = busy.holder.as_deref().unwrap_or("a holder it does not name");
        let since = match &busy.since {
            Some(Value::Number(n)) => n.as_f64().and_then(|secs| {
                let secs = secs.floor();
                // Whole seconds of a plausible epoch (0 up to year ~2500).
                (0.0..=16_725_225_600.0).contains(&secs).then(|| {
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64);
                    humantime::format_rfc3339_seconds(time).to_string()
                })
            }),
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        let text = match since {
            Some(since) => format!("{holder}, since {since}"),
            None => holder.to_string(),
        };
        let handed = self.handed.lock().unwrap_or_else(PoisonError::into_inner);
        let text = redact(&text, self.redact.iter().chain(handed.iter()));
        let mut shown: String = text.chars().take(SHOWN_HOLDER).flat_map(escape_unseen).collect();
        if text.chars().count() > SHOWN_HOLDER {
            shown.push('…');
        }
        shown
    }
}

/// `c`, or its `\u{…}` escape when it is a control or an invisible formatting character.
fn escape_unseen(c: char) -> Vec<char> {
    let unseen = c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}');
    if unseen { format!("\\u{{{:x}}}", u32::from(c)).chars().collect() } else { vec![c] }
}

/// `value` as one line of JSON.
fn line(value: &Value) -> Vec<u8> {
    let mut bytes = value.to_string().into_bytes();
    bytes.push(b'\n');
    bytes
}

/// Who asks for a lock: `<host>:<pid>:<start>`, the start in Unix milliseconds and a counter
/// of this process's locks, so that two stores of one process never pass for one holder.
fn owner_id() -> String {
    static LOCKS: AtomicU64 = AtomicU64::new(0);
    let start = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let n = LOCKS.fetch_add(1, Ordering::Relaxed);
    format!("{}:{}:{start}-{n}", super::host_name(), std::process::id())
}

impl TokenStore for ExecStore {
    fn list(&self) -> Result<StoredTokens, TokenStoreError> {
        let answer = self.helper.list_answer()?;
        *self.limit.lock().unwrap_or_else(PoisonError::into_inner) =
            Bound::Said(answer.max_parallel_stores.map(|n| n.max(1)));
        let mut ours = StoredTokens::new();
        let mut unkeyed = BTreeMap::new();
        for e in answer.entries {
            let stored = StoredToken { user_id: e.user_id, api_url: e.api_url, expire_date: e.expire_date };
            match &e.installation {
                Some(name) if self.installation.is(name) => {
                    ours.insert(e.email.to_lowercase(), stored);
                }
                None if self.installation.owns_unkeyed(&stored.api_url) => {
                    unkeyed.insert(e.email.to_lowercase(), stored);
                }
                _ => {}
            }
        }
        *self.unkeyed.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(unkeyed.keys().cloned().collect());
        // A record kept before installations counts until this installation has its own.
        for (email, stored) in unkeyed {
            ours.entry(email).or_insert(stored);
        }
        Ok(ours)
    }

    fn check(&self) -> Result<(), TokenStoreError> {
        let finished = self.helper.run("check", None)?;
        let ack = self.helper.ack("check", &finished)?;
        let offers = |verb: &str| ack.capabilities.iter().any(|c| c == verb);
        *self.capabilities.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(Capabilities { lock: offers("lock"), get: offers("get") });
        Ok(())
    }

    fn store(&self, record: &TokenRecord) -> Result<(), TokenStoreError> {
        let limit = self.store_limit()?;
        {
            let mut handed = self.helper.handed.lock().unwrap_or_else(PoisonError::into_inner);
            handed.push(record.access_token.clone());
            handed.extend(record.password.clone());
        }
        let mut input = json!({
            "protocol": PROTOCOL,
            "installation": self.installation.name(),
            "email": record.email.to_lowercase(),
            "user_id": record.user_id,
            "token_id": record.token_id,
            "access_token": record.access_token.expose(),
            "expire_date": record.expire_date,
            "api_url": record.api_url,
            "issued_at": record.issued_at,
        });
        if let Some(password) = &record.password {
            input["password"] = json!(password.expose());
        }
        if let Some(company) = &record.company {
            input["company"] = json!(company);
        }
        let _slot = limit.map(|limit| self.enter(limit));
        let finished = self.helper.run("store", Some(line(&input)))?;
        self.helper.ack("store", &finished).map(drop)
    }

    fn delete(&self, email: &str) -> Result<(), TokenStoreError> {
        let finished = self.helper.run("delete", Some(self.addressed(email, true)))?;
        self.helper.ack("delete", &finished).map(drop)
    }

    fn get(&self, email: &str) -> Result<Option<TokenRecord>, TokenStoreError> {
        if let Some(record) = self.get_record(email, true)? {
            return Ok(Some(record));
        }
        // Not moved yet: the record kept before installations, if it is this one's (and, once
        // listed, only if `list` showed one).
        let listed = self.unkeyed.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if listed.is_some_and(|unkeyed| !unkeyed.contains(&email.to_lowercase())) {
            return Ok(None);
        }
        Ok(self.get_record(email, false)?.filter(|r| self.installation.owns_unkeyed(&r.api_url)))
    }

    fn lock(&self, wait: Duration) -> Result<Option<StoreLock>, TokenStoreError> {
        if !self.capabilities()?.lock {
            return Ok(None);
        }
        let owner = owner_id();
        let request = line(&json!({
            "protocol": PROTOCOL,
            "installation": self.installation.name(),
            "owner": owner,
            "ttl_seconds": self.lock_ttl.as_secs(),
        }));
        let deadline = Instant::now() + wait;
        loop {
            match self.helper.try_lock(&request)? {
                Attempt::Held => break,
                Attempt::Busy(holder) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(TokenStoreError::HelperLocked {
                            helper: self.helper.name(),
                            holder,
                            ttl: humantime::format_duration(self.lock_ttl).to_string(),
                        });
                    }
                    // Each attempt starts a program: once a second at most.
                    thread::sleep((deadline - now).min(Duration::from_secs(1)));
                }
            }
        }
        let unlock = line(&json!({
            "protocol": PROTOCOL,
            "installation": self.installation.name(),
            "owner": owner,
        }));
        Ok(Some(StoreLock::new(Lease::hold(Arc::clone(&self.helper), request, unlock, self.lock_ttl / 3))))
    }

    /// Move the records kept before installations that belong to this installation under its
    /// name: `get` each (without an installation), `store` it, `delete` the old one. Only for a
    /// helper that offers `get` (one written for installations, which addresses the old
    /// records by a request without `installation`); another keeps reading them as they are.
    fn recover(&self) -> Result<Recovery, TokenStoreError> {
        if !self.capabilities()?.get {
            return Ok(Recovery::default());
        }
        let answer = self.helper.list_answer()?;
        let keyed: BTreeSet<String> = answer
            .entries
            .iter()
            .filter(|e| e.installation.as_deref().is_some_and(|name| self.installation.is(name)))
            .map(|e| e.email.to_lowercase())
            .collect();
        let unkeyed: BTreeSet<String> = answer
            .entries
            .iter()
            .filter(|e| e.installation.is_none() && self.installation.owns_unkeyed(&e.api_url))
            .map(|e| e.email.to_lowercase())
            .collect();
        let mut recovery = Recovery::default();
        for email in unkeyed {
            if let Some(record) = self.get_record(&email, false)?
                && !keyed.contains(&email)
            {
                self.store(&record)?;
                recovery.migrated += 1;
            }
            let finished = self.helper.run("delete", Some(self.addressed(&email, false)))?;
            self.helper.ack("delete", &finished)?;
        }
        *self.unkeyed.lock().unwrap_or_else(PoisonError::into_inner) = Some(BTreeSet::new());
        Ok(recovery)
    }
}

/// A held helper lock: renewed by a thread every `every` until dropped, then given back.
struct Lease {
    helper: Arc<Helper>,
    unlock: Vec<u8>,
    /// Dropped to stop the renewals.
    stop: Option<mpsc::Sender<()>>,
    renewing: Option<thread::JoinHandle<()>>,
}

impl Lease {
    fn hold(helper: Arc<Helper>, request: Vec<u8>, unlock: Vec<u8>, every: Duration) -> Self {
        let (stop, stopped) = mpsc::channel::<()>();
        let renewer = Arc::clone(&helper);
        let renewing = thread::spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                match renewer.try_lock(&request) {
                    Ok(Attempt::Held) => tracing::debug!("renewed the token store's lock"),
                    Ok(Attempt::Busy(holder)) => tracing::error!(
                        holder = %holder,
                        "the token store's lock was taken by another holder while this apply held it: another apply may run at the same time"
                    ),
                    Err(e) => tracing::warn!(
                        error = %e,
                        "could not renew the token store's lock; it expires unless a later renewal succeeds"
                    ),
                }
            }
        });
        Self { helper, unlock, stop: Some(stop), renewing: Some(renewing) }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(renewing) = self.renewing.take() {
            let _ = renewing.join();
        }
        let released = self.helper.run("unlock", Some(std::mem::take(&mut self.unlock)));
        if let Err(e) = released.and_then(|finished| self.helper.ack("unlock", &finished).map(drop)) {
            tracing::warn!(error = %e, "could not give back the token store's lock; it expires by itself");
        }
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
