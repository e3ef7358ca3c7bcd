//! `OzClient`: connect (log in, settle the dialect) and typed list calls.
//!
//! Cheap to clone: an `Arc` around the transport, plus the dialect (a `Copy` value decided
//! once at connect time). List calls page through `paging::Pager` (the remaining pages at once
//! when the server gives a total, in doubling windows when it does not), send the filters the API may honour and filter again
//! locally, because the API may ignore them.

use std::collections::HashSet;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::OzError;
use super::config::{ClientConfig, VersionSetting};
use super::dialect::{Dialect, Evidence};
use super::paging::{ListKind, Next, PageCap, PageItem, Pager, Refusal, Rounds};
use super::transport::{Call, Transport};
use super::wire::{Page, WireCompany, WireUser, parse_page};
use crate::model::{ApiVersion, Email, ObservedCompany, ObservedUser};

pub(super) const COMPANIES: &str = "/api/companies/";
pub(super) const USERS: &str = "/api/users/";

/// Filters of `list_users`; both optional, both applied locally as well.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserFilter {
    pub email: Option<Email>,
    pub company_id: Option<String>,
}

impl UserFilter {
    fn matches(&self, user: &ObservedUser) -> bool {
        self.email.as_ref().is_none_or(|e| *e == user.email)
            && self.company_id.as_ref().is_none_or(|c| user.company_id.as_deref() == Some(c.as_str()))
    }
}

/// A connected, logged-in client of one Oz API.
#[derive(Debug, Clone)]
pub struct OzClient {
    pub(super) transport: Arc<Transport>,
    pub(super) dialect: Dialect,
    /// The dialect was given (`--api-version 5|6`), not detected: what the API returns is
    /// checked against it, since a wrong one turns every service user into a conflict.
    fixed: bool,
    /// This view refuses every mutating request (`read_only()`), whatever the connection allows.
    read_only: bool,
}

impl OzClient {
    /// Build the HTTP client, log in, and fix the dialect (configured, or detected from the
    /// users the API returns; undecidable is a `Config` error asking for `--api-version`).
    pub async fn connect(config: ClientConfig) -> Result<OzClient, OzError> {
        let setting = config.api_version;
        let transport = Arc::new(Transport::new(config)?);
        let login_user = transport.login().await?;
        let dialect = match setting {
            VersionSetting::Fixed(version) => Dialect::of(version),
            VersionSetting::Auto => detect(&transport, login_user.as_ref()).await?,
        };
        let fixed = matches!(setting, VersionSetting::Fixed(_));
        let read_only = transport.config.read_only;
        Ok(OzClient { transport, dialect, fixed, read_only })
    }

    /// A view of this client (same connection and session) that refuses every mutating
    /// request before sending it: what planning runs through, also inside `apply`.
    #[must_use]
    pub fn read_only(&self) -> OzClient {
        OzClient { read_only: true, ..self.clone() }
    }

    /// Whether this client refuses mutating requests.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Send through the transport, refusing a mutation on a read-only view.
    pub(super) async fn send(&self, call: Call<'_>) -> Result<Value, OzError> {
        if self.read_only && call.method != reqwest::Method::GET {
            return Err(OzError::ReadOnly {
                method: call.method.to_string(),
                path: self.transport.where_(&call.path),
            });
        }
        self.transport.send(call).await
    }

    pub fn api_version(&self) -> ApiVersion {
        self.dialect.version()
    }

    /// Whether the dialect was detected (`auto`) rather than configured.
    pub fn api_version_detected(&self) -> bool {
        !self.fixed
    }

    /// The adaptive limit of requests in flight now (`--parallelism auto`), for a gauge; `None`
    /// with a fixed parallelism.
    pub fn concurrency_limit(&self) -> Option<usize> {
        self.transport.concurrency_limit()
    }

    /// Tell the client what is known of the server's page size: at most `n` items a page
    /// whatever `limit` asks (`ozform doctor`'s `page_size` finding), or `None` when it gives
    /// whole pages. A look-up then needs a second request only when its first page is full.
    pub fn know_page_cap(&self, cap: Option<usize>) {
        let cap = match cap {
            Some(n) if n < self.transport.config.page_size.max(1) => PageCap::At(n.max(1)),
            _ => PageCap::Whole,
        };
        self.transport.learn_page_cap(cap);
    }

    /// The API base URL, without a trailing `/`.
    pub fn api_url(&self) -> &str {
        &self.transport.api_url
    }

    /// Every live company (those `in_deletion` included).
    pub async fn list_companies(&self) -> Result<Vec<ObservedCompany>, OzError> {
        self.companies_named(None).await
    }

    /// Live companies, by name when given (sent as the `name` filter, checked locally).
    pub(super) async fn companies_named(&self, name: Option<&str>) -> Result<Vec<ObservedCompany>, OzError> {
        let filters: Vec<(&'static str, String)> =
            name.map(|n| ("name", n.to_string())).into_iter().collect();
        let mut companies = Vec::new();
        list(&self.transport, COMPANIES, "company_id", &filters, |items: Vec<WireCompany>| {
            let kept = items.into_iter().map(ObservedCompany::from);
            companies.extend(kept.filter(|c| name.is_none_or(|n| n == c.name)));
            Ok(())
        })
        .await?;
        Ok(companies)
    }

    /// Live users matching the filter (all users with `UserFilter::default()`), decoded page by
    /// page into `ObservedUser`s: no page's JSON outlives it.
    pub async fn list_users(&self, filter: &UserFilter) -> Result<Vec<ObservedUser>, OzError> {
        let mut filters = Vec::new();
        if let Some(email) = &filter.email {
            filters.push(("email", email.as_str().to_string()));
        }
        if let Some(company) = &filter.company_id {
            filters.push(("company_id", company.clone()));
        }
        let mut evidence = Evidence::default();
        let mut users = Vec::new();
        // One copy of each company id, shared by its users.
        let mut company_ids: HashSet<Arc<str>> = HashSet::new();
        list(&self.transport, USERS, "user_id", &filters, |items: Vec<WireUser>| {
            for mut wire in items {
                if self.fixed {
                    evidence.add_wire(&wire);
                }
                let company_id = wire.company_id.take().map(|id| intern(&mut company_ids, &id));
                let mut user = self.dialect.observed_user(wire);
                user.company_id = company_id;
                if filter.matches(&user) {
                    users.push(user);
                }
            }
            Ok(())
        })
        .await?;
        self.check_dialect(&evidence)?;
        users.shrink_to_fit();
        Ok(users)
    }

    /// With a configured dialect, refuse users that speak the other one: read with the wrong
    /// dialect every service user would look like a plain client, and the plan would show each
    /// as a conflict with the advice to remove it by hand. The error names the evidence.
    fn check_dialect(&self, evidence: &Evidence) -> Result<(), OzError> {
        if !self.fixed {
            return Ok(());
        }
        match evidence.decide().filter(|d| *d != self.dialect) {
            None => Ok(()),
            Some(seen) => Err(OzError::Config {
                message: format!(
                    "`--api-version {}` was given, but `{}` speaks API {}: {}",
                    self.dialect.version(),
                    self.transport.origin(),
                    seen.version(),
                    evidence.describe()
                ),
                help: Some(format!(
                    "pass `--api-version {}` or `--api-version auto` (or set `OZ_API_VERSION`); nothing was changed",
                    seen.version()
                )),
            }),
        }
    }

    pub(super) fn decode_user(
        &self,
        method: &str,
        path: &str,
        value: Value,
    ) -> Result<ObservedUser, OzError> {
        let wire = WireUser::from_value(value).map_err(|reason| OzError::Decode {
            method: method.into(),
            path: self.transport.where_(path),
            reason,
        })?;
        Ok(self.dialect.observed_user(wire))
    }
}

/// The shared copy of `text` in `pool`, made on first use.
fn intern(pool: &mut HashSet<Arc<str>>, text: &str) -> Arc<str> {
    if let Some(shared) = pool.get(text) {
        return Arc::clone(shared);
    }
    let shared: Arc<str> = Arc::from(text);
    pool.insert(Arc::clone(&shared));
    shared
}

/// Every item of a list endpoint, handed to `take` page by page in list order (each page's
/// new items once). Once a page says how many items there are, the offsets of the remaining
/// pages are known and they are asked for at once, at most `max_in_flight` at a time, and
/// taken in offset order. While the server gives no total, the next pages are asked for in
/// windows that double while every page comes back full (1, 2, 4, … up to `max_in_flight` at
/// once): a list of `p` pages takes about `log2 p` round trips before the window is full
/// instead of `p`, at the cost of at most `max_in_flight - 1` requests past its end. A list
/// filtered by a natural key (`name`, `email`) is a look-up: see `paging` for when its first
/// page is enough.
pub(super) async fn list<T: PageItem + DeserializeOwned>(
    transport: &Transport,
    path: &str,
    id_key: &'static str,
    filters: &[(&'static str, String)],
    mut take: impl FnMut(Vec<T>) -> Result<(), OzError>,
) -> Result<(), OzError> {
    list_pages(transport, path, id_key, filters, true, |items| take(items).map(|()| false)).await
}

/// Page through a list endpoint, one page after another, until `take` says after a page that
/// the items so far are enough (or the list ends).
async fn list_until<T: PageItem + DeserializeOwned>(
    transport: &Transport,
    path: &str,
    id_key: &'static str,
    filters: &[(&'static str, String)],
    take: impl FnMut(Vec<T>) -> Result<bool, OzError>,
) -> Result<(), OzError> {
    list_pages(transport, path, id_key, filters, false, take).await
}

async fn list_pages<T: PageItem + DeserializeOwned>(
    transport: &Transport,
    path: &str,
    id_key: &'static str,
    filters: &[(&'static str, String)],
    ahead: bool,
    mut take: impl FnMut(Vec<T>) -> Result<bool, OzError>,
) -> Result<(), OzError> {
    let kind = ListKind::of(filters);
    let mut pager = Pager::new(id_key, transport.config.page_size.max(1), kind, transport.page_cap())
        .max_objects(transport.config.max_objects);
    let mut rounds = Rounds::new(transport.config.max_in_flight, ahead);
    let mut offsets = Rounds::first();
    loop {
        // The pages of one round are sent together (the transport bounds how many are in
        // flight) and taken in offset order. Every one is awaited, even those after the page
        // that ends the list: this costs no time, and the number of requests does not depend
        // on which answer came first. An error past the end of the list is no error.
        let answers =
            futures::future::join_all(offsets.iter().map(|&offset| async move {
                (offset, fetch_page::<T>(transport, path, filters, offset).await)
            }))
            .await;
        let mut last = None;
        for (offset, page) in answers {
            let page = page?;
            let (page_len, total) = (page.items.len(), page.total);
            let accepted = accept(transport, path, &mut pager, offset, page);
            transport.learn_page_cap(pager.cap());
            let (fresh, next) = accepted?;
            let enough = take(fresh)?;
            if next == Next::Done || enough {
                return Ok(());
            }
            last = Some((page_len, total));
        }
        // A round has at least one page, and one that ends the list returned above.
        let Some((page_len, total)) = last else { return Ok(()) };
        offsets = rounds.next(pager.offset(), page_len, total);
    }
}

async fn fetch_page<T: DeserializeOwned>(
    transport: &Transport,
    path: &str,
    filters: &[(&'static str, String)],
    offset: usize,
) -> Result<Page<T>, OzError> {
    let limit = transport.config.page_size.max(1);
    let mut call = Call::get(path).query("offset", offset.to_string()).query("limit", limit.to_string());
    for (k, v) in filters {
        call = call.query(k, v.clone());
    }
    let (body, answered) = transport.send_raw(call).await?;
    parse_page(&body).map_err(|reason| OzError::Decode {
        method: "GET".into(),
        path: transport.where_(&answered),
        reason,
    })
}

fn accept<T: PageItem>(
    transport: &Transport,
    path: &str,
    pager: &mut Pager,
    offset: usize,
    page: Page<T>,
) -> Result<(Vec<T>, Next), OzError> {
    pager.accept_at(offset, page).map_err(|refusal| match refusal {
        Refusal::Untrusted(reason) => OzError::Paging { path: transport.where_(path), reason },
        Refusal::TooMany(reason) => OzError::Limit {
            method: "GET".into(),
            path: transport.where_(path),
            reason,
            help: Some(
                "raise `--max-objects` if the installation really holds that many; otherwise the API, \
                 or a proxy in front of it, keeps sending pages past the end of the list"
                    .into(),
            ),
        },
    })
}

/// Decide the dialect from the login answer's user and the users list (paged only until the
/// evidence decides).
async fn detect(transport: &Transport, login_user: Option<&Value>) -> Result<Dialect, OzError> {
    let mut evidence = Evidence::default();
    if let Some(user) = login_user {
        evidence.add(user);
    }
    if evidence.decide().is_none() {
        list_until(transport, USERS, "user_id", &[], |users: Vec<WireUser>| {
            for user in &users {
                evidence.add_wire(user);
            }
            Ok(evidence.decide().is_some())
        })
        .await?;
    }
    let decided = evidence.decide();
    match decided {
        Some(dialect) => {
            tracing::info!(
                api_version = dialect.version().number(),
                host = transport.origin(),
                "detected API {} from the permission spelling and user types the API returns",
                dialect.version()
            );
            Ok(dialect)
        }
        None => Err(OzError::Config {
            message: format!(
                "cannot tell whether `{}` speaks API 5 or API 6: its users show no permission flags or service users to decide by",
                transport.origin()
            ),
            help: Some("pass `--api-version 5` or `--api-version 6` (or set `OZ_API_VERSION`)".into()),
        }),
    }
}
