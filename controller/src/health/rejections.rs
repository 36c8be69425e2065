//! Rejected and failed tasks, each reported once.

use std::collections::{HashMap, HashSet};
use std::fmt;

use bollard::models::TaskState;
use serde::Serialize;

use super::signatures::{Reason, classify};
use crate::observe::{Observation, ObservedTask};

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
    pub(crate) fn is_rejection(&self) -> bool {
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

/// Builds the [`TaskProblem`] for a task in `rejected` or `failed` state, or `None`; names
/// come from the observation (IDs where it does not know them).
pub fn task_problem(task: &ObservedTask, observation: &Observation) -> Option<TaskProblem> {
    if !task.is_problem() {
        return None;
    }
    Some(TaskProblem {
        task_id: task.id.clone(),
        service: observation.service_name(&task.service_id).to_string(),
        node: observation.hostname(&task.node_id).to_string(),
        state: task.state(),
        reason: classify(&task.status.err),
        err: task.status.err.clone(),
        timestamp: task.status.timestamp.clone(),
    })
}

/// A task in one problem state: a task rejected after it failed is a second problem.
type ProblemKey = (String, u8);

/// Remembers which rejected/failed tasks were already reported.
///
/// Memory is bounded: it remembers only problem tasks still in the observation (swarm deletes
/// old tasks by its task history retention limit, so a forgotten task never comes back), and
/// never more than `max_entries` of them (the oldest by timestamp are forgotten first).
#[derive(Debug, Clone)]
pub struct RejectionTracker {
    /// Each reported problem with its timestamp, to forget the oldest first.
    seen: HashMap<ProblemKey, Option<String>>,
    max_entries: usize,
}

impl Default for RejectionTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl RejectionTracker {
    /// Default bound on remembered tasks.
    pub(crate) const DEFAULT_MAX_ENTRIES: usize = 100_000;

    pub fn new() -> Self {
        Self::with_max_entries(Self::DEFAULT_MAX_ENTRIES)
    }

    /// A tracker remembering at most `max_entries` tasks (at least 1). If one observation
    /// holds more new problem tasks than that, the excess (oldest by timestamp) are not
    /// remembered and are reported again by the next full [`observe`](Self::observe).
    pub fn with_max_entries(max_entries: usize) -> Self {
        Self {
            seen: HashMap::new(),
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

    /// Marks every problem task of the observation as seen without reporting it (e.g. to
    /// ignore history at start-up).
    pub fn prime(&mut self, observation: &Observation) {
        let _ = self.observe(observation);
    }

    /// Returns each rejected or failed task of the observation not reported before (by task
    /// ID and state), oldest first. Looks at every task: see [`Self::observe_changes`].
    pub fn observe(&mut self, observation: &Observation) -> Vec<TaskProblem> {
        self.forget_vanished(observation);
        self.report(observation, observation.tasks())
    }

    /// Like [`Self::observe`], looking only at the tasks that changed since the last call
    /// (`Observation::take_changed_tasks`): a pass costs what changed, not the fleet's size.
    pub(crate) fn observe_changes(
        &mut self,
        observation: &Observation,
        changed: &[String],
    ) -> Vec<TaskProblem> {
        self.forget_vanished(observation);
        self.report(
            observation,
            changed.iter().filter_map(|id| observation.task(id)),
        )
    }

    fn forget_vanished(&mut self, observation: &Observation) {
        self.seen.retain(|(id, state), _| {
            observation
                .task(id)
                .is_some_and(|t| t.state() as u8 == *state)
        });
    }

    fn report<'a>(
        &mut self,
        observation: &Observation,
        candidates: impl Iterator<Item = &'a ObservedTask>,
    ) -> Vec<TaskProblem> {
        let mut fresh: Vec<TaskProblem> = Vec::new();
        let mut keys: HashSet<ProblemKey> = HashSet::new();
        for p in candidates.filter_map(|t| task_problem(t, observation)) {
            let key = (p.task_id.clone(), p.state as u8);
            if !self.seen.contains_key(&key) && keys.insert(key) {
                fresh.push(p);
            }
        }
        // Newest first, so the bound keeps the newest.
        fresh.sort_by(|a, b| {
            b.timestamp
                .cmp(&a.timestamp)
                .then(a.task_id.cmp(&b.task_id))
        });
        fresh.truncate(self.max_entries);
        for p in &fresh {
            self.seen
                .insert((p.task_id.clone(), p.state as u8), p.timestamp.clone());
        }
        self.evict_oldest();
        fresh.reverse();
        fresh
    }

    fn evict_oldest(&mut self) {
        let excess = self.seen.len().saturating_sub(self.max_entries);
        if excess == 0 {
            return;
        }
        let mut by_age: Vec<(Option<String>, ProblemKey)> = self
            .seen
            .iter()
            .map(|(k, ts)| (ts.clone(), k.clone()))
            .collect();
        by_age.sort();
        for (_, key) in by_age.into_iter().take(excess) {
            self.seen.remove(&key);
        }
    }
}
