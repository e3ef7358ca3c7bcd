//! The plan as a value: `Plan`, its `Change`s and what each change carries.
//!
//! Pure data, no serde: the saved-plan JSON is the business of `format`, which converts these
//! types to and from its wire shapes. A change carries a typed payload per kind and action
//! (`Payload`), so the executor reads exactly the types the planner wrote; nothing is looked
//! up by field name. The `action` of a change follows from its payload.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::TokenReason;
use crate::model::{ApiVersion, Email, Permissions, Prune, StoredToken};
use crate::secret::PasswordSource;

/// What a change does. A small closed set, one symbol each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    Update,
    Issue,
    /// Set an undeclared live service user inactive (its company prunes with `deactivate`).
    Deactivate,
    /// Delete an undeclared live service user (its company prunes with `delete`).
    Delete,
}

impl Action {
    /// The symbol of the text plan: `+` create, `~` update, `*` issue, `!` deactivate,
    /// `-` delete.
    pub fn symbol(self) -> char {
        match self {
            Action::Create => '+',
            Action::Update => '~',
            Action::Issue => '*',
            Action::Deactivate => '!',
            Action::Delete => '-',
        }
    }

    /// A removal: `deactivate` or `delete` (guarded, and exit code 3 of `--detailed-exitcode`).
    pub fn is_removal(self) -> bool {
        matches!(self, Action::Deactivate | Action::Delete)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Issue => "issue",
            Action::Deactivate => "deactivate",
            Action::Delete => "delete",
        })
    }
}

/// The object a change is about: `company/<name>`, `service_user/<email>`, `token/<email>`.
/// Ordered by kind (companies, then users, then tokens), then identity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Address {
    Company(String),
    ServiceUser(Email),
    Token(Email),
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Company(name) => write!(f, "company/{name}"),
            Address::ServiceUser(email) => write!(f, "service_user/{email}"),
            Address::Token(email) => write!(f, "token/{email}"),
        }
    }
}

impl FromStr for Address {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, id) =
            s.split_once('/').ok_or_else(|| format!("address `{s}` has no `/`: expected kind/identity"))?;
        if id.is_empty() {
            return Err(format!("address `{s}` has an empty identity"));
        }
        match kind {
            "company" => Ok(Address::Company(id.to_string())),
            "service_user" => Ok(Address::ServiceUser(Email::new(id))),
            "token" => Ok(Address::Token(Email::new(id))),
            other => Err(format!("unknown address kind `{other}` in `{s}`")),
        }
    }
}

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A company's managed fields: what a create sets, and each side of an update.
#[derive(Debug, Clone, PartialEq)]
pub struct CompanyFields {
    pub name: String,
    /// Managed only when `Some` (compared as JSON).
    pub technical_meta_data: Option<Value>,
}

/// A service user's managed fields: what a create sets, and each side of an update. A `None`
/// field is not managed; `active` always is (the manifest's default is `true`).
#[derive(Debug, Clone, PartialEq)]
pub struct UserFields {
    /// As written in the manifest (a create, an update's `after`) or as the API spells it (an
    /// update's `before`).
    pub email: Email,
    /// The company's name in the manifests.
    pub company: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub middle_name: Option<String>,
    pub active: bool,
    /// The flags written in the manifest; `None` when no flag is managed.
    pub permissions: Option<Permissions>,
}

/// A service user to create.
#[derive(Debug, Clone, PartialEq)]
pub struct UserCreate {
    pub fields: UserFields,
    /// The id of its company when the company was live at plan time; `None` when the company
    /// is created by the change this one depends on (the executor takes the id from there).
    pub company_id: Option<String>,
    /// Where the password comes from (never the value), or `{generate: true}`.
    pub password: PasswordSource,
}

/// Both sides of an update: the managed fields as live and as desired. What changes is the
/// difference (`Update::fields`); the rest is context.
#[derive(Debug, Clone, PartialEq)]
pub struct Update<T> {
    pub before: T,
    pub after: T,
}

/// A service token to issue.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenIssue {
    /// The id of the live user; `None` while the user is being created by this plan.
    pub user_id: Option<String>,
    /// The API the token is issued by (the plan's).
    pub api_url: String,
    /// The token the store holds now, if any (no secret).
    pub stored: Option<StoredToken>,
    pub reason: TokenReason,
    /// The name of the user's company, kept in the token record (for people, and the
    /// recipes' labels); `None` in a plan saved by an earlier ozform.
    pub company: Option<String>,
}

/// What a change does, with what it needs, by kind and action.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    CreateCompany(CompanyFields),
    UpdateCompany(Update<CompanyFields>),
    CreateUser(UserCreate),
    UpdateUser(Update<UserFields>),
    IssueToken(TokenIssue),
    /// An undeclared live service user to set inactive: its managed fields as live (every
    /// field `Some`, `active: true`), under its company's name (which prunes with `deactivate`).
    DeactivateUser(UserFields),
    /// An undeclared live service user to delete: its managed fields as live, under its
    /// company's name (which prunes with `delete`).
    DeleteUser(UserFields),
}

/// One planned action on one address.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub address: Address,
    /// Addresses that must be applied first (a user's company, a token's user). One that has
    /// no change of its own in the plan is live already.
    pub depends_on: Vec<Address>,
    /// Id of the live object acted on (updates; tokens whose user exists).
    pub live_id: Option<String>,
    /// Fingerprint of the live object the change was planned against; `None` for a create,
    /// which asserts that the object was absent. `apply --plan` refuses the plan if it moved.
    pub fingerprint: Option<String>,
    pub payload: Payload,
}

impl Change {
    pub fn action(&self) -> Action {
        match self.payload {
            Payload::CreateCompany(_) | Payload::CreateUser(_) => Action::Create,
            Payload::UpdateCompany(_) | Payload::UpdateUser(_) => Action::Update,
            Payload::IssueToken(_) => Action::Issue,
            Payload::DeactivateUser(_) => Action::Deactivate,
            Payload::DeleteUser(_) => Action::Delete,
        }
    }

    /// For a removal: the live user it removes (its managed fields as live).
    pub fn removed(&self) -> Option<&UserFields> {
        match &self.payload {
            Payload::DeactivateUser(user) | Payload::DeleteUser(user) => Some(user),
            _ => None,
        }
    }

    /// Why the change is planned, as the plan shows it: a token's reason, or a removal's
    /// ("not in any manifest; company `Acme Bank` prunes with `delete`").
    pub fn reason_text(&self) -> Option<String> {
        match &self.payload {
            Payload::IssueToken(issue) => Some(issue.reason.to_string()),
            Payload::DeactivateUser(user) => Some(removal_reason(&user.company, Prune::Deactivate)),
            Payload::DeleteUser(user) => Some(removal_reason(&user.company, Prune::Delete)),
            _ => None,
        }
    }

    /// For a service user create: where its password comes from.
    pub fn password(&self) -> Option<&PasswordSource> {
        match &self.payload {
            Payload::CreateUser(create) => Some(&create.password),
            _ => None,
        }
    }

    /// For a token: why it is issued.
    pub fn reason(&self) -> Option<&TokenReason> {
        match &self.payload {
            Payload::IssueToken(issue) => Some(&issue.reason),
            _ => None,
        }
    }

    /// For an update: each managed field that changes, old → new.
    pub fn fields(&self) -> Vec<FieldChange> {
        match &self.payload {
            Payload::UpdateCompany(update) => update.fields(),
            Payload::UpdateUser(update) => update.fields(),
            Payload::DeactivateUser(user) => vec![FieldChange {
                field: "active".into(),
                before: Value::Bool(user.active),
                after: Value::Bool(false),
            }],
            _ => Vec::new(),
        }
    }
}

/// The reason of a removal in company `company`, which prunes with `mode`.
pub fn removal_reason(company: &str, mode: Prune) -> String {
    format!("not in any manifest; company `{company}` prunes with `{mode}`")
}

/// One field of an update: old → new. Field names: company `technical_meta_data`; service
/// user `first_name`, `last_name`, `middle_name`, `active`, `permissions.<flag>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: String,
    pub before: Value,
    pub after: Value,
}

/// Counts per action, as in the footer line (`format` writes it as the plan's `summary`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub issue: usize,
    pub deactivate: usize,
    pub delete: usize,
}

impl Summary {
    /// The counts of `changes`: the one place they are counted.
    pub fn of(changes: &[Change]) -> Self {
        let mut summary = Summary::default();
        for change in changes {
            match change.action() {
                Action::Create => summary.create += 1,
                Action::Update => summary.update += 1,
                Action::Issue => summary.issue += 1,
                Action::Deactivate => summary.deactivate += 1,
                Action::Delete => summary.delete += 1,
            }
        }
        summary
    }

    /// Removals: `deactivate` plus `delete`.
    pub fn removals(&self) -> usize {
        self.deactivate + self.delete
    }
}

/// A company that prunes, with the figures the blast-radius guard needs, recorded in the plan
/// so that `apply --plan` checks the same figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneScope {
    pub company: String,
    pub mode: Prune,
    /// Live service users of the company when the plan was made, active or not: the base of
    /// the percentage.
    pub live_service_users: usize,
    /// Service users the manifests declare in the company (0: every live one would go).
    pub declared_service_users: usize,
}

/// A live object that cannot be reconciled by an update; blocks its own subtree only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conflict {
    pub address: Address,
    /// What is wrong, both sides named.
    pub message: String,
    /// The manual fix.
    pub help: String,
}

/// A live user of a declared company that no manifest mentions (information, not a change).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Unmanaged {
    pub email: Email,
    pub company: String,
}

/// The plan: a value, deterministically sorted. `format` reads and writes it as the
/// contract's versioned JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The installation of a project file the plan was made for (`apply --plan` applies it
    /// there, and only if `api_url` is that installation's); `None` without a project file.
    /// Not part of the plan id: the `api_url` is.
    pub installation: Option<String>,
    pub api_url: String,
    pub api_version: ApiVersion,
    /// The version was detected from the live API (`--api-version auto`); shown in the header.
    pub api_version_detected: bool,
    pub changes: Vec<Change>,
    pub conflicts: Vec<Conflict>,
    pub unmanaged: Vec<Unmanaged>,
    /// Things to know that are not changes (e.g. a secret a planned create will need is not set).
    pub warnings: Vec<String>,
    /// The companies that prune, sorted by name (empty when none does).
    pub prune: Vec<PruneScope>,
    /// For each object the plan creates whose manifest names a `source_id` (its id in the
    /// installation it was exported from), that id by address: `apply --plan --id-map` pairs
    /// it with the id the object gets. Never planned on; part of the plan id.
    pub source_ids: BTreeMap<String, String>,
}

impl Plan {
    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty()
    }

    pub fn summary(&self) -> Summary {
        Summary::of(&self.changes)
    }

    /// Whether any change is a removal (`deactivate` or `delete`).
    pub fn has_removals(&self) -> bool {
        self.changes.iter().any(|c| c.action().is_removal())
    }
}
