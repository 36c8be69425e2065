//! The rollout's status: conditions in the Kubernetes style plus per-node steps, served on
//! `/status`, printed by `swarm-upgrade status`, and used by `demo`.

use std::fmt::Write;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::cluster::Snapshot;
use crate::health::{NetworkUsage, TaskProblem, network_usage, rejections::task_problem};
use crate::marks::Step;
use crate::observe::Observation;
use crate::planner::{Blocker, BlockerKind, Phase, Plan, PlannedNode};

/// How many task rejections and failures `/status` lists, the most recent first.
pub const RECENT_TASK_PROBLEMS: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConditionType {
    Progressing,
    Paused,
    Degraded,
    Complete,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: ConditionType,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RolloutStatus {
    pub name: String,
    /// `spec.version` of the spec being acted on (the last good one).
    pub observed_version: Option<String>,
    pub spec_generation: u64,
    /// Why the spec file as it is now is not used (the last good one is).
    pub spec_error: Option<String>,
    pub phase: Option<Phase>,
    pub conditions: Vec<Condition>,
    pub nodes: Vec<PlannedNode>,
    pub blockers: Vec<Blocker>,
    pub last_error: Option<String>,
    pub updated_at: Option<Timestamp>,
    /// Per node the operator holds or failed: its step, since when, and why (from its labels).
    pub node_notes: Vec<NodeNote>,
    /// Address usage of every overlay network.
    pub networks: Vec<NetworkUsage>,
    /// The most recent rejected or failed tasks with their classified cause and remedy.
    pub task_problems: Vec<RecentTaskProblem>,
    /// The observation's placement revision `networks` and `task_problems` were read at: they
    /// read every task, so they are read again only when a task, service or network changed.
    #[serde(skip)]
    pub(crate) placement_revision: Option<u64>,
    /// With `run --ha`: this operator's role, e.g. "standby: op-b holds the lease".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ha: Option<String>,
}

/// What the operator's labels on one node say: the step, since when, and the reason.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeNote {
    pub id: String,
    pub hostname: String,
    pub step: Step,
    pub since: Timestamp,
    pub reason: Option<String>,
    /// Tasks still occupying the node (what a drain waits for).
    pub tasks: usize,
}

/// A rejected or failed task with the cause and remedy its error is classified as.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecentTaskProblem {
    #[serde(flatten)]
    pub problem: TaskProblem,
    pub cause: &'static str,
    pub remedy: &'static str,
}

impl RolloutStatus {
    pub fn from_plan(
        name: &str,
        version: &str,
        generation: u64,
        plan: &Plan,
        spec_error: Option<String>,
        last_error: Option<String>,
    ) -> Self {
        Self {
            name: name.to_string(),
            observed_version: Some(version.to_string()),
            spec_generation: generation,
            conditions: conditions(plan, spec_error.as_deref(), last_error.as_deref()),
            spec_error,
            phase: Some(plan.phase),
            nodes: plan.nodes.clone(),
            blockers: plan.blockers.clone(),
            last_error,
            updated_at: Some(crate::clock::label_time()),
            ..Self::default()
        }
    }

    /// Adds what the page shows beside the plan: the nodes' marks, the networks' address usage
    /// and the recent task problems. The last two are taken from `previous` while the
    /// observation's placement revision has not moved (`previous` read the same store: the
    /// loop keeps one for its whole run).
    pub fn observe_cluster(
        &mut self,
        previous: &RolloutStatus,
        snapshot: &Snapshot,
        observation: &Observation,
    ) {
        self.node_notes = node_notes(snapshot);
        let revision = observation.placement_revision();
        if previous.placement_revision == Some(revision) {
            self.networks = previous.networks.clone();
            self.task_problems = previous.task_problems.clone();
        } else {
            self.networks = network_usage(observation);
            self.task_problems = recent_task_problems(observation, RECENT_TASK_PROBLEMS);
        }
        self.placement_revision = Some(revision);
    }

    pub fn condition(&self, kind: ConditionType) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.kind == kind)
    }

    /// The human table of `swarm-upgrade status`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<3} {:<20} {:<8} {:<7} {:<13} {:<8} {:<20} STEP",
            "#", "HOSTNAME", "ROLE", "LEADER", "AVAILABILITY", "STATE", "ENGINE"
        );
        for n in &self.nodes {
            let _ = writeln!(
                out,
                "{:<3} {:<20} {:<8} {:<7} {:<13} {:<8} {:<20} {}",
                n.order.map(|o| o.to_string()).unwrap_or_else(|| "-".into()),
                n.hostname,
                n.role.as_str(),
                if n.leader { "yes" } else { "" },
                n.availability.as_str(),
                n.state,
                n.engine_version,
                match (n.step, n.at_target) {
                    (Some(s), _) => s.as_str().to_string(),
                    (None, true) => "at target".into(),
                    (None, false) if n.held.is_some() =>
                        format!("held: {}", n.held.as_deref().unwrap_or_default()),
                    (None, false) if n.selected => "pending".into(),
                    (None, false) => "not selected".into(),
                }
            );
        }
        let _ = writeln!(out);
        if let Some(ha) = &self.ha {
            let _ = writeln!(out, "operator: {ha}");
        }
        for c in &self.conditions {
            let _ = writeln!(
                out,
                "{:<12} {:<5} {}{}",
                format!("{:?}", c.kind),
                if c.status { "True" } else { "False" },
                c.reason,
                if c.message.is_empty() {
                    String::new()
                } else {
                    format!(": {}", c.message)
                }
            );
        }
        for b in &self.blockers {
            let _ = writeln!(out, "  - {}", b.message);
        }
        out
    }
}

fn condition(kind: ConditionType, status: bool, reason: &str, message: String) -> Condition {
    Condition {
        kind,
        status,
        reason: reason.to_string(),
        message,
    }
}

pub fn conditions(
    plan: &Plan,
    spec_error: Option<&str>,
    last_error: Option<&str>,
) -> Vec<Condition> {
    let first = |pred: fn(BlockerKind) -> bool| {
        plan.blockers
            .iter()
            .find(|b| pred(b.kind))
            .map(|b| b.message.clone())
            .unwrap_or_default()
    };
    let paused = plan.is_paused();
    let progressing = !plan.complete
        && !paused
        && (!plan.actions.is_empty() || plan.nodes.iter().any(|n| n.step.is_some()));
    let problems: Vec<String> = plan
        .blockers
        .iter()
        .filter(|b| b.kind.is_problem())
        .map(|b| b.message.clone())
        .chain(spec_error.map(|e| format!("spec file invalid, acting on the last good spec: {e}")))
        .chain(last_error.map(str::to_string))
        .collect();
    vec![
        condition(
            ConditionType::Progressing,
            progressing,
            if progressing {
                "NodesInProgress"
            } else {
                "Idle"
            },
            first(|k| k == BlockerKind::Waiting),
        ),
        condition(
            ConditionType::Paused,
            paused,
            if plan.failed {
                "NodeFailed"
            } else if paused {
                "PausedBySpec"
            } else {
                "NotPaused"
            },
            first(|k| matches!(k, BlockerKind::PausedByFailure | BlockerKind::PausedBySpec)),
        ),
        condition(
            ConditionType::Degraded,
            !problems.is_empty(),
            if problems.is_empty() {
                "Healthy"
            } else {
                "ProblemsSeen"
            },
            problems.join("; "),
        ),
        condition(
            ConditionType::Complete,
            plan.complete,
            if plan.complete {
                "AllNodesAtTarget"
            } else {
                "NodesPending"
            },
            held_nodes(plan),
        ),
    ]
}

/// "with 2 nodes held (n4: disk swap, n5: no reason given)", or nothing.
fn held_nodes(plan: &Plan) -> String {
    let held: Vec<String> = plan
        .held()
        .map(|(host, reason)| format!("{host}: {reason}"))
        .collect();
    match held.len() {
        0 => String::new(),
        1 => format!("with 1 node held ({})", held[0]),
        n => format!("with {n} nodes held ({})", held.join(", ")),
    }
}

fn node_notes(snapshot: &Snapshot) -> Vec<NodeNote> {
    snapshot
        .nodes
        .iter()
        .filter_map(|n| {
            let mark = n.mark()?.ok()?;
            Some(NodeNote {
                id: n.id.clone(),
                hostname: n.hostname.clone(),
                step: mark.step,
                since: mark.since,
                reason: mark.reason,
                tasks: snapshot.occupied.get(&n.id).copied().unwrap_or(0),
            })
        })
        .collect()
}

/// The `limit` most recent rejected or failed tasks (by the engine's timestamp), with their
/// cause and remedy.
pub fn recent_task_problems(observation: &Observation, limit: usize) -> Vec<RecentTaskProblem> {
    let mut problems: Vec<TaskProblem> = observation
        .tasks()
        .filter_map(|t| task_problem(t, observation))
        .collect();
    let time = |p: &TaskProblem| {
        p.timestamp
            .as_deref()
            .and_then(|t| t.parse::<Timestamp>().ok())
    };
    problems.sort_by_key(|p| std::cmp::Reverse(time(p)));
    problems.truncate(limit);
    problems
        .into_iter()
        .map(|problem| RecentTaskProblem {
            cause: problem.reason.cause(),
            remedy: problem.reason.remedy(),
            problem,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rejected tasks at the given seconds past 22:00 (with fractions of differing length, as
    /// engines write them), one failed one, and one running.
    fn observation(rejected_at: &[u32]) -> Observation {
        let mut tasks: Vec<serde_json::Value> = rejected_at
            .iter()
            .map(|s| {
                serde_json::json!({
                    "ID": format!("t{s}"), "ServiceID": "svc", "NodeID": "n4",
                    "Status": {"State": "rejected", "Timestamp": format!("2026-12-01T22:00:{s:02}.5Z"),
                               "Err": "node is missing network attachments, ip addresses may be exhausted"}
                })
            })
            .collect();
        tasks.push(serde_json::json!({"ID": "tf", "ServiceID": "svc", "NodeID": "n5",
            "Status": {"State": "failed", "Timestamp": "2026-12-01T22:00:30.123456789Z", "Err": "task: non-zero exit (1)"}}));
        tasks.push(
            serde_json::json!({"ID": "tr", "ServiceID": "svc", "NodeID": "n5",
            "Status": {"State": "running", "Timestamp": "2026-12-01T22:00:59Z"}}),
        );
        let tasks = serde_json::to_vec(&tasks).unwrap();
        Observation::from_json(b"[]", b"[]", b"[]", &tasks).unwrap()
    }

    #[test]
    fn the_most_recent_task_problems_come_first_with_cause_and_remedy() {
        let o = observation(&[5, 40, 12, 31]);
        let recent = recent_task_problems(&o, 3);
        let ids: Vec<&str> = recent.iter().map(|p| p.problem.task_id.as_str()).collect();
        assert_eq!(ids, ["t40", "t31", "tf"]);
        assert!(recent[0].cause.contains("address"), "{}", recent[0].cause);
        assert!(!recent[0].remedy.is_empty());
    }

    #[test]
    fn networks_and_task_problems_are_read_again_only_when_placement_changed() {
        let o = observation(&[5]);
        let mut first = RolloutStatus::default();
        first.observe_cluster(&RolloutStatus::default(), &Snapshot::default(), &o);
        assert_eq!(first.task_problems.len(), 2);
        // Same placement revision: what the last pass read is kept, not read again.
        let mut kept = first.clone();
        kept.task_problems.clear();
        let mut next = RolloutStatus::default();
        next.observe_cluster(&kept, &Snapshot::default(), &o);
        assert!(next.task_problems.is_empty());
        // A task changed in the same store (the loop keeps one): its revision moved, read again.
        let mut o = o;
        let tasks = serde_json::to_vec(&[serde_json::json!({"ID": "t6", "ServiceID": "svc",
            "Status": {"State": "rejected", "Timestamp": "2026-12-01T22:00:06Z", "Err": "no suitable node"}})])
        .unwrap();
        let tasks = serde_json::from_slice(&tasks).unwrap();
        o.replace_tasks(&crate::observe::TaskScope::All, tasks);
        let mut again = RolloutStatus::default();
        again.observe_cluster(&kept, &Snapshot::default(), &o);
        let ids: Vec<&str> = again
            .task_problems
            .iter()
            .map(|p| p.problem.task_id.as_str())
            .collect();
        assert_eq!(ids, ["t6"]);
    }
}
