//! Which environment variables hold secrets, so that no manifest value interpolates one.
//!
//! A manifest value ends up in plans, logs and error messages; a pull request that writes
//! `note: "${OZ_ADMIN_PASSWORD}"` would print the admin password in CI. The variables that
//! hold secrets are data: those the caller names (the commands name `OZ_ADMIN_PASSWORD`, see
//! `SECRET_VARIABLES`), and every variable that a `password: {env: NAME}` of any manifest
//! names. The second list is taken from the parsed documents of all files before any value is
//! read, so that a secret's value is never even looked up. Pure: the environment is a lookup.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::interpolate::interpolate;
use super::node::{Node, Value};
use crate::model::Location;

/// The variables whose values a manifest must not interpolate.
#[derive(Debug, Default)]
pub struct Secrets<'a> {
    given: &'a [&'a str],
    /// Variable → where the first `password: {env: …}` names it.
    passwords: HashMap<String, Location>,
}

/// Why a variable is secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holds<'s> {
    /// A secret given to ozform itself (the admin password).
    Given,
    /// A service user's password, named at this location.
    Password(&'s Location),
}

impl<'a> Secrets<'a> {
    /// The `given` variables and every variable a password of `files` names (each file's
    /// path and parsed documents). A password's `env` may itself interpolate variables; it is
    /// resolved as the reader will resolve it (without the secrets, which are refused there).
    pub fn find(
        given: &'a [&'a str],
        files: &[(Arc<PathBuf>, &[Node])],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Self {
        let mut passwords = HashMap::new();
        let is_given = |name: &str| given.contains(&name);
        for (path, documents) in files {
            for node in documents.iter().flat_map(|d| entries(d, "service_users")) {
                let Value::Seq(users) = &node.value else { continue };
                for source in
                    users.iter().flat_map(|u| entries(u, "password")).flat_map(|p| entries(p, "env"))
                {
                    let Value::Str(written) = &source.value else { continue };
                    if let Ok(name) = interpolate(written, env, &is_given) {
                        passwords.entry(name).or_insert_with(|| Location {
                            file: Arc::clone(path),
                            line: source.pos.line,
                            column: source.pos.column,
                        });
                    }
                }
            }
        }
        Self { given, passwords }
    }

    /// Why `name` is secret, if it is.
    pub fn holds(&self, name: &str) -> Option<Holds<'_>> {
        if self.given.contains(&name) {
            Some(Holds::Given)
        } else {
            self.passwords.get(name).map(Holds::Password)
        }
    }
}

/// The values of a map's entries under `key` (all of them: duplicate keys are still read).
fn entries<'n>(node: &'n Node, key: &'n str) -> impl Iterator<Item = &'n Node> + 'n {
    let entries = match &node.value {
        Value::Map(entries) => entries.as_slice(),
        _ => &[],
    };
    entries.iter().filter(move |(k, _)| matches!(&k.value, Value::Str(s) if s == key)).map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::node::parse_documents;

    #[test]
    fn given_variables_and_every_password_env_are_secret() {
        let documents = parse_documents(
            "service_users:\n  - {password: {env: ACME_PW}}\n  - password: {file: x}\n---\n\
             service_users: [{password: {env: \"${OZ_VAR_PREFIX}_PW\"}}, {password: {env: ACME_PW}}]\n\
             ---\nservice_users: [{password: {env: \"${PREFIX}_PW\"}}]\n",
        )
        .unwrap();
        let path = Arc::new(PathBuf::from("m.yaml"));
        let env = |name: &str| name.ends_with("PREFIX").then(|| "GLOBEX".to_string());
        let secrets = Secrets::find(&["OZ_ADMIN_PASSWORD"], &[(path, &documents)], &env);
        assert_eq!(secrets.holds("OZ_ADMIN_PASSWORD"), Some(Holds::Given));
        let Some(Holds::Password(first)) = secrets.holds("ACME_PW") else { panic!("ACME_PW is not secret") };
        assert_eq!((first.line, first.column), (2, 22));
        assert!(matches!(secrets.holds("GLOBEX_PW"), Some(Holds::Password(_))));
        assert_eq!(secrets.holds("OZ_VAR_PREFIX"), None);
        // `PREFIX` is no `OZ_VAR_` variable: never read, so `${PREFIX}_PW` names nothing.
        assert_eq!(secrets.holds("_PW"), None);
        assert_eq!(secrets.holds("x"), None);
    }
}
