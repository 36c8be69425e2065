//! A record of every node's state over time, for tests that check a rollout's invariants at
//! every moment rather than at the moments they happen to sample. Off unless asked for
//! ([`Cluster::record_history`]): a frame is kept only when something it holds changed.

use crate::clock::Nanos;

use super::model::*;
use super::store::Cluster;

impl Cluster {
    /// Starts recording a frame whenever a node's state changes (from now on).
    pub fn record_history(&mut self, now: Nanos) {
        if self.history.is_none() {
            self.history = Some(History::default());
            self.record_frame(now);
        }
    }

    /// The frames recorded since [`Self::record_history`]; empty when not recording.
    pub fn history(&self) -> &[Frame] {
        self.history.as_ref().map_or(&[], |h| &h.frames)
    }

    /// Adds a frame if anything differs from the last one (a no-op when not recording).
    pub fn record_frame(&mut self, now: Nanos) {
        if self.history.is_none() {
            return;
        }
        let nodes: Vec<NodeFrame> = self.nodes.iter().map(|n| self.node_frame(n)).collect();
        let history = self.history.as_mut().expect("checked above");
        if history.frames.last().is_some_and(|f| f.nodes == nodes) {
            return;
        }
        history.frames.push(Frame { at: now, nodes });
    }

    /// One node as the history and `/_sim/state` show it.
    pub(crate) fn node_frame(&self, n: &NodeRec) -> NodeFrame {
        NodeFrame {
            id: n.id.clone(),
            hostname: n.hostname.clone(),
            role: match n.role {
                Role::Manager => "manager",
                Role::Worker => "worker",
            }
            .into(),
            leader: self.leader.as_deref() == Some(&n.id),
            availability: n.availability.as_str().into(),
            state: n.state.as_str().into(),
            reachable: n.reachable,
            engine_running: n.engine_running,
            engine_version: n.engine_version.clone(),
            labels: n.labels.clone(),
        }
    }
}
