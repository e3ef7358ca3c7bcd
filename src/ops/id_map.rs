//! `apply --id-map FILE`: the id each company and service user has in the installation applied
//! to (`live_id`), beside the id it had in the installation its manifest was exported from
//! (`source_id`, or `null` when the manifest names none), by address:
//! `{"company/Acme Bank": {"source_id": "…", "live_id": "…"}, …}`.
//!
//! Covers everything the apply created and everything it adopted: each declared object found
//! live when planning (declaring an existing object adopts it), and each create that found its
//! object there already. So a run after a killed one maps what the first made too.
//!
//! Invariants: the file is always one whole JSON document, written atomically (temp file in the
//! same directory, fsync, rename); it is written once before the first change and again after
//! each object made, so a killed run leaves a valid map of what was done. It holds ids and
//! addresses, never a secret. Keys are sorted: the same state gives the same bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

use crate::apply::{Outcome, Progress};
use crate::error::Error;
use crate::model::{Desired, Observed};
use crate::plan::{Action, Address, Plan};

use super::files::write_atomically;

/// One object: its id where the manifest came from, and where it is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub source_id: Option<String>,
    pub live_id: String,
}

/// The map being written, and the `source_id` of every declared object.
#[derive(Debug)]
pub struct IdMap {
    path: PathBuf,
    sources: BTreeMap<String, String>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    entries: BTreeMap<String, Entry>,
    /// The first write that failed during the run (said once the apply ends).
    failed: Option<String>,
}

impl IdMap {
    /// A map written to `path`, pairing each object made with the `source_id` `desired`
    /// declares for it.
    pub fn new(path: &Path, desired: &Desired) -> Self {
        let companies = desired
            .companies
            .iter()
            .filter_map(|c| Some((Address::Company(c.name.clone()), c.source_id.clone()?)));
        let users = desired
            .users
            .iter()
            .filter_map(|u| Some((Address::ServiceUser(u.email.clone()), u.source_id.clone()?)));
        let sources = companies.chain(users).map(|(a, id)| (a.to_string(), id)).collect();
        Self { path: path.to_path_buf(), sources, state: Mutex::new(State::default()) }
    }

    /// A map written to `path` for the saved plan `plan`, pairing each object it creates with
    /// the `source_id` the plan carries for it.
    pub fn for_saved_plan(path: &Path, plan: &Plan) -> Self {
        Self {
            path: path.to_path_buf(),
            sources: plan.source_ids.clone(),
            state: Mutex::new(State::default()),
        }
    }

    /// Add every object of `desired` (within `companies`, when given) that is live in
    /// `observed`: found by exact company name or lower-cased email, when exactly one live
    /// object has it (an ambiguous one is for the plan's conflicts, not for the map).
    pub fn adopt_live(&self, desired: &Desired, observed: &Observed, companies: &[String]) {
        let in_scope = |name: &str| companies.is_empty() || companies.iter().any(|c| c == name);
        let mut state = self.lock();
        for company in desired.companies.iter().filter(|c| in_scope(&c.name)) {
            let mut live = observed.companies.iter().filter(|l| l.name == company.name && !l.in_deletion);
            if let (Some(found), None) = (live.next(), live.next()) {
                let address = Address::Company(company.name.clone()).to_string();
                let entry = self.entry(&address, &found.id);
                state.entries.insert(address, entry);
            }
        }
        for user in desired.users.iter().filter(|u| in_scope(&u.company)) {
            let key = user.email.key();
            let mut live = observed.users.iter().filter(|l| l.email.key() == key);
            if let (Some(found), None) = (live.next(), live.next()) {
                let address = Address::ServiceUser(user.email.clone()).to_string();
                let entry = self.entry(&address, &found.id);
                state.entries.insert(address, entry);
            }
        }
    }

    /// Write the map as it is now.
    pub fn write(&self) -> Result<(), Error> {
        let state = self.lock();
        self.write_entries(&state.entries)
    }

    /// The first write during the run that failed, if any.
    pub fn failure(&self) -> Option<String> {
        self.lock().failed.clone()
    }

    /// How many objects the map holds.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `progress` that also records each object made in this map, writing it each time.
    pub fn recording(self: &Arc<Self>, progress: Arc<dyn Progress>) -> Arc<dyn Progress> {
        Arc::new(Recording { inner: progress, map: Arc::clone(self) })
    }

    fn made(&self, address: &Address, live_id: &str) {
        let address = address.to_string();
        let entry = self.entry(&address, live_id);
        let mut state = self.lock();
        state.entries.insert(address, entry);
        // Written under the lock: two steps ending together never write an older map last.
        if let Err(e) = self.write_entries(&state.entries)
            && state.failed.is_none()
        {
            state.failed = Some(e.to_string());
        }
    }

    fn entry(&self, address: &str, live_id: &str) -> Entry {
        Entry { source_id: self.sources.get(address).cloned(), live_id: live_id.to_string() }
    }

    fn write_entries(&self, entries: &BTreeMap<String, Entry>) -> Result<(), Error> {
        // Plain data with string keys: serializing cannot fail; an empty map if it ever did.
        let mut text = crate::escape::json_pretty(entries).unwrap_or_else(|_| "{}".into());
        text.push('\n');
        write_atomically(&self.path, text.as_bytes())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves whole data behind (each update is one insert).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The view's progress, with each company or user create recorded in the map.
struct Recording {
    inner: Arc<dyn Progress>,
    map: Arc<IdMap>,
}

impl Progress for Recording {
    fn started(&self, address: &Address, action: Action) {
        self.inner.started(address, action);
    }
    fn finished(&self, address: &Address, action: Action, outcome: &Outcome) {
        self.inner.finished(address, action, outcome);
    }
    fn all_finished(&self) {
        self.inner.all_finished();
    }
    fn made(&self, address: &Address, live_id: &str) {
        self.map.made(address, live_id);
        self.inner.made(address, live_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ApiVersion, DesiredCompany, Location, ObservedCompany};

    fn desired() -> Desired {
        let location = Location { file: Arc::new(PathBuf::from("m.yaml")), line: 1, column: 1 };
        let company = |name: &str, source: Option<&str>| DesiredCompany {
            name: name.into(),
            technical_meta_data: None,
            prune: None,
            source_id: source.map(Into::into),
            location: location.clone(),
        };
        Desired { companies: vec![company("A", Some("old-a")), company("B", None)], ..Desired::default() }
    }

    fn read(path: &Path) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn each_object_made_is_written_at_once_with_its_source_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ids.json");
        let map = Arc::new(IdMap::new(&path, &desired()));
        map.write().unwrap();
        assert_eq!(read(&path), serde_json::json!({}));
        let progress = map.recording(Arc::new(crate::apply::Silent));
        progress.made(&Address::Company("A".into()), "new-a");
        assert_eq!(read(&path), serde_json::json!({"company/A": {"source_id": "old-a", "live_id": "new-a"}}));
        progress.made(&Address::Company("B".into()), "new-b");
        assert_eq!(read(&path)["company/B"], serde_json::json!({"source_id": null, "live_id": "new-b"}));
        assert_eq!(map.failure(), None);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file is left behind");
    }

    #[test]
    fn declared_objects_found_live_once_are_adopted_and_ambiguous_ones_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let map = IdMap::new(&dir.path().join("ids.json"), &desired());
        let live = |id: &str, name: &str| ObservedCompany {
            id: id.into(),
            name: name.into(),
            in_deletion: false,
            technical_meta_data: serde_json::json!({}),
        };
        let observed = Observed {
            api_url: "http://oz".into(),
            api_version: ApiVersion::V6,
            api_version_detected: false,
            companies: vec![live("c-a", "A"), live("c-b1", "B"), live("c-b2", "B")],
            users: vec![],
        };
        map.adopt_live(&desired(), &observed, &[]);
        map.write().unwrap();
        assert_eq!(
            read(map.path()),
            serde_json::json!({"company/A": {"source_id": "old-a", "live_id": "c-a"}})
        );
        let scoped = IdMap::new(&dir.path().join("scoped.json"), &desired());
        scoped.adopt_live(&desired(), &observed, &["B".into()]);
        assert!(scoped.is_empty(), "out of `--company` scope, or ambiguous");
    }

    #[test]
    fn a_map_that_cannot_be_written_says_why_and_the_run_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let map = Arc::new(IdMap::new(&dir.path().join("missing/ids.json"), &desired()));
        assert!(map.write().is_err());
        map.recording(Arc::new(crate::apply::Silent)).made(&Address::Company("A".into()), "new-a");
        assert!(map.failure().is_some_and(|e| e.contains("missing")), "{:?}", map.failure());
        assert_eq!(map.len(), 1, "kept in memory for a later write");
    }
}
