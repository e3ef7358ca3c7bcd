//! Settings shared by `plan`, `apply` and `export`: the raw connection and token flags (and
//! their environment variables) turned into `ops::settings::{Connection, Tokens}`. Every check
//! between flags is made here, before any I/O. The admin password comes from a file or
//! `OZ_ADMIN_PASSWORD`, never from a flag (flags end up in shell history and process lists);
//! only where it comes from is decided here, it is read when connecting.

use crate::error::Error;
use crate::ops::settings::{Connection, Parallelism, StoreSpec, Tokens};
use crate::secret::SecretRef;

use super::{ConnectionArgs, TokenArgs};

/// The client's default bound on requests in flight, raised to `parallelism` when that is
/// higher: each step is one request at a time, so a lower bound would cap the parallelism.
const DEFAULT_MAX_IN_FLIGHT: usize = 16;

/// What the API URL is for, which says why it is needed when missing. Every command needs one:
/// `apply --plan` too, since the URL decides where the admin email and password are sent, and
/// a saved plan is a file anyone along the way can edit (it never chooses the API; `ops::apply`
/// refuses a plan made for another).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Url {
    Required,
    /// `apply --plan`: the plan's `api_url` must be this one.
    ForSavedPlan,
}

/// Build the connection settings for a run of `parallelism` steps (1 for read-only commands),
/// or say which setting is missing and how to give it. The second value is a warning to show.
pub fn connection(
    args: &ConnectionArgs,
    env: &dyn Fn(&str) -> Option<String>,
    url: Url,
    parallelism: usize,
) -> Result<(Connection, Option<String>), Error> {
    if args.api_url.is_none() {
        return Err(match url {
            Url::Required => Error::Usage {
                message: "no Oz API URL given".into(),
                help: "pass `--api-url https://…` or set `OZ_API_URL`".into(),
            },
            Url::ForSavedPlan => crate::ops::apply::no_url_for_saved_plan(),
        });
    }
    let admin_email = args.admin_email.clone().ok_or_else(|| Error::Usage {
        message: "no admin email given".into(),
        help: "pass `--admin-email` or set `OZ_ADMIN_EMAIL`".into(),
    })?;
    let admin_password = match &args.admin_password_file {
        Some(path) => SecretRef::operator_file(path.clone()),
        None if env("OZ_ADMIN_PASSWORD").is_some() => SecretRef::Env("OZ_ADMIN_PASSWORD".into()),
        None => {
            return Err(Error::Usage {
                message: "no admin password given".into(),
                help: "set `OZ_ADMIN_PASSWORD` or pass `--admin-password-file FILE`".into(),
            });
        }
    };
    let (shared, warning) = shared(args, parallelism);
    let connection = Connection {
        api_url: args.api_url.as_deref().map(|u| u.trim_end_matches('/').to_string()),
        admin_email,
        admin_password,
        ca_cert: args.ca_cert.clone(),
        ..shared
    };
    Ok((connection, warning))
}

/// The connection settings that are not per installation (bounds, timeouts, the dialect asked
/// for), for a run of `parallelism` steps; the API, login and CA left empty for the caller to
/// fill. The second value is a warning to show.
pub fn shared(args: &ConnectionArgs, parallelism: usize) -> (Connection, Option<String>) {
    let (max_in_flight, warning) = fit_parallelism(args.max_in_flight, parallelism.max(1));
    let connection = Connection {
        api_url: None,
        admin_email: String::new(),
        admin_password: SecretRef::Env("OZ_ADMIN_PASSWORD".into()),
        api_version: args.api_version,
        ca_cert: None,
        max_rps: args.max_rps,
        max_in_flight,
        adaptive_limit: None,
        request_timeout: args.request_timeout,
        allow_insecure_http: args.allow_insecure_http,
        max_response_bytes: args.max_response_bytes,
        max_objects: args.max_objects,
    };
    (connection, warning)
}

/// `connection` (made for `parallelism.steps()`, with `warning` about `--max-in-flight`) at
/// `parallelism`: with `auto`, the adaptive limit, and no warning (a lower `--max-in-flight`
/// is simply its ceiling); with a number, as it is.
pub fn adapt(
    mut connection: Connection,
    warning: Option<String>,
    parallelism: Parallelism,
) -> (Connection, Option<String>) {
    match parallelism {
        Parallelism::Auto { max } => {
            connection.adaptive_limit = Some(max);
            (connection, None)
        }
        Parallelism::Fixed(_) => (connection, warning),
    }
}

/// The bound on requests in flight for `parallelism` steps: without `--max-in-flight`, the
/// default raised to at least `parallelism`. An explicit `--max-in-flight` below it is kept,
/// since it is there to protect the server, and the warning says the parallelism is capped.
fn fit_parallelism(explicit: Option<usize>, parallelism: usize) -> (usize, Option<String>) {
    match explicit {
        None => (DEFAULT_MAX_IN_FLIGHT.max(parallelism), None),
        Some(bound) if bound.max(1) < parallelism => (
            bound.max(1),
            Some(format!(
                "`--parallelism {parallelism}` is more than `--max-in-flight {bound}`: at most {bound} requests run at once"
            )),
        ),
        Some(bound) => (bound.max(1), None),
    }
}

/// The token store and rotation settings. A store given both ways (`--token-store` or
/// `OZ_TOKEN_STORE`, and `--token-dir` or `OZ_TOKEN_DIR`) is refused rather than one of them
/// silently winning: a pipeline would write its tokens where nobody looks.
pub fn tokens(args: &TokenArgs) -> Result<Tokens, Error> {
    let store = match (&args.token_store, &args.token_dir) {
        (Some(_), Some(_)) => {
            return Err(Error::Usage {
                message: "the token store is given twice: by `--token-store`/`OZ_TOKEN_STORE` and by \
                          `--token-dir`/`OZ_TOKEN_DIR`"
                    .into(),
                help:
                    "keep one: `--token-dir DIR` is short for `--token-store dir:DIR` (check the environment \
                       for the variable you did not mean to set)"
                        .into(),
            });
        }
        (Some(store), None) => store_spec(store)?,
        (None, Some(dir)) => StoreSpec::Dir(dir.clone()),
        (None, None) => StoreSpec::Dir(DEFAULT_TOKEN_DIR.into()),
    };
    // Without a project file `--installation` is given at most once (checked by the caller).
    let installation = args.installation.first();
    if let Some(name) = installation {
        crate::token_store::Installation::check_name(name).map_err(|problem| Error::Usage {
            message: format!("`--installation`/`OZ_INSTALLATION`: {problem}"),
            help: "name the installation tokens are kept under, e.g. `--installation eu-prod` (the default is the API URL's origin)".into(),
        })?;
    }
    Ok(Tokens { store, installation: installation.cloned(), ..tokens_shared(args) })
}

/// The token settings that are not per installation (rotation, the helper's timeout, the
/// shared-directory permission), with the default store and no namespace for the caller to set.
pub fn tokens_shared(args: &TokenArgs) -> Tokens {
    Tokens {
        store: StoreSpec::Dir(DEFAULT_TOKEN_DIR.into()),
        rotate_before: args.rotate_before,
        rotate_tokens: args.rotate_tokens,
        store_timeout: args.store_timeout,
        allow_shared_dir: args.allow_shared_token_dir,
        installation: None,
    }
}

/// How to write a token store, for every error about one.
const STORE_HELP: &str =
    "write `--token-store dir:PATH` or `--token-store 'exec:COMMAND ARGS…'` (see docs/token-stores.md)";

/// The directory store's place when none is given.
const DEFAULT_TOKEN_DIR: &str = "./ozform-tokens";

/// `dir:PATH` or `exec:COMMAND [ARGS…]` (`StoreSpec::parse`), its errors naming the flag.
fn store_spec(value: &str) -> Result<StoreSpec, Error> {
    use crate::token_store::SpecError;
    let message = match StoreSpec::parse(value) {
        Ok(spec) => return Ok(spec),
        Err(SpecError::NoDirectory) => "`--token-store dir:` needs a directory after `dir:`".to_string(),
        Err(SpecError::NoCommand) => "`--token-store exec:` needs a command after `exec:`".to_string(),
        Err(SpecError::Unsplittable) => format!(
            "`--token-store {value}` cannot be split into words: a quote is not closed or a backslash ends it"
        ),
        Err(SpecError::UnknownKind(kind)) => {
            format!("`--token-store {value}`: `{kind}` is not a kind of token store (`dir:` or `exec:`)")
        }
    };
    Err(Error::Usage { message, help: STORE_HELP.into() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn connection_args(flags: &[&str]) -> ConnectionArgs {
        let mut argv =
            vec!["ozform", "apply", "m.yaml", "--api-url", "http://127.0.0.1:1/", "--admin-email", "a@b.c"];
        argv.extend_from_slice(flags);
        match super::super::Cli::try_parse_from(argv).expect("arguments").command {
            super::super::Command::Apply(apply) => apply.connection,
            other => panic!("parsed as {other:?}"),
        }
    }

    fn settings(flags: &[&str], parallelism: usize) -> (Connection, Option<String>) {
        let env = |name: &str| (name == "OZ_ADMIN_PASSWORD").then(|| "pw".to_string());
        connection(&connection_args(flags), &env, Url::Required, parallelism).expect("settings")
    }

    #[test]
    fn the_default_bound_rises_to_the_parallelism_asked_for() {
        assert_eq!(settings(&[], 1).0.max_in_flight, 16);
        let (c, warning) = settings(&[], 32);
        assert_eq!((c.max_in_flight, warning), (32, None));
        assert_eq!(c.api_url.as_deref(), Some("http://127.0.0.1:1"));
        assert_eq!(c.admin_password, SecretRef::Env("OZ_ADMIN_PASSWORD".into()));
    }

    #[test]
    fn the_bounds_against_a_hostile_server_have_their_defaults_and_take_sizes() {
        let (c, _) = settings(&[], 1);
        assert_eq!((c.max_response_bytes, c.max_objects), (64 * 1024 * 1024, 1_000_000));
        let (c, _) = settings(&["--max-response-bytes", "512KiB", "--max-objects", "2000"], 1);
        assert_eq!((c.max_response_bytes, c.max_objects), (512 * 1024, 2000));
        assert_eq!(settings(&["--max-response-bytes", "1000"], 1).0.max_response_bytes, 1000);
    }

    #[test]
    fn a_size_is_bytes_or_a_binary_unit_and_never_zero() {
        use super::super::parse_size;
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("64 mib"), Ok(64 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("100B"), Ok(100));
        assert!(parse_size("0").expect_err("zero").contains("at least 1 byte"));
        assert!(parse_size("64MB").expect_err("not binary").contains("is not a size"));
        assert!(parse_size("-1").expect_err("negative").contains("is not a size"));
        assert!(parse_size("99999999999999999999G").is_err());
    }

    #[test]
    fn an_explicit_bound_below_the_parallelism_is_kept_with_a_warning() {
        let (c, warning) = settings(&["--max-in-flight", "4"], 32);
        assert_eq!(c.max_in_flight, 4);
        assert!(warning.expect("a warning").contains("`--max-in-flight 4`"));
        assert_eq!(settings(&["--max-in-flight", "4"], 4).1, None);
    }

    fn token_args(flags: &[&str]) -> TokenArgs {
        let mut argv = vec!["ozform", "apply", "m.yaml"];
        argv.extend_from_slice(flags);
        match super::super::Cli::try_parse_from(argv).expect("arguments").command {
            super::super::Command::Apply(apply) => apply.tokens,
            other => panic!("parsed as {other:?}"),
        }
    }

    fn store(flags: &[&str]) -> Result<StoreSpec, String> {
        tokens(&token_args(flags)).map(|t| t.store).map_err(|e| e.to_string())
    }

    #[test]
    fn the_token_store_is_a_directory_by_default_and_by_either_flag() {
        assert_eq!(store(&[]), Ok(StoreSpec::Dir("./ozform-tokens".into())));
        assert_eq!(store(&["--token-dir", "t"]), Ok(StoreSpec::Dir("t".into())));
        assert_eq!(store(&["--token-store", "dir:/a b"]), Ok(StoreSpec::Dir("/a b".into())));
    }

    #[test]
    fn an_exec_store_is_split_like_a_shell_would_without_expanding_anything() {
        let argv = |v: &[&str]| Ok(StoreSpec::Exec(v.iter().map(ToString::to_string).collect()));
        assert_eq!(
            store(&["--token-store", r#"exec:helper --ns "my ns" 'a $HOME' b\ c ~ *"#]),
            argv(&["helper", "--ns", "my ns", "a $HOME", "b c", "~", "*"])
        );
        assert_eq!(store(&["--token-store", "exec:  /bin/x  "]), argv(&["/bin/x"]));
    }

    #[test]
    fn a_token_store_that_cannot_be_read_is_a_usage_error_saying_why() {
        let err = |flags: &[&str]| store(flags).expect_err("refused");
        assert!(err(&["--token-store", "exec:x 'open"]).contains("a quote is not closed"));
        assert!(err(&["--token-store", "exec:"]).contains("needs a command"));
        assert!(err(&["--token-store", "dir:"]).contains("needs a directory"));
        assert!(err(&["--token-store", "vault:x"]).contains("`vault` is not a kind of token store"));
    }

    #[test]
    fn a_token_store_given_both_ways_is_a_usage_error_naming_both() {
        let err = store(&["--token-store", "dir:a", "--token-dir", "b"]).expect_err("refused");
        assert!(err.contains("`--token-store`/`OZ_TOKEN_STORE`"), "{err}");
        assert!(err.contains("`--token-dir`/`OZ_TOKEN_DIR`"), "{err}");
    }

    #[test]
    fn no_password_source_is_a_usage_error_naming_both_ways_to_give_one() {
        let err = connection(&connection_args(&[]), &|_| None, Url::Required, 1)
            .expect_err("no password")
            .to_string();
        assert_eq!(err, "no admin password given");
    }
}
