//! Quirks: the places where the Oz API is undocumented (oz-api.md section 7), made switchable so
//! the client can be tested against every shape it must tolerate. Also the list paging itself,
//! which is where most quirks apply. Pure: no I/O, no locks.

use serde_json::{Map, Value};

/// How a list body is shaped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Envelope {
    /// A bare JSON array (the default: it gives the client no total, the harder case).
    #[default]
    Bare,
    /// `{"items": [...], <total>}`.
    Items,
    /// `{"results": [...], <total>}`.
    Results,
    /// `{"data": [...], <total>}`.
    Data,
}

impl Envelope {
    fn key(self) -> Option<&'static str> {
        match self {
            Envelope::Bare => None,
            Envelope::Items => Some("items"),
            Envelope::Results => Some("results"),
            Envelope::Data => Some("data"),
        }
    }
}

/// The name of the total beside the items of an object envelope.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TotalField {
    #[default]
    Total,
    Count,
    /// No total at all.
    Omitted,
}

/// Which form of a path the server routes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TrailingSlash {
    /// Both `/api/users` and `/api/users/` (the default).
    #[default]
    Either,
    /// Only the documented form: collections with a slash, single objects and `authorize/*`
    /// without; the other form is a 404.
    Documented,
    /// Only the undocumented form: collections without a slash, others with one.
    Opposite,
    /// The undocumented form answers `308 Permanent Redirect` to the documented one.
    RedirectToDocumented,
    /// The documented form answers `308 Permanent Redirect` to the undocumented one (a server
    /// whose canonical paths are the other form; a client must not follow a redirected POST
    /// as a GET).
    RedirectToUndocumented,
}

/// Switchable behaviours where the API is not documented. `Default` is the plain behaviour:
/// bare-array lists, no cap, filters and offset honoured, duplicate emails answered 400
/// (`error_code` 4), duplicate company names allowed, deleted companies removed at once,
/// both path forms routed, expired sessions answered 401, permission flags shown.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Quirks {
    pub envelope: Envelope,
    /// Total field of object envelopes (ignored for `Envelope::Bare`).
    pub total_field: TotalField,
    /// The server answers at most this many items per page, whatever `limit` asks.
    pub max_limit: Option<usize>,
    /// `email`, `company_id` and `name` query filters have no effect.
    pub ignore_filters: bool,
    /// `offset` has no effect: every page is the first one.
    pub ignore_offset: bool,
    /// Answer duplicate creates 409 instead of 400 (`error_code` 4).
    pub duplicate_conflict_409: bool,
    /// Refuse a second live company with the same name (as a duplicate).
    pub unique_company_names: bool,
    /// A deleted company stays listed with `in_deletion: true` instead of disappearing.
    pub keep_deleted_companies: bool,
    pub trailing_slash: TrailingSlash,
    /// Objects carry fields the client does not know (`meta_data`, `_links`).
    pub extra_fields: bool,
    /// Optional fields are left out when empty or false (names, `is_admin`, `is_service`,
    /// `in_deletion`, `technical_meta_data`); ids, `email`, `user_type`, `is_active` and the
    /// permission flags stay.
    pub sparse_objects: bool,
    /// `expire_date` is sent as an integer number of seconds instead of a float.
    pub integer_expire_dates: bool,
    /// An expired session is answered 403 instead of 401 (still `error_code` 8, auth expired),
    /// as some servers do: a client must renew on the error code whatever the status.
    pub auth_expired_403: bool,
    /// User objects carry no permission flags. Nothing on the wire then tells API 5 from API
    /// 6 but `CLIENT_SERVICE` users or `CLIENT` users flagged `is_service` / `is_admin`, and an
    /// installation holding only its admin leaves detection undecided.
    pub hide_permissions: bool,
}

impl Quirks {
    /// Every quirk a correct client must survive and still converge under (oz-api.md section
    /// 7): `results` envelope with a `count`, a cap of 3 per page, ignored filters, duplicates
    /// answered 409 (company names unique), sparse objects with unknown extra fields, integer
    /// expiry dates, expired sessions answered 403, and only the documented path forms
    /// routed. Not `ignore_offset`, which a client must refuse rather than survive, nor
    /// `hide_permissions`, under which permissions cannot converge.
    pub fn tolerable() -> Self {
        Self {
            envelope: Envelope::Results,
            total_field: TotalField::Count,
            max_limit: Some(3),
            ignore_filters: true,
            ignore_offset: false,
            duplicate_conflict_409: true,
            unique_company_names: true,
            keep_deleted_companies: false,
            trailing_slash: TrailingSlash::Documented,
            extra_fields: true,
            sparse_objects: true,
            integer_expire_dates: true,
            auth_expired_403: true,
            hide_permissions: false,
        }
    }
}

/// `offset` and `limit` as asked by the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub offset: usize,
    pub limit: usize,
}

/// The `limit` of a list when the client gives none.
pub const DEFAULT_LIMIT: usize = 100;

/// One page of the items a list's filters keep, shaped by the quirks. `omit_total` is the
/// client's `total_omit` parameter.
///
/// `matching` yields the kept items lazily, in list order. Only the items of the page are
/// rendered (`render`), and the matches are counted (a second walk, without rendering) only
/// when the body carries a total, so a request costs its page plus a walk over the records
/// before it, not a JSON object for every record of the list.
pub fn page<T>(
    matching: impl Iterator<Item = T> + Clone,
    render: impl FnMut(T) -> Value,
    request: PageRequest,
    quirks: &Quirks,
    omit_total: bool,
) -> Value {
    let from = matching.clone().skip(page_offset(request, quirks));
    page_from(from, || matching.count(), render, request, quirks, omit_total)
}

/// Where a page starts: `offset`, unless the server ignores it.
pub fn page_offset(request: PageRequest, quirks: &Quirks) -> usize {
    if quirks.ignore_offset { 0 } else { request.offset }
}

/// As `page`, for a list that can start at `page_offset` without walking the items before it:
/// `from` yields the items from there on, `count` says how many there are in all.
pub fn page_from<T>(
    from: impl Iterator<Item = T>,
    count: impl FnOnce() -> usize,
    render: impl FnMut(T) -> Value,
    request: PageRequest,
    quirks: &Quirks,
    omit_total: bool,
) -> Value {
    let limit = quirks.max_limit.map_or(request.limit, |cap| request.limit.min(cap));
    let items = Value::Array(from.take(limit).map(render).collect());
    let Some(key) = quirks.envelope.key() else {
        return items;
    };
    let mut body = Map::new();
    body.insert(key.to_string(), items);
    let total_key = match quirks.total_field {
        TotalField::Total => Some("total"),
        TotalField::Count => Some("count"),
        TotalField::Omitted => None,
    };
    if let (Some(total_key), false) = (total_key, omit_total) {
        body.insert(total_key.to_string(), Value::from(count()));
    }
    Value::Object(body)
}

/// What the trailing-slash quirk does with a request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlashVerdict {
    Route,
    NotFound,
    /// Redirect to this path (the documented form).
    Redirect(String),
}

/// The trailing-slash quirk applied to `path`. `collection` says whether the path names a
/// collection (`/api/users/`) rather than one object or an `authorize/*` call.
pub fn slash_verdict(quirk: TrailingSlash, path: &str, collection: bool) -> SlashVerdict {
    let has_slash = path.len() > 1 && path.ends_with('/');
    let documented = has_slash == collection;
    match quirk {
        TrailingSlash::Either => SlashVerdict::Route,
        TrailingSlash::Documented | TrailingSlash::Opposite
            if documented == (quirk == TrailingSlash::Documented) =>
        {
            SlashVerdict::Route
        }
        TrailingSlash::Documented | TrailingSlash::Opposite => SlashVerdict::NotFound,
        TrailingSlash::RedirectToDocumented | TrailingSlash::RedirectToUndocumented
            if documented == (quirk == TrailingSlash::RedirectToDocumented) =>
        {
            SlashVerdict::Route
        }
        TrailingSlash::RedirectToDocumented | TrailingSlash::RedirectToUndocumented if has_slash => {
            SlashVerdict::Redirect(path.trim_end_matches('/').to_string())
        }
        TrailingSlash::RedirectToDocumented | TrailingSlash::RedirectToUndocumented => {
            SlashVerdict::Redirect(format!("{path}/"))
        }
    }
}

/// The kinds of object the API sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    User,
    Company,
}

/// Apply the object quirks (`extra_fields`, `sparse_objects`, `hide_permissions`) to an object
/// about to be sent.
pub fn shape(quirks: &Quirks, kind: Shape, mut value: Value) -> Value {
    let Value::Object(object) = &mut value else { return value };
    if quirks.hide_permissions && kind == Shape::User {
        // Both spellings: `can_start_analyse_*` (API 5) and `can_start_analysis_*` (API 6).
        object.retain(|key, _| !key.starts_with("can_start_analys"));
    }
    if quirks.sparse_objects {
        let optional: &[&str] = match kind {
            Shape::User => {
                &["first_name", "last_name", "middle_name", "is_admin", "is_service", "company_id"]
            }
            Shape::Company => &["in_deletion", "technical_meta_data"],
        };
        object.retain(|key, v| !optional.contains(&key.as_str()) || !is_empty(v));
    }
    if quirks.extra_fields {
        object.insert("meta_data".into(), Value::Object(Map::new()));
        object.insert("_links".into(), serde_json::json!({"self": null}));
    }
    value
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(false) => true,
        Value::String(s) => s.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => false,
    }
}

/// An `expire_date` as sent: a float, or whole seconds under `integer_expire_dates`.
pub fn expire_date(quirks: &Quirks, epoch_secs: f64) -> Value {
    if quirks.integer_expire_dates {
        // Epoch seconds within 5 years from now fit an i64 with room to spare.
        #[expect(clippy::cast_possible_truncation)]
        let whole = epoch_secs.floor() as i64;
        Value::from(whole)
    } else {
        Value::from(epoch_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn numbers(n: usize) -> std::ops::Range<usize> {
        0..n
    }

    #[test]
    fn bare_envelope_is_a_plain_array_page() {
        let body =
            page(numbers(5), Value::from, PageRequest { offset: 1, limit: 2 }, &Quirks::default(), false);
        assert_eq!(body, json!([1, 2]));
    }

    #[test]
    fn object_envelopes_carry_the_total_before_paging() {
        let quirks = Quirks { envelope: Envelope::Results, ..Quirks::default() };
        let body = page(numbers(5), Value::from, PageRequest { offset: 4, limit: 2 }, &quirks, false);
        assert_eq!(body, json!({"results": [4], "total": 5}));
        let counted =
            Quirks { envelope: Envelope::Data, total_field: TotalField::Count, ..Quirks::default() };
        assert_eq!(
            page(numbers(1), Value::from, PageRequest { offset: 0, limit: 9 }, &counted, false),
            json!({"data": [0], "count": 1})
        );
        assert_eq!(
            page(numbers(1), Value::from, PageRequest { offset: 0, limit: 9 }, &counted, true),
            json!({"data": [0]})
        );
    }

    #[test]
    fn only_the_items_of_the_page_are_rendered_and_the_total_still_counts_every_match() {
        let quirks = Quirks { envelope: Envelope::Items, ..Quirks::default() };
        let mut rendered = Vec::new();
        let evens = (0..1000).filter(|n| n % 2 == 0);
        let body = page(
            evens,
            |n| {
                rendered.push(n);
                Value::from(n)
            },
            PageRequest { offset: 10, limit: 3 },
            &quirks,
            false,
        );
        assert_eq!(body, json!({"items": [20, 22, 24], "total": 500}));
        assert_eq!(rendered, [20, 22, 24]);
    }

    #[test]
    fn the_cap_wins_over_a_larger_limit_and_ignored_offset_repeats_the_first_page() {
        let quirks = Quirks { max_limit: Some(2), ignore_offset: true, ..Quirks::default() };
        let body = page(numbers(5), Value::from, PageRequest { offset: 2, limit: 50 }, &quirks, false);
        assert_eq!(body, json!([0, 1]));
    }

    #[test]
    fn documented_slash_form_routes_only_collections_with_a_slash() {
        use SlashVerdict::{NotFound, Redirect, Route};
        assert_eq!(slash_verdict(TrailingSlash::Documented, "/api/users/", true), Route);
        assert_eq!(slash_verdict(TrailingSlash::Documented, "/api/users", true), NotFound);
        assert_eq!(slash_verdict(TrailingSlash::Documented, "/api/authorize/auth", false), Route);
        assert_eq!(slash_verdict(TrailingSlash::Opposite, "/api/authorize/auth", false), NotFound);
        assert_eq!(slash_verdict(TrailingSlash::Opposite, "/api/authorize/auth/", false), Route);
        assert_eq!(slash_verdict(TrailingSlash::Either, "/api/users", true), Route);
        let redirect = TrailingSlash::RedirectToDocumented;
        assert_eq!(slash_verdict(redirect, "/api/users", true), Redirect("/api/users/".into()));
        assert_eq!(slash_verdict(redirect, "/api/users/x/", false), Redirect("/api/users/x".into()));
        assert_eq!(slash_verdict(redirect, "/api/users/x", false), Route);
        let back = TrailingSlash::RedirectToUndocumented;
        assert_eq!(slash_verdict(back, "/api/users/", true), Redirect("/api/users".into()));
        assert_eq!(
            slash_verdict(back, "/api/authorize/auth", false),
            Redirect("/api/authorize/auth/".into())
        );
        assert_eq!(slash_verdict(back, "/api/users", true), Route);
    }

    #[test]
    fn sparse_objects_drop_empty_optional_fields_and_extra_fields_add_unknown_ones() {
        let quirks = Quirks { sparse_objects: true, extra_fields: true, ..Quirks::default() };
        let user = json!({"user_id": "u", "middle_name": "", "first_name": "A", "is_admin": false, "is_active": false});
        let shaped = shape(&quirks, Shape::User, user);
        assert_eq!(shaped["first_name"], "A");
        assert_eq!(shaped["is_active"], false);
        assert!(shaped.get("middle_name").is_none() && shaped.get("is_admin").is_none());
        assert_eq!(shaped["meta_data"], json!({}));
        let company = shape(
            &quirks,
            Shape::Company,
            json!({"name": "C", "in_deletion": false, "technical_meta_data": {}}),
        );
        assert_eq!(company.as_object().map(|o| o.contains_key("in_deletion")), Some(false));
    }

    #[test]
    fn hidden_permissions_leave_users_without_flags_in_either_spelling() {
        let quirks = Quirks { hide_permissions: true, ..Quirks::default() };
        let user =
            json!({"user_id": "u", "can_start_analyse_quality": true, "can_start_analysis_documents": false});
        assert_eq!(shape(&quirks, Shape::User, user), json!({"user_id": "u"}));
    }

    #[test]
    fn tolerable_quirks_still_page_forward() {
        let quirks = Quirks::tolerable();
        let second = page(numbers(5), Value::from, PageRequest { offset: 3, limit: 100 }, &quirks, false);
        assert_eq!(second, json!({"results": [3, 4], "count": 5}));
    }

    #[test]
    fn expire_dates_can_be_whole_seconds() {
        let quirks = Quirks { integer_expire_dates: true, ..Quirks::default() };
        assert_eq!(expire_date(&quirks, 12.75), json!(12));
        assert_eq!(expire_date(&Quirks::default(), 12.75), json!(12.75));
    }
}
