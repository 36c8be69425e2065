//! The edge to the Docker Engine API: several manager endpoints, API-version negotiation per
//! engine, failover when the manager being upgraded is away, and typed errors.

use std::collections::{BTreeMap, HashMap};
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
use futures::Stream;
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;

mod lean_get;

use lean_get::LeanClient;
pub use lean_get::{GetError, TlsError};

/// Seconds bollard waits for one request.
const REQUEST_TIMEOUT_SECS: u64 = 10;

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
            ApiError::Client(_) => "client",
            ApiError::Decode { .. } => "decode",
            ApiError::VersionOverflow(_) => "invalid_version",
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

    /// Whether another manager endpoint may succeed where this one failed.
    fn try_elsewhere(&self) -> bool {
        matches!(
            self,
            ApiError::NoQuorum(_) | ApiError::Client(_) | ApiError::Decode { .. }
        )
    }

    /// Whether the whole round is worth retrying after a pause.
    fn try_elsewhere_or_later(&self) -> bool {
        self.try_elsewhere() || matches!(self, ApiError::Unreachable { .. })
    }
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
    pub fn from_env() -> Option<Self> {
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
    pub fn parse_list(s: &str, tls: Option<&TlsFiles>) -> Result<Vec<Self>, ApiError> {
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
pub fn max_version_from_error(message: &str) -> Option<ClientVersion> {
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
    let unreachable = |e: bollard::errors::Error| ApiError::Unreachable {
        endpoints: endpoint.display(),
        last: e.to_string(),
    };
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
            docker.version().await.map_err(|e| {
                if is_connectivity(&e) {
                    unreachable(e)
                } else {
                    ApiError::from_bollard(e)
                }
            })?;
            docker
        }
        Err(e) if is_connectivity(&e) => return Err(unreachable(e)),
        Err(e) => return Err(ApiError::from_bollard(e)),
    };
    let v = docker.client_version();
    let version = format!("{}.{}", v.major_version, v.minor_version);
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

    fn unreachable(&self, last: impl ToString) -> ApiError {
        ApiError::Unreachable {
            endpoints: self.endpoint.display(),
            last: last.to_string(),
        }
    }

    /// `op` once on this endpoint; a connection failure is `Unreachable`.
    async fn call<T, F, Fut>(&self, op: &F) -> Result<T, ApiError>
    where
        F: Fn(Docker) -> Fut,
        Fut: Future<Output = Result<T, bollard::errors::Error>>,
    {
        let docker = self.connected().await?.docker;
        op(docker).await.map_err(|e| {
            if is_connectivity(&e) {
                self.unreachable(e)
            } else {
                ApiError::from_bollard(e)
            }
        })
    }

    /// One GET on this endpoint: the answer's body, or the engine's error as `ApiError`.
    async fn get(&self, path_and_query: &str) -> Result<bytes::Bytes, ApiError> {
        let c = self.connected().await?;
        let timeout = Duration::from_secs(REQUEST_TIMEOUT_SECS);
        let answer = c
            .lean
            .get(&c.version, path_and_query, timeout)
            .await
            .map_err(|e| self.unreachable(e))?;
        if answer.status.is_success() {
            return Ok(answer.body);
        }
        #[derive(serde::Deserialize)]
        struct EngineMessage {
            message: String,
        }
        let message = serde_json::from_slice::<EngineMessage>(&answer.body)
            .map(|m| m.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&answer.body).into_owned());
        Err(ApiError::from_answer(answer.status.as_u16(), message))
    }

    fn node_id(&self) -> Option<String> {
        self.node_id.lock().expect("poisoned").clone()
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
    on_error: Option<ErrorHook>,
    on_request: Option<RequestHook>,
    /// How long a call keeps trying every endpoint before it gives up.
    patience: Duration,
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
                    })
                    .collect(),
            ),
            preferred: Arc::new(AtomicUsize::new(0)),
            standby: StandbyNodes::default(),
            on_error: None,
            on_request: None,
            patience: Duration::from_secs(30),
        }
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
        let body = self
            .with_failover(|m: &ManagerClient| async move {
                let body = m.get(path_and_query).await;
                self.count_request(call, body.as_ref().map_or(0, |b| b.len() as u64));
                body
            })
            .await?;
        serde_json::from_slice(&body).map_err(|e| ApiError::Decode {
            call,
            source: Arc::new(e),
        })
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
        Standby {
            nodes: self.standby.clone(),
            node_id: node_id.to_string(),
        }
    }

    fn on_standby(&self, manager: &ManagerClient) -> bool {
        manager
            .node_id()
            .is_some_and(|id| self.standby.lock().expect("poisoned").contains_key(&id))
    }

    /// The order of one round: from the endpoint that answered last, managers on standby last
    /// (still tried: with a single endpoint the operator waits for that manager to come back).
    fn round_order(&self) -> Vec<usize> {
        let n = self.managers.len();
        let start = self.preferred.load(Ordering::Relaxed);
        let (mut order, standby): (Vec<usize>, Vec<usize>) = (0..n)
            .map(|k| (start + k) % n)
            .partition(|&i| !self.on_standby(&self.managers[i]));
        order.extend(standby);
        order
    }

    /// One try on every endpoint, in [`Self::round_order`].
    async fn round<'a, T, F, Fut>(&'a self, op: &F) -> Result<T, ApiError>
    where
        F: Fn(&'a ManagerClient) -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        let mut last = None;
        for i in self.round_order() {
            let manager = &self.managers[i];
            match op(manager).await {
                Ok(v) => {
                    self.preferred.store(i, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(e) => {
                    self.report(&e);
                    if matches!(e, ApiError::Unreachable { .. }) {
                        manager.forget().await;
                    } else if !e.try_elsewhere() {
                        return Err(e);
                    }
                    tracing::debug!(endpoint = %manager.endpoint.display(), error = %e, "trying another manager");
                    last = Some(e);
                }
            }
        }
        Err(match last {
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
    pub async fn manager_infos(&self) -> Vec<SystemInfo> {
        let infos = self
            .each_manager("info", |d| async move { d.info().await })
            .await;
        infos
            .into_iter()
            .filter_map(|(manager, info)| {
                let info = info.ok()?;
                if let Some(id) = info.swarm.as_ref().and_then(|s| s.node_id.clone())
                    && !id.is_empty()
                {
                    *manager.node_id.lock().expect("poisoned") = Some(id);
                }
                Some(info)
            })
            .collect()
    }

    /// Runs `op` once on every configured manager not on standby (no failover, no retry): for
    /// views that differ per node, such as the overlay networks' gossiped service endpoints.
    pub async fn on_every_manager<T, F, Fut>(&self, op: F) -> Vec<Result<T, ApiError>>
    where
        F: Fn(Docker) -> Fut,
        Fut: Future<Output = Result<T, bollard::errors::Error>>,
    {
        self.each_manager("other", op)
            .await
            .into_iter()
            .map(|(_, result)| result)
            .collect()
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
        let available = self.managers.iter().filter(|m| !self.on_standby(m));
        let calls = available.map(|manager| {
            let op = &op;
            self.count_request(call, 0);
            async move { (manager, manager.call(op).await) }
        });
        futures::future::join_all(calls).await
    }

    /// A network with its gossiped service endpoints, as the answering node sees them.
    pub async fn network_verbose_on_every_manager(
        &self,
        id: &str,
    ) -> Vec<Result<bollard::models::NetworkInspect, ApiError>> {
        self.each_manager("network_verbose", |d| async move {
            d.inspect_network(
                id,
                Some(bollard::query_parameters::InspectNetworkOptions {
                    verbose: true,
                    scope: Some("swarm".into()),
                }),
            )
            .await
        })
        .await
        .into_iter()
        .map(|(_, result)| result)
        .collect()
    }

    /// Node, service and network events from the preferred manager: what changed, for the
    /// reflector to re-read (the events are not a source of truth themselves).
    pub async fn events(
        &self,
    ) -> Result<impl Stream<Item = Result<EventMessage, bollard::errors::Error>> + use<>, ApiError>
    {
        let docker = self
            .call_named("events", |d| async move { d.ping().await.map(|_| d) })
            .await?;
        let filters = HashMap::from([(
            "type".to_string(),
            vec![
                "node".to_string(),
                "service".to_string(),
                "network".to_string(),
            ],
        )]);
        Ok(docker.events(Some(EventsOptions {
            since: None,
            until: None,
            filters: Some(filters),
        })))
    }
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
