//! The real `swarm-upgrade` binary against an autolocked simulated swarm: each upgraded manager
//! comes up locked; with `spec.upgrade.unlockKey` the operator unlocks it, with a wrong key it
//! fails clearly once, and without a key it says so before draining and waits for a hand unlock.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use swarm_sim::{SimConfig, SimHandle};
use swarm_upgrade::cluster::{Availability, NodeView};
use swarm_upgrade::docker::{Endpoint, Swarm};
use swarm_upgrade::events::{Event, EventStep};
use swarm_upgrade::rollout_check::{Fleet, check_order};

mod common;
use common::operator_process::{OperatorFiles, expect_exit, free_listen, node_views, tail};

const BIN: &str = env!("CARGO_BIN_EXE_swarm-upgrade");
const TARGET: &str = "26.1.5";
const NO_KEY: &str = "the swarm is autolocked: each upgraded manager will come up locked; give spec.upgrade.unlockKey or unlock each by hand";

struct Lab {
    sim: SimHandle,
    dir: tempfile::TempDir,
    swarm: Swarm,
    /// The swarm's unlock key, once autolock is on.
    key: String,
}

impl OperatorFiles for Lab {
    fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Lab {
    /// A 3-manager, 2-worker swarm with autolock turned on through the API, as
    /// `docker swarm update --autolock=true` does it.
    async fn start() -> Self {
        let sim = SimHandle::start(SimConfig {
            time_scale: 20.0,
            ..SimConfig::default()
        })
        .await
        .expect("sim starts");
        let endpoints = sim
            .manager_endpoints()
            .iter()
            .map(|e| Endpoint::parse(e, None).unwrap())
            .collect();
        let swarm = Swarm::new(endpoints).with_patience(Duration::from_secs(20));
        let n1 = sim.endpoint("n1").await.unwrap();
        let inspect: serde_json::Value = get(&n1, "/swarm").await;
        let version = inspect["Version"]["Index"].as_u64().unwrap();
        let mut spec = inspect["Spec"].clone();
        spec["EncryptionConfig"]["AutoLockManagers"] = true.into();
        let status = post(&n1, &format!("/swarm/update?version={version}"), &spec).await;
        assert_eq!(status, 200);
        let key: serde_json::Value = get(&n1, "/swarm/unlockkey").await;
        let key = key["UnlockKey"].as_str().unwrap().to_string();
        assert!(key.starts_with("SWMKEY-1-"));
        Self {
            sim,
            dir: tempfile::tempdir().unwrap(),
            swarm,
            key,
        }
    }

    fn write_spec(&self, upgrade_extra: &str, ready_timeout: &str) -> PathBuf {
        let url = self.sim.control_url();
        let text = format!(
            r#"apiVersion: swarm-upgrade.io/v1alpha1
kind: EngineUpgrade
metadata:
  name: autolock-test
spec:
  version: "{TARGET}"
  upgrade:
    command: ["{BIN}", "demo", "upgrade-node", "--sim", "{url}", "{{hostname}}", "{{version}}"]
    rollback: ["{BIN}", "demo", "rollback-node", "--sim", "{url}", "{{hostname}}"]
    timeout: 60s
{upgrade_extra}
  strategy:
    drainTimeout: 60s
    readyTimeout: {ready_timeout}
    settle: 200ms
"#
        );
        let path = self.path("spec.yaml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn write_key(&self, key: &str) -> String {
        let path = self.path("unlock-key");
        std::fs::write(&path, format!("{key}\n")).unwrap();
        format!("    unlockKey:\n      file: {}", path.display())
    }

    fn operator(&self, spec: &Path, once: bool, listen: &str) -> Child {
        let mut cmd = Command::new(BIN);
        cmd.arg("run")
            .arg("--spec")
            .arg(spec)
            .arg("--docker-host")
            .arg(self.sim.manager_endpoints().join(","))
            .arg("--events")
            .arg(self.path("events.jsonl"))
            .arg("--listen")
            .arg(listen)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.path("operator.log")).unwrap());
        if once {
            cmd.arg("--once");
        }
        cmd.spawn().expect("operator starts")
    }

    fn plan(&self, spec: &Path) -> String {
        self.cli("plan", spec)
    }

    /// `swarm-upgrade plan|status` against the swarm as it is now: stdout and stderr.
    fn cli(&self, command: &str, spec: &Path) -> String {
        let out = Command::new(BIN)
            .arg(command)
            .arg("--spec")
            .arg(spec)
            .arg("--docker-host")
            .arg(self.sim.manager_endpoints().join(","))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    async fn nodes(&self) -> Vec<NodeView> {
        node_views(&self.swarm).await
    }

    /// `docker swarm unlock` on `host`, by hand.
    async fn unlock_by_hand(&self, host: &str) {
        let ep = self.sim.endpoint(host).await.unwrap();
        let body = serde_json::json!({ "UnlockKey": self.key });
        assert_eq!(post(&ep, "/swarm/unlock", &body).await, 200);
    }

    /// Whether a manager's own engine says it is locked (false while its engine is stopped).
    async fn is_locked(&self, host: &str) -> bool {
        let ep = self.sim.endpoint(host).await.unwrap();
        // An engine stopped (or stopping, mid-request) is not locked yet.
        let Ok(answer) = swarm_sim::client::request(&ep, "GET", "/info", None).await else {
            return false;
        };
        let info: serde_json::Value = serde_json::from_slice(&answer.body).unwrap_or_default();
        info["Swarm"]["LocalNodeState"] == "locked"
    }
}

/// One request to an engine API endpoint (`tcp://HOST:PORT`) of the simulator.
async fn send(addr: &str, method: &str, path: &str, body: String) -> (u16, Vec<u8>) {
    let a = swarm_sim::client::request(addr, method, path, Some(&body))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (a.status, a.body)
}

async fn get(addr: &str, path: &str) -> serde_json::Value {
    let (status, body) = send(addr, "GET", path, String::new()).await;
    assert_eq!(
        status,
        200,
        "GET {path}: {}",
        String::from_utf8_lossy(&body)
    );
    serde_json::from_slice(&body).unwrap()
}

async fn post(addr: &str, path: &str, body: &serde_json::Value) -> u16 {
    send(addr, "POST", path, body.to_string()).await.0
}

fn steps_of(events: &[Event], step: EventStep) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.step == step)
        .map(|e| e.hostname.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_key_every_manager_is_unlocked_and_the_key_is_never_shown() {
    let lab = Lab::start().await;
    let extra = lab.write_key(&lab.key);
    let spec = lab.write_spec(&extra, "60s");
    let plan = lab.plan(&spec);
    assert!(!plan.contains(NO_KEY), "{plan}");
    let listen = free_listen();
    let mut op = lab.operator(&spec, true, &listen);
    expect_exit(&mut op, 0, &lab).await;

    let events = lab.events();
    let nodes = lab.nodes().await;
    let fleet = Fleet::new(nodes.iter().map(|n| (n.hostname.as_str(), n.role)));
    let report = check_order(&events, &fleet);
    assert!(report.is_ok(), "{report}\n{events:#?}");
    let mut unlocked = steps_of(&events, EventStep::Unlock);
    unlocked.sort();
    assert_eq!(
        unlocked,
        ["n1", "n2", "n3"],
        "each manager once: {events:#?}"
    );
    assert!(steps_of(&events, EventStep::Failed).is_empty());
    for n in &nodes {
        assert!(
            n.engine_version.starts_with(TARGET),
            "{} at {}",
            n.hostname,
            n.engine_version
        );
        assert_eq!(n.availability, Availability::Active, "{}", n.hostname);
        if n.role == swarm_upgrade::cluster::Role::Manager {
            assert!(!lab.is_locked(&n.hostname).await, "{}", n.hostname);
        }
    }
    let secret = &lab.key["SWMKEY-1-".len()..];
    let log = lab.log();
    assert!(
        log.contains("unlocked with the key from spec.upgrade.unlockKey.file"),
        "{}",
        tail(&log, 40)
    );
    assert!(!log.contains(secret), "the key is in the log");
    let events_text = std::fs::read_to_string(lab.path("events.jsonl")).unwrap();
    assert!(!events_text.contains(secret), "the key is in the events");
    assert!(!plan.contains(secret), "the key is in the plan");
    lab.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_refused_once_and_the_manager_is_left_drained() {
    let lab = Lab::start().await;
    let wrong = format!("SWMKEY-1-{}", "A".repeat(43));
    let extra = lab.write_key(&wrong);
    let spec = lab.write_spec(&extra, "60s");
    let mut op = lab.operator(&spec, true, &free_listen());
    expect_exit(&mut op, 2, &lab).await;
    let events = lab.events();
    let summary: Vec<String> = events
        .iter()
        .map(|e| format!("{} {} {}", e.hostname, e.step, e.message))
        .collect();
    assert_eq!(
        steps_of(&events, EventStep::Unlock),
        ["n2"],
        "one try: {summary:#?}\n{}",
        tail(&lab.log(), 80)
    );
    let failed = events
        .iter()
        .find(|e| e.step == EventStep::Failed)
        .expect("a failure");
    assert_eq!(failed.hostname, "n2");
    assert!(
        failed.message.contains("the unlock key was refused by n2")
            && failed.message.contains("invalid key provided"),
        "{failed:?}"
    );
    let n2 = lab
        .nodes()
        .await
        .into_iter()
        .find(|n| n.hostname == "n2")
        .unwrap();
    assert_eq!(n2.availability, Availability::Drain);
    assert!(lab.is_locked("n2").await);
    assert!(!lab.log().contains(&wrong[9..]), "the key is in the log");
    lab.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_the_rollout_says_so_and_waits_for_each_hand_unlock() {
    let lab = Lab::start().await;
    let spec = lab.write_spec("", "2s");
    let plan = lab.plan(&spec);
    assert!(
        plan.contains(NO_KEY),
        "plan says it before anything is drained:\n{plan}"
    );
    let listen = free_listen();
    let mut op = lab.operator(&spec, true, &listen);
    let mut unlocked = vec![];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while unlocked.len() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            tail(&lab.log(), 60)
        );
        assert!(
            op.try_wait().unwrap().is_none(),
            "exited early:\n{}",
            tail(&lab.log(), 60)
        );
        for host in ["n1", "n2", "n3"] {
            if unlocked.iter().any(|h| h == host) || !lab.is_locked(host).await {
                continue;
            }
            // Well past readyTimeout (2s, 40 s simulated): waiting, not failed, and saying why.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let status: serde_json::Value = get(&format!("tcp://{listen}"), "/status").await;
            let text = status.to_string();
            assert!(
                text.contains(&format!("{host} came up locked (autolock): {NO_KEY}")),
                "{text}"
            );
            assert!(steps_of(&lab.events(), EventStep::Failed).is_empty());
            // The swarm still lists its old engine; the node's own engine is the one shown.
            let status = lab.cli("status", &spec);
            let line = status
                .lines()
                .find(|l| l.split_whitespace().nth(1) == Some(host))
                .unwrap_or_else(|| panic!("no line for {host}:\n{status}"));
            assert!(
                line.contains(TARGET) && line.contains("upgraded"),
                "{status}"
            );
            lab.unlock_by_hand(host).await;
            unlocked.push(host.to_string());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    expect_exit(&mut op, 0, &lab).await;
    assert_eq!(
        unlocked.last().map(String::as_str),
        Some("n1"),
        "the leader last"
    );
    assert!(steps_of(&lab.events(), EventStep::Unlock).is_empty());
    lab.sim.shutdown().await;
}
