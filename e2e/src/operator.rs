//! Running the operator (`target/<profile>/swarm-upgrade run`) against the lab: its spec, its
//! process, its HTTP endpoints and its events file.

use crate::lab::{artefacts_dir, operator_bin, script, sock};
use crate::metrics_text::{metric_sum, parse_metrics};
use crate::{MANAGERS, TO_VERSION};
use anyhow::{Context, Result, bail};
use jiff::Timestamp;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use swarm_upgrade::cluster::Role;
pub use swarm_upgrade::events::{Event, EventStep};
use swarm_upgrade::http_client::HttpClient;
use swarm_upgrade::rollout_check::{self, Fleet};

/// The spec the scenarios run (the brief's, with the lab's scripts).
pub fn spec_yaml(version: &str, extra_strategy: &str) -> String {
    let up = script("upgrade-host");
    let rb = script("rollback-host");
    format!(
        r#"apiVersion: swarm-upgrade.io/v1alpha1
kind: EngineUpgrade
metadata: {{ name: e2e }}
spec:
  version: "{version}"
  upgrade:
    command: [{up:?}, "{{hostname}}", "{{version}}"]
    rollback: [{rb:?}, "{{hostname}}"]
    timeout: 3m
  strategy: {{ maxUnavailableWorkers: 1, drainTimeout: 2m, readyTimeout: 2m, settle: 500ms{extra_strategy} }}
"#,
        up = up.display().to_string(),
        rb = rb.display().to_string(),
    )
}

/// The manager endpoints the operator is given (all three: it fails over).
pub fn docker_hosts() -> String {
    MANAGERS
        .iter()
        .map(|m| sock(m))
        .collect::<Vec<_>>()
        .join(",")
}

/// A free localhost port for `--listen`.
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// One operator process. Killed (SIGKILL) on drop if still running.
pub struct Operator {
    child: Option<tokio::process::Child>,
    pub port: u16,
    pub dir: PathBuf,
    pub spec: PathBuf,
    pub events: PathBuf,
    pub log: PathBuf,
    pub started: Timestamp,
    starts: u32,
    env: Vec<(String, String)>,
    once: bool,
}

impl Operator {
    /// Write the spec and start `swarm-upgrade run --once` (or without `--once`), with a fresh
    /// events file and log.
    pub async fn start(
        scenario: &str,
        spec: &str,
        once: bool,
        env: &[(&str, &str)],
    ) -> Result<Operator> {
        Self::start_with(scenario, spec, once, env, true).await
    }

    /// A second operator process of the same scenario, appending to the same events file and log.
    pub async fn start_again(scenario: &str, spec: &str, once: bool) -> Result<Operator> {
        Self::start_with(scenario, spec, once, &[], false).await
    }

    async fn start_with(
        scenario: &str,
        spec: &str,
        once: bool,
        env: &[(&str, &str)],
        fresh: bool,
    ) -> Result<Operator> {
        let dir = artefacts_dir(scenario)?;
        let spec_path = dir.join("spec.yaml");
        std::fs::write(&spec_path, spec)?;
        let events = dir.join("events.jsonl");
        let log = dir.join("operator.log");
        if fresh {
            let _ = std::fs::remove_file(&events);
            let _ = std::fs::remove_file(&log);
        }
        let mut op = Operator {
            child: None,
            port: free_port()?,
            dir,
            spec: spec_path,
            events,
            log,
            started: Timestamp::now(),
            starts: 0,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            once,
        };
        op.spawn().await?;
        Ok(op)
    }

    async fn spawn(&mut self) -> Result<()> {
        let bin = operator_bin()?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = tokio::process::Command::new(bin);
        cmd.arg("run")
            .arg("--spec")
            .arg(&self.spec)
            .arg("--docker-host")
            .arg(docker_hosts())
            .arg("--events")
            .arg(&self.events)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--log-format")
            .arg("json");
        if self.once {
            cmd.arg("--once");
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        let child = cmd.spawn().context("starting swarm-upgrade run")?;
        let pid = child.id();
        self.child = Some(child);
        self.starts += 1;
        eprintln!(
            "  operator started (pid {:?}, start #{}, listen 127.0.0.1:{}, log {})",
            pid,
            self.starts,
            self.port,
            self.log.display()
        );
        Ok(())
    }

    /// The operator's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// SIGKILL the operator (as a crash would) and reap it.
    pub async fn kill9(&mut self) -> Result<()> {
        let child = self.child.as_mut().context("operator not started")?;
        if let Some(pid) = child.id() {
            // SAFETY: kill(2) on our own child's pid, which we have not reaped yet.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
        let st = child.wait().await?;
        eprintln!("  operator killed with SIGKILL ({st})");
        Ok(())
    }

    /// Start the operator again with the same arguments (after a crash).
    pub async fn restart(&mut self) -> Result<()> {
        self.spawn().await
    }

    /// Exit status if the operator has exited.
    pub fn try_exit(&mut self) -> Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => Ok(c.try_wait()?),
            None => bail!("operator not started"),
        }
    }

    /// GET a path on the operator's HTTP listener; the body.
    pub async fn get(&self, path: &str) -> Result<String> {
        http_get(self.port, path).await
    }

    pub fn events(&self) -> Result<Vec<Event>> {
        read_events(&self.events)
    }

    /// The last lines of the operator's log (for failure messages).
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// GET `path` on 127.0.0.1:PORT (the operator's listener); the body of a 200 answer.
pub async fn http_get(port: u16, path: &str) -> Result<String> {
    let url = format!("http://127.0.0.1:{port}{path}");
    let response = HttpClient::new("swarm-upgrade-e2e", Duration::from_secs(5))
        .get(&url, "*/*")
        .await?;
    if response.status != 200 {
        bail!("GET {path}: HTTP {}", response.status);
    }
    Ok(response.text())
}

/// The operator's events file; none yet is no event.
pub fn read_events(path: &Path) -> Result<Vec<Event>> {
    match swarm_upgrade::events::read_events(path) {
        Ok(events) => Ok(events),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
        Err(e) => Err(e).with_context(|| format!("cannot read events file {}", path.display())),
    }
}

/// The lab's nodes in `upgraded`, as the rollout checker takes them.
pub fn lab_fleet(upgraded: &[&str], kept_drained: &[&str]) -> Fleet {
    let role = |h: &str| {
        if MANAGERS.contains(&h) {
            Role::Manager
        } else {
            Role::Worker
        }
    };
    Fleet::new(upgraded.iter().map(|h| (*h, role(h))))
        .with_kept_drained(kept_drained.iter().copied())
}

/// What the events file must prove about the order (issue 4, scenario 1), checked by the
/// library's [`check_order`]: managers first, one at a time; managers reactivated only after all
/// three are upgraded; no worker touched before the managers are reactivated; workers one at a
/// time (`maxUnavailableWorkers: 1`); every node drained before its upgrade; `completed` last.
/// `kept_drained`: nodes the admin drained beforehand (no `reactivated` needed). The notes are
/// the manager and worker orders.
pub fn check_order(
    events: &[Event],
    upgraded: &[&str],
    kept_drained: &[&str],
) -> Result<Vec<String>> {
    let report = rollout_check::check_order(events, &lab_fleet(upgraded, kept_drained));
    if !report.is_ok() {
        bail!("{report}");
    }
    Ok(vec![
        format!("manager order: {}", report.manager_order.join(" -> ")),
        format!("worker order: {}", report.worker_order.join(" -> ")),
    ])
}

/// One node's step durations.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct NodeSteps {
    pub host: String,
    /// (phase, seconds), in order
    pub phases: Vec<(String, f64)>,
    /// first to last event of the node
    pub total: f64,
}

/// Per-node step durations from the events file.
pub fn step_times(events: &[Event]) -> Vec<NodeSteps> {
    let hosts: BTreeSet<&str> = events
        .iter()
        .filter(|e| !e.hostname.is_empty())
        .map(|e| e.hostname.as_str())
        .collect();
    // the first `b` of the node after its first `a` (a restarted operator repeats steps)
    let pair = |h: &str, a: EventStep, b: EventStep| {
        let i = events.iter().position(|e| e.hostname == h && e.step == a)?;
        let j = events[i..]
            .iter()
            .position(|e| e.hostname == h && e.step == b)?;
        Some(
            events[i + j]
                .time
                .duration_since(events[i].time)
                .as_secs_f64(),
        )
    };
    let mut out = vec![];
    for h in hosts {
        let mut phases = vec![];
        for (name, a, b) in [
            ("drain", EventStep::Drain, EventStep::Drained),
            ("upgrade", EventStep::Upgrade, EventStep::Upgraded),
            ("ready", EventStep::Upgraded, EventStep::Ready),
            ("kept-drained", EventStep::Ready, EventStep::Reactivate),
            ("reactivate", EventStep::Reactivate, EventStep::Reactivated),
        ] {
            if let Some(s) = pair(h, a, b) {
                phases.push((name.to_string(), s));
            }
        }
        let first_ev = events.iter().find(|e| e.hostname == h).map(|e| e.time);
        let last_ev = events.iter().rfind(|e| e.hostname == h).map(|e| e.time);
        out.push(NodeSteps {
            host: h.to_string(),
            phases,
            total: match (first_ev, last_ev) {
                (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
                _ => 0.0,
            },
        });
    }
    out
}

/// What the scenarios observed on `/metrics` and `/status` while the operator ran.
#[derive(Debug, Default, Clone)]
pub struct Observed {
    pub scrapes: usize,
    /// distinct values of `swarm_upgrade_nodes_at_target` (summed over roles) seen
    pub at_target_values: BTreeSet<u32>,
    /// step label values of `swarm_upgrade_nodes` with a non-zero gauge
    pub steps_seen: BTreeSet<String>,
    pub last_metrics: String,
    pub last_status: String,
    /// The in-swarm probe clients' own counters, sampled with each scrape when `Some`.
    pub clients: Option<crate::probe_clients::ProbeClients>,
}

impl Observed {
    pub fn record(&mut self, metrics: &str, status: Option<String>) {
        self.scrapes += 1;
        let m = parse_metrics(metrics);
        let at = metric_sum(&m, "swarm_upgrade_nodes_at_target", &[]);
        self.at_target_values.insert(at as u32);
        for (k, v) in &m {
            if k.starts_with("swarm_upgrade_nodes{")
                && *v > 0.0
                && let Some(step) = k.split("step=\"").nth(1).and_then(|r| r.split('"').next())
            {
                self.steps_seen.insert(step.to_string());
            }
        }
        self.last_metrics = metrics.to_string();
        if let Some(s) = status {
            self.last_status = s;
        }
    }

    /// `/metrics` showed the rollout progressing: nodes at target took intermediate values.
    pub fn showed_progress(&self) -> bool {
        self.at_target_values.iter().any(|v| (1..5).contains(v))
    }
}

/// Wait for the operator to exit (scraping `/metrics` and `/status` every second meanwhile),
/// or for `stop` to say so from the events file. Returns the exit status, or `None` when `stop`
/// ended the wait first.
pub async fn watch(
    op: &mut Operator,
    within: Duration,
    observed: &mut Observed,
    mut stop: impl FnMut(&[Event]) -> bool,
) -> Result<Option<ExitStatus>> {
    let deadline = tokio::time::Instant::now() + within;
    let mut next_scrape = tokio::time::Instant::now();
    loop {
        if let Some(st) = op.try_exit()? {
            return Ok(Some(st));
        }
        if stop(&op.events()?) {
            return Ok(None);
        }
        let now = tokio::time::Instant::now();
        if now >= next_scrape {
            next_scrape = now + Duration::from_secs(1);
            if let Ok(m) = op.get("/metrics").await {
                let s = op.get("/status").await.ok();
                observed.record(&m, s);
            }
            if let Some(clients) = &mut observed.clients {
                clients.sample().await;
            }
        }
        if now >= deadline {
            bail!(
                "operator still running after {within:?}; last log lines:\n{}",
                op.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The default spec: upgrade to 26.1.5.
pub fn default_spec() -> String {
    spec_yaml(TO_VERSION, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The captured mix-up (2026-11-25, n2's node id logged under n5) fails the lab's check and
    /// names n5; the library's `rollout_check` tests cover each rule.
    #[test]
    fn check_order_catches_a_node_id_under_the_wrong_hostname() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/operator-events-node-mixup.jsonl");
        let events = read_events(&path).unwrap();
        let err = check_order(&events, &crate::HOSTS, &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("n5"), "{err}");
        assert_eq!(step_times(&events).len(), 5);
    }
}
