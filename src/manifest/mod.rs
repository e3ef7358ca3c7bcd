//! Manifest loading and validation: files and directories → `model::Desired`.
//!
//! The loader's edge is I/O (finding and reading files, in `source`); everything after is
//! pure over the texts and an environment lookup: `node` parses YAML into located nodes,
//! `read` turns each document into companies and users (with `interpolate`), `check` looks
//! across documents, `problem` renders what is wrong. Every problem is collected and
//! reported together, each with a stable code, a labelled span and a help line. The process
//! environment is never read here: callers pass a lookup.
//!
//! Invariant: `load` returns a `Desired` only when no problem was found; companies sorted
//! by name, users by email (case-insensitive), each identity once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::NamedSource;

use crate::model::Desired;

mod check;
mod document;
mod interpolate;
mod node;
mod problem;
mod read;
mod source;
mod suggest;

pub use document::{CompanyDoc, Document, SCHEMA_COMMENT, UserDoc, schema, to_yaml};

/// All problems found in the manifests, reported together.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("the manifests have {}", count_problems(problems.len()))]
#[diagnostic(
    code(ozform::manifest::invalid),
    help("fix each problem listed below, then run `ozform validate` again")
)]
pub struct ManifestError {
    #[related]
    pub problems: Vec<miette::Report>,
}

fn count_problems(n: usize) -> String {
    if n == 1 { "1 problem".to_string() } else { format!("{n} problems") }
}

/// Load the manifests under `paths` into the desired state, or report every problem.
pub fn load(paths: &[PathBuf], env: &dyn Fn(&str) -> Option<String>) -> Result<Desired, ManifestError> {
    let mut problems = Vec::new();
    let files = source::discover(paths, &mut problems);
    let mut sources: Vec<(Arc<PathBuf>, Arc<str>, Vec<node::Pos>)> = Vec::with_capacity(files.len());
    let mut found = read::Found::default();
    let mut complete = true;
    for path in &files {
        let text = match source::read(path) {
            Ok(text) => text,
            Err(kind) => {
                problems.push(problem::Problem::unlocated(kind));
                complete = false;
                continue;
            }
        };
        let file = sources.len();
        let path = Arc::new(path.clone());
        let mut redact = Vec::new();
        match node::parse_documents(&text) {
            Err(err) => {
                let at = problem::At { file, pos: err.pos };
                problems.push(problem::Problem::at(
                    problem::Kind::YamlSyntax { message: err.message },
                    at,
                    "here",
                ));
                complete = false;
            }
            Ok(documents) => {
                let dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
                let mut reader = read::Reader {
                    file,
                    path: Arc::clone(&path),
                    dir: &dir,
                    env,
                    problems: &mut problems,
                    redact: &mut redact,
                };
                for document in documents {
                    reader.document(document, &mut found);
                }
            }
        }
        sources.push((path, Arc::from(text), redact));
    }
    check::across_documents(&mut found, complete, &mut problems);

    if !problems.is_empty() {
        return Err(ManifestError { problems: render(problems, sources) });
    }
    let mut companies: Vec<_> = found.companies.into_iter().map(|c| c.company).collect();
    companies.sort_by(|a, b| a.name.cmp(&b.name));
    let mut users: Vec<_> = found.users.into_iter().map(|u| u.user).collect();
    users.sort_by(|a, b| a.email.cmp(&b.email));
    Ok(Desired { companies, users, files })
}

/// Problems as reports, ordered by file and position, with literal passwords blanked out of
/// every snippet.
fn render(
    mut problems: Vec<problem::Problem>,
    sources: Vec<(Arc<PathBuf>, Arc<str>, Vec<node::Pos>)>,
) -> Vec<miette::Report> {
    problems.sort_by_key(|p| p.at);
    let named: Vec<NamedSource<Arc<str>>> = sources
        .into_iter()
        .map(|(path, text, redact)| {
            let text = if redact.is_empty() { text } else { Arc::from(blank(&text, &redact)) };
            NamedSource::new(path.display().to_string(), text).with_language("yaml")
        })
        .collect();
    problems.into_iter().map(|p| p.into_report(&named)).collect()
}

/// `text` with each span's characters replaced by `*` (byte length kept, so every other
/// span still points at the same bytes).
fn blank(text: &str, spans: &[node::Pos]) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, c) in text.char_indices() {
        if spans.iter().any(|s| i >= s.offset && i < s.offset + s.len) {
            out.extend(std::iter::repeat_n('*', c.len_utf8()));
        } else {
            out.push(c);
        }
    }
    out
}
