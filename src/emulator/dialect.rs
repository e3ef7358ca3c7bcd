//! The API 5 / API 6 differences, in one place: user types, how a service user is marked, the
//! spelling of the four permission flags, and how a user object reads on the wire. Functions of
//! the `ApiVersion` the emulator speaks (the client's `oz::Dialect` is the client's own, and the
//! emulator never imports the client). Pure; no I/O.

use serde_json::{Map, Value, json};

use crate::model::{ApiVersion, LivePermissions};

use super::api_error::ApiError;
use super::db::UserRecord;

/// Wire spelling of the permission flags: biometry, collection, documents, quality.
const FLAGS_V6: [&str; 4] = [
    "can_start_analysis_biometry",
    "can_start_analysis_collection",
    "can_start_analysis_documents",
    "can_start_analysis_quality",
];
const FLAGS_V5: [&str; 4] = [
    "can_start_analyse_biometry",
    "can_start_analyse_collection",
    "can_start_analyse_documents",
    "can_start_analyse_quality",
];

pub const ADMIN: &str = "ADMIN";
pub const OPERATOR: &str = "OPERATOR";
pub const CLIENT: &str = "CLIENT";
pub const CLIENT_ADMIN: &str = "CLIENT_ADMIN";
pub const CLIENT_OPERATOR: &str = "CLIENT_OPERATOR";
pub const CLIENT_SERVICE: &str = "CLIENT_SERVICE";

pub(crate) fn flag_names(version: ApiVersion) -> [&'static str; 4] {
    match version {
        ApiVersion::V5 => FLAGS_V5,
        ApiVersion::V6 => FLAGS_V6,
    }
}

/// Check a `user_type` sent by a client. API 5 has no `CLIENT_ADMIN` / `CLIENT_SERVICE`
/// roles (a company admin or service user is a `CLIENT` with `is_admin` / `is_service`).
pub(crate) fn check_user_type(version: ApiVersion, user_type: &str) -> Result<(), ApiError> {
    let known: &[&str] = match version {
        ApiVersion::V5 => &[ADMIN, OPERATOR, CLIENT],
        ApiVersion::V6 => &[ADMIN, OPERATOR, CLIENT, CLIENT_ADMIN, CLIENT_OPERATOR, CLIENT_SERVICE],
    };
    if known.contains(&user_type) {
        Ok(())
    } else {
        Err(ApiError::value(format!("`user_type` `{user_type}` is not valid in API {version}"))
            .with_details(json!({ "field": "user_type", "allowed": known })))
    }
}

/// Whether a user belongs to a company (every `CLIENT*` type) rather than to the platform.
pub(crate) fn needs_company(user_type: &str) -> bool {
    user_type.starts_with(CLIENT)
}

/// Whether a user is a service account in API `version`.
pub(crate) fn is_service(version: ApiVersion, user: &UserRecord) -> bool {
    match version {
        ApiVersion::V5 => user.is_service,
        ApiVersion::V6 => user.is_service || user.user_type == CLIENT_SERVICE,
    }
}

/// Read the flags written in `version`'s spelling over `base`; the other spelling is
/// silently ignored, as the real API does.
pub(crate) fn read_permissions(
    version: ApiVersion,
    profile: &Map<String, Value>,
    base: LivePermissions,
) -> Result<LivePermissions, ApiError> {
    let [biometry, collection, documents, quality] = flag_names(version);
    let flag = |name: &str, current: bool| -> Result<bool, ApiError> {
        match profile.get(name) {
            None | Some(Value::Null) => Ok(current),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(ApiError::type_of(name, "a boolean")),
        }
    };
    Ok(LivePermissions {
        biometry: flag(biometry, base.biometry)?,
        collection: flag(collection, base.collection)?,
        documents: flag(documents, base.documents)?,
        quality: flag(quality, base.quality)?,
    })
}

/// A user object as API `version` sends it.
pub(crate) fn user_json(version: ApiVersion, user: &UserRecord) -> Value {
    let [biometry, collection, documents, quality] = flag_names(version);
    let mut body = Map::new();
    body.insert("user_id".into(), json!(user.user_id));
    body.insert("email".into(), json!(user.email));
    body.insert("user_type".into(), json!(user.user_type));
    body.insert("company_id".into(), json!(user.company_id));
    body.insert("first_name".into(), json!(user.first_name));
    body.insert("last_name".into(), json!(user.last_name));
    body.insert("middle_name".into(), json!(user.middle_name));
    body.insert("is_active".into(), json!(user.is_active));
    body.insert("is_service".into(), json!(is_service(version, user)));
    body.insert("is_admin".into(), json!(user.is_admin));
    body.insert(biometry.into(), json!(user.permissions.biometry));
    body.insert(collection.into(), json!(user.permissions.collection));
    body.insert(documents.into(), json!(user.permissions.documents));
    body.insert(quality.into(), json!(user.permissions.quality));
    Value::Object(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service_user(user_type: &str, is_service: bool) -> UserRecord {
        UserRecord {
            user_type: user_type.into(),
            is_service,
            ..UserRecord::new("u@x.test".into(), CLIENT.into(), Some("c".into()))
        }
    }

    #[test]
    fn api_5_rejects_client_service_and_api_6_accepts_it() {
        assert!(check_user_type(ApiVersion::V5, CLIENT_SERVICE).is_err());
        assert!(check_user_type(ApiVersion::V6, CLIENT_SERVICE).is_ok());
        assert!(check_user_type(ApiVersion::V6, "ROOT").is_err());
    }

    #[test]
    fn flags_in_the_other_spelling_are_ignored() {
        let profile: Map<String, Value> = serde_json::from_value(
            json!({"can_start_analysis_quality": false, "can_start_analyse_biometry": false}),
        )
        .unwrap_or_default();
        let v5 = read_permissions(ApiVersion::V5, &profile, LivePermissions::default());
        assert_eq!(v5.map(|p| (p.biometry, p.quality)).ok(), Some((false, true)));
        let v6 = read_permissions(ApiVersion::V6, &profile, LivePermissions::default());
        assert_eq!(v6.map(|p| (p.biometry, p.quality)).ok(), Some((true, false)));
    }

    #[test]
    fn api_6_shows_client_service_users_as_service() {
        let user = service_user(CLIENT_SERVICE, false);
        let body = user_json(ApiVersion::V6, &user);
        assert_eq!(body["is_service"], json!(true));
        assert_eq!(body["can_start_analysis_documents"], json!(true));
        let v5 = user_json(ApiVersion::V5, &service_user(CLIENT, true));
        assert_eq!(v5["is_service"], json!(true));
        assert!(v5.get("can_start_analyse_documents").is_some());
    }
}
