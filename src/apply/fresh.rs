//! The stale-plan check of `apply --plan`: is every object the plan was made against still as
//! it was?
//!
//! Reads only (through `Effects::find_companies` / `find_user`), concurrently within the
//! parallelism bound, each natural key once. A change's `fingerprint` is that of the live
//! object at plan time; `None` asserts that the object was absent. A token's fingerprint is
//! its user's (a recreated user invalidates the planned `live_id`).

use std::collections::BTreeMap;

use futures::stream::{self, StreamExt as _};

use super::{ApplyError, EffectError, Effects};
use crate::model::Email;
use crate::plan::{Address, Plan, fingerprint};

/// The natural key read for a change: companies by name, users (and tokens) by email.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Company(String),
    User(Email),
}

/// What a read found now: absent, one object's fingerprint, or several objects (ambiguous).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Now {
    Absent,
    One(String),
    Ambiguous,
}

/// Refuse `plan` whole if any object it was made against has moved. Changes nothing.
pub async fn check_fresh<E: Effects>(plan: &Plan, effects: &E, parallelism: usize) -> Result<(), ApplyError> {
    let key_of = |a: &Address| match a {
        Address::Company(name) => Key::Company(name.clone()),
        Address::ServiceUser(email) | Address::Token(email) => Key::User(email.clone()),
    };
    let mut keys: Vec<Key> = plan.changes.iter().map(|c| key_of(&c.address)).collect();
    keys.sort();
    keys.dedup();

    let reads = stream::iter(keys)
        .map(|key| async move {
            let now = read(effects, &key).await;
            (key, now)
        })
        .buffer_unordered(parallelism.max(1))
        .collect::<Vec<_>>()
        .await;
    let mut live: BTreeMap<Key, Now> = BTreeMap::new();
    for (key, now) in reads {
        match now {
            Ok(now) => {
                live.insert(key, now);
            }
            Err(source) => {
                let address = match key {
                    Key::Company(n) => Address::Company(n),
                    Key::User(e) => Address::ServiceUser(e),
                };
                return Err(ApplyError::FreshRead { address: address.to_string(), source });
            }
        }
    }

    let mut moved = Vec::new();
    for change in &plan.changes {
        let now = live.get(&key_of(&change.address)).unwrap_or(&Now::Ambiguous);
        let same = match (&change.fingerprint, now) {
            (None, Now::Absent) => true,
            (Some(planned), Now::One(fp)) => planned == fp,
            _ => false,
        };
        if !same {
            moved.push(change.address.to_string());
        }
    }
    if moved.is_empty() { Ok(()) } else { Err(ApplyError::Stale { moved }) }
}

async fn read<E: Effects>(effects: &E, key: &Key) -> Result<Now, EffectError> {
    Ok(match key {
        Key::Company(name) => {
            let found = effects.find_companies(name).await?;
            match found.as_slice() {
                [] => Now::Absent,
                [one] => Now::One(fingerprint::company(one)),
                _ => Now::Ambiguous,
            }
        }
        Key::User(email) => match effects.find_user(email).await? {
            None => Now::Absent,
            Some(u) => Now::One(fingerprint::user(&u)),
        },
    })
}
