//! The CI recipes' world: `contrib/ci/ozform-ci.sh` run for real (`script`), and `Forge`, a fake
//! of the parts of the GitHub and GitLab REST APIs the script uses, served by axum on loopback:
//! the merged pull (merge) requests of a commit with their labels, comments (notes) paged as the
//! real APIs page them (30 or 20 by default, at most 100), issues, and on GitLab the token's
//! user. Every request is recorded (method, path, query, body) and must carry the forge's
//! token, or it is answered 401. What the script posts is authored by the CI's account (`BOT`);
//! tests add comments by other people with `comment`.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use serde_json::{Value, json};

use super::root;
use super::world::{World, canary};

const BIN: &str = env!("CARGO_BIN_EXE_ozform");
pub const SCRIPT: &str = "contrib/ci/ozform-ci.sh";

/// The variables of the CI systems and of the script that a run must not inherit.
const CI_VARIABLES: [&str; 19] = [
    "GITHUB_TOKEN",
    "GITHUB_API_URL",
    "GITHUB_REPOSITORY",
    "GITHUB_SHA",
    "OZFORM_CI_PR",
    "OZFORM_GITLAB_TOKEN",
    "CI_API_V4_URL",
    "CI_PROJECT_ID",
    "CI_COMMIT_SHA",
    "CI_MERGE_REQUEST_IID",
    "OZFORM_CI_OUT",
    "OZFORM_CI_MAX_BYTES",
    "OZFORM_CI_REMOVALS_LABEL",
    "OZFORM_CI_COMMENTER",
    "OZFORM_CI_NAME",
    "OZ_INSTALLATION",
    "OZ_SECRETS_DIR",
    "OZ_VAR_ENV",
    "OZFORM",
];

/// `contrib/ci/ozform-ci.sh ARGS…` from the repository root, with the world's connection and
/// canary passwords, the token store in the world's temp dir, its output in `<world>/ci`, and
/// `env` on top; what it printed joins the world's canary scan. Returns the exit code and
/// everything it printed.
pub async fn script(world: &World, args: &[&str], env: &[(&str, String)]) -> (i32, String) {
    let mut command = Command::new(root().join(SCRIPT));
    command.args(args).current_dir(root());
    for var in super::OZFORM_VARIABLES.iter().chain(&CI_VARIABLES) {
        command.env_remove(var);
    }
    command
        .env("NO_COLOR", "1")
        .env("OZFORM", BIN)
        .env("OZFORM_CI_OUT", world.path("ci"))
        .env("OZ_API_URL", world.emu.url())
        .env("OZ_ADMIN_EMAIL", world.emu.admin_email())
        .env("OZ_ADMIN_PASSWORD", &world.admin_password)
        .env("OZ_TOKEN_DIR", world.token_dir())
        // As CI passes a variable nobody set: the script must not hand it to ozform.
        .env("OZ_TOKEN_STORE", "");
    for (name, value) in &world.passwords {
        command.env(name, value);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    let out = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    world.printed.lock().unwrap().push((stdout.clone(), stderr.clone()));
    world.harvest_tokens();
    (out.status.code().unwrap_or(-1), format!("{stdout}{stderr}"))
}

/// A file the script wrote into `<world>/ci`.
pub fn file(world: &World, name: &str) -> String {
    std::fs::read_to_string(world.path("ci").join(name)).unwrap_or_else(|e| panic!("ci/{name}: {e}"))
}

/// Which forge's API the fake speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    GitHub,
    GitLab,
}

/// The CI's account: what the script posts is authored by it.
pub const BOT: &str = "ozform-ci-bot";
const REPOSITORY: &str = "acme/manifests";
const PROJECT: &str = "42";

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: String,
}

impl Recorded {
    /// `"METHOD /path"`.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

#[derive(Debug, Clone)]
pub struct Comment {
    pub id: u64,
    pub author: String,
    pub body: String,
}

#[derive(Debug, Clone)]
pub struct Issue {
    pub number: u64,
    pub title: String,
    pub body: String,
    pub open: bool,
    pub author: String,
    /// GitHub lists pull requests among issues; the script must skip them.
    pub pull_request: bool,
}

#[derive(Debug)]
struct MergedRequest {
    number: u64,
    sha: String,
    merged: bool,
    labels: Vec<String>,
}

#[derive(Debug)]
struct Data {
    flavor: Flavor,
    token: String,
    requests: Vec<Recorded>,
    unauthorized: usize,
    merged: Vec<MergedRequest>,
    /// Comments by pull request or issue number (GitHub numbers both alike), oldest first.
    threads: BTreeMap<u64, Vec<Comment>>,
    issues: Vec<Issue>,
    next_id: u64,
}

type Shared = Arc<Mutex<Data>>;

/// The fake forge; cheap to clone (the clones share the data).
#[derive(Clone)]
pub struct Forge {
    data: Shared,
    url: String,
}

impl Forge {
    /// Start the fake of `flavor` on `127.0.0.1:0`, on the test's runtime; its token is a canary
    /// added to the world's secrets (it may reach only the forge).
    pub async fn start(flavor: Flavor, world: &World) -> Self {
        let token = canary("forge-token");
        world.other_secrets.lock().unwrap().push(token.clone());
        let data = Arc::new(Mutex::new(Data {
            flavor,
            token,
            requests: Vec::new(),
            unauthorized: 0,
            merged: Vec::new(),
            threads: BTreeMap::new(),
            issues: Vec::new(),
            next_id: 1000,
        }));
        let router = match flavor {
            Flavor::GitHub => Router::new()
                .route("/repos/{owner}/{repo}/commits/{sha}/pulls", get(commit_requests))
                .route("/repos/{owner}/{repo}/issues/{number}/comments", get(list_comments).post(add_comment))
                .route("/repos/{owner}/{repo}/issues/comments/{id}", patch(edit_github_comment))
                .route("/repos/{owner}/{repo}/issues", get(list_issues).post(open_issue))
                .route("/repos/{owner}/{repo}/issues/{number}", patch(edit_issue)),
            Flavor::GitLab => Router::new()
                .route("/api/v4/user", get(token_user))
                .route(
                    "/api/v4/projects/{project}/repository/commits/{sha}/merge_requests",
                    get(commit_requests),
                )
                .route(
                    "/api/v4/projects/{project}/merge_requests/{number}/notes",
                    get(list_comments).post(add_comment),
                )
                .route("/api/v4/projects/{project}/merge_requests/{number}/notes/{id}", put(edit_gitlab_note))
                .route("/api/v4/projects/{project}/issues", get(list_issues).post(open_issue))
                .route("/api/v4/projects/{project}/issues/{number}", put(edit_issue))
                .route("/api/v4/projects/{project}/issues/{number}/notes", post(add_comment)),
        };
        let router = router
            .fallback(|| async { (StatusCode::NOT_FOUND, axum::Json(json!({"message": "Not Found"}))) })
            .layer(middleware::from_fn_with_state(Arc::clone(&data), record_and_authorize))
            .with_state(Arc::clone(&data));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self { data, url }
    }

    fn data(&self) -> MutexGuard<'_, Data> {
        self.data.lock().unwrap()
    }

    pub fn flavor(&self) -> Flavor {
        self.data().flavor
    }

    /// The variables a CI job of this forge sets for the script: the API, the token, the
    /// repository or project, the commit `sha` and the pull (merge) request `number`.
    pub fn env(&self, sha: &str, number: u64) -> Vec<(&'static str, String)> {
        let token = self.data().token.clone();
        match self.flavor() {
            Flavor::GitHub => vec![
                ("GITHUB_API_URL", self.url.clone()),
                ("GITHUB_TOKEN", token),
                ("GITHUB_REPOSITORY", REPOSITORY.to_string()),
                ("GITHUB_SHA", sha.to_string()),
                ("OZFORM_CI_PR", number.to_string()),
                // Actions' account is `github-actions[bot]`; here, the fake's.
                ("OZFORM_CI_COMMENTER", BOT.to_string()),
            ],
            Flavor::GitLab => vec![
                ("CI_API_V4_URL", format!("{}/api/v4", self.url)),
                ("OZFORM_GITLAB_TOKEN", token),
                ("CI_PROJECT_ID", PROJECT.to_string()),
                ("CI_COMMIT_SHA", sha.to_string()),
                ("CI_MERGE_REQUEST_IID", number.to_string()),
            ],
        }
    }

    /// The forge's name, as the script's commands take it.
    pub fn name(&self) -> &'static str {
        match self.flavor() {
            Flavor::GitHub => "github",
            Flavor::GitLab => "gitlab",
        }
    }

    /// The prefix of the repository's (project's) paths.
    pub fn prefix(&self) -> String {
        match self.flavor() {
            Flavor::GitHub => format!("/repos/{REPOSITORY}"),
            Flavor::GitLab => format!("/api/v4/projects/{PROJECT}"),
        }
    }

    /// Pull (merge) request `number`, merged as commit `sha` with `labels`.
    pub fn merged(&self, number: u64, sha: &str, labels: &[&str]) {
        self.data().merged.push(MergedRequest {
            number,
            sha: sha.to_string(),
            merged: true,
            labels: labels.iter().map(ToString::to_string).collect(),
        });
    }

    /// An open pull (merge) request `number` that also holds commit `sha` (the script must
    /// take the merged one).
    pub fn open_request_with(&self, number: u64, sha: &str) {
        self.data().merged.push(MergedRequest {
            number,
            sha: sha.to_string(),
            merged: false,
            labels: vec![],
        });
    }

    pub fn add_label(&self, number: u64, label: &str) {
        for request in self.data().merged.iter_mut().filter(|r| r.number == number) {
            request.labels.push(label.to_string());
        }
    }

    /// A comment by `author` on pull request or issue `number`.
    pub fn comment(&self, number: u64, author: &str, body: &str) {
        let mut data = self.data();
        let id = data.next_id;
        data.next_id += 1;
        data.threads.entry(number).or_default().push(Comment {
            id,
            author: author.into(),
            body: body.into(),
        });
    }

    /// An issue by `author`.
    pub fn issue(&self, author: &str, title: &str, pull_request: bool) -> u64 {
        let mut data = self.data();
        let number = data.next_id;
        data.next_id += 1;
        data.issues.push(Issue {
            number,
            title: title.into(),
            body: "by hand".into(),
            open: true,
            author: author.into(),
            pull_request,
        });
        number
    }

    pub fn comments(&self, number: u64) -> Vec<Comment> {
        self.data().threads.get(&number).cloned().unwrap_or_default()
    }

    /// The comments on `number` by the CI's account.
    pub fn bot_comments(&self, number: u64) -> Vec<String> {
        self.comments(number).into_iter().filter(|c| c.author == BOT).map(|c| c.body).collect()
    }

    pub fn issues(&self) -> Vec<Issue> {
        self.data().issues.clone()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.data().requests.clone()
    }

    /// `"METHOD /path"` of every request so far, the repository's prefix cut to `…`.
    pub fn lines(&self) -> Vec<String> {
        let prefix = self.prefix();
        self.requests().iter().map(|r| r.line().replace(&prefix, "…")).collect()
    }

    /// Requests that came without the token (answered 401).
    pub fn unauthorized(&self) -> usize {
        self.data().unauthorized
    }
}

/// Record every request; answer 401 unless it carries the forge's token as the forge expects it.
async fn record_and_authorize(State(data): State<Shared>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 16 << 20).await.unwrap_or_default();
    let authorized = {
        let mut data = data.lock().unwrap();
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let authorized = match data.flavor {
            Flavor::GitHub => header("authorization") == Some(format!("Bearer {}", data.token)),
            Flavor::GitLab => header("private-token").as_ref() == Some(&data.token),
        };
        data.requests.push(Recorded {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().unwrap_or_default().to_string(),
            body: String::from_utf8_lossy(&bytes).into_owned(),
        });
        if !authorized {
            data.unauthorized += 1;
        }
        authorized
    };
    if !authorized {
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({"message": "401 Unauthorized"})))
            .into_response();
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await
}

/// `page` and `per_page` as both APIs take them; each has its own default page size.
#[derive(Debug, serde::Deserialize)]
struct Listing {
    page: Option<usize>,
    per_page: Option<usize>,
    state: Option<String>,
    search: Option<String>,
}

fn page_of<T: Clone>(flavor: Flavor, items: &[T], listing: &Listing) -> Vec<T> {
    let default = if flavor == Flavor::GitHub { 30 } else { 20 };
    let size = listing.per_page.unwrap_or(default).clamp(1, 100);
    let page = listing.page.unwrap_or(1).max(1);
    items.iter().skip((page - 1) * size).take(size).cloned().collect()
}

fn comment_json(flavor: Flavor, comment: &Comment) -> Value {
    match flavor {
        Flavor::GitHub => json!({"id": comment.id, "body": comment.body, "user": {"login": comment.author}}),
        Flavor::GitLab => {
            json!({"id": comment.id, "body": comment.body, "author": {"username": comment.author}, "system": false})
        }
    }
}

fn issue_json(flavor: Flavor, issue: &Issue) -> Value {
    match flavor {
        Flavor::GitHub => {
            let mut value = json!({
                "number": issue.number, "title": issue.title, "body": issue.body,
                "state": if issue.open { "open" } else { "closed" }, "user": {"login": issue.author},
            });
            if issue.pull_request {
                value["pull_request"] = json!({"url": "…"});
            }
            value
        }
        Flavor::GitLab => json!({
            "iid": issue.number, "title": issue.title, "description": issue.body,
            "state": if issue.open { "opened" } else { "closed" }, "author": {"username": issue.author},
        }),
    }
}

/// The JSON body of a request; `None` when it is not JSON (answered 400).
fn body_json(body: &Bytes) -> Option<Value> {
    serde_json::from_slice(body).ok()
}

fn bad_request() -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(json!({"message": "Problems parsing JSON"}))).into_response()
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, axum::Json(json!({"message": "Not Found"}))).into_response()
}

async fn token_user() -> axum::Json<Value> {
    axum::Json(json!({"id": 7, "username": BOT}))
}

async fn commit_requests(
    State(data): State<Shared>,
    Path(params): Path<BTreeMap<String, String>>,
) -> axum::Json<Value> {
    let data = data.lock().unwrap();
    let sha = &params["sha"];
    let requests = data.merged.iter().filter(|r| &r.sha == sha).map(|r| match data.flavor {
        Flavor::GitHub => json!({
            "number": r.number,
            "merged_at": if r.merged { json!("2026-12-07T10:00:00Z") } else { Value::Null },
            "labels": r.labels.iter().map(|name| json!({"name": name})).collect::<Vec<_>>(),
        }),
        Flavor::GitLab => json!({
            "iid": r.number,
            "state": if r.merged { "merged" } else { "opened" },
            "labels": r.labels,
        }),
    });
    axum::Json(Value::Array(requests.collect()))
}

async fn list_comments(
    State(data): State<Shared>,
    Path(params): Path<BTreeMap<String, String>>,
    Query(listing): Query<Listing>,
) -> Response {
    let data = data.lock().unwrap();
    let Ok(number) = params["number"].parse::<u64>() else { return not_found() };
    let thread = data.threads.get(&number).cloned().unwrap_or_default();
    let page = page_of(data.flavor, &thread, &listing);
    axum::Json(Value::Array(page.iter().map(|c| comment_json(data.flavor, c)).collect())).into_response()
}

async fn add_comment(
    State(data): State<Shared>,
    Path(params): Path<BTreeMap<String, String>>,
    body: Bytes,
) -> Response {
    let Some(body) = body_json(&body) else { return bad_request() };
    let Some(text) = body["body"].as_str() else { return StatusCode::UNPROCESSABLE_ENTITY.into_response() };
    let Ok(number) = params["number"].parse::<u64>() else { return not_found() };
    let mut data = data.lock().unwrap();
    let id = data.next_id;
    data.next_id += 1;
    let comment = Comment { id, author: BOT.into(), body: text.into() };
    let answer = comment_json(data.flavor, &comment);
    data.threads.entry(number).or_default().push(comment);
    (StatusCode::CREATED, axum::Json(answer)).into_response()
}

fn edit_comment(data: &Shared, id: &str, body: &Bytes) -> Response {
    let Some(body) = body_json(body) else { return bad_request() };
    let Some(text) = body["body"].as_str() else { return StatusCode::UNPROCESSABLE_ENTITY.into_response() };
    let Ok(id) = id.parse::<u64>() else { return not_found() };
    let mut data = data.lock().unwrap();
    let flavor = data.flavor;
    let Some(comment) = data.threads.values_mut().flatten().find(|c| c.id == id) else { return not_found() };
    if comment.author != BOT {
        return (StatusCode::FORBIDDEN, axum::Json(json!({"message": "not yours"}))).into_response();
    }
    comment.body = text.to_string();
    axum::Json(comment_json(flavor, comment)).into_response()
}

async fn edit_github_comment(
    State(data): State<Shared>,
    Path(params): Path<BTreeMap<String, String>>,
    body: Bytes,
) -> Response {
    edit_comment(&data, &params["id"], &body)
}

async fn edit_gitlab_note(
    State(data): State<Shared>,
    Path(params): Path<BTreeMap<String, String>>,
    body: Bytes,
) -> Response {
    edit_comment(&data, &params["id"], &body)
}

async fn list_issues(State(data): State<Shared>, Query(listing): Query<Listing>) -> axum::Json<Value> {
    let data = data.lock().unwrap();
    let wanted_open = match listing.state.as_deref() {
        Some("closed") => Some(false),
        Some("all") => None,
        // Both APIs list open issues by default (`open` on GitHub, `opened` on GitLab).
        _ => Some(true),
    };
    let matching: Vec<Issue> = data
        .issues
        .iter()
        .filter(|i| wanted_open.is_none_or(|open| i.open == open))
        .filter(|i| listing.search.as_ref().is_none_or(|s| i.title.contains(s.as_str())))
        // GitLab has no pull requests among issues.
        .filter(|i| data.flavor == Flavor::GitHub || !i.pull_request)
        .cloned()
        .collect();
    let page = page_of(data.flavor, &matching, &listing);
    axum::Json(Value::Array(page.iter().map(|i| issue_json(data.flavor, i)).collect()))
}

async fn open_issue(State(data): State<Shared>, body: Bytes) -> Response {
    let Some(body) = body_json(&body) else { return bad_request() };
    let mut data = data.lock().unwrap();
    let text_key = if data.flavor == Flavor::GitHub { "body" } else { "description" };
    let (Some(title), Some(text)) = (body["title"].as_str(), body[text_key].as_str()) else {
        return StatusCode::UNPROCESSABLE_ENTITY.into_response();
    };
    let number = data.next_id;
    data.next_id += 1;
    let issue = Issue {
        number,
        title: title.into(),
        body: text.into(),
        open: true,
        author: BOT.into(),
        pull_request: false,
    };
    let answer = issue_json(data.flavor, &issue);
    data.issues.push(issue);
    (StatusCode::CREATED, axum::Json(answer)).into_response()
}

async fn edit_issue(
    State(data): State<Shared>,
    Path(params): Path<BTreeMap<String, String>>,
    body: Bytes,
) -> Response {
    let Some(body) = body_json(&body) else { return bad_request() };
    let Ok(number) = params["number"].parse::<u64>() else { return not_found() };
    let mut data = data.lock().unwrap();
    let flavor = data.flavor;
    let Some(issue) = data.issues.iter_mut().find(|i| i.number == number) else { return not_found() };
    let text_key = if flavor == Flavor::GitHub { "body" } else { "description" };
    if let Some(title) = body["title"].as_str() {
        issue.title = title.into();
    }
    if let Some(text) = body[text_key].as_str() {
        issue.body = text.into();
    }
    match (flavor, body["state"].as_str(), body["state_event"].as_str()) {
        (Flavor::GitHub, Some("closed"), _) | (Flavor::GitLab, _, Some("close")) => issue.open = false,
        (Flavor::GitHub, Some("open"), _) | (Flavor::GitLab, _, Some("reopen")) => issue.open = true,
        _ => {}
    }
    axum::Json(issue_json(flavor, issue)).into_response()
}
