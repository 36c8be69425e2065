//! Raft as the API sees it: quorum, the leader, elections (a new leader sees every node
//! `unknown` until its agent re-registers).

use rand::Rng;

use crate::clock::{Nanos, secs};

use super::model::*;
use super::store::*;

impl Cluster {
    pub fn managers_total(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.role == Role::Manager)
            .count()
    }

    pub fn managers_up(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.role == Role::Manager && n.engine_running)
            .count()
    }

    pub fn has_quorum(&self) -> bool {
        self.managers_up() * 2 > self.managers_total()
    }

    /// Cluster-state calls through node `via` (a manager): fails as the engine does without a
    /// leader.
    pub fn check_leader(&self) -> Result<(), ApiError> {
        if self.leader.is_some() {
            Ok(())
        } else {
            Err(ApiError::new(500, ERR_NO_LEADER))
        }
    }

    /// The leader steps down (as after a lost heartbeat or `docker node demote` elsewhere): a
    /// new leader, another manager when one is up, is elected after the election delay.
    pub fn step_down(&mut self, now: Nanos) {
        let Some(old) = self.leader.take() else {
            return;
        };
        self.stepped_down = Some(old);
        self.election_at = self.has_quorum().then(|| now + secs(self.timings.election));
        self.touch();
    }

    /// The leader was demoted: it hands leadership to another manager, which leads after the
    /// transfer delay (swarmkit's TransferLeadership on demotion), not after an election.
    pub(super) fn transfer_leadership(&mut self, now: Nanos) {
        let Some(old) = self.leader.take() else {
            return;
        };
        self.stepped_down = Some(old);
        self.election_at = self
            .has_quorum()
            .then(|| now + secs(self.timings.leader_transfer));
        self.touch();
    }

    pub(super) fn tick_raft(&mut self, now: Nanos) {
        if self.step_down_at.is_some_and(|at| now >= at) {
            self.step_down_at = None;
            self.step_down(now);
        }
        if let Some(l) = &self.leader {
            let alive = self
                .nodes
                .iter()
                .any(|n| &n.id == l && n.engine_running && n.role == Role::Manager);
            if !alive || !self.has_quorum() {
                self.leader = None;
                self.election_at = self.has_quorum().then(|| now + secs(self.timings.election));
                self.touch();
            }
            return;
        }
        if !self.has_quorum() {
            self.election_at = None;
            return;
        }
        let at = *self
            .election_at
            .get_or_insert(now + secs(self.timings.election));
        if now < at {
            return;
        }
        // Elect: the first up manager, other than one that just stepped down if possible.
        let up = |n: &NodeRec| n.role == Role::Manager && n.engine_running;
        let stepped_down = self.stepped_down.take();
        let Some(li) = self
            .nodes
            .iter()
            .position(|n| up(n) && Some(&n.id) != stepped_down.as_ref())
            .or_else(|| self.nodes.iter().position(up))
        else {
            return;
        };
        self.leader = Some(self.nodes[li].id.clone());
        self.election_at = None;
        self.bump_node(li, now);
        // The new leader does not know the nodes yet: every node goes unknown, and returns
        // ready one by one as its agent re-registers.
        let max = self.timings.unknown_max.max(0.1);
        for i in 0..self.nodes.len() {
            let st = self.nodes[i].state;
            if st == NodeState::Ready || (st == NodeState::Down && self.nodes[i].engine_running) {
                self.set_node_state(i, NodeState::Unknown, "", now);
            }
            if self.nodes[i].engine_running {
                let d = if i == li {
                    self.rng.random_range(0.3..1.0)
                } else {
                    self.rng.random_range(0.5..max.max(0.6))
                };
                self.nodes[i].ready_at = Some(now + secs(d));
            }
        }
        for i in 0..self.nodes.len() {
            self.node_event(i, &[], now);
        }
        let replicated: Vec<(String, String)> = self
            .services
            .values()
            .filter(|s| matches!(s.mode, Mode::Replicated(_)))
            .map(|s| (s.id.clone(), s.name.clone()))
            .collect();
        for (id, name) in replicated {
            self.emit("service", "update", &id, &[("name", &name)], now);
        }
    }
}
