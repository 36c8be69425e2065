//! The simulated swarm's state and its reconciliation: raft/leader, node heartbeats, the
//! orchestrators, the allocator (IPAM), the scheduler and the agents' task state machine.
//!
//! Everything is driven by [`Cluster::tick`] with the simulated time; nothing here sleeps.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::clock::{MS, Nanos, SEC, secs};
use crate::config::{Faults, Timings};
use crate::ipam::Pool;

pub const ERR_MISSING_ATTACHMENTS: &str =
    "node is missing network attachments, ip addresses may be exhausted";
pub const ERR_SWARM_NOT_ACTIVE: &str =
    "cannot create a swarm scoped network when swarm is not active";
pub const ERR_NO_LEADER: &str = "rpc error: code = Unknown desc = The swarm does not have a leader. It's possible that too few managers are online. Make sure more than half of the managers are online.";
pub const ERR_OUT_OF_SEQUENCE: &str = "rpc error: code = Unknown desc = update out of sequence";
pub const ERR_NOT_MANAGER: &str = "This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. Please run this command on a manager node or promote the current node to a manager.";

/// swarmkit's scheduler: a node with this many recent failures of a service's tasks is tried last.
const MAX_FAILURES: usize = 5;
const FAILURE_WINDOW: Nanos = 300 * SEC;
/// Orchestration.TaskHistoryRetentionLimit
const TASK_HISTORY: usize = 5;
const EVENT_LOG: usize = 50_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Manager,
    Worker,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Active,
    Pause,
    Drain,
}

impl Availability {
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::Active => "active",
            Availability::Pause => "pause",
            Availability::Drain => "drain",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    Ready,
    Down,
    Unknown,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Ready => "ready",
            NodeState::Down => "down",
            NodeState::Unknown => "unknown",
        }
    }
}

/// The swarmkit task state machine, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TState {
    New,
    Pending,
    Assigned,
    Accepted,
    Preparing,
    Starting,
    Running,
    Complete,
    Shutdown,
    Failed,
    Rejected,
    Orphaned,
}

impl TState {
    pub fn as_str(self) -> &'static str {
        match self {
            TState::New => "new",
            TState::Pending => "pending",
            TState::Assigned => "assigned",
            TState::Accepted => "accepted",
            TState::Preparing => "preparing",
            TState::Starting => "starting",
            TState::Running => "running",
            TState::Complete => "complete",
            TState::Shutdown => "shutdown",
            TState::Failed => "failed",
            TState::Rejected => "rejected",
            TState::Orphaned => "orphaned",
        }
    }

    pub fn terminal(self) -> bool {
        self > TState::Running
    }
}

#[derive(Debug, Clone)]
pub struct NodeRec {
    pub id: String,
    pub hostname: String,
    pub role: Role,
    pub availability: Availability,
    pub labels: BTreeMap<String, String>,
    pub spec_name: Option<String>,
    /// Is the engine process up (its API answers)?
    pub engine_running: bool,
    pub engine_version: String,
    /// The version before the last upgrade (for rollback).
    pub backup_version: Option<String>,
    pub state: NodeState,
    pub message: String,
    pub reachable: bool,
    pub addr: String,
    pub version: u64,
    pub created: Nanos,
    pub updated: Nanos,
    pub stopped_at: Option<Nanos>,
    pub started_at: Nanos,
    /// When a node that is `unknown`/`down` with a running engine becomes `ready`.
    pub ready_at: Option<Nanos>,
    /// `restart-active` fault: tasks prepared before this are rejected.
    pub restart_reject_until: Option<Nanos>,
    pub next_bump: Nanos,
    pub ingress_addr: Option<u32>,
    /// (service id, time) of recent task failures on this node.
    pub failures: Vec<(String, Nanos)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Replicated(u64),
    Global,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointMode {
    Vip,
    Dnsrr,
}

/// A placement constraint: `node.role==manager`, `node.hostname!=n1`, `node.labels.k==v`,
/// `node.id==...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    pub key: String,
    pub eq: bool,
    pub value: String,
}

impl Constraint {
    pub fn parse(s: &str) -> Result<Constraint, String> {
        let (k, eq, v) = if let Some((k, v)) = s.split_once("!=") {
            (k, false, v)
        } else if let Some((k, v)) = s.split_once("==") {
            (k, true, v)
        } else {
            return Err(format!("invalid constraint {s}"));
        };
        Ok(Constraint {
            key: k.trim().to_string(),
            eq,
            value: v.trim().to_string(),
        })
    }

    pub fn matches(&self, n: &NodeRec) -> bool {
        let actual: Option<String> = match self.key.as_str() {
            "node.role" => Some(
                match n.role {
                    Role::Manager => "manager",
                    Role::Worker => "worker",
                }
                .to_string(),
            ),
            "node.hostname" => Some(n.hostname.clone()),
            "node.id" => Some(n.id.clone()),
            "node.platform.os" => Some("linux".to_string()),
            "node.platform.arch" => Some("x86_64".to_string()),
            k => k
                .strip_prefix("node.labels.")
                .and_then(|l| n.labels.get(l).cloned()),
        };
        let same = actual.is_some_and(|a| a.eq_ignore_ascii_case(&self.value));
        same == self.eq
    }
}

/// A service to create.
#[derive(Debug, Clone)]
pub struct ServiceDef {
    pub name: String,
    pub image: String,
    pub args: Vec<String>,
    pub mode: Mode,
    /// Network names or IDs.
    pub networks: Vec<String>,
    pub endpoint_mode: EndpointMode,
    pub constraints: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// Volume mounts (source, target).
    pub mounts: Vec<(String, String)>,
}

impl ServiceDef {
    pub fn replicated(name: &str, replicas: u64, networks: &[&str]) -> ServiceDef {
        ServiceDef {
            name: name.to_string(),
            image: "nginx:latest".to_string(),
            args: vec![],
            mode: Mode::Replicated(replicas),
            networks: networks.iter().map(|s| s.to_string()).collect(),
            endpoint_mode: EndpointMode::Vip,
            constraints: vec![],
            labels: BTreeMap::new(),
            mounts: vec![],
        }
    }

    pub fn global(name: &str, networks: &[&str]) -> ServiceDef {
        ServiceDef {
            mode: Mode::Global,
            ..ServiceDef::replicated(name, 0, networks)
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServiceRec {
    pub id: String,
    pub name: String,
    pub image: String,
    pub args: Vec<String>,
    pub mode: Mode,
    pub networks: Vec<String>,
    pub endpoint_mode: EndpointMode,
    pub constraints: Vec<Constraint>,
    pub constraint_strs: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub mounts: Vec<(String, String)>,
    pub version: u64,
    pub created: Nanos,
    pub updated: Nanos,
    /// (network id, address offset)
    pub vips: Vec<(String, u32)>,
}

#[derive(Debug, Clone)]
pub struct TaskRec {
    pub id: String,
    pub service_id: String,
    pub slot: Option<u64>,
    pub node_id: Option<String>,
    pub state: TState,
    pub desired: TState,
    pub message: String,
    pub err: Option<String>,
    pub status_at: Nanos,
    pub created: Nanos,
    pub updated: Nanos,
    pub version: u64,
    /// (network id, address offset)
    pub addresses: Vec<(String, u32)>,
    pub container_id: Option<String>,
    pub pid: i64,
    pub exit_code: i64,
    /// When the agent's next step is due.
    pub next_at: Nanos,
    pub prepare_started: Nanos,
    pub stop_at: Option<Nanos>,
}

#[derive(Debug, Clone)]
pub struct NetworkRec {
    pub id: String,
    pub name: String,
    pub pool: Pool,
    pub ingress: bool,
    pub attachable: bool,
    pub vxlan: u32,
    pub labels: BTreeMap<String, String>,
    pub created: Nanos,
    pub version: u64,
    /// Load-balancer (or ingress-sbox) address per node id.
    pub lb: BTreeMap<String, u32>,
}

/// A full NodeSpec, as `POST /nodes/{id}/update` replaces it.
#[derive(Debug, Clone, Default)]
pub struct SpecUpdate {
    pub role: Option<String>,
    pub availability: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub name: Option<String>,
}

impl SpecUpdate {
    pub fn new(role: &str, availability: &str) -> SpecUpdate {
        SpecUpdate {
            role: Some(role.to_string()),
            availability: Some(availability.to_string()),
            ..Default::default()
        }
    }
}

/// An event in the engine's `/events` form.
#[derive(Debug, Clone)]
pub struct Event {
    pub typ: &'static str,
    pub action: &'static str,
    pub id: String,
    pub attrs: BTreeMap<String, String>,
    pub time: Nanos,
}

/// An API error: HTTP status and the engine's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

pub struct Cluster {
    pub rng: StdRng,
    pub timings: Timings,
    pub faults: Faults,
    pub index: u64,
    /// Bumped on every change; the read snapshot is rebuilt when it moves.
    pub generation: u64,
    pub cluster_id: String,
    pub created: Nanos,
    pub nodes: Vec<NodeRec>,
    pub services: BTreeMap<String, ServiceRec>,
    pub tasks: BTreeMap<String, TaskRec>,
    pub networks: BTreeMap<String, NetworkRec>,
    pub leader: Option<String>,
    pub election_at: Option<Nanos>,
    pub events: VecDeque<Event>,
    pub event_tx: tokio::sync::broadcast::Sender<Event>,
    next_vxlan: u32,
    dirty: bool,
}

fn gen_id(rng: &mut StdRng) -> String {
    const A: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..25)
        .map(|_| A[rng.random_range(0..A.len())] as char)
        .collect()
}

fn gen_hex(rng: &mut StdRng, n: usize) -> String {
    const A: &[u8] = b"0123456789abcdef";
    (0..n)
        .map(|_| A[rng.random_range(0..A.len())] as char)
        .collect()
}

/// Engine version -> (max API version, min API version), as that engine release speaks it.
pub fn api_versions(engine: &str) -> (&'static str, &'static str) {
    let mut it = engine.split(['.', '+', '-', '~']);
    let major: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let minor: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let max = match (major, minor) {
        (0..=17, _) => "1.35",
        (18, 0..=3) => "1.37",
        (18, 4..=6) => "1.38",
        (18, _) => "1.39",
        (19, _) => "1.40",
        (20, _) => "1.41",
        (21..=23, _) => "1.42",
        (24, _) => "1.43",
        (25, _) => "1.44",
        (26, _) => "1.45",
        (27, 0..=1) => "1.46",
        (27, _) => "1.47",
        (28, 0) => "1.48",
        (28, 1) => "1.49",
        (28, _) => "1.50",
        _ => "1.51",
    };
    let min = if major >= 25 { "1.24" } else { "1.12" };
    (max, min)
}

/// Compares dotted versions numerically ("20.10.24" < "26.1.5"); suffixes after `+`/`~` ignored.
pub fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let parse = |s: &str| -> Vec<u64> {
        s.split(['+', '~', '-'])
            .next()
            .unwrap_or("")
            .split('.')
            .map(|p| p.parse().unwrap_or(0))
            .collect()
    };
    parse(a).cmp(&parse(b))
}

impl Cluster {
    pub fn new(
        managers: usize,
        workers: usize,
        version: &str,
        timings: Timings,
        faults: Faults,
        seed: u64,
        now: Nanos,
    ) -> Cluster {
        let (event_tx, _) = tokio::sync::broadcast::channel(4096);
        let mut rng = StdRng::seed_from_u64(seed);
        let cluster_id = gen_id(&mut rng);
        let mut c = Cluster {
            rng,
            timings,
            faults,
            index: 10,
            generation: 1,
            cluster_id,
            created: now,
            nodes: vec![],
            services: BTreeMap::new(),
            tasks: BTreeMap::new(),
            networks: BTreeMap::new(),
            leader: None,
            election_at: None,
            events: VecDeque::new(),
            event_tx,
            next_vxlan: 4096,
            dirty: true,
        };
        c.create_network_inner("ingress", "10.0.0.0/24", false, true, now)
            .expect("ingress subnet");
        for i in 0..managers + workers {
            let role = if i < managers {
                Role::Manager
            } else {
                Role::Worker
            };
            c.add_node(role, version, now);
        }
        c.leader = c
            .nodes
            .iter()
            .find(|n| n.role == Role::Manager)
            .map(|n| n.id.clone());
        c
    }

    fn next_index(&mut self) -> u64 {
        self.index += 1;
        self.generation += 1;
        self.dirty = true;
        self.index
    }

    /// Marks the state changed (the read snapshot is rebuilt).
    pub fn touch(&mut self) {
        self.generation += 1;
        self.dirty = true;
    }

    /// Adds a node `n<k>` (k = position + 1) that joins as ready.
    pub fn add_node(&mut self, role: Role, version: &str, now: Nanos) -> String {
        let i = self.nodes.len();
        let id = gen_id(&mut self.rng);
        let v = self.next_index();
        let jitter = self.rng.random_range(0.2..1.0);
        let mut n = NodeRec {
            id: id.clone(),
            hostname: format!("n{}", i + 1),
            role,
            availability: Availability::Active,
            labels: BTreeMap::new(),
            spec_name: None,
            engine_running: true,
            engine_version: version.to_string(),
            backup_version: None,
            state: NodeState::Ready,
            message: String::new(),
            reachable: true,
            addr: format!("10.98.{}.{}", i / 200, 11 + i % 200),
            version: v,
            created: now,
            updated: now,
            stopped_at: None,
            started_at: now,
            ready_at: None,
            restart_reject_until: None,
            next_bump: now + secs(self.timings.version_bump * jitter),
            ingress_addr: None,
            failures: vec![],
        };
        if let Some(ing) = self.networks.values_mut().find(|n| n.ingress) {
            n.ingress_addr = ing.pool.alloc();
            if let Some(a) = n.ingress_addr {
                ing.lb.insert(id.clone(), a);
            }
        }
        self.nodes.push(n);
        id
    }

    pub fn node_idx(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    /// Finds a node as the engine does: full ID, hostname (or spec name), then unique ID prefix.
    pub fn find_node(&self, key: &str) -> Result<usize, ApiError> {
        let nodes = self.nodes.iter().enumerate().map(|(i, n)| {
            let named = n.hostname == key || n.spec_name.as_deref() == Some(key);
            (i, n.id.as_str(), named)
        });
        resolve_key("node", key, nodes, Ambiguous::Rejected)
    }

    pub fn find_service(&self, key: &str) -> Result<String, ApiError> {
        let services = self
            .services
            .values()
            .map(|s| (s.id.clone(), s.id.as_str(), s.name == key));
        resolve_key("service", key, services, Ambiguous::Rejected)
    }

    pub fn find_network(&self, key: &str) -> Result<String, ApiError> {
        let networks = self
            .networks
            .values()
            .map(|n| (n.id.clone(), n.id.as_str(), n.name == key));
        resolve_key("network", key, networks, Ambiguous::NotFound)
    }

    pub fn emit(
        &mut self,
        typ: &'static str,
        action: &'static str,
        id: &str,
        attrs: &[(&str, &str)],
        now: Nanos,
    ) {
        let e = Event {
            typ,
            action,
            id: id.to_string(),
            attrs: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            time: now,
        };
        if self.events.len() >= EVENT_LOG {
            self.events.pop_front();
        }
        self.events.push_back(e.clone());
        let _ = self.event_tx.send(e);
    }

    fn node_event(&mut self, i: usize, attrs: &[(&str, &str)], now: Nanos) {
        let id = self.nodes[i].id.clone();
        let name = self.nodes[i].hostname.clone();
        let mut a: Vec<(&str, &str)> = attrs.to_vec();
        a.push(("name", &name));
        self.emit("node", "update", &id, &a, now);
    }

    fn set_node_state(&mut self, i: usize, st: NodeState, msg: &str, now: Nanos) {
        let old = self.nodes[i].state;
        if old == st {
            return;
        }
        let v = self.next_index();
        let n = &mut self.nodes[i];
        n.state = st;
        n.message = msg.to_string();
        n.version = v;
        n.updated = now;
        self.node_event(
            i,
            &[("state.old", old.as_str()), ("state.new", st.as_str())],
            now,
        );
    }

    /// A node's version index moves without anything to reconcile (status/heartbeat updates).
    fn bump_node(&mut self, i: usize, now: Nanos) {
        self.index += 1;
        self.generation += 1;
        let v = self.index;
        self.nodes[i].version = v;
        self.nodes[i].updated = now;
    }

    // ---------------------------------------------------------------- raft

    pub fn managers_total(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.role == Role::Manager)
            .count()
    }

    pub fn managers_up(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.role == Role::Manager && n.engine_running)
            .count()
    }

    pub fn has_quorum(&self) -> bool {
        self.managers_up() * 2 > self.managers_total()
    }

    /// Cluster-state calls through node `via` (a manager): fails as the engine does without a
    /// leader.
    pub fn check_leader(&self) -> Result<(), ApiError> {
        if self.leader.is_some() {
            Ok(())
        } else {
            Err(ApiError::new(500, ERR_NO_LEADER))
        }
    }

    // ---------------------------------------------------------------- engines

    /// The node's engine stops (its API goes away; heartbeats stop).
    pub fn engine_stop(&mut self, i: usize, now: Nanos) {
        if !self.nodes[i].engine_running {
            return;
        }
        let n = &mut self.nodes[i];
        n.engine_running = false;
        n.stopped_at = Some(now);
        n.ready_at = None;
        if self.leader.as_deref() == Some(&self.nodes[i].id) {
            self.leader = None;
            self.election_at = Some(now + secs(self.timings.election));
        }
        if !self.has_quorum() {
            self.leader = None;
            self.election_at = None;
        }
        self.touch();
    }

    /// The node's engine starts at `version`.
    pub fn engine_start(&mut self, i: usize, version: &str, now: Nanos) {
        if self.nodes[i].engine_running {
            return;
        }
        let was_active = self.nodes[i].availability == Availability::Active;
        let version_changed = self.nodes[i].engine_version != version;
        {
            let n = &mut self.nodes[i];
            n.engine_running = true;
            n.engine_version = version.to_string();
            n.stopped_at = None;
            n.started_at = now;
            n.ready_at = Some(now + secs(self.timings.node_ready));
            n.restart_reject_until = if was_active {
                Some(now + secs(self.timings.restart_active_window))
            } else {
                None
            };
        }
        // Containers died with the engine (no live-restore): the agent reports its tasks.
        let nid = self.nodes[i].id.clone();
        let ids: Vec<String> = self
            .tasks
            .values()
            .filter(|t| {
                t.node_id.as_deref() == Some(&nid)
                    && !t.state.terminal()
                    && t.state >= TState::Assigned
            })
            .map(|t| t.id.clone())
            .collect();
        for id in ids {
            let desired = self.tasks[&id].desired;
            if desired == TState::Running {
                self.set_task_state(
                    &id,
                    TState::Failed,
                    "started",
                    Some("task: non-zero exit (143)"),
                    now,
                );
                if let Some(t) = self.tasks.get_mut(&id) {
                    t.exit_code = 143;
                }
            } else {
                self.set_task_state(&id, TState::Shutdown, "shutdown", None, now);
            }
        }
        if version_changed {
            self.bump_node(i, now);
            self.node_event(i, &[], now);
        }
        if self.leader.is_none() && self.has_quorum() && self.election_at.is_none() {
            self.election_at = Some(now + secs(self.timings.election));
        }
        self.touch();
    }

    // ---------------------------------------------------------------- networks & services

    fn create_network_inner(
        &mut self,
        name: &str,
        subnet: &str,
        attachable: bool,
        ingress: bool,
        now: Nanos,
    ) -> Result<String, ApiError> {
        if self.networks.values().any(|n| n.name == name) {
            return Err(ApiError::new(
                409,
                format!("network with name {name} already exists"),
            ));
        }
        let pool = Pool::new(subnet).map_err(|e| ApiError::new(400, e))?;
        let id = gen_id(&mut self.rng);
        let version = self.next_index();
        let vxlan = self.next_vxlan;
        self.next_vxlan += 1;
        self.networks.insert(
            id.clone(),
            NetworkRec {
                id: id.clone(),
                name: name.to_string(),
                pool,
                ingress,
                attachable,
                vxlan,
                labels: BTreeMap::new(),
                created: now,
                version,
                lb: BTreeMap::new(),
            },
        );
        Ok(id)
    }

    pub fn create_network(
        &mut self,
        name: &str,
        subnet: &str,
        attachable: bool,
        now: Nanos,
    ) -> Result<String, ApiError> {
        self.create_network_inner(name, subnet, attachable, false, now)
    }

    pub fn create_service(&mut self, def: &ServiceDef, now: Nanos) -> Result<String, ApiError> {
        if self.services.values().any(|s| s.name == def.name) {
            return Err(ApiError::new(
                409,
                format!(
                    "rpc error: code = AlreadyExists desc = name conflicts with an existing object: service {} already exists",
                    def.name
                ),
            ));
        }
        let mut networks = vec![];
        for n in &def.networks {
            networks.push(self.find_network(n)?);
        }
        let constraints = def
            .constraints
            .iter()
            .map(|c| Constraint::parse(c))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ApiError::new(400, e))?;
        let mut vips = vec![];
        if def.endpoint_mode == EndpointMode::Vip {
            for n in &networks {
                let net = self.networks.get_mut(n).expect("network");
                let a = net.pool.alloc().ok_or_else(|| {
                    ApiError::new(500, "rpc error: code = ResourceExhausted desc = could not allocate VIP: no available IPv4 addresses on this network's address pools")
                })?;
                vips.push((n.clone(), a));
            }
        }
        let id = gen_id(&mut self.rng);
        let version = self.next_index();
        self.services.insert(
            id.clone(),
            ServiceRec {
                id: id.clone(),
                name: def.name.clone(),
                image: def.image.clone(),
                args: def.args.clone(),
                mode: def.mode.clone(),
                networks,
                endpoint_mode: def.endpoint_mode,
                constraints,
                constraint_strs: def.constraints.clone(),
                labels: def.labels.clone(),
                mounts: def.mounts.clone(),
                version,
                created: now,
                updated: now,
                vips,
            },
        );
        self.emit("service", "create", &id, &[("name", &def.name)], now);
        Ok(id)
    }

    /// The seed's test stack.
    pub fn deploy_seed(&mut self, now: Nanos) -> Result<(), ApiError> {
        self.create_network("test_tnet", "10.0.1.0/24", true, now)?;
        let mut svc = ServiceDef::global("test_service", &["test_tnet"]);
        svc.endpoint_mode = EndpointMode::Dnsrr;
        svc.args = ["nginx", "-g", "daemon off;"].map(String::from).to_vec();
        self.create_service(&svc, now)?;
        let mut cli = ServiceDef::replicated("test_client", 2, &["test_tnet"]);
        cli.image = "ctelfer/lb-upgrade-test-cli:latest".into();
        cli.args = ["sh", "-c", "while true; do sleep 1; done"]
            .map(String::from)
            .to_vec();
        cli.mounts = vec![("test_cliout".into(), "/out".into())];
        self.create_service(&cli, now)?;
        Ok(())
    }

    /// The seed's `exhaust_addrs` stack: a /27 and 24 replicas.
    pub fn deploy_exhaust(&mut self, now: Nanos) -> Result<(), ApiError> {
        self.create_network("ex_default", "10.0.2.0/27", false, now)?;
        let mut svc = ServiceDef::replicated("ex_service", 24, &["ex_default"]);
        svc.args = ["nginx", "-g", "daemon off;"].map(String::from).to_vec();
        self.create_service(&svc, now)?;
        Ok(())
    }

    // ---------------------------------------------------------------- API writes

    /// `POST /nodes/{id}/update?version=N` with a full NodeSpec.
    pub fn update_node(
        &mut self,
        key: &str,
        version: u64,
        spec: SpecUpdate,
        now: Nanos,
    ) -> Result<(), ApiError> {
        let SpecUpdate {
            role,
            availability,
            labels,
            name,
        } = spec;
        let role = role.as_deref();
        let availability = availability.as_deref();
        let i = self.find_node(key)?;
        if self.nodes[i].version != version {
            return Err(ApiError::new(500, ERR_OUT_OF_SEQUENCE));
        }
        let role = match role.unwrap_or("") {
            "manager" => Role::Manager,
            "worker" => Role::Worker,
            r => {
                return Err(ApiError::new(
                    400,
                    format!("rpc error: code = InvalidArgument desc = invalid role \"{r}\""),
                ));
            }
        };
        let avail = match availability.unwrap_or("") {
            "active" => Availability::Active,
            "pause" => Availability::Pause,
            "drain" => Availability::Drain,
            a => {
                return Err(ApiError::new(
                    400,
                    format!(
                        "rpc error: code = InvalidArgument desc = invalid availability \"{a}\""
                    ),
                ));
            }
        };
        if role == Role::Worker && self.nodes[i].role == Role::Manager && self.managers_total() == 1
        {
            return Err(ApiError::new(
                400,
                "rpc error: code = FailedPrecondition desc = attempting to demote the last manager of the swarm",
            ));
        }
        let old_av = self.nodes[i].availability;
        let v = self.next_index();
        let n = &mut self.nodes[i];
        n.role = role;
        n.availability = avail;
        n.labels = labels;
        n.spec_name = name.filter(|s| !s.is_empty());
        n.version = v;
        n.updated = now;
        if role == Role::Manager {
            n.reachable = n.engine_running;
        }
        if old_av != avail {
            self.node_event(
                i,
                &[
                    ("availability.old", old_av.as_str()),
                    ("availability.new", avail.as_str()),
                ],
                now,
            );
        } else {
            self.node_event(i, &[], now);
        }
        Ok(())
    }

    /// `DELETE /nodes/{id}[?force=true]`
    pub fn remove_node(&mut self, key: &str, force: bool, now: Nanos) -> Result<String, ApiError> {
        let i = self.find_node(key)?;
        let n = &self.nodes[i];
        if n.role == Role::Manager {
            return Err(ApiError::new(
                400,
                format!(
                    "rpc error: code = FailedPrecondition desc = node {} is a cluster manager and is a member of the raft cluster. It must be demoted to worker before removal",
                    n.id
                ),
            ));
        }
        if n.state != NodeState::Down && !force {
            return Err(ApiError::new(
                400,
                format!(
                    "rpc error: code = FailedPrecondition desc = node {} is not down and can't be removed",
                    n.id
                ),
            ));
        }
        let id = n.id.clone();
        let name = n.hostname.clone();
        let ids: Vec<String> = self
            .tasks
            .values()
            .filter(|t| t.node_id.as_deref() == Some(&id) && !t.state.terminal())
            .map(|t| t.id.clone())
            .collect();
        for t in ids {
            self.tasks.get_mut(&t).expect("task").desired = TState::Shutdown;
            self.set_task_state(&t, TState::Orphaned, "node removed", None, now);
        }
        for net in self.networks.values_mut() {
            if let Some(a) = net.lb.remove(&id) {
                net.pool.release(a);
            }
        }
        self.nodes.remove(i);
        self.next_index();
        self.emit("node", "remove", &id, &[("name", &name)], now);
        Ok(id)
    }

    // ---------------------------------------------------------------- tasks

    fn set_task_state(&mut self, id: &str, st: TState, msg: &str, err: Option<&str>, now: Nanos) {
        let v = self.next_index();
        let Some(t) = self.tasks.get_mut(id) else {
            return;
        };
        t.state = st;
        t.message = msg.to_string();
        t.err = err.map(|s| s.to_string());
        t.status_at = now;
        t.updated = now;
        t.version = v;
        if st.terminal() {
            let addrs = std::mem::take(&mut t.addresses);
            let node = t.node_id.clone();
            let svc = t.service_id.clone();
            for (net, a) in addrs {
                if let Some(n) = self.networks.get_mut(&net) {
                    n.pool.release(a);
                }
            }
            if matches!(st, TState::Rejected | TState::Failed)
                && let Some(i) = node.and_then(|n| self.node_idx(&n))
            {
                self.nodes[i].failures.push((svc, now));
            }
        }
    }

    fn set_desired(&mut self, id: &str, d: TState, now: Nanos) {
        if self.tasks.get(id).is_none_or(|t| t.desired == d) {
            return;
        }
        let v = self.next_index();
        if let Some(t) = self.tasks.get_mut(id) {
            t.desired = d;
            t.updated = now;
            t.version = v;
        }
    }

    fn new_task(&mut self, service_id: &str, slot: Option<u64>, node: Option<String>, now: Nanos) {
        let id = gen_id(&mut self.rng);
        let v = self.next_index();
        self.tasks.insert(
            id.clone(),
            TaskRec {
                id,
                service_id: service_id.to_string(),
                slot,
                node_id: node,
                state: TState::New,
                desired: TState::Running,
                message: "created".into(),
                err: None,
                status_at: now,
                created: now,
                updated: now,
                version: v,
                addresses: vec![],
                container_id: None,
                pid: 0,
                exit_code: 0,
                next_at: now,
                prepare_started: 0,
                stop_at: None,
            },
        );
    }

    fn node_schedulable(n: &NodeRec) -> bool {
        n.state == NodeState::Ready && n.engine_running && n.availability == Availability::Active
    }

    /// Does the version-skew fault apply to node `i`?
    fn skewed(&self, i: usize) -> bool {
        if !self.faults.version_skew {
            return false;
        }
        let n = &self.nodes[i];
        let mgr_versions: Vec<&str> = self
            .nodes
            .iter()
            .filter(|m| m.role == Role::Manager)
            .map(|m| m.engine_version.as_str())
            .collect();
        let Some(oldest) = mgr_versions.iter().min_by(|a, b| version_cmp(a, b)) else {
            return false;
        };
        let newest = mgr_versions
            .iter()
            .max_by(|a, b| version_cmp(a, b))
            .expect("non-empty");
        let node_newer = version_cmp(&n.engine_version, oldest) == std::cmp::Ordering::Greater;
        let mgrs_mixed = version_cmp(oldest, newest) != std::cmp::Ordering::Equal;
        node_newer || (n.role == Role::Manager && mgrs_mixed)
    }

    // ---------------------------------------------------------------- the reconcile loop

    /// Advances the simulation to `now`. Returns true if anything changed.
    pub fn tick(&mut self, now: Nanos) -> bool {
        let gen_before = self.generation;
        self.tick_nodes(now);
        self.tick_raft(now);
        if self.leader.is_some() && self.dirty {
            self.orchestrate(now);
            self.allocate_tasks(now);
            self.schedule(now);
            self.allocate_node_lbs();
            self.reap_history();
        }
        let settled = self.generation;
        self.tick_agents(now);
        if self.leader.is_some() && self.generation != settled {
            // The restart supervisor reacts to the agents' reports in the same pass.
            self.dirty = true;
            self.orchestrate(now);
        }
        // Anything that changed after the reconcile passes is reconciled on the next tick.
        self.dirty = self.generation != settled;
        self.generation != gen_before
    }

    fn tick_nodes(&mut self, now: Nanos) {
        let t = self.timings.clone();
        let have_leader = self.leader.is_some();
        for i in 0..self.nodes.len() {
            let n = &self.nodes[i];
            if let Some(s) = n.stopped_at {
                if n.role == Role::Manager && n.reachable && now >= s + secs(t.reachability) {
                    self.nodes[i].reachable = false;
                    self.bump_node(i, now);
                }
                if have_leader
                    && self.nodes[i].state != NodeState::Down
                    && now >= s + secs(t.node_down)
                {
                    self.set_node_state(i, NodeState::Down, "heartbeat failure", now);
                    self.on_node_down(i, now);
                }
            } else if n.engine_running {
                if n.role == Role::Manager && !n.reachable {
                    self.nodes[i].reachable = true;
                    self.bump_node(i, now);
                }
                if have_leader
                    && self.nodes[i].state != NodeState::Ready
                    && self.nodes[i].ready_at.is_some_and(|r| now >= r)
                {
                    self.nodes[i].ready_at = None;
                    self.set_node_state(i, NodeState::Ready, "", now);
                }
                if have_leader
                    && self.nodes[i].state == NodeState::Ready
                    && now >= self.nodes[i].next_bump
                {
                    // A manager's status/heartbeat update bumps the node's version index.
                    let j = self.rng.random_range(0.5..1.5);
                    self.nodes[i].next_bump = now + secs(t.version_bump * j);
                    self.bump_node(i, now);
                    self.node_event(i, &[], now);
                }
            }
            self.nodes[i]
                .failures
                .retain(|(_, at)| now - *at < FAILURE_WINDOW);
        }
    }

    fn tick_raft(&mut self, now: Nanos) {
        if let Some(l) = &self.leader {
            let alive = self
                .nodes
                .iter()
                .any(|n| &n.id == l && n.engine_running && n.role == Role::Manager);
            if !alive || !self.has_quorum() {
                self.leader = None;
                self.election_at = self.has_quorum().then(|| now + secs(self.timings.election));
                self.touch();
            }
            return;
        }
        if !self.has_quorum() {
            self.election_at = None;
            return;
        }
        let at = *self
            .election_at
            .get_or_insert(now + secs(self.timings.election));
        if now < at {
            return;
        }
        // Elect: the first up manager.
        let Some(li) = self
            .nodes
            .iter()
            .position(|n| n.role == Role::Manager && n.engine_running)
        else {
            return;
        };
        self.leader = Some(self.nodes[li].id.clone());
        self.election_at = None;
        self.bump_node(li, now);
        // The new leader does not know the nodes yet: every node goes unknown, and returns
        // ready one by one as its agent re-registers.
        let max = self.timings.unknown_max.max(0.1);
        for i in 0..self.nodes.len() {
            let st = self.nodes[i].state;
            if st == NodeState::Ready || (st == NodeState::Down && self.nodes[i].engine_running) {
                self.set_node_state(i, NodeState::Unknown, "", now);
            }
            if self.nodes[i].engine_running {
                let d = if i == li {
                    self.rng.random_range(0.3..1.0)
                } else {
                    self.rng.random_range(0.5..max.max(0.6))
                };
                self.nodes[i].ready_at = Some(now + secs(d));
            }
        }
        for i in 0..self.nodes.len() {
            self.node_event(i, &[], now);
        }
        let replicated: Vec<(String, String)> = self
            .services
            .values()
            .filter(|s| matches!(s.mode, Mode::Replicated(_)))
            .map(|s| (s.id.clone(), s.name.clone()))
            .collect();
        for (id, name) in replicated {
            self.emit("service", "update", &id, &[("name", &name)], now);
        }
    }

    /// Replicated tasks on a down node are restarted elsewhere (their old task keeps its
    /// addresses until its node reports it past running).
    fn on_node_down(&mut self, i: usize, now: Nanos) {
        let nid = self.nodes[i].id.clone();
        let ids: Vec<String> = self
            .tasks
            .values()
            .filter(|t| {
                t.node_id.as_deref() == Some(&nid)
                    && t.desired == TState::Running
                    && self
                        .services
                        .get(&t.service_id)
                        .is_some_and(|s| matches!(s.mode, Mode::Replicated(_)))
            })
            .map(|t| t.id.clone())
            .collect();
        for id in ids {
            self.set_desired(&id, TState::Shutdown, now);
        }
    }

    fn orchestrate(&mut self, now: Nanos) {
        if !self.dirty {
            return;
        }
        let mut to_shutdown: Vec<String> = vec![];
        let mut to_create: Vec<(String, Option<u64>, Option<String>)> = vec![];
        let node_pos: HashMap<&str, usize> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.as_str(), i))
            .collect();
        // Per-service view of live (desired running) tasks.
        let mut live: HashMap<&str, Vec<&TaskRec>> = HashMap::new();
        for t in self.tasks.values() {
            if t.desired != TState::Running {
                continue;
            }
            if t.state.terminal() {
                // The restart supervisor: a dead task is shut down and replaced.
                to_shutdown.push(t.id.clone());
                continue;
            }
            let node = t.node_id.as_deref().and_then(|n| node_pos.get(n).copied());
            if let (Some(ni), Some(svc)) = (node, self.services.get(&t.service_id)) {
                let n = &self.nodes[ni];
                let drained = n.availability == Availability::Drain;
                let constraint_fails = !svc.constraints.iter().all(|c| c.matches(n));
                if drained || constraint_fails {
                    to_shutdown.push(t.id.clone());
                    continue;
                }
            } else if t.node_id.is_some() {
                // Its node was removed.
                to_shutdown.push(t.id.clone());
                continue;
            }
            live.entry(t.service_id.as_str()).or_default().push(t);
        }
        for s in self.services.values() {
            let tasks = live.get(s.id.as_str()).map(|v| v.as_slice()).unwrap_or(&[]);
            match s.mode {
                Mode::Replicated(n) => {
                    let mut slots: BTreeMap<u64, Vec<&TaskRec>> = BTreeMap::new();
                    for t in tasks {
                        slots.entry(t.slot.unwrap_or(0)).or_default().push(t);
                    }
                    for slot in 1..=n {
                        match slots.get(&slot) {
                            None => to_create.push((s.id.clone(), Some(slot), None)),
                            Some(v) if v.len() > 1 => {
                                for t in &v[1..] {
                                    to_shutdown.push(t.id.clone());
                                }
                            }
                            _ => {}
                        }
                    }
                    for (slot, v) in slots.range(n + 1..) {
                        let _ = slot;
                        to_shutdown.extend(v.iter().map(|t| t.id.clone()));
                    }
                }
                Mode::Global => {
                    let mut have: HashMap<&str, usize> = HashMap::new();
                    for t in tasks {
                        if let Some(n) = t.node_id.as_deref() {
                            *have.entry(n).or_default() += 1;
                        }
                    }
                    for n in &self.nodes {
                        let eligible = n.availability == Availability::Active
                            && n.state != NodeState::Down
                            && s.constraints.iter().all(|c| c.matches(n));
                        if eligible && !have.contains_key(n.id.as_str()) {
                            to_create.push((s.id.clone(), None, Some(n.id.clone())));
                        }
                    }
                }
            }
        }
        for id in to_shutdown {
            self.set_desired(&id, TState::Shutdown, now);
        }
        for (svc, slot, node) in to_create {
            self.new_task(&svc, slot, node, now);
        }
    }

    /// Allocator: new tasks get one address per network, then go pending.
    fn allocate_tasks(&mut self, now: Nanos) {
        let ids: Vec<String> = self
            .tasks
            .values()
            .filter(|t| t.state == TState::New)
            .map(|t| t.id.clone())
            .collect();
        for id in ids {
            let t = &self.tasks[&id];
            if t.desired != TState::Running {
                self.set_task_state(&id, TState::Shutdown, "shutdown", None, now);
                continue;
            }
            let nets = self
                .services
                .get(&t.service_id)
                .map(|s| s.networks.clone())
                .unwrap_or_default();
            let mut got = vec![];
            let mut ok = true;
            for n in &nets {
                match self.networks.get_mut(n).and_then(|net| net.pool.alloc()) {
                    Some(a) => got.push((n.clone(), a)),
                    None => {
                        ok = false;
                        break;
                    }
                }
            }
            if !ok {
                for (n, a) in got {
                    if let Some(net) = self.networks.get_mut(&n) {
                        net.pool.release(a);
                    }
                }
                continue;
            }
            self.tasks.get_mut(&id).expect("task").addresses = got;
            self.set_task_state(&id, TState::Pending, "pending task scheduling", None, now);
        }
    }

    /// Scheduler: fewest tasks of the service first, then fewest tasks overall; a node with
    /// `MAX_FAILURES` recent failures of the service is tried last; remaining ties go to the
    /// node listed last.
    fn schedule(&mut self, now: Nanos) {
        let pending: Vec<String> = self
            .tasks
            .values()
            .filter(|t| t.state == TState::Pending)
            .map(|t| t.id.clone())
            .collect();
        if pending.is_empty() {
            return;
        }
        let mut total: HashMap<String, usize> = HashMap::new();
        let mut by_svc: HashMap<(String, String), usize> = HashMap::new();
        for t in self.tasks.values() {
            if t.desired == TState::Running
                && !t.state.terminal()
                && let Some(n) = &t.node_id
            {
                *total.entry(n.clone()).or_default() += 1;
                *by_svc.entry((t.service_id.clone(), n.clone())).or_default() += 1;
            }
        }
        for id in pending {
            let t = &self.tasks[&id];
            if t.desired != TState::Running {
                self.set_task_state(&id, TState::Shutdown, "shutdown", None, now);
                continue;
            }
            let svc_id = t.service_id.clone();
            let Some(svc) = self.services.get(&svc_id) else {
                continue;
            };
            let chosen: Option<usize> = if let Some(nid) = &t.node_id {
                // Global task: pre-assigned.
                self.node_idx(nid)
                    .filter(|&i| Self::node_schedulable(&self.nodes[i]))
            } else {
                let mut best: Option<(usize, (bool, usize, usize, usize))> = None;
                for (i, n) in self.nodes.iter().enumerate() {
                    if !Self::node_schedulable(n) || !svc.constraints.iter().all(|c| c.matches(n)) {
                        continue;
                    }
                    let fails = n.failures.iter().filter(|(s, _)| *s == svc_id).count();
                    let key = (
                        fails >= MAX_FAILURES,
                        by_svc
                            .get(&(svc_id.clone(), n.id.clone()))
                            .copied()
                            .unwrap_or(0),
                        total.get(&n.id).copied().unwrap_or(0),
                        usize::MAX - i,
                    );
                    if best.as_ref().is_none_or(|(_, k)| key < *k) {
                        best = Some((i, key));
                    }
                }
                best.map(|(i, _)| i)
            };
            let Some(ni) = chosen else {
                if t.message != "no suitable node" {
                    let msg = "no suitable node";
                    self.set_task_state(&id, TState::Pending, msg, None, now);
                }
                continue;
            };
            let nid = self.nodes[ni].id.clone();
            *total.entry(nid.clone()).or_default() += 1;
            *by_svc.entry((svc_id, nid.clone())).or_default() += 1;
            let accept = secs(self.timings.task_accept);
            let tk = self.tasks.get_mut(&id).expect("task");
            tk.node_id = Some(nid);
            tk.next_at = now + accept;
            self.set_task_state(
                &id,
                TState::Assigned,
                "scheduler assigned task to node",
                None,
                now,
            );
        }
    }

    /// Allocator, nodes: one load-balancer address per node that has a task at or before
    /// `running` on the network; freed when it has none. Nodes are served in node order.
    fn allocate_node_lbs(&mut self) {
        let mut need: BTreeSet<(String, String)> = BTreeSet::new(); // (network, node)
        for t in self.tasks.values() {
            if t.state < TState::Assigned || t.state.terminal() {
                continue;
            }
            let Some(node) = &t.node_id else { continue };
            if let Some(s) = self.services.get(&t.service_id) {
                for n in &s.networks {
                    need.insert((n.clone(), node.clone()));
                }
            }
        }
        let order: Vec<String> = self.nodes.iter().map(|n| n.id.clone()).collect();
        let mut changed = false;
        for net in self.networks.values_mut() {
            if net.ingress {
                continue;
            }
            let stale: Vec<String> = net
                .lb
                .keys()
                .filter(|n| !need.contains(&(net.id.clone(), (*n).clone())))
                .cloned()
                .collect();
            for n in stale {
                if let Some(a) = net.lb.remove(&n) {
                    net.pool.release(a);
                    changed = true;
                }
            }
            for n in &order {
                if need.contains(&(net.id.clone(), n.clone()))
                    && !net.lb.contains_key(n)
                    && let Some(a) = net.pool.alloc()
                {
                    net.lb.insert(n.clone(), a);
                    changed = true;
                }
            }
        }
        if changed {
            self.touch();
        }
    }

    /// Task history retention: at most `TASK_HISTORY` tasks per slot (per node for global).
    fn reap_history(&mut self) {
        if !self.dirty {
            return;
        }
        type Group = Vec<(Nanos, String, bool)>;
        let mut groups: HashMap<(String, String), Group> = HashMap::new();
        for t in self.tasks.values() {
            let key = match t.slot {
                Some(s) => s.to_string(),
                None => t.node_id.clone().unwrap_or_default(),
            };
            let removable = t.state.terminal() && t.desired != TState::Running;
            groups
                .entry((t.service_id.clone(), key))
                .or_default()
                .push((t.created, t.id.clone(), removable));
        }
        let mut removed = false;
        for (_, mut v) in groups {
            if v.len() <= TASK_HISTORY {
                continue;
            }
            v.sort();
            let mut excess = v.len() - TASK_HISTORY;
            for (_, id, removable) in v {
                if excess == 0 {
                    break;
                }
                if removable {
                    self.tasks.remove(&id);
                    excess -= 1;
                    removed = true;
                }
            }
        }
        if removed {
            self.touch();
        }
    }

    /// The agents: advance the tasks on nodes whose engine runs.
    fn tick_agents(&mut self, now: Nanos) {
        let t = self.timings.clone();
        let pos: HashMap<String, usize> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.clone(), i))
            .collect();
        let ids: Vec<String> = self
            .tasks
            .values()
            .filter(|tk| {
                tk.state >= TState::Assigned
                    && !tk.state.terminal()
                    && (tk.next_at <= now
                        || tk.desired != TState::Running
                        || tk.state == TState::Preparing)
            })
            .map(|tk| tk.id.clone())
            .collect();
        for id in ids {
            let tk = &self.tasks[&id];
            let Some(ni) = tk.node_id.as_ref().and_then(|n| pos.get(n).copied()) else {
                continue;
            };
            if !self.nodes[ni].engine_running {
                continue;
            }
            if tk.desired != TState::Running {
                match tk.stop_at {
                    None => {
                        let d = if tk.state == TState::Running {
                            secs(t.task_stop)
                        } else {
                            100 * MS
                        };
                        self.tasks.get_mut(&id).expect("task").stop_at = Some(now + d);
                    }
                    Some(at) if now >= at => {
                        self.set_task_state(&id, TState::Shutdown, "shutdown", None, now);
                    }
                    _ => {}
                }
                continue;
            }
            if tk.next_at > now {
                continue;
            }
            match tk.state {
                TState::Assigned => {
                    self.tasks.get_mut(&id).expect("task").next_at = now + secs(t.task_accept);
                    self.set_task_state(&id, TState::Accepted, "accepted", None, now);
                }
                TState::Accepted => {
                    let tk = self.tasks.get_mut(&id).expect("task");
                    tk.next_at = now + secs(t.task_prepare);
                    tk.prepare_started = now;
                    self.set_task_state(&id, TState::Preparing, "preparing", None, now);
                }
                TState::Preparing => {
                    let node = &self.nodes[ni];
                    if self.faults.restart_active
                        && node
                            .restart_reject_until
                            .is_some_and(|u| tk.prepare_started < u)
                    {
                        self.set_task_state(
                            &id,
                            TState::Rejected,
                            "preparing",
                            Some(ERR_SWARM_NOT_ACTIVE),
                            now,
                        );
                        continue;
                    }
                    let nets = self
                        .services
                        .get(&tk.service_id)
                        .map(|s| s.networks.as_slice())
                        .unwrap_or(&[]);
                    let attached = nets.iter().all(|n| {
                        self.networks
                            .get(n)
                            .is_none_or(|net| net.lb.contains_key(&node.id))
                    }) && !self.skewed(ni);
                    if attached {
                        self.tasks.get_mut(&id).expect("task").next_at = now + secs(t.task_start);
                        self.set_task_state(&id, TState::Starting, "starting", None, now);
                    } else if now >= tk.prepare_started + secs(t.attachment_wait) {
                        self.set_task_state(
                            &id,
                            TState::Rejected,
                            "preparing",
                            Some(ERR_MISSING_ATTACHMENTS),
                            now,
                        );
                    }
                }
                TState::Starting => {
                    let cid = gen_hex(&mut self.rng, 64);
                    let pid = self.rng.random_range(1000..60000);
                    let tk = self.tasks.get_mut(&id).expect("task");
                    tk.container_id = Some(cid);
                    tk.pid = pid;
                    tk.exit_code = -1;
                    self.set_task_state(&id, TState::Running, "started", None, now);
                }
                _ => {}
            }
        }
        if self.faults.restart_active {
            // Nothing else: the window simply expires.
        }
    }

    /// How many tasks of a service are running (for `ServiceStatus`).
    pub fn service_counts(&self) -> HashMap<String, (u64, u64)> {
        let mut running: HashMap<String, u64> = HashMap::new();
        for t in self.tasks.values() {
            if t.state == TState::Running && t.desired == TState::Running {
                *running.entry(t.service_id.clone()).or_default() += 1;
            }
        }
        let eligible_nodes = |s: &ServiceRec| {
            self.nodes
                .iter()
                .filter(|n| {
                    n.availability != Availability::Drain
                        && n.state != NodeState::Down
                        && s.constraints.iter().all(|c| c.matches(n))
                })
                .count() as u64
        };
        self.services
            .values()
            .map(|s| {
                let desired = match s.mode {
                    Mode::Replicated(n) => n,
                    Mode::Global => eligible_nodes(s),
                };
                (
                    s.id.clone(),
                    (running.get(&s.id).copied().unwrap_or(0), desired),
                )
            })
            .collect()
    }
}

/// What the engine answers when an ID prefix matches several objects.
#[derive(Clone, Copy)]
enum Ambiguous {
    /// 400 "... is ambiguous (N matches found)" (nodes, services).
    Rejected,
    /// 404 "... not found" (networks).
    NotFound,
}

/// The engine's lookup of an object by the key a client gives: exact ID, then name, then a
/// unique ID prefix. `objects` yields (handle, id, whether the name matches the key).
fn resolve_key<'a, T>(
    kind: &str,
    key: &str,
    objects: impl Iterator<Item = (T, &'a str, bool)>,
    ambiguous: Ambiguous,
) -> Result<T, ApiError> {
    let mut named = None;
    let mut prefixed = Vec::new();
    for (handle, id, name_matches) in objects {
        if id == key {
            return Ok(handle);
        }
        if name_matches {
            named.get_or_insert(handle);
        } else if !key.is_empty() && id.starts_with(key) {
            prefixed.push(handle);
        }
    }
    if let Some(handle) = named {
        return Ok(handle);
    }
    let matches = prefixed.len();
    match (prefixed.pop(), matches, ambiguous) {
        (Some(handle), 1, _) => Ok(handle),
        (_, 2.., Ambiguous::Rejected) => Err(ApiError::new(
            400,
            format!("{kind} {key} is ambiguous ({matches} matches found)"),
        )),
        _ => Err(ApiError::new(404, format!("{kind} {key} not found"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(m: usize, w: usize) -> Cluster {
        Cluster::new(
            m,
            w,
            "20.10.24",
            Timings::default(),
            Faults::default(),
            7,
            0,
        )
    }

    fn run(c: &mut Cluster, from: Nanos, to: Nanos) {
        let mut t = from;
        while t <= to {
            c.tick(t);
            t += 100 * MS;
        }
    }

    #[test]
    fn api_versions_by_engine() {
        assert_eq!(api_versions("20.10.24"), ("1.41", "1.12"));
        assert_eq!(api_versions("20.10.24+dfsg1"), ("1.41", "1.12"));
        assert_eq!(api_versions("26.1.5"), ("1.45", "1.24"));
        assert!(version_cmp("20.10.24", "26.1.5").is_lt());
        assert!(version_cmp("26.1.5+dfsg1", "26.1.5").is_eq());
    }

    #[test]
    fn lookups_resolve_keys_as_the_engine_does() {
        let mut c = cluster(3, 2);
        c.deploy_seed(0).unwrap();
        let n2 = c.nodes[1].id.clone();
        assert_eq!(c.find_node(&n2).unwrap(), 1);
        assert_eq!(c.find_node(&c.nodes[3].hostname.clone()).unwrap(), 3);
        assert_eq!(c.find_node(&n2[..12]).unwrap(), 1);
        assert_eq!(c.find_node("no-such-node").unwrap_err().status, 404);
        assert_eq!(
            c.find_node("").unwrap_err().status,
            404,
            "the empty key is no prefix"
        );
        let service = c.find_service("test_client").unwrap();
        assert_eq!(c.find_service(&service[..10]).unwrap(), service);
        let network = c.find_network("test_tnet").unwrap();
        assert_eq!(c.find_network(&network).unwrap(), network);

        // A prefix shared by several IDs: nodes and services are rejected as ambiguous,
        // networks are not found (as the engine answers each); a name wins over a prefix.
        let objects = || [(1, "abc1", false), (2, "abc2", false), (3, "xyz", false)].into_iter();
        let err = resolve_key("node", "abc", objects(), Ambiguous::Rejected).unwrap_err();
        assert_eq!(
            (err.status, err.message.as_str()),
            (400, "node abc is ambiguous (2 matches found)")
        );
        let err = resolve_key("network", "abc", objects(), Ambiguous::NotFound).unwrap_err();
        assert_eq!(
            (err.status, err.message.as_str()),
            (404, "network abc not found")
        );
        assert_eq!(
            resolve_key("node", "abc2", objects(), Ambiguous::Rejected).unwrap(),
            2
        );
        let named = [(1, "abc1", false), (2, "zzz", true)].into_iter();
        assert_eq!(
            resolve_key("node", "abc", named, Ambiguous::Rejected).unwrap(),
            2
        );
    }

    #[test]
    fn seed_stack_converges() {
        let mut c = cluster(3, 2);
        c.deploy_seed(0).unwrap();
        run(&mut c, 0, 20 * SEC);
        let running = c
            .tasks
            .values()
            .filter(|t| t.state == TState::Running)
            .count();
        assert_eq!(running, 5 + 2);
        // 5 tasks of test_service + 2 of test_client + 1 VIP + 5 LB on test_tnet.
        let net = c.networks.values().find(|n| n.name == "test_tnet").unwrap();
        assert_eq!(net.pool.in_use(), 7 + 1 + 5);
    }

    #[test]
    fn drain_moves_tasks() {
        let mut c = cluster(3, 2);
        c.deploy_seed(0).unwrap();
        run(&mut c, 0, 20 * SEC);
        let client = c.find_service("test_client").unwrap();
        let on: Vec<String> = c
            .tasks
            .values()
            .filter(|t| t.service_id == client && t.state == TState::Running)
            .map(|t| t.node_id.clone().unwrap())
            .collect();
        let victim = on[0].clone();
        let i = c.node_idx(&victim).unwrap();
        let v = c.nodes[i].version;
        let role = if c.nodes[i].role == Role::Manager {
            "manager"
        } else {
            "worker"
        };
        c.update_node(&victim, v, SpecUpdate::new(role, "drain"), 20 * SEC)
            .unwrap();
        assert_eq!(
            c.update_node(&victim, v, SpecUpdate::new(role, "drain"), 20 * SEC),
            Err(ApiError::new(500, ERR_OUT_OF_SEQUENCE))
        );
        run(&mut c, 20 * SEC, 40 * SEC);
        assert!(
            !c.tasks
                .values()
                .any(|t| t.node_id.as_deref() == Some(&victim) && t.state == TState::Running)
        );
        let running = c
            .tasks
            .values()
            .filter(|t| t.service_id == client && t.state == TState::Running)
            .count();
        assert_eq!(running, 2);
    }
}
