//! Wire shapes of the Oz API, as tolerant serde types.
//!
//! Unknown fields are ignored, missing optional fields default, `null` reads as absent, ids may
//! be strings or numbers, `expire_date` may be an integer or a float. No dialect knowledge here:
//! both permission spellings and every user-kind field are captured raw, and `dialect` decides
//! what they mean. List pages are decoded straight from the answer's bytes into these types
//! (`parse_page`), without a JSON tree of the page: a listing of 100,000 users never holds more
//! than the compact records it keeps. Pure; no I/O.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeOwned, IgnoredAny, MapAccess, SeqAccess, Visitor};
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
/// Fields nested under `profile` (and the email under `credentials`), as a create body has
/// them, are read as if they were at the top level (where a field at the top level wins), so
/// either layout reads the same.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(try_from = "RawUser")]
pub struct WireUser {
    pub user_id: String,
    pub email: String,
    pub company_id: Option<String>,
    pub user_type: Option<String>,
    pub first_name: String,
    pub last_name: String,
    pub middle_name: String,
    pub is_active: Option<bool>,
    pub is_admin: Option<bool>,
    pub is_service: Option<bool>,
    pub can_start_analysis_biometry: Option<bool>,
    pub can_start_analysis_collection: Option<bool>,
    pub can_start_analysis_documents: Option<bool>,
    pub can_start_analysis_quality: Option<bool>,
    pub can_start_analyse_biometry: Option<bool>,
    pub can_start_analyse_collection: Option<bool>,
    pub can_start_analyse_documents: Option<bool>,
    pub can_start_analyse_quality: Option<bool>,
}

impl WireUser {
    /// Decode a user object.
    pub fn from_value(value: Value) -> Result<Self, String> {
        serde_json::from_value(value).map_err(|e| format!("user object: {e}"))
    }
}

/// A user object as sent, at the top level or nested under `profile`: every field optional
/// (`null` reads as absent), resolved into a `WireUser`.
#[derive(Debug, Default, Deserialize)]
struct RawUser {
    #[serde(default, deserialize_with = "any_id")]
    user_id: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default, deserialize_with = "opt_id")]
    company_id: Option<String>,
    #[serde(default)]
    user_type: Option<String>,
    #[serde(default)]
    first_name: Option<String>,
    #[serde(default)]
    last_name: Option<String>,
    #[serde(default)]
    middle_name: Option<String>,
    #[serde(default)]
    is_active: Option<bool>,
    #[serde(default)]
    is_admin: Option<bool>,
    #[serde(default)]
    is_service: Option<bool>,
    #[serde(default)]
    can_start_analysis_biometry: Option<bool>,
    #[serde(default)]
    can_start_analysis_collection: Option<bool>,
    #[serde(default)]
    can_start_analysis_documents: Option<bool>,
    #[serde(default)]
    can_start_analysis_quality: Option<bool>,
    #[serde(default)]
    can_start_analyse_biometry: Option<bool>,
    #[serde(default)]
    can_start_analyse_collection: Option<bool>,
    #[serde(default)]
    can_start_analyse_documents: Option<bool>,
    #[serde(default)]
    can_start_analyse_quality: Option<bool>,
    /// Kept raw: anything but an object is ignored, as an unknown field would be.
    #[serde(default)]
    profile: Option<Value>,
    #[serde(default)]
    credentials: Option<Value>,
}

/// An id, present or not: a string (even empty) or a number.
fn any_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        Value::Number(n) => Ok(Some(n.to_string())),
        other => Err(serde::de::Error::custom(format!("expected an id, found {}", kind(&other)))),
    }
}

impl TryFrom<RawUser> for WireUser {
    type Error = String;

    fn try_from(top: RawUser) -> Result<Self, String> {
        let profile = match top.profile {
            Some(value @ Value::Object(_)) => {
                serde_json::from_value::<RawUser>(value).map_err(|e| format!("`profile`: {e}"))?
            }
            _ => RawUser::default(),
        };
        let credentials_email = match top.credentials {
            Some(Value::Object(mut credentials)) => match credentials.remove("email") {
                Some(Value::String(email)) => Some(email),
                Some(Value::Null) | None => None,
                Some(other) => {
                    return Err(format!("`credentials.email`: expected a string, found {}", kind(&other)));
                }
            },
            _ => None,
        };
        Ok(WireUser {
            user_id: top.user_id.or(profile.user_id).ok_or("missing field `user_id`")?,
            email: top.email.or(profile.email).or(credentials_email).unwrap_or_default(),
            company_id: top.company_id.or(profile.company_id),
            user_type: top.user_type.or(profile.user_type),
            first_name: top.first_name.or(profile.first_name).unwrap_or_default(),
            last_name: top.last_name.or(profile.last_name).unwrap_or_default(),
            middle_name: top.middle_name.or(profile.middle_name).unwrap_or_default(),
            is_active: top.is_active.or(profile.is_active),
            is_admin: top.is_admin.or(profile.is_admin),
            is_service: top.is_service.or(profile.is_service),
            can_start_analysis_biometry: top
                .can_start_analysis_biometry
                .or(profile.can_start_analysis_biometry),
            can_start_analysis_collection: top
                .can_start_analysis_collection
                .or(profile.can_start_analysis_collection),
            can_start_analysis_documents: top
                .can_start_analysis_documents
                .or(profile.can_start_analysis_documents),
            can_start_analysis_quality: top.can_start_analysis_quality.or(profile.can_start_analysis_quality),
            can_start_analyse_biometry: top.can_start_analyse_biometry.or(profile.can_start_analyse_biometry),
            can_start_analyse_collection: top
                .can_start_analyse_collection
                .or(profile.can_start_analyse_collection),
            can_start_analyse_documents: top
                .can_start_analyse_documents
                .or(profile.can_start_analyse_documents),
            can_start_analyse_quality: top.can_start_analyse_quality.or(profile.can_start_analyse_quality),
        })
    }
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
pub struct Page<T = Value> {
    pub items: Vec<T>,
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

/// Decode one page straight from the answer's bytes into `T` (no JSON tree of the page is
/// built): a bare array, or an object whose items are under `items`, `results` or `data` (the
/// first of these that is an array or `null`), with or without `total` / `count`.
pub fn parse_page<T: DeserializeOwned>(body: &[u8]) -> Result<Page<T>, String> {
    serde_json::from_slice::<Envelope<T>>(body).map(|e| e.0).map_err(|e| e.to_string())
}

struct Envelope<T>(Page<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Envelope<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(EnvelopeVisitor(PhantomData))
    }
}

struct EnvelopeVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for EnvelopeVisitor<T> {
    type Value = Envelope<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list answer (an array, or an object with `items`, `results` or `data`)")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Ok(Envelope(Page { items: items_of(seq)?, total: None }))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut lists: [Option<Vec<T>>; ENVELOPE_KEYS.len()] = std::array::from_fn(|_| None);
        let (mut total, mut count) = (None, None);
        while let Some(key) = map.next_key::<String>()? {
            let list = ENVELOPE_KEYS.iter().position(|k| *k == key);
            match (list, key.as_str()) {
                (Some(i), _) => lists[i] = map.next_value::<Items<T>>()?.0,
                (None, k) if k == TOTAL_KEYS[0] => total = map.next_value::<Value>()?.as_u64(),
                (None, k) if k == TOTAL_KEYS[1] => count = map.next_value::<Value>()?.as_u64(),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        match lists.into_iter().flatten().next() {
            Some(items) => Ok(Envelope(Page { items, total: total.or(count) })),
            None => Err(de::Error::custom(format!(
                "a list answer is neither an array nor an object with {}",
                envelope_words()
            ))),
        }
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Err(E::custom("a list answer is a boolean"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Err(E::custom("a list answer is a number"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Err(E::custom("a list answer is a number"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Err(E::custom("a list answer is a number"))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Err(E::custom("a list answer is a string"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Err(E::custom("a list answer is null"))
    }
}

/// The items of an array, decoded one by one (the size hint, from the answer, is trusted only
/// up to 1,024).
fn items_of<'de, A: SeqAccess<'de>, T: Deserialize<'de>>(mut seq: A) -> Result<Vec<T>, A::Error> {
    let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
    while let Some(item) = seq.next_element()? {
        items.push(item);
    }
    Ok(items)
}

/// The value of `items` / `results` / `data`: the items of an array, none for `null`, or
/// `None` for anything else (then another of the keys may hold them).
struct Items<T>(Option<Vec<T>>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Items<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ItemsVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ItemsVisitor<T> {
            type Value = Items<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of items")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Ok(Items(Some(items_of(seq)?)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Items(Some(Vec::new())))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Items(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Items(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Items(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Items(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Items(None))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Items(None))
            }
        }
        d.deserialize_any(ItemsVisitor(PhantomData))
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
        let parse = |body: Value| parse_page::<Value>(body.to_string().as_bytes());
        for body in [
            items.clone(),
            json!({"items": items.clone()}),
            json!({"results": items.clone(), "count": 7}),
            json!({"data": items.clone(), "total": 7}),
            json!({"items": "not a list", "total": "x", "data": items.clone()}),
        ] {
            let page = parse(body.clone()).expect("page");
            assert_eq!(page.items.len(), 1, "{body}");
        }
        assert_eq!(parse(json!({"data": [], "total": 7})).expect("page").total, Some(7));
        assert_eq!(parse(json!({"items": null, "count": 0})).expect("page").items.len(), 0);
        let err = parse(json!({"users": []})).expect_err("no items");
        assert!(err.contains("neither an array nor an object"), "{err}");
        assert!(parse(json!("x")).expect_err("a string").contains("a list answer is a string"));
        // Typed items straight from the bytes.
        let users: Page<WireUser> =
            parse_page(br#"{"items": [{"user_id": 3, "email": "a@b.c"}], "total": 1}"#).expect("page");
        assert_eq!((users.items[0].user_id.as_str(), users.total), ("3", Some(1)));
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
    fn a_field_at_the_top_level_wins_over_the_profile_and_a_user_needs_an_id() {
        let u = WireUser::from_value(json!({
            "user_id": "u1", "first_name": "Top", "credentials": "ignored",
            "profile": {"first_name": "Nested", "last_name": "Kept", "email": "p@x.y"}
        }))
        .expect("user");
        assert_eq!((u.first_name.as_str(), u.last_name.as_str(), u.email.as_str()), ("Top", "Kept", "p@x.y"));
        let err = WireUser::from_value(json!({"email": "a@b.c"})).expect_err("no id");
        assert!(err.contains("user_id"), "{err}");
        assert!(WireUser::from_value(json!({"user_id": "u", "first_name": 3})).is_err());
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
