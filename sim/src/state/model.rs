//! The swarm's objects as the simulator keeps them (nodes, services, tasks, networks), the
//! engine's error messages, and engine-version arithmetic. Pure data: no behaviour over time.

use std::collections::BTreeMap;

use crate::clock::Nanos;
use crate::ipam::Pool;

pub const ERR_MISSING_ATTACHMENTS: &str =
    "node is missing network attachments, ip addresses may be exhausted";
pub const ERR_SWARM_NOT_ACTIVE: &str =
    "cannot create a swarm scoped network when swarm is not active";
pub const ERR_NO_LEADER: &str = "rpc error: code = Unknown desc = The swarm does not have a leader. It's possible that too few managers are online. Make sure more than half of the managers are online.";
pub const ERR_OUT_OF_SEQUENCE: &str = "rpc error: code = Unknown desc = update out of sequence";
pub const ERR_NOT_MANAGER: &str = "This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. Please run this command on a manager node or promote the current node to a manager.";

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
    /// Is the engine process up with its swarm component (its API answers)?
    pub engine_running: bool,
    /// The engine runs this version but its swarm component is locked (autolock): the API
    /// answers, the swarm sees the node as stopped. `engine_running` is false meanwhile.
    pub locked_engine: Option<String>,
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
    /// Demoted, but its own engine still runs its manager until then (`/info` says
    /// `ControlAvailable`), raft data not yet cleared.
    pub manager_stops_at: Option<Nanos>,
    /// Its engine stopped while a demoted manager still ran there: the old raft data is left,
    /// and the engine panics when the node is promoted again.
    pub stale_raft_data: bool,
}

impl NodeRec {
    /// Its own engine runs a manager: a manager, or one demoted whose manager has not stopped.
    pub fn runs_manager(&self) -> bool {
        self.role == Role::Manager || self.manager_stops_at.is_some()
    }
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
/// A placement constraint without `==` or `!=`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid constraint {0}: expected KEY==VALUE or KEY!=VALUE")]
pub struct ConstraintError(pub String);

/// `node.id==...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    pub key: String,
    pub eq: bool,
    pub value: String,
}

impl Constraint {
    pub fn parse(s: &str) -> Result<Constraint, ConstraintError> {
        let (k, eq, v) = if let Some((k, v)) = s.split_once("!=") {
            (k, false, v)
        } else if let Some((k, v)) = s.split_once("==") {
            (k, true, v)
        } else {
            return Err(ConstraintError(s.to_string()));
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
    /// `TaskTemplate.ForceUpdate`: a change rolls the tasks out again (`--force`).
    pub force_update: u64,
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
            force_update: 0,
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
    pub force_update: u64,
    pub version: u64,
    pub created: Nanos,
    pub updated: Nanos,
    /// (network id, address offset)
    pub vips: Vec<(String, u32)>,
    /// Moves when the task template changes; tasks made from an older one are rolled out.
    pub template: u64,
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
    /// The service's `template` this task was made from, and its image (a task keeps the
    /// spec it was made with).
    pub template: u64,
    pub image: String,
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

// ---------------------------------------------------------------- recorded history

/// One node as the swarm and its host show it at one moment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeFrame {
    pub id: String,
    pub hostname: String,
    /// `manager` or `worker`.
    pub role: String,
    pub leader: bool,
    /// `active`, `pause` or `drain`.
    pub availability: String,
    /// `ready`, `down`, `unknown`, `disconnected`.
    pub state: String,
    /// The manager's raft reachability (meaningless for a worker).
    pub reachable: bool,
    /// The engine process runs (a locked manager's does not count: its swarm part is stopped).
    pub engine_running: bool,
    pub engine_version: String,
    pub labels: BTreeMap<String, String>,
}

/// Every node at one simulated time.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Frame {
    /// Simulated nanoseconds since the simulator's epoch.
    pub at: Nanos,
    pub nodes: Vec<NodeFrame>,
}

/// The frames recorded so far, the last one being the current state.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub frames: Vec<Frame>,
}
