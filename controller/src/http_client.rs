//! The one HTTP client of the operator, its tests and the e2e harness: hyper-util's legacy
//! client for GETs (the Prometheus gate, the operator's own endpoints) and POSTs (the
//! notification webhooks, over `https://` too, checked against the system's CA certificates),
//! and hyper's HTTP/1 connection over a stream the caller connected (the probes, which connect
//! to each resolved address themselves). Every error names the URL or address it was for (a
//! POST names it as the caller shows it, since a webhook's URL is secret).

use std::error::Error as StdError;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, LengthLimitError, Limited};
use hyper::Request;
use hyper::header::{ACCEPT, CONNECTION, CONTENT_TYPE, HOST, HeaderName, HeaderValue, USER_AGENT};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

/// Bodies larger than this are refused unless a client says otherwise.
pub(crate) const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// A response: its status and its whole (de-chunked) body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Bytes,
}

impl Response {
    pub(crate) fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Why a GET failed. `cause` is the innermost error's text, so a log line says what happened
/// (e.g. "Connection refused (os error 111)") without walking the source chain.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{url} is not a valid http:// URL: {source}")]
    InvalidUrl {
        url: String,
        #[source]
        source: hyper::http::Error,
    },
    #[error("cannot connect to {url}: {cause}")]
    Connect {
        url: String,
        cause: String,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    #[error("HTTP request to {url} failed: {cause}")]
    Request {
        url: String,
        cause: String,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    #[error("reading the response of {url} failed: {cause}")]
    Body {
        url: String,
        cause: String,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    #[error("the response of {url} is larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("{url} did not answer within {after:?}")]
    TimedOut { url: String, after: Duration },
}

impl HttpError {
    /// The `reason` label of a metric counting this failure.
    pub fn metric_label(&self) -> &'static str {
        match self {
            HttpError::InvalidUrl { .. } => "invalid_url",
            HttpError::Connect { .. } => "connect",
            HttpError::Request { .. } => "request",
            HttpError::Body { .. } => "body",
            HttpError::TooLarge { .. } => "too_large",
            HttpError::TimedOut { .. } => "timeout",
        }
    }

    /// The innermost cause's text (the URL left out), as the probes log it.
    pub fn cause(&self) -> String {
        match self {
            HttpError::Connect { cause, .. }
            | HttpError::Request { cause, .. }
            | HttpError::Body { cause, .. } => cause.clone(),
            other => other.to_string(),
        }
    }

    /// True when nothing accepted the connection (refused, unreachable, connect timeout).
    pub fn is_connect(&self) -> bool {
        matches!(self, HttpError::Connect { .. })
    }
}

/// `s` escaped for a URL query value: every byte but the unreserved characters of RFC 3986
/// (`A-Z a-z 0-9 - . _ ~`) as `%XX`.
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The text of the innermost error of a source chain.
fn innermost(error: &(dyn StdError + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

fn boxed_with_cause(
    error: impl StdError + Send + Sync + 'static,
) -> (String, Box<dyn StdError + Send + Sync>) {
    let cause = innermost(&error);
    (cause, Box::new(error))
}

/// The system's CA certificates (read once); none when they cannot be read, so that
/// `https://` fails with an unknown-issuer error naming the cause rather than at start.
fn tls_roots() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            use hyper_rustls::ConfigBuilderExt;
            let config = rustls::ClientConfig::builder()
                .with_native_roots()
                .unwrap_or_else(|e| {
                    tracing::warn!("no CA certificates for https:// webhooks: {e}");
                    rustls::ClientConfig::builder()
                        .with_root_certificates(rustls::RootCertStore::empty())
                })
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

/// A POST: where, how it is shown in errors, its extra headers and its body.
#[derive(Debug, Clone)]
pub struct Post<'a> {
    pub uri: &'a hyper::Uri,
    /// The URL as errors name it (a webhook's is redacted).
    pub shown_as: &'a str,
    pub content_type: &'static str,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

/// A pooled HTTP/1 client for `http://` (and `https://`) URLs, each request bounded by one
/// timeout (connect, request and the whole body).
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    user_agent: &'static str,
    timeout: Duration,
    max_body: usize,
}

impl HttpClient {
    /// A client sending `User-Agent: user_agent`, giving each GET `timeout`.
    pub fn new(user_agent: &'static str, timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls_roots()).clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Self {
            client,
            user_agent,
            timeout,
            max_body: DEFAULT_MAX_BODY_BYTES,
        }
    }

    /// Refuse bodies larger than `bytes`.
    pub(crate) fn with_max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// GETs `url` asking for `accept`; any status is a response (the caller judges it).
    pub async fn get(&self, url: &str, accept: &str) -> Result<Response, HttpError> {
        let request = Request::get(url)
            .header(USER_AGENT, self.user_agent)
            .header(ACCEPT, accept)
            .body(Full::default())
            .map_err(|source| HttpError::InvalidUrl {
                url: url.to_string(),
                source,
            })?;
        self.exchange(request, url).await
    }

    /// POSTs `post.body`; any status is a response (the caller judges it).
    pub async fn post(&self, post: Post<'_>) -> Result<Response, HttpError> {
        let mut request = Request::post(post.uri.clone())
            .header(USER_AGENT, self.user_agent)
            .header(CONTENT_TYPE, post.content_type);
        for (name, value) in post.headers {
            request = request.header(name, value);
        }
        let request =
            request
                .body(Full::new(post.body))
                .map_err(|source| HttpError::InvalidUrl {
                    url: post.shown_as.to_string(),
                    source,
                })?;
        self.exchange(request, post.shown_as).await
    }

    /// Sends `request` and reads the answer, within the timeout; errors name `url`.
    async fn exchange(
        &self,
        request: Request<Full<Bytes>>,
        url: &str,
    ) -> Result<Response, HttpError> {
        let exchange = async {
            let response = self.client.request(request).await.map_err(|error| {
                let connect = error.is_connect();
                let (cause, source) = boxed_with_cause(error);
                let url = url.to_string();
                if connect {
                    HttpError::Connect { url, cause, source }
                } else {
                    HttpError::Request { url, cause, source }
                }
            })?;
            let status = response.status().as_u16();
            let body = read_body(url, response.into_body(), self.max_body).await?;
            Ok(Response { status, body })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(HttpError::TimedOut {
                url: url.to_string(),
                after: self.timeout,
            }),
        }
    }
}

async fn read_body(
    url: &str,
    body: hyper::body::Incoming,
    limit: usize,
) -> Result<Bytes, HttpError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(HttpError::TooLarge {
            url: url.to_string(),
            limit,
        }),
        Err(source) => Err(HttpError::Body {
            url: url.to_string(),
            cause: innermost(source.as_ref()),
            source,
        }),
    }
}

/// Sends `GET path` with `Host: authority` over `stream` (already connected) and returns the
/// response's status without reading the body. The caller bounds the time.
pub(crate) async fn get_status_over(
    stream: TcpStream,
    authority: &str,
    path: &str,
    user_agent: &str,
) -> Result<u16, HttpError> {
    let url = format!("http://{authority}{path}");
    let request_failed = |error: hyper::Error| {
        let (cause, source) = boxed_with_cause(error);
        HttpError::Request {
            url: url.clone(),
            cause,
            source,
        }
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(request_failed)?;
    let request = Request::get(path)
        .header(HOST, authority)
        .header(USER_AGENT, user_agent)
        .header(ACCEPT, "*/*")
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|source| HttpError::InvalidUrl {
            url: url.clone(),
            source,
        })?;
    // The connection future does the I/O; the response head arrives through `sender`.
    let driver = tokio::spawn(connection);
    let response = sender.send_request(request).await;
    driver.abort();
    Ok(response.map_err(request_failed)?.status().as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Serves one canned response per connection.
    async fn server(response: &'static [u8]) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(response).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn reads_chunked_and_sized_bodies() {
        let client = HttpClient::new("test", Duration::from_secs(2));
        let chunked = server(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        )
        .await;
        let r = client
            .get(&format!("http://{chunked}/"), "*/*")
            .await
            .unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "abcde"));
        let sized =
            server(b"HTTP/1.1 503 Busy\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}").await;
        let r = client
            .get(&format!("http://{sized}/x"), "*/*")
            .await
            .unwrap();
        assert_eq!((r.status, r.text().as_str()), (503, "{}"));
        assert!(!r.is_success());
    }

    #[tokio::test]
    async fn errors_name_the_url_and_the_cause() {
        let client = HttpClient::new("test", Duration::from_millis(300)).with_max_body(3);
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let down = closed.local_addr().unwrap();
        drop(closed);
        let e = client
            .get(&format!("http://{down}/"), "*/*")
            .await
            .unwrap_err();
        assert!(e.is_connect(), "{e:?}");
        assert!(e.to_string().contains(&down.to_string()), "{e}");
        assert!(e.cause().contains("refused"), "{e}");

        let big = server(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").await;
        let e = client
            .get(&format!("http://{big}/"), "*/*")
            .await
            .unwrap_err();
        assert_eq!(e.metric_label(), "too_large", "{e}");

        let garbage = server(b"SSH-2.0-OpenSSH\r\n\r\n").await;
        let e = client
            .get(&format!("http://{garbage}/"), "*/*")
            .await
            .unwrap_err();
        assert_eq!(e.metric_label(), "request", "{e}");

        let e = client.get("http://a b/", "*/*").await.unwrap_err();
        assert_eq!(e.metric_label(), "invalid_url", "{e}");
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = HttpClient::new("test", Duration::from_millis(200));
        let e = client
            .get(&format!("http://{addr}/"), "*/*")
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("http://{addr}/ did not answer within 200ms")
        );
        drop(listener);
    }

    #[tokio::test]
    async fn status_over_a_connected_stream() {
        let addr = server(b"HTTP/1.1 204 No Content\r\n\r\n").await;
        let stream = TcpStream::connect(addr).await.unwrap();
        let status = get_status_over(stream, &addr.to_string(), "/healthz", "test")
            .await
            .unwrap();
        assert_eq!(status, 204);
    }
}
