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
    config.max_in_flight = args.max_in_flight.max(1);
    config.max_rps = args.max_rps;
    config.request_timeout = args.request_timeout;
    config.connect_timeout = Duration::from_secs(10).min(args.request_timeout);
    config.ca_cert.clone_from(&args.ca_cert);
    config.read_only = read_only;
    Ok(config)
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
