//! The stale-plan check of `apply --plan`: is every object the plan was made against still as
//! it was, and is every id the plan carries the id of the object at its address?
//!
//! A saved plan is a file anyone along the way can edit, and its `plan_id` is a checksum anyone
//! can recompute or drop. So nothing a plan says about *which* object to act on is taken on
//! trust: each id the executor would use is checked against the live object found by the
//! change's address, the way the planner found it (companies by exact name, users by email),
//! and the whole plan is refused (`ApplyError::Stale`) if one differs:
//! - every `live_id` (an update's, a removal's, a token's) is the id of the live object at the
//!   address: the live company of that name, the live user of that email;
//! - a user create's `company_id` is the id of the one live company the create names;
//! - a token's `user_id` is the id of the live user of its email (so the token is issued for,
//!   and stored under, that user);
//! - a user that an update, a removal or a token acts on is a service user, and one that an
//!   update or a removal acts on is in the company the change names (for a removal, a company
//!   the plan's `prune` lists: `format` checks that), as the planner required; so an edited plan
//!   can touch neither an ADMIN nor a user of a company that does not prune.
//!
//! Then each change's `fingerprint` is that of the live object at plan time; `None` asserts that
//! the object was absent. A token's fingerprint is its user's (a recreated user invalidates the
//! planned `live_id`).
//!
//! Reads only (through `Effects::find_companies` / `find_user`), concurrently within the
//! parallelism bound, each natural key once: a change's own, and the company a user change
//! names.

use std::collections::BTreeMap;

use futures::stream::{self, StreamExt as _};

use super::{ApplyError, EffectError, Effects};
use crate::escape::quote;
use crate::model::{Email, ObservedCompany, ObservedUser, UserKind};
use crate::plan::{Address, Change, Payload, Plan, UserFields, fingerprint};

/// The natural key read for a change: companies by name, users (and tokens) by email.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Company(String),
    User(Email),
}

/// What the reads found, by natural key: the live companies of each name (not in deletion),
/// the live user of each email.
#[derive(Debug, Default)]
struct Live {
    companies: BTreeMap<String, Vec<ObservedCompany>>,
    users: BTreeMap<Email, Option<ObservedUser>>,
}

/// What a read found, with its key.
enum Read {
    Companies(String, Vec<ObservedCompany>),
    User(Email, Option<ObservedUser>),
}

/// Refuse `plan` whole if any object it was made against has moved, or if an id it carries is
/// not the id of the live object at its address. Changes nothing.
pub async fn check_fresh<E: Effects>(plan: &Plan, effects: &E, parallelism: usize) -> Result<(), ApplyError> {
    let mut keys: Vec<Key> = plan.changes.iter().flat_map(keys_of).collect();
    keys.sort();
    keys.dedup();

    let reads = stream::iter(keys)
        .map(|key| read(effects, key))
        .buffer_unordered(parallelism.max(1))
        .collect::<Vec<_>>()
        .await;
    let mut live = Live::default();
    for read in reads {
        match read? {
            Read::Companies(name, found) => {
                live.companies.insert(name, found);
            }
            Read::User(email, found) => {
                live.users.insert(email, found);
            }
        }
    }

    let mut moved = Vec::new();
    let mut wrong = Vec::new();
    for change in &plan.changes {
        let found = live.wrong_ids(change);
        if !found.is_empty() {
            wrong.extend(found);
        } else if !live.same_fingerprint(change) {
            moved.push(change.address.to_string());
        }
    }
    if moved.is_empty() && wrong.is_empty() { Ok(()) } else { Err(ApplyError::Stale { moved, wrong }) }
}

/// The keys read for `change`: its address's, and the company its user is in (or created in).
fn keys_of(change: &Change) -> Vec<Key> {
    let own = match &change.address {
        Address::Company(name) => Key::Company(name.clone()),
        Address::ServiceUser(email) | Address::Token(email) => Key::User(email.clone()),
    };
    let mut keys = vec![own];
    keys.extend(companies_named(change).into_iter().map(|name| Key::Company(name.to_string())));
    keys
}

/// The companies a user change says its user is in: a create's, both sides of an update's, a
/// removal's.
fn companies_named(change: &Change) -> Vec<&str> {
    match &change.payload {
        Payload::CreateUser(create) => vec![create.fields.company.as_str()],
        Payload::UpdateUser(update) => vec![update.before.company.as_str(), update.after.company.as_str()],
        Payload::DeactivateUser(user) | Payload::DeleteUser(user) => vec![user.company.as_str()],
        Payload::CreateCompany(_) | Payload::UpdateCompany(_) | Payload::IssueToken(_) => Vec::new(),
    }
}

async fn read<E: Effects>(effects: &E, key: Key) -> Result<Read, ApplyError> {
    let failed = |address: Address, source: EffectError| ApplyError::FreshRead {
        address: address.to_string(),
        source,
    };
    match key {
        Key::Company(name) => match effects.find_companies(&name).await {
            Ok(found) => Ok(Read::Companies(name, found)),
            Err(source) => Err(failed(Address::Company(name), source)),
        },
        Key::User(email) => match effects.find_user(&email).await {
            Ok(found) => Ok(Read::User(email, found)),
            Err(source) => Err(failed(Address::ServiceUser(email), source)),
        },
    }
}

impl Live {
    /// The live companies named `name` (none when it was not read).
    fn companies(&self, name: &str) -> &[ObservedCompany] {
        self.companies.get(name).map_or(&[], Vec::as_slice)
    }

    /// The live user of `email` (none when it was not read).
    fn user(&self, email: &Email) -> Option<&ObservedUser> {
        self.users.get(email).and_then(Option::as_ref)
    }

    /// Whether the fingerprint the plan recorded for `change` is that of the live object now
    /// (`None`: the object is absent, as a create asserts).
    fn same_fingerprint(&self, change: &Change) -> bool {
        let now = match &change.address {
            Address::Company(name) => match self.companies(name) {
                [] => None,
                [one] => Some(fingerprint::company(one)),
                // Several of one name: the planner found one, or none (a create).
                _ => return false,
            },
            Address::ServiceUser(email) | Address::Token(email) => self.user(email).map(fingerprint::user),
        };
        change.fingerprint == now
    }

    /// Every way an id or an assumption of `change` disagrees with the live object at its
    /// address, each a sentence naming the address and both sides; empty when none does.
    fn wrong_ids(&self, change: &Change) -> Vec<String> {
        let address = change.address.to_string();
        let mut wrong = Vec::new();
        match &change.address {
            Address::Company(name) => {
                if let Some(id) = &change.live_id {
                    wrong.extend(self.company_id_is(
                        name,
                        id,
                        &format!("{} acts on company id", quote(&address)),
                    ));
                }
            }
            Address::ServiceUser(email) | Address::Token(email) => {
                let user = self.user(email);
                if let Some(id) = &change.live_id {
                    wrong.extend(user_id_is(
                        user,
                        email,
                        id,
                        &format!("{} acts on user id", quote(&address)),
                    ));
                }
                if let Payload::IssueToken(issue) = &change.payload
                    && let Some(id) = &issue.user_id
                    && change.live_id.as_ref() != Some(id)
                {
                    let doing = format!("{} issues a token for user id", quote(&address));
                    wrong.extend(user_id_is(user, email, id, &doing));
                }
                wrong.extend(self.acted_on_as_planned(change, user));
            }
        }
        if let Payload::CreateUser(create) = &change.payload
            && let Some(id) = &create.company_id
        {
            let company = &create.fields.company;
            let doing = format!("{} creates its user in company id", quote(&address));
            wrong.extend(self.company_id_is(company, id, &doing));
        }
        wrong
    }

    /// `None` when `id` is the id of the one live company named `name`, else the sentence
    /// `doing … , but …`.
    fn company_id_is(&self, name: &str, id: &str, doing: &str) -> Option<String> {
        let live = match self.companies(name) {
            [one] if one.id == id => return None,
            [one] => format!("the live company {} has id {}", quote(name), quote(&one.id)),
            [] => format!("no live company is named {}", quote(name)),
            many => format!("{} live companies are named {}", many.len(), quote(name)),
        };
        Some(format!("{doing} {}, but {live}", quote(id)))
    }

    /// For a change that acts on a live user (an update, a removal, a token of a live user):
    /// the user is a service user, and an update's or a removal's is in the company it names.
    fn acted_on_as_planned(&self, change: &Change, user: Option<&ObservedUser>) -> Vec<String> {
        let address = quote(&change.address.to_string());
        let Some(user) = user else { return Vec::new() };
        let fields: Vec<&UserFields> = match &change.payload {
            Payload::UpdateUser(update) => vec![&update.before, &update.after],
            Payload::DeactivateUser(user) | Payload::DeleteUser(user) => vec![user],
            // A token acts on its user, whatever its company; a create asserts there is none.
            Payload::IssueToken(_) => Vec::new(),
            Payload::CreateUser(_) | Payload::CreateCompany(_) | Payload::UpdateCompany(_) => {
                return Vec::new();
            }
        };
        let mut wrong = Vec::new();
        if user.kind != UserKind::Service {
            wrong.push(format!(
                "{address} acts on a service user, but the live user {} (id {}) is {}",
                quote(user.email.as_str()),
                quote(&user.id),
                user.kind.describe()
            ));
        }
        let mut named: Vec<&str> = fields.iter().map(|f| f.company.as_str()).collect();
        named.dedup();
        let user_is = format!("the live user {} (id {})", quote(user.email.as_str()), quote(&user.id));
        for company in named {
            let live_in = match user.company_id.as_deref() {
                Some(id) => format!("is in company id {}", quote(id)),
                None => "is in no company".to_string(),
            };
            let but = match self.companies(company) {
                [one] if user.company_id.as_deref() == Some(one.id.as_str()) => continue,
                [one] => format!(" (id {}), but {user_is} {live_in}", quote(&one.id)),
                [] => format!(", but no live company has that name ({user_is} {live_in})"),
                many => format!(", but {} live companies have that name ({user_is} {live_in})", many.len()),
            };
            wrong.push(format!("{address} acts on a user of company {}{but}", quote(company)));
        }
        wrong
    }
}

/// `None` when `id` is the id of `user`, the live user of `email`, else the sentence
/// `doing … , but …`.
fn user_id_is(user: Option<&ObservedUser>, email: &Email, id: &str, doing: &str) -> Option<String> {
    let live = match user {
        Some(user) if user.id == id => return None,
        Some(user) => format!("the live user {} has id {}", quote(email.as_str()), quote(&user.id)),
        None => format!("no live user has the email {}", quote(email.as_str())),
    };
    Some(format!("{doing} {}, but {live}", quote(id)))
}
