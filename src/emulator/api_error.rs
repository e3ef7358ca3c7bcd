//! Oz error bodies (`{error_code, error_message, details}`) with the documented codes and
//! statuses (oz-api.md section 6). Messages never hold a password or a token.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The documented `error_code` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    Unknown = 0,
    NotAllowed = 1,
    InvalidStructure = 3,
    InvalidValue = 4,
    InvalidType = 5,
    AuthNotProvided = 6,
    AuthInvalid = 7,
    AuthExpired = 8,
    AuthForbidden = 9,
    NotExist = 10,
}

/// An error answer of the emulated API.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: Code,
    pub message: String,
    pub details: Value,
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: Code, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), details: Value::Null, retry_after_secs: None }
    }
    pub(crate) fn structure(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Code::InvalidStructure, message)
    }
    pub(crate) fn value(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Code::InvalidValue, message)
    }
    pub(crate) fn type_of(field: &str, expected: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Code::InvalidType, format!("`{field}` must be {expected}"))
            .with_details(json!({ "field": field }))
    }
    pub(crate) fn not_exist(what: &str, id: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, Code::NotExist, format!("{what} `{id}` does not exist"))
    }
    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, Code::AuthForbidden, message)
    }
    pub(crate) fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error_code": self.code as u8,
            "error_message": self.message,
            "details": self.details,
        });
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
