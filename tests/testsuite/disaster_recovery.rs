//! `docs/disaster-recovery.md` run as written: its `sh` blocks, in order, in one bash (`-e`:
//! every line must succeed) on a fresh account, from an API 5 emulator holding 2 companies and 40
//! service users to an empty API 6 emulator. Then what the guide promises, checked against the
//! new installation: every user logs in with the password kept in its token record, every token
//! authenticates, the id map pairs every object's old id with its new one, and the plan the
//! guide runs last says `No changes.` (its `--detailed-exitcode` exits 0, or bash stops).

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::root;
use ozform::emulator::{self, CompanyRecord, EmulatorConfig, Handle, Snapshot, UserRecord};
use ozform::model::ApiVersion;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_ozform");
const COMPANIES: [&str; 2] = ["Acme Bank", "Globex Insurance"];
const USERS: usize = 40;

/// Every fenced block of `language` in `text`, in order.
fn blocks(text: &str, language: &str) -> Vec<String> {
    let fence = format!("```{language}\n");
    text.split(&fence).skip(1).map(|b| b.split("```").next().unwrap().to_string()).collect()
}

/// 2 companies and 40 active API 5 service users (20 each), with names and varied permissions.
fn old_installation() -> Snapshot {
    let companies: Vec<CompanyRecord> = COMPANIES
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut c = CompanyRecord::new(*name);
            c.technical_meta_data = json!({"tier": if i == 0 { "gold" } else { "silver" }});
            c
        })
        .collect();
    let users = (0..USERS)
        .map(|n| {
            let company = &companies[n % 2];
            let domain = if n % 2 == 0 { "acme.example" } else { "globex.example" };
            let mut u = UserRecord::new(
                format!("svc-{n:02}@{domain}"),
                "CLIENT".into(),
                Some(company.company_id.clone()),
            );
            u.is_service = true;
            u.first_name = "Service".into();
            u.last_name = format!("Number {n}");
            u.permissions.documents = n % 3 != 0;
            u
        })
        .collect();
    Snapshot { companies, users, service_tokens: vec![] }
}

/// Run `script` in bash with an empty `HOME`, `ozform` first on `PATH`, and only `env`.
fn bash(script: &str, work: &Path, env: &[(&str, String)]) -> (bool, String, String) {
    let bin = work.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(BIN, bin.join("ozform")).unwrap();
    let home = work.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut command = Command::new("bash");
    command
        .args(["-e", "-c", script])
        .current_dir(work)
        .env_clear()
        .env("HOME", &home)
        .env("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()))
        .env("NO_COLOR", "1");
    for (name, value) in env {
        command.env(name, value);
    }
    let out = command.output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

fn connection(prefix: &str, handle: &Handle) -> [(String, String); 3] {
    [
        (format!("{prefix}_API_URL"), handle.url()),
        (format!("{prefix}_ADMIN_EMAIL"), handle.admin_email().to_string()),
        (format!("{prefix}_ADMIN_PASSWORD"), handle.admin_password().expose().to_string()),
    ]
}

/// The token records the guide's store holds for the new installation, by lower-cased email.
fn records(work: &Path) -> BTreeMap<String, Value> {
    let dir = work.join("ozform-tokens/eu-prod");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let record: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            (record["email"].as_str().unwrap().to_string(), record)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disaster_recovery_guide_rebuilds_an_api_5_installation_in_an_empty_api_6_one() {
    let guide = std::fs::read_to_string(root().join("docs/disaster-recovery.md")).unwrap();
    let script = blocks(&guide, "sh").join("\n");
    let mut old_config = EmulatorConfig::new(ApiVersion::V5);
    old_config.seed = Some(old_installation());
    let old = emulator::start(old_config).await.unwrap();
    let new = emulator::start(EmulatorConfig::new(ApiVersion::V6)).await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let env: Vec<(String, String)> = [connection("OLD", &old), connection("NEW", &new)].concat();

    let dir = work.path().to_path_buf();
    let run = {
        let env = env.clone();
        tokio::task::spawn_blocking(move || {
            let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            bash(&script, &dir, &env)
        })
    };
    let (ok, stdout, stderr) = run.await.unwrap();
    assert!(ok, "the guide's commands failed:\n--- stdout\n{stdout}\n--- stderr\n{stderr}");

    // The summary the guide shows, as shown.
    for line in blocks(&guide, "text").concat().lines() {
        assert!(stdout.contains(line), "the guide shows `{line}`, the run said:\n{stdout}");
    }
    assert_eq!(stdout.matches("No changes.").count(), 1, "only the last plan: {stdout}");

    let old_state = old.snapshot();
    let new_state = new.snapshot();
    let new_users: Vec<&UserRecord> = new_state.users.iter().filter(|u| u.user_type != "ADMIN").collect();
    assert_eq!(new_users.len(), USERS);
    assert_eq!(new_state.companies.len(), COMPANIES.len());

    // Every user logs in with the password kept in its record; every token authenticates as it.
    let records = records(work.path());
    assert_eq!(records.len(), USERS, "{:?}", records.keys());
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Loopback only: no proxy from the environment.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    for user in &new_users {
        let record = &records[&user.email.to_lowercase()];
        assert_eq!(record["user_id"], json!(user.user_id));
        let company = new_state.companies.iter().find(|c| Some(&c.company_id) == user.company_id.as_ref());
        assert_eq!(record["company"], json!(company.unwrap().name));
        let password =
            record["password"].as_str().unwrap_or_else(|| panic!("no password kept for {}", user.email));
        assert_eq!(password.len(), 32);
        let login = http
            .post(format!("{}/api/authorize/auth", new.url()))
            .json(&json!({"credentials": {"email": user.email, "password": password}}))
            .send()
            .await
            .unwrap();
        assert_eq!(login.status(), 200, "{} cannot log in with the password kept for it", user.email);
        let me = http
            .get(format!("{}/api/users/{}", new.url(), user.user_id))
            .header("X-Forensic-Access-Token", record["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(me.status(), 200, "the token of {} does not authenticate", user.email);
        for text in [&stdout, &stderr] {
            assert!(!text.contains(password), "a generated password was printed");
            assert!(!text.contains(record["access_token"].as_str().unwrap()), "a token was printed");
        }
    }

    // The id map pairs every object's old id with its new one, and holds nothing else.
    let map: BTreeMap<String, Value> =
        serde_json::from_str(&std::fs::read_to_string(work.path().join("recovery/id-map.json")).unwrap())
            .unwrap();
    let mut expected = BTreeMap::new();
    for company in &new_state.companies {
        let was = old_state.companies.iter().find(|c| c.name == company.name).unwrap();
        expected.insert(
            format!("company/{}", company.name),
            json!({"source_id": was.company_id, "live_id": company.company_id}),
        );
    }
    for user in &new_users {
        let was = old_state.users.iter().find(|u| u.email == user.email).unwrap();
        expected.insert(
            format!("service_user/{}", user.email),
            json!({"source_id": was.user_id, "live_id": user.user_id}),
        );
    }
    assert_eq!(map, expected);
    // The guide's step 5: one line per object.
    let tsv = std::fs::read_to_string(work.path().join("recovery/old-to-new.tsv")).unwrap();
    assert_eq!(tsv.lines().count(), COMPANIES.len() + USERS);

    old.shutdown().await;
    new.shutdown().await;
}
