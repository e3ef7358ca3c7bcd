//! Domain types shared by the manifest loader, the Oz client, the planner and the executor.
//!
//! Pure data: no I/O, no dialect knowledge. The Oz client translates wire shapes (API 5 or 6)
//! into these types and back, so nothing else needs to know which API version is live. The
//! one exception to "no I/O" is `now_epoch`, the one reading of the clock in epoch seconds
//! (the unit the API and the token records use), so that every layer reads it the same way.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::secret::PasswordSource;

/// Where something was written in a manifest: file, 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    pub file: Arc<PathBuf>,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// An email address as written, compared, hashed and ordered case-insensitively.
#[derive(Clone, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The address as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The lower-cased address: the identity of a user and the name of its token file.
    pub fn key(&self) -> String {
        self.0.to_lowercase()
    }
}

impl PartialEq for Email {
    fn eq(&self, other: &Self) -> bool {
        self.0.eq_ignore_ascii_case(&other.0) || self.key() == other.key()
    }
}
impl Eq for Email {}
impl Hash for Email {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}
impl PartialOrd for Email {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Email {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}
impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}
impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The live API's dialect. Decided by configuration or detected by the Oz client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
pub enum ApiVersion {
    V5,
    V6,
}

impl ApiVersion {
    pub fn number(self) -> u8 {
        match self {
            ApiVersion::V5 => 5,
            ApiVersion::V6 => 6,
        }
    }
}

impl From<ApiVersion> for u8 {
    fn from(v: ApiVersion) -> u8 {
        v.number()
    }
}

impl TryFrom<u8> for ApiVersion {
    type Error = String;
    fn try_from(n: u8) -> Result<Self, String> {
        match n {
            5 => Ok(ApiVersion::V5),
            6 => Ok(ApiVersion::V6),
            other => Err(format!("unsupported API version {other}: expected 5 or 6")),
        }
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.number())
    }
}

/// The one parser of an API version as people write it (`--api-version`, `OZ_API_VERSION`,
/// the emulator's and the demo's flags): `5` or `6`, nothing else. A version ozform does not
/// speak (an API 7) is an error, never taken for one it does.
impl std::str::FromStr for ApiVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "5" => Ok(ApiVersion::V5),
            "6" => Ok(ApiVersion::V6),
            other => Err(format!("`{other}` is not an API version ozform speaks: write 5 or 6")),
        }
    }
}

/// Now, in Unix epoch seconds (fractional), as `expire_date` and the planner count time.
pub fn now_epoch() -> f64 {
    epoch_seconds(std::time::SystemTime::now())
}

/// `time` in Unix epoch seconds (fractional); 0 before the epoch.
pub fn epoch_seconds(time: std::time::SystemTime) -> f64 {
    time.duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Permission flags as written in a manifest: a flag left out is not managed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Permissions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub biometry: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documents: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<bool>,
}

/// Permission flags as the live API holds them (dialect-neutral names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LivePermissions {
    pub biometry: bool,
    pub collection: bool,
    pub documents: bool,
    pub quality: bool,
}

impl Default for LivePermissions {
    /// The API enables all four flags by default.
    fn default() -> Self {
        Self { biometry: true, collection: true, documents: true, quality: true }
    }
}

// ---------------------------------------------------------------------------------------------
// Desired state: what the manifests say.

/// What a company that opts in does with a live service user no manifest declares
/// (`prune:`). Without it, such users are left alone (listed as unmanaged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Prune {
    /// Set it inactive (reversible: declaring it again, or `active: true`, brings it back).
    Deactivate,
    /// Delete it.
    Delete,
}

impl Prune {
    /// The word written in manifests and plans: `deactivate` or `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            Prune::Deactivate => "deactivate",
            Prune::Delete => "delete",
        }
    }
}

impl fmt::Display for Prune {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The longest `source_id` ozform carries: ids are UUIDs or numbers, and this leaves room for
/// any id an installation may use, none for a document hidden in one.
pub const MAX_SOURCE_ID_BYTES: usize = 256;

/// Whether `id` can be a `source_id` (an object's id in the installation it was exported
/// from): not blank, one line without control characters, at most `MAX_SOURCE_ID_BYTES`. The
/// manifests and the saved plans that carry it hold it to the same rule.
pub fn is_source_id(id: &str) -> bool {
    !id.trim().is_empty() && id.len() <= MAX_SOURCE_ID_BYTES && !id.chars().any(char::is_control)
}

/// A company declared in a manifest. Identity: exact `name`.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredCompany {
    pub name: String,
    /// Compared as JSON when given; unmanaged when `None`.
    pub technical_meta_data: Option<serde_json::Value>,
    /// Remove undeclared live service users of this company; `None` leaves them alone.
    pub prune: Option<Prune>,
    /// The company's id in the installation it was exported from (`source_id`): carried for
    /// `apply --id-map`, never planned or compared.
    pub source_id: Option<String>,
    pub location: Location,
}

/// `token:` of a service user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    /// Keep a valid service token for this user in the token store.
    #[serde(default)]
    pub issue: bool,
}

/// A service user declared in a manifest. Identity: `email`, case-insensitive.
/// Fields that are `None` are not managed (left as they are live).
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredUser {
    pub email: Email,
    /// Name of a company declared under `companies`.
    pub company: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub middle_name: Option<String>,
    /// Where the password comes from (or `{generate: true}`); used on create only. Needed only
    /// if the user must be created.
    pub password: Option<PasswordSource>,
    /// Default true.
    pub active: bool,
    pub permissions: Option<Permissions>,
    pub token: TokenSpec,
    /// The user's id in the installation it was exported from (`source_id`): carried for
    /// `apply --id-map`, never planned or compared.
    pub source_id: Option<String>,
    pub location: Location,
}

/// The merged desired state of all manifest documents, sorted by identity.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Desired {
    pub companies: Vec<DesiredCompany>,
    pub users: Vec<DesiredUser>,
    /// Manifest files read, sorted.
    pub files: Vec<PathBuf>,
}

// ---------------------------------------------------------------------------------------------
// Observed state: what the live API holds, in dialect-neutral form.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObservedCompany {
    pub id: String,
    pub name: String,
    pub in_deletion: bool,
    pub technical_meta_data: serde_json::Value,
}

/// What kind of account a live user is, decoded by the dialect from `user_type` / `is_service` / `is_admin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserKind {
    /// API 6 `CLIENT_SERVICE`, API 5 `CLIENT` with `is_service`.
    Service,
    /// A plain `CLIENT` user.
    Client,
    /// API 6 `CLIENT_ADMIN`, API 5 `CLIENT` with `is_admin`.
    CompanyAdmin,
    Admin,
    Operator,
    /// Any other `user_type`, as the API spelled it.
    Other(String),
}

impl UserKind {
    /// The kind in words, for conflict messages and export comments: `a service user`, …
    pub fn describe(&self) -> String {
        match self {
            UserKind::Service => "a service user".into(),
            UserKind::Client => "a plain client user".into(),
            UserKind::CompanyAdmin => "a company admin".into(),
            UserKind::Admin => "an ADMIN".into(),
            UserKind::Operator => "an OPERATOR".into(),
            UserKind::Other(t) => format!("a user of type `{t}`"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObservedUser {
    pub id: String,
    pub email: Email,
    /// Shared by the users of one company as the client reads them (one copy of the id per
    /// company, not per user); serialized as the string.
    pub company_id: Option<Arc<str>>,
    pub kind: UserKind,
    pub first_name: String,
    pub last_name: String,
    pub middle_name: String,
    pub active: bool,
    pub permissions: LivePermissions,
}

#[cfg(test)]
impl ObservedUser {
    /// A live service user of company `c1` with these names and every permission on (unit tests).
    pub(crate) fn sample(id: &str, email: &str, first_name: &str, last_name: &str) -> Self {
        ObservedUser {
            id: id.into(),
            email: Email::new(email),
            company_id: Some("c1".into()),
            kind: UserKind::Service,
            first_name: first_name.into(),
            last_name: last_name.into(),
            middle_name: String::new(),
            active: true,
            permissions: LivePermissions::default(),
        }
    }
}

/// Live state read by `oz::observe`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    pub api_url: String,
    pub api_version: ApiVersion,
    /// The version was detected from what the API returned (`--api-version auto`), not given.
    #[serde(default)]
    pub api_version_detected: bool,
    pub companies: Vec<ObservedCompany>,
    pub users: Vec<ObservedUser>,
}

// ---------------------------------------------------------------------------------------------
// Stored tokens: what the planner may know of the token store (never a token).

/// A token the token store holds, without the token itself.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredToken {
    pub user_id: String,
    /// The API that issued it.
    pub api_url: String,
    /// Unix epoch seconds; `UNKNOWN_EXPIRY` (0) when unknown (`known_expiry`).
    pub expire_date: f64,
}

/// The `expire_date` of a token whose expiry is unknown: when it was issued the API answered
/// none a token can have (not finite, or outside [now − 1 day, now + 100 years]). Written as
/// `0` in token stores and saved plans, a number every earlier reader accepts (an earlier
/// ozform takes it as long expired and rotates the token); see `known_expiry`.
pub const UNKNOWN_EXPIRY: f64 = 0.0;

/// A token's `expire_date` if it is known: `None` for `UNKNOWN_EXPIRY`, and for anything else
/// no issued token can expire at (not finite, at or before the epoch).
pub fn known_expiry(expire_date: f64) -> Option<f64> {
    (expire_date.is_finite() && expire_date > 0.0).then_some(expire_date)
}

/// Stored tokens by lower-cased email (`Email::key`).
pub type StoredTokens = std::collections::BTreeMap<String, StoredToken>;

// ---------------------------------------------------------------------------------------------
// Requests apply makes through `apply::Effects` (dialect-neutral; the Oz client encodes them).

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewCompany {
    pub name: String,
    pub technical_meta_data: Option<serde_json::Value>,
}

/// Fields of a company to change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompanyPatch {
    pub name: Option<String>,
    pub technical_meta_data: Option<serde_json::Value>,
}

/// A service user to create. Not `Serialize`: it holds the password.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: Email,
    pub company_id: String,
    pub first_name: String,
    pub last_name: String,
    pub middle_name: String,
    pub password: crate::secret::Secret,
    pub active: bool,
    pub permissions: Permissions,
}

/// Fields of a user to change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserPatch {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub middle_name: Option<String>,
    pub active: Option<bool>,
    pub permissions: Permissions,
    /// Turn a live non-service user into a service user (never planned today; kept for the dialect).
    pub make_service: bool,
}

/// A service token as the API issued it. Not `Serialize`: it holds the token.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token_id: String,
    pub user_id: String,
    pub access_token: crate::secret::Secret,
    /// Unix epoch seconds (the API may send a float); `UNKNOWN_EXPIRY` when the API's answer
    /// cannot be a token's expiry.
    pub expire_date: f64,
}
