//! The allocator: task addresses and per-node load-balancer addresses from each overlay's
//! IPAM pool (exhausting a small subnet is the failure the manual upgrade procedure warns of).

use std::collections::BTreeSet;

use crate::clock::Nanos;

use super::model::*;
use super::store::*;

impl Cluster {
    /// Allocator: new tasks get one address per network, then go pending.
    pub(super) fn allocate_tasks(&mut self, now: Nanos) {
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

    /// Allocator, nodes: one load-balancer address per node that has a task at or before
    /// `running` on the network; freed when it has none. Nodes are served in node order.
    pub(super) fn allocate_node_lbs(&mut self) {
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
}
