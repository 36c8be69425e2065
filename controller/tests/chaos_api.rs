//! API chaos (issue 13, part 2): the real binary against a simulated swarm whose Docker API
//! misbehaves in every way at once: 10 % of requests answered 500, 5 % of connections dropped,
//! 200 ms on every answer, one manager's endpoint partitioned (it hangs rather than refuses),
//! the leader changing in the middle of every drain, and every second node update answered
//! "update out of sequence". The rollout completes with the invariants held, and the retries
//! show in `swarm_upgrade_docker_api_errors_total`.

use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

use swarm_sim::SimConfig;
use swarm_sim::state::Frame;
use swarm_upgrade::events::EventStep;
use swarm_upgrade::http_client::{HttpClient, Post};

mod common;
use common::operator_process::{OperatorFiles, free_listen, tail};
use common::sim_lab::{SimLab, kill9};

const CHAOS: [&str; 6] = [
    "error-rate=0.1",
    "drop-rate=0.05",
    "latency=200ms",
    "partition=n2",
    "leader-change-on-drain",
    "out-of-sequence-every=2",
];

/// `swarm_upgrade_docker_api_errors_total` by its `error` label.
fn api_errors(metrics: &str) -> BTreeMap<String, f64> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("swarm_upgrade_docker_api_errors_total{error=\""))
        .filter_map(|rest| {
            let (label, value) = rest.split_once("\"} ")?;
            Some((label.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// Leader changes that happened while a node was draining (marked `draining`).
fn leader_changes_mid_drain(frames: &[Frame]) -> usize {
    let leader = |f: &Frame| {
        f.nodes
            .iter()
            .find(|n| n.leader)
            .map(|n| n.hostname.clone())
    };
    frames
        .windows(2)
        .filter(|w| {
            let draining = w[1].nodes.iter().any(|n| {
                n.labels.get("swarm-upgrade.step").map(String::as_str) == Some("draining")
            });
            leader(&w[0]).is_some() && leader(&w[0]) != leader(&w[1]) && draining
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rollout_completes_safely_through_api_chaos() {
    let lab = SimLab::start(SimConfig {
        time_scale: 20.0,
        ..SimConfig::default()
    })
    .await;
    let body = serde_json::json!({ "specs": CHAOS }).to_string();
    let http = HttpClient::new("chaos-test", Duration::from_secs(5));
    let url = format!("{}/_sim/faults", lab.sim.control_url());
    let faults = post(&http, &url, &body).await;
    assert!(faults.contains("\"partitioned\":[\"n2\"]"), "{faults}");

    let spec = lab.write_spec(&lab.spec_text(1, ""));
    let listen = free_listen();
    let started = Instant::now();
    let mut op = lab.operator_with(&spec, &listen, false);
    let deadline = started + Duration::from_secs(300);
    while !lab.events().iter().any(|e| e.step == EventStep::Completed) {
        assert!(
            Instant::now() < deadline,
            "no completion within 300 s\nevents: {:#?}\nlog tail:\n{}",
            lab.events(),
            tail(&lab.log(), 60)
        );
        if let Some(status) = op.try_wait().unwrap() {
            panic!("operator exited: {status}\n{}", tail(&lab.log(), 60));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed();
    let metrics = http
        .get(&format!("http://{listen}/metrics"), "*/*")
        .await
        .unwrap()
        .text();
    kill9(&mut op);
    lab.sim.sim().set_faults(swarm_sim::Faults::default());

    let errors = api_errors(&metrics);
    let frames = lab.sim.sim().history();
    let mid_drain = leader_changes_mid_drain(&frames);
    println!(
        "API chaos ({}): rollout completed in {:.1} s; docker API errors by label: {errors:?}; leader changes mid-drain: {mid_drain}",
        CHAOS.join(", "),
        took.as_secs_f64()
    );
    let report = lab.invariants(1);
    println!("invariants: {report}");
    assert!(
        report.is_ok(),
        "{report}\nlog tail:\n{}",
        tail(&lab.log(), 40)
    );
    let order = lab.order(1).await;
    assert!(order.is_ok(), "{order}\n{:#?}", lab.events());
    for label in ["status", "unreachable", "out_of_sequence"] {
        assert!(
            errors.get(label).is_some_and(|n| *n >= 1.0),
            "no {label} error counted: {errors:?}"
        );
    }
    assert!(mid_drain >= 1, "the leader never changed during a drain");
    lab.sim.shutdown().await;
}

/// `POST url` with a JSON body through the library's client; the answer must be a 200.
async fn post(http: &HttpClient, url: &str, body: &str) -> String {
    let uri: hyper::Uri = url.parse().unwrap();
    let answer = http
        .post(Post {
            uri: &uri,
            shown_as: url,
            content_type: "application/json",
            headers: Vec::new(),
            body: bytes::Bytes::copy_from_slice(body.as_bytes()),
        })
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.text()
}
