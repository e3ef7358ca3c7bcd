//! The directory token store: its layout (`<dir>/<installation>/<encoded email>.json`),
//! permissions, atomic replace, corrupt files, the layout before installations and how it is
//! moved, and no token or password in any error or `Debug` output. What every store kind must
//! do alike is in `token_store_conformance`.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use crate::common;

use std::fs;
#[cfg(unix)]
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use common::memory_store::MemoryStore;
use ozform::model::StoredToken;
use ozform::secret::Secret;
use ozform::token_store::{DirStore, Installation, Recovery, TokenRecord, TokenStore, TokenStoreError};

const CANARY: &str = "canary-token-7f3a9c";
const API: &str = "http://127.0.0.1:1";
/// `naming::encode` of `API`'s origin: the default installation's directory.
const API_DIR: &str = "http%3A%2F%2F127.0.0.1%3A1";

fn record(email: &str, user_id: &str, token: &str) -> TokenRecord {
    TokenRecord {
        email: email.to_lowercase(),
        user_id: user_id.into(),
        token_id: "t-1".into(),
        access_token: Secret::new(token),
        expire_date: 1_904_659_888.282_587,
        api_url: API.into(),
        issued_at: "2026-11-29T02:00:00Z".into(),
        password: None,
        company: None,
    }
}

fn store_in(root: &Path) -> DirStore {
    DirStore::new(root, Installation::of_api(API))
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
#[cfg(unix)]
fn a_token_file_is_0600_in_0700_directories_it_creates_one_per_installation() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tokens");
    let store = store_in(&root);
    store.store(&record("Svc@Acme.example", "u-1", CANARY)).unwrap();
    assert_eq!(store.dir(), root.join(API_DIR));
    assert_eq!((mode(&root), mode(store.dir())), (0o700, 0o700));
    let file = root.join(API_DIR).join("svc@acme.example.json");
    assert_eq!(mode(&file), 0o600);
    assert_eq!(store.path_for("SVC@acme.example"), file);
    let named = DirStore::new(&root, Installation::new(Some("EU-Prod"), API));
    assert_eq!(named.dir(), root.join("eu-prod"));
}

#[test]
fn a_stored_token_reads_back_and_shows_in_the_index_without_its_value() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store_in(tmp.path());
    store.store(&record("a@x.example", "u-1", CANARY)).unwrap();

    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(store.dir().join("a@x.example.json")).unwrap()).unwrap();
    let mut keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "access_token",
            "api_url",
            "email",
            "expire_date",
            "installation",
            "issued_at",
            "token_id",
            "user_id"
        ]
    );
    assert_eq!(json["access_token"], CANARY);
    assert_eq!(json["installation"], API);

    let back = store.get("A@X.example").unwrap().unwrap();
    assert_eq!(back.access_token.expose(), CANARY);
    assert_eq!((back.user_id.as_str(), back.issued_at.as_str()), ("u-1", "2026-11-29T02:00:00Z"));
    assert!(back.password.is_none() && back.company.is_none());

    let index = store.list().unwrap();
    assert_eq!(
        index.get("a@x.example"),
        Some(&StoredToken { user_id: "u-1".into(), api_url: API.into(), expire_date: 1_904_659_888.282_587 })
    );
    assert!(!format!("{index:?}").contains(CANARY));
}

#[test]
fn a_password_and_a_company_are_kept_in_the_file_beside_the_token() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store_in(tmp.path());
    let mut with = record("a@x.example", "u-1", CANARY);
    with.password = Some(Secret::new("canary-password-1"));
    with.company = Some("Acme".into());
    store.store(&with).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(store.dir().join("a@x.example.json")).unwrap()).unwrap();
    assert_eq!(
        (json["password"].as_str(), json["company"].as_str()),
        (Some("canary-password-1"), Some("Acme"))
    );
    let back = store.get("a@x.example").unwrap().unwrap();
    assert_eq!(back.password.unwrap().expose(), "canary-password-1");
    assert_eq!(back.company.as_deref(), Some("Acme"));
}

#[test]
fn storing_again_replaces_the_file_whole_and_leaves_no_temp_file() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store_in(tmp.path());
    store.store(&record("a@x.example", "u-1", "first-token")).unwrap();
    store.store(&record("a@x.example", "u-2", CANARY)).unwrap();
    assert_eq!(names(store.dir()), ["a@x.example.json"]);
    let back = store.get("a@x.example").unwrap().unwrap();
    assert_eq!((back.user_id.as_str(), back.access_token.expose()), ("u-2", CANARY));
}

#[test]
fn the_index_of_a_missing_directory_is_empty_and_temp_files_are_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(store_in(&tmp.path().join("nope")).list().unwrap().is_empty());
    let store = store_in(tmp.path());
    fs::create_dir_all(store.dir()).unwrap();
    // What an interrupted store leaves behind: a hidden temp file, possibly half written.
    fs::write(store.dir().join(".a@x.example.json.tmp-0123"), "{\"email\": \"a@x").unwrap();
    fs::write(store.dir().join("notes.txt"), "not a token").unwrap();
    fs::write(tmp.path().join("notes.txt"), "not a token").unwrap();
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn a_corrupt_token_file_is_an_error_naming_the_path_and_never_the_content() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store_in(tmp.path());
    fs::create_dir_all(store.dir()).unwrap();
    // Wrong type for `expire_date`, right next to the token: serde would quote the value.
    let path = store.dir().join("b@x.example.json");
    fs::write(
        &path,
        format!("{{\"email\":\"b@x.example\",\"user_id\":\"{CANARY}\",\"expire_date\":\"{CANARY}\"}}"),
    )
    .unwrap();
    let err = store.list().unwrap_err();
    assert!(matches!(err, TokenStoreError::Corrupt { .. }), "{err:?}");
    let shown = format!("{err} {err:?}");
    let text = format!("{shown} {:?}", miette::Report::new(err));
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(!text.contains(CANARY), "{text}");

    fs::write(&path, format!("{{\"access_token\": \"{CANARY}\", oops")).unwrap();
    let err = store.get("b@x.example").unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(text.contains("not valid JSON") && !text.contains(CANARY), "{text}");
}

#[test]
#[cfg(unix)]
fn a_store_that_cannot_write_names_the_path_and_not_the_token() {
    let tmp = tempfile::tempdir().unwrap();
    // A regular file where the directory should be: creating the directory fails.
    let blocked = tmp.path().join("tokens");
    fs::write(&blocked, "").unwrap();
    let store = store_in(&blocked);
    let err = store.store(&record("a@x.example", "u-1", CANARY)).unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(text.contains(&blocked.display().to_string()), "{text}");
    assert!(!text.contains(CANARY), "{text}");
}

#[test]
fn a_token_record_never_debug_prints_its_token_or_password() {
    let mut r = record("a@x.example", "u-1", CANARY);
    r.password = Some(Secret::new("canary-password-2"));
    let shown = format!("{r:?}");
    assert!(!shown.contains(CANARY) && !shown.contains("canary-password-2"), "{shown}");
}

#[test]
fn the_memory_store_lists_by_lower_cased_email_and_fails_on_request_once() {
    let store = MemoryStore::new();
    store.fail_next_store("A@x.example");
    let err = store.store(&record("a@x.example", "u-1", CANARY)).unwrap_err();
    assert!(!format!("{err} {err:?}").contains(CANARY));
    store.store(&record("a@x.example", "u-1", CANARY)).unwrap();
    assert_eq!(store.list().unwrap().keys().collect::<Vec<_>>(), ["a@x.example"]);
    assert_eq!(store.get("A@X.example").unwrap().access_token.expose(), CANARY);
    assert_eq!(store.stores(), 1);
}

#[test]
fn an_address_that_reads_as_a_path_stays_a_file_inside_the_installation_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tokens");
    let store = store_in(&root);
    for email in ["../escape@x.example", ".hidden@x.example", "a/b@x.example", "\"a/../../p\"@x.example"] {
        store.store(&record(email, "u-1", CANARY)).unwrap();
    }
    assert_eq!(
        names(store.dir()),
        [
            "%22a%2F..%2F..%2Fp%22@x.example.json",
            "%2E.%2Fescape@x.example.json",
            "%2Ehidden@x.example.json",
            "a%2Fb@x.example.json"
        ]
    );
    assert_eq!(names(&root), [API_DIR]);
    assert!(!tmp.path().join("escape@x.example.json").exists());
    let err = store.store(&record("", "u-1", CANARY)).unwrap_err();
    assert!(err.to_string().contains("the email is empty") && !format!("{err:?}").contains(CANARY));
}

#[test]
fn check_proves_a_store_would_work_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store_in(&tmp.path().join("tokens"));
    store.check().unwrap();
    assert_eq!(fs::read_dir(store.dir()).unwrap().count(), 0, "the probe is removed");
    // A directory that cannot be made (its parent is a file: unwritable even for root).
    let blocked = tmp.path().join("a-file");
    fs::write(&blocked, "").unwrap();
    let err = store_in(&blocked.join("tokens")).check().unwrap_err().to_string();
    assert!(err.starts_with("cannot create directory"), "{err}");
}

#[test]
fn delete_removes_the_token_file_and_a_missing_one_is_no_error() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store_in(tmp.path());
    store.store(&record("a@x.example", "u-1", CANARY)).unwrap();
    store.delete("A@X.example").unwrap();
    assert!(store.list().unwrap().is_empty());
    store.delete("a@x.example").unwrap();
    assert!(store.delete("").is_err(), "an empty email names no file");
}

/// Issue #22: the directories are made once per run, not on every write. Proven by what a
/// store does once they are gone behind its back: it does not make them again.
#[test]
fn the_directories_are_made_once_not_on_every_store() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tokens");
    let store = store_in(&root);
    store.store(&record("a@x.example", "u-1", CANARY)).unwrap();
    fs::remove_dir_all(&root).unwrap();
    let err = store.store(&record("b@x.example", "u-2", CANARY)).unwrap_err();
    assert!(err.to_string().starts_with("cannot create"), "{err}");
    assert!(!root.exists(), "no store makes the directories again");
    // A store opened for the next run makes them.
    store_in(&root).store(&record("b@x.example", "u-2", CANARY)).unwrap();
    assert!(root.join(API_DIR).join("b@x.example.json").is_file());
}

// ---------------------------------------------------------------------------------------------
// The layout before installations: `<dir>/<lower-cased email>.json`, no `installation` inside.

/// A token file as ozform wrote it before installations, in `root`.
fn legacy(root: &Path, email: &str, api_url: &str, token: &str, issued_at: &str) {
    fs::create_dir_all(root).unwrap();
    let json = serde_json::json!({
        "email": email, "user_id": format!("user-of-{email}"), "token_id": "t-old",
        "access_token": token, "expire_date": 2_000_000_000.0, "api_url": api_url, "issued_at": issued_at,
    });
    fs::write(root.join(format!("{email}.json")), json.to_string()).unwrap();
}

#[test]
fn files_of_the_layout_before_installations_are_read_as_the_installation_of_their_api() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    legacy(root, "mine@x.example", "http://127.0.0.1:1/", "old-mine", "2026-01-01T00:00:00Z");
    legacy(root, "theirs@x.example", "https://other.example", "old-theirs", "2026-01-01T00:00:00Z");
    let ours = store_in(root);
    assert_eq!(ours.list().unwrap().keys().collect::<Vec<_>>(), ["mine@x.example"]);
    assert_eq!(ours.get("mine@x.example").unwrap().unwrap().access_token.expose(), "old-mine");
    assert!(ours.get("theirs@x.example").unwrap().is_none());
    // A named installation of the same API reads them too (the API decides, not the name).
    let named = DirStore::new(root, Installation::new(Some("lab"), API));
    assert_eq!(named.list().unwrap().keys().collect::<Vec<_>>(), ["mine@x.example"]);
    let other = DirStore::new(root, Installation::of_api("https://other.example"));
    assert_eq!(other.list().unwrap().keys().collect::<Vec<_>>(), ["theirs@x.example"]);
}

#[test]
fn recovery_moves_the_installations_old_files_into_its_directory_once_and_leaves_the_others() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    legacy(root, "mine@x.example", API, "old-mine", "2026-01-01T00:00:00Z");
    legacy(root, "o'brien@x.example", API, "old-obrien", "2026-01-01T00:00:00Z");
    legacy(root, "stale@x.example", API, "old-stale", "2026-01-01T00:00:00Z");
    legacy(root, "theirs@x.example", "https://other.example", "old-theirs", "2026-01-01T00:00:00Z");
    let store = store_in(root);
    // Already stored under the installation, and newer: the old file is superseded.
    let mut newer = record("stale@x.example", "u-new", "new-stale");
    newer.issued_at = "2026-06-01T00:00:00Z".into();
    store.store(&newer).unwrap();

    assert_eq!(store.recover().unwrap(), Recovery { migrated: 2, ..Recovery::default() });
    assert_eq!(names(root), [API_DIR, "theirs@x.example.json"]);
    assert_eq!(
        names(store.dir()),
        ["mine@x.example.json", "o%27brien@x.example.json", "stale@x.example.json"]
    );
    let moved: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(store.dir().join("o%27brien@x.example.json")).unwrap())
            .unwrap();
    assert_eq!(
        (moved["installation"].as_str(), moved["access_token"].as_str()),
        (Some(API), Some("old-obrien"))
    );
    assert_eq!(store.get("stale@x.example").unwrap().unwrap().access_token.expose(), "new-stale");
    assert_eq!(store.recover().unwrap(), Recovery::default(), "said once: nothing is left to move");
}

#[test]
fn a_store_replaces_the_old_file_that_list_found_for_its_email() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    legacy(root, "mine@x.example", API, "old-mine", "2026-01-01T00:00:00Z");
    let store = store_in(root);
    assert_eq!(store.list().unwrap().len(), 1);
    store.store(&record("mine@x.example", "u-1", CANARY)).unwrap();
    assert_eq!(names(root), [API_DIR]);
    assert_eq!(store.get("mine@x.example").unwrap().unwrap().access_token.expose(), CANARY);
    store.delete("mine@x.example").unwrap();
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn deleting_drops_the_old_file_of_this_installation_too() {
    let tmp = tempfile::tempdir().unwrap();
    legacy(tmp.path(), "mine@x.example", API, "old-mine", "2026-01-01T00:00:00Z");
    legacy(tmp.path(), "theirs@x.example", "https://other.example", "old-theirs", "2026-01-01T00:00:00Z");
    let store = store_in(tmp.path());
    store.delete("mine@x.example").unwrap();
    store.delete("theirs@x.example").unwrap();
    assert_eq!(
        names(tmp.path()),
        ["theirs@x.example.json"],
        "another installation's file is not ours to drop"
    );
}
