//! The writes `OzClient` can make (and the lookups by natural key that go with them), as
//! inherent methods with the client's own `OzError`; `apply::Effects` for `OzClient` wraps them,
//! converting each error to the seam's own kinds.
//!
//! Creates are `Call::create` (never blindly re-sent: an error with `outcome_unknown()` tells
//! apply to read back with `find_*`). Updates are `PATCH` requests of the changed fields only; an answer
//! without a body is followed by a GET of the object.
//!
//! An issued service token is checked before anything keeps it (`wire::token_problem`): one
//! that cannot be a token fails its step and is never stored. An `expire_date` no fresh token
//! can have (not finite, outside [now − 1 day, now + 100 years]) is kept as
//! `model::UNKNOWN_EXPIRY`, with a warning.

use serde_json::Value;

use super::OzError;
use super::client::{COMPANIES, OzClient, USERS, UserFilter};
use super::transport::Call;
use super::wire::{
    MAX_TOKEN_BYTES, WireCompany, WireServiceToken, company_patch_body, new_company_body, token_problem,
};
use crate::apply::{EffectError, EffectErrorKind, Effects};
use crate::model::{
    CompanyPatch, Email, IssuedToken, NewCompany, NewUser, ObservedCompany, ObservedUser, UNKNOWN_EXPIRY,
    UserPatch,
};
use crate::secret::Secret;

/// When the API does not say when a service token expires: its documented default lifetime
/// (`OZ_SESSION_LONGLIVE_TTL`, 5 years).
const DEFAULT_TOKEN_LIFETIME_SECS: f64 = 5.0 * 365.0 * 86_400.0;

impl OzClient {
    fn decode_company(&self, method: &str, path: &str, value: Value) -> Result<ObservedCompany, OzError> {
        serde_json::from_value::<WireCompany>(value).map(ObservedCompany::from).map_err(|e| OzError::Decode {
            method: method.into(),
            path: self.transport.where_(path),
            reason: format!("company object: {e}"),
        })
    }
}

impl OzClient {
    /// Live companies with exactly this name that are not `in_deletion`.
    pub async fn find_companies(&self, name: &str) -> Result<Vec<ObservedCompany>, OzError> {
        let found = self.companies_named(Some(name)).await?;
        Ok(found.into_iter().filter(|c| !c.in_deletion).collect())
    }

    pub async fn find_user(&self, email: &Email) -> Result<Option<ObservedUser>, OzError> {
        let by = |e: Email| UserFilter { email: Some(e), ..UserFilter::default() };
        let mut found = self.list_users(&by(email.clone())).await?;
        // A server may match the filter case-sensitively: try the usual lower-case spelling too.
        if found.is_empty() && email.as_str() != email.key() {
            found = self.list_users(&by(Email::new(email.key()))).await?;
        }
        match found.len() {
            0 | 1 => Ok(found.pop()),
            n => Err(OzError::Decode {
                method: "GET".into(),
                path: self.transport.where_(USERS),
                reason: format!("{n} users have the email `{email}`"),
            }),
        }
    }

    pub async fn create_company(&self, company: &NewCompany) -> Result<ObservedCompany, OzError> {
        let body = new_company_body(company);
        let answer = self.send(Call::create(COMPANIES, &body)).await?;
        self.decode_company("POST", COMPANIES, answer)
    }

    pub async fn update_company(&self, id: &str, patch: &CompanyPatch) -> Result<ObservedCompany, OzError> {
        let object = format!("{COMPANIES}{id}");
        let body = company_patch_body(patch);
        let mut answer = self.send(Call::patch(object.clone(), &body)).await?;
        if answer.is_null() {
            answer = self.send(Call::get(object.clone())).await?;
        }
        self.decode_company("PATCH", &object, answer)
    }

    pub async fn create_user(&self, user: &NewUser) -> Result<ObservedUser, OzError> {
        let body = self.dialect.new_user_body(user);
        let answer = self.send(Call::create(USERS, &body)).await?;
        self.decode_user("POST", USERS, answer)
    }

    pub async fn update_user(&self, id: &str, patch: &UserPatch) -> Result<ObservedUser, OzError> {
        let object = format!("{USERS}{id}");
        let body = self.dialect.user_patch_body(patch);
        let mut answer = self.send(Call::patch(object.clone(), &body)).await?;
        if answer.is_null() {
            answer = self.send(Call::get(object.clone())).await?;
        }
        self.decode_user("PATCH", &object, answer)
    }

    /// `DELETE /api/users/{id}` (both dialects; the API answers 204). A 404 counts as deleted:
    /// a delete re-sent after its answer was lost finds the user gone, and apply checked that
    /// the user existed (the plan's fingerprint) before it started.
    pub async fn delete_user(&self, id: &str) -> Result<(), OzError> {
        match self.send(Call::delete(format!("{USERS}{id}"))).await {
            Ok(_) | Err(OzError::Http { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn issue_token(&self, user_id: &str) -> Result<IssuedToken, OzError> {
        let request = self.dialect.token_request(user_id);
        let answer = self.send(Call::create(request.path.clone(), &request.body)).await?;
        let wire: WireServiceToken = serde_json::from_value(answer).map_err(|e| OzError::Decode {
            method: "POST".into(),
            path: self.transport.where_(&request.path),
            reason: format!("service token object: {e}"),
        })?;
        if let Some(problem) = token_problem(&wire.access_token) {
            return Err(OzError::Limit {
                method: "POST".into(),
                path: self.transport.where_(&request.path),
                reason: format!("the service token the API issued cannot be a token: {problem}"),
                help: Some(format!(
                    "a token must be non-empty printable ASCII without spaces, at most {MAX_TOKEN_BYTES} \
                     bytes; the API (or a proxy in front of it) is broken: the token was not stored"
                )),
            });
        }
        let now = crate::model::now_epoch();
        let expire_date = match wire.expire_date {
            None => {
                tracing::warn!(
                    user_id,
                    "the API did not say when the service token expires: assuming 5 years"
                );
                now + DEFAULT_TOKEN_LIFETIME_SECS
            }
            Some(date) if plausible_expiry(date, now) => date,
            Some(date) => {
                tracing::warn!(
                    user_id,
                    "the API answered an `expire_date` no service token can have ({}): the token is stored with \
                     an unknown expiry, which `--rotate-before` cannot rotate (`--rotate-tokens` does)",
                    describe_date(date)
                );
                UNKNOWN_EXPIRY
            }
        };
        Ok(IssuedToken {
            token_id: wire.token_id.unwrap_or_default(),
            user_id: wire.user_id.unwrap_or_else(|| user_id.to_string()),
            access_token: Secret::new(wire.access_token),
            expire_date,
        })
    }
}

/// `apply::Effects` for the client: its calls, with each `OzError` converted to the seam's own
/// kinds at this edge. `creating` says whether the request was a create (only a create can
/// find its object there already).
fn effect_error(e: OzError, creating: bool) -> EffectError {
    let kind = match &e {
        _ if creating && e.is_duplicate() => EffectErrorKind::AlreadyExists,
        OzError::Http { status: 500 | 503, .. } => EffectErrorKind::OutcomeUnknown { answered: true },
        _ if e.outcome_unknown() => EffectErrorKind::OutcomeUnknown { answered: false },
        OzError::Http { status, .. } if (400..500).contains(status) => EffectErrorKind::Refused,
        _ => EffectErrorKind::Failed,
    };
    EffectError::new(kind, e)
}

impl Effects for OzClient {
    async fn find_companies(&self, name: &str) -> Result<Vec<ObservedCompany>, EffectError> {
        OzClient::find_companies(self, name).await.map_err(|e| effect_error(e, false))
    }
    async fn find_user(&self, email: &Email) -> Result<Option<ObservedUser>, EffectError> {
        OzClient::find_user(self, email).await.map_err(|e| effect_error(e, false))
    }
    async fn create_company(&self, company: &NewCompany) -> Result<ObservedCompany, EffectError> {
        OzClient::create_company(self, company).await.map_err(|e| effect_error(e, true))
    }
    async fn update_company(&self, id: &str, patch: &CompanyPatch) -> Result<ObservedCompany, EffectError> {
        OzClient::update_company(self, id, patch).await.map_err(|e| effect_error(e, false))
    }
    async fn create_user(&self, user: &NewUser) -> Result<ObservedUser, EffectError> {
        OzClient::create_user(self, user).await.map_err(|e| effect_error(e, true))
    }
    async fn update_user(&self, id: &str, patch: &UserPatch) -> Result<ObservedUser, EffectError> {
        OzClient::update_user(self, id, patch).await.map_err(|e| effect_error(e, false))
    }
    async fn issue_token(&self, user_id: &str) -> Result<IssuedToken, EffectError> {
        OzClient::issue_token(self, user_id).await.map_err(|e| effect_error(e, false))
    }
    async fn delete_user(&self, id: &str) -> Result<(), EffectError> {
        OzClient::delete_user(self, id).await.map_err(|e| effect_error(e, false))
    }
}

/// How far in the past an `expire_date` may be when the token is issued: clocks disagree.
const EXPIRY_PAST_SLACK_SECS: f64 = 86_400.0;
/// How far in the future: a century (the API's own default lifetime is 5 years).
const EXPIRY_FUTURE_SECS: f64 = 100.0 * 365.25 * 86_400.0;

/// Whether a freshly issued token can expire at `date` (Unix seconds), `now` being now: finite,
/// and within [now − 1 day, now + 100 years].
fn plausible_expiry(date: f64, now: f64) -> bool {
    date.is_finite() && date >= now - EXPIRY_PAST_SLACK_SECS && date <= now + EXPIRY_FUTURE_SECS
}

/// An implausible `expire_date`, said in words (it is no secret; the words keep a huge number short).
fn describe_date(date: f64) -> String {
    if date.is_nan() {
        "not a number".into()
    } else if date.is_infinite() {
        "infinite".into()
    } else {
        format!("{date:e} seconds since 1970")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expiry_is_plausible_from_a_day_ago_to_a_century_ahead() {
        let now = 1_800_000_000.0;
        assert!(plausible_expiry(now + 5.0 * 365.0 * 86_400.0, now));
        assert!(plausible_expiry(now - 3600.0, now), "clocks disagree by an hour");
        assert!(!plausible_expiry(now - 2.0 * 86_400.0, now));
        assert!(!plausible_expiry(now + 101.0 * 365.25 * 86_400.0, now));
        for nonsense in [-1e308, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.0] {
            assert!(!plausible_expiry(nonsense, now), "{nonsense}");
        }
        assert_eq!(describe_date(-1e308), "-1e308 seconds since 1970");
        assert_eq!(describe_date(f64::NAN), "not a number");
    }
}
