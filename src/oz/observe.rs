//! `observe`: the live state as a dialect-neutral `model::Observed`.

use futures::future::try_join_all;

use super::OzError;
use super::client::{OzClient, UserFilter};
use crate::model::Observed;

impl OzClient {
    /// All companies and users, by pages. With `companies` non-empty: only the companies of
    /// those names and their users (listed per company with the `company_id` filter, checked
    /// locally).
    pub async fn observe(&self, companies: &[String]) -> Result<Observed, OzError> {
        let (companies, users) = if companies.is_empty() {
            let everyone = UserFilter::default();
            tokio::try_join!(self.list_companies(), self.list_users(&everyone))?
        } else {
            let chosen: Vec<_> =
                self.list_companies().await?.into_iter().filter(|c| companies.contains(&c.name)).collect();
            let filters: Vec<UserFilter> = chosen
                .iter()
                .map(|c| UserFilter { company_id: Some(c.id.clone()), ..UserFilter::default() })
                .collect();
            let per_company = try_join_all(filters.iter().map(|f| self.list_users(f))).await?;
            (chosen, per_company.into_iter().flatten().collect())
        };
        Ok(Observed {
            api_url: self.api_url().to_string(),
            api_version: self.api_version(),
            api_version_detected: self.api_version_detected(),
            companies,
            users,
        })
    }
}
