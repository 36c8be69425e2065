//! The running simulator: state behind one lock, the ticker, and one Docker API listener per
//! node (closed while that node's engine is stopped).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::{JoinHandle, JoinSet};

use crate::clock::{Clock, MS, Nanos, secs};
use crate::config::{Faults, SimConfig, Stack};
use crate::http::Resp;
use crate::render::{NodeCache, NodeEntry, RenderCache, Snapshot, node_entries, snapshot};
use crate::state::{ApiError, Cluster, Role};

/// Answers one request on an endpoint. The HTTP layer (`api`) provides it, so that the running
/// simulator does not depend on the layer that serves it.
pub type Handler =
    fn(Arc<Sim>, Endpoint, Request<Incoming>) -> BoxFuture<'static, Result<Resp, std::io::Error>>;

/// Which API an endpoint serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A node's own engine API.
    Node(String),
    /// The control address: `/_sim/...` and the leader's engine API.
    Control,
}

struct NodeServer {
    tcp: SocketAddr,
    unix: Option<PathBuf>,
    task: Option<JoinHandle<()>>,
}

pub struct Sim {
    pub clock: Clock,
    pub state: Mutex<Cluster>,
    snap: Mutex<Arc<Snapshot>>,
    cache: Mutex<RenderCache>,
    node_cache: Mutex<NodeCache>,
    servers: tokio::sync::Mutex<HashMap<String, NodeServer>>,
    busy: Mutex<HashSet<String>>,
    socket_dir: Option<PathBuf>,
    base_port: u16,
    worker_endpoints: bool,
    handler: Handler,
}

/// Result of a control operation on a node.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NodeOpResult {
    pub hostname: String,
    pub version: String,
    pub message: String,
}

impl Sim {
    pub fn new(cfg: &SimConfig, handler: Handler) -> anyhow::Result<Arc<Sim>> {
        anyhow::ensure!(cfg.managers >= 1, "a swarm needs at least one manager");
        let clock = Clock::new(cfg.time_scale);
        let now = clock.now();
        let mut c = Cluster::new(
            cfg.managers,
            cfg.workers,
            &cfg.version,
            cfg.timings.clone(),
            cfg.faults.clone(),
            cfg.seed,
            now,
        );
        match cfg.stack {
            Stack::Seed => c.deploy_seed(now).map_err(api_err)?,
            Stack::ExhaustAddrs => c.deploy_exhaust(now).map_err(api_err)?,
            Stack::SeedAndExhaust => {
                c.deploy_seed(now).map_err(api_err)?;
                c.deploy_exhaust(now).map_err(api_err)?;
            }
            Stack::Fleet => c
                .deploy_fleet(cfg.tasks_per_node, cfg.fleet_history, now)
                .map_err(api_err)?,
            Stack::None => {}
        }
        c.tick(now);
        let mut cache = RenderCache::default();
        let snap = Arc::new(snapshot(&c, &mut cache));
        Ok(Arc::new(Sim {
            clock,
            state: Mutex::new(c),
            snap: Mutex::new(snap),
            cache: Mutex::new(cache),
            node_cache: Mutex::new(NodeCache::default()),
            servers: tokio::sync::Mutex::new(HashMap::new()),
            busy: Mutex::new(HashSet::new()),
            socket_dir: cfg.socket_dir.clone(),
            base_port: cfg.base_port,
            worker_endpoints: cfg.worker_endpoints,
            handler,
        }))
    }

    pub fn now(&self) -> Nanos {
        self.clock.now()
    }

    /// Runs `f` on the locked state (advanced to now first).
    pub fn with<R>(&self, f: impl FnOnce(&mut Cluster, Nanos) -> R) -> R {
        let now = self.now();
        let mut c = self.state.lock().expect("state lock");
        c.tick(now);
        let r = f(&mut c, now);
        c.record_frame(now);
        r
    }

    /// Starts recording every node's state over time (see [`crate::state::History`]).
    pub fn record_history(&self) {
        self.with(|c, now| c.record_history(now));
    }

    /// The node states recorded since [`Self::record_history`], oldest first.
    pub fn history(&self) -> Vec<crate::state::Frame> {
        self.state.lock().expect("state lock").history().to_vec()
    }

    /// A read snapshot, rebuilt only if the state changed since the last one.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        let c = self.state.lock().expect("state lock");
        {
            let s = self.snap.lock().expect("snap lock");
            if s.generation == c.generation {
                return s.clone();
            }
        }
        let mut cache = self.cache.lock().expect("cache lock");
        let s = Arc::new(snapshot(&c, &mut cache));
        *self.snap.lock().expect("snap lock") = s.clone();
        s
    }

    /// Every node, rendered (only the nodes that changed are rendered again).
    pub fn nodes(&self) -> Vec<Arc<NodeEntry>> {
        let c = self.state.lock().expect("state lock");
        node_entries(&c, &mut self.node_cache.lock().expect("node cache lock"))
    }

    pub fn faults(&self) -> Faults {
        self.state.lock().expect("state lock").faults.clone()
    }

    /// Whether the `partition` fault cuts this endpoint off (the control address never is).
    pub fn is_partitioned(&self, ep: &Endpoint) -> bool {
        let Endpoint::Node(id) = ep else {
            return false;
        };
        let c = self.state.lock().expect("state lock");
        !c.faults.partitioned.is_empty()
            && c.nodes
                .iter()
                .any(|n| &n.id == id && c.faults.partitioned.contains(&n.hostname))
    }

    pub fn set_faults(&self, f: Faults) {
        let mut c = self.state.lock().expect("state lock");
        c.faults = f;
        c.touch();
    }

    /// Drives the simulation forward in the background.
    pub fn spawn_ticker(self: &Arc<Self>) -> JoinHandle<()> {
        let sim = self.clone();
        tokio::spawn(async move {
            let period = sim.clock.to_real(100 * MS).clamp(
                std::time::Duration::from_millis(5),
                std::time::Duration::from_millis(100),
            );
            let mut iv = tokio::time::interval(period);
            iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                iv.tick().await;
                let now = sim.now();
                sim.state.lock().expect("state lock").tick(now);
            }
        })
    }

    // ------------------------------------------------------------ listeners

    fn wants_endpoint(&self, role: Role) -> bool {
        role == Role::Manager || self.worker_endpoints
    }

    /// Opens the endpoints of every node that should have one.
    pub async fn open_all(self: &Arc<Self>) -> anyhow::Result<()> {
        let nodes: Vec<(usize, String, String, Role)> = {
            let c = self.state.lock().expect("state lock");
            c.nodes
                .iter()
                .enumerate()
                .map(|(i, n)| (i, n.id.clone(), n.hostname.clone(), n.role))
                .collect()
        };
        for (i, id, host, role) in nodes {
            if !self.wants_endpoint(role) {
                continue;
            }
            let port = if self.base_port == 0 {
                0
            } else {
                self.base_port + i as u16
            };
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let unix = self
                .socket_dir
                .as_ref()
                .map(|d| d.join(format!("{host}.sock")));
            self.open_endpoint(&id, addr, unix).await?;
        }
        Ok(())
    }

    fn open_endpoint<'a>(
        self: &'a Arc<Self>,
        id: &'a str,
        addr: SocketAddr,
        unix: Option<PathBuf>,
    ) -> futures::future::BoxFuture<'a, anyhow::Result<SocketAddr>> {
        Box::pin(async move {
            let tcp = tokio::net::TcpListener::bind(addr).await?;
            let bound = tcp.local_addr()?;
            let ul = match &unix {
                Some(p) => {
                    let _ = std::fs::remove_file(p);
                    Some(tokio::net::UnixListener::bind(p)?)
                }
                None => None,
            };
            let ep = Endpoint::Node(id.to_string());
            let task = tokio::spawn(accept_loop(self.clone(), ep, tcp, ul));
            self.servers.lock().await.insert(
                id.to_string(),
                NodeServer {
                    tcp: bound,
                    unix,
                    task: Some(task),
                },
            );
            Ok(bound)
        })
    }

    async fn close_endpoint(&self, id: &str) {
        let mut s = self.servers.lock().await;
        if let Some(srv) = s.get_mut(id) {
            if let Some(t) = srv.task.take() {
                t.abort();
                let _ = t.await;
            }
            if let Some(p) = &srv.unix {
                let _ = std::fs::remove_file(p);
            }
        }
    }

    async fn reopen_endpoint(self: &Arc<Self>, id: &str) -> anyhow::Result<()> {
        let (addr, unix, open) = {
            let s = self.servers.lock().await;
            match s.get(id) {
                Some(srv) => (srv.tcp, srv.unix.clone(), srv.task.is_some()),
                None => return Ok(()),
            }
        };
        if open {
            return Ok(());
        }
        // The port may linger briefly; retry a few times.
        let mut last = None;
        for _ in 0..50 {
            match self.open_endpoint(id, addr, unix.clone()).await {
                Ok(_) => return Ok(()),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Err(last.expect("an error"))
    }

    /// `tcp://127.0.0.1:PORT` of a node's endpoint (whether or not it is open now).
    pub async fn endpoint_of(&self, id: &str) -> Option<String> {
        self.servers
            .lock()
            .await
            .get(id)
            .map(|s| format!("tcp://{}", s.tcp))
    }

    pub async fn endpoints(&self) -> HashMap<String, (SocketAddr, Option<PathBuf>, bool)> {
        self.servers
            .lock()
            .await
            .iter()
            .map(|(k, v)| (k.clone(), (v.tcp, v.unix.clone(), v.task.is_some())))
            .collect()
    }

    pub async fn close_all(&self) {
        let ids: Vec<String> = self.servers.lock().await.keys().cloned().collect();
        for id in ids {
            self.close_endpoint(&id).await;
        }
    }

    // ------------------------------------------------------------ node operations

    /// One node-side operation at a time per host, like the `flock` a real upgrade script
    /// takes: a second one waits for the first (an operator restarted mid-upgrade runs the
    /// command again while the first run is still at work).
    async fn claim(&self, host: &str) -> Result<BusyGuard<'_>, ApiError> {
        loop {
            {
                let mut b = self.busy.lock().expect("busy lock");
                if b.insert(host.to_string()) {
                    return Ok(BusyGuard {
                        sim: self,
                        host: host.to_string(),
                    });
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    fn lookup(&self, host: &str) -> Result<(String, String, bool, Option<String>), ApiError> {
        let c = self.state.lock().expect("state lock");
        let i = c
            .nodes
            .iter()
            .position(|n| n.hostname == host || n.id == host)
            .ok_or_else(|| ApiError::new(404, format!("no such host: {host}")))?;
        let n = &c.nodes[i];
        // A locked engine runs (its API answers) at the version it was started with.
        Ok((
            n.id.clone(),
            n.locked_engine
                .clone()
                .unwrap_or_else(|| n.engine_version.clone()),
            n.engine_running || n.locked_engine.is_some(),
            n.backup_version.clone(),
        ))
    }

    /// Stops a node's engine (`systemctl stop docker`).
    pub async fn stop_node(self: &Arc<Self>, host: &str) -> Result<NodeOpResult, ApiError> {
        let _g = self.claim(host).await?;
        self.stop_inner(host).await
    }

    async fn stop_inner(self: &Arc<Self>, host: &str) -> Result<NodeOpResult, ApiError> {
        let (id, version, _, _) = self.lookup(host)?;
        self.with(|c, now| {
            if let Some(i) = c.node_idx(&id) {
                c.engine_stop(i, now);
            }
        });
        self.close_endpoint(&id).await;
        Ok(NodeOpResult {
            hostname: host.to_string(),
            version,
            message: "stopped".into(),
        })
    }

    /// Starts a node's engine (`systemctl start docker`), at `version` if given. Returns once
    /// the engine's API answers (not once the node is ready in the swarm).
    pub async fn start_node(
        self: &Arc<Self>,
        host: &str,
        version: Option<&str>,
    ) -> Result<NodeOpResult, ApiError> {
        let _g = self.claim(host).await?;
        self.start_inner(host, version).await
    }

    async fn start_inner(
        self: &Arc<Self>,
        host: &str,
        version: Option<&str>,
    ) -> Result<NodeOpResult, ApiError> {
        let (id, current, running, _) = self.lookup(host)?;
        if running {
            return Ok(NodeOpResult {
                hostname: host.to_string(),
                version: current,
                message: "already running".into(),
            });
        }
        let version = version.unwrap_or(&current).to_string();
        let (never, startup) = {
            let c = self.state.lock().expect("state lock");
            (
                // An engine with live-restore exits as its swarm component starts.
                c.faults.never_return.iter().any(|h| h == host)
                    || c.faults.live_restore.iter().any(|h| h == host),
                secs(c.timings.engine_start),
            )
        };
        self.clock.sleep(startup).await;
        if never {
            // `systemctl start` returned; the daemon died right after.
            return Ok(NodeOpResult {
                hostname: host.to_string(),
                version,
                message: "started".into(),
            });
        }
        self.with(|c, now| {
            if let Some(i) = c.node_idx(&id) {
                c.engine_start(i, &version, now);
            }
        });
        self.reopen_endpoint(&id)
            .await
            .map_err(|e| ApiError::new(500, format!("reopening the endpoint of {host}: {e}")))?;
        Ok(NodeOpResult {
            hostname: host.to_string(),
            version,
            message: "started".into(),
        })
    }

    /// The package-manager upgrade: stop, install (a simulated delay), start at `version`,
    /// keeping the previous version as the backup.
    pub async fn upgrade_node(
        self: &Arc<Self>,
        host: &str,
        version: &str,
    ) -> Result<NodeOpResult, ApiError> {
        let _g = self.claim(host).await?;
        let (id, old, running, _) = self.lookup(host)?;
        if running && old == version {
            // Idempotent, as a package manager is: already installed and running.
            return Ok(NodeOpResult {
                hostname: host.to_string(),
                version: old,
                message: format!("already at {version}"),
            });
        }
        let (fail, wrong, install) = {
            let c = self.state.lock().expect("state lock");
            (
                c.faults.fail_upgrade.iter().any(|h| h == host),
                c.faults.wrong_version.get(host).cloned(),
                secs(c.timings.install),
            )
        };
        if fail {
            return Err(ApiError::new(
                500,
                format!(
                    "E: Sub-process /usr/bin/dpkg returned an error code (1) while installing docker.io {version} on {host}"
                ),
            ));
        }
        self.stop_inner(host).await?;
        self.clock.sleep(install).await;
        let installed = wrong.unwrap_or_else(|| version.to_string());
        self.with(|c, _| {
            if let Some(i) = c.node_idx(&id) {
                c.nodes[i].backup_version = Some(old.clone());
            }
        });
        let mut r = self.start_inner(host, Some(&installed)).await?;
        r.message = format!("upgraded {old} -> {installed}");
        Ok(r)
    }

    /// Restarts the node on its backed-up version.
    pub async fn rollback_node(self: &Arc<Self>, host: &str) -> Result<NodeOpResult, ApiError> {
        let _g = self.claim(host).await?;
        let (id, current, _, backup) = self.lookup(host)?;
        let Some(backup) = backup else {
            // Nothing was installed (the upgrade failed before): the engine it has is the one
            // to run. Like a rollback script, make sure it runs, and succeed.
            let mut r = self.start_inner(host, None).await?;
            r.message = format!("nothing to roll back: {host} runs {current}");
            return Ok(r);
        };
        let install = secs(self.state.lock().expect("state lock").timings.install);
        self.stop_inner(host).await?;
        self.clock.sleep(install).await;
        self.with(|c, _| {
            if let Some(i) = c.node_idx(&id) {
                c.nodes[i].backup_version = Some(current.clone());
            }
        });
        let mut r = self.start_inner(host, Some(&backup)).await?;
        r.message = format!("rolled back {current} -> {backup}");
        Ok(r)
    }
}

struct BusyGuard<'a> {
    sim: &'a Sim,
    host: String,
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut b) = self.sim.busy.lock() {
            b.remove(&self.host);
        }
    }
}

fn api_err(e: ApiError) -> anyhow::Error {
    anyhow::anyhow!("{}", e.message)
}

/// Accepts connections until aborted; aborting drops (and so closes) every connection.
pub async fn accept_loop(
    sim: Arc<Sim>,
    ep: Endpoint,
    tcp: tokio::net::TcpListener,
    unix: Option<tokio::net::UnixListener>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            r = tcp.accept() => {
                if let Ok((s, _)) = r {
                    let _ = s.set_nodelay(true);
                    conns.spawn(serve_conn(sim.clone(), ep.clone(), s));
                }
            }
            r = async {
                match &unix {
                    Some(u) => u.accept().await.map(|(s, _)| s),
                    None => std::future::pending().await,
                }
            } => {
                if let Ok(s) = r {
                    conns.spawn(serve_conn(sim.clone(), ep.clone(), s));
                }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn serve_conn<S>(sim: Arc<Sim>, ep: Endpoint, stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let ep = ep.clone();
        (sim.handler)(sim.clone(), ep, req)
    });
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), svc)
        .await;
}
