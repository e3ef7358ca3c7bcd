//! `${OZ_VAR_NAME}` and `${OZ_VAR_NAME:-default}` in string values; `$${` writes a literal `${`.
//!
//! Pure: the environment is a lookup passed in, never read here. A default applies when the
//! variable is unset or empty, as in POSIX shells.
//!
//! Only variables whose names start with `VARIABLE_PREFIX` (`OZ_VAR_`, as Terraform reads only
//! `TF_VAR_`) are ever looked up: a pull request writes the manifests, and the job that plans
//! them holds secrets in its environment (`GITHUB_TOKEN`, cloud keys) that a value would print
//! in the plan. Any other name is an error, with or without a default, and its value is never
//! read. A variable that holds a secret (`secret` says which, `OZ_VAR_` or not) is refused the
//! same way. Of several problems in one value, a malformed `${` or a secret wins (they stop the
//! scan), then the first undeclared name, then the first missing variable.

/// The prefix of the names of the variables a manifest may interpolate.
pub const VARIABLE_PREFIX: &str = "OZ_VAR_";

/// Why a string could not be interpolated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterpolationError {
    /// `${NAME}` without a default, and `NAME` is not set.
    Missing { name: String },
    /// `${` without a closing `}`, or a name that is not `[A-Za-z_][A-Za-z0-9_]*`.
    Malformed { reason: String },
    /// `${NAME}` or `${NAME:-default}` where `NAME` holds a secret.
    Secret { name: String },
    /// `${NAME}` or `${NAME:-default}` where `NAME` does not start with `VARIABLE_PREFIX`.
    Undeclared { name: String },
}

/// Replace every `${…}` in `input`. Text without `$` is returned as is.
pub fn interpolate(
    input: &str,
    env: &dyn Fn(&str) -> Option<String>,
    secret: &dyn Fn(&str) -> bool,
) -> Result<String, InterpolationError> {
    if !input.contains('$') {
        return Ok(input.to_string());
    }
    let mut out = String::with_capacity(input.len());
    let mut missing = None;
    let mut undeclared = None;
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let Some(close) = tail.find('}') else {
                return Err(InterpolationError::Malformed { reason: "`${` is not closed by `}`".into() });
            };
            let inner = &tail[..close];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            if !is_variable_name(name) {
                return Err(InterpolationError::Malformed {
                    reason: format!(
                        "`{name}` is not a variable name (letters, digits and `_`, not starting with a digit)"
                    ),
                });
            }
            if secret(name) {
                return Err(InterpolationError::Secret { name: name.to_string() });
            }
            if !name.starts_with(VARIABLE_PREFIX) {
                undeclared.get_or_insert_with(|| name.to_string());
                rest = &tail[close + 1..];
                continue;
            }
            match (env(name).filter(|v| default.is_none() || !v.is_empty()), default) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => {
                    missing.get_or_insert_with(|| name.to_string());
                }
            }
            rest = &tail[close + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    match (undeclared, missing) {
        (Some(name), _) => Err(InterpolationError::Undeclared { name }),
        (None, Some(name)) => Err(InterpolationError::Missing { name }),
        (None, None) => Ok(out),
    }
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "OZ_VAR_ENV" => Some("prod".into()),
            "OZ_VAR_EMPTY" => Some(String::new()),
            "OZ_ADMIN_PASSWORD" => Some("canary-admin".into()),
            "GITHUB_TOKEN" => Some("canary-github".into()),
            _ => None,
        }
    }

    /// With `OZ_ADMIN_PASSWORD` as the secret.
    fn interpolate(input: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, InterpolationError> {
        super::interpolate(input, env, &|name| name == "OZ_ADMIN_PASSWORD")
    }

    #[test]
    fn a_set_variable_is_replaced() {
        assert_eq!(interpolate("svc-${OZ_VAR_ENV}@acme.example", &env), Ok("svc-prod@acme.example".into()));
    }

    #[test]
    fn a_default_applies_when_the_variable_is_unset_or_empty() {
        assert_eq!(interpolate("${OZ_VAR_NOPE:-staging}", &env), Ok("staging".into()));
        assert_eq!(interpolate("${OZ_VAR_EMPTY:-staging}", &env), Ok("staging".into()));
        assert_eq!(interpolate("${OZ_VAR_ENV:-staging}", &env), Ok("prod".into()));
        assert_eq!(interpolate("${OZ_VAR_NOPE:-}", &env), Ok(String::new()));
    }

    #[test]
    fn an_empty_variable_without_default_is_used_as_empty() {
        assert_eq!(interpolate("a${OZ_VAR_EMPTY}b", &env), Ok("ab".into()));
    }

    #[test]
    fn a_missing_variable_is_an_error_naming_it() {
        assert_eq!(
            interpolate("x ${OZ_VAR_NOPE} y", &env),
            Err(InterpolationError::Missing { name: "OZ_VAR_NOPE".into() })
        );
    }

    #[test]
    fn double_dollar_brace_is_a_literal() {
        assert_eq!(
            interpolate("$${OZ_VAR_ENV} and ${OZ_VAR_ENV} and $${GITHUB_TOKEN}", &env),
            Ok("${OZ_VAR_ENV} and prod and ${GITHUB_TOKEN}".into())
        );
    }

    #[test]
    fn a_lone_dollar_is_kept() {
        assert_eq!(interpolate("cost $5 or $$", &env), Ok("cost $5 or $$".into()));
        assert_eq!(interpolate("end$", &env), Ok("end$".into()));
    }

    #[test]
    fn unclosed_braces_and_bad_names_are_malformed() {
        assert!(matches!(interpolate("${OZ_VAR_ENV", &env), Err(InterpolationError::Malformed { .. })));
        assert!(matches!(interpolate("${1X}", &env), Err(InterpolationError::Malformed { .. })));
        assert!(matches!(interpolate("${}", &env), Err(InterpolationError::Malformed { .. })));
    }

    #[test]
    fn a_secret_variable_is_refused_with_or_without_a_default_and_never_looked_up() {
        let secret = Err(InterpolationError::Secret { name: "OZ_ADMIN_PASSWORD".into() });
        assert_eq!(interpolate("${OZ_ADMIN_PASSWORD}", &env), secret);
        assert_eq!(interpolate("x ${OZ_ADMIN_PASSWORD:-none} y", &env), secret);
        assert_eq!(interpolate("${OZ_VAR_NOPE} then ${OZ_ADMIN_PASSWORD}", &env), secret);
        assert_eq!(interpolate("${NOPE} then ${OZ_ADMIN_PASSWORD}", &env), secret);
        assert_eq!(interpolate("$${OZ_ADMIN_PASSWORD}", &env), Ok("${OZ_ADMIN_PASSWORD}".into()));
        let looked_up = std::cell::Cell::new(false);
        let spy = |_: &str| {
            looked_up.set(true);
            None
        };
        let _ = super::interpolate("${OZ_VAR_S:-x}", &spy, &|name| name == "OZ_VAR_S");
        assert!(!looked_up.get());
    }

    #[test]
    fn a_variable_not_named_oz_var_is_refused_with_or_without_a_default_and_never_looked_up() {
        let looked_up = std::cell::RefCell::new(Vec::new());
        let spy = |name: &str| {
            looked_up.borrow_mut().push(name.to_string());
            env(name)
        };
        let undeclared = |name: &str| Err(InterpolationError::Undeclared { name: name.into() });
        let no_secret = |_: &str| false;
        for (value, name) in [
            ("Leak ${GITHUB_TOKEN}", "GITHUB_TOKEN"),
            ("${GITHUB_TOKEN:-none}", "GITHUB_TOKEN"),
            ("${OZ_ENV}", "OZ_ENV"),
            ("${oz_var_env}", "oz_var_env"),
            ("${OZ_VAR}", "OZ_VAR"),
            // An undeclared name wins over a missing one, wherever it is.
            ("${OZ_VAR_NOPE} ${HOME}", "HOME"),
            ("${PATH} ${HOME}", "PATH"),
        ] {
            assert_eq!(super::interpolate(value, &spy, &no_secret), undeclared(name), "{value}");
        }
        let looked_up = looked_up.into_inner();
        assert!(looked_up.iter().all(|n| n.starts_with(VARIABLE_PREFIX)), "{looked_up:?}");
    }

    #[test]
    fn several_variables_in_one_value() {
        assert_eq!(
            interpolate("${OZ_VAR_ENV}-${OZ_VAR_NOPE:-x}-${OZ_VAR_ENV}", &env),
            Ok("prod-x-prod".into())
        );
    }
}
