//! The real `swarm-upgrade` binary against the simulated swarm: each pre-flight refusal names
//! its cause on `/status`, in `plan` and as a metric, and drains nothing; once the cause is
//! gone the rollout starts by itself. A blocking service holds its node, then lets it go.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use swarm_sim::SimConfig;
use swarm_upgrade::cluster::Availability;
use swarm_upgrade::events::{Event, EventStep};

mod common;
use common::operator_process::{OperatorFiles, expect_exit, free_listen, tail};
use common::sim_lab::{BIN, SimLab};

fn config() -> SimConfig {
    SimConfig {
        time_scale: 20.0,
        ..SimConfig::default()
    }
}

/// A lab with its spec written (`extra` under `strategy:`) and an operator's address.
struct Case {
    lab: SimLab,
    spec: PathBuf,
    listen: String,
}

impl Case {
    async fn start(config: SimConfig, extra_strategy: &str) -> Self {
        let lab = SimLab::start_converged(config).await;
        let spec = lab.write_spec(&lab.spec_text(1, extra_strategy));
        Self {
            lab,
            spec,
            listen: free_listen(),
        }
    }

    fn operator(&self, once: bool) -> Child {
        self.lab.operator_with(&self.spec, &self.listen, once)
    }

    async fn get(&self, path: &str) -> String {
        let addr = format!("tcp://{}", self.listen);
        match swarm_sim::client::request(&addr, "GET", path, None).await {
            Ok(answer) => String::from_utf8_lossy(&answer.body).into_owned(),
            Err(_) => String::new(),
        }
    }

    async fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.get("/status").await).unwrap_or_default()
    }

    /// `swarm-upgrade plan` against the swarm as it is now.
    fn plan(&self) -> String {
        let out = Command::new(BIN)
            .arg("plan")
            .arg("--spec")
            .arg(&self.spec)
            .arg("--docker-host")
            .arg(self.lab.sim.manager_endpoints().join(","))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    /// Until the simulator reports `host` in `state` (the swarm's view of it).
    async fn wait_state(&self, host: &str, state: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let now = swarm_sim::control::state(self.lab.sim.sim()).await;
            if now
                .nodes
                .iter()
                .any(|n| n.node.hostname == host && n.node.state == state)
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{host} not {state}: {now:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Until `/status` shows a blocker of `kind` whose message has every word; returns it.
    /// (Generous: the tests of this file run side by side on a shared machine.)
    async fn wait_blocker(&self, kind: &str, words: &[&str]) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
        loop {
            let status = self.status().await;
            let found = (status["blockers"].as_array().into_iter().flatten())
                .filter(|b| b["kind"] == kind)
                .filter_map(|b| b["message"].as_str())
                .find(|m| words.iter().all(|w| m.contains(w)))
                .map(str::to_string);
            if let Some(message) = found {
                return message;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {kind} blocker with {words:?} on /status: {:#}\nlog tail:\n{}",
                status["blockers"],
                tail(&self.lab.log(), 30)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn metric(&self, series: &str) -> Option<f64> {
        let text = self.get("/metrics").await;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    /// Until the loop has made `passes` more passes (each planned from a fresh observation).
    async fn wait_passes(&self, passes: f64) {
        let start = self.metric("swarm_upgrade_reconciles_total").await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while self.metric("swarm_upgrade_reconciles_total").await.unwrap() < start + passes {
            assert!(tokio::time::Instant::now() < deadline, "the loop stopped");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The operator refuses with `check`: `/status` says why with every word, the metric
    /// counts it, `plan` prints it, and after further passes no node was ever drained.
    async fn assert_refused(&self, check: &str, words: &[&str]) -> String {
        let mut all = vec![check];
        all.extend(words);
        let message = self.wait_blocker("preflight", &all).await;
        assert!(message.contains("nothing is drained"), "{message}");
        let series = format!("swarm_upgrade_preflight_refusals{{check=\"{check}\"}}");
        assert!(self.metric(&series).await >= Some(1.0), "{series}");
        self.wait_passes(3.0).await;
        self.assert_nothing_drained().await;
        let plan = self.plan();
        assert!(
            words.iter().all(|w| plan.contains(w)) && plan.contains("next: nothing to do now"),
            "{plan}"
        );
        message
    }

    async fn assert_nothing_drained(&self) {
        let drains = steps(&self.lab.events(), EventStep::Drain);
        assert!(drains.is_empty(), "drained {drains:?}");
        for frame in self.lab.sim.sim().history() {
            for n in &frame.nodes {
                assert_eq!(n.availability, "active", "{} at {}", n.hostname, frame.at);
            }
        }
    }

    /// Until the rollout's first drain (the refusal has lifted).
    async fn wait_first_drain(&self) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(host) = steps(&self.lab.events(), EventStep::Drain).first() {
                return host.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the rollout did not start: {:#}\nlog tail:\n{}",
                self.status().await["blockers"],
                tail(&self.lab.log(), 30)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn docker(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> u16 {
        let leader = self.lab.sim.control_docker_host();
        let body = body.map(|b| b.to_string());
        let answer = swarm_sim::client::request(&leader, method, path, body.as_deref())
            .await
            .unwrap();
        answer.status
    }

    async fn faults(&self, specs: &[&str]) {
        let url = self.lab.sim.control_url();
        let body = serde_json::json!({ "specs": specs }).to_string();
        let answer = swarm_sim::client::request(&url, "POST", "/_sim/faults", Some(&body))
            .await
            .unwrap();
        assert_eq!(answer.status, 200);
    }
}

fn steps(events: &[Event], step: EventStep) -> Vec<String> {
    (events.iter())
        .filter(|e| e.step == step)
        .map(|e| e.hostname.clone())
        .collect()
}

fn kill(mut op: Child) {
    let _ = op.kill();
    let _ = op.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downgrade_is_refused_until_the_spec_allows_it() {
    let case = Case::start(
        SimConfig {
            version: "27.0.3".into(),
            ..config()
        },
        "",
    )
    .await;
    let op = case.operator(false);
    case.assert_refused(
        "downgrade",
        &[
            "n2 runs 27.0.3, newer than the target 26.1.5",
            "allowDowngrade",
        ],
    )
    .await;
    let text = case.lab.spec_text(1, "    allowDowngrade: true\n");
    case.lab.write_spec(&text);
    assert_eq!(case.wait_first_drain().await, "n2");
    kill(op);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_down_is_refused_until_it_is_back() {
    let case = Case::start(config(), "").await;
    case.lab.sim.sim().stop_node("n5").await.unwrap();
    case.wait_state("n5", "down").await;
    let op = case.operator(false);
    case.assert_refused("node_not_ready", &["worker n5 is down"])
        .await;
    case.lab.sim.sim().start_node("n5", None).await.unwrap();
    assert_eq!(case.wait_first_drain().await, "n2");
    kill(op);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_manager_is_refused() {
    let case = Case::start(config(), "").await;
    case.lab.sim.sim().stop_node("n3").await.unwrap();
    case.wait_state("n3", "down").await;
    let op = case.operator(false);
    case.assert_refused(
        "manager_unreachable",
        &["manager n3 is", "managers are up for a quorum of 2"],
    )
    .await;
    kill(op);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_even_number_of_managers_is_refused_with_the_quorum_margin() {
    let case = Case::start(
        SimConfig {
            managers: 4,
            workers: 1,
            ..config()
        },
        "",
    )
    .await;
    let op = case.operator(false);
    case.assert_refused(
        "even_managers",
        &["the swarm has 4 managers: quorum is 3", "margin 0"],
    )
    .await;
    kill(op);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_with_live_restore_is_refused_until_it_is_turned_off() {
    let case = Case::start(config(), "").await;
    case.faults(&["live-restore=n3"]).await;
    let op = case.operator(false);
    case.assert_refused(
        "live_restore",
        &[
            "n3 runs with live-restore on",
            "incompatible with swarm mode",
        ],
    )
    .await;
    case.faults(&["live-restore=-n3"]).await;
    assert_eq!(case.wait_first_drain().await, "n2");
    kill(op);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconverged_service_is_refused_until_it_runs() {
    let case = Case::start(config(), "").await;
    let stuck = serde_json::json!({
        "Name": "stuck",
        "TaskTemplate": {
            "ContainerSpec": { "Image": "busybox:latest" },
            "Placement": { "Constraints": ["node.labels.disk==ssd"] }
        },
        "Mode": { "Replicated": { "Replicas": 1 } }
    });
    assert_eq!(
        case.docker("POST", "/services/create", Some(stuck)).await,
        201
    );
    let op = case.operator(false);
    case.assert_refused("unconverged_services", &["service stuck: 0/1 running"])
        .await;
    case.lab.add_label("n5", "disk", "ssd").await;
    case.wait_first_drain().await;
    kill(op);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_service_holds_its_node_until_its_task_is_gone() {
    let case = Case::start(config(), "").await;
    let backup = serde_json::json!({
        "Name": "backup",
        "Labels": { "swarm-upgrade.blocking": "true" },
        "TaskTemplate": {
            "ContainerSpec": { "Image": "busybox:latest" },
            "Placement": { "Constraints": ["node.hostname==n4"] }
        },
        "Mode": { "Replicated": { "Replicas": 1 } }
    });
    assert_eq!(
        case.docker("POST", "/services/create", Some(backup)).await,
        201
    );
    let text = case.lab.spec_text(1, "")
        + "  health:\n    blockingServices:\n      labels:\n        swarm-upgrade.blocking: \"true\"\n";
    case.lab.write_spec(&text);
    let mut op = case.operator(true);
    case.wait_blocker(
        "blocking_service",
        &["not draining n4", "backup", "swarm-upgrade.blocking=true"],
    )
    .await;
    // Everything else goes on; n4 waits, active, while the backup task runs there.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    while !steps(&case.lab.events(), EventStep::Reactivated).contains(&"n5".to_string()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "n5 was not upgraded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    case.wait_passes(3.0).await;
    assert!(!steps(&case.lab.events(), EventStep::Drain).contains(&"n4".to_string()));
    assert_eq!(case.lab.node("n4").await.availability, Availability::Active);
    let removed = swarm_upgrade::clock::Clock::system().now();
    assert_eq!(case.docker("DELETE", "/services/backup", None).await, 200);
    expect_exit(&mut op, 0, &case.lab).await;
    let events = case.lab.events();
    let drain = (events.iter())
        .find(|e| e.hostname == "n4" && e.step == EventStep::Drain)
        .expect("n4 drained once the backup was gone");
    assert!(drain.time > removed, "{drain:?} before {removed}");
    let n4 = case.lab.node("n4").await;
    assert!(n4.engine_version.starts_with("26.1.5"), "{n4:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_the_swarm_already_rejects_are_refused() {
    let case = Case::start(config(), "").await;
    // An engine restarted while active gets its tasks rejected for a while (the manual upgrade
    // procedure's "cannot create a swarm scoped network when swarm is not active").
    case.faults(&["restart-active"]).await;
    case.lab.sim.sim().stop_node("n5").await.unwrap();
    case.lab.sim.sim().start_node("n5", None).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let leader = case.lab.sim.control_docker_host();
        let tasks = swarm_sim::client::request(&leader, "GET", "/tasks", None)
            .await
            .unwrap();
        let tasks: serde_json::Value = serde_json::from_slice(&tasks.body).unwrap();
        let rejected =
            (tasks.as_array().into_iter().flatten()).any(|t| t["Status"]["State"] == "rejected");
        if rejected {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no task rejected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let op = case.operator(false);
    case.assert_refused(
        "rejected_tasks",
        &[
            "the swarm already rejects tasks",
            "on n5: cannot create a swarm scoped network",
        ],
    )
    .await;
    kill(op);
}
