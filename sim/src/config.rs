//! Configuration of a simulated swarm: size, versions, stack, faults and timings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What is deployed on the swarm at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Stack {
    /// The test stack of the manual upgrade procedure: overlay `test_tnet`, `test_service`
    /// (global, dnsrr) and `test_client` (2 replicas).
    #[default]
    Seed,
    /// The `exhaust_addrs` stack of the manual upgrade procedure only: overlay `ex_default`
    /// (/27) and `ex_service` (24 replicas).
    #[value(name = "exhaust-addrs", alias = "exhaust_addrs")]
    ExhaustAddrs,
    /// Both of the above.
    #[value(name = "seed-and-exhaust")]
    SeedAndExhaust,
    /// Nothing but the ingress network.
    None,
    /// About `SimConfig::tasks_per_node` running tasks on every node (two global services and
    /// replicated ones), with one shut-down task of history per replicated slot.
    Fleet,
}

/// Injected faults. All are off by default; the version-skew modes are opt-in.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Added to every Docker API response (real milliseconds, not scaled).
    pub latency_ms: u64,
    /// Fraction (0..=1) of Docker API requests answered 500.
    pub error_rate: f64,
    /// Fraction (0..=1) of Docker API requests whose connection is dropped without an answer.
    pub drop_rate: f64,
    /// Hostnames whose `node upgrade` fails (exit 1) without touching the engine.
    pub fail_upgrade: Vec<String>,
    /// Hostnames whose engine never comes back once stopped (`start` returns, nothing listens).
    pub never_return: Vec<String>,
    /// Hostname -> version the engine reports after an upgrade, whatever was asked.
    pub wrong_version: BTreeMap<String, String>,
    /// Version skew, as in the manual upgrade procedure: a node whose engine is newer than the
    /// oldest manager's (a manager reactivated before all managers are upgraded, a worker
    /// upgraded before the managers) gets its tasks rejected "node is missing network
    /// attachments, ip addresses may be exhausted".
    pub version_skew: bool,
    /// Restart while active, as in the manual upgrade procedure: a node whose engine is
    /// restarted while `active` gets its tasks rejected "cannot create a swarm scoped network
    /// when swarm is not active" for a while (`Timings::restart_active_window`).
    pub restart_active: bool,
    /// Hostnames whose own engine endpoint is cut off from the client: connections are
    /// accepted and requests never answered (a partition hangs, it does not refuse). The
    /// swarm itself still reaches the node.
    pub partitioned: Vec<String>,
    /// Every Nth node update is answered "update out of sequence" without being applied, as
    /// when the managers rewrote the node in between (0: never).
    pub out_of_sequence_every: u64,
    /// Each node update that drains a node makes the leader step down shortly after (a new
    /// leader is elected while the node's tasks move).
    pub leader_change_on_drain: bool,
    /// Hostnames whose engine has `live-restore` on (`/info` `LiveRestoreEnabled`), as after
    /// a daemon.json reload: the engine runs on, but once stopped it does not start again
    /// ("--live-restore daemon configuration is incompatible with swarm mode", seen on the
    /// lab at 20.10.24 and 26.1.5). `live-restore=-HOST` turns it off again.
    pub live_restore: Vec<String>,
}

/// A `--fault` spec the simulator does not understand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultError {
    #[error("fault `{0}` needs a value (`{0}=...`)")]
    NeedsValue(String),
    #[error("bad {what} `{value}`")]
    BadValue { what: &'static str, value: String },
    #[error("unknown fault `{0}` (see `swarm-sim serve --help`)")]
    Unknown(String),
}

impl Faults {
    /// Applies one `--fault` spec:
    /// `latency=50ms`, `error-rate=0.1`, `drop-rate=0.05`, `fail-upgrade=HOST`,
    /// `never-return=HOST`, `wrong-version=HOST:VERSION`, `version-skew`, `restart-active`,
    /// `partition=HOST`, `out-of-sequence-every=N`, `leader-change-on-drain`,
    /// `live-restore=HOST` (`live-restore=-HOST` turns it off), `none` (clears everything).
    pub fn apply(&mut self, spec: &str) -> Result<(), FaultError> {
        let (key, val) = match spec.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (spec.trim(), None),
        };
        let need = || val.ok_or_else(|| FaultError::NeedsValue(key.to_string()));
        let bad = |what: &'static str, v: &str| FaultError::BadValue {
            what,
            value: v.to_string(),
        };
        let rate = |v: &str| -> Result<f64, FaultError> {
            let r: f64 = v.parse().map_err(|_| bad("rate (0 to 1)", v))?;
            if (0.0..=1.0).contains(&r) {
                Ok(r)
            } else {
                Err(bad("rate (0 to 1)", v))
            }
        };
        match key {
            "latency" => {
                let v = need()?;
                let ms = v.strip_suffix("ms").unwrap_or(v);
                self.latency_ms = ms.parse().map_err(|_| bad("latency (e.g. 50ms)", v))?;
            }
            "error-rate" => self.error_rate = rate(need()?)?,
            "drop-rate" => self.drop_rate = rate(need()?)?,
            "fail-upgrade" => self.fail_upgrade.push(need()?.to_string()),
            "never-return" => self.never_return.push(need()?.to_string()),
            "wrong-version" => {
                let v = need()?;
                let (h, ver) = v.split_once(':').ok_or_else(|| bad("HOST:VERSION", v))?;
                self.wrong_version.insert(h.to_string(), ver.to_string());
            }
            "version-skew" => self.version_skew = val.is_none_or(|v| v != "false"),
            "restart-active" => self.restart_active = val.is_none_or(|v| v != "false"),
            "partition" => self.partitioned.push(need()?.to_string()),
            "out-of-sequence-every" => {
                let v = need()?;
                self.out_of_sequence_every = v.parse().map_err(|_| bad("count", v))?;
            }
            "leader-change-on-drain" => {
                self.leader_change_on_drain = val.is_none_or(|v| v != "false")
            }
            "live-restore" => match need()?.strip_prefix('-') {
                Some(host) => self.live_restore.retain(|h| h != host),
                None => self.live_restore.push(need()?.to_string()),
            },
            "none" | "clear" => *self = Faults::default(),
            _ => return Err(FaultError::Unknown(key.to_string())),
        }
        Ok(())
    }
}

/// Simulated durations, in simulated seconds (divided by `time_scale` for real time).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Timings {
    /// assigned -> accepted, accepted -> preparing (each).
    pub task_accept: f64,
    /// preparing -> starting (image present; `DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1`).
    pub task_prepare: f64,
    /// starting -> running.
    pub task_start: f64,
    /// running -> shutdown once the desired state is shutdown (container stop).
    pub task_stop: f64,
    /// How long a task waits in `preparing` for its node's network attachment before it is
    /// rejected (the engine waits 30 s).
    pub attachment_wait: f64,
    /// Engine stop -> manager `unreachable`.
    pub reachability: f64,
    /// Engine stop -> node `down` (heartbeat period 5 s x grace 3).
    pub node_down: f64,
    /// Leader stop (or quorum regained) -> new leader elected.
    pub election: f64,
    /// The leader demoted (`docker node demote`) -> another manager leads: swarmkit transfers
    /// leadership (raft TransferLeadership) instead of waiting for an election.
    pub leader_transfer: f64,
    /// Demotion -> the demoted node's own engine stops its manager and clears its raft data
    /// (swarmkit does so once its certificate says worker). An engine stopped before that keeps
    /// the old raft data, and a later promotion makes it panic ("tocommit(N) is out of range
    /// [lastIndex(0)]", seen on the real lab, moby/moby#29180).
    pub demoted_manager_stop: f64,
    /// After an election the new leader reports nodes `unknown`; each returns `ready` after a
    /// random delay up to this.
    pub unknown_max: f64,
    /// Engine start -> node `ready` in the swarm.
    pub node_ready: f64,
    /// `node upgrade`: package install between stop and start.
    pub install: f64,
    /// Engine start -> its API answers.
    pub engine_start: f64,
    /// Mean interval between a manager's status/heartbeat bumps of a node's version index.
    pub version_bump: f64,
    /// `restart-active` fault: how long after the restart tasks are rejected.
    pub restart_active_window: f64,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            task_accept: 0.3,
            task_prepare: 2.0,
            task_start: 1.5,
            task_stop: 1.0,
            attachment_wait: 30.0,
            reachability: 2.0,
            node_down: 15.0,
            election: 1.5,
            leader_transfer: 0.3,
            demoted_manager_stop: 2.0,
            unknown_max: 6.0,
            node_ready: 1.0,
            install: 3.0,
            engine_start: 1.0,
            version_bump: 12.0,
            restart_active_window: 8.0,
        }
    }
}

/// A simulated swarm's configuration.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub managers: usize,
    pub workers: usize,
    /// Engine version every node starts with, reported exactly as given.
    pub version: String,
    /// Simulated seconds per real second.
    pub time_scale: f64,
    pub stack: Stack,
    pub faults: Faults,
    pub timings: Timings,
    /// Control address (`/_sim/...` and the leader's Docker API). Port 0 = ephemeral.
    pub listen: String,
    /// First TCP port of the per-node endpoints (node i gets `base_port + i`); 0 = ephemeral.
    pub base_port: u16,
    /// Also give worker nodes their own endpoint.
    pub worker_endpoints: bool,
    /// Also listen on `DIR/<hostname>.sock` for every node with an endpoint.
    pub socket_dir: Option<std::path::PathBuf>,
    /// Seed of the random generator (IDs, jitter).
    pub seed: u64,
    /// Running tasks per node of the `fleet` stack.
    pub tasks_per_node: usize,
    /// The `fleet` stack keeps one shut-down task per replicated slot, as after one update.
    pub fleet_history: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            managers: 3,
            workers: 2,
            version: "20.10.24".to_string(),
            time_scale: 1.0,
            stack: Stack::Seed,
            faults: Faults::default(),
            timings: Timings::default(),
            listen: "127.0.0.1:0".to_string(),
            base_port: 0,
            worker_endpoints: false,
            socket_dir: None,
            seed: 42,
            tasks_per_node: 30,
            fleet_history: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_specs() {
        let mut f = Faults::default();
        f.apply("latency=50ms").unwrap();
        f.apply("error-rate=0.25").unwrap();
        f.apply("drop-rate=0.5").unwrap();
        f.apply("fail-upgrade=n2").unwrap();
        f.apply("never-return=n3").unwrap();
        f.apply("wrong-version=n4:26.1.4").unwrap();
        f.apply("version-skew").unwrap();
        f.apply("restart-active").unwrap();
        f.apply("partition=n2").unwrap();
        f.apply("out-of-sequence-every=2").unwrap();
        f.apply("leader-change-on-drain").unwrap();
        f.apply("live-restore=n2").unwrap();
        f.apply("live-restore=n4").unwrap();
        f.apply("live-restore=-n2").unwrap();
        assert_eq!(f.live_restore, vec!["n4"]);
        assert_eq!(f.partitioned, vec!["n2"]);
        assert_eq!(f.out_of_sequence_every, 2);
        assert!(f.leader_change_on_drain);
        assert!(f.apply("out-of-sequence-every=often").is_err());
        assert_eq!(f.latency_ms, 50);
        assert_eq!(f.error_rate, 0.25);
        assert_eq!(f.drop_rate, 0.5);
        assert_eq!(f.fail_upgrade, vec!["n2"]);
        assert_eq!(f.never_return, vec!["n3"]);
        assert_eq!(f.wrong_version["n4"], "26.1.4");
        assert!(f.version_skew && f.restart_active);
        assert!(f.apply("error-rate=2").is_err());
        assert!(f.apply("bogus").is_err());
        f.apply("none").unwrap();
        assert_eq!(f, Faults::default());
    }
}
