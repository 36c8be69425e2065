//! The scheduler: places pending tasks on ready, active nodes that satisfy the constraints,
//! spreading by service then by total load, trying nodes with recent failures last.

use std::collections::HashMap;

use crate::clock::{Nanos, secs};

use super::model::*;
use super::store::*;

/// swarmkit's scheduler: a node with this many recent failures of a service's tasks is tried last.
const MAX_FAILURES: usize = 5;

impl Cluster {
    pub(super) fn node_schedulable(n: &NodeRec) -> bool {
        n.state == NodeState::Ready && n.engine_running && n.availability == Availability::Active
    }

    /// Scheduler: fewest tasks of the service first, then fewest tasks overall; a node with
    /// `MAX_FAILURES` recent failures of the service is tried last; remaining ties go to the
    /// node listed last.
    pub(super) fn schedule(&mut self, now: Nanos) {
        let pending: Vec<String> = self
            .tasks
            .values()
            .filter(|t| t.state == TState::Pending)
            .map(|t| t.id.clone())
            .collect();
        if pending.is_empty() {
            return;
        }
        // Load per node position: overall, and per service (built once per pass, so that
        // placing 30,000 tasks on 1,000 nodes does not allocate per candidate).
        let pos: HashMap<&str, usize> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.as_str(), i))
            .collect();
        let mut total = vec![0usize; self.nodes.len()];
        let mut by_svc: HashMap<String, Vec<usize>> = HashMap::new();
        for t in self.tasks.values() {
            if t.desired == TState::Running
                && !t.state.terminal()
                && let Some(&i) = t.node_id.as_deref().and_then(|n| pos.get(n))
            {
                total[i] += 1;
                by_svc
                    .entry(t.service_id.clone())
                    .or_insert_with(|| vec![0; pos.len()])[i] += 1;
            }
        }
        drop(pos);
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
            let svc_load = by_svc
                .entry(svc_id.clone())
                .or_insert_with(|| vec![0; self.nodes.len()]);
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
                    let key = (fails >= MAX_FAILURES, svc_load[i], total[i], usize::MAX - i);
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
            total[ni] += 1;
            svc_load[ni] += 1;
            let nid = self.nodes[ni].id.clone();
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
}
