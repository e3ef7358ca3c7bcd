//! The world of one end-to-end scenario: the built-in emulator started in-process on
//! `127.0.0.1:0`, a temp dir, canary passwords, and everything the runs of the real binary
//! printed, so that `World::assert_no_secrets` can scan it all. Shared by every test file that
//! runs `ozform` against the emulator.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ozform::emulator::{self, EmulatorConfig, Handle};
use ozform::model::ApiVersion;
use ozform::secret::Secret;
use serde_json::{Value, json};

use super::{Cli, Run, root};

/// The password variables of `examples/basic` and the users they belong to.
pub const BASIC_PASSWORDS: [&str; 3] = ["ACME_WEB_PASSWORD", "ACME_BATCH_PASSWORD", "GLOBEX_CLAIMS_PASSWORD"];
pub const BASIC_USERS: [&str; 3] =
    ["svc-web@acme.example", "svc-batch@acme.example", "svc-claims@globex.example"];
pub const BASIC_TOKEN_USERS: [&str; 2] = ["svc-claims@globex.example", "svc-web@acme.example"];
pub const BASIC: &str = "examples/basic";

/// A fresh canary secret of `kind`: a value no output may ever show.
pub fn canary(kind: &str) -> String {
    format!("canary-{kind}-{}", uuid::Uuid::new_v4().simple())
}

/// The world of one scenario: an emulator, a temp dir, canary passwords, and what was printed.
pub struct World {
    pub emu: Handle,
    pub dir: tempfile::TempDir,
    pub admin_password: String,
    /// Environment variable → canary password, passed to every run.
    pub passwords: BTreeMap<String, String>,
    /// Other secrets a run was given (a wrong admin password tried, a password file).
    pub other_secrets: Mutex<Vec<String>>,
    /// stdout and stderr of every run, for the canary scan.
    pub printed: Mutex<Vec<(String, String)>>,
    /// Every `access_token` seen in the token dir after any run (files get replaced).
    pub tokens: Mutex<BTreeSet<String>>,
}

impl World {
    pub async fn start(api_version: ApiVersion) -> Self {
        Self::with(EmulatorConfig::new(api_version)).await
    }

    pub async fn with(mut config: EmulatorConfig) -> Self {
        let admin_password = canary("admin-pw");
        config.admin_password = Secret::new(admin_password.clone());
        let emu = emulator::start(config).await.unwrap();
        let passwords = BASIC_PASSWORDS.iter().map(|name| ((*name).to_string(), canary("pw"))).collect();
        Self {
            emu,
            dir: tempfile::tempdir().unwrap(),
            admin_password,
            passwords,
            other_secrets: Mutex::default(),
            printed: Mutex::default(),
            tokens: Mutex::default(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn token_dir(&self) -> PathBuf {
        self.path("tokens")
    }

    /// The binary, run from the repository root, with the connection settings and every
    /// canary password in its environment.
    pub fn cli(&self) -> Cli {
        let mut cli = Cli::new()
            .current_dir(root())
            .env("OZ_API_URL", self.emu.url())
            .env("OZ_ADMIN_EMAIL", self.emu.admin_email())
            .env("OZ_ADMIN_PASSWORD", &self.admin_password);
        for (name, value) in &self.passwords {
            cli = cli.env(name, value);
        }
        cli
    }

    /// `ozform <command> --token-dir <tmp>/tokens <args…>`.
    pub fn command(&self, command: &str, args: &[&str]) -> Cli {
        let token_dir = self.token_dir().to_str().unwrap().to_string();
        self.cli().args([command, "--token-dir", &token_dir]).args(args)
    }

    /// Run the binary on a blocking thread (the emulator keeps serving on the runtime) and
    /// keep what it printed for the canary scan.
    pub async fn run(&self, cli: Cli) -> Run {
        let run = tokio::task::spawn_blocking(move || cli.run()).await.unwrap();
        self.printed.lock().unwrap().push((run.stdout.clone(), run.stderr.clone()));
        self.harvest_tokens();
        run
    }

    pub async fn plan(&self, args: &[&str]) -> Run {
        self.run(self.command("plan", args)).await
    }

    pub async fn apply(&self, args: &[&str]) -> Run {
        self.run(self.command("apply", args)).await
    }

    /// Apply `examples/basic` and check it went through.
    pub async fn apply_basic(&self) -> Run {
        self.apply(&["--auto-approve", BASIC]).await.code(0)
    }

    /// Plan again: exit 0 with `--detailed-exitcode` and "No changes.".
    pub async fn assert_converged(&self, paths: &[&str]) {
        let mut args = vec!["--detailed-exitcode"];
        args.extend_from_slice(paths);
        let run = self.plan(&args).await.code(0);
        assert!(run.stdout.contains("No changes."), "{}", run.stdout);
    }

    /// The directory the default `dir:` store keeps this world's tokens in: the token
    /// directory's subdirectory of the emulator's installation (its URL's origin, encoded).
    pub fn store_dir(&self) -> PathBuf {
        let installation = ozform::token_store::Installation::of_api(&self.emu.url());
        self.token_dir().join(ozform::token_store::naming::encode(installation.name()))
    }

    /// Token files (`*.json`, not hidden) anywhere under the token directory, by file name,
    /// parsed: the `dir:` store's of every installation, and those a test helper keeps there.
    pub fn token_files(&self) -> BTreeMap<String, Value> {
        if !self.token_dir().is_dir() {
            return BTreeMap::new();
        }
        files_under(&self.token_dir())
            .into_iter()
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap())
            })
            .collect()
    }

    pub fn harvest_tokens(&self) {
        let mut tokens = self.tokens.lock().unwrap();
        for file in self.token_files().values() {
            if let Some(token) = file["access_token"].as_str() {
                tokens.insert(token.to_string());
            }
        }
    }

    /// The canary scan: no password (of a user or the admin) and no issued `access_token` in
    /// anything a run printed, in any file the runs wrote (saved plans, manifests) or in the
    /// emulator's state dump; token files may hold their token but no password.
    pub fn assert_no_secrets(&self) {
        self.harvest_tokens();
        let mut passwords: Vec<(String, &str)> =
            self.passwords.iter().map(|(name, value)| (value.clone(), name.as_str())).collect();
        passwords.push((self.admin_password.clone(), "the admin password"));
        for other in self.other_secrets.lock().unwrap().iter() {
            passwords.push((other.clone(), "another secret a run was given"));
        }
        let tokens: Vec<(String, &str)> =
            self.tokens.lock().unwrap().iter().map(|t| (t.clone(), "an issued access_token")).collect();
        let everything: Vec<&(String, &str)> = passwords.iter().chain(&tokens).collect();

        let check = |what: &str, text: &str, secrets: &[&(String, &str)]| {
            for (secret, kind) in secrets {
                assert!(!text.contains(secret.as_str()), "{what} shows {kind}:\n{text}");
            }
        };
        let printed = self.printed.lock().unwrap();
        assert!(!printed.is_empty(), "the scan needs runs to scan");
        for (i, (stdout, stderr)) in printed.iter().enumerate() {
            check(&format!("stdout of run #{i}"), stdout, &everything);
            check(&format!("stderr of run #{i}"), stderr, &everything);
        }
        let passwords_only: Vec<&(String, &str)> = passwords.iter().collect();
        for file in files_under(self.dir.path()) {
            let text = String::from_utf8_lossy(&std::fs::read(&file).unwrap()).into_owned();
            let secrets = if file.starts_with(self.token_dir()) { &passwords_only } else { &everything };
            check(&format!("file {}", file.display()), &text, secrets);
        }
        check(
            "the emulator's state dump",
            &serde_json::to_string(&self.emu.snapshot()).unwrap(),
            &everything,
        );
    }

    /// Log in as the admin over HTTP (for changes made behind ozform's back).
    pub async fn admin_session(&self) -> (reqwest::Client, String) {
        // reqwest is built without a default crypto provider; plain HTTP still wants one set.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::new();
        let answer: Value = http
            .post(format!("{}/api/authorize/auth", self.emu.url()))
            .json(&json!({"credentials": {"email": self.emu.admin_email(), "password": self.admin_password}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (http, answer["access_token"].as_str().unwrap().to_string())
    }

    pub fn user(&self, email: &str) -> ozform::emulator::UserRecord {
        self.emu.snapshot().users.into_iter().find(|u| u.email == email).unwrap()
    }

    pub fn company_id(&self, name: &str) -> String {
        self.emu.snapshot().companies.into_iter().find(|c| c.name == name).unwrap().company_id
    }
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// Run a scenario under API 6 and under API 5, as two tests of a module named after it.
macro_rules! under_both_dialects {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn under_api_6() {
                super::$scenario(ozform::model::ApiVersion::V6).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn under_api_5() {
                super::$scenario(ozform::model::ApiVersion::V5).await;
            }
        }
    )*};
}
