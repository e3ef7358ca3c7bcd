//! The accept loop: one hyper HTTP/1.1 connection task per TCP connection (keep-alive), each
//! able to close its socket without answering when a fault says so, and all stopped when the
//! `Handle` shuts down or is dropped. This is the emulator's only socket code.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::Service as _;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

/// Put in every request's extensions: lets a handler close its connection without answering.
#[derive(Clone)]
pub(crate) struct ConnDrop(Arc<Notify>);

impl ConnDrop {
    pub(crate) fn drop_now(&self) {
        self.0.notify_one();
    }
}

/// Serve `app` on `listener` until `shutdown` changes or its sender is dropped.
pub(crate) async fn serve(listener: TcpListener, app: Router, mut shutdown: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(connection(stream, app.clone(), shutdown.clone()));
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off briefly instead of spinning.
                    tracing::warn!(%error, "emulator accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            _ = shutdown.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

async fn connection(stream: TcpStream, app: Router, mut shutdown: watch::Receiver<bool>) {
    // Small request/response pairs on keep-alive connections: do not wait for Nagle.
    let _ = stream.set_nodelay(true);
    let dropper = Arc::new(Notify::new());
    let signal = ConnDrop(Arc::clone(&dropper));
    let tower = TowerToHyperService::new(app);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(signal.clone());
        tower.call(request)
    });
    let conn = http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, "emulator connection ended with an error");
            }
        }
        // Dropping `conn` here closes the socket with no HTTP answer.
        () = dropper.notified() => tracing::debug!("emulator dropped a connection (injected fault)"),
        _ = shutdown.changed() => {}
    }
}
