//! The pure planner: from the observed cluster and the spec, the next steps to take.
//!
//! It reads nothing and writes nothing; the reconciler feeds it a snapshot, the outcomes of the
//! commands that ended, and a drain predictor, carries out what it returns, then observes again.
//! The planner alone decides every transition of a node's labels and availability (the executor
//! only carries them out). Every rule of the rollout's order lives here (`steps` moves a node
//! already under way one step on; this module decides which node starts):
//! - managers one at a time, non-leaders first, the leader last, each only when every other
//!   manager is Ready and Reachable (quorum guard);
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
use crate::marks::{Mark, Step};
use crate::spec::{EngineUpgradeSpec, NodeSelector, NodeVars};
pub use crate::vocab::NodeRef;
use crate::vocab::{Availability, CommandOutcome, Role};

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
    pub health_failures: &'a [String],
    /// Per node: service endpoints of its tasks still announced on overlay networks (by the
    /// network gossip) after its tasks stopped. Clients resolving `tasks.<service>` still get
    /// those addresses; stopping the engine before they are withdrawn leaves them stale.
    pub lingering_endpoints: &'a BTreeMap<String, usize>,
    pub now: Timestamp,
}

fn node_ref(node: &NodeView) -> NodeRef {
    NodeRef {
        id: node.id.clone(),
        hostname: node.hostname.clone(),
        role: node.role,
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

/// No prediction: every drain is allowed.
pub struct AllowEveryDrain;

impl DrainCheck for AllowEveryDrain {
    fn veto(&self, _: &[&str]) -> Option<String> {
        None
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
}

impl CommandKind {
    /// The step a node is at while this command runs.
    pub fn step(self) -> Step {
        match self {
            CommandKind::Upgrade => Step::Upgrading,
            CommandKind::Rollback => Step::RollingBack,
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
}

impl Action {
    pub fn update(&self) -> &NodeUpdate {
        match self {
            Action::Start(u) | Action::Update(u) | Action::Run { update: u, .. } => u,
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
}

impl Plan {
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
        }
    }

    /// Other managers that would make taking `node` down unsafe for raft quorum.
    fn quorum_problems(&self, node: &NodeView) -> Vec<String> {
        self.input
            .snapshot
            .nodes
            .iter()
            .filter(|m| m.is_manager() && m.id != node.id && !m.is_healthy())
            .map(|m| {
                format!(
                    "{} is {}{}",
                    m.hostname,
                    m.state,
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
        let problems = self.quorum_problems(node);
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
    /// stay drained until the last one is done, so the first manager stands for all of them.
    fn drain_set(&self, node: &'a NodeView) -> Vec<&'a str> {
        let nodes = &self.input.snapshot.nodes;
        let first_manager =
            node.is_manager() && !nodes.iter().any(|n| n.is_manager() && n.mark().is_some());
        if !first_manager {
            return vec![node.id.as_str()];
        }
        nodes
            .iter()
            .filter(|n| n.is_manager() && selects(&self.spec().node_selector, n))
            .map(|n| n.id.as_str())
            .collect()
    }

    /// Drains `node` unless a check forbids it now; says why not. Returns whether it started.
    fn start_if_safe(&mut self, node: &'a NodeView) -> bool {
        let manager = node.is_manager();
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
        if manager && !self.quorum_allows(node, "draining") {
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

    fn selected(&self, node: &NodeView) -> bool {
        selects(&self.spec.node_selector, node)
    }

    fn managers(&self) -> impl Iterator<Item = &'a NodeView> + '_ {
        self.order.iter().copied().filter(|n| n.is_manager())
    }

    fn workers(&self) -> impl Iterator<Item = &'a NodeView> + '_ {
        self.order.iter().copied().filter(|n| !n.is_manager())
    }

    /// Not yet started, selected and not at the target.
    fn unstarted(&self, node: &NodeView) -> bool {
        self.mark(node).is_none()
            && self.selected(node)
            && !self.spec.is_target(&node.engine_version)
    }

    /// Every selected manager upgraded and Ready: the held managers may be reactivated together.
    fn managers_all_at_target(&self) -> bool {
        self.managers().all(|m| match self.mark(m) {
            None => !self.selected(m) || self.spec.is_target(&m.engine_version),
            Some(mk) => {
                matches!(mk.step, Step::Ready | Step::Settling)
                    && self.spec.is_target(&m.engine_version)
            }
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
            failures.join("; ")
        ));
    }
    p.block(
        BlockerKind::HealthGate,
        None,
        format!(
            "health gates fail: {}{}",
            failures.join("; "),
            if resume {
                " (resumes by itself when they pass: resumeWhenHealthy)"
            } else {
                ""
            }
        ),
    );
    !resume
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

/// Managers one at a time, in order: the next starts once none is draining or being upgraded.
fn managers_phase<'a>(p: &mut Planner<'a>, rollout: &Rollout<'a>, may_start: bool) {
    let busy = rollout.managers().any(|m| {
        rollout.mark(m).is_some_and(|mk| {
            matches!(
                mk.step,
                Step::Draining | Step::Upgrading | Step::Upgraded | Step::RollingBack
            )
        })
    });
    if may_start
        && !busy
        && let Some(next) = rollout.managers().find(|m| rollout.unstarted(m))
    {
        p.start_if_safe(next);
    }
}

/// Managers are done (or none is selected): workers, up to `maxUnavailableWorkers` at once.
fn workers_phase<'a>(p: &mut Planner<'a>, rollout: &Rollout<'a>, may_start: bool) -> Phase {
    let busy = rollout
        .workers()
        .filter(|w| {
            rollout
                .mark(w)
                .is_some_and(|mk| mk.step.holds_node() || mk.step == Step::Settling)
        })
        .count();
    let slots = (p.spec().strategy.max_unavailable_workers as usize).saturating_sub(busy);
    let managers_settling = rollout.managers().any(|m| rollout.mark(m).is_some());
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
                step,
            }
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

    // 1. Nodes already under way move on, whatever else holds the rollout: nothing is left half-done.
    let managers_all_at_target = rollout.managers_all_at_target();
    for node in &rollout.order {
        if let Some(mark) = rollout.mark(node) {
            p.advance(node, mark, managers_all_at_target);
        }
    }

    // 2. Whether a new node may be started at all.
    let failed = rollout.held_by_failure(input.spec_hash);
    let healthy = health_allows_start(&mut p);
    let scheduled = schedule_allows_start(&mut p);
    let may_start = !unreadable && !failed && unique && healthy && scheduled;

    // 3. The phase, and its next node(s).
    let managers_pending = rollout.managers().any(|m| match rollout.mark(m) {
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
        Phase::Complete
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
    }
}

#[cfg(test)]
mod tests;
