//! Token stores end to end (issue #13): the real `ozform` binary against the built-in
//! emulator with `--token-store exec:…`, the helper protocol spoken by the helpers in
//! `tests/fixtures/helpers/` (a healthy one, one whose `check` fails, one that hangs, one that
//! prints garbage, one that echoes its input to stderr). Every password is a canary and every
//! issued token lands where `World` harvests it; each scenario ends with the canary scan.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use crate::common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::world::{BASIC, BASIC_PASSWORDS, BASIC_TOKEN_USERS, World};
use common::{Run, root};
use ozform::model::ApiVersion;
use serde_json::Value;

under_both_dialects!(a_helper_store_keeps_tokens_where_a_fresh_runner_finds_them);

fn helper(name: &str) -> PathBuf {
    root().join("tests/fixtures/helpers").join(name)
}

/// `--token-store exec:<helper> ARGS` with the helper's store directory (the world's token
/// directory, so the canary scan knows every token stored there) and some of the variables
/// recipes need in the environment.
fn store_cli(w: &World, command: &str, store: &str, cwd: &Path) -> common::Cli {
    w.cli()
        .current_dir(cwd)
        .env("OZFORM_TEST_STORE_DIR", w.token_dir())
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env("VAULT_ADDR", "http://127.0.0.1:1")
        .env("AWS_REGION", "eu-west-1")
        .args([command, "--token-store", store])
}

fn basic() -> String {
    root().join(BASIC).to_str().unwrap().to_string()
}

/// `text` with miette's wrapping undone: words joined by single spaces, its `|` gutters gone.
fn flat(text: &str) -> String {
    text.split_whitespace().filter(|w| *w != "|").collect::<Vec<_>>().join(" ")
}

fn issued_tokens(w: &World) -> usize {
    w.emu.snapshot().service_tokens.len()
}

/// The calls the healthy helper logged: (verb, args, env names).
fn calls(w: &World) -> Vec<(String, Vec<String>, BTreeSet<String>)> {
    let log = std::fs::read_to_string(w.token_dir().join("calls.log")).unwrap_or_default();
    log.lines()
        .map(|line| {
            let call: Value = serde_json::from_str(line).unwrap();
            let strings = |v: &Value| -> Vec<String> {
                v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
            };
            (
                call["verb"].as_str().unwrap().to_string(),
                strings(&call["args"]),
                strings(&call["env"]).into_iter().collect(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The done-means scenario: apply through a helper, then plan and apply from fresh, empty
// working directories (a pipeline's fresh runners) with the same store: nothing to do.

async fn a_helper_store_keeps_tokens_where_a_fresh_runner_finds_them(api_version: ApiVersion) {
    let w = World::start(api_version).await;
    let store = format!("exec:{} --label 'two words' x\\ y", helper("healthy").display());
    let first_runner = tempfile::tempdir().unwrap();
    let run =
        w.run(store_cli(&w, "apply", &store, first_runner.path()).args(["--auto-approve", &basic()])).await;
    let run = run.code(0);
    assert!(run.stdout.contains("2 tokens to issue"), "{}", run.stdout);
    assert_eq!(issued_tokens(&w), 2);
    let files = w.token_files();
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(names, BASIC_TOKEN_USERS.map(|e| format!("{e}.json")));
    for email in BASIC_TOKEN_USERS {
        let record = &files[&format!("{email}.json")];
        assert_eq!(record["user_id"].as_str(), Some(w.user(email).user_id.as_str()));
        assert_eq!(record["api_url"].as_str(), Some(w.emu.url().as_str()));
        assert!(record["access_token"].as_str().is_some_and(|t| !t.is_empty()));
    }

    // A fresh runner: an empty working directory, the same store. Nothing to do, nothing left
    // behind (no `./ozform-tokens`).
    let second_runner = tempfile::tempdir().unwrap();
    let run = w
        .run(store_cli(&w, "plan", &store, second_runner.path()).args(["--detailed-exitcode", &basic()]))
        .await
        .code(0);
    assert!(run.stdout.contains("No changes."), "{}", run.stdout);
    w.emu.reset_stats();
    let run = w
        .run(store_cli(&w, "apply", &store, second_runner.path()).args(["--auto-approve", &basic()]))
        .await
        .code(0);
    assert!(run.stdout.contains("No changes."), "{}", run.stdout);
    assert_eq!(w.emu.stats().mutating_requests, 0);
    assert_eq!(issued_tokens(&w), 2, "a second apply issues no token");
    assert_eq!(std::fs::read_dir(second_runner.path()).unwrap().count(), 0);

    // The protocol as the helper saw it: its own arguments, then the verb; `check` before the
    // first store; the environment without any password, with what recipes need.
    let calls = calls(&w);
    let verbs: Vec<&str> = calls.iter().map(|(verb, _, _)| verb.as_str()).collect();
    assert_eq!(verbs, ["list", "check", "store", "store", "list", "list"]);
    for (verb, args, env) in &calls {
        assert_eq!(args, &["--label", "two words", "x y"], "{verb}");
        for hidden in BASIC_PASSWORDS.iter().chain(&["OZ_ADMIN_PASSWORD"]) {
            assert!(!env.contains(*hidden), "`{verb}` was given `{hidden}`");
        }
        for given in ["KUBECONFIG", "VAULT_ADDR", "AWS_REGION", "OZ_API_URL", "PATH"] {
            assert!(env.contains(given), "`{verb}` was not given `{given}`");
        }
    }
    w.assert_no_secrets();
}

// ---------------------------------------------------------------------------------------------
// A store that cannot keep a token: no token is issued, and the helper says why.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_check_issues_no_token_and_exits_1_with_the_helpers_message() {
    let w = World::start(ApiVersion::V6).await;
    std::fs::create_dir_all(w.token_dir()).unwrap();
    let store = format!("exec:{}", helper("fails-check").display());
    let run = w.run(store_cli(&w, "apply", &store, &root()).args(["--auto-approve", BASIC])).await.code(1);
    assert!(flat(&run.stderr).contains("ozform::token_store::helper_failed"), "{}", run.stderr);
    assert!(flat(&run.stderr).contains("failed `check`: it exited with status 3"), "{}", run.stderr);
    assert!(flat(&run.stderr).contains("permission denied for role ozform-writer"), "{}", run.stderr);
    assert_eq!(issued_tokens(&w), 0);
    assert_eq!(w.emu.stats().mutating_requests, 0, "nothing is changed before the store is proven");
    assert!(!w.token_dir().join("unexpected-calls").exists());
    w.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_helper_is_stopped_at_the_timeout_with_everything_it_started() {
    let w = World::start(ApiVersion::V6).await;
    std::fs::create_dir_all(w.token_dir()).unwrap();
    let store = format!("exec:{}", helper("hangs").display());
    // Long enough for the helper to start and say what it waits for on a busy machine; the
    // test asserts what ozform does at the bound, never how long anything took.
    let run = w
        .run(store_cli(&w, "apply", &store, &root()).args(["--store-timeout", "5s", "--auto-approve", BASIC]))
        .await
        .code(1);
    assert!(flat(&run.stderr).contains("ozform::token_store::helper_timeout"), "{}", run.stderr);
    assert!(flat(&run.stderr).contains("ran `check` for longer than 5s and was stopped"), "{}", run.stderr);
    assert!(flat(&run.stderr).contains("waiting for the secret store to answer"), "{}", run.stderr);
    assert_eq!(issued_tokens(&w), 0);
    // The helper and its grandchild are gone (a zombie waiting for a reaper is gone enough).
    let pids = std::fs::read_to_string(w.token_dir().join("pids")).unwrap();
    for pid in pids.split_whitespace() {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit(')').next().unwrap_or_default().split_whitespace().next();
        assert!(matches!(state, None | Some("Z" | "X")), "process {pid} still runs: {stat}");
    }
    w.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_helper_printing_garbage_fails_the_plan_without_quoting_what_it_printed() {
    let w = World::start(ApiVersion::V6).await;
    let store = format!("exec:{}", helper("garbage").display());
    let run = w.run(store_cli(&w, "plan", &store, &root()).args([BASIC])).await.code(1);
    assert!(flat(&run.stderr).contains("ozform::token_store::helper_protocol"), "{}", run.stderr);
    assert!(
        flat(&run.stderr)
            .contains("answered `list` outside the protocol: it printed something that is not JSON"),
        "{}",
        run.stderr
    );
    assert!(flat(&run.stderr).contains("this is a log line on stderr"), "{}", run.stderr);
    assert!(!run.stderr.contains("never-quote-stdout"), "{}", run.stderr);
    assert!(!run.stdout.contains("never-quote-stdout"), "{}", run.stdout);
    w.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_helper_echoing_its_input_to_stderr_has_the_token_redacted() {
    let w = World::start(ApiVersion::V6).await;
    std::fs::create_dir_all(w.token_dir()).unwrap();
    let store = format!("exec:{}", helper("echoes-stdin").display());
    let run = w.run(store_cli(&w, "apply", &store, &root()).args(["--auto-approve", BASIC])).await.code(1);
    let printed = flat(&format!("{}{}", run.stdout, run.stderr));
    assert!(printed.contains("failed `store`: it exited with status 1"), "{printed}");
    assert!(printed.contains("could not store this record: {"), "{printed}");
    assert!(printed.contains(r#""access_token":"(sensitive)""#), "{printed}");
    // The helper kept the records it was given: the tokens the scan must not find elsewhere.
    assert_eq!(w.tokens.lock().unwrap().len(), 2);
    w.assert_no_secrets();
}

// ---------------------------------------------------------------------------------------------
// The command line.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_given_both_as_store_and_as_directory_is_a_usage_error_naming_both() {
    let w = World::start(ApiVersion::V6).await;
    let run = w
        .run(w.cli().env("OZ_TOKEN_DIR", w.token_dir()).args([
            "plan",
            "--token-store",
            "dir:elsewhere",
            BASIC,
        ]))
        .await
        .code(1);
    assert!(flat(&run.stderr).contains("`--token-store`/`OZ_TOKEN_STORE`"), "{}", run.stderr);
    assert!(flat(&run.stderr).contains("`--token-dir`/`OZ_TOKEN_DIR`"), "{}", run.stderr);
    assert_eq!(w.emu.stats().total_requests, 0, "refused before any request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_run_no_more_at_once_than_the_helper_asks_for() {
    let w = World::start(ApiVersion::V6).await;
    let store = format!("exec:{}", helper("healthy").display());
    let run: Run = w
        .run(store_cli(&w, "apply", &store, &root()).env("OZFORM_TEST_MAX_PARALLEL_STORES", "1").args([
            "--parallelism",
            "8",
            "--auto-approve",
            BASIC,
        ]))
        .await;
    run.code(0);
    assert_eq!(w.token_files().len(), 2);
    w.assert_no_secrets();
}

// ---------------------------------------------------------------------------------------------
// The AWS Secrets Manager recipe against moto's real server, through the real `aws` CLI.

/// `moto_server` on `127.0.0.1`, on a port of the system's choosing; killed when dropped.
struct Moto {
    child: std::process::Child,
    url: String,
}

impl Moto {
    /// Start it and wait until it says where it listens (werkzeug logs the bound port once the
    /// socket is listening), then keep draining its log so that it never blocks on it.
    fn start() -> Self {
        use std::io::BufRead as _;
        let mut child = std::process::Command::new(common::python_tools::python_tool("moto_server"))
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = String::new();
        let url = loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("moto_server ended before listening:\n{seen}"))
                .unwrap();
            if let Some(at) = line.find("http://127.0.0.1:") {
                break line[at..].trim().to_string();
            }
            seen.push_str(&line);
            seen.push('\n');
        };
        std::thread::spawn(move || lines.for_each(drop));
        Self { child, url }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_recipe_keeps_tokens_in_secrets_manager_and_a_second_apply_issues_none() {
    let w = World::start(ApiVersion::V6).await;
    let moto = tokio::task::spawn_blocking(Moto::start).await.unwrap();
    let aws = common::python_tools::python_tool("aws");
    let tools = aws.parent().unwrap().to_path_buf();
    let path = format!("{}:{}", tools.display(), std::env::var("PATH").unwrap_or_default());
    let recipe = root().join("contrib/token-stores/aws-secrets-manager");
    let store = format!("exec:{} --prefix ozform/test/ --endpoint-url {}", recipe.display(), moto.url);
    // The aws CLI takes seconds to start on a busy machine: a generous bound, not a measure.
    let with_aws = |cli: common::Cli| {
        cli.args(["--store-timeout", "5m"])
            .env("PATH", &path)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_DEFAULT_REGION", "eu-west-1")
            .env("AWS_CONFIG_FILE", "/nonexistent/aws-config")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    };
    let runner = tempfile::tempdir().unwrap();
    let apply = |cwd: &Path| with_aws(store_cli(&w, "apply", &store, cwd)).args(["--auto-approve", &basic()]);

    let run = w.run(apply(runner.path())).await.code(0);
    assert!(run.stdout.contains("2 tokens to issue"), "{}", run.stdout);
    assert_eq!(issued_tokens(&w), 2);

    // What Secrets Manager holds, read back with the aws CLI: one secret per token user, the
    // whole record as its value, a token that authenticates as that user.
    let aws_json = |args: &[&str]| -> Value {
        let out = std::process::Command::new(&aws)
            .args(["secretsmanager"])
            .args(args)
            .args(["--output", "json", "--endpoint-url", &moto.url])
            .env("PATH", &path)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_DEFAULT_REGION", "eu-west-1")
            .output()
            .unwrap();
        assert!(out.status.success(), "aws {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let listed = aws_json(&["list-secrets"]);
    let mut names: Vec<&str> =
        listed["SecretList"].as_array().unwrap().iter().map(|s| s["Name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(names, BASIC_TOKEN_USERS.map(|e| format!("ozform/test/{e}")));
    let (http, _) = w.admin_session().await;
    for email in BASIC_TOKEN_USERS {
        let secret = aws_json(&["get-secret-value", "--secret-id", &format!("ozform/test/{email}")]);
        let record: Value = serde_json::from_str(secret["SecretString"].as_str().unwrap()).unwrap();
        let token = record["access_token"].as_str().unwrap().to_string();
        w.tokens.lock().unwrap().insert(token.clone());
        let user = w.user(email);
        assert_eq!(record["email"], email);
        assert_eq!(record["user_id"].as_str(), Some(user.user_id.as_str()));
        assert_eq!(record["api_url"].as_str(), Some(w.emu.url().as_str()));
        let me = http
            .get(format!("{}/api/users/{}", w.emu.url(), user.user_id))
            .header(ozform::emulator::TOKEN_HEADER, token)
            .send()
            .await
            .unwrap();
        assert_eq!(me.status(), 200, "the stored token of {email} does not authenticate");
    }

    // A fresh runner plans and applies with the same store: nothing to do, no token issued.
    let fresh = tempfile::tempdir().unwrap();
    let run = w
        .run(with_aws(store_cli(&w, "plan", &store, fresh.path())).args(["--detailed-exitcode", &basic()]))
        .await
        .code(0);
    assert!(run.stdout.contains("No changes."), "{}", run.stdout);
    let run = w.run(apply(fresh.path())).await.code(0);
    assert!(run.stdout.contains("No changes."), "{}", run.stdout);
    assert_eq!(issued_tokens(&w), 2, "a second apply issues no token");
    w.assert_no_secrets();
}

// ---------------------------------------------------------------------------------------------
// The example helper of docs/token-stores.md works as printed.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_helper_of_the_docs_is_a_working_store() {
    let w = World::start(ApiVersion::V6).await;
    let docs = std::fs::read_to_string(root().join("docs/token-stores.md")).unwrap();
    let example = docs.split("### An example helper").nth(1).unwrap();
    let code = example.split("```python\n").nth(1).unwrap().split("```").next().unwrap();
    let scripts = tempfile::tempdir().unwrap();
    let script = scripts.path().join("my-helper.py");
    std::fs::write(&script, code).unwrap();
    std::fs::create_dir_all(w.token_dir()).unwrap();
    let store = format!("exec:python3 {}", script.display());
    let cli =
        |command: &str, cwd: &Path| store_cli(&w, command, &store, cwd).env("MY_STORE_DIR", w.token_dir());

    let run = w.run(cli("apply", &root()).args(["--auto-approve", BASIC])).await.code(0);
    assert!(run.stdout.contains("Apply complete"), "{}", run.stdout);
    assert_eq!(w.token_files().len(), 2);
    let fresh = tempfile::tempdir().unwrap();
    let run = w.run(cli("plan", fresh.path()).args(["--detailed-exitcode", &basic()])).await.code(0);
    assert!(run.stdout.contains("No changes."), "{}", run.stdout);
    w.assert_no_secrets();
}

// ---------------------------------------------------------------------------------------------
// The Kubernetes and Vault recipes against stand-in `kubectl` and `vault` programs
// (tests/fixtures/helpers/stand-ins) that record each call's argv and stdin and answer as the
// real ones do: the exact commands are the contract with the real tools.

/// A stand-in's recorded calls: argv and stdin.
fn stand_in_calls(dir: &Path) -> Vec<(Vec<String>, String)> {
    std::fs::read_to_string(dir.join("calls.jsonl"))
        .unwrap()
        .lines()
        .map(|line| {
            let call: Value = serde_json::from_str(line).unwrap();
            let argv =
                call["argv"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect();
            (argv, call["stdin"].as_str().unwrap().to_string())
        })
        .collect()
}

fn words(line: &str) -> Vec<String> {
    line.split(' ').map(ToString::to_string).collect()
}

/// Apply `examples/basic` through `recipe` with the stand-ins first on `PATH`, then plan from an
/// empty working directory: no changes. Returns the stand-ins' directory (calls and state).
async fn apply_and_plan_with_stand_ins(w: &World, recipe: &str, env: &[(&str, &str)]) -> tempfile::TempDir {
    let stand_ins = tempfile::tempdir().unwrap();
    let path = format!(
        "{}:{}",
        root().join("tests/fixtures/helpers/stand-ins").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let store = format!("exec:{}/contrib/token-stores/{recipe}", root().display());
    let cli = |command: &str, cwd: &Path| {
        let mut cli = store_cli(w, command, &store, cwd)
            .env("PATH", &path)
            .env("OZFORM_TEST_STANDIN_DIR", stand_ins.path());
        for (name, value) in env {
            cli = cli.env(name, value);
        }
        cli
    };
    let run = w.run(cli("apply", &root()).args(["--auto-approve", BASIC])).await.code(0);
    assert!(run.stdout.contains("Apply complete"), "{}", run.stdout);
    assert_eq!(issued_tokens(w), 2);
    let fresh = tempfile::tempdir().unwrap();
    let run = w.run(cli("plan", fresh.path()).args(["--detailed-exitcode", &basic()])).await.code(0);
    assert!(run.stdout.contains("No changes."), "{}", run.stdout);
    stand_ins
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_recipe_runs_exactly_these_kubectl_commands() {
    let w = World::start(ApiVersion::V6).await;
    let stand_ins = apply_and_plan_with_stand_ins(&w, "kubernetes --namespace payments", &[]).await;
    let calls = stand_in_calls(stand_ins.path());
    let argv: Vec<String> = calls.iter().map(|(argv, _)| argv.join(" ")).collect();
    let list = "kubectl --namespace payments get secrets --selector app.kubernetes.io/managed-by=ozform --output json";
    let apply = "kubectl --namespace payments apply --server-side --force-conflicts --field-manager=ozform --filename -";
    assert_eq!(
        argv,
        [
            list,
            "kubectl --namespace payments auth can-i create secrets",
            "kubectl --namespace payments auth can-i patch secrets",
            "kubectl --namespace payments auth can-i list secrets",
            apply,
            apply,
            list,
        ]
    );

    // The Secrets as they went to kubectl's stdin: one per token user, the token only in data.
    let mut secrets: Vec<Value> = calls
        .iter()
        .filter(|(argv, _)| argv.join(" ") == apply)
        .map(|(_, stdin)| serde_json::from_str(stdin).unwrap())
        .collect();
    secrets.sort_by_key(|s| s["metadata"]["name"].as_str().unwrap().to_string());
    let names: Vec<&str> = secrets.iter().map(|s| s["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["ozform-token-svc-claims-at-globex.example", "ozform-token-svc-web-at-acme.example"]);
    for (secret, email) in secrets.iter().zip(BASIC_TOKEN_USERS) {
        use base64::Engine as _;
        let meta = &secret["metadata"];
        assert_eq!(meta["labels"], serde_json::json!({"app.kubernetes.io/managed-by": "ozform"}));
        assert_eq!(meta["annotations"]["ozform.io/email"], email);
        assert_eq!(meta["annotations"]["ozform.io/user-id"].as_str(), Some(w.user(email).user_id.as_str()));
        assert_eq!(meta["annotations"]["ozform.io/api-url"].as_str(), Some(w.emu.url().as_str()));
        for key in ["ozform.io/token-id", "ozform.io/expire-date", "ozform.io/issued-at"] {
            assert!(meta["annotations"][key].is_string(), "{key}");
        }
        let data: Vec<&String> = secret["data"].as_object().unwrap().keys().collect();
        assert_eq!(data, ["access_token"]);
        let token = base64::engine::general_purpose::STANDARD
            .decode(secret["data"]["access_token"].as_str().unwrap())
            .unwrap();
        let token = String::from_utf8(token).unwrap();
        assert!(!argv.iter().any(|a| a.contains(&token)), "a token on kubectl's command line");
        w.tokens.lock().unwrap().insert(token);
    }

    // `delete`, which apply does not call yet, run by hand.
    let out = std::process::Command::new(root().join("contrib/token-stores/kubernetes"))
        .args(["--namespace", "payments", "delete"])
        .env(
            "PATH",
            format!(
                "{}:{}",
                root().join("tests/fixtures/helpers/stand-ins").display(),
                std::env::var("PATH").unwrap()
            ),
        )
        .env("OZFORM_TEST_STANDIN_DIR", stand_ins.path())
        .stdin(
            std::fs::File::open(write_temp(r#"{"protocol": 1, "email": "svc-web@acme.example"}"#).path())
                .unwrap(),
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let deleted = stand_in_calls(stand_ins.path()).pop().unwrap().0;
    assert_eq!(
        deleted,
        words(
            "kubectl --namespace payments delete secret ozform-token-svc-web-at-acme.example --ignore-not-found"
        )
    );
    w.assert_no_secrets();
}

/// A temporary file holding `text`.
fn write_temp(text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vault_recipe_runs_exactly_these_vault_commands() {
    let w = World::start(ApiVersion::V6).await;
    let env = [("VAULT_ADDR", "http://127.0.0.1:1"), ("VAULT_TOKEN", "stand-in-vault-token")];
    let stand_ins = apply_and_plan_with_stand_ins(&w, "vault --mount kv --prefix ozform/prod/", &env).await;
    let calls = stand_in_calls(stand_ins.path());
    let argv: Vec<String> = calls.iter().map(|(argv, _)| argv.join(" ")).collect();
    let list = "vault kv list -format=json -mount=kv ozform/prod";
    assert_eq!(argv[..2], [list, "vault token capabilities kv/data/ozform/prod/ozform-check"]);
    // The two stores may interleave; each is a `kv put` of the record, then its metadata.
    let mut stores: Vec<&String> = argv[2..6].iter().collect();
    stores.sort();
    let metadata_put = |email: &str| {
        let user = w.user(email);
        let record = calls
            .iter()
            .find(|(argv, _)| argv.join(" ") == format!("vault kv put -mount=kv ozform/prod/{email} -"))
            .map(|(_, stdin)| serde_json::from_str::<Value>(stdin).unwrap())
            .unwrap();
        assert_eq!(record["user_id"].as_str(), Some(user.user_id.as_str()));
        assert!(record.get("protocol").is_none());
        let token = record["access_token"].as_str().unwrap().to_string();
        assert!(!argv.iter().any(|a| a.contains(&token)), "a token on vault's command line");
        w.tokens.lock().unwrap().insert(token);
        let field = |f: &str| match &record[f] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        format!(
            "vault kv metadata put -mount=kv -custom-metadata=email={email} -custom-metadata=user_id={} \
             -custom-metadata=token_id={} -custom-metadata=api_url={} -custom-metadata=expire_date={} \
             -custom-metadata=issued_at={} ozform/prod/{email}",
            user.user_id,
            field("token_id"),
            w.emu.url(),
            python_float(record["expire_date"].as_f64().unwrap()),
            field("issued_at"),
        )
    };
    let mut expected = [
        "vault kv put -mount=kv ozform/prod/svc-claims@globex.example -".to_string(),
        metadata_put("svc-claims@globex.example"),
        "vault kv put -mount=kv ozform/prod/svc-web@acme.example -".to_string(),
        metadata_put("svc-web@acme.example"),
    ];
    expected.sort();
    assert_eq!(stores, expected.iter().collect::<Vec<_>>());
    assert_eq!(
        argv[6..],
        [
            list.to_string(),
            "vault kv metadata get -format=json -mount=kv ozform/prod/svc-claims@globex.example".to_string(),
            "vault kv metadata get -format=json -mount=kv ozform/prod/svc-web@acme.example".to_string(),
        ]
    );
    w.assert_no_secrets();
}

/// `str(x)` of Python for the floats an `expire_date` holds (the recipe writes it so).
fn python_float(x: f64) -> String {
    if x.fract() == 0.0 { format!("{x:.1}") } else { format!("{x}") }
}

// ---------------------------------------------------------------------------------------------
// Concurrency and saved plans.

/// The verbs the healthy helper logged in `dir`, in order.
fn verbs_in(dir: &Path) -> Vec<String> {
    let log = std::fs::read_to_string(dir.join("calls.log")).unwrap_or_default();
    log.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["verb"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn concurrent_stores_keep_to_the_helpers_max_parallel_stores() {
    use ozform::token_store::{ExecStore, TokenRecord, TokenStore as _};
    let dir = tempfile::tempdir().unwrap();
    // `env` sets the helper's variables without touching this process's environment.
    let argv = vec![
        "env".to_string(),
        format!("OZFORM_TEST_STORE_DIR={}", dir.path().display()),
        "OZFORM_TEST_MAX_PARALLEL_STORES=1".to_string(),
        helper("healthy").to_str().unwrap().to_string(),
    ];
    // A generous bound (Python starts slowly on a busy machine), not a measure.
    let store = std::sync::Arc::new(ExecStore::new(argv, std::time::Duration::from_secs(300)));
    // No `list` first: the first stores learn the bound with one `list` of their own, as
    // `apply --plan` does. The helper fails a store that finds another one running.
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let store = std::sync::Arc::clone(&store);
            std::thread::spawn(move || {
                store.store(&TokenRecord {
                    email: format!("user-{i}@example.com"),
                    user_id: format!("id-{i}"),
                    token_id: format!("token-id-{i}"),
                    access_token: ozform::secret::Secret::new(format!("secret-token-{i}")),
                    expire_date: 2_000_000_000.0,
                    api_url: "http://127.0.0.1:1".into(),
                    issued_at: "2026-11-30T00:00:00Z".into(),
                })
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap().unwrap();
    }
    let verbs = verbs_in(dir.path());
    assert_eq!(verbs.iter().filter(|v| *v == "list").count(), 1, "{verbs:?}");
    assert_eq!(verbs[0], "list");
    assert_eq!(verbs.iter().filter(|v| *v == "store").count(), 8);
    assert_eq!(store.list().unwrap().len(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_plan_applies_through_a_helper_store_from_another_runner() {
    let w = World::start(ApiVersion::V5).await;
    let store = format!("exec:{}", helper("healthy").display());
    let planner = tempfile::tempdir().unwrap();
    let saved = planner.path().join("plan.json");
    let saved = saved.to_str().unwrap();
    w.run(store_cli(&w, "plan", &store, planner.path()).args(["--out", saved, &basic()])).await.code(0);
    let applier = tempfile::tempdir().unwrap();
    let run = w.run(store_cli(&w, "apply", &store, applier.path()).args(["--plan", saved])).await.code(0);
    assert!(run.stdout.contains("Apply complete"), "{}", run.stdout);
    assert_eq!(issued_tokens(&w), 2);
    // `check` before the first token; then one `list` to learn `max_parallel_stores`.
    assert_eq!(verbs_in(&w.token_dir()), ["list", "check", "list", "store", "store"]);
    let fresh = tempfile::tempdir().unwrap();
    let run = w
        .run(store_cli(&w, "plan", &store, fresh.path()).args(["--detailed-exitcode", &basic()]))
        .await
        .code(0);
    assert!(run.stdout.contains("No changes."), "{}", run.stdout);
    w.assert_no_secrets();
}

// ---------------------------------------------------------------------------------------------
// The protocol's edges, on `ExecStore` itself, with one-line `sh` helpers (the verb is `$1`).

fn sh_store(script: &str, timeout: std::time::Duration) -> ozform::token_store::ExecStore {
    let argv = ["sh", "-c", script, "helper"].map(ToString::to_string).to_vec();
    ozform::token_store::ExecStore::new(argv, timeout)
}

fn sh_error(script: &str, verb: &str) -> (String, String) {
    use ozform::token_store::TokenStore as _;
    let store = sh_store(script, std::time::Duration::from_secs(300));
    let err = match verb {
        "check" => store.check().unwrap_err(),
        "list" => store.list().map(|_| ()).unwrap_err(),
        _ => store.delete("a@b.example").unwrap_err(),
    };
    let code = miette::Diagnostic::code(&err).unwrap().to_string();
    (code, flat(&err.to_string()))
}

#[test]
fn an_answer_with_unknown_fields_is_read_and_a_listed_access_token_is_ignored() {
    use ozform::token_store::TokenStore as _;
    let long = std::time::Duration::from_secs(300);
    let list = r#"echo '{"protocol": 1, "entries": [{"email": "A@B.example", "user_id": "u", "api_url": "http://x",
        "expire_date": 1e9, "access_token": "leaked", "colour": "blue"}], "next": null}'"#;
    let listed = sh_store(list, long).list().unwrap();
    assert_eq!(listed.keys().collect::<Vec<_>>(), ["a@b.example"]);
    assert_eq!(listed["a@b.example"].user_id, "u");
    sh_store(r#"echo '{"protocol": 1, "said": "fine"}'"#, long).check().unwrap();
    sh_store("true", long).check().unwrap();
    sh_store("cat >/dev/null", long).delete("a@b.example").unwrap();
}

#[test]
fn an_answer_outside_the_protocol_fails_the_call_without_being_quoted() {
    let (code, message) = sh_error("printf 'OK %s%s\\n' sec ret-output; echo 'a log line' >&2", "check");
    assert_eq!(code, "ozform::token_store::helper_protocol");
    assert!(
        message.contains("answered `check` outside the protocol: it printed something that is not JSON"),
        "{message}"
    );
    assert!(message.contains("a log line") && !message.contains("secret-output"), "{message}");
    let (_, message) = sh_error(r#"echo '{"protocol": 2}'"#, "check");
    assert!(message.contains("it speaks protocol 2; this ozform speaks protocol 1"), "{message}");
    let (_, message) = sh_error(r#"echo '{"entries": []}'"#, "list");
    assert!(message.contains("JSON of the wrong shape"), "{message}");
}

#[test]
fn a_helper_that_cannot_start_or_exits_non_zero_is_named_with_its_verb() {
    use ozform::token_store::{ExecStore, TokenStore as _};
    let missing =
        ExecStore::new(vec!["/nonexistent/helper".into(), "--x".into()], std::time::Duration::from_secs(5));
    let message = missing.check().unwrap_err().to_string();
    assert!(message.contains("`/nonexistent/helper --x` failed `check`: cannot start it"), "{message}");
    let (code, message) = sh_error("echo \"no $1 today\" >&2; exit 4", "delete");
    assert_eq!(code, "ozform::token_store::helper_failed");
    assert!(
        message.contains("failed `delete`: it exited with status 4 its stderr: no delete today"),
        "{message}"
    );
}

#[test]
fn a_long_stderr_is_cut() {
    let (_, message) =
        sh_error("i=0; while [ $i -lt 300 ]; do echo 'ten chars.'; i=$((i+1)); done >&2; exit 1", "check");
    assert!(message.ends_with("… (cut)"), "{message}");
    assert!(message.len() < 2600, "{}", message.len());
}

#[test]
fn a_helper_that_closes_its_output_and_hangs_is_stopped_too() {
    use ozform::token_store::TokenStore as _;
    let store = sh_store("exec >/dev/null 2>&1; exec sleep 600", std::time::Duration::from_secs(1));
    let err = store.check().unwrap_err();
    assert_eq!(miette::Diagnostic::code(&err).unwrap().to_string(), "ozform::token_store::helper_timeout");
}

#[test]
fn a_token_handed_to_the_helper_is_redacted_from_every_later_message() {
    use ozform::token_store::{TokenRecord, TokenStore as _};
    // `store` keeps the record and fails; `check` then prints it to stderr (a helper logging
    // what it holds).
    let dir = tempfile::tempdir().unwrap();
    let kept = dir.path().join("kept");
    let script = format!(
        r#"case "$1" in list) echo '{{"protocol": 1, "entries": []}}';; store) cat >{0}; exit 1;; check) cat {0} >&2; exit 1;; esac"#,
        kept.display()
    );
    let store = sh_store(&script, std::time::Duration::from_secs(300))
        .redact([ozform::secret::Secret::new("admin-pw")]);
    let token = "tok\"en/with\\escapes";
    let record = TokenRecord {
        email: "a@b.example".into(),
        user_id: "u".into(),
        token_id: "t".into(),
        access_token: ozform::secret::Secret::new(token),
        expire_date: 2e9,
        api_url: "http://x".into(),
        issued_at: "2026-11-30T00:00:00Z".into(),
    };
    store.store(&record).unwrap_err();
    std::fs::write(
        &kept,
        format!("{} raw: {token} admin: admin-pw", std::fs::read_to_string(&kept).unwrap().trim()),
    )
    .unwrap();
    let message = store.check().unwrap_err().to_string();
    assert!(message.contains(r#""access_token":"(sensitive)""#), "{message}");
    assert!(message.contains("raw: (sensitive) admin: (sensitive)"), "{message}");
    assert!(!message.contains("escapes") && !message.contains("admin-pw"), "{message}");
}

// ---------------------------------------------------------------------------------------------
// What users see: each helper diagnostic, rendered as ozform renders it.

fn render(err: &ozform::token_store::TokenStoreError) -> String {
    let mut out = String::new();
    miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
        .with_width(100)
        .render_report(&mut out, err)
        .unwrap();
    out.replace(&root().display().to_string(), "[ROOT]")
}

#[test]
fn helper_diagnostics_name_the_helper_the_verb_and_what_to_do() {
    use ozform::token_store::{ExecStore, TokenStore as _};
    // Relative paths (tests run in the package root): the wrapping must not depend on where
    // the repository is checked out.
    let helper = |argv: &[&str], timeout: u64| {
        ExecStore::new(
            argv.iter().map(ToString::to_string).collect(),
            std::time::Duration::from_secs(timeout),
        )
    };
    let failed = helper(&["tests/fixtures/helpers/fails-check"], 300).check().unwrap_err();
    insta::assert_snapshot!("helper_failed", render(&failed));
    let garbage = helper(&["tests/fixtures/helpers/garbage"], 300).list().unwrap_err();
    insta::assert_snapshot!("helper_protocol", render(&garbage));
    let script = "echo 'waiting for the secret store to answer' >&2; exec sleep 600";
    let hung = helper(&["sh", "-c", script, "hung-helper"], 5).check().unwrap_err();
    insta::assert_snapshot!("helper_timeout", render(&hung));
}
