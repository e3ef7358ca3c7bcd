//! The directory store (`dir:PATH`, `--token-dir`): one JSON file per token,
//! `<dir>/<lower-cased email>.json`.
//!
//! Does file I/O only. Invariants: a token file is never seen half-written (it is written to a
//! temp file in the same directory, created with mode 0600, fsynced, renamed over the target,
//! and the directory is fsynced so the rename survives a crash); the directory is created with
//! mode 0700; no error ever holds file content (serde's messages can quote it), only the path,
//! the operation and a category.
//!
//! Hostile directories (issue #14): only regular files are read (anything else is ignored with
//! a warning), token files are opened with `O_NOFOLLOW` (a symlink planted in place of a token
//! file is not followed), and a directory that group or others may write to is refused unless
//! `allow_shared_dir` (a token planted there would be deployed).
//!
//! Pipelines (issue #12): `lock` holds an OS lock (`flock`) on `<dir>/.ozform.lock` for a whole
//! apply; while held the file names its holder (pid, host, since when), and it is emptied
//! before release, so two quiet runs leave the directory byte-identical. `recover`, under the
//! lock, finishes what a killed run left: a complete temp record newer than the token stored
//! under its name is renamed into place, anything else half-done is removed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::{Recovery, StoreLock, TokenRecord, TokenStore, TokenStoreError};
use crate::model::{Email, StoredToken, StoredTokens};
use crate::secret::Secret;

/// Token files in one directory.
#[derive(Debug, Clone)]
pub struct DirStore {
    dir: PathBuf,
    /// Accept a directory that group or others may write to (`--allow-shared-token-dir`).
    allow_shared: bool,
}

/// The lock file's name in the token directory (hidden: `list` never takes it for a token).
pub const LOCK_FILE: &str = ".ozform.lock";
/// What temp files of `store` have between the email and their random suffix.
const TEMP_MARK: &str = ".json.tmp-";
/// The prefix of `check`'s probe files.
const PROBE_PREFIX: &str = ".ozform-probe-";

/// The on-disk shape (the token file contract). Private: the token is exposed only here.
#[derive(Serialize, Deserialize)]
struct Stored {
    email: String,
    user_id: String,
    token_id: String,
    access_token: String,
    expire_date: f64,
    api_url: String,
    issued_at: String,
}

/// What `list` needs: no token, so a file is never held in memory with it for planning.
#[derive(Deserialize)]
struct Indexed {
    email: String,
    user_id: String,
    api_url: String,
    expire_date: f64,
}

impl DirStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into(), allow_shared: false }
    }

    /// Accept (or not, the default) a directory that group or others may write to.
    #[must_use]
    pub fn allow_shared_dir(mut self, allow: bool) -> Self {
        self.allow_shared = allow;
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the token of `email` is (or would be) stored.
    pub fn path_for(&self, email: &str) -> PathBuf {
        self.dir.join(format!("{}.json", email.to_lowercase()))
    }

    /// `path_for`, refusing an email that would name a file outside the directory or a
    /// hidden one (the manifest loader validates emails; a saved plan may have been edited).
    fn checked_path(&self, email: &str) -> Result<PathBuf, TokenStoreError> {
        let unsafe_name = email.is_empty()
            || email.starts_with('.')
            || email.contains(['/', '\\', '\0'])
            || email.chars().any(char::is_control);
        if unsafe_name {
            return Err(TokenStoreError::Io {
                action: "name a token file after",
                path: format!("{}/{email:?}", self.dir.display()),
                reason: "the email cannot be a file name (empty, hidden, or holds a path separator)".into(),
            });
        }
        Ok(self.path_for(email))
    }

    /// The stored token of `email`, if there is one.
    pub fn read(&self, email: &Email) -> Result<Option<TokenRecord>, TokenStoreError> {
        let path = self.checked_path(email.as_str())?;
        let bytes = match read_regular(&path) {
            Ok(Some(b)) => b,
            Ok(None) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("read", &path, &e)),
        };
        let s: Stored = serde_json::from_slice(&bytes).map_err(|e| corrupt(&path, &e))?;
        Ok(Some(TokenRecord {
            email: s.email,
            user_id: s.user_id,
            token_id: s.token_id,
            access_token: Secret::new(s.access_token),
            expire_date: s.expire_date,
            api_url: s.api_url,
            issued_at: s.issued_at,
        }))
    }

    fn ensure_dir(&self) -> Result<(), TokenStoreError> {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt as _;
            builder.mode(0o700);
        }
        builder.create(&self.dir).map_err(|e| io_error("create directory", &self.dir, &e))?;
        self.refuse_shared()
    }

    /// Refuse a directory that group or others may write to, unless allowed.
    fn refuse_shared(&self) -> Result<(), TokenStoreError> {
        #[cfg(unix)]
        if !self.allow_shared {
            use std::os::unix::fs::PermissionsExt as _;
            let meta = match fs::metadata(&self.dir) {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(io_error("inspect", &self.dir, &e)),
            };
            let mode = meta.permissions().mode() & 0o7777;
            let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
                (_, true) => Some("everyone"),
                (true, false) => Some("its group"),
                (false, false) => None,
            };
            if let Some(who) = who {
                return Err(TokenStoreError::SharedDir { path: display(&self.dir), who, mode });
            }
        }
        Ok(())
    }

    /// Put the complete temp record `temp` of `email` in place if it is newer than the stored
    /// one; `Ok(true)` when it was.
    fn commit_temp(&self, temp: &Path, email: &str) -> Result<bool, TokenStoreError> {
        let Ok(Some(bytes)) = read_regular(temp) else { return Ok(false) };
        let Ok(record) = serde_json::from_slice::<Stored>(&bytes) else { return Ok(false) };
        let target = self.checked_path(email)?;
        if record.email.to_lowercase() != email {
            return Ok(false);
        }
        let stored = match read_regular(&target) {
            Ok(Some(b)) => serde_json::from_slice::<Stored>(&b).ok(),
            _ => None,
        };
        if stored.is_some_and(|s| !newer(&record.issued_at, &s.issued_at)) {
            return Ok(false);
        }
        // As `store` would have left it: mode 0600 (whatever wrote it), durable.
        private_and_synced(temp).map_err(|e| io_error("fsync", temp, &e))?;
        fs::rename(temp, &target).map_err(|e| io_error("rename into place", &target, &e))?;
        Ok(true)
    }
}

/// Give the regular file `path` (not followed if a symlink) mode 0600 and fsync it.
fn private_and_synced(path: &Path) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
        let file = options.open(path)?;
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.sync_all()
    }
    #[cfg(not(unix))]
    {
        options.open(path)?.sync_all()
    }
}

/// Whether RFC 3339 time `a` is after `b` (an unreadable one counts as oldest).
fn newer(a: &str, b: &str) -> bool {
    let parse = |t: &str| humantime::parse_rfc3339_weak(t).ok();
    match (parse(a), parse(b)) {
        (Some(a), Some(b)) => a > b,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// The bytes of `path` if it is a regular file; `Ok(None)` (with a warning) for anything else.
/// Opened with `O_NOFOLLOW` (a symlink fails to open) and `O_NONBLOCK` (a FIFO swapped in
/// after the directory was listed cannot hang the run), and checked again once open.
fn read_regular(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let mut file = match options.open(path) {
        Ok(file) => file,
        // ELOOP: the final component is a symlink.
        #[cfg(unix)]
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            not_regular(path);
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    if !file.metadata()?.is_file() {
        not_regular(path);
        return Ok(None);
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(Some(bytes))
}

fn not_regular(path: &Path) {
    tracing::warn!(path = %path.display(), "not a regular file: ignored (the token store reads only regular files)");
}

impl TokenStore for DirStore {
    fn list(&self) -> Result<StoredTokens, TokenStoreError> {
        let mut index = StoredTokens::new();
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            // No directory yet: no tokens yet (it is created on the first store).
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(index),
            Err(e) => return Err(io_error("list", &self.dir, &e)),
        };
        self.refuse_shared()?;
        for entry in entries {
            let entry = entry.map_err(|e| io_error("list", &self.dir, &e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            // Temp files of an interrupted store start with a dot; they are not tokens.
            // Token files are written as lower-case `.json` by `store`; nothing else is ours.
            #[allow(clippy::case_sensitive_file_extension_comparisons)]
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            let path = entry.path();
            // The entry's own type (a symlink is not followed): only regular files are read.
            if !entry.file_type().is_ok_and(|t| t.is_file()) {
                not_regular(&path);
                continue;
            }
            let Some(bytes) = read_regular(&path).map_err(|e| io_error("read", &path, &e))? else { continue };
            let i: Indexed = serde_json::from_slice(&bytes).map_err(|e| corrupt(&path, &e))?;
            index.insert(
                i.email.to_lowercase(),
                StoredToken { user_id: i.user_id, api_url: i.api_url, expire_date: i.expire_date },
            );
        }
        Ok(index)
    }

    /// Create and remove a probe file with the final mode in the final directory (creating
    /// the directory as `store` would): what a store needs, proven before any token exists.
    fn check(&self) -> Result<(), TokenStoreError> {
        self.ensure_dir()?;
        let probe = self.dir.join(format!("{PROBE_PREFIX}{:016x}", fastrand::u64(..)));
        let written = write_new_private(&probe, b"{}\n");
        // Best effort: a probe that cannot be removed is hidden from `list` (a dot file).
        let _ = fs::remove_file(&probe);
        written?;
        sync_dir(&self.dir)
    }

    fn delete(&self, email: &str) -> Result<(), TokenStoreError> {
        let target = self.checked_path(email)?;
        match fs::remove_file(&target) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("remove", &target, &e)),
        }
    }

    fn lock(&self, wait: Duration) -> Result<Option<StoreLock>, TokenStoreError> {
        self.lock_dir(wait).map(Some)
    }

    fn recover(&self) -> Result<Recovery, TokenStoreError> {
        self.recover_dir()
    }

    fn store(&self, record: &TokenRecord) -> Result<(), TokenStoreError> {
        let target = self.checked_path(&record.email)?;
        self.ensure_dir()?;
        let stored = Stored {
            email: record.email.to_lowercase(),
            user_id: record.user_id.clone(),
            token_id: record.token_id.clone(),
            access_token: record.access_token.expose().to_string(),
            expire_date: record.expire_date,
            api_url: record.api_url.clone(),
            issued_at: record.issued_at.clone(),
        };
        let mut json = serde_json::to_vec_pretty(&stored).map_err(|_| TokenStoreError::Io {
            action: "encode",
            path: display(&target),
            reason: "not JSON".into(),
        })?;
        json.push(b'\n');
        let temp =
            self.dir.join(format!(".{}{TEMP_MARK}{:016x}", record.email.to_lowercase(), fastrand::u64(..)));
        let written = write_new_private(&temp, &json).and_then(|()| {
            fs::rename(&temp, &target).map_err(|e| io_error("rename into place", &target, &e))
        });
        if written.is_err() {
            // Best effort: the temp file is hidden from `list` anyway.
            let _ = fs::remove_file(&temp);
        }
        written?;
        sync_dir(&self.dir)
    }
}

impl DirStore {
    /// `TokenStore::lock` of the directory store: `flock` on `<dir>/.ozform.lock`, polled until
    /// `wait` has passed, then the holder written into it.
    fn lock_dir(&self, wait: Duration) -> Result<StoreLock, TokenStoreError> {
        self.ensure_dir()?;
        let path = self.dir.join(LOCK_FILE);
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
        }
        let mut file = options.open(&path).map_err(|e| io_error("open the lock file", &path, &e))?;
        let deadline = Instant::now() + wait;
        loop {
            let locked = file.try_lock();
            match locked {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) => {
                    let now = Instant::now();
                    if now >= deadline {
                        let holder = fs::read_to_string(&path).unwrap_or_default();
                        let holder = holder.trim();
                        let holder = if holder.is_empty() {
                            "it has not said who it is yet".to_string()
                        } else {
                            holder.to_string()
                        };
                        return Err(TokenStoreError::Locked { path: display(&path), holder });
                    }
                    // `flock` cannot wait with a timeout; poll, a tenth of a second at a time.
                    std::thread::sleep((deadline - now).min(Duration::from_millis(100)));
                }
                Err(fs::TryLockError::Error(e)) => return Err(io_error("lock", &path, &e)),
            }
        }
        let holder = format!(
            "pid {} on {}, since {}\n",
            std::process::id(),
            host_name(),
            humantime::format_rfc3339_seconds(SystemTime::now())
        );
        file.set_len(0)
            .and_then(|()| file.write_all(holder.as_bytes()))
            .and_then(|()| file.sync_data())
            .map_err(|e| io_error("write", &path, &e))?;
        Ok(StoreLock::new(file))
    }

    /// `TokenStore::recover` of the directory store.
    fn recover_dir(&self) -> Result<Recovery, TokenStoreError> {
        let mut recovery = Recovery::default();
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(recovery),
            Err(e) => return Err(io_error("list", &self.dir, &e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io_error("list", &self.dir, &e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let email = name.strip_prefix('.').and_then(|n| n.split_once(TEMP_MARK)).map(|(email, _)| email);
            let probe = name.starts_with(PROBE_PREFIX);
            if email.is_none() && !probe {
                continue;
            }
            let path = entry.path();
            if !entry.file_type().is_ok_and(|t| t.is_file()) {
                not_regular(&path);
                continue;
            }
            if let Some(email) = email
                && self.commit_temp(&path, email)?
            {
                recovery.recovered += 1;
                continue;
            }
            match fs::remove_file(&path) {
                Ok(()) => recovery.removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("remove", &path, &e)),
            }
        }
        if recovery != Recovery::default() {
            sync_dir(&self.dir)?;
        }
        Ok(recovery)
    }
}

/// This machine's name, for the lock file (Linux; elsewhere `HOSTNAME` or "unknown host").
fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown host".into())
}

/// Create `path` (which must not exist) with mode 0600, write `bytes` and fsync.
fn write_new_private(path: &Path, bytes: &[u8]) -> Result<(), TokenStoreError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| io_error("create", path, &e))?;
    file.write_all(bytes).map_err(|e| io_error("write", path, &e))?;
    file.sync_all().map_err(|e| io_error("fsync", path, &e))
}

/// Make the rename durable. Directories cannot be opened for sync everywhere; on Unix they can.
fn sync_dir(dir: &Path) -> Result<(), TokenStoreError> {
    #[cfg(unix)]
    {
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_error("fsync", dir, &e))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

fn io_error(action: &'static str, path: &Path, e: &io::Error) -> TokenStoreError {
    // `io::Error`'s Display is the OS message ("Permission denied (os error 13)"): no content.
    TokenStoreError::Io { action, path: display(path), reason: e.to_string() }
}

fn corrupt(path: &Path, e: &serde_json::Error) -> TokenStoreError {
    // Never `e.to_string()`: serde quotes the offending value, which may be the token.
    let what = match e.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not valid JSON",
        serde_json::error::Category::Data => "not a token record (a field is missing or of the wrong type)",
        serde_json::error::Category::Eof => "truncated JSON",
    };
    TokenStoreError::Corrupt {
        path: display(path),
        reason: format!("{what} at line {} column {}", e.line(), e.column()),
    }
}
