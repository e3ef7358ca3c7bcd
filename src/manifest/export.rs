//! Live state as a manifest (`ozform export`): `to_document` turns an `Observed` into the
//! `Document` that declares it, and `Export::to_yaml` writes it with explanatory comments.
//!
//! Pure; no I/O. The contract is the round trip: the written manifest passes `ozform validate`
//! and, planned against the live state it came from, plans no company or user change. Hence
//! what is left out: companies being deleted, ambiguous companies (two live ones share a name),
//! users that are not service users, users whose email is shared or that the manifest loader
//! would refuse, service users outside an exported company. Each is listed in `left_out` (and
//! as a comment at the end of the YAML). A field the loader would refuse (a blank first or
//! last name, a `technical_meta_data` that is not a map) is omitted, which leaves it unmanaged.
//!
//! Passwords cannot be read back from the API: each user's password is `{env: NAME}` with a
//! name derived from its email (`password_env_name`), needed only when ozform must create the
//! user (e.g. on a new installation). Output is deterministic: companies by name, users by
//! lower-cased email, notes sorted.

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};

use sha2::{Digest, Sha256};

use super::document::{CompanyDoc, Document, SecretSource, UserDoc, to_yaml};
use super::read::is_email;
use crate::model::{ApiVersion, Observed, ObservedCompany, Permissions, TokenSpec, UserKind};

/// Prefix of the environment variable that holds an exported user's password.
pub const PASSWORD_ENV_PREFIX: &str = "OZ_PW_";

/// What to export.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportOptions {
    /// Only these companies (by exact name); empty exports all.
    pub companies: Vec<String>,
    /// Write `token: {issue: true}` on every active user (`--tokens`): an inactive user cannot
    /// use a token, and issuing one for it would be refused.
    pub tokens: bool,
}

/// Something live that the manifest does not declare, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum LeftOut {
    /// The company is being deleted; it and its users are left out.
    CompanyInDeletion { name: String },
    /// Several live companies have this name; ozform cannot tell them apart.
    AmbiguousCompany { name: String, count: usize },
    /// A live company with a blank name cannot be declared.
    BlankCompanyName { id: String },
    /// A user of an exported company that is not a service user.
    NotServiceUser { email: String, company: String, kind: String },
    /// A service user that belongs to no company.
    NoCompany { email: String },
    /// Several live users share this email (case-insensitively).
    SharedEmail { email: String, count: usize },
    /// An email the manifest loader does not accept.
    MalformedEmail { email: String },
    /// Not left out, but its `technical_meta_data` is not a map and is left unmanaged.
    MetaDataNotAMap { company: String },
}

impl fmt::Display for LeftOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeftOut::CompanyInDeletion { name } => {
                write!(f, "company `{name}` is being deleted; it and its users are left out")
            }
            LeftOut::AmbiguousCompany { name, count } => write!(
                f,
                "{count} live companies are named `{name}`; they and their users are left out until all but one are renamed"
            ),
            LeftOut::BlankCompanyName { id } => {
                write!(f, "company id `{id}` has a blank name; it and its users are left out")
            }
            LeftOut::NotServiceUser { email, company, kind } => {
                write!(f, "user `{email}` of `{company}` is {kind}, not a service user")
            }
            LeftOut::NoCompany { email } => {
                write!(f, "service user `{email}` belongs to no company")
            }
            LeftOut::SharedEmail { email, count } => {
                write!(f, "{count} live users share the email `{email}`; they are left out")
            }
            LeftOut::MalformedEmail { email } => {
                write!(f, "user `{email}` has an email the manifest does not accept; it is left out")
            }
            LeftOut::MetaDataNotAMap { company } => {
                write!(f, "the `technical_meta_data` of `{company}` is not a map; it is left unmanaged")
            }
        }
    }
}

/// The exported manifest, where it came from, and what it leaves out.
#[derive(Debug, Clone, PartialEq)]
pub struct Export {
    pub api_url: String,
    pub api_version: ApiVersion,
    pub document: Document,
    /// Sorted.
    pub left_out: Vec<LeftOut>,
}

impl Export {
    /// The manifest file: the schema comment naming `schema` (the schema's path relative to the
    /// file, see `schema_path`), a header, the document, then what was left out.
    pub fn to_yaml(&self, schema: &str) -> String {
        let body = to_yaml(&self.document);
        let rest = body.split_once('\n').map_or("", |(_, rest)| rest);
        let mut out = String::with_capacity(body.len() + 512);
        let _ = writeln!(out, "# yaml-language-server: $schema={}", comment_safe(schema));
        let _ = write!(
            out,
            "# Written by `ozform export` from {} (API {}).\n\
             # Passwords cannot be read back: each user's comes from the variable named under\n\
             # `password`, needed only if ozform has to create the user (e.g. on a new installation).\n",
            comment_safe(&self.api_url),
            self.api_version
        );
        if self.document.companies.is_empty() && self.document.service_users.is_empty() {
            out.push_str("# Nothing to export.\n{}\n");
        } else {
            out.push_str(rest);
        }
        if !self.left_out.is_empty() {
            out.push_str("\n# Left out (ozform manages only service users of live companies):\n");
            for note in &self.left_out {
                out.push_str("# - ");
                out.push_str(&comment_safe(&note.to_string()));
                out.push('\n');
            }
        }
        out
    }
}

/// The names of `--company` (in `options`) that match no live company of `observed`: `export`
/// refuses them, as `plan` and `apply` refuse a name no manifest declares.
pub fn unmatched_companies(observed: &Observed, options: &ExportOptions) -> Vec<String> {
    options
        .companies
        .iter()
        .filter(|name| !observed.companies.iter().any(|c| &c.name == *name))
        .cloned()
        .collect()
}

/// The schema comment's path, relative to the manifest's directory, of the schema kept
/// `levels_up` directories up from it at `SCHEMA_FILE` (`ops::export` finds the nearest one).
pub fn schema_path(levels_up: usize) -> String {
    format!("{}{SCHEMA_FILE}", "../".repeat(levels_up))
}

/// Where a repository keeps the manifest schema, relative to its root.
pub const SCHEMA_FILE: &str = "schemas/ozform.schema.json";

/// A comment stays one line whatever the live text holds.
fn comment_safe(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// The manifest that declares `observed`'s companies and service users. See the module docs.
pub fn to_document(observed: &Observed, options: &ExportOptions) -> Export {
    let mut left_out = Vec::new();
    let wanted = |name: &str| options.companies.is_empty() || options.companies.iter().any(|c| c == name);

    // Companies, by exact name, only those not being deleted.
    let mut by_name: BTreeMap<&str, Vec<&ObservedCompany>> = BTreeMap::new();
    for company in observed.companies.iter().filter(|c| wanted(&c.name)) {
        if company.in_deletion {
            left_out.push(LeftOut::CompanyInDeletion { name: company.name.clone() });
        } else if company.name.trim().is_empty() {
            left_out.push(LeftOut::BlankCompanyName { id: company.id.clone() });
        } else {
            by_name.entry(company.name.as_str()).or_default().push(company);
        }
    }
    let mut exported: HashMap<&str, &str> = HashMap::new();
    let mut companies = Vec::with_capacity(by_name.len());
    for (name, live) in &by_name {
        let [company] = live.as_slice() else {
            left_out.push(LeftOut::AmbiguousCompany { name: (*name).to_string(), count: live.len() });
            continue;
        };
        exported.insert(company.id.as_str(), name);
        let technical_meta_data = match &company.technical_meta_data {
            serde_json::Value::Object(map) if !map.is_empty() => Some(map.clone()),
            serde_json::Value::Object(_) | serde_json::Value::Null => None,
            _ => {
                left_out.push(LeftOut::MetaDataNotAMap { company: (*name).to_string() });
                None
            }
        };
        companies.push(CompanyDoc { name: (*name).to_string(), technical_meta_data, prune: None });
    }

    // Emails shared by several live users cannot be declared without a conflict.
    let mut per_email: HashMap<String, usize> = HashMap::new();
    for user in &observed.users {
        *per_email.entry(user.email.key()).or_default() += 1;
    }
    let mut users = Vec::new();
    let mut shared_reported = std::collections::HashSet::new();
    for user in &observed.users {
        let company = user.company_id.as_deref().and_then(|id| exported.get(id).copied());
        let is_service = user.kind == UserKind::Service;
        let Some(company) = company else {
            // Users of companies not exported (being deleted, ambiguous, filtered, or none):
            // only a service user in no company at all is worth a note.
            if is_service && user.company_id.is_none() {
                left_out.push(LeftOut::NoCompany { email: user.email.to_string() });
            }
            continue;
        };
        if !is_service {
            left_out.push(LeftOut::NotServiceUser {
                email: user.email.to_string(),
                company: company.to_string(),
                kind: user.kind.describe(),
            });
            continue;
        }
        let count = per_email.get(&user.email.key()).copied().unwrap_or(1);
        if count > 1 {
            if shared_reported.insert(user.email.key()) {
                left_out.push(LeftOut::SharedEmail { email: user.email.key(), count });
            }
            continue;
        }
        if !is_email(user.email.as_str()) {
            left_out.push(LeftOut::MalformedEmail { email: user.email.to_string() });
            continue;
        }
        let name = |s: &str| (!s.trim().is_empty()).then(|| s.to_string());
        let p = user.permissions;
        users.push(UserDoc {
            email: user.email.to_string(),
            company: company.to_string(),
            first_name: name(&user.first_name),
            last_name: name(&user.last_name),
            middle_name: Some(user.middle_name.clone()),
            password: None,
            active: Some(user.active),
            permissions: Some(Permissions {
                biometry: Some(p.biometry),
                collection: Some(p.collection),
                documents: Some(p.documents),
                quality: Some(p.quality),
            }),
            token: (options.tokens && user.active).then_some(TokenSpec { issue: true }),
        });
    }
    users.sort_by_cached_key(|u| (u.email.to_lowercase(), u.email.clone()));
    assign_password_variables(&mut users);
    left_out.sort();
    left_out.dedup();
    Export {
        api_url: observed.api_url.clone(),
        api_version: observed.api_version,
        document: Document { companies, service_users: users },
        left_out,
    }
}

/// The environment variable that holds the password of the user with this email:
/// `OZ_PW_` and the email upper-cased, every character other than `A-Z` and `0-9` written
/// as `_` (`svc-web@acme.example` → `OZ_PW_SVC_WEB_ACME_EXAMPLE`).
pub fn password_env_name(email: &str) -> String {
    let mut name = String::with_capacity(PASSWORD_ENV_PREFIX.len() + email.len());
    name.push_str(PASSWORD_ENV_PREFIX);
    name.extend(email.chars().map(|c| {
        let c = c.to_ascii_uppercase();
        if c.is_ascii_uppercase() || c.is_ascii_digit() { c } else { '_' }
    }));
    name
}

/// Give every user its password variable. Two emails that map to the same name (`a.b@x.io`
/// and `a-b@x.io`) each get a suffix of 8 hex digits of the SHA-256 of the lower-cased email,
/// so that no two users are ever created with the same password by accident.
fn assign_password_variables(users: &mut [UserDoc]) {
    let mut per_name: HashMap<String, usize> = HashMap::new();
    for user in users.iter() {
        *per_name.entry(password_env_name(&user.email)).or_default() += 1;
    }
    for user in users.iter_mut() {
        let mut name = password_env_name(&user.email);
        if per_name.get(&name).copied().unwrap_or(0) > 1 {
            let hash = Sha256::digest(user.email.to_lowercase().as_bytes());
            name.push('_');
            for b in &hash[..4] {
                let _ = write!(name, "{b:02X}");
            }
        }
        user.password = Some(SecretSource::Env(name));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::{Email, LivePermissions, ObservedUser};

    fn company(id: &str, name: &str) -> ObservedCompany {
        ObservedCompany {
            id: id.into(),
            name: name.into(),
            in_deletion: false,
            technical_meta_data: json!({}),
        }
    }

    fn user(id: &str, email: &str, company_id: Option<&str>, kind: UserKind) -> ObservedUser {
        ObservedUser {
            id: id.into(),
            email: Email::new(email),
            company_id: company_id.map(Into::into),
            kind,
            first_name: "First".into(),
            last_name: "Last".into(),
            middle_name: String::new(),
            active: true,
            permissions: LivePermissions::default(),
        }
    }

    fn observed(companies: Vec<ObservedCompany>, users: Vec<ObservedUser>) -> Observed {
        Observed {
            api_url: "http://oz".into(),
            api_version: ApiVersion::V6,
            api_version_detected: false,
            companies,
            users,
        }
    }

    #[test]
    fn the_password_variable_is_the_upper_cased_email_with_every_other_character_an_underscore() {
        assert_eq!(password_env_name("svc-web@acme.example"), "OZ_PW_SVC_WEB_ACME_EXAMPLE");
        assert_eq!(password_env_name("A.b+1@x.io"), "OZ_PW_A_B_1_X_IO");
        assert_eq!(password_env_name("zoë@x.io"), "OZ_PW_ZO__X_IO");
    }

    #[test]
    fn emails_that_map_to_one_variable_get_distinct_hashed_suffixes() {
        let o = observed(
            vec![company("c", "C")],
            vec![
                user("1", "a.b@x.io", Some("c"), UserKind::Service),
                user("2", "a-b@x.io", Some("c"), UserKind::Service),
                user("3", "solo@x.io", Some("c"), UserKind::Service),
            ],
        );
        let doc = to_document(&o, &ExportOptions::default()).document;
        let names: Vec<String> = doc
            .service_users
            .iter()
            .map(|u| match &u.password {
                Some(SecretSource::Env(n)) => n.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(names[0].starts_with("OZ_PW_A_B_X_IO_") && names[0].len() == "OZ_PW_A_B_X_IO_".len() + 8);
        assert!(names[1].starts_with("OZ_PW_A_B_X_IO_"));
        assert_ne!(names[0], names[1]);
        assert_eq!(names[2], "OZ_PW_SOLO_X_IO");
    }

    #[test]
    fn service_users_are_exported_with_every_managed_field_and_others_are_listed_as_left_out() {
        let mut meta = company("c1", "Acme");
        meta.technical_meta_data = json!({"tier": "gold"});
        let mut svc = user("u1", "Svc@acme.example", Some("c1"), UserKind::Service);
        svc.permissions.documents = false;
        svc.active = false;
        svc.first_name = "  ".into();
        let o = observed(
            vec![meta, company("c2", "Beta")],
            vec![
                svc,
                user("u2", "boss@acme.example", Some("c1"), UserKind::CompanyAdmin),
                user("u3", "root@oz.example", None, UserKind::Admin),
            ],
        );
        let export = to_document(&o, &ExportOptions { tokens: true, ..ExportOptions::default() });
        let doc = &export.document;
        assert_eq!(doc.companies.len(), 2);
        assert_eq!(doc.companies[0].name, "Acme");
        assert_eq!(doc.companies[0].technical_meta_data.as_ref().unwrap()["tier"], json!("gold"));
        assert_eq!(doc.companies[1].technical_meta_data, None, "an empty map is not written");
        let [u] = doc.service_users.as_slice() else { panic!("{doc:?}") };
        assert_eq!(u.email, "Svc@acme.example");
        assert_eq!(u.company, "Acme");
        assert_eq!(u.first_name, None, "a blank name would not load, so it is left unmanaged");
        assert_eq!(u.last_name.as_deref(), Some("Last"));
        assert_eq!(u.middle_name.as_deref(), Some(""));
        assert_eq!(u.active, Some(false));
        assert_eq!(u.permissions.unwrap().documents, Some(false));
        assert_eq!(u.permissions.unwrap().quality, Some(true));
        assert_eq!(u.password, Some(SecretSource::Env("OZ_PW_SVC_ACME_EXAMPLE".into())));
        assert_eq!(u.token, None, "`--tokens` marks no inactive user for a token (#21)");
        assert_eq!(
            export.left_out,
            [LeftOut::NotServiceUser {
                email: "boss@acme.example".into(),
                company: "Acme".into(),
                kind: "a company admin".into()
            }]
        );
    }

    #[test]
    fn tokens_are_not_asked_for_by_default() {
        let o = observed(vec![company("c", "C")], vec![user("u", "s@x.io", Some("c"), UserKind::Service)]);
        assert_eq!(to_document(&o, &ExportOptions::default()).document.service_users[0].token, None);
    }

    #[test]
    fn companies_being_deleted_ambiguous_or_unnamed_are_left_out_with_their_users() {
        let mut gone = company("c1", "Gone");
        gone.in_deletion = true;
        let o = observed(
            vec![gone, company("c2", "Twin"), company("c3", "Twin"), company("c4", " "), company("c5", "Ok")],
            vec![
                user("u1", "a@x.io", Some("c1"), UserKind::Service),
                user("u2", "b@x.io", Some("c2"), UserKind::Service),
                user("u3", "c@x.io", Some("c4"), UserKind::Service),
                user("u4", "d@x.io", None, UserKind::Service),
            ],
        );
        let export = to_document(&o, &ExportOptions::default());
        let names: Vec<_> = export.document.companies.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["Ok"]);
        assert!(export.document.service_users.is_empty());
        assert_eq!(
            export.left_out,
            [
                LeftOut::CompanyInDeletion { name: "Gone".into() },
                LeftOut::AmbiguousCompany { name: "Twin".into(), count: 2 },
                LeftOut::BlankCompanyName { id: "c4".into() },
                LeftOut::NoCompany { email: "d@x.io".into() },
            ]
        );
    }

    #[test]
    fn shared_and_malformed_emails_are_left_out() {
        let o = observed(
            vec![company("c", "C")],
            vec![
                user("1", "dup@x.io", Some("c"), UserKind::Service),
                user("2", "DUP@x.io", Some("c"), UserKind::Service),
                user("3", "not-an-email", Some("c"), UserKind::Service),
            ],
        );
        let export = to_document(&o, &ExportOptions::default());
        assert!(export.document.service_users.is_empty());
        assert_eq!(
            export.left_out,
            [
                LeftOut::SharedEmail { email: "dup@x.io".into(), count: 2 },
                LeftOut::MalformedEmail { email: "not-an-email".into() },
            ]
        );
    }

    #[test]
    fn the_company_filter_keeps_only_named_companies_and_reports_unknown_names() {
        let o = observed(
            vec![company("a", "A"), company("b", "B")],
            vec![
                user("1", "a@x.io", Some("a"), UserKind::Service),
                user("2", "b@x.io", Some("b"), UserKind::Service),
            ],
        );
        let options = ExportOptions { companies: vec!["B".into(), "Nope".into()], tokens: false };
        let export = to_document(&o, &options);
        assert_eq!(export.document.companies.len(), 1);
        assert_eq!(export.document.service_users[0].email, "b@x.io");
        assert!(export.left_out.is_empty(), "{:?}", export.left_out);
        assert_eq!(unmatched_companies(&o, &options), ["Nope"]);
    }

    #[test]
    fn tokens_are_marked_for_active_users_only() {
        let mut inactive = user("2", "off@x.io", Some("c"), UserKind::Service);
        inactive.active = false;
        let o = observed(
            vec![company("c", "C")],
            vec![user("1", "on@x.io", Some("c"), UserKind::Service), inactive],
        );
        let export = to_document(&o, &ExportOptions { companies: vec![], tokens: true });
        let tokens: Vec<(&str, bool)> =
            export.document.service_users.iter().map(|u| (u.email.as_str(), u.token.is_some())).collect();
        assert_eq!(tokens, [("off@x.io", false), ("on@x.io", true)]);
    }

    #[test]
    fn the_schema_comment_points_up_to_the_schema() {
        let o = observed(vec![], vec![]);
        let export = to_document(&o, &ExportOptions::default());
        assert!(
            export
                .to_yaml(&schema_path(0))
                .starts_with("# yaml-language-server: $schema=schemas/ozform.schema.json\n")
        );
        assert!(
            export
                .to_yaml(&schema_path(2))
                .starts_with("# yaml-language-server: $schema=../../schemas/ozform.schema.json\n")
        );
    }

    #[test]
    fn the_output_does_not_depend_on_the_order_the_api_listed_things_in() {
        let users = vec![
            user("1", "b@x.io", Some("a"), UserKind::Service),
            user("2", "A@x.io", Some("b"), UserKind::Service),
            user("3", "c@x.io", Some("a"), UserKind::Client),
            user("4", "d@x.io", Some("b"), UserKind::Operator),
        ];
        let companies = vec![company("a", "Zed"), company("b", "Alpha")];
        let one = to_document(&observed(companies.clone(), users.clone()), &ExportOptions::default());
        let mut reversed_users = users;
        reversed_users.reverse();
        let mut reversed_companies = companies;
        reversed_companies.reverse();
        let two = to_document(&observed(reversed_companies, reversed_users), &ExportOptions::default());
        assert_eq!(one.to_yaml(&schema_path(1)), two.to_yaml(&schema_path(1)));
        assert_eq!(one.document.companies[0].name, "Alpha");
        assert_eq!(one.document.service_users[0].email, "A@x.io");
    }

    #[test]
    fn the_yaml_names_its_source_and_lists_what_was_left_out_as_comments() {
        let o = observed(
            vec![company("c", "C")],
            vec![
                user("1", "s@x.io", Some("c"), UserKind::Service),
                user("2", "p@x.io", Some("c"), UserKind::Client),
            ],
        );
        let yaml = to_document(&o, &ExportOptions::default()).to_yaml(&schema_path(1));
        assert!(yaml.starts_with(super::super::SCHEMA_COMMENT), "{yaml}");
        assert!(yaml.contains("# Written by `ozform export` from http://oz (API 6)."), "{yaml}");
        assert!(
            yaml.ends_with("# - user `p@x.io` of `C` is a plain client user, not a service user\n"),
            "{yaml}"
        );
    }

    #[test]
    fn an_empty_export_is_still_a_valid_manifest() {
        let yaml = to_document(&observed(vec![], vec![]), &ExportOptions::default()).to_yaml(&schema_path(0));
        assert!(yaml.contains("\n{}\n"), "{yaml}");
    }
}
