//! The request observer: the seam through which the client tells whoever measures it (the
//! metrics of `reconcile`, `plan --metrics-file`) about every HTTP attempt it makes: the route,
//! the method, the status and how long it took. The transport calls it once per attempt (a
//! retried request is several attempts, each counted), after the answer was read.
//!
//! Invariant: a route is the documented path template of the call (`/api/users/{user_id}`), one
//! of the closed set `Route`, never the path itself: no id and no email can reach a label made
//! from it. A path the table does not know is `other`.

use std::time::Duration;

/// The documented path template of a request, from a closed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Route {
    Auth,
    Refresh,
    /// API 5: `POST /api/authorize/service_token` with the user in the body.
    ServiceToken,
    /// API 6: `POST /api/authorize/service_token/{user_id}`.
    ServiceTokenOfUser,
    Companies,
    Company,
    Users,
    User,
    /// Any other path (none that the client sends today).
    Other,
}

impl Route {
    /// Every route, in the order of `as_str`'s table.
    pub const ALL: [Route; 9] = [
        Route::Auth,
        Route::Refresh,
        Route::ServiceToken,
        Route::ServiceTokenOfUser,
        Route::Companies,
        Route::Company,
        Route::Users,
        Route::User,
        Route::Other,
    ];

    /// The route of a path as the client sends it (either trailing-slash form; no query).
    pub fn of(path: &str) -> Route {
        let path = path.trim_end_matches('/');
        let mut segments = path.strip_prefix("/api/").unwrap_or_default().split('/');
        let first = segments.next().unwrap_or_default();
        let second = segments.next();
        let third = segments.next();
        let rest = segments.next();
        let named = |s: Option<&str>| s.is_some_and(|s| !s.is_empty());
        match (first, second, third, rest) {
            ("authorize", Some("auth"), None, None) => Route::Auth,
            ("authorize", Some("refresh"), None, None) => Route::Refresh,
            ("authorize", Some("service_token"), None, None) => Route::ServiceToken,
            ("authorize", Some("service_token"), id, None) if named(id) => Route::ServiceTokenOfUser,
            ("companies", None, None, None) => Route::Companies,
            ("companies", id, None, None) if named(id) => Route::Company,
            ("users", None, None, None) => Route::Users,
            ("users", id, None, None) if named(id) => Route::User,
            _ => Route::Other,
        }
    }

    /// The template, as a metric label shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Auth => "/api/authorize/auth",
            Route::Refresh => "/api/authorize/refresh",
            Route::ServiceToken => "/api/authorize/service_token",
            Route::ServiceTokenOfUser => "/api/authorize/service_token/{user_id}",
            Route::Companies => "/api/companies/",
            Route::Company => "/api/companies/{company_id}",
            Route::Users => "/api/users/",
            Route::User => "/api/users/{user_id}",
            Route::Other => "other",
        }
    }
}

/// One HTTP attempt, as the observer is told it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    pub route: Route,
    /// `GET`, `POST`, `PATCH`, `DELETE`.
    pub method: &'static str,
    /// The answer's status; `None` when there was none that could be read (no connection, a
    /// timeout, a dropped connection, an answer past `--max-response-bytes`).
    pub status: Option<u16>,
    pub elapsed: Duration,
}

/// Told about every HTTP attempt of a client (`ClientConfig::observer`). Called on the task
/// that made the request: it must not block.
pub trait RequestObserver: Send + Sync + std::fmt::Debug {
    fn attempt(&self, attempt: &Attempt);

    /// The adaptive limit of requests in flight (`--parallelism auto`, `oz::limiter`) now: told
    /// when the client is made and after every attempt (it may be unchanged). Never told with
    /// a fixed parallelism.
    fn concurrency_limit(&self, limit: usize) {
        let _ = limit;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_is_the_template_of_its_path_and_never_holds_an_id() {
        let id = "0b5c7f2e-9d1a-4c3b-8e6f-1a2b3c4d5e6f";
        let cases = [
            ("/api/authorize/auth", Route::Auth),
            ("/api/authorize/refresh", Route::Refresh),
            ("/api/authorize/service_token", Route::ServiceToken),
            (&format!("/api/authorize/service_token/{id}") as &str, Route::ServiceTokenOfUser),
            ("/api/companies/", Route::Companies),
            ("/api/companies", Route::Companies),
            (&format!("/api/companies/{id}"), Route::Company),
            ("/api/users/", Route::Users),
            (&format!("/api/users/{id}/"), Route::User),
            ("/api/users/a@b.example", Route::User),
            (&format!("/api/users/{id}/meta_data"), Route::Other),
            ("/api/folders/", Route::Other),
            ("/elsewhere", Route::Other),
        ];
        for (path, route) in cases {
            assert_eq!(Route::of(path), route, "{path}");
            assert!(!route.as_str().contains(id) && !route.as_str().contains('@'), "{path}");
        }
        assert_eq!(
            Route::ALL.len(),
            Route::ALL.iter().map(|r| r.as_str()).collect::<std::collections::BTreeSet<_>>().len()
        );
    }
}
