//! The planner's rules, case by case, and whole rollouts driven through a model world that
//! checks the ordering invariants after every step.

use std::collections::{BTreeMap, BTreeSet};

use bollard::models::TaskState;
use jiff::{SignedDuration, Timestamp};

use super::*;
use crate::cluster::{Availability, NodeView, Role, Snapshot, State, TaskView};
use crate::marks::{self, Mark, Step};
use crate::spec::{EngineUpgradeSpec, NodeSelector, SpecDuration, Strategy, UpgradeSpec};
use crate::vocab::CommandOutcome;

const OLD: &str = "20.10.24+dfsg1";
const NEW: &str = "26.1.5";

fn spec() -> EngineUpgradeSpec {
    EngineUpgradeSpec {
        version: NEW.into(),
        upgrade: UpgradeSpec {
            command: vec!["/bin/true".into()],
            rollback: Some(vec!["/bin/true".into()]),
            timeout: SpecDuration::from_secs(60),
        },
        strategy: Strategy {
            settle: SpecDuration::from_secs(5),
            ..Strategy::default()
        },
        node_selector: NodeSelector::default(),
        window: None,
        health: Default::default(),
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
    };
    if step != Step::Settling {
        node.availability = Availability::Drain;
    }
    m.write_to(&mut node.labels);
}

struct Case {
    spec: EngineUpgradeSpec,
    snapshot: Snapshot,
    running: BTreeSet<String>,
    ended: BTreeMap<String, CommandEnded>,
    vetoes: BTreeMap<String, String>,
    health: Vec<String>,
    lingering: BTreeMap<String, usize>,
    now: Timestamp,
}

impl Case {
    fn new(nodes: Vec<NodeView>) -> Self {
        Self {
            spec: spec(),
            snapshot: Snapshot {
                nodes,
                tasks: vec![],
            },
            running: BTreeSet::new(),
            ended: BTreeMap::new(),
            vetoes: BTreeMap::new(),
            health: vec![],
            lingering: BTreeMap::new(),
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
            now: self.now,
        })
    }
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
    case.snapshot.tasks.push(TaskView {
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

    case.snapshot.tasks[0].state = TaskState::SHUTDOWN;
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
    case.snapshot.tasks.push(TaskView {
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
    let plan = Case::new(nodes.clone()).plan();
    assert!(plan.actions.is_empty());
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

    // Once at Ready, the next manager is drained; m2 is not reactivated.
    mark(&mut case.snapshot.nodes[1], Step::Ready, at(3));
    case.snapshot.nodes[1].availability = Availability::Drain;
    let plan = case.plan();
    assert_eq!(drained_node(only_action(&plan)), Some("m3"));
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
    case.now = at(6);
    let plan = case.plan();
    assert_eq!(plan.actions.len(), 3);
    assert!(
        plan.actions
            .iter()
            .all(|a| matches!(a, Action::Update(u) if u.mark.is_none()))
    );
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

// ---------------------------------------------------------------------------------------------
// Whole rollouts through a model world.

/// A small deterministic model of a swarm that carries out the planner's actions.
struct World {
    nodes: Vec<NodeView>,
    original: BTreeMap<String, Availability>,
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
    rng: u64,
}

impl World {
    fn new(nodes: Vec<NodeView>, spec: EngineUpgradeSpec, seed: u64) -> Self {
        let original = nodes
            .iter()
            .map(|n| (n.id.clone(), n.availability))
            .collect();
        let tasks = nodes.iter().map(|n| (n.id.clone(), 2)).collect();
        Self {
            nodes,
            original,
            tasks,
            upgrading: BTreeMap::new(),
            ended: BTreeMap::new(),
            fail_upgrade: BTreeSet::new(),
            now: t0(),
            spec,
            history: vec![],
            rng: seed.wrapping_mul(6364136223846793005).wrapping_add(1),
        }
    }

    fn roll(&mut self, n: u64) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng % n
    }

    fn snapshot(&self) -> Snapshot {
        let mut tasks = vec![];
        for (node, count) in &self.tasks {
            for i in 0..*count {
                tasks.push(TaskView {
                    id: format!("{node}-{i}"),
                    node_id: Some(node.clone()),
                    service_id: "s".into(),
                    state: TaskState::RUNNING,
                    desired_state: TaskState::RUNNING,
                });
            }
        }
        Snapshot {
            nodes: self.nodes.clone(),
            tasks,
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
            drain_check: &AllowEveryDrain,
            health_failures: &[],
            lingering_endpoints: &BTreeMap::new(),
            now: self.now,
        });
        for action in plan.actions.clone() {
            self.check_before(&action);
            let u = action.update();
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

    /// The world moves on: drained nodes empty, engines come back, time passes.
    fn tick(&mut self) {
        let advance = 1 + self.roll(3) as i64;
        self.now += SignedDuration::from_secs(advance);
        let ids: Vec<String> = self.nodes.iter().map(|n| n.id.clone()).collect();
        for id in ids {
            let availability = self.node_mut(&id).availability;
            let count = self.tasks.get_mut(&id).unwrap();
            if availability == Availability::Drain {
                *count = count.saturating_sub(1 + self.rng as usize % 2);
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
            .filter(|n| n.is_manager())
            .all(|m| self.spec.is_target(&m.engine_version));
        if node.role == Role::Worker {
            assert!(
                managers_done,
                "worker {} touched before every manager is upgraded: {:#?}",
                node.hostname, self.history
            );
        }
        if let Action::Update(u) = action
            && node.is_manager()
            && u.event_steps().contains(&EventStep::Reactivate)
        {
            assert!(
                managers_done,
                "manager {} reactivated before every manager is upgraded: {:#?}",
                node.hostname, self.history
            );
        }
        if let Action::Run {
            command: CommandKind::Upgrade,
            ..
        } = action
            && node.is_manager()
        {
            let others_ok = self
                .nodes
                .iter()
                .filter(|m| m.is_manager() && m.id != node.id)
                .all(|m| m.is_healthy());
            assert!(others_ok, "quorum guard broken for {}", node.hostname);
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
        let managers_busy = self
            .nodes
            .iter()
            .filter(|n| n.is_manager())
            .filter(held)
            .count();
        assert!(
            managers_busy <= 1,
            "two managers at once: {:#?}",
            self.history
        );
        let workers_out = self
            .nodes
            .iter()
            .filter(|n| !n.is_manager())
            .filter(|n| {
                n.mark()
                    .and_then(Result::ok)
                    .is_some_and(|m| m.step.holds_node() || m.step == Step::Settling)
            })
            .count();
        assert!(
            workers_out <= self.spec.strategy.max_unavailable_workers as usize,
            "too many workers out: {:#?}",
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
        panic!("no end after {max_steps} steps: {:#?}", self.history);
    }
}

fn random_cluster(seed: u64) -> (Vec<NodeView>, u32) {
    let mut w = World::new(vec![], spec(), seed);
    let managers = [1usize, 3, 5][w.roll(3) as usize];
    let workers = w.roll(6) as usize;
    let mut nodes = vec![];
    for i in 0..managers {
        nodes.push(node(&format!("m{i}"), Role::Manager));
    }
    for i in 0..workers {
        nodes.push(node(&format!("w{i}"), Role::Worker));
    }
    let leader = w.roll(managers as u64) as usize;
    nodes[leader].leader = true;
    for n in nodes.iter_mut() {
        n.availability = match w.roll(6) {
            0 => Availability::Pause,
            1 => Availability::Drain,
            _ => Availability::Active,
        };
        if w.roll(5) == 0 {
            n.engine_version = "26.1.5+dfsg1".into();
        }
    }
    let max_unavailable = 1 + w.roll(3) as u32;
    (nodes, max_unavailable)
}

#[test]
fn whole_rollouts_keep_the_order_and_restore_every_node() {
    for seed in 0..300 {
        let (nodes, max_unavailable) = random_cluster(seed);
        let mut spec = spec();
        spec.strategy.max_unavailable_workers = max_unavailable;
        let mut world = World::new(nodes, spec, seed);
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
        }
        // Managers: each upgraded before any reactivated; the leader's upgrade is the last manager's.
        let first_reactivate = world
            .history
            .iter()
            .position(|h| h.starts_with('m') && h.ends_with(" reactivate"));
        let last_manager_upgrade = world
            .history
            .iter()
            .rposition(|h| h.starts_with('m') && h.ends_with(" upgraded"));
        if let (Some(r), Some(u)) = (first_reactivate, last_manager_upgrade) {
            assert!(u < r, "seed {seed}: {:#?}", world.history);
        }
        let first_worker = world.history.iter().position(|h| h.starts_with('w'));
        if let (Some(w), Some(u)) = (first_worker, last_manager_upgrade) {
            assert!(u < w, "seed {seed}: {:#?}", world.history);
        }
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
    // m2 was upgraded and is held drained; m1 (leader) and the workers were never started.
    assert!(
        world
            .history
            .iter()
            .all(|h| !h.starts_with("m1 ") && !h.starts_with('w'))
    );
    let plan = world.step();
    assert!(plan.actions.is_empty() || plan.actions.iter().all(|a| a.node().hostname == "m2"));
}

#[test]
fn a_failing_health_gate_starts_nothing_and_holds_reactivated_nodes() {
    let mut case = Case::new(cluster());
    case.health = vec!["service test_client: 1/2 running".into()];
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
    case.health = vec!["3 tasks rejected".into()];
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
    let Action::Update(u) = only_action(&case.plan()).clone() else {
        panic!()
    };
    assert_eq!(u.mark, None);
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
            now: case.now,
        })
    };
    let case = Case::new(cluster());
    assert_eq!(drained_node(only_action(&run(&case))), Some("m2"));
    assert_eq!(asked.take(), vec![vec!["m1", "m2", "m3"]]);
    // A later manager (one already holds a mark): only itself.
    let mut nodes = cluster();
    nodes[1].engine_version = NEW.into();
    mark(&mut nodes[1], Step::Ready, t0());
    let case = Case::new(nodes);
    assert_eq!(drained_node(only_action(&run(&case))), Some("m3"));
    assert_eq!(asked.take(), vec![vec!["m3"]]);
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
