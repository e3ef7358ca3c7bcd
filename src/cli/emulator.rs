//! `ozform emulator`: serve the built-in Oz API until Ctrl-C.
//!
//! Turns the raw flags into an `EmulatorConfig` (address, dialect, admin account, seed,
//! faults, capacity), starts the emulator and says where it listens. The admin password comes from
//! `--admin-password-file`, else `OZ_ADMIN_PASSWORD`, else it is `EmulatorConfig::new`'s
//! documented default (`emulator-admin`, named in `ozform emulator --help`). No password is
//! ever printed: without a source, a warning says that the default is in use and where it is
//! documented, not what it is. Request lines are logged through `tracing` at info (`-v` shows
//! them).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;

use crate::emulator::{self, EmulatorConfig, EmulatorError, Faults, Snapshot};
use crate::error::{Error, Exit};
use crate::output::Output;
use crate::secret::{Secret, SecretRef, process_env};

pub async fn run(args: super::EmulatorArgs, output: &Output) -> Result<Exit, Error> {
    let (config, default_password) = build_config(&args, &process_env)?;
    let handle = emulator::start(config).await?;
    // One status line each: a status line is escaped whole, line breaks included.
    let url = handle.url();
    output.status(&format!("ozform emulator (API {}) listening on {url}", handle.api_version()));
    output.status(&format!("admin: {}", handle.admin_email()));
    output.status(&format!("state dump (usable as `--seed`): {url}/_emulator/state"));
    if default_password {
        output.warn(
            "no admin password given (`--admin-password-file` or `OZ_ADMIN_PASSWORD`): the default admin password is in use, see `ozform emulator --help`",
        );
    }
    output.status("press Ctrl-C to stop");
    let stopped = tokio::signal::ctrl_c().await;
    handle.shutdown().await;
    stopped.map_err(|e| Error::Io { action: "wait for", path: "Ctrl-C".into(), reason: e.to_string() })?;
    Ok(Exit::Success)
}

/// The emulator's configuration from the flags; true when no password source was given and
/// the admin password is the documented default.
fn build_config(
    args: &super::EmulatorArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(EmulatorConfig, bool), Error> {
    let listen = listen_addr(&args.listen)?;
    let api_version = args.api_version;
    if !(0.0..=1.0).contains(&args.fault_rate) {
        return Err(Error::Usage {
            message: format!("`--fault-rate {}` is not a fraction", args.fault_rate),
            help: "give a number from 0 to 1, e.g. `0.1` for one request in ten".into(),
        });
    }
    let given = match &args.admin_password_file {
        Some(path) => Some(SecretRef::operator_file(path.clone()).resolve(env)?),
        None => env("OZ_ADMIN_PASSWORD").filter(|v| !v.is_empty()).map(Secret::new),
    };
    let default_password = given.is_none();
    let mut config = EmulatorConfig::new(api_version);
    config.listen = listen;
    config.admin_email.clone_from(&args.admin_email);
    if let Some(password) = given {
        config.admin_password = password;
    }
    config.faults = Faults::mixed(args.fault_rate, args.latency_ms);
    config.capacity = args.capacity.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    config.shed_after = args.shed_after_ms.map(std::time::Duration::from_millis);
    config.seed = args.seed.as_deref().map(read_seed).transpose()?;
    config.log_requests = true;
    Ok((config, default_password))
}

/// `127.0.0.1:8080`, `[::1]:8080` or `localhost:8080` (the first address the name resolves to).
fn listen_addr(raw: &str) -> Result<SocketAddr, Error> {
    let unusable = || Error::Usage {
        message: format!("`--listen {raw}` is not an address to listen on"),
        help: "write a host and port, e.g. `127.0.0.1:8080` or `localhost:8080`".into(),
    };
    if let Ok(addr) = raw.parse() {
        return Ok(addr);
    }
    raw.to_socket_addrs().map_err(|_| unusable())?.next().ok_or_else(unusable)
}

fn read_seed(path: &Path) -> Result<Snapshot, EmulatorError> {
    let seed_error = |reason: String| EmulatorError::Seed { path: path.display().to_string(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| seed_error(e.kind().to_string()))?;
    let seed: Snapshot = serde_json::from_str(&text).map_err(|e| seed_error(e.to_string()))?;
    seed.check_ids().map_err(seed_error)?;
    Ok(seed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::EmulatorArgs;
    use crate::model::ApiVersion;

    fn args() -> EmulatorArgs {
        EmulatorArgs {
            listen: "127.0.0.1:0".into(),
            api_version: ApiVersion::V5,
            admin_email: "root@x.test".into(),
            admin_password_file: None,
            seed: None,
            latency_ms: 3,
            fault_rate: 0.2,
            capacity: None,
            shed_after_ms: None,
        }
    }

    #[test]
    fn the_admin_password_comes_from_the_environment_before_the_documented_default() {
        let (config, default_password) =
            build_config(&args(), &|n| (n == "OZ_ADMIN_PASSWORD").then(|| "canary-env".to_string()))
                .expect("config");
        assert!(!default_password);
        assert_eq!(config.admin_password.expose(), "canary-env");
        assert_eq!(config.api_version, ApiVersion::V5);
        assert_eq!(config.faults.latency_ms, 3);
        assert!((config.faults.internal_error - 0.05).abs() < 1e-9);
        let (config, default_password) = build_config(&args(), &|_| None).expect("config");
        assert!(default_password);
        assert_eq!(config.admin_password.expose(), emulator::DEFAULT_ADMIN_PASSWORD);
    }

    #[test]
    fn the_help_of_the_password_file_flag_documents_the_default_password() {
        use clap::CommandFactory as _;
        let command = crate::cli::Cli::command();
        let help = command
            .find_subcommand("emulator")
            .and_then(|c| c.get_arguments().find(|a| a.get_id() == "admin_password_file"))
            .and_then(clap::Arg::get_help)
            .map(ToString::to_string)
            .unwrap_or_default();
        assert!(help.contains(&format!("`{}`", emulator::DEFAULT_ADMIN_PASSWORD)), "{help}");
    }

    #[test]
    fn capacity_and_shed_after_reach_the_configuration() {
        let (config, _) = build_config(&args(), &|_| None).expect("config");
        assert_eq!((config.capacity, config.shed_after), (None, None));
        let limited = EmulatorArgs { capacity: Some(6), shed_after_ms: Some(30), ..args() };
        let (config, _) = build_config(&limited, &|_| None).expect("config");
        assert_eq!(config.capacity, Some(6));
        assert_eq!(config.shed_after, Some(std::time::Duration::from_millis(30)));
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        let bad_listen = EmulatorArgs { listen: "localhost".into(), ..args() };
        let named = EmulatorArgs { listen: "localhost:0".into(), ..args() };
        assert!(build_config(&named, &|_| None).is_ok_and(|(c, _)| c.listen.ip().is_loopback()));
        assert!(matches!(build_config(&bad_listen, &|_| None), Err(Error::Usage { .. })));
        let bad_rate = EmulatorArgs { fault_rate: 2.0, ..args() };
        assert!(matches!(build_config(&bad_rate, &|_| None), Err(Error::Usage { .. })));
    }

    #[test]
    fn a_seed_that_is_not_a_snapshot_or_holds_an_id_that_is_not_a_uuid_is_a_seed_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("seed.json");
        std::fs::write(&path, r#"{"companies": 3}"#).expect("write");
        let err = read_seed(&path).expect_err("bad seed");
        assert!(err.to_string().contains("seed.json"), "{err}");
        std::fs::write(&path, r#"{"companies": [{"name": "A"}]}"#).expect("write");
        assert_eq!(read_seed(&path).expect("seed").companies[0].name, "A");
        std::fs::write(&path, r#"{"companies": [{"company_id": "c1", "name": "A"}]}"#).expect("write");
        let err = read_seed(&path).expect_err("non-UUID id");
        let shown = err.to_string();
        assert!(shown.contains("seed.json") && shown.contains("`c1`, which is not a UUID"), "{shown}");
    }
}
