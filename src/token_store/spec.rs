//! How a token store is named: `dir:PATH` or `exec:COMMAND [ARGS…]`, as `--token-store` and a
//! project file's `token_store` write it. One parser for both, so that a store reads the same
//! wherever it is written; each caller words its own errors (a flag, a located key).
//!
//! Pure; no I/O. The command of `exec:` is split into words as a POSIX shell would (quotes,
//! backslashes) but nothing is expanded: no variables, globs or `~`, and no shell runs it.

use std::path::PathBuf;

/// Where tokens are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// `dir:PATH` (`--token-dir`): one file per token.
    Dir(PathBuf),
    /// `exec:COMMAND [ARGS…]`: a helper program speaking the token store protocol; the
    /// program and its arguments, split as a shell would (no shell runs it).
    Exec(Vec<String>),
}

/// Why a text does not name a token store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecError {
    /// `dir:` with nothing after it.
    NoDirectory,
    /// `exec:` with no command after it.
    NoCommand,
    /// The command of `exec:` cannot be split into words: a quote is not closed or a
    /// backslash ends it.
    Unsplittable,
    /// Neither `dir:` nor `exec:`; the kind written (the text before the first `:`).
    UnknownKind(String),
}

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpecError::NoDirectory => f.write_str("`dir:` needs a directory after `dir:`"),
            SpecError::NoCommand => f.write_str("`exec:` needs a command after `exec:`"),
            SpecError::Unsplittable => f.write_str(
                "the command cannot be split into words: a quote is not closed or a backslash ends it",
            ),
            SpecError::UnknownKind(kind) => {
                write!(f, "`{kind}` is not a kind of token store (`dir:` or `exec:`)")
            }
        }
    }
}

impl StoreSpec {
    /// `dir:PATH` or `exec:COMMAND [ARGS…]`.
    pub fn parse(value: &str) -> Result<Self, SpecError> {
        if let Some(path) = value.strip_prefix("dir:") {
            if path.is_empty() {
                return Err(SpecError::NoDirectory);
            }
            return Ok(StoreSpec::Dir(path.into()));
        }
        if let Some(command) = value.strip_prefix("exec:") {
            let argv = shlex::split(command).ok_or(SpecError::Unsplittable)?;
            if argv.is_empty() {
                return Err(SpecError::NoCommand);
            }
            return Ok(StoreSpec::Exec(argv));
        }
        Err(SpecError::UnknownKind(value.split(':').next().unwrap_or_default().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_is_a_directory_or_a_command_split_like_a_shell_would_without_expanding_anything() {
        assert_eq!(StoreSpec::parse("dir:/a b"), Ok(StoreSpec::Dir("/a b".into())));
        let argv = |v: &[&str]| Ok(StoreSpec::Exec(v.iter().map(ToString::to_string).collect()));
        assert_eq!(
            StoreSpec::parse(r#"exec:helper --ns "my ns" 'a $HOME' b\ c ~ *"#),
            argv(&["helper", "--ns", "my ns", "a $HOME", "b c", "~", "*"])
        );
        assert_eq!(StoreSpec::parse("exec:  /bin/x  "), argv(&["/bin/x"]));
    }

    #[test]
    fn what_is_not_a_store_says_why() {
        assert_eq!(StoreSpec::parse("dir:"), Err(SpecError::NoDirectory));
        assert_eq!(StoreSpec::parse("exec:  "), Err(SpecError::NoCommand));
        assert_eq!(StoreSpec::parse("exec:x 'open"), Err(SpecError::Unsplittable));
        assert_eq!(StoreSpec::parse("vault:x"), Err(SpecError::UnknownKind("vault".into())));
        assert_eq!(StoreSpec::parse("tokens"), Err(SpecError::UnknownKind("tokens".into())));
    }
}
