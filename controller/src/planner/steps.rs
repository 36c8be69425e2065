//! One rule per step: how a node the operator already holds moves on, from its mark, its
//! observed state and the outcome of the command that ran on it.
//!
//! The labels are the whole state: after a restart with no outcome in memory, each step still
//! decides from what the cluster shows (see README, "How it orders a rollout").

use std::time::Duration;

use super::{BlockerKind, CommandKind, NodeEvent, Planner, elapsed, fmt_secs, node_ref, node_vars};
use crate::cluster::NodeView;
use crate::events::EventStep;
use crate::marks::{Mark, Step};
use crate::vocab::CommandOutcome;

/// Said of a failed node whose engine may be half-upgraded.
const LEFT_DRAINED: &str = "left drained: no successful rollback";

pub(super) fn event(step: EventStep, message: impl Into<String>) -> NodeEvent {
    NodeEvent {
        step,
        message: message.into(),
    }
}

impl<'a> Planner<'a> {
    /// Moves a node that already carries a mark one step on, if its observed state allows.
    pub(super) fn advance(&mut self, node: &NodeView, mark: &Mark, managers_all_at_target: bool) {
        let retarget = mark.target != self.spec().version;
        if mark.demoted && self.promotes_back(node, mark) {
            return;
        }
        match mark.step {
            Step::Draining => self.draining(node, mark, retarget),
            Step::Upgrading => self.upgrading(node, mark),
            Step::Upgraded | Step::Ready if retarget && !self.at_target(node) => {
                self.retarget(node, mark)
            }
            Step::Upgraded => self.upgraded(node, mark),
            Step::Ready => self.ready(node, mark, managers_all_at_target),
            Step::Settling => self.settling(node, mark),
            Step::RollingBack => self.rolling_back(node, mark),
            Step::Failed => self.failed(node, mark),
        }
    }

    fn in_step(&self, mark: &Mark) -> Duration {
        elapsed(mark.since, self.now())
    }

    /// The outcome of `command` for this node, if it ran under this very mark.
    pub(super) fn outcome(
        &self,
        node: &NodeView,
        mark: &Mark,
        command: CommandKind,
    ) -> Option<&CommandOutcome> {
        self.input
            .ended_commands
            .get(&node.id)
            .filter(|e| e.command == command && e.started == mark.since)
            .map(|e| &e.outcome)
    }

    fn draining(&mut self, node: &NodeView, mark: &Mark, retarget: bool) {
        let spec = self.spec();
        if retarget {
            let mut next = mark.clone();
            next.target = spec.version.clone();
            let message = format!("target changed to {}", spec.version);
            self.push(self.change(node, None, Some(next), message));
            return;
        }
        let in_step = self.in_step(mark);
        let busy = self.input.snapshot.tasks_on(&node.id);
        let lingering = self
            .input
            .lingering_endpoints
            .get(&node.id)
            .copied()
            .unwrap_or(0);
        let within_timeout = in_step <= spec.strategy.drain_timeout.get();
        if busy == 0 && lingering > 0 && within_timeout {
            self.wait(
                node,
                format!(
                    "drained; waiting for {lingering} service endpoint(s) of the node to be withdrawn from the overlay networks"
                ),
            );
        } else if busy == 0 {
            self.drained(node, mark, in_step);
        } else if !within_timeout {
            let reason = format!(
                "{busy} task(s) still on the node after drainTimeout {}",
                spec.strategy.drain_timeout
            );
            self.fail(node, mark, reason, false);
        } else {
            self.wait(node, format!("draining: {busy} task(s) still on the node"));
        }
    }

    /// The node is empty: upgrade it, unless it is already at the target or quorum forbids.
    fn drained(&mut self, node: &NodeView, mark: &Mark, in_step: Duration) {
        let now = self.now();
        if self.ready_at_target(node) {
            // Already at the target (upgraded by hand, or the target changed to its version).
            let mut update = self.change(
                node,
                None,
                Some(mark.at(Step::Ready, now)),
                format!("already at {}", node.engine_version),
            );
            update.events = vec![
                event(EventStep::Drained, &update.message),
                event(EventStep::Ready, format!("Ready at {}", mark.target)),
            ];
            update.finished = Some((Step::Draining, in_step));
            self.push(update);
            return;
        }
        if node.is_manager()
            && let Some(other) = self.manager_in_upgrade(node)
        {
            // Drained ahead: one manager's engine at a time.
            self.wait(
                node,
                format!(
                    "drained ahead; upgraded once the upgrade of manager {} is done",
                    other.hostname
                ),
            );
            return;
        }
        if node.is_manager() && !self.quorum_allows(node, "stopping") {
            return;
        }
        if self.hands_leadership_over(node, mark) {
            return;
        }
        if mark.demoted && !self.quorum_allows(node, "stopping demoted") {
            return;
        }
        let message = format!("drained; upgrading to {}", self.spec().version);
        let mut update = self.change(node, None, Some(mark.at(Step::Upgrading, now)), message);
        update.events = vec![
            event(EventStep::Drained, &update.message),
            self.command_event(node, CommandKind::Upgrade),
        ];
        update.finished = Some((Step::Draining, in_step));
        self.run(CommandKind::Upgrade, update);
    }

    /// "running <argv>", the event that starts a node-side command.
    pub(super) fn command_event(&self, node: &NodeView, command: CommandKind) -> NodeEvent {
        let spec = self.spec();
        let (step, argv) = match command {
            CommandKind::Upgrade => (EventStep::Upgrade, &spec.upgrade.command),
            CommandKind::Rollback => (
                EventStep::Rollback,
                spec.upgrade
                    .rollback
                    .as_ref()
                    .unwrap_or(&spec.upgrade.command),
            ),
            CommandKind::Unlock => {
                let message = "came up locked (autolock); unlocking it with spec.upgrade.unlockKey";
                return event(EventStep::Unlock, message);
            }
        };
        let expanded = node_vars(&node_ref(node), &spec.version).expand_argv(argv);
        event(step, format!("running {}", expanded.join(" ")))
    }

    fn upgrading(&mut self, node: &NodeView, mark: &Mark) {
        if self.input.running_commands.contains(&node.id) {
            self.wait(node, "upgrade command running".into());
            return;
        }
        match self.outcome(node, mark, CommandKind::Upgrade).cloned() {
            Some(CommandOutcome::Succeeded) => self.upgrade_succeeded(node, mark),
            Some(CommandOutcome::Failed(reason)) => self.fail(node, mark, reason, true),
            None => self.upgrading_without_outcome(node, mark),
        }
    }

    fn upgrade_succeeded(&mut self, node: &NodeView, mark: &Mark) {
        let message = "upgrade command succeeded".to_string();
        let mut update = self.change(
            node,
            None,
            Some(mark.at(Step::Upgraded, self.now())),
            message,
        );
        update.events = vec![event(EventStep::Upgraded, &update.message)];
        update.finished = Some((Step::Upgrading, self.in_step(mark)));
        self.push(update);
    }

    /// No run of the command in this process, and no outcome: the operator restarted
    /// mid-upgrade. Decide from the node as it is.
    fn upgrading_without_outcome(&mut self, node: &NodeView, mark: &Mark) {
        let spec = self.spec();
        let now = self.now();
        let in_step = self.in_step(mark);
        if self.ready_at_target(node) && mark.demoted {
            // Promoted back from `upgraded`, where the Ready event is emitted.
            self.upgrade_succeeded(node, mark);
        } else if self.ready_at_target(node) {
            // The command finished but the operator stopped before recording it.
            let message = format!("at {} and Ready", node.engine_version);
            let mut update = self.change(node, None, Some(mark.at(Step::Ready, now)), message);
            update.events = vec![
                event(EventStep::Upgraded, &update.message),
                event(EventStep::Ready, format!("Ready at {}", mark.target)),
            ];
            update.finished = Some((Step::Upgrading, in_step));
            self.push(update);
        } else if !node.is_healthy() && in_step < spec.upgrade.timeout.get() {
            // The engine is away: the earlier run of the command is most likely still at work.
            self.wait(
                node,
                format!(
                    "engine {} after an operator restart mid-upgrade; waiting up to upgrade.timeout {} before running the command again",
                    node.state, spec.upgrade.timeout
                ),
            );
        } else {
            // The command is idempotent by contract, so it is run again.
            let mut next = mark.at(Step::Upgrading, now);
            next.target = spec.version.clone();
            let message =
                "running the upgrade command again (no run of it is under way in this process)";
            let mut update = self.change(node, None, Some(next), message.into());
            update.events = vec![self.command_event(node, CommandKind::Upgrade)];
            self.run(CommandKind::Upgrade, update);
        }
    }

    /// A manager drained ahead that the rollout no longer goes on with: its engine was never
    /// touched, so it gets its availability back and loses its labels in one update.
    pub(super) fn hand_back_ahead(&mut self, node: &NodeView, mark: &Mark) {
        let message = format!(
            "drained ahead, but the rollout does not go on with it now; back to {}",
            mark.previous
        );
        let mut update = self.change(node, Some(mark.previous), None, message);
        update.events = vec![event(EventStep::Reactivated, &update.message)];
        update.finished = Some((Step::Draining, self.in_step(mark)));
        self.push(update);
    }

    fn retarget(&mut self, node: &NodeView, mark: &Mark) {
        let mut next = mark.at(Step::Draining, self.now());
        next.target = self.spec().version.clone();
        let message = format!("target changed to {}; upgrading again", self.spec().version);
        self.push(self.change(node, None, Some(next), message));
    }

    fn upgraded(&mut self, node: &NodeView, mark: &Mark) {
        if self.upgraded_locked(node, mark) {
            return;
        }
        let spec = self.spec();
        let in_step = self.in_step(mark);
        if self.ready_at_target(node) {
            let ready = event(EventStep::Ready, format!("Ready at {}", mark.target));
            if node.is_manager() {
                let message = format!(
                    "Ready at {}; stays drained until every manager is upgraded",
                    node.engine_version
                );
                let mut update =
                    self.change(node, None, Some(mark.at(Step::Ready, self.now())), message);
                update.events = vec![ready];
                update.finished = Some((Step::Upgraded, in_step));
                self.push(update);
            } else {
                self.reactivate(node, mark, vec![ready], Some((Step::Upgraded, in_step)));
            }
        } else if in_step > spec.strategy.ready_timeout.get() {
            let engine = if node.engine_version.is_empty() {
                "unknown"
            } else {
                &node.engine_version
            };
            let reason = format!(
                "not Ready at {} within readyTimeout {} (state {}, engine {engine}){}",
                spec.version,
                spec.strategy.ready_timeout,
                node.state,
                if self.input.snapshot.autolock && node.is_manager() {
                    // Seen locked only through its own endpoint in --docker-host.
                    "; the swarm is autolocked: if it came up locked, `docker info` on it says so"
                } else {
                    ""
                }
            );
            self.fail(node, mark, reason, true);
        } else {
            self.wait(
                node,
                format!(
                    "waiting for Ready at {} (state {}, engine {})",
                    spec.version, node.state, node.engine_version
                ),
            );
        }
    }

    fn ready(&mut self, node: &NodeView, mark: &Mark, managers_all_at_target: bool) {
        if node.is_manager() && !managers_all_at_target {
            self.wait(
                node,
                "upgraded; stays drained until every manager is at the target".into(),
            );
        } else {
            let finished = Some((Step::Ready, self.in_step(mark)));
            self.reactivate(node, mark, vec![], finished);
        }
    }

    fn settling(&mut self, node: &NodeView, mark: &Mark) {
        let spec = self.spec();
        let in_step = self.in_step(mark);
        let failures = self.input.health_failures;
        if !failures.is_empty() {
            // After a reactivation the gates must pass before the node is let go.
            let why = format!(
                "health gate failed after reactivating {}: {}",
                node.hostname,
                crate::health::gates::summary(failures)
            );
            if spec.health.resume_when_healthy {
                self.block(BlockerKind::HealthGate, Some(node), why);
            } else {
                self.fail(node, mark, why, false);
            }
        } else if in_step >= spec.strategy.settle.get() {
            let mut update =
                self.change(node, None, None, "settled; operator labels removed".into());
            update.finished = Some((Step::Settling, in_step));
            self.push(update);
        } else {
            self.wait(
                node,
                format!(
                    "settling ({} of {})",
                    fmt_secs(in_step),
                    spec.strategy.settle
                ),
            );
        }
    }

    fn failed(&mut self, node: &NodeView, mark: &Mark) {
        if mark.spec_hash.as_deref() != Some(self.input.spec_hash) {
            // The spec was touched since the failure: hand the node back and plan afresh.
            let message = format!(
                "spec changed since the failure; {} returned to {} and retried in order",
                node.hostname, mark.previous
            );
            self.push(self.change(node, Some(mark.previous), None, message));
        } else {
            self.block(
                BlockerKind::PausedByFailure,
                Some(node),
                format!(
                    "{} failed: {}. Fix the cause, then change the spec or run `swarm-upgrade resume`",
                    node.hostname,
                    mark.reason.as_deref().unwrap_or("unknown reason")
                ),
            );
        }
    }

    fn reactivate(
        &mut self,
        node: &NodeView,
        mark: &Mark,
        mut events: Vec<NodeEvent>,
        finished: Option<(Step, Duration)>,
    ) {
        let message = format!("back to {}", mark.previous);
        events.extend([
            event(
                EventStep::Reactivate,
                format!("setting availability back to {}", mark.previous),
            ),
            event(EventStep::Reactivated, &message),
        ]);
        let settling = mark.at(Step::Settling, self.now());
        let mut update = self.change(node, Some(mark.previous), Some(settling), message);
        update.events = events;
        update.finished = finished;
        self.push(update);
    }

    /// `mark` moved to `step` for a failure, with the reason and the spec it failed under.
    fn failure_mark(&self, mark: &Mark, step: Step, reason: String) -> Mark {
        let mut next = mark.at(step, self.now());
        next.reason = Some(reason);
        // A failed node is a manager again (promoted in the same write) if it was demoted.
        next.demoted = false;
        // A rollback keeps the spec the upgrade failed under.
        next.spec_hash =
            (mark.spec_hash.clone()).or_else(|| Some(self.input.spec_hash.to_string()));
        next
    }

    /// Gives up on a node and pauses the rollout. `engine_touched`: the upgrade command ran, so
    /// the engine may be half-upgraded; it is rolled back first when the spec has a rollback,
    /// else left drained for a person to look at. An untouched engine gets its availability back.
    pub(super) fn fail(
        &mut self,
        node: &NodeView,
        mark: &Mark,
        reason: String,
        engine_touched: bool,
    ) {
        self.failing = true;
        let failed_event = event(EventStep::Failed, &reason);
        if engine_touched && self.spec().upgrade.rollback.is_some() {
            let rolling_back = self.failure_mark(mark, Step::RollingBack, reason.clone());
            let message = format!("{reason}; rolling back");
            let mut update = self.change(node, None, Some(rolling_back), message);
            update.events = vec![
                failed_event,
                self.command_event(node, CommandKind::Rollback),
            ];
            self.run(CommandKind::Rollback, update);
            return;
        }
        let (availability, reason) = if engine_touched {
            (None, format!("{reason} ({LEFT_DRAINED})"))
        } else if seen_untouched(node) {
            // The pause is recorded on a node the operator never drained: leave it as it is.
            (None, reason)
        } else {
            (Some(mark.previous), reason)
        };
        self.record_failure(node, mark, availability, reason, vec![failed_event]);
    }

    /// Writes the failed mark (and the availability decided), then says the rollout is paused.
    pub(super) fn record_failure(
        &mut self,
        node: &NodeView,
        mark: &Mark,
        availability: Option<crate::vocab::Availability>,
        reason: String,
        mut events: Vec<NodeEvent>,
    ) {
        let paused = format!("rollout paused: {} failed: {reason}", node.hostname);
        let failed = self.failure_mark(mark, Step::Failed, reason.clone());
        let mut update = self.change(node, availability, Some(failed), reason);
        events.push(event(EventStep::Paused, paused));
        update.events = events;
        self.push(update);
    }

    /// The upgrade failed and `upgrade.rollback` runs (or must run again after a restart).
    fn rolling_back(&mut self, node: &NodeView, mark: &Mark) {
        let reason = mark
            .reason
            .clone()
            .unwrap_or_else(|| "unknown reason".into());
        self.block(
            BlockerKind::PausedByFailure,
            Some(node),
            format!("{} failed: {reason}; rolling back", node.hostname),
        );
        if self.input.running_commands.contains(&node.id) {
            self.wait(node, "rollback command running".into());
            return;
        }
        match self.outcome(node, mark, CommandKind::Rollback).cloned() {
            Some(CommandOutcome::Succeeded) => {
                // The engine is back as it was: the node gets its availability back.
                let events = vec![];
                self.record_failure(node, mark, Some(mark.previous), reason, events);
            }
            Some(CommandOutcome::Failed(why)) => {
                let reason = format!("{reason} ({LEFT_DRAINED}: the rollback failed: {why})");
                self.record_failure(node, mark, None, reason, vec![]);
            }
            None => self.rolling_back_without_outcome(node, mark),
        }
    }

    /// Restarted mid-rollback: wait while the engine is away (the earlier run is likely at
    /// work), else run the rollback again (idempotent by contract, like the upgrade command).
    fn rolling_back_without_outcome(&mut self, node: &NodeView, mark: &Mark) {
        let timeout = self.spec().upgrade.timeout;
        if !node.is_healthy() && self.in_step(mark) < timeout.get() {
            self.wait(
                node,
                format!(
                    "engine {} after an operator restart mid-rollback; waiting up to upgrade.timeout {timeout} before running the rollback again",
                    node.state
                ),
            );
            return;
        }
        let reason = mark.reason.clone().unwrap_or_default();
        let next = self.failure_mark(mark, Step::RollingBack, reason);
        let message = "running the rollback again (no run of it is under way in this process)";
        let mut update = self.change(node, None, Some(next), message.into());
        update.events = vec![self.command_event(node, CommandKind::Rollback)];
        self.run(CommandKind::Rollback, update);
    }
}

/// The node carries no mark yet (a latched health-gate pause on the next node).
fn seen_untouched(node: &NodeView) -> bool {
    node.mark().is_none()
}
