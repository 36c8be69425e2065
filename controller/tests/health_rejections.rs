//! RejectionTracker and the health metric families.

mod common;

use common::{capture, obs};

use bollard::models::{Network, Node, Service, Task, TaskState, TaskStatus};
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use swarm_upgrade::health::{HealthMetrics, Reason, RejectionTracker, network_usage};

/// The captured services and nodes, which name the tasks' service and node IDs.
fn names(version: &str, nodes_file: &str) -> (Vec<Service>, Vec<Node>) {
    (
        capture(&format!("{version}/services.json")),
        capture(&format!("{version}/{nodes_file}")),
    )
}

fn failed_task(id: usize, err: &str) -> Task {
    Task {
        id: Some(format!("task{id}")),
        service_id: Some("svc".into()),
        node_id: Some("node".into()),
        status: Some(TaskStatus {
            state: Some(TaskState::FAILED),
            err: Some(err.into()),
            timestamp: Some(format!("2026-01-01T00:00:{:02}Z", id % 60)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn each_captured_rejection_is_reported_once() {
    let tasks: Vec<Task> = capture("20.10.24/tasks.json");
    let (svc, nodes) = names("20.10.24", "nodes.json");
    let mut tracker = RejectionTracker::new();
    let first = tracker.observe(&obs(&nodes, &svc, &[], &tasks));
    assert_eq!(first.len(), 8);
    for p in &first {
        assert_eq!(p.service, "ex_service");
        assert_eq!(p.node, "n1");
        assert_eq!(p.state, TaskState::REJECTED);
        assert_eq!(p.reason, Reason::NetworkAttachmentsExhausted);
        assert!(p.err.contains("ip addresses may be exhausted"));
        assert!(p.timestamp.as_deref().unwrap().starts_with("2026-11-25T"));
        assert!(p.to_string().contains("network_attachments_exhausted"));
    }
    // Oldest first.
    let stamps: Vec<_> = first.iter().map(|p| p.timestamp.clone()).collect();
    let mut sorted = stamps.clone();
    sorted.sort();
    assert_eq!(stamps, sorted);
    assert!(tracker.observe(&obs(&nodes, &svc, &[], &tasks)).is_empty());
    assert_eq!(tracker.len(), 8);

    // The later capture holds the same 8 rejections and no new problem.
    let later: Vec<Task> = capture("26.1.5/tasks.json");
    let (svc, nodes) = names("26.1.5", "nodes-mixed-versions.json");
    assert!(tracker.observe(&obs(&nodes, &svc, &[], &later)).is_empty());
}

#[test]
fn unknown_names_fall_back_to_ids_and_prime_skips_history() {
    let tasks: Vec<Task> = capture("20.10.24/tasks.json");
    let mut tracker = RejectionTracker::new();
    let got = tracker.observe(&obs(&[], &[], &[], &tasks));
    assert!(
        got.iter()
            .all(|p| p.service == "kfwgh4mng4wqku69zv78hama2"
                && p.node == "vxjq0cv3dil4s9lvvvxfouwg4")
    );

    let mut primed = RejectionTracker::new();
    primed.prime(&obs(&[], &[], &[], &tasks));
    assert!(primed.observe(&obs(&[], &[], &[], &tasks)).is_empty());
}

#[test]
fn a_state_change_is_a_new_problem_and_vanished_tasks_are_forgotten() {
    let mut tracker = RejectionTracker::new();
    let mut t = failed_task(1, "task: non-zero exit (1)");
    assert_eq!(
        tracker
            .observe(&obs(&[], &[], &[], std::slice::from_ref(&t)))
            .len(),
        1
    );
    t.status.as_mut().unwrap().state = Some(TaskState::REJECTED);
    let again = tracker.observe(&obs(&[], &[], &[], std::slice::from_ref(&t)));
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].state, TaskState::REJECTED);
    assert_eq!(again[0].reason, Reason::Other);
    assert!(tracker.observe(&obs(&[], &[], &[], &[])).is_empty());
    assert!(tracker.is_empty());
}

#[test]
fn memory_stays_bounded_over_a_long_run() {
    let mut tracker = RejectionTracker::new();
    let mut reported = 0usize;
    // A sliding window of 50 failed tasks, one new per round, for 20 000 rounds.
    for round in 0..20_000usize {
        let start = round.saturating_sub(49);
        let listing: Vec<Task> = (start..=round)
            .map(|i| failed_task(i, "No such image: x"))
            .collect();
        reported += tracker.observe(&obs(&[], &[], &[], &listing)).len();
        assert!(tracker.len() <= 50);
    }
    assert_eq!(reported, 20_000);

    // A hard cap below the listing's size.
    let mut capped = RejectionTracker::with_max_entries(10);
    let listing: Vec<Task> = (0..100).map(|i| failed_task(i, "x")).collect();
    assert_eq!(capped.observe(&obs(&[], &[], &[], &listing)).len(), 10);
    assert_eq!(capped.len(), 10);
}

fn encode_text(registry: &Registry) -> String {
    let mut out = String::new();
    encode(&mut out, registry).unwrap();
    out
}

#[test]
fn metrics_come_out_with_the_fixed_names() {
    let mut registry = Registry::with_prefix("swarm_upgrade");
    let metrics = HealthMetrics::register(&mut registry);

    let tasks: Vec<Task> = capture("20.10.24/tasks.json");
    let (svc, nodes_by_id) = names("20.10.24", "nodes.json");
    let mut tracker = RejectionTracker::new();
    let problems = tracker.observe(&obs(&nodes_by_id, &svc, &[], &tasks));
    metrics.record_problems(&problems);
    metrics.record_problems(&tracker.observe(&obs(&nodes_by_id, &svc, &[], &tasks)));
    let lone = obs(
        &[],
        &[],
        &[],
        &[failed_task(
            7,
            "error while removing network: unknown network tnet id x",
        )],
    );
    metrics.record_problems(&[swarm_upgrade::health::rejections::task_problem(
        lone.task("task7").unwrap(),
        &lone,
    )
    .unwrap()]);

    metrics
        .probe_metrics()
        .record("tasks.test_service:80", 5, 1);
    metrics
        .probe_metrics()
        .record("tasks.test_service:80", 5, 0);

    let networks: Vec<Network> = capture("20.10.24/networks.json");
    let services: Vec<Service> = capture("20.10.24/services.json");
    let nodes: Vec<Node> = capture("20.10.24/nodes.json");
    metrics.set_network_usage(&network_usage(&obs(&nodes, &services, &networks, &tasks)));

    let text = encode_text(&registry);
    for line in [
        "# TYPE swarm_upgrade_task_rejections counter",
        "swarm_upgrade_task_rejections_total{service=\"ex_service\",node=\"n1\",reason=\"network_attachments_exhausted\"} 8",
        "# TYPE swarm_upgrade_task_failures counter",
        "swarm_upgrade_task_failures_total{service=\"svc\",node=\"node\",reason=\"network_removal_failed\"} 1",
        "swarm_upgrade_connectivity_errors_total{target=\"tasks.test_service:80\"} 1",
        "swarm_upgrade_connectivity_probes_total{target=\"tasks.test_service:80\"} 10",
        "# TYPE swarm_upgrade_network_free_addresses gauge",
        "swarm_upgrade_network_free_addresses{network=\"ex_default\"} 0",
        "swarm_upgrade_network_capacity_addresses{network=\"ex_default\"} 29",
        "swarm_upgrade_network_free_addresses{network=\"tnet\"} 240",
        "swarm_upgrade_network_capacity_addresses{network=\"tnet\"} 253",
        "swarm_upgrade_network_free_addresses{network=\"ingress\"} 248",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert_eq!(
        metrics.rejections("ex_service", "n1", "network_attachments_exhausted"),
        8
    );
    assert_eq!(metrics.total_rejections(), 8);
    assert_eq!(metrics.total_failures(), 1);

    // A network that disappears loses its series.
    let only_tnet: Vec<Network> = networks
        .into_iter()
        .filter(|n| n.name.as_deref() == Some("tnet"))
        .collect();
    metrics.set_network_usage(&network_usage(&obs(&nodes, &services, &only_tnet, &tasks)));
    let text = encode_text(&registry);
    assert!(!text.contains("network=\"ex_default\""), "{text}");
    assert!(text.contains("swarm_upgrade_network_free_addresses{network=\"tnet\"} 240"));
}
