//! A plain HTTP/1 client for the simulated engine's API (`tcp://HOST:PORT`, `HOST:PORT`,
//! `http://HOST:PORT` or `unix:///PATH`): what tests and benches use to act as an admin or a
//! `docker` CLI would, where bollard has no call (`/swarm/unlock`, `/swarm/unlockkey`) or the
//! raw answer is the point; and what the `swarm-sim` subcommands use to reach the control
//! address.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{method} {path}: {source}")]
    Exchange {
        method: String,
        path: String,
        #[source]
        source: hyper::Error,
    },
    #[error("{method} {path}: invalid request: {source}")]
    Request {
        method: String,
        path: String,
        #[source]
        source: hyper::http::Error,
    },
}

/// An answer: status, headers, whole body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

/// `host:port` of a `tcp://` / `http://` address.
pub fn hostport(addr: &str) -> String {
    addr.trim_start_matches("tcp://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

/// How long a connection may take to open before the request fails with a
/// [`ClientError::Connect`] of kind [`std::io::ErrorKind::TimedOut`].
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens a connection with `connect`, within [`CONNECT_TIMEOUT`].
async fn connect_within<S>(
    connect: impl Future<Output = std::io::Result<S>>,
) -> std::io::Result<S> {
    tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("timed out after {CONNECT_TIMEOUT:?}"),
            ))
        })
}

/// One request on a new connection (opened within [`CONNECT_TIMEOUT`]); `body` is sent as
/// JSON.
pub async fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<Answer, ClientError> {
    let connect_failed = |source| ClientError::Connect {
        addr: addr.to_string(),
        source,
    };
    if let Some(socket) = addr.strip_prefix("unix://") {
        let stream = connect_within(tokio::net::UnixStream::connect(socket))
            .await
            .map_err(connect_failed)?;
        return exchange(stream, method, path, body).await;
    }
    let stream = connect_within(tokio::net::TcpStream::connect(hostport(addr)))
        .await
        .map_err(connect_failed)?;
    exchange(stream, method, path, body).await
}

async fn exchange<S>(
    stream: S,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<Answer, ClientError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let failed = |source| ClientError::Exchange {
        method: method.to_string(),
        path: path.to_string(),
        source,
    };
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(failed)?;
    tokio::spawn(conn);
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "docker")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or("").to_string())))
        .map_err(|source| ClientError::Request {
            method: method.to_string(),
            path: path.to_string(),
            source,
        })?;
    let response = sender.send_request(request).await.map_err(failed)?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.map_err(failed)?;
    Ok(Answer {
        status,
        headers,
        body: body.to_bytes().to_vec(),
    })
}
