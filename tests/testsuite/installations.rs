//! Several installations behind one project file (issue #24): two emulators (API 5 and API 6)
//! named in an `ozform.yaml`, planned and applied together; `--installation` selecting one, a
//! typo in it refused with a suggestion; an installation that is down not stopping the others
//! from planning; `plan --out DIR` and `apply --plan DIR`; apply stopping at the first failed
//! installation unless `--keep-going`. Every password is a canary, and none is printed.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::path::{Path, PathBuf};

use crate::common::world::{BASIC, World, canary};
use crate::common::{Cli, Run, root};
use ozform::model::ApiVersion;

/// Two emulators and a project directory naming them `eu` (API 5) and `us` (API 6), each
/// served the manifests of `examples/basic` (copied inside the project's directory). Also the
/// fixture of `reconcile`'s tests over a project file.
pub(crate) struct Project {
    pub(crate) eu: World,
    pub(crate) us: World,
    pub(crate) dir: tempfile::TempDir,
    eu_password: String,
    us_password: String,
    /// Every canary a run was given.
    secrets: Vec<String>,
    /// What each run printed, for the canary scan.
    pub(crate) printed: Vec<String>,
}

impl Project {
    pub(crate) async fn start(extra: &str) -> Self {
        let eu = World::start(ApiVersion::V5).await;
        let mut us = World::start(ApiVersion::V6).await;
        // One set of manifest passwords for both: the manifests are the same.
        us.passwords.clone_from(&eu.passwords);
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&root().join(BASIC), &dir.path().join("manifests"));
        let (eu_password, us_password) = (canary("eu-admin"), canary("us-admin"));
        let installation = |name: &str, world: &World, variable: &str| {
            format!(
                "  - name: {name}\n    api_url: {}\n    admin_email: {}\n    admin_password: {{env: {variable}}}\n    \
                 manifests: [manifests]\n",
                world.emu.url(),
                world.emu.admin_email()
            )
        };
        let text = format!(
            "installations:\n{}{}{extra}",
            installation("eu", &eu, "OZ_EU_ADMIN_PASSWORD"),
            installation("us", &us, "OZ_US_ADMIN_PASSWORD")
        );
        std::fs::write(dir.path().join("ozform.yaml"), text).unwrap();
        let mut secrets: Vec<String> = eu.passwords.values().cloned().collect();
        secrets.extend([eu.admin_password.clone(), us.admin_password.clone()]);
        Self { eu, us, dir, eu_password, us_password, secrets, printed: Vec::new() }
    }

    /// The binary in the project's directory, each admin password in its variable.
    pub(crate) fn cli(&self, args: &[&str]) -> Cli {
        let mut cli = Cli::new()
            .current_dir(self.dir.path())
            .env("OZ_EU_ADMIN_PASSWORD", &self.eu.admin_password)
            .env("OZ_US_ADMIN_PASSWORD", &self.us.admin_password)
            .env_remove("OZ_INSTALLATION")
            .env_remove("OZ_CONFIG")
            .args(args);
        for (name, value) in &self.eu.passwords {
            cli = cli.env(name, value);
        }
        cli
    }

    /// The variables a run needs besides its flags: each admin password in its variable and
    /// the manifests' passwords.
    pub(crate) fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("OZ_EU_ADMIN_PASSWORD".to_string(), self.eu.admin_password.clone()),
            ("OZ_US_ADMIN_PASSWORD".to_string(), self.us.admin_password.clone()),
        ];
        env.extend(self.eu.passwords.iter().map(|(k, v)| (k.clone(), v.clone())));
        env
    }

    pub(crate) async fn run(&mut self, args: &[&str]) -> Run {
        let cli = self.cli(args);
        let run = tokio::task::spawn_blocking(move || cli.run()).await.unwrap();
        self.printed.push(format!("{}{}", run.stdout, run.stderr));
        run
    }

    pub(crate) fn assert_no_secrets(&self) {
        let _ = (&self.eu_password, &self.us_password);
        for printed in &self.printed {
            for secret in &self.secrets {
                assert!(!printed.contains(secret.as_str()), "a secret was printed:\n{printed}");
            }
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn count(text: &str, part: &str) -> usize {
    text.matches(part).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_installations_plan_in_sections_apply_and_converge() {
    let mut p = Project::start("").await;

    let run = p.run(&["plan", "--detailed-exitcode"]).await.code(2);
    let eu_at = run.stdout.find("=== installation `eu`").unwrap_or_else(|| panic!("{}", run.stdout));
    let us_at = run.stdout.find("=== installation `us`").unwrap_or_else(|| panic!("{}", run.stdout));
    assert!(eu_at < us_at, "{}", run.stdout);
    assert!(run.stdout.contains("(Oz API 5, detected)") && run.stdout.contains("(Oz API 6, detected)"));
    assert_eq!(count(&run.stdout, "Plan: 5 to create, 0 to update, 2 tokens to issue."), 2, "{}", run.stdout);
    assert!(
        run.stdout.contains("Total of 2 installations: 10 to create, 0 to update, 4 tokens to issue."),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("Plan id (all installations): "), "{}", run.stdout);
    assert_eq!(p.eu.emu.stats().mutating_requests + p.us.emu.stats().mutating_requests, 0);

    let run = p.run(&["plan", "--format", "markdown"]).await.code(0);
    assert!(
        run.stdout.starts_with("## ozform plan: 2 installations\n\n<!-- ozform-plan-id: "),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("#### Installation `eu`") && run.stdout.contains("#### Installation `us`"));

    // One installation, by name.
    let run = p.run(&["plan", "--installation", "us", "--detailed-exitcode"]).await.code(2);
    assert!(!run.stdout.contains("`eu`") && run.stdout.contains("=== installation `us`"), "{}", run.stdout);

    let run = p.run(&["apply", "--auto-approve"]).await.code(0);
    assert_eq!(count(&run.stdout, "Apply complete:"), 2, "{}", run.stdout);
    assert!(run.stdout.contains("Installation `eu`: Apply complete:"), "{}", run.stdout);
    // Each installation's tokens under its name in the default store beside the project file.
    for name in ["eu", "us"] {
        let kept = std::fs::read_dir(p.dir.path().join("ozform-tokens").join(name)).unwrap().count();
        assert!(kept >= 2, "tokens of `{name}`");
    }

    let run = p.run(&["plan", "--detailed-exitcode"]).await.code(0);
    assert_eq!(count(&run.stdout, "No changes."), 2, "{}", run.stdout);
    assert!(run.stdout.contains("Total of 2 installations: no changes."), "{}", run.stdout);
    p.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typo_in_installation_is_refused_with_a_suggestion() {
    let mut p = Project::start("").await;
    let run = p.run(&["plan", "--installation", "euu"]).await.code(1);
    assert!(run.stderr.contains("`--installation euu` names no installation"), "{}", run.stderr);
    assert!(run.stderr.contains("did you mean `eu`?"), "{}", run.stderr);
    let run =
        p.run(&["apply", "--auto-approve", "--installation", "eu", "--installation", "usa"]).await.code(1);
    assert!(run.stderr.contains("did you mean `us`?"), "{}", run.stderr);
    // One id map is one installation's: with several, the run is refused before any request.
    let run = p.run(&["apply", "--auto-approve", "--id-map", "ids.json"]).await.code(1);
    assert!(run.stderr.contains("`--id-map FILE` maps one installation"), "{}", run.stderr);
    assert!(run.stderr.contains("--installation NAME"), "{}", run.stderr);
    assert!(!p.dir.path().join("ids.json").exists());
    assert_eq!(p.eu.emu.stats().mutating_requests + p.us.emu.stats().mutating_requests, 0);
    // Flags that would say what the project file says are refused, not silently ignored.
    let run = p.run(&["plan", "--api-url", "http://127.0.0.1:1"]).await.code(1);
    assert!(run.stderr.contains("`--api-url`/`OZ_API_URL` is given"), "{}", run.stderr);
    let run = p.run(&["plan", "manifests"]).await.code(1);
    assert!(run.stderr.contains("manifest paths are given"), "{}", run.stderr);
    // A CI variable defined as nothing (GitHub's `${{ vars.X }}` of an unset X) is no choice.
    let cli = p
        .cli(&["plan", "--detailed-exitcode"])
        .env("OZ_API_URL", "")
        .env("OZ_ADMIN_EMAIL", "")
        .env("OZ_TOKEN_STORE", "");
    let run = tokio::task::spawn_blocking(move || cli.run()).await.unwrap().code(2);
    assert!(run.stdout.contains("Total of 2 installations"), "{}", run.stdout);
    p.printed.push(format!("{}{}", run.stdout, run.stderr));
    p.assert_no_secrets();
}

/// A third installation on a port nobody listens on.
pub(crate) const DOWN: &str = "  - name: down\n    api_url: http://127.0.0.1:1\n    admin_email: a@b.example\n    \
                    admin_password: {env: OZ_EU_ADMIN_PASSWORD}\n    manifests: [manifests]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_installation_down_does_not_stop_the_others_from_planning() {
    let mut p = Project::start(DOWN).await;
    let run = p.run(&["plan", "--detailed-exitcode", "--installations-parallelism", "2"]).await.code(1);
    assert_eq!(count(&run.stdout, "Plan: 5 to create"), 2, "{}", run.stdout);
    assert!(run.stdout.contains("=== installation `down`"), "{}", run.stdout);
    assert!(run.stdout.contains("not planned: `down`"), "{}", run.stdout);
    assert!(!run.stdout.contains("Plan id (all installations)"), "{}", run.stdout);
    assert!(run.stderr.contains("installation `down`"), "{}", run.stderr);

    // Apply stops at the first installation that fails (the order of the file: `down` last
    // here, so put it first through the selection order of the file instead: select it and one
    // more, and see the other applied only with `--keep-going`).
    let text = std::fs::read_to_string(p.dir.path().join("ozform.yaml")).unwrap();
    let (head, tail) = text.split_at(text.find("  - name: us").unwrap());
    let reordered = format!("{}{DOWN}{}", head, tail.replace(DOWN, ""));
    std::fs::write(p.dir.path().join("ozform.yaml"), reordered).unwrap();
    let run = p.run(&["apply", "--auto-approve"]).await.code(1);
    assert!(run.stdout.contains("Installation `eu`: Apply complete:"), "{}", run.stdout);
    assert!(
        run.stdout.contains("Installation `us`: not applied: an installation before it failed"),
        "{}",
        run.stdout
    );
    assert_eq!(p.us.emu.stats().mutating_requests, 0);
    let run = p.run(&["apply", "--auto-approve", "--keep-going"]).await.code(1);
    assert!(run.stdout.contains("Installation `eu`: No changes."), "{}", run.stdout);
    assert!(run.stdout.contains("Installation `us`: Apply complete:"), "{}", run.stdout);
    p.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_saved_in_a_directory_are_applied_each_on_its_installation() {
    let mut p = Project::start("").await;
    p.run(&["plan", "--out", "plans"]).await.code(0);
    let plans: PathBuf = p.dir.path().join("plans");
    for name in ["eu", "us"] {
        let plan: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(plans.join(format!("{name}.json"))).unwrap())
                .unwrap();
        assert_eq!(plan["installation"], name);
    }
    // A plan of one installation renamed to the other's file is refused before anything.
    std::fs::copy(plans.join("eu.json"), p.dir.path().join("swapped.json")).unwrap();
    std::fs::create_dir(p.dir.path().join("swapped")).unwrap();
    std::fs::rename(p.dir.path().join("swapped.json"), p.dir.path().join("swapped/us.json")).unwrap();
    let run = p.run(&["apply", "--plan", "swapped"]).await.code(1);
    assert!(run.stderr.contains("is for installation `eu`, not `us`"), "{}", run.stderr);
    assert_eq!(p.eu.emu.stats().mutating_requests + p.us.emu.stats().mutating_requests, 0);

    // `show DIR` groups the saved plans as `plan` did, with the same combined id.
    let planned = p.run(&["plan", "--format", "markdown"]).await.code(0);
    let shown = p.run(&["show", "--format", "markdown", "plans"]).await.code(0);
    let id = |text: &str| text.lines().find(|l| l.starts_with("<!-- ozform-plan-id: ")).map(str::to_string);
    assert!(id(&shown.stdout).is_some());
    assert_eq!(id(&shown.stdout), id(&planned.stdout), "{}", shown.stdout);
    assert!(
        shown.stdout.contains("#### Installation `eu`") && shown.stdout.contains("#### Installation `us`")
    );

    let run = p.run(&["apply", "--plan", "plans"]).await.code(0);
    assert_eq!(count(&run.stdout, "Apply complete:"), 2, "{}", run.stdout);
    let run = p.run(&["plan", "--detailed-exitcode"]).await.code(0);
    assert_eq!(count(&run.stdout, "No changes."), 2, "{}", run.stdout);
    p.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_project_file_installation_names_the_one_namespace_of_the_run() {
    let w = World::start(ApiVersion::V6).await;
    let run = w.plan(&["--installation", "a", "--installation", "b", BASIC]).await.code(1);
    assert!(run.stderr.contains("`--installation` is given more than once, and there is no project file"));
    let run = w.apply(&["--auto-approve", "--installation", "eu-prod", BASIC]).await.code(0);
    assert!(run.stdout.contains("Apply complete:"), "{}", run.stdout);
    assert!(w.token_dir().join("eu-prod").is_dir());
    let run = w.cli().current_dir(w.dir.path()).args(["plan"]).run().code(1);
    assert!(run.stderr.contains("no manifests given, and there is no project file"), "{}", run.stderr);
}

#[test]
fn the_committed_project_file_schema_equals_ozform_schema_project_file() {
    let committed =
        std::fs::read_to_string(root().join("schemas/ozform-project.schema.json")).unwrap_or_default();
    let expected =
        format!("{}\n", serde_json::to_string_pretty(&ozform::manifest::project::schema()).unwrap());
    assert!(
        committed == expected,
        "schemas/ozform-project.schema.json is out of date; regenerate it with:\n    cargo run -- schema --project-file > schemas/ozform-project.schema.json"
    );
}
