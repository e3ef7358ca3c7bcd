//! The token store contract, one set of assertions run against every store kind (issue #19),
//! in the style of `backend/testing.go` of `OpenTofu`: `MemoryStore` (the executor tests' double),
//! `DirStore`, and `ExecStore` with the example helper of `docs/token-stores.md` exactly as the
//! docs print it, with and without `MY_STORE_DIR` (the recipes of `contrib/token-stores/` run
//! the same suite in `token_stores`).
//!
//! Each suite takes `open`, which opens the store of an installation; every store it opens
//! shares the same records, as two runs sharing one store would.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::memory_store::MemoryStore;
use common::root;
use ozform::secret::Secret;
use ozform::token_store::{DirStore, ExecStore, Installation, TokenRecord, TokenStore, TokenStoreError};

/// Opens the store of an installation; every store it opens shares one set of records.
pub type Open<'a> = &'a dyn Fn(&Installation) -> Box<dyn TokenStore>;

/// The API every record of the suites names, and the installations they use.
pub const API: &str = "http://127.0.0.1:9";

pub fn installation_a() -> Installation {
    Installation::of_api(API)
}

pub fn installation_b() -> Installation {
    Installation::new(Some("eu-prod"), "https://oz-eu.example.com")
}

/// Odd but valid addresses (RFC 5321/5322 and RFC 6531), each of which once had no file name:
/// path separators, a hidden name, a NUL and spaces in quoted local parts, a 316-character
/// address, unicode, bidi controls, and one that looks like an encoding of another.
pub fn odd_addresses() -> Vec<String> {
    let long_domain = ["d".repeat(63), "e".repeat(63), "f".repeat(63), "g".repeat(59)].join(".");
    let long = format!("{}@{long_domain}", "l".repeat(64));
    assert_eq!(long.chars().count(), 316);
    [
        "a/b@x.example",
        "\"a/../../p\"@x.example",
        ".hidden@x.example",
        "..@x.example",
        "\"a\0b\"@x.example",
        "\"a b\"@x.example",
        "\"a@b\"@x.example",
        "\"a\\\\b\"@x.example",
        "a%2Fb@x.example",
        "o'brien+tag@x.example",
        "UPPER.Case@X.Example",
        "~tilde@x.example",
        "x@[127.0.0.1]",
        "Ünïcødé@exämple.example",
        "用户@例子.example",
        "\u{202e}rtl@x.example",
        "$(touch pwned)@x.example",
    ]
    .iter()
    .map(ToString::to_string)
    .chain([long])
    .collect()
}

/// A record of `email` with a canary token and password unique to `tag`.
pub fn record(email: &str, tag: &str) -> TokenRecord {
    TokenRecord {
        email: email.to_lowercase(),
        user_id: format!("user-{tag}"),
        token_id: format!("token-id-{tag}"),
        access_token: Secret::new(format!("canary-token-{tag}")),
        expire_date: 2_000_000_000.5,
        api_url: API.into(),
        issued_at: "2026-11-30T00:00:00Z".into(),
        password: Some(Secret::new(format!("canary-password-{tag}"))),
        company: Some("Acme & Co".into()),
    }
}

fn same(got: &TokenRecord, want: &TokenRecord) {
    assert_eq!(got.email, want.email);
    assert_eq!((&got.user_id, &got.token_id, &got.api_url), (&want.user_id, &want.token_id, &want.api_url));
    assert_eq!(got.access_token.expose(), want.access_token.expose(), "{}", want.email);
    assert_eq!(got.password.as_ref().map(Secret::expose), want.password.as_ref().map(Secret::expose));
    assert!((got.expire_date - want.expire_date).abs() < 1e-6, "{} {}", got.expire_date, want.expire_date);
    assert_eq!(got.issued_at, want.issued_at);
}

/// `store`, `list`, `get`, `delete`: a record reads back whole, `list` shows it without its
/// secrets, storing again replaces it, deleting drops it (twice is no error), `check` passes.
pub fn records(open: Open) {
    let store = open(&installation_a());
    store.check().unwrap();
    assert!(store.list().unwrap().is_empty(), "a new store is empty");
    assert!(store.get("nobody@x.example").unwrap().is_none());
    let first = record("Svc@Acme.example", "first");
    store.store(&first).unwrap();
    let listed = store.list().unwrap();
    assert_eq!(listed.keys().collect::<Vec<_>>(), ["svc@acme.example"]);
    let entry = &listed["svc@acme.example"];
    assert_eq!((entry.user_id.as_str(), entry.api_url.as_str()), ("user-first", API));
    let shown = format!("{listed:?}");
    assert!(!shown.contains("canary-token") && !shown.contains("canary-password"), "{shown}");
    same(&store.get("SVC@acme.example").unwrap().unwrap(), &first);

    let second = record("svc@acme.example", "second");
    store.store(&second).unwrap();
    assert_eq!(store.list().unwrap().len(), 1);
    same(&store.get("svc@acme.example").unwrap().unwrap(), &second);

    let plain = TokenRecord { password: None, company: None, ..record("plain@acme.example", "plain") };
    store.store(&plain).unwrap();
    assert!(store.get("plain@acme.example").unwrap().unwrap().password.is_none());

    store.delete("SVC@Acme.example").unwrap();
    store.delete("svc@acme.example").unwrap();
    store.delete("never-stored@acme.example").unwrap();
    assert!(store.get("svc@acme.example").unwrap().is_none());
    assert_eq!(store.list().unwrap().keys().collect::<Vec<_>>(), ["plain@acme.example"]);
    // A store opened again (the next run) sees the same.
    assert_eq!(open(&installation_a()).list().unwrap().keys().collect::<Vec<_>>(), ["plain@acme.example"]);
    store.delete("plain@acme.example").unwrap();
    assert!(store.list().unwrap().is_empty());
}

/// Every odd address is stored, listed, found and deleted, each apart from the others.
pub fn odd_addresses_are_storable(open: Open) {
    let store = open(&installation_a());
    let corpus = odd_addresses();
    for (i, email) in corpus.iter().enumerate() {
        store.store(&record(email, &format!("odd-{i}"))).unwrap_or_else(|e| panic!("{email:?}: {e}"));
    }
    let listed = store.list().unwrap();
    let mut expected: Vec<String> = corpus.iter().map(|e| e.to_lowercase()).collect();
    expected.sort();
    assert_eq!(listed.keys().cloned().collect::<Vec<_>>(), expected);
    for (i, email) in corpus.iter().enumerate() {
        assert_eq!(listed[&email.to_lowercase()].user_id, format!("user-odd-{i}"), "{email:?}");
        let got = store.get(email).unwrap().unwrap_or_else(|| panic!("{email:?} not found"));
        same(&got, &record(email, &format!("odd-{i}")));
    }
    for email in &corpus {
        store.delete(email).unwrap_or_else(|e| panic!("{email:?}: {e}"));
        assert!(store.get(email).unwrap().is_none(), "{email:?}");
    }
    assert!(store.list().unwrap().is_empty());
}

/// Two installations sharing the store never see, replace or delete each other's records.
pub fn installations_are_kept_apart(open: Open) {
    let (a, b) = (open(&installation_a()), open(&installation_b()));
    a.store(&record("shared@x.example", "a")).unwrap();
    b.store(&record("shared@x.example", "b")).unwrap();
    b.store(&record("only-b@x.example", "b2")).unwrap();
    assert_eq!(a.list().unwrap().keys().collect::<Vec<_>>(), ["shared@x.example"]);
    assert_eq!(b.list().unwrap().keys().collect::<Vec<_>>(), ["only-b@x.example", "shared@x.example"]);
    assert_eq!(a.get("shared@x.example").unwrap().unwrap().access_token.expose(), "canary-token-a");
    assert!(a.get("only-b@x.example").unwrap().is_none());
    b.delete("shared@x.example").unwrap();
    assert_eq!(a.get("shared@x.example").unwrap().unwrap().access_token.expose(), "canary-token-a");
    a.delete("only-b@x.example").unwrap();
    assert!(b.get("only-b@x.example").unwrap().is_some(), "a delete of A never reaches B's record");
}

/// One apply at a time per installation: a second lock of the same installation is refused
/// (saying it is locked) until the first is dropped; another installation's lock is apart.
pub fn locks_are_exclusive_per_installation(open: Open) {
    let (first, second) = (open(&installation_a()), open(&installation_a()));
    let held = first.lock(Duration::ZERO).unwrap().expect("this store offers a lock");
    let refused = second.lock(Duration::ZERO).unwrap_err();
    assert!(
        matches!(refused, TokenStoreError::Locked { .. } | TokenStoreError::HelperLocked { .. }),
        "{refused:?}"
    );
    let code = miette::Diagnostic::code(&refused).unwrap().to_string();
    assert_eq!(code, "ozform::token_store::locked");
    let other = open(&installation_b()).lock(Duration::ZERO).unwrap().expect("B's own lock");
    drop(held);
    let again = second.lock(Duration::ZERO).unwrap().expect("free once dropped");
    drop((again, other));
}

/// Every suite, against the stores `open` opens.
pub fn conformance(open: Open) {
    records(open);
    odd_addresses_are_storable(open);
    installations_are_kept_apart(open);
    locks_are_exclusive_per_installation(open);
}

// ---------------------------------------------------------------------------------------------

#[test]
fn the_memory_store_keeps_the_store_contract() {
    let memory = MemoryStore::new();
    conformance(&|i: &Installation| Box::new(memory.for_installation(i)) as Box<dyn TokenStore>);
}

#[test]
fn the_directory_store_keeps_the_store_contract() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tokens");
    conformance(&|i: &Installation| Box::new(DirStore::new(&root, i.clone())) as Box<dyn TokenStore>);
}

/// The example helper of docs/token-stores.md, as printed there, written to `dir`.
pub fn docs_example_helper(dir: &Path) -> PathBuf {
    let docs = std::fs::read_to_string(root().join("docs/token-stores.md")).unwrap();
    let example = docs.split("### An example helper").nth(1).unwrap();
    let code = example.split("```python\n").nth(1).unwrap().split("```").next().unwrap();
    let script = dir.join("my-helper.py");
    std::fs::write(&script, code).unwrap();
    script
}

/// `ExecStore` running `argv` (a generous timeout: Python starts slowly on a busy machine).
pub fn exec_store(argv: &[String], installation: &Installation) -> Box<dyn TokenStore> {
    Box::new(ExecStore::new(argv.to_vec(), Duration::from_secs(300), installation.clone()))
}

#[test]
fn the_docs_example_helper_keeps_the_store_contract() {
    let tmp = tempfile::tempdir().unwrap();
    let script = docs_example_helper(tmp.path());
    let store_dir = tmp.path().join("kept");
    let argv: Vec<String> = vec![
        "env".into(),
        format!("MY_STORE_DIR={}", store_dir.display()),
        "python3".into(),
        script.display().to_string(),
    ];
    conformance(&|i: &Installation| exec_store(&argv, i));
    assert!(store_dir.is_dir());
}

#[test]
fn the_docs_example_helper_keeps_the_store_contract_without_my_store_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let script = docs_example_helper(tmp.path());
    let cwd = tmp.path().join("runner");
    std::fs::create_dir(&cwd).unwrap();
    // As a user would first run it: no `MY_STORE_DIR`, in a working directory of its own.
    let argv: Vec<String> = ["env", "-u", "MY_STORE_DIR", "-C", cwd.to_str().unwrap(), "python3"]
        .iter()
        .map(ToString::to_string)
        .chain([script.display().to_string()])
        .collect();
    conformance(&|i: &Installation| exec_store(&argv, i));
    assert!(std::fs::read_dir(&cwd).unwrap().count() > 0, "it kept its records in the working directory");
}
