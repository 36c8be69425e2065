//! Health gates (`spec.health`): evaluated on bollard model fixtures and on the real engine
//! captures, and the spec section's parsing and validation.

mod common;

use common::capture;

use std::collections::HashMap;
use std::path::Path;

use bollard::models::{
    Node, NodeDescription, NodeSpec, NodeSpecAvailabilityEnum, NodeSpecRoleEnum, NodeState,
    NodeStatus, Service, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, Task, TaskSpec,
    TaskSpecPlacement, TaskState, TaskStatus,
};
use jiff::Timestamp;
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use swarm_upgrade::health::gates::{Gate, GateFailure, GateInput, GateMetrics, evaluate, summary};
use swarm_upgrade::health::prometheus::PrometheusError;
use swarm_upgrade::observe::Observation;
use swarm_upgrade::spec::{BaseUrl, HealthSpec, PrometheusGate, SpecDuration, parse_spec};

// ---------------------------------------------------------------------------------------------
// Fixtures

struct Cluster {
    services: Vec<Service>,
    tasks: Vec<Task>,
    nodes: Vec<Node>,
}

fn captured(version: &str, nodes_file: &str) -> Cluster {
    Cluster {
        services: capture(&format!("{version}/services.json")),
        tasks: capture(&format!("{version}/tasks.json")),
        nodes: capture(&format!("{version}/{nodes_file}")),
    }
}

fn node_id(c: &Cluster, hostname: &str) -> String {
    c.nodes
        .iter()
        .find(|n| n.description.as_ref().unwrap().hostname.as_deref() == Some(hostname))
        .and_then(|n| n.id.clone())
        .unwrap()
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

struct Run<'a> {
    affected: Vec<String>,
    since: Timestamp,
    probe_errors: u64,
    spec: &'a HealthSpec,
    prometheus: Option<Result<usize, PrometheusError>>,
}

impl<'a> Run<'a> {
    fn new(spec: &'a HealthSpec, since: &str) -> Self {
        Self {
            affected: Vec::new(),
            since: ts(since),
            probe_errors: 0,
            spec,
            prometheus: None,
        }
    }
    fn eval(&self, c: &Cluster) -> Vec<GateFailure> {
        let observation =
            Observation::from_engine_models(&c.nodes, &c.services, &[], &c.tasks).unwrap();
        evaluate(&GateInput {
            observation: &observation,
            affected_nodes: &self.affected,
            since: self.since,
            probe_errors: self.probe_errors,
            spec: self.spec,
            prometheus: self.prometheus.as_ref(),
        })
    }
}

fn gates(f: &[GateFailure]) -> Vec<Gate> {
    f.iter().map(|f| f.gate).collect()
}

fn mk_node(id: &str, availability: NodeSpecAvailabilityEnum, state: NodeState) -> Node {
    mk_node_labels(id, availability, state, &[])
}

fn mk_node_labels(
    id: &str,
    availability: NodeSpecAvailabilityEnum,
    state: NodeState,
    labels: &[(&str, &str)],
) -> Node {
    Node {
        id: Some(format!("id-{id}")),
        spec: Some(NodeSpec {
            role: Some(NodeSpecRoleEnum::WORKER),
            availability: Some(availability),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<HashMap<_, _>>(),
            ),
            ..Default::default()
        }),
        description: Some(NodeDescription {
            hostname: Some(id.into()),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            state: Some(state),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn ready(id: &str) -> Node {
    mk_node(id, NodeSpecAvailabilityEnum::ACTIVE, NodeState::READY)
}

fn replicated(name: &str, replicas: i64) -> Service {
    Service {
        id: Some(format!("sid-{name}")),
        spec: Some(ServiceSpec {
            name: Some(name.into()),
            mode: Some(ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated {
                    replicas: Some(replicas),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn global(name: &str, constraints: &[&str]) -> Service {
    Service {
        id: Some(format!("sid-{name}")),
        spec: Some(ServiceSpec {
            name: Some(name.into()),
            mode: Some(ServiceSpecMode {
                global: Some(Default::default()),
                ..Default::default()
            }),
            task_template: Some(TaskSpec {
                placement: Some(TaskSpecPlacement {
                    constraints: Some(constraints.iter().map(|c| c.to_string()).collect()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn job(name: &str) -> Service {
    Service {
        id: Some(format!("sid-{name}")),
        spec: Some(ServiceSpec {
            name: Some(name.into()),
            mode: Some(ServiceSpecMode {
                replicated_job: Some(Default::default()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

static NEXT_TASK: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn task(service: &str, node: &str, desired: TaskState, state: TaskState, at: &str) -> Task {
    let n = NEXT_TASK.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Task {
        id: Some(format!("t{n}")),
        service_id: Some(format!("sid-{service}")),
        node_id: (!node.is_empty()).then(|| format!("id-{node}")),
        desired_state: Some(desired),
        status: Some(TaskStatus {
            state: Some(state),
            timestamp: Some(at.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn running(service: &str, node: &str) -> Task {
    task(
        service,
        node,
        TaskState::RUNNING,
        TaskState::RUNNING,
        "2026-01-01T10:00:00Z",
    )
}

fn problem(service: &str, node: &str, state: TaskState, err: &str, at: &str) -> Task {
    let mut t = task(service, node, TaskState::SHUTDOWN, state, at);
    t.status.as_mut().unwrap().err = Some(err.into());
    t
}

const EXHAUSTED: &str = "node is missing network attachments, ip addresses may be exhausted";

// ---------------------------------------------------------------------------------------------
// The real captures

#[test]
fn capture_20_10_24_rejections_fail_only_when_newer_than_the_step() {
    let c = captured("20.10.24", "nodes.json");
    let spec = HealthSpec::default();
    // The 8 ex_service rejections on n1 are between 07:52:51 and 07:52:57.
    let before = Run::new(&spec, "2026-11-25T07:52:00Z").eval(&c);
    assert_eq!(gates(&before), [Gate::NoNewRejections], "{before:?}");
    let m = &before[0].message;
    assert!(
        m.starts_with("8 tasks rejected since 2026-11-25T07:52:00Z"),
        "{m}"
    );
    assert!(
        m.contains("8× network_attachments_exhausted on n1: ex_service"),
        "{m}"
    );

    // Between the two waves (51.39-51.41 and 56.58): only the second wave counts.
    let between = Run::new(&spec, "2026-11-25T07:52:55Z").eval(&c);
    assert!(
        between[0]
            .message
            .starts_with("4 tasks rejected since 2026-11-25T07:52:55Z"),
        "{between:?}"
    );

    let after = Run::new(&spec, "2026-11-25T07:53:00Z").eval(&c);
    assert!(after.is_empty(), "{after:?}");
    // Exactly the newest rejection's timestamp is not "after" it.
    let at_last = Run::new(&spec, "2026-11-25T07:52:56.586889702Z").eval(&c);
    assert!(at_last.is_empty(), "{at_last:?}");
}

#[test]
fn capture_20_10_24_services_are_converged() {
    // ex_service 24/24 (its rejected tasks were replaced), test_client 2/2, test_service global
    // on all 5 nodes.
    let c = captured("20.10.24", "nodes.json");
    let spec = HealthSpec::default();
    let mut run = Run::new(&spec, "2026-11-25T08:00:00Z");
    assert!(run.eval(&c).is_empty());
    for host in ["n1", "n2", "n3", "n4", "n5"] {
        run.affected = vec![host.to_string()];
        assert!(run.eval(&c).is_empty(), "{host}");
        run.affected = vec![node_id(&c, host)];
        assert!(run.eval(&c).is_empty(), "{host} by ID");
    }
}

#[test]
fn capture_20_10_24_one_client_task_gone_is_not_converged() {
    let mut c = captured("20.10.24", "nodes.json");
    let client_id = c
        .services
        .iter()
        .find(|s| s.spec.as_ref().unwrap().name.as_deref() == Some("test_client"))
        .unwrap()
        .id
        .clone()
        .unwrap();
    let n5 = node_id(&c, "n5");
    // The client task on n5 is being shut down (as when n5 is drained).
    let t = c
        .tasks
        .iter_mut()
        .find(|t| t.service_id.as_deref() == Some(&client_id) && t.node_id.as_deref() == Some(&n5))
        .unwrap();
    t.desired_state = Some(TaskState::SHUTDOWN);
    let spec = HealthSpec::default();
    let mut run = Run::new(&spec, "2026-11-25T08:00:00Z");
    run.affected = vec!["n5".into()];
    let f = run.eval(&c);
    assert_eq!(gates(&f), [Gate::ServicesConverged]);
    assert_eq!(f[0].message, "service test_client: 1/2 running");
    // n4 has no test_client task (not even a past one): the client is not checked for it.
    run.affected = vec!["n4".into()];
    assert!(run.eval(&c).is_empty());
    // n1 holds the other client task.
    run.affected = vec!["n1".into()];
    assert_eq!(gates(&run.eval(&c)), [Gate::ServicesConverged]);
}

#[test]
fn capture_26_1_5_mixed_versions_is_converged_and_has_no_new_rejections() {
    // After n1's upgrade: test_client moved from n1 to n2 (2/2), test_service back on n1.
    let c = captured("26.1.5", "nodes-mixed-versions.json");
    let spec = HealthSpec::default();
    let mut run = Run::new(&spec, "2026-11-25T07:53:00Z");
    run.affected = vec!["n1".into()];
    assert!(run.eval(&c).is_empty(), "{:?}", run.eval(&c));
    // The 8 old rejections are still listed, and count for a step begun before them.
    run.since = ts("2026-11-25T07:50:00Z");
    assert_eq!(gates(&run.eval(&c)), [Gate::NoNewRejections]);
}

// ---------------------------------------------------------------------------------------------
// Services converged, on fixtures

#[test]
fn replicated_counts_only_running_tasks_that_should_run() {
    let spec = HealthSpec::default();
    let run = Run::new(&spec, "2026-01-01T00:00:00Z");
    let mut c = Cluster {
        services: vec![replicated("web", 3)],
        tasks: vec![
            running("web", "a"),
            running("web", "b"),
            task(
                "web",
                "c",
                TaskState::RUNNING,
                TaskState::STARTING,
                "2026-01-01T10:00:00Z",
            ),
            task(
                "web",
                "c",
                TaskState::SHUTDOWN,
                TaskState::RUNNING,
                "2026-01-01T10:00:00Z",
            ),
            task(
                "web",
                "c",
                TaskState::SHUTDOWN,
                TaskState::SHUTDOWN,
                "2026-01-01T10:00:00Z",
            ),
        ],
        nodes: vec![ready("a"), ready("b"), ready("c")],
    };
    let f = run.eval(&c);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].gate, Gate::ServicesConverged);
    assert_eq!(f[0].message, "service web: 2/3 running");
    assert_eq!(
        f[0].to_string(),
        "health gate services_converged failed: service web: 2/3 running"
    );
    c.tasks.push(running("web", "c"));
    assert!(run.eval(&c).is_empty());
    // More running than wanted (a scale-down in progress) is not converged either.
    c.tasks.push(running("web", "a"));
    assert_eq!(run.eval(&c)[0].message, "service web: 4/3 running");
}

#[test]
fn zero_replicas_and_jobs_are_converged() {
    let spec = HealthSpec::default();
    let run = Run::new(&spec, "2026-01-01T00:00:00Z");
    let c = Cluster {
        services: vec![replicated("idle", 0), job("migrate")],
        tasks: vec![task(
            "migrate",
            "a",
            TaskState::COMPLETE,
            TaskState::COMPLETE,
            "2026-01-01T10:00:00Z",
        )],
        nodes: vec![ready("a")],
    };
    assert!(run.eval(&c).is_empty());
}

#[test]
fn global_wants_one_task_per_eligible_node() {
    let spec = HealthSpec::default();
    let run = Run::new(&spec, "2026-01-01T00:00:00Z");
    let mut c = Cluster {
        services: vec![
            global("agent", &[]),
            global("edge", &["node.labels.edge==true"]),
        ],
        nodes: vec![
            mk_node_labels(
                "a",
                NodeSpecAvailabilityEnum::ACTIVE,
                NodeState::READY,
                &[("edge", "true")],
            ),
            ready("b"),
            // Not eligible: drained, paused, down.
            mk_node("c", NodeSpecAvailabilityEnum::DRAIN, NodeState::READY),
            mk_node("d", NodeSpecAvailabilityEnum::PAUSE, NodeState::READY),
            mk_node("e", NodeSpecAvailabilityEnum::ACTIVE, NodeState::DOWN),
        ],
        tasks: vec![
            running("agent", "a"),
            // Still running on the paused node: neither wanted nor counted.
            running("agent", "d"),
            running("edge", "a"),
        ],
    };
    let f = run.eval(&c);
    assert_eq!(gates(&f), [Gate::ServicesConverged]);
    assert_eq!(
        f[0].message,
        "service agent: 1/2 running (global; none on b)"
    );
    c.tasks.push(running("agent", "b"));
    assert!(run.eval(&c).is_empty());
    // Two tasks on one node do not make up for a missing one.
    c.tasks.push(running("agent", "a"));
    c.nodes.push(ready("f"));
    let f = run.eval(&c);
    assert_eq!(
        f[0].message,
        "service agent: 2/3 running (global; none on f)"
    );
}

#[test]
fn only_services_on_the_affected_nodes_are_checked() {
    let spec = HealthSpec::default();
    let mut run = Run::new(&spec, "2026-01-01T00:00:00Z");
    let c = Cluster {
        services: vec![
            replicated("web", 2),
            replicated("db", 1),
            replicated("cache", 1),
        ],
        nodes: vec![ready("a"), ready("b")],
        tasks: vec![
            running("web", "a"),
            // db's only task on b was shut down (b was drained) and is not back yet.
            task(
                "db",
                "b",
                TaskState::SHUTDOWN,
                TaskState::SHUTDOWN,
                "2026-01-01T10:00:00Z",
            ),
            // cache's task was never assigned a node.
            task(
                "cache",
                "",
                TaskState::RUNNING,
                TaskState::PENDING,
                "2026-01-01T10:00:00Z",
            ),
        ],
    };
    run.affected = vec!["a".into()];
    assert_eq!(run.eval(&c)[0].message, "service web: 1/2 running");
    run.affected = vec!["id-b".into()];
    assert_eq!(run.eval(&c)[0].message, "service db: 0/1 running");
    run.affected = vec!["a".into(), "b".into()];
    assert_eq!(
        run.eval(&c)[0].message,
        "service web: 1/2 running, service db: 0/1 running"
    );
    run.affected = vec!["unknown".into()];
    assert!(run.eval(&c).is_empty());
    run.affected = Vec::new();
    assert_eq!(
        run.eval(&c)[0].message,
        "service web: 1/2 running, service db: 0/1 running, service cache: 0/1 running"
    );
}

// ---------------------------------------------------------------------------------------------
// New rejections and failures

#[test]
fn rejections_and_failures_after_since_count_with_their_reasons() {
    let spec = HealthSpec::default();
    let run = Run::new(&spec, "2026-01-01T10:02:03Z");
    let c = Cluster {
        services: vec![replicated("web", 0), replicated("api", 0)],
        nodes: vec![ready("n4"), ready("n5")],
        tasks: vec![
            problem(
                "web",
                "n4",
                TaskState::REJECTED,
                EXHAUSTED,
                "2026-01-01T10:02:04Z",
            ),
            problem(
                "web",
                "n4",
                TaskState::REJECTED,
                EXHAUSTED,
                "2026-01-01T10:02:05Z",
            ),
            problem(
                "api",
                "n4",
                TaskState::REJECTED,
                EXHAUSTED,
                "2026-01-01T10:02:05.5Z",
            ),
            problem(
                "api",
                "n5",
                TaskState::FAILED,
                "task: non-zero exit (1)",
                "2026-01-01T10:03:00+00:00",
            ),
            // Older, exactly at `since`, no timestamp, unparseable: not counted.
            problem(
                "web",
                "n5",
                TaskState::REJECTED,
                EXHAUSTED,
                "2026-01-01T10:02:02Z",
            ),
            problem(
                "web",
                "n5",
                TaskState::REJECTED,
                EXHAUSTED,
                "2026-01-01T10:02:03Z",
            ),
            {
                let mut t = problem("web", "n5", TaskState::FAILED, "x", "");
                t.status.as_mut().unwrap().timestamp = None;
                t
            },
            problem("web", "n5", TaskState::FAILED, "x", "yesterday"),
            // Not a problem state.
            task(
                "web",
                "n5",
                TaskState::SHUTDOWN,
                TaskState::SHUTDOWN,
                "2026-01-01T10:05:00Z",
            ),
        ],
    };
    let f = run.eval(&c);
    assert_eq!(gates(&f), [Gate::NoNewRejections]);
    assert_eq!(
        f[0].message,
        "3 tasks rejected and 1 failed since 2026-01-01T10:02:03Z \
         (3× network_attachments_exhausted on n4: api, web; 1× other on n5: api)"
    );
}

#[test]
fn rejection_of_an_unknown_service_on_no_node_is_named_by_id() {
    let spec = HealthSpec::default();
    let run = Run::new(&spec, "2026-01-01T00:00:00Z");
    let c = Cluster {
        services: vec![],
        nodes: vec![],
        tasks: vec![problem(
            "gone",
            "",
            TaskState::REJECTED,
            "no suitable node (scheduling constraints not satisfied on 5 nodes)",
            "2026-01-01T00:00:01Z",
        )],
    };
    assert_eq!(
        run.eval(&c)[0].message,
        "1 task rejected since 2026-01-01T00:00:00Z (1× no_suitable_node on no node: sid-gone)"
    );
}

// ---------------------------------------------------------------------------------------------
// Connectivity and Prometheus

fn empty() -> Cluster {
    Cluster {
        services: vec![],
        tasks: vec![],
        nodes: vec![],
    }
}

#[test]
fn probe_errors_within_the_budget_pass() {
    let mut spec = HealthSpec::default();
    let c = empty();
    let mut run = Run::new(&spec, "2026-01-01T00:00:00Z");
    assert!(run.eval(&c).is_empty());
    run.probe_errors = 4;
    let f = run.eval(&c);
    assert_eq!(gates(&f), [Gate::ConnectivityErrors]);
    assert_eq!(f[0].message, "4 probe errors > maxConnectivityErrors 0");
    spec.max_connectivity_errors = 4;
    let mut run = Run::new(&spec, "2026-01-01T00:00:00Z");
    run.probe_errors = 4;
    assert!(run.eval(&c).is_empty());
    run.probe_errors = 5;
    assert_eq!(
        run.eval(&c)[0].message,
        "5 probe errors > maxConnectivityErrors 4"
    );
}

#[test]
fn prometheus_gate_fails_on_series_errors_and_missing_results() {
    let c = empty();
    let query = r#"ALERTS{alertstate="firing"}"#;
    let spec = HealthSpec {
        prometheus: Some(PrometheusGate {
            url: "http://prometheus:9090".into(),
            query: query.into(),
            timeout: SpecDuration::from_secs(5),
        }),
        ..HealthSpec::default()
    };
    let mut run = Run::new(&spec, "2026-01-01T00:00:00Z");
    let msg = |run: &Run| {
        let f = run.eval(&c);
        assert_eq!(gates(&f), [Gate::PrometheusQuery]);
        f[0].message.clone()
    };
    assert_eq!(msg(&run), format!("query {query:?} not evaluated yet"));
    run.prometheus = Some(Ok(0));
    assert!(run.eval(&c).is_empty());
    run.prometheus = Some(Ok(2));
    assert_eq!(msg(&run), format!("query {query:?} returned 2 series"));
    run.prometheus = Some(Ok(1));
    assert_eq!(msg(&run), format!("query {query:?} returned 1 series"));
    run.prometheus = Some(Err(PrometheusError::Refused {
        base: BaseUrl::parse("http://prometheus:9090").unwrap(),
        detail: "connection refused".into(),
    }));
    let m = msg(&run);
    assert!(
        m.starts_with(&format!(
            "query {query:?} could not be run: Prometheus at http://prometheus:9090"
        )) && m.ends_with("refused the query: connection refused"),
        "{m}"
    );
    // Not configured: a result is ignored.
    let none = HealthSpec::default();
    let mut run = Run::new(&none, "2026-01-01T00:00:00Z");
    run.prometheus = Some(Ok(3));
    assert!(run.eval(&c).is_empty());
}

#[test]
fn every_failing_gate_is_reported_in_order() {
    let spec = HealthSpec {
        prometheus: Some(PrometheusGate {
            url: "http://p:9090".into(),
            query: "up == 0".into(),
            timeout: SpecDuration::from_secs(5),
        }),
        ..HealthSpec::default()
    };
    let c = Cluster {
        services: vec![replicated("web", 1)],
        nodes: vec![ready("a")],
        tasks: vec![problem(
            "web",
            "a",
            TaskState::REJECTED,
            EXHAUSTED,
            "2026-01-01T00:00:01Z",
        )],
    };
    let mut run = Run::new(&spec, "2026-01-01T00:00:00Z");
    run.probe_errors = 1;
    run.prometheus = Some(Ok(1));
    let f = run.eval(&c);
    assert_eq!(gates(&f), Gate::ALL);
    let s = summary(&f);
    assert!(s.starts_with("health gate services_converged failed: service web: 0/1 running; health gate no_new_rejections failed: 1 task rejected"), "{s}");
    let json = serde_json::to_value(&f[2]).unwrap();
    assert_eq!(json["gate"], "connectivity_errors");
}

#[test]
fn gate_names_round_trip() {
    let names: Vec<&str> = Gate::ALL.iter().map(|g| g.name()).collect();
    assert_eq!(
        names,
        [
            "services_converged",
            "no_new_rejections",
            "connectivity_errors",
            "prometheus_query"
        ]
    );
    for g in Gate::ALL {
        assert_eq!(Gate::from_name(g.name()), Some(g));
        assert_eq!(g.to_string(), g.name());
    }
    assert_eq!(Gate::from_name("nope"), None);
}

#[test]
fn gate_metrics_export_failing_gates_and_count_transitions() {
    let mut registry = Registry::with_prefix("swarm_upgrade");
    let m = GateMetrics::register(&mut registry);
    let fail = |g| GateFailure {
        gate: g,
        message: String::new(),
    };
    m.record(&[fail(Gate::NoNewRejections)]);
    m.record(&[fail(Gate::NoNewRejections), fail(Gate::ConnectivityErrors)]);
    m.record(&[]);
    m.record(&[fail(Gate::NoNewRejections)]);
    assert!(m.is_failing(Gate::NoNewRejections));
    assert!(!m.is_failing(Gate::ConnectivityErrors));
    assert_eq!(m.failures_total(Gate::NoNewRejections), 2);
    assert_eq!(m.failures_total(Gate::ConnectivityErrors), 1);
    assert_eq!(m.failures_total(Gate::ServicesConverged), 0);
    let mut text = String::new();
    encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("swarm_upgrade_health_gate_failing{gate=\"no_new_rejections\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("swarm_upgrade_health_gate_failing{gate=\"prometheus_query\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("swarm_upgrade_health_gate_failures_total{gate=\"no_new_rejections\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("swarm_upgrade_health_gate_failures_total{gate=\"services_converged\"} 0"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// The spec section

const BASE: &str = r#"apiVersion: swarm-upgrade.io/v1alpha1
kind: EngineUpgrade
metadata:
  name: engine-26
spec:
  version: "26.1.5"
  upgrade:
    command: ["/opt/upgrade-engine", "{hostname}"]
"#;

fn parse(health: &str) -> Result<HealthSpec, String> {
    let text = format!("{BASE}  health:\n{health}");
    parse_spec(&text, Path::new("s.yaml"))
        .map(|d| d.spec.health)
        .map_err(|e| e.to_string())
}

#[test]
fn health_section_parses_with_defaults() {
    let doc = parse_spec(BASE, Path::new("s.yaml")).unwrap();
    assert_eq!(doc.spec.health, HealthSpec::default());
    assert!(doc.spec.health.is_default());
    // Left out when serialized, so existing specs keep their hash.
    let json = serde_json::to_value(&doc.spec).unwrap();
    assert!(json.get("health").is_none());

    let h = parse(
        r#"    probes:
      - target: "tasks.web:80"
      - target: http://tasks.api:8080/healthz
        interval: 2s
        timeout: 500ms
        expectStatus: 204
    maxConnectivityErrors: 3
    prometheus:
      url: http://prometheus:9090
      query: 'ALERTS{alertstate="firing",severity="critical"}'
    resumeWhenHealthy: true
"#,
    )
    .unwrap();
    assert_eq!(h.probes.len(), 2);
    assert_eq!(h.probes[0].target, "tasks.web:80");
    assert_eq!(h.probes[0].interval.get().as_secs(), 1);
    assert_eq!(h.probes[0].timeout.get().as_secs(), 1);
    assert_eq!(h.probes[0].expect_status, None);
    assert_eq!(h.probes[1].interval.get().as_secs(), 2);
    assert_eq!(h.probes[1].timeout.get().as_millis(), 500);
    assert_eq!(h.probes[1].expect_status, Some(204));
    assert_eq!(h.max_connectivity_errors, 3);
    let p = h.prometheus.as_ref().unwrap();
    assert_eq!(
        p.query,
        r#"ALERTS{alertstate="firing",severity="critical"}"#
    );
    assert_eq!(p.timeout.get().as_secs(), 10);
    assert!(h.resume_when_healthy);
    assert!(!h.is_default());
}

#[test]
fn health_errors_name_line_column_and_fix() {
    // BASE has 8 lines; `health:` is line 9, its first entry line 10.
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "    probes:\n      - target: web\n",
            "s.yaml:11:17:",
            &[
                "health.probes[0].target",
                "the port is missing",
                "HOST:PORT",
            ],
        ),
        (
            "    probes:\n      - target: \"a:1\"\n      - target: \"https://x/\"\n",
            "s.yaml:12:17:",
            &["health.probes[1].target", "https is not", "http://HOST"],
        ),
        (
            "    probes:\n      - target: \"a:1\"\n      - target: \" a:1 \"\n",
            "s.yaml:12:17:",
            &[
                "already probed by health.probes[0]",
                "list each target once",
            ],
        ),
        (
            "    probes:\n      - target: \"a:1\"\n        interval: 0s\n",
            "s.yaml:12:9:",
            &["health.probes[0].interval is zero", "interval: 1s"],
        ),
        (
            "    probes:\n      - target: \"a:1\"\n        timeout: 0ms\n",
            "s.yaml:12:9:",
            &["health.probes[0].timeout is zero"],
        ),
        (
            "    probes:\n      - target: \"a:1\"\n        expectStatus: 200\n",
            "s.yaml:12:9:",
            &["TCP target", "http://a:1/"],
        ),
        (
            "    probes:\n      - target: http://a/\n        expectStatus: 99\n",
            "s.yaml:12:23:",
            &[
                "expectStatus 99 is not an HTTP status",
                "between 100 and 599",
            ],
        ),
        (
            "    probes:\n      - target: http://a/\n        expectStatus: 7000\n",
            "s.yaml:12:",
            &["expectStatus"],
        ),
        (
            "    prometheus:\n      url: https://p:9090\n      query: up\n",
            "s.yaml:11:12:",
            &[
                "health.prometheus.url",
                "https is not",
                "url: http://prometheus:9090",
            ],
        ),
        (
            "    prometheus:\n      url: http://p:9090\n      query: \" \"\n",
            "s.yaml:12:7:",
            &["health.prometheus.query is empty"],
        ),
        (
            "    prometheus:\n      url: http://p:9090\n",
            "s.yaml:10:",
            &["missing field `query`"],
        ),
        (
            "    prometheus:\n      url: http://p:9090\n      query: up\n      timeout: 0s\n",
            "s.yaml:13:7:",
            &["health.prometheus.timeout is zero"],
        ),
        (
            "    maxConnectivityErrors: -1\n",
            "s.yaml:10:28:",
            &["invalid u64"],
        ),
        (
            "    resumeWhenHealty: true\n",
            "s.yaml:10:5:",
            &[
                "unknown field `resumeWhenHealty`",
                "did you mean `resumeWhenHealthy`",
            ],
        ),
        (
            "    probes:\n      - target: \"a:1\"\n        expect: 200\n",
            "s.yaml:12:9:",
            &["unknown field `expect`"],
        ),
    ];
    for (health, at, needles) in cases {
        let e = parse(health).expect_err(health);
        assert!(e.starts_with(at), "{health}\n{e}");
        for n in *needles {
            assert!(e.contains(n), "{health}\nmissing {n:?} in\n{e}");
        }
    }
}
