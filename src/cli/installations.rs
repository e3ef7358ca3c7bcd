//! The installations a run acts on, from the command line: the project file (`ozform.yaml` in
//! the working directory, or `--config PATH`) and `--installation NAME` (repeatable), or
//! without a project file the one installation the connection and token flags name, as before
//! project files.
//!
//! `--installation` has two meanings, one per mode, never both at once:
//! - with a project file, it selects installations by their name in the file (each
//!   installation's name is also the namespace its tokens are kept under in its store);
//! - without one, it names the token store's namespace of the single run (`OZ_INSTALLATION`).
//!
//! With a project file, what the file decides per installation (API URL, admin login, CA,
//! token store) may not also come from a flag or its variable: which of the two would win is
//! not something a reader of a pipeline should have to know, and credentials must go only where
//! the reviewed project file says. Settings that are not per installation (timeouts, bounds,
//! rotation) apply to each.

use std::path::{Path, PathBuf};

use clap::Args;

use crate::error::Error;
use crate::manifest::project::{self, InstallationSpec, Project, ProjectOptions};
use crate::ops::settings::{
    Connection, InstallationSettings, Installations, Out, Parallelism, StoreSpec, Tokens,
};
use crate::oz::VersionSetting;

use super::connection::{self, Url};
use super::{ConnectionArgs, TokenArgs};

/// `--config` and `--installations-parallelism`, shared by the commands that act on
/// installations (`plan`, `apply`, `reconcile`, `export`, `doctor`).
#[derive(Debug, Clone, Args)]
pub struct ProjectArgs {
    /// The project file naming the installations (a file, or a directory holding `ozform.yaml`)
    /// [default: `ozform.yaml` in the working directory, if there is one]
    #[arg(long, env = "OZ_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// With a project file: how many installations run at once
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=64))]
    pub installations_parallelism: usize,
}

/// What a command's installations need from the command line besides the flags.
pub struct Wanted<'a> {
    /// The manifest paths given (`PATHS`); empty when the command takes none (`export`,
    /// `doctor`) or gave none.
    pub paths: Vec<PathBuf>,
    /// Whether the command needs manifests (`plan`, `apply` without `--plan`).
    pub manifests: bool,
    /// How the API URL is used (a saved plan's, or the run's).
    pub url: Url,
    /// Steps at once (`apply --parallelism`), for the bound on requests in flight and, with
    /// `auto`, the client's adaptive limit.
    pub parallelism: Parallelism,
    /// Where `admin_password: {file: …}` may lie besides the project file's directory.
    pub secrets_dirs: &'a [PathBuf],
}

impl Wanted<'_> {
    /// A command that reads no manifests and runs no steps (`export`, `doctor`): the run's
    /// API URL, one request at a time per step.
    pub fn connection_only() -> Self {
        Wanted {
            paths: Vec::new(),
            manifests: false,
            url: Url::Required,
            parallelism: Parallelism::Fixed(1),
            secrets_dirs: &[],
        }
    }
}

/// The token flags of a command: all of them, or (`export`, which keeps no token) only the
/// installations named.
#[derive(Clone, Copy)]
pub enum Tokenless<'a> {
    Tokens(&'a TokenArgs),
    Names(&'a [String]),
}

impl Tokenless<'_> {
    fn names(&self) -> &[String] {
        match self {
            Tokenless::Tokens(args) => &args.installation,
            Tokenless::Names(names) => names,
        }
    }
}

/// The installations of the run, and a warning to show.
pub fn installations(
    project_args: &ProjectArgs,
    connection_args: &ConnectionArgs,
    token_args: Tokenless<'_>,
    wanted: Wanted<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Installations, Option<String>), Error> {
    let project = match project::find(project_args.config.as_deref()) {
        Some((path, given)) => {
            let options = ProjectOptions { env, secrets_dirs: wanted.secrets_dirs };
            project::load(&path, given, &options)?
        }
        None => None,
    };
    let Some(project) = project else { return single(connection_args, token_args, wanted, env) };
    if !wanted.paths.is_empty() {
        return Err(Error::Usage {
            message: format!(
                "manifest paths are given, and the project file `{}` names each installation's manifests",
                project.path.display()
            ),
            help: "drop the paths (the project file's `manifests:` say which manifests each installation \
                   gets), or run without the project file (elsewhere, or with `--config` naming another)"
                .into(),
        });
    }
    refuse_per_installation_flags(connection_args, token_args, &project.path)?;
    let selected = select(&project, token_args.names())?;
    let (shared, warning) = connection::shared(connection_args, wanted.parallelism.steps());
    let (shared, warning) = connection::adapt(shared, warning, wanted.parallelism);
    let base_tokens = match token_args {
        Tokenless::Tokens(args) => connection::tokens_shared(args),
        Tokenless::Names(_) => Tokens::new(StoreSpec::Dir(project::DEFAULT_TOKEN_DIR.into())),
    };
    let each = selected
        .into_iter()
        .map(|spec| InstallationSettings {
            name: Some(spec.name.clone()),
            connection: connection_of(spec, &shared),
            tokens: Tokens {
                store: spec.token_store.clone(),
                installation: Some(spec.name.clone()),
                ..base_tokens.clone()
            },
            manifests: spec.manifests.clone(),
        })
        .collect();
    Ok((Installations { each, parallelism: project_args.installations_parallelism, project: true }, warning))
}

/// The one installation of a run without a project file, as before project files.
fn single(
    connection_args: &ConnectionArgs,
    token_args: Tokenless<'_>,
    wanted: Wanted<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Installations, Option<String>), Error> {
    if wanted.manifests && wanted.paths.is_empty() {
        return Err(Error::Usage {
            message: "no manifests given, and there is no project file".into(),
            help: format!(
                "give manifest files or directories as PATHS, or write a project file `{}` naming \
                 installations and their manifests (see docs/installations.md)",
                project::PROJECT_FILE
            ),
        });
    }
    if token_args.names().len() > 1 {
        return Err(Error::Usage {
            message: "`--installation` is given more than once, and there is no project file".into(),
            help: format!(
                "without a project file, `--installation NAME` names the one namespace the token store keeps \
                 this run's tokens under; to act on several installations, write a project file `{}` \
                 (see docs/installations.md)",
                project::PROJECT_FILE
            ),
        });
    }
    let (connection, warning) =
        connection::connection(connection_args, env, wanted.url, wanted.parallelism.steps())?;
    let (connection, warning) = connection::adapt(connection, warning, wanted.parallelism);
    let installation = InstallationSettings {
        name: None,
        connection,
        tokens: match token_args {
            Tokenless::Tokens(args) => connection::tokens(args)?,
            Tokenless::Names(_) => Tokens::new(StoreSpec::Dir(project::DEFAULT_TOKEN_DIR.into())),
        },
        manifests: wanted.paths,
    };
    Ok((Installations::one(installation), warning))
}

/// Refuse a flag (or its variable) that says what the project file says per installation.
fn refuse_per_installation_flags(c: &ConnectionArgs, t: Tokenless<'_>, path: &Path) -> Result<(), Error> {
    // An empty value is none: a CI recipe's variable defined as nothing (GitHub's
    // `${{ vars.OZ_API_URL }}` when the variable is not set) says nothing.
    // (clap refuses an empty path itself.)
    let set = |value: Option<&str>| value.is_some_and(|v| !v.is_empty());
    let (store, dir) = match t {
        Tokenless::Tokens(t) => (set(t.token_store.as_deref()), t.token_dir.is_some()),
        Tokenless::Names(_) => (false, false),
    };
    let given = [
        (set(c.api_url.as_deref()), "`--api-url`/`OZ_API_URL`", "api_url"),
        (set(c.admin_email.as_deref()), "`--admin-email`/`OZ_ADMIN_EMAIL`", "admin_email"),
        (c.admin_password_file.is_some(), "`--admin-password-file`", "admin_password"),
        (c.ca_cert.is_some(), "`--ca-cert`", "ca_cert"),
        (store, "`--token-store`/`OZ_TOKEN_STORE`", "token_store"),
        (dir, "`--token-dir`/`OZ_TOKEN_DIR`", "token_store"),
    ];
    let Some((_, flag, key)) = given.iter().find(|(given, _, _)| *given) else { return Ok(()) };
    Err(Error::Usage {
        message: format!(
            "{flag} is given, and the project file `{}` says each installation's `{key}`",
            path.display()
        ),
        help: "drop the flag (or unset the variable): with a project file, each installation's API, login, CA and \
               token store come from the file only"
            .into(),
    })
}

/// The installations `--installation` names (each once, in the file's order), or all of them;
/// a name the file does not hold is an error suggesting the nearest.
fn select<'p>(project: &'p Project, names: &[String]) -> Result<Vec<&'p InstallationSpec>, Error> {
    if names.is_empty() {
        return Ok(project.installations.iter().collect());
    }
    for name in names {
        if project.installation(name).is_none() {
            let known: Vec<&str> = project.names().collect();
            let listed = known.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
            let help = match crate::manifest::suggest::closest(name, known.iter().copied()) {
                Some(near) => format!("did you mean `{near}`? the project file names {listed}"),
                None => format!("the project file names {listed}"),
            };
            return Err(Error::Usage {
                message: format!(
                    "`--installation {}` names no installation of the project file `{}`",
                    crate::escape::terminal(name),
                    project.path.display()
                ),
                help,
            });
        }
    }
    Ok(project.installations.iter().filter(|i| names.contains(&i.name)).collect())
}

/// The connection of `spec`, the settings that are not per installation taken from `shared`.
fn connection_of(spec: &InstallationSpec, shared: &Connection) -> Connection {
    Connection {
        api_url: Some(spec.api_url.clone()),
        admin_email: spec.admin_email.clone(),
        admin_password: spec.admin_password.clone(),
        api_version: spec.api_version.map_or(shared.api_version, VersionSetting::Fixed),
        ca_cert: spec.ca_cert.clone(),
        ..shared.clone()
    }
}

/// Where `--out PATH` writes: one file for one installation (unless PATH is a directory or
/// ends with `/`), else a directory of `<installation>.<extension>`.
pub fn out(path: Option<PathBuf>, installations: &Installations) -> Option<Out> {
    let path = path?;
    let dir_like = path.is_dir() || path.as_os_str().to_string_lossy().ends_with('/');
    Some(if installations.project && (installations.each.len() > 1 || dir_like) {
        Out::Dir(path)
    } else {
        Out::File(path)
    })
}
