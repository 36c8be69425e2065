//! The pure planner: from the observed cluster and the spec, the next steps to take.
//!
//! It reads nothing and writes nothing; the reconciler feeds it a snapshot, the outcomes of the
//! commands that ended, and a drain predictor, carries out what it returns, then observes again.
//! The planner alone decides every transition of a node's labels and availability (the executor
//! only carries them out). Every rule of the rollout's order lives here (`steps` moves a node
//! already under way one step on; this module decides which node starts):
//! - managers one at a time, non-leaders first, the leader last, each only when every other
//!   manager is Ready and Reachable (quorum guard); the next manager is drained ahead while one
//!   is upgraded, and handed back if the rollout then does not go on with it;
//! - an upgraded manager stays drained until every manager is at the target, then all are
//!   reactivated together;
//! - no worker is touched before every manager is done; then up to `maxUnavailableWorkers`;
//! - a node returns to the availability it had before the operator touched it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use crate::cluster::{NodeView, Snapshot};
use crate::events::EventStep;
use crate::health::gates::{self, GateFailure};
use crate::marks::{self, Mark, Step};
use crate::spec::{EngineUpgradeSpec, NodeSelector, NodeVars};
pub use crate::vocab::NodeRef;
use crate::vocab::{Availability, CommandOutcome, Role, State};

mod handover;
mod locked;
pub mod preflight;
mod steps;

/// What the planner is given.
pub struct PlanInput<'a> {
    pub spec: &'a EngineUpgradeSpec,
    /// Identifies the spec's content; a failed node is retried when it changes.
    pub spec_hash: &'a str,
    pub snapshot: &'a Snapshot,
    /// Nodes whose upgrade or rollback command is running in this process right now.
    pub running_commands: &'a BTreeSet<String>,
    /// Per node: the last command of this process that ended there, and how.
    pub ended_commands: &'a BTreeMap<String, CommandEnded>,
    /// Whether draining a set of nodes now would leave the swarm unable to run its tasks.
    pub drain_check: &'a dyn DrainCheck,
    /// Health gates failing now (`spec.health`); empty when they pass or none are configured.
    pub health_failures: &'a [GateFailure],
    /// Per node: service endpoints of its tasks still announced on overlay networks (by the
    /// network gossip) after its tasks stopped. Clients resolving `tasks.<service>` still get
    /// those addresses; stopping the engine before they are withdrawn leaves them stale.
    pub lingering_endpoints: &'a BTreeMap<String, usize>,
    /// Per node id: why the upgrade command's ssh login failed there lately (the executor
    /// tries it before each drain): such a node is not drained until the login works.
    pub ssh_failures: &'a BTreeMap<String, String>,
    /// What the pre-flight checks and the blocking services read from the store.
    pub workload: &'a preflight::Workload,
    pub now: Timestamp,
}

fn node_ref(node: &NodeView) -> NodeRef {
    NodeRef {
        id: node.id.clone(),
        hostname: node.hostname.clone(),
        // A manager demoted for its upgrade is still a manager of the rollout (and of its
        // events and commands).
        role: if demoted(node) {
            Role::Manager
        } else {
            node.role
        },
        addr: node.addr.clone(),
        engine_version: node.engine_version.clone(),
    }
}

/// The values a node-side command's placeholders and environment are filled from.
pub fn node_vars(node: &NodeRef, target: &str) -> NodeVars {
    NodeVars {
        id: node.id.clone(),
        hostname: node.hostname.clone(),
        addr: node.addr.clone(),
        role: node.role.as_str().to_string(),
        version: target.to_string(),
        current_version: node.engine_version.clone(),
    }
}

/// Answers "would draining these nodes (by id) now be safe?"; `Some(why)` when it would not be.
/// Backed by the capacity prediction in the loop; the planner asks it for each node it would
/// start (for the first manager: every selected manager, since they all stay drained together).
pub trait DrainCheck {
    fn veto(&self, draining: &[&str]) -> Option<String>;
}

impl<F: Fn(&[&str]) -> Option<String>> DrainCheck for F {
    fn veto(&self, draining: &[&str]) -> Option<String> {
        self(draining)
    }
}

/// Which of the spec's node-side commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandKind {
    /// `upgrade.command`, run at step `upgrading`.
    Upgrade,
    /// `upgrade.rollback`, run at step `rolling-back`.
    Rollback,
    /// `POST /swarm/unlock` with `upgrade.unlockKey` on a manager that came up locked, at step
    /// `upgraded` (not a node-side command: the executor calls the manager's own engine).
    Unlock,
}

impl CommandKind {
    /// The step a node is at while this command runs.
    pub fn step(self) -> Step {
        match self {
            CommandKind::Upgrade => Step::Upgrading,
            CommandKind::Rollback => Step::RollingBack,
            CommandKind::Unlock => Step::Upgraded,
        }
    }
}

/// A command that ended, as the executor reports it: an observation the planner reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandEnded {
    pub command: CommandKind,
    /// The `since` of the mark it was started under: an outcome counts only for that mark.
    pub started: Timestamp,
    pub outcome: CommandOutcome,
}

/// One event an update stands for, with its message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeEvent {
    pub step: EventStep,
    pub message: String,
}

/// A change to one node's spec: availability and/or the operator's mark, in one update.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeUpdate {
    pub node: NodeRef,
    /// The step the node was seen at; the update is dropped if it has moved since.
    pub expect: Option<Step>,
    /// `None` keeps the availability as it is.
    pub availability: Option<Availability>,
    /// `None` keeps the role as it is: only a leader handover demotes a manager, and the
    /// update that drops its `demoted` flag promotes it back.
    pub role: Option<Role>,
    /// `None` removes every operator label.
    pub mark: Option<Mark>,
    /// Events this update stands for, in order; emitted once it is written.
    pub events: Vec<NodeEvent>,
    /// The step this update ends, and how long it took (for the step-duration histogram).
    pub finished: Option<(Step, Duration)>,
    pub message: String,
}

impl NodeUpdate {
    pub fn event_steps(&self) -> Vec<EventStep> {
        self.events.iter().map(|e| e.step).collect()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Begins a node's cycle: drains a node the operator had not touched and records what it was.
    Start(NodeUpdate),
    /// Moves a node the operator holds to its next step (or hands it back).
    Update(NodeUpdate),
    /// Writes the update (the step the command runs at), then runs the command; its outcome
    /// comes back to the planner in [`PlanInput::ended_commands`].
    Run {
        command: CommandKind,
        update: NodeUpdate,
    },
    /// Unlocks a manager that came up locked ([`CommandKind::Unlock`]); the update is not
    /// written (the node stays at its step), its events are emitted; the outcome comes back in
    /// [`PlanInput::ended_commands`].
    Unlock(NodeUpdate),
}

impl Action {
    pub fn update(&self) -> &NodeUpdate {
        match self {
            Action::Start(u)
            | Action::Update(u)
            | Action::Run { update: u, .. }
            | Action::Unlock(u) => u,
        }
    }

    pub fn node(&self) -> &NodeRef {
        &self.update().node
    }

    pub fn message(&self) -> &str {
        &self.update().message
    }
}

/// Why nothing (more) happens: shown by `plan`, `status`, the log and `/status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Blocker {
    pub kind: BlockerKind,
    pub node: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockerKind {
    /// A step under way: the rollout waits on observed state (not a problem).
    Waiting,
    /// `spec.strategy.paused`.
    PausedBySpec,
    /// A node failed; nothing new starts until the spec changes or `resume`.
    PausedByFailure,
    OutsideWindow,
    QuorumGuard,
    NodeDown,
    UnreadableMark,
    /// A health gate or the capacity prediction vetoed draining a node.
    Vetoed,
    /// A health gate fails: nothing new starts and no reactivated node is released.
    HealthGate,
    /// Two nodes report the same hostname; commands address nodes by hostname.
    AmbiguousHostname,
    /// An upgraded manager came up locked (autolock) and the operator has no key to unlock
    /// it: the rollout waits for someone to unlock it.
    Locked,
    /// An admin holds a manager below the target (label `swarm-upgrade.hold`): the managers
    /// phase cannot finish, so nothing starts.
    Held,
    /// Not a problem, a notice before anything is drained: the swarm is autolocked and the
    /// spec gives no unlock key, so each upgraded manager will wait to be unlocked by hand.
    Autolocked,
    /// A pre-flight check refuses to start the rollout (`preflight::Check`): nothing is
    /// drained until its cause is gone.
    Preflight,
    /// Not a problem: a pre-flight check warns (a jump of several major versions).
    PreflightWarning,
    /// The node runs a task of a service `spec.health.blockingServices` selects: it is not
    /// started while that task runs there (the admin's choice, not a problem).
    BlockingService,
    /// The upgrade command logs in with ssh and that login failed lately: the node is not
    /// drained until it works (tried again after a minute).
    SshLogin,
}

impl BlockerKind {
    pub fn is_problem(self) -> bool {
        matches!(
            self,
            BlockerKind::PausedByFailure
                | BlockerKind::NodeDown
                | BlockerKind::UnreadableMark
                | BlockerKind::Vetoed
                | BlockerKind::HealthGate
                | BlockerKind::AmbiguousHostname
                | BlockerKind::Locked
                | BlockerKind::Held
                | BlockerKind::Preflight
                | BlockerKind::SshLogin
        )
    }
}

/// One node's line in the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedNode {
    /// Position in the rollout order (1-based); nodes already at target and untouched have none.
    pub order: Option<usize>,
    pub id: String,
    pub hostname: String,
    pub role: Role,
    pub leader: bool,
    pub availability: Availability,
    pub state: String,
    pub engine_version: String,
    pub at_target: bool,
    pub selected: bool,
    /// The admin's hold on the node (label `swarm-upgrade.hold`), with its reason.
    pub held: Option<String>,
    pub step: Option<Step>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Managers,
    Workers,
    Complete,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub blockers: Vec<Blocker>,
    pub nodes: Vec<PlannedNode>,
    pub phase: Phase,
    /// Every selected node is at the target and no operator label is left.
    pub complete: bool,
    /// A failed node holds the rollout.
    pub failed: bool,
    /// What the pre-flight checks found (empty once the rollout is under way).
    pub preflight: Vec<preflight::Finding>,
}

impl Plan {
    /// The nodes an admin holds out of the rollout: (hostname, reason).
    pub fn held(&self) -> impl Iterator<Item = (&str, &str)> {
        self.nodes
            .iter()
            .filter_map(|n| Some((n.hostname.as_str(), n.held.as_deref()?)))
    }

    pub fn is_paused(&self) -> bool {
        self.blockers.iter().any(|b| {
            matches!(
                b.kind,
                BlockerKind::PausedBySpec | BlockerKind::PausedByFailure | BlockerKind::HealthGate
            )
        })
    }
}

pub fn selects(selector: &NodeSelector, node: &NodeView) -> bool {
    let host_ok = selector.hostnames.is_empty() || selector.hostnames.contains(&node.hostname);
    let labels_ok = selector
        .labels
        .iter()
        .all(|(k, v)| node.labels.get(k) == Some(v));
    host_ok && labels_ok
}

/// The rollout order: managers (non-leaders by hostname, then the leader), then workers by hostname.
pub fn rollout_order(nodes: &[NodeView]) -> Vec<&NodeView> {
    let mut ordered: Vec<&NodeView> = nodes.iter().collect();
    ordered.sort_by(|a, b| {
        (a.role, a.leader, &a.hostname, &a.id).cmp(&(b.role, b.leader, &b.hostname, &b.id))
    });
    ordered
}

fn elapsed(since: Timestamp, now: Timestamp) -> Duration {
    let d = now.duration_since(since);
    Duration::try_from(d).unwrap_or(Duration::ZERO)
}

struct Planner<'a> {
    input: &'a PlanInput<'a>,
    actions: Vec<Action>,
    blockers: Vec<Blocker>,
    /// A failing health gate to record on the next node instead of starting it, so the pause
    /// lives in the cluster (without `resumeWhenHealthy`).
    latch: Option<String>,
    /// A node failed in this pass: no further worker starts in it.
    failing: bool,
}

impl<'a> Planner<'a> {
    fn spec(&self) -> &'a EngineUpgradeSpec {
        self.input.spec
    }

    fn now(&self) -> Timestamp {
        self.input.now
    }

    fn at_target(&self, node: &NodeView) -> bool {
        self.spec().is_target(&node.engine_version)
    }

    /// Ready, reachable (managers) and at the target version.
    fn ready_at_target(&self, node: &NodeView) -> bool {
        node.is_healthy() && self.at_target(node)
    }

    fn block(&mut self, kind: BlockerKind, node: Option<&NodeView>, message: String) {
        self.blockers.push(Blocker {
            kind,
            node: node.map(|n| n.hostname.clone()),
            message,
        });
    }

    fn wait(&mut self, node: &NodeView, message: String) {
        self.block(BlockerKind::Waiting, Some(node), message);
    }

    /// A node update with the node's current step as the expected one.
    fn change(
        &self,
        node: &NodeView,
        availability: Option<Availability>,
        mark: Option<Mark>,
        message: String,
    ) -> NodeUpdate {
        NodeUpdate {
            node: node_ref(node),
            expect: seen_step(node),
            availability,
            role: restored_role(node, mark.as_ref()),
            mark,
            events: vec![],
            finished: None,
            message,
        }
    }

    fn push(&mut self, update: NodeUpdate) {
        self.actions.push(Action::Update(update));
    }

    fn run(&mut self, command: CommandKind, update: NodeUpdate) {
        self.actions.push(Action::Run { command, update });
    }

    fn new_mark(&self, node: &NodeView, step: Step) -> Mark {
        Mark {
            step,
            previous: node.availability,
            target: self.spec().version.clone(),
            from_version: node.engine_version.clone(),
            since: self.now(),
            reason: None,
            spec_hash: None,
            demoted: false,
        }
    }

    /// Other managers (but `except`) that would make taking `node` down unsafe for raft quorum.
    fn quorum_problems(&self, node: &NodeView, except: Option<&str>) -> Vec<String> {
        self.input
            .snapshot
            .nodes
            .iter()
            .filter(|m| m.is_manager() && m.id != node.id && !m.is_healthy())
            .filter(|m| Some(m.id.as_str()) != except)
            .map(|m| {
                format!(
                    "{} is {}{}",
                    m.hostname,
                    if m.locked { "locked" } else { m.state.as_str() },
                    if m.state == crate::cluster::State::Ready {
                        " but not reachable"
                    } else {
                        ""
                    }
                )
            })
            .collect()
    }

    /// Blocks and returns false when stopping or draining manager `node` would risk quorum.
    fn quorum_allows(&mut self, node: &NodeView, doing: &str) -> bool {
        self.quorum_allows_except(node, doing, None)
    }

    /// [`Self::quorum_allows`], not counting manager `except` (the one being upgraded).
    fn quorum_allows_except(&mut self, node: &NodeView, doing: &str, except: Option<&str>) -> bool {
        let problems = self.quorum_problems(node, except);
        if problems.is_empty() {
            return true;
        }
        self.block(
            BlockerKind::QuorumGuard,
            Some(node),
            format!(
                "not {doing} manager {}: {} (every other manager must be Ready and Reachable)",
                node.hostname,
                problems.join(", ")
            ),
        );
        false
    }

    /// Starts a node's cycle: drain (or keep drained) and record what it was.
    fn start(&mut self, node: &NodeView) {
        let mut update = self.change(
            node,
            Some(Availability::Drain),
            Some(self.new_mark(node, Step::Draining)),
            format!(
                "draining (was {}), {} -> {}",
                node.availability,
                node.engine_version,
                self.spec().version
            ),
        );
        update.events = vec![NodeEvent {
            step: EventStep::Drain,
            message: update.message.clone(),
        }];
        self.actions.push(Action::Start(update));
    }

    /// The nodes whose drain the predictor must judge before `node` starts: upgraded managers
    /// stay drained until the last one is done and the next one is drained ahead, so every
    /// manager stands for the whole set of selected managers.
    fn drain_set(&self, node: &'a NodeView) -> Vec<&'a str> {
        if !node.is_manager() {
            return vec![node.id.as_str()];
        }
        self.input
            .snapshot
            .nodes
            .iter()
            .filter(|n| n.is_manager() && selects(&self.spec().node_selector, n))
            .map(|n| n.id.as_str())
            .collect()
    }

    /// The manager (other than `node`) whose engine the operator has in hand: its upgrade or
    /// rollback is under way, or it failed with its engine possibly half-upgraded.
    fn manager_in_upgrade(&self, node: &NodeView) -> Option<&'a NodeView> {
        self.input.snapshot.nodes.iter().find(|m| {
            acts_as_manager(m) && m.id != node.id && seen_step(m).is_some_and(Step::engine_in_hand)
        })
    }

    /// Drains `node` unless a check forbids it now; says why not. Returns whether it started.
    fn start_if_safe(&mut self, node: &'a NodeView) -> bool {
        let manager = node.is_manager();
        if let Some(why) = self.input.ssh_failures.get(&node.id) {
            // The check's own words name the node, the cause and the fix.
            self.block(BlockerKind::SshLogin, Some(node), why.clone());
            return false;
        }
        if !node.is_healthy() {
            self.block(
                BlockerKind::NodeDown,
                Some(node),
                format!(
                    "{} {} is {}: it is not started until it is Ready{}",
                    node.role,
                    node.hostname,
                    node.state,
                    if manager {
                        " (managers are upgraded in order; the rollout waits)"
                    } else {
                        ""
                    }
                ),
            );
            return false;
        }
        if self.held_by_blocking_service(node) {
            return false;
        }
        // A drain stops no engine: the manager whose upgrade is under way may be down while
        // the next one is drained ahead (its engine stops only once the guard allows).
        let upgrading = self.manager_in_upgrade(node).map(|m| m.id.clone());
        if manager && !self.quorum_allows_except(node, "draining", upgrading.as_deref()) {
            return false;
        }
        if let Some(why) = self.input.drain_check.veto(&self.drain_set(node)) {
            let message = format!("not draining {}: {why}", node.hostname);
            self.block(BlockerKind::Vetoed, Some(node), message);
            return false;
        }
        if let Some(reason) = self.latch.take() {
            // Recorded on this node without draining it; `slots` ends here for this pass.
            let mark = self.new_mark(node, Step::Failed);
            self.fail(node, &mark, reason, false);
            return true;
        }
        self.start(node);
        true
    }
}

fn seen_step(node: &NodeView) -> Option<Step> {
    node.mark().and_then(Result::ok).map(|m| m.step)
}

/// A manager the operator demoted for a leader handover (its mark says so).
fn demoted(node: &NodeView) -> bool {
    node.mark().and_then(Result::ok).is_some_and(|m| m.demoted)
}

/// A manager of the rollout: a manager, or one the operator demoted for its upgrade.
fn acts_as_manager(node: &NodeView) -> bool {
    node.is_manager() || demoted(node)
}

/// The role an update writes: a demoted manager is promoted back in the very update that drops
/// its `demoted` flag (whatever path drops it: promotion after the upgrade, a failure, a hand
/// back), so the flag and the role never disagree and no path can leave it a worker.
fn restored_role(node: &NodeView, next: Option<&Mark>) -> Option<Role> {
    let stays_demoted = next.is_some_and(|m| m.demoted);
    (demoted(node) && !stays_demoted && node.role == Role::Worker).then_some(Role::Manager)
}

fn fmt_secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// The rollout as one pass sees it: nodes in order, their readable marks, and what is selected.
struct Rollout<'a> {
    order: Vec<&'a NodeView>,
    marks: BTreeMap<&'a str, Mark>,
    spec: &'a EngineUpgradeSpec,
}

impl<'a> Rollout<'a> {
    fn mark(&self, node: &NodeView) -> Option<&Mark> {
        self.marks.get(node.id.as_str())
    }

    /// Chosen by `spec.nodeSelector` and not held by the admin.
    fn selected(&self, node: &NodeView) -> bool {
        selects(&self.spec.node_selector, node) && self.held(node).is_none()
    }

    /// The admin's hold (label `swarm-upgrade.hold`), with its reason.
    fn held(&self, node: &'a NodeView) -> Option<&'a str> {
        marks::hold_reason(&node.labels)
    }

    /// Managers the spec selects that an admin holds below the target: the managers phase
    /// cannot finish (every manager is upgraded before the workers), so it does not start.
    fn held_managers_below_target(&self) -> impl Iterator<Item = (&'a NodeView, &'a str)> + '_ {
        self.managers().filter_map(|m| {
            let below = !self.spec.is_target(&m.engine_version) && self.mark(m).is_none();
            let selects = selects(&self.spec.node_selector, m);
            self.held(m)
                .filter(|_| below && selects)
                .map(|reason| (m, reason))
        })
    }

    fn managers(&self) -> impl Iterator<Item = &'a NodeView> + '_ {
        self.order
            .iter()
            .copied()
            .filter(|n| self.acts_as_manager(n))
    }

    fn workers(&self) -> impl Iterator<Item = &'a NodeView> + '_ {
        self.order
            .iter()
            .copied()
            .filter(|n| !self.acts_as_manager(n))
    }

    /// A manager, or a manager demoted for its upgrade (a leader handover).
    fn acts_as_manager(&self, node: &NodeView) -> bool {
        node.is_manager() || self.mark(node).is_some_and(|m| m.demoted)
    }

    /// Not yet started, selected and not at the target.
    fn unstarted(&self, node: &NodeView) -> bool {
        self.mark(node).is_none()
            && self.selected(node)
            && !self.spec.is_target(&node.engine_version)
    }

    /// Every selected manager upgraded and seen Ready at the target: the held managers may be
    /// reactivated together. One seen Ready that went `unknown` since counts as done: after the
    /// leader's upgrade the other managers' agents reconnect to the new leader on their own
    /// backoff (up to 8 s on the lab), and setting a node's availability needs no session;
    /// the scheduler places nothing on it until it is Ready again.
    fn managers_all_at_target(&self) -> bool {
        self.managers().all(|m| {
            let at_target = self.spec.is_target(&m.engine_version);
            match self.mark(m) {
                None => !self.selected(m) || at_target && m.is_healthy(),
                Some(mk) => match mk.step {
                    Step::Settling | Step::Ready => at_target,
                    _ => false,
                },
            }
        })
    }

    /// The node is settling and its settle is over with every health gate passing: this very
    /// pass removes its labels, so the next node need not wait for another pass.
    fn settled(&self, node: &NodeView, now: Timestamp, gates_pass: bool) -> bool {
        self.mark(node).is_some_and(|mk| {
            mk.step == Step::Settling
                && gates_pass
                && elapsed(mk.since, now) >= self.spec.strategy.settle.get()
        })
    }

    /// A node failed under this spec (or is rolling back): nothing new starts.
    fn held_by_failure(&self, spec_hash: &str) -> bool {
        self.marks.values().any(|m| {
            m.step == Step::RollingBack
                || m.step == Step::Failed && m.spec_hash.as_deref() == Some(spec_hash)
        })
    }
}

/// Reads every node's mark; an unreadable one is reported and stops new starts.
fn read_marks<'a>(p: &mut Planner<'_>, order: &[&'a NodeView]) -> (BTreeMap<&'a str, Mark>, bool) {
    let mut marks = BTreeMap::new();
    let mut unreadable = false;
    for node in order {
        match node.mark() {
            Some(Ok(mark)) => {
                marks.insert(node.id.as_str(), mark);
            }
            Some(Err(e)) => {
                unreadable = true;
                p.block(BlockerKind::UnreadableMark, Some(node), e.to_string());
            }
            None => {}
        }
    }
    (marks, unreadable)
}

/// Commands address nodes by hostname: two nodes reporting one hostname (a node's description
/// briefly carrying another host's, seen on a real swarm) must not be acted on.
fn hostnames_unique(p: &mut Planner<'_>, order: &[&NodeView]) -> bool {
    let mut by_hostname: BTreeMap<&str, Vec<&NodeView>> = BTreeMap::new();
    for node in order {
        by_hostname
            .entry(node.hostname.as_str())
            .or_default()
            .push(node);
    }
    let mut unique = true;
    for (hostname, nodes) in by_hostname.iter().filter(|(_, nodes)| nodes.len() > 1) {
        unique = false;
        p.block(
            BlockerKind::AmbiguousHostname,
            None,
            format!(
                "{} nodes report hostname {hostname} ({}): nothing new starts until each hostname is unique again",
                nodes.len(),
                nodes.iter().map(|n| n.id.as_str()).collect::<Vec<_>>().join(", ")
            ),
        );
    }
    unique
}

/// Failing health gates: with `resumeWhenHealthy` nothing starts; without it the failure is
/// latched on the next node. Returns whether a new node may start.
fn health_allows_start(p: &mut Planner<'_>) -> bool {
    let failures = p.input.health_failures;
    if failures.is_empty() {
        return true;
    }
    let resume = p.spec().health.resume_when_healthy;
    if !resume {
        p.latch = Some(format!(
            "health gate failed before starting the node: {}",
            gates::summary(failures)
        ));
    }
    p.block(
        BlockerKind::HealthGate,
        None,
        format!(
            "health gates fail: {}{}",
            gates::summary(failures),
            if resume {
                " (resumes by itself when they pass: resumeWhenHealthy)"
            } else {
                ""
            }
        ),
    );
    !resume
}

/// A held manager below the target stops the rollout before it drains anything it could not
/// then release. Returns whether a new node may start.
fn manager_holds_allow_start(p: &mut Planner<'_>, rollout: &Rollout<'_>) -> bool {
    let mut allowed = true;
    for (m, reason) in rollout.held_managers_below_target() {
        allowed = false;
        p.block(
            BlockerKind::Held,
            Some(m),
            format!(
                "manager {} is held ({reason}): every manager is upgraded before any worker, so \
                 the rollout waits; remove the hold (`docker node update --label-rm {} {}`) or \
                 leave the node out with spec.nodeSelector",
                m.hostname,
                marks::HOLD,
                m.hostname
            ),
        );
    }
    allowed
}

/// `spec.strategy.paused` and the maintenance window. Returns whether a new node may start.
fn schedule_allows_start(p: &mut Planner<'_>) -> bool {
    let spec = p.spec();
    let mut allowed = true;
    if spec.strategy.paused {
        allowed = false;
        p.block(
            BlockerKind::PausedBySpec,
            None,
            "spec.strategy.paused is true: no new node is started".into(),
        );
    }
    if let Some(window) = &spec.window
        && !window.is_open(p.now())
    {
        allowed = false;
        p.block(
            BlockerKind::OutsideWindow,
            None,
            format!(
                "outside the maintenance window ({} {}-{} {})",
                window
                    .days
                    .iter()
                    .map(|d| format!("{d:?}").to_lowercase())
                    .collect::<Vec<_>>()
                    .join(","),
                window.start,
                window.end,
                window.timezone
            ),
        );
    }
    allowed
}

/// Managers one at a time, in order, with the next one drained ahead: it starts draining once
/// no manager is draining (while the previous one is being upgraded); its engine is stopped only
/// once no other manager's upgrade is under way (`steps::drained`) and the quorum guard allows.
fn managers_phase<'a>(p: &mut Planner<'a>, rollout: &Rollout<'a>, may_start: bool) {
    let busy = rollout.managers().any(|m| {
        rollout
            .mark(m)
            .is_some_and(|mk| matches!(mk.step, Step::Draining | Step::RollingBack))
    });
    if may_start
        && !busy
        && let Some(next) = rollout.managers().find(|m| rollout.unstarted(m))
    {
        p.start_if_safe(next);
    }
}

/// Managers drained ahead (draining while another manager's upgrade is under way) that the
/// rollout abandons: nothing new may start (paused, window closed, a failure, a health gate, an
/// unreadable mark) or the spec no longer selects them. They go back to their availability.
fn abandoned_ahead<'a>(
    p: &Planner<'a>,
    rollout: &Rollout<'a>,
    may_start: bool,
) -> BTreeSet<&'a str> {
    let abandon_all = !may_start || !p.input.health_failures.is_empty();
    rollout
        .managers()
        .filter(|m| rollout.mark(m).is_some_and(|mk| mk.step == Step::Draining))
        .filter(|m| p.manager_in_upgrade(m).is_some())
        .filter(|m| abandon_all || !rollout.selected(m))
        .map(|m| m.id.as_str())
        .collect()
}

/// Managers are done (or none is selected): workers, up to `maxUnavailableWorkers` at once.
fn workers_phase<'a>(p: &mut Planner<'a>, rollout: &Rollout<'a>, may_start: bool) -> Phase {
    let (now, gates_pass) = (p.now(), p.input.health_failures.is_empty());
    let settled = |n: &NodeView| rollout.settled(n, now, gates_pass);
    let busy = rollout
        .workers()
        .filter(|w| !settled(w))
        .filter(|w| {
            rollout
                .mark(w)
                .is_some_and(|mk| mk.step.holds_node() || mk.step == Step::Settling)
        })
        .count();
    let slots = (p.spec().strategy.max_unavailable_workers as usize).saturating_sub(busy);
    let managers_settling = rollout
        .managers()
        .any(|m| rollout.mark(m).is_some() && !settled(m));
    let pending: Vec<&NodeView> = rollout.workers().filter(|w| rollout.unstarted(w)).collect();
    if may_start && !managers_settling {
        let mut started = 0;
        for w in &pending {
            if started >= slots || p.failing {
                break;
            }
            if p.start_if_safe(w) {
                started += 1;
            }
        }
    }
    Phase::Workers
}

/// Every node at the target is also Ready before the rollout is called complete: a node that
/// went down after its own cycle (a leader change reports every node `unknown` for a while) is
/// waited for, so `run --once` does not exit on a swarm that is not whole.
fn all_ready_at_end(p: &mut Planner<'_>, rollout: &Rollout<'_>) -> bool {
    let mut ready = true;
    for node in rollout.order.iter().filter(|n| rollout.selected(n)) {
        if node.state == State::Ready {
            continue;
        }
        ready = false;
        let kind = if node.state == State::Unknown {
            BlockerKind::Waiting
        } else {
            BlockerKind::NodeDown
        };
        let message = format!(
            "{} is at the target but {}: the rollout is complete once it is Ready again",
            node.hostname,
            node.state.as_str()
        );
        p.block(kind, Some(node), message);
    }
    ready
}

/// One line per node, in rollout order.
fn planned_nodes(rollout: &Rollout<'_>) -> Vec<PlannedNode> {
    let mut position = 0;
    rollout
        .order
        .iter()
        .map(|n| {
            let at_target = rollout.spec.is_target(&n.engine_version);
            let step = rollout.mark(n).map(|m| m.step);
            let selected = rollout.selected(n);
            let order = (selected && (!at_target || step.is_some())).then(|| {
                position += 1;
                position
            });
            PlannedNode {
                order,
                id: n.id.clone(),
                hostname: n.hostname.clone(),
                role: n.role,
                leader: n.leader,
                availability: n.availability,
                state: n.state.to_string(),
                engine_version: n.engine_version.clone(),
                at_target,
                selected,
                held: rollout.held(n).map(str::to_string),
                step,
            }
        })
        .collect()
}

/// `swarm-upgrade resume`: every failed node handed back to its earlier availability (and
/// role) with its labels removed, so that the rollout retries it in order.
pub fn resume(nodes: &[NodeView]) -> Vec<NodeUpdate> {
    let failed = |n: &&NodeView| seen_step(n) == Some(Step::Failed);
    nodes
        .iter()
        .filter(failed)
        .filter_map(|node| {
            let mark = node.mark()?.ok()?;
            Some(NodeUpdate {
                node: node_ref(node),
                expect: Some(Step::Failed),
                availability: Some(mark.previous),
                role: restored_role(node, None),
                mark: None,
                events: vec![],
                finished: None,
                message: format!("handed back to {} for a retry", mark.previous),
            })
        })
        .collect()
}

pub fn plan(input: &PlanInput<'_>) -> Plan {
    let mut p = Planner {
        input,
        actions: vec![],
        blockers: vec![],
        latch: None,
        failing: false,
    };
    let order = rollout_order(&input.snapshot.nodes);
    let (marks, unreadable) = read_marks(&mut p, &order);
    let unique = hostnames_unique(&mut p, &order);
    let rollout = Rollout {
        order,
        marks,
        spec: input.spec,
    };

    // 1. Whether a new node may be started at all.
    let failed = rollout.held_by_failure(input.spec_hash);
    let healthy = health_allows_start(&mut p);
    let scheduled = schedule_allows_start(&mut p);
    let holds_ok = manager_holds_allow_start(&mut p, &rollout);
    let findings = preflight::findings(&p, &rollout);
    let preflight_ok = preflight::gate(&mut p, &findings);
    let may_start =
        !unreadable && !failed && unique && healthy && scheduled && holds_ok && preflight_ok;

    // 2. Nodes already under way move on, whatever else holds the rollout: nothing is left
    //    half-done. A manager drained ahead whose upgrade has not begun is handed back instead.
    let managers_all_at_target = rollout.managers_all_at_target();
    let abandoned = abandoned_ahead(&p, &rollout, may_start);
    for node in &rollout.order {
        if let Some(mark) = rollout.mark(node) {
            if abandoned.contains(node.id.as_str()) {
                p.hand_back_ahead(node, mark);
            } else {
                p.advance(node, mark, managers_all_at_target);
            }
        }
    }
    locked::autolock_notice(&mut p, &rollout);

    // 3. The phase, and its next node(s).
    let managers_pending = !holds_ok
        || rollout.managers().any(|m| match rollout.mark(m) {
            Some(mk) => mk.step != Step::Settling,
            None => rollout.unstarted(m),
        });
    let phase = if managers_pending {
        managers_phase(&mut p, &rollout, may_start);
        Phase::Managers
    } else if rollout.marks.is_empty()
        && !unreadable
        && !rollout.workers().any(|w| rollout.unstarted(w))
    {
        if all_ready_at_end(&mut p, &rollout) {
            Phase::Complete
        } else {
            Phase::Workers
        }
    } else {
        workers_phase(&mut p, &rollout, may_start)
    };

    Plan {
        complete: phase == Phase::Complete,
        nodes: planned_nodes(&rollout),
        actions: p.actions,
        blockers: p.blockers,
        phase,
        failed: rollout
            .marks
            .values()
            .any(|m| m.step == Step::Failed && m.spec_hash.as_deref() == Some(input.spec_hash)),
        preflight: findings,
    }
}

#[cfg(test)]
mod tests;
