//! Secrets: a value type that cannot leak, and references that say where a secret comes from.
//!
//! `Secret` prints `(sensitive)` through `Debug` and `Display` and does not implement
//! `Serialize`; the only way to the bytes is `expose()`, which is called where a request body or
//! the token sink needs them. Creating one registers its value with `redact`, so `output`
//! blanks it (in any form it may come back in) wherever it would be written. `SecretRef` is what manifests and saved plans hold: the name of an
//! environment variable or a file path, never the value. Resolution is lazy and reads only the
//! environment and file system passed in.

use std::fmt;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A password or token. Redacted everywhere except `expose()`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a value, and register it for output-level scrubbing (`redact::register`): every
    /// secret is created here, so none can be forgotten.
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        crate::redact::register(&value);
        Self(value)
    }
    /// The secret value. Call only to build a request body or write the sink.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(sensitive)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(sensitive)")
    }
}

/// Where a secret comes from: `{env: NAME}` or `{file: PATH}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SecretRef {
    /// The name of an environment variable that holds the secret.
    Env(String),
    /// A file whose contents (trailing newline removed) are the secret. Relative paths are
    /// relative to the manifest file that names them; the loader stores the joined path.
    File(PathBuf),
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(name) => write!(f, "{{env: {name}}}"),
            SecretRef::File(path) => write!(f, "{{file: {}}}", path.display()),
        }
    }
}

/// Why a secret could not be resolved. Names the source, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, miette::Diagnostic)]
pub enum SecretError {
    #[error("environment variable `{name}` is not set")]
    #[diagnostic(code(ozform::secret::env_missing), help("export `{name}` before running apply"))]
    EnvMissing { name: String },
    #[error("environment variable `{name}` is empty")]
    #[diagnostic(code(ozform::secret::env_empty), help("set `{name}` to the password"))]
    EnvEmpty { name: String },
    #[error("cannot read secret file `{}`: {reason}", path.display())]
    #[diagnostic(code(ozform::secret::file_unreadable), help("check that the file exists and is readable"))]
    FileUnreadable { path: PathBuf, reason: String },
    #[error("secret file `{}` is empty", path.display())]
    #[diagnostic(code(ozform::secret::file_empty), help("write the password into the file"))]
    FileEmpty { path: PathBuf },
}

impl SecretRef {
    /// Resolve through `env` (a lookup, so tests need not touch the process environment) and
    /// the file system. A file's trailing `\n` / `\r\n` is removed.
    pub fn resolve(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Secret, SecretError> {
        match self {
            SecretRef::Env(name) => match env(name) {
                None => Err(SecretError::EnvMissing { name: name.clone() }),
                Some(v) if v.is_empty() => Err(SecretError::EnvEmpty { name: name.clone() }),
                Some(v) => Ok(Secret::new(v)),
            },
            SecretRef::File(path) => read_secret_file(path),
        }
    }

    /// Whether the secret could be resolved now (for plan-time warnings); reads nothing but
    /// the variable's presence or the file's metadata.
    pub fn is_available(&self, env: &dyn Fn(&str) -> Option<String>) -> bool {
        match self {
            SecretRef::Env(name) => env(name).is_some_and(|v| !v.is_empty()),
            SecretRef::File(path) => path.is_file(),
        }
    }
}

fn read_secret_file(path: &Path) -> Result<Secret, SecretError> {
    let raw = std::fs::read_to_string(path).map_err(|e| SecretError::FileUnreadable {
        path: path.to_path_buf(),
        reason: e.kind().to_string(),
    })?;
    let value = raw.strip_suffix('\n').unwrap_or(&raw);
    let value = value.strip_suffix('\r').unwrap_or(value);
    if value.is_empty() {
        return Err(SecretError::FileEmpty { path: path.to_path_buf() });
    }
    Ok(Secret::new(value))
}

/// The process environment as a lookup for `SecretRef::resolve`.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints_its_value() {
        let s = Secret::new("canary-1234");
        assert_eq!(format!("{s}"), "(sensitive)");
        assert_eq!(format!("{s:?}"), "(sensitive)");
        assert_eq!(s.expose(), "canary-1234");
    }

    #[test]
    fn a_new_secret_is_blanked_in_output_in_any_form() {
        let _s = Secret::new("canary-\"registered\"-5e0c1d");
        assert_eq!(crate::redact::scrub(r#"x canary-\"registered\"-5e0c1d y"#), "x (sensitive) y");
        assert_eq!(crate::redact::scrub("x canary-%22registered%22-5e0c1d y"), "x (sensitive) y");
    }

    #[test]
    fn env_ref_resolves_through_the_given_lookup() {
        let r = SecretRef::Env("PW".into());
        let found = r.resolve(&|n| (n == "PW").then(|| "x".to_string())).map(|s| s.expose().to_string());
        assert_eq!(found, Ok("x".to_string()));
        assert_eq!(r.resolve(&|_| None), Err(SecretError::EnvMissing { name: "PW".into() }));
    }

    #[test]
    fn file_ref_strips_one_trailing_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("pw");
        std::fs::write(&p, "hunter2\n").expect("write");
        let r = SecretRef::File(p);
        assert_eq!(r.resolve(&|_| None).map(|s| s.expose().to_string()), Ok("hunter2".into()));
    }

    #[test]
    fn secret_ref_round_trips_as_yaml_style_map() {
        let json = serde_json::to_string(&SecretRef::Env("A".into())).expect("ser");
        assert_eq!(json, r#"{"env":"A"}"#);
    }
}
