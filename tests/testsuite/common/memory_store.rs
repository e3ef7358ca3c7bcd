//! An in-memory token store for tests and benchmarks: records by lower-cased email, with an
//! injectable store failure. No I/O.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use ozform::model::{StoredToken, StoredTokens};
use ozform::token_store::{TokenRecord, TokenStore, TokenStoreError};

#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    records: BTreeMap<String, TokenRecord>,
    /// Lower-cased emails whose next store fails.
    fail_next: Vec<String>,
    stores: usize,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
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
        };
        self.lock().records.insert(email.to_lowercase(), record);
    }

    /// Make the next store of `email`'s token fail (once).
    pub fn fail_next_store(&self, email: &str) {
        self.lock().fail_next.push(email.to_lowercase());
    }

    /// The stored token of `email`.
    pub fn get(&self, email: &str) -> Option<TokenRecord> {
        self.lock().records.get(&email.to_lowercase()).cloned()
    }

    /// Every stored token, by lower-cased email.
    pub fn records(&self) -> BTreeMap<String, TokenRecord> {
        self.lock().records.clone()
    }

    /// How many stores succeeded.
    pub fn stores(&self) -> usize {
        self.lock().stores
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind, still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl TokenStore for MemoryStore {
    fn list(&self) -> Result<StoredTokens, TokenStoreError> {
        Ok(self
            .lock()
            .records
            .iter()
            .map(|(email, r)| {
                let entry = StoredToken {
                    user_id: r.user_id.clone(),
                    api_url: r.api_url.clone(),
                    expire_date: r.expire_date,
                };
                (email.clone(), entry)
            })
            .collect())
    }

    fn check(&self) -> Result<(), TokenStoreError> {
        Ok(())
    }

    fn delete(&self, email: &str) -> Result<(), TokenStoreError> {
        self.lock().records.remove(&email.to_lowercase());
        Ok(())
    }

    fn store(&self, record: &TokenRecord) -> Result<(), TokenStoreError> {
        let key = record.email.to_lowercase();
        let mut state = self.lock();
        if let Some(i) = state.fail_next.iter().position(|e| *e == key) {
            state.fail_next.remove(i);
            return Err(TokenStoreError::Io {
                action: "write",
                path: format!("memory:{key}"),
                reason: "injected failure".into(),
            });
        }
        state.records.insert(key, record.clone());
        state.stores += 1;
        Ok(())
    }
}
