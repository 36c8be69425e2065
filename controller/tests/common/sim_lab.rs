//! A simulated swarm that records its history, with the operator binary run (and killed) against
//! it: what the crash and chaos tests share.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use swarm_sim::{SimConfig, SimHandle};
use swarm_upgrade::cluster::{Availability, NodeView};
use swarm_upgrade::docker::{ApiError, Endpoint, Swarm};
use swarm_upgrade::health::gates::{GateInput, evaluate};
use swarm_upgrade::rollout_check::{Fleet, OrderReport, check_order};
use swarm_upgrade::spec::HealthSpec;

use super::invariants::{Report, Rules, check_rollout};
use super::operator_process::{OperatorFiles, node_views};

pub const BIN: &str = env!("CARGO_BIN_EXE_swarm-upgrade");
pub const TARGET: &str = "26.1.5";

pub struct SimLab {
    pub sim: SimHandle,
    pub dir: tempfile::TempDir,
    pub swarm: Swarm,
}

impl OperatorFiles for SimLab {
    fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl SimLab {
    /// Starts the swarm, waits for its stack to run, then records every node change.
    pub async fn start(config: SimConfig) -> Self {
        let sim = SimHandle::start(config).await.expect("sim starts");
        let endpoints = sim
            .manager_endpoints()
            .iter()
            .map(|e| Endpoint::parse(e, None).unwrap())
            .collect();
        let lab = Self {
            sim,
            dir: tempfile::tempdir().unwrap(),
            swarm: Swarm::new(endpoints).with_patience(Duration::from_secs(20)),
        };
        lab.wait_ready().await;
        lab.sim.sim().record_history();
        lab
    }

    /// [`Self::start`], then until the stack is up: every replicated task and one global
    /// task per node run.
    pub async fn start_converged(config: SimConfig) -> Self {
        let lab = Self::start(config).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (_, observation) = swarm_upgrade::reconciler::observe(&lab.swarm)
                .await
                .unwrap();
            let all: Vec<String> = observation.nodes().map(|n| n.id.clone()).collect();
            let failures = evaluate(&GateInput {
                observation: &observation,
                affected_nodes: &all,
                since: swarm_upgrade::clock::Clock::system().now(),
                probe_errors: 0,
                spec: &HealthSpec::default(),
                prometheus: None,
            });
            if failures.is_empty() {
                return lab;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the simulated stack never converged: {failures:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Until every node is Ready (the stack need not have converged: the operator waits).
    async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let state = swarm_sim::control::state(self.sim.sim()).await;
            if state.nodes.iter().all(|n| n.node.state == "ready") && state.leader.is_some() {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{state:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The spec: the simulated hosts' upgrade and rollback commands, `extra` appended under
    /// `strategy:`.
    pub fn spec_text(&self, max_unavailable_workers: usize, extra_strategy: &str) -> String {
        let url = self.sim.control_url();
        format!(
            r#"apiVersion: swarm-upgrade.io/v1alpha1
kind: EngineUpgrade
metadata:
  name: reliability-test
spec:
  version: "{TARGET}"
  upgrade:
    command: ["{BIN}", "demo", "upgrade-node", "--sim", "{url}", "{{hostname}}", "{{version}}"]
    rollback: ["{BIN}", "demo", "rollback-node", "--sim", "{url}", "{{hostname}}"]
    timeout: 60s
  strategy:
    maxUnavailableWorkers: {max_unavailable_workers}
    drainTimeout: 60s
    readyTimeout: 60s
    settle: 200ms
{extra_strategy}"#
        )
    }

    pub fn write_spec(&self, text: &str) -> PathBuf {
        let path = self.path("spec.yaml");
        // Replace by rename, as editors and config mounts do.
        let tmp = self.path("spec.yaml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }

    /// `swarm-upgrade run --once` on `spec`, its log appended to `operator.log`.
    pub fn operator(&self, spec: &Path, listen: &str) -> Child {
        self.operator_with(spec, listen, true)
    }

    /// `swarm-upgrade run` on `spec` (with `--once` when `once`).
    pub fn operator_with(&self, spec: &Path, listen: &str, once: bool) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("operator.log"))
            .unwrap();
        let mut cmd = Command::new(BIN);
        if once {
            cmd.arg("run").arg("--once");
        } else {
            cmd.arg("run");
        }
        cmd.arg("--spec")
            .arg(spec)
            .arg("--docker-host")
            .arg(self.sim.manager_endpoints().join(","))
            .arg("--events")
            .arg(self.path("events.jsonl"))
            .arg("--listen")
            .arg(listen)
            .arg("--spec-reread")
            .arg("500ms")
            .env("RUST_LOG", "info,swarm_upgrade=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("operator starts")
    }

    pub async fn nodes(&self) -> Vec<NodeView> {
        node_views(&self.swarm).await
    }

    pub async fn node(&self, hostname: &str) -> NodeView {
        let nodes = self.nodes().await;
        let found = nodes.iter().find(|n| n.hostname == hostname).cloned();
        found.unwrap_or_else(|| panic!("no node {hostname} in {nodes:?}"))
    }

    /// As an admin's `docker node update --label-add KEY=VALUE HOSTNAME`.
    pub async fn add_label(&self, hostname: &str, key: &str, value: &str) {
        self.update_spec(hostname, |spec| {
            spec.labels
                .get_or_insert_default()
                .insert(key.into(), value.into());
        })
        .await;
    }

    /// As an admin's `docker node update --availability A HOSTNAME`.
    pub async fn set_availability(&self, hostname: &str, availability: Availability) {
        self.update_spec(hostname, |spec| {
            spec.availability = Some(availability.to_engine())
        })
        .await;
    }

    /// Reads the node and writes it back changed, again while the managers' own rewrite of
    /// the node lands in between (`update out of sequence`), as an admin would retry.
    async fn update_spec(&self, hostname: &str, change: impl Fn(&mut bollard::models::NodeSpec)) {
        let id = self.node(hostname).await.id;
        for _ in 0..20 {
            let raw = self.swarm.node(&id).await.unwrap();
            let version = raw.version.and_then(|v| v.index).unwrap_or_default();
            let mut spec = raw.spec.unwrap();
            change(&mut spec);
            match self.swarm.update_node(&id, spec, version).await {
                Err(ApiError::OutOfSequence) => continue,
                done => return done.unwrap(),
            }
        }
        panic!("{hostname}: 20 writes out of sequence in a row");
    }

    /// The invariants over everything the swarm went through, and its state now.
    pub fn invariants(&self, max_unavailable_workers: usize) -> Report {
        self.invariants_with(|rules| rules, max_unavailable_workers)
    }

    /// [`Self::invariants`] with the rules changed by `adjust` (e.g. [`Rules::paused`]).
    pub fn invariants_with(
        &self,
        adjust: impl FnOnce(Rules) -> Rules,
        max_unavailable_workers: usize,
    ) -> Report {
        let frames = self.sim.sim().history();
        let rules = adjust(Rules::new(TARGET, max_unavailable_workers, &frames[0]));
        check_rollout(&frames, &rules)
    }

    /// The events file's order, for the nodes as they are now.
    pub async fn order(&self, max_unavailable_workers: usize) -> OrderReport {
        let nodes = node_views(&self.swarm).await;
        let fleet = Fleet::new(nodes.iter().map(|n| (n.hostname.as_str(), n.role)))
            .with_max_unavailable_workers(max_unavailable_workers);
        check_order(&self.events(), &fleet)
    }
}

/// SIGKILL, as a crashed or OOM-killed operator; its node-side command, in a process group of
/// its own, runs on.
pub fn kill9(child: &mut Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
}
