//! Each fault mode, and the control CLI that an operator's `upgrade.command` calls.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;
use swarm_sim::state::{ERR_MISSING_ATTACHMENTS, ERR_SWARM_NOT_ACTIVE};

const BIN: &str = env!("CARGO_BIN_EXE_swarm-sim");

async fn sim_cli(args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(BIN)
        .args(args)
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn node(ep: &str, host: &str) -> Value {
    get_json(ep, &format!("/nodes/{host}")).await
}

async fn tasks_on(ep: &str, host: &str) -> Vec<Value> {
    let id = node(ep, host).await["ID"].as_str().unwrap().to_string();
    let t = get_json(ep, "/tasks").await;
    t.as_array()
        .unwrap()
        .iter()
        .filter(|t| t["NodeID"] == id.as_str())
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_cli_upgrade_and_rollback() {
    let h = start_default().await;
    let sim = h.control_url();
    let ep = h.manager_endpoints()[0].clone();
    let (code, out, err) = sim_cli(&["node", "upgrade", "--sim", &sim, "n4", "26.1.5"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("20.10.24 -> 26.1.5"), "{out}");
    wait_for("n4 ready on 26.1.5", 20, || async {
        let n = node(&ep, "n4").await;
        (n["Status"]["State"] == "ready" && n["Description"]["Engine"]["EngineVersion"] == "26.1.5")
            .then_some(())
    })
    .await;
    let (code, out, err) = sim_cli(&["node", "rollback", "--sim", &sim, "n4"]).await;
    assert_eq!(code, 0, "{out}{err}");
    wait_for("n4 ready on 20.10.24", 20, || async {
        let n = node(&ep, "n4").await;
        (n["Status"]["State"] == "ready"
            && n["Description"]["Engine"]["EngineVersion"] == "20.10.24")
            .then_some(())
    })
    .await;
    // stop / start (with a version).
    let (code, _, err) = sim_cli(&["node", "stop", "--sim", &sim, "n3"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        try_http(&h.manager_endpoints()[2], "GET", "/_ping", None)
            .await
            .is_err()
    );
    let (code, _, err) =
        sim_cli(&["node", "start", "--sim", &sim, "n3", "--version", "26.1.5"]).await;
    assert_eq!(code, 0, "{err}");
    let v = get_json(&h.manager_endpoints()[2], "/version").await;
    assert_eq!(v["Version"], "26.1.5");
    // Errors: unknown host, rollback without a backup.
    let (code, _, err) = sim_cli(&["node", "upgrade", "--sim", &sim, "n9", "26.1.5"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no such host: n9"), "{err}");
    // Rollback with nothing installed succeeds (the engine it has keeps running); an upgrade to
    // the running version is idempotent.
    let (code, out, err) = sim_cli(&["node", "rollback", "--sim", &sim, "n5"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("nothing to roll back"), "{out}");
    let (code, out, err) = sim_cli(&["node", "upgrade", "--sim", &sim, "n5", "20.10.24"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("already at 20.10.24"), "{out}");
    // State and faults over the CLI.
    let (code, out, _) = sim_cli(&["state", "--sim", &sim]).await;
    assert_eq!(code, 0);
    let st: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(st["nodes"].as_array().unwrap().len(), 5);
    let (code, out, _) = sim_cli(&["fault", "--sim", &sim, "latency=5ms", "fail-upgrade=n2"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("\"latency_ms\":5"), "{out}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_fail_upgrade_exits_1_and_leaves_the_engine() {
    let mut cfg = config(20.0);
    cfg.faults.apply("fail-upgrade=n2").unwrap();
    let h = start(cfg).await;
    let (code, _, err) =
        sim_cli(&["node", "upgrade", "--sim", &h.control_url(), "n2", "26.1.5"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("dpkg returned an error"), "{err}");
    let v = get_json(&h.manager_endpoints()[1], "/version").await;
    assert_eq!(v["Version"], "20.10.24");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_never_return() {
    let mut cfg = config(20.0);
    cfg.faults.apply("never-return=n3").unwrap();
    let h = start(cfg).await;
    let (code, _, err) =
        sim_cli(&["node", "upgrade", "--sim", &h.control_url(), "n3", "26.1.5"]).await;
    assert_eq!(code, 0, "the start command itself succeeds: {err}");
    let ep = h.manager_endpoints()[0].clone();
    wait_for("n3 down", 20, || async {
        (node(&ep, "n3").await["Status"]["State"] == "down").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        try_http(&h.manager_endpoints()[2], "GET", "/_ping", None)
            .await
            .is_err()
    );
    assert_eq!(node(&ep, "n3").await["Status"]["State"], "down");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_wrong_version() {
    let mut cfg = config(20.0);
    cfg.faults.apply("wrong-version=n1:26.1.4").unwrap();
    let h = start(cfg).await;
    let r = h.sim().upgrade_node("n1", "26.1.5").await.unwrap();
    assert_eq!(r.version, "26.1.4");
    let ep = h.manager_endpoints()[1].clone();
    wait_for("n1 reports 26.1.4", 20, || async {
        let n = node(&ep, "n1").await;
        (n["Status"]["State"] == "ready" && n["Description"]["Engine"]["EngineVersion"] == "26.1.4")
            .then_some(())
    })
    .await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_latency_errors_and_drops() {
    let h = start_default().await;
    let ep = h.manager_endpoints()[0].clone();
    h.sim().set_faults(swarm_sim::Faults {
        latency_ms: 300,
        ..Default::default()
    });
    let t0 = tokio::time::Instant::now();
    let (s, _) = http(&ep, "GET", "/_ping", None).await;
    assert_eq!(s, 200);
    assert!(t0.elapsed() >= Duration::from_millis(300));

    h.sim().set_faults(swarm_sim::Faults {
        error_rate: 1.0,
        ..Default::default()
    });
    let (s, b) = http(&ep, "GET", "/nodes", None).await;
    assert_eq!(s, 500);
    assert!(String::from_utf8_lossy(&b).contains("simulated fault"));
    // The control surface is not affected.
    let (s, _) = http(&h.control_url(), "GET", "/_sim/state", None).await;
    assert_eq!(s, 200);

    h.sim().set_faults(swarm_sim::Faults {
        error_rate: 0.5,
        ..Default::default()
    });
    let mut codes = std::collections::BTreeSet::new();
    for _ in 0..40 {
        codes.insert(http(&ep, "GET", "/_ping", None).await.0);
    }
    assert_eq!(codes.into_iter().collect::<Vec<_>>(), vec![200, 500]);

    h.sim().set_faults(swarm_sim::Faults {
        drop_rate: 1.0,
        ..Default::default()
    });
    assert!(try_http(&ep, "GET", "/nodes", None).await.is_err());
    // Runtime faults over /_sim/faults.
    let (s, _) = http(
        &h.control_url(),
        "POST",
        "/_sim/faults",
        Some(r#"{"specs":["none"]}"#),
    )
    .await;
    assert_eq!(s, 200);
    assert!(try_http(&ep, "GET", "/nodes", None).await.is_ok());
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_version_skew_rejects_with_missing_attachments() {
    let mut cfg = config(20.0);
    cfg.faults.apply("version-skew").unwrap();
    let h = start(cfg).await;
    let ep = h.manager_endpoints()[1].clone();
    wait_for("seed stack up", 20, || async {
        let t = get_json(&ep, "/tasks").await;
        (t.as_array()
            .unwrap()
            .iter()
            .filter(|t| t["Status"]["State"] == "running")
            .count()
            == 7)
            .then_some(())
    })
    .await;
    // A worker upgraded before the managers: its tasks are rejected.
    h.sim().upgrade_node("n5", "26.1.5").await.unwrap();
    let rejected = wait_for("n5 rejections", 30, || async {
        let t = tasks_on(&ep, "n5").await;
        let r: Vec<Value> = t
            .into_iter()
            .filter(|t| t["Status"]["State"] == "rejected")
            .collect();
        (!r.is_empty()).then_some(r)
    })
    .await;
    assert_eq!(rejected[0]["Status"]["Err"], ERR_MISSING_ATTACHMENTS);
    assert_eq!(rejected[0]["Status"]["Message"], "preparing");
    // Once every manager runs the new version, n5 runs tasks again.
    for m in ["n1", "n2", "n3"] {
        h.sim().upgrade_node(m, "26.1.5").await.unwrap();
    }
    wait_for("a running task on n5", 40, || async {
        let t = tasks_on(&h.manager_endpoints()[0], "n5").await;
        t.iter()
            .any(|t| t["Status"]["State"] == "running")
            .then_some(())
    })
    .await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_restart_active_rejects_swarm_not_active() {
    let mut cfg = config(20.0);
    cfg.faults.apply("restart-active").unwrap();
    let h = start(cfg).await;
    let ep = h.manager_endpoints()[0].clone();
    wait_for("seed stack up", 20, || async {
        let t = get_json(&ep, "/tasks").await;
        (t.as_array()
            .unwrap()
            .iter()
            .filter(|t| t["Status"]["State"] == "running")
            .count()
            == 7)
            .then_some(())
    })
    .await;
    // Restart n4's engine while it is active (no drain).
    h.sim().stop_node("n4").await.unwrap();
    h.sim().start_node("n4", None).await.unwrap();
    let r = wait_for("n4 rejections", 30, || async {
        let t = tasks_on(&ep, "n4").await;
        t.into_iter().find(|t| t["Status"]["State"] == "rejected")
    })
    .await;
    assert_eq!(r["Status"]["Err"], ERR_SWARM_NOT_ACTIVE);
    assert_eq!(r["Status"]["Message"], "preparing");
    // ... and then it recovers.
    wait_for("a running task on n4", 40, || async {
        let t = tasks_on(&ep, "n4").await;
        t.iter()
            .any(|t| t["Status"]["State"] == "running" && t["DesiredState"] == "running")
            .then_some(())
    })
    .await;
    // Without the fault, a drained restart is clean.
    h.shutdown().await;
}
