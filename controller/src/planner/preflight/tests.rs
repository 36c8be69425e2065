//! Each pre-flight check through the whole planner: what refuses (nothing is drained), what only
//! warns, when the checks no longer apply, and how a blocking service holds its node.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::cluster::{Availability, NodeView, Role};
use crate::marks::{Mark, Step};
use crate::planner::{Action, Plan, PlanInput, plan};
use crate::spec::{NodeSelector, SpecDuration, Strategy, UpgradeSpec};

const OLD: &str = "20.10.24+dfsg1";
const TARGET: &str = "26.1.5";

fn spec(version: &str) -> EngineUpgradeSpec {
    EngineUpgradeSpec {
        version: version.into(),
        upgrade: UpgradeSpec {
            command: vec!["/bin/true".into()],
            rollback: None,
            timeout: SpecDuration::from_secs(60),
            unlock_key: None,
        },
        strategy: Strategy::default(),
        node_selector: NodeSelector::default(),
        window: None,
        health: Default::default(),
        notify: Default::default(),
    }
}

fn node(id: &str, role: Role, version: &str) -> NodeView {
    NodeView {
        id: id.into(),
        hostname: id.into(),
        role,
        leader: id == "m1",
        availability: Availability::Active,
        state: State::Ready,
        reachable: role == Role::Manager,
        engine_version: version.into(),
        addr: format!("10.0.0.{}", id.len()),
        labels: BTreeMap::new(),
        version_index: 10,
        locked: false,
        runs_manager: Some(role == Role::Manager),
    }
}

/// `managers` managers m1 (leader).., two workers w1 w2, all at `version`.
fn swarm(managers: usize, version: &str) -> Vec<NodeView> {
    let mut nodes: Vec<NodeView> = (1..=managers)
        .map(|i| node(&format!("m{i}"), Role::Manager, version))
        .collect();
    nodes.extend(["w1", "w2"].map(|w| node(w, Role::Worker, version)));
    nodes
}

struct Case {
    spec: EngineUpgradeSpec,
    snapshot: Snapshot,
    workload: Workload,
}

impl Case {
    fn new(nodes: Vec<NodeView>) -> Self {
        Self {
            spec: spec(TARGET),
            snapshot: Snapshot {
                nodes,
                ..Snapshot::default()
            },
            workload: Workload::default(),
        }
    }

    fn node(&mut self, id: &str) -> &mut NodeView {
        self.snapshot.nodes.iter_mut().find(|n| n.id == id).unwrap()
    }

    fn plan(&self) -> Plan {
        plan(&PlanInput {
            spec: &self.spec,
            spec_hash: "h1",
            snapshot: &self.snapshot,
            running_commands: &BTreeSet::new(),
            ended_commands: &BTreeMap::new(),
            drain_check: &|_: &[&str]| None,
            health_failures: &[],
            lingering_endpoints: &BTreeMap::new(),
            ssh_failures: &BTreeMap::new(),
            workload: &self.workload,
            now: t0(),
        })
    }
}

fn t0() -> Timestamp {
    "2026-11-25T10:00:00Z".parse().unwrap()
}

/// The node under way at `step`, as the operator's labels say.
fn mark(node: &mut NodeView, step: Step) {
    Mark {
        step,
        previous: Availability::Active,
        target: TARGET.into(),
        from_version: OLD.into(),
        since: t0(),
        reason: None,
        spec_hash: None,
        demoted: false,
    }
    .write_to(&mut node.labels);
}

fn refusals(plan: &Plan) -> Vec<(Check, Option<&str>)> {
    (plan.preflight.iter())
        .filter(|f| f.refuses)
        .map(|f| (f.check, f.node.as_deref()))
        .collect()
}

fn started(plan: &Plan) -> Vec<&str> {
    (plan.actions.iter())
        .filter(|a| matches!(a, Action::Start(_)))
        .map(|a| a.node().id.as_str())
        .collect()
}

/// The refusal is shown as a problem blocker and nothing is drained.
fn assert_refused(plan: &Plan, check: Check, node: Option<&str>, says: &[&str]) {
    assert_eq!(refusals(plan), vec![(check, node)], "{:#?}", plan.preflight);
    assert!(started(plan).is_empty(), "{:#?}", plan.actions);
    let blocker = (plan.blockers.iter())
        .find(|b| b.kind == BlockerKind::Preflight)
        .expect("a pre-flight blocker");
    assert!(blocker.kind.is_problem());
    assert_eq!(blocker.node.as_deref(), node);
    for word in says.iter().chain(&[check.name(), "nothing is drained"]) {
        assert!(
            blocker.message.contains(word),
            "{word}: {}",
            blocker.message
        );
    }
}

#[test]
fn a_healthy_swarm_starts_with_a_warning_for_the_jump_of_four_majors() {
    let plan = Case::new(swarm(3, OLD)).plan();
    assert!(refusals(&plan).is_empty(), "{:#?}", plan.preflight);
    assert_eq!(started(&plan), vec!["m2"]);
    let warnings: Vec<&Finding> = plan.preflight.iter().filter(|f| !f.refuses).collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert_eq!(warnings[0].check, Check::MajorVersionJump);
    assert!(
        warnings[0].message.contains("4 major releases")
            && warnings[0].message.contains("m1, m2, m3, w1, w2 at 20.x"),
        "{}",
        warnings[0].message
    );
    let blocker = (plan.blockers.iter())
        .find(|b| b.kind == BlockerKind::PreflightWarning)
        .unwrap();
    assert!(!blocker.kind.is_problem());
}

#[test]
fn major_releases_count_the_releases_not_the_numbers() {
    assert_eq!(major_releases(20, 23), 1, "21 and 22 were never released");
    assert_eq!(major_releases(20, 26), 4);
    assert_eq!(major_releases(26, 27), 1);
    assert_eq!(major_releases(29, 31), 2, "past the list: by number");
    assert_eq!(major_releases(26, 20), 0);
    let mut case = Case::new(swarm(3, "23.0.15"));
    case.spec.version = "24.0.9".into();
    assert!(case.plan().preflight.is_empty());
}

#[test]
fn a_downgrade_is_refused_unless_allowed() {
    let mut case = Case::new(swarm(3, OLD));
    case.node("w2").engine_version = "27.0.3".into();
    assert_refused(
        &case.plan(),
        Check::Downgrade,
        Some("w2"),
        &[
            "w2 runs 27.0.3",
            "newer than the target 26.1.5",
            "allowDowngrade",
        ],
    );
    case.spec.strategy.allow_downgrade = true;
    let plan = case.plan();
    assert!(refusals(&plan).is_empty());
    assert_eq!(started(&plan), vec!["m2"]);
}

#[test]
fn a_downgrade_is_refused_during_the_rollout_too() {
    let mut case = Case::new(swarm(3, OLD));
    mark(case.node("m2"), Step::Draining);
    case.node("w2").engine_version = "26.1.6".into();
    let plan = case.plan();
    assert_eq!(refusals(&plan), vec![(Check::Downgrade, Some("w2"))]);
}

#[test]
fn a_worker_down_or_unknown_is_refused_before_the_first_drain() {
    for state in [State::Down, State::Unknown] {
        let mut case = Case::new(swarm(3, OLD));
        case.node("w1").state = state;
        assert_refused(
            &case.plan(),
            Check::NodeNotReady,
            Some("w1"),
            &[&format!("worker w1 is {state}"), "swarm-upgrade.hold"],
        );
    }
}

#[test]
fn once_under_way_the_checks_leave_it_to_the_rollout_rules() {
    // A node carries a mark.
    let mut case = Case::new(swarm(3, OLD));
    mark(case.node("m2"), Step::Upgrading);
    case.node("w1").state = State::Unknown;
    case.snapshot.live_restore.insert("m3".into());
    assert!(case.plan().preflight.is_empty());
    // No mark, but the managers are at the target and the workers not (between two phases).
    let mut case = Case::new(swarm(3, TARGET));
    for w in ["w1", "w2"] {
        case.node(w).engine_version = OLD.into();
    }
    case.node("w1").state = State::Down;
    let plan = case.plan();
    assert!(plan.preflight.is_empty(), "{:#?}", plan.preflight);
    assert_eq!(started(&plan), vec!["w2"]);
    assert!(
        plan.blockers
            .iter()
            .any(|b| b.kind == BlockerKind::NodeDown)
    );
}

#[test]
fn an_unreachable_manager_is_refused_with_what_is_left_of_quorum() {
    let mut case = Case::new(swarm(3, OLD));
    case.node("m3").reachable = false;
    assert_refused(
        &case.plan(),
        Check::ManagerUnreachable,
        Some("m3"),
        &[
            "manager m3 is ready but not reachable by raft",
            "2 of 3 managers are up for a quorum of 2",
            "docker node demote m3",
        ],
    );
}

#[test]
fn an_even_number_of_managers_is_refused_with_its_margin() {
    let plan = Case::new(swarm(4, OLD)).plan();
    assert_refused(
        &plan,
        Check::EvenManagers,
        None,
        &[
            "4 managers: quorum is 3",
            "tolerates 1 manager(s) down, no more than 3 would",
            "one more manager lost stops the swarm's control plane (margin 0)",
            "docker node promote",
        ],
    );
    let plan = Case::new(swarm(2, OLD)).plan();
    assert_refused(
        &plan,
        Check::EvenManagers,
        None,
        &["2 managers: quorum is 2", "has no quorum"],
    );
    let plan = Case::new(swarm(6, OLD)).plan();
    assert_refused(
        &plan,
        Check::EvenManagers,
        None,
        &["only 1 more may be lost"],
    );
    assert!(refusals(&Case::new(swarm(1, OLD)).plan()).is_empty());
}

#[test]
fn an_engine_with_live_restore_is_refused() {
    let mut case = Case::new(swarm(3, OLD));
    case.snapshot.live_restore.insert("m3".into());
    assert_refused(
        &case.plan(),
        Check::LiveRestore,
        Some("m3"),
        &[
            "m3 runs with live-restore on",
            "incompatible with swarm mode",
            "daemon.json",
        ],
    );
}

#[test]
fn live_restore_is_read_from_each_engines_own_info() {
    let mut on: SystemInfo = swarm_sim::captures::json("20.10.24/info.json");
    on.live_restore_enabled = Some(true);
    let id = on.swarm.as_ref().unwrap().node_id.clone().unwrap();
    let off: SystemInfo = swarm_sim::captures::json("20.10.24/info.json");
    let mut snapshot = Snapshot::default();
    observe_live_restore(&mut snapshot, &[on]);
    assert_eq!(snapshot.live_restore, BTreeSet::from([id]));
    observe_live_restore(&mut snapshot, &[off]);
    assert!(snapshot.live_restore.is_empty());
}

#[test]
fn unconverged_services_and_recent_rejections_are_refused() {
    let mut case = Case::new(swarm(3, OLD));
    case.workload.unconverged = vec!["service web: 1/2 running".into()];
    assert_refused(
        &case.plan(),
        Check::UnconvergedServices,
        None,
        &["service web: 1/2 running", "docker service ps"],
    );
    case.workload.unconverged.clear();
    case.workload.recent_rejections =
        Some("2 task(s) rejected (2× web on w1: no suitable node)".into());
    assert_refused(
        &case.plan(),
        Check::RejectedTasks,
        None,
        &["2 task(s) rejected (2× web on w1", "for 5 minutes"],
    );
}

/// The lab's captured services and tasks (20.10.24), `test_client` labelled `backup=true`.
fn captured(label_client: bool) -> Observation {
    let read = |f: &str| swarm_sim::captures::read(&format!("20.10.24/{f}"));
    let mut services: serde_json::Value = serde_json::from_str(&read("services.json")).unwrap();
    if label_client {
        for s in services.as_array_mut().unwrap() {
            if s["Spec"]["Name"] == "test_client" {
                s["Spec"]["Labels"] = serde_json::json!({"backup": "true"});
            }
        }
    }
    Observation::from_json(
        read("nodes.json").as_bytes(),
        services.to_string().as_bytes(),
        read("networks.json").as_bytes(),
        read("tasks.json").as_bytes(),
    )
    .unwrap()
}

#[test]
fn the_workload_reads_blocking_services_by_their_labels_and_the_swarms_health() {
    let observation = captured(true);
    let mut spec = spec(TARGET);
    spec.health.blocking_services.labels = BTreeMap::from([("backup".into(), "true".into())]);
    let snapshot = observation.snapshot();
    let workload = Workload::observe(&spec, &snapshot, &observation, t0());
    let client = observation
        .services()
        .find(|s| s.name() == "test_client")
        .unwrap();
    let client_nodes: BTreeSet<String> = observation
        .tasks_of(&client.id)
        .filter(|t| occupies_node(t.state()))
        .filter_map(|t| t.node().map(str::to_string))
        .collect();
    assert!(!client_nodes.is_empty());
    assert_eq!(
        workload.blocking.keys().cloned().collect::<BTreeSet<_>>(),
        client_nodes
    );
    assert!(
        (workload.blocking.values()).all(|s| s == &BTreeSet::from(["test_client".to_string()]))
    );
    // Without the label (or the spec's selector) nothing blocks.
    let unlabelled = captured(false);
    let snapshot = unlabelled.snapshot();
    assert!(
        Workload::observe(&spec, &snapshot, &unlabelled, t0())
            .blocking
            .is_empty()
    );
    // Under way, the whole-swarm part is not read.
    let mut marked = snapshot.clone();
    mark(&mut marked.nodes[0], Step::Draining);
    let health = Workload::observe(&spec, &marked, &unlabelled, t0());
    assert!(health.unconverged.is_empty() && health.recent_rejections.is_none());
}

#[test]
fn a_node_running_a_blocking_service_is_held_until_its_task_is_gone() {
    let mut case = Case::new(swarm(3, TARGET));
    for w in ["w1", "w2"] {
        case.node(w).engine_version = OLD.into();
    }
    case.spec.health.blocking_services.labels = BTreeMap::from([("backup".into(), "true".into())]);
    case.workload.blocking = BTreeMap::from([("w1".into(), BTreeSet::from(["nightly".into()]))]);
    let plan = case.plan();
    assert_eq!(started(&plan), vec!["w2"], "the next worker goes instead");
    let blocker = (plan.blockers.iter())
        .find(|b| b.kind == BlockerKind::BlockingService)
        .unwrap();
    assert_eq!(blocker.node.as_deref(), Some("w1"));
    assert!(!blocker.kind.is_problem());
    for word in ["not draining w1", "nightly", "backup=true"] {
        assert!(blocker.message.contains(word), "{}", blocker.message);
    }
    case.workload.blocking.clear();
    assert_eq!(started(&case.plan()), vec!["w1"]);
}

#[test]
fn rejections_of_the_last_five_minutes_are_read_from_the_lab_capture() {
    // The capture holds 8 tasks rejected around 07:52:51-07:52:57 (address exhaustion).
    let observation = captured(false);
    let snapshot = observation.snapshot();
    let spec = spec(TARGET);
    let at = |t: &str| t.parse::<Timestamp>().unwrap();
    let soon = Workload::observe(&spec, &snapshot, &observation, at("2026-11-25T07:55:00Z"));
    let rejections = soon.recent_rejections.expect("recent rejections");
    assert!(
        rejections.starts_with("8 task(s) rejected ("),
        "{rejections}"
    );
    assert!(
        rejections.contains("ex_service on")
            && rejections.contains("ip addresses may be exhausted"),
        "{rejections}"
    );
    let later = Workload::observe(&spec, &snapshot, &observation, at("2026-11-25T08:05:00Z"));
    assert_eq!(later.recent_rejections, None);
    // Nothing left to start (every node at the target): the swarm is not scanned.
    let done = self::spec("20.10.24");
    let idle = Workload::observe(&done, &snapshot, &observation, at("2026-11-25T07:55:00Z"));
    assert_eq!(idle, Workload::default());
}

#[test]
fn rejections_are_timed_on_the_managers_clock_when_it_runs_ahead_of_ours() {
    // Our clock is an hour behind the managers': their last node write, an hour after the
    // capture's rejections, is the swarm's time, and the rejections are old on it.
    let observation = captured(false);
    let spec = spec(TARGET);
    let at = |t: &str| t.parse::<Timestamp>().unwrap();
    let ours = at("2026-11-25T07:10:00Z");
    assert_eq!(
        observation.swarm_now(ours),
        at("2026-11-25T07:52:21.274079714Z")
    );
    let snapshot = observation.snapshot();
    let fresh = Workload::observe(&spec, &snapshot, &observation, ours);
    assert!(
        fresh.recent_rejections.is_some(),
        "a minute before the last node write"
    );
    let mut nodes: serde_json::Value =
        serde_json::from_str(&swarm_sim::captures::read("20.10.24/nodes.json")).unwrap();
    nodes[0]["UpdatedAt"] = "2026-11-25T08:52:00Z".into();
    let read = |f: &str| swarm_sim::captures::read(&format!("20.10.24/{f}"));
    let later = Observation::from_json(
        nodes.to_string().as_bytes(),
        read("services.json").as_bytes(),
        read("networks.json").as_bytes(),
        read("tasks.json").as_bytes(),
    )
    .unwrap();
    let snapshot = later.snapshot();
    assert_eq!(later.swarm_now(ours), at("2026-11-25T08:52:00Z"));
    let workload = Workload::observe(&spec, &snapshot, &later, ours);
    assert_eq!(workload.recent_rejections, None);
}

#[test]
fn blocking_services_alone_turn_no_health_gate_on() {
    let mut health = HealthSpec::default();
    health
        .blocking_services
        .labels
        .insert("backup".into(), "true".into());
    assert!(!health.is_default() && !health.has_gates());
    health.max_connectivity_errors = 1;
    assert!(health.has_gates());
}
