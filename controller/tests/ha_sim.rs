//! `run --ha` (issue 13, part 3): two operators against one simulated swarm, the real binary,
//! the lease in the swarm's own labels. Exactly one acts; the active one is killed with
//! SIGKILL mid-rollout; the standby takes over within the lease's bound (the measured time is
//! printed), resumes from the node labels, and finishes; the invariants hold over the whole
//! history. A clean shutdown releases the lease, and no admin setting of the swarm is lost.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use swarm_sim::SimConfig;
use swarm_upgrade::events::{Event, read_events};
use swarm_upgrade::http_client::HttpClient;
use swarm_upgrade::rollout_check::{Fleet, check_order};
use tokio::time::Instant;

mod common;
use common::operator_process::{OperatorFiles, free_listen, node_views, tail, wait_exit};
use common::sim_lab::{BIN, SimLab, kill9};

/// Short, so the test is quick; the bound scales with it.
const LEASE: Duration = Duration::from_secs(3);
const MAX_UNAVAILABLE: usize = 1;

/// One `run --ha` operator: its process, name, address and files.
struct HaOperator {
    child: Child,
    identity: &'static str,
    listen: String,
}

impl HaOperator {
    fn start(lab: &SimLab, spec: &Path, identity: &'static str, once: bool) -> Self {
        let listen = free_listen();
        let log = std::fs::File::create(lab.path(&format!("{identity}.log"))).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("run");
        if once {
            cmd.arg("--once");
        }
        cmd.arg("--ha")
            .arg("--ha-identity")
            .arg(identity)
            .arg("--ha-lease-duration")
            .arg(format!("{}s", LEASE.as_secs()))
            .arg("--spec")
            .arg(spec)
            .arg("--docker-host")
            .arg(lab.sim.manager_endpoints().join(","))
            // Each its own events file, as each replica of the stack has its own volume.
            .arg("--events")
            .arg(lab.path(&format!("{identity}.jsonl")))
            .arg("--listen")
            .arg(&listen)
            .arg("--spec-reread")
            .arg("500ms")
            .env("RUST_LOG", "info,swarm_upgrade=debug")
            .stdout(Stdio::null())
            .stderr(log);
        Self {
            child: cmd.spawn().expect("operator starts"),
            identity,
            listen,
        }
    }

    fn events(&self, lab: &SimLab) -> Vec<Event> {
        read_events(&lab.path(&format!("{}.jsonl", self.identity))).unwrap_or_default()
    }

    fn log(&self, lab: &SimLab) -> String {
        std::fs::read_to_string(lab.path(&format!("{}.log", self.identity))).unwrap_or_default()
    }

    /// `/status`'s role line, e.g. "standby: a holds the lease" (None before the first pass).
    async fn role(&self) -> Option<String> {
        let http = HttpClient::new("ha-sim-test", Duration::from_secs(2));
        let answer = http
            .get(
                &format!("http://{}/status", self.listen),
                "application/json",
            )
            .await
            .ok()?;
        let status: Value = serde_json::from_str(&answer.text()).ok()?;
        status["ha"].as_str().map(str::to_string)
    }

    async fn metric(&self, name: &str) -> Option<f64> {
        let http = HttpClient::new("ha-sim-test", Duration::from_secs(2));
        let text = http
            .get(&format!("http://{}/metrics", self.listen), "text/plain")
            .await
            .ok()?
            .text();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    /// Reconcile passes so far.
    async fn passes(&self) -> f64 {
        let passes = self.metric("swarm_upgrade_reconciles_total").await;
        passes.expect("the operator's /metrics")
    }

    /// Until `/status` shows a role starting with `prefix`; how long that took.
    async fn wait_role(&self, prefix: &str, limit: Duration, lab: &SimLab) -> Duration {
        let started = Instant::now();
        loop {
            if self.role().await.is_some_and(|r| r.starts_with(prefix)) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "{} never became {prefix} within {limit:?} (now {:?})\nlog tail:\n{}",
                self.identity,
                self.role().await,
                tail(&self.log(lab), 40)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The swarm object's labels as a manager serves them.
async fn swarm_labels(lab: &SimLab) -> serde_json::Map<String, Value> {
    let swarm = lab.swarm.swarm_object().await.unwrap();
    swarm["Spec"]["Labels"]
        .as_object()
        .cloned()
        .unwrap_or_default()
}

/// As an admin's `docker swarm update --snapshot-interval 5000 --label-add team=platform`
/// (labels through the API: the CLI has no flag for them).
async fn admin_swarm_settings(lab: &SimLab) -> Value {
    let swarm = lab.swarm.swarm_object().await.unwrap();
    let version = swarm["Version"]["Index"].as_u64().unwrap();
    let mut spec = swarm["Spec"].clone();
    spec["Labels"] = json!({"team": "platform"});
    spec["Raft"]["SnapshotInterval"] = json!(5000);
    spec["Dispatcher"]["HeartbeatPeriod"] = json!(7_000_000_000u64);
    lab.swarm.update_swarm_spec(&spec, version).await.unwrap();
    spec
}

/// The admin's settings are still there, beside whatever lease labels there are.
async fn assert_admin_settings_kept(lab: &SimLab, admin: &Value) {
    let swarm = lab.swarm.swarm_object().await.unwrap();
    let spec = &swarm["Spec"];
    assert_eq!(spec["Labels"]["team"], "platform", "{spec}");
    assert_eq!(spec["Raft"], admin["Raft"], "{spec}");
    assert_eq!(spec["Dispatcher"], admin["Dispatcher"], "{spec}");
    assert_eq!(spec["CAConfig"], admin["CAConfig"], "{spec}");
    assert_eq!(spec["Orchestration"], admin["Orchestration"], "{spec}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_from_a_killed_active_operator_and_finishes() {
    let lab = SimLab::start_converged(SimConfig {
        time_scale: 20.0,
        workers: 3,
        ..SimConfig::default()
    })
    .await;
    let admin = admin_swarm_settings(&lab).await;
    let spec = lab.write_spec(&lab.spec_text(MAX_UNAVAILABLE, ""));
    let mut a = HaOperator::start(&lab, &spec, "op-a", true);
    a.wait_role("active", Duration::from_secs(20), &lab).await;
    let mut b = HaOperator::start(&lab, &spec, "op-b", true);
    b.wait_role(
        "standby: op-a holds the lease",
        Duration::from_secs(20),
        &lab,
    )
    .await;
    assert_eq!(
        swarm_labels(&lab).await["swarm-upgrade.lease.holder"],
        "op-a"
    );

    // Mid-rollout: the second manager is on its way (the first one's whole cycle behind).
    let started = Instant::now();
    while a
        .events(&lab)
        .iter()
        .filter(|e| e.step.as_str() == "drain")
        .count()
        < 2
    {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the active operator never reached its second node\nlog tail:\n{}",
            tail(&a.log(&lab), 40)
        );
        assert!(a.child.try_wait().unwrap().is_none(), "op-a exited early");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Exactly one acts: the standby wrote nothing and says so in its metrics.
    assert_eq!(b.events(&lab), vec![], "the standby acted");
    assert_eq!(a.metric("swarm_upgrade_ha_active").await, Some(1.0));
    assert_eq!(b.metric("swarm_upgrade_ha_active").await, Some(0.0));

    kill9(&mut a.child);
    let killed = Instant::now();
    let a_events = a.events(&lab);
    let takeover = b.wait_role("active", LEASE * 3, &lab).await;
    let first_write = loop {
        if !b.events(&lab).is_empty() {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < LEASE * 5,
            "op-b took the lease and never acted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let code = wait_exit(&mut b.child, Duration::from_secs(120), &lab).await;
    let b_events = b.events(&lab);

    // The bound: the lease's duration since the holder's last renewal (at most a renewal
    // period before the kill is a renewal the standby already saw), plus two reads.
    let bound = LEASE + LEASE / 5 * 2 + Duration::from_millis(500);
    println!(
        "ha takeover: lease {LEASE:?}; op-b active {:.2} s after op-a was killed (bound {:.2} s), its first event {:.2} s after; op-a wrote {} events, op-b {}",
        takeover.as_secs_f64(),
        bound.as_secs_f64(),
        first_write.as_secs_f64(),
        a_events.len(),
        b_events.len()
    );
    assert_eq!(code, 0, "op-b log tail:\n{}", tail(&b.log(&lab), 60));
    assert!(
        takeover <= bound,
        "took over after {takeover:?}, bound {bound:?}"
    );
    let (last_a, first_b) = (
        a_events.iter().map(|e| e.time).max().unwrap(),
        b_events.iter().map(|e| e.time).min().unwrap(),
    );
    assert!(
        last_a < first_b,
        "the two operators' events overlap in time"
    );

    let report = lab.invariants(MAX_UNAVAILABLE);
    assert!(
        report.is_ok(),
        "{report}\nop-b log tail:\n{}",
        tail(&b.log(&lab), 60)
    );
    let nodes = node_views(&lab.swarm).await;
    let fleet = Fleet::new(nodes.iter().map(|n| (n.hostname.as_str(), n.role)))
        .with_max_unavailable_workers(MAX_UNAVAILABLE);
    let all: Vec<Event> = a_events.into_iter().chain(b_events).collect();
    let order = check_order(&all, &fleet);
    assert!(order.is_ok(), "{order}");
    // op-b released the lease when it finished; the admin's settings were never lost.
    let labels = swarm_labels(&lab).await;
    assert_eq!(labels["swarm-upgrade.lease.holder"], "", "{labels:?}");
    assert_eq!(labels["swarm-upgrade.lease.transitions"], "2", "{labels:?}");
    assert_admin_settings_kept(&lab, &admin).await;
    lab.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_releases_the_lease_and_the_standby_takes_it_at_once() {
    let lab = SimLab::start(SimConfig {
        time_scale: 20.0,
        ..SimConfig::default()
    })
    .await;
    let admin = admin_swarm_settings(&lab).await;
    // Nothing to upgrade: the swarm is at the version already.
    let text = lab
        .spec_text(1, "")
        .replace("version: \"26.1.5\"", "version: \"20.10.24\"");
    let spec = lab.write_spec(&text);
    let mut a = HaOperator::start(&lab, &spec, "op-a", false);
    a.wait_role("active", Duration::from_secs(20), &lab).await;
    let mut b = HaOperator::start(&lab, &spec, "op-b", false);
    b.wait_role(
        "standby: op-a holds the lease",
        Duration::from_secs(20),
        &lab,
    )
    .await;

    // Idle, both wait for a change rather than spin: a pass per poll or event (the simulated
    // swarm's events wake a plain `run` about 22 times in 3 s here), not one per 50 ms (60).
    let before = (a.passes().await, b.passes().await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = (a.passes().await - before.0, b.passes().await - before.1);
    println!(
        "ha idle: passes in 3 s, active {} standby {}",
        idle.0, idle.1
    );
    assert!(
        idle.0 < 45.0 && idle.1 < 45.0,
        "passes in 3 s idle: {idle:?}"
    );

    // SIGTERM, as `docker service update` or a node drain stops a task.
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(a.child.id() as i32, libc::SIGTERM);
    }
    let stopped = Instant::now();
    let code = wait_exit(&mut a.child, Duration::from_secs(10), &lab).await;
    let takeover = b.wait_role("active", LEASE, &lab).await + stopped.elapsed();
    println!(
        "ha release: op-b active {:.2} s after op-a was stopped (lease {LEASE:?})",
        takeover.as_secs_f64()
    );
    assert_eq!(code, 0, "op-a log tail:\n{}", tail(&a.log(&lab), 40));
    assert!(
        a.log(&lab).contains("released the lease"),
        "{}",
        tail(&a.log(&lab), 20)
    );
    assert!(
        takeover < LEASE,
        "took {takeover:?}: the lease was not released"
    );
    let labels = swarm_labels(&lab).await;
    assert_eq!(labels["swarm-upgrade.lease.holder"], "op-b");
    assert_eq!(labels["swarm-upgrade.lease.transitions"], "2", "{labels:?}");
    assert_admin_settings_kept(&lab, &admin).await;
    kill9(&mut b.child);
    lab.sim.shutdown().await;
}
