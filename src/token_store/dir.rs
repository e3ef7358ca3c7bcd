//! The directory store (`dir:PATH`, `--token-dir`): one JSON file per token,
//! `<dir>/<lower-cased email>.json`.
//!
//! Does file I/O only. Invariants: a token file is never seen half-written (it is written to a
//! temp file in the same directory, created with mode 0600, fsynced, renamed over the target,
//! and the directory is fsynced so the rename survives a crash); the directory is created with
//! mode 0700; no error ever holds file content (serde's messages can quote it), only the path,
//! the operation and a category.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{TokenRecord, TokenStore, TokenStoreError};
use crate::model::{Email, StoredToken, StoredTokens};
use crate::secret::Secret;

/// Token files in one directory.
#[derive(Debug, Clone)]
pub struct DirStore {
    dir: PathBuf,
}

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
        Self { dir: dir.into() }
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
        let bytes = match fs::read(&path) {
            Ok(b) => b,
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
        builder.create(&self.dir).map_err(|e| io_error("create directory", &self.dir, &e))
    }
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
            let bytes = fs::read(&path).map_err(|e| io_error("read", &path, &e))?;
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
        let probe = self.dir.join(format!(".ozform-probe-{:016x}", fastrand::u64(..)));
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
            self.dir.join(format!(".{}.json.tmp-{:016x}", record.email.to_lowercase(), fastrand::u64(..)));
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
