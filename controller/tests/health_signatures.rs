//! The signature table against the real engine captures and the seed's strings.

use bollard::models::{Task, TaskState};
use swarm_upgrade::health::{Reason, SIGNATURES, classify};

fn captured_tasks(version: &str) -> Vec<Task> {
    swarm_sim::captures::json(&format!("{version}/tasks.json"))
}

#[test]
fn every_rejected_or_failed_task_in_the_captures_is_classified() {
    for version in ["20.10.24", "26.1.5"] {
        let tasks = captured_tasks(version);
        let problems: Vec<&Task> = tasks
            .iter()
            .filter(|t| {
                matches!(
                    t.status.as_ref().and_then(|s| s.state),
                    Some(TaskState::REJECTED | TaskState::FAILED)
                )
            })
            .collect();
        assert_eq!(problems.len(), 8, "{version}: the README says 8 rejections");
        for t in problems {
            let err = t.status.as_ref().and_then(|s| s.err.as_deref()).unwrap();
            assert_eq!(
                classify(err),
                Reason::NetworkAttachmentsExhausted,
                "{version} {:?}: {err}",
                t.id
            );
        }
        // Nothing healthy carries an error that classifies as a known problem.
        for t in &tasks {
            if let Some(err) = t.status.as_ref().and_then(|s| s.err.as_deref()) {
                assert_ne!(classify(err), Reason::Other, "{err}");
            }
        }
    }
}

#[test]
fn the_seeds_strings_full_and_truncated() {
    let cases = [
        (
            "node is missing network attachments, ip addresses may be exhausted",
            Reason::NetworkAttachmentsExhausted,
        ),
        (
            "\"node is missing network attac…\"",
            Reason::NetworkAttachmentsExhausted,
        ),
        (
            "cannot create a swarm scoped network when swarm is not active",
            Reason::SwarmNotActive,
        ),
        ("\"cannot create a swarm scoped …\"", Reason::SwarmNotActive),
        (
            "error while removing network: unknown network tnet id 9ruwwuy0yavwttxp7o9wbt1np",
            Reason::NetworkRemovalFailed,
        ),
        (
            "no suitable node (scheduling constraints not satisfied on 5 nodes)",
            Reason::NoSuitableNode,
        ),
        (
            "no suitable node (1 node not available for new tasks; 2 nodes not available)",
            Reason::NoSuitableNode,
        ),
        (
            "No such image: nginx:latest@sha256:0123",
            Reason::ImageUnavailable,
        ),
        (
            "pull access denied for ctelfer/lb-upgrade-test-cli, repository does not exist or may require 'docker login'",
            Reason::ImageUnavailable,
        ),
        (
            "manifest unknown: manifest unknown",
            Reason::ImageUnavailable,
        ),
        ("task: non-zero exit (1)", Reason::Other),
        ("", Reason::Other),
    ];
    for (err, want) in cases {
        assert_eq!(classify(err), want, "{err}");
    }
}

#[test]
fn labels_causes_and_remedies() {
    let labels: Vec<&str> = Reason::ALL.iter().map(|r| r.label()).collect();
    assert_eq!(
        labels,
        [
            "network_attachments_exhausted",
            "swarm_not_active",
            "network_removal_failed",
            "no_suitable_node",
            "image_unavailable",
            "other"
        ]
    );
    assert_eq!(SIGNATURES.len(), 6);
    let exhausted = Reason::NetworkAttachmentsExhausted;
    assert!(exhausted.cause().contains("32 - 3 - 1 - 5 = 23"));
    assert!(
        exhausted
            .cause()
            .contains("reactivated before every manager")
    );
    assert!(exhausted.remedy().contains("maxUnavailableWorkers: 1"));
    assert!(Reason::SwarmNotActive.cause().contains("still active"));
    assert_eq!(
        serde_json::to_string(&Reason::NoSuitableNode).unwrap(),
        "\"no_suitable_node\""
    );
}
