//! The real `swarm-upgrade` binary against the simulated swarm, through the Docker API:
//! ordering, admin availability, crash-resume, failure and rollback, bad spec edits.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use swarm_sim::{Faults, SimConfig};
use swarm_upgrade::cluster::{Availability, NodeView, Role};
use swarm_upgrade::events::{Event, EventStep};
use swarm_upgrade::marks;
use swarm_upgrade::rollout_check::{Fleet, check_order};

mod common;
use common::operator_process::{OperatorFiles, expect_exit, free_listen, wait_event};
use common::sim_lab::{BIN, SimLab, TARGET, kill9};

type Lab = SimLab;

fn position(events: &[Event], host: &str, step: EventStep) -> Option<usize> {
    events
        .iter()
        .position(|e| e.hostname == host && e.step == step)
}

/// The rollout's order (managers first, one at a time, ...), proven from the events file.
fn assert_rollout_order(events: &[Event], nodes: &[NodeView]) {
    let fleet = Fleet::new(nodes.iter().map(|n| (n.hostname.as_str(), n.role)));
    let report = check_order(events, &fleet);
    assert!(report.is_ok(), "{report}\n{events:#?}");
}

async fn assert_clean_at_target(lab: &Lab, expected: &BTreeMap<String, Availability>) {
    for n in lab.nodes().await {
        assert!(
            swarm_upgrade::spec::version_core(&n.engine_version) == TARGET,
            "{} at {}",
            n.hostname,
            n.engine_version
        );
        assert!(
            !marks::has_any(&n.labels),
            "{} keeps {:?}",
            n.hostname,
            n.labels
        );
        assert_eq!(
            Some(&n.availability),
            expected.get(&n.hostname),
            "{} availability",
            n.hostname
        );
    }
}

async fn availabilities(lab: &Lab) -> BTreeMap<String, Availability> {
    lab.nodes()
        .await
        .into_iter()
        .map(|n| (n.hostname, n.availability))
        .collect()
}

fn sim_config() -> SimConfig {
    SimConfig {
        time_scale: 20.0,
        ..SimConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_rollout_keeps_the_seed_order() {
    let lab = Lab::start_converged(sim_config()).await;
    let before = availabilities(&lab).await;
    let spec = lab.write_spec(&lab.spec_text(1, ""));
    let mut op = lab.operator_with(&spec, &free_listen(), true);
    expect_exit(&mut op, 0, &lab).await;
    let events = lab.events();
    let nodes = lab.nodes().await;
    assert_rollout_order(&events, &nodes);
    assert_eq!(events.last().unwrap().step, EventStep::Completed);
    assert_clean_at_target(&lab, &before).await;
    // The leader at the start is the last manager upgraded.
    lab.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_leader_handover_the_leader_hands_over_then_is_upgraded_as_a_worker() {
    // The demoted leader's engine takes a minute to stop its manager: stopped before that, it
    // would keep its raft data and its engine would crash when promoted back.
    let mut config = sim_config();
    config.timings.demoted_manager_stop = 60.0;
    let lab = Lab::start_converged(config).await;
    let before = availabilities(&lab).await;
    let leader = lab.nodes().await.into_iter().find(|n| n.leader).unwrap();
    let spec = lab.write_spec(&lab.spec_text(1, "    leaderHandover: true\n"));
    let mut op = lab.operator_with(&spec, &free_listen(), true);
    expect_exit(&mut op, 0, &lab).await;

    let events = lab.events();
    let nodes = lab.nodes().await;
    assert_rollout_order(&events, &nodes);
    assert_clean_at_target(&lab, &before).await;
    let report = lab.invariants(1);
    assert!(report.is_ok(), "{report}");
    let old = nodes.iter().find(|n| n.id == leader.id).unwrap();
    assert_eq!(old.role, Role::Manager, "promoted back");
    assert!(old.reachable, "{old:?}");
    // Its steps: drained, demoted, upgraded, promoted back, Ready, then reactivated.
    let steps: Vec<EventStep> = events
        .iter()
        .filter(|e| e.node_id == leader.id)
        .map(|e| e.step)
        .collect();
    let pos = |s: EventStep| steps.iter().position(|x| *x == s).unwrap_or(usize::MAX);
    assert!(
        pos(EventStep::Demote) < pos(EventStep::Upgrade)
            && pos(EventStep::Upgrade) < pos(EventStep::Promote)
            && pos(EventStep::Promote) < pos(EventStep::Ready)
            && pos(EventStep::Ready) < pos(EventStep::Reactivated),
        "{steps:?}"
    );
    // Its engine stopped only while another manager led and it was out of raft.
    let frames = lab.sim.sim().history();
    let stopped = frames
        .iter()
        .filter_map(|f| f.nodes.iter().find(|n| n.id == leader.id).map(|n| (f, n)))
        .find(|(_, n)| !n.engine_running)
        .expect("the old leader's engine stopped");
    let (frame, node) = stopped;
    assert_eq!(node.role, "worker");
    assert!(frame.nodes.iter().any(|n| n.leader && n.id != leader.id));
    lab.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_worker_is_left_out_and_keeps_its_hold() {
    let lab = Lab::start_converged(sim_config()).await;
    let worker = lab
        .nodes()
        .await
        .into_iter()
        .rfind(|n| n.role == Role::Worker)
        .unwrap();
    lab.add_label(&worker.hostname, marks::HOLD, "disk swap on Friday")
        .await;
    let spec = lab.write_spec(&lab.spec_text(1, ""));
    let mut op = lab.operator_with(&spec, &free_listen(), true);
    expect_exit(&mut op, 0, &lab).await;
    let events = lab.events();
    assert!(
        events.iter().all(|e| e.hostname != worker.hostname),
        "the held node was touched: {events:#?}"
    );
    let done = events.last().unwrap();
    assert_eq!(done.step, EventStep::Completed);
    assert!(done.message.contains("with 1 node held"), "{done:?}");
    for n in lab.nodes().await {
        let at_target = swarm_upgrade::spec::version_core(&n.engine_version) == TARGET;
        assert_eq!(at_target, n.hostname != worker.hostname, "{n:?}");
        assert!(
            !marks::has_any(&n.labels),
            "{} keeps {:?}",
            n.hostname,
            n.labels
        );
    }
    let held = lab.node(&worker.hostname).await;
    assert_eq!(
        held.labels.get(marks::HOLD).map(String::as_str),
        Some("disk swap on Friday"),
        "the admin's hold is kept"
    );
    lab.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_drained_worker_is_upgraded_and_stays_drained() {
    let lab = Lab::start_converged(sim_config()).await;
    let worker = lab
        .nodes()
        .await
        .into_iter()
        .find(|n| n.role == Role::Worker)
        .unwrap()
        .hostname;
    lab.set_availability(&worker, Availability::Drain).await;
    let before = availabilities(&lab).await;
    assert_eq!(before[&worker], Availability::Drain);
    let spec = lab.write_spec(&lab.spec_text(1, ""));
    let mut op = lab.operator_with(&spec, &free_listen(), true);
    expect_exit(&mut op, 0, &lab).await;
    assert_clean_at_target(&lab, &before).await;
    let events = lab.events();
    let back = events
        .iter()
        .find(|e| e.hostname == worker && e.step == EventStep::Reactivated)
        .unwrap_or_else(|| panic!("no reactivation of {worker}: {events:#?}"));
    assert!(back.message.contains("drain"), "{back:?}");
    lab.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_drain_and_mid_upgrade_the_operator_resumes_and_cleans_up() {
    // Slower simulated time, so drains and upgrades last long enough to be interrupted.
    let lab = Lab::start_converged(SimConfig {
        time_scale: 2.0,
        ..SimConfig::default()
    })
    .await;
    let before = availabilities(&lab).await;
    let spec = lab.write_spec(&lab.spec_text(1, ""));

    let mut op = lab.operator_with(&spec, &free_listen(), true);
    let drain = wait_event(&lab, Duration::from_secs(60), |e| {
        e.step == EventStep::Drain && e.role == "manager"
    })
    .await;
    kill9(&mut op);
    // The state is in the labels: the node is drained and marked.
    let node = lab
        .nodes()
        .await
        .into_iter()
        .find(|n| n.id == drain.node_id)
        .unwrap();
    assert!(marks::has_any(&node.labels));

    let mut op = lab.operator_with(&spec, &free_listen(), true);
    wait_event(&lab, Duration::from_secs(90), |e| {
        e.step == EventStep::Upgrade && e.role == "worker"
    })
    .await;
    kill9(&mut op);

    let mut op = lab.operator_with(&spec, &free_listen(), true);
    expect_exit(&mut op, 0, &lab).await;
    assert_clean_at_target(&lab, &before).await;
    assert_rollout_order(&lab.events(), &lab.nodes().await);
    lab.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_upgrade_rolls_back_and_pauses() {
    let mut config = sim_config();
    config.faults = Faults {
        fail_upgrade: vec!["n4".into()],
        ..Faults::default()
    };
    let lab = Lab::start_converged(config).await;
    let before = availabilities(&lab).await;
    let spec = lab.write_spec(&lab.spec_text(1, ""));
    let mut op = lab.operator_with(&spec, &free_listen(), true);
    // Exit 2: paused by a failure.
    expect_exit(&mut op, 2, &lab).await;
    let events = lab.events();
    for step in [EventStep::Failed, EventStep::Rollback, EventStep::Paused] {
        assert!(
            position(&events, "n4", step).is_some(),
            "{step} missing: {events:#?}"
        );
    }
    assert!(
        events.iter().all(|e| e.hostname != "n5"),
        "nothing else is touched: {events:#?}"
    );
    let nodes = lab.nodes().await;
    let w1 = nodes.iter().find(|n| n.hostname == "n4").unwrap();
    assert!(w1.engine_version.starts_with("20.10.24"), "{w1:?}");
    assert_eq!(w1.availability, before["n4"], "serving again");
    let mark = w1.mark().unwrap().unwrap();
    assert_eq!(mark.step, marks::Step::Failed);
    assert!(mark.reason.unwrap().contains("exited"));
    lab.sim.shutdown().await;
}

/// The rollback's step is in the node's labels: killed while it runs, the next operator runs
/// it again once the engine is back, and ends where an uninterrupted one does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_rollback_the_operator_finishes_it() {
    let mut config = sim_config();
    config.time_scale = 2.0;
    config.faults = Faults {
        fail_upgrade: vec!["n4".into()],
        ..Faults::default()
    };
    let lab = Lab::start_converged(config).await;
    let before = availabilities(&lab).await;
    let spec = lab.write_spec(&lab.spec_text(1, ""));
    let mut op = lab.operator_with(&spec, &free_listen(), true);
    wait_event(&lab, Duration::from_secs(90), |e| {
        e.step == EventStep::Rollback && e.hostname == "n4"
    })
    .await;
    kill9(&mut op);
    let n4 = lab.node("n4").await;
    assert_eq!(
        n4.mark().unwrap().unwrap().step,
        marks::Step::RollingBack,
        "{n4:?}"
    );

    let mut op = lab.operator_with(&spec, &free_listen(), true);
    expect_exit(&mut op, 2, &lab).await;
    let n4 = lab.node("n4").await;
    assert!(n4.engine_version.starts_with("20.10.24"), "{n4:?}");
    assert_eq!(n4.availability, before["n4"], "serving again");
    let mark = n4.mark().unwrap().unwrap();
    assert_eq!(mark.step, marks::Step::Failed);
    assert!(mark.reason.unwrap().contains("exited"));
    let events = lab.events();
    assert!(
        events.iter().all(|e| e.hostname != "n5"),
        "nothing else is touched: {events:#?}"
    );
    lab.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_spec_edit_keeps_the_last_good_spec() {
    let lab = Lab::start_converged(sim_config()).await;
    let spec = lab.write_spec(&lab.spec_text(1, "    paused: true\n"));
    let listen = free_listen();
    let mut op = lab.operator_with(&spec, &listen, true);
    let client = operator_http::Client::new(&listen);
    client.wait_ready().await;
    lab.write_spec("apiVersion: swarm-upgrade.io/v1alpha1\nkind: EngineUpgrade\nspec: [unclosed\n");
    let status = client
        .poll_json(
            "/status",
            |s| s["spec_error"].is_string(),
            Duration::from_secs(10),
        )
        .await;
    let error = status["spec_error"].as_str().unwrap();
    assert!(error.contains("spec.yaml:"), "names the file: {error}");
    assert_eq!(status["observed_version"], TARGET);
    let metrics = client.get("/metrics").await;
    assert!(metrics.contains("swarm_upgrade_spec_valid 0"), "{metrics}");
    assert!(
        lab.events().iter().all(|e| e.step != EventStep::Drain),
        "still paused"
    );
    // Fixed and unpaused: picked up without a restart, and the rollout completes.
    lab.write_spec(&lab.spec_text(1, ""));
    expect_exit(&mut op, 0, &lab).await;
    lab.sim.shutdown().await;
}

/// The operator's `/status`, `/metrics` and `/healthz`, through the library's HTTP client.
mod operator_http {
    use std::time::Duration;

    use swarm_upgrade::http_client::HttpClient;

    pub struct Client {
        base: String,
        http: HttpClient,
    }

    impl Client {
        pub fn new(addr: &str) -> Self {
            Self {
                base: format!("http://{addr}"),
                http: HttpClient::new("rollout-sim-test", Duration::from_secs(5)),
            }
        }

        pub async fn get(&self, path: &str) -> String {
            let url = format!("{}{path}", self.base);
            // The body whatever the status: the callers judge what it says.
            self.http.get(&url, "*/*").await.unwrap().text()
        }

        pub async fn wait_ready(&self) {
            let url = format!("{}/healthz", self.base);
            for _ in 0..200 {
                if self.http.get(&url, "*/*").await.is_ok() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("operator HTTP never came up on {}", self.base);
        }

        pub async fn poll_json(
            &self,
            path: &str,
            pred: impl Fn(&serde_json::Value) -> bool,
            limit: Duration,
        ) -> serde_json::Value {
            let deadline = tokio::time::Instant::now() + limit;
            loop {
                let v: serde_json::Value =
                    serde_json::from_str(&self.get(path).await).unwrap_or_default();
                if pred(&v) {
                    return v;
                }
                assert!(tokio::time::Instant::now() < deadline, "{path}: {v:#}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The seed's exhaust_addrs case on the simulator: the rejections are counted with their
/// classified reason, `diagnose` names the network and the cause, and `plan` predicts what
/// draining each node does to the full network.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_network_is_counted_diagnosed_and_predicted() {
    let lab = Lab::start_converged(SimConfig {
        stack: swarm_sim::Stack::SeedAndExhaust,
        ..sim_config()
    })
    .await;
    let endpoints = lab.sim.manager_endpoints().join(",");
    // Wait until the simulated allocator has rejected the tasks of the node left without an address.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let tasks = lab.swarm.tasks().await.unwrap();
        let rejected = tasks
            .iter()
            .filter(|t| {
                t.status.as_ref().and_then(|s| s.err.as_deref())
                    == Some("node is missing network attachments, ip addresses may be exhausted")
            })
            .count();
        if rejected > 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no rejection seen");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let out = Command::new(BIN)
        .args(["diagnose", "--docker-host", &endpoints])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("ex_service"), "{text}");
    assert!(text.contains("ex_default"), "{text}");
    assert!(text.contains("network_attachments_exhausted"), "{text}");

    let spec = lab.write_spec(&lab.spec_text(1, ""));
    // Once the allocator has settled (24/24 running, none on the node without an address),
    // the plan shows what draining each node does to ex_default: a full network, one new
    // load-balancer address needed where the tasks go, one freed where they leave: it fits.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let plan = loop {
        let out = Command::new(BIN)
            .args(["plan", "--json", "--docker-host", &endpoints, "--spec"])
            .arg(&spec)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let full = plan["predictions"].as_array().unwrap().iter().any(|p| {
            p["networks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["name"] == "ex_default" && n["free_before"] == 0 && n["needed"] == 1)
        });
        if full {
            break plan;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ex_default never seen full: {plan:#}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    for prediction in plan["predictions"].as_array().unwrap() {
        for n in prediction["networks"].as_array().unwrap() {
            if n["name"] == "ex_default" && n["needed"] == 1 {
                assert_eq!(n["available"], 1, "{prediction:#}");
                assert_eq!(n["free_after"], 0, "{prediction:#}");
            }
        }
    }
    assert!(
        !plan["plan"]["blockers"].to_string().contains("vetoed"),
        "{plan:#}"
    );

    // The running operator counts the rejections by reason.
    let listen = free_listen();
    let mut op = lab.operator_with(&spec, &listen, false);
    let client = operator_http::Client::new(&listen);
    client.wait_ready().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let m = client.get("/metrics").await;
        if m.contains("reason=\"network_attachments_exhausted\"") {
            break m;
        }
        assert!(tokio::time::Instant::now() < deadline, "{m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("swarm_upgrade_task_rejections_total")
                && l.contains("network_attachments_exhausted")
                && l.contains("ex_service")
        })
        .unwrap_or_else(|| panic!("{metrics}"));
    let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 1.0, "{line}");
    assert!(
        metrics.contains("swarm_upgrade_network_free_addresses{network=\"ex_default\"} 0"),
        "{metrics}"
    );
    kill9(&mut op);
    lab.sim.shutdown().await;
}

fn health_spec(port: u16, resume: bool) -> String {
    format!(
        "  health:\n    probes:\n      - target: \"127.0.0.1:{port}\"\n        interval: 100ms\n        timeout: 200ms\n    maxConnectivityErrors: 0\n    resumeWhenHealthy: {resume}\n"
    )
}

/// A probe that fails holds the rollout before the first node; with `resumeWhenHealthy` it
/// goes on by itself once the target answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_gate_pauses_and_the_rollout_resumes_when_healthy() {
    let lab = Lab::start_converged(sim_config()).await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let spec = lab.write_spec(&(lab.spec_text(1, "") + &health_spec(port, true)));
    let listen = free_listen();
    let mut op = lab.operator_with(&spec, &listen, true);
    let client = operator_http::Client::new(&listen);
    client.wait_ready().await;
    let status = client
        .poll_json(
            "/status",
            |s| s["blockers"].to_string().contains("connectivity_errors"),
            Duration::from_secs(15),
        )
        .await;
    assert!(
        status["conditions"].to_string().contains("Paused"),
        "{status:#}"
    );
    let metrics = client.get("/metrics").await;
    assert!(
        metrics.contains("swarm_upgrade_health_gate_failing{gate=\"connectivity_errors\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("swarm_upgrade_connectivity_errors_total{target=\"127.0.0.1:"),
        "{metrics}"
    );
    assert!(
        lab.events().iter().all(|e| e.step != EventStep::Drain),
        "{:#?}",
        lab.events()
    );
    // The target answers again: the gate passes and the rollout completes by itself.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let accept = tokio::spawn(async move {
        loop {
            let _ = listener.accept().await;
        }
    });
    expect_exit(&mut op, 0, &lab).await;
    accept.abort();
    lab.sim.shutdown().await;
}

/// Without `resumeWhenHealthy` a failing gate is latched in the cluster (a failed mark), so
/// it survives a restart and waits for the spec to change or `resume`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_gate_without_resume_is_latched_until_resume() {
    let lab = Lab::start_converged(sim_config()).await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let spec = lab.write_spec(&(lab.spec_text(1, "") + &health_spec(port, false)));
    let mut op = lab.operator_with(&spec, &free_listen(), true);
    expect_exit(&mut op, 2, &lab).await;
    let failed = lab
        .nodes()
        .await
        .into_iter()
        .filter(|n| {
            n.mark()
                .and_then(Result::ok)
                .is_some_and(|m| m.step == marks::Step::Failed)
        })
        .collect::<Vec<_>>();
    assert_eq!(failed.len(), 1, "{failed:#?}");
    let reason = failed[0].mark().unwrap().unwrap().reason.unwrap();
    assert!(reason.contains("connectivity_errors"), "{reason}");
    assert_eq!(failed[0].availability, Availability::Active, "not drained");
    // `resume` hands it back; nothing is left marked.
    let out = Command::new(BIN)
        .args([
            "resume",
            "--docker-host",
            &lab.sim.manager_endpoints().join(","),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&failed[0].hostname));
    assert!(lab.nodes().await.iter().all(|n| !marks::has_any(&n.labels)));
    lab.sim.shutdown().await;
}
