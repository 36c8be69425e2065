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
        let mut load = Load::of(self);
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
            let (svc_load, total) = load.of_service(&svc_id);
            let Some(ni) = self.choose_node(t, &svc_id, svc, svc_load, total) else {
                if t.message != "no suitable node" {
                    let msg = "no suitable node";
                    self.set_task_state(&id, TState::Pending, msg, None, now);
                }
                continue;
            };
            load.add(&svc_id, ni);
            self.assign(&id, ni, now);
        }
    }

    /// A global task's pre-assigned node if it can take it; else the best node by the
    /// scheduler's order.
    fn choose_node(
        &self,
        t: &TaskRec,
        svc_id: &str,
        svc: &ServiceRec,
        svc_load: &[usize],
        total: &[usize],
    ) -> Option<usize> {
        if let Some(nid) = &t.node_id {
            return self
                .node_idx(nid)
                .filter(|&i| Self::node_schedulable(&self.nodes[i]));
        }
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
    }

    fn assign(&mut self, id: &str, ni: usize, now: Nanos) {
        let nid = self.nodes[ni].id.clone();
        let accept = secs(self.timings.task_accept);
        let tk = self.tasks.get_mut(id).expect("task");
        tk.node_id = Some(nid);
        tk.next_at = now + accept;
        self.set_task_state(
            id,
            TState::Assigned,
            "scheduler assigned task to node",
            None,
            now,
        );
    }
}

/// Load per node position: overall, and per service (built once per pass, so that placing
/// 30,000 tasks on 1,000 nodes does not allocate per candidate).
struct Load {
    total: Vec<usize>,
    by_svc: HashMap<String, Vec<usize>>,
}

impl Load {
    fn of(c: &Cluster) -> Self {
        let pos: HashMap<&str, usize> = c
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.as_str(), i))
            .collect();
        let mut total = vec![0usize; c.nodes.len()];
        let mut by_svc: HashMap<String, Vec<usize>> = HashMap::new();
        for t in c.tasks.values() {
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
        Load { total, by_svc }
    }

    /// The service's tasks per node position, and the total per node position.
    fn of_service(&mut self, svc_id: &str) -> (&[usize], &[usize]) {
        let nodes = self.total.len();
        let svc = self
            .by_svc
            .entry(svc_id.to_string())
            .or_insert_with(|| vec![0; nodes]);
        (svc, &self.total)
    }

    fn add(&mut self, svc_id: &str, i: usize) {
        self.total[i] += 1;
        self.service_mut(svc_id)[i] += 1;
    }

    fn service_mut(&mut self, svc_id: &str) -> &mut Vec<usize> {
        let nodes = self.total.len();
        self.by_svc
            .entry(svc_id.to_string())
            .or_insert_with(|| vec![0; nodes])
    }
}
