//! The project file, `ozform.yaml`: the installations one repository of manifests serves
//! (octoDNS-style), each with its API, its admin login, its token store and its manifests.
//!
//! A project file is read with the manifests' machinery and under their rules, since a pull
//! request may change it as well: found and read by `source` (a regular file, a link only to
//! where it lies, at most `MAX_PROJECT_BYTES`), parsed by `node` (located, duplicates kept, the
//! alias budget), read by `read::Reader` (unknown keys with did-you-mean, types, interpolation
//! of `OZ_VAR_` variables only), its problems collected and rendered by `problem` with the codes
//! `ozform::project::…`. What is its own:
//! - installation names are restricted (they become directories, file names of `--out DIR`
//!   and Kubernetes label values) and unique;
//! - every path (`manifests`, `ca_cert`, a `dir:` store, an `exec:` store's program) is relative
//!   to the project file and must stay inside its directory, lexically and through any link of
//!   the part of it that exists (the only disk access after the read: `stat` and `realpath`);
//!   `admin_password: {file: …}` may also lie in a `--secrets-dir`, and is read later without
//!   following a link, as a manifest's secret file is;
//! - the file names where each admin password comes from, and the URL it is sent to: so
//!   `admin_password: {env: NAME}` may name only variables starting with `OZ_` (not `OZ_VAR_`,
//!   whose values a manifest may print), never another secret of the job (`GITHUB_TOKEN`).
//!
//! Invariant: `load` returns a `Project` only when no problem was found; its installations in
//! the file's order, names unique.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::node::{Node, Pos, Value};
use super::problem::{Area, At, Kind, Problem, Problems, SourceFile};
use super::read::{Reader, is_email, scalar_text};
use super::secrets::Secrets;
use super::{Loaded, ManifestError, SECRET_VARIABLES, excerpt, parse_all, printable, source};
use crate::model::{ApiVersion, Location};
use crate::secret::{SecretFile, SecretRef, SecretRoots, checkout_root, normalize};
use crate::token_store::{Installation, StoreSpec};

/// The project file's name, looked for in the working directory.
pub const PROJECT_FILE: &str = "ozform.yaml";
/// The largest project file read (1 MiB): it names installations, not their objects.
pub const MAX_PROJECT_BYTES: u64 = 1 << 20;
/// The longest installation name of a project file: a Kubernetes label value's limit.
pub const MAX_NAME: usize = 63;
/// The token store of an installation that names none: a directory beside the project file.
pub const DEFAULT_TOKEN_DIR: &str = "ozform-tokens";

const PROJECT_FIELDS: &[&str] = &["installations"];
const INSTALLATION_FIELDS: &[&str] = &[
    "name",
    "api_url",
    "admin_email",
    "admin_password",
    "token_store",
    "manifests",
    "ca_cert",
    "api_version",
];
const PASSWORD_FIELDS: &[&str] = &["env", "file"];
/// The keys of a manifest document: a file holding them is a manifest, not a project file.
const MANIFEST_FIELDS: &[&str] = &["companies", "service_users"];

/// A project file, read and checked.
#[derive(Debug, Clone)]
pub struct Project {
    /// The file, as given or found.
    pub path: PathBuf,
    /// In the file's order; names unique.
    pub installations: Vec<InstallationSpec>,
}

impl Project {
    /// The installation named `name` (names are lower-case).
    pub fn installation(&self, name: &str) -> Option<&InstallationSpec> {
        self.installations.iter().find(|i| i.name == name)
    }

    /// The names, in the file's order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.installations.iter().map(|i| i.name.as_str())
    }
}

/// One installation of a project file. Paths are relative to the working directory (the
/// project file's directory joined to what the file wrote).
#[derive(Debug, Clone)]
pub struct InstallationSpec {
    /// Lower-case letters, digits, `-`, `_`, `.`; at most `MAX_NAME` characters.
    pub name: String,
    /// `https://` or `http://`, without a trailing `/`.
    pub api_url: String,
    pub admin_email: String,
    pub admin_password: SecretRef,
    /// `token_store`, or `dir:` `DEFAULT_TOKEN_DIR` beside the project file.
    pub token_store: StoreSpec,
    /// At least one.
    pub manifests: Vec<PathBuf>,
    pub ca_cert: Option<PathBuf>,
    /// `None`: detected from the API (`auto`).
    pub api_version: Option<ApiVersion>,
    /// Where its `name` is written.
    pub location: Location,
}

/// What reading a project file needs besides its path.
#[derive(Clone, Copy)]
pub struct ProjectOptions<'a> {
    /// Looks an environment variable up (only `OZ_VAR_` variables are ever looked up).
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// Where an `admin_password: {file: PATH}` may lie besides the project file's directory.
    pub secrets_dirs: &'a [PathBuf],
}

/// The project file a run uses: `config` (`--config`/`OZ_CONFIG`: a file, or a directory
/// holding `ozform.yaml`), else `ozform.yaml` in the working directory if there is one; and
/// whether it was given (a file found is a project file only if it reads as one).
pub fn find(config: Option<&Path>) -> Option<(PathBuf, bool)> {
    match config {
        Some(path) if path.is_dir() => Some((path.join(PROJECT_FILE), true)),
        Some(path) => Some((path.to_path_buf(), true)),
        None => {
            let found = PathBuf::from(PROJECT_FILE);
            fs::symlink_metadata(&found).is_ok().then_some((found, false))
        }
    }
}

/// Read the project file at `path`, or report every problem in it. A file found rather than
/// given (`given` false) that is a manifest (it has `companies` or `service_users` and no
/// `installations`) is no project file: `Ok(None)`, so that a manifest named `ozform.yaml`
/// works as it did before project files.
pub fn load(
    path: &Path,
    given: bool,
    options: &ProjectOptions<'_>,
) -> Result<Option<Project>, ManifestError> {
    let shown = printable::path(path);
    let fail = |problems: Problems, files: &[SourceFile]| {
        ManifestError::of(problems, files, Area::Project, Some(shown.clone()))
    };
    let mut problems = Problems::default();
    let files = source::discover(&[path.to_path_buf()], &mut problems, &|_| {});
    let [file] = files.as_slice() else {
        if problems.is_empty() {
            problems.push(Problem::unlocated(Kind::Unreadable {
                path: path.to_path_buf(),
                reason: "it is not a file".into(),
            }));
        }
        return Err(fail(problems, &[]));
    };
    let mut budget = MAX_PROJECT_BYTES;
    let text = match source::read(file, &mut budget) {
        Ok(source::Text::Utf8(text)) => text,
        Ok(source::Text::NotUtf8 { text, offset, byte }) => {
            let len = text[offset..].chars().next().map_or(0, char::len_utf8);
            let at = At { file: 0, pos: Pos { offset, len, line: 0, column: 0 } };
            problems.push(Problem::at(Kind::NotUtf8 { byte }, at, "not UTF-8"));
            return Err(fail(problems, &[source_file(path, text, Vec::new())]));
        }
        Err(Kind::TooLarge { .. } | Kind::TooLargeInTotal { .. }) => {
            problems.push(Problem::unlocated(Kind::ProjectTooLarge { path: path.to_path_buf() }));
            return Err(fail(problems, &[]));
        }
        Err(kind) => {
            problems.push(Problem::unlocated(kind));
            return Err(fail(problems, &[]));
        }
    };
    let loaded = [Loaded { path: Arc::new(path.to_path_buf()), text, parse: true }];
    let parsed = parse_all(&loaded).pop().flatten();
    let [Loaded { text, .. }] = loaded;
    let documents = match parsed {
        Some(Ok(documents)) => documents,
        Some(Err(super::node::ParseError::Syntax(err))) => {
            let at = At { file: 0, pos: err.pos };
            problems.push(Problem::at(Kind::YamlSyntax { message: err.message }, at, "here"));
            return Err(fail(problems, &[source_file(path, text, Vec::new())]));
        }
        Some(Err(super::node::ParseError::Budget { pos, exceeded })) => {
            let at = At { file: 0, pos };
            problems.push(Problem::at(
                Kind::AliasBudget { exceeded },
                at,
                "the limit is crossed expanding this",
            ));
            return Err(fail(problems, &[source_file(path, text, Vec::new())]));
        }
        None => return Err(fail(problems, &[source_file(path, text, Vec::new())])),
    };
    if !given && documents.first().is_some_and(is_manifest) {
        return Ok(None);
    }

    let tree = Tree::of(path);
    let mut allowed = vec![tree.shown.clone()];
    allowed.extend(options.secrets_dirs.iter().filter(|d| !d.as_os_str().is_empty()).cloned());
    let checkout = checkout_root(&tree.absolute).unwrap_or_else(|| tree.cwd.clone());
    let roots = SecretRoots::new(&tree.cwd, &checkout, &allowed);
    let secrets = Secrets::find(SECRET_VARIABLES, &[], options.env);
    let mut redact = Vec::new();
    let mut reader = Reader {
        file: 0,
        path: Arc::new(path.to_path_buf()),
        dir: &tree.shown,
        roots: &roots,
        env: options.env,
        secrets: &secrets,
        problems: &mut problems,
        redact: &mut redact,
    };
    let mut project = ProjectReader { reader: &mut reader, tree: &tree, given, path };
    let installations = project.documents(documents);
    if !problems.is_empty() {
        return Err(fail(problems, &[source_file(path, text, redact)]));
    }
    Ok(Some(Project { path: path.to_path_buf(), installations }))
}

/// The project file's text as its problems show it, literal passwords blanked.
fn source_file(path: &Path, text: String, redact: Vec<std::ops::Range<usize>>) -> SourceFile {
    SourceFile { name: printable::path(path), text: Arc::from(text), blanks: excerpt::Blanks::new(redact) }
}

/// Whether a document is a manifest's: a map with `companies` or `service_users` and no
/// `installations`.
fn is_manifest(document: &Node) -> bool {
    let Value::Map(entries) = &document.value else { return false };
    let key = |k: &Node| scalar_text(k);
    let keys: Vec<String> = entries.iter().map(|(k, _)| key(k)).collect();
    !keys.iter().any(|k| k == "installations") && keys.iter().any(|k| MANIFEST_FIELDS.contains(&k.as_str()))
}

/// The project file's directory: as written (paths the file names are joined to it), absolute
/// and lexically normal (for the lexical check), and its real place (for links).
struct Tree {
    cwd: PathBuf,
    /// Relative to the working directory unless the project file was given absolute; `.` for
    /// the working directory itself.
    shown: PathBuf,
    absolute: PathBuf,
    real: Option<PathBuf>,
}

impl Tree {
    fn of(path: &Path) -> Self {
        let cwd = std::env::current_dir().unwrap_or_default();
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let absolute = normalize(&cwd.join(parent));
        let real = fs::canonicalize(&absolute).ok();
        Self { cwd, shown: parent.to_path_buf(), absolute, real }
    }

    /// `written` joined to the project file's directory, as the run opens it: lexically
    /// normal, `.` for the directory itself, and never a bare name (which a program lookup
    /// would search in `PATH`).
    fn join(&self, written: &Path) -> PathBuf {
        let joined = normalize(&self.shown.join(written));
        if joined.as_os_str().is_empty() {
            PathBuf::from(".")
        } else if joined.is_relative() && joined.components().count() == 1 {
            Path::new(".").join(joined)
        } else {
            joined
        }
    }

    /// Whether `written` stays inside the directory: it is relative, lexically inside, and the
    /// part of it that exists resolves (links followed) inside the directory's real place.
    fn holds(&self, written: &Path) -> bool {
        if written.is_absolute() {
            return false;
        }
        let absolute = normalize(&self.absolute.join(written));
        if !absolute.starts_with(&self.absolute) {
            return false;
        }
        let Some(real_dir) = &self.real else { return true };
        for ancestor in absolute.ancestors() {
            if fs::symlink_metadata(ancestor).is_err() {
                continue;
            }
            // The deepest part that exists: it (and any link on the way to it) must resolve
            // inside; a link that resolves nowhere is refused.
            return fs::canonicalize(ancestor).is_ok_and(|real| real.starts_with(real_dir));
        }
        true
    }
}

/// Reads a project file's document with a manifest reader's checks.
struct ProjectReader<'r, 'a> {
    reader: &'r mut Reader<'a>,
    tree: &'r Tree,
    given: bool,
    path: &'r Path,
}

impl ProjectReader<'_, '_> {
    fn problem(&mut self, kind: Kind, pos: Pos, label: impl Into<String>) {
        self.reader.problem(kind, pos, label);
    }

    fn documents(&mut self, documents: Vec<Node>) -> Vec<InstallationSpec> {
        let mut documents = documents.into_iter();
        let Some(mut document) = documents.next() else {
            self.reader.problems.push(Problem::unlocated(Kind::NoInstallations));
            return Vec::new();
        };
        if let Some(extra) = documents.next() {
            self.problem(Kind::ProjectDocuments, extra.pos, "another document");
        }
        if self.given && is_manifest(&document) {
            let kind = Kind::ManifestNotProject { path: self.path.to_path_buf() };
            self.reader.problems.push(Problem::unlocated(kind));
            return Vec::new();
        }
        self.reader.interpolate_values(&mut document);
        if !matches!(document.value, Value::Map(_)) {
            let found = document.value.kind();
            self.problem(Kind::NotAProject { found }, document.pos, "expected a map here");
            return Vec::new();
        }
        let Some(fields) = self.reader.fields(&document, "a project file", PROJECT_FIELDS) else {
            return Vec::new();
        };
        let Some((_, list)) = fields.into_iter().find(|(k, _)| *k == "installations") else {
            self.problem(Kind::NotAProject { found: "no `installations`" }, document.pos, "here");
            return Vec::new();
        };
        let items = self.reader.list("installations", list).unwrap_or_default();
        if items.is_empty() {
            self.problem(Kind::NoInstallations, list.pos, "no installation");
            return Vec::new();
        }
        let mut installations: Vec<InstallationSpec> = Vec::with_capacity(items.len());
        let mut positions: Vec<Pos> = Vec::with_capacity(items.len());
        for item in items {
            let Some((installation, pos)) = self.installation(item) else { continue };
            if let Some(first) = installations.iter().position(|i| i.name == installation.name) {
                let problem = Problem::at(
                    Kind::DuplicateInstallation {
                        name: installation.name.clone(),
                        first: installations[first].location.clone(),
                    },
                    self.reader.at(pos),
                    "declared again here",
                )
                .also(self.reader.at(positions[first]), "first declared here");
                self.reader.problems.push(problem);
                continue;
            }
            installations.push(installation);
            positions.push(pos);
        }
        installations
    }

    /// One installation, and where its name is.
    fn installation(&mut self, item: &Node) -> Option<(InstallationSpec, Pos)> {
        let fields = self.reader.fields(item, "an installation", INSTALLATION_FIELDS)?;
        let get = |name: &str| fields.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        let name = self.reader.required_name("name", "installation", item, get("name"));
        let name = name.and_then(|(name, pos)| match check_name(&name) {
            Ok(()) => Some((name, pos)),
            Err(reason) => {
                self.problem(Kind::BadInstallationName { name, reason }, pos, "this name");
                None
            }
        });
        let api_url = self.reader.required_name("api_url", "installation", item, get("api_url"));
        let api_url = api_url.and_then(|(url, pos)| match check_url(&url) {
            Ok(url) => Some(url),
            Err(reason) => {
                self.problem(Kind::BadApiUrl { url, reason }, pos, "this URL");
                None
            }
        });
        let admin_email = self.reader.required_name("admin_email", "installation", item, get("admin_email"));
        let admin_email = admin_email.and_then(|(email, pos)| {
            if is_email(&email) {
                Some(email)
            } else {
                self.problem(Kind::MalformedEmail { email }, pos, "not an email address");
                None
            }
        });
        let admin_password = if let Some(node) = get("admin_password") {
            self.admin_password(node)
        } else {
            let kind = Kind::MissingField { field: "admin_password", within: "installation" };
            self.problem(kind, item.pos, "this installation has no `admin_password`");
            None
        };
        let token_store = match get("token_store") {
            Some(node) if node.value != Value::Null => self.token_store(node),
            _ => Some(StoreSpec::Dir(self.tree.join(Path::new(DEFAULT_TOKEN_DIR)))),
        };
        let manifests = self.manifests(item, get("manifests"));
        let ca_cert = get("ca_cert").and_then(|node| {
            let written = self.reader.string("ca_cert", node)?;
            self.path("ca_cert", &written, node.pos)
        });
        let (api_version, version_ok) = match get("api_version") {
            Some(node) => self.api_version(node),
            None => (None, true),
        };
        let ((name, pos), api_url, admin_email, admin_password, token_store, manifests) =
            (name?, api_url?, admin_email?, admin_password?, token_store?, manifests?);
        if !version_ok || get("ca_cert").is_some_and(|n| n.value != Value::Null) && ca_cert.is_none() {
            return None;
        }
        let location = self.reader.location(pos);
        Some((
            InstallationSpec {
                name,
                api_url,
                admin_email,
                admin_password,
                token_store,
                manifests,
                ca_cert,
                api_version,
                location,
            },
            pos,
        ))
    }

    /// `{env: OZ_…}` or `{file: PATH}` (inside the project file's directory or a
    /// `--secrets-dir`); never a literal password.
    fn admin_password(&mut self, node: &Node) -> Option<SecretRef> {
        match &node.value {
            Value::Map(_) => {}
            Value::Null | Value::Seq(_) => {
                let kind = Kind::WrongType {
                    field: "admin_password".into(),
                    expected: "`{env: NAME}` or `{file: PATH}`",
                    found: node.value.kind(),
                };
                self.problem(kind, node.pos, "expected a map here");
                return None;
            }
            _ => {
                self.reader.redact.push(node.pos.offset..node.pos.offset.saturating_add(node.pos.len));
                self.problem(Kind::LiteralAdminPassword, node.pos, "password written here (not shown)");
                return None;
            }
        }
        let fields = self.reader.fields(node, "`admin_password`", PASSWORD_FIELDS)?;
        let [(key, value)] = fields.as_slice() else {
            let reason = if fields.is_empty() { "it names no source" } else { "it names two sources" };
            let kind = Kind::BadSecret { reason: reason.into() };
            self.problem(kind, node.pos, "write exactly one of `env` or `file`");
            return None;
        };
        let text = self.reader.string(key, value);
        let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
            if matches!(value.value, Value::Null | Value::Str(_)) {
                let reason = format!("`{key}` has no value");
                self.problem(Kind::BadSecret { reason }, value.pos, "no value");
            }
            return None;
        };
        if *key == "env" {
            let allowed = text.starts_with("OZ_")
                && !text.starts_with(super::VARIABLE_PREFIX)
                && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !allowed {
                self.problem(Kind::AdminPasswordVariable { name: text }, value.pos, "this variable");
                return None;
            }
            return Some(SecretRef::Env(text));
        }
        let printable = text.chars().all(printable::is_printable);
        if let Some(file) =
            SecretFile::confined(&text, &self.tree.shown, self.reader.roots).filter(|_| printable)
        {
            return Some(SecretRef::File(file));
        }
        let kind = Kind::PathOutside { field: "admin_password", path: text };
        self.problem(kind, value.pos, "outside the project file's directory and every `--secrets-dir`");
        None
    }

    /// `dir:PATH` or `exec:PROGRAM ARGS…`, the path or program inside the project file's
    /// directory and joined to it.
    fn token_store(&mut self, node: &Node) -> Option<StoreSpec> {
        let written = self.reader.string("token_store", node)?;
        let spec = match StoreSpec::parse(&written) {
            Ok(spec) => spec,
            Err(e) => {
                self.problem(Kind::BadTokenStore { reason: e.to_string() }, node.pos, "this store");
                return None;
            }
        };
        match spec {
            StoreSpec::Dir(dir) => {
                let dir = dir.to_string_lossy().into_owned();
                Some(StoreSpec::Dir(self.path("token_store", &dir, node.pos)?))
            }
            StoreSpec::Exec(mut argv) => {
                let program = self.path("token_store", &argv[0], node.pos)?;
                argv[0] = program.to_string_lossy().into_owned();
                Some(StoreSpec::Exec(argv))
            }
        }
    }

    /// A list of at least one manifest path, each inside the project file's directory.
    fn manifests(&mut self, item: &Node, node: Option<&Node>) -> Option<Vec<PathBuf>> {
        let Some(node) = node.filter(|n| n.value != Value::Null) else {
            let kind = Kind::MissingField { field: "manifests", within: "installation" };
            self.problem(kind, item.pos, "this installation has no `manifests`");
            return None;
        };
        let items = self.reader.list("manifests", node)?;
        if items.is_empty() {
            let kind = Kind::MissingField { field: "manifests", within: "installation" };
            self.problem(kind, node.pos, "an empty list");
            return None;
        }
        let mut paths = Vec::with_capacity(items.len());
        let mut complete = true;
        for item in items {
            match self.reader.string("manifests", item).and_then(|w| self.path("manifests", &w, item.pos)) {
                Some(path) => paths.push(path),
                None => complete = false,
            }
        }
        complete.then_some(paths)
    }

    /// `5`, `6` or `auto` (`None`); and whether it could be read.
    fn api_version(&mut self, node: &Node) -> (Option<ApiVersion>, bool) {
        let version = match &node.value {
            Value::Null => return (None, true),
            Value::Int(5) | Value::UInt(5) => Some(ApiVersion::V5),
            Value::Int(6) | Value::UInt(6) => Some(ApiVersion::V6),
            Value::Str(s) if s == "5" => Some(ApiVersion::V5),
            Value::Str(s) if s == "6" => Some(ApiVersion::V6),
            Value::Str(s) if s == "auto" => return (None, true),
            other => {
                let kind = Kind::WrongType {
                    field: "api_version".into(),
                    expected: "`5`, `6` or `auto`",
                    found: other.kind(),
                };
                self.problem(kind, node.pos, "expected `5`, `6` or `auto` here");
                return (None, false);
            }
        };
        (version, true)
    }

    /// A path of `field` as written, joined to the project file's directory, if it stays
    /// inside it.
    fn path(&mut self, field: &'static str, written: &str, pos: Pos) -> Option<PathBuf> {
        if written.trim().is_empty() {
            let kind = Kind::WrongType { field: field.into(), expected: "a path", found: "an empty string" };
            self.problem(kind, pos, "empty");
            return None;
        }
        if !written.chars().all(printable::is_printable) {
            let kind = Kind::WrongType {
                field: field.into(),
                expected: "a path",
                found: "a control or formatting character",
            };
            self.problem(kind, pos, "in this path");
            return None;
        }
        if !self.tree.holds(Path::new(written)) {
            let kind = Kind::PathOutside { field, path: written.to_string() };
            self.problem(kind, pos, "outside the project file's directory");
            return None;
        }
        Some(self.tree.join(Path::new(written)))
    }
}

/// Why `name` cannot name an installation of a project file: besides what any installation
/// name must be (`Installation::check_name`), 1 to `MAX_NAME` lower-case letters, digits,
/// `-`, `_` and `.`, starting and ending with a letter or digit (a Kubernetes label value, a
/// file name of `--out DIR`, a directory of a `dir:` store, all without encoding).
pub fn check_name(name: &str) -> Result<(), String> {
    Installation::check_name(name)?;
    if name.chars().count() > MAX_NAME {
        return Err(format!("it is longer than {MAX_NAME} characters"));
    }
    if let Some(c) = name.chars().find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-' | '_' | '.')) {
        return Err(if c.is_uppercase() {
            "names are lower-case".to_string()
        } else {
            format!(
                "`{}` is not a letter `a`-`z`, a digit, `-`, `_` or `.`",
                printable::escape(&c.to_string())
            )
        });
    }
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edge(name.chars().next()) || !edge(name.chars().last()) {
        return Err("it must start and end with a letter or a digit".into());
    }
    Ok(())
}

/// `url` without a trailing `/`, if it can be an Oz API's base URL: `https://` or `http://`, a
/// host, no credentials, query or fragment. (The client parses it whole when it connects.)
fn check_url(url: &str) -> Result<String, &'static str> {
    let url = url.trim_end_matches('/');
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("it does not start with `https://` or `http://`")?;
    if rest.chars().any(|c| c.is_whitespace() || !printable::is_printable(c)) {
        return Err("it holds a space or a control character");
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err("it names no host");
    }
    if authority.contains('@') {
        return Err("it holds credentials (`user@`): the login is `admin_email` and `admin_password`");
    }
    if rest.contains('?') || rest.contains('#') {
        return Err("it has a query or a fragment");
    }
    Ok(url.to_string())
}

// ---------------------------------------------------------------------------------------------
// The JSON Schema (`ozform schema --project-file`, `schemas/ozform-project.schema.json`).

/// The first line of a project file: editors that speak the YAML language server validate and
/// complete it (for a project file at the root of a repository holding `schemas/`).
pub const SCHEMA_COMMENT: &str = "# yaml-language-server: $schema=schemas/ozform-project.schema.json";

/// An ozform project file: the installations one repository of manifests serves. String values
/// may interpolate `${OZ_VAR_NAME}` or `${OZ_VAR_NAME:-default}` (only variables named
/// `OZ_VAR_…`); `$${` is a literal `${`. Paths are relative to the project file and must stay
/// inside its directory.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "ozform project file")]
pub struct ProjectDoc {
    /// The installations, each planned and applied on its own; `--installation NAME` selects.
    #[schemars(length(min = 1))]
    pub installations: Vec<InstallationDoc>,
}

/// One Oz installation and the manifests it serves.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallationDoc {
    /// Its name: a directory of the token store, a file name of `--out DIR`, a label. 1 to 63
    /// lower-case letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit.
    #[schemars(pattern(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$"))]
    pub name: String,
    /// The base URL of its Oz API: `https://…`, or `http://` to this machine.
    #[schemars(pattern(r"^https?://[^/@?#\s]+"))]
    pub api_url: String,
    /// The ADMIN account ozform logs in as.
    pub admin_email: String,
    /// Where the admin password comes from, never the password itself.
    pub admin_password: AdminPasswordDoc,
    /// Where its tokens are kept: `dir:PATH` or `exec:PROGRAM ARGS…` (the program a path
    /// inside the project file's directory). Default `dir:ozform-tokens` beside the project
    /// file. A store shared by several installations keeps each one's tokens apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^(dir|exec):.+"))]
    pub token_store: Option<String>,
    /// Manifest files or directories (searched recursively for `*.yaml` / `*.yml`).
    #[schemars(length(min = 1))]
    pub manifests: Vec<String>,
    /// An extra CA certificate (PEM) to trust, for a private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
    /// The API's dialect: `5`, `6`, or `auto` (the default: detected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<ApiVersionDoc>,
}

/// `{env: NAME}` (a variable named `OZ_…`, not `OZ_VAR_…`) or `{file: PATH}` (inside the
/// project file's directory or a `--secrets-dir`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AdminPasswordDoc {
    /// An environment variable holding the password; its name starts with `OZ_` (not `OZ_VAR_`).
    Env(#[schemars(pattern(r"^OZ_[A-Za-z0-9_]+$"))] String),
    /// A file holding the password (one trailing newline removed), read without following a link.
    File(String),
}

/// `5`, `6` or `auto`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ApiVersionDoc {
    Number(#[schemars(range(min = 5, max = 6))] u8),
    Auto(#[schemars(regex(pattern = r"^(auto|5|6)$"))] String),
}

/// The project file JSON Schema (draft 2020-12), as `ozform schema --project-file` prints it.
pub fn schema() -> serde_json::Value {
    schemars::schema_for!(ProjectDoc).to_value()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "OZ_VAR_REGION" => Some("eu".into()),
            "OZ_UNSET" => None,
            _ => Some("canary-secret-value".into()),
        }
    }

    fn load_text(dir: &Path, text: &str) -> Result<Option<Project>, ManifestError> {
        let path = dir.join(PROJECT_FILE);
        fs::write(&path, text).unwrap();
        load(&path, true, &ProjectOptions { env: &env, secrets_dirs: &[] })
    }

    fn codes(result: Result<Option<Project>, ManifestError>) -> Vec<String> {
        let err = result.unwrap_err();
        err.problems.iter().map(|p| p.code().unwrap().to_string()).collect()
    }

    const ONE: &str = "installations:\n  - name: eu-prod\n    api_url: https://oz-${OZ_VAR_REGION}.example.com/\n    \
                       admin_email: ops@example.com\n    admin_password: {env: OZ_EU_ADMIN_PASSWORD}\n    \
                       manifests: [manifests/common, manifests/eu]\n";

    #[test]
    fn an_installation_reads_with_its_paths_joined_to_the_project_files_directory() {
        let dir = tempfile::tempdir().unwrap();
        let project = load_text(dir.path(), ONE).unwrap().unwrap();
        let [eu] = project.installations.as_slice() else { panic!("{project:?}") };
        assert_eq!(eu.name, "eu-prod");
        assert_eq!(eu.api_url, "https://oz-eu.example.com");
        assert_eq!(eu.admin_password, SecretRef::Env("OZ_EU_ADMIN_PASSWORD".into()));
        assert_eq!(eu.manifests, [dir.path().join("manifests/common"), dir.path().join("manifests/eu")]);
        assert_eq!(eu.token_store, StoreSpec::Dir(dir.path().join("ozform-tokens")));
        assert_eq!((eu.ca_cert.as_ref(), eu.api_version), (None, None));
        assert_eq!(eu.location.line, 2);
    }

    #[test]
    fn a_helper_store_runs_a_program_of_the_tree_and_never_one_found_in_path() {
        let dir = tempfile::tempdir().unwrap();
        let text = ONE.replace(
            "    manifests:",
            "    token_store: \"exec:helpers/vault --mount 'k v'\"\n    api_version: 5\n    ca_cert: certs/eu.pem\n    manifests:",
        );
        let eu = load_text(dir.path(), &text).unwrap().unwrap().installations.remove(0);
        let program = dir.path().join("helpers/vault").to_string_lossy().into_owned();
        assert_eq!(eu.token_store, StoreSpec::Exec(vec![program, "--mount".into(), "k v".into()]));
        assert_eq!(eu.api_version, Some(ApiVersion::V5));
        assert_eq!(eu.ca_cert, Some(dir.path().join("certs/eu.pem")));
        let tree = Tree { shown: PathBuf::new(), ..Tree::of(&dir.path().join(PROJECT_FILE)) };
        assert_eq!(tree.join(Path::new("store")), Path::new("./store"));
        assert_eq!(tree.join(Path::new(".")), Path::new("."));
    }

    /// An installation `a` with `extra` keys, and an `admin_password` unless `extra` has one.
    fn installation_with(extra: &str) -> String {
        let password = if extra.contains("admin_password") { "" } else { "  admin_password: {env: OZ_A}\n" };
        let manifests = if extra.contains("manifests") { "" } else { "  manifests: [m]\n" };
        format!(
            "installations:\n- name: a\n  api_url: https://a.example\n  admin_email: a@a.example\n{password}{manifests}  {extra}\n"
        )
    }

    #[test]
    fn paths_that_leave_the_directory_are_refused_lexically_and_through_links() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("etc")).unwrap();
        for extra in [
            "manifests: [../elsewhere]",
            "manifests: [/etc]",
            "manifests: [etc/ssl]",
            "manifests: [etc]",
            "token_store: \"dir:a/../../b\"",
            "token_store: \"exec:/bin/sh -c id\"",
            "ca_cert: etc/ssl/cert.pem",
            "admin_password: {file: /run/secrets/pw}",
            "admin_password: {file: ../pw}",
        ] {
            let text = installation_with(extra);
            assert_eq!(codes(load_text(dir.path(), &text)), ["ozform::project::path_outside"], "{extra}");
        }
        assert!(load_text(dir.path(), &installation_with("ca_cert: certs/ca.pem")).is_ok());
        let secrets = tempfile::tempdir().unwrap();
        let path = dir.path().join(PROJECT_FILE);
        let text = installation_with(&format!("admin_password: {{file: {}/pw}}", secrets.path().display()));
        fs::write(&path, text).unwrap();
        let secrets_dirs = [secrets.path().to_path_buf()];
        let project = load(&path, true, &ProjectOptions { env: &env, secrets_dirs: &secrets_dirs }).unwrap();
        assert!(matches!(project.unwrap().installations[0].admin_password, SecretRef::File(_)));
    }

    #[test]
    fn every_mistake_is_located_and_collected() {
        let dir = tempfile::tempdir().unwrap();
        let text = "installations:\n\
            - name: EU\n  api_url: ftp://x\n  admin_email: nope\n  admin_password: hunter2-canary\n  manifests: []\n  tokens_store: dir:t\n\
            - name: b\n  api_url: https://u:p@b.example\n  admin_email: a@b.example\n  admin_password: {env: GITHUB_TOKEN}\n  manifests: [m]\n  api_version: 7\n\
            - name: c\n  api_url: https://c.example\n  admin_email: a@c.example\n  admin_password: {env: OZ_VAR_PW}\n  manifests: [\"${HOME}\"]\n  token_store: vault:x\n";
        assert_eq!(
            codes(load_text(dir.path(), text)),
            [
                "ozform::project::bad_name",
                "ozform::project::bad_api_url",
                "ozform::project::malformed_email",
                "ozform::project::literal_password",
                "ozform::project::missing_field",
                "ozform::project::unknown_field",
                "ozform::project::bad_api_url",
                "ozform::project::admin_password_variable",
                "ozform::project::wrong_type",
                "ozform::project::admin_password_variable",
                "ozform::project::undeclared_variable",
                "ozform::project::bad_token_store",
            ]
        );
        let err = load_text(dir.path(), text).unwrap_err();
        let shown = format!("{:?}", miette::Report::new(err));
        assert!(!shown.contains("hunter2") && !shown.contains("canary"), "{shown}");
        assert!(shown.contains("did you mean `token_store`?"), "{shown}");
    }

    #[test]
    fn two_installations_of_one_name_point_at_both() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("{ONE}{}", ONE.trim_start_matches("installations:\n"));
        assert_eq!(codes(load_text(dir.path(), &text)), ["ozform::project::duplicate_installation"]);
    }

    #[test]
    fn a_manifest_found_as_ozform_yaml_is_no_project_file_but_one_given_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(PROJECT_FILE);
        fs::write(&path, "companies: [{name: A}]\n").unwrap();
        let options = ProjectOptions { env: &env, secrets_dirs: &[] };
        assert!(load(&path, false, &options).unwrap().is_none());
        assert_eq!(codes(load(&path, true, &options)), ["ozform::project::manifest_not_project"]);
        assert_eq!(codes(load_text(dir.path(), "")), ["ozform::project::no_installations"]);
        assert_eq!(
            codes(load_text(dir.path(), "installations: []\n")),
            ["ozform::project::no_installations"]
        );
        assert_eq!(codes(load_text(dir.path(), &format!("{ONE}---\n{ONE}"))), ["ozform::project::documents"]);
        assert_eq!(codes(load_text(dir.path(), "- a\n")), ["ozform::project::not_a_project"]);
    }

    #[test]
    fn names_are_what_a_directory_a_file_and_a_label_can_all_hold() {
        for good in ["eu-prod", "a", "eu_prod.2", &"a".repeat(63)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "EU", "-a", "a-", "a/b", "a b", "é", &"a".repeat(64), "a\u{202e}b", ".."] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_schema_describes_every_key_the_reader_takes() {
        let schema = schema();
        let properties = schema["$defs"]["InstallationDoc"]["properties"].as_object().unwrap();
        let mut keys: Vec<&str> = properties.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut fields = INSTALLATION_FIELDS.to_vec();
        fields.sort_unstable();
        assert_eq!(keys, fields);
    }
}
