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
    wait_for_running_tasks(&ep, 7).await;
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
    wait_for_running_tasks(&ep, 7).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_partition_hangs_the_endpoint_until_healed() {
    let h = start_default().await;
    let n2 = h.manager_endpoints()[1].clone();
    h.sim().set_faults(swarm_sim::Faults {
        partitioned: vec!["n2".into()],
        ..Default::default()
    });
    // Connected, but no answer: a hang, not a refusal.
    let hung = tokio::time::timeout(
        Duration::from_millis(500),
        try_http(&n2, "GET", "/_ping", None),
    )
    .await;
    assert!(hung.is_err(), "answered while partitioned: {hung:?}");
    // The other managers answer, and the swarm still sees n2 ready.
    let nodes = get_json(&h.manager_endpoints()[0], "/nodes").await;
    assert_eq!(node_by_host(&nodes, "n2")["Status"]["State"], "ready");
    // Healed: a request waiting on the endpoint is answered.
    let waiting = tokio::spawn(async move { try_http(&n2, "GET", "/_ping", None).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.sim().set_faults(swarm_sim::Faults::default());
    let answered = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("answered once healed")
        .unwrap();
    assert_eq!(answered.unwrap().0, 200);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_out_of_sequence_every_second_node_update() {
    let h = start_default().await;
    let ep = h.manager_endpoints()[0].clone();
    h.sim().set_faults(swarm_sim::Faults {
        out_of_sequence_every: 2,
        ..Default::default()
    });
    let mut answers = vec![];
    for label in ["a", "b", "c", "d"] {
        let n = node(&ep, "n4").await;
        let version = n["Version"]["Index"].as_u64().unwrap();
        let body =
            format!(r#"{{"Role":"worker","Availability":"active","Labels":{{"x":"{label}"}}}}"#);
        let path = format!("/nodes/n4/update?version={version}");
        let (status, body) = http(&ep, "POST", &path, Some(&body)).await;
        answers.push((
            status,
            String::from_utf8_lossy(&body).contains("out of sequence"),
        ));
        let labels = node(&ep, "n4").await["Spec"]["Labels"].clone();
        assert_eq!(
            labels["x"] == label,
            status == 200,
            "applied only when answered 200"
        );
    }
    assert_eq!(
        answers,
        [(200, false), (500, true), (200, false), (500, true)]
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_changes_on_drain_and_on_step_down() {
    let mut cfg = config(20.0);
    cfg.faults.apply("leader-change-on-drain").unwrap();
    let h = start(cfg).await;
    let ep = h.manager_endpoints()[1].clone();
    let leader = |st: Value| st["leader"].as_str().map(str::to_string);
    let state = || async { get_json(&h.control_url(), "/_sim/state").await };
    assert_eq!(leader(state().await).as_deref(), Some("n1"));
    let n = node(&ep, "n4").await;
    let version = n["Version"]["Index"].as_u64().unwrap();
    let path = format!("/nodes/n4/update?version={version}");
    let (status, _) = http(
        &ep,
        "POST",
        &path,
        Some(r#"{"Role":"worker","Availability":"drain"}"#),
    )
    .await;
    assert_eq!(status, 200);
    let new = wait_for("a new leader after the drain", 20, || async {
        leader(state().await).filter(|l| l != "n1")
    })
    .await;
    // And on demand, over the control surface.
    let (status, _) = http(&h.control_url(), "POST", "/_sim/leader/step-down", None).await;
    assert_eq!(status, 200);
    wait_for("another leader after the step-down", 20, || async {
        leader(state().await).filter(|l| *l != new)
    })
    .await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_records_each_node_change_once() {
    let h = start_default().await;
    assert!(h.sim().history().is_empty(), "off unless asked for");
    let (status, _) = http(&h.control_url(), "POST", "/_sim/history", None).await;
    assert_eq!(status, 200);
    h.sim().stop_node("n3").await.unwrap();
    wait_for("n3 unreachable", 20, || async {
        let nodes = get_json(&h.manager_endpoints()[0], "/nodes").await;
        (node_by_host(&nodes, "n3")["ManagerStatus"]["Reachability"] == "unreachable").then_some(())
    })
    .await;
    h.sim().start_node("n3", Some("26.1.5")).await.unwrap();
    wait_for("n3 reachable again", 20, || async {
        let nodes = get_json(&h.manager_endpoints()[0], "/nodes").await;
        (node_by_host(&nodes, "n3")["ManagerStatus"]["Reachability"] == "reachable").then_some(())
    })
    .await;
    let frames = get_json(&h.control_url(), "/_sim/history").await;
    let frames = frames.as_array().unwrap();
    let n3: Vec<(bool, bool, String)> = frames
        .iter()
        .map(|f| {
            let n = f["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["hostname"] == "n3")
                .unwrap();
            (
                n["engine_running"].as_bool().unwrap(),
                n["reachable"].as_bool().unwrap(),
                n["engine_version"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut seen = n3.clone();
    seen.dedup();
    let old = "20.10.24".to_string();
    for moment in [
        (true, true, old.clone()),
        (false, true, old.clone()),
        (false, false, old),
        (true, true, "26.1.5".to_string()),
    ] {
        assert!(seen.contains(&moment), "{moment:?} not in {seen:?}");
    }
    // A frame only when something changed.
    assert!(frames.windows(2).all(|w| w[0]["nodes"] != w[1]["nodes"]));
    h.shutdown().await;
}
