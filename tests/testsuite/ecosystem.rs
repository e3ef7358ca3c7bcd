//! How ozform fits the tools around it, each checked with the real tool:
//! - shell completions load in `bash` and `fish` and complete commands, flags and values; the
//!   zsh script loads under `compinit` and registers its function;
//! - the committed manual pages (`docs/man/`) equal `ozform man --out-dir` and render with `man -l`
//!   and `groff` without a warning;
//! - the `Dockerfile` passes hadolint, copies everything the build reads, runs as a non-root user;
//! - the CI recipes (`contrib/ci/`): the script passes shellcheck, so do the shell steps of both
//!   recipes; the GitHub workflow passes actionlint and GitHub's workflow schema, the GitLab file
//!   GitLab's CI schema; both plan on review, apply the reviewed plan on merge one at a time and
//!   check for drift on a schedule, through the one script (which `ci_flow` runs for real);
//! - `ozform demo`, tried as a new user would, leaves no directory behind unless `--keep`;
//! - `examples/multi-env` applies as its comments say, with its secret file and variable.
//!
//! A missing tool fails its test and says what to install; none is skipped.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::python_tools::python_tool;
use common::root;
use common::world::World;
use ozform::model::ApiVersion;
use serde_json::Value;

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
    // plan, apply, the scheduled drift check (#21) and the scheduled reconcile (#23).
    assert_eq!(jobs, 4);
}

#[test]
fn both_recipes_plan_on_review_apply_the_reviewed_plan_on_merge_and_check_drift_on_a_schedule() {
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
    assert!(runs("apply").iter().any(|r| r.starts_with(&format!("{script_in_repo} merge github "))));
    assert!(runs("drift").iter().any(|r| r.starts_with(&format!("{script_in_repo} drift github "))));
    assert_eq!(jobs["plan"]["permissions"]["pull-requests"], "write");
    // The merge job reads the merged pull request's comments and labels and comments on it.
    assert_eq!(jobs["apply"]["permissions"]["pull-requests"], "write");
    assert_eq!(jobs["drift"]["permissions"]["issues"], "write");
    assert!(jobs["plan"]["if"].as_str().unwrap().contains("pull_request"));
    assert!(jobs["apply"]["if"].as_str().unwrap().contains("github.event.repository.default_branch"));
    assert!(jobs["drift"]["if"].as_str().unwrap().contains("schedule"));
    assert!(github["on"]["schedule"][0]["cron"].is_string());
    assert_eq!(jobs["apply"]["concurrency"]["cancel-in-progress"], false);
    assert!(jobs["apply"]["concurrency"]["group"].is_string());
    assert_ne!(
        jobs["drift"]["concurrency"]["group"], jobs["apply"]["concurrency"]["group"],
        "a pending drift check must not replace a pending apply"
    );
    let workflow = read(GITHUB_WORKFLOW);
    assert!(workflow.contains("${{ secrets.OZ_ADMIN_PASSWORD }}"));
    // The comment is posted even when planning failed, saying why.
    assert_eq!(
        jobs["plan"]["steps"].as_array().unwrap().iter().find(|s| s["name"] == "Comment").unwrap()["if"],
        "always() && steps.plan.outcome != 'skipped'"
    );
    // Every job keeps the whole plan (a comment may hold only part of it) as an artifact.
    let out = github["env"]["OZFORM_CI_OUT"].as_str().unwrap();
    for job in ["plan", "apply", "drift"] {
        let upload = jobs[job]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["uses"].as_str().is_some_and(|u| u.starts_with("actions/upload-artifact@")))
            .unwrap_or_else(|| panic!("job {job} uploads no artifact"));
        assert_eq!(upload["if"], "always()");
        assert_eq!(upload["with"]["path"].as_str().unwrap().trim_end_matches('/'), out);
    }

    let gitlab = yaml(GITLAB_CI);
    let lines = |job: &str| -> Vec<String> {
        gitlab[job]["script"].as_array().unwrap().iter().map(|l| l.as_str().unwrap().to_string()).collect()
    };
    assert!(lines("ozform-plan").iter().any(|l| l.contains(&format!("{script_in_repo} plan "))));
    assert!(lines("ozform-plan").iter().any(|l| l == &format!("{script_in_repo} comment gitlab")));
    assert!(lines("ozform-apply").iter().any(|l| l.starts_with(&format!("{script_in_repo} merge gitlab "))));
    assert!(lines("ozform-drift").iter().any(|l| l.starts_with(&format!("{script_in_repo} drift gitlab "))));
    assert_eq!(gitlab["ozform-apply"]["resource_group"], "ozform-apply");
    assert!(gitlab["ozform-apply"]["rules"][0]["if"].as_str().unwrap().contains("$CI_DEFAULT_BRANCH"));
    assert!(gitlab["ozform-plan"]["rules"][0]["if"].as_str().unwrap().contains("merge_request_event"));
    let drift = gitlab["ozform-drift"]["rules"][0]["if"].as_str().unwrap();
    assert!(
        drift.contains(r#"$CI_PIPELINE_SOURCE == "schedule""#) && drift.contains("$OZFORM_SCHEDULE"),
        "{drift}"
    );
    let out = gitlab["variables"]["OZFORM_CI_OUT"].as_str().unwrap();
    for job in ["ozform-plan", "ozform-apply", "ozform-drift"] {
        assert_eq!(gitlab[job]["artifacts"]["when"], "always", "{job}");
        assert_eq!(
            gitlab[job]["artifacts"]["paths"][0].as_str().unwrap().trim_end_matches('/'),
            out,
            "{job}"
        );
    }
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
    // The tokens are kept under the installation (the demo emulator's origin).
    let installations: Vec<PathBuf> =
        std::fs::read_dir(kept[0].join("tokens")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(installations.len(), 1, "{installations:?}");
    assert_eq!(std::fs::read_dir(&installations[0]).unwrap().count(), 2);
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
