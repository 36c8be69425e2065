//! Rejected and failed tasks, each reported once.

use std::collections::{HashMap, HashSet};
use std::fmt;

use bollard::models::{Task, TaskState};
use serde::Serialize;

use super::signatures::{Reason, classify};

/// One rejected or failed task, as first seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskProblem {
    pub task_id: String,
    /// Service name when known, else the service ID.
    pub service: String,
    /// Node hostname when known, else the node ID (empty if the task never got a node).
    pub node: String,
    /// `rejected` or `failed`.
    #[serde(serialize_with = "ser_state")]
    pub state: TaskState,
    pub reason: Reason,
    /// The raw `Status.Err`.
    pub err: String,
    /// `Status.Timestamp` as the engine wrote it (RFC 3339).
    pub timestamp: Option<String>,
}

fn ser_state<S: serde::Serializer>(s: &TaskState, ser: S) -> Result<S::Ok, S::Error> {
    ser.collect_str(s)
}

impl TaskProblem {
    /// True for `rejected`, false for `failed`.
    pub fn is_rejection(&self) -> bool {
        self.state == TaskState::REJECTED
    }
}

impl fmt::Display for TaskProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "task {} of {} on {} {} ({}): {}",
            self.task_id,
            self.service,
            if self.node.is_empty() {
                "-"
            } else {
                &self.node
            },
            self.state,
            self.reason,
            self.err
        )
    }
}

/// True when a task is a rejection or failure this module reports.
pub fn is_problem_state(state: Option<TaskState>) -> bool {
    matches!(state, Some(TaskState::REJECTED | TaskState::FAILED))
}

/// Builds the [`TaskProblem`] for a task in `rejected` or `failed` state, or `None`.
pub fn task_problem(
    task: &Task,
    service_names: &HashMap<String, String>,
    node_hostnames: &HashMap<String, String>,
) -> Option<TaskProblem> {
    let status = task.status.as_ref()?;
    if !is_problem_state(status.state) {
        return None;
    }
    let task_id = task.id.clone()?;
    let service_id = task.service_id.clone().unwrap_or_default();
    let node_id = task.node_id.clone().unwrap_or_default();
    let err = status.err.clone().unwrap_or_default();
    Some(TaskProblem {
        task_id,
        service: service_names
            .get(&service_id)
            .cloned()
            .unwrap_or(service_id),
        node: node_hostnames.get(&node_id).cloned().unwrap_or(node_id),
        state: status.state.unwrap_or_default(),
        reason: classify(&err),
        err,
        timestamp: status.timestamp.as_ref().map(|t| t.to_string()),
    })
}

/// Remembers which rejected/failed tasks were already reported.
///
/// Memory is bounded: after each [`observe`](Self::observe) it remembers only the
/// problem tasks present in that listing (swarm deletes old tasks by its task
/// history retention limit, so a forgotten task never comes back), and never more
/// than `max_entries` of them. Pass the complete, unfiltered task listing: a task
/// missing from one listing is forgotten and reported again if it reappears.
#[derive(Debug, Clone)]
pub struct RejectionTracker {
    seen: HashSet<(String, u8)>,
    max_entries: usize,
}

impl Default for RejectionTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl RejectionTracker {
    /// Default bound on remembered tasks.
    pub const DEFAULT_MAX_ENTRIES: usize = 100_000;

    pub fn new() -> Self {
        Self::with_max_entries(Self::DEFAULT_MAX_ENTRIES)
    }

    /// A tracker remembering at most `max_entries` tasks (at least 1). If a single
    /// listing holds more problem tasks than that, the excess (oldest by timestamp)
    /// are not remembered and are reported again by the next listing.
    pub fn with_max_entries(max_entries: usize) -> Self {
        Self {
            seen: HashSet::new(),
            max_entries: max_entries.max(1),
        }
    }

    /// How many tasks are remembered now.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Marks every problem task in `tasks` as seen without reporting it (e.g. to
    /// ignore history at start-up).
    pub fn prime(&mut self, tasks: &[Task]) {
        let empty = HashMap::new();
        let _ = self.observe(tasks, &empty, &empty);
    }

    /// Returns each rejected or failed task of `tasks` not reported before (by task
    /// ID and state), oldest first.
    pub fn observe(
        &mut self,
        tasks: &[Task],
        service_names: &HashMap<String, String>,
        node_hostnames: &HashMap<String, String>,
    ) -> Vec<TaskProblem> {
        let mut current: Vec<TaskProblem> = Vec::new();
        let mut present: HashSet<(String, u8)> = HashSet::new();
        for t in tasks {
            if let Some(p) = task_problem(t, service_names, node_hostnames)
                && present.insert((p.task_id.clone(), p.state as u8))
            {
                current.push(p);
            }
        }
        // Newest first, so the bound keeps the newest.
        current.sort_by(|a, b| {
            b.timestamp
                .cmp(&a.timestamp)
                .then(a.task_id.cmp(&b.task_id))
        });
        current.truncate(self.max_entries);

        let mut next = HashSet::with_capacity(current.len());
        let mut fresh = Vec::new();
        for p in current {
            let key = (p.task_id.clone(), p.state as u8);
            if !self.seen.contains(&key) {
                fresh.push(p);
            }
            next.insert(key);
        }
        self.seen = next;
        fresh.reverse();
        fresh
    }
}
