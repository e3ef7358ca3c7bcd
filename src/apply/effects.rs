//! `Effects`: everything apply may do to the world, with its own error kinds. The Oz client
//! implements it (`oz/effects.rs` converts its errors at that edge); executor tests use an
//! in-memory fake (`tests/testsuite/common`). One conformance suite
//! (`tests/testsuite/effects_contract.rs`) runs the same cases against both: what these docs
//! promise is asserted there.

use std::fmt;
use std::future::Future;

use crate::model::{
    CompanyPatch, Email, IssuedToken, NewCompany, NewUser, ObservedCompany, ObservedUser, UserPatch,
};

pub trait Effects: Send + Sync + 'static {
    /// Live companies with exactly this name that are not `in_deletion` (more than one is ambiguous).
    fn find_companies(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Vec<ObservedCompany>, EffectError>> + Send;
    /// The live user with this email (case-insensitive), if any.
    fn find_user(
        &self,
        email: &Email,
    ) -> impl Future<Output = Result<Option<ObservedUser>, EffectError>> + Send;
    fn create_company(
        &self,
        company: &NewCompany,
    ) -> impl Future<Output = Result<ObservedCompany, EffectError>> + Send;
    fn update_company(
        &self,
        id: &str,
        patch: &CompanyPatch,
    ) -> impl Future<Output = Result<ObservedCompany, EffectError>> + Send;
    fn create_user(&self, user: &NewUser) -> impl Future<Output = Result<ObservedUser, EffectError>> + Send;
    fn update_user(
        &self,
        id: &str,
        patch: &UserPatch,
    ) -> impl Future<Output = Result<ObservedUser, EffectError>> + Send;
    fn issue_token(&self, user_id: &str) -> impl Future<Output = Result<IssuedToken, EffectError>> + Send;
    /// Delete the live user `id`. A user that is already gone counts as deleted.
    fn delete_user(&self, id: &str) -> impl Future<Output = Result<(), EffectError>> + Send;
}

/// What a failed effect means for what apply does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EffectErrorKind {
    /// The API refused the request: nothing happened.
    Refused,
    /// A create found its object there already (someone, or an earlier attempt, made it). The
    /// API answers a duplicate as it answers any invalid value (400 with `error_code` 3 or 4,
    /// or 409): a create of a company or user answered so is this kind, read back to tell,
    /// even when the value at fault was another (a user's company that is not live).
    AlreadyExists,
    /// The request may have taken effect. `answered`: the API itself answered that it failed
    /// (500, 503), so it is done with the request and a read-back is the whole truth; otherwise
    /// (no answer, a gateway's 502/504, an unreadable answer) it may still be running.
    OutcomeUnknown { answered: bool },
    /// The request could not be made (nothing was sent, or it is not known to be safe to ask).
    Failed,
}

/// A failed effect: its kind, and a message that names the request (method, path, status,
/// the API's `error_code` and message) and never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct EffectError {
    pub kind: EffectErrorKind,
    pub message: String,
}

impl EffectError {
    pub fn new(kind: EffectErrorKind, message: impl fmt::Display) -> Self {
        Self { kind, message: message.to_string() }
    }

    /// The request may have taken effect: read back before doing anything else.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self.kind, EffectErrorKind::OutcomeUnknown { .. })
    }
}
