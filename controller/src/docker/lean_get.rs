//! GETs whose JSON the operator parses into its own lean views (`crate::observe::views`).
//!
//! bollard hides its response bodies, so these go through hyper-util's client, on the same
//! endpoint (unix socket, plain TCP or TLS with the same files) and with the API version
//! bollard negotiated with that engine; the body's bytes are counted as they arrive.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::StatusCode;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::{Endpoint, TlsFiles};

type Body = Empty<Bytes>;

/// Why a GET got no answer from this endpoint.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    #[error("request failed: {0}")]
    Request(#[from] hyper_util::client::legacy::Error),
    #[error("reading the answer failed: {0}")]
    Body(#[from] hyper::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("bad request URI: {0}")]
    Uri(#[from] hyper::http::uri::InvalidUri),
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

/// One engine's answer: status and the whole body.
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

    /// `GET /v{version}{path_and_query}`, the whole body read within `timeout`.
    pub async fn get(
        &self,
        version: &str,
        path_and_query: &str,
        timeout: Duration,
    ) -> Result<Answer, GetError> {
        let path = format!("/v{version}{path_and_query}");
        let request = async {
            let response = match self {
                LeanClient::Unix { client, socket } => {
                    client
                        .get(hyperlocal::Uri::new(socket, &path).into())
                        .await?
                }
                LeanClient::Http { client, authority } => {
                    client
                        .get(format!("http://{authority}{path}").parse()?)
                        .await?
                }
                LeanClient::Https { client, authority } => {
                    client
                        .get(format!("https://{authority}{path}").parse()?)
                        .await?
                }
            };
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok(Answer { status, body })
        };
        tokio::time::timeout(timeout, request)
            .await
            .map_err(|_| GetError::Timeout(timeout))?
    }
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
