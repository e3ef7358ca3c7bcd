//! The manifest as serializable document types: the source of the JSON Schema (`schema`)
//! and of manifests written by ozform (`to_yaml`, used by `export`).
//!
//! The loader does not deserialize into these types (it reads a located node tree so that it
//! can report every problem at once); a test keeps the two in step by loading what `to_yaml`
//! writes. Pure; no I/O.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::{Desired, Permissions, Prune, TokenSpec};
use crate::secret::SecretRef;

/// Where a secret comes from, as a manifest writes it: `{env: NAME}` or `{file: PATH}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[schemars(rename = "SecretRef")]
pub enum SecretSource {
    /// The name of an environment variable that holds the secret (any name: its value is
    /// never shown).
    Env(String),
    /// A file whose contents (one trailing newline removed) are the secret: a regular file of
    /// at most 64 KiB, read only when the user is created. A relative path is relative to the
    /// manifest file that names it; the path must lie, as written, inside the manifest paths
    /// given or a directory given with `--secrets-dir`.
    File(String),
}

impl From<&SecretRef> for SecretSource {
    fn from(source: &SecretRef) -> Self {
        match source {
            SecretRef::Env(name) => SecretSource::Env(name.clone()),
            SecretRef::File(file) => SecretSource::File(file.written().to_string_lossy().into_owned()),
        }
    }
}

/// The first line of a manifest written by ozform: editors that speak the YAML language
/// server validate and complete it (the path fits manifests in a directory next to `schemas/`).
pub const SCHEMA_COMMENT: &str = "# yaml-language-server: $schema=../schemas/ozform.schema.json";

/// One ozform manifest document. All documents of all files merge into one desired state.
/// String values may interpolate `${OZ_VAR_NAME}` or `${OZ_VAR_NAME:-default}`: only variables
/// named `OZ_VAR_…` are read, any other name is an error; `$${` is a literal `${`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "ozform manifest")]
pub struct Document {
    /// Companies that must exist. Identity: exact `name`; declaring an existing company adopts it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub companies: Vec<CompanyDoc>,
    /// Service users that must exist. Identity: `email`, compared case-insensitively.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_users: Vec<UserDoc>,
}

/// A company.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompanyDoc {
    /// The company's name: its identity (exact match).
    #[schemars(length(min = 1))]
    pub name: String,
    /// Any JSON object, compared as JSON when given; left as it is live when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub technical_meta_data: Option<serde_json::Map<String, serde_json::Value>>,
    /// What to do with a live service user of this company that no manifest declares:
    /// `deactivate` (set it inactive) or `delete`. Left out: leave such users alone. Guarded
    /// against mass removal (`--allow-mass-removal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<Prune>,
}

/// A service user (API 5: `CLIENT` with `is_service`; API 6: `CLIENT_SERVICE`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserDoc {
    /// Login email: the identity, compared case-insensitively.
    pub email: String,
    /// Name of a company declared under `companies`.
    #[schemars(length(min = 1))]
    pub company: String,
    /// Left as it is live when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    /// Left as it is live when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    /// Left as it is live when omitted; `""` for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub middle_name: Option<String>,
    /// Where the password comes from, never the password itself: `{env: NAME}` or
    /// `{file: PATH}` (relative to the manifest, inside the manifest paths or a
    /// `--secrets-dir`). Used only when the user is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretSource>,
    /// Whether the user may log in. Default `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = true))]
    pub active: Option<bool>,
    /// Analysis permissions; a flag left out is not managed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Permissions>,
    /// Keep a valid service token for this user in the token store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<TokenSpec>,
}

impl From<&Desired> for Document {
    /// The manifest that declares exactly `desired` (locations are not part of it).
    fn from(desired: &Desired) -> Self {
        Document {
            companies: desired
                .companies
                .iter()
                .map(|c| CompanyDoc {
                    name: c.name.clone(),
                    technical_meta_data: c.technical_meta_data.as_ref().and_then(|v| v.as_object().cloned()),
                    prune: c.prune,
                })
                .collect(),
            service_users: desired
                .users
                .iter()
                .map(|u| UserDoc {
                    email: u.email.to_string(),
                    company: u.company.clone(),
                    first_name: u.first_name.clone(),
                    last_name: u.last_name.clone(),
                    middle_name: u.middle_name.clone(),
                    password: u.password.as_ref().map(SecretSource::from),
                    active: (!u.active).then_some(false),
                    permissions: u.permissions,
                    token: u.token.issue.then_some(u.token),
                })
                .collect(),
        }
    }
}

/// The manifest JSON Schema (draft 2020-12), as `ozform schema` prints it.
pub fn schema() -> serde_json::Value {
    schemars::schema_for!(Document).to_value()
}

/// `doc` as a manifest file, starting with the schema comment. Every `${` in a value is
/// written as `$${`, so that loading the file gives back exactly these values.
pub fn to_yaml(doc: &Document) -> String {
    // Serializing these plain data types cannot fail (string keys only, JSON numbers are
    // finite); fall back to an empty document rather than panic.
    let body = serde_saphyr::to_string(&escaped(doc)).unwrap_or_default();
    format!("{SCHEMA_COMMENT}\n{body}")
}

fn escape(s: &str) -> String {
    s.replace("${", "$${")
}

fn escape_opt(s: Option<&String>) -> Option<String> {
    s.map(|s| escape(s))
}

fn escape_json(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        J::String(s) => J::String(escape(s)),
        J::Array(items) => J::Array(items.iter().map(escape_json).collect()),
        J::Object(map) => J::Object(map.iter().map(|(k, v)| (k.clone(), escape_json(v))).collect()),
        other => other.clone(),
    }
}

/// `doc` with every string value escaped for interpolation (keys are not interpolated).
fn escaped(doc: &Document) -> Document {
    Document {
        companies: doc
            .companies
            .iter()
            .map(|c| CompanyDoc {
                name: escape(&c.name),
                technical_meta_data: c
                    .technical_meta_data
                    .as_ref()
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), escape_json(v))).collect()),
                prune: c.prune,
            })
            .collect(),
        service_users: doc
            .service_users
            .iter()
            .map(|u| UserDoc {
                email: escape(&u.email),
                company: escape(&u.company),
                first_name: escape_opt(u.first_name.as_ref()),
                last_name: escape_opt(u.last_name.as_ref()),
                middle_name: escape_opt(u.middle_name.as_ref()),
                password: u.password.as_ref().map(|p| match p {
                    SecretSource::Env(name) => SecretSource::Env(escape(name)),
                    SecretSource::File(path) => SecretSource::File(escape(path)),
                }),
                ..u.clone()
            })
            .collect(),
    }
}
