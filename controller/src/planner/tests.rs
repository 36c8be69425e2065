//! The planner's rules, case by case, and whole rollouts driven through a model world that
//! checks the ordering invariants after every step.

use std::collections::{BTreeMap, BTreeSet};

use bollard::models::TaskState;
use jiff::{SignedDuration, Timestamp};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng};

use super::*;
use crate::cluster::{Availability, NodeView, Role, Snapshot, State, TaskView};
use crate::events::Event;
use crate::health::gates::{Gate, GateFailure};
use crate::marks::{self, Mark, Step};
use crate::rollout_check::{Fleet, check_order};
use crate::spec::{EngineUpgradeSpec, NodeSelector, SpecDuration, Strategy, UpgradeSpec};
use crate::vocab::CommandOutcome;

fn gate_failure(gate: Gate, message: &str) -> GateFailure {
    GateFailure {
        gate,
        message: message.into(),
    }
}

const OLD: &str = "20.10.24+dfsg1";
const NEW: &str = "26.1.5";

fn spec() -> EngineUpgradeSpec {
    EngineUpgradeSpec {
        version: NEW.into(),
        upgrade: UpgradeSpec {
            command: vec!["/bin/true".into()],
            rollback: Some(vec!["/bin/true".into()]),
            timeout: SpecDuration::from_secs(60),
            unlock_key: None,
        },
        strategy: Strategy {
            settle: SpecDuration::from_secs(5),
            ..Strategy::default()
        },
        node_selector: NodeSelector::default(),
        window: None,
        health: Default::default(),
        notify: Default::default(),
    }
}

fn node(id: &str, role: Role) -> NodeView {
    NodeView {
        id: id.into(),
        hostname: id.into(),
        role,
        leader: false,
        availability: Availability::Active,
        state: State::Ready,
        reachable: role == Role::Manager,
        engine_version: OLD.into(),
        addr: format!("10.0.0.{}", id.len()),
        labels: BTreeMap::new(),
        version_index: 10,
        locked: false,
        runs_manager: Some(role == Role::Manager),
    }
}

/// m1 (leader), m2, m3, w1, w2.
fn cluster() -> Vec<NodeView> {
    let mut nodes = vec![
        node("m1", Role::Manager),
        node("m2", Role::Manager),
        node("m3", Role::Manager),
        node("w1", Role::Worker),
        node("w2", Role::Worker),
    ];
    nodes[0].leader = true;
    nodes
}

fn t0() -> Timestamp {
    "2026-11-25T10:00:00Z".parse().unwrap()
}

fn at(secs: i64) -> Timestamp {
    t0() + SignedDuration::from_secs(secs)
}

fn mark(node: &mut NodeView, step: Step, since: Timestamp) {
    let m = Mark {
        step,
        previous: node.availability,
        target: NEW.into(),
        from_version: OLD.into(),
        since,
        reason: None,
        spec_hash: None,
        demoted: false,
    };
    if step != Step::Settling {
        node.availability = Availability::Drain;
    }
    m.write_to(&mut node.labels);
}

/// m3, the manager after m2, drained ahead while m2 is upgraded (its tasks gone).
fn drained_ahead(nodes: &mut [NodeView]) {
    mark(&mut nodes[2], Step::Draining, t0());
}

struct Case {
    spec: EngineUpgradeSpec,
    snapshot: Snapshot,
    running: BTreeSet<String>,
    ended: BTreeMap<String, CommandEnded>,
    vetoes: BTreeMap<String, String>,
    health: Vec<GateFailure>,
    lingering: BTreeMap<String, usize>,
    ssh_failures: BTreeMap<String, String>,
    workload: preflight::Workload,
    now: Timestamp,
}

impl Case {
    fn new(nodes: Vec<NodeView>) -> Self {
        Self {
            spec: spec(),
            snapshot: Snapshot {
                nodes,
                ..Snapshot::default()
            },
            running: BTreeSet::new(),
            ended: BTreeMap::new(),
            vetoes: BTreeMap::new(),
            health: vec![],
            lingering: BTreeMap::new(),
            ssh_failures: BTreeMap::new(),
            workload: Default::default(),
            now: t0(),
        }
    }

    fn plan(&self) -> Plan {
        // A node in the set to drain with a veto makes the set unsafe.
        let vetoes = &self.vetoes;
        let check = |draining: &[&str]| draining.iter().find_map(|id| vetoes.get(*id).cloned());
        plan(&PlanInput {
            spec: &self.spec,
            spec_hash: "h1",
            snapshot: &self.snapshot,
            running_commands: &self.running,
            ended_commands: &self.ended,
            drain_check: &check,
            health_failures: &self.health,
            lingering_endpoints: &self.lingering,
            ssh_failures: &self.ssh_failures,
            workload: &self.workload,
            now: self.now,
        })
    }
}

/// The one action on `node`; the others (a manager drained ahead) act on other nodes.
fn only_action_on<'a>(plan: &'a Plan, node: &str) -> &'a Action {
    let on: Vec<&Action> = plan
        .actions
        .iter()
        .filter(|a| a.node().id == node)
        .collect();
    assert_eq!(on.len(), 1, "actions: {:#?}", plan.actions);
    on[0]
}

fn only_action(plan: &Plan) -> &Action {
    assert_eq!(plan.actions.len(), 1, "actions: {:#?}", plan.actions);
    &plan.actions[0]
}

fn drained_node(action: &Action) -> Option<&str> {
    match action {
        Action::Start(u) if u.availability == Some(Availability::Drain) => Some(&u.node.hostname),
        _ => None,
    }
}

#[test]
fn starts_with_a_non_leader_manager() {
    let plan = Case::new(cluster()).plan();
    let action = only_action(&plan);
    assert_eq!(drained_node(action), Some("m2"));
    let Action::Start(u) = action else {
        unreachable!()
    };
    let m = u.mark.as_ref().unwrap();
    assert_eq!(m.step, Step::Draining);
    assert_eq!(m.previous, Availability::Active);
    assert_eq!(m.target, NEW);
    assert_eq!(u.event_steps(), vec![EventStep::Drain]);
    assert_eq!(plan.phase, Phase::Managers);
}

#[test]
fn the_leader_goes_last_among_managers() {
    let mut nodes = cluster();
    nodes[1].engine_version = NEW.into();
    nodes[2].engine_version = NEW.into();
    let plan = Case::new(nodes).plan();
    assert_eq!(drained_node(only_action(&plan)), Some("m1"));
}

#[test]
fn waits_for_tasks_to_leave_a_draining_node() {
    let mut nodes = cluster();
    mark(&mut nodes[1], Step::Draining, t0());
    let mut case = Case::new(nodes);
    case.snapshot.add_task(&TaskView {
        id: "t1".into(),
        node_id: Some("m2".into()),
        service_id: "s".into(),
        state: TaskState::RUNNING,
        desired_state: TaskState::SHUTDOWN,
    });
    case.now = at(10);
    let plan = case.plan();
    assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
    assert!(plan.blockers.iter().any(|b| b.kind == BlockerKind::Waiting));

    case.snapshot.occupied.clear();
    let plan = case.plan();
    match only_action(&plan) {
        Action::Run {
            command: CommandKind::Upgrade,
            update,
        } => {
            assert_eq!(update.node.hostname, "m2");
            assert_eq!(update.mark.as_ref().unwrap().step, Step::Upgrading);
            assert_eq!(
                update.event_steps(),
                vec![EventStep::Drained, EventStep::Upgrade]
            );
            assert_eq!(update.finished.unwrap().0, Step::Draining);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn drain_timeout_fails_without_rollback_and_restores() {
    let mut nodes = cluster();
    mark(&mut nodes[1], Step::Draining, t0());
    let mut case = Case::new(nodes);
    case.snapshot.add_task(&TaskView {
        id: "t1".into(),
        node_id: Some("m2".into()),
        service_id: "s".into(),
        state: TaskState::RUNNING,
        desired_state: TaskState::SHUTDOWN,
    });
    case.now = at(301);
    match only_action(&case.plan()) {
        // No rollback: the engine never stopped, so the node gets its availability back.
        Action::Update(u) => {
            let m = u.mark.as_ref().unwrap();
            let reason = m.reason.as_deref().unwrap();
            assert!(reason.contains("drainTimeout"), "{reason}");
            assert_eq!(m.step, Step::Failed);
            assert_eq!(m.previous, Availability::Active);
            assert_eq!(u.availability, Some(Availability::Active));
            assert_eq!(u.event_steps(), vec![EventStep::Failed, EventStep::Paused]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn quorum_guard_holds_a_manager_while_another_is_not_reachable() {
    let mut nodes = cluster();
    nodes[2].state = State::Unknown; // m3 right after a leader change
    // Before the first drain the pre-flight check refuses.
    let plan = Case::new(nodes.clone()).plan();
    assert!(plan.actions.is_empty());
    assert!(
        plan.blockers.iter().any(
            |b| b.kind == BlockerKind::Preflight && b.message.contains("manager m3 is unknown")
        ),
        "{:#?}",
        plan.blockers
    );

    // Under way, the quorum guard holds the next manager.
    let mut under_way = nodes.clone();
    mark(&mut under_way[3], Step::Settling, t0());
    let plan = Case::new(under_way).plan();
    assert!(
        plan.actions.iter().all(|a| a.node().id == "w1"),
        "{:#?}",
        plan.actions
    );
    assert!(
        plan.blockers
            .iter()
            .any(|b| b.kind == BlockerKind::QuorumGuard && b.message.contains("m3 is unknown")),
        "{:#?}",
        plan.blockers
    );

    // Same guard before the engine is stopped, for a manager already drained.
    mark(&mut nodes[1], Step::Draining, t0());
    let plan = Case::new(nodes).plan();
    assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
    assert!(
        plan.blockers
            .iter()
            .any(|b| b.kind == BlockerKind::QuorumGuard)
    );
}

#[test]
fn an_upgraded_manager_stays_drained_until_all_managers_are_at_target() {
    let mut nodes = cluster();
    nodes[1].engine_version = "26.1.5+dfsg1".into();
    mark(&mut nodes[1], Step::Upgraded, t0());
    drained_ahead(&mut nodes);
    let mut case = Case::new(nodes);
    case.now = at(3);
    let plan = case.plan();
    let Action::Update(u) = only_action(&plan) else {
        panic!()
    };
    assert_eq!(u.node.hostname, "m2");
    assert_eq!(u.availability, None, "stays drained");
    assert_eq!(u.mark.as_ref().unwrap().step, Step::Ready);
    assert_eq!(u.event_steps(), vec![EventStep::Ready]);

    // Once at Ready, m3 (drained ahead) is upgraded; m2 is not reactivated.
    mark(&mut case.snapshot.nodes[1], Step::Ready, at(3));
    case.snapshot.nodes[1].availability = Availability::Drain;
    let plan = case.plan();
    assert!(
        matches!(only_action(&plan), Action::Run { command: CommandKind::Upgrade, update } if update.node.hostname == "m3")
    );
    // Then, m3 upgrading, m1 (the leader) is drained ahead.
    mark(&mut case.snapshot.nodes[2], Step::Upgrading, at(3));
    case.running.insert("m3".into());
    assert_eq!(drained_node(only_action(&case.plan())), Some("m1"));
}

#[test]
fn all_managers_are_reactivated_together_then_workers_start() {
    let mut nodes = cluster();
    for n in nodes.iter_mut().take(3) {
        n.engine_version = NEW.into();
        mark(n, Step::Ready, t0());
    }
    let mut case = Case::new(nodes);
    let plan = case.plan();
    assert_eq!(plan.actions.len(), 3, "{:#?}", plan.actions);
    for a in &plan.actions {
        let Action::Update(u) = a else { panic!() };
        assert_eq!(u.availability, Some(Availability::Active));
        assert_eq!(u.mark.as_ref().unwrap().step, Step::Settling);
        assert_eq!(
            u.event_steps(),
            vec![EventStep::Reactivate, EventStep::Reactivated]
        );
    }
    // While managers settle no worker starts; after settle, labels go and w1 starts.
    for n in case.snapshot.nodes.iter_mut().take(3) {
        n.availability = Availability::Active;
        mark(n, Step::Settling, t0());
    }
    case.now = at(2);
    let plan = case.plan();
    assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
    // Settled: in the same pass the labels go and w1 starts (no pass in between).
    case.now = at(6);
    let plan = case.plan();
    assert_eq!(plan.actions.len(), 4, "{:#?}", plan.actions);
    assert!(
        plan.actions[..3]
            .iter()
            .all(|a| matches!(a, Action::Update(u) if u.mark.is_none()))
    );
    assert_eq!(drained_node(&plan.actions[3]), Some("w1"));
    for n in case.snapshot.nodes.iter_mut().take(3) {
        marks::clear(&mut n.labels);
    }
    let plan = case.plan();
    assert_eq!(plan.phase, Phase::Workers);
    assert_eq!(drained_node(only_action(&plan)), Some("w1"));
}

#[test]
fn no_worker_is_touched_while_a_manager_is_not_at_target() {
    let mut nodes = cluster();
    nodes[0].engine_version = NEW.into();
    nodes[1].engine_version = NEW.into();
    nodes[2].state = State::Down; // m3 old and down: the manager phase cannot finish
    let plan = Case::new(nodes).plan();
    assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
    assert_eq!(plan.phase, Phase::Managers);
    assert!(
        plan.blockers
            .iter()
            .any(|b| b.kind == BlockerKind::NodeDown)
    );
}

#[test]
fn workers_go_up_to_max_unavailable() {
    let mut nodes = cluster();
    for n in nodes.iter_mut().take(3) {
        n.engine_version = NEW.into();
    }
    for i in 3..6 {
        nodes.push(node(&format!("w{i}"), Role::Worker));
    }
    let mut case = Case::new(nodes);
    case.spec.strategy.max_unavailable_workers = 2;
    let plan = case.plan();
    let drained: Vec<_> = plan.actions.iter().filter_map(drained_node).collect();
    assert_eq!(drained, vec!["w1", "w2"]);

    // One slot taken by a settling worker: one more starts.
    mark(&mut case.snapshot.nodes[3], Step::Settling, t0());
    case.snapshot.nodes[3].engine_version = NEW.into();
    case.now = at(1);
    let plan = case.plan();
    let drained: Vec<_> = plan.actions.iter().filter_map(drained_node).collect();
    assert_eq!(drained, vec!["w2"]);
}

#[test]
fn an_admin_paused_worker_is_drained_and_returned_to_pause() {
    let mut nodes = cluster();
    for n in nodes.iter_mut().take(3) {
        n.engine_version = NEW.into();
    }
    nodes[3].availability = Availability::Pause;
    let mut case = Case::new(nodes);
    let Action::Start(u) = only_action(&case.plan()).clone() else {
        panic!()
    };
    assert_eq!(u.node.hostname, "w1");
    assert_eq!(u.mark.as_ref().unwrap().previous, Availability::Pause);

    // Later: upgraded and Ready -> back to pause, not active.
    let w1 = &mut case.snapshot.nodes[3];
    u.mark
        .unwrap()
        .at(Step::Upgraded, t0())
        .write_to(&mut w1.labels);
    w1.availability = Availability::Drain;
    w1.engine_version = NEW.into();
    let Action::Update(u) = only_action(&case.plan()).clone() else {
        panic!()
    };
    assert_eq!(u.availability, Some(Availability::Pause));
    assert_eq!(
        u.event_steps(),
        vec![
            EventStep::Ready,
            EventStep::Reactivate,
            EventStep::Reactivated
        ]
    );
}

#[test]
fn an_admin_drained_node_stays_drained() {
    let mut nodes = cluster();
    nodes[1].availability = Availability::Drain;
    mark(&mut nodes[1], Step::Ready, t0());
    nodes[1].engine_version = NEW.into();
    nodes[0].engine_version = NEW.into();
    nodes[2].engine_version = NEW.into();
    let plan = Case::new(nodes).plan();
    let Action::Update(u) = only_action(&plan) else {
        panic!()
    };
    assert_eq!(u.availability, Some(Availability::Drain));
}

#[test]
fn ready_timeout_fails_with_rollback_and_says_what_was_seen() {
    let mut nodes = cluster();
    nodes[1].engine_version = "20.10.24".into();
    mark(&mut nodes[1], Step::Upgraded, t0());
    drained_ahead(&mut nodes);
    let mut case = Case::new(nodes);
    case.now = at(299);
    assert!(case.plan().actions.is_empty());
    case.now = at(301);
    match only_action(&case.plan()) {
        // The engine may be half-upgraded: the spec's rollback runs first.
        Action::Run {
            command: CommandKind::Rollback,
            update,
        } => {
            let m = update.mark.as_ref().unwrap();
            let reason = m.reason.as_deref().unwrap();
            assert_eq!(m.step, Step::RollingBack);
            assert!(reason.contains("readyTimeout"), "{reason}");
            assert!(reason.contains("engine 20.10.24"), "{reason}");
            assert_eq!(m.spec_hash.as_deref(), Some("h1"));
            assert_eq!(
                update.availability, None,
                "stays drained while rolling back"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_failed_node_pauses_the_rollout_until_the_spec_changes() {
    let mut nodes = cluster();
    mark(&mut nodes[1], Step::Failed, t0());
    nodes[1].availability = Availability::Active;
    nodes[1].labels.insert(marks::SPEC_HASH.into(), "h1".into());
    nodes[1].labels.insert(
        marks::REASON.into(),
        "upgrade command exited with status 1".into(),
    );
    let mut case = Case::new(nodes);
    let plan = case.plan();
    assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
    assert!(plan.failed && plan.is_paused());
    assert!(
        plan.blockers
            .iter()
            .any(|b| b.kind == BlockerKind::PausedByFailure
                && b.message.contains("exited with status 1"))
    );

    // A touched spec (other hash) hands the node back: previous availability, labels removed.
    case.snapshot.nodes[1]
        .labels
        .insert(marks::SPEC_HASH.into(), "h0".into());
    let plan = case.plan();
    let Action::Update(u) = &plan.actions[0] else {
        panic!()
    };
    assert_eq!(u.node.hostname, "m2");
    assert_eq!(u.mark, None);
    assert_eq!(u.availability, Some(Availability::Active));
}

#[test]
fn paused_spec_starts_nothing_new_but_finishes_what_is_under_way() {
    let mut nodes = cluster();
    nodes[1].engine_version = NEW.into();
    mark(&mut nodes[1], Step::Upgraded, t0());
    let mut case = Case::new(nodes);
    case.spec.strategy.paused = true;
    let plan = case.plan();
    let Action::Update(u) = only_action(&plan) else {
        panic!()
    };
    assert_eq!(u.mark.as_ref().unwrap().step, Step::Ready);
    assert!(plan.is_paused());

    let plan = Case {
        spec: case.spec.clone(),
        ..Case::new(cluster())
    }
    .plan();
    assert!(plan.actions.is_empty());
    assert!(
        plan.blockers
            .iter()
            .any(|b| b.kind == BlockerKind::PausedBySpec)
    );
}

#[test]
fn restart_mid_upgrade_reruns_the_command_or_records_success() {
    let mut nodes = cluster();
    mark(&mut nodes[1], Step::Upgrading, t0());
    drained_ahead(&mut nodes);
    nodes[1].state = State::Down;
    let mut case = Case::new(nodes);
    // Engine away after a restart: the earlier run is probably still at work; wait for it.
    case.now = at(20);
    let plan = case.plan();
    assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
    assert!(
        plan.blockers
            .iter()
            .any(|b| b.message.contains("upgrade.timeout"))
    );
    // Past upgrade.timeout (60s) it is run again.
    case.now = at(61);
    match only_action(&case.plan()) {
        Action::Run {
            command: CommandKind::Upgrade,
            update,
        } => {
            assert_eq!(update.node.hostname, "m2");
            assert_eq!(update.mark.as_ref().unwrap().since, at(61));
        }
        other => panic!("{other:?}"),
    }
    // Back Ready at the old version: the earlier run did nothing; run it again at once.
    case.now = at(21);
    case.snapshot.nodes[1].state = State::Ready;
    case.snapshot.nodes[1].reachable = true;
    assert!(matches!(
        only_action(&case.plan()),
        Action::Run {
            command: CommandKind::Upgrade,
            ..
        }
    ));
    case.snapshot.nodes[1].state = State::Down;
    // The same node, with its command running in this process: wait.
    case.running.insert("m2".into());
    assert!(case.plan().actions.is_empty());
    // Not running, and already Ready at the target: record it.
    case.running.clear();
    case.snapshot.nodes[1].state = State::Ready;
    case.snapshot.nodes[1].engine_version = "26.1.5+dfsg1".into();
    let Action::Update(u) = only_action(&case.plan()).clone() else {
        panic!()
    };
    assert_eq!(u.mark.as_ref().unwrap().step, Step::Ready);
    assert_eq!(u.event_steps(), vec![EventStep::Upgraded, EventStep::Ready]);
}

#[test]
fn a_new_target_mid_rollout_replans_from_the_cluster() {
    let mut nodes = cluster();
    nodes[1].engine_version = NEW.into();
    mark(&mut nodes[1], Step::Ready, t0());
    let mut case = Case::new(nodes);
    case.spec.version = "27.0.1".into();
    let plan = case.plan();
    let Action::Update(u) = &plan.actions[0] else {
        panic!("{:#?}", plan.actions)
    };
    let m = u.mark.as_ref().unwrap();
    assert_eq!((m.step, m.target.as_str()), (Step::Draining, "27.0.1"));
    assert_eq!(u.availability, None);

    // Nodes already at the new target are skipped.
    let mut nodes = cluster();
    nodes[1].engine_version = "27.0.1".into();
    let mut case = Case::new(nodes);
    case.spec.version = "27.0.1".into();
    assert_eq!(drained_node(only_action(&case.plan())), Some("m3"));
}

#[test]
fn selector_limits_which_nodes_start() {
    let mut case = Case::new(cluster());
    for n in case.snapshot.nodes.iter_mut().take(3) {
        n.engine_version = NEW.into();
    }
    case.spec.node_selector.hostnames = vec!["w2".into()];
    assert_eq!(drained_node(only_action(&case.plan())), Some("w2"));
    case.spec.node_selector = NodeSelector {
        labels: BTreeMap::from([("tier".to_string(), "edge".to_string())]),
        hostnames: vec![],
    };
    let plan = case.plan();
    assert!(plan.actions.is_empty());
    assert!(plan.complete, "nothing selected is left");
}

#[test]
fn a_vetoed_node_is_not_drained() {
    let mut case = Case::new(cluster());
    case.vetoes.insert(
        "m2".into(),
        "network tnet would run out of addresses".into(),
    );
    let plan = case.plan();
    assert!(plan.actions.is_empty());
    assert!(
        plan.blockers
            .iter()
            .any(|b| b.kind == BlockerKind::Vetoed && b.message.contains("tnet"))
    );
}

#[test]
fn unreadable_marks_stop_new_starts_and_are_reported() {
    let mut nodes = cluster();
    nodes[3]
        .labels
        .insert(marks::STEP.into(), "draining".into());
    let plan = Case::new(nodes).plan();
    assert!(plan.actions.is_empty());
    assert!(
        plan.blockers
            .iter()
            .any(|b| b.kind == BlockerKind::UnreadableMark && b.node.as_deref() == Some("w1"))
    );
    assert!(!plan.complete);
}

#[test]
fn outside_the_window_nothing_new_starts() {
    let mut case = Case::new(cluster());
    case.spec.window = Some(crate::spec::Window {
        days: vec![crate::spec::Weekday::Sun],
        start: "01:00".into(),
        end: "02:00".into(),
        timezone: "UTC".into(),
    });
    // 2026-11-25 is a Wednesday.
    let plan = case.plan();
    assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
    assert!(
        plan.blockers
            .iter()
            .any(|b| b.kind == BlockerKind::OutsideWindow)
    );
}

#[test]
fn complete_when_all_at_target_and_no_labels_left() {
    let mut nodes = cluster();
    for n in nodes.iter_mut() {
        n.engine_version = "26.1.5+dfsg1".into();
    }
    let plan = Case::new(nodes).plan();
    assert!(plan.complete && plan.actions.is_empty());
    assert_eq!(plan.phase, Phase::Complete);
    assert!(plan.nodes.iter().all(|n| n.order.is_none() && n.at_target));
}

#[test]
fn not_complete_while_a_node_at_the_target_is_not_ready() {
    let mut nodes = cluster();
    for n in nodes.iter_mut() {
        n.engine_version = NEW.into();
    }
    // a new leader reports nodes unknown for a while: waited for, not a problem
    nodes[3].state = State::Unknown;
    let plan = Case::new(nodes.clone()).plan();
    assert!(!plan.complete && plan.actions.is_empty(), "{plan:#?}");
    let b = &plan.blockers[0];
    assert_eq!(
        (b.kind, b.node.as_deref()),
        (BlockerKind::Waiting, Some("w1"))
    );
    assert!(
        b.message.contains("w1 is at the target but unknown"),
        "{}",
        b.message
    );
    // a node down is a problem the status names
    nodes[3].state = State::Down;
    let plan = Case::new(nodes.clone()).plan();
    assert!(!plan.complete);
    assert_eq!(plan.blockers[0].kind, BlockerKind::NodeDown);
    // back: complete
    nodes[3].state = State::Ready;
    assert!(Case::new(nodes).plan().complete);
}

// ---------------------------------------------------------------------------------------------
// Whole rollouts through a model world.

/// A small deterministic model of a swarm that carries out the planner's actions.
struct World {
    nodes: Vec<NodeView>,
    original: BTreeMap<String, Availability>,
    /// Roles before the rollout: a manager demoted for a leader handover is still a manager
    /// of the rollout's order.
    roles: BTreeMap<String, Role>,
    /// Running tasks per node; draining takes one tick to empty a node.
    tasks: BTreeMap<String, usize>,
    /// Nodes whose upgrade or rollback command is under way: which, under the mark of when,
    /// and ticks left until the engine is back.
    upgrading: BTreeMap<String, (CommandKind, Timestamp, u32)>,
    /// Commands that ended, until the planner has acted on them (as the executor keeps them).
    ended: BTreeMap<String, CommandEnded>,
    fail_upgrade: BTreeSet<String>,
    now: Timestamp,
    spec: EngineUpgradeSpec,
    history: Vec<String>,
    /// The events the planner's updates stand for, as the operator would write them.
    events: Vec<Event>,
    /// Printed by every failed check, to replay the run.
    seed: u64,
    rng: StdRng,
}

impl World {
    fn new(nodes: Vec<NodeView>, spec: EngineUpgradeSpec, seed: u64) -> Self {
        let original = nodes
            .iter()
            .map(|n| (n.id.clone(), n.availability))
            .collect();
        let tasks = nodes.iter().map(|n| (n.id.clone(), 2)).collect();
        let roles = nodes.iter().map(|n| (n.id.clone(), n.role)).collect();
        Self {
            nodes,
            original,
            roles,
            tasks,
            upgrading: BTreeMap::new(),
            ended: BTreeMap::new(),
            fail_upgrade: BTreeSet::new(),
            now: t0(),
            spec,
            history: vec![],
            events: vec![],
            seed,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    fn roll(&mut self, n: u64) -> u64 {
        self.rng.random_range(0..n)
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            nodes: self.nodes.clone(),
            occupied: self
                .tasks
                .iter()
                .filter(|(_, count)| **count > 0)
                .map(|(node, count)| (node.clone(), *count))
                .collect(),
            ..Snapshot::default()
        }
    }

    fn node_mut(&mut self, id: &str) -> &mut NodeView {
        self.nodes.iter_mut().find(|n| n.id == id).unwrap()
    }

    fn step(&mut self) -> Plan {
        let snapshot = self.snapshot();
        let running: BTreeSet<String> = self.upgrading.keys().cloned().collect();
        let plan = plan(&PlanInput {
            spec: &self.spec,
            spec_hash: "h1",
            snapshot: &snapshot,
            running_commands: &running,
            ended_commands: &self.ended,
            drain_check: &|_: &[&str]| None,
            health_failures: &[],
            lingering_endpoints: &BTreeMap::new(),
            ssh_failures: &BTreeMap::new(),
            workload: &Default::default(),
            now: self.now,
        });
        for action in plan.actions.clone() {
            self.check_before(&action);
            let u = action.update();
            if let Some(role) = u.role {
                self.set_role(&u.node.id, role);
            }
            let node = self.node_mut(&u.node.id);
            if let Some(a) = u.availability {
                node.availability = a;
            }
            match &u.mark {
                Some(m) => m.write_to(&mut node.labels),
                None => marks::clear(&mut node.labels),
            }
            node.version_index += 1;
            for e in &u.events {
                self.history.push(format!("{} {}", u.node.hostname, e.step));
                let (from, to) = (OLD, self.spec.version.as_str());
                let event = Event::node(self.now, e.step, &u.node, from, to, &e.message);
                self.events.push(event);
            }
            if self
                .ended
                .get(&u.node.id)
                .is_some_and(|e| Some(e.command.step()) == u.expect)
            {
                self.ended.remove(&u.node.id);
            }
            if let Action::Run { command, update } = &action {
                let ticks = 1 + self.roll(3) as u32;
                let since = update.mark.as_ref().unwrap().since;
                self.ended.remove(&update.node.id);
                self.upgrading
                    .insert(update.node.id.clone(), (*command, since, ticks));
            }
        }
        self.tick();
        self.check_invariants();
        plan
    }

    /// A demotion hands leadership to another Ready manager at once (swarmkit's
    /// TransferLeadership); the demoted node's engine stops its manager a tick later. A
    /// promoted node is reachable once its engine is Ready.
    fn set_role(&mut self, id: &str, role: Role) {
        let n = self.node_mut(id);
        n.role = role;
        n.reachable = role == Role::Manager && n.state == State::Ready;
        if role == Role::Manager {
            n.runs_manager = Some(n.state == State::Ready);
        }
        if role == Role::Worker && std::mem::take(&mut n.leader) {
            let next = self
                .nodes
                .iter_mut()
                .find(|m| m.is_manager() && m.state == State::Ready);
            next.expect("a Ready manager takes over").leader = true;
        }
    }

    /// A manager before the rollout (demoted or not now).
    fn was_manager(&self, node: &NodeView) -> bool {
        self.roles[&node.id] == Role::Manager
    }

    /// The world moves on: drained nodes empty, engines come back, time passes.
    fn tick(&mut self) {
        let advance = 1 + self.roll(3) as i64;
        self.now += SignedDuration::from_secs(advance);
        let ids: Vec<String> = self.nodes.iter().map(|n| n.id.clone()).collect();
        for id in ids {
            let n = self.node_mut(&id);
            if n.role == Role::Worker && n.runs_manager == Some(true) {
                n.runs_manager = Some(false);
            }
            let availability = n.availability;
            let stopping = match availability {
                Availability::Drain => 1 + self.roll(2) as usize,
                _ => 0,
            };
            let count = self.tasks.get_mut(&id).unwrap();
            if availability == Availability::Drain {
                *count = count.saturating_sub(stopping);
            } else if availability == Availability::Active {
                *count = 2;
            }
            if let Some((command, started, left)) = self.upgrading.get_mut(&id) {
                *left = left.saturating_sub(1);
                let (command, started, done) = (*command, *started, *left == 0);
                let failing = command == CommandKind::Upgrade && self.fail_upgrade.contains(&id);
                let target = self.spec.version.clone();
                let n = self.node_mut(&id);
                n.state = State::Down;
                n.reachable = false;
                n.runs_manager = None;
                if done {
                    self.upgrading.remove(&id);
                    let n = self.node_mut(&id);
                    let outcome = if failing {
                        CommandOutcome::Failed("exit 1".into())
                    } else {
                        if command == CommandKind::Upgrade {
                            n.engine_version = format!("{target}+dfsg1");
                        }
                        CommandOutcome::Succeeded
                    };
                    n.state = State::Ready;
                    n.reachable = n.role == Role::Manager;
                    n.runs_manager = Some(n.role == Role::Manager);
                    let ended = CommandEnded {
                        command,
                        started,
                        outcome,
                    };
                    self.ended.insert(id.clone(), ended);
                }
            }
        }
        // Leadership moves off a manager whose engine is down.
        if self
            .nodes
            .iter()
            .any(|n| n.leader && n.state != State::Ready)
            && let Some(new) = self
                .nodes
                .iter()
                .position(|n| n.is_manager() && n.state == State::Ready)
        {
            for n in &mut self.nodes {
                n.leader = false;
            }
            self.nodes[new].leader = true;
        }
    }

    fn check_before(&self, action: &Action) {
        let id = &action.node().id;
        let node = self.nodes.iter().find(|n| &n.id == id).unwrap();
        let managers_done = self
            .nodes
            .iter()
            .filter(|n| self.was_manager(n))
            .all(|m| self.spec.is_target(&m.engine_version));
        if !self.was_manager(node) {
            assert!(
                managers_done,
                "seed {}: worker {} touched before every manager is upgraded: {:#?}",
                self.seed, node.hostname, self.history
            );
        }
        if let Action::Update(u) = action
            && self.was_manager(node)
            && u.event_steps().contains(&EventStep::Reactivate)
        {
            assert!(
                managers_done,
                "seed {}: manager {} reactivated before every manager is upgraded: {:#?}",
                self.seed, node.hostname, self.history
            );
        }
        if let Action::Run { .. } = action {
            assert!(
                node.role == Role::Manager || node.runs_manager != Some(true),
                "seed {}: {} stopped while its demoted manager still runs (its raft data kept)",
                self.seed,
                node.hostname
            );
        }
        if let Action::Run {
            command: CommandKind::Upgrade,
            ..
        } = action
            && self.was_manager(node)
        {
            let others_ok = self
                .nodes
                .iter()
                .filter(|m| m.is_manager() && m.id != node.id)
                .all(|m| m.is_healthy());
            let seed = self.seed;
            assert!(
                others_ok,
                "seed {seed}: quorum guard broken for {}",
                node.hostname
            );
            let other_in_hand = self.nodes.iter().any(|m| {
                self.was_manager(m)
                    && m.id != node.id
                    && m.mark()
                        .and_then(Result::ok)
                        .is_some_and(|mk| mk.step.engine_in_hand())
            });
            assert!(
                !other_in_hand,
                "seed {seed}: two manager upgrades at once: {}",
                node.hostname
            );
        }
    }

    fn check_invariants(&self) {
        let held = |n: &&NodeView| {
            n.mark().and_then(Result::ok).is_some_and(|m| {
                matches!(
                    m.step,
                    Step::Draining | Step::Upgrading | Step::Upgraded | Step::RollingBack
                )
            })
        };
        let manager_steps: Vec<Step> = self
            .nodes
            .iter()
            .filter(|n| self.was_manager(n))
            .filter(held)
            .filter_map(|n| n.mark().and_then(Result::ok).map(|m| m.step))
            .collect();
        // One manager's engine at a time; at most one more drained ahead of it.
        let in_hand = manager_steps.iter().filter(|s| s.engine_in_hand()).count();
        let draining = manager_steps.len() - in_hand;
        assert!(
            in_hand <= 1 && draining <= 1,
            "seed {}: two managers at once: {manager_steps:?} {:#?}",
            self.seed,
            self.history
        );
        let workers_out = self
            .nodes
            .iter()
            .filter(|n| !self.was_manager(n))
            .filter(|n| {
                n.mark()
                    .and_then(Result::ok)
                    .is_some_and(|m| m.step.holds_node() || m.step == Step::Settling)
            })
            .count();
        assert!(
            workers_out <= self.spec.strategy.max_unavailable_workers as usize,
            "seed {}: too many workers out: {:#?}",
            self.seed,
            self.history
        );
    }

    fn run(&mut self, max_steps: usize) -> Plan {
        for _ in 0..max_steps {
            let plan = self.step();
            if plan.complete || plan.failed {
                return plan;
            }
        }
        panic!(
            "seed {}: no end after {max_steps} steps: {:#?}",
            self.seed, self.history
        );
    }

    /// Checks the whole rollout's events (with the `completed` the operator writes last) with
    /// the one order checker the simulator and real-swarm suites use.
    fn check_order(&self, original: &[NodeView]) {
        let to_upgrade = original
            .iter()
            .filter(|n| !self.spec.is_target(&n.engine_version));
        let fleet = Fleet::new(to_upgrade.clone().map(|n| (n.hostname.as_str(), n.role)))
            .with_kept_drained(
                to_upgrade
                    .filter(|n| n.availability == Availability::Drain)
                    .map(|n| n.hostname.as_str()),
            )
            .with_max_unavailable_workers(self.spec.strategy.max_unavailable_workers as usize);
        let mut events = self.events.clone();
        events.push(Event::rollout(
            self.now,
            EventStep::Completed,
            &self.spec.version,
            "",
        ));
        let report = check_order(&events, &fleet);
        assert!(report.is_ok(), "seed {}: {report}", self.seed);
    }
}

fn random_cluster(seed: u64) -> (Vec<NodeView>, u32) {
    let mut w = StdRng::seed_from_u64(seed);
    let managers = [1usize, 3, 5][w.random_range(0..3)];
    let workers = w.random_range(0..6);
    let mut nodes = vec![];
    for i in 0..managers {
        nodes.push(node(&format!("m{i}"), Role::Manager));
    }
    for i in 0..workers {
        nodes.push(node(&format!("w{i}"), Role::Worker));
    }
    let leader = w.random_range(0..managers);
    nodes[leader].leader = true;
    for n in nodes.iter_mut() {
        n.availability = match w.random_range(0..6) {
            0 => Availability::Pause,
            1 => Availability::Drain,
            _ => Availability::Active,
        };
        if w.random_range(0..5) == 0 {
            n.engine_version = "26.1.5+dfsg1".into();
        }
    }
    let max_unavailable = 1 + w.random_range(0..3);
    (nodes, max_unavailable)
}

/// A whole rollout of random cluster `seed` under `spec`: it completes with every node at the
/// target, unlabelled, with its availability and role as before, in the checked order.
fn random_rollout(seed: u64, mut spec: EngineUpgradeSpec) -> (World, Vec<NodeView>) {
    let (nodes, max_unavailable) = random_cluster(seed);
    spec.strategy.max_unavailable_workers = max_unavailable;
    let mut world = World::new(nodes.clone(), spec, seed);
    let plan = world.run(500);
    assert!(plan.complete, "seed {seed}: {:#?}", world.history);
    for n in &world.nodes {
        assert!(world.spec.is_target(&n.engine_version), "seed {seed}");
        assert!(!marks::has_any(&n.labels), "seed {seed}: {:?}", n.labels);
        assert_eq!(
            n.availability, world.original[&n.id],
            "seed {seed}: {} not restored",
            n.hostname
        );
        let role = world.roles[&n.id];
        assert_eq!(n.role, role, "seed {seed}: {:#?}", world.history);
    }
    world.check_order(&nodes);
    (world, nodes)
}

#[test]
fn whole_rollouts_keep_the_order_and_restore_every_node() {
    for seed in 0..300 {
        random_rollout(seed, spec());
    }
}

#[test]
fn the_leader_is_the_last_manager_upgraded() {
    let mut world = World::new(cluster(), spec(), 7);
    world.run(300);
    let upgrades: Vec<&String> = world
        .history
        .iter()
        .filter(|h| h.starts_with('m') && h.ends_with(" upgrade"))
        .collect();
    assert_eq!(upgrades.last().map(|s| s.as_str()), Some("m1 upgrade"));
    assert_eq!(upgrades.len(), 3);
}

#[test]
fn a_failing_upgrade_stops_the_rollout_and_touches_nothing_else() {
    let mut world = World::new(cluster(), spec(), 3);
    world.fail_upgrade.insert("m3".into());
    let plan = world.run(300);
    assert!(plan.failed && !plan.complete);
    // m2 was upgraded and is held drained; m1 (leader), drained ahead while m3 was upgraded,
    // was handed back untouched; the workers were never started.
    let m1: Vec<&str> = world
        .history
        .iter()
        .filter_map(|h| h.strip_prefix("m1 "))
        .collect();
    assert_eq!(m1, ["drain", "reactivated"], "{:#?}", world.history);
    assert!(world.history.iter().all(|h| !h.starts_with('w')));
    let m1 = world.nodes.iter().find(|n| n.id == "m1").unwrap();
    assert_eq!(m1.availability, Availability::Active);
    assert!(!marks::has_any(&m1.labels));
    let plan = world.step();
    assert!(plan.actions.is_empty() || plan.actions.iter().all(|a| a.node().hostname == "m2"));
}

#[test]
fn a_failing_health_gate_starts_nothing_and_holds_reactivated_nodes() {
    let mut case = Case::new(cluster());
    case.health = vec![gate_failure(
        Gate::ServicesConverged,
        "service test_client: 1/2 running",
    )];
    // Without resumeWhenHealthy the pause is recorded on the next node, which is not drained.
    match only_action(&case.plan()) {
        Action::Update(u) => {
            assert_eq!(u.node.hostname, "m2");
            assert_eq!(u.expect, None);
            assert_eq!(u.availability, None, "not drained");
            let m = u.mark.as_ref().unwrap();
            assert_eq!(m.step, Step::Failed);
            assert_eq!(m.previous, Availability::Active);
            let reason = m.reason.as_deref().unwrap();
            assert!(reason.contains("1/2 running"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    case.spec.health.resume_when_healthy = true;
    let plan = case.plan();
    assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
    assert!(plan.is_paused());
    assert!(
        plan.blockers
            .iter()
            .any(|b| b.kind == BlockerKind::HealthGate && b.message.contains("1/2 running"))
    );

    // A reactivated node is not let go: without resumeWhenHealthy the pause is latched on it
    // (a failed mark, availability untouched), so it survives a restart.
    let mut nodes = cluster();
    nodes[3].engine_version = NEW.into();
    for n in nodes.iter_mut().take(3) {
        n.engine_version = NEW.into();
    }
    mark(&mut nodes[3], Step::Settling, t0());
    let mut case = Case::new(nodes);
    case.health = vec![gate_failure(Gate::NoNewRejections, "3 tasks rejected")];
    case.now = at(60);
    match only_action(&case.plan()) {
        Action::Update(u) => {
            assert_eq!(u.node.hostname, "w1");
            let m = u.mark.as_ref().unwrap();
            assert_eq!(m.step, Step::Failed);
            let reason = m.reason.as_deref().unwrap();
            assert!(reason.contains("3 tasks rejected"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // With resumeWhenHealthy it only waits, and goes on once the gates pass.
    case.spec.health.resume_when_healthy = true;
    assert!(case.plan().actions.is_empty());
    case.health.clear();
    let plan = case.plan();
    assert_eq!(plan.actions.len(), 2, "{:#?}", plan.actions);
    let Action::Update(u) = &plan.actions[0] else {
        panic!()
    };
    assert_eq!((u.node.hostname.as_str(), &u.mark), ("w1", &None));
    // w1 settled in this pass: w2 starts in it too.
    assert_eq!(drained_node(&plan.actions[1]), Some("w2"));
}

#[test]
fn two_nodes_with_one_hostname_start_nothing() {
    // Seen on the real lab: for a moment manager n2's node object carried n5's description.
    let mut nodes = cluster();
    nodes[1].engine_version = NEW.into();
    nodes[2].engine_version = NEW.into();
    nodes[0].engine_version = NEW.into();
    nodes[1].hostname = "w2".into();
    nodes[1].engine_version = OLD.into();
    let plan = Case::new(nodes).plan();
    assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
    assert!(
        plan.blockers
            .iter()
            .any(|b| b.kind == BlockerKind::AmbiguousHostname && b.message.contains("w2"))
    );
}

#[test]
fn a_drained_node_waits_until_its_endpoints_are_withdrawn() {
    let mut nodes = cluster();
    mark(&mut nodes[1], Step::Draining, t0());
    let mut case = Case::new(nodes);
    case.now = at(5);
    case.lingering.insert("m2".into(), 1);
    let plan = case.plan();
    assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
    assert!(
        plan.blockers
            .iter()
            .any(|b| b.message.contains("withdrawn"))
    );
    case.lingering.clear();
    assert!(matches!(
        only_action(&case.plan()),
        Action::Run {
            command: CommandKind::Upgrade,
            ..
        }
    ));
    // Gossip that never converges does not hold the rollout past drainTimeout.
    case.lingering.insert("m2".into(), 1);
    case.now = at(301);
    assert!(matches!(
        only_action(&case.plan()),
        Action::Run {
            command: CommandKind::Upgrade,
            ..
        }
    ));
}

// ---------------------------------------------------------------------------------------------
// Command outcomes are observations: the planner alone turns them into label changes.

/// m2 at `step` since t0, drained, engine away (as during its command).
fn case_at(step: Step) -> Case {
    let mut nodes = cluster();
    mark(&mut nodes[1], step, t0());
    if matches!(step, Step::Upgrading | Step::Upgraded) {
        drained_ahead(&mut nodes);
    }
    if step == Step::RollingBack {
        nodes[1]
            .labels
            .insert(marks::REASON.into(), "upgrade exited with status 1".into());
        nodes[1].labels.insert(marks::SPEC_HASH.into(), "h1".into());
    }
    let mut case = Case::new(nodes);
    case.now = at(30);
    case
}

fn ended(case: &mut Case, command: CommandKind, outcome: CommandOutcome) {
    let ended = CommandEnded {
        command,
        started: t0(),
        outcome,
    };
    case.ended.insert("m2".into(), ended);
}

fn only_update(plan: &Plan) -> NodeUpdate {
    match only_action(plan) {
        Action::Update(u) => u.clone(),
        other => panic!("{other:?}"),
    }
}

fn only_update_on(plan: &Plan, node: &str) -> NodeUpdate {
    match only_action_on(plan, node) {
        Action::Update(u) => u.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_succeeded_upgrade_is_recorded_by_the_planner() {
    let mut case = case_at(Step::Upgrading);
    ended(&mut case, CommandKind::Upgrade, CommandOutcome::Succeeded);
    let u = only_update(&case.plan());
    assert_eq!(u.expect, Some(Step::Upgrading));
    assert_eq!(u.mark.as_ref().unwrap().step, Step::Upgraded);
    assert_eq!(u.mark.as_ref().unwrap().since, at(30));
    assert_eq!(u.availability, None, "stays drained");
    assert_eq!(u.event_steps(), vec![EventStep::Upgraded]);
    assert_eq!(u.finished, Some((Step::Upgrading, Duration::from_secs(30))));
}

#[test]
fn an_outcome_of_another_run_or_command_is_not_used() {
    // The outcome of an earlier run (another mark), or of a rollback, says nothing of this run.
    let mut case = case_at(Step::Upgrading);
    case.snapshot.nodes[1].state = State::Down;
    ended(&mut case, CommandKind::Upgrade, CommandOutcome::Succeeded);
    case.ended.get_mut("m2").unwrap().started = at(-100);
    let plan = case.plan();
    assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
    ended(&mut case, CommandKind::Rollback, CommandOutcome::Succeeded);
    assert!(case.plan().actions.is_empty());
}

#[test]
fn a_failed_upgrade_rolls_back_when_the_spec_has_a_rollback() {
    let mut case = case_at(Step::Upgrading);
    ended(
        &mut case,
        CommandKind::Upgrade,
        CommandOutcome::Failed("upgrade exited with status 1".into()),
    );
    let plan = case.plan();
    let Action::Run {
        command: CommandKind::Rollback,
        update,
    } = only_action(&plan)
    else {
        panic!("{:#?}", plan.actions)
    };
    let m = update.mark.as_ref().unwrap();
    assert_eq!(m.step, Step::RollingBack);
    assert_eq!(m.reason.as_deref(), Some("upgrade exited with status 1"));
    assert_eq!(m.spec_hash.as_deref(), Some("h1"));
    assert_eq!(update.availability, None);
    assert_eq!(
        update.event_steps(),
        vec![EventStep::Failed, EventStep::Rollback]
    );
    assert!(update.events[1].message.starts_with("running /bin/true"));
    // Nothing else starts in the meantime.
    assert!(plan.actions.iter().all(|a| a.node().hostname == "m2"));
}

#[test]
fn a_failed_upgrade_without_rollback_leaves_the_node_drained() {
    let mut case = case_at(Step::Upgrading);
    case.spec.upgrade.rollback = None;
    ended(
        &mut case,
        CommandKind::Upgrade,
        CommandOutcome::Failed("upgrade exited with status 1".into()),
    );
    let u = only_update(&case.plan());
    let m = u.mark.as_ref().unwrap();
    assert_eq!(m.step, Step::Failed);
    assert_eq!(u.availability, None, "left drained for a person to look at");
    let reason = m.reason.as_deref().unwrap();
    assert!(
        reason.contains("status 1") && reason.contains("left drained"),
        "{reason}"
    );
    assert_eq!(u.event_steps(), vec![EventStep::Failed, EventStep::Paused]);
}

#[test]
fn a_rollback_that_succeeds_gives_the_node_back_and_pauses() {
    let mut case = case_at(Step::RollingBack);
    case.running.insert("m2".into());
    let plan = case.plan();
    assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
    assert!(plan.is_paused(), "a rollback holds the rollout");
    case.running.clear();
    ended(&mut case, CommandKind::Rollback, CommandOutcome::Succeeded);
    let u = only_update(&case.plan());
    let m = u.mark.as_ref().unwrap();
    assert_eq!(m.step, Step::Failed);
    assert_eq!(m.spec_hash.as_deref(), Some("h1"));
    assert_eq!(m.reason.as_deref(), Some("upgrade exited with status 1"));
    assert_eq!(u.availability, Some(Availability::Active));
    assert_eq!(u.event_steps(), vec![EventStep::Paused]);
}

#[test]
fn a_rollback_that_fails_leaves_the_node_drained() {
    let mut case = case_at(Step::RollingBack);
    ended(
        &mut case,
        CommandKind::Rollback,
        CommandOutcome::Failed("rollback exited with status 2".into()),
    );
    let u = only_update(&case.plan());
    let m = u.mark.as_ref().unwrap();
    assert_eq!(m.step, Step::Failed);
    assert_eq!(u.availability, None);
    let reason = m.reason.as_deref().unwrap();
    assert!(
        reason.contains("upgrade exited with status 1")
            && reason.contains("left drained")
            && reason.contains("status 2"),
        "{reason}"
    );
}

#[test]
fn restart_mid_rollback_waits_for_the_engine_then_runs_it_again() {
    // Killed mid-rollback: the label says rolling-back, nothing runs, no outcome in memory.
    let mut case = case_at(Step::RollingBack);
    case.snapshot.nodes[1].state = State::Down;
    let plan = case.plan();
    assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
    assert!(
        plan.blockers
            .iter()
            .any(|b| b.message.contains("mid-rollback"))
    );
    case.now = at(61);
    let plan = case.plan();
    let Action::Run {
        command: CommandKind::Rollback,
        update,
    } = only_action(&plan)
    else {
        panic!("{:#?}", plan.actions)
    };
    let m = update.mark.as_ref().unwrap();
    assert_eq!((m.step, m.since), (Step::RollingBack, at(61)));
    assert_eq!(m.reason.as_deref(), Some("upgrade exited with status 1"));
    assert_eq!(update.expect, Some(Step::RollingBack));
    // Nothing new starts while it rolls back, even on a worker slot.
    assert!(plan.actions.iter().all(|a| a.node().hostname == "m2"));
}

#[test]
fn a_worker_rolling_back_holds_every_other_worker() {
    let mut nodes = cluster();
    for n in nodes.iter_mut().take(3) {
        n.engine_version = NEW.into();
    }
    mark(&mut nodes[3], Step::RollingBack, t0());
    let mut case = Case::new(nodes);
    case.spec.strategy.max_unavailable_workers = 2;
    case.running.insert("w1".into());
    let plan = case.plan();
    assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
}

#[test]
fn restart_after_kill_with_no_outcome_decides_from_the_node() {
    // The command ended and the operator died before reading its outcome.
    let mut case = case_at(Step::Upgrading);
    case.snapshot.nodes[1].engine_version = "26.1.5+dfsg1".into();
    let u = only_update(&case.plan());
    assert_eq!(u.mark.as_ref().unwrap().step, Step::Ready);
    // Back at the old version: run it again (idempotent by contract).
    case.snapshot.nodes[1].engine_version = OLD.into();
    assert!(matches!(
        only_action(&case.plan()),
        Action::Run {
            command: CommandKind::Upgrade,
            ..
        }
    ));
}

#[test]
fn the_first_manager_is_judged_with_every_manager_drained() {
    use std::cell::RefCell;
    let asked: RefCell<Vec<Vec<String>>> = RefCell::default();
    let check = |ids: &[&str]| {
        asked
            .borrow_mut()
            .push(ids.iter().map(|s| s.to_string()).collect());
        None
    };
    let run = |case: &Case| {
        plan(&PlanInput {
            spec: &case.spec,
            spec_hash: "h1",
            snapshot: &case.snapshot,
            running_commands: &case.running,
            ended_commands: &case.ended,
            drain_check: &check,
            health_failures: &case.health,
            lingering_endpoints: &case.lingering,
            ssh_failures: &BTreeMap::new(),
            workload: &case.workload,
            now: case.now,
        })
    };
    let case = Case::new(cluster());
    assert_eq!(drained_node(only_action(&run(&case))), Some("m2"));
    assert_eq!(asked.take(), vec![vec!["m1", "m2", "m3"]]);
    // A manager drained ahead (m2 upgrading): judged with every manager drained too, since by
    // the end of the managers' phase they all are.
    let mut nodes = cluster();
    mark(&mut nodes[1], Step::Upgrading, t0());
    nodes[1].state = State::Down;
    let mut case = Case::new(nodes);
    case.running.insert("m2".into());
    assert_eq!(drained_node(only_action(&run(&case))), Some("m3"));
    assert_eq!(asked.take(), vec![vec!["m1", "m2", "m3"]]);
}

#[test]
fn a_vetoed_worker_lets_the_next_one_go() {
    let mut case = Case::new(cluster());
    for n in case.snapshot.nodes.iter_mut().take(3) {
        n.engine_version = NEW.into();
    }
    case.vetoes
        .insert("w1".into(), "service web would have nowhere to run".into());
    let plan = case.plan();
    assert_eq!(drained_node(only_action(&plan)), Some("w2"));
    assert!(plan.blockers.iter().any(|b| b.kind == BlockerKind::Vetoed
        && b.message == "not draining w1: service web would have nowhere to run"));
}

/// An autolocked swarm whose manager m2 was upgraded and came up locked: down to the swarm,
/// its own engine at the target.
fn locked_m2(since: Timestamp) -> Case {
    let mut nodes = cluster();
    mark(&mut nodes[1], Step::Upgraded, since);
    nodes[1].locked = true;
    nodes[1].state = State::Down;
    nodes[1].reachable = false;
    nodes[1].engine_version = NEW.into();
    let mut case = Case::new(nodes);
    case.snapshot.autolock = true;
    case
}

/// Writes an update's mark on the node, as the executor would.
fn write_mark(case: &mut Case, update: &NodeUpdate) {
    let node = case
        .snapshot
        .nodes
        .iter_mut()
        .find(|n| n.id == update.node.id)
        .unwrap();
    match &update.mark {
        Some(m) => m.write_to(&mut node.labels),
        None => marks::clear(&mut node.labels),
    }
}

fn current_mark(case: &Case, id: &str) -> Mark {
    case.snapshot.node(id).unwrap().mark().unwrap().unwrap()
}

#[test]
fn a_locked_manager_without_a_key_waits_past_ready_timeout_with_the_reason() {
    let mut case = locked_m2(t0());
    case.now = at(1000);
    let plan = case.plan();
    // First seen locked: recorded, so that the time locked does not count against readyTimeout.
    let Action::Update(u) = only_action_on(&plan, "m2") else {
        panic!("{:#?}", plan.actions)
    };
    assert_eq!(u.mark.as_ref().unwrap().step, Step::Upgraded);
    assert_eq!(u.mark.as_ref().unwrap().since, at(1000));
    write_mark(&mut case, &u.clone());
    case.now = at(5000);
    let plan = case.plan();
    // Nothing for m2 (m3 may be drained ahead meanwhile).
    assert!(
        plan.actions.iter().all(|a| a.node().id != "m2"),
        "{:#?}",
        plan.actions
    );
    assert!(!plan.failed);
    let locked = plan
        .blockers
        .iter()
        .find(|b| b.kind == BlockerKind::Locked)
        .expect("a locked blocker");
    assert_eq!(locked.node.as_deref(), Some("m2"));
    assert!(
        locked.message.contains("the swarm is autolocked: each upgraded manager will come up locked; give spec.upgrade.unlockKey or unlock each by hand"),
        "{}",
        locked.message
    );
    assert!(
        plan.blockers
            .iter()
            .any(|b| b.kind == BlockerKind::Autolocked)
    );
    // Unlocked by hand: readyTimeout counts from the unlock.
    let n2 = case
        .snapshot
        .nodes
        .iter_mut()
        .find(|n| n.id == "m2")
        .unwrap();
    n2.locked = false;
    case.now = at(5001);
    let plan = case.plan();
    let Action::Update(u) = only_action_on(&plan, "m2") else {
        panic!("{:#?}", plan.actions)
    };
    write_mark(&mut case, &u.clone());
    let m = current_mark(&case, "m2");
    assert_eq!(
        (m.step, m.since, m.reason),
        (Step::Upgraded, at(5001), None)
    );
    case.now = at(5001 + 299);
    assert!(!case.plan().failed);
    case.now = at(5001 + 301);
    let plan = case.plan();
    let Action::Run { update, .. } = only_action_on(&plan, "m2") else {
        panic!("{:#?}", plan.actions)
    };
    let reason = update.mark.as_ref().unwrap().reason.clone().unwrap();
    assert!(
        reason.contains("readyTimeout") && reason.contains("engine 26.1.5"),
        "{reason}"
    );
}

#[test]
fn a_locked_manager_is_unlocked_with_the_key_and_a_refused_key_fails_it() {
    let mut case = locked_m2(t0());
    case.spec.upgrade.unlock_key = Some(crate::spec::UnlockKeySource::File("/k".into()));
    case.now = at(10);
    let first = case.plan();
    write_mark(&mut case, &first.actions[0].update().clone());
    assert!(
        !case
            .plan()
            .blockers
            .iter()
            .any(|b| b.kind == BlockerKind::Autolocked)
    );
    let plan = case.plan();
    let Action::Unlock(u) = only_action_on(&plan, "m2") else {
        panic!("{:#?}", plan.actions)
    };
    assert_eq!(u.event_steps(), vec![EventStep::Unlock]);
    let since = u.mark.as_ref().unwrap().since;

    case.running.insert("m2".into());
    let plan = case.plan();
    assert!(
        plan.actions.iter().all(|a| a.node().id != "m2") && !plan.failed,
        "{:#?}",
        plan.actions
    );
    case.running.clear();

    let refused =
        "the unlock key was refused by m2 (swarm could not be unlocked: invalid key provided)";
    case.ended.insert(
        "m2".into(),
        CommandEnded {
            command: CommandKind::Unlock,
            started: since,
            outcome: CommandOutcome::Failed(refused.into()),
        },
    );
    let plan = case.plan();
    let Action::Update(u) = only_action_on(&plan, "m2") else {
        panic!("{:#?}", plan.actions)
    };
    let m = u.mark.as_ref().unwrap();
    assert_eq!(m.step, Step::Failed);
    assert!(m.reason.as_deref().unwrap().starts_with(refused));
    assert_eq!(u.availability, None, "left drained");
    assert_eq!(u.event_steps(), vec![EventStep::Failed, EventStep::Paused]);
}

#[test]
fn the_autolock_notice_comes_before_anything_is_drained_and_only_without_a_key() {
    let mut case = Case::new(cluster());
    case.snapshot.autolock = true;
    let plan = case.plan();
    assert_eq!(drained_node(only_action(&plan)), Some("m2"));
    let notice = plan
        .blockers
        .iter()
        .find(|b| b.kind == BlockerKind::Autolocked)
        .expect("the notice");
    assert!(!notice.kind.is_problem());
    case.spec.upgrade.unlock_key = Some(crate::spec::UnlockKeySource::Env("K".into()));
    assert!(
        !case
            .plan()
            .blockers
            .iter()
            .any(|b| b.kind == BlockerKind::Autolocked)
    );
    case.spec.upgrade.unlock_key = None;
    case.snapshot.autolock = false;
    assert!(
        !case
            .plan()
            .blockers
            .iter()
            .any(|b| b.kind == BlockerKind::Autolocked)
    );
}

// ---------------------------------------------------------------------------------------------
// Managers drained ahead.

/// m2 upgrading (its command running, engine away), m3 drained ahead from `previous`.
fn upgrading_with_m3_ahead(previous: Availability) -> Case {
    let mut nodes = cluster();
    mark(&mut nodes[1], Step::Upgrading, t0());
    nodes[1].state = State::Down;
    nodes[1].reachable = false;
    nodes[2].availability = previous;
    drained_ahead(&mut nodes);
    let mut case = Case::new(nodes);
    case.running.insert("m2".into());
    case.now = at(10);
    case
}

/// The one update of `plan` for m3: back to `previous`, every operator label removed.
fn assert_m3_handed_back(plan: &Plan, previous: Availability, path: &str) {
    let m3: Vec<&NodeUpdate> = plan
        .actions
        .iter()
        .map(Action::update)
        .filter(|u| u.node.hostname == "m3")
        .collect();
    assert_eq!(m3.len(), 1, "{path}: {:#?}", plan.actions);
    assert_eq!(m3[0].availability, Some(previous), "{path}");
    assert_eq!(m3[0].mark, None, "{path}");
    assert_eq!(m3[0].expect, Some(Step::Draining), "{path}");
}

#[test]
fn the_next_manager_is_drained_while_one_is_upgraded_and_waits_for_it() {
    // m2's engine is down for its upgrade: m3 is drained all the same (a drain stops no engine).
    let mut nodes = cluster();
    mark(&mut nodes[1], Step::Upgrading, t0());
    nodes[1].state = State::Down;
    nodes[1].reachable = false;
    let mut case = Case::new(nodes);
    case.running.insert("m2".into());
    assert_eq!(drained_node(only_action(&case.plan())), Some("m3"));

    // m3 drained: its engine is not stopped while m2's upgrade is under way.
    let mut case = upgrading_with_m3_ahead(Availability::Active);
    let plan = case.plan();
    assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
    assert!(plan.blockers.iter().any(|b| b.node.as_deref() == Some("m3")
        && b.message.contains("drained ahead")
        && b.message.contains("m2")));
    // Nor once m2's command is done but m2 is not Ready yet.
    case.running.clear();
    mark(&mut case.snapshot.nodes[1], Step::Upgraded, at(5));
    case.snapshot.nodes[1].engine_version = NEW.into();
    assert!(case.plan().actions.is_empty());
    // m2 Ready at the target: m2 recorded Ready; m3 waits one more pass (m2 still seen upgraded).
    case.snapshot.nodes[1].state = State::Ready;
    case.snapshot.nodes[1].reachable = true;
    let u = only_update(&case.plan());
    assert_eq!(
        (u.node.hostname.as_str(), u.mark.unwrap().step),
        ("m2", Step::Ready)
    );
    mark(&mut case.snapshot.nodes[1], Step::Ready, at(6));
    assert!(matches!(
        only_action(&case.plan()),
        Action::Run { command: CommandKind::Upgrade, update } if update.node.hostname == "m3"
    ));
    // Only one manager ahead: the leader m1 is not drained while m3 is draining.
    case.snapshot.nodes[1].state = State::Down;
    let plan = case.plan();
    assert!(plan.actions.iter().all(|a| a.node().hostname != "m1"));
}

#[test]
fn a_manager_drained_ahead_goes_back_on_every_abandoning_path() {
    for previous in [Availability::Active, Availability::Pause] {
        let base = || upgrading_with_m3_ahead(previous);

        let mut case = base();
        case.spec.strategy.paused = true;
        assert_m3_handed_back(&case.plan(), previous, "paused");

        let mut case = base();
        case.spec.window = Some(crate::spec::Window {
            days: vec![crate::spec::Weekday::Sun],
            start: "01:00".into(),
            end: "02:00".into(),
            timezone: "UTC".into(),
        });
        assert_m3_handed_back(&case.plan(), previous, "window closed");

        // m2 failed (rolling back, then failed): the rollout is paused by the failure.
        for step in [Step::RollingBack, Step::Failed] {
            let mut case = base();
            case.running.clear();
            mark(&mut case.snapshot.nodes[1], step, t0());
            case.snapshot.nodes[1]
                .labels
                .insert(marks::SPEC_HASH.into(), "h1".into());
            assert_m3_handed_back(&case.plan(), previous, "m2 failed");
        }

        let mut case = base();
        case.health.push(gate_failure(
            Gate::ServicesConverged,
            "service web: 1/3 running",
        ));
        assert_m3_handed_back(&case.plan(), previous, "health gate");

        // The spec changed: m3 is no longer selected.
        let mut case = base();
        case.spec.node_selector.hostnames = vec!["m1".into(), "m2".into()];
        assert_m3_handed_back(&case.plan(), previous, "deselected");

        // kill -9, then a restart with the rollout paused: nothing in memory, the labels decide.
        let mut case = base();
        case.running.clear();
        case.ended.clear();
        case.spec.strategy.paused = true;
        assert_m3_handed_back(&case.plan(), previous, "restart while paused");
        // A restart with nothing abandoning it: m3 stays drained and waits for m2.
        case.spec.strategy.paused = false;
        assert!(
            case.plan()
                .actions
                .iter()
                .all(|a| a.node().hostname != "m3")
        );
    }
}

#[test]
fn a_manager_draining_in_turn_is_not_handed_back_on_pause() {
    // m3 drains in its own turn (no other manager's upgrade under way): it goes on, as before.
    let mut nodes = cluster();
    nodes[1].engine_version = NEW.into();
    mark(&mut nodes[1], Step::Ready, t0());
    drained_ahead(&mut nodes);
    let mut case = Case::new(nodes);
    case.spec.strategy.paused = true;
    assert!(matches!(
        only_action(&case.plan()),
        Action::Run { command: CommandKind::Upgrade, update } if update.node.hostname == "m3"
    ));
}

#[test]
fn pausing_at_random_moments_keeps_the_order_and_restores_every_node() {
    let mut handed_back = 0;
    for seed in 0..200 {
        let (nodes, max_unavailable) = random_cluster(seed);
        let mut spec = spec();
        spec.strategy.max_unavailable_workers = max_unavailable;
        // Half the runs hand the leader's leadership over before its upgrade.
        spec.strategy.leader_handover = seed % 2 == 1;
        let mut world = World::new(nodes, spec, seed);
        let mut complete = false;
        for _ in 0..800 {
            // Toggled one pass in eight: paused for a few passes at a time.
            if world.roll(8) == 0 {
                world.spec.strategy.paused = !world.spec.strategy.paused;
            }
            let in_upgrade = world
                .nodes
                .iter()
                .any(|m| m.is_manager() && seen_step(m).is_some_and(Step::engine_in_hand));
            let ahead: Vec<String> = world
                .nodes
                .iter()
                .filter(|n| n.is_manager() && seen_step(n) == Some(Step::Draining) && in_upgrade)
                .map(|n| n.id.clone())
                .collect();
            let paused = world.spec.strategy.paused;
            let plan = world.step();
            if paused {
                // A paused pass hands back every manager drained ahead.
                for id in &ahead {
                    let n = world.nodes.iter().find(|n| &n.id == id).unwrap();
                    assert!(
                        !marks::has_any(&n.labels),
                        "seed {seed}: {:#?}",
                        world.history
                    );
                    assert_eq!(n.availability, world.original[id], "seed {seed}");
                    handed_back += 1;
                }
            }
            if plan.complete {
                complete = true;
                break;
            }
        }
        assert!(complete, "seed {seed}: {:#?}", world.history);
        for n in &world.nodes {
            assert!(!marks::has_any(&n.labels), "seed {seed}: {:?}", n.labels);
            assert_eq!(n.availability, world.original[&n.id], "seed {seed}");
            assert_eq!(
                n.role, world.roles[&n.id],
                "seed {seed}: {:#?}",
                world.history
            );
        }
    }
    assert!(handed_back > 0, "no pause ever met a manager drained ahead");
}

// ---------------------------------------------------------------------------------------------
// strategy.leaderHandover

fn handover_spec() -> EngineUpgradeSpec {
    let mut spec = spec();
    spec.strategy.leader_handover = true;
    spec
}

#[test]
fn with_leader_handover_the_leader_is_demoted_upgraded_as_a_worker_and_promoted_back() {
    for seed in 0..300 {
        let (world, nodes) = random_rollout(seed, handover_spec());
        let leader = nodes.iter().find(|n| n.leader).unwrap();
        let managers = nodes.iter().filter(|n| n.is_manager()).count();
        let steps: Vec<&str> = world
            .history
            .iter()
            .filter_map(|h| h.strip_prefix(&format!("{} ", leader.hostname)))
            .collect();
        if managers >= 3 && !world.spec.is_target(&leader.engine_version) {
            let pos = |step: &str| steps.iter().position(|s| *s == step);
            let (demote, upgrade, promote) = (pos("demote"), pos("upgrade"), pos("promote"));
            assert!(
                demote.is_some() && demote < upgrade && upgrade < promote && promote < pos("ready"),
                "seed {seed}: {steps:?}"
            );
        } else {
            assert!(!steps.contains(&"demote"), "seed {seed}: {steps:?}");
        }
    }
}

#[test]
fn a_failed_upgrade_after_a_handover_makes_the_node_a_manager_again() {
    let mut world = World::new(cluster(), handover_spec(), 11);
    world.fail_upgrade.insert("m1".into());
    let plan = world.run(300);
    assert!(plan.failed && !plan.complete, "{:#?}", world.history);
    let m1 = world.nodes.iter().find(|n| n.id == "m1").unwrap();
    assert_eq!(m1.role, Role::Manager, "{:#?}", world.history);
    let mark = m1.mark().unwrap().unwrap();
    assert_eq!(mark.step, Step::Failed);
    assert!(!mark.demoted);
    assert!(world.history.iter().any(|h| h == "m1 demote"));
}

/// m2 and m3 upgraded and kept drained; m1 (the leader) drained, its tasks gone.
fn leader_drained(spec: EngineUpgradeSpec) -> Case {
    let mut nodes = cluster();
    for n in &mut nodes[1..3] {
        n.engine_version = format!("{NEW}+dfsg1");
        mark(n, Step::Ready, t0());
    }
    mark(&mut nodes[0], Step::Draining, t0());
    let mut case = Case::new(nodes);
    case.spec = spec;
    case.now = at(10);
    case
}

#[test]
fn the_drained_leader_is_demoted_in_the_write_that_records_it() {
    let plan = leader_drained(handover_spec()).plan();
    let Action::Update(u) = only_action_on(&plan, "m1") else {
        panic!("{:#?}", plan.actions)
    };
    assert_eq!(u.role, Some(Role::Worker));
    let mark = u.mark.as_ref().unwrap();
    assert!(mark.demoted && mark.step == Step::Draining);
    assert_eq!(u.event_steps(), vec![EventStep::Demote]);
    // Without the strategy the leader is upgraded in place; so it is where the operator does
    // not reach the leader's own engine (only that engine tells when a demotion has finished).
    let plan = leader_drained(spec()).plan();
    assert!(
        matches!(only_action_on(&plan, "m1"), Action::Run { update, .. } if update.role.is_none())
    );
    let mut unreached = leader_drained(handover_spec());
    unreached.snapshot.nodes[0].runs_manager = None;
    let plan = unreached.plan();
    assert!(
        matches!(only_action_on(&plan, "m1"), Action::Run { update, .. } if update.role.is_none())
    );
}

#[test]
fn a_demoted_leader_is_stopped_only_once_another_manager_leads() {
    let mut case = leader_drained(handover_spec());
    let demote = only_update_on(&case.plan(), "m1");
    write_mark(&mut case, &demote);
    let m1 = case
        .snapshot
        .nodes
        .iter_mut()
        .find(|n| n.id == "m1")
        .unwrap();
    m1.role = Role::Worker;
    // Still leading and in raft for a moment (its ManagerStatus lingers).
    let plan = case.plan();
    assert!(
        plan.actions.iter().all(|a| a.node().id != "m1"),
        "{:#?}",
        plan.actions
    );
    assert!(
        plan.blockers
            .iter()
            .any(|b| b.message.contains("hand raft leadership"))
    );
    let nodes = &mut case.snapshot.nodes;
    nodes[0].leader = false;
    nodes[0].reachable = false;
    nodes[1].leader = true;
    // Its engine still runs the manager (raft data not cleared yet), or does not answer.
    for runs_manager in [Some(true), None] {
        case.snapshot.nodes[0].runs_manager = runs_manager;
        let plan = case.plan();
        assert!(
            plan.actions.iter().all(|a| a.node().id != "m1"),
            "{runs_manager:?}"
        );
        assert!(
            plan.blockers.iter().any(|b| b
                .message
                .contains("stop its manager and clear its raft data")),
            "{:#?}",
            plan.blockers
        );
    }
    case.snapshot.nodes[0].runs_manager = Some(false);
    let plan = case.plan();
    let Action::Run { command, update } = only_action_on(&plan, "m1") else {
        panic!("{:#?}", plan.actions)
    };
    assert_eq!(*command, CommandKind::Upgrade);
    assert!(update.mark.as_ref().unwrap().demoted);
    assert_eq!(
        update.node.role,
        Role::Manager,
        "still a manager of the rollout"
    );
    // The quorum guard holds for the remaining managers.
    case.snapshot.nodes[2].state = State::Down;
    let plan = case.plan();
    assert!(plan.actions.iter().all(|a| a.node().id != "m1"));
    assert!(
        plan.blockers
            .iter()
            .any(|b| b.kind == BlockerKind::QuorumGuard)
    );
}

#[test]
fn a_demoted_leader_ready_at_the_target_is_promoted_back_before_anything_else() {
    let mut case = leader_drained(handover_spec());
    let nodes = &mut case.snapshot.nodes;
    let m1 = &mut nodes[0];
    let mut m = m1.mark().unwrap().unwrap().at(Step::Upgraded, at(20));
    m.demoted = true;
    m.write_to(&mut m1.labels);
    m1.role = Role::Worker;
    m1.leader = false;
    m1.reachable = false;
    m1.engine_version = format!("{NEW}+dfsg1");
    nodes[1].leader = true;
    case.now = at(30);
    let u = only_update_on(&case.plan(), "m1");
    assert_eq!(u.role, Some(Role::Manager));
    let mark = u.mark.as_ref().unwrap();
    assert!(!mark.demoted && mark.step == Step::Upgraded);
    assert_eq!(u.event_steps(), vec![EventStep::Promote]);
    // No worker starts while it is promoted back.
    let plan = case.plan();
    assert!(plan.actions.iter().all(|a| !a.node().id.starts_with('w')));
}

#[test]
fn every_path_that_drops_the_demoted_flag_promotes_the_node() {
    let mut node = node("m1", Role::Worker);
    let m = Mark {
        demoted: true,
        ..Mark::from_labels(&{
            let mut n = cluster().remove(0);
            mark(&mut n, Step::Upgrading, t0());
            n.labels
        })
        .unwrap()
        .unwrap()
    };
    m.write_to(&mut node.labels);
    assert_eq!(restored_role(&node, None), Some(Role::Manager));
    let kept = m.at(Step::Upgraded, t0());
    assert_eq!(restored_role(&node, Some(&kept)), None);
    let dropped = Mark {
        demoted: false,
        ..kept
    };
    assert_eq!(restored_role(&node, Some(&dropped)), Some(Role::Manager));
    node.role = Role::Manager;
    assert_eq!(restored_role(&node, None), None, "already a manager");
}

#[test]
fn a_held_worker_is_left_out_and_the_rollout_completes_with_it_held() {
    let mut nodes = cluster();
    for n in nodes.iter_mut().take(4) {
        n.engine_version = NEW.into();
    }
    nodes[4]
        .labels
        .insert(marks::HOLD.into(), "disk swap on Friday".into());
    let plan = Case::new(nodes.clone()).plan();
    assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
    assert!(plan.complete, "{plan:#?}");
    let w2 = plan.nodes.iter().find(|n| n.hostname == "w2").unwrap();
    assert_eq!(w2.held.as_deref(), Some("disk swap on Friday"));
    assert!(!w2.selected && w2.order.is_none());
    // the hold removed: w2 is started
    nodes[4].labels.remove(marks::HOLD);
    let plan = Case::new(nodes).plan();
    assert!(!plan.complete);
    assert!(
        matches!(only_action(&plan), Action::Start(u) if u.node.hostname == "w2"),
        "{:#?}",
        plan.actions
    );
}

#[test]
fn a_held_manager_below_the_target_stops_the_rollout_before_anything_is_drained() {
    let mut nodes = cluster();
    nodes[2].labels.insert(marks::HOLD.into(), String::new());
    let plan = Case::new(nodes.clone()).plan();
    assert!(plan.actions.is_empty(), "{:#?}", plan.actions);
    assert_eq!(plan.phase, Phase::Managers);
    let b = plan
        .blockers
        .iter()
        .find(|b| b.kind == BlockerKind::Held)
        .expect("a held blocker");
    assert_eq!(b.node.as_deref(), Some("m3"));
    assert!(
        b.message.contains("manager m3 is held (no reason given)")
            && b.message.contains("--label-rm swarm-upgrade.hold m3"),
        "{}",
        b.message
    );
    // nor does any worker start while the managers cannot finish
    for n in nodes.iter_mut().take(3) {
        if n.hostname != "m3" {
            n.engine_version = NEW.into();
        }
    }
    let plan = Case::new(nodes.clone()).plan();
    assert!(
        plan.actions.is_empty() && !plan.complete,
        "{:#?}",
        plan.actions
    );
    // a held manager already at the target holds nothing up
    nodes[2].engine_version = NEW.into();
    let plan = Case::new(nodes).plan();
    assert!(
        matches!(only_action(&plan), Action::Start(u) if u.node.hostname == "w1"),
        "{:#?}",
        plan.actions
    );
}

#[test]
fn upgraded_managers_are_reactivated_while_one_reconnects_after_the_leader_change() {
    let mut nodes = cluster();
    for m in &mut nodes[..3] {
        m.engine_version = "26.1.5+dfsg1".into();
        mark(m, Step::Ready, t0());
    }
    // m3 right after the leader's upgrade: its agent reconnects to the new leader on backoff.
    nodes[2].state = State::Unknown;
    nodes[2].reachable = false;
    let reactivated = |plan: &Plan| {
        plan.actions
            .iter()
            .filter(|a| a.update().availability == Some(Availability::Active))
            .count()
    };
    assert_eq!(reactivated(&Case::new(nodes.clone()).plan()), 3);
    // A manager not yet seen Ready at the target still holds the others drained.
    mark(&mut nodes[2], Step::Upgraded, t0());
    let plan = Case::new(nodes).plan();
    assert_eq!(reactivated(&plan), 0, "{:#?}", plan.actions);
}

#[test]
fn resume_hands_every_failed_node_back_and_nothing_else() {
    let mut nodes = cluster();
    mark(&mut nodes[3], Step::Failed, t0());
    nodes[3].availability = Availability::Drain;
    mark(&mut nodes[4], Step::Draining, t0());
    let updates = crate::planner::resume(&nodes);
    assert_eq!(updates.len(), 1, "{updates:#?}");
    let u = &updates[0];
    assert_eq!(u.node.hostname, nodes[3].hostname);
    assert_eq!(
        u.expect,
        Some(Step::Failed),
        "dropped if the node moved since"
    );
    assert_eq!(
        u.availability,
        Some(Availability::Active),
        "its earlier availability"
    );
    assert!(u.mark.is_none(), "its labels removed");
    assert!(crate::planner::resume(&cluster()).is_empty());
}

#[test]
fn a_node_whose_ssh_login_failed_is_not_drained_and_says_why() {
    let mut case = Case::new(cluster());
    let first = drained_node(only_action(&case.plan())).unwrap().to_string();
    let id = (case.snapshot.nodes.iter())
        .find(|n| n.hostname == first)
        .unwrap()
        .id
        .clone();
    let why = format!("{first}: not drained: the host key is unknown. Fix: add it");
    case.ssh_failures.insert(id, why.clone());
    let plan = case.plan();
    assert!(
        plan.actions
            .iter()
            .all(|a| a.update().node.hostname != first),
        "{:#?}",
        plan.actions
    );
    let blocker = (plan.blockers.iter())
        .find(|b| b.kind == BlockerKind::SshLogin)
        .expect("an ssh blocker");
    assert_eq!(blocker.message, why);
    assert!(BlockerKind::SshLogin.is_problem());
}
