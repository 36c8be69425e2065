//! The rollout's status: conditions in the Kubernetes style plus per-node steps, served on
//! `/status`, printed by `swarm-upgrade status`, and used by `demo`.

use std::fmt::Write;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::planner::{Blocker, BlockerKind, Phase, Plan, PlannedNode};

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
        }
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
                    (None, false) if n.selected => "pending".into(),
                    (None, false) => "not selected".into(),
                }
            );
        }
        let _ = writeln!(out);
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
            String::new(),
        ),
    ]
}
