//! `observe`: the live state as a dialect-neutral `model::Observed`.

use std::collections::HashSet;

use futures::future::try_join_all;

use super::OzError;
use super::client::{OzClient, UserFilter};
use crate::model::Observed;

impl OzClient {
    /// All companies and users, by pages. With `companies` non-empty: only the companies of
    /// those names and their users (listed per company with the `company_id` filter, checked
    /// locally).
    pub async fn observe(&self, companies: &[String]) -> Result<Observed, OzError> {
        self.observe_for(companies, &HashSet::new()).await
    }

    /// As `observe`, for a plan of `companies` whose manifests declare the users `declared`
    /// (lower-cased emails, `Email::key`). An email is unique across companies, so a declared
    /// user missing from its company's users may live in another company: then every user is
    /// listed once more, and the declared ones found elsewhere are added, with their
    /// companies. The plan then shows the conflict an unfiltered plan shows, instead of a
    /// create the API can only refuse. That costs one unfiltered users listing, and only when
    /// some declared user is missing.
    pub async fn observe_for(
        &self,
        companies: &[String],
        declared: &HashSet<String>,
    ) -> Result<Observed, OzError> {
        let (companies, users) = if companies.is_empty() {
            let everyone = UserFilter::default();
            tokio::try_join!(self.list_companies(), self.list_users(&everyone))?
        } else {
            let all = self.list_companies().await?;
            let mut chosen: Vec<_> = all.iter().filter(|c| companies.contains(&c.name)).cloned().collect();
            let filters: Vec<UserFilter> = chosen
                .iter()
                .map(|c| UserFilter { company_id: Some(c.id.clone()), ..UserFilter::default() })
                .collect();
            let per_company = try_join_all(filters.iter().map(|f| self.list_users(f))).await?;
            let mut users: Vec<_> = per_company.into_iter().flatten().collect();
            let present: HashSet<String> = users.iter().map(|u| u.email.key()).collect();
            if declared.iter().any(|email| !present.contains(email)) {
                let elsewhere: Vec<_> = self
                    .list_users(&UserFilter::default())
                    .await?
                    .into_iter()
                    .filter(|u| {
                        let key = u.email.key();
                        declared.contains(&key) && !present.contains(&key)
                    })
                    .collect();
                let theirs: HashSet<&str> =
                    elsewhere.iter().filter_map(|u| u.company_id.as_deref()).collect();
                // Not a chosen company: its users would have been listed with it.
                chosen.extend(
                    all.iter()
                        .filter(|c| theirs.contains(c.id.as_str()) && !companies.contains(&c.name))
                        .cloned(),
                );
                users.extend(elsewhere);
            }
            (chosen, users)
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
