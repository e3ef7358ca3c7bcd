//! The writes `OzClient` can make (and the lookups by natural key that go with them), as
//! inherent methods with the client's own `OzError`; `apply::Effects` for `OzClient` wraps them,
//! converting each error to the seam's own kinds.
//!
//! Creates are `Call::create` (never blindly re-sent: an error with `outcome_unknown()` tells
//! apply to read back with `find_*`). Updates are `PATCH` requests of the changed fields only; an answer
//! without a body is followed by a GET of the object.

use serde_json::Value;

use super::OzError;
use super::client::{COMPANIES, OzClient, USERS, UserFilter};
use super::transport::Call;
use super::wire::{WireCompany, WireServiceToken, company_patch_body, new_company_body};
use crate::apply::{EffectError, EffectErrorKind, Effects};
use crate::model::{
    CompanyPatch, Email, IssuedToken, NewCompany, NewUser, ObservedCompany, ObservedUser, UserPatch,
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
        let expire_date = wire.expire_date.unwrap_or_else(|| {
            tracing::warn!(user_id, "the API did not say when the service token expires: assuming 5 years");
            crate::model::now_epoch() + DEFAULT_TOKEN_LIFETIME_SECS
        });
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
