//! Node heartbeats: a stopped engine makes its manager unreachable and its node down; a
//! started one makes it ready again; managers' status updates move each node's version index.

use rand::Rng;

use crate::clock::{Nanos, SEC, secs};

use super::model::*;
use super::store::*;

/// How long a node remembers a task failure (for the scheduler).
const FAILURE_WINDOW: Nanos = 300 * SEC;

impl Cluster {
    pub(super) fn tick_nodes(&mut self, now: Nanos) {
        let t = self.timings.clone();
        let have_leader = self.leader.is_some();
        for i in 0..self.nodes.len() {
            if self.nodes[i].manager_stops_at.is_some_and(|at| now >= at) {
                self.nodes[i].manager_stops_at = None;
            }
            let n = &self.nodes[i];
            if let Some(s) = n.stopped_at {
                if n.role == Role::Manager && n.reachable && now >= s + secs(t.reachability) {
                    self.nodes[i].reachable = false;
                    self.bump_node(i, now);
                }
                if have_leader
                    && self.nodes[i].state != NodeState::Down
                    && now >= s + secs(t.node_down)
                {
                    self.set_node_state(i, NodeState::Down, "heartbeat failure", now);
                    self.on_node_down(i, now);
                }
            } else if n.engine_running {
                if n.role == Role::Manager && !n.reachable {
                    self.nodes[i].reachable = true;
                    self.bump_node(i, now);
                }
                if have_leader
                    && self.nodes[i].state != NodeState::Ready
                    && self.nodes[i].ready_at.is_some_and(|r| now >= r)
                {
                    self.nodes[i].ready_at = None;
                    self.set_node_state(i, NodeState::Ready, "", now);
                }
                if have_leader
                    && self.nodes[i].state == NodeState::Ready
                    && now >= self.nodes[i].next_bump
                {
                    // A manager's status/heartbeat update bumps the node's version index.
                    let j = self.rng.random_range(0.5..1.5);
                    self.nodes[i].next_bump = now + secs(t.version_bump * j);
                    self.bump_node(i, now);
                    self.node_event(i, &[], now);
                }
            }
            self.nodes[i]
                .failures
                .retain(|(_, at)| now - *at < FAILURE_WINDOW);
        }
    }

    /// Replicated tasks on a down node are restarted elsewhere (their old task keeps its
    /// addresses until its node reports it past running).
    pub(super) fn on_node_down(&mut self, i: usize, now: Nanos) {
        let nid = self.nodes[i].id.clone();
        let ids: Vec<String> = self
            .tasks
            .values()
            .filter(|t| {
                t.node_id.as_deref() == Some(&nid)
                    && t.desired == TState::Running
                    && self
                        .services
                        .get(&t.service_id)
                        .is_some_and(|s| matches!(s.mode, Mode::Replicated(_)))
            })
            .map(|t| t.id.clone())
            .collect();
        for id in ids {
            self.set_desired(&id, TState::Shutdown, now);
        }
    }
}
