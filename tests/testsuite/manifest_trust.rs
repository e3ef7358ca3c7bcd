//! Issue #20, the manifest side, tried as a pull request would, through the binary: what a
//! manifest may no longer reach. Values interpolate only `OZ_VAR_…` variables (CI secrets named
//! in a value are refused and never printed, by `validate` and by `plan` in every format);
//! aliases share one budget across all files (memory stays small however many copies of an
//! alias-heavy file there are); `{file: PATH}` secrets stay inside the manifest paths or a
//! `--secrets-dir`, are opened without following a link or blocking, and bounded, and a saved
//! plan finds them from any working directory of its checkout; a saved plan given as a manifest
//! is named as such. Property tests cover interpolation names and secret paths.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use crate::common;

use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use common::Cli;
use common::world::{BASIC, World, canary};
use ozform::manifest::{self, LoadOptions};
use ozform::model::ApiVersion;
use ozform::secret::{SecretFile, SecretRef, SecretRoots};

/// The secrets a CI job typically holds, which a manifest names to print them.
const CI_SECRETS: [&str; 3] = ["GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "VAULT_TOKEN"];

/// What a run printed on stderr as one line: miette wraps its messages to the width of a
/// terminal, so that a phrase may be cut anywhere a space is.
fn flat(stderr: &str) -> String {
    let mut out = String::new();
    for line in stderr.lines().map(|line| line.trim().trim_start_matches(['|', '│']).trim()) {
        // A path is cut after a `/` (Unicode allows a break there), other text at a space.
        if !out.is_empty() && !out.ends_with('/') {
            out.push(' ');
        }
        out.push_str(line);
    }
    out
}

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

// ---------------------------------------------------------------------------------------------
// Interpolation of declared variables only.

/// The attacks of the issue, as a pull request would write them.
const LEAK: &str = "companies:\n  - name: \"Leak ${GITHUB_TOKEN}\"\n    technical_meta_data: {k: \"${AWS_SECRET_ACCESS_KEY}\"}\n\
                    service_users:\n  - email: \"${VAULT_TOKEN}\"\n    company: \"Leak ${GITHUB_TOKEN}\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ci_secrets_named_in_a_manifest_are_refused_and_never_printed_by_validate_or_plan() {
    let world = World::start(ApiVersion::V6).await;
    let canaries: Vec<(&str, String)> = CI_SECRETS.iter().map(|name| (*name, canary("ci"))).collect();
    world.other_secrets.lock().unwrap().extend(canaries.iter().map(|(_, value)| value.clone()));
    let manifest = write(&world.path("leak/m.yaml"), LEAK);
    let manifest = manifest.to_str().unwrap();
    let with_canaries = |mut cli: Cli| {
        for (name, value) in &canaries {
            cli = cli.env(name, value);
        }
        cli
    };
    let runs = [
        with_canaries(world.cli().args(["validate", manifest])),
        with_canaries(world.command("plan", &[manifest])),
        with_canaries(world.command("plan", &["--format", "json", manifest])),
        with_canaries(world.command("plan", &["--format", "markdown", manifest])),
        with_canaries(world.command("apply", &["--auto-approve", manifest])),
    ];
    for cli in runs {
        let run = world.run(cli).await.code(1);
        assert_eq!(run.stdout, "", "{}", run.stderr);
        // Each attack is located; none connected.
        let located = ["m.yaml:2:11", "m.yaml:3:30", "m.yaml:5:12", "m.yaml:6:14"]
            .map(|place| run.stderr.contains(place));
        assert_eq!(located, [true; 4], "{}", run.stderr);
        assert_eq!(run.stderr.matches("ozform::manifest::undeclared_variable").count(), 4, "{}", run.stderr);
        assert!(flat(&run.stderr).contains("only variables named `OZ_VAR_…`"), "{}", run.stderr);
        assert!(!run.stderr.contains("ozform::oz::"), "it connected:\n{}", run.stderr);
    }
    // The same as JSON lines.
    let json =
        with_canaries(world.command("plan", &["--format", "markdown", "--log-format", "json", manifest]));
    let run = world.run(json).await.code(1);
    assert_eq!(flat(&run.stderr).matches("is not an ozform variable").count(), 4, "{}", run.stderr);
    // Checked on every run above, and in every file the runs wrote.
    world.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oz_var_variables_interpolate_in_every_plan_format() {
    let world = World::start(ApiVersion::V6).await;
    let manifest = write(
        &world.path("m.yaml"),
        "companies:\n  - name: \"Acme ${OZ_VAR_ENV}\"\n    technical_meta_data: {tier: \"${OZ_VAR_TIER:-gold}\"}\n",
    );
    let manifest = manifest.to_str().unwrap();
    for format in ["text", "json", "markdown"] {
        let plan = world.command("plan", &["--format", format, manifest]).env("OZ_VAR_ENV", "prod");
        let run = world.run(plan).await.code(0);
        assert!(run.stdout.contains("Acme prod") && run.stdout.contains("gold"), "{}", run.stdout);
    }
}

// ---------------------------------------------------------------------------------------------
// One alias budget for the whole run.

/// Half a kilobyte of aliases that expand to about 145,000 nodes: as
/// `tests/fixtures/invalid/alias_budget/a.yaml`.
fn alias_file() -> String {
    std::fs::read_to_string(common::root().join("tests/fixtures/invalid/alias_budget/a.yaml")).unwrap()
}

/// The peak resident memory of process `pid`, in KiB (`VmHWM` of `/proc/<pid>/status`).
fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_hundred_copies_of_an_alias_file_are_refused_at_the_second_in_little_memory() {
    // Before the budget was shared, each copy expanded on its own: 100 copies made about 15
    // million nodes, over a gigabyte.
    let dir = tempfile::tempdir().unwrap();
    let text = alias_file();
    for i in 1..=100 {
        write(&dir.path().join(format!("m/{i:03}.yaml")), &text.replace("Acme Bank", &format!("Acme {i}")));
    }
    // Twenty problems before them, so that what the run prints on stderr is more than its pipe
    // holds: it cannot exit before this test has read it, and so has not exited when its peak
    // memory is read, after the first byte, which it writes once loading is done.
    let noise = (0..20).fold(String::new(), |mut noise, i| {
        let _ = writeln!(noise, "    x{i}: 1");
        noise
    });
    write(&dir.path().join("m/000.yaml"), &format!("companies:\n  - name: Noise\n{noise}"));
    let mut child = Cli::new().args(["validate", "m"]).current_dir(dir.path()).spawn();
    let mut stderr = child.stderr.take().unwrap();
    rustix::pipe::fcntl_setpipe_size(&stderr, 4096).unwrap();
    let mut first = [0u8; 1];
    stderr.read_exact(&mut first).unwrap();
    let peak = peak_kib(child.id());
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    let stderr = format!("{}{rest}", char::from(first[0]));
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.len() > 4096, "the run must print more than the pipe holds: {} bytes", stderr.len());
    assert!(stderr.contains("ozform::manifest::alias_budget"), "{stderr}");
    assert!(stderr.contains("m/002.yaml:10:"), "not located at the second copy:\n{stderr}");
    assert_eq!(stderr.matches("ozform::manifest::alias_budget").count(), 1, "{stderr}");
    assert!(stderr.contains("the manifests have 21 problems"), "{stderr}");
    // The budget's nodes (a few dozen MiB) and the runtime, far from a gigabyte.
    assert!(peak < 256 << 10, "peak memory {} MiB", peak >> 10);
}

// ---------------------------------------------------------------------------------------------
// Secret files confined and bounded.

/// `{file: …}` sources of users `a@x.example`, `b@x.example`, … in company `Acme`.
fn users_with_files(files: &[&str]) -> String {
    let mut text = String::from("companies: [{name: Acme}]\nservice_users:\n");
    for (i, file) in files.iter().enumerate() {
        let user = char::from(b'a' + u8::try_from(i).unwrap());
        let _ =
            writeln!(text, "  - {{email: {user}@x.example, company: Acme, password: {{file: \"{file}\"}}}}");
    }
    text
}

#[test]
fn validate_refuses_secret_files_outside_the_paths_and_accepts_a_secrets_dir() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("m/users.yaml"),
        &users_with_files(&[
            "/proc/self/environ",
            "../../../../etc/passwd",
            "/dev/zero",
            "/run/ci/web",
            "secrets/web",
        ]),
    );
    let run = Cli::new().args(["validate", "m"]).current_dir(dir.path()).run().code(1);
    assert_eq!(run.stderr.matches("ozform::manifest::secret_outside").count(), 4, "{}", run.stderr);
    assert!(flat(&run.stderr).contains("secret file `/proc/self/environ` lies outside"), "{}", run.stderr);
    // Nothing about the paths on disk: the same words for a path that exists and one that does not.
    assert!(!run.stderr.contains("no such file") && !run.stderr.contains("exists"), "{}", run.stderr);
    write(&dir.path().join("m/users.yaml"), &users_with_files(&["/run/ci/web", "secrets/web", "/dev/shm/x"]));
    let run = Cli::new().args(["validate", "m", "--secrets-dir", "/run/ci"]).current_dir(dir.path()).run();
    assert!(flat(&run.stderr).contains("secret file `/dev/shm/x` lies outside"), "{}", run.stderr);
    let run = Cli::new()
        .args(["validate", "m"])
        .env("OZ_SECRETS_DIR", "/tmp/nothing::/run/ci:/dev/shm")
        .current_dir(dir.path())
        .run()
        .code(0);
    assert_eq!(run.stdout, "ok: 1 company, 3 service users, 0 tokens in 1 file\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_refuses_fifos_devices_links_and_directories_before_any_request() {
    let world = World::start(ApiVersion::V6).await;
    let m = world.path("m");
    std::fs::create_dir_all(m.join("dir")).unwrap();
    let web_password = canary("file-pw");
    world.other_secrets.lock().unwrap().push(web_password.clone());
    write(&m.join("real"), &format!("{web_password}\n"));
    std::os::unix::fs::symlink("real", m.join("link")).unwrap();
    // A link a pull request commits, to a directory outside the manifests.
    std::os::unix::fs::symlink("/etc", m.join("etc")).unwrap();
    assert!(std::process::Command::new("mkfifo").arg(m.join("fifo")).status().unwrap().success());
    std::fs::File::create(m.join("big")).unwrap().set_len(1 << 20).unwrap();
    write(
        &m.join("users.yaml"),
        &users_with_files(&["fifo", "/dev/zero", "link", "dir", "etc/hostname", "big", "missing"]),
    );
    // The file, not the directory: the loader would refuse the link in a directory it walks.
    let apply = world.command("apply", &["--auto-approve", "--secrets-dir", "/dev", "m/users.yaml"]);
    // `/dev` given as a secrets directory: even there, a device is not read.
    let run = world.run(apply.current_dir(world.dir.path())).await.code(1);
    let stderr = flat(&run.stderr);
    for expected in [
        "`a@x.example`: secret file `fifo` is not a regular file: it is a FIFO",
        "`b@x.example`: secret file `/dev/zero` is not a regular file: it is a character device",
        "`c@x.example`: secret file `link` is a symbolic link",
        "`d@x.example`: secret file `dir` is not a regular file: it is a directory",
        "`e@x.example`: secret file `etc/hostname` lies, once its symbolic links are followed, outside",
        "`f@x.example`: secret file `big` is larger than 64 KiB",
        "`g@x.example`: cannot read secret file `missing`: no such file or directory",
    ] {
        assert!(stderr.contains(expected), "{expected}\n{}", run.stderr);
    }
    // Nothing was created: the passwords are resolved before the first request.
    assert!(world.emu.snapshot().companies.iter().all(|c| c.name != "Acme"));
    // The scan reads every file under the world's directory: not a FIFO, nor `/etc`.
    // The secret file is a file the run was given, not one it wrote: the scan skips it too.
    for special in ["fifo", "etc", "link", "real"] {
        std::fs::remove_file(m.join(special)).unwrap();
    }
    world.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_warning_tells_nothing_about_a_place_outside_the_roots() {
    let world = World::start(ApiVersion::V6).await;
    let m = world.path("m");
    std::fs::create_dir_all(&m).unwrap();
    std::os::unix::fs::symlink("/etc", m.join("etc")).unwrap();
    write(&m.join("present"), "pw\n");
    write(
        &m.join("users.yaml"),
        &users_with_files(&["etc/hostname", "etc/no-such-file", "present", "absent"]),
    );
    // The file, not the directory: the loader would refuse the link in a directory it walks.
    let run = world.plan(&[m.join("users.yaml").to_str().unwrap()]).await.code(0);
    // `/etc/hostname` exists and `/etc/no-such-file` does not: the plan says the same of both.
    for (user, file) in [("a", "m/etc/hostname"), ("b", "m/etc/no-such-file"), ("d", "m/absent")]
        .map(|(u, f)| (u, world.path(f)))
    {
        let warning = format!(
            "`service_user/{user}@x.example` will be created with the password from `{{file: {}}}`, but file `{}` cannot be read now",
            file.display(),
            file.display()
        );
        assert!(run.stdout.contains(&warning), "{warning}\n{}", run.stdout);
    }
    assert!(!run.stdout.contains("c@x.example` will be created"), "{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_plan_finds_its_secret_files_from_any_working_directory_of_the_checkout() {
    let world = World::start(ApiVersion::V6).await;
    let checkout = world.path("checkout");
    std::fs::create_dir_all(checkout.join(".git")).unwrap();
    let password = canary("file-pw");
    world.other_secrets.lock().unwrap().push(password.clone());
    write(&checkout.join("manifests/secrets/web"), &format!("{password}\n"));
    write(&checkout.join("manifests/users.yaml"), &users_with_files(&["secrets/web"]));
    let plan = world.command("plan", &["manifests", "--out", "plan.json"]).current_dir(&checkout);
    world.run(plan).await.code(0);
    let saved = std::fs::read_to_string(checkout.join("plan.json")).unwrap();
    assert!(saved.contains("\"file\": \"manifests/secrets/web\""), "{saved}");

    // Outside the checkout the path does not lead to the file: refused, nothing done.
    let elsewhere = world.command("apply", &["--plan", "checkout/plan.json"]).current_dir(world.dir.path());
    let run = world.run(elsewhere).await.code(1);
    assert!(
        flat(&run.stderr)
            .contains("cannot read secret file `manifests/secrets/web`: no such file or directory"),
        "{}",
        run.stderr
    );
    // A tampered plan reaches nothing outside the checkout. The plan id is a checksum anyone can
    // drop (a plan without one, from ozform 0.1, still loads): the tamperer drops it.
    let mut without_id: Vec<&str> = saved.lines().filter(|l| !l.contains("\"plan_id\"")).collect();
    without_id.push("");
    let without_id = without_id.join("\n");
    for (tampered, words) in [
        ("../../../../etc/passwd", "secret file `../../../../etc/passwd` lies outside the checkout"),
        ("/proc/self/environ", "secret file `/proc/self/environ` lies outside the checkout"),
    ] {
        std::fs::write(checkout.join("tampered.json"), without_id.replace("manifests/secrets/web", tampered))
            .unwrap();
        let apply = world.command("apply", &["--plan", "tampered.json"]).current_dir(&checkout);
        let run = world.run(apply).await.code(1);
        assert!(flat(&run.stderr).contains(words), "{words}\n{}", run.stderr);
    }
    assert!(world.emu.snapshot().users.iter().all(|u| u.email != "a@x.example"));
    // From a subdirectory of the checkout, the plan applies.
    let inside = world.command("apply", &["--plan", "../plan.json"]).current_dir(checkout.join("manifests"));
    world.run(inside).await.code(0);
    assert!(world.emu.snapshot().users.iter().any(|u| u.email == "a@x.example"));
    // The secret file is a file the run was given, not one it wrote: the scan skips it.
    std::fs::remove_file(checkout.join("manifests/secrets/web")).unwrap();
    world.assert_no_secrets();
}

// ---------------------------------------------------------------------------------------------
// A saved plan given where manifests are expected.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_plan_given_as_manifests_says_to_apply_it_with_plan() {
    let world = World::start(ApiVersion::V6).await;
    let saved = world.path("plan.json");
    world.plan(&["--out", saved.to_str().unwrap(), BASIC]).await.code(0);
    let expected = "`plan.json` is a saved plan: run `ozform apply --plan plan.json`";
    for command in ["validate", "plan", "apply"] {
        let cli = if command == "validate" {
            world.cli().args(["validate", "plan.json"])
        } else {
            world.command(command, &["plan.json"])
        };
        let run = world.run(cli.current_dir(world.dir.path())).await.code(1);
        assert!(flat(&run.stderr).contains(expected), "{command}:\n{}", run.stderr);
        assert_eq!(run.stderr.matches("ozform::manifest::").count(), 2, "{command}:\n{}", run.stderr);
        assert!(run.stderr.contains("ozform::manifest::saved_plan"), "{}", run.stderr);
        assert!(!run.stderr.contains("unknown_field"), "{}", run.stderr);
    }
    world.assert_no_secrets();
}

// ---------------------------------------------------------------------------------------------
// Property tests: interpolation names and secret paths.

/// Names as a manifest may write them: `OZ_VAR_` ones, CI secrets, near misses.
fn variable_name() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    let prefix = prop_oneof![
        Just(""),
        Just("OZ_VAR_"),
        Just("OZ_VAR"),
        Just("oz_var_"),
        Just("OZ_"),
        Just("GITHUB_"),
        Just("AWS_"),
        Just("_OZ_VAR_"),
    ];
    (prefix, "[A-Za-z_][A-Za-z0-9_]{0,12}").prop_map(|(prefix, rest)| format!("{prefix}{rest}"))
}

/// A piece of a string value: text, a literal `$${`, or `${NAME}` / `${NAME:-default}`.
fn value_piece() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![
        "[a-z @.-]{0,6}",
        Just("$${".to_string()),
        Just("$".to_string()),
        (variable_name(), proptest::option::of("[a-z]{0,5}")).prop_map(|(name, default)| match default {
            Some(default) => format!("${{{name}:-{default}}}"),
            None => format!("${{{name}}}"),
        }),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Every variable holds a canary: a value of a variable not named `OZ_VAR_` is never looked
    /// up, never in the desired state, never in a diagnostic.
    #[test]
    fn only_oz_var_variables_are_ever_read(pieces in proptest::collection::vec(value_piece(), 1..5)) {
        use proptest::prop_assert;
        let value = pieces.concat();
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            &dir.path().join("m.yaml"),
            &format!("companies:\n  - name: {}\n    technical_meta_data: {{k: {}}}\n", json(&format!("C {value}")), json(&value)),
        );
        let looked_up = std::cell::RefCell::new(Vec::new());
        let env = |name: &str| {
            looked_up.borrow_mut().push(name.to_string());
            Some(format!("canary<{name}>"))
        };
        let shown = match manifest::load(std::slice::from_ref(&file), &env) {
            Ok(desired) => format!("{desired:?}"),
            Err(err) => format!("{:?}", miette::Report::new(err)),
        };
        for name in looked_up.into_inner() {
            prop_assert!(name.starts_with("OZ_VAR_"), "{} was looked up for {}", name, value);
        }
        let leaked = shown.match_indices("canary<").map(|(i, _)| &shown[i..]).find(|s| !s.starts_with("canary<OZ_VAR_"));
        prop_assert!(leaked.is_none(), "{}", shown);
    }

    /// Any path a manifest writes is placed inside the manifest directory or the secrets
    /// directory, or refused; never anywhere else.
    #[test]
    fn a_manifests_secret_path_never_escapes_the_roots(path in secret_path(), depth in 0usize..3) {
        use proptest::prop_assert;
        let roots = SecretRoots::new(Path::new("/ci/repo"), Path::new("/ci/repo"), &["m".into(), "/run/secrets".into()]);
        let dir = PathBuf::from("m").join("d/".repeat(depth));
        if let Some(file) = SecretFile::confined(&path, &dir, &roots) {
            let resolved = file.resolved().unwrap();
            prop_assert!(resolved.is_absolute());
            prop_assert!(resolved.starts_with("/ci/repo/m") || resolved.starts_with("/run/secrets"), "{} -> {}", path, resolved.display());
            prop_assert!(resolved.components().all(|c| !matches!(c, std::path::Component::ParentDir | std::path::Component::CurDir)));
            prop_assert!(inside_by_simulation(&dir, &path), "{} was placed but escapes", path);
            // Recorded as a saved plan does, and read back, it is anchored to the same file (a
            // path a terminal could act on is refused from a plan).
            let printable = !file.path().to_string_lossy().chars().any(|c| c.is_control() || c == '\u{202e}');
            let mut back: SecretFile = serde_json::from_value(serde_json::to_value(&file).unwrap()).unwrap();
            back.anchor(&SecretRoots::new(Path::new("/ci/repo/sub"), Path::new("/ci/repo"), &["/ci/repo".into(), "/run/secrets".into()]));
            proptest::prop_assert_eq!(back.resolved(), printable.then_some(resolved));
        } else {
            prop_assert!(!inside_by_simulation(&dir, &path), "{} was refused but stays inside", path);
        }
    }

    /// Any path a saved plan holds is anchored inside the checkout or a secrets directory, or
    /// cannot be opened.
    #[test]
    fn a_saved_plans_secret_path_never_escapes_the_roots(path in secret_path()) {
        use proptest::prop_assert;
        let roots = SecretRoots::new(Path::new("/ci/repo/sub"), Path::new("/ci/repo"), &["/ci/repo".into(), "/run/secrets".into()]);
        let mut file: SecretFile = serde_json::from_value(serde_json::json!(path)).unwrap();
        file.anchor(&roots);
        if let Some(resolved) = file.resolved() {
            prop_assert!(resolved.starts_with("/ci/repo") || resolved.starts_with("/run/secrets"), "{} -> {}", path, resolved.display());
        } else {
            let err = SecretRef::File(file).resolve(&|_| None).unwrap_err();
            prop_assert!(err.to_string().contains("lies outside the checkout"), "{}", err);
        }
    }

    /// Through the loader, on disk: a refused path is a located `secret_outside` (or a
    /// `bad_secret` for a control character), an accepted one lies inside.
    #[test]
    fn the_loader_places_secret_paths_inside_or_refuses_them(path in secret_path()) {
        use proptest::prop_assert;
        let dir = tempfile::tempdir().unwrap();
        let file = write(&dir.path().join("m/a/users.yaml"), &format!(
            "companies: [{{name: A}}]\nservice_users: [{{email: a@x.example, company: A, password: {{file: {}}}}}]\n",
            json(&path)
        ));
        let secrets = [dir.path().join("s")];
        let options = LoadOptions { secrets_dirs: &secrets, ..LoadOptions::new(&|_| None) };
        match manifest::load_with(&[dir.path().join("m")], &options) {
            Ok(desired) => {
                let Some(SecretRef::File(secret)) = &desired.users[0].password else { panic!("no file") };
                let resolved = secret.resolved().unwrap();
                prop_assert!(resolved.starts_with(dir.path().join("m")) || resolved.starts_with(dir.path().join("s")), "{} -> {}", path, resolved.display());
            }
            Err(err) => {
                let codes: Vec<String> = err.problems.iter().map(|p| p.code().unwrap().to_string()).collect();
                prop_assert!(
                    codes == ["ozform::manifest::secret_outside"] || codes == ["ozform::manifest::bad_secret"],
                    "{:?} for {:?} ({})", codes, path, file.display()
                );
            }
        }
    }
}

/// A YAML (and JSON) string holding `s`.
fn json(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// Paths built of pieces that matter: parents, dots, absolute roots, unicode, separators.
fn secret_path() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    let piece = prop_oneof![
        Just("..".to_string()),
        Just(".".to_string()),
        Just(String::new()),
        Just("m".to_string()),
        Just("d".to_string()),
        Just("s".to_string()),
        Just("secrets".to_string()),
        Just("run".to_string()),
        Just("proc".to_string()),
        Just("ü".to_string()),
        Just("é\u{301}".to_string()),
        Just("...".to_string()),
        Just("%2e%2e".to_string()),
        Just("\\..".to_string()),
        Just("\u{202e}".to_string()),
        "[a-z]{1,3}",
    ];
    (any::<bool>(), proptest::collection::vec(piece, 1..8))
        .prop_map(|(absolute, pieces): (bool, Vec<String>)| {
            format!("{}{}", if absolute { "/" } else { "" }, pieces.join("/"))
        })
        .prop_filter("an empty path is another problem", |p| !p.trim().is_empty())
}

/// Whether `written`, relative to `dir` under `/ci/repo`, lies inside `/ci/repo/m` or
/// `/run/secrets`: walked component by component with a stack of names, as a check apart
/// from `normalize`.
fn inside_by_simulation(dir: &Path, written: &str) -> bool {
    let mut stack: Vec<String> = Vec::new();
    if !written.starts_with('/') {
        stack.extend(["ci", "repo"].map(String::from));
        stack.extend(dir.to_str().unwrap().split('/').filter(|p| !p.is_empty()).map(String::from));
    }
    for piece in written.split('/') {
        match piece {
            "" | "." => {}
            ".." => {
                stack.pop();
            }
            name => stack.push(name.to_string()),
        }
    }
    stack.starts_with(&["ci".to_string(), "repo".to_string(), "m".to_string()])
        || stack.starts_with(&["run".to_string(), "secrets".to_string()])
}
