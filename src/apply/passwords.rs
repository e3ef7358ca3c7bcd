//! Passwords of the service users a plan creates, resolved up front.
//!
//! Reads only the environment lookup and the files a plan names. All missing passwords are
//! collected into one error naming each user and source (never a value), so a pipeline learns
//! about every missing secret at once and nothing is executed.

use std::collections::BTreeMap;

use super::{ApplyError, MissingPassword};
use crate::model::Email;
use crate::plan::{Address, Payload, Plan};
use crate::secret::{Secret, SecretRef, SecretRoots};

/// Resolved passwords by lower-cased email. `Debug` shows only the emails.
#[derive(Clone, Default)]
pub struct Passwords(BTreeMap<String, Secret>);

impl Passwords {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, email: &Email, password: Secret) {
        self.0.insert(email.key(), password);
    }

    pub fn get(&self, email: &Email) -> Option<&Secret> {
        self.0.get(&email.key())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.0.iter()).finish()
    }
}

/// Place every secret file a saved plan names under the roots of this run (`roots`), so that
/// it can be read with the same confinement as a manifest's; one that lies outside them is
/// refused when resolved, naming its user.
pub fn anchor_secrets(plan: &mut Plan, roots: &SecretRoots) {
    for change in &mut plan.changes {
        if let Payload::CreateUser(create) = &mut change.payload
            && let SecretRef::File(file) = &mut create.password
        {
            file.anchor(roots);
        }
    }
}

/// Resolve the password of every service user create in `plan`.
pub fn resolve_passwords(plan: &Plan, env: &dyn Fn(&str) -> Option<String>) -> Result<Passwords, ApplyError> {
    let mut passwords = Passwords::new();
    let mut missing = Vec::new();
    for change in &plan.changes {
        let (Address::ServiceUser(email), Payload::CreateUser(create)) = (&change.address, &change.payload)
        else {
            continue;
        };
        match create.password.resolve(env) {
            Ok(secret) => passwords.insert(email, secret),
            // `SecretError` names the variable or file, never a value.
            Err(e) => missing.push(MissingPassword { email: email.to_string(), reason: e.to_string() }),
        }
    }
    if missing.is_empty() { Ok(passwords) } else { Err(ApplyError::MissingPasswords { missing }) }
}
