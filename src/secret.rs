//! Secrets: a value type that cannot leak, and references that say where a secret comes from.
//!
//! `Secret` prints `(sensitive)` through `Debug` and `Display` and does not implement
//! `Serialize`; the only way to the bytes is `expose()`, which is called where a request body or
//! the token sink needs them. Creating one registers its value with `redact`, so `output`
//! blanks it (in any form it may come back in) wherever it would be written; dropping its last
//! clone releases it into the registry's bounded tail, so a process that runs for weeks
//! (`reconcile`) does not keep every secret it ever saw. `SecretRef` is what
//! manifests and saved plans hold: the name of an environment variable or a file path, never the
//! value. Resolution is lazy and reads only the environment passed in and the file named.
//!
//! Secret files are named by manifests, which pull requests write, so a `{file: PATH}` is
//! confined (`SecretFile`): the loader places it, lexically and without looking at the disk,
//! inside the manifest paths given or a `--secrets-dir` (`SecretRoots`), or refuses it. Reading
//! one then opens it without following a symbolic link in its last component and without
//! blocking (a FIFO), checks that its directory, links resolved, still lies inside the roots,
//! and reads a regular file of at most `MAX_FILE_BYTES` through a bounded reader. A saved plan
//! records the path relative to the checkout root (the directory holding `.git`) so that `apply
//! --plan` finds it from any working directory of the same checkout; read back, a path is
//! placed again (`SecretFile::anchor`) under the same rules before it can be opened. Only a
//! file the operator names on the command line (`--admin-password-file`) is read as given
//! (`SecretRef::operator_file`), still bounded.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::io::Read as _;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The largest secret file read (64 KiB): a password is far smaller, and `/dev/zero` or a file
/// that grows must not exhaust memory.
pub const MAX_FILE_BYTES: u64 = 64 << 10;

/// A password or token. Redacted everywhere except `expose()`.
///
/// Clones share one value: the value is registered for output-level scrubbing from `new` until
/// the last clone is dropped, then kept in the registry's bounded tail of released secrets (a
/// string built from it may outlive it; see `redact`).
#[derive(Clone)]
pub struct Secret(Arc<Registered>);

/// A secret value, registered with `redact` while it lives.
struct Registered(String);

impl Drop for Registered {
    fn drop(&mut self) {
        crate::redact::release(&self.0);
    }
}

impl Secret {
    /// Wrap a value, and register it for output-level scrubbing (`redact::register`): every
    /// secret is created here, so none can be forgotten.
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        crate::redact::register(&value);
        Self(Arc::new(Registered(value)))
    }
    /// The secret value. Call only to build a request body or write the sink.
    pub fn expose(&self) -> &str {
        &self.0.0
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Secret {}

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
    /// A file whose contents (trailing newline removed) are the secret: in a saved plan, a path
    /// relative to the checkout root, or an absolute path inside a `--secrets-dir`.
    File(SecretFile),
}

impl SecretRef {
    /// A file the operator named on the command line (`--admin-password-file`): read as given,
    /// links followed (a Kubernetes secret volume is made of links), bounded.
    pub fn operator_file(path: impl Into<PathBuf>) -> Self {
        SecretRef::File(SecretFile { path: path.into(), access: Access::Operator })
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(name) => write!(f, "{{env: {name}}}"),
            SecretRef::File(file) => write!(f, "{{file: {}}}", file.path.display()),
        }
    }
}

/// A `{file: PATH}` secret: the path as a plan records it, and how it may be opened.
///
/// Two `SecretFile`s are the same source when they record the same path: a plan read back
/// equals the plan saved although only the first can be opened before it is anchored.
#[derive(Debug, Clone)]
pub struct SecretFile {
    /// Relative to the checkout root, or absolute (then inside a `--secrets-dir`); for an
    /// operator's file, the path as given.
    path: PathBuf,
    access: Access,
}

#[derive(Debug, Clone)]
enum Access {
    /// Read from a saved plan, not yet placed under the roots of this run: cannot be opened.
    Unanchored,
    /// Placed inside the roots: `open` is the absolute, lexically normal path; `shown` is the
    /// path as the manifest (or the plan) wrote it, for messages.
    Confined { open: PathBuf, shown: PathBuf, roots: Arc<[PathBuf]> },
    /// Placed outside every root: never opened; resolving it says why.
    Outside { shown: PathBuf },
    /// Named on the command line by the operator: opened as given.
    Operator,
}

impl SecretFile {
    /// A file as a saved plan records it, not yet placed under the roots of a run (`anchor`):
    /// it cannot be opened until it is.
    pub fn recorded(path: impl Into<PathBuf>) -> Self {
        SecretFile { path: path.into(), access: Access::Unanchored }
    }

    /// The path as a saved plan records it.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file a manifest in `dir` names as `written`, placed lexically (the disk is not
    /// looked at): `None` when it lies outside every root.
    pub fn confined(written: &str, dir: &Path, roots: &SecretRoots) -> Option<Self> {
        let open = normalize(&roots.cwd.join(dir).join(written));
        if !roots.allows(&open) {
            return None;
        }
        let path = roots.record(&open);
        Some(SecretFile {
            path,
            access: Access::Confined {
                open,
                shown: PathBuf::from(written),
                roots: Arc::clone(&roots.allowed),
            },
        })
    }

    /// Place a path read from a saved plan under the roots of this run: relative to the
    /// checkout root, or absolute; either way inside the roots, or it cannot be opened (and
    /// resolving it says so).
    pub fn anchor(&mut self, roots: &SecretRoots) {
        if !matches!(self.access, Access::Unanchored) {
            return;
        }
        let open = normalize(&roots.checkout.join(&self.path));
        self.access = if roots.allows(&open) && is_printable_path(&self.path) {
            Access::Confined { open, shown: self.path.clone(), roots: Arc::clone(&roots.allowed) }
        } else {
            Access::Outside { shown: self.path.clone() }
        };
    }

    /// The absolute path that would be opened, for a confined file (tests and messages).
    pub fn resolved(&self) -> Option<&Path> {
        match &self.access {
            Access::Confined { open, .. } => Some(open),
            _ => None,
        }
    }

    /// The path as the manifest wrote it (relative to the manifest), for messages and for
    /// writing a manifest back; read from a plan, the path the plan records.
    pub fn written(&self) -> &Path {
        match &self.access {
            Access::Confined { shown, .. } | Access::Outside { shown } => shown,
            Access::Unanchored | Access::Operator => &self.path,
        }
    }
}

/// No character a terminal could act on: a path read from a plan is shown in messages.
fn is_printable_path(path: &Path) -> bool {
    !path
        .to_string_lossy()
        .chars()
        .any(|c| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'))
}

impl PartialEq for SecretFile {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path
    }
}
impl Eq for SecretFile {}
impl Hash for SecretFile {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.path.hash(state);
    }
}
impl PartialOrd for SecretFile {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for SecretFile {
    fn cmp(&self, other: &Self) -> Ordering {
        self.path.cmp(&other.path)
    }
}

impl Serialize for SecretFile {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.path.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SecretFile {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(SecretFile::recorded(PathBuf::deserialize(deserializer)?))
    }
}

impl JsonSchema for SecretFile {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SecretFile".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string"})
    }
}

/// Where the secret files of one run may lie, and where the relative paths of a saved plan are
/// anchored. All paths absolute and lexically normal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRoots {
    /// The working directory: relative paths are taken from here.
    cwd: PathBuf,
    /// The checkout root: a saved plan records paths relative to it.
    checkout: PathBuf,
    /// A secret file must lie inside one of these.
    allowed: Arc<[PathBuf]>,
}

impl SecretRoots {
    /// Roots taken from `cwd` (absolute): `allowed` and `checkout` relative to it, made
    /// absolute and normal.
    pub fn new(cwd: &Path, checkout: &Path, allowed: &[PathBuf]) -> Self {
        let cwd = normalize(cwd);
        let checkout = normalize(&cwd.join(checkout));
        let allowed: Vec<PathBuf> = allowed.iter().map(|p| normalize(&cwd.join(p))).collect();
        Self { cwd, checkout, allowed: allowed.into() }
    }

    /// The roots of `apply --plan`: the checkout found from the working directory (see
    /// `checkout_root`), and each of `secrets_dirs`.
    pub fn for_saved_plan(secrets_dirs: &[PathBuf]) -> Self {
        let cwd = std::env::current_dir().unwrap_or_default();
        let checkout = checkout_root(&cwd).unwrap_or_else(|| cwd.clone());
        let mut allowed = vec![checkout.clone()];
        allowed.extend(secrets_dirs.iter().cloned());
        Self::new(&cwd, &checkout, &allowed)
    }

    /// Whether the absolute, normal `path` lies inside a root (lexically).
    pub fn allows(&self, path: &Path) -> bool {
        self.allowed.iter().any(|root| path.starts_with(root))
    }

    /// `path` as a saved plan records it: relative to the checkout root when inside it.
    fn record(&self, path: &Path) -> PathBuf {
        match path.strip_prefix(&self.checkout) {
            Ok(relative) if relative.as_os_str().is_empty() => PathBuf::from("."),
            Ok(relative) => relative.to_path_buf(),
            Err(_) => path.to_path_buf(),
        }
    }

    /// The roots, absolute (for messages and tests).
    pub fn allowed(&self) -> &[PathBuf] {
        &self.allowed
    }

    /// The checkout root (for messages and tests).
    pub fn checkout(&self) -> &Path {
        &self.checkout
    }
}

/// The nearest directory at or above `start` that holds `.git` (a directory, or the file of a
/// worktree): the root of the checkout.
pub fn checkout_root(start: &Path) -> Option<PathBuf> {
    start.ancestors().find(|dir| std::fs::symlink_metadata(dir.join(".git")).is_ok()).map(Path::to_path_buf)
}

/// `path` with `.` dropped and each `..` taking away the component before it, without looking
/// at the disk (so `a/link/..` is `a`, whatever `link` is: the lexical place is what is
/// checked, and the read checks the real one). A `..` above the root stays at the root.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    let mut depth = 0usize;
    for component in path.components() {
        match component {
            Component::Prefix(_) | Component::RootDir => {
                out.push(component);
                depth = 0;
            }
            Component::CurDir => {}
            Component::ParentDir if depth > 0 => {
                out.pop();
                depth -= 1;
            }
            Component::ParentDir if out.has_root() => {}
            Component::ParentDir => out.push(".."),
            Component::Normal(name) => {
                out.push(name);
                depth += 1;
            }
        }
    }
    out
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
    #[error("secret file `{}` lies outside the checkout and every `--secrets-dir`", path.display())]
    #[diagnostic(
        code(ozform::secret::file_outside),
        help(
            "a saved plan names a secret file relative to the checkout root (the directory holding `.git`, \
             else the working directory) or by an absolute path: run `apply --plan` inside the checkout the \
             plan was made in, or give the file's directory with `--secrets-dir`"
        )
    )]
    FileOutside { path: PathBuf },
    #[error(
        "secret file `{}` lies, once its symbolic links are followed, outside the manifest paths and every `--secrets-dir`",
        path.display()
    )]
    #[diagnostic(
        code(ozform::secret::file_link_outside),
        help(
            "keep secret files, and the directories on their way, inside the manifest paths or a `--secrets-dir`"
        )
    )]
    FileLinkOutside { path: PathBuf },
    #[error("secret file `{}` is a symbolic link", path.display())]
    #[diagnostic(
        code(ozform::secret::file_link),
        help("name the file itself: a secret file is opened without following a link")
    )]
    FileIsLink { path: PathBuf },
    #[error("secret file `{}` is not a regular file: it is {what}", path.display())]
    #[diagnostic(code(ozform::secret::file_not_regular), help("name a regular file holding the password"))]
    FileNotRegular { path: PathBuf, what: &'static str },
    #[error("secret file `{}` is larger than {} KiB", path.display(), MAX_FILE_BYTES >> 10)]
    #[diagnostic(
        code(ozform::secret::file_too_large),
        help("a secret file holds one password: name the file that holds it")
    )]
    FileTooLarge { path: PathBuf },
    #[error("secret file `{}` is not UTF-8 text", path.display())]
    #[diagnostic(code(ozform::secret::file_not_utf8), help("write the password as UTF-8 text"))]
    FileNotUtf8 { path: PathBuf },
    #[error("secret file `{}` was read from a saved plan and not placed under this run's roots (a bug: please report it)", path.display())]
    #[diagnostic(code(ozform::secret::file_unanchored))]
    FileUnanchored { path: PathBuf },
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
            SecretRef::File(file) => {
                let bytes = match &file.access {
                    Access::Confined { open, shown, roots } => read_confined(open, shown, roots)?,
                    Access::Operator => read_operator(&file.path)?,
                    Access::Outside { shown } => {
                        return Err(SecretError::FileOutside { path: shown.clone() });
                    }
                    Access::Unanchored => {
                        return Err(SecretError::FileUnanchored { path: file.path.clone() });
                    }
                };
                let shown = file.written().to_path_buf();
                let text =
                    String::from_utf8(bytes).map_err(|_| SecretError::FileNotUtf8 { path: shown.clone() })?;
                let value = text.strip_suffix('\n').unwrap_or(&text);
                let value = value.strip_suffix('\r').unwrap_or(value);
                if value.is_empty() {
                    return Err(SecretError::FileEmpty { path: shown });
                }
                Ok(Secret::new(value))
            }
        }
    }

    /// Whether the secret could be resolved now (for plan-time warnings); reads nothing but
    /// the variable's presence or, for a confined file, the type and size of the file the read
    /// would open (see `is_readable`).
    pub fn is_available(&self, env: &dyn Fn(&str) -> Option<String>) -> bool {
        match self {
            SecretRef::Env(name) => env(name).is_some_and(|v| !v.is_empty()),
            SecretRef::File(file) => match &file.access {
                Access::Confined { open, roots, .. } => is_readable(open, roots),
                Access::Operator => file.path.is_file(),
                Access::Outside { .. } | Access::Unanchored => false,
            },
        }
    }
}

/// What the read of a confined file would find, without opening it: its directory (links
/// followed) inside the roots, and there a regular file (not a link) of at most
/// `MAX_FILE_BYTES`. A path outside the roots never gets here (the loader refused it), and
/// one whose directory leads outside by a link answers `false` like a missing file: so a plan's
/// warning tells nothing about a place outside the roots.
fn is_readable(open: &Path, roots: &[PathBuf]) -> bool {
    let Ok(real) = real_place(open, roots) else { return false };
    std::fs::symlink_metadata(real).is_ok_and(|meta| meta.is_file() && meta.len() <= MAX_FILE_BYTES)
}

/// `open` with its directory's links resolved, checked to stay inside the (real) roots.
fn real_place(open: &Path, roots: &[PathBuf]) -> Result<PathBuf, Option<std::io::Error>> {
    let (Some(parent), Some(name)) = (open.parent(), open.file_name()) else { return Err(None) };
    let real_parent = std::fs::canonicalize(parent).map_err(Some)?;
    let real = real_parent.join(name);
    // Inside a root, or a root itself (`{file: .}`, refused then as a directory).
    let inside = roots
        .iter()
        .filter_map(|root| std::fs::canonicalize(root).ok())
        .any(|root| real_parent.starts_with(&root) || real == root);
    if inside { Ok(real) } else { Err(None) }
}

/// Read a confined file: its directory inside the roots once links are followed, the file
/// itself opened without following a link and without blocking, a regular file, bounded.
fn read_confined(open: &Path, shown: &Path, roots: &[PathBuf]) -> Result<Vec<u8>, SecretError> {
    let path = || shown.to_path_buf();
    let unreadable = |e: &std::io::Error| SecretError::FileUnreadable { path: path(), reason: reason(e) };
    let real = match real_place(open, roots) {
        Ok(real) => real,
        Err(Some(e)) => return Err(unreadable(&e)),
        // The root itself (`{file: .}`): a directory.
        Err(None) if open.file_name().is_none() => {
            return Err(SecretError::FileNotRegular { path: path(), what: "a directory" });
        }
        Err(None) => return Err(SecretError::FileLinkOutside { path: path() }),
    };
    let file = open_no_follow(&real).map_err(|e| {
        if is_link_error(&e) { SecretError::FileIsLink { path: path() } } else { unreadable(&e) }
    })?;
    let meta = file.metadata().map_err(|e| unreadable(&e))?;
    if !meta.is_file() {
        return Err(SecretError::FileNotRegular { path: path(), what: what(&meta) });
    }
    read_bounded(file, meta.len(), &path)
}

/// Read an operator's file (`--admin-password-file`): as given, bounded.
fn read_operator(path: &Path) -> Result<Vec<u8>, SecretError> {
    let file = std::fs::File::open(path)
        .map_err(|e| SecretError::FileUnreadable { path: path.to_path_buf(), reason: reason(&e) })?;
    read_bounded(file, 0, &|| path.to_path_buf())
}

/// At most `MAX_FILE_BYTES`: a claimed size over it is refused before reading, and the read
/// itself stops one byte past it (a file that grows, or reports no size, cannot pass).
fn read_bounded(
    file: std::fs::File,
    claimed: u64,
    path: &dyn Fn() -> PathBuf,
) -> Result<Vec<u8>, SecretError> {
    if claimed > MAX_FILE_BYTES {
        return Err(SecretError::FileTooLarge { path: path() });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(claimed).unwrap_or(0));
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| SecretError::FileUnreadable { path: path(), reason: reason(&e) })?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(SecretError::FileTooLarge { path: path() });
    }
    Ok(bytes)
}

#[cfg(unix)]
fn open_no_follow(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    // O_NONBLOCK: opening a FIFO for reading must not wait for a writer (it is refused after
    // the open, by its type); on a regular file the flag changes nothing.
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path)
}

#[cfg(not(unix))]
fn open_no_follow(path: &Path) -> std::io::Result<std::fs::File> {
    if std::fs::symlink_metadata(path)?.file_type().is_symlink() {
        return Err(std::io::Error::new(std::io::ErrorKind::Other, "symbolic link"));
    }
    std::fs::File::open(path)
}

/// Opening a link with `O_NOFOLLOW` fails with `ELOOP`.
fn is_link_error(e: &std::io::Error) -> bool {
    #[cfg(unix)]
    {
        e.raw_os_error() == Some(libc::ELOOP)
    }
    #[cfg(not(unix))]
    {
        e.kind() == std::io::ErrorKind::Other
    }
}

/// What an open file that is not a regular file is, in words.
fn what(meta: &std::fs::Metadata) -> &'static str {
    if meta.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt as _;
        let file_type = meta.file_type();
        if file_type.is_fifo() {
            return "a FIFO";
        }
        if file_type.is_char_device() {
            return "a character device";
        }
        if file_type.is_block_device() {
            return "a block device";
        }
        if file_type.is_socket() {
            return "a socket";
        }
    }
    "a special file"
}

fn reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        kind => kind.to_string(),
    }
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
    fn secret_ref_round_trips_as_yaml_style_map() {
        let json = serde_json::to_string(&SecretRef::Env("A".into())).expect("ser");
        assert_eq!(json, r#"{"env":"A"}"#);
    }

    #[test]
    fn normalize_drops_dots_and_resolves_parents_lexically() {
        for (path, normal) in [
            ("/a/./b/../c", "/a/c"),
            ("/a/b/../../..", "/"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("a/../../b", "../b"),
            ("a//b/", "a/b"),
            ("./", ""),
            ("/ü/./é/..", "/ü"),
        ] {
            assert_eq!(normalize(Path::new(path)), PathBuf::from(normal), "{path}");
        }
    }

    /// Roots of a run in `/work/repo` (a checkout), manifests in `m`, a secrets dir `/run/s`.
    fn roots() -> SecretRoots {
        SecretRoots::new(Path::new("/work/repo"), Path::new("/work/repo"), &["m".into(), "/run/s".into()])
    }

    fn placed(written: &str) -> Option<(PathBuf, PathBuf)> {
        let file = SecretFile::confined(written, Path::new("m/team"), &roots())?;
        Some((file.path().to_path_buf(), file.resolved()?.to_path_buf()))
    }

    #[test]
    fn a_manifests_secret_file_is_placed_inside_the_roots_or_refused_without_the_disk() {
        let inside = |p: &str| PathBuf::from(p);
        assert_eq!(placed("pw"), Some((inside("m/team/pw"), inside("/work/repo/m/team/pw"))));
        assert_eq!(placed("../pw"), Some((inside("m/pw"), inside("/work/repo/m/pw"))));
        assert_eq!(placed("/run/s/acme"), Some((inside("/run/s/acme"), inside("/run/s/acme"))));
        assert_eq!(placed("/run/s/x/../y"), Some((inside("/run/s/y"), inside("/run/s/y"))));
        for outside in [
            "../../pw",
            "../../../../../../etc/shadow",
            "/etc/shadow",
            "/proc/self/environ",
            "/run/secrets",
            "/run/s/../t",
            "/run/sx",
            "/dev/zero",
            "../../m2/pw",
        ] {
            assert_eq!(placed(outside), None, "{outside}");
        }
    }

    #[test]
    fn a_saved_plans_secret_file_is_anchored_at_the_checkout_or_in_a_secrets_dir() {
        let roots = SecretRoots::new(
            Path::new("/ci/checkout/sub"),
            Path::new("/ci/checkout"),
            &["/ci/checkout".into(), "/run/s".into()],
        );
        let anchored = |path: &str| {
            let mut file: SecretFile = serde_json::from_value(serde_json::json!(path)).unwrap();
            assert_eq!(file.resolved(), None);
            file.anchor(&roots);
            file.resolved().map(Path::to_path_buf)
        };
        assert_eq!(anchored("m/pw"), Some(PathBuf::from("/ci/checkout/m/pw")));
        assert_eq!(anchored("/run/s/pw"), Some(PathBuf::from("/run/s/pw")));
        for outside in
            ["../pw", "m/../../pw", "/etc/shadow", "/proc/self/environ", "/dev/zero", "m/\u{1b}[2J"]
        {
            assert_eq!(anchored(outside), None, "{outside}");
            let mut file: SecretFile = serde_json::from_value(serde_json::json!(outside)).unwrap();
            file.anchor(&roots);
            let err = SecretRef::File(file).resolve(&|_| None).unwrap_err();
            assert!(matches!(err, SecretError::FileOutside { .. }), "{err:?}");
        }
    }

    #[test]
    fn a_plan_records_the_path_relative_to_the_checkout_and_reads_back_equal() {
        let file = SecretFile::confined("pw", Path::new("m"), &roots()).unwrap();
        let json = serde_json::to_string(&SecretRef::File(file.clone())).unwrap();
        assert_eq!(json, r#"{"file":"m/pw"}"#);
        let back: SecretRef = serde_json::from_str(&json).unwrap();
        assert_eq!(back, SecretRef::File(file));
    }

    /// A checkout in a temp dir with manifests in `m` and a secrets dir `s`.
    fn sandbox() -> (tempfile::TempDir, SecretRoots) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("m")).unwrap();
        std::fs::create_dir_all(dir.path().join("s")).unwrap();
        let roots = SecretRoots::new(dir.path(), dir.path(), &["m".into(), "s".into()]);
        (dir, roots)
    }

    fn read(written: &str, roots: &SecretRoots) -> Result<String, SecretError> {
        let file = SecretFile::confined(written, Path::new("m"), roots).expect("inside the roots");
        SecretRef::File(file).resolve(&|_| None).map(|s| s.expose().to_string())
    }

    #[test]
    fn a_confined_file_is_read_with_one_trailing_newline_removed() {
        let (dir, roots) = sandbox();
        std::fs::write(dir.path().join("m/pw"), "hunter2\r\n").unwrap();
        assert_eq!(read("pw", &roots), Ok("hunter2".into()));
        let file = SecretFile::confined("pw", Path::new("m"), &roots).unwrap();
        assert!(SecretRef::File(file).is_available(&|_| None));
        std::fs::write(dir.path().join("m/empty"), "\n").unwrap();
        assert_eq!(read("empty", &roots), Err(SecretError::FileEmpty { path: "empty".into() }));
        assert_eq!(
            read("missing", &roots),
            Err(SecretError::FileUnreadable {
                path: "missing".into(),
                reason: "no such file or directory".into()
            })
        );
    }

    #[cfg(unix)]
    #[test]
    fn links_fifos_directories_devices_and_big_files_are_refused_naming_the_path_as_written() {
        use std::os::unix::fs::symlink;
        let (dir, roots) = sandbox();
        let m = dir.path().join("m");
        std::fs::write(m.join("real"), "pw\n").unwrap();
        symlink("real", m.join("link")).unwrap();
        symlink("/etc", m.join("etc")).unwrap();
        assert!(std::process::Command::new("mkfifo").arg(m.join("fifo")).status().unwrap().success());
        std::fs::create_dir(m.join("dir")).unwrap();
        std::fs::File::create(m.join("big")).unwrap().set_len(MAX_FILE_BYTES + 1).unwrap();
        std::fs::write(m.join("max"), "x".repeat(usize::try_from(MAX_FILE_BYTES).unwrap())).unwrap();
        assert_eq!(read("link", &roots), Err(SecretError::FileIsLink { path: "link".into() }));
        assert_eq!(
            read("etc/hostname", &roots),
            Err(SecretError::FileLinkOutside { path: "etc/hostname".into() })
        );
        // Opened without a writer, and refused by its type: this returns at once.
        assert_eq!(
            read("fifo", &roots),
            Err(SecretError::FileNotRegular { path: "fifo".into(), what: "a FIFO" })
        );
        assert_eq!(
            read("dir", &roots),
            Err(SecretError::FileNotRegular { path: "dir".into(), what: "a directory" })
        );
        assert_eq!(
            read(".", &roots),
            Err(SecretError::FileNotRegular { path: ".".into(), what: "a directory" })
        );
        assert_eq!(read("big", &roots), Err(SecretError::FileTooLarge { path: "big".into() }));
        assert_eq!(read("max", &roots).map(|s| s.len()), Ok(usize::try_from(MAX_FILE_BYTES).unwrap()));
        for unavailable in ["link", "etc/hostname", "fifo", "dir", "big", "missing"] {
            let file = SecretFile::confined(unavailable, Path::new("m"), &roots).unwrap();
            assert!(!SecretRef::File(file).is_available(&|_| None), "{unavailable}");
        }
        // A device, were its directory a root.
        let dev = SecretRoots::new(Path::new("/"), Path::new("/"), &["/dev".into()]);
        let zero = SecretFile::confined("/dev/zero", Path::new("/"), &dev).unwrap();
        assert_eq!(
            SecretRef::File(zero).resolve(&|_| None),
            Err(SecretError::FileNotRegular { path: "/dev/zero".into(), what: "a character device" })
        );
    }

    #[cfg(unix)]
    #[test]
    fn an_operators_file_is_read_as_given_but_bounded() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("real"), "pw\n").unwrap();
        std::os::unix::fs::symlink("real", dir.path().join("link")).unwrap();
        let link = SecretRef::operator_file(dir.path().join("link"));
        assert_eq!(link.resolve(&|_| None).map(|s| s.expose().to_string()), Ok("pw".into()));
        let zero = SecretRef::operator_file("/dev/zero");
        assert_eq!(zero.resolve(&|_| None), Err(SecretError::FileTooLarge { path: "/dev/zero".into() }));
    }
}
