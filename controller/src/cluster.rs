//! The observed cluster, reduced to what the planner decides on.
//!
//! Conversion from the engine's JSON (bollard's models) happens here, once, so the planner
//! never sees `Option`s of the wire format.

use std::collections::BTreeMap;

use bollard::models::{
    Node, NodeSpecAvailabilityEnum, NodeSpecRoleEnum, NodeState, Reachability, Task, TaskState,
};
use serde::Serialize;

use crate::marks::{Mark, MarkError};
pub use crate::vocab::{Availability, NodeRef, Role, State};

/// One node, as the planner sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeView {
    pub id: String,
    pub hostname: String,
    pub role: Role,
    pub leader: bool,
    pub availability: Availability,
    pub state: State,
    /// For managers: whether raft reaches it.
    pub reachable: bool,
    pub engine_version: String,
    pub addr: String,
    /// `Spec.Labels`: the admin's labels and the operator's marks.
    pub labels: BTreeMap<String, String>,
    /// `Version.Index`: an update must name it, and fails if it is stale.
    pub version_index: u64,
    /// A manager whose own engine says its swarm component is locked (autolock): not a working
    /// manager until unlocked. From the node's own `/info`, not from the swarm's node list.
    pub locked: bool,
    /// Whether the node's own engine runs a manager (its `/info` `ControlAvailable`); `None`
    /// where the operator does not reach that engine. A demoted manager's engine goes on running
    /// its manager until it has cleared its raft data.
    pub runs_manager: Option<bool>,
}

impl NodeView {
    pub fn from_engine(node: &Node) -> Result<Self, ConversionError> {
        let id = node.id.clone().ok_or(ConversionError::Missing("ID"))?;
        let spec = node.spec.as_ref().ok_or(ConversionError::Missing("Spec"))?;
        let description = node.description.as_ref();
        let hostname = description
            .and_then(|d| d.hostname.clone())
            .unwrap_or_else(|| id.clone());
        let role = match spec.role {
            Some(NodeSpecRoleEnum::MANAGER) => Role::Manager,
            _ => Role::Worker,
        };
        let availability = match spec.availability {
            Some(NodeSpecAvailabilityEnum::PAUSE) => Availability::Pause,
            Some(NodeSpecAvailabilityEnum::DRAIN) => Availability::Drain,
            _ => Availability::Active,
        };
        let status = node.status.as_ref();
        let state = match status.and_then(|s| s.state) {
            Some(NodeState::READY) => State::Ready,
            Some(NodeState::DOWN) => State::Down,
            Some(NodeState::DISCONNECTED) => State::Disconnected,
            _ => State::Unknown,
        };
        let manager_status = node.manager_status.as_ref();
        let leader = manager_status.and_then(|m| m.leader).unwrap_or(false);
        let reachable = matches!(
            manager_status.and_then(|m| m.reachability),
            Some(Reachability::REACHABLE)
        );
        let engine_version = description
            .and_then(|d| d.engine.as_ref())
            .and_then(|e| e.engine_version.clone())
            .unwrap_or_default();
        let addr = status.and_then(|s| s.addr.clone()).unwrap_or_default();
        let labels = spec
            .labels
            .as_ref()
            .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let version_index = node
            .version
            .as_ref()
            .and_then(|v| v.index)
            .ok_or(ConversionError::Missing("Version.Index"))?;
        Ok(Self {
            id,
            hostname,
            role,
            leader,
            availability,
            state,
            reachable,
            engine_version,
            addr,
            labels,
            version_index,
            locked: false,
            runs_manager: None,
        })
    }

    pub fn mark(&self) -> Option<Result<Mark, MarkError>> {
        Mark::from_labels(&self.labels)
    }

    pub(crate) fn is_manager(&self) -> bool {
        self.role == Role::Manager
    }

    /// Ready, and for a manager also reachable by raft.
    pub(crate) fn is_healthy(&self) -> bool {
        self.state == State::Ready && (self.role == Role::Worker || self.reachable)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConversionError {
    #[error("the engine returned a node without {0}")]
    Missing(&'static str),
}

/// One task, as far as draining is concerned.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskView {
    pub id: String,
    pub node_id: Option<String>,
    pub service_id: String,
    pub state: TaskState,
    pub desired_state: TaskState,
}

impl TaskView {
    pub fn from_engine(task: &Task) -> Option<Self> {
        Some(Self {
            id: task.id.clone()?,
            node_id: task.node_id.clone().filter(|n| !n.is_empty()),
            service_id: task.service_id.clone().unwrap_or_default(),
            state: task.status.as_ref().and_then(|s| s.state)?,
            desired_state: task.desired_state.unwrap_or(TaskState::RUNNING),
        })
    }

    #[cfg(test)]
    /// Whether the task still occupies its node: assigned to it and not yet past `running`.
    pub(crate) fn occupies_node(&self) -> bool {
        occupies_node(self.state)
    }
}

/// Whether a task in this state still occupies its node: assigned and not yet past `running`.
pub(crate) fn occupies_node(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::ASSIGNED
            | TaskState::ACCEPTED
            | TaskState::PREPARING
            | TaskState::READY
            | TaskState::STARTING
            | TaskState::RUNNING
    )
}

/// What the planner decides from: every node, and how many tasks still occupy each. Counts,
/// not tasks: at 30,000 tasks a copy of each per pass would be most of the operator's work.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Snapshot {
    pub nodes: Vec<NodeView>,
    /// Per node ID: its tasks not yet past `running` (nodes without any are absent).
    pub occupied: BTreeMap<String, usize>,
    /// The swarm is autolocked (`EncryptionConfig.AutoLockManagers`), as a manager reports it.
    pub autolock: bool,
    /// Node IDs whose own engine runs with `live-restore` (only engines the operator reaches).
    pub live_restore: std::collections::BTreeSet<String>,
}

impl Snapshot {
    pub fn node(&self, id: &str) -> Option<&NodeView> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// Tasks that still keep a node busy (a drained node is empty when this is 0).
    pub fn tasks_on(&self, node_id: &str) -> usize {
        self.occupied.get(node_id).copied().unwrap_or(0)
    }

    #[cfg(test)]
    /// Counts a task, if it occupies its node.
    pub(crate) fn add_task(&mut self, task: &TaskView) {
        if let Some(node) = task.node_id.as_ref().filter(|_| task.occupies_node()) {
            *self.occupied.entry(node.clone()).or_default() += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(rel: &str) -> String {
        swarm_sim::captures::read(rel)
    }

    #[test]
    fn reads_the_real_20_10_nodes() {
        let nodes: Vec<Node> = serde_json::from_str(&capture("20.10.24/nodes.json")).unwrap();
        let views: Vec<NodeView> = nodes
            .iter()
            .map(|n| NodeView::from_engine(n).unwrap())
            .collect();
        assert_eq!(views.len(), 5);
        assert_eq!(views.iter().filter(|n| n.is_manager()).count(), 3);
        assert_eq!(views.iter().filter(|n| n.leader).count(), 1);
        assert!(
            views
                .iter()
                .all(|n| n.engine_version.starts_with("20.10.24"))
        );
        assert!(views.iter().all(|n| n.state == State::Ready));
        assert!(
            views
                .iter()
                .filter(|n| n.is_manager())
                .all(|n| n.reachable && n.is_healthy())
        );
        assert!(views.iter().all(|n| n.version_index > 0));
    }

    #[test]
    fn reads_the_real_mixed_version_nodes() {
        let nodes: Vec<Node> =
            serde_json::from_str(&capture("26.1.5/nodes-mixed-versions.json")).unwrap();
        let views: Vec<NodeView> = nodes
            .iter()
            .map(|n| NodeView::from_engine(n).unwrap())
            .collect();
        let new = views
            .iter()
            .filter(|n| n.engine_version.starts_with("26.1.5"))
            .count();
        assert_eq!(new, 1, "one node upgraded in that capture");
    }

    #[test]
    fn counts_only_tasks_not_yet_past_running() {
        let tasks: Vec<Task> = serde_json::from_str(&capture("20.10.24/tasks.json")).unwrap();
        let views: Vec<TaskView> = tasks.iter().filter_map(TaskView::from_engine).collect();
        assert_eq!(views.len(), tasks.len());
        let mut snapshot = Snapshot::default();
        views.iter().for_each(|t| snapshot.add_task(t));
        for node in views.iter().filter_map(|t| t.node_id.clone()) {
            let busy = snapshot.tasks_on(&node);
            let running = views
                .iter()
                .filter(|t| t.node_id.as_deref() == Some(&node) && t.state == TaskState::RUNNING)
                .count();
            assert!(busy >= running);
        }
        assert!(
            views
                .iter()
                .any(|t| t.state == TaskState::REJECTED && !t.occupies_node())
        );
    }
}
