//! Commands the docs give, run as written, on a fresh account (an empty `HOME`): the README's
//! completion and manual-page set-up, and the example token store helper of
//! `docs/token-stores.md` with its "try it" lines; and the docs' facts that drift silently: one
//! row per code in every exit-code table, the repository paths the Dockerfile's comments name,
//! and every relative link of the Markdown docs (its file, and the heading its anchor names).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::root;
use common::world::{BASIC, World};
use ozform::model::ApiVersion;

const BIN: &str = env!("CARGO_BIN_EXE_ozform");

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// The first fenced block of `language` after `marker` in `text`.
fn block_after(text: &str, marker: &str, language: &str) -> String {
    let after = text.split(marker).nth(1).unwrap_or_else(|| panic!("no `{marker}`"));
    let fence = format!("```{language}\n");
    after.split(&fence).nth(1).unwrap().split("```").next().unwrap().to_string()
}

/// A directory holding `ozform` (the binary under test), to put first on `PATH`.
fn ozform_on_path(dir: &Path) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(BIN, bin.join("ozform")).unwrap();
    format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default())
}

/// Run `script` in bash (`-e`: every line must succeed) with `HOME`, `PATH` and `env`.
fn bash(script: &str, cwd: &Path, home: &Path, path: &str, env: &[(&str, String)]) -> String {
    let mut command = Command::new("bash");
    command
        .args(["-e", "-c", script])
        .current_dir(cwd)
        .env_clear()
        .env("HOME", home)
        .env("PATH", path)
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .env("MANWIDTH", "100")
        .env("NO_COLOR", "1");
    for (name, value) in env {
        command.env(name, value);
    }
    let out = command.output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "the docs' lines failed ({}):\n{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    format!("{stdout}{stderr}")
}

#[test]
fn the_readmes_completion_and_manual_page_lines_work_on_a_fresh_account() {
    let lines = block_after(&read("README.md"), "Shell completions and manual pages", "sh");
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let path = ozform_on_path(dir.path());
    // `man ozform-plan` finds the page through the `MANPATH` the lines set, not by luck: no
    // `~/.local/bin` on PATH for man-db to derive `~/.local/share/man` from.
    let shown = bash(&lines, &home, &home, &path, &[]);
    assert!(shown.contains("ozform-plan - Read live state"), "man ozform-plan shows the page:\n{shown}");
    for file in [
        ".local/share/bash-completion/completions/ozform",
        ".zfunc/_ozform",
        ".config/fish/completions/ozform.fish",
        ".local/share/man/man1/ozform-plan.1",
    ] {
        assert!(home.join(file).is_file(), "{file} was not written");
    }
    // The zsh line's advice: `fpath=(~/.zfunc $fpath)` before compinit registers the function.
    let zsh = Command::new("zsh")
        .args(["-f", "-c", "fpath=(~/.zfunc $fpath); autoload -Uz compinit && compinit -u -d ~/.zcompdump; print -r -- $_comps[ozform]"])
        .env("HOME", &home)
        .output()
        .expect("zsh is installed (scripts/test installs it)");
    assert_eq!(
        String::from_utf8_lossy(&zsh.stdout).trim(),
        "_ozform",
        "{}",
        String::from_utf8_lossy(&zsh.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_helper_runs_as_the_docs_say_to_try_it() {
    let world = World::start(ApiVersion::V6).await;
    let docs = read("docs/token-stores.md");
    let helper = block_after(&docs, "### An example helper", "python");
    let try_it = block_after(&docs, "Try it (saved as `my-helper.py`", "sh");
    // The layout the lines assume: the helper next to `manifests/`.
    let work = world.path("work");
    std::fs::create_dir_all(work.join("manifests")).unwrap();
    std::fs::write(work.join("my-helper.py"), helper).unwrap();
    for name in ["companies.yaml", "service-users.yaml"] {
        std::fs::copy(root().join(BASIC).join(name), work.join("manifests").join(name)).unwrap();
    }
    let home = world.path("home");
    std::fs::create_dir(&home).unwrap();
    let path = ozform_on_path(&world.path("tools"));
    let env = [
        ("OZ_API_URL", world.emu.url()),
        ("OZ_ADMIN_EMAIL", world.emu.admin_email().to_string()),
        ("OZ_ADMIN_PASSWORD", world.admin_password.clone()),
    ];
    let shown = tokio::task::spawn_blocking(move || bash(&try_it, &work, &home, &path, &env)).await.unwrap();
    world.printed.lock().unwrap().push((shown.clone(), String::new()));
    assert!(shown.contains("Plan: 5 to create, 0 to update, 2 tokens to issue."), "{shown}");
    world.assert_no_secrets();
}

/// The rows of the "## Exit codes" table of `doc`: the first cell of each.
fn exit_code_rows(doc: &str) -> Vec<String> {
    let text = read(doc);
    let table = text.split("## Exit codes\n").nth(1).unwrap_or_else(|| panic!("{doc} has no exit codes"));
    table
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| l.split('|').nth(1).unwrap().trim().to_string())
        .collect()
}

#[test]
fn every_exit_code_table_has_one_row_per_code() {
    for doc in ["docs/lifecycle.md", "docs/cli.md"] {
        let rows = exit_code_rows(doc);
        assert_eq!(rows, ["0", "1", "2", "3", "130 / 143"], "{doc}");
    }
}

#[test]
fn the_paths_the_dockerfile_names_exist() {
    let dockerfile = read("Dockerfile");
    let named: Vec<PathBuf> = dockerfile
        .lines()
        .filter(|l| l.starts_with('#'))
        .flat_map(str::split_whitespace)
        .filter(|w| w.starts_with("contrib/") || w.starts_with("tests/") || w.starts_with("docs/"))
        .map(|w| root().join(w.trim_end_matches([',', '.', ')', ';'])))
        .collect();
    assert!(!named.is_empty());
    for path in named {
        assert!(path.exists(), "the Dockerfile names {}, which does not exist", path.display());
    }
}

/// The Markdown files of the repository that people read: README, CHANGELOG, `docs/`,
/// `contrib/` (not `target/`, not the tests' fixtures).
fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md"), root().join("CHANGELOG.md")];
    let mut dirs = vec![root().join("docs"), root().join("contrib"), root().join("examples")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// `text` without its fenced code blocks and inline code spans (links there are not links).
fn prose(text: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            out.push('\n');
            continue;
        }
        if fenced {
            out.push('\n');
            continue;
        }
        // Inline code: drop what lies between backtick runs of the same length.
        let mut rest = line;
        while let Some(start) = rest.find('`') {
            out.push_str(&rest[..start]);
            let run = rest[start..].chars().take_while(|c| *c == '`').count();
            let fence = "`".repeat(run);
            let after = &rest[start + run..];
            let Some(end) = after.find(&fence) else {
                rest = after;
                break;
            };
            rest = &after[end + run..];
        }
        out.push_str(rest);
        out.push('\n');
    }
    out
}

/// The anchors GitHub makes of `text`'s headings (lower case; punctuation but `-` and `_`
/// dropped; spaces to `-`; a repeated slug gets `-1`, `-2`, …), and of `<a id|name="…">`.
fn anchors(text: &str) -> std::collections::BTreeSet<String> {
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    let mut anchors = std::collections::BTreeSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        if fenced {
            continue;
        }
        for marker in ["<a id=\"", "<a name=\""] {
            for piece in line.split(marker).skip(1) {
                anchors.insert(piece.split('"').next().unwrap().to_string());
            }
        }
        let Some(heading) = line.strip_prefix('#') else { continue };
        let heading = heading.trim_start_matches('#');
        if !heading.starts_with(' ') {
            continue;
        }
        let slug: String = heading
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let count = seen.entry(slug.clone()).or_insert(0);
        anchors.insert(if *count == 0 { slug } else { format!("{slug}-{count}") });
        *count += 1;
    }
    anchors
}

/// The targets of the inline links and images of `text`'s prose: `[…](target)`.
fn link_targets(text: &str) -> Vec<String> {
    let prose = prose(text);
    prose
        .split("](")
        .skip(1)
        .filter_map(|after| after.split(')').next())
        .map(|target| target.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

#[test]
fn every_relative_link_of_the_docs_reaches_a_file_and_its_heading() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for target in link_targets(&text) {
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, anchor) = match target.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (target.as_str(), None),
            };
            let linked = if path.is_empty() { file.clone() } else { file.parent().unwrap().join(path) };
            let shown = file.strip_prefix(root()).unwrap().display().to_string();
            if !linked.exists() {
                broken.push(format!("{shown}: ({target}): no such file"));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            if linked.extension().is_some_and(|e| e == "md") {
                let known = anchors(&std::fs::read_to_string(&linked).unwrap());
                if !known.contains(anchor) {
                    broken.push(format!("{shown}: ({target}): no heading makes #{anchor}"));
                }
            }
        }
    }
    assert!(checked > 50, "only {checked} relative links found: is the parser still right?");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_link_checker_reads_headings_as_github_does() {
    let known = anchors(
        "# Title\n## How `--parallelism`, `--max-in-flight` and `--max-rps` relate\n## Exit codes\n\
         ```\n# not a heading\n```\n## Exit codes\n<a id=\"kept\"></a>\n#hashtag\n",
    );
    let expected = [
        "title",
        "how---parallelism---max-in-flight-and---max-rps-relate",
        "exit-codes",
        "exit-codes-1",
        "kept",
    ];
    assert_eq!(known, expected.iter().map(ToString::to_string).collect());
    assert_eq!(
        link_targets("see [a](a.md#x) and `[b](code.md)` and\n```\n[c](fenced.md)\n```\n![i](img.png \"t\")"),
        ["a.md#x", "img.png"]
    );
}
