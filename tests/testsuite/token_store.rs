//! The directory token store: permissions, atomic replace, round trip, corrupt files, and no
//! token in any error or `Debug` output; and the in-memory store the executor tests use.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use crate::common;

use std::fs;
#[cfg(unix)]
use std::os::unix::fs::PermissionsExt as _;

use common::memory_store::MemoryStore;
use ozform::model::{Email, StoredToken};
use ozform::secret::Secret;
use ozform::token_store::{DirStore, TokenRecord, TokenStore, TokenStoreError};

const CANARY: &str = "canary-token-7f3a9c";

fn record(email: &str, user_id: &str, token: &str) -> TokenRecord {
    TokenRecord {
        email: email.to_lowercase(),
        user_id: user_id.into(),
        token_id: "t-1".into(),
        access_token: Secret::new(token),
        expire_date: 1_904_659_888.282_587,
        api_url: "http://127.0.0.1:1".into(),
        issued_at: "2026-11-29T02:00:00Z".into(),
    }
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
#[cfg(unix)]
fn a_token_file_is_0600_in_a_0700_directory_it_creates() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tokens");
    let store = DirStore::new(&dir);
    store.store(&record("Svc@Acme.example", "u-1", CANARY)).unwrap();
    assert_eq!(mode(&dir), 0o700);
    let file = dir.join("svc@acme.example.json");
    assert_eq!(mode(&file), 0o600);
}

#[test]
fn a_stored_token_reads_back_and_shows_in_the_index_without_its_value() {
    let tmp = tempfile::tempdir().unwrap();
    let store = DirStore::new(tmp.path());
    store.store(&record("a@x.example", "u-1", CANARY)).unwrap();

    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(tmp.path().join("a@x.example.json")).unwrap()).unwrap();
    let mut keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["access_token", "api_url", "email", "expire_date", "issued_at", "token_id", "user_id"]);
    assert_eq!(json["access_token"], CANARY);

    let back = store.read(&Email::new("A@X.example")).unwrap().unwrap();
    assert_eq!(back.access_token.expose(), CANARY);
    assert_eq!((back.user_id.as_str(), back.issued_at.as_str()), ("u-1", "2026-11-29T02:00:00Z"));

    let index = store.list().unwrap();
    assert_eq!(
        index.get("a@x.example"),
        Some(&StoredToken {
            user_id: "u-1".into(),
            api_url: "http://127.0.0.1:1".into(),
            expire_date: 1_904_659_888.282_587
        })
    );
    assert!(!format!("{index:?}").contains(CANARY));
}

#[test]
fn storing_again_replaces_the_file_whole_and_leaves_no_temp_file() {
    let tmp = tempfile::tempdir().unwrap();
    let store = DirStore::new(tmp.path());
    store.store(&record("a@x.example", "u-1", "first-token")).unwrap();
    store.store(&record("a@x.example", "u-2", CANARY)).unwrap();
    let names: Vec<String> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["a@x.example.json"]);
    let back = store.read(&Email::new("a@x.example")).unwrap().unwrap();
    assert_eq!((back.user_id.as_str(), back.access_token.expose()), ("u-2", CANARY));
}

#[test]
fn the_index_of_a_missing_directory_is_empty_and_temp_files_are_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(DirStore::new(tmp.path().join("nope")).list().unwrap().is_empty());
    // What an interrupted store leaves behind: a hidden temp file, possibly half written.
    fs::write(tmp.path().join(".a@x.example.json.tmp-0123"), "{\"email\": \"a@x").unwrap();
    fs::write(tmp.path().join("notes.txt"), "not a token").unwrap();
    assert!(DirStore::new(tmp.path()).list().unwrap().is_empty());
}

#[test]
fn a_corrupt_token_file_is_an_error_naming_the_path_and_never_the_content() {
    let tmp = tempfile::tempdir().unwrap();
    let store = DirStore::new(tmp.path());
    // Wrong type for `expire_date`, right next to the token: serde would quote the value.
    let path = tmp.path().join("b@x.example.json");
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
    let err = store.read(&Email::new("b@x.example")).unwrap_err();
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
    let store = DirStore::new(&blocked);
    let err = store.store(&record("a@x.example", "u-1", CANARY)).unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(text.contains(&blocked.display().to_string()), "{text}");
    assert!(!text.contains(CANARY), "{text}");
}

#[test]
fn a_token_record_never_debug_prints_its_token() {
    let r = record("a@x.example", "u-1", CANARY);
    assert!(!format!("{r:?}").contains(CANARY));
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
fn an_email_that_would_escape_the_token_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tokens");
    let store = DirStore::new(&dir);
    for email in ["../escape@x.example", ".hidden@x.example", "a/b@x.example", ""] {
        let err = store.store(&record(email, "u-1", CANARY)).unwrap_err();
        assert!(!format!("{err} {err:?}").contains(CANARY));
    }
    assert!(!dir.exists() && !tmp.path().join("escape@x.example.json").exists());
}

#[test]
fn check_proves_a_store_would_work_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tokens");
    let store = DirStore::new(&dir);
    store.check().unwrap();
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0, "the probe is removed");
    // A directory that cannot be made (its parent is a file: unwritable even for root).
    let blocked = tmp.path().join("a-file");
    fs::write(&blocked, "").unwrap();
    let err = DirStore::new(blocked.join("tokens")).check().unwrap_err().to_string();
    assert!(err.starts_with("cannot create directory"), "{err}");
}

#[test]
fn delete_removes_the_token_file_and_a_missing_one_is_no_error() {
    let tmp = tempfile::tempdir().unwrap();
    let store = DirStore::new(tmp.path());
    store.store(&record("a@x.example", "u-1", CANARY)).unwrap();
    store.delete("A@X.example").unwrap();
    assert!(store.list().unwrap().is_empty());
    store.delete("a@x.example").unwrap();
    assert!(store.delete("../evil").is_err(), "a name outside the directory is refused");
}
