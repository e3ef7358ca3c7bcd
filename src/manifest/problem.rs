//! One problem found in the manifests: its kind (code, message, help) side by side with where
//! it is, and its rendering into a miette diagnostic with a labelled source span.
//!
//! Problems are collected first and rendered last, so that every diagnostic of a file can be
//! shown with the same (redacted) source text: a literal password is replaced by `*` in every
//! snippet, never printed. Collecting keeps the first `MAX_PROBLEMS` by place and only counts
//! the rest, so a flood of problems costs time and memory in proportion to its size; rendering
//! shows each through a bounded, escaped `Excerpt`, and every value a message quotes is
//! escaped and clipped (`printable`). Pure; no I/O.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use miette::{Diagnostic, LabeledSpan, Severity, SourceCode};

use super::MAX_PROBLEMS;
use super::excerpt::{Blanks, Excerpt, Mark, Spots};
use super::node::{Exceeded, Pos};
use super::printable;
use crate::model::Location;

/// What is wrong. Each kind has a stable code `ozform::manifest::<kind>`, a message and a help.
///
/// Values taken from a manifest (names, keys, paths) are escaped and clipped where a message
/// or help quotes them, never before: the checks see them as written.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Unreadable {
        path: PathBuf,
        reason: String,
    },
    NoManifests {
        path: PathBuf,
    },
    /// A path named on the command line is neither a regular file nor a directory.
    NotAFile {
        path: PathBuf,
        what: &'static str,
    },
    /// A symbolic link whose target is outside every path given (the target is never named).
    LinkOutside {
        link: PathBuf,
    },
    /// A symbolic link that does not resolve (dangling, a loop, or not permitted).
    BrokenLink {
        link: PathBuf,
    },
    TooLarge {
        path: PathBuf,
    },
    TooLargeInTotal {
        path: PathBuf,
    },
    NotUtf8 {
        byte: u8,
    },
    YamlSyntax {
        message: String,
    },
    NotAMap {
        found: &'static str,
    },
    UnknownField {
        field: String,
        within: &'static str,
        suggestion: Option<&'static str>,
        expected: &'static [&'static str],
    },
    DuplicateKey {
        key: String,
    },
    MissingField {
        field: &'static str,
        within: &'static str,
    },
    WrongType {
        field: String,
        expected: &'static str,
        found: &'static str,
    },
    AmbiguousBoolean {
        field: String,
        value: String,
    },
    LiteralPassword,
    BadSecret {
        reason: String,
    },
    EmptyName {
        field: &'static str,
    },
    /// A `source_id` that cannot be an id (`model::is_source_id`): a control character, or
    /// too long.
    BadSourceId,
    MalformedEmail {
        email: String,
    },
    DuplicateCompany {
        name: String,
        first: Location,
    },
    DuplicateEmail {
        email: String,
        first: Location,
    },
    UndeclaredCompany {
        company: String,
        /// Every declared company, for the did-you-mean (computed only for problems shown).
        declared: Arc<[String]>,
    },
    MissingVariable {
        name: String,
    },
    BadInterpolation {
        reason: String,
    },
    /// A value interpolates a variable whose name does not start with `OZ_VAR_`.
    UndeclaredVariable {
        name: String,
    },
    /// A `{file: PATH}` that lies outside the manifest paths and every `--secrets-dir` (as
    /// written: the disk is not looked at).
    SecretOutside {
        path: String,
    },
    /// A file given as a manifest is a saved plan (JSON with `format_version` and `changes`).
    SavedPlan {
        path: PathBuf,
    },
    /// What aliases and merge keys add to all documents together crossed a limit here.
    AliasBudget {
        exceeded: Exceeded,
    },
    /// A value interpolates a variable that holds a secret.
    SecretInterpolation {
        name: String,
        /// Where the variable is a service user's password source; `None` for a secret ozform
        /// itself was given (the admin password).
        password_of: Option<Location>,
    },
    /// A project file that is not a map (or whose map has no `installations`).
    NotAProject {
        found: &'static str,
    },
    /// The file given as the project file (`--config`) is a manifest.
    ManifestNotProject {
        path: PathBuf,
    },
    /// A project file of more than one YAML document.
    ProjectDocuments,
    /// A project file that names no installation.
    NoInstallations,
    /// The project file is larger than `project::MAX_PROJECT_BYTES`.
    ProjectTooLarge {
        path: PathBuf,
    },
    /// An installation name that cannot name a directory, a file and a label.
    BadInstallationName {
        name: String,
        reason: String,
    },
    /// Two installations of one name.
    DuplicateInstallation {
        name: String,
        first: Location,
    },
    /// An `api_url` that is not an `https://` or `http://` base URL.
    BadApiUrl {
        url: String,
        reason: &'static str,
    },
    /// An admin password written in the project file itself.
    LiteralAdminPassword,
    /// `admin_password: {env: NAME}` with a `NAME` an admin password may not come from.
    AdminPasswordVariable {
        name: String,
    },
    /// A path of the project file (`field`) that leads outside its directory (lexically, or
    /// through a symbolic link), or for `admin_password`, outside it and every `--secrets-dir`.
    PathOutside {
        field: &'static str,
        path: String,
    },
    /// A `token_store` that names no token store.
    BadTokenStore {
        reason: String,
    },
}

/// What the problems are about: the manifests, or a project file. The same check has the same
/// kind in both; its code names the area (`ozform::manifest::unknown_field`,
/// `ozform::project::unknown_field`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    Manifests,
    Project,
}

impl Area {
    /// The code of `kind` in this area.
    pub fn code(self, kind: &Kind) -> Cow<'static, str> {
        let code = kind.code();
        match (self, code.strip_prefix("ozform::manifest::")) {
            (Area::Project, Some(name)) => Cow::Owned(format!("ozform::project::{name}")),
            _ => Cow::Borrowed(code),
        }
    }
}

/// A location as a message names it, with its path escaped.
fn at(location: &Location) -> String {
    format!("{}:{}:{}", printable::path(&location.file), location.line, location.column)
}

impl Kind {
    pub fn code(&self) -> &'static str {
        match self {
            Kind::Unreadable { .. } => "ozform::manifest::unreadable",
            Kind::NoManifests { .. } => "ozform::manifest::no_manifests",
            Kind::NotAFile { .. } => "ozform::manifest::not_a_file",
            Kind::LinkOutside { .. } => "ozform::manifest::link_outside",
            Kind::BrokenLink { .. } => "ozform::manifest::broken_link",
            Kind::TooLarge { .. } => "ozform::manifest::too_large",
            Kind::TooLargeInTotal { .. } => "ozform::manifest::too_large_in_total",
            Kind::NotUtf8 { .. } => "ozform::manifest::not_utf8",
            Kind::YamlSyntax { .. } => "ozform::manifest::yaml_syntax",
            Kind::NotAMap { .. } => "ozform::manifest::not_a_map",
            Kind::UnknownField { .. } => "ozform::manifest::unknown_field",
            Kind::DuplicateKey { .. } => "ozform::manifest::duplicate_key",
            Kind::MissingField { .. } => "ozform::manifest::missing_field",
            Kind::WrongType { .. } => "ozform::manifest::wrong_type",
            Kind::AmbiguousBoolean { .. } => "ozform::manifest::ambiguous_boolean",
            Kind::LiteralPassword => "ozform::manifest::literal_password",
            Kind::BadSecret { .. } => "ozform::manifest::bad_secret",
            Kind::EmptyName { .. } => "ozform::manifest::empty_name",
            Kind::BadSourceId => "ozform::manifest::bad_source_id",
            Kind::MalformedEmail { .. } => "ozform::manifest::malformed_email",
            Kind::DuplicateCompany { .. } => "ozform::manifest::duplicate_company",
            Kind::DuplicateEmail { .. } => "ozform::manifest::duplicate_email",
            Kind::UndeclaredCompany { .. } => "ozform::manifest::undeclared_company",
            Kind::MissingVariable { .. } => "ozform::manifest::missing_variable",
            Kind::BadInterpolation { .. } => "ozform::manifest::bad_interpolation",
            Kind::SecretInterpolation { .. } => "ozform::manifest::secret_interpolation",
            Kind::UndeclaredVariable { .. } => "ozform::manifest::undeclared_variable",
            Kind::SecretOutside { .. } => "ozform::manifest::secret_outside",
            Kind::SavedPlan { .. } => "ozform::manifest::saved_plan",
            Kind::AliasBudget { .. } => "ozform::manifest::alias_budget",
            Kind::NotAProject { .. } => "ozform::project::not_a_project",
            Kind::ManifestNotProject { .. } => "ozform::project::manifest_not_project",
            Kind::ProjectDocuments => "ozform::project::documents",
            Kind::NoInstallations => "ozform::project::no_installations",
            Kind::ProjectTooLarge { .. } => "ozform::project::too_large",
            Kind::BadInstallationName { .. } => "ozform::project::bad_name",
            Kind::DuplicateInstallation { .. } => "ozform::project::duplicate_installation",
            Kind::BadApiUrl { .. } => "ozform::project::bad_api_url",
            Kind::LiteralAdminPassword => "ozform::project::literal_password",
            Kind::AdminPasswordVariable { .. } => "ozform::project::admin_password_variable",
            Kind::PathOutside { .. } => "ozform::project::path_outside",
            Kind::BadTokenStore { .. } => "ozform::project::bad_token_store",
        }
    }

    pub fn message(&self) -> String {
        use printable::{path as p, value as v};
        match self {
            Kind::Unreadable { path, reason } => format!("cannot read `{}`: {reason}", p(path)),
            Kind::NoManifests { path } => {
                format!("directory `{}` holds no `*.yaml` or `*.yml` file", p(path))
            }
            Kind::NotAFile { path, what } => {
                format!("`{}` is not a regular file or directory: it is {what}", p(path))
            }
            Kind::LinkOutside { link } => {
                format!("`{}` is a symbolic link to a place outside the paths given", p(link))
            }
            Kind::BrokenLink { link } => format!("`{}` is a symbolic link that does not resolve", p(link)),
            Kind::TooLarge { path } => format!(
                "`{}` is larger than {} MiB, the limit for one manifest file",
                p(path),
                super::MAX_FILE_BYTES >> 20
            ),
            Kind::TooLargeInTotal { path } => format!(
                "the manifests up to `{}` are larger than {} MiB, the limit for all manifests together",
                p(path),
                super::MAX_TOTAL_BYTES >> 20
            ),
            Kind::NotUtf8 { byte } => {
                format!("the file is not UTF-8 text: byte `0x{byte:02x}` is not valid here")
            }
            Kind::YamlSyntax { message } => format!("invalid YAML: {}", printable::clip(message, 200)),
            Kind::NotAMap { found } => format!("a manifest document must be a map, found {found}"),
            Kind::UnknownField { field, within, .. } => format!("unknown field `{}` in {within}", v(field)),
            Kind::DuplicateKey { key } => format!("`{}` is written twice in the same map", v(key)),
            Kind::MissingField { field, within } => format!("{within} has no `{field}`"),
            Kind::WrongType { field, expected, found } => {
                format!("`{}` must be {expected}, found {found}", v(field))
            }
            Kind::AmbiguousBoolean { field, value } => {
                format!("`{}` is not a boolean (in `{}`)", v(value), v(field))
            }
            Kind::LiteralPassword => "a password is written literally in the manifest".to_string(),
            Kind::BadSecret { reason } => format!("invalid `password`: {reason}"),
            Kind::EmptyName { field } => format!("`{field}` is empty"),
            Kind::BadSourceId => format!(
                "`source_id` is not an id: it holds a control character or is over {} bytes",
                crate::model::MAX_SOURCE_ID_BYTES
            ),
            Kind::MalformedEmail { email } => format!("`{}` is not an email address", v(email)),
            Kind::DuplicateCompany { name, .. } => format!("company `{}` is declared twice", v(name)),
            Kind::DuplicateEmail { email, .. } => format!(
                "service user `{}` is declared twice (emails are compared case-insensitively)",
                v(email)
            ),
            Kind::UndeclaredCompany { company, .. } => format!("company `{}` is not declared", v(company)),
            Kind::MissingVariable { name } => format!("environment variable `{}` is not set", v(name)),
            Kind::BadInterpolation { reason } => format!("invalid interpolation: {reason}"),
            Kind::SecretInterpolation { name, .. } => {
                format!("`{}` holds a secret: a manifest value must not interpolate it", v(name))
            }
            Kind::UndeclaredVariable { name } => format!(
                "`{}` is not an ozform variable: a manifest may interpolate only variables named `{}…`",
                v(name),
                super::VARIABLE_PREFIX
            ),
            Kind::SecretOutside { path } => {
                format!(
                    "secret file `{}` lies outside the manifest paths given and every `--secrets-dir`",
                    v(path)
                )
            }
            Kind::SavedPlan { path } => {
                format!("`{}` is a saved plan: run `ozform apply --plan {}`", p(path), shell_word(path))
            }
            Kind::AliasBudget { exceeded } => format!(
                "aliases and merge keys expand the manifests by more than {}, counted over all files and documents \
                 together: this document crosses the limit",
                limit(*exceeded)
            ),
            Kind::NotAProject { found } => {
                format!("a project file must be a map with `installations:`, found {found}")
            }
            Kind::ManifestNotProject { path } => {
                format!("`{}` is a manifest, not a project file", p(path))
            }
            Kind::ProjectDocuments => "a project file is one YAML document, and this is another".into(),
            Kind::NoInstallations => "the project file names no installation".into(),
            Kind::ProjectTooLarge { path } => format!(
                "`{}` is larger than {} KiB, the limit for a project file",
                p(path),
                super::project::MAX_PROJECT_BYTES >> 10
            ),
            Kind::BadInstallationName { name, reason } => {
                format!("`{}` cannot name an installation: {reason}", v(name))
            }
            Kind::DuplicateInstallation { name, .. } => {
                format!("installation `{}` is declared twice", v(name))
            }
            Kind::BadApiUrl { url, reason } => format!("`{}` is not an Oz API URL: {reason}", v(url)),
            Kind::LiteralAdminPassword => {
                "the admin password is written literally in the project file".into()
            }
            Kind::AdminPasswordVariable { name } => {
                format!(
                    "`{}` cannot hold an admin password: its name must start with `OZ_`, and not with `OZ_VAR_`",
                    v(name)
                )
            }
            Kind::PathOutside { field, path } => {
                format!("`{field}` path `{}` leads outside the project file's directory", v(path))
            }
            Kind::BadTokenStore { reason } => format!("invalid `token_store`: {reason}"),
        }
    }

    pub fn help(&self) -> String {
        use printable::value as v;
        match self {
            Kind::Unreadable { .. } => "give existing manifest files or directories".into(),
            Kind::NoManifests { .. } => "put manifests in files named `*.yaml` or `*.yml`, or name the files directly".into(),
            Kind::NotAFile { .. } => "name manifest files or directories: ozform reads regular files only".into(),
            Kind::LinkOutside { .. } => "a symbolic link is followed only when its target lies inside a path given on \
                 the command line (as Git keeps links inside the work tree): replace the link by the file it \
                 points to, or name the directory holding its target as well"
                .into(),
            Kind::BrokenLink { .. } => "remove the link, or make it point to a manifest inside the paths given".into(),
            Kind::TooLarge { .. } => format!(
                "split the manifests into files of at most {} MiB each",
                super::MAX_FILE_BYTES >> 20
            ),
            Kind::TooLargeInTotal { .. } => "give fewer or smaller manifests: the limit keeps a pull request \
                 from exhausting memory"
                .into(),
            Kind::NotUtf8 { .. } => "save the file as UTF-8: manifests are UTF-8 YAML".into(),
            Kind::YamlSyntax { .. } => "fix the YAML here: check indentation, quotes and brackets".into(),
            Kind::NotAMap { .. } => "start the document with `companies:` and/or `service_users:`".into(),
            Kind::UnknownField { suggestion: Some(s), .. } => format!("did you mean `{s}`?"),
            Kind::UnknownField { expected, .. } => format!("expected one of {}", backticked(expected)),
            Kind::DuplicateKey { key } => {
                format!("keep one `{}`: YAML keys must be unique within a map", v(key))
            }
            Kind::MissingField { field, .. } => format!("add `{field}: …`"),
            Kind::WrongType { field, expected, .. } if *expected == "a string" => {
                format!("write a string; quote values that look like numbers or booleans: `{}: \"…\"`", v(field))
            }
            Kind::WrongType { field, expected, .. } => format!("write `{}` as {expected}", v(field)),
            Kind::AmbiguousBoolean { field, .. } => {
                let field = v(field);
                format!(
                    "write `{field}: true` or `{field}: false` (YAML 1.1 reads yes/no/on/off as booleans, YAML 1.2 as strings)"
                )
            }
            Kind::LiteralPassword => "manifests live in Git, where a password is readable by everyone with access, \
                 forever: write `password: {env: NAME}` or `password: {file: PATH}` and provide the secret when applying, \
                 or `password: {generate: true}` to have ozform make one and keep it with the user's token"
                .into(),
            Kind::BadSecret { .. } => {
                "write `password: {env: NAME}`, `password: {file: PATH}` or `password: {generate: true}`".into()
            }
            Kind::EmptyName { field: "source_id" } => {
                "write the id the object had where it was exported from, or leave `source_id` out".into()
            }
            Kind::EmptyName { field } => format!("write a name, or leave `{field}` out to leave it as it is"),
            Kind::BadSourceId => {
                "write the id the object had where it was exported from, on one line, or leave `source_id` out".into()
            }
            Kind::MalformedEmail { .. } => "write an address like `svc-web@acme.example`".into(),
            Kind::DuplicateCompany { first, .. } => {
                format!("declare each company once; the first declaration is at {}", at(first))
            }
            Kind::DuplicateEmail { first, .. } => {
                format!("declare each service user once; the first declaration is at {}", at(first))
            }
            Kind::UndeclaredCompany { company, declared } => {
                match super::suggest::closest(company, declared.iter().map(String::as_str)) {
                    Some(s) => format!("did you mean `{}`?", v(s)),
                    None => format!(
                        "declare it under `companies:` (`- name: {}`); declaring a company that exists adopts it",
                        v(company)
                    ),
                }
            }
            Kind::MissingVariable { name } => {
                let name = v(name);
                format!("export `{name}`, or give a default: `${{{name}:-value}}` (write `$${{` for a literal `${{`)")
            }
            Kind::BadInterpolation { .. } => {
                "write `${OZ_VAR_NAME}` or `${OZ_VAR_NAME:-default}`, or `$${` for a literal `${`".into()
            }
            Kind::SecretInterpolation { name, password_of } => {
                let name = v(name);
                let holds = match password_of {
                    Some(location) => {
                        format!("`{name}` is a service user's password (`{{env: {name}}}` at {})", at(location))
                    }
                    None => format!("`{name}` holds a secret given to ozform"),
                };
                format!("{holds}; values are shown in plans, logs and errors: remove `${{{name}}}` from this value")
            }
            Kind::UndeclaredVariable { name } => {
                let name = v(name);
                let prefix = super::VARIABLE_PREFIX;
                format!(
                    "export the value as `{prefix}{name}` and write `${{{prefix}{name}}}` (or `$${{` for a literal `${{`); \
                     other variables are never read, so that manifests from a pull request cannot print the secrets \
                     of the job that plans them"
                )
            }
            Kind::SecretOutside { .. } => "put the file inside the manifests' directory, or in a directory given with \
                 `--secrets-dir DIR` (or `OZ_SECRETS_DIR`); a relative path is relative to the manifest that names it. \
                 ozform does not look at a path outside those, so that a manifest cannot probe the machine it is \
                 planned on"
                .into(),
            Kind::SavedPlan { .. } => "`validate`, `plan` and `apply PATHS…` read manifests (YAML); a saved plan is \
                 executed exactly with `ozform apply --plan FILE`"
                .into(),
            Kind::AliasBudget { .. } => "write the values out, or use fewer aliases (`*name`) and merge keys (`<<`): \
                 the limit keeps manifests from exhausting the memory of the job that loads them"
                .into(),
            Kind::NotAProject { .. } => "start the file with `installations:` and a list of installations \
                 (see docs/installations.md)"
                .into(),
            Kind::ManifestNotProject { .. } => "a project file names installations (`installations:`); give manifests \
                 as PATHS, or name them in the project file's `manifests:`"
                .into(),
            Kind::ProjectDocuments => "remove the `---` and what follows it: every installation goes in the one \
                 `installations:` list"
                .into(),
            Kind::NoInstallations => "list the installations under `installations:`, each with `name`, `api_url`, \
                 `admin_email`, `admin_password` and `manifests` (see docs/installations.md)"
                .into(),
            Kind::ProjectTooLarge { .. } => "a project file names installations, not their objects: keep companies \
                 and users in the manifests it names"
                .into(),
            Kind::BadInstallationName { .. } => "write 1 to 63 lower-case letters, digits, `-`, `_` or `.`, starting \
                 and ending with a letter or digit (e.g. `eu-prod`): the name becomes a directory, a file and a \
                 Kubernetes label value"
                .into(),
            Kind::DuplicateInstallation { first, .. } => {
                format!("name each installation once; the first is at {}", at(first))
            }
            Kind::BadApiUrl { .. } => "write the base URL of the API, e.g. `https://oz.example.com`".into(),
            Kind::LiteralAdminPassword => "the project file lives in Git, where a password is readable by everyone \
                 with access, forever: write `admin_password: {env: OZ_…}` or `admin_password: {file: PATH}`"
                .into(),
            Kind::AdminPasswordVariable { .. } => "name a variable such as `OZ_EU_ADMIN_PASSWORD`: the project \
                 file decides where the admin password is sent, so it may not name other variables of the job \
                 (`GITHUB_TOKEN`, cloud keys); `OZ_VAR_` variables are values a manifest may print"
                .into(),
            Kind::PathOutside { field: "admin_password", .. } => "put the file inside the project file's directory, \
                 or in a directory given with `--secrets-dir DIR` (or `OZ_SECRETS_DIR`); a relative path is \
                 relative to the project file"
                .into(),
            Kind::PathOutside { .. } => "write a path relative to the project file, inside its directory: ozform \
                 does not reach outside it, so that a project file cannot point a run at the machine it runs on"
                .into(),
            Kind::BadTokenStore { .. } => "write `token_store: dir:PATH` or `token_store: \"exec:PROGRAM ARGS…\"`, \
                 the program a path inside the project file's directory (see docs/token-stores.md)"
                .into(),
        }
    }
}

/// The limit an `AliasBudget` problem names.
fn limit(exceeded: Exceeded) -> String {
    match exceeded {
        Exceeded::Nodes => format!("{} nodes", super::MAX_ALIAS_NODES),
        Exceeded::Bytes => format!("{} MiB of text", super::MAX_ALIAS_BYTES >> 20),
    }
}

/// `path` escaped, and quoted for a POSIX shell when it needs to be, for a command to copy.
fn shell_word(path: &std::path::Path) -> String {
    let shown = printable::path(path);
    shlex::try_quote(&shown).map_or_else(|_| shown.clone(), std::borrow::Cow::into_owned)
}

fn backticked(words: &[&str]) -> String {
    words.iter().map(|w| format!("`{w}`")).collect::<Vec<_>>().join(", ")
}

/// A place in a loaded file: index into the loader's file table, and the node's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct At {
    pub file: usize,
    pub pos: Pos,
}

/// A problem, where it is, and (for duplicates) the other place involved.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub kind: Kind,
    /// `None` for problems without a source (a path that cannot be read).
    pub at: Option<At>,
    pub label: String,
    pub other: Option<(At, String)>,
}

impl Problem {
    pub fn at(kind: Kind, at: At, label: impl Into<String>) -> Self {
        Self { kind, at: Some(at), label: label.into(), other: None }
    }
    pub fn unlocated(kind: Kind) -> Self {
        Self { kind, at: None, label: String::new(), other: None }
    }
    pub fn also(mut self, at: At, label: impl Into<String>) -> Self {
        self.other = Some((at, label.into()));
        self
    }

    /// Render with the files' texts, indexed as in `At::file`, and the spots of every place
    /// in them that a problem points at.
    fn into_report(self, files: &[SourceFile], spots: &[Spots], area: Area) -> miette::Report {
        let code = area.code(&self.kind);
        let mut diag = Diag {
            code: code.clone(),
            message: self.kind.message(),
            help: Some(self.kind.help()),
            severity: Severity::Error,
            source: None,
            labels: Vec::new(),
            related: Vec::new(),
        };
        if let Some(at) = self.at {
            let mut marks = vec![mark(&self.label, at.pos, true)];
            let mut elsewhere = None;
            match self.other {
                Some((other, text)) if other.file == at.file => marks.push(mark(&text, other.pos, false)),
                other => elsewhere = other,
            }
            (diag.source, diag.labels) = excerpt(files, spots, at.file, &marks);
            if let Some((other, text)) = elsewhere {
                let (source, labels) = excerpt(files, spots, other.file, &[mark(&text, other.pos, true)]);
                diag.related.push(Diag {
                    code,
                    message: text,
                    help: None,
                    severity: Severity::Advice,
                    source,
                    labels,
                    related: Vec::new(),
                });
            }
        }
        miette::Report::new(diag)
    }
}

fn mark(text: &str, pos: Pos, primary: bool) -> Mark {
    let text = (!text.is_empty()).then(|| printable::clip(text, MAX_LINE));
    Mark { offset: pos.offset, len: pos.len, text, primary }
}

fn excerpt(
    files: &[SourceFile],
    spots: &[Spots],
    file: usize,
    marks: &[Mark],
) -> (Option<Excerpt>, Vec<LabeledSpan>) {
    match (files.get(file), spots.get(file)) {
        (Some(source), Some(spots)) => {
            let (excerpt, labels) =
                Excerpt::new(source.name.clone(), &source.text, &source.blanks, spots, marks);
            (Some(excerpt), labels)
        }
        _ => (None, Vec::new()),
    }
}

/// The most characters of a message, label or help line: a last guard (values in them are
/// already clipped).
const MAX_LINE: usize = 1_000;

/// A loaded file as problems show it.
#[derive(Debug)]
pub struct SourceFile {
    /// The path as diagnostics name it (escaped).
    pub name: String,
    pub text: Arc<str>,
    /// Literal passwords, never shown.
    pub blanks: Blanks,
}

/// Problems as they are found. The first `MAX_PROBLEMS` by place are kept; the others are
/// only counted, so that a flood of problems costs memory for `MAX_PROBLEMS` and time in
/// proportion to its size.
#[derive(Debug, Default)]
pub struct Problems {
    kept: BinaryHeap<Ranked>,
    total: usize,
}

/// A problem ranked by place, then by the order it was found in.
#[derive(Debug)]
struct Ranked {
    key: (Option<At>, usize),
    problem: Problem,
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key.cmp(&other.key)
    }
}

impl Problems {
    pub fn push(&mut self, problem: Problem) {
        let key = (problem.at, self.total);
        self.total += 1;
        if self.kept.len() < MAX_PROBLEMS {
            self.kept.push(Ranked { key, problem });
        } else if self.kept.peek().is_some_and(|last| key < last.key) {
            self.kept.pop();
            self.kept.push(Ranked { key, problem });
        }
    }

    /// How many problems were found, kept or not.
    pub fn total(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The kept problems in order of place (then of finding), as reports, their codes those of
    /// `area`.
    pub fn render(self, files: &[SourceFile], area: Area) -> Vec<miette::Report> {
        let problems: Vec<Problem> = self.kept.into_sorted_vec().into_iter().map(|r| r.problem).collect();
        let mut offsets: Vec<Vec<usize>> = vec![Vec::new(); files.len()];
        for problem in &problems {
            let places = problem.at.iter().chain(problem.other.as_ref().map(|(at, _)| at));
            for at in places {
                if let Some(offsets) = offsets.get_mut(at.file) {
                    offsets.push(at.pos.offset);
                }
            }
        }
        let spots: Vec<Spots> =
            files.iter().zip(offsets).map(|(file, offsets)| Spots::locate(&file.text, offsets)).collect();
        problems.into_iter().map(|p| p.into_report(files, &spots, area)).collect()
    }

    /// The kinds kept, in order (for tests).
    #[cfg(test)]
    pub fn kinds(&self) -> Vec<Kind> {
        let mut kept: Vec<&Ranked> = self.kept.iter().collect();
        kept.sort();
        kept.into_iter().map(|r| r.problem.kind.clone()).collect()
    }
}

/// A rendered problem: what miette prints.
#[derive(Debug)]
pub struct Diag {
    code: Cow<'static, str>,
    message: String,
    help: Option<String>,
    severity: Severity,
    source: Option<Excerpt>,
    labels: Vec<LabeledSpan>,
    related: Vec<Diag>,
}

impl Diag {
    /// A diagnostic without a place: a note about the manifests as a whole.
    pub fn note(code: &'static str, message: String, help: String) -> Self {
        Diag {
            code: Cow::Borrowed(code),
            message,
            help: Some(help),
            severity: Severity::Advice,
            source: None,
            labels: Vec::new(),
            related: Vec::new(),
        }
    }
}

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&printable::clip(&self.message, MAX_LINE))
    }
}

impl std::error::Error for Diag {}

impl Diagnostic for Diag {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(&self.code))
    }
    fn severity(&self) -> Option<Severity> {
        Some(self.severity)
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help.as_ref().map(|h| Box::new(printable::clip(h, MAX_LINE)) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.source.as_ref().map(|s| s as &dyn SourceCode)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        (!self.labels.is_empty())
            .then(|| Box::new(self.labels.iter().cloned()) as Box<dyn Iterator<Item = LabeledSpan>>)
    }
    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        (!self.related.is_empty()).then(|| {
            Box::new(self.related.iter().map(|d| d as &dyn Diagnostic))
                as Box<dyn Iterator<Item = &dyn Diagnostic>>
        })
    }
}
