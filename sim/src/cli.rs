//! The `swarm-sim` command line (also embeddable as another CLI's subcommand).

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use crate::config::{Faults, SimConfig, Stack, Timings};
use crate::control::{FaultSpecs, SimState};
use crate::sim::NodeOpResult;

/// A Docker-Engine-API-compatible simulated Docker Swarm.
#[derive(Debug, Parser)]
#[command(name = "swarm-sim", version, about)]
pub struct SimCli {
    #[command(subcommand)]
    pub command: SimCommand,
}

#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Run a simulated swarm until killed; prints one line per endpoint.
    Serve(ServeArgs),
    /// A node's engine, as ssh + a package manager see it.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Add faults at runtime (same specs as `serve --fault`; `none` clears).
    Fault {
        #[command(flatten)]
        sim: SimAddr,
        /// Fault specs, e.g. `latency=50ms error-rate=0.1 never-return=n3`.
        #[arg(required = true)]
        specs: Vec<String>,
    },
    /// Print the simulator's view (nodes, engines, endpoints) as JSON.
    State {
        #[command(flatten)]
        sim: SimAddr,
    },
    /// Deploy a stack on a running simulator (`seed` or `exhaust-addrs`).
    Deploy {
        #[command(flatten)]
        sim: SimAddr,
        stack: String,
    },
}

#[derive(Debug, Clone, Args)]
pub struct SimAddr {
    /// The simulator's control address (`127.0.0.1:2375` or `http://127.0.0.1:2375`).
    #[arg(long = "sim", env = "SWARM_SIM", default_value = "127.0.0.1:2375")]
    pub addr: String,
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Stop the engine, install VERSION, start it; exits 0 once the engine is started.
    Upgrade {
        #[command(flatten)]
        sim: SimAddr,
        hostname: String,
        version: String,
    },
    /// Restart the node on its backed-up (pre-upgrade) engine version.
    Rollback {
        #[command(flatten)]
        sim: SimAddr,
        hostname: String,
    },
    /// Stop the node's engine.
    Stop {
        #[command(flatten)]
        sim: SimAddr,
        hostname: String,
    },
    /// Start the node's engine (at VERSION if given).
    Start {
        #[command(flatten)]
        sim: SimAddr,
        hostname: String,
        #[arg(long)]
        version: Option<String>,
    },
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[arg(long, default_value_t = 3)]
    pub managers: usize,
    #[arg(long, default_value_t = 2, conflicts_with = "nodes")]
    pub workers: usize,
    /// Nodes in all (managers included): `--nodes 1000` is 3 managers and 997 workers.
    #[arg(long)]
    pub nodes: Option<usize>,
    /// Deploy the `fleet` stack with about this many running tasks on every node (two global
    /// services, replicated ones, one shut-down task of history per replicated slot).
    #[arg(long, conflicts_with = "stack")]
    pub tasks_per_node: Option<usize>,
    /// With `--tasks-per-node`: no shut-down tasks of history.
    #[arg(long, requires = "tasks_per_node")]
    pub no_task_history: bool,
    /// Engine version of every node, reported exactly as given.
    #[arg(long, default_value = "20.10.24")]
    pub version: String,
    /// Mean simulated seconds between the managers' own rewrites of each node (each moves its
    /// version index and sends a node event). Short by default so that "update out of sequence"
    /// is exercised; a real idle swarm rewrites its nodes rarely, so measure cost with a long one.
    #[arg(long, default_value_t = Timings::default().version_bump)]
    pub node_rewrite_secs: f64,
    /// Control address: `/_sim/...` and the current leader's Docker API.
    #[arg(long, default_value = "127.0.0.1:2375")]
    pub listen: String,
    /// Simulated seconds per real second.
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
    /// Also listen on DIR/<hostname>.sock per endpoint.
    #[arg(long)]
    pub socket_dir: Option<std::path::PathBuf>,
    #[arg(long, value_enum, default_value_t = Stack::Seed)]
    pub stack: Stack,
    /// Fault specs (repeatable): latency=50ms, error-rate=0.1, drop-rate=0.05,
    /// fail-upgrade=HOST, never-return=HOST, wrong-version=HOST:VER, version-skew, restart-active,
    /// live-restore=HOST.
    #[arg(long = "fault")]
    pub faults: Vec<String>,
    /// First port of the per-node endpoints (node i gets PORT+i-1); 0 = ephemeral.
    #[arg(long, default_value_t = 0)]
    pub base_port: u16,
    /// Give workers an endpoint too.
    #[arg(long)]
    pub worker_endpoints: bool,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

impl ServeArgs {
    pub fn to_config(&self) -> anyhow::Result<SimConfig> {
        let mut faults = Faults::default();
        for f in &self.faults {
            faults.apply(f).map_err(|e| anyhow::anyhow!(e))?;
        }
        let workers = match self.nodes {
            Some(n) if n < self.managers => {
                bail!("--nodes {n} is fewer than the {} managers", self.managers)
            }
            Some(n) => n - self.managers,
            None => self.workers,
        };
        Ok(SimConfig {
            managers: self.managers,
            workers,
            version: self.version.clone(),
            time_scale: self.time_scale,
            stack: if self.tasks_per_node.is_some() {
                Stack::Fleet
            } else {
                self.stack
            },
            tasks_per_node: self.tasks_per_node.unwrap_or(30),
            fleet_history: !self.no_task_history,
            faults,
            timings: Timings {
                version_bump: self.node_rewrite_secs,
                ..Timings::default()
            },
            listen: self.listen.clone(),
            base_port: self.base_port,
            worker_endpoints: self.worker_endpoints,
            socket_dir: self.socket_dir.clone(),
            seed: self.seed,
        })
    }
}

/// Runs a parsed command line.
pub async fn run(cli: SimCli) -> anyhow::Result<()> {
    match cli.command {
        SimCommand::Serve(a) => serve(a).await,
        SimCommand::Node(cmd) => {
            let (sim, path) = match &cmd {
                NodeCommand::Upgrade {
                    sim,
                    hostname,
                    version,
                } => (
                    sim,
                    format!("/_sim/nodes/{hostname}/upgrade?version={}", enc(version)),
                ),
                NodeCommand::Rollback { sim, hostname } => {
                    (sim, format!("/_sim/nodes/{hostname}/rollback"))
                }
                NodeCommand::Stop { sim, hostname } => {
                    (sim, format!("/_sim/nodes/{hostname}/stop"))
                }
                NodeCommand::Start {
                    sim,
                    hostname,
                    version,
                } => (
                    sim,
                    match version {
                        Some(v) => format!("/_sim/nodes/{hostname}/start?version={}", enc(v)),
                        None => format!("/_sim/nodes/{hostname}/start"),
                    },
                ),
            };
            let body = request(&sim.addr, "POST", &path, None).await?;
            let r: NodeOpResult = serde_json::from_slice(&body).context("decoding the answer")?;
            println!("{}: {} ({})", r.hostname, r.message, r.version);
            Ok(())
        }
        SimCommand::Fault { sim, specs } => {
            let body = serde_json::to_string(&FaultSpecs { specs })?;
            let out = request(&sim.addr, "POST", "/_sim/faults", Some(&body)).await?;
            println!("{}", String::from_utf8_lossy(&out));
            Ok(())
        }
        SimCommand::State { sim } => {
            let out = request(&sim.addr, "GET", "/_sim/state", None).await?;
            let s: SimState = serde_json::from_slice(&out)?;
            println!("{}", serde_json::to_string_pretty(&s)?);
            Ok(())
        }
        SimCommand::Deploy { sim, stack } => {
            let out = request(&sim.addr, "POST", &format!("/_sim/stacks/{stack}"), None).await?;
            println!("{}", String::from_utf8_lossy(&out));
            Ok(())
        }
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let cfg = a.to_config()?;
    let h = crate::handle::SimHandle::start(cfg).await?;
    println!("control {}", h.control_url());
    for (host, role, url, sock) in h.endpoint_lines().await {
        match sock {
            Some(s) => println!("{host} {role} {url} {s}"),
            None => println!("{host} {role} {url}"),
        }
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    tokio::signal::ctrl_c().await.ok();
    h.shutdown().await;
    Ok(())
}

/// A one-shot request to the control address (through [`crate::client`]). Non-2xx answers
/// become errors carrying the engine-style `message`.
pub async fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<Vec<u8>> {
    // The client's errors already show their source: keep it out of the chain, so `{:#}` shows
    // it once.
    let answer = crate::client::request(addr, method, path, body)
        .await
        .map_err(|e| match e {
            crate::client::ClientError::Connect { source, .. } => {
                anyhow::anyhow!("connecting to the simulator at {addr}: {source}")
            }
            other => anyhow::anyhow!("{other}"),
        })?;
    if !(200..300).contains(&answer.status) {
        let msg = serde_json::from_slice::<serde_json::Value>(&answer.body)
            .ok()
            .and_then(|v| v["message"].as_str().map(|s| s.to_string()))
            .unwrap_or_else(|| String::from_utf8_lossy(&answer.body).into_owned());
        bail!("{msg} (HTTP {})", answer.status);
    }
    Ok(answer.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The controller embeds this CLI as a hidden `swarm-upgrade sim ...` subcommand.
    #[derive(Debug, Parser)]
    struct Outer {
        #[command(subcommand)]
        cmd: OuterCmd,
    }

    #[derive(Debug, Subcommand)]
    enum OuterCmd {
        #[command(hide = true)]
        Sim(SimCli),
    }

    #[test]
    fn embeds_as_a_subcommand() {
        let o = Outer::try_parse_from([
            "swarm-upgrade",
            "sim",
            "node",
            "upgrade",
            "--sim",
            "127.0.0.1:1",
            "n1",
            "26.1.5",
        ])
        .unwrap();
        let OuterCmd::Sim(cli) = o.cmd;
        match cli.command {
            SimCommand::Node(NodeCommand::Upgrade {
                sim,
                hostname,
                version,
            }) => {
                assert_eq!(sim.addr, "127.0.0.1:1");
                assert_eq!(hostname, "n1");
                assert_eq!(version, "26.1.5");
            }
            c => panic!("{c:?}"),
        }
        let s = SimCli::try_parse_from([
            "swarm-sim",
            "serve",
            "--managers",
            "5",
            "--stack",
            "exhaust-addrs",
            "--fault",
            "never-return=n3",
            "--time-scale",
            "10",
        ])
        .unwrap();
        let SimCommand::Serve(a) = s.command else {
            panic!()
        };
        let cfg = a.to_config().unwrap();
        assert_eq!(cfg.managers, 5);
        assert_eq!(cfg.stack, Stack::ExhaustAddrs);
        assert_eq!(cfg.faults.never_return, vec!["n3"]);
        assert_eq!(cfg.time_scale, 10.0);
    }
}
