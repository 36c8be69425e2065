//! The pure planner: from the observed cluster and the spec, the next steps to take.
//!
//! It reads nothing and writes nothing; the reconciler feeds it a snapshot and carries out what
//! it returns, then observes again. Every rule of the rollout's order lives here:
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

use crate::cluster::{Availability, NodeView, Role, Snapshot};
use crate::events::EventStep;
use crate::marks::{Mark, Step};
use crate::spec::{EngineUpgradeSpec, NodeSelector};

/// What the planner is given.
pub struct PlanInput<'a> {
    pub spec: &'a EngineUpgradeSpec,
    /// Identifies the spec's content; a failed node is retried when it changes.
    pub spec_hash: &'a str,
    pub snapshot: &'a Snapshot,
    /// Nodes whose upgrade command is running in this process right now.
    pub running_commands: &'a BTreeSet<String>,
    /// Nodes that must not be drained now, with the reason (health gates, capacity prediction).
    pub drain_vetoes: &'a BTreeMap<String, String>,
    /// Health gates failing now (`spec.health`); empty when they pass or none are configured.
    pub health_failures: &'a [String],
    /// Per node: service endpoints of its tasks still announced on overlay networks (by the
    /// network gossip) after its tasks stopped. Clients resolving `tasks.<service>` still get
    /// those addresses; stopping the engine before they are withdrawn leaves them stale.
    pub lingering_endpoints: &'a BTreeMap<String, usize>,
    pub now: Timestamp,
}

/// The node an action is about, with what commands and events need of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeRef {
    pub id: String,
    pub hostname: String,
    pub role: Role,
    pub addr: String,
    pub engine_version: String,
}

impl NodeRef {
    fn of(node: &NodeView) -> Self {
        Self {
            id: node.id.clone(),
            hostname: node.hostname.clone(),
            role: node.role,
            addr: node.addr.clone(),
            engine_version: node.engine_version.clone(),
        }
    }
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
    /// Event steps this update stands for, in order.
    pub events: Vec<EventStep>,
    /// The step this update ends, and how long it took (for the step-duration histogram).
    pub finished: Option<(Step, Duration)>,
    pub message: String,
}

/// Why a node is given up on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    pub node: NodeRef,
    pub expect: Option<Step>,
    pub reason: String,
    /// Run `upgrade.rollback` first (when the spec has one).
    pub rollback: bool,
    /// The mark to leave on the node (step `failed`).
    pub mark: Mark,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    Update(NodeUpdate),
    /// Mark the node `upgrading`, then run the upgrade command.
    RunUpgrade {
        node: NodeRef,
        expect: Option<Step>,
        mark: Mark,
        events: Vec<EventStep>,
        finished: Option<(Step, Duration)>,
        message: String,
    },
    /// Roll back if asked, restore availability when that is safe, mark failed, pause.
    Fail(Failure),
}

impl Action {
    pub fn node(&self) -> &NodeRef {
        match self {
            Action::Update(u) => &u.node,
            Action::RunUpgrade { node, .. } => node,
            Action::Fail(f) => &f.node,
        }
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
}

impl<'a> Planner<'a> {
    fn spec(&self) -> &'a EngineUpgradeSpec {
        self.input.spec
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

    fn update(
        &mut self,
        node: &NodeView,
        availability: Option<Availability>,
        mark: Option<Mark>,
        events: Vec<EventStep>,
        finished: Option<(Step, Duration)>,
        message: String,
    ) {
        self.actions.push(Action::Update(NodeUpdate {
            node: NodeRef::of(node),
            expect: seen_step(node),
            availability,
            mark,
            events,
            finished,
            message,
        }));
    }

    fn new_mark(&self, node: &NodeView, step: Step) -> Mark {
        Mark {
            step,
            previous: node.availability,
            target: self.spec().version.clone(),
            from_version: node.engine_version.clone(),
            since: self.input.now,
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

    /// Moves a node that already carries a mark one step on, if its observed state allows.
    fn advance(&mut self, node: &NodeView, mark: &Mark, managers_all_at_target: bool) {
        let now = self.input.now;
        let spec = self.spec();
        let retarget = mark.target != spec.version;
        let in_step = elapsed(mark.since, now);
        match mark.step {
            Step::Draining => {
                let mut next = mark.clone();
                if retarget {
                    next.target = spec.version.clone();
                    self.update(
                        node,
                        None,
                        Some(next),
                        vec![],
                        None,
                        format!("target changed to {}", spec.version),
                    );
                    return;
                }
                let busy = self.input.snapshot.tasks_on(&node.id);
                let lingering = self
                    .input
                    .lingering_endpoints
                    .get(&node.id)
                    .copied()
                    .unwrap_or(0);
                if busy == 0 && lingering > 0 && in_step <= spec.strategy.drain_timeout.get() {
                    self.block(
                        BlockerKind::Waiting,
                        Some(node),
                        format!(
                            "drained; waiting for {lingering} service endpoint(s) of the node to be withdrawn from the overlay networks"
                        ),
                    );
                } else if busy == 0 {
                    if self.ready_at_target(node) {
                        // Already at the target (upgraded by hand, or the target changed to its version).
                        self.update(
                            node,
                            None,
                            Some(mark.at(Step::Ready, now)),
                            vec![EventStep::Drained, EventStep::Ready],
                            Some((Step::Draining, in_step)),
                            format!("already at {}", node.engine_version),
                        );
                        return;
                    }
                    if node.is_manager() {
                        let problems = self.quorum_problems(node);
                        if !problems.is_empty() {
                            self.block(
                                BlockerKind::QuorumGuard,
                                Some(node),
                                format!(
                                    "not stopping manager {}: {} (every other manager must be Ready and Reachable)",
                                    node.hostname,
                                    problems.join(", ")
                                ),
                            );
                            return;
                        }
                    }
                    self.actions.push(Action::RunUpgrade {
                        node: NodeRef::of(node),
                        expect: seen_step(node),
                        mark: mark.at(Step::Upgrading, now),
                        events: vec![EventStep::Drained, EventStep::Upgrade],
                        finished: Some((Step::Draining, in_step)),
                        message: format!("drained; upgrading to {}", spec.version),
                    });
                } else if in_step > spec.strategy.drain_timeout.get() {
                    self.fail(
                        node,
                        mark,
                        format!(
                            "{busy} task(s) still on the node after drainTimeout {}",
                            spec.strategy.drain_timeout
                        ),
                        false,
                    );
                } else {
                    self.block(
                        BlockerKind::Waiting,
                        Some(node),
                        format!("draining: {busy} task(s) still on the node"),
                    );
                }
            }
            Step::Upgrading => {
                if self.input.running_commands.contains(&node.id) {
                    self.block(
                        BlockerKind::Waiting,
                        Some(node),
                        "upgrade command running".into(),
                    );
                } else if self.ready_at_target(node) {
                    // The command finished but the operator stopped before recording it.
                    self.update(
                        node,
                        None,
                        Some(mark.at(Step::Ready, now)),
                        vec![EventStep::Upgraded, EventStep::Ready],
                        Some((Step::Upgrading, in_step)),
                        format!("at {} and Ready", node.engine_version),
                    );
                } else if !node.is_healthy() && in_step < spec.upgrade.timeout.get() {
                    // The operator restarted mid-upgrade and the engine is away: the earlier
                    // run of the command is most likely still at work. Give it its time.
                    self.block(
                        BlockerKind::Waiting,
                        Some(node),
                        format!(
                            "engine {} after an operator restart mid-upgrade; waiting up to upgrade.timeout {} before running the command again",
                            node.state, spec.upgrade.timeout
                        ),
                    );
                } else {
                    // Nothing in this process runs it: the operator restarted mid-upgrade.
                    // The command is idempotent by contract, so it is run again.
                    let mut next = mark.at(Step::Upgrading, now);
                    next.target = spec.version.clone();
                    self.actions.push(Action::RunUpgrade {
                        node: NodeRef::of(node),
                        expect: seen_step(node),
                        mark: next,
                        events: vec![EventStep::Upgrade],
                        finished: None,
                        message: "running the upgrade command again (no run of it is under way in this process)".into(),
                    });
                }
            }
            Step::Upgraded | Step::Ready if retarget && !self.at_target(node) => {
                let mut next = mark.at(Step::Draining, now);
                next.target = spec.version.clone();
                self.update(
                    node,
                    None,
                    Some(next),
                    vec![],
                    None,
                    format!("target changed to {}; upgrading again", spec.version),
                );
            }
            Step::Upgraded => {
                if self.ready_at_target(node) {
                    if node.is_manager() {
                        self.update(
                            node,
                            None,
                            Some(mark.at(Step::Ready, now)),
                            vec![EventStep::Ready],
                            Some((Step::Upgraded, in_step)),
                            format!(
                                "Ready at {}; stays drained until every manager is upgraded",
                                node.engine_version
                            ),
                        );
                    } else {
                        self.reactivate(
                            node,
                            mark,
                            vec![EventStep::Ready],
                            Some((Step::Upgraded, in_step)),
                        );
                    }
                } else if in_step > spec.strategy.ready_timeout.get() {
                    self.fail(
                        node,
                        mark,
                        format!(
                            "not Ready at {} within readyTimeout {} (state {}, engine {})",
                            spec.version,
                            spec.strategy.ready_timeout,
                            node.state,
                            if node.engine_version.is_empty() {
                                "unknown"
                            } else {
                                &node.engine_version
                            }
                        ),
                        true,
                    );
                } else {
                    self.block(
                        BlockerKind::Waiting,
                        Some(node),
                        format!(
                            "waiting for Ready at {} (state {}, engine {})",
                            spec.version, node.state, node.engine_version
                        ),
                    );
                }
            }
            Step::Ready => {
                if node.is_manager() && !managers_all_at_target {
                    self.block(
                        BlockerKind::Waiting,
                        Some(node),
                        "upgraded; stays drained until every manager is at the target".into(),
                    );
                } else {
                    self.reactivate(node, mark, vec![], Some((Step::Ready, in_step)));
                }
            }
            Step::Settling => {
                if !self.input.health_failures.is_empty() {
                    // After a reactivation the gates must pass before the node is let go.
                    let why = format!(
                        "health gate failed after reactivating {}: {}",
                        node.hostname,
                        self.input.health_failures.join("; ")
                    );
                    if spec.health.resume_when_healthy {
                        self.block(BlockerKind::HealthGate, Some(node), why);
                    } else {
                        self.fail(node, mark, why, false);
                    }
                } else if in_step >= spec.strategy.settle.get() {
                    self.update(
                        node,
                        None,
                        None,
                        vec![],
                        Some((Step::Settling, in_step)),
                        "settled; operator labels removed".into(),
                    );
                } else {
                    self.block(
                        BlockerKind::Waiting,
                        Some(node),
                        format!(
                            "settling ({} of {})",
                            fmt_secs(in_step),
                            spec.strategy.settle
                        ),
                    );
                }
            }
            Step::Failed => {
                if mark.spec_hash.as_deref() != Some(self.input.spec_hash) {
                    // The spec was touched since the failure: hand the node back and plan afresh.
                    self.update(
                        node,
                        Some(mark.previous),
                        None,
                        vec![],
                        None,
                        format!(
                            "spec changed since the failure; {} returned to {} and retried in order",
                            node.hostname, mark.previous
                        ),
                    );
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
        }
    }

    fn reactivate(
        &mut self,
        node: &NodeView,
        mark: &Mark,
        mut events: Vec<EventStep>,
        finished: Option<(Step, Duration)>,
    ) {
        events.extend([EventStep::Reactivate, EventStep::Reactivated]);
        self.update(
            node,
            Some(mark.previous),
            Some(mark.at(Step::Settling, self.input.now)),
            events,
            finished,
            format!("back to {}", mark.previous),
        );
    }

    fn fail(&mut self, node: &NodeView, mark: &Mark, reason: String, rollback: bool) {
        let mut failed = mark.at(Step::Failed, self.input.now);
        failed.reason = Some(reason.clone());
        failed.spec_hash = Some(self.input.spec_hash.to_string());
        self.actions.push(Action::Fail(Failure {
            node: NodeRef::of(node),
            expect: seen_step(node),
            reason,
            rollback,
            mark: failed,
        }));
    }

    /// Starts a node's cycle: drain (or keep drained) and record what it was.
    fn start(&mut self, node: &NodeView) {
        let mark = self.new_mark(node, Step::Draining);
        self.update(
            node,
            Some(Availability::Drain),
            Some(mark),
            vec![EventStep::Drain],
            None,
            format!(
                "draining (was {}), {} -> {}",
                node.availability,
                node.engine_version,
                self.spec().version
            ),
        );
    }
}

fn seen_step(node: &NodeView) -> Option<Step> {
    node.mark().and_then(Result::ok).map(|m| m.step)
}

fn fmt_secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

pub fn plan(input: &PlanInput<'_>) -> Plan {
    let spec = input.spec;
    let mut p = Planner {
        input,
        actions: vec![],
        blockers: vec![],
        latch: None,
    };
    let order = rollout_order(&input.snapshot.nodes);

    let mut marks: BTreeMap<&str, Mark> = BTreeMap::new();
    let mut unreadable = false;
    for node in &order {
        match node.mark() {
            Some(Ok(mark)) => {
                marks.insert(&node.id, mark);
            }
            Some(Err(e)) => {
                unreadable = true;
                p.block(BlockerKind::UnreadableMark, Some(node), e.to_string());
            }
            None => {}
        }
    }

    // Commands address nodes by hostname: two nodes reporting one hostname (a node's
    // description briefly carrying another host's, seen on a real swarm) must not be acted on.
    let mut by_hostname: BTreeMap<&str, Vec<&NodeView>> = BTreeMap::new();
    for node in &order {
        by_hostname
            .entry(node.hostname.as_str())
            .or_default()
            .push(node);
    }
    let mut ambiguous = false;
    for (hostname, nodes) in &by_hostname {
        if nodes.len() > 1 {
            ambiguous = true;
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
    }

    let managers: Vec<&NodeView> = order.iter().copied().filter(|n| n.is_manager()).collect();
    let workers: Vec<&NodeView> = order.iter().copied().filter(|n| !n.is_manager()).collect();
    let selected = |n: &NodeView| selects(&spec.node_selector, n);

    // A manager is done when it is at the target and no longer held by the operator.
    let manager_pending = |n: &&NodeView| {
        let marked = marks.get(n.id.as_str());
        match marked {
            Some(m) => m.step != Step::Settling,
            None => selected(n) && !spec.is_target(&n.engine_version),
        }
    };
    // Every selected manager upgraded and Ready: the held managers may be reactivated together.
    let managers_all_at_target = managers.iter().all(|m| {
        let held = marks
            .get(m.id.as_str())
            .is_some_and(|mk| !matches!(mk.step, Step::Ready | Step::Settling));
        !selected(m) && !marks.contains_key(m.id.as_str())
            || (!held && spec.is_target(&m.engine_version))
    });

    // 1. Nodes already under way move on, whatever else holds the rollout: nothing is left half-done.
    for node in &order {
        if let Some(mark) = marks.get(node.id.as_str()) {
            p.advance(node, mark, managers_all_at_target);
        }
    }

    let failed = marks
        .values()
        .any(|m| m.step == Step::Failed && m.spec_hash.as_deref() == Some(input.spec_hash));

    // 2. Whether a new node may be started at all.
    let mut may_start = !unreadable && !failed && !ambiguous;
    let health_failing = !input.health_failures.is_empty();
    if health_failing {
        if spec.health.resume_when_healthy {
            may_start = false;
        } else {
            p.latch = Some(format!(
                "health gate failed before starting the node: {}",
                input.health_failures.join("; ")
            ));
        }
        p.block(
            BlockerKind::HealthGate,
            None,
            format!(
                "health gates fail: {}{}",
                input.health_failures.join("; "),
                if spec.health.resume_when_healthy {
                    " (resumes by itself when they pass: resumeWhenHealthy)"
                } else {
                    ""
                }
            ),
        );
    }
    if spec.strategy.paused {
        may_start = false;
        p.block(
            BlockerKind::PausedBySpec,
            None,
            "spec.strategy.paused is true: no new node is started".into(),
        );
    }
    if let Some(window) = &spec.window
        && !window.is_open(input.now)
    {
        may_start = false;
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

    let managers_pending: Vec<&NodeView> =
        managers.iter().copied().filter(manager_pending).collect();
    let phase;
    if !managers_pending.is_empty() {
        phase = Phase::Managers;
        let busy = managers.iter().any(|m| {
            marks.get(m.id.as_str()).is_some_and(|mk| {
                matches!(mk.step, Step::Draining | Step::Upgrading | Step::Upgraded)
            })
        });
        let unstarted: Vec<&NodeView> = managers_pending
            .iter()
            .copied()
            .filter(|m| !marks.contains_key(m.id.as_str()))
            .collect();
        if may_start
            && !busy
            && let Some(next) = unstarted.first()
        {
            start_if_safe(&mut p, next, true);
        }
    } else {
        // Managers are done (or there are none selected): workers, up to maxUnavailableWorkers.
        let busy = workers
            .iter()
            .filter(|w| {
                marks
                    .get(w.id.as_str())
                    .is_some_and(|mk| mk.step.holds_node() || mk.step == Step::Settling)
            })
            .count();
        let slots = (spec.strategy.max_unavailable_workers as usize).saturating_sub(busy);
        let managers_settling = managers.iter().any(|m| marks.contains_key(m.id.as_str()));
        if managers_settling {
            may_start = false;
        }
        let pending: Vec<&NodeView> = workers
            .iter()
            .copied()
            .filter(|w| {
                selected(w)
                    && !marks.contains_key(w.id.as_str())
                    && !spec.is_target(&w.engine_version)
            })
            .collect();
        let all_done = pending.is_empty() && marks.is_empty();
        phase = if all_done && !unreadable {
            Phase::Complete
        } else {
            Phase::Workers
        };
        if may_start {
            let mut started = 0;
            for w in pending {
                if started >= slots || p.actions.iter().any(|a| matches!(a, Action::Fail(_))) {
                    break;
                }
                if start_if_safe(&mut p, w, false) {
                    started += 1;
                }
            }
        }
    }

    let mut position = 0;
    let nodes = order
        .iter()
        .map(|n| {
            let at_target = spec.is_target(&n.engine_version);
            let step = marks.get(n.id.as_str()).map(|m| m.step);
            let in_plan = selected(n) && (!at_target || step.is_some());
            let order = in_plan.then(|| {
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
                selected: selected(n),
                step,
            }
        })
        .collect();

    Plan {
        complete: phase == Phase::Complete,
        actions: p.actions,
        blockers: p.blockers,
        nodes,
        phase,
        failed,
    }
}

/// Drains `node` unless a check forbids it now; says why not. Returns whether it started.
fn start_if_safe(p: &mut Planner<'_>, node: &NodeView, manager: bool) -> bool {
    if !node.is_healthy() {
        p.block(
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
    if manager {
        let problems = p.quorum_problems(node);
        if !problems.is_empty() {
            p.block(
                BlockerKind::QuorumGuard,
                Some(node),
                format!(
                    "not draining manager {}: {} (every other manager must be Ready and Reachable)",
                    node.hostname,
                    problems.join(", ")
                ),
            );
            return false;
        }
    }
    if let Some(reason) = p.input.drain_vetoes.get(&node.id) {
        p.block(BlockerKind::Vetoed, Some(node), reason.clone());
        return false;
    }
    if let Some(reason) = p.latch.take() {
        // Recorded on this node without draining it; `slots` ends here for this pass.
        let mark = p.new_mark(node, Step::Failed);
        p.fail(node, &mark, reason, false);
        return true;
    }
    p.start(node);
    true
}

#[cfg(test)]
mod tests;
