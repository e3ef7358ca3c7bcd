//! Manifest loading and validation: files and directories → `model::Desired`.
//!
//! The loader's edge is I/O (finding and reading files, in `source`); everything after is
//! pure over the texts and an environment lookup: `node` parses YAML into located nodes,
//! `secrets` finds the variables no value may interpolate, `read` turns each document into
//! companies and users (with `interpolate`), `check` looks across documents, `problem`
//! collects what is wrong and renders it through `excerpt` and `printable`. Every problem is
//! counted and reported together (the first `MAX_PROBLEMS` in full), each with a stable code,
//! a labelled span and a help line. The process environment is never read here: callers pass
//! a lookup.
//!
//! Manifests are untrusted input (a pull request writes them, CI loads them with secrets in
//! its environment). The loader reads regular files only, follows a symbolic link only into
//! the paths given, caps file sizes (`MAX_FILE_BYTES`, `MAX_TOTAL_BYTES`), what aliases may
//! add to all files together (`MAX_ALIAS_NODES`, `MAX_ALIAS_BYTES`) and the problems it shows,
//! never prints more than a window of a source line or a control character, interpolates only
//! variables named `OZ_VAR_…` and refuses one that holds a secret
//! (`LoadOptions::secret_variables`), and places every `{file: PATH}` secret, without looking at
//! the disk, inside the paths given or a `--secrets-dir` (`LoadOptions::secrets_dirs`). A saved
//! plan given as a manifest is named as such, not read as YAML.
//!
//! Invariant: `load` returns a `Desired` only when no problem was found; companies sorted
//! by name, users by email (case-insensitive), each identity once.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::Diagnostic;

use crate::model::Desired;

mod check;
mod document;
mod excerpt;
pub mod export;
mod interpolate;
mod node;
mod printable;
mod problem;
pub mod project;
mod read;
mod secrets;
mod source;
pub mod suggest;

pub use document::{CompanyDoc, Document, SCHEMA_COMMENT, SecretSource, UserDoc, schema, to_yaml};
pub use interpolate::VARIABLE_PREFIX;
pub use source::Warning;

/// The largest manifest file read (16 MiB); a larger one is refused before it is read.
pub const MAX_FILE_BYTES: u64 = 16 << 20;
/// The most bytes read from all manifest files together (64 MiB).
pub const MAX_TOTAL_BYTES: u64 = 64 << 20;
/// The most problems reported in full; the others are counted ("and N more problems").
pub const MAX_PROBLEMS: usize = 100;
/// The most nodes aliases and merge keys may add to all documents of one load together:
/// serde-saphyr's default node budget for one file, now for the whole run (its alias budget
/// holds per file, so a small file of aliases copied into many files would multiply). About
/// 20,000 service users that each merge a map of defaults fit in it.
pub const MAX_ALIAS_NODES: usize = 250_000;
/// The most bytes of text (string values and keys) aliases and merge keys may add to all
/// documents of one load together.
pub const MAX_ALIAS_BYTES: usize = 16 << 20;
/// The environment variables holding secrets that the commands are given: no manifest value
/// may interpolate them (nor any variable a `password: {env: NAME}` names).
pub const SECRET_VARIABLES: &[&str] = &["OZ_ADMIN_PASSWORD"];

/// What loading needs besides the paths.
#[derive(Clone, Copy)]
pub struct LoadOptions<'a> {
    /// Looks an environment variable up (the commands pass the process environment).
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// Variables that hold secrets given to ozform: a value that interpolates one is refused.
    /// Those that `password: {env: NAME}` names are added by the loader.
    pub secret_variables: &'a [&'a str],
    /// Called with each warning (a special file skipped in a directory); the commands print
    /// it on stderr as `warning: …`.
    pub warn: &'a dyn Fn(&Warning),
    /// Directories besides the paths given where a `{file: PATH}` secret may lie
    /// (`--secrets-dir`, `OZ_SECRETS_DIR`).
    pub secrets_dirs: &'a [PathBuf],
}

impl<'a> LoadOptions<'a> {
    /// `SECRET_VARIABLES` as the secrets, warnings dropped, no secrets directory.
    pub fn new(env: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self { env, secret_variables: SECRET_VARIABLES, warn: &ignore, secrets_dirs: &[] }
    }
}

fn ignore(_: &Warning) {}

/// All problems found in the manifests (or in a project file), reported together: the first
/// `MAX_PROBLEMS` by file and place in full, then how many more there are.
#[derive(Debug)]
pub struct ManifestError {
    /// The problems shown, in order of file and place.
    pub problems: Vec<miette::Report>,
    /// How many problems were found, shown or not.
    pub total: usize,
    /// "and N more problems", when some are not shown.
    more: Option<Box<problem::Diag>>,
    /// The project file the problems are in (its path escaped), or `None` for manifests.
    project: Option<String>,
}

impl ManifestError {
    fn new(problems: problem::Problems, files: &[problem::SourceFile]) -> Self {
        Self::of(problems, files, problem::Area::Manifests, None)
    }

    fn of(
        problems: problem::Problems,
        files: &[problem::SourceFile],
        area: problem::Area,
        project: Option<String>,
    ) -> Self {
        let total = problems.total();
        let problems = problems.render(files, area);
        let omitted = total - problems.len();
        let more = (omitted > 0).then(|| {
            Box::new(problem::Diag::note(
                "ozform::manifest::more_problems",
                format!("and {omitted} more {}", if omitted == 1 { "problem" } else { "problems" }),
                format!(
                    "only the first {MAX_PROBLEMS} problems are shown: fix them, then run `ozform validate` again"
                ),
            ))
        });
        Self { problems, total, more, project }
    }

    /// Whether the problems are a project file's.
    pub fn is_project(&self) -> bool {
        self.project.is_some()
    }
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.project {
            None => write!(f, "the manifests have {}", count_problems(self.total)),
            Some(path) => write!(f, "the project file `{path}` has {}", count_problems(self.total)),
        }
    }
}

impl std::error::Error for ManifestError {}

impl Diagnostic for ManifestError {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(if self.project.is_some() {
            "ozform::project::invalid"
        } else {
            "ozform::manifest::invalid"
        }))
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(if self.project.is_some() {
            "fix each problem listed below (the project file is described in docs/installations.md)"
        } else {
            "fix each problem listed below, then run `ozform validate` again"
        }))
    }
    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        let shown = self.problems.iter().map(|r| &**r as &dyn Diagnostic);
        Some(Box::new(shown.chain(self.more.iter().map(|d| &**d as &dyn Diagnostic))))
    }
}

fn count_problems(n: usize) -> String {
    if n == 1 { "1 problem".to_string() } else { format!("{n} problems") }
}

/// Load the manifests under `paths` into the desired state, or report every problem; with
/// `SECRET_VARIABLES` as the secrets and warnings dropped (see `load_with`).
pub fn load(paths: &[PathBuf], env: &dyn Fn(&str) -> Option<String>) -> Result<Desired, ManifestError> {
    load_with(paths, &LoadOptions::new(env))
}

/// A file read: its path, its text, and whether that text is YAML to parse (a file that is not
/// UTF-8 is kept only to show where it is not).
struct Loaded {
    path: Arc<PathBuf>,
    text: String,
    parse: bool,
}

/// Load the manifests under `paths` into the desired state, or report every problem.
pub fn load_with(paths: &[PathBuf], options: &LoadOptions<'_>) -> Result<Desired, ManifestError> {
    let mut problems = problem::Problems::default();
    let files = source::discover(paths, &mut problems, options.warn);
    let mut complete = true;
    let mut budget = MAX_TOTAL_BYTES;
    let mut loaded: Vec<Loaded> = Vec::with_capacity(files.len());
    for file in &files {
        let path = Arc::new(file.path.clone());
        match source::read(file, &mut budget) {
            Ok(source::Text::Utf8(text)) if source::is_saved_plan(&text) => {
                // One clear problem instead of one per unknown field of the plan.
                problems
                    .push(problem::Problem::unlocated(problem::Kind::SavedPlan { path: file.path.clone() }));
                loaded.push(Loaded { path, text, parse: false });
            }
            Ok(source::Text::Utf8(text)) => loaded.push(Loaded { path, text, parse: true }),
            Ok(source::Text::NotUtf8 { text, offset, byte }) => {
                let len = text[offset..].chars().next().map_or(0, char::len_utf8);
                let at =
                    problem::At { file: loaded.len(), pos: node::Pos { offset, len, line: 0, column: 0 } };
                problems.push(problem::Problem::at(problem::Kind::NotUtf8 { byte }, at, "not UTF-8"));
                complete = false;
                loaded.push(Loaded { path, text, parse: false });
            }
            Err(kind) => {
                problems.push(problem::Problem::unlocated(kind));
                complete = false;
            }
        }
    }
    let roots = source::secret_roots(paths, options.secrets_dirs);
    let parsed = parse_all(&loaded);
    // A file not parsed because the alias budget was spent before it: its companies are
    // unknown, as for a file that is not YAML.
    if parsed.iter().zip(&loaded).any(|(parsed, file)| parsed.is_none() && file.parse) {
        complete = false;
    }
    let documents: Vec<(Arc<PathBuf>, &[node::Node])> = loaded
        .iter()
        .zip(&parsed)
        .filter_map(|(file, parsed)| {
            Some((Arc::clone(&file.path), parsed.as_ref()?.as_ref().ok()?.as_slice()))
        })
        .collect();
    let secrets = secrets::Secrets::find(options.secret_variables, &documents, options.env);
    drop(documents);

    let mut declared = read::Declared::default();
    let mut sources = Vec::with_capacity(loaded.len());
    for (index, (file, parsed)) in loaded.into_iter().zip(parsed).enumerate() {
        let mut redact = Vec::new();
        match parsed {
            None => {}
            Some(Err(node::ParseError::Syntax(err))) => {
                let at = problem::At { file: index, pos: err.pos };
                problems.push(problem::Problem::at(
                    problem::Kind::YamlSyntax { message: err.message },
                    at,
                    "here",
                ));
                complete = false;
            }
            Some(Err(node::ParseError::Budget { pos, exceeded })) => {
                let at = problem::At { file: index, pos };
                problems.push(problem::Problem::at(
                    problem::Kind::AliasBudget { exceeded },
                    at,
                    "the limit is crossed expanding this",
                ));
                complete = false;
            }
            Some(Ok(documents)) => {
                let dir = file.path.parent().unwrap_or(Path::new("")).to_path_buf();
                let mut reader = read::Reader {
                    file: index,
                    path: Arc::clone(&file.path),
                    dir: &dir,
                    roots: &roots,
                    env: options.env,
                    secrets: &secrets,
                    problems: &mut problems,
                    redact: &mut redact,
                };
                for document in documents {
                    reader.document(document, &mut declared);
                }
            }
        }
        sources.push(problem::SourceFile {
            name: printable::path(&file.path),
            text: Arc::from(file.text),
            blanks: excerpt::Blanks::new(redact),
        });
    }
    check::across_documents(&mut declared, complete, &mut problems);

    if !problems.is_empty() {
        return Err(ManifestError::new(problems, &sources));
    }
    let mut companies: Vec<_> = declared.companies.into_iter().map(|c| c.company).collect();
    companies.sort_by(|a, b| a.name.cmp(&b.name));
    let mut users: Vec<_> = declared.users.into_iter().map(|u| u.user).collect();
    users.sort_by(|a, b| a.email.cmp(&b.email));
    Ok(Desired { companies, users, files: files.into_iter().map(|f| f.path).collect() })
}

type Parsed = Result<Vec<node::Node>, node::ParseError>;

/// The stack of a parser thread. serde-saphyr recurses for each level of nesting, up to its
/// depth budget (64), and a debug build needs more than the 2 MiB a thread gets by default to
/// reach it (a fuzzed manifest overflowed a test thread); a release build needs far less. Only
/// what a parse touches is ever committed.
const PARSER_STACK: usize = 64 << 20;

/// Parse every text that is to be parsed, in order (`None` for the others), each within one
/// alias budget (`MAX_ALIAS_NODES`, `MAX_ALIAS_BYTES`) shared by all.
///
/// Parsing is most of the loader's time and each file is independent, so files are parsed on
/// threads of our own, one per available core (so that the caller's stack size does not
/// matter either). Which document crosses the budget must not depend on how the threads ran,
/// though: when a parallel pass crosses it (every parse then stops at its next alias, so memory
/// stays near the budget), its results are dropped and the files parsed again one after the
/// other, in order, until the document that crosses it; the files after that one are not
/// parsed (`None`).
fn parse_all(files: &[Loaded]) -> Vec<Option<Parsed>> {
    let budget = Arc::new(node::Budget::new(MAX_ALIAS_NODES, MAX_ALIAS_BYTES));
    let threads =
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get).min(files.len()).max(1);
    let parsed = parse_on_threads(files, threads, &budget, false);
    if !budget.exceeded() {
        return parsed;
    }
    drop(parsed);
    let budget = Arc::new(node::Budget::new(MAX_ALIAS_NODES, MAX_ALIAS_BYTES));
    parse_on_threads(files, 1, &budget, true)
}

/// Parse `files` on `threads` threads, thread `t` taking files `t`, `t + threads`, …; with
/// `in_order` (one thread), stop at the first file that crosses the budget.
fn parse_on_threads(
    files: &[Loaded],
    threads: usize,
    budget: &Arc<node::Budget>,
    in_order: bool,
) -> Vec<Option<Parsed>> {
    let share = move |t: usize| {
        let mut crossed = false;
        files
            .iter()
            .enumerate()
            .skip(t)
            .step_by(threads)
            .map(|(i, file)| {
                let parse = file.parse && !crossed;
                let result = parse.then(|| node::parse_documents_within(&file.text, budget));
                crossed |= in_order && matches!(result, Some(Err(node::ParseError::Budget { .. })));
                (i, result)
            })
            .collect::<Vec<_>>()
    };
    let mut parsed: Vec<Option<Option<Parsed>>> = std::iter::repeat_with(|| None).take(files.len()).collect();
    std::thread::scope(|scope| {
        let mut results = Vec::with_capacity(files.len());
        let mut handles = Vec::with_capacity(threads);
        for t in 0..threads {
            match std::thread::Builder::new().stack_size(PARSER_STACK).spawn_scoped(scope, move || share(t)) {
                Ok(handle) => handles.push(handle),
                // No thread to be had: parse here, on the caller's stack.
                Err(_) => results.extend(share(t)),
            }
        }
        // A parser thread that panicked (a parser bug; the property tests look for them)
        // leaves its files as `None`: reported below as a problem, not as a crash.
        results.extend(handles.into_iter().filter_map(|h| h.join().ok()).flatten());
        for (i, result) in results {
            parsed[i] = Some(result);
        }
    });
    parsed
        .into_iter()
        .map(|result| {
            result.unwrap_or_else(|| {
                Some(Err(node::ParseError::Syntax(node::SyntaxError {
                    message: "the YAML parser failed on this file (a bug: please report it)".into(),
                    pos: node::Pos::default(),
                })))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Permissions, TokenSpec};
    use crate::secret::SecretRef;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    fn env(name: &str) -> Option<String> {
        (name == "OZ_VAR_TIER").then(|| "gold".to_string())
    }

    fn problems(result: Result<Desired, ManifestError>) -> Vec<String> {
        result.unwrap_err().problems.iter().map(|p| format!("{}", p.code().unwrap())).collect()
    }

    #[test]
    fn documents_of_all_files_merge_into_one_sorted_desired_state() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "b/users.yml",
            "service_users:\n  - {email: Zed@x.example, company: Beta}\n---\nservice_users:\n  - {email: amy@x.example, company: Alpha}\n",
        );
        write(dir.path(), "a.yaml", "companies:\n  - name: Beta\n---\n---\ncompanies:\n  - name: Alpha\n");
        write(dir.path(), "empty.yaml", "");
        let desired = load(&[dir.path().to_path_buf()], &env).unwrap();
        let companies: Vec<_> = desired.companies.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(companies, ["Alpha", "Beta"]);
        let users: Vec<_> = desired.users.iter().map(|u| u.email.as_str()).collect();
        assert_eq!(users, ["amy@x.example", "Zed@x.example"]);
        assert_eq!(desired.files.len(), 3);
        let zed = &desired.users[1];
        assert_eq!((zed.location.line, zed.location.column), (2, 13));
        assert!(zed.location.file.ends_with("b/users.yml"));
    }

    #[test]
    fn omitted_fields_take_their_defaults_and_stay_unmanaged() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            "m.yaml",
            "companies: [{name: A}]\nservice_users:\n  - {email: a@x.example, company: A}\n",
        );
        let desired = load(&[file], &env).unwrap();
        let user = &desired.users[0];
        assert!(user.active);
        assert_eq!(user.token, TokenSpec { issue: false });
        assert_eq!((user.first_name.as_ref(), user.password.as_ref(), user.permissions), (None, None, None));
        assert_eq!(desired.companies[0].technical_meta_data, None);
    }

    #[test]
    fn every_field_maps_into_the_model() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            "m.yaml",
            "companies:\n  - name: A\n    technical_meta_data: {tier: \"${OZ_VAR_TIER}\", n: [1, 2.5, null, true]}\n\
             service_users:\n  - email: a@x.example\n    company: A\n    first_name: F\n    last_name: L\n    middle_name: \"\"\n\
             \x20   password: {file: secrets/pw}\n    active: false\n    permissions: {biometry: false, quality: true}\n    token: {issue: true}\n",
        );
        let desired = load(&[file], &env).unwrap();
        assert_eq!(
            desired.companies[0].technical_meta_data,
            Some(serde_json::json!({"tier": "gold", "n": [1, 2.5, null, true]}))
        );
        let user = &desired.users[0];
        assert_eq!(user.first_name.as_deref(), Some("F"));
        assert_eq!(user.last_name.as_deref(), Some("L"));
        assert_eq!(user.middle_name.as_deref(), Some(""));
        let Some(SecretRef::File(file)) = &user.password else { panic!("{:?}", user.password) };
        assert_eq!(file.written(), Path::new("secrets/pw"));
        assert_eq!(file.resolved(), Some(dir.path().join("secrets/pw").as_path()));
        assert!(!user.active);
        assert_eq!(
            user.permissions,
            Some(Permissions {
                biometry: Some(false),
                collection: None,
                documents: None,
                quality: Some(true)
            })
        );
        assert!(user.token.issue);
    }

    #[test]
    fn a_secret_file_outside_the_manifest_paths_is_refused_unless_in_a_secrets_dir() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            "m/m.yaml",
            "companies: [{name: A}]\nservice_users:\n  - {email: a@x.example, company: A, password: {file: /run/pw}}\n\
             \x20 - {email: b@x.example, company: A, password: {file: ../s/pw}}\n\
             \x20 - {email: c@x.example, company: A, password: {file: \"pw\\u001b[2J\"}}\n",
        );
        assert_eq!(
            problems(load(std::slice::from_ref(&file), &env)),
            [
                "ozform::manifest::secret_outside",
                "ozform::manifest::secret_outside",
                "ozform::manifest::bad_secret"
            ]
        );
        let secrets_dirs = [PathBuf::from("/run"), dir.path().join("s")];
        let options = LoadOptions { secrets_dirs: &secrets_dirs, ..LoadOptions::new(&env) };
        assert_eq!(problems(load_with(&[file], &options)), ["ozform::manifest::bad_secret"]);
    }

    #[test]
    fn anchors_and_merge_keys_work_like_yaml_says() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            "m.yaml",
            "companies: [{name: A}]\nx-defaults: &d {company: A, active: false}\n",
        );
        // Top-level helper keys are unknown fields: the manifest has no place for them.
        assert_eq!(problems(load(&[file], &env)), ["ozform::manifest::unknown_field"]);
        let file = write(
            dir.path(),
            "m.yaml",
            "companies: [{name: A}]\nservice_users:\n  - &u {email: a@x.example, company: A, active: false}\n  - {<<: *u, email: b@x.example}\n",
        );
        let desired = load(&[file], &env).unwrap();
        assert_eq!(desired.users.len(), 2);
        assert!(!desired.users[1].active);
    }

    #[test]
    fn every_problem_is_collected_not_only_the_first() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.yaml", "companies:\n  - name: A\n  - name: A\n  - name: B\n    tier: gold\n");
        write(
            dir.path(),
            "b.yaml",
            "service_users:\n  - {email: nope, company: A}\n  - {email: b@x.example, company: C, active: off}\n  - {company: A}\n",
        );
        let codes = problems(load(&[dir.path().to_path_buf()], &env));
        assert_eq!(
            codes,
            [
                "ozform::manifest::duplicate_company",
                "ozform::manifest::unknown_field",
                "ozform::manifest::malformed_email",
                "ozform::manifest::undeclared_company",
                "ozform::manifest::ambiguous_boolean",
                "ozform::manifest::missing_field",
            ]
        );
    }

    #[test]
    fn a_flood_of_problems_shows_the_first_by_place_and_counts_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::from("companies:\n  - name: A\n");
        for i in 0..5_000 {
            std::fmt::Write::write_fmt(&mut text, format_args!("    x{i}: 1\n")).unwrap();
        }
        write(dir.path(), "b.yaml", &text);
        write(dir.path(), "a.yaml", "companies: [{name: B, y: 1}]\n");
        let err = load(&[dir.path().to_path_buf()], &env).unwrap_err();
        assert_eq!((err.total, err.problems.len()), (5_001, MAX_PROBLEMS));
        let first = format!("{:?}", err.problems[0]);
        assert!(first.contains("unknown field `y`"), "{first}");
        let last = format!("{:?}", err.problems[MAX_PROBLEMS - 1]);
        assert!(last.contains("unknown field `x98`"), "{last}");
        let more: Vec<String> = err.related().unwrap().skip(MAX_PROBLEMS).map(ToString::to_string).collect();
        assert_eq!(more, ["and 4901 more problems"]);
    }

    #[test]
    fn a_value_that_interpolates_a_secret_is_refused_without_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "m.yaml",
            "companies:\n  - name: A\n    technical_meta_data: {note: \"${OZ_ADMIN_PASSWORD}\", pw: \"${WEB_PW:-x}\"}\n\
             service_users:\n  - {email: \"${OZ_ADMIN_PASSWORD}@x.example\", company: A, password: {env: WEB_PW}}\n",
        );
        let looked_up = std::cell::RefCell::new(Vec::new());
        let env = |name: &str| {
            looked_up.borrow_mut().push(name.to_string());
            Some("canary-secret".to_string())
        };
        let err = load(&[dir.path().to_path_buf()], &env).unwrap_err();
        let codes: Vec<_> = err.problems.iter().map(|p| p.code().unwrap().to_string()).collect();
        assert_eq!(codes, ["ozform::manifest::secret_interpolation"; 3]);
        let rendered = format!("{:?}", miette::Report::new(err));
        assert!(!rendered.contains("canary"), "{rendered}");
        assert!(rendered.contains("`WEB_PW` is a service user's password (`{env: WEB_PW}` at"), "{rendered}");
        assert!(looked_up.borrow().is_empty(), "{:?}", looked_up.borrow());
        // The secrets are data: without them, the same values interpolate (an `OZ_VAR_` one:
        // no other variable is ever read).
        write(dir.path(), "m.yaml", "companies: [{name: \"${OZ_VAR_SECRET}\"}]\n");
        let options = LoadOptions { secret_variables: &["OZ_VAR_SECRET"], ..LoadOptions::new(&env) };
        assert_eq!(
            problems(load_with(&[dir.path().to_path_buf()], &options)),
            ["ozform::manifest::secret_interpolation"]
        );
        let options = LoadOptions { secret_variables: &[], ..LoadOptions::new(&env) };
        assert_eq!(
            load_with(&[dir.path().to_path_buf()], &options).unwrap().companies[0].name,
            "canary-secret"
        );
    }

    #[test]
    fn a_password_source_without_a_value_is_refused_not_taken_as_no_password() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            "m.yaml",
            "companies: [{name: A}]\nservice_users:\n  - {email: a@x.example, company: A, password: {env: ~}}\n\
             \x20 - {email: b@x.example, company: A, password: {file: }}\n\
             \x20 - {email: c@x.example, company: A, password: {env: \"\"}}\n\
             \x20 - {email: d@x.example, company: A, password: {file: \"\"}}\n",
        );
        assert_eq!(problems(load(&[file], &env)), ["ozform::manifest::bad_secret"; 4]);
    }

    #[test]
    fn nesting_to_the_parsers_depth_limit_is_an_error_on_any_calling_thread() {
        // A mutated example found by the fuzzer: it overflowed a test thread's 2 MiB stack.
        let mut text = String::from("companies:\n");
        for depth in 0..100 {
            text.push_str(&"  ".repeat(depth));
            text.push_str("- a:\n");
        }
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "deep.yaml", &text);
        let small = std::thread::Builder::new().stack_size(256 << 10);
        let codes = small.spawn(move || problems(load(&[file], &env))).unwrap().join().unwrap();
        assert_eq!(codes, ["ozform::manifest::yaml_syntax"]);
    }

    #[test]
    fn an_unparsable_file_does_not_cause_false_undeclared_company_errors() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.yaml", "companies:\n  - name: [A\n");
        write(dir.path(), "b.yaml", "service_users:\n  - {email: a@x.example, company: A}\n");
        assert_eq!(problems(load(&[dir.path().to_path_buf()], &env)), ["ozform::manifest::yaml_syntax"]);
    }

    #[test]
    fn a_file_may_hold_more_documents_than_the_yaml_parser_allows_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::new();
        for i in 0..1_500 {
            std::fmt::Write::write_fmt(&mut text, format_args!("---\ncompanies: [{{name: C{i}}}]\n"))
                .unwrap();
        }
        let file = write(dir.path(), "many.yaml", &text);
        assert_eq!(load(&[file], &env).unwrap().companies.len(), 1_500);
    }

    #[test]
    fn a_company_that_cannot_be_read_does_not_cause_undeclared_company_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            "m.yaml",
            "companies: [{name: 2024}]\nservice_users: [{email: a@x.example, company: \"2024\"}]\n",
        );
        assert_eq!(problems(load(&[file], &env)), ["ozform::manifest::wrong_type"]);
    }
}
