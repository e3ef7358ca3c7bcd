//! The admin session: login, refresh, and one shared re-login when it expires mid-run.
//!
//! The access token lives behind a lock with a generation number. A request that meets an auth
//! failure asks `renew(generation it used)`: the first one in refreshes (or logs in again) and
//! bumps the generation; the others wait on the same async mutex, see the new generation and
//! simply retry, so a burst of expired requests costs one re-login, not one each.

use std::sync::RwLock;

use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::OzError;
use super::retry::Repeat;
use super::transport::{Auth, Call, Transport};
use super::wire::{MAX_TOKEN_BYTES, WireSession, token_problem};
use crate::secret::Secret;

pub const AUTH_PATH: &str = "/api/authorize/auth";
pub const REFRESH_PATH: &str = "/api/authorize/refresh";

#[derive(Debug, Default)]
/// The secrets of the current admin session and the generation they belong to.
struct SessionKeys {
    access: Option<Secret>,
    expire: Option<Secret>,
    generation: u64,
    /// The session's `expire_date` (Unix seconds), when the API gives one.
    expire_date: Option<f64>,
}

#[derive(Debug, Default)]
pub struct AdminSession {
    keys: RwLock<SessionKeys>,
    renewing: tokio::sync::Mutex<()>,
}

impl AdminSession {
    /// The token to send and the generation it belongs to.
    pub fn current(&self) -> (Option<Secret>, u64) {
        match self.keys.read() {
            Ok(t) => (t.access.clone(), t.generation),
            // A poisoned lock means a panic elsewhere while swapping tokens; sending no token
            // leads to an auth failure and a clean re-login.
            Err(_) => (None, u64::MAX),
        }
    }

    fn store(&self, session: &WireSession) {
        if let Ok(mut t) = self.keys.write() {
            t.access = Some(Secret::new(session.access_token.clone()));
            if let Some(expire) = &session.expire_token {
                t.expire = Some(Secret::new(expire.clone()));
            }
            t.generation = t.generation.wrapping_add(1);
            t.expire_date = session.expire_date;
        }
    }

    /// The current access and expire tokens (for redacting what a server echoes).
    pub(super) fn secrets(&self) -> Vec<Secret> {
        match self.keys.read() {
            Ok(t) => t.access.iter().chain(&t.expire).cloned().collect(),
            Err(_) => Vec::new(),
        }
    }

    /// When the current session expires (Unix seconds), if the API said so.
    pub fn expire_date(&self) -> Option<f64> {
        self.keys.read().ok().and_then(|t| t.expire_date)
    }

    fn refresh_material(&self) -> Option<(Secret, Secret)> {
        let t = self.keys.read().ok()?;
        Some((t.access.clone()?, t.expire.clone()?))
    }
}

impl Transport {
    /// Log in as the admin and keep the session. Returns the `user` object of the answer.
    pub async fn login(&self) -> Result<Option<Value>, OzError> {
        let body = json!({"credentials": {
            "email": self.config.admin_email,
            "password": self.config.admin_password.expose(),
        }});
        let call = Call {
            method: Method::POST,
            path: AUTH_PATH.into(),
            query: Vec::new(),
            body: Some(&body),
            repeat: Repeat::Safe,
            auth: Auth::Anonymous,
        };
        // `send` has already redacted the message (the admin password is in this body, and
        // every message is redacted against it anyway).
        let answer = self.send(call).await.map_err(|e| match e {
            OzError::Http { status: status @ (400 | 401 | 403), error_code, error_message, .. } => {
                OzError::Login {
                    host: self.origin().to_string(),
                    email: self.config.admin_email.clone(),
                    status,
                    error_code,
                    error_message,
                }
            }
            other => other,
        })?;
        let session = self.decode_session(AUTH_PATH, &answer)?;
        self.session.store(&session);
        tracing::debug!(host = self.origin(), expire_date = session.expire_date, "logged in");
        Ok(session.user)
    }

    async fn refresh(&self, access: Secret, expire: &Secret) -> Result<(), OzError> {
        let body = json!({"expire_token": expire.expose()});
        let call = Call {
            method: Method::POST,
            path: REFRESH_PATH.into(),
            query: Vec::new(),
            body: Some(&body),
            repeat: Repeat::Safe,
            auth: Auth::Token(access),
        };
        let answer = self.send(call).await?;
        let session = self.decode_session(REFRESH_PATH, &answer)?;
        self.session.store(&session);
        Ok(())
    }

    /// Read a session answer. serde quotes the value it could not read (`invalid type: string
    /// "…"`), which may be a token of this very answer: the reason is redacted against them.
    /// The access token must be one a header can carry (`wire::token_problem`), or nothing is kept.
    fn decode_session(&self, path: &str, answer: &Value) -> Result<WireSession, OzError> {
        let session = WireSession::deserialize(answer).map_err(|e| OzError::Decode {
            method: "POST".into(),
            path: self.where_(path),
            reason: self.redact(&format!("session object: {e}"), Some(answer), None),
        })?;
        if let Some(problem) = token_problem(&session.access_token) {
            return Err(OzError::Limit {
                method: "POST".into(),
                path: self.where_(path),
                reason: format!("the session token the API issued cannot be a token: {problem}"),
                help: Some(format!(
                    "a token must be non-empty printable ASCII without spaces, at most {MAX_TOKEN_BYTES} \
                     bytes; the API (or a proxy in front of it) is broken"
                )),
            });
        }
        Ok(session)
    }

    /// Renew the session that `seen` (a generation) belonged to: refresh, else log in again.
    /// A no-op when another request already renewed it.
    pub async fn renew(&self, seen: u64) -> Result<(), OzError> {
        let _only_one = self.session.renewing.lock().await;
        if self.session.current().1 != seen {
            return Ok(());
        }
        if let Some((access, expire)) = self.session.refresh_material() {
            match self.refresh(access, &expire).await {
                Ok(()) => {
                    tracing::debug!("refreshed the admin session");
                    return Ok(());
                }
                Err(e) => tracing::debug!(error = %e, "refresh refused: logging in again"),
            }
        }
        self.login().await.map(|_| ())
    }
}
