//! The JSON the simulator serves has the shapes of the real engines' answers in
//! `testdata/engine-captures` (20.10.24 and 26.1.5): the same set of JSON paths.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;
use swarm_sim::Stack;

/// Objects whose keys are data (labels, options, container IDs...), not shape.
const DYNAMIC: &[&str] = &[
    "Labels",
    "Options",
    "Containers",
    "Services",
    "Runtimes",
    "IndexConfigs",
    "Details",
    "Attributes",
    "Global",
];

fn paths(v: &Value, prefix: &str, dynamic: bool, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let key = if dynamic { "*" } else { k.as_str() };
                let p = format!("{prefix}.{key}");
                out.insert(p.clone());
                paths(v, &p, DYNAMIC.contains(&k.as_str()) && !dynamic, out);
            }
        }
        Value::Array(a) => {
            for x in a {
                paths(x, &format!("{prefix}[]"), false, out);
            }
        }
        _ => {}
    }
}

fn shape(v: &Value) -> BTreeSet<String> {
    let mut s = BTreeSet::new();
    paths(v, "", false, &mut s);
    s
}

fn captures() -> PathBuf {
    let dir = swarm_sim::captures::dir();
    assert!(dir.is_dir(), "engine captures missing at {}", dir.display());
    dir
}

fn load(dir: &Path, f: &str) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join(f)).unwrap()).unwrap()
}

fn same_shape(what: &str, captured: &Value, simulated: &Value) {
    let c = shape(captured);
    let s = shape(simulated);
    let missing: Vec<_> = c.difference(&s).collect();
    let extra: Vec<_> = s.difference(&c).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: paths only in the capture: {missing:#?}\npaths only in the simulator: {extra:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_have_the_captured_shapes() {
    let dir = captures();
    let old = dir.join("20.10.24");
    let new = dir.join("26.1.5");
    let mut cfg = config(50.0);
    cfg.stack = Stack::SeedAndExhaust;
    let h = start(cfg).await;
    let eps = h.manager_endpoints();
    // Wait for the exhaust_addrs rejections, as in the captures.
    wait_for("rejected tasks", 30, || async {
        let t = get_json(&eps[0], "/tasks").await;
        let n = t
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["Status"]["State"] == "rejected")
            .count();
        (n >= 5).then_some(())
    })
    .await;

    same_shape(
        "20.10.24 /version",
        &load(&old, "version.json"),
        &get_json(&eps[0], "/v1.41/version").await,
    );
    same_shape(
        "20.10.24 /info",
        &load(&old, "info.json"),
        &get_json(&eps[0], "/v1.41/info").await,
    );
    same_shape(
        "20.10.24 /nodes",
        &load(&old, "nodes.json"),
        &get_json(&eps[0], "/v1.41/nodes").await,
    );
    same_shape(
        "20.10.24 /services",
        &load(&old, "services.json"),
        &get_json(&eps[0], "/v1.41/services").await,
    );
    same_shape(
        "20.10.24 /tasks",
        &load(&old, "tasks.json"),
        &get_json(&eps[0], "/v1.41/tasks").await,
    );
    same_shape(
        "20.10.24 /networks",
        &load(&old, "networks.json"),
        &get_json(&eps[0], "/v1.41/networks").await,
    );
    same_shape(
        "20.10.24 /networks/tnet",
        &load(&old, "network-tnet.json"),
        &get_json(&eps[0], "/v1.41/networks/test_tnet").await,
    );
    same_shape(
        "20.10.24 /networks/tnet?verbose=true",
        &load(&old, "network-tnet-verbose.json"),
        &get_json(&eps[0], "/v1.41/networks/test_tnet?verbose=true").await,
    );
    same_shape(
        "20.10.24 /networks/ingress",
        &load(&old, "network-ingress.json"),
        &get_json(&eps[0], "/v1.41/networks/ingress").await,
    );
    let f = r#"%7B%22desired-state%22%3A%5B%22running%22%5D%2C%22node%22%3A%5B%22n5%22%5D%7D"#;
    same_shape(
        "20.10.24 /tasks?filters=node n5, running",
        &load(&old, "tasks-filter-node-n5-running.json"),
        &get_json(&eps[0], &format!("/v1.41/tasks?filters={f}")).await,
    );
    // Events: every captured line's shape is one the simulator produces.
    let ev = std::fs::read_to_string(old.join("events-node-service-during-manager-upgrade.jsonl"))
        .unwrap();
    let mut cap_ev = BTreeSet::new();
    for l in ev.lines() {
        cap_ev.extend(shape(&serde_json::from_str::<Value>(l).unwrap()));
    }
    let since = h.sim().now() / 1_000_000_000 - 3600;
    let until = h.sim().now() / 1_000_000_000;
    let (_, b) = http(
        &eps[0],
        "GET",
        &format!("/events?since={since}&until={until}"),
        None,
    )
    .await;
    let mut sim_ev = BTreeSet::new();
    for l in String::from_utf8_lossy(&b).lines() {
        sim_ev.extend(shape(&serde_json::from_str::<Value>(l).unwrap()));
    }
    assert!(!sim_ev.is_empty());
    assert_eq!(cap_ev, sim_ev, "event shapes");

    // 26.1.5: upgrade n1, ask it.
    h.sim().upgrade_node("n1", "26.1.5").await.unwrap();
    let nodes = wait_for("n1 back ready on 26.1.5", 30, || async {
        let (s, b) = http(&eps[0], "GET", "/v1.45/nodes", None).await;
        if s != 200 {
            return None;
        }
        let v: Value = serde_json::from_slice(&b).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .all(|n| n["Status"]["State"] == "ready" || n["Description"]["Hostname"] != "n1")
            .then_some(v)
    })
    .await;
    assert_eq!(
        node_by_host(&nodes, "n1")["Description"]["Engine"]["EngineVersion"],
        "26.1.5"
    );
    same_shape(
        "26.1.5 /nodes",
        &load(&new, "nodes-mixed-versions.json"),
        &nodes,
    );
    same_shape(
        "26.1.5 /version",
        &load(&new, "version.json"),
        &get_json(&eps[0], "/v1.45/version").await,
    );
    same_shape(
        "26.1.5 /info",
        &load(&new, "info.json"),
        &get_json(&eps[0], "/v1.45/info").await,
    );
    same_shape(
        "26.1.5 /services",
        &load(&new, "services.json"),
        &get_json(&eps[0], "/v1.45/services").await,
    );
    same_shape(
        "26.1.5 /tasks",
        &load(&new, "tasks.json"),
        &get_json(&eps[0], "/v1.45/tasks").await,
    );
    h.shutdown().await;
}
