//! Builders of desired and observed objects, shared by the planner, renderer and export tests,
//! and of the creates the Oz client and `Effects` tests send.
//! Each gives the plain case; tests adjust fields with struct update syntax.

use std::path::PathBuf;
use std::sync::Arc;

use ozform::model::{
    ApiVersion, Desired, DesiredCompany, DesiredUser, Email, LivePermissions, Location, NewCompany, NewUser,
    Observed, ObservedCompany, ObservedUser, Permissions, StoredToken, TokenSpec, UserKind,
};
use ozform::secret::{Secret, SecretRef};
use serde_json::{Value, json};

pub fn loc() -> Location {
    Location { file: Arc::new(PathBuf::from("m.yaml")), line: 1, column: 1 }
}

pub fn company(name: &str) -> DesiredCompany {
    DesiredCompany { name: name.into(), technical_meta_data: None, prune: None, location: loc() }
}

pub fn company_meta(name: &str, meta: Value) -> DesiredCompany {
    DesiredCompany { technical_meta_data: Some(meta), ..company(name) }
}

/// A service user of `company` with a password from `{env: PW}`, no names, no managed
/// permissions, no token.
pub fn user(email: &str, company: &str) -> DesiredUser {
    DesiredUser {
        email: Email::new(email),
        company: company.into(),
        first_name: None,
        last_name: None,
        middle_name: None,
        password: Some(SecretRef::Env("PW".into())),
        active: true,
        permissions: None,
        token: TokenSpec { issue: false },
        location: loc(),
    }
}

pub fn with_token(mut u: DesiredUser) -> DesiredUser {
    u.token.issue = true;
    u
}

pub fn desired(companies: Vec<DesiredCompany>, users: Vec<DesiredUser>) -> Desired {
    Desired { companies, users, files: vec![] }
}

pub fn live_company(id: &str, name: &str) -> ObservedCompany {
    ObservedCompany { id: id.into(), name: name.into(), in_deletion: false, technical_meta_data: json!({}) }
}

/// A live service user of `company_id` with empty names and every permission on.
pub fn live_user(id: &str, email: &str, company_id: &str) -> ObservedUser {
    ObservedUser {
        id: id.into(),
        email: Email::new(email),
        company_id: Some(company_id.into()),
        kind: UserKind::Service,
        first_name: String::new(),
        last_name: String::new(),
        middle_name: String::new(),
        active: true,
        permissions: LivePermissions::default(),
    }
}

/// Live state of API 6 at `api_url`, its version given rather than detected.
pub fn observed(api_url: &str, companies: Vec<ObservedCompany>, users: Vec<ObservedUser>) -> Observed {
    Observed {
        api_url: api_url.into(),
        api_version: ApiVersion::V6,
        api_version_detected: false,
        companies,
        users,
    }
}

/// A stored token of `user_id` from `api_url`, keyed by the lower-cased email.
pub fn stored(email: &str, user_id: &str, api_url: &str, expire_date: f64) -> (String, StoredToken) {
    (email.to_lowercase(), StoredToken { user_id: user_id.into(), api_url: api_url.into(), expire_date })
}

/// A company to create, without metadata.
pub fn new_company(name: &str) -> NewCompany {
    NewCompany { name: name.into(), technical_meta_data: None }
}

/// A service user `New User` of `company_id` to create, active, its `documents` permission off,
/// its password a canary.
pub fn new_user(email: &str, company_id: &str) -> NewUser {
    NewUser {
        email: Email::new(email),
        company_id: company_id.to_string(),
        first_name: "New".into(),
        last_name: "User".into(),
        middle_name: String::new(),
        password: Secret::new("canary-user-password-4410"),
        active: true,
        permissions: Permissions { documents: Some(false), ..Permissions::default() },
    }
}
