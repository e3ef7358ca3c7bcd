//! One document's node tree → desired companies and users, collecting every problem.
//!
//! Checks here need only the document itself: its shape, field names (unknown, duplicate),
//! value types, ambiguous booleans, literal passwords, interpolation, empty names and email
//! syntax. Checks across documents (duplicate identities, undeclared companies) are in
//! `check`. Pure: the environment is a lookup passed in; nothing is read from disk.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use super::interpolate::{InterpolationError, interpolate};
use super::node::{Node, Pos, Value};
use super::problem::{At, Kind, Problem, Problems};
use super::secrets::{Holds, Secrets};
use super::suggest;
use crate::model::{DesiredCompany, DesiredUser, Email, Location, Permissions, Prune, TokenSpec};
use crate::secret::{PasswordSource, SecretFile, SecretRef, SecretRoots};

const DOCUMENT_FIELDS: &[&str] = &["companies", "service_users"];
const COMPANY_FIELDS: &[&str] = &["name", "technical_meta_data", "prune", "source_id"];
const USER_FIELDS: &[&str] = &[
    "email",
    "company",
    "first_name",
    "last_name",
    "middle_name",
    "password",
    "active",
    "permissions",
    "token",
    "source_id",
];
const PERMISSION_FIELDS: &[&str] = &["biometry", "collection", "documents", "quality"];
const TOKEN_FIELDS: &[&str] = &["issue"];
const SECRET_FIELDS: &[&str] = &["env", "file", "generate"];
/// YAML 1.1 spellings of booleans that YAML 1.2 reads as strings.
const AMBIGUOUS_BOOLEANS: &[&str] = &["yes", "no", "on", "off", "y", "n"];

/// A company as read, with where its name is.
#[derive(Debug, Clone)]
pub struct DeclaredCompany {
    pub company: DesiredCompany,
    pub name_at: At,
}

/// A user as read, with where its email and company are.
#[derive(Debug, Clone)]
pub struct DeclaredUser {
    pub user: DesiredUser,
    pub email_at: At,
    pub company_at: At,
}

/// What the documents of all files declared, in reading order.
#[derive(Debug, Default)]
pub struct Declared {
    pub companies: Vec<DeclaredCompany>,
    pub users: Vec<DeclaredUser>,
    /// A company entry could not be read: its name is unknown.
    pub company_unreadable: bool,
}

/// Reads the documents of one file.
pub struct Reader<'a> {
    pub file: usize,
    pub path: Arc<std::path::PathBuf>,
    /// The manifest's directory: relative `{file: PATH}` secrets are joined to it.
    pub dir: &'a Path,
    /// Where `{file: PATH}` secrets may lie.
    pub roots: &'a SecretRoots,
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// Variables no value may interpolate.
    pub secrets: &'a Secrets<'a>,
    pub problems: &'a mut Problems,
    /// Byte ranges of literal passwords, to be blanked in every snippet.
    pub redact: &'a mut Vec<Range<usize>>,
}

impl Reader<'_> {
    pub(super) fn at(&self, pos: Pos) -> At {
        At { file: self.file, pos }
    }

    pub(super) fn location(&self, pos: Pos) -> Location {
        Location { file: Arc::clone(&self.path), line: pos.line, column: pos.column }
    }

    pub(super) fn problem(&mut self, kind: Kind, pos: Pos, label: impl Into<String>) {
        let at = self.at(pos);
        self.problems.push(Problem::at(kind, at, label));
    }

    /// Read one top-level document into `declared`.
    pub fn document(&mut self, mut doc: Node, declared: &mut Declared) {
        self.interpolate_values(&mut doc);
        if !matches!(doc.value, Value::Map(_)) {
            let found_kind = doc.value.kind();
            self.problem(Kind::NotAMap { found: found_kind }, doc.pos, "expected a map here");
            return;
        }
        let Some(fields) = self.fields(&doc, "a manifest document", DOCUMENT_FIELDS) else { return };
        for (name, node) in fields {
            let Some(items) = self.list(name, node) else { continue };
            for item in items {
                match name {
                    "companies" => match self.company(item) {
                        Some(company) => declared.companies.push(company),
                        None => declared.company_unreadable = true,
                    },
                    _ => declared.users.extend(self.user(item)),
                }
            }
        }
    }

    /// Interpolate every string value (never keys) in place, reporting each failure. A value
    /// that cannot be interpolated is kept as written.
    pub(super) fn interpolate_values(&mut self, node: &mut Node) {
        match &mut node.value {
            Value::Str(s) => match interpolate(s, self.env, &|name| self.secrets.holds(name).is_some()) {
                Ok(done) => *s = done,
                Err(InterpolationError::Secret { name }) => {
                    let password_of = match self.secrets.holds(&name) {
                        Some(Holds::Password(location)) => Some(location.clone()),
                        _ => None,
                    };
                    let label = format!("`{name}` is interpolated here");
                    self.problem(Kind::SecretInterpolation { name, password_of }, node.pos, label);
                }
                Err(InterpolationError::Undeclared { name }) => {
                    let label = format!("`{name}` is interpolated here");
                    self.problem(Kind::UndeclaredVariable { name }, node.pos, label);
                }
                Err(InterpolationError::Missing { name }) => {
                    let label = format!("`{name}` is used here");
                    self.problem(Kind::MissingVariable { name }, node.pos, label);
                }
                Err(InterpolationError::Malformed { reason }) => {
                    self.problem(Kind::BadInterpolation { reason }, node.pos, "in this value");
                }
            },
            Value::Seq(items) => {
                for item in items {
                    self.interpolate_values(item);
                }
            }
            Value::Map(entries) => {
                for (_, value) in entries {
                    self.interpolate_values(value);
                }
            }
            _ => {}
        }
    }

    /// The entries of a map whose keys must be among `allowed`: unknown and repeated keys
    /// are reported (the first of a repeated key is kept). `None` if `node` is not a map.
    pub(super) fn fields<'n>(
        &mut self,
        node: &'n Node,
        within: &'static str,
        allowed: &'static [&'static str],
    ) -> Option<Vec<(&'static str, &'n Node)>> {
        let Value::Map(entries) = &node.value else {
            let kind =
                Kind::WrongType { field: within.to_string(), expected: "a map", found: node.value.kind() };
            self.problem(kind, node.pos, "expected a map here");
            return None;
        };
        let mut out: Vec<(&'static str, &'n Node)> = Vec::with_capacity(entries.len());
        let mut seen: Vec<(&'static str, Pos)> = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            let key_text = scalar_text(key);
            let Some(&known) = allowed.iter().find(|a| **a == key_text) else {
                let suggestion = suggest::closest(&key_text, allowed.iter().copied());
                let kind = Kind::UnknownField { field: key_text, within, suggestion, expected: allowed };
                self.problem(kind, key.pos, "unknown field");
                continue;
            };
            if let Some((_, first)) = seen.iter().find(|(k, _)| *k == known) {
                let problem = Problem::at(
                    Kind::DuplicateKey { key: known.to_string() },
                    self.at(key.pos),
                    "written again here",
                )
                .also(self.at(*first), "first written here");
                self.problems.push(problem);
                continue;
            }
            seen.push((known, key.pos));
            out.push((known, value));
        }
        Some(out)
    }

    /// A list of items; `null` is an empty list.
    pub(super) fn list<'n>(&mut self, field: &str, node: &'n Node) -> Option<&'n [Node]> {
        match &node.value {
            Value::Seq(items) => Some(items),
            Value::Null => None,
            other => {
                let kind =
                    Kind::WrongType { field: field.to_string(), expected: "a list", found: other.kind() };
                self.problem(kind, node.pos, "expected a list here");
                None
            }
        }
    }

    /// A string; `null` counts as left out.
    pub(super) fn string(&mut self, field: &str, node: &Node) -> Option<String> {
        match &node.value {
            Value::Str(s) => Some(s.clone()),
            Value::Null => None,
            other => {
                let kind =
                    Kind::WrongType { field: field.to_string(), expected: "a string", found: other.kind() };
                self.problem(kind, node.pos, "expected a string here");
                None
            }
        }
    }

    /// `source_id`: the object's id in the installation a manifest was exported from
    /// (`model::is_source_id`). Only carried (to `apply --id-map`), never planned.
    fn source_id(&mut self, node: &Node) -> Option<String> {
        let id = self.string("source_id", node)?;
        if id.trim().is_empty() {
            self.problem(Kind::EmptyName { field: "source_id" }, node.pos, "empty");
            return None;
        }
        if !crate::model::is_source_id(&id) {
            self.problem(Kind::BadSourceId, node.pos, "not an id");
            return None;
        }
        Some(id)
    }

    /// `true` or `false`; `null` counts as left out.
    pub(super) fn boolean(&mut self, field: &str, node: &Node) -> Option<bool> {
        match &node.value {
            Value::Bool(b) => Some(*b),
            Value::Null => None,
            Value::Str(s) if AMBIGUOUS_BOOLEANS.contains(&s.to_ascii_lowercase().as_str()) => {
                let kind = Kind::AmbiguousBoolean { field: field.to_string(), value: s.clone() };
                self.problem(kind, node.pos, "write `true` or `false`");
                None
            }
            other => {
                let kind = Kind::WrongType {
                    field: field.to_string(),
                    expected: "`true` or `false`",
                    found: other.kind(),
                };
                self.problem(kind, node.pos, "expected `true` or `false` here");
                None
            }
        }
    }

    pub(super) fn required_name(
        &mut self,
        field: &'static str,
        within: &'static str,
        item: &Node,
        node: Option<&Node>,
    ) -> Option<(String, Pos)> {
        let Some(node) = node else {
            self.problem(
                Kind::MissingField { field, within },
                item.pos,
                format!("this {within} has no `{field}`"),
            );
            return None;
        };
        let value = self.string(field, node);
        match value {
            None if node.value == Value::Null => {
                self.problem(Kind::MissingField { field, within }, node.pos, "no value");
                None
            }
            None => None,
            Some(s) if s.trim().is_empty() => {
                self.problem(Kind::EmptyName { field }, node.pos, "empty");
                None
            }
            Some(s) => Some((s, node.pos)),
        }
    }

    fn company(&mut self, item: &Node) -> Option<DeclaredCompany> {
        let fields = self.fields(item, "a company", COMPANY_FIELDS)?;
        let get = |name: &str| fields.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        let name = self.required_name("name", "company", item, get("name"));
        let technical_meta_data = get("technical_meta_data").and_then(|node| match &node.value {
            Value::Null => None,
            Value::Map(_) => Some(to_json(node)),
            other => {
                let kind = Kind::WrongType {
                    field: "technical_meta_data".into(),
                    expected: "a map",
                    found: other.kind(),
                };
                self.problem(kind, node.pos, "expected a map here");
                None
            }
        });
        let prune = get("prune").and_then(|node| self.prune(node));
        let source_id = get("source_id").and_then(|node| self.source_id(node));
        let (name, pos) = name?;
        Some(DeclaredCompany {
            company: DesiredCompany {
                name,
                technical_meta_data,
                prune,
                source_id,
                location: self.location(pos),
            },
            name_at: self.at(pos),
        })
    }

    fn user(&mut self, item: &Node) -> Option<DeclaredUser> {
        let fields = self.fields(item, "a service user", USER_FIELDS)?;
        let get = |name: &str| fields.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        let email = self.required_name("email", "service user", item, get("email"));
        let email = email.and_then(|(email, pos)| {
            if is_email(&email) {
                Some((email, pos))
            } else {
                self.problem(Kind::MalformedEmail { email }, pos, "not an email address");
                None
            }
        });
        let company = self.required_name("company", "service user", item, get("company"));
        let mut names = [None, None, None];
        for (slot, field) in names.iter_mut().zip(["first_name", "last_name", "middle_name"]) {
            let Some(node) = get(field) else { continue };
            *slot = self.string(field, node);
            if field != "middle_name" && slot.as_ref().is_some_and(|s| s.trim().is_empty()) {
                let field = if field == "first_name" { "first_name" } else { "last_name" };
                self.problem(Kind::EmptyName { field }, node.pos, "empty");
            }
        }
        let [first_name, last_name, middle_name] = names;
        let password = get("password").and_then(|node| self.password(node));
        let active = get("active").and_then(|node| self.boolean("active", node)).unwrap_or(true);
        let permissions = get("permissions").and_then(|node| self.permissions(node));
        let token = get("token").and_then(|node| self.token(node)).unwrap_or_default();
        let source_id = get("source_id").and_then(|node| self.source_id(node));
        let ((email, email_pos), (company, company_pos)) = (email?, company?);
        Some(DeclaredUser {
            user: DesiredUser {
                email: Email::new(email),
                company,
                first_name,
                last_name,
                middle_name,
                password,
                active,
                permissions,
                token,
                source_id,
                location: self.location(email_pos),
            },
            email_at: self.at(email_pos),
            company_at: self.at(company_pos),
        })
    }

    fn password(&mut self, node: &Node) -> Option<PasswordSource> {
        match &node.value {
            Value::Null => None,
            Value::Str(_) | Value::Int(_) | Value::UInt(_) | Value::Float(_) | Value::Bool(_) => {
                self.redact.push(node.pos.offset..node.pos.offset.saturating_add(node.pos.len));
                self.problem(Kind::LiteralPassword, node.pos, "password written here (not shown)");
                None
            }
            Value::Map(_) => {
                let fields = self.fields(node, "`password`", SECRET_FIELDS)?;
                let [(key, value)] = fields.as_slice() else {
                    let reason =
                        if fields.is_empty() { "it names no source" } else { "it names two sources" };
                    self.problem(
                        Kind::BadSecret { reason: reason.into() },
                        node.pos,
                        "write exactly one of `env`, `file` or `generate`",
                    );
                    return None;
                };
                if value.value == Value::Null {
                    // `{env: ~}` would otherwise read as no password at all, silently.
                    let reason = format!("`{key}` has no value");
                    self.problem(Kind::BadSecret { reason }, value.pos, "no value");
                    return None;
                }
                if *key == "generate" {
                    return self.generate(value);
                }
                let text = self.string(key, value)?;
                if text.trim().is_empty() {
                    let reason = format!("`{key}` is empty");
                    self.problem(Kind::BadSecret { reason }, value.pos, "empty");
                    return None;
                }
                if *key == "env" {
                    return Some(SecretRef::Env(text).into());
                }
                self.secret_file(&text, value.pos).map(PasswordSource::from)
            }
            Value::Seq(_) => {
                let kind = Kind::WrongType {
                    field: "password".into(),
                    expected: "`{env: NAME}`, `{file: PATH}` or `{generate: true}`",
                    found: "a list",
                };
                self.problem(kind, node.pos, "expected a map here");
                None
            }
        }
    }

    /// `{generate: true}`; `false` is refused (it would read as "no password" while saying
    /// the opposite), and so is a value that is not a boolean.
    fn generate(&mut self, value: &Node) -> Option<PasswordSource> {
        if self.boolean("generate", value)? {
            return Some(PasswordSource::Generate);
        }
        let reason = "`generate` is `false`".to_string();
        self.problem(Kind::BadSecret { reason }, value.pos, "write `true`, or leave `password` out");
        None
    }

    /// A `{file: PATH}`, placed inside the roots without looking at the disk (whether the file
    /// exists is for `apply` to find out, and for `plan` to say only inside the roots).
    fn secret_file(&mut self, written: &str, pos: Pos) -> Option<SecretRef> {
        if !written.chars().all(super::printable::is_printable) {
            let reason = "`file` holds a control or formatting character".to_string();
            self.problem(Kind::BadSecret { reason }, pos, "in this path");
            return None;
        }
        if let Some(file) = SecretFile::confined(written, self.dir, self.roots) {
            return Some(SecretRef::File(file));
        }
        let label = "outside the manifest paths and every `--secrets-dir`";
        self.problem(Kind::SecretOutside { path: written.to_string() }, pos, label);
        None
    }

    /// `deactivate` or `delete`; `null` counts as left out (keep).
    fn prune(&mut self, node: &Node) -> Option<Prune> {
        match &node.value {
            Value::Null => None,
            Value::Str(s) if s == "deactivate" => Some(Prune::Deactivate),
            Value::Str(s) if s == "delete" => Some(Prune::Delete),
            other => {
                let (found, label) = match other {
                    Value::Str(s) => ("another word", format!("`{s}` is not a prune mode")),
                    _ => (other.kind(), "expected `deactivate` or `delete` here".to_string()),
                };
                let kind =
                    Kind::WrongType { field: "prune".into(), expected: "`deactivate` or `delete`", found };
                self.problem(kind, node.pos, label);
                None
            }
        }
    }

    fn permissions(&mut self, node: &Node) -> Option<Permissions> {
        if node.value == Value::Null {
            return None;
        }
        let fields = self.fields(node, "`permissions`", PERMISSION_FIELDS)?;
        let mut permissions = Permissions::default();
        for (key, value) in fields {
            let flag = self.boolean(key, value);
            match key {
                "biometry" => permissions.biometry = flag,
                "collection" => permissions.collection = flag,
                "documents" => permissions.documents = flag,
                _ => permissions.quality = flag,
            }
        }
        Some(permissions)
    }

    fn token(&mut self, node: &Node) -> Option<TokenSpec> {
        if node.value == Value::Null {
            return None;
        }
        let fields = self.fields(node, "`token`", TOKEN_FIELDS)?;
        let issue = fields.first().and_then(|(_, value)| self.boolean("issue", value)).unwrap_or(false);
        Some(TokenSpec { issue })
    }
}

/// A key as text, for unknown-field messages (keys may be numbers or booleans in YAML).
pub(super) fn scalar_text(node: &Node) -> String {
    match &node.value {
        Value::Str(s) => s.clone(),
        Value::Null => "~".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(n) => n.to_string(),
        Value::UInt(n) => n.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Seq(_) => "[…]".into(),
        Value::Map(_) => "{…}".into(),
    }
}

/// A node as JSON (for `technical_meta_data`). Keys become strings; non-finite floats null.
fn to_json(node: &Node) -> serde_json::Value {
    use serde_json::Value as J;
    match &node.value {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(n) => J::from(*n),
        Value::UInt(n) => J::from(*n),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Value::Str(s) => J::String(s.clone()),
        Value::Seq(items) => J::Array(items.iter().map(to_json).collect()),
        Value::Map(entries) => J::Object(entries.iter().map(|(k, v)| (scalar_text(k), to_json(v))).collect()),
    }
}

/// A pragmatic address check: one `@`, a non-empty local part, a dotted domain, no spaces.
pub(super) fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else { return false };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_syntax_is_checked_pragmatically() {
        assert!(is_email("svc-web@acme.example"));
        assert!(is_email("A.B+tag@sub.acme.example"));
        for bad in [
            "",
            "svc",
            "@acme.example",
            "svc@",
            "svc@acme",
            "svc@@acme.example",
            "svc web@acme.example",
            "svc@acme..example",
            "svc@.acme",
        ] {
            assert!(!is_email(bad), "{bad}");
        }
    }
}
