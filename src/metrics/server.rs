//! The metrics server of `reconcile --metrics-listen ADDR`: `GET /metrics` (the Prometheus text
//! format), `GET /healthz` (200 while the loop runs, 503 once it is stopping) and `GET
//! /readyz` (200 from a successful cycle until two intervals pass without one, else 503).
//! Anything else is 404.
//!
//! It listens only where it is told: an address without a host (`9090`, `:9090`) is loopback.
//! Its answers are counts and fixed words, never a value from a manifest or the server.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Metrics;

/// `--metrics-listen`: `HOST:PORT` (an IP address, `[v6]:PORT` or `localhost:PORT`), or only a
/// port (`9090`, `:9090`), which listens on loopback.
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let bad = || {
        format!(
            "`{text}` is not an address to listen on; write `PORT` (loopback), `127.0.0.1:PORT` or `0.0.0.0:PORT` (every interface)"
        )
    };
    let port_only = text.strip_prefix(':').unwrap_or(text);
    if let Ok(port) = port_only.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    if let Some(port) = text.strip_prefix("localhost:") {
        return port
            .parse::<u16>()
            .map(|p| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p))
            .map_err(|_| bad());
    }
    text.parse::<SocketAddr>().map_err(|_| bad())
}

/// A running metrics server.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Server {
    /// Listen on `addr` and serve `metrics`. Returns once the listener is bound.
    pub async fn start(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<Self, crate::error::Error> {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| crate::error::Error::Io {
            action: "listen for metrics on",
            path: addr.to_string(),
            reason: e.to_string(),
        })?;
        let addr = listener.local_addr().map_err(|e| crate::error::Error::Io {
            action: "listen for metrics on",
            path: addr.to_string(),
            reason: e.to_string(),
        })?;
        let app = Router::new()
            .route("/metrics", get(scrape))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .with_state(metrics);
        let (shutdown, mut stop) = watch::channel(false);
        let task = tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.wait_for(|stop| *stop).await;
            };
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stopped).await {
                tracing::warn!("the metrics server stopped: {e}");
            }
        });
        Ok(Self { addr, shutdown, task })
    }

    /// Where it listens (the port chosen when asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop listening, and wait for the answers in progress.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

async fn scrape(State(metrics): State<Arc<Metrics>>) -> Response {
    ([(header::CONTENT_TYPE, prometheus_client::encoding::prometheus_text::CONTENT_TYPE)], metrics.encode())
        .into_response()
}

fn verdict(ok: bool, yes: &'static str, no: &'static str) -> Response {
    if ok {
        (StatusCode::OK, yes).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, no).into_response()
    }
}

async fn healthz(State(metrics): State<Arc<Metrics>>) -> Response {
    verdict(metrics.healthy(), "ok\n", "stopping\n")
}

async fn readyz(State(metrics): State<Arc<Metrics>>) -> Response {
    verdict(metrics.ready(), "ready\n", "no successful cycle within two intervals\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_without_a_host_is_loopback() {
        assert_eq!(parse_listen("9090"), Ok("127.0.0.1:9090".parse().expect("addr")));
        assert_eq!(parse_listen(":9090"), Ok("127.0.0.1:9090".parse().expect("addr")));
        assert_eq!(parse_listen("localhost:0"), Ok("127.0.0.1:0".parse().expect("addr")));
        assert_eq!(parse_listen("0.0.0.0:9090"), Ok("0.0.0.0:9090".parse().expect("addr")));
        assert_eq!(parse_listen("[::1]:9090"), Ok("[::1]:9090".parse().expect("addr")));
        assert!(parse_listen("example.com:80").is_err());
        assert!(parse_listen("99999").is_err());
    }
}
