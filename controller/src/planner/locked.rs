//! Autolocked swarms: an upgraded manager comes up locked, and waits at step `upgraded` until it
//! is unlocked, with `spec.upgrade.unlockKey` by the operator or by hand. It is never failed
//! for being locked (readyTimeout counts again from its unlock); a key the engine refuses is a
//! failure, not a retry.

use super::steps::event;
use super::{Action, BlockerKind, CommandKind, Planner, Rollout};
use crate::cluster::NodeView;
use crate::events::EventStep;
use crate::marks::{Mark, Step};
use crate::vocab::CommandOutcome;

/// `reason` of an upgraded manager's mark while it is locked: the time it spends locked does
/// not count against readyTimeout.
const LOCKED: &str = "came up locked (autolock)";

/// What the operator and the rollout say when there is no key.
const NO_KEY: &str = "the swarm is autolocked: each upgraded manager will come up locked; give spec.upgrade.unlockKey or unlock each by hand";

/// Before the managers are done: warns that each will wait to be unlocked by hand.
pub(super) fn autolock_notice(p: &mut Planner<'_>, rollout: &Rollout<'_>) {
    let managers_to_upgrade = rollout
        .managers()
        .any(|m| rollout.unstarted(m) || rollout.mark(m).is_some());
    if p.input.snapshot.autolock && p.spec().upgrade.unlock_key.is_none() && managers_to_upgrade {
        p.block(BlockerKind::Autolocked, None, NO_KEY.into());
    }
}

impl Planner<'_> {
    /// An upgraded manager that is locked, or was until now. Returns false when the node is
    /// not concerned (the usual `upgraded` rule applies).
    pub(super) fn upgraded_locked(&mut self, node: &NodeView, mark: &Mark) -> bool {
        let was_locked = mark.reason.as_deref() == Some(LOCKED);
        if !node.locked {
            if was_locked {
                // Unlocked: readyTimeout counts from now.
                let message = format!("unlocked; waiting for Ready at {}", mark.target);
                let update = self.change(
                    node,
                    None,
                    Some(mark.at(Step::Upgraded, self.now())),
                    message,
                );
                self.push(update);
            }
            return was_locked;
        }
        if !was_locked {
            let mut next = mark.at(Step::Upgraded, self.now());
            next.reason = Some(LOCKED.into());
            let message = format!("{} {LOCKED}", node.hostname);
            self.push(self.change(node, None, Some(next), message));
            return true;
        }
        match &self.spec().upgrade.unlock_key {
            None => self.block(
                BlockerKind::Locked,
                Some(node),
                format!(
                    "{} {LOCKED}: {NO_KEY} (`docker swarm unlock` on {}); the rollout waits for it",
                    node.hostname, node.hostname
                ),
            ),
            Some(source) => self.unlock(node, mark, &source.to_string()),
        }
        true
    }

    fn unlock(&mut self, node: &NodeView, mark: &Mark, source: &str) {
        if self.input.running_commands.contains(&node.id) {
            self.wait(
                node,
                format!("{LOCKED}; unlocking it with the key from {source}"),
            );
            return;
        }
        match self.outcome(node, mark, CommandKind::Unlock).cloned() {
            Some(CommandOutcome::Failed(reason)) => {
                // The engine is upgraded but locked: a rollback would restart it locked again.
                self.failing = true;
                let reason = format!("{reason} (left drained and locked)");
                let events = vec![event(EventStep::Failed, &reason)];
                self.record_failure(node, mark, None, reason, events);
            }
            Some(CommandOutcome::Succeeded) => self.wait(
                node,
                "unlocked; waiting for its engine to report the swarm active".into(),
            ),
            None => {
                let mut update = self.change(
                    node,
                    None,
                    Some(mark.clone()),
                    format!("{LOCKED}; unlocking it"),
                );
                update.events = vec![self.command_event(node, CommandKind::Unlock)];
                self.actions.push(Action::Unlock(update));
            }
        }
    }
}
