//! `POST /swarm/update` as a read-modify-write of the whole spec: what is written is served
//! back (labels, raft, dispatcher, CA settings), and a write with a version index other than
//! the swarm's current one is refused, so of two writers that read the same version one loses.

mod common;

use common::*;
use serde_json::{Value, json};

fn update_path(version: u64) -> String {
    format!(
        "/v1.41/swarm/update?version={version}&rotateWorkerToken=false&rotateManagerToken=false&rotateManagerUnlockKey=false"
    )
}

fn message(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body).unwrap()["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_swarm_spec_is_kept_as_written_and_a_stale_version_loses() {
    let h = start_default().await;
    let n1 = h.endpoint("n1").await.unwrap();
    let n2 = h.endpoint("n2").await.unwrap();
    let before = get_json(&n1, "/v1.41/swarm").await;
    let version = before["Version"]["Index"].as_u64().unwrap();
    let mut spec = before["Spec"].clone();
    spec["Labels"] = json!({"team": "platform", "lease.holder": "a"});
    spec["Raft"]["SnapshotInterval"] = json!(5000);
    spec["Dispatcher"]["HeartbeatPeriod"] = json!(7_000_000_000u64);
    spec["CAConfig"]["NodeCertExpiry"] = json!(3_600_000_000_000u64);

    let (s, b) = http(&n1, "POST", &update_path(version), Some(&spec.to_string())).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));

    // Any manager serves what was written, at a new version index.
    let after = get_json(&n2, "/v1.41/swarm").await;
    let new_version = after["Version"]["Index"].as_u64().unwrap();
    assert!(new_version > version, "{new_version} after {version}");
    assert_eq!(after["Spec"]["Labels"], spec["Labels"]);
    assert_eq!(after["Spec"]["Raft"]["SnapshotInterval"], 5000);
    assert_eq!(
        after["Spec"]["Dispatcher"]["HeartbeatPeriod"],
        7_000_000_000u64
    );
    assert_eq!(
        after["Spec"]["CAConfig"]["NodeCertExpiry"],
        3_600_000_000_000u64
    );
    assert_eq!(after["Spec"]["EncryptionConfig"]["AutoLockManagers"], false);
    assert_eq!(
        after["Spec"]["Orchestration"],
        before["Spec"]["Orchestration"]
    );

    // A second writer that read the same version as the first loses, and changes nothing.
    let mut theirs = before["Spec"].clone();
    theirs["Labels"] = json!({"lease.holder": "b"});
    let (s, b) = http(
        &n2,
        "POST",
        &update_path(version),
        Some(&theirs.to_string()),
    )
    .await;
    assert_eq!(
        (s, message(&b).as_str()),
        (
            500,
            "rpc error: code = Unknown desc = update out of sequence"
        )
    );
    let now = get_json(&n1, "/swarm").await;
    assert_eq!(now["Spec"]["Labels"], spec["Labels"]);
    assert_eq!(now["Version"]["Index"].as_u64().unwrap(), new_version);

    // The engine's one name for the swarm spec.
    let mut renamed = now["Spec"].clone();
    renamed["Name"] = json!("other");
    let (s, b) = http(
        &n1,
        "POST",
        &update_path(new_version),
        Some(&renamed.to_string()),
    )
    .await;
    assert_eq!(
        (s, message(&b).as_str()),
        (400, "swarm spec must be named \"default\"")
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cannot_read_or_write_the_swarm() {
    let h = start(swarm_sim::SimConfig {
        worker_endpoints: true,
        ..config(20.0)
    })
    .await;
    let w = h.endpoint("n4").await.unwrap();
    let (s, _) = http(&w, "GET", "/v1.41/swarm", None).await;
    assert_eq!(s, 503);
    let (s, _) = http(&w, "POST", &update_path(10), Some("{}")).await;
    assert_eq!(s, 503);
    h.shutdown().await;
}
