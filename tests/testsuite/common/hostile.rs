//! A hostile (or broken) Oz API, for the bounds against hostile servers (issue #20): a small
//! axum server on `127.0.0.1:0` in front of the built-in emulator. Every request is forwarded to
//! the emulator as it came, and its answer sent back as it was, except the requests the
//! `Hostility` of the server answers itself, or whose answer it rewrites. The emulator stays a
//! faithful Oz API; the hostility lives here.
//!
//! And `run_measured`: run the binary while reading its peak resident memory (`VmHWM` of
//! `/proc/<pid>/status`) until it exits.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use futures::StreamExt as _;
use serde_json::{Value, json};

use super::{Cli, Run};

/// What the hostile server does instead of the emulator.
#[derive(Debug, Clone)]
pub enum Hostility {
    /// `GET /api/companies/`: always a full page (`limit` items) of companies never seen
    /// before, as a bare array (no total): a list without end.
    EndlessPages,
    /// `GET /api/companies/`: full pages of fresh companies, in an envelope whose `total` is
    /// 10^12.
    HugeTotal,
    /// `GET /api/companies/`: the same full page whatever `offset` asks.
    RepeatedPage,
    /// `GET /api/companies/`: `200` and a chunked body that never ends, sent as fast as the
    /// client reads.
    EndlessBody,
    /// `GET /api/companies/`: `200` with `Content-Length` 10^12, then a body that never ends.
    HugeContentLength,
    /// The service-token `POST` (issued for real by the emulator): `200` and its headers, then
    /// the body one byte every 50 ms, forever.
    DripToken,
    /// The service-token `POST` is issued by the emulator, and its answer's `access_token`
    /// replaced by this.
    ServiceToken(Value),
    /// As `ServiceToken`, for the answer's `expire_date`.
    ServiceTokenExpiry(Value),
    /// The admin login (`POST /api/authorize/auth`) is answered by the emulator, and its
    /// `access_token` replaced by this.
    SessionToken(Value),
}

struct Proxy {
    upstream: String,
    hostility: Hostility,
    http: reqwest::Client,
    /// Requests the hostility answered (or rewrote).
    hostile: AtomicUsize,
}

/// A running hostile server.
pub struct Server {
    pub url: String,
    proxy: Arc<Proxy>,
}

impl Server {
    /// How many requests the hostility answered or rewrote so far.
    pub fn hostile_answers(&self) -> usize {
        self.proxy.hostile.load(Ordering::Relaxed)
    }
}

/// Start a hostile server in front of the emulator at `upstream` (a base URL).
pub async fn start(upstream: &str, hostility: Hostility) -> Server {
    // reqwest is built without a default crypto provider (`Err`: one is installed already).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let proxy = Arc::new(Proxy {
        upstream: upstream.trim_end_matches('/').to_string(),
        hostility,
        // Never through a proxy of the environment: loopback only.
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
        hostile: AtomicUsize::new(0),
    });
    let app = Router::new().fallback(handle).with_state(Arc::clone(&proxy));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server { url, proxy }
}

fn query_number(request: &Request, key: &str) -> Option<usize> {
    request.uri().query()?.split('&').find_map(|pair| pair.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

/// `limit` companies from `offset` on, each with an id never used before.
fn companies(offset: usize, limit: usize) -> Value {
    (offset..offset + limit)
        .map(|i| json!({"company_id": format!("c-{i}"), "name": format!("Hostile {i}")}))
        .collect()
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

async fn handle(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    let listing = request.method() == Method::GET && path.trim_end_matches('/') == "/api/companies";
    let issuing = request.method() == Method::POST && path.starts_with("/api/authorize/service_token");
    let login = request.method() == Method::POST && path.trim_end_matches('/') == "/api/authorize/auth";
    let (offset, limit) =
        (query_number(&request, "offset").unwrap_or(0), query_number(&request, "limit").unwrap_or(100));
    let hostile = match proxy.hostility {
        Hostility::EndlessPages
        | Hostility::HugeTotal
        | Hostility::RepeatedPage
        | Hostility::EndlessBody
        | Hostility::HugeContentLength => listing,
        Hostility::DripToken | Hostility::ServiceToken(_) | Hostility::ServiceTokenExpiry(_) => issuing,
        Hostility::SessionToken(_) => login,
    };
    if hostile {
        proxy.hostile.fetch_add(1, Ordering::Relaxed);
    }
    match &proxy.hostility {
        Hostility::EndlessPages if listing => json_response(StatusCode::OK, &companies(offset, limit)),
        Hostility::HugeTotal if listing => json_response(
            StatusCode::OK,
            &json!({"items": companies(offset, limit), "total": 1_000_000_000_000_u64}),
        ),
        Hostility::RepeatedPage if listing => json_response(StatusCode::OK, &companies(0, limit)),
        Hostility::EndlessBody if listing => endless(None),
        Hostility::HugeContentLength if listing => endless(Some(1_000_000_000_000)),
        Hostility::DripToken if issuing => {
            let (status, _) = forward(&proxy, request).await;
            let drops = futures::stream::unfold((), |()| async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Some((Ok::<_, Infallible>(Bytes::from_static(b" ")), ()))
            });
            let mut response = Response::new(Body::from_stream(drops));
            *response.status_mut() = status;
            response
        }
        Hostility::ServiceToken(token) if issuing => rewrite(&proxy, request, "access_token", token).await,
        Hostility::ServiceTokenExpiry(date) if issuing => rewrite(&proxy, request, "expire_date", date).await,
        Hostility::SessionToken(token) if login => rewrite(&proxy, request, "access_token", token).await,
        _ => {
            let (status, body) = forward(&proxy, request).await;
            let mut response = Response::new(Body::from(body));
            *response.status_mut() = status;
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
    }
}

/// A JSON array of companies that never ends, as fast as the client reads it; with
/// `announce`, under a `Content-Length` of that many bytes.
fn endless(announce: Option<u64>) -> Response {
    let item: &[u8] = br#"{"company_id":"c-x","name":"An endless list","technical_meta_data":{}},"#;
    // Chunks of about 70 KB, shared (a `Bytes` clone copies nothing): the server's own memory
    // stays flat however long the client reads.
    let chunk = Bytes::from(item.repeat(1000));
    let body = futures::stream::once(async { Ok::<_, Infallible>(Bytes::from_static(b"[")) })
        .chain(futures::stream::repeat(chunk).map(Ok));
    let mut response = Response::new(Body::from_stream(body));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(length) = announce {
        response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    response
}

/// Send `request` to the emulator; its status and body.
async fn forward(proxy: &Proxy, request: Request) -> (StatusCode, Bytes) {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let url = format!("{}{}", proxy.upstream, parts.uri.path_and_query().map_or("", |p| p.as_str()));
    let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes()).unwrap();
    let mut upstream = proxy.http.request(method, url).body(body.to_vec());
    for (name, value) in &parts.headers {
        if name != header::HOST && name != header::CONTENT_LENGTH {
            upstream = upstream.header(name.as_str(), value.as_bytes());
        }
    }
    let answer = upstream.send().await.unwrap();
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
    (status, answer.bytes().await.unwrap())
}

/// The emulator's answer to `request`, with `field` of its JSON object set to `value`.
async fn rewrite(proxy: &Proxy, request: Request, field: &str, value: &Value) -> Response {
    let (status, body) = forward(proxy, request).await;
    let mut answer: Value = serde_json::from_slice(&body).unwrap();
    if status.is_success() {
        answer[field] = value.clone();
    }
    json_response(status, &answer)
}

// ---------------------------------------------------------------------------------------------
// Peak memory of a child.

/// A finished run and the child's peak resident memory.
#[derive(Debug)]
pub struct Measured {
    pub run: Run,
    /// The largest `VmHWM` read, in KiB.
    pub peak_kib: u64,
    /// How many times `VmHWM` could be read (at least once, or the figure means nothing).
    pub readings: usize,
}

impl Measured {
    /// Assert the peak stayed under `mib` MiB, with what the run printed when it did not.
    pub fn assert_peak_under(&self, mib: u64) -> &Self {
        assert!(self.readings > 0, "the child's VmHWM was never read");
        assert!(
            self.peak_kib < mib * 1024,
            "peak resident memory {} MiB, not under {mib} MiB\n--- stderr\n{}",
            self.peak_kib / 1024,
            self.run.stderr
        );
        self
    }
}

/// `VmHWM` of a live process, in KiB (`None` once it has exited).
fn vm_hwm(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// How long a run may take before it is taken as hanging: far past any request timeout the
/// tests set, only so that a regression fails instead of stalling the suite. Not a timing
/// assertion: the runs end through their own request timeouts and bounds.
const HANG: Duration = Duration::from_secs(600);

/// Run the binary (stdin closed), reading its `VmHWM` every millisecond or so until it exits.
/// `VmHWM` never decreases while the process lives, so the last reading before exit is the
/// peak of the whole run but for its last instant. Blocking: call it from `spawn_blocking`.
pub fn run_measured(cli: Cli) -> Measured {
    use std::io::Read as _;
    let mut child = cli.spawn();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let pid = child.id();
    let started = Instant::now();
    let (mut peak_kib, mut readings) = (0, 0);
    let status = loop {
        if let Some(kib) = vm_hwm(pid) {
            peak_kib = peak_kib.max(kib);
            readings += 1;
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > HANG {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the run did not end within {HANG:?} (peak so far {} MiB)", peak_kib / 1024);
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let run =
        Run { code: status.code().unwrap_or(-1), stdout: out.join().unwrap(), stderr: err.join().unwrap() };
    Measured { run, peak_kib, readings }
}
