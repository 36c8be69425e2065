//! The edge to the Docker Engine API: several manager endpoints, API-version negotiation per
//! engine, failover when the manager being upgraded is away, and typed errors.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use bollard::models::{EventMessage, Network, Node, NodeSpec, Service, SystemInfo, Task};
use bollard::query_parameters::{
    EventsOptions, ListNodesOptions, ListServicesOptions, ListTasksOptions, UpdateNodeOptions,
};
use bollard::{API_DEFAULT_VERSION, ClientVersion, Docker};
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;

mod host_counts;
mod lean_get;
mod tls_failure;

use lean_get::LeanClient;
pub use lean_get::{GetError, TlsError};
pub use tls_failure::{TlsFailure, TlsProblem};

/// Seconds bollard waits for one request.
const REQUEST_TIMEOUT_SECS: u64 = 10;

/// The largest answer the operator reads whole from an engine (its own reads: nodes, services,
/// networks, tasks): three times the 41 MB task list of a 30,000-task swarm.
pub(crate) const DEFAULT_MAX_ANSWER_BYTES: usize = 128 * 1024 * 1024;

/// The oldest Docker Engine API the operator speaks: 1.24 (Docker 1.12) brought swarm mode's
/// node, service and task endpoints.
pub(crate) const MIN_API_VERSION: (usize, usize) = (1, 24);

/// How long a manager whose endpoint took a request and never answered (a partition hangs, it
/// does not refuse) is asked last in failover and left out of the per-manager views: without
/// it, every pass would wait out the request timeout on it.
const UNRESPONSIVE_COOLDOWN: Duration = Duration::from_secs(30);

/// How a call made of every manager runs.
#[derive(Debug, Clone, Copy)]
enum Fanout {
    AtOnce,
    /// One manager after another, where each answer is large: a fleet's verbose network inspect
    /// is megabytes per manager (6.3 MB at 30,000 tasks), and three held at once, with their
    /// parse, were the operator's memory peak.
    OneAtATime,
}

/// A per-manager view (`/info`, a network's gossip) is optional: one manager's is waited for
/// this long at most.
const PER_MANAGER_VIEW_TIMEOUT: Duration = Duration::from_secs(3);

/// What went wrong talking to the swarm, in the terms an operator acts on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error(
        "no manager endpoint answered ({endpoints}); last error: {last}. Check --docker-host/DOCKER_HOST and that at least one manager's engine is running"
    )]
    Unreachable { endpoints: String, last: String },
    /// The node changed since it was read (the managers rewrite nodes themselves): re-read.
    #[error("update out of sequence: the node changed since it was read")]
    OutOfSequence,
    #[error("the swarm has no leader or no quorum right now: {0}")]
    NoQuorum(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("the engine answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("cannot connect to {endpoint}: {message}")]
    Config { endpoint: String, message: String },
    #[error("cannot use the TLS files for {endpoint}: {source}")]
    Tls {
        endpoint: String,
        source: Arc<TlsError>,
    },
    /// The TLS handshake with one manager failed: a certificate or endpoint misconfigured.
    #[error("{0}")]
    TlsHandshake(Box<TlsFailure>),
    #[error("no manager endpoint configured; set --docker-host or DOCKER_HOST")]
    NoEndpoints,
    /// bollard failed in a way that is neither a connection error nor an engine's answer.
    #[error("the Docker API client failed: {0}")]
    Client(#[source] Arc<bollard::errors::Error>),
    #[error("the engine's answer to {call} is not what the Docker API documents: {source}")]
    Decode {
        call: &'static str,
        source: Arc<serde_json::Error>,
    },
    #[error("node version index {0} is beyond what the Docker API takes")]
    VersionOverflow(u64),
    /// The engine's `/version` gave no API version the operator can speak.
    #[error(
        "the engine at {endpoint} reports {}; this operator needs API {}.{} or newer (Docker Engine 1.12 and later)",
        reported.as_ref().map_or("no readable API version".to_string(), |v| format!("API version {v}")),
        MIN_API_VERSION.0,
        MIN_API_VERSION.1
    )]
    ApiVersion {
        endpoint: String,
        /// `None` when `/version` had no `ApiVersion` or one that is not `MAJOR.MINOR`.
        reported: Option<String>,
    },
    /// An answer grew past the bound on what the operator holds in memory; reading stopped.
    #[error(
        "the answer of {endpoint} to {call} is larger than {limit} bytes; the operator stopped reading it"
    )]
    TooLarge {
        endpoint: String,
        call: &'static str,
        limit: usize,
    },
    /// Two manager endpoints' engines each say they are the same node: which of them is that
    /// node cannot be told, so neither engine's word about itself is used.
    #[error(
        "the engines at {endpoints} all say they are node {node_id}; their own descriptions are not used until they differ (check that --docker-host lists each manager once)"
    )]
    IdentityConflict { node_id: String, endpoints: String },
    #[error(transparent)]
    Conversion(#[from] crate::cluster::ConversionError),
}

impl ApiError {
    /// The `error` label of `swarm_upgrade_docker_api_errors_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ApiError::Unreachable { .. } => "unreachable",
            ApiError::OutOfSequence => "out_of_sequence",
            ApiError::NoQuorum(_) => "no_quorum",
            ApiError::NotFound(_) => "not_found",
            ApiError::Status { .. } => "status",
            ApiError::Config { .. } | ApiError::NoEndpoints => "config",
            ApiError::Tls { .. } => "tls",
            ApiError::TlsHandshake(failure) => failure.problem.metric_label(),
            ApiError::Client(_) => "client",
            ApiError::Decode { .. } => "decode",
            ApiError::VersionOverflow(_) => "invalid_version",
            ApiError::ApiVersion { .. } => "api_version",
            ApiError::TooLarge { .. } => "too_large",
            ApiError::IdentityConflict { .. } => "identity_conflict",
            ApiError::Conversion(_) => "conversion",
        }
    }

    fn from_bollard(err: bollard::errors::Error) -> Self {
        use bollard::errors::Error as E;
        match err {
            E::DockerResponseServerError {
                status_code,
                message,
            } => Self::from_answer(status_code, message),
            other => ApiError::Client(Arc::new(other)),
        }
    }

    /// An engine's error answer, classified as the operator acts on it.
    fn from_answer(status_code: u16, message: String) -> Self {
        if message.contains("update out of sequence") {
            ApiError::OutOfSequence
        } else if status_code == 404 {
            ApiError::NotFound(message)
        } else if message.contains("does not have a leader")
            || message.contains("not a swarm manager")
            || message.contains("context deadline exceeded")
            || status_code == 503
        {
            ApiError::NoQuorum(message)
        } else {
            ApiError::Status {
                status: status_code,
                message,
            }
        }
    }

    /// Whether another manager endpoint may succeed where this one failed (a misconfigured
    /// manager does not stop the operator from using the others).
    ///
    /// An engine's 5xx is a manager failing for now (raft busy, an RPC cut short); retrying a
    /// write is safe too, as every node update carries the version index it was read at.
    fn try_elsewhere(&self) -> bool {
        self.is_version_too_new()
            || matches!(
                self,
                ApiError::NoQuorum(_)
                    | ApiError::Client(_)
                    | ApiError::Decode { .. }
                    | ApiError::TlsHandshake(_)
                    | ApiError::ApiVersion { .. }
                    | ApiError::TooLarge { .. }
                    | ApiError::Status {
                        status: 500..=599,
                        ..
                    }
            )
    }

    /// The engine refuses the API version agreed with it before: it restarted as an older
    /// engine (a rollback, or a rollout back to 20.10). The connection is agreed on again.
    fn is_version_too_new(&self) -> bool {
        matches!(self, ApiError::Status { status: 400, message } if max_version_from_error(message).is_some())
    }

    /// Whether the whole round is worth retrying after a pause: not for a certificate that
    /// will not change by itself (the next reconcile pass tries again).
    fn try_elsewhere_or_later(&self) -> bool {
        (self.try_elsewhere() && !self.is_misconfigured())
            || matches!(self, ApiError::Unreachable { .. })
    }

    /// A manager's endpoint or certificates are wrong: a person must fix something.
    pub(crate) fn is_misconfigured(&self) -> bool {
        matches!(self, ApiError::TlsHandshake(_))
    }

    /// A failed call to `endpoint`: a TLS verdict, a connection that failed, or the engine's
    /// answer.
    fn from_call(endpoint: &Endpoint, err: bollard::errors::Error) -> Self {
        if let Some(failure) = endpoint.tls_failure(&err) {
            return ApiError::TlsHandshake(Box::new(failure));
        }
        if is_connectivity(&err) {
            return ApiError::Unreachable {
                endpoints: endpoint.display(),
                last: err.to_string(),
            };
        }
        ApiError::from_bollard(err)
    }
}

/// Whether a call that failed `Unreachable` after `took` waited out its request timeout (the
/// endpoint took it and never answered) rather than being refused or dropped.
fn hung(result: &Result<impl Sized, ApiError>, took: Duration) -> bool {
    matches!(result, Err(ApiError::Unreachable { .. }))
        && took >= Duration::from_secs(REQUEST_TIMEOUT_SECS).mul_f64(0.9)
}

fn is_connectivity(err: &bollard::errors::Error) -> bool {
    use bollard::errors::Error as E;
    matches!(
        err,
        E::IOError { .. }
            | E::HyperResponseError { .. }
            | E::HyperLegacyError { .. }
            | E::RequestTimeoutError
            | E::SocketNotFoundError(_)
    )
}

/// TLS material, as the docker CLI finds it (`DOCKER_CERT_PATH`, `DOCKER_TLS_VERIFY`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// `Some` when `DOCKER_TLS_VERIFY` is set (to anything but empty) or `DOCKER_CERT_PATH` is.
    pub(crate) fn from_env() -> Option<Self> {
        let verify = std::env::var("DOCKER_TLS_VERIFY").is_ok_and(|v| !v.is_empty());
        let cert_path = std::env::var_os("DOCKER_CERT_PATH").map(PathBuf::from);
        if !verify && cert_path.is_none() {
            return None;
        }
        let dir = cert_path.unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default()
                .join(".docker")
        });
        Some(Self {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        })
    }
}

/// One manager's API address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp { addr: String, tls: Option<TlsFiles> },
}

impl Endpoint {
    /// `unix:///run/docker.sock`, `tcp://10.0.0.1:2376`, `http://…`, `https://…` (TLS).
    pub fn parse(s: &str, tls: Option<&TlsFiles>) -> Result<Self, ApiError> {
        let s = s.trim();
        let bad = |message: &str| ApiError::Config {
            endpoint: s.to_string(),
            message: message.to_string(),
        };
        if let Some(path) = s.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(bad("empty socket path; write unix:///path/to/docker.sock"));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        let (rest, force_tls) = if let Some(r) = s.strip_prefix("tcp://") {
            (r, false)
        } else if let Some(r) = s.strip_prefix("http://") {
            (r, false)
        } else if let Some(r) = s.strip_prefix("https://") {
            (r, true)
        } else {
            return Err(bad(
                "unknown scheme; write unix:///path, tcp://HOST:PORT or https://HOST:PORT",
            ));
        };
        let addr = rest.trim_end_matches('/');
        if addr.is_empty() {
            return Err(bad("missing host"));
        }
        let addr = if addr.contains(':') {
            addr.to_string()
        } else {
            // The docker CLI's defaults: 2376 with TLS, 2375 without.
            format!(
                "{addr}:{}",
                if tls.is_some() || force_tls {
                    2376
                } else {
                    2375
                }
            )
        };
        let tls = match (tls, force_tls) {
            (Some(t), _) => Some(t.clone()),
            (None, true) => TlsFiles::from_env().or_else(|| {
                Some(TlsFiles {
                    ca: PathBuf::from("ca.pem"),
                    cert: PathBuf::from("cert.pem"),
                    key: PathBuf::from("key.pem"),
                })
            }),
            (None, false) => None,
        };
        Ok(Endpoint::Tcp { addr, tls })
    }

    /// A comma-separated list, as `--docker-host` takes it.
    pub(crate) fn parse_list(s: &str, tls: Option<&TlsFiles>) -> Result<Vec<Self>, ApiError> {
        let list: Vec<Endpoint> = s
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|p| Endpoint::parse(p, tls))
            .collect::<Result<_, _>>()?;
        if list.is_empty() {
            return Err(ApiError::Config {
                endpoint: s.to_string(),
                message: "no endpoint given; set --docker-host or DOCKER_HOST".into(),
            });
        }
        Ok(list)
    }

    pub fn display(&self) -> String {
        match self {
            Endpoint::Unix(p) => format!("unix://{}", p.display()),
            Endpoint::Tcp { addr, tls: None } => format!("tcp://{addr}"),
            Endpoint::Tcp { addr, tls: Some(_) } => format!("tcp://{addr} (tls)"),
        }
    }

    /// The TLS verdict in a failed call's error, when the endpoint uses TLS and it was one.
    fn tls_failure(&self, err: &bollard::errors::Error) -> Option<TlsFailure> {
        use bollard::errors::Error as E;
        let Endpoint::Tcp {
            addr,
            tls: Some(files),
        } = self
        else {
            return None;
        };
        // bollard's transparent variants skip their inner error in `source()`: start there.
        let chain: &(dyn std::error::Error + 'static) = match err {
            E::IOError { err } => err,
            E::HyperResponseError { err } => err,
            other => other,
        };
        TlsFailure::find(chain, addr, files)
    }

    fn connect(&self, version: &ClientVersion) -> Result<Docker, bollard::errors::Error> {
        match self {
            Endpoint::Unix(path) => {
                Docker::connect_with_unix(&path.to_string_lossy(), REQUEST_TIMEOUT_SECS, version)
            }
            Endpoint::Tcp { addr, tls: None } => {
                Docker::connect_with_http(addr, REQUEST_TIMEOUT_SECS, version)
            }
            Endpoint::Tcp {
                addr,
                tls: Some(tls),
            } => Docker::connect_with_ssl(
                addr,
                &tls.key,
                &tls.cert,
                &tls.ca,
                REQUEST_TIMEOUT_SECS,
                version,
            ),
        }
    }
}

/// "client version 1.53 is too new. Maximum supported API version is 1.41" -> 1.41.
pub(crate) fn max_version_from_error(message: &str) -> Option<ClientVersion> {
    let tail = message.split("Maximum supported API version is").nth(1)?;
    let v = tail.trim().trim_end_matches('.');
    let (major, minor) = v.split_once('.')?;
    Some(ClientVersion {
        major_version: major.trim().parse().ok()?,
        minor_version: minor
            .trim()
            .trim_end_matches(|c: char| !c.is_ascii_digit())
            .parse()
            .ok()?,
    })
}

/// Connects and agrees on an API version with this engine: bollard's newest, stepped down to
/// what the engine supports. `negotiate_version` alone is not enough: it asks `/v1.53/version`,
/// which an engine older than 1.53 refuses with 400 "client version … is too new".
pub async fn connect_negotiated(endpoint: &Endpoint) -> Result<(Docker, String), ApiError> {
    let docker = endpoint
        .connect(API_DEFAULT_VERSION)
        .map_err(|e| ApiError::Config {
            endpoint: endpoint.display(),
            message: e.to_string(),
        })?;
    let docker = match docker.negotiate_version().await {
        Ok(d) => d,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 400,
            message,
        }) if max_version_from_error(&message).is_some() => {
            let max = max_version_from_error(&message).expect("checked");
            let docker = endpoint.connect(&max).map_err(|e| ApiError::Config {
                endpoint: endpoint.display(),
                message: e.to_string(),
            })?;
            docker
                .version()
                .await
                .map_err(|e| ApiError::from_call(endpoint, e))?;
            docker
        }
        Err(bollard::errors::Error::APIVersionParseError {}) => {
            return Err(ApiError::ApiVersion {
                endpoint: endpoint.display(),
                reported: None,
            });
        }
        Err(e) => return Err(ApiError::from_call(endpoint, e)),
    };
    let v = docker.client_version();
    let version = format!("{}.{}", v.major_version, v.minor_version);
    if (v.major_version, v.minor_version) < MIN_API_VERSION {
        return Err(ApiError::ApiVersion {
            endpoint: endpoint.display(),
            reported: Some(version),
        });
    }
    Ok((docker, version))
}

/// A manager's clients, for the API version agreed with its engine.
#[derive(Clone)]
struct Connected {
    docker: Docker,
    lean: LeanClient,
    /// `1.41`, `1.45`, ...
    version: String,
}

struct ManagerClient {
    endpoint: Endpoint,
    /// Negotiated clients; dropped on a connection error so the next call negotiates again
    /// (the engine behind the address may have been upgraded meanwhile).
    connected: Mutex<Option<Connected>>,
    /// The swarm node behind the endpoint, as its engine last said (`/info`).
    node_id: std::sync::Mutex<Option<String>>,
    /// That node's address (`/info` `Swarm.NodeAddr`), which a locked manager still reports
    /// when it no longer knows its node ID.
    node_addr: std::sync::Mutex<Option<String>>,
    /// Why the endpoint is misconfigured, as last logged.
    problem: std::sync::Mutex<Option<String>>,
    /// When a request to it last went unanswered until its timeout (see
    /// [`UNRESPONSIVE_COOLDOWN`]); cleared by an answer.
    unresponsive_at: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl ManagerClient {
    async fn connected(&self) -> Result<Connected, ApiError> {
        let mut guard = self.connected.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let (docker, version) = connect_negotiated(&self.endpoint).await?;
        let lean = LeanClient::new(&self.endpoint).map_err(|e| ApiError::Tls {
            endpoint: self.endpoint.display(),
            source: Arc::new(e),
        })?;
        tracing::debug!(endpoint = %self.endpoint.display(), api_version = %version, "connected");
        let c = Connected {
            docker,
            lean,
            version,
        };
        *guard = Some(c.clone());
        Ok(c)
    }

    async fn forget(&self) {
        *self.connected.lock().await = None;
    }

    /// Whether a request to it hung within the last [`UNRESPONSIVE_COOLDOWN`].
    fn is_unresponsive(&self) -> bool {
        self.unresponsive_at
            .lock()
            .expect("poisoned")
            .is_some_and(|at| at.elapsed() < UNRESPONSIVE_COOLDOWN)
    }

    /// Notes how a request ended: `hung` (taken and not answered within its timeout), or
    /// answered (`ok`); a refused or dropped connection changes nothing.
    fn note_responsive(&self, hung: bool, ok: bool) {
        let mut at = self.unresponsive_at.lock().expect("poisoned");
        if hung {
            if at.is_none() {
                tracing::warn!(endpoint = %self.endpoint.display(), "the manager's endpoint takes requests and does not answer; asking the other managers first");
            }
            *at = Some(tokio::time::Instant::now());
        } else if ok {
            *at = None;
        }
    }

    /// A GET with no answer: a TLS verdict, else the endpoint is unreachable.
    fn get_failed(&self, err: GetError) -> ApiError {
        if let Endpoint::Tcp {
            addr,
            tls: Some(files),
        } = &self.endpoint
            && let Some(failure) = TlsFailure::find(&err, addr, files)
        {
            return ApiError::TlsHandshake(Box::new(failure));
        }
        ApiError::Unreachable {
            endpoints: self.endpoint.display(),
            last: err.to_string(),
        }
    }

    /// `op` once on this endpoint; a connection failure is `Unreachable`.
    async fn call<T, F, Fut>(&self, op: &F) -> Result<T, ApiError>
    where
        F: Fn(Docker) -> Fut,
        Fut: Future<Output = Result<T, bollard::errors::Error>>,
    {
        let docker = self.connected().await?.docker;
        op(docker)
            .await
            .map_err(|e| ApiError::from_call(&self.endpoint, e))
    }

    /// One GET on this endpoint: the answer's body, or the engine's error as `ApiError`.
    async fn get(
        &self,
        call: &'static str,
        path_and_query: &str,
        max_body: usize,
    ) -> Result<bytes::Bytes, ApiError> {
        let c = self.connected().await?;
        let timeout = Duration::from_secs(REQUEST_TIMEOUT_SECS);
        let answer = c
            .lean
            .get(&c.version, path_and_query, timeout, max_body)
            .await;
        self.answered(call, answer).map(|a| a.body)
    }

    /// As [`Self::get`], but a successful answer's body is handed to `sink` as it arrives and
    /// never held whole; returns how many bytes it had.
    async fn get_streamed(
        &self,
        call: &'static str,
        path_and_query: &str,
        max_body: usize,
        sink: &mut (dyn FnMut(&[u8]) + Send),
    ) -> Result<u64, ApiError> {
        let c = self.connected().await?;
        let timeout = Duration::from_secs(REQUEST_TIMEOUT_SECS);
        let mut bytes = 0u64;
        let mut counted = |chunk: &[u8]| {
            bytes += chunk.len() as u64;
            sink(chunk);
        };
        let lean = &c.lean;
        let answer =
            (lean.get_streamed(&c.version, path_and_query, timeout, max_body, &mut counted)).await;
        self.answered(call, answer).map(|_| bytes)
    }

    /// A successful answer, or why there is none.
    fn answered(
        &self,
        call: &'static str,
        answer: Result<lean_get::Answer, GetError>,
    ) -> Result<lean_get::Answer, ApiError> {
        let answer = answer.map_err(|e| match e {
            GetError::TooLarge { limit } => ApiError::TooLarge {
                endpoint: self.endpoint.display(),
                call,
                limit,
            },
            e => self.get_failed(e),
        })?;
        if answer.status.is_success() {
            return Ok(answer);
        }
        Err(ApiError::from_answer(
            answer.status.as_u16(),
            engine_message(&answer.body),
        ))
    }

    fn node_id(&self) -> Option<String> {
        self.node_id.lock().expect("poisoned").clone()
    }

    fn node_addr(&self) -> Option<String> {
        self.node_addr.lock().expect("poisoned").clone()
    }

    /// Remembers which node this endpoint is; a locked manager's `/info` has no node ID, so
    /// the one remembered from before is filled in.
    fn remember(&self, info: &mut SystemInfo) {
        let Some(swarm) = info.swarm.as_mut() else {
            return;
        };
        if let Some(addr) = swarm.node_addr.clone().filter(|a| !a.is_empty()) {
            *self.node_addr.lock().expect("poisoned") = Some(addr);
        }
        match swarm.node_id.clone().filter(|id| !id.is_empty()) {
            Some(id) => *self.node_id.lock().expect("poisoned") = Some(id),
            None => swarm.node_id = self.node_id(),
        }
    }

    /// `POST /swarm/unlock` on this endpoint.
    async fn unlock(&self, key: &str) -> Result<(), ApiError> {
        let body = serde_json::to_vec(&bollard::models::SwarmUnlockRequest {
            unlock_key: Some(key.to_string()),
        })
        .expect("an unlock request serializes");
        // The engine answers once the swarm component has started again.
        let timeout = Duration::from_secs(REQUEST_TIMEOUT_SECS * 3);
        self.post("/swarm/unlock", body.into(), timeout).await
    }

    /// One POST of a JSON body on this endpoint; an error answer as `ApiError`.
    async fn post(
        &self,
        path_and_query: &str,
        body: bytes::Bytes,
        timeout: Duration,
    ) -> Result<(), ApiError> {
        let c = self.connected().await?;
        let answer = c
            .lean
            .post_json(&c.version, path_and_query, body, timeout)
            .await
            .map_err(|e| self.get_failed(e))?;
        if answer.status.is_success() {
            return Ok(());
        }
        Err(ApiError::from_answer(
            answer.status.as_u16(),
            engine_message(&answer.body),
        ))
    }
}

/// The node ID an engine's `/info` says it is, if any.
fn claimed_node_id(info: &SystemInfo) -> Option<&str> {
    let id = info.swarm.as_ref()?.node_id.as_deref()?;
    Some(id).filter(|id| !id.is_empty())
}

/// One [`ApiError::IdentityConflict`] per node ID that more than one endpoint's engine claims.
fn identity_conflicts(infos: &[(&ManagerClient, SystemInfo)]) -> Vec<ApiError> {
    let mut claims: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (manager, info) in infos {
        if let Some(id) = claimed_node_id(info) {
            claims
                .entry(id)
                .or_default()
                .push(manager.endpoint.display());
        }
    }
    claims
        .into_iter()
        .filter(|(_, endpoints)| endpoints.len() > 1)
        .map(|(node_id, endpoints)| ApiError::IdentityConflict {
            node_id: node_id.to_string(),
            endpoints: endpoints.join(", "),
        })
        .collect()
}

/// The `message` of an engine's error answer, or the body as text.
fn engine_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct EngineMessage {
        message: String,
    }
    serde_json::from_slice::<EngineMessage>(body)
        .map(|m| m.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned())
}

impl ManagerClient {
    /// Logs a misconfigured endpoint once per change (calls on it fail every pass), and when
    /// it is fixed.
    fn note_problem(&self, problem: Option<&ApiError>) {
        let text = problem.map(ApiError::to_string);
        let mut known = self.problem.lock().expect("poisoned");
        if *known == text {
            return;
        }
        match (&text, problem) {
            (Some(text), Some(e)) => {
                tracing::error!(endpoint = %self.endpoint.display(), error = e.metric_label(), "{text}")
            }
            _ => {
                tracing::info!(endpoint = %self.endpoint.display(), "the manager's endpoint answers again")
            }
        }
        *known = text;
    }
}

/// Says which endpoint serves the event stream while the stream lives.
struct EventSource {
    slot: Arc<std::sync::Mutex<Option<String>>>,
    endpoint: String,
}

impl EventSource {
    fn open(slot: &Arc<std::sync::Mutex<Option<String>>>, endpoint: &str) -> Self {
        *slot.lock().expect("poisoned") = Some(endpoint.to_string());
        Self {
            slot: slot.clone(),
            endpoint: endpoint.to_string(),
        }
    }
}

impl Drop for EventSource {
    fn drop(&mut self) {
        // A stream opened since (a hand-over) has put its own endpoint here: leave it.
        if let Ok(mut slot) = self.slot.lock()
            && slot.as_deref() == Some(self.endpoint.as_str())
        {
            *slot = None;
        }
    }
}

/// Managers whose engine a command is stopping or restarting, by node ID (a count: an upgrade
/// and its rollback may overlap).
type StandbyNodes = Arc<std::sync::Mutex<BTreeMap<String, usize>>>;

/// While held, calls avoid the node's manager endpoint as long as another answers, and
/// per-manager views skip it: on the real lab a request in flight on a manager whose engine was
/// stopping held its shutdown for 8 s. Dropped when the command ends.
#[must_use = "the node is on standby only while the guard is held"]
pub struct Standby {
    nodes: StandbyNodes,
    node_id: String,
}

impl Drop for Standby {
    fn drop(&mut self) {
        let mut nodes = self.nodes.lock().expect("poisoned");
        if let Some(count) = nodes.get_mut(&self.node_id) {
            *count -= 1;
            if *count == 0 {
                nodes.remove(&self.node_id);
            }
        }
    }
}

/// Observer of API errors, so the metrics can count them without this module knowing metrics.
pub type ErrorHook = Arc<dyn Fn(&ApiError) + Send + Sync>;

/// Observer of requests: the call's name and the bytes of its answer (0 where bollard reads
/// the answer, which does not say its size).
pub type RequestHook = Arc<dyn Fn(&'static str, u64) + Send + Sync>;

/// All configured managers; calls go to the last one that answered and fail over to the others.
#[derive(Clone)]
pub struct Swarm {
    managers: Arc<Vec<ManagerClient>>,
    preferred: Arc<AtomicUsize>,
    standby: StandbyNodes,
    /// Nodes last seen (or just made) workers: their endpoints can no longer serve cluster
    /// calls, and a demoted leader's held a request for 8 s on the real lab before failing.
    workers: Arc<std::sync::Mutex<BTreeSet<String>>>,
    /// Told when a manager is to be avoided, so that the event stream moves off it at once.
    avoid_changed: Arc<tokio::sync::Notify>,
    /// The endpoint serving the event stream while one is open (see [`Self::events`]).
    event_source: Arc<std::sync::Mutex<Option<String>>>,
    on_error: Option<ErrorHook>,
    on_request: Option<RequestHook>,
    /// How long a call keeps trying every endpoint before it gives up.
    patience: Duration,
    /// The largest answer [`Self::get_json`] reads.
    max_answer_bytes: usize,
}

impl Swarm {
    pub fn new(endpoints: Vec<Endpoint>) -> Self {
        Self {
            managers: Arc::new(
                endpoints
                    .into_iter()
                    .map(|endpoint| ManagerClient {
                        endpoint,
                        connected: Mutex::new(None),
                        node_id: std::sync::Mutex::new(None),
                        node_addr: std::sync::Mutex::new(None),
                        problem: std::sync::Mutex::new(None),
                        unresponsive_at: std::sync::Mutex::new(None),
                    })
                    .collect(),
            ),
            preferred: Arc::new(AtomicUsize::new(0)),
            standby: StandbyNodes::default(),
            workers: Arc::default(),
            avoid_changed: Arc::default(),
            event_source: Arc::default(),
            on_error: None,
            on_request: None,
            patience: Duration::from_secs(30),
            max_answer_bytes: DEFAULT_MAX_ANSWER_BYTES,
        }
    }

    /// Refuse answers to [`Self::get_json`] larger than `bytes` (a [`ApiError::TooLarge`]).
    pub fn with_max_answer_bytes(mut self, bytes: usize) -> Self {
        self.max_answer_bytes = bytes;
        self
    }

    pub fn with_error_hook(mut self, hook: ErrorHook) -> Self {
        self.on_error = Some(hook);
        self
    }

    pub fn with_request_hook(mut self, hook: RequestHook) -> Self {
        self.on_request = Some(hook);
        self
    }

    fn count_request(&self, call: &'static str, bytes: u64) {
        if let Some(hook) = &self.on_request {
            hook(call, bytes);
        }
    }

    pub fn with_patience(mut self, patience: Duration) -> Self {
        self.patience = patience;
        self
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.managers.iter().map(|m| m.endpoint.display()).collect()
    }

    /// Runs `op` against a manager, failing over on connection errors and on managers that
    /// cannot serve (no leader, not a manager), with backoff until `patience` runs out.
    pub async fn call<T, F, Fut>(&self, op: F) -> Result<T, ApiError>
    where
        F: Fn(Docker) -> Fut,
        Fut: Future<Output = Result<T, bollard::errors::Error>>,
    {
        self.call_named("other", op).await
    }

    async fn call_named<T, F, Fut>(&self, call: &'static str, op: F) -> Result<T, ApiError>
    where
        F: Fn(Docker) -> Fut,
        Fut: Future<Output = Result<T, bollard::errors::Error>>,
    {
        self.with_failover(|m: &ManagerClient| {
            self.count_request(call, 0);
            m.call(&op)
        })
        .await
    }

    /// `GET path_and_query` (below the API version, e.g. `/nodes`) on a manager, with the same
    /// failover as [`Self::call`], parsed into `T`; counted under `call` with its bytes.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        call: &'static str,
        path_and_query: &str,
    ) -> Result<T, ApiError> {
        // Decoded inside the failover: a malformed answer is counted and retried like any
        // other failure of that manager.
        self.with_failover(|m: &ManagerClient| async move {
            let body = m.get(call, path_and_query, self.max_answer_bytes).await;
            let bytes = body.as_ref().map_or(0, |b| b.len() as u64);
            tracing::trace!(call, path = path_and_query, bytes, "read");
            self.count_request(call, bytes);
            serde_json::from_slice(&body?).map_err(|e| ApiError::Decode {
                call,
                source: Arc::new(e),
            })
        })
        .await
    }

    async fn with_failover<'a, T, F, Fut>(&'a self, op: F) -> Result<T, ApiError>
    where
        F: Fn(&'a ManagerClient) -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(2))
            .with_max_times(usize::MAX)
            .with_total_delay(Some(self.patience))
            .with_jitter();
        (|| self.round(&op))
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(ApiError::try_elsewhere_or_later)
            .notify(
                |e, after| tracing::debug!(error = %e, ?after, "no manager could serve; retrying"),
            )
            .await
    }

    /// Puts a node's manager endpoint on standby until the guard is dropped (see [`Standby`]).
    pub fn standby(&self, node_id: &str) -> Standby {
        *self
            .standby
            .lock()
            .expect("poisoned")
            .entry(node_id.to_string())
            .or_default() += 1;
        self.avoid_changed.notify_waiters();
        Standby {
            nodes: self.standby.clone(),
            node_id: node_id.to_string(),
        }
    }

    /// Resolves when a manager starts to be avoided ([`Self::standby`], [`Self::note_demoted`]).
    pub(crate) async fn avoid_changed(&self) {
        self.avoid_changed.notified().await;
    }

    /// Waits (up to a second) until the event stream is no longer served by the node's
    /// endpoint: its engine is about to stop, and an open stream holds up the shutdown or
    /// breaks, which costs a full listing.
    pub(crate) async fn event_stream_moved_off(&self, node_id: &str) {
        let on_node = || {
            let source = self.event_source.lock().expect("poisoned").clone();
            (self.managers.iter()).any(|m| {
                Some(m.endpoint.display()) == source && m.node_id().as_deref() == Some(node_id)
            })
        };
        for _ in 0..50 {
            if !on_node() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn on_standby(&self, manager: &ManagerClient) -> bool {
        manager.node_id().is_some_and(|id| self.avoids(&id))
    }

    /// The nodes that are workers now, as observed: their endpoints go last, like a standby.
    pub(crate) fn note_workers<'a>(&self, workers: impl IntoIterator<Item = &'a str>) {
        *self.workers.lock().expect("poisoned") = workers.into_iter().map(str::to_string).collect();
    }

    /// A manager just demoted: its endpoint goes last from the next call on, before the next
    /// observation says so. Both are needed: each observation replaces the set (a node promoted
    /// back leaves it), and between the demotion and that observation a request to the demoted
    /// node's own endpoint hangs for seconds (about 9 s on the lab).
    pub(crate) fn note_demoted(&self, node_id: &str) {
        self.workers
            .lock()
            .expect("poisoned")
            .insert(node_id.to_string());
        self.avoid_changed.notify_waiters();
    }

    /// The order of one round: from the endpoint that answered last, managers on standby last
    /// (still tried: with a single endpoint the operator waits for that manager to come back).
    /// Unresponsive managers are left out while another one may answer: a round that reached
    /// one would wait out its request timeout; the next round, after a backoff, asks again.
    fn round_order(&self) -> Vec<usize> {
        let n = self.managers.len();
        let start = self.preferred.load(Ordering::Relaxed);
        let (mut order, mut standby, mut unresponsive) = (vec![], vec![], vec![]);
        for i in (0..n).map(|k| (start + k) % n) {
            let m = &self.managers[i];
            if m.is_unresponsive() {
                unresponsive.push(i);
            } else if self.on_standby(m) {
                standby.push(i);
            } else {
                order.push(i);
            }
        }
        order.append(&mut standby);
        if order.is_empty() {
            order = unresponsive;
        }
        order
    }

    /// One try on every endpoint, in [`Self::round_order`].
    async fn round<'a, T, F, Fut>(&'a self, op: &F) -> Result<T, ApiError>
    where
        F: Fn(&'a ManagerClient) -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        let (mut last, mut misconfigured) = (None, None);
        for i in self.round_order() {
            let manager = &self.managers[i];
            let asked = tokio::time::Instant::now();
            let result = op(manager).await;
            manager.note_responsive(hung(&result, asked.elapsed()), result.is_ok());
            match result {
                Ok(v) => {
                    self.preferred.store(i, Ordering::Relaxed);
                    manager.note_problem(None);
                    return Ok(v);
                }
                Err(e) => {
                    self.report(&e);
                    if matches!(e, ApiError::Unreachable { .. }) || e.is_version_too_new() {
                        manager.forget().await;
                    } else if !e.try_elsewhere() {
                        return Err(e);
                    }
                    tracing::debug!(endpoint = %manager.endpoint.display(), error = %e, "trying another manager");
                    if e.is_misconfigured() {
                        manager.note_problem(Some(&e));
                        misconfigured.get_or_insert_with(|| e.clone());
                    }
                    last = Some(e);
                }
            }
        }
        // A certificate to fix says more than "unreachable" from another manager being upgraded.
        Err(match misconfigured.or(last) {
            Some(ApiError::Unreachable { last, .. }) => ApiError::Unreachable {
                endpoints: self.endpoints().join(", "),
                last,
            },
            Some(other) => other,
            None => ApiError::NoEndpoints,
        })
    }

    fn report(&self, e: &ApiError) {
        if let Some(hook) = &self.on_error {
            hook(e);
        }
    }

    pub async fn nodes(&self) -> Result<Vec<Node>, ApiError> {
        self.call_named("nodes", |d| async move {
            d.list_nodes(None::<ListNodesOptions>).await
        })
        .await
    }

    pub async fn node(&self, id: &str) -> Result<Node, ApiError> {
        self.call_named("node", |d| async move { d.inspect_node(id).await })
            .await
    }

    pub async fn tasks(&self) -> Result<Vec<Task>, ApiError> {
        self.call_named("tasks", |d| async move {
            d.list_tasks(None::<ListTasksOptions>).await
        })
        .await
    }

    pub async fn services(&self) -> Result<Vec<Service>, ApiError> {
        self.call_named("services", |d| async move {
            d.list_services(None::<ListServicesOptions>).await
        })
        .await
    }

    pub async fn networks(&self) -> Result<Vec<Network>, ApiError> {
        self.call_named("networks", |d| async move {
            d.list_networks(None::<bollard::query_parameters::ListNetworksOptions>)
                .await
        })
        .await
    }

    /// One update with the version index the caller read. A stale index is `OutOfSequence`.
    pub async fn update_node(
        &self,
        id: &str,
        spec: NodeSpec,
        version: u64,
    ) -> Result<(), ApiError> {
        let version = i64::try_from(version).map_err(|_| ApiError::VersionOverflow(version))?;
        self.call_named("node_update", |d| {
            let spec = spec.clone();
            async move { d.update_node(id, spec, UpdateNodeOptions { version }).await }
        })
        .await
    }

    /// Every manager's `/info` (its own view of itself), remembering which node each endpoint
    /// is, so that [`Self::standby`] can name endpoints by node. Managers on standby are skipped.
    /// A locked manager's answer carries the node ID remembered for its endpoint, if any.
    pub async fn manager_infos(&self) -> Vec<SystemInfo> {
        let infos: Vec<(&ManagerClient, SystemInfo)> = self
            .each_manager("info", |d| async move { d.info().await })
            .await
            .into_iter()
            .filter_map(|(manager, info)| Some((manager, info.ok()?)))
            .collect();
        let conflicts = identity_conflicts(&infos);
        for conflict in &conflicts {
            tracing::warn!(error = conflict.metric_label(), "{conflict}");
            self.report(conflict);
        }
        infos
            .into_iter()
            .filter(|(_, info)| {
                let id = claimed_node_id(info);
                !conflicts.iter().any(|c| {
                    matches!(c, ApiError::IdentityConflict { node_id, .. } if Some(node_id.as_str()) == id)
                })
            })
            .map(|(manager, mut info)| {
                manager.remember(&mut info);
                info
            })
            .collect()
    }

    /// `POST /swarm/unlock` with `key` on the node's own engine (found by the node ID or the
    /// address its endpoint reported in [`Self::manager_infos`]); never on another manager.
    pub async fn unlock(&self, node_id: &str, node_addr: &str, key: &str) -> Result<(), ApiError> {
        let own = self.own_engine(node_id, node_addr).ok_or_else(|| {
            ApiError::NotFound(format!(
                "no --docker-host endpoint is node {node_id}'s own engine"
            ))
        })?;
        self.count_request("unlock", 0);
        let result = own.unlock(key).await;
        if let Err(e) = &result {
            self.report(e);
        }
        result
    }

    /// The endpoint that is the node's own engine, by the node ID or the address it reported.
    fn own_engine(&self, node_id: &str, node_addr: &str) -> Option<&ManagerClient> {
        let addr = Some(node_addr).filter(|a| !a.is_empty());
        let by_id = self
            .managers
            .iter()
            .find(|m| m.node_id().as_deref() == Some(node_id));
        by_id.or_else(|| {
            self.managers
                .iter()
                .find(|m| m.node_addr().as_deref() == addr)
        })
    }

    /// The node's own `/info`, even while its endpoint is on standby (a demoted manager's is):
    /// from the endpoint known to be that node, else from those not identified yet (after a
    /// restart, a node demoted before it was never asked). Each is waited for
    /// [`PER_MANAGER_VIEW_TIMEOUT`] at most; `None` if none answers as that node.
    pub(crate) async fn own_info(&self, node_id: &str) -> Option<SystemInfo> {
        let candidates: Vec<&ManagerClient> = match self.own_engine(node_id, "") {
            Some(own) => vec![own],
            None => self
                .managers
                .iter()
                .filter(|m| m.node_id().is_none())
                .collect(),
        };
        for manager in candidates {
            self.count_request("info", 0);
            let call = manager.call(&|d: Docker| async move { d.info().await });
            let Ok(Ok(mut info)) = tokio::time::timeout(PER_MANAGER_VIEW_TIMEOUT, call).await
            else {
                continue;
            };
            manager.remember(&mut info);
            if claimed_node_id(&info) == Some(node_id) {
                return Some(info);
            }
        }
        None
    }

    /// `GET /swarm` as the engine sent it, every field kept: for a read-modify-write of the
    /// spec that must not drop a setting this operator's API model does not know.
    pub async fn swarm_object(&self) -> Result<serde_json::Value, ApiError> {
        self.get_json("swarm", "/swarm").await
    }

    /// `POST /swarm/update?version=N` with the whole `spec` as read (and changed) from
    /// [`Self::swarm_object`]; rotates no token or key. A stale `version` is `OutOfSequence`.
    pub async fn update_swarm_spec(
        &self,
        spec: &serde_json::Value,
        version: u64,
    ) -> Result<(), ApiError> {
        let path = format!(
            "/swarm/update?version={version}&rotateWorkerToken=false&rotateManagerToken=false&rotateManagerUnlockKey=false"
        );
        let body = bytes::Bytes::from(serde_json::to_vec(spec).expect("JSON serializes"));
        let timeout = Duration::from_secs(REQUEST_TIMEOUT_SECS);
        self.with_failover(|m: &ManagerClient| {
            self.count_request("swarm_update", 0);
            m.post(&path, body.clone(), timeout)
        })
        .await
    }

    async fn each_manager<T, F, Fut>(
        &self,
        call: &'static str,
        op: F,
    ) -> Vec<(&ManagerClient, Result<T, ApiError>)>
    where
        F: Fn(Docker) -> Fut,
        Fut: Future<Output = Result<T, bollard::errors::Error>>,
    {
        let op = &op;
        self.per_manager(Fanout::AtOnce, |manager| async move {
            self.count_request(call, 0);
            manager.call(op).await
        })
        .await
    }

    /// `view` on every available manager, as `fanout` says, each waited for
    /// [`PER_MANAGER_VIEW_TIMEOUT`] at most: a manager that hangs is noted unresponsive, a
    /// misconfigured one reported.
    async fn per_manager<'a, T, F, Fut>(
        &'a self,
        fanout: Fanout,
        view: F,
    ) -> Vec<(&'a ManagerClient, Result<T, ApiError>)>
    where
        F: Fn(&'a ManagerClient) -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        let available = self
            .managers
            .iter()
            .filter(|m| !self.on_standby(m) && !m.is_unresponsive());
        let calls = available.map(|manager| {
            let view = &view;
            async move {
                let result =
                    match tokio::time::timeout(PER_MANAGER_VIEW_TIMEOUT, view(manager)).await {
                        Ok(result) => result,
                        Err(_) => {
                            let hung = ApiError::Unreachable {
                                endpoints: manager.endpoint.display(),
                                last: format!("no answer within {PER_MANAGER_VIEW_TIMEOUT:?}"),
                            };
                            self.report(&hung);
                            manager.note_responsive(true, false);
                            return (manager, Err(hung));
                        }
                    };
                manager.note_responsive(false, result.is_ok());
                if let Err(e) = &result
                    && e.is_misconfigured()
                {
                    self.report(e);
                    manager.note_problem(Some(e));
                }
                (manager, result)
            }
        });
        match fanout {
            Fanout::AtOnce => futures::future::join_all(calls).await,
            Fanout::OneAtATime => {
                let mut answers = vec![];
                for call in calls {
                    answers.push(call.await);
                }
                answers
            }
        }
    }

    /// A network's gossiped service endpoints as each manager sees them (`GET
    /// /networks/{id}?verbose=true&scope=swarm`), counted by host address as the answer
    /// arrives: at 30,000 tasks it is 6.3 MB per manager, and none of it is held.
    pub(crate) async fn network_endpoints_on_every_manager(
        &self,
        id: &str,
    ) -> Vec<Result<NetworkEndpoints, ApiError>> {
        let path = &format!("/networks/{id}?verbose=true&scope=swarm");
        let call = "network_verbose";
        self.per_manager(Fanout::OneAtATime, |manager| async move {
            let mut counts = host_counts::HostCounts::default();
            let read = manager
                .get_streamed(call, path, self.max_answer_bytes, &mut |c| counts.feed(c))
                .await;
            self.count_request(call, *read.as_ref().unwrap_or(&0));
            read?;
            let tasks_by_host = counts.finish().map_err(|e| ApiError::Decode {
                call,
                source: Arc::new(serde::de::Error::custom(e)),
            })?;
            Ok(NetworkEndpoints { tasks_by_host })
        })
        .await
        .into_iter()
        .map(|(_, result)| result)
        .collect()
    }

    /// Node, service and network events from the preferred manager: what changed, for the
    /// reflector to re-read (the events are not a source of truth themselves). Also says which
    /// endpoint serves the stream, when another could: see [`Self::avoids_endpoint`]. With `since` (the
    /// engine's `seconds.nanoseconds`), the engine first replays the events it still holds
    /// from then.
    pub async fn events(
        &self,
        since: Option<String>,
    ) -> Result<
        (
            Option<String>,
            impl Stream<Item = Result<EventMessage, bollard::errors::Error>> + use<>,
        ),
        ApiError,
    > {
        let (docker, serving, avoided) = self
            .with_failover(|m: &ManagerClient| async move {
                self.count_request("events", 0);
                let ping = |d: Docker| async move { d.ping().await.map(|_| d) };
                let docker = m.call(&ping).await?;
                Ok((docker, m.endpoint.display(), self.on_standby(m)))
            })
            .await?;
        let filters = HashMap::from([(
            "type".to_string(),
            vec![
                "node".to_string(),
                "service".to_string(),
                "network".to_string(),
            ],
        )]);
        let source = EventSource::open(&self.event_source, &serving);
        // Served by a manager to avoid only because no other answered: keep it.
        let endpoint = (!avoided).then_some(serving);
        let stream = docker
            .events(Some(EventsOptions {
                since,
                until: None,
                filters: Some(filters),
            }))
            // The source is known to be open for as long as the stream lives.
            .map(move |event| {
                let _open = &source;
                event
            });
        Ok((endpoint, stream))
    }

    /// Whether calls should avoid this endpoint now (see [`Self::avoids`]), by the node it
    /// is known to be by now.
    pub(crate) fn avoids_endpoint(&self, endpoint: &str) -> bool {
        (self.managers.iter())
            .find(|m| m.endpoint.display() == endpoint)
            .is_some_and(|m| self.on_standby(m))
    }

    /// Whether calls should avoid the node's endpoint now: it is on standby (its engine is
    /// being upgraded) or it is a worker (demoted). An open request on a manager whose engine
    /// stops holds up its shutdown.
    pub(crate) fn avoids(&self, node_id: &str) -> bool {
        self.standby.lock().expect("poisoned").contains_key(node_id)
            || self.workers.lock().expect("poisoned").contains(node_id)
    }
}

/// The part of a verbose network inspect the operator reads: per host address, how many
/// task endpoints the managers' overlay gossip announces on it (over all services).
#[derive(Debug, Default)]
pub struct NetworkEndpoints {
    pub tasks_by_host: BTreeMap<String, usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints_like_the_docker_cli() {
        assert_eq!(
            Endpoint::parse("unix:///var/run/docker.sock", None).unwrap(),
            Endpoint::Unix("/var/run/docker.sock".into())
        );
        assert_eq!(
            Endpoint::parse("tcp://10.0.0.1", None).unwrap(),
            Endpoint::Tcp {
                addr: "10.0.0.1:2375".into(),
                tls: None
            }
        );
        let tls = TlsFiles {
            ca: "/c/ca.pem".into(),
            cert: "/c/cert.pem".into(),
            key: "/c/key.pem".into(),
        };
        assert_eq!(
            Endpoint::parse("tcp://m1", Some(&tls)).unwrap(),
            Endpoint::Tcp {
                addr: "m1:2376".into(),
                tls: Some(tls.clone())
            }
        );
        let list = Endpoint::parse_list("tcp://a:1, tcp://b:2,unix:///s", None).unwrap();
        assert_eq!(list.len(), 3);
        let err = Endpoint::parse("ssh://m1", None).unwrap_err().to_string();
        assert!(err.contains("unknown scheme"), "{err}");
        assert!(Endpoint::parse_list(" , ", None).is_err());
    }

    #[test]
    fn reads_the_max_version_from_the_real_too_new_errors() {
        for (file, want) in [("20.10.24", (1, 41)), ("26.1.5", (1, 45))] {
            let body: serde_json::Value =
                swarm_sim::captures::json(&format!("{file}/api-version-too-new.body"));
            let v = max_version_from_error(body["message"].as_str().unwrap()).unwrap();
            assert_eq!((v.major_version, v.minor_version), want);
        }
        assert!(max_version_from_error("something else").is_none());
    }

    #[test]
    fn classifies_the_real_stale_version_error() {
        let body: serde_json::Value =
            swarm_sim::captures::json("20.10.24/node-update-stale-version.body");
        let e = ApiError::from_bollard(bollard::errors::Error::DockerResponseServerError {
            status_code: 500,
            message: body["message"].as_str().unwrap().to_string(),
        });
        assert!(matches!(e, ApiError::OutOfSequence));
        assert_eq!(e.metric_label(), "out_of_sequence");
    }
}
