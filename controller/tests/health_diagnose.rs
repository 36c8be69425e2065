//! `diagnose` on the real captures.

mod common;

use common::{capture, obs};

use bollard::models::*;
use swarm_upgrade::health::{Reason, diagnose};

struct Lab {
    services: Vec<Service>,
    tasks: Vec<Task>,
    nodes: Vec<Node>,
    networks: Vec<Network>,
}

fn lab() -> Lab {
    Lab {
        services: capture("20.10.24/services.json"),
        tasks: capture("20.10.24/tasks.json"),
        nodes: capture("20.10.24/nodes.json"),
        networks: capture("20.10.24/networks.json"),
    }
}

#[test]
fn the_exhaustion_capture_is_diagnosed() {
    let l = lab();
    let r = diagnose(&obs(&l.nodes, &l.services, &l.networks, &l.tasks));
    assert_eq!(r.services.len(), 1);
    let ex = &r.services[0];
    assert_eq!(
        (ex.name.as_str(), ex.mode, ex.desired, ex.running),
        ("ex_service", "replicated", 24, 24)
    );
    assert_eq!(ex.tasks.len(), 8);
    assert!(ex.tasks.iter().all(|t| t.node == "n1"
        && t.state == "rejected"
        && t.desired_state == "shutdown"
        && t.reason == Reason::NetworkAttachmentsExhausted
        && t.name.starts_with("ex_service.")));
    assert_eq!(ex.reasons.len(), 1);
    assert_eq!(ex.reasons[0].tasks, 8);
    assert_eq!(ex.reasons[0].nodes, ["n1"]);

    let near: Vec<&str> = r
        .networks_near_capacity
        .iter()
        .map(|n| n.usage.name.as_str())
        .collect();
    assert_eq!(near, ["ex_default"]);
    assert!(r.restart_risks.is_empty());
    assert_eq!(r.networks.len(), 3);
    assert!(!r.is_clean());

    let text = r.to_string();
    for want in [
        "SERVICE ex_service (replicated 24/24)",
        "ID            NAME",
        "Shutdown      Rejected      \"node is missing network attachments, ip addresses may be exhausted\"",
        "=> network_attachments_exhausted (8 task(s) on n1)",
        "cause:  The node has no load-balancer address",
        "remedy: Give the network a bigger subnet",
        "NETWORKS NEAR CAPACITY",
        "ex_default 10.231.0.0/27: 0 of 29 addresses free (24 task, 1 VIP, 4 node load-balancer)",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    assert!(!text.contains("tnet 10.230"), "{text}");

    // --json
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["services"][0]["name"], "ex_service");
    assert_eq!(
        json["services"][0]["tasks"][0]["reason"],
        "network_attachments_exhausted"
    );
    assert_eq!(json["networks_near_capacity"][0]["usage"]["free"], 0);
}

#[test]
fn the_mixed_version_capture_has_the_same_rejections_and_shutdowns_are_not_problems() {
    let services: Vec<Service> = capture("26.1.5/services.json");
    let tasks: Vec<Task> = capture("26.1.5/tasks.json");
    let nodes: Vec<Node> = capture("26.1.5/nodes-mixed-versions.json");
    let networks: Vec<Network> = vec![capture("26.1.5/network-ex_default.json")];
    let r = diagnose(&obs(&nodes, &services, &networks, &tasks));
    assert_eq!(r.services.len(), 1);
    assert_eq!(r.services[0].tasks.len(), 8);
    // test_service is global: 5 tasks desired running, 5 running.
    let clean = diagnose(&obs(&nodes, &services, &[], &[]));
    assert!(clean.is_clean());
    assert!(clean.to_string().starts_with("No rejected or failed tasks"));
}

#[test]
fn restart_policies_that_rejections_use_up_are_flagged() {
    let mut l = lab();
    for s in &mut l.services {
        let name = s.spec.as_ref().unwrap().name.clone().unwrap();
        let tt = s.spec.as_mut().unwrap().task_template.as_mut().unwrap();
        tt.restart_policy = Some(TaskSpecRestartPolicy {
            max_attempts: Some(if name == "ex_service" { 1 } else { 3 }),
            ..Default::default()
        });
    }
    let r = diagnose(&obs(&l.nodes, &l.services, &l.networks, &l.tasks));
    let ex = r
        .restart_risks
        .iter()
        .find(|x| x.service == "ex_service")
        .unwrap();
    assert!(ex.used_up);
    // One slot of the capture was rejected twice on n1.
    assert_eq!((ex.max_attempts, ex.worst_slot_attempts), (1, 2));
    assert!(
        ex.message
            .contains("docker service update --force ex_service")
    );
    let client = r
        .restart_risks
        .iter()
        .find(|x| x.service == "test_client")
        .unwrap();
    assert!(!client.used_up);
    assert!(client.message.contains("rejected tasks count as attempts"));
    assert!(
        r.to_string()
            .contains("RESTART POLICIES REJECTIONS CAN USE UP")
    );
}
