//! The request log: each request the Oz routes received, in arrival order (method, path, query,
//! JSON body, and the status answered), for tests that check which requests a client sent.
//! Kept only when `EmulatorConfig::record_requests` is set, since it grows with every request;
//! `Handle::reset_stats` clears it.
//!
//! Invariant: it never holds a password or a token. Headers (where tokens travel) are not
//! recorded, a body that is not JSON is not kept, and in a JSON body every `password`,
//! `access_token` and `expire_token` value is replaced by `(sensitive)` before it is stored.
//! No I/O.

use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::Serialize;
use serde_json::Value;

/// What a redacted value reads as.
pub const SENSITIVE: &str = "(sensitive)";

/// One request as the emulator received it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestRecord {
    pub method: String,
    /// The path as sent, e.g. `/api/users/` (not the canonical route of `Stats`).
    pub path: String,
    /// The query string as sent (percent-encoded), e.g. `offset=0&limit=100`; `None` without one.
    pub query: Option<String>,
    /// The JSON body with its secrets replaced by `(sensitive)`; `None` without a JSON body.
    pub body: Option<Value>,
    /// The status answered; `None` while the request is in flight, or when its connection was
    /// closed without an answer (an injected drop).
    pub status: Option<u16>,
}

impl fmt::Display for RequestRecord {
    /// `METHOD path?query`, e.g. `GET /api/users/?offset=0&limit=100`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path)?;
        match &self.query {
            Some(query) => write!(f, "?{query}"),
            None => Ok(()),
        }
    }
}

/// Replace every `password`, `access_token` and `expire_token` value in `value`, at any depth.
pub(crate) fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if matches!(key.as_str(), "password" | "access_token" | "expire_token") {
                    *v = Value::String(SENSITIVE.to_string());
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// Identifies a record, so that its status can be set when the answer is known (the log may
/// have been cleared in between: then nothing happens).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket(u64);

#[derive(Debug, Default)]
struct Entries {
    next: u64,
    /// In arrival order, so in ascending ticket order.
    records: Vec<(u64, RequestRecord)>,
}

#[derive(Debug, Default)]
pub(crate) struct RequestLog {
    enabled: bool,
    entries: Mutex<Entries>,
}

impl RequestLog {
    pub(crate) fn new(enabled: bool) -> Self {
        Self { enabled, entries: Mutex::default() }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    fn entries(&self) -> MutexGuard<'_, Entries> {
        // The log stays meaningful after a panic elsewhere: take it anyway.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Record a request as it arrives (its body already redacted).
    pub(crate) fn arrived(&self, record: RequestRecord) -> Ticket {
        let mut entries = self.entries();
        entries.next += 1;
        let ticket = entries.next;
        entries.records.push((ticket, record));
        Ticket(ticket)
    }

    pub(crate) fn answered(&self, Ticket(ticket): Ticket, status: u16) {
        let mut entries = self.entries();
        if let Ok(i) = entries.records.binary_search_by_key(&ticket, |(t, _)| *t) {
            entries.records[i].1.status = Some(status);
        }
    }

    pub(crate) fn records(&self) -> Vec<RequestRecord> {
        self.entries().records.iter().map(|(_, r)| r.clone()).collect()
    }

    pub(crate) fn clear(&self) {
        self.entries().records.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_redacted_at_any_depth() {
        let mut body = json!({"credentials": {"email": "a@x.test", "password": "pw"},
                              "list": [{"access_token": "t"}], "expire_token": 7});
        redact(&mut body);
        assert_eq!(
            body,
            json!({"credentials": {"email": "a@x.test", "password": SENSITIVE},
                   "list": [{"access_token": SENSITIVE}], "expire_token": SENSITIVE})
        );
    }

    #[test]
    fn records_keep_arrival_order_and_get_their_status_unless_cleared() {
        let log = RequestLog::new(true);
        let record = |path: &str, query: Option<&str>| RequestRecord {
            method: "GET".into(),
            path: path.into(),
            query: query.map(str::to_string),
            body: None,
            status: None,
        };
        let first = log.arrived(record("/a", Some("offset=0")));
        let second = log.arrived(record("/b", None));
        log.answered(second, 200);
        let lines: Vec<String> = log.records().iter().map(ToString::to_string).collect();
        assert_eq!(lines, ["GET /a?offset=0", "GET /b"]);
        assert_eq!(log.records().iter().map(|r| r.status).collect::<Vec<_>>(), [None, Some(200)]);
        log.clear();
        log.answered(first, 500);
        assert!(log.records().is_empty());
    }
}
