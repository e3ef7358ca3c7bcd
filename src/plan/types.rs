//! Plan data types: the versioned, serializable contract (`format_version` 1).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::model::{ApiVersion, Email};
use crate::secret::SecretRef;

/// The saved plan format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// What a change does. A small closed set, one symbol each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    Update,
    Issue,
}

impl Action {
    /// The symbol of the text plan: `+` create, `~` update, `*` issue.
    pub fn symbol(self) -> char {
        match self {
            Action::Create => '+',
            Action::Update => '~',
            Action::Issue => '*',
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Issue => "issue",
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

/// One field of an update: old → new.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: String,
    pub before: Value,
    pub after: Value,
}

/// One planned action on one address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub address: Address,
    pub action: Action,
    /// Addresses that must be applied first (a user's company, a token's user).
    #[serde(default)]
    pub depends_on: Vec<Address>,
    /// The managed fields of the live object (`null` for a create). Never holds a secret.
    pub before: Option<Value>,
    /// The managed fields after the change. A password field shows `(sensitive)`.
    pub after: Option<Value>,
    /// For updates: the fields that change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldChange>,
    /// Why (tokens: no token in the sink, another user id, another API URL, expiring, rotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Id of the live object acted on (updates; tokens whose user exists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_id: Option<String>,
    /// Fingerprint of the live object the change was planned against; `None` for a create,
    /// which asserts that the object was absent. `apply --plan` refuses the plan if it moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// For a service user create: where its password comes from (never the value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretRef>,
}

/// Counts per action, as in the footer line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub issue: usize,
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

/// The plan: a value, deterministically sorted, serializable as the contract's JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub format_version: u32,
    pub api_url: String,
    pub api_version: ApiVersion,
    /// The version was detected from the live API (`--api-version auto`); shown in the header.
    /// Written only when true (an optional field of format version 1).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub api_version_detected: bool,
    pub changes: Vec<Change>,
    pub summary: Summary,
    #[serde(default)]
    pub conflicts: Vec<Conflict>,
    #[serde(default)]
    pub unmanaged: Vec<Unmanaged>,
    /// Things to know that are not changes (e.g. a secret a planned create will need is not set).
    #[serde(default)]
    pub warnings: Vec<String>,
}

impl Plan {
    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty()
    }
}
