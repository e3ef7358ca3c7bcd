//! `Effects`: everything apply may do to the world. Implemented by `oz::OzClient` and by an
//! in-memory fake for executor tests.

use std::future::Future;

use crate::model::{
    CompanyPatch, Email, IssuedToken, NewCompany, NewUser, ObservedCompany, ObservedUser, UserPatch,
};
use crate::oz::OzError;

pub trait Effects: Send + Sync + 'static {
    /// Live companies with exactly this name that are not `in_deletion` (more than one is ambiguous).
    fn find_companies(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Vec<ObservedCompany>, OzError>> + Send;
    /// The live user with this email (case-insensitive), if any.
    fn find_user(&self, email: &Email) -> impl Future<Output = Result<Option<ObservedUser>, OzError>> + Send;
    fn create_company(
        &self,
        company: &NewCompany,
    ) -> impl Future<Output = Result<ObservedCompany, OzError>> + Send;
    fn update_company(
        &self,
        id: &str,
        patch: &CompanyPatch,
    ) -> impl Future<Output = Result<ObservedCompany, OzError>> + Send;
    fn create_user(&self, user: &NewUser) -> impl Future<Output = Result<ObservedUser, OzError>> + Send;
    fn update_user(
        &self,
        id: &str,
        patch: &UserPatch,
    ) -> impl Future<Output = Result<ObservedUser, OzError>> + Send;
    fn issue_token(&self, user_id: &str) -> impl Future<Output = Result<IssuedToken, OzError>> + Send;
}
