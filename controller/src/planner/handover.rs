//! `strategy.leaderHandover`: the leader is demoted to a worker once drained, so that the swarm
//! hands raft leadership to another manager at once instead of electing one after the leader's
//! engine stops, and it is promoted back once Ready at the target. The mark's `demoted` flag
//! records it in the cluster; the update that drops the flag promotes the node back
//! (`restored_role`), so a crash or a failure at any step still ends with the node a manager.

use super::{Planner, steps::event};
use crate::cluster::NodeView;
use crate::events::EventStep;
use crate::marks::{Mark, Step};
use crate::vocab::Role;

/// Fewer managers than this and a demotion would leave no raft majority to speak of.
const MIN_MANAGERS_FOR_HANDOVER: usize = 3;

impl Planner<'_> {
    /// At the drained leader: demotes it, or waits for the demotion to take effect. Returns
    /// whether the node's step is settled for this pass (false: go on and upgrade it).
    pub(super) fn hands_leadership_over(&mut self, node: &NodeView, mark: &Mark) -> bool {
        if !mark.demoted {
            if !self.handover_applies(node) {
                return false;
            }
            self.demote(node, mark);
            return true;
        }
        if node.role == Role::Manager {
            // Promoted by someone else meanwhile: upgraded in place.
            return false;
        }
        let leader_elsewhere = self
            .input
            .snapshot
            .nodes
            .iter()
            .any(|n| n.leader && n.id != node.id);
        if node.leader || node.reachable || !leader_elsewhere {
            let message = "demoted to a worker; waiting for the swarm to hand raft leadership to another manager";
            self.wait(node, message.into());
            return true;
        }
        if node.runs_manager != Some(false) {
            // swarmkit clears a demoted manager's raft data only once its engine has stopped
            // the manager; an engine stopped before keeps it, and panics when promoted back
            // ("tocommit(N) is out of range [lastIndex(0)]", seen on the real lab).
            let message = "demoted to a worker; waiting for its engine to stop its manager and clear its raft data";
            self.wait(node, message.into());
            return true;
        }
        false
    }

    fn handover_applies(&self, node: &NodeView) -> bool {
        let managers = self.input.snapshot.nodes.iter().filter(|n| n.is_manager());
        // Only where the operator reaches the leader's own engine: it alone tells when the
        // demotion has finished there.
        self.spec().strategy.leader_handover
            && node.is_manager()
            && node.leader
            && node.runs_manager == Some(true)
            && managers.count() >= MIN_MANAGERS_FOR_HANDOVER
    }

    fn demote(&mut self, node: &NodeView, mark: &Mark) {
        let next = Mark {
            demoted: true,
            ..mark.clone()
        };
        let message = format!(
            "drained; demoting the leader to a worker so the swarm hands raft leadership over \
             (strategy.leaderHandover); promoted back once Ready at {}",
            self.spec().version
        );
        let mut update = self.change(node, None, Some(next), message);
        update.role = Some(Role::Worker);
        update.events = vec![event(EventStep::Demote, &update.message)];
        self.push(update);
    }

    /// A demoted manager Ready at the target after its upgrade is promoted back. Returns
    /// whether it was (nothing else happens to the node in this pass).
    pub(super) fn promotes_back(&mut self, node: &NodeView, mark: &Mark) -> bool {
        let after_upgrade = matches!(mark.step, Step::Upgraded | Step::Ready | Step::Settling);
        let ready = node.state == crate::vocab::State::Ready && self.at_target(node);
        if node.role == Role::Manager || !after_upgrade || !ready {
            return false;
        }
        let next = Mark {
            demoted: false,
            ..mark.clone()
        };
        let message = format!(
            "Ready at {} as a worker; promoting it back to manager",
            node.engine_version
        );
        let mut update = self.change(node, None, Some(next), message);
        update.events = vec![event(EventStep::Promote, &update.message)];
        self.push(update);
        true
    }
}
