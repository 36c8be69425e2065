//! GETs whose JSON the operator parses into its own lean views (`crate::observe::views`), and
//! the one call bollard lacks (`POST /swarm/unlock`).
//!
//! bollard hides its response bodies, so these go through hyper-util's client, on the same
//! endpoint (unix socket, plain TCP or TLS with the same files) and with the API version
//! bollard negotiated with that engine; the body's bytes are counted as they arrive.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::StatusCode;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::{Endpoint, TlsFiles};

type Body = Full<Bytes>;

/// Why a GET got no answer from this endpoint.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    #[error("request failed: {0}")]
    Request(#[from] hyper_util::client::legacy::Error),
    #[error("reading the answer failed: {0}")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("bad request URI: {0}")]
    Uri(#[from] hyper::http::uri::InvalidUri),
    #[error("bad request: {0}")]
    Http(#[from] hyper::http::Error),
    /// The answer's body grew past the limit; reading stopped there.
    #[error("the answer is larger than {limit} bytes")]
    TooLarge { limit: usize },
}

/// Why the TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Pem {
        path: String,
        source: rustls_pki_types::pem::Error,
    },
    #[error("the TLS files are unusable: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Where a streamed answer's chunks go, in order.
pub type BodySink<'a> = &'a mut (dyn FnMut(&[u8]) + Send);

/// One engine's answer: status and the whole body (empty when it was streamed).
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

#[derive(Clone)]
pub enum LeanClient {
    Unix {
        client: Client<hyperlocal::UnixConnector, Body>,
        socket: std::path::PathBuf,
    },
    Http {
        client: Client<HttpConnector, Body>,
        authority: String,
    },
    Https {
        client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>,
        authority: String,
    },
}

impl LeanClient {
    pub fn new(endpoint: &Endpoint) -> Result<Self, TlsError> {
        let builder = || Client::builder(TokioExecutor::new());
        Ok(match endpoint {
            Endpoint::Unix(socket) => LeanClient::Unix {
                client: builder().build(hyperlocal::UnixConnector),
                socket: socket.clone(),
            },
            Endpoint::Tcp { addr, tls: None } => LeanClient::Http {
                client: builder().build(HttpConnector::new()),
                authority: addr.clone(),
            },
            Endpoint::Tcp {
                addr,
                tls: Some(tls),
            } => {
                let mut http = HttpConnector::new();
                http.enforce_http(false);
                let connector = hyper_rustls::HttpsConnector::from((http, tls_config(tls)?));
                LeanClient::Https {
                    client: builder().build(connector),
                    authority: addr.clone(),
                }
            }
        })
    }

    /// `GET /v{version}{path_and_query}`, the whole body (at most `max_body` bytes) read
    /// within `timeout`.
    pub async fn get(
        &self,
        version: &str,
        path_and_query: &str,
        timeout: Duration,
        max_body: usize,
    ) -> Result<Answer, GetError> {
        let path = format!("/v{version}{path_and_query}");
        let (method, json) = (hyper::Method::GET, None);
        (self.request(method, path, json, timeout, max_body, None)).await
    }

    /// As [`Self::get`], but a successful answer's body is handed to `sink` chunk by chunk as
    /// it arrives and never held whole (the answer's `body` is then empty); an error's body is
    /// read whole, for its message.
    pub(crate) async fn get_streamed(
        &self,
        version: &str,
        path_and_query: &str,
        timeout: Duration,
        max_body: usize,
        sink: BodySink<'_>,
    ) -> Result<Answer, GetError> {
        let path = format!("/v{version}{path_and_query}");
        let (method, json) = (hyper::Method::GET, None);
        (self.request(method, path, json, timeout, max_body, Some(sink))).await
    }

    /// `POST /v{version}{path}` with a JSON body, the whole answer read within `timeout`.
    pub(crate) async fn post_json(
        &self,
        version: &str,
        path: &str,
        json: Bytes,
        timeout: Duration,
    ) -> Result<Answer, GetError> {
        // An unlock's answer is a few bytes.
        let max_body = 64 * 1024;
        let path = format!("/v{version}{path}");
        (self.request(
            hyper::Method::POST,
            path,
            Some(json),
            timeout,
            max_body,
            None,
        ))
        .await
    }

    async fn request(
        &self,
        method: hyper::Method,
        path: String,
        json: Option<Bytes>,
        timeout: Duration,
        max_body: usize,
        sink: Option<BodySink<'_>>,
    ) -> Result<Answer, GetError> {
        let builder = hyper::Request::builder().method(method);
        let builder = match &json {
            Some(_) => builder.header(hyper::header::CONTENT_TYPE, "application/json"),
            None => builder,
        };
        let body = Full::new(json.unwrap_or_default());
        let request = async {
            let response = match self {
                LeanClient::Unix { client, socket } => {
                    let uri: hyper::Uri = hyperlocal::Uri::new(socket, &path).into();
                    client.request(builder.uri(uri).body(body)?).await?
                }
                LeanClient::Http { client, authority } => {
                    let uri: hyper::Uri = format!("http://{authority}{path}").parse()?;
                    client.request(builder.uri(uri).body(body)?).await?
                }
                LeanClient::Https { client, authority } => {
                    let uri: hyper::Uri = format!("https://{authority}{path}").parse()?;
                    client.request(builder.uri(uri).body(body)?).await?
                }
            };
            let status = response.status();
            let body = response.into_body();
            let body = match sink {
                Some(sink) if status.is_success() => {
                    read_limited(body, max_body, sink).await?;
                    Bytes::new()
                }
                _ => {
                    let mut whole = Vec::new();
                    read_limited(body, max_body, &mut |c| whole.extend_from_slice(c)).await?;
                    Bytes::from(whole)
                }
            };
            Ok(Answer { status, body })
        };
        tokio::time::timeout(timeout, request)
            .await
            .map_err(|_| GetError::Timeout(timeout))?
    }
}

/// The body's chunks handed to `sink` as they arrive, refused as soon as the body grows past
/// `limit` (a runaway answer must not take the operator's memory or time with it). A body
/// read whole goes into one buffer as it arrives: collecting the chunks and joining them after
/// held a body twice (12.6 MB for a fleet's 6.3 MB verbose network inspect).
async fn read_limited(
    body: hyper::body::Incoming,
    limit: usize,
    sink: BodySink<'_>,
) -> Result<(), GetError> {
    let mut body = Limited::new(body, limit);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| match e.is::<LengthLimitError>() {
            true => GetError::TooLarge { limit },
            false => GetError::Body(e),
        })?;
        if let Ok(data) = frame.into_data() {
            sink(&data);
        }
    }
    Ok(())
}

/// As the docker CLI uses the files: the CA for the engine's certificate, the client
/// certificate and key for ours.
fn tls_config(tls: &TlsFiles) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let pem = |path: &std::path::Path| {
        let path = path.display().to_string();
        move |source| TlsError::Pem {
            path: path.clone(),
            source,
        }
    };
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(&tls.ca).map_err(pem(&tls.ca))? {
        roots.add(ca.map_err(pem(&tls.ca))?)?;
    }
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .map_err(pem(&tls.cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem(&tls.cert))?;
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(pem(&tls.key))?;
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)?;
    Ok(Arc::new(config))
}
