//! How ozform fits the tools around it, each checked with the real tool:
//! - shell completions load in `bash` and `fish` and complete commands, flags and values; the
//!   zsh script loads under `compinit` and registers its function;
//! - the committed manual pages (`docs/man/`) equal `ozform man --out-dir` and render with `man -l`
//!   and `groff` without a warning;
//! - the `Dockerfile` passes hadolint, copies everything the build reads, runs as a non-root user;
//! - the CI recipes (`contrib/ci/`): the script passes shellcheck, so do the shell steps of both
//!   recipes; the GitHub workflow passes actionlint and GitHub's workflow schema, the GitLab file
//!   GitLab's CI schema; and the script itself runs for real against the emulator (plan, apply,
//!   plan again; a failing plan) and posts or updates one comment on fake GitHub and GitLab APIs
//!   on loopback, with the canary scan over everything it printed and wrote;
//! - `ozform demo`, tried as a new user would, leaves no directory behind unless `--keep`;
//! - `examples/multi-env` applies as its comments say, with its secret file and variable.
//!
//! A missing tool fails its test and says what to install; none is skipped.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use crate::common;

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use common::python_tools::python_tool;
use common::root;
use common::world::{BASIC, World};
use ozform::model::ApiVersion;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_ozform");
const SCRIPT: &str = "contrib/ci/ozform-ci.sh";
const GITHUB_WORKFLOW: &str = "contrib/ci/github/ozform.yml";
const GITLAB_CI: &str = "contrib/ci/gitlab/.gitlab-ci.yml";

/// Run a system tool; a tool that is not installed fails the test with what to install.
fn system_tool(program: &str, package: &str) -> Command {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(found, "`{program}` is not installed: this test needs it (Debian: `apt-get install {package}`)");
    Command::new(program)
}

fn run(mut command: Command) -> Output {
    let shown = format!("{command:?}");
    command.output().unwrap_or_else(|e| panic!("cannot run {shown}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({})\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

fn yaml(path: &str) -> Value {
    serde_saphyr::from_str(&read(path)).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
}

// Completions.

/// Complete the command line `words` (the last one being completed) with the bash script that
/// `ozform completions bash` prints, loaded in a real bash; returns the candidates.
fn bash_complete(words: &[&str]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("ozform.bash");
    let out = run({
        let mut c = Command::new(BIN);
        c.args(["completions", "bash"]);
        c
    });
    assert_success(&out, "ozform completions bash");
    std::fs::write(&script, &out.stdout).unwrap();
    let driver = r#"
set -eu
source "$1"
shift
spec=$(complete -p ozform)
case $spec in
    *" -F "*) function=${spec#* -F }; function=${function%% *} ;;
    *) echo "no completion function for ozform: $spec" >&2; exit 1 ;;
esac
COMP_WORDS=("$@")
COMP_CWORD=$(($# - 1))
COMP_LINE="$*"
COMP_POINT=${#COMP_LINE}
previous=""
if [ "$COMP_CWORD" -gt 0 ]; then previous=${COMP_WORDS[COMP_CWORD-1]}; fi
"$function" ozform "${COMP_WORDS[COMP_CWORD]}" "$previous"
printf '%s\n' "${COMPREPLY[@]}"
"#;
    let mut bash = system_tool("bash", "bash");
    bash.args(["-c", driver, "driver"]).arg(&script).args(words);
    let out = run(bash);
    assert_success(&out, &format!("completing {words:?} in bash"));
    text(&out.stdout).lines().map(str::to_string).collect()
}

#[test]
fn bash_completes_commands_flags_and_values_from_the_clap_definitions() {
    let commands = bash_complete(&["ozform", ""]);
    for command in
        ["validate", "plan", "apply", "export", "schema", "emulator", "demo", "doctor", "completions", "man"]
    {
        assert!(commands.contains(&command.to_string()), "`ozform <TAB>` lacks {command}: {commands:?}");
    }
    assert_eq!(bash_complete(&["ozform", "pl"]), ["plan"]);
    assert_eq!(bash_complete(&["ozform", "plan", "--detailed-e"]), ["--detailed-exitcode"]);
    let formats = bash_complete(&["ozform", "plan", "--format", ""]);
    assert_eq!(formats, ["text", "json", "markdown"]);
    let shells = bash_complete(&["ozform", "completions", ""]);
    for shell in ["bash", "zsh", "fish", "powershell"] {
        assert!(shells.contains(&shell.to_string()), "{shells:?}");
    }
    let apply_flags = bash_complete(&["ozform", "apply", "--"]);
    for flag in ["--auto-approve", "--plan", "--api-url", "--token-dir", "--parallelism"] {
        assert!(
            apply_flags.contains(&flag.to_string()),
            "`ozform apply --<TAB>` lacks {flag}: {apply_flags:?}"
        );
    }
}

fn completion_script(shell: &str, dir: &Path) -> PathBuf {
    let out = run({
        let mut c = Command::new(BIN);
        c.args(["completions", shell]);
        c
    });
    assert_success(&out, &format!("ozform completions {shell}"));
    let path = dir.join(format!("ozform.{shell}"));
    std::fs::write(&path, &out.stdout).unwrap();
    path
}

#[test]
fn fish_completes_commands_flags_and_values() {
    let dir = tempfile::tempdir().unwrap();
    let script = completion_script("fish", dir.path());
    let mut fish = system_tool("fish", "fish");
    fish.args(["--no-config", "-c"])
        .arg(format!(
            "source {}; complete -C 'ozform pl'; complete -C 'ozform plan --detailed-e'; complete -C 'ozform plan --format '",
            script.display()
        ))
        .env("HOME", dir.path());
    let out = run(fish);
    assert_success(&out, "completing in fish");
    let candidates: Vec<String> =
        text(&out.stdout).lines().map(|l| l.split('\t').next().unwrap().to_string()).collect();
    assert_eq!(candidates, ["plan", "--detailed-exitcode", "json", "markdown", "text"]);
}

#[test]
fn the_zsh_script_loads_under_compinit_and_registers_its_function() {
    let dir = tempfile::tempdir().unwrap();
    let script = completion_script("zsh", dir.path());
    let mut zsh = system_tool("zsh", "zsh");
    zsh.args(["-f", "-c"])
        .arg(format!(
            "autoload -Uz compinit && compinit -u -d {dump} && source {script} && print -r -- ${{+functions[_ozform]}} $_comps[ozform]",
            dump = dir.path().join("zcompdump").display(),
            script = script.display()
        ))
        .env("HOME", dir.path());
    let out = run(zsh);
    assert_success(&out, "loading the zsh script");
    assert_eq!(text(&out.stdout).trim(), "1 _ozform", "{}", text(&out.stderr));
}

// Manual pages.

#[test]
fn the_committed_man_pages_equal_what_ozform_man_writes() {
    let dir = tempfile::tempdir().unwrap();
    let out = run({
        let mut c = Command::new(BIN);
        c.args(["man", "--out-dir"]).arg(dir.path());
        c
    });
    assert_success(&out, "ozform man --out-dir");
    let pages = |at: &Path| -> BTreeMap<String, String> {
        std::fs::read_dir(at)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| {
                (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap())
            })
            .collect()
    };
    let generated = pages(dir.path());
    let committed = pages(&root().join("docs/man"));
    assert!(
        generated.contains_key("ozform.1") && generated.contains_key("ozform-plan.1"),
        "{:?}",
        generated.keys()
    );
    assert!(
        generated == committed,
        "docs/man is out of date ({:?} differ); regenerate it with:\n    rm -f docs/man/*.1 && cargo run -- man --out-dir docs/man",
        generated
            .keys()
            .chain(committed.keys())
            .filter(|name| generated.get(*name) != committed.get(*name))
            .collect::<std::collections::BTreeSet<_>>()
    );
    // Without --out-dir, `ozform man` prints the top page.
    let printed = run({
        let mut c = Command::new(BIN);
        c.arg("man");
        c
    });
    assert_success(&printed, "ozform man");
    assert_eq!(text(&printed.stdout), generated["ozform.1"]);
}

#[test]
fn every_man_page_renders_with_man_and_groff_without_a_warning() {
    let dir = root().join("docs/man");
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    pages.sort();
    assert!(pages.len() >= 10, "{pages:?}");
    for page in &pages {
        let name = page.file_stem().unwrap().to_string_lossy().into_owned();
        let mut man = system_tool("man", "man-db");
        man.arg("-l").arg(page).env("MANWIDTH", "100").env("MANPAGER", "cat").env("PAGER", "cat");
        let out = run(man);
        assert_success(&out, &format!("man -l {}", page.display()));
        let shown = text(&out.stdout);
        assert!(shown.contains("NAME") && shown.contains("SYNOPSIS"), "{shown}");
        let words = shown.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(words.contains(&format!("NAME {name} - ")), "the page of {name} names it:\n{shown}");

        let mut groff = system_tool("groff", "groff");
        groff.args(["-man", "-Tutf8", "-ww", "-z"]).arg(page);
        let out = run(groff);
        assert_success(&out, &format!("groff {}", page.display()));
        assert!(out.stderr.is_empty(), "groff warns about {}:\n{}", page.display(), text(&out.stderr));
    }
    let plan = text(
        &run({
            let mut c = Command::new("man");
            c.arg("-l").arg(dir.join("ozform-plan.1")).env("MANWIDTH", "200").env("MANPAGER", "cat");
            c
        })
        .stdout,
    );
    assert!(plan.contains("--detailed-exitcode") && plan.contains("OZ_API_URL"), "{plan}");
}

// Container image.

#[test]
fn the_dockerfile_passes_hadolint() {
    let mut hadolint = Command::new(python_tool("hadolint"));
    hadolint.arg(root().join("Dockerfile"));
    assert_success(&run(hadolint), "hadolint Dockerfile");
}

#[test]
fn the_image_builds_from_what_the_context_holds_and_runs_as_a_non_root_user() {
    let dockerfile = read("Dockerfile");
    let instructions: Vec<&str> = dockerfile.lines().filter(|l| !l.trim_start().starts_with('#')).collect();
    let froms = instructions.iter().filter(|l| l.starts_with("FROM ")).count();
    assert!(froms >= 2, "a multi-stage build");
    // The last stage is the image `docker build .` makes: a numeric, non-root user, the
    // emulator's port, ozform as the entry point.
    let last: Vec<&str> =
        instructions.iter().rev().take_while(|l| !l.starts_with("FROM ")).copied().collect();
    let user = last.iter().find_map(|l| l.strip_prefix("USER ")).expect("a USER in the last stage");
    let uid: u32 = user.split(':').next().unwrap().parse().expect("a numeric user");
    assert_ne!(uid, 0, "the image runs as root");
    assert!(last.iter().any(|l| l.trim() == "EXPOSE 8080"), "the emulator's port");
    assert!(last.iter().any(|l| l.starts_with("ENTRYPOINT [\"/usr/local/bin/ozform\"]")));

    // Every file the build reads is copied: the sources the build compiles, and each file a
    // source embeds with include_str!/include_bytes!.
    let copied: Vec<String> = instructions
        .iter()
        .filter_map(|l| l.strip_prefix("COPY "))
        .filter(|l| !l.starts_with("--from"))
        .flat_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words[..words.len() - 1].iter().map(|w| w.trim_end_matches('/').to_string()).collect::<Vec<_>>()
        })
        .collect();
    for path in &copied {
        assert!(root().join(path).exists(), "COPY {path}: no such file");
    }
    for needed in ["Cargo.toml", "Cargo.lock", "src"] {
        assert!(copied.iter().any(|c| c == needed), "{needed} is not copied");
    }
    for embedded in embedded_files(&root().join("src")) {
        let relative = embedded.strip_prefix(root()).unwrap().to_string_lossy().into_owned();
        assert!(
            copied.iter().any(|c| relative == *c || relative.starts_with(&format!("{c}/"))),
            "the build embeds {relative}, which the Dockerfile does not copy"
        );
    }
    // .dockerignore lets through what is copied.
    let ignore = read(".dockerignore");
    for path in &copied {
        assert!(
            ignore.lines().any(|l| l.trim_end_matches('/') == format!("!{path}")),
            ".dockerignore keeps out {path}"
        );
    }
}

/// Files under `dir`'s Rust sources named by `include_str!("…")` / `include_bytes!("…")`.
fn embedded_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(embedded_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            let source = std::fs::read_to_string(&path).unwrap();
            for macro_name in ["include_str!(\"", "include_bytes!(\""] {
                for piece in source.split(macro_name).skip(1) {
                    let relative = piece.split('"').next().unwrap();
                    let file = path.parent().unwrap().join(relative);
                    found.push(std::fs::canonicalize(&file).unwrap_or(file));
                }
            }
        }
    }
    found
}

// CI recipes: static checks.

fn shellcheck(script: &str, what: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("script.sh");
    std::fs::write(&file, script).unwrap();
    let mut check = Command::new(python_tool("shellcheck"));
    check.args(["--shell=bash", "--severity=style"]).arg(&file);
    let out = run(check);
    assert!(out.status.success(), "shellcheck on {what}:\n{}\n--- script\n{script}", text(&out.stdout));
}

#[test]
fn the_ci_script_passes_shellcheck() {
    let mut check = Command::new(python_tool("shellcheck"));
    check.args(["--severity=style"]).arg(root().join(SCRIPT));
    assert_success(&run(check), "shellcheck contrib/ci/ozform-ci.sh");
}

#[test]
fn the_github_workflow_passes_actionlint_with_shellcheck_and_the_workflow_schema() {
    let actionlint = python_tool("actionlint");
    let tools_dir = actionlint.parent().unwrap().to_path_buf();
    assert!(
        tools_dir.join("shellcheck").exists(),
        "actionlint checks `run:` steps with shellcheck from {}",
        tools_dir.display()
    );
    let path = format!("{}:{}", tools_dir.display(), std::env::var("PATH").unwrap_or_default());
    let mut lint = Command::new(&actionlint);
    lint.arg("-no-color").arg(GITHUB_WORKFLOW).current_dir(root()).env("PATH", path);
    assert_success(&run(lint), "actionlint on the GitHub workflow");

    let mut schema = Command::new(python_tool("check-jsonschema"));
    schema.args(["--builtin-schema", "vendor.github-workflows"]).arg(root().join(GITHUB_WORKFLOW));
    assert_success(&run(schema), "check-jsonschema vendor.github-workflows");
}

#[test]
fn the_gitlab_file_validates_against_gitlabs_ci_schema_and_its_scripts_pass_shellcheck() {
    let mut schema = Command::new(python_tool("check-jsonschema"));
    schema.args(["--builtin-schema", "vendor.gitlab-ci"]).arg(root().join(GITLAB_CI));
    assert_success(&run(schema), "check-jsonschema vendor.gitlab-ci");

    let gitlab = yaml(GITLAB_CI);
    let mut jobs = 0;
    for (name, job) in gitlab.as_object().unwrap() {
        let Some(script) = job.get("script").and_then(Value::as_array) else { continue };
        jobs += 1;
        // GitLab runs a job's lines in one shell, one after another.
        let lines: Vec<&str> = script.iter().map(|l| l.as_str().unwrap()).collect();
        shellcheck(
            &format!("#!/usr/bin/env bash\nset -eo pipefail\n{}\n", lines.join("\n")),
            &format!("GitLab job {name}"),
        );
    }
    // plan, apply, and the scheduled reconcile of issue #23.
    assert_eq!(jobs, 3);
}

#[test]
fn both_recipes_plan_on_review_apply_one_at_a_time_on_the_default_branch_through_the_one_script() {
    assert!(root().join(SCRIPT).exists());
    let script_in_repo = "ci/ozform-ci.sh";
    let github = yaml(GITHUB_WORKFLOW);
    let jobs = &github["jobs"];
    let runs = |job: &str| -> Vec<String> {
        jobs[job]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["run"].as_str().map(str::to_string))
            .collect()
    };
    assert!(
        runs("plan").iter().any(|r| r.starts_with(&format!("{script_in_repo} plan "))),
        "{:?}",
        runs("plan")
    );
    assert!(runs("plan").iter().any(|r| r == &format!("{script_in_repo} comment github")));
    assert!(runs("apply").iter().any(|r| r.starts_with(&format!("{script_in_repo} apply "))));
    assert_eq!(jobs["plan"]["permissions"]["pull-requests"], "write");
    assert!(jobs["plan"]["if"].as_str().unwrap().contains("pull_request"));
    assert!(jobs["apply"]["if"].as_str().unwrap().contains("github.event.repository.default_branch"));
    assert_eq!(jobs["apply"]["concurrency"]["cancel-in-progress"], false);
    assert!(jobs["apply"]["concurrency"]["group"].is_string());
    let workflow = read(GITHUB_WORKFLOW);
    assert!(workflow.contains("${{ secrets.OZ_ADMIN_PASSWORD }}"));
    // The comment is posted even when planning failed, saying why.
    assert_eq!(
        jobs["plan"]["steps"].as_array().unwrap().iter().find(|s| s["name"] == "Comment").unwrap()["if"],
        "always() && steps.plan.outcome != 'skipped'"
    );

    let gitlab = yaml(GITLAB_CI);
    let lines = |job: &str| -> Vec<String> {
        gitlab[job]["script"].as_array().unwrap().iter().map(|l| l.as_str().unwrap().to_string()).collect()
    };
    assert!(lines("ozform-plan").iter().any(|l| l.contains(&format!("{script_in_repo} plan "))));
    assert!(lines("ozform-plan").iter().any(|l| l == &format!("{script_in_repo} comment gitlab")));
    assert!(lines("ozform-apply").iter().any(|l| l.starts_with(&format!("{script_in_repo} apply "))));
    assert_eq!(gitlab["ozform-apply"]["resource_group"], "ozform-apply");
    assert!(gitlab["ozform-apply"]["rules"][0]["if"].as_str().unwrap().contains("$CI_DEFAULT_BRANCH"));
    assert!(gitlab["ozform-plan"]["rules"][0]["if"].as_str().unwrap().contains("merge_request_event"));
}

// CI recipes: the script, run for real.

/// `contrib/ci/ozform-ci.sh ARGS…` from the repository root, with the world's connection and
/// canary passwords, the token store in the world's temp dir, and `env` on top; what it printed
/// joins the world's canary scan.
async fn ci_script(world: &World, args: &[&str], env: &[(&str, String)]) -> (i32, String) {
    let mut command = Command::new(root().join(SCRIPT));
    command.args(args).current_dir(root());
    for var in common::OZFORM_VARIABLES {
        command.env_remove(var);
    }
    command
        .env("NO_COLOR", "1")
        .env("OZFORM", BIN)
        .env("OZFORM_CI_OUT", world.path("ci"))
        .env("OZ_API_URL", world.emu.url())
        .env("OZ_ADMIN_EMAIL", world.emu.admin_email())
        .env("OZ_ADMIN_PASSWORD", &world.admin_password)
        .env("OZ_TOKEN_DIR", world.token_dir())
        // As CI passes a variable nobody set: the script must not hand it to ozform.
        .env("OZ_TOKEN_STORE", "");
    for (name, value) in &world.passwords {
        command.env(name, value);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    let out = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    world.printed.lock().unwrap().push((stdout.clone(), stderr.clone()));
    world.harvest_tokens();
    (out.status.code().unwrap_or(-1), format!("{stdout}{stderr}"))
}

fn ci_file(world: &World, name: &str) -> String {
    std::fs::read_to_string(world.path("ci").join(name)).unwrap_or_else(|e| panic!("ci/{name}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ci_script_plans_applies_and_plans_no_changes_against_the_emulator() {
    let world = World::start(ApiVersion::V6).await;

    let (code, printed) = ci_script(&world, &["plan", BASIC], &[]).await;
    assert_eq!(code, 0, "{printed}");
    assert_eq!(ci_file(&world, "exit-code"), "2\n");
    assert_eq!(ci_file(&world, "exit-class"), "changes\n");
    let comment = ci_file(&world, "comment.md");
    assert!(comment.starts_with("<!-- ozform-plan -->\n### ozform plan: changes\n"), "{comment}");
    assert!(comment.contains("<details><summary>Plan (exit code 2)</summary>"), "{comment}");
    assert!(comment.contains(&ci_file(&world, "plan.md")), "the comment holds the Markdown plan");
    assert!(ci_file(&world, "plan.md").contains("svc-web@acme.example"));
    assert_eq!(comment.matches("<details>").count(), comment.matches("</details>").count());
    assert!(
        world.emu.snapshot().users.iter().all(|u| u.email != "svc-web@acme.example"),
        "plan changed nothing"
    );

    let (code, printed) = ci_script(&world, &["apply", BASIC], &[]).await;
    assert_eq!(code, 0, "{printed}");
    assert!(world.token_files().contains_key("svc-web@acme.example.json"), "tokens went to OZ_TOKEN_DIR");

    let (code, printed) = ci_script(&world, &["plan", BASIC], &[]).await;
    assert_eq!(code, 0, "{printed}");
    assert_eq!(ci_file(&world, "exit-code"), "0\n");
    assert!(ci_file(&world, "comment.md").contains("### ozform plan: no changes\n"));
    assert!(ci_file(&world, "plan.md").contains("No changes."));

    world.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_plan_fails_the_script_and_its_comment_says_why() {
    let world = World::start(ApiVersion::V5).await;
    let wrong = [("OZ_ADMIN_PASSWORD", common::world::canary("wrong-admin-pw"))];
    world.other_secrets.lock().unwrap().push(wrong[0].1.clone());
    let (code, printed) = ci_script(&world, &["plan", BASIC], &wrong).await;
    assert_eq!(code, 1, "{printed}");
    assert_eq!(ci_file(&world, "exit-code"), "1\n");
    let comment = ci_file(&world, "comment.md");
    assert!(comment.starts_with("<!-- ozform-plan -->\n### ozform plan: failed (exit 1)\n"), "{comment}");
    assert!(comment.contains("_no plan: ozform failed"), "{comment}");
    assert!(comment.contains("<details><summary>ozform output</summary>"), "{comment}");
    assert!(comment.contains(ci_file(&world, "plan.log").trim()), "{comment}");

    // A manifest that does not validate stops before planning.
    let bad = world.path("bad.yaml");
    std::fs::write(&bad, "companies:\n  - nme: Typo\n").unwrap();
    let (code, printed) = ci_script(&world, &["plan", bad.to_str().unwrap()], &[]).await;
    assert_eq!(code, 1, "{printed}");
    assert!(ci_file(&world, "comment.md").contains("nme"), "the validation error is in the comment");
    world.assert_no_secrets();
}

/// A fake of the comment APIs of GitHub and GitLab on loopback: lists, creates and updates
/// comments (`…/comments` or `…/notes`), and records every request's method, path and
/// authentication header.
#[derive(Clone, Default)]
struct FakeForge {
    comments: Arc<Mutex<Vec<Value>>>,
    requests: Arc<Mutex<Vec<(String, String, String)>>>,
}

impl FakeForge {
    fn start(existing: Vec<Value>) -> (Self, String) {
        let forge = Self { comments: Arc::new(Mutex::new(existing)), ..Self::default() };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let serving = forge.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                serving.answer(stream);
            }
        });
        (forge, url)
    }

    fn answer(&self, mut stream: std::net::TcpStream) {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut request_line = String::new();
        reader.read_line(&mut request_line).unwrap();
        let mut parts = request_line.split_whitespace();
        let (method, target) = (parts.next().unwrap().to_string(), parts.next().unwrap().to_string());
        let (mut length, mut auth, mut expect_continue) = (0, String::new(), false);
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap(),
                "authorization" | "private-token" => auth = format!("{name}: {}", value.trim()),
                "expect" => expect_continue = true,
                _ => {}
            }
        }
        if expect_continue {
            stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").unwrap();
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let path = target.split('?').next().unwrap().to_string();
        self.requests.lock().unwrap().push((method.clone(), path.clone(), auth));
        let mut comments = self.comments.lock().unwrap();
        let answer = match method.as_str() {
            "GET" => Value::Array(comments.clone()),
            "POST" => {
                let body: Value = serde_json::from_slice(&body).unwrap();
                let comment = json!({"id": 1000 + comments.len(), "body": body["body"]});
                comments.push(comment.clone());
                comment
            }
            _ => {
                let id: u64 = path.rsplit('/').next().unwrap().parse().unwrap();
                let body: Value = serde_json::from_slice(&body).unwrap();
                let comment =
                    comments.iter_mut().find(|c| c["id"] == id).expect("an update of a known comment");
                comment["body"] = body["body"].clone();
                comment.clone()
            }
        };
        let answer = answer.to_string();
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            answer.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(answer.as_bytes()).unwrap();
    }

    fn bodies(&self) -> Vec<String> {
        self.comments.lock().unwrap().iter().map(|c| c["body"].as_str().unwrap().to_string()).collect()
    }

    fn methods(&self) -> Vec<(String, String)> {
        self.requests.lock().unwrap().iter().map(|(m, p, _)| (m.clone(), p.clone())).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_comment_is_posted_once_then_updated_on_github_and_gitlab() {
    let world = World::start(ApiVersion::V6).await;
    let someone_else = json!({"id": 7, "body": "LGTM"});

    // GitHub: a pull request with someone else's comment.
    let (github, url) = FakeForge::start(vec![someone_else.clone()]);
    let token = common::world::canary("github-token");
    world.other_secrets.lock().unwrap().push(token.clone());
    let env = [
        ("GITHUB_API_URL", url),
        ("GITHUB_TOKEN", token.clone()),
        ("GITHUB_REPOSITORY", "acme/manifests".to_string()),
        ("OZFORM_CI_PR", "12".to_string()),
    ];
    assert_eq!(ci_script(&world, &["plan", BASIC], &[]).await.0, 0);
    let (code, printed) = ci_script(&world, &["comment", "github"], &env).await;
    assert_eq!(code, 0, "{printed}");
    let comments = "/repos/acme/manifests/issues/12/comments".to_string();
    assert_eq!(github.methods(), [("GET".into(), comments.clone()), ("POST".into(), comments.clone())]);
    assert_eq!(github.bodies(), ["LGTM".to_string(), ci_file(&world, "comment.md")]);

    ci_script(&world, &["apply", BASIC], &[]).await;
    assert_eq!(ci_script(&world, &["plan", BASIC], &[]).await.0, 0);
    let (code, printed) = ci_script(&world, &["comment", "github"], &env).await;
    assert_eq!(code, 0, "{printed}");
    assert_eq!(
        github.methods()[2..],
        [
            ("GET".to_string(), comments.clone()),
            ("PATCH".to_string(), "/repos/acme/manifests/issues/comments/1001".to_string())
        ]
    );
    let bodies = github.bodies();
    assert_eq!(bodies.len(), 2, "one plan comment, updated: {bodies:?}");
    assert!(bodies[1].contains("### ozform plan: no changes"), "{}", bodies[1]);
    assert!(
        github
            .requests
            .lock()
            .unwrap()
            .iter()
            .all(|(_, _, auth)| *auth == format!("Authorization: Bearer {token}"))
    );

    // GitLab: the same as merge-request notes.
    let (gitlab, url) = FakeForge::start(vec![someone_else]);
    let token = common::world::canary("gitlab-token");
    world.other_secrets.lock().unwrap().push(token.clone());
    let env = [
        ("CI_API_V4_URL", format!("{url}/api/v4")),
        ("OZFORM_GITLAB_TOKEN", token.clone()),
        ("CI_PROJECT_ID", "42".to_string()),
        ("CI_MERGE_REQUEST_IID", "3".to_string()),
    ];
    for _ in 0..2 {
        let (code, printed) = ci_script(&world, &["comment", "gitlab"], &env).await;
        assert_eq!(code, 0, "{printed}");
    }
    let notes = "/api/v4/projects/42/merge_requests/3/notes".to_string();
    assert_eq!(
        gitlab.methods(),
        [
            ("GET".to_string(), notes.clone()),
            ("POST".to_string(), notes.clone()),
            ("GET".to_string(), notes.clone()),
            ("PUT".to_string(), format!("{notes}/1001")),
        ]
    );
    assert_eq!(gitlab.bodies(), ["LGTM".to_string(), ci_file(&world, "comment.md")]);
    assert!(
        gitlab.requests.lock().unwrap().iter().all(|(_, _, auth)| *auth == format!("PRIVATE-TOKEN: {token}"))
    );

    // The tokens reached only the forge, never the output.
    world.assert_no_secrets();
}

// The demo, as a new user runs it.

#[test]
fn the_demo_removes_its_directory_unless_told_to_keep_it() {
    let tmp = tempfile::tempdir().unwrap();
    let listing =
        || -> Vec<PathBuf> { std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().path()).collect() };
    let run = common::Cli::new().env("TMPDIR", tmp.path()).args(["demo"]).run().code(0);
    assert!(run.stdout.contains("No changes."), "{}", run.stdout);
    assert!(run.stdout.contains("`ozform demo --keep` keeps them"), "{}", run.stdout);
    assert_eq!(listing(), Vec::<PathBuf>::new(), "the demo left its directory behind");

    let run = common::Cli::new().env("TMPDIR", tmp.path()).args(["demo", "--keep"]).run().code(0);
    let kept = listing();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(run.stderr.contains(&format!("kept {}", kept[0].display())), "{}", run.stderr);
    assert!(kept[0].join("manifests/companies.yaml").is_file());
    assert_eq!(std::fs::read_dir(kept[0].join("tokens")).unwrap().count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_multi_env_example_applies_as_its_comments_say() {
    let world = World::start(ApiVersion::V6).await;
    // The example, copied as it is, with the secrets its comments say to make.
    let example = world.path("multi-env");
    std::fs::create_dir_all(example.join("secrets/prod")).unwrap();
    for name in ["companies.yaml", "service-users.yaml"] {
        std::fs::copy(root().join("examples/multi-env").join(name), example.join(name)).unwrap();
    }
    let comments = read("examples/multi-env/service-users.yaml");
    assert!(comments.contains("secrets/prod/web-password") && comments.contains("ACME_REPORT_PASSWORD"));
    let web_password = common::world::canary("web-file-pw");
    std::fs::write(example.join("secrets/prod/web-password"), format!("{web_password}\n")).unwrap();
    let report_password = common::world::canary("report-pw");
    world.other_secrets.lock().unwrap().extend([web_password, report_password.clone()]);
    let path = example.to_str().unwrap().to_string();

    let apply = world
        .command("apply", &["--auto-approve", &path])
        .env("OZ_VAR_ENV", "prod")
        .env("ACME_REPORT_PASSWORD", &report_password);
    world.run(apply).await.code(0);
    let users: Vec<String> = world.emu.snapshot().users.into_iter().map(|u| u.email).collect();
    for email in ["svc-web-prod@acme.example", "svc-report-prod@acme.example"] {
        assert!(users.iter().any(|u| u == email), "{email} not created: {users:?}");
    }
    let plan = world.command("plan", &["--detailed-exitcode", &path]).env("OZ_VAR_ENV", "prod");
    let run = world.run(plan).await.code(0);
    assert!(run.stdout.contains("No changes."), "{}", run.stdout);
    // The secret file is a file the run was given, not one it wrote: the scan skips it.
    std::fs::remove_dir_all(example.join("secrets")).unwrap();
    world.assert_no_secrets();
}
