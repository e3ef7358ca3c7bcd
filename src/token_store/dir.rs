//! The directory store (`dir:PATH`, `--token-dir`): one JSON file per token,
//! `<dir>/<installation>/<email>.json`, both names encoded by `naming::encode` (lower-cased,
//! every byte outside `[a-z0-9._+@-]` and a leading dot as `%XX`, cut with a hash past 200
//! bytes), so that every address the API accepts has a file, and the full email is kept inside
//! the record.
//!
//! Does file I/O only. Invariants: a token file is never seen half-written (it is written to a
//! temp file in the same directory, created with mode 0600, fsynced, renamed over the target,
//! and the directory is fsynced so the rename survives a crash); the directories are created
//! with mode 0700, once per run (issue #22: not a failing `mkdir` per token); no error ever
//! holds file content (serde's messages can quote it), only the path, the operation and a
//! category.
//!
//! Installations (issue #21): a store is opened for one installation and reads and writes only
//! its directory. Files of the layout before installations (`<dir>/<lower-cased email>.json`)
//! are read by `list` and `get` when their `api_url` has this installation's origin, and moved
//! into its directory, under their encoded name, by `recover` (under the apply's lock).
//!
//! Hostile directories (issue #14): only regular files are read (anything else is ignored with
//! a warning), token files are opened with `O_NOFOLLOW` (a symlink planted in place of a token
//! file is not followed), and a directory that group or others may write to is refused unless
//! `allow_shared_dir` (a token planted there would be deployed).
//!
//! Pipelines (issue #12): `lock` holds an OS lock (`flock`) on
//! `<dir>/<installation>/.ozform.lock` for a whole apply; while held the file names its holder
//! (pid, host, since when), and it is emptied before release, so two quiet runs leave the
//! directory byte-identical. `recover`, under the lock, finishes what a killed run left: a
//! complete temp record newer than the token stored under its name is renamed into place,
//! anything else half-done is removed.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::naming::{Installation, encode};
use super::{Recovery, StoreLock, TokenRecord, TokenStore, TokenStoreError};
use crate::model::{StoredToken, StoredTokens};
use crate::secret::Secret;

/// Token files of one installation in one directory.
#[derive(Debug, Clone)]
pub struct DirStore {
    /// The directory given (`dir:PATH`): one subdirectory per installation.
    root: PathBuf,
    installation: Installation,
    /// `<root>/<encoded installation>`: this store's files.
    dir: PathBuf,
    /// Accept a directory that group or others may write to (`--allow-shared-token-dir`).
    allow_shared: bool,
    /// Both directories exist with their modes checked: made (or found) once per run.
    ready: Arc<AtomicBool>,
    /// Emails whose file of the layout before installations `list` found (and `store` then
    /// removes), so that no store tries to remove a file that is not there.
    unkeyed: Arc<Mutex<BTreeSet<String>>>,
}

/// The lock file's name in the token directory (hidden: `list` never takes it for a token).
pub const LOCK_FILE: &str = ".ozform.lock";
/// What temp files of `store` have between the encoded email and their random suffix.
const TEMP_MARK: &str = ".json.tmp-";
/// The prefix of `check`'s probe files.
const PROBE_PREFIX: &str = ".ozform-probe-";

/// The on-disk shape (the token file contract). Private: the token is exposed only here.
#[derive(Serialize, Deserialize)]
struct Stored {
    /// Absent in files written before installations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    installation: Option<String>,
    email: String,
    user_id: String,
    token_id: String,
    access_token: String,
    expire_date: f64,
    api_url: String,
    issued_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    company: Option<String>,
}

impl Stored {
    fn from_record(record: &TokenRecord, installation: &Installation) -> Self {
        Self {
            installation: Some(installation.name().to_string()),
            email: record.email.to_lowercase(),
            user_id: record.user_id.clone(),
            token_id: record.token_id.clone(),
            access_token: record.access_token.expose().to_string(),
            expire_date: record.expire_date,
            api_url: record.api_url.clone(),
            issued_at: record.issued_at.clone(),
            password: record.password.as_ref().map(|p| p.expose().to_string()),
            company: record.company.clone(),
        }
    }

    fn into_record(self) -> TokenRecord {
        TokenRecord {
            email: self.email.to_lowercase(),
            user_id: self.user_id,
            token_id: self.token_id,
            access_token: Secret::new(self.access_token),
            expire_date: self.expire_date,
            api_url: self.api_url,
            issued_at: self.issued_at,
            password: self.password.map(Secret::new),
            company: self.company,
        }
    }
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
    /// The tokens of `installation` under `root`.
    pub fn new(root: impl Into<PathBuf>, installation: Installation) -> Self {
        let root = root.into();
        let dir = root.join(encode(installation.name()));
        Self {
            root,
            installation,
            dir,
            allow_shared: false,
            ready: Arc::new(AtomicBool::new(false)),
            unkeyed: Arc::default(),
        }
    }

    /// Accept (or not, the default) a directory that group or others may write to.
    #[must_use]
    pub fn allow_shared_dir(mut self, allow: bool) -> Self {
        self.allow_shared = allow;
        self
    }

    /// The directory given (`dir:PATH`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// This installation's directory, `<root>/<encoded installation>`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the token of `email` is (or would be) stored.
    pub fn path_for(&self, email: &str) -> PathBuf {
        self.dir.join(format!("{}.json", encode(email)))
    }

    /// `path_for`, refusing an empty email (the only one that has no file name).
    fn checked_path(&self, email: &str) -> Result<PathBuf, TokenStoreError> {
        if email.is_empty() {
            return Err(TokenStoreError::Io {
                action: "name a token file after",
                path: display(&self.dir),
                reason: "the email is empty".into(),
            });
        }
        Ok(self.path_for(email))
    }

    /// Where the layout before installations kept the token of `email`, if it had a name for
    /// it (it refused names with a separator, a leading dot or a control character, and the
    /// file system names of more than 255 bytes).
    fn unkeyed_path(&self, email: &str) -> Option<PathBuf> {
        let lower = email.to_lowercase();
        let nameable = !lower.is_empty()
            && lower.len() + ".json".len() <= 255
            && !lower.starts_with('.')
            && !lower.contains(['/', '\\', '\0'])
            && !lower.chars().any(char::is_control);
        nameable.then(|| self.root.join(format!("{lower}.json")))
    }

    /// The record in `path`, if it is a regular file holding one.
    fn read_at(path: &Path) -> Result<Option<Stored>, TokenStoreError> {
        let bytes = match read_regular(path) {
            Ok(Some(b)) => b,
            Ok(None) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("read", path, &e)),
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| corrupt(path, &e))
    }

    /// The record of `email` kept before installations, if it is this installation's.
    fn read_unkeyed(&self, email: &str) -> Result<Option<(PathBuf, Stored)>, TokenStoreError> {
        let Some(path) = self.unkeyed_path(email) else { return Ok(None) };
        let Some(stored) = Self::read_at(&path)? else { return Ok(None) };
        let ours = stored.installation.is_none()
            && stored.email.to_lowercase() == email.to_lowercase()
            && self.installation.owns_unkeyed(&stored.api_url);
        Ok(ours.then_some((path, stored)))
    }

    /// Make both directories (mode 0700) and check their modes, once per run: `store` runs
    /// once per token, so it trusts what the first call found (`check` and `lock`, once per
    /// apply, look again: `ensure_dir_now`).
    fn ensure_dir(&self) -> Result<(), TokenStoreError> {
        if self.ready.load(Ordering::Acquire) {
            return Ok(());
        }
        self.ensure_dir_now()
    }

    /// Make both directories (mode 0700) if they are missing and check their modes.
    fn ensure_dir_now(&self) -> Result<(), TokenStoreError> {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt as _;
            builder.mode(0o700);
        }
        builder.create(&self.dir).map_err(|e| io_error("create directory", &self.dir, &e))?;
        self.refuse_shared(&self.root)?;
        self.refuse_shared(&self.dir)?;
        self.ready.store(true, Ordering::Release);
        Ok(())
    }

    /// Refuse a directory that group or others may write to, unless allowed.
    fn refuse_shared(&self, dir: &Path) -> Result<(), TokenStoreError> {
        #[cfg(unix)]
        if !self.allow_shared {
            use std::os::unix::fs::PermissionsExt as _;
            let meta = match fs::metadata(dir) {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(io_error("inspect", dir, &e)),
            };
            let mode = meta.permissions().mode() & 0o7777;
            let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
                (_, true) => Some("everyone"),
                (true, false) => Some("its group"),
                (false, false) => None,
            };
            if let Some(who) = who {
                return Err(TokenStoreError::SharedDir { path: display(dir), who, mode });
            }
        }
        Ok(())
    }

    /// Write `stored` to the file of its email in this installation's directory: temp file
    /// (0600, fsynced), rename, directory fsync.
    fn write_record(&self, stored: &Stored) -> Result<(), TokenStoreError> {
        let name = encode(&stored.email);
        let target = self.dir.join(format!("{name}.json"));
        let mut json = serde_json::to_vec_pretty(stored).map_err(|_| TokenStoreError::Io {
            action: "encode",
            path: display(&target),
            reason: "not JSON".into(),
        })?;
        json.push(b'\n');
        let temp = self.dir.join(format!(".{name}{TEMP_MARK}{:016x}", fastrand::u64(..)));
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

    /// Put the complete temp record `temp` (named for `name`) in place if it is newer than the
    /// stored one; `Ok(true)` when it was.
    fn commit_temp(&self, temp: &Path, name: &str) -> Result<bool, TokenStoreError> {
        let Ok(Some(bytes)) = read_regular(temp) else { return Ok(false) };
        let Ok(record) = serde_json::from_slice::<Stored>(&bytes) else { return Ok(false) };
        if encode(&record.email) != name {
            return Ok(false);
        }
        let target = self.dir.join(format!("{name}.json"));
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

/// The token files (`*.json`, not hidden, regular) of `dir`, in no order; nothing when `dir`
/// does not exist. Directories are passed over quietly (the root holds one per installation);
/// anything else that is not a regular file is ignored with a warning.
fn token_files(dir: &Path) -> Result<Vec<PathBuf>, TokenStoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error("list", dir, &e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error("list", dir, &e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        // Temp files, probes and the lock start with a dot; they are not tokens. Token files
        // are written as lower-case `.json` by `store`; nothing else is ours.
        #[allow(clippy::case_sensitive_file_extension_comparisons)]
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        let path = entry.path();
        // The entry's own type (a symlink is not followed): only regular files are read.
        match entry.file_type() {
            Ok(t) if t.is_file() => files.push(path),
            Ok(t) if t.is_dir() => {}
            _ => not_regular(&path),
        }
    }
    Ok(files)
}

impl TokenStore for DirStore {
    fn list(&self) -> Result<StoredTokens, TokenStoreError> {
        let mut index = StoredTokens::new();
        if !self.root.exists() {
            // No directory yet: no tokens yet (it is created on the first store).
            return Ok(index);
        }
        self.refuse_shared(&self.root)?;
        self.refuse_shared(&self.dir)?;
        for path in token_files(&self.dir)? {
            let Some(bytes) = read_regular(&path).map_err(|e| io_error("read", &path, &e))? else { continue };
            let i: Indexed = serde_json::from_slice(&bytes).map_err(|e| corrupt(&path, &e))?;
            index.insert(
                i.email.to_lowercase(),
                StoredToken { user_id: i.user_id, api_url: i.api_url, expire_date: i.expire_date },
            );
        }
        // The layout before installations: this installation's files, unless it has newer.
        let mut unkeyed = self.unkeyed.lock().unwrap_or_else(PoisonError::into_inner);
        for path in token_files(&self.root)? {
            let Some(bytes) = read_regular(&path).map_err(|e| io_error("read", &path, &e))? else { continue };
            let i: Indexed = serde_json::from_slice(&bytes).map_err(|e| corrupt(&path, &e))?;
            let email = i.email.to_lowercase();
            if !self.installation.owns_unkeyed(&i.api_url)
                || self.unkeyed_path(&email).as_deref() != Some(path.as_path())
            {
                continue;
            }
            unkeyed.insert(email.clone());
            index.entry(email).or_insert(StoredToken {
                user_id: i.user_id,
                api_url: i.api_url,
                expire_date: i.expire_date,
            });
        }
        Ok(index)
    }

    /// Create and remove a probe file with the final mode in the final directory (creating
    /// the directories as `store` would): what a store needs, proven before any token exists.
    fn check(&self) -> Result<(), TokenStoreError> {
        self.ensure_dir_now()?;
        let probe = self.dir.join(format!("{PROBE_PREFIX}{:016x}", fastrand::u64(..)));
        let written = write_new_private(&probe, b"{}\n");
        // Best effort: a probe that cannot be removed is hidden from `list` (a dot file).
        let _ = fs::remove_file(&probe);
        written?;
        sync_dir(&self.dir)
    }

    fn get(&self, email: &str) -> Result<Option<TokenRecord>, TokenStoreError> {
        let path = self.checked_path(email)?;
        if let Some(stored) = Self::read_at(&path)? {
            return Ok(Some(stored.into_record()));
        }
        Ok(self.read_unkeyed(email)?.map(|(_, stored)| stored.into_record()))
    }

    fn delete(&self, email: &str) -> Result<(), TokenStoreError> {
        let target = self.checked_path(email)?;
        match fs::remove_file(&target) {
            Ok(()) => sync_dir(&self.dir)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("remove", &target, &e)),
        }
        // Removals are rare: look for a file of the old layout each time.
        if let Some((path, _)) = self.read_unkeyed(email)? {
            fs::remove_file(&path).map_err(|e| io_error("remove", &path, &e))?;
            sync_dir(&self.root)?;
        }
        Ok(())
    }

    fn lock(&self, wait: Duration) -> Result<Option<StoreLock>, TokenStoreError> {
        self.lock_dir(wait).map(Some)
    }

    fn recover(&self) -> Result<Recovery, TokenStoreError> {
        let mut recovery = self.recover_dir()?;
        recovery.migrated = self.migrate()?;
        Ok(recovery)
    }

    fn store(&self, record: &TokenRecord) -> Result<(), TokenStoreError> {
        self.checked_path(&record.email)?;
        self.ensure_dir()?;
        self.write_record(&Stored::from_record(record, &self.installation))?;
        // A file of the old layout that `list` found for this email is superseded now.
        let email = record.email.to_lowercase();
        if self.unkeyed.lock().unwrap_or_else(PoisonError::into_inner).remove(&email)
            && let Some(path) = self.unkeyed_path(&email)
        {
            match fs::remove_file(&path) {
                Ok(()) => sync_dir(&self.root)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("remove", &path, &e)),
            }
        }
        Ok(())
    }
}

/// The lock guard of a directory store: the open lock file, emptied and unlocked when dropped.
struct DirLock(File);

impl Drop for DirLock {
    fn drop(&mut self) {
        // Emptied before it is released, so that two quiet runs leave the directory as they
        // found it; best effort (the lock itself dies with the file descriptor regardless).
        let _ = self.0.set_len(0);
        let _ = self.0.unlock();
    }
}

impl DirStore {
    /// `TokenStore::lock` of the directory store: `flock` on `<dir>/.ozform.lock`, polled until
    /// `wait` has passed, then the holder written into it.
    fn lock_dir(&self, wait: Duration) -> Result<StoreLock, TokenStoreError> {
        self.ensure_dir_now()?;
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
            super::host_name(),
            humantime::format_rfc3339_seconds(SystemTime::now())
        );
        file.set_len(0)
            .and_then(|()| file.write_all(holder.as_bytes()))
            .and_then(|()| file.sync_data())
            .map_err(|e| io_error("write", &path, &e))?;
        Ok(StoreLock::new(DirLock(file)))
    }

    /// `TokenStore::recover` of the directory store, in this installation's directory.
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
            let temp_of = name.strip_prefix('.').and_then(|n| n.split_once(TEMP_MARK)).map(|(name, _)| name);
            let probe = name.starts_with(PROBE_PREFIX);
            if temp_of.is_none() && !probe {
                continue;
            }
            let path = entry.path();
            if !entry.file_type().is_ok_and(|t| t.is_file()) {
                not_regular(&path);
                continue;
            }
            if let Some(encoded) = temp_of
                && self.commit_temp(&path, encoded)?
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

    /// Move this installation's files of the layout before installations (`<root>/<email>.json`
    /// whose `api_url` has this installation's origin, and complete temp records a killed run
    /// of that layout left) into its directory under their encoded names, with the
    /// installation written in; a file superseded by a newer one there is removed. Another
    /// installation's files are left where they are. Returns how many were moved.
    fn migrate(&self) -> Result<usize, TokenStoreError> {
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_error("list", &self.root, &e)),
        };
        let mut moved = 0;
        let mut changed = false;
        for entry in entries {
            let entry = entry.map_err(|e| io_error("list", &self.root, &e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let temp = name.starts_with('.') && name.contains(TEMP_MARK);
            #[allow(clippy::case_sensitive_file_extension_comparisons)]
            let record = !name.starts_with('.') && name.ends_with(".json");
            if !(temp || record) || !entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let path = entry.path();
            // Unreadable or half-written: not known to be this installation's; a temp file
            // cut short is nobody's and goes.
            let Ok(Some(bytes)) = read_regular(&path) else { continue };
            let Ok(stored) = serde_json::from_slice::<Stored>(&bytes) else {
                if temp {
                    let _ = fs::remove_file(&path);
                    changed = true;
                }
                continue;
            };
            if stored.installation.is_some() || !self.installation.owns_unkeyed(&stored.api_url) {
                continue;
            }
            let email = stored.email.to_lowercase();
            if record && self.unkeyed_path(&email).as_deref() != Some(path.as_path()) {
                continue;
            }
            self.ensure_dir()?;
            let current = Self::read_at(&self.path_for(&email)).ok().flatten();
            if current.is_none_or(|c| newer(&stored.issued_at, &c.issued_at)) {
                let mut stored = stored;
                stored.email.clone_from(&email);
                stored.installation = Some(self.installation.name().to_string());
                self.write_record(&stored)?;
                moved += 1;
            }
            fs::remove_file(&path).map_err(|e| io_error("remove", &path, &e))?;
            self.unkeyed.lock().unwrap_or_else(PoisonError::into_inner).remove(&email);
            changed = true;
        }
        if changed {
            sync_dir(&self.root)?;
        }
        Ok(moved)
    }
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
