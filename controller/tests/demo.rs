//! `swarm-upgrade demo`, as a user runs it: one command, no Docker, a complete rollout.

use std::process::Command;

#[test]
fn the_demo_upgrades_the_simulated_swarm_managers_first() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let out = Command::new(env!("CARGO_BIN_EXE_swarm-upgrade"))
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--time-scale",
            "20",
            "--serve-for",
            "0s",
            "--events",
        ])
        .arg(&events)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Non-leader managers, the leader (n1), then the workers.
    assert!(
        stdout.contains("order:      n2 -> n3 -> n1 -> n4 -> n5"),
        "{stdout}"
    );
    assert!(stdout.contains("completed"), "{stdout}");
    assert!(stdout.contains("failed:     0"), "{stdout}");
    let lines = std::fs::read_to_string(&events).unwrap();
    assert_eq!(
        lines
            .lines()
            .last()
            .map(|l| l.contains("\"step\":\"completed\"")),
        Some(true),
        "{lines}"
    );
}
