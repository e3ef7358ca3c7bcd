//! `Dialect`: every difference between API 5 and API 6, and nothing else.
//!
//! | | API 6 | API 5 |
//! |---|---|---|
//! | service user | `user_type: CLIENT_SERVICE` | `user_type: CLIENT` + `is_service: true` |
//! | company admin | `user_type: CLIENT_ADMIN` | `user_type: CLIENT` + `is_admin: true` |
//! | permission flags | `can_start_analysis_*` | `can_start_analyse_*` |
//! | service token | `POST /api/authorize/service_token/{user_id}` | `POST /api/authorize/service_token` + `{"user_id"}` |
//!
//! Reading takes whichever permission spelling a GET returns (the dialect's own first); writing
//! uses the dialect's spelling. `detect` decides the dialect from live users. Pure; no I/O.

use serde_json::{Map, Value, json};

use crate::model::{
    ApiVersion, Email, LivePermissions, NewUser, ObservedUser, Permissions, UserKind, UserPatch,
};

use super::wire::WireUser;

/// The four permission flags, by their dialect-neutral name.
const FLAGS: [&str; 4] = ["biometry", "collection", "documents", "quality"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    V5,
    V6,
}

/// A request to issue a service token: where to send it and with what body.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRequest {
    pub path: String,
    pub body: Value,
}

impl Dialect {
    pub fn of(version: ApiVersion) -> Self {
        match version {
            ApiVersion::V5 => Dialect::V5,
            ApiVersion::V6 => Dialect::V6,
        }
    }

    pub fn version(self) -> ApiVersion {
        match self {
            Dialect::V5 => ApiVersion::V5,
            Dialect::V6 => ApiVersion::V6,
        }
    }

    fn flag_prefix(self) -> &'static str {
        match self {
            Dialect::V5 => "can_start_analyse_",
            Dialect::V6 => "can_start_analysis_",
        }
    }

    /// What kind of account a live user is.
    pub fn user_kind(self, w: &WireUser) -> UserKind {
        let user_type = w.user_type.as_deref().unwrap_or("CLIENT");
        match (self, user_type) {
            (_, "ADMIN") => UserKind::Admin,
            (_, "OPERATOR") => UserKind::Operator,
            (Dialect::V6, "CLIENT_SERVICE") => UserKind::Service,
            (Dialect::V6, "CLIENT_ADMIN") => UserKind::CompanyAdmin,
            (Dialect::V5, "CLIENT") if w.is_service == Some(true) => UserKind::Service,
            (Dialect::V5, "CLIENT") if w.is_admin == Some(true) => UserKind::CompanyAdmin,
            (_, "CLIENT") => UserKind::Client,
            (_, other) => UserKind::Other(other.to_string()),
        }
    }

    /// Permission flags as live: the dialect's spelling, else the other one, else the API's
    /// default (enabled).
    pub fn permissions(self, w: &WireUser) -> LivePermissions {
        let (v6, v5) = (
            [
                w.can_start_analysis_biometry,
                w.can_start_analysis_collection,
                w.can_start_analysis_documents,
                w.can_start_analysis_quality,
            ],
            [
                w.can_start_analyse_biometry,
                w.can_start_analyse_collection,
                w.can_start_analyse_documents,
                w.can_start_analyse_quality,
            ],
        );
        let (own, other) = match self {
            Dialect::V5 => (v5, v6),
            Dialect::V6 => (v6, v5),
        };
        let flag = |i: usize| own[i].or(other[i]).unwrap_or(true);
        LivePermissions { biometry: flag(0), collection: flag(1), documents: flag(2), quality: flag(3) }
    }

    /// A wire user in dialect-neutral form.
    pub fn observed_user(self, w: WireUser) -> ObservedUser {
        ObservedUser {
            kind: self.user_kind(&w),
            permissions: self.permissions(&w),
            active: w.is_active.unwrap_or(true),
            id: w.user_id,
            email: Email::new(w.email),
            company_id: w.company_id.map(Into::into),
            first_name: w.first_name,
            last_name: w.last_name,
            middle_name: w.middle_name,
        }
    }

    fn service_fields(self, profile: &mut Map<String, Value>) {
        match self {
            Dialect::V6 => {
                profile.insert("user_type".into(), json!("CLIENT_SERVICE"));
            }
            Dialect::V5 => {
                profile.insert("user_type".into(), json!("CLIENT"));
                profile.insert("is_service".into(), json!(true));
            }
        }
    }

    fn permission_fields(self, p: Permissions, out: &mut Map<String, Value>) {
        let values = [p.biometry, p.collection, p.documents, p.quality];
        for (name, value) in FLAGS.iter().zip(values) {
            if let Some(v) = value {
                out.insert(format!("{}{name}", self.flag_prefix()), json!(v));
            }
        }
    }

    /// The body of `POST /api/users/` for a service user. Holds the password: never log it.
    pub fn new_user_body(self, u: &NewUser) -> Value {
        let mut profile = Map::new();
        profile.insert("company_id".into(), json!(u.company_id));
        self.service_fields(&mut profile);
        profile.insert("first_name".into(), json!(u.first_name));
        profile.insert("last_name".into(), json!(u.last_name));
        profile.insert("middle_name".into(), json!(u.middle_name));
        profile.insert("is_active".into(), json!(u.active));
        self.permission_fields(u.permissions, &mut profile);
        json!({
            "credentials": {"email": u.email.as_str(), "password": u.password.expose()},
            "profile": profile,
        })
    }

    /// The body of `PATCH /api/users/{id}`: the fields to change, flat.
    pub fn user_patch_body(self, p: &UserPatch) -> Value {
        let mut body = Map::new();
        for (key, value) in
            [("first_name", &p.first_name), ("last_name", &p.last_name), ("middle_name", &p.middle_name)]
        {
            if let Some(v) = value {
                body.insert(key.into(), json!(v));
            }
        }
        if let Some(active) = p.active {
            body.insert("is_active".into(), json!(active));
        }
        self.permission_fields(p.permissions, &mut body);
        if p.make_service {
            self.service_fields(&mut body);
        }
        Value::Object(body)
    }

    /// Where and how to ask for a service token for `user_id`.
    pub fn token_request(self, user_id: &str) -> TokenRequest {
        match self {
            Dialect::V6 => {
                TokenRequest { path: format!("/api/authorize/service_token/{user_id}"), body: json!({}) }
            }
            Dialect::V5 => TokenRequest {
                path: "/api/authorize/service_token".into(),
                body: json!({"user_id": user_id}),
            },
        }
    }
}

/// What live user objects say about the dialect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evidence {
    /// Users spelling permissions `can_start_analyse_*` / `can_start_analysis_*`.
    pub v5_spelling: usize,
    pub v6_spelling: usize,
    /// Users whose `user_type` is an API 6 role (`CLIENT_SERVICE`, `CLIENT_ADMIN`).
    pub v6_roles: usize,
    /// `CLIENT` users flagged `is_service` / `is_admin` (the API 5 way).
    pub v5_flags: usize,
}

impl Evidence {
    /// Add what one raw user object says.
    pub fn add(&mut self, user: &Value) {
        let Value::Object(map) = user else { return };
        let lookup = |k: &str| map.get(k).or_else(|| map.get("profile").and_then(|p| p.get(k)));
        if FLAGS.iter().any(|f| lookup(&format!("can_start_analyse_{f}")).is_some()) {
            self.v5_spelling += 1;
        }
        if FLAGS.iter().any(|f| lookup(&format!("can_start_analysis_{f}")).is_some()) {
            self.v6_spelling += 1;
        }
        match lookup("user_type").and_then(Value::as_str) {
            Some("CLIENT_SERVICE" | "CLIENT_ADMIN") => self.v6_roles += 1,
            Some("CLIENT")
                if [lookup("is_service"), lookup("is_admin")]
                    .iter()
                    .any(|v| v.and_then(Value::as_bool) == Some(true)) =>
            {
                self.v5_flags += 1;
            }
            _ => {}
        }
    }

    /// Add what one decoded user says (as `add` does for a raw object).
    pub fn add_wire(&mut self, user: &WireUser) {
        let v5 = [
            user.can_start_analyse_biometry,
            user.can_start_analyse_collection,
            user.can_start_analyse_documents,
            user.can_start_analyse_quality,
        ];
        let v6 = [
            user.can_start_analysis_biometry,
            user.can_start_analysis_collection,
            user.can_start_analysis_documents,
            user.can_start_analysis_quality,
        ];
        if v5.iter().any(Option::is_some) {
            self.v5_spelling += 1;
        }
        if v6.iter().any(Option::is_some) {
            self.v6_spelling += 1;
        }
        match user.user_type.as_deref() {
            Some("CLIENT_SERVICE" | "CLIENT_ADMIN") => self.v6_roles += 1,
            Some("CLIENT") if user.is_service == Some(true) || user.is_admin == Some(true) => {
                self.v5_flags += 1;
            }
            _ => {}
        }
    }

    /// The evidence in words, for an error: e.g. "permissions spelt `can_start_analysis_*`
    /// (API 6) on 3 users; `user_type` `CLIENT_SERVICE` or `CLIENT_ADMIN` (API 6) on 2 users".
    pub fn describe(&self) -> String {
        let users = |n: usize| if n == 1 { "1 user".to_string() } else { format!("{n} users") };
        [
            (self.v5_spelling, "permissions spelt `can_start_analyse_*` (API 5)"),
            (self.v6_spelling, "permissions spelt `can_start_analysis_*` (API 6)"),
            (self.v6_roles, "`user_type` `CLIENT_SERVICE` or `CLIENT_ADMIN` (API 6)"),
            (self.v5_flags, "`user_type` `CLIENT` with `is_service` or `is_admin` (API 5)"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{what} on {}", users(n)))
        .collect::<Vec<_>>()
        .join("; ")
    }

    /// The dialect the evidence points to: the permission spelling when only one is seen,
    /// else the user roles when they agree, else undecided.
    pub fn decide(&self) -> Option<Dialect> {
        match (self.v5_spelling > 0, self.v6_spelling > 0) {
            (true, false) => return Some(Dialect::V5),
            (false, true) => return Some(Dialect::V6),
            _ => {}
        }
        match (self.v5_flags > 0, self.v6_roles > 0) {
            (true, false) => Some(Dialect::V5),
            (false, true) => Some(Dialect::V6),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn wire(v: Value) -> WireUser {
        WireUser::from_value(v).expect("user")
    }

    #[test]
    fn a_service_user_is_spelled_per_dialect_on_create() {
        let user = NewUser {
            email: Email::new("s@x.y"),
            company_id: "c1".into(),
            first_name: "F".into(),
            last_name: "L".into(),
            middle_name: String::new(),
            password: Secret::new("pw"),
            active: true,
            permissions: Permissions { documents: Some(false), ..Permissions::default() },
        };
        let v6 = Dialect::V6.new_user_body(&user);
        assert_eq!(v6["profile"]["user_type"], "CLIENT_SERVICE");
        assert_eq!(v6["profile"]["can_start_analysis_documents"], false);
        assert!(v6["profile"].get("can_start_analysis_biometry").is_none());
        let v5 = Dialect::V5.new_user_body(&user);
        assert_eq!(
            (v5["profile"]["user_type"].as_str(), v5["profile"]["is_service"].as_bool()),
            (Some("CLIENT"), Some(true))
        );
        assert_eq!(v5["profile"]["can_start_analyse_documents"], false);
        assert_eq!(v5["credentials"]["email"], "s@x.y");
    }

    #[test]
    fn user_kinds_are_read_per_dialect() {
        let v5_service = wire(json!({"user_id": "1", "user_type": "CLIENT", "is_service": true}));
        let v5_admin = wire(json!({"user_id": "1", "user_type": "CLIENT", "is_admin": true}));
        let v6_service = wire(json!({"user_id": "1", "user_type": "CLIENT_SERVICE", "is_service": true}));
        let v6_admin = wire(json!({"user_id": "1", "user_type": "CLIENT_ADMIN"}));
        assert_eq!(Dialect::V5.user_kind(&v5_service), UserKind::Service);
        assert_eq!(Dialect::V5.user_kind(&v5_admin), UserKind::CompanyAdmin);
        assert_eq!(Dialect::V6.user_kind(&v6_service), UserKind::Service);
        assert_eq!(Dialect::V6.user_kind(&v6_admin), UserKind::CompanyAdmin);
        assert_eq!(Dialect::V6.user_kind(&v5_service), UserKind::Client);
        assert_eq!(Dialect::V5.user_kind(&v6_service), UserKind::Other("CLIENT_SERVICE".into()));
    }

    #[test]
    fn permissions_are_read_in_whichever_spelling_the_api_returns() {
        let other = wire(json!({"user_id": "1", "can_start_analyse_quality": false}));
        assert!(!Dialect::V6.permissions(&other).quality);
        assert!(Dialect::V6.permissions(&other).biometry, "a missing flag is enabled by default");
        let both = wire(
            json!({"user_id": "1", "can_start_analysis_quality": true, "can_start_analyse_quality": false}),
        );
        assert!(Dialect::V6.permissions(&both).quality);
        assert!(!Dialect::V5.permissions(&both).quality);
    }

    #[test]
    fn a_patch_writes_the_dialects_spelling_and_only_changed_fields() {
        let patch = UserPatch {
            active: Some(false),
            permissions: Permissions { biometry: Some(false), ..Permissions::default() },
            ..UserPatch::default()
        };
        assert_eq!(
            Dialect::V5.user_patch_body(&patch),
            json!({"is_active": false, "can_start_analyse_biometry": false})
        );
        assert_eq!(
            Dialect::V6.user_patch_body(&patch),
            json!({"is_active": false, "can_start_analysis_biometry": false})
        );
    }

    #[test]
    fn the_token_endpoint_differs_per_dialect() {
        assert_eq!(Dialect::V6.token_request("u1").path, "/api/authorize/service_token/u1");
        let v5 = Dialect::V5.token_request("u1");
        assert_eq!((v5.path.as_str(), v5.body), ("/api/authorize/service_token", json!({"user_id": "u1"})));
    }

    #[test]
    fn detection_prefers_the_permission_spelling_then_the_roles() {
        let mut e = Evidence::default();
        e.add(&json!({"user_type": "ADMIN"}));
        assert_eq!(e.decide(), None);
        e.add(&json!({"user_type": "CLIENT", "is_service": true}));
        assert_eq!(e.decide(), Some(Dialect::V5));
        e.add(&json!({"user_type": "CLIENT_SERVICE", "can_start_analysis_biometry": true}));
        assert_eq!(e.decide(), Some(Dialect::V6));
        e.add(&json!({"profile": {"can_start_analyse_biometry": true}}));
        assert_eq!(e.decide(), None, "both spellings and both role styles: undecidable");
    }

    #[test]
    fn a_decoded_user_is_the_same_evidence_as_its_raw_object() {
        for raw in [
            json!({"user_id": "a", "user_type": "ADMIN"}),
            json!({"user_id": "a", "user_type": "CLIENT", "is_service": true}),
            json!({"user_id": "a", "user_type": "CLIENT", "is_admin": true, "can_start_analyse_quality": false}),
            json!({"user_id": "a", "user_type": "CLIENT_SERVICE", "can_start_analysis_biometry": true}),
            json!({"user_id": "a", "profile": {"user_type": "CLIENT_ADMIN", "can_start_analyse_biometry": true}}),
        ] {
            let (mut from_raw, mut from_wire) = (Evidence::default(), Evidence::default());
            from_raw.add(&raw);
            from_wire.add_wire(&WireUser::from_value(raw.clone()).expect("user"));
            assert_eq!(from_raw, from_wire, "{raw}");
        }
    }
}
