//! One problem found in the manifests: its kind (code, message, help) side by side with where
//! it is, and its rendering into a miette diagnostic with a labelled source span.
//!
//! Problems are collected first and rendered last, so that every diagnostic of a file can be
//! shown with the same (redacted) source text: a literal password is replaced by `*` in every
//! snippet, never printed.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use miette::{Diagnostic, LabeledSpan, NamedSource, Severity, SourceCode};

use super::node::Pos;
use crate::model::Location;

/// What is wrong. Each kind has a stable code `ozform::manifest::<kind>`, a message and a help.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Unreadable {
        path: PathBuf,
        reason: String,
    },
    NoManifests {
        path: PathBuf,
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
        suggestion: Option<String>,
    },
    MissingVariable {
        name: String,
    },
    BadInterpolation {
        reason: String,
    },
}

impl Kind {
    pub fn code(&self) -> &'static str {
        match self {
            Kind::Unreadable { .. } => "ozform::manifest::unreadable",
            Kind::NoManifests { .. } => "ozform::manifest::no_manifests",
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
            Kind::MalformedEmail { .. } => "ozform::manifest::malformed_email",
            Kind::DuplicateCompany { .. } => "ozform::manifest::duplicate_company",
            Kind::DuplicateEmail { .. } => "ozform::manifest::duplicate_email",
            Kind::UndeclaredCompany { .. } => "ozform::manifest::undeclared_company",
            Kind::MissingVariable { .. } => "ozform::manifest::missing_variable",
            Kind::BadInterpolation { .. } => "ozform::manifest::bad_interpolation",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Kind::Unreadable { path, reason } => format!("cannot read `{}`: {reason}", path.display()),
            Kind::NoManifests { path } => {
                format!("directory `{}` holds no `*.yaml` or `*.yml` file", path.display())
            }
            Kind::YamlSyntax { message } => format!("invalid YAML: {message}"),
            Kind::NotAMap { found } => format!("a manifest document must be a map, found {found}"),
            Kind::UnknownField { field, within, .. } => format!("unknown field `{field}` in {within}"),
            Kind::DuplicateKey { key } => format!("`{key}` is written twice in the same map"),
            Kind::MissingField { field, within } => format!("{within} has no `{field}`"),
            Kind::WrongType { field, expected, found } => {
                format!("`{field}` must be {expected}, found {found}")
            }
            Kind::AmbiguousBoolean { field, value } => format!("`{value}` is not a boolean (in `{field}`)"),
            Kind::LiteralPassword => "a password is written literally in the manifest".to_string(),
            Kind::BadSecret { reason } => format!("invalid `password`: {reason}"),
            Kind::EmptyName { field } => format!("`{field}` is empty"),
            Kind::MalformedEmail { email } => format!("`{email}` is not an email address"),
            Kind::DuplicateCompany { name, .. } => format!("company `{name}` is declared twice"),
            Kind::DuplicateEmail { email, .. } => {
                format!("service user `{email}` is declared twice (emails are compared case-insensitively)")
            }
            Kind::UndeclaredCompany { company, .. } => format!("company `{company}` is not declared"),
            Kind::MissingVariable { name } => format!("environment variable `{name}` is not set"),
            Kind::BadInterpolation { reason } => format!("invalid interpolation: {reason}"),
        }
    }

    pub fn help(&self) -> String {
        match self {
            Kind::Unreadable { .. } => "give existing manifest files or directories".into(),
            Kind::NoManifests { .. } => "put manifests in files named `*.yaml` or `*.yml`, or name the files directly".into(),
            Kind::YamlSyntax { .. } => "fix the YAML here: check indentation, quotes and brackets".into(),
            Kind::NotAMap { .. } => "start the document with `companies:` and/or `service_users:`".into(),
            Kind::UnknownField { suggestion: Some(s), .. } => format!("did you mean `{s}`?"),
            Kind::UnknownField { expected, .. } => format!("expected one of {}", backticked(expected)),
            Kind::DuplicateKey { key } => format!("keep one `{key}`: YAML keys must be unique within a map"),
            Kind::MissingField { field, .. } => format!("add `{field}: …`"),
            Kind::WrongType { field, expected, .. } if *expected == "a string" => {
                format!("write a string; quote values that look like numbers or booleans: `{field}: \"…\"`")
            }
            Kind::WrongType { field, expected, .. } => format!("write `{field}` as {expected}"),
            Kind::AmbiguousBoolean { field, .. } => format!(
                "write `{field}: true` or `{field}: false` (YAML 1.1 reads yes/no/on/off as booleans, YAML 1.2 as strings)"
            ),
            Kind::LiteralPassword => "manifests live in Git, where a password is readable by everyone with access, \
                 forever: write `password: {env: NAME}` or `password: {file: PATH}` and provide the secret when applying"
                .into(),
            Kind::BadSecret { .. } => "write `password: {env: NAME}` or `password: {file: PATH}`".into(),
            Kind::EmptyName { field } => format!("write a name, or leave `{field}` out to leave it as it is"),
            Kind::MalformedEmail { .. } => "write an address like `svc-web@acme.example`".into(),
            Kind::DuplicateCompany { first, .. } => {
                format!("declare each company once; the first declaration is at {first}")
            }
            Kind::DuplicateEmail { first, .. } => {
                format!("declare each service user once; the first declaration is at {first}")
            }
            Kind::UndeclaredCompany { suggestion: Some(s), .. } => format!("did you mean `{s}`?"),
            Kind::UndeclaredCompany { company, .. } => format!(
                "declare it under `companies:` (`- name: {company}`); declaring a company that exists adopts it"
            ),
            Kind::MissingVariable { name } => {
                format!("export `{name}`, or give a default: `${{{name}:-value}}` (write `$${{` for a literal `${{`)")
            }
            Kind::BadInterpolation { .. } => {
                "write `${NAME}` or `${NAME:-default}`, or `$${` for a literal `${`".into()
            }
        }
    }
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

    /// Render with the (already redacted) sources, indexed as in `At::file`.
    pub fn into_report(self, sources: &[NamedSource<Arc<str>>]) -> miette::Report {
        let code = self.kind.code();
        let mut diag = Diag {
            code,
            message: self.kind.message(),
            help: Some(self.kind.help()),
            severity: Severity::Error,
            source: None,
            labels: Vec::new(),
            related: Vec::new(),
        };
        if let Some(at) = self.at {
            diag.source = sources.get(at.file).cloned();
            diag.labels.push(label(&self.label, at.pos, diag.source.as_ref(), true));
            if let Some((other, text)) = self.other {
                if other.file == at.file {
                    diag.labels.push(label(&text, other.pos, diag.source.as_ref(), false));
                } else {
                    let source = sources.get(other.file).cloned();
                    let labels = vec![label(&text, other.pos, source.as_ref(), true)];
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
        }
        miette::Report::new(diag)
    }
}

/// A label on `pos`, clamped to the source so a position at the very end still renders.
fn label(text: &str, pos: Pos, source: Option<&NamedSource<Arc<str>>>, primary: bool) -> LabeledSpan {
    let len_of_source = source.map_or(usize::MAX, |s| s.inner().len());
    let offset = pos.offset.min(len_of_source);
    let len = pos.len.min(len_of_source - offset);
    let text = (!text.is_empty()).then(|| text.to_string());
    if primary {
        LabeledSpan::new_primary_with_span(text, (offset, len))
    } else {
        LabeledSpan::new_with_span(text, (offset, len))
    }
}

/// A rendered problem: what miette prints.
#[derive(Debug)]
struct Diag {
    code: &'static str,
    message: String,
    help: Option<String>,
    severity: Severity,
    source: Option<NamedSource<Arc<str>>>,
    labels: Vec<LabeledSpan>,
    related: Vec<Diag>,
}

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Diag {}

impl Diagnostic for Diag {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.code))
    }
    fn severity(&self) -> Option<Severity> {
        Some(self.severity)
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
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
