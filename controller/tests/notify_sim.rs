//! `spec.notify.webhooks` through the real binary against the simulated swarm: local receivers
//! that record, answer 500 and hang; a failed node's `failed`, `paused` and, after
//! `swarm-upgrade resume`, `resumed` notifications.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use base64::Engine as _;
use bytes::Bytes;
use swarm_sim::SimConfig;
use swarm_upgrade::cluster::Role;
use swarm_upgrade::events::EventStep;
use swarm_upgrade::http_client::HttpClient;
use swarm_upgrade::notify::deliver::{
    DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, hmac_sha256_hex,
};

mod common;
use common::operator_process::{OperatorFiles, free_listen, tail, wait_event};
use common::sim_lab::{BIN, SimLab, TARGET, kill9};

/// How a receiver answers.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Ok,
    ServerError,
    /// Reads the request and never answers.
    Hang,
}

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Received {
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    at: jiff::Timestamp,
}

impl Received {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(answer: Answer) -> Self {
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let app = axum::Router::new()
            .fallback(axum::routing::post(record))
            .with_state((answer, got.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, got }
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `pred` holds for what was received.
    async fn wait(&self, limit: Duration, what: &str, pred: impl Fn(&[Received]) -> bool) {
        let deadline = tokio::time::Instant::now() + limit;
        while !pred(&self.got()) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what} not received within {limit:?}: {:#?}",
                self.got().iter().map(Received::json).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn record(
    State((answer, got)): State<(Answer, Arc<Mutex<Vec<Received>>>)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    got.lock().unwrap().push(Received {
        uri,
        headers,
        body,
        at: swarm_upgrade::clock::Clock::system().now(),
    });
    match answer {
        Answer::Ok => StatusCode::NO_CONTENT,
        Answer::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
        Answer::Hang => std::future::pending().await,
    }
}

fn header<'a>(r: &'a Received, name: &str) -> &'a str {
    r.headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header: {:?}", r.headers))
        .to_str()
        .unwrap()
}

/// The `notifications_failed_total` sample of `webhook` and `reason` on `/metrics` (0 if none).
async fn failed_total(listen: &str, webhook: &str, reason: &str) -> u64 {
    let client = HttpClient::new("notify-test", Duration::from_secs(2));
    let Ok(r) = client.get(&format!("http://{listen}/metrics"), "*/*").await else {
        return 0;
    };
    let sample = format!(
        "swarm_upgrade_notifications_failed_total{{webhook=\"{webhook}\",reason=\"{reason}\"}} "
    );
    r.text()
        .lines()
        .find_map(|l| l.strip_prefix(&sample).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

async fn wait_failed_total(
    listen: &str,
    webhook: &str,
    reason: &str,
    at_least: u64,
    limit: Duration,
) -> u64 {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let n = failed_total(listen, webhook, reason).await;
        if n >= at_least {
            return n;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{webhook} {reason}: {n} failures counted after {limit:?}, expected {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn sim_config() -> SimConfig {
    SimConfig {
        time_scale: 20.0,
        ..SimConfig::default()
    }
}

const SECRET: &str = "s3cr3t-hmac-key";
const SECRET_PATH: &str = "/hooks/T0SECRETPATH";
const SECRET_QUERY: &str = "token=SECRETQUERY";
const USER_INFO: &str = "bot:SECRETPASSWORD";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_that_record_fail_and_hang_never_hold_up_the_rollout() {
    let lab = SimLab::start_converged(sim_config()).await;
    let (recorder, failing, hanging) = (
        Receiver::start(Answer::Ok).await,
        Receiver::start(Answer::ServerError).await,
        Receiver::start(Answer::Hang).await,
    );
    let secret_file = lab.path("webhook-secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let notify = format!(
        r#"  notify:
    webhooks:
      - name: recorder
        url: "http://{USER_INFO}@{}{SECRET_PATH}?{SECRET_QUERY}"
        secretFile: {}
      - name: failing
        url: http://{}/hook
        events: [completed]
      - name: hanging
        url: http://{}/hook
        timeout: 1s
"#,
        recorder.addr,
        secret_file.display(),
        failing.addr,
        hanging.addr
    );
    let spec = lab.write_spec(&format!("{}{notify}", lab.spec_text(1, "")));
    let listen = free_listen();
    let mut op = lab.operator_with(&spec, &listen, false);

    let completed = wait_event(&lab, Duration::from_secs(120), |e| {
        e.step == EventStep::Completed
    })
    .await;
    recorder
        .wait(
            Duration::from_secs(5),
            "the completed notification",
            |got| got.iter().any(|r| r.json()["event"] == "completed"),
        )
        .await;
    let events = lab.events();
    let started = events.first().unwrap().time;
    let rollout = completed.time.duration_since(started);

    // The recorder: one signed, authenticated notification per ready node and the completion,
    // at the path and query of its URL.
    let got = recorder.got();
    let kinds: Vec<String> = got
        .iter()
        .map(|r| r.json()["event"].as_str().unwrap().to_string())
        .collect();
    let ready = events.iter().filter(|e| e.step == EventStep::Ready).count();
    assert_eq!(ready, lab.nodes().await.len(), "{events:#?}");
    assert_eq!(
        kinds.iter().filter(|k| *k == "nodeUpgraded").count(),
        ready,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("completed"),
        "{kinds:?}"
    );
    assert_eq!(kinds.len(), ready + 1, "{kinds:?}");
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(USER_INFO)
    );
    let mut ids = std::collections::BTreeSet::new();
    for r in &got {
        assert_eq!(r.uri.path(), SECRET_PATH);
        assert_eq!(r.uri.query(), Some(SECRET_QUERY));
        assert_eq!(
            header(r, SIGNATURE_HEADER),
            format!("sha256={}", hmac_sha256_hex(SECRET.as_bytes(), &r.body))
        );
        assert_eq!(header(r, "authorization"), basic);
        assert_eq!(header(r, EVENT_HEADER), r.json()["event"]);
        assert!(
            ids.insert(header(r, DELIVERY_HEADER).to_string()),
            "a delivery ID twice"
        );
    }
    for r in got.iter().filter(|r| r.json()["event"] == "nodeUpgraded") {
        let body = r.json();
        assert_eq!(body["toVersion"], TARGET);
        let host = body["node"]["hostname"].as_str().unwrap();
        assert!(
            body["text"]
                .as_str()
                .unwrap()
                .contains(&format!("{host} (")),
            "{body}"
        );
    }
    // Not held up by the hanging webhook: the completion reached the recorder at once, and
    // the rollout took less than the hanging webhook's notifications alone would have, had the
    // loop sent them (each 5 attempts of a 1 s timeout).
    let done = got.last().unwrap();
    let lag = done.at.duration_since(completed.time);
    let hanging_ids: std::collections::BTreeSet<String> = hanging
        .got()
        .iter()
        .map(|r| header(r, DELIVERY_HEADER).to_string())
        .collect();
    let serial_cost = (ready + 1) as f64 * 5.0;
    println!(
        "rollout {:.1}s (sending the hanging webhook's {} notifications in the loop: at least {serial_cost:.0}s); completed notification {:.0} ms after the event; the hanging webhook was on notification {} of them",
        rollout.as_secs_f64(),
        ready + 1,
        lag.as_secs_f64() * 1000.0,
        hanging_ids.len()
    );
    assert!(
        lag.as_secs_f64() < 2.0,
        "the completion took {lag:?} to arrive"
    );
    assert!(
        rollout.as_secs_f64() < serial_cost,
        "the rollout took {rollout:?}"
    );

    // The failing webhook: its one notification tried 1 + 4 times, then counted as failed.
    wait_failed_total(&listen, "failing", "http_5xx", 1, Duration::from_secs(40)).await;
    assert_eq!(failing.got().len(), 5, "attempts at the failing webhook");
    // The hanging one: each attempt times out after 1s; after 5 the notification is counted.
    let timeouts =
        wait_failed_total(&listen, "hanging", "timeout", 1, Duration::from_secs(40)).await;
    assert!(hanging.got().len() >= 5, "{} attempts", hanging.got().len());
    println!(
        "failing: {} attempts, 1 counted http_5xx; hanging: {} attempts, {timeouts} counted timeout",
        failing.got().len(),
        hanging.got().len()
    );

    // The URL's secret parts are in no log line, metric or status.
    let client = HttpClient::new("notify-test", Duration::from_secs(2));
    let metrics = client
        .get(&format!("http://{listen}/metrics"), "*/*")
        .await
        .unwrap()
        .text();
    let status = client
        .get(&format!("http://{listen}/status"), "*/*")
        .await
        .unwrap()
        .text();
    kill9(&mut op);
    let log = lab.log();
    assert!(
        log.contains("notification not delivered"),
        "{}",
        tail(&log, 30)
    );
    for (what, text) in [("log", &log), ("metrics", &metrics), ("status", &status)] {
        for secret in ["T0SECRETPATH", "SECRETQUERY", "SECRETPASSWORD", SECRET] {
            assert!(!text.contains(secret), "the {what} shows {secret}");
        }
    }
    lab.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_node_notifies_failed_and_paused_then_resumed_after_resume() {
    let lab = SimLab::start_converged(sim_config()).await;
    let chat = Receiver::start(Answer::Ok).await;
    let worker = lab
        .nodes()
        .await
        .into_iter()
        .find(|n| n.role == Role::Worker)
        .unwrap()
        .hostname;
    let mut faults = lab.sim.sim().faults();
    faults.fail_upgrade = vec![worker.clone()];
    lab.sim.sim().set_faults(faults.clone());
    let notify = format!(
        r#"  notify:
    webhooks:
      - url: http://{}/chat
        format: slack
        events: [failed, paused, resumed, completed]
"#,
        chat.addr
    );
    let spec = lab.write_spec(&format!("{}{notify}", lab.spec_text(1, "")));
    let mut op = lab.operator_with(&spec, &free_listen(), false);
    let texts = |got: &[Received]| -> Vec<String> {
        got.iter()
            .map(|r| r.json()["text"].as_str().unwrap().to_string())
            .collect()
    };
    chat.wait(Duration::from_secs(120), "failed and paused", |got| {
        texts(got).len() >= 2
    })
    .await;
    let got = chat.got();
    for r in &got {
        assert_eq!(r.json().as_object().unwrap().len(), 1, "slack: only text");
    }
    let lines = texts(&got);
    assert!(
        lines[0].starts_with(&format!(
            "swarm-upgrade reliability-test: {worker} (worker) failed upgrading "
        )) && lines[0].contains(&format!("-> {TARGET}: ")),
        "{lines:?}"
    );
    assert!(
        lines[1].contains(&format!("rollout to {TARGET} paused: {worker} failed")),
        "{lines:?}"
    );

    faults.fail_upgrade.clear();
    lab.sim.sim().set_faults(faults);
    let resume = Command::new(BIN)
        .args(["resume", "--docker-host"])
        .arg(lab.sim.manager_endpoints().join(","))
        .output()
        .unwrap();
    assert!(resume.status.success(), "{resume:?}");
    chat.wait(Duration::from_secs(120), "resumed and completed", |got| {
        texts(got).iter().any(|t| t.contains(" completed: "))
    })
    .await;
    kill9(&mut op);
    let lines = texts(&chat.got());
    println!("{lines:#?}");
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(
        lines[2].contains(&format!(
            "rollout to {TARGET} resumed: the failure of {worker} is cleared"
        )),
        "{lines:?}"
    );
    assert!(
        lines[3].contains(&format!("rollout to {TARGET} completed")),
        "{lines:?}"
    );
    lab.sim.shutdown().await;
}
