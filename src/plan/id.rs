//! The plan id: a SHA-256 (64 lower-case hex digits) of what a plan would do, so that CI can
//! apply on merge only the plan that was reviewed (`Plan id: …` in the text and Markdown
//! footers, `plan_id` in the saved plan, which `format::from_json` checks).
//!
//! What it covers: the API URL and, for each change in order, its address, action,
//! `depends_on`, `live_id`, `fingerprint`, `before`, `after`, `fields` and password source;
//! then, when there are any, the `source_ids` (what `apply --plan --id-map` writes).
//! What it does not: warnings, conflicts, unmanaged users, the guard's figures, the API version
//! and whether it was detected, and a token's `reason` (an expiring token's reason holds the
//! time the plan was made: two plans of the same changes an hour apart have one id).
//!
//! The encoding is canonical and independent of how JSON is laid out or escaped: every item
//! is a tag byte, its length (8 bytes, big-endian) and its bytes; JSON values are written with
//! their object keys sorted, whatever order a reader kept them in. A change of the encoding
//! changes the version tag it starts with. Pure.

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::Plan;

/// The first item hashed: names this encoding.
const VERSION: &[u8] = b"ozform plan id 1";

/// The id of `plan`: 64 lower-case hex digits.
pub fn plan_id(plan: &Plan) -> String {
    let mut h = Canonical(Sha256::new());
    h.item(b'v', VERSION);
    h.item(b'u', plan.api_url.as_bytes());
    h.count(b'n', plan.changes.len());
    for change in &plan.changes {
        h.item(b'a', change.address.to_string().as_bytes());
        h.item(b'A', change.action().to_string().as_bytes());
        h.count(b'd', change.depends_on.len());
        for dependency in &change.depends_on {
            h.item(b'D', dependency.to_string().as_bytes());
        }
        h.optional(b'i', change.live_id.as_deref().map(str::as_bytes));
        h.optional(b'f', change.fingerprint.as_deref().map(str::as_bytes));
        h.optional(b'b', change.before_json().map(|v| canonical_json(&v)).as_deref());
        h.optional(b'B', change.after_json().map(|v| canonical_json(&v)).as_deref());
        h.item(b'F', &canonical_json(&to_value(&change.fields())));
        h.optional(b'p', change.password().map(|p| canonical_json(&to_value(p))).as_deref());
    }
    // Only when there are some, so that the id of a plan without them is what it was.
    if !plan.source_ids.is_empty() {
        h.count(b's', plan.source_ids.len());
        for (address, id) in &plan.source_ids {
            h.item(b'S', address.as_bytes());
            h.item(b'I', id.as_bytes());
        }
    }
    hex(&h.0.finalize())
}

/// The id of the plans of several installations (a project file's run), each with its
/// installation's name: the plan id of each, in the order of their names, under another version
/// tag (so that it is never the id of a single plan). CI reviews and compares it as it does a
/// single plan's: any installation's plan changing, or the set of installations, changes it.
pub fn combined_id<'p>(plans: impl IntoIterator<Item = (&'p str, &'p Plan)>) -> String {
    let mut named: Vec<(&str, String)> =
        plans.into_iter().map(|(name, plan)| (name, plan_id(plan))).collect();
    named.sort();
    let mut h = Canonical(Sha256::new());
    h.item(b'v', b"ozform installations plan id 1");
    h.count(b'n', named.len());
    for (name, id) in &named {
        h.item(b'N', name.as_bytes());
        h.item(b'I', id.as_bytes());
    }
    hex(&h.0.finalize())
}

fn hex(digest: &[u8]) -> String {
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push(char::from(HEX[usize::from(byte >> 4)]));
        hex.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    hex
}

/// Whether `s` has the shape of a plan id: 64 lower-case hex digits.
pub fn is_plan_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

const HEX: &[u8; 16] = b"0123456789abcdef";

struct Canonical(Sha256);

impl Canonical {
    fn item(&mut self, tag: u8, bytes: &[u8]) {
        self.0.update([tag]);
        self.0.update((bytes.len() as u64).to_be_bytes());
        self.0.update(bytes);
    }

    fn count(&mut self, tag: u8, n: usize) {
        self.item(tag, &(n as u64).to_be_bytes());
    }

    /// Present and absent are told apart by the tag: an absent item is its tag's upper half.
    fn optional(&mut self, tag: u8, bytes: Option<&[u8]>) {
        match bytes {
            Some(bytes) => self.item(tag, bytes),
            None => self.item(tag | 0x80, &[]),
        }
    }
}

/// A serializable value as JSON (the types hashed serialize to JSON without fail).
fn to_value<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// `value` as compact JSON with every object's keys sorted (by their UTF-8 bytes), strings as
/// `serde_json` escapes them by default: the same bytes for the same value, however it was read.
fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            out.push(b'{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(key, out);
                out.push(b':');
                write_canonical(&map[key.as_str()], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::String(s) => write_string(s, out),
        // null, booleans and numbers: serde_json's shortest form (numbers read back exactly).
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    // Serializing a string cannot fail.
    out.extend_from_slice(serde_json::to_string(s).unwrap_or_default().as_bytes());
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let a: Value =
            serde_json::from_str(r#"{"b": {"y": 1, "x": [2, {"q": null, "p": true}]}, "a": "é"}"#).unwrap();
        assert_eq!(
            String::from_utf8(canonical_json(&a)).unwrap(),
            r#"{"a":"é","b":{"x":[2,{"p":true,"q":null}],"y":1}}"#
        );
        assert_eq!(
            canonical_json(&json!(1.5e300)),
            canonical_json(&serde_json::from_str("1.5e300").unwrap())
        );
    }

    #[test]
    fn a_plan_id_is_64_lower_case_hex_digits() {
        let plan = Plan {
            installation: None,
            api_url: "https://oz.example".into(),
            api_version: crate::model::ApiVersion::V6,
            api_version_detected: false,
            changes: vec![],
            conflicts: vec![],
            unmanaged: vec![],
            warnings: vec![],
            prune: vec![],
            source_ids: BTreeMap::new(),
        };
        let id = plan_id(&plan);
        assert!(is_plan_id(&id), "{id}");
        assert!(!is_plan_id(&id.to_uppercase()) && !is_plan_id(&id[1..]));
        let other = Plan { api_url: "https://other.example".into(), ..plan.clone() };
        assert_ne!(plan_id(&other), id);
        // The source ids are what `apply --plan --id-map` writes: an edited one is another plan.
        let sourced = Plan { source_ids: [("company/A".into(), "c1".into())].into(), ..plan.clone() };
        let edited = Plan { source_ids: [("company/A".into(), "c2".into())].into(), ..plan.clone() };
        assert!(![id.clone(), plan_id(&edited)].contains(&plan_id(&sourced)));
        let warned = Plan {
            warnings: vec!["w".into()],
            api_version_detected: true,
            installation: Some("eu-prod".into()),
            ..plan
        };
        assert_eq!(plan_id(&warned), id);
    }

    #[test]
    fn the_combined_id_of_installations_changes_with_any_plan_or_name_but_not_their_order() {
        let eu = Plan {
            installation: None,
            api_url: "https://eu.example".into(),
            api_version: crate::model::ApiVersion::V6,
            api_version_detected: false,
            changes: vec![],
            conflicts: vec![],
            warnings: vec![],
            unmanaged: vec![],
            prune: vec![],
            source_ids: BTreeMap::new(),
        };
        let us = Plan { api_url: "https://us.example".into(), ..eu.clone() };
        let id = combined_id([("eu", &eu), ("us", &us)]);
        assert!(is_plan_id(&id));
        assert_eq!(combined_id([("us", &us), ("eu", &eu)]), id);
        assert_ne!(combined_id([("eu", &eu)]), id);
        assert_ne!(combined_id([("eu", &eu), ("ap", &us)]), id);
        assert_ne!(combined_id([("eu", &eu), ("us", &eu)]), id);
        assert_ne!(combined_id([("eu", &eu)]), plan_id(&eu));
    }
}
