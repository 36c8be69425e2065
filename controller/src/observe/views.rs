//! Lean views of the engine's objects, parsed straight from its JSON: only the fields a
//! consumer reads, with the wire names (`ID`, `Spec.TaskTemplate.Placement`, ...) so that a
//! response of either engine (API 1.41 or 1.45) parses the same way. Nothing else is kept.

use std::collections::BTreeMap;

use bollard::models::TaskState;
use serde::Deserialize;

use crate::cluster::{Availability, NodeView, Role, State};
use crate::engine_json::null_as_default;

/// A JSON object whose presence matters and whose content does not (`Mode.Global: {}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Present {}

/// `Version.Index`: an update must name it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct ObjectVersion {
    #[serde(rename = "Index", default)]
    pub index: u64,
}

/// One node (`GET /nodes`, `GET /nodes/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ObservedNode {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(default)]
    pub version: ObjectVersion,
    // Required, as are its role and availability: a default would make a manager a worker
    // and an admin's drained node active (a decode error is retried instead).
    pub spec: NodeSpec,
    #[serde(default)]
    pub description: NodeDescription,
    #[serde(default)]
    pub status: NodeStatus,
    #[serde(default)]
    pub manager_status: Option<ManagerStatus>,
    /// When a manager last wrote the node, on that manager's clock (see
    /// [`super::Observation::swarm_now`]).
    #[serde(default)]
    pub updated_at: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeSpec {
    pub role: String,
    pub availability: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeDescription {
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub platform: Platform,
    #[serde(default)]
    pub engine: EngineDescription,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Platform {
    #[serde(default, rename = "OS")]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EngineDescription {
    #[serde(default)]
    pub engine_version: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeStatus {
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub addr: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ManagerStatus {
    #[serde(default)]
    pub leader: bool,
    #[serde(default)]
    pub reachability: String,
}

impl ObservedNode {
    /// The hostname, or the node ID when the engine gave none.
    pub fn hostname(&self) -> &str {
        if self.description.hostname.is_empty() {
            &self.id
        } else {
            &self.description.hostname
        }
    }

    pub fn role(&self) -> Role {
        match self.spec.role.as_str() {
            "manager" => Role::Manager,
            _ => Role::Worker,
        }
    }

    pub fn availability(&self) -> Availability {
        Availability::parse(&self.spec.availability).unwrap_or(Availability::Active)
    }

    pub fn state(&self) -> State {
        match self.status.state.as_str() {
            "ready" => State::Ready,
            "down" => State::Down,
            "disconnected" => State::Disconnected,
            _ => State::Unknown,
        }
    }

    pub fn is_leader(&self) -> bool {
        self.manager_status.as_ref().is_some_and(|m| m.leader)
    }

    /// The node takes new tasks: availability `active` and status `ready`.
    pub fn schedulable(&self) -> bool {
        self.availability() == Availability::Active && self.state() == State::Ready
    }

    /// The planner's view of this node.
    pub(crate) fn to_view(&self) -> NodeView {
        NodeView {
            id: self.id.clone(),
            hostname: self.hostname().to_string(),
            role: self.role(),
            leader: self.is_leader(),
            availability: self.availability(),
            state: self.state(),
            reachable: self
                .manager_status
                .as_ref()
                .is_some_and(|m| m.reachability == "reachable"),
            engine_version: self.description.engine.engine_version.clone(),
            addr: self.status.addr.clone(),
            labels: self.spec.labels.clone(),
            version_index: self.version.index,
            // Only the node's own engine can tell (`crate::autolock::observe_locks`,
            // `crate::reconciler::observe_own_managers`).
            locked: false,
            runs_manager: None,
        }
    }
}

/// One service (`GET /services?status=true`, `GET /services/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ObservedService {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(default)]
    pub version: ObjectVersion,
    #[serde(default)]
    pub spec: ServiceSpec,
    /// Absent until the allocator has looked at the service.
    #[serde(default)]
    pub endpoint: Option<ServiceEndpoint>,
    /// Running/desired task counts (API >= 1.41, with `status=true`).
    #[serde(default)]
    pub service_status: Option<ServiceStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceSpec {
    #[serde(default)]
    pub name: String,
    /// The service's labels (`docker service create --label`): what
    /// `spec.health.blockingServices` matches.
    #[serde(default, deserialize_with = "null_as_default")]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub mode: Option<ServiceMode>,
    #[serde(default)]
    pub task_template: TaskTemplate,
    /// Deprecated place for the networks, still honoured by the engine.
    #[serde(default, deserialize_with = "null_as_default")]
    pub networks: Vec<NetworkAttachment>,
    #[serde(default)]
    pub endpoint_spec: Option<EndpointSpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceMode {
    #[serde(default)]
    pub replicated: Option<Replicated>,
    #[serde(default)]
    pub global: Option<Present>,
    #[serde(default)]
    pub replicated_job: Option<Present>,
    #[serde(default)]
    pub global_job: Option<Present>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Replicated {
    #[serde(default)]
    pub replicas: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskTemplate {
    #[serde(default)]
    pub placement: Placement,
    #[serde(default)]
    pub restart_policy: Option<RestartPolicy>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub networks: Vec<NetworkAttachment>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RestartPolicy {
    #[serde(default)]
    pub max_attempts: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Placement {
    #[serde(default, deserialize_with = "null_as_default")]
    pub constraints: Vec<String>,
    #[serde(default)]
    pub max_replicas: Option<i64>,
}

/// A reference to a network: its ID, name or ID prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkAttachment {
    #[serde(default)]
    pub target: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointSpec {
    #[serde(default)]
    pub mode: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub ports: Vec<PortConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortConfig {
    #[serde(default)]
    pub publish_mode: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceEndpoint {
    #[serde(default, rename = "VirtualIPs")]
    pub virtual_ips: Option<Vec<VirtualIp>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VirtualIp {
    #[serde(default, rename = "NetworkID")]
    pub network_id: String,
    #[serde(default)]
    pub addr: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceStatus {
    #[serde(default)]
    pub running_tasks: u64,
    #[serde(default)]
    pub desired_tasks: u64,
}

/// How many tasks a service wants running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    Replicas(u64),
    /// One on every eligible node.
    Global,
}

impl ObservedService {
    /// The service's name, or its ID when it has none.
    pub fn name(&self) -> &str {
        if self.spec.name.is_empty() {
            &self.id
        } else {
            &self.spec.name
        }
    }

    /// `None` for jobs (they run to completion: nothing to converge).
    pub fn wanted(&self) -> Option<Wanted> {
        let Some(mode) = &self.spec.mode else {
            // No mode: the engine's default is replicated with 1 replica.
            return Some(Wanted::Replicas(1));
        };
        if let Some(r) = &mode.replicated {
            return Some(Wanted::Replicas(r.replicas.unwrap_or(1).max(0) as u64));
        }
        mode.global.is_some().then_some(Wanted::Global)
    }

    /// Global (or global job): one task per node, nothing is rescheduled.
    pub(crate) fn is_global(&self) -> bool {
        self.spec
            .mode
            .as_ref()
            .is_some_and(|m| m.global.is_some() || m.global_job.is_some())
    }

    pub fn constraints(&self) -> &[String] {
        &self.spec.task_template.placement.constraints
    }

    pub fn max_replicas(&self) -> Option<u64> {
        self.spec
            .task_template
            .placement
            .max_replicas
            .filter(|&m| m > 0)
            .map(|m| m as u64)
    }

    /// Whether the engine's counts say every wanted task runs.
    pub(crate) fn converged_by_status(&self) -> Option<bool> {
        let s = self.service_status?;
        Some(s.running_tasks == s.desired_tasks)
    }
}

/// One network (`GET /networks`, `GET /networks/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ObservedNetwork {
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub driver: String,
    #[serde(default)]
    pub ingress: bool,
    #[serde(default, rename = "IPAM")]
    pub ipam: Ipam,
    /// The allocator's own counts (API >= 1.52, `GET /networks/{id}` only).
    #[serde(default)]
    pub status: Option<NetworkStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Ipam {
    #[serde(default, deserialize_with = "null_as_default")]
    pub config: Vec<IpamPool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamPool {
    #[serde(default)]
    pub subnet: String,
    #[serde(default, rename = "IPRange")]
    pub ip_range: String,
    #[serde(default)]
    pub gateway: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct NetworkStatus {
    #[serde(default, rename = "IPAM")]
    pub ipam: Option<IpamStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct IpamStatus {
    #[serde(default, rename = "Subnets")]
    pub subnets: BTreeMap<String, SubnetStatus>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct SubnetStatus {
    #[serde(rename = "IPsInUse")]
    pub ips_in_use: Option<u64>,
    #[serde(rename = "DynamicIPsAvailable")]
    pub dynamic_ips_available: Option<u64>,
}

impl ObservedNetwork {
    pub(crate) fn is_overlay(&self) -> bool {
        self.driver == "overlay"
    }
}

/// One task (`GET /tasks`, with or without filters).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ObservedTask {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(default)]
    pub version: ObjectVersion,
    #[serde(default, rename = "ServiceID")]
    pub service_id: String,
    /// Empty while the task has no node.
    #[serde(default, rename = "NodeID")]
    pub node_id: String,
    #[serde(default)]
    pub slot: Option<i64>,
    #[serde(default = "running")]
    pub desired_state: TaskState,
    #[serde(default)]
    pub status: TaskStatus,
    #[serde(default)]
    pub spec: TaskSpec,
}

fn running() -> TaskState {
    TaskState::RUNNING
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskStatus {
    #[serde(default)]
    pub timestamp: Option<String>,
    #[serde(default)]
    pub state: TaskState,
    #[serde(default)]
    pub err: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskSpec {
    #[serde(default, deserialize_with = "null_as_default")]
    pub networks: Vec<NetworkAttachment>,
}

impl ObservedTask {
    pub fn state(&self) -> TaskState {
        self.status.state
    }

    /// The node the task is assigned to, if any.
    pub fn node(&self) -> Option<&str> {
        (!self.node_id.is_empty()).then_some(self.node_id.as_str())
    }

    /// Current and desired state `running`.
    pub(crate) fn is_running(&self) -> bool {
        self.state() == TaskState::RUNNING && self.desired_state == TaskState::RUNNING
    }

    /// `rejected` or `failed`: what the rejection metrics count.
    pub(crate) fn is_problem(&self) -> bool {
        matches!(self.state(), TaskState::REJECTED | TaskState::FAILED)
    }

    /// Past `running` and not a problem (`complete`, `shutdown`, `remove`, `orphaned`): the
    /// history of a slot. It holds no address, occupies no node and is not counted, so the
    /// store does not keep it (at 1,000 nodes that history is half of every task listing).
    pub(crate) fn is_spent(&self) -> bool {
        self.state() > TaskState::RUNNING && !self.is_problem()
    }
}
