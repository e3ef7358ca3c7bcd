//! An in-memory token store for tests and benchmarks: records by (installation, lower-cased
//! email), with an injectable store failure and an in-process lock per installation. No I/O.
//!
//! `MemoryStore::new()` is the store of one installation (`memory`); `for_installation` opens
//! another installation's view of the same records, as a shared `dir:` or `exec:` store would.
//! It keeps to the store contract the conformance suite (`token_store_conformance`) checks of
//! every store kind.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ozform::model::{StoredToken, StoredTokens};
use ozform::token_store::{Installation, StoreLock, TokenRecord, TokenStore, TokenStoreError};

#[derive(Debug)]
pub struct MemoryStore {
    shared: Arc<Mutex<State>>,
    installation: String,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Default)]
struct State {
    records: BTreeMap<(String, String), TokenRecord>,
    /// (installation, lower-cased email) whose next store fails.
    fail_next: Vec<(String, String)>,
    stores: usize,
    /// Installations whose lock is held.
    locked: BTreeSet<String>,
}

/// The held lock of one installation, released when dropped.
struct MemoryLock {
    shared: Arc<Mutex<State>>,
    installation: String,
}

impl Drop for MemoryLock {
    fn drop(&mut self) {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner).locked.remove(&self.installation);
    }
}

impl MemoryStore {
    /// An empty store, seen as installation `memory`.
    pub fn new() -> Self {
        Self { shared: Arc::default(), installation: "memory".into() }
    }

    /// The view of `installation` of the same records.
    pub fn for_installation(&self, installation: &Installation) -> Self {
        Self { shared: Arc::clone(&self.shared), installation: installation.name().to_string() }
    }

    fn key(&self, email: &str) -> (String, String) {
        (self.installation.clone(), email.to_lowercase())
    }

    /// Start with this stored token of `email` (its token a placeholder).
    pub fn seed(&self, email: &str, token: &StoredToken) {
        let record = TokenRecord {
            email: email.to_lowercase(),
            user_id: token.user_id.clone(),
            token_id: format!("seeded-{email}"),
            access_token: ozform::secret::Secret::new(format!("seeded-token-{email}")),
            expire_date: token.expire_date,
            api_url: token.api_url.clone(),
            issued_at: "2026-01-01T00:00:00Z".into(),
            password: None,
            company: None,
        };
        let key = self.key(email);
        self.lock().records.insert(key, record);
    }

    /// Make the next store of `email`'s token fail (once).
    pub fn fail_next_store(&self, email: &str) {
        let key = self.key(email);
        self.lock().fail_next.push(key);
    }

    /// The stored token of `email`.
    pub fn get(&self, email: &str) -> Option<TokenRecord> {
        self.lock().records.get(&self.key(email)).cloned()
    }

    /// Every stored token of this installation, by lower-cased email.
    pub fn records(&self) -> BTreeMap<String, TokenRecord> {
        self.lock()
            .records
            .iter()
            .filter(|((installation, _), _)| *installation == self.installation)
            .map(|((_, email), r)| (email.clone(), r.clone()))
            .collect()
    }

    /// How many stores succeeded (of every installation).
    pub fn stores(&self) -> usize {
        self.lock().stores
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind, still consistent.
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl TokenStore for MemoryStore {
    fn list(&self) -> Result<StoredTokens, TokenStoreError> {
        Ok(self
            .records()
            .into_iter()
            .map(|(email, r)| {
                (email, StoredToken { user_id: r.user_id, api_url: r.api_url, expire_date: r.expire_date })
            })
            .collect())
    }

    fn check(&self) -> Result<(), TokenStoreError> {
        Ok(())
    }

    fn delete(&self, email: &str) -> Result<(), TokenStoreError> {
        let key = self.key(email);
        self.lock().records.remove(&key);
        Ok(())
    }

    fn get(&self, email: &str) -> Result<Option<TokenRecord>, TokenStoreError> {
        Ok(MemoryStore::get(self, email))
    }

    fn store(&self, record: &TokenRecord) -> Result<(), TokenStoreError> {
        let key = self.key(&record.email);
        let mut state = self.lock();
        if let Some(i) = state.fail_next.iter().position(|k| *k == key) {
            state.fail_next.remove(i);
            return Err(TokenStoreError::Io {
                action: "write",
                path: format!("memory:{}", key.1),
                reason: "injected failure".into(),
            });
        }
        let mut record = record.clone();
        record.email.clone_from(&key.1);
        state.records.insert(key, record);
        state.stores += 1;
        Ok(())
    }

    fn lock(&self, wait: Duration) -> Result<Option<StoreLock>, TokenStoreError> {
        let deadline = Instant::now() + wait;
        loop {
            if self.lock().locked.insert(self.installation.clone()) {
                let guard =
                    MemoryLock { shared: Arc::clone(&self.shared), installation: self.installation.clone() };
                return Ok(Some(StoreLock::new(guard)));
            }
            if Instant::now() >= deadline {
                return Err(TokenStoreError::Locked {
                    path: format!("memory:{}", self.installation),
                    holder: "another view of this store".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
