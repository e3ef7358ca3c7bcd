//! Connection settings shared by `plan`, `apply` and `export`: raw flags and environment →
//! a validated `oz::ClientConfig`. The admin password comes from a file or `OZ_ADMIN_PASSWORD`,
//! never from a flag (flags end up in shell history and process lists).

use std::time::Duration;

use crate::error::Error;
use crate::oz::{ClientConfig, VersionSetting};
use crate::secret::{Secret, SecretRef};

use super::{ApiVersionArg, ConnectionArgs};

/// Build the client configuration, or say which setting is missing and how to give it.
pub fn client_config(
    args: &ConnectionArgs,
    env: &dyn Fn(&str) -> Option<String>,
    read_only: bool,
    fallback_url: Option<&str>,
) -> Result<ClientConfig, Error> {
    let api_url =
        args.api_url.clone().or_else(|| fallback_url.map(str::to_string)).ok_or_else(|| Error::Usage {
            message: "no Oz API URL given".into(),
            help: "pass `--api-url https://…` or set `OZ_API_URL`".into(),
        })?;
    let api_url = api_url.trim_end_matches('/').to_string();
    if !(api_url.starts_with("http://") || api_url.starts_with("https://")) {
        return Err(Error::Usage {
            message: format!("`{api_url}` is not an http(s) URL"),
            help: "write the API URL with its scheme, e.g. `https://oz.example.com`".into(),
        });
    }
    let admin_email = args.admin_email.clone().ok_or_else(|| Error::Usage {
        message: "no admin email given".into(),
        help: "pass `--admin-email` or set `OZ_ADMIN_EMAIL`".into(),
    })?;
    let admin_password = admin_password(args, env)?;
    let mut config = ClientConfig::new(api_url, admin_email, admin_password);
    config.api_version = match args.api_version {
        ApiVersionArg::V5 => VersionSetting::Fixed(crate::model::ApiVersion::V5),
        ApiVersionArg::V6 => VersionSetting::Fixed(crate::model::ApiVersion::V6),
        ApiVersionArg::Auto => VersionSetting::Auto,
    };
    config.max_in_flight = args.max_in_flight.unwrap_or(config.max_in_flight).max(1);
    config.max_rps = args.max_rps;
    config.request_timeout = args.request_timeout;
    config.connect_timeout = Duration::from_secs(10).min(args.request_timeout);
    config.ca_cert.clone_from(&args.ca_cert);
    config.read_only = read_only;
    Ok(config)
}

/// Let `parallelism` steps run at once: without `--max-in-flight`, the client bound is raised to
/// at least `parallelism` (each step is one request at a time, so a lower bound would silently
/// cap the parallelism asked for). An explicit `--max-in-flight` below it is kept, since it is
/// there to protect the server, and the returned warning says the parallelism is capped.
pub fn fit_parallelism(
    config: &mut ClientConfig,
    args: &ConnectionArgs,
    parallelism: usize,
) -> Option<String> {
    match args.max_in_flight {
        None => {
            config.max_in_flight = config.max_in_flight.max(parallelism);
            None
        }
        Some(bound) if bound < parallelism => Some(format!(
            "`--parallelism {parallelism}` is more than `--max-in-flight {bound}`: at most {bound} requests run at once"
        )),
        Some(_) => None,
    }
}

fn admin_password(args: &ConnectionArgs, env: &dyn Fn(&str) -> Option<String>) -> Result<Secret, Error> {
    let source = match &args.admin_password_file {
        Some(path) => SecretRef::File(path.clone()),
        None if env("OZ_ADMIN_PASSWORD").is_some() => SecretRef::Env("OZ_ADMIN_PASSWORD".into()),
        None => {
            return Err(Error::Usage {
                message: "no admin password given".into(),
                help: "set `OZ_ADMIN_PASSWORD` or pass `--admin-password-file FILE`".into(),
            });
        }
    };
    Ok(source.resolve(env)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn connection(flags: &[&str]) -> ConnectionArgs {
        let mut argv =
            vec!["ozform", "apply", "m.yaml", "--api-url", "http://127.0.0.1:1", "--admin-email", "a@b.c"];
        argv.extend_from_slice(flags);
        match super::super::Cli::try_parse_from(argv).expect("arguments").command {
            super::super::Command::Apply(apply) => apply.connection,
            other => panic!("parsed as {other:?}"),
        }
    }

    fn config(args: &ConnectionArgs) -> ClientConfig {
        let env = |name: &str| (name == "OZ_ADMIN_PASSWORD").then(|| "pw".to_string());
        client_config(args, &env, false, None).expect("config")
    }

    #[test]
    fn the_default_bound_rises_to_the_parallelism_asked_for() {
        let args = connection(&[]);
        let mut cfg = config(&args);
        assert_eq!(cfg.max_in_flight, 16);
        assert_eq!(fit_parallelism(&mut cfg, &args, 32), None);
        assert_eq!(cfg.max_in_flight, 32);
        assert_eq!(fit_parallelism(&mut cfg, &args, 8), None);
        assert_eq!(cfg.max_in_flight, 32);
    }

    #[test]
    fn an_explicit_bound_below_the_parallelism_is_kept_with_a_warning() {
        let args = connection(&["--max-in-flight", "4"]);
        let mut cfg = config(&args);
        let warning = fit_parallelism(&mut cfg, &args, 32).expect("a warning");
        assert_eq!(cfg.max_in_flight, 4);
        assert!(warning.contains("`--max-in-flight 4`"), "{warning}");
        assert_eq!(fit_parallelism(&mut cfg, &args, 4), None);
    }
}
