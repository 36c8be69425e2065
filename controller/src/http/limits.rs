//! How the operator's HTTP endpoints are served: bounded so that no client, however slow,
//! malformed or numerous, holds the operator's resources for long.
//!
//! `axum::serve` sets no timer, so hyper applies no header-read timeout: a client that sends
//! half a request line (slowloris) or idles on a keep-alive connection holds a task and a file
//! descriptor forever. Here each connection is served by hyper's HTTP/1 server with a header
//! timeout (which also ends idle keep-alive connections), a cap on the request head's size
//! (hyper answers 431 past it), a cap on concurrent connections, a lifetime after which
//! the connection is closed once its current response is sent, and a cap on requests handled
//! at once (tower's concurrency limit), so that scrapers queue rather than take every worker
//! thread the reconcile loop runs on.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::limit::ConcurrencyLimit;

/// A request's head (request line and headers) must arrive within this; it is also how long
/// an idle keep-alive connection is kept. A scrape's head arrives in one packet.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request head read (hyper's smallest allowed buffer is 8 KiB). A scrape's head
/// is a few hundred bytes.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 128;
/// A connection is closed after this, once its response in progress is sent; a client that
/// does not read the response loses the connection this much later still.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Requests handled at once, over all connections; the others wait for a turn.
pub const MAX_IN_FLIGHT: usize = 2;

type Service = TowerToHyperService<ConcurrencyLimit<Router>>;

/// Serves `router` on `listener` until the process ends.
pub async fn serve_bounded(listener: TcpListener, router: Router) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // Clones share the limit.
    let router = ConcurrencyLimit::new(router, MAX_IN_FLIGHT);
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, mostly: wait rather than spin.
                tracing::warn!(error = %e, "http: cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            serve_connection(TokioIo::new(stream), service).await;
            drop(permit);
        });
    }
}

async fn serve_connection(io: TokioIo<tokio::net::TcpStream>, service: Service) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => log_end(result),
        () = tokio::time::sleep(CONNECTION_LIFETIME) => {
            conn.as_mut().graceful_shutdown();
            if let Ok(result) = tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
                log_end(result);
            }
        }
    }
}

/// A client's broken request ends its connection; it says nothing about the operator.
fn log_end(result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        tracing::debug!(error = %e, "http: connection ended with an error");
    }
}
