//! The Docker API surface: errors, versions, filters, endpoints that come and go, elections.

mod common;

use common::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_version_update_is_500_out_of_sequence() {
    let h = start_default().await;
    let ep = &h.manager_endpoints()[0];
    let n = get_json(ep, "/v1.41/nodes/n4").await;
    let idx = n["Version"]["Index"].as_u64().unwrap();
    let id = n["ID"].as_str().unwrap();
    let spec = r#"{"Labels":{},"Role":"worker","Availability":"drain"}"#;
    let (s, b) = http(
        ep,
        "POST",
        &format!("/v1.41/nodes/{id}/update?version={}", idx - 1),
        Some(spec),
    )
    .await;
    assert_eq!(s, 500);
    assert_eq!(
        String::from_utf8_lossy(&b),
        r#"{"message":"rpc error: code = Unknown desc = update out of sequence"}"#
    );
    // The current version works and replaces the spec.
    let (s, b) = http(
        ep,
        "POST",
        &format!("/v1.41/nodes/{id}/update?version={idx}"),
        Some(spec),
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let n = get_json(ep, &format!("/nodes/{id}")).await;
    assert_eq!(n["Spec"]["Availability"], "drain");
    assert!(n["Version"]["Index"].as_u64().unwrap() > idx);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managers_bump_node_versions_by_themselves() {
    let mut cfg = config(50.0);
    cfg.timings.version_bump = 2.0;
    let h = start(cfg).await;
    let ep = &h.manager_endpoints()[0];
    let v0 = get_json(ep, "/nodes/n5").await["Version"]["Index"]
        .as_u64()
        .unwrap();
    wait_for("a heartbeat bump", 10, || async {
        let v = get_json(ep, "/nodes/n5").await["Version"]["Index"]
            .as_u64()
            .unwrap();
        (v > v0).then_some(())
    })
    .await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_too_new_is_400_per_engine_version() {
    let h = start_default().await;
    let ep = h.manager_endpoints()[1].clone();
    let (s, b) = http(&ep, "GET", "/v1.45/nodes", None).await;
    assert_eq!(s, 400);
    assert_eq!(
        String::from_utf8_lossy(&b),
        r#"{"message":"client version 1.45 is too new. Maximum supported API version is 1.41"}"#
    );
    let (s, _) = http(&ep, "GET", "/v1.41/nodes", None).await;
    assert_eq!(s, 200);
    let (s, _) = http(&ep, "GET", "/v1.24/version", None).await;
    assert_eq!(s, 200);
    // Upgrade n2: its endpoint now speaks 1.45, the others still 1.41.
    h.sim().upgrade_node("n2", "26.1.5").await.unwrap();
    let (s, b) = http(&ep, "GET", "/v1.53/nodes", None).await;
    assert_eq!(s, 400);
    assert_eq!(
        String::from_utf8_lossy(&b),
        r#"{"message":"client version 1.53 is too new. Maximum supported API version is 1.45"}"#
    );
    let (s, hd, _) = try_http(&ep, "HEAD", "/_ping", None).await.unwrap();
    assert_eq!(s, 200);
    assert_eq!(hd["api-version"], "1.45");
    assert_eq!(hd["swarm"], "active/manager");
    assert_eq!(hd["ostype"], "linux");
    assert_eq!(hd["docker-experimental"], "false");
    let (_, hd, _) = try_http(&h.manager_endpoints()[2], "GET", "/_ping", None)
        .await
        .unwrap();
    assert_eq!(hd["api-version"], "1.41");
    let v = get_json(&ep, "/version").await;
    assert_eq!(v["Version"], "26.1.5");
    assert_eq!(v["ApiVersion"], "1.45");
    assert_eq!(v["MinAPIVersion"], "1.24");
    let (s, _) = http(&ep, "GET", "/v1.23/version", None).await;
    assert_eq!(s, 400);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_filters_take_hostnames_and_names() {
    let h = start_default().await;
    let ep = h.manager_endpoints()[0].clone();
    wait_for_running_tasks(&ep, 7).await;
    let n5 = get_json(&ep, "/nodes/n5").await;
    let n5_id = n5["ID"].as_str().unwrap().to_string();
    let f = r#"{"desired-state":["running"],"node":["n5"]}"#;
    let t = get_json(&ep, &format!("/tasks?filters={}", enc(f))).await;
    let t = t.as_array().unwrap();
    assert!(!t.is_empty());
    assert!(
        t.iter()
            .all(|t| t["NodeID"] == n5_id.as_str() && t["DesiredState"] == "running")
    );
    let by_id = get_json(
        &ep,
        &format!(
            "/tasks?filters={}",
            enc(&format!(r#"{{"node":{{"{n5_id}":true}}}}"#))
        ),
    )
    .await;
    assert_eq!(by_id.as_array().unwrap().len(), t.len());
    let svc = get_json(
        &ep,
        &format!(
            "/tasks?filters={}",
            enc(r#"{"service":{"test_client":true}}"#)
        ),
    )
    .await;
    assert_eq!(svc.as_array().unwrap().len(), 2);
    let named = get_json(
        &ep,
        &format!("/tasks?filters={}", enc(r#"{"name":["test_client.1"]}"#)),
    )
    .await;
    assert_eq!(named.as_array().unwrap().len(), 1);
    // Names are swarmkit's `service.slot.id`; a prefix with capitals finds nothing, as in
    // swarmkit's lowercased name index.
    let id = named[0]["ID"].as_str().unwrap();
    let whole = format!(r#"{{"name":["test_client.1.{id}"]}}"#);
    let by_whole = get_json(&ep, &format!("/tasks?filters={}", enc(&whole))).await;
    assert_eq!(by_whole.as_array().unwrap().len(), 1);
    let slots = get_json(
        &ep,
        &format!(
            "/tasks?filters={}",
            enc(r#"{"name":["test_client.1.","test_client.2."]}"#)
        ),
    )
    .await;
    assert_eq!(slots.as_array().unwrap().len(), 2);
    let capitals = get_json(
        &ep,
        &format!("/tasks?filters={}", enc(r#"{"name":["Test_client.1."]}"#)),
    )
    .await;
    assert!(capitals.as_array().unwrap().is_empty());
    let shut = get_json(
        &ep,
        &format!(
            "/tasks?filters={}",
            enc(r#"{"desired-state":["shutdown"]}"#)
        ),
    )
    .await;
    assert!(shut.as_array().unwrap().is_empty());
    let (s, _) = http(
        &ep,
        "GET",
        &format!("/tasks?filters={}", enc(r#"{"bogus":["x"]}"#)),
        None,
    )
    .await;
    assert_eq!(s, 400);
    let mgrs = get_json(
        &ep,
        &format!("/nodes?filters={}", enc(r#"{"role":["manager"]}"#)),
    )
    .await;
    assert_eq!(mgrs.as_array().unwrap().len(), 3);
    let svcs = get_json(
        &ep,
        &format!("/services?filters={}", enc(r#"{"mode":["global"]}"#)),
    )
    .await;
    assert_eq!(svcs.as_array().unwrap().len(), 1);
    assert_eq!(svcs[0]["Spec"]["Name"], "test_service");
    let one = get_json(&ep, "/services/test_client").await;
    assert_eq!(one["Spec"]["Mode"]["Replicated"]["Replicas"], 2);
    let net = get_json(&ep, "/networks/test_tnet").await;
    assert_eq!(net["IPAM"]["Config"][0]["Subnet"], "10.0.1.0/24");
    assert_eq!(net["IPAM"]["Config"][0]["Gateway"], "10.0.1.1");
    let tid = t[0]["ID"].as_str().unwrap();
    let one = get_json(&ep, &format!("/tasks/{tid}")).await;
    assert_eq!(one["ID"], tid);
    let (s, b) = http(&ep, "GET", "/nodes/nope", None).await;
    assert_eq!(s, 404, "{}", String::from_utf8_lossy(&b));
    h.shutdown().await;
}

pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_closes_while_engine_stopped_and_reopens_on_same_port() {
    let h = start_default().await;
    let ep = h.manager_endpoints()[2].clone();
    assert!(try_http(&ep, "GET", "/_ping", None).await.is_ok());
    h.sim().stop_node("n3").await.unwrap();
    let e = try_http(&ep, "GET", "/_ping", None).await.unwrap_err();
    assert!(
        matches!(&e, swarm_sim::client::ClientError::Connect { source, .. }
            if source.kind() == std::io::ErrorKind::ConnectionRefused),
        "{e}"
    );
    // The others still answer, and see n3 go unreachable then down.
    let ep1 = h.manager_endpoints()[0].clone();
    wait_for("n3 down", 20, || async {
        let n = get_json(&ep1, "/nodes/n3").await;
        (n["Status"]["State"] == "down" && n["ManagerStatus"]["Reachability"] == "unreachable")
            .then_some(())
    })
    .await;
    h.sim().start_node("n3", None).await.unwrap();
    assert_eq!(h.manager_endpoints()[2], ep);
    let (s, _, _) = try_http(&ep, "GET", "/_ping", None).await.unwrap();
    assert_eq!(s, 200);
    wait_for("n3 ready", 20, || async {
        let n = get_json(&ep1, "/nodes/n3").await;
        (n["Status"]["State"] == "ready" && n["ManagerStatus"]["Reachability"] == "reachable")
            .then_some(())
    })
    .await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_stop_elects_a_new_leader_and_nodes_go_unknown() {
    let h = start_default().await;
    let eps = h.manager_endpoints();
    let nodes = get_json(&eps[1], "/nodes").await;
    assert_eq!(node_by_host(&nodes, "n1")["ManagerStatus"]["Leader"], true);
    assert!(
        node_by_host(&nodes, "n2")["ManagerStatus"]
            .get("Leader")
            .is_none()
    );
    let since = h.sim().now() / 1_000_000_000 - 1;
    h.sim().stop_node("n1").await.unwrap();
    // The control address serves the leader; with no leader, cluster calls fail as the engine's.
    let nodes = wait_for("a new leader", 20, || async {
        let (s, b) = http(&eps[1], "GET", "/nodes", None).await;
        if s != 200 {
            let v: Value = serde_json::from_slice(&b).unwrap();
            assert!(
                v["message"]
                    .as_str()
                    .unwrap()
                    .contains("The swarm does not have a leader"),
                "{v}"
            );
            return None;
        }
        Some(serde_json::from_slice::<Value>(&b).unwrap())
    })
    .await;
    let leaders: Vec<_> = nodes
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["ManagerStatus"]["Leader"] == true)
        .map(|n| n["Description"]["Hostname"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(leaders.len(), 1);
    assert_ne!(leaders[0], "n1");
    assert!(
        nodes
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["Status"]["State"] == "unknown")
    );
    // Each node returns ready one by one (n1 stays away: it goes down eventually).
    wait_for("n2..n5 ready again", 30, || async {
        let nodes = get_json(&eps[1], "/nodes").await;
        ["n2", "n3", "n4", "n5"]
            .iter()
            .all(|h| node_by_host(&nodes, h)["Status"]["State"] == "ready")
            .then_some(())
    })
    .await;
    // The event stream has the leader change's signature.
    let until = h.sim().now() / 1_000_000_000 + 1;
    let (s, b) = http(
        &eps[1],
        "GET",
        &format!(
            "/events?since={since}&until={until}&filters={}",
            api_enc(r#"{"type":["node"]}"#)
        ),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let evs: Vec<Value> = String::from_utf8_lossy(&b)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        evs.iter()
            .all(|e| e["Type"] == "node" && e["scope"] == "swarm")
    );
    let unknown: Vec<_> = evs
        .iter()
        .filter(|e| e["Actor"]["Attributes"]["state.new"] == "unknown")
        .collect();
    assert_eq!(
        unknown.len(),
        5,
        "every node goes ready -> unknown: {evs:#?}"
    );
    assert!(
        unknown
            .iter()
            .all(|e| e["Actor"]["Attributes"]["state.old"] == "ready")
    );
    let back: Vec<_> = evs
        .iter()
        .filter(|e| {
            e["Actor"]["Attributes"]["state.old"] == "unknown"
                && e["Actor"]["Attributes"]["state.new"] == "ready"
        })
        .collect();
    assert_eq!(back.len(), 4);
    let times: Vec<i64> = back
        .iter()
        .map(|e| e["timeNano"].as_i64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
    assert!(times.first() != times.last(), "they come back one by one");
    // The control address now serves the new leader.
    let info = get_json(&h.control_docker_host(), "/info").await;
    assert_eq!(info["Name"], leaders[0].as_str());
    h.shutdown().await;
}

fn api_enc(s: &str) -> String {
    enc(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_quorum_fails_with_the_engine_text() {
    let h = start_default().await;
    let eps = h.manager_endpoints();
    h.sim().stop_node("n2").await.unwrap();
    h.sim().stop_node("n3").await.unwrap();
    let (s, b) = http(&eps[0], "GET", "/nodes", None).await;
    assert_eq!(s, 500);
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(
        v["message"],
        "rpc error: code = Unknown desc = The swarm does not have a leader. It's possible that too few managers are online. Make sure more than half of the managers are online."
    );
    let (s, _) = http(&eps[0], "GET", "/version", None).await;
    assert_eq!(s, 200, "local calls still answer");
    h.sim().start_node("n2", None).await.unwrap();
    wait_for("quorum back", 20, || async {
        (http(&eps[0], "GET", "/nodes", None).await.0 == 200).then_some(())
    })
    .await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_endpoints_refuse_cluster_calls() {
    let mut cfg = config(20.0);
    cfg.worker_endpoints = true;
    let h = start(cfg).await;
    let w = h.endpoint("n4").await.unwrap();
    let (s, b) = http(&w, "GET", "/nodes", None).await;
    assert_eq!(s, 503);
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .starts_with("This node is not a swarm manager.")
    );
    let (_, hd, _) = try_http(&w, "GET", "/_ping", None).await.unwrap();
    assert_eq!(hd["swarm"], "active/worker");
    let info = get_json(&w, "/info").await;
    assert_eq!(info["Swarm"]["ControlAvailable"], false);
    assert_eq!(info["Swarm"]["LocalNodeState"], "active");
    assert_eq!(h.manager_endpoints().len(), 3);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(20.0);
    cfg.socket_dir = Some(dir.path().to_path_buf());
    let h = start(cfg).await;
    let sock = dir.path().join("n1.sock");
    assert!(sock.exists());
    // The engine API over the socket, as `docker -H unix://...` uses it (the docker CLI
    // itself over a socket is in the docker_cli tier).
    let endpoint = format!("unix://{}", sock.display());
    let version = get_json(&endpoint, "/v1.41/version").await;
    assert_eq!(version["Version"], "20.10.24", "{version}");
    h.sim().stop_node("n1").await.unwrap();
    assert!(!sock.exists());
    h.sim().start_node("n1", None).await.unwrap();
    assert!(sock.exists());
    h.shutdown().await;
}

/// Events of `types` since `since` (seconds) up to now, from `GET /events`.
async fn events_of(h: &swarm_sim::SimHandle, ep: &str, since: i64, types: &str) -> Vec<Value> {
    let until = h.sim().now() / 1_000_000_000 + 1;
    let f = format!(r#"{{"type":[{types}]}}"#);
    let path = format!("/events?since={since}&until={until}&filters={}", enc(&f));
    let (s, b) = http(ep, "GET", &path, None).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    String::from_utf8_lossy(&b)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_and_network_writes_count_version_and_emit_events() {
    let h = start(no_stack(20.0)).await;
    let ep = h.manager_endpoints()[0].clone();
    let since = h.sim().now() / 1_000_000_000;
    let (s, b) = http(
        &ep,
        "POST",
        "/v1.41/networks/create",
        Some(r#"{"Name":"app_net","Driver":"overlay"}"#),
    )
    .await;
    assert_eq!(s, 201, "{}", String::from_utf8_lossy(&b));
    let net_id = serde_json::from_slice::<Value>(&b).unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_string();
    let spec = r#"{"Name":"app","TaskTemplate":{"ContainerSpec":{"Image":"nginx:1.25"},"Networks":[{"Target":"app_net"}]},"Mode":{"Replicated":{"Replicas":3}}}"#;
    let (s, b) = http(&ep, "POST", "/v1.41/services/create", Some(spec)).await;
    assert_eq!(s, 201, "{}", String::from_utf8_lossy(&b));
    let svc_id = serde_json::from_slice::<Value>(&b).unwrap()["ID"]
        .as_str()
        .unwrap()
        .to_string();

    // ServiceStatus only when asked for, counting running and desired tasks.
    let plain = get_json(&ep, "/v1.41/services").await;
    assert!(plain[0].get("ServiceStatus").is_none(), "{plain}");
    wait_for("3 of 3 running", 20, || async {
        let v = get_json(&ep, "/v1.41/services?status=true").await;
        let st = &v[0]["ServiceStatus"];
        (st["RunningTasks"] == 3 && st["DesiredTasks"] == 3 && st["CompletedTasks"] == 0)
            .then_some(())
    })
    .await;

    // Version.Index moves on an update; a stale index is refused as the engine refuses it.
    let before = get_json(&ep, &format!("/services/{svc_id}")).await["Version"]["Index"]
        .as_u64()
        .unwrap();
    let scaled = spec.replace(r#""Replicas":3"#, r#""Replicas":1"#);
    let path = format!("/v1.41/services/{svc_id}/update?version={before}");
    let (s, b) = http(&ep, "POST", &path, Some(&scaled)).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let after = get_json(&ep, "/services/app").await["Version"]["Index"]
        .as_u64()
        .unwrap();
    assert!(after > before, "{before} -> {after}");
    let (s, b) = http(&ep, "POST", &path, Some(&scaled)).await;
    assert_eq!(
        (
            s,
            String::from_utf8_lossy(&b).contains("update out of sequence")
        ),
        (500, true)
    );
    wait_for("scaled to 1", 20, || async {
        let v = get_json(&ep, "/v1.41/services?status=true").await;
        (v[0]["ServiceStatus"]["RunningTasks"] == 1 && v[0]["ServiceStatus"]["DesiredTasks"] == 1)
            .then_some(())
    })
    .await;
    let (s, _) = http(&ep, "DELETE", "/v1.41/services/app", None).await;
    assert_eq!(s, 200);
    let (s, b) = http(&ep, "GET", "/v1.41/services/app", None).await;
    assert_eq!(s, 404, "{}", String::from_utf8_lossy(&b));
    let (s, _) = http(&ep, "DELETE", "/v1.41/networks/app_net", None).await;
    assert_eq!(s, 204);

    // The event stream tells each write, in the engine's shape, filtered by type.
    let evs = events_of(&h, &ep, since, r#""service","network""#).await;
    let seen: Vec<(String, String, String)> = evs
        .iter()
        .map(|e| {
            assert_eq!(e["scope"], "swarm");
            let id = e["Actor"]["ID"].as_str().unwrap();
            let who = if id == svc_id {
                "svc"
            } else if id == net_id {
                "net"
            } else {
                "?"
            };
            (
                e["Type"].as_str().unwrap().into(),
                e["Action"].as_str().unwrap().into(),
                who.into(),
            )
        })
        .collect();
    let want = [
        ("network", "create", "net"),
        ("service", "create", "svc"),
        ("service", "update", "svc"),
        ("service", "remove", "svc"),
        ("network", "remove", "net"),
    ];
    let want: Vec<(String, String, String)> = want
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    assert_eq!(seen, want, "{evs:#?}");
    let update = &evs[2]["Actor"]["Attributes"];
    assert_eq!(
        (
            update["name"].as_str(),
            update["replicas.old"].as_str(),
            update["replicas.new"].as_str()
        ),
        (Some("app"), Some("3"), Some("1"))
    );
    let only_net = events_of(&h, &ep, since, r#""network""#).await;
    assert_eq!(only_net.len(), 2);
    assert!(
        only_net
            .iter()
            .all(|e| e["Type"] == "network" && e["Actor"]["Attributes"]["name"] == "app_net")
    );
    h.shutdown().await;
}
