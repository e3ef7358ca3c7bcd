//! Wire shapes of the Oz API, as tolerant serde types.
//!
//! Unknown fields are ignored, missing optional fields default, `null` reads as absent, ids may
//! be strings or numbers, `expire_date` may be an integer or a float. No dialect knowledge here:
//! both permission spellings and every user-kind field are captured raw, and `dialect` decides
//! what they mean. Pure; no I/O.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::model::{CompanyPatch, NewCompany, ObservedCompany};

/// An id the API may send as a string (UUID) or a number.
fn id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!("expected an id, found {}", kind(&other)))),
    }
}

fn opt_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => Ok(Some(s)),
        Value::Number(n) => Ok(Some(n.to_string())),
        other => Err(serde::de::Error::custom(format!("expected an id, found {}", kind(&other)))),
    }
}

/// Epoch seconds as an integer, a float, or a numeric string.
fn opt_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::Number(n) => Ok(n.as_f64()),
        Value::String(s) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom("expected epoch seconds, found a string")),
        other => Err(serde::de::Error::custom(format!("expected epoch seconds, found {}", kind(&other)))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `null` or absent → default.
fn nullable<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Clone, Deserialize)]
pub struct WireCompany {
    #[serde(deserialize_with = "id")]
    pub company_id: String,
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub in_deletion: bool,
    #[serde(default)]
    pub technical_meta_data: Value,
}

/// A user as a GET returns it. Both permission spellings are kept; `dialect` reads them.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WireUser {
    #[serde(deserialize_with = "id")]
    pub user_id: String,
    #[serde(default, deserialize_with = "nullable")]
    pub email: String,
    #[serde(default, deserialize_with = "opt_id")]
    pub company_id: Option<String>,
    #[serde(default)]
    pub user_type: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub first_name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub last_name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub middle_name: String,
    #[serde(default)]
    pub is_active: Option<bool>,
    #[serde(default)]
    pub is_admin: Option<bool>,
    #[serde(default)]
    pub is_service: Option<bool>,
    #[serde(default)]
    pub can_start_analysis_biometry: Option<bool>,
    #[serde(default)]
    pub can_start_analysis_collection: Option<bool>,
    #[serde(default)]
    pub can_start_analysis_documents: Option<bool>,
    #[serde(default)]
    pub can_start_analysis_quality: Option<bool>,
    #[serde(default)]
    pub can_start_analyse_biometry: Option<bool>,
    #[serde(default)]
    pub can_start_analyse_collection: Option<bool>,
    #[serde(default)]
    pub can_start_analyse_documents: Option<bool>,
    #[serde(default)]
    pub can_start_analyse_quality: Option<bool>,
}

impl WireUser {
    /// Decode a user object. Fields nested under `profile` (and the email under
    /// `credentials`), as a create body has them, are lifted to the top level first, so either
    /// layout reads the same.
    pub fn from_value(value: Value) -> Result<Self, String> {
        let value = flatten_user(value);
        serde_json::from_value(value).map_err(|e| format!("user object: {e}"))
    }
}

fn flatten_user(value: Value) -> Value {
    let Value::Object(mut map) = value else { return value };
    if let Some(Value::Object(profile)) = map.remove("profile") {
        for (k, v) in profile {
            map.entry(k).or_insert(v);
        }
    }
    if let Some(Value::Object(credentials)) = map.remove("credentials")
        && let Some(email) = credentials.get("email")
    {
        map.entry("email").or_insert_with(|| email.clone());
    }
    Value::Object(map)
}

/// The answer of `authorize/auth` and `authorize/refresh`.
#[derive(Debug, Clone, Deserialize)]
pub struct WireSession {
    pub access_token: String,
    #[serde(default)]
    pub expire_token: Option<String>,
    #[serde(default, deserialize_with = "opt_seconds")]
    pub expire_date: Option<f64>,
    /// Kept raw: `dialect` may read its permission spelling when detecting the version.
    #[serde(default)]
    pub user: Option<Value>,
}

/// The answer of the service-token endpoint.
#[derive(Debug, Clone, Deserialize)]
pub struct WireServiceToken {
    #[serde(default, deserialize_with = "opt_id")]
    pub token_id: Option<String>,
    #[serde(default, deserialize_with = "opt_id")]
    pub user_id: Option<String>,
    pub access_token: String,
    #[serde(default, deserialize_with = "opt_seconds")]
    pub expire_date: Option<f64>,
}

/// The longest token ozform accepts from the API (a real one is a few hundred bytes).
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Why `token` (a session or service token the API issued) cannot be one, if it cannot: it
/// must be non-empty printable ASCII without spaces (it travels in an HTTP header and lands in
/// files and Secrets), at most `MAX_TOKEN_BYTES`. The reason never quotes the token.
pub fn token_problem(token: &str) -> Option<String> {
    if token.is_empty() {
        return Some("it is empty".into());
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Some(format!(
            "it is {} bytes long, more than the {MAX_TOKEN_BYTES} a token may have",
            token.len()
        ));
    }
    token.bytes().position(|b| !b.is_ascii_graphic()).map(|at| {
        format!("byte {} of it is not printable ASCII (a space, a control character or not ASCII)", at + 1)
    })
}

/// The error body: `{"error_code", "error_message", "details"}`; every field optional.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WireError {
    #[serde(default)]
    pub error_code: Option<i64>,
    #[serde(default)]
    pub error_message: Option<String>,
}

impl WireError {
    /// Best effort: a body that is not an error object yields no code and no message.
    pub fn parse(body: &[u8]) -> Self {
        serde_json::from_slice(body).unwrap_or_default()
    }
}

/// One page of a list, whatever envelope the server used.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub items: Vec<Value>,
    /// `total` or `count`, when the envelope has one.
    pub total: Option<u64>,
}

/// The keys an object envelope may hold a list's items under, in the order they are looked for.
pub const ENVELOPE_KEYS: [&str; 3] = ["items", "results", "data"];
/// The keys an object envelope may give the list's total under, in the order they are looked for.
pub const TOTAL_KEYS: [&str; 2] = ["total", "count"];

/// The envelope key of a list answer that is an object: the first of `ENVELOPE_KEYS` holding an
/// array (or `null`, an empty list).
pub fn envelope_key(map: &serde_json::Map<String, Value>) -> Option<&'static str> {
    ENVELOPE_KEYS.into_iter().find(|k| matches!(map.get(*k), Some(Value::Array(_) | Value::Null)))
}

/// The total of a list answer that is an object, and the key it was under.
pub fn total_of(map: &serde_json::Map<String, Value>) -> Option<(&'static str, u64)> {
    TOTAL_KEYS.into_iter().find_map(|k| map.get(k).and_then(Value::as_u64).map(|t| (k, t)))
}

/// The envelope keys as a message names them: "`items`, `results` or `data`".
pub fn envelope_words() -> String {
    let quoted: Vec<String> = ENVELOPE_KEYS.iter().map(|k| format!("`{k}`")).collect();
    match quoted.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// Accept a bare array, or an object whose items are under `items`, `results` or `data`
/// (with or without `total` / `count`).
pub fn parse_page(body: Value) -> Result<Page, String> {
    match body {
        Value::Array(items) => Ok(Page { items, total: None }),
        Value::Object(mut map) => {
            let total = total_of(&map).map(|(_, total)| total);
            let Some(key) = envelope_key(&map) else {
                return Err(format!(
                    "a list answer is neither an array nor an object with {}",
                    envelope_words()
                ));
            };
            match map.remove(key) {
                Some(Value::Array(items)) => Ok(Page { items, total }),
                _ => Ok(Page { items: Vec::new(), total }),
            }
        }
        other => Err(format!("a list answer is {}", kind(&other))),
    }
}

impl From<WireCompany> for ObservedCompany {
    /// A missing or `null` `technical_meta_data` reads as `{}`, the API's own default, so a
    /// manifest that writes `{}` is not seen as a change.
    fn from(w: WireCompany) -> Self {
        let technical_meta_data = match w.technical_meta_data {
            Value::Null => Value::Object(serde_json::Map::new()),
            other => other,
        };
        ObservedCompany { id: w.company_id, name: w.name, in_deletion: w.in_deletion, technical_meta_data }
    }
}

/// The body of `POST /api/companies/` (companies do not differ between dialects).
pub fn new_company_body(c: &NewCompany) -> Value {
    let mut body = serde_json::Map::new();
    body.insert("name".into(), Value::String(c.name.clone()));
    if let Some(meta) = &c.technical_meta_data {
        body.insert("technical_meta_data".into(), meta.clone());
    }
    Value::Object(body)
}

/// The body of `PATCH /api/companies/{id}`: only the fields to change.
pub fn company_patch_body(p: &CompanyPatch) -> Value {
    let mut body = serde_json::Map::new();
    if let Some(name) = &p.name {
        body.insert("name".into(), Value::String(name.clone()));
    }
    if let Some(meta) = &p.technical_meta_data {
        body.insert("technical_meta_data".into(), meta.clone());
    }
    Value::Object(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_envelope_shape_yields_the_items() {
        let items = json!([{"company_id": "a"}]);
        for body in [
            items.clone(),
            json!({"items": items.clone()}),
            json!({"results": items.clone(), "count": 7}),
            json!({"data": items.clone(), "total": 7}),
        ] {
            let page = parse_page(body).expect("page");
            assert_eq!(page.items.len(), 1);
        }
        assert_eq!(parse_page(json!({"data": [], "total": 7})).expect("page").total, Some(7));
        assert!(parse_page(json!({"users": []})).is_err());
    }

    #[test]
    fn the_envelope_and_its_total_are_named_by_the_keys_they_were_found_under() {
        let map = |v: Value| v.as_object().cloned().expect("an object");
        let results = map(json!({"results": [], "count": 7}));
        assert_eq!((envelope_key(&results), total_of(&results)), (Some("results"), Some(("count", 7))));
        // A key holding something else than a list is passed over, as `parse_page` does.
        let data = map(json!({"items": "no", "data": null}));
        assert_eq!(envelope_key(&data), Some("data"));
        assert_eq!(envelope_key(&map(json!({"users": []}))), None);
        assert_eq!(envelope_words(), "`items`, `results` or `data`");
    }

    #[test]
    fn a_user_tolerates_missing_null_and_unknown_fields() {
        let u = WireUser::from_value(json!({
            "user_id": 17, "email": "a@b.c", "first_name": null, "company_id": null, "shoe_size": 44
        }))
        .expect("user");
        assert_eq!(u.user_id, "17");
        assert_eq!(u.first_name, "");
        assert_eq!(u.company_id, None);
        assert_eq!(u.is_active, None);
    }

    #[test]
    fn a_user_nested_under_profile_reads_like_a_flat_one() {
        let u = WireUser::from_value(json!({
            "user_id": "u1", "credentials": {"email": "x@y.z"},
            "profile": {"company_id": "c1", "user_type": "CLIENT_SERVICE", "first_name": "A"}
        }))
        .expect("user");
        assert_eq!(
            (u.email.as_str(), u.company_id.as_deref(), u.first_name.as_str()),
            ("x@y.z", Some("c1"), "A")
        );
    }

    #[test]
    fn expire_date_is_read_as_integer_or_float_seconds() {
        let t: WireServiceToken =
            serde_json::from_value(json!({"access_token": "t", "expire_date": 1_904_659_888}))
                .expect("token");
        assert_eq!(t.expire_date, Some(1_904_659_888.0));
        let t: WireServiceToken = serde_json::from_value(
            json!({"access_token": "t", "expire_date": 1_904_659_888.282_587, "session_id": 0}),
        )
        .expect("token");
        assert!(t.expire_date.is_some_and(|d| (d - 1_904_659_888.282_587).abs() < 1e-6));
    }

    #[test]
    fn a_token_is_non_empty_printable_ascii_without_spaces_of_at_most_4_kib() {
        assert_eq!(token_problem("eyJhbGciOi.J-_~+/=!"), None);
        assert_eq!(token_problem(&"a".repeat(MAX_TOKEN_BYTES)), None);
        assert_eq!(token_problem("").as_deref(), Some("it is empty"));
        let long = token_problem(&"a".repeat(MAX_TOKEN_BYTES + 1)).expect("too long");
        assert!(long.contains("4097 bytes long"), "{long}");
        for bad in ["CANARY tok", "CANARY\ttok", "CANARY\u{7f}", "CANARYé", "CANARY\n"] {
            let problem = token_problem(bad).expect("refused");
            assert!(problem.contains("byte 7 of it is not printable ASCII"), "{bad:?}: {problem}");
            assert!(!problem.contains("CANARY"), "never quotes the token: {problem}");
        }
    }

    #[test]
    fn a_company_defaults_its_optional_fields() {
        let c: WireCompany =
            serde_json::from_value(json!({"company_id": "c", "name": "N"})).expect("company");
        assert!(!c.in_deletion);
        assert_eq!(c.technical_meta_data, Value::Null);
    }
}
