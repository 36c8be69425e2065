//! `swarm-upgrade demo`: the operator's whole job on a simulated swarm, in one command.
//!
//! It starts the simulator (3 managers, 2 workers on 20.10.24, running the test stack of the
//! manual upgrade procedure), writes a spec to 26.1.5 whose upgrade command is this binary's
//! `demo upgrade-node` (the simulated host's upgrade command), and runs the same reconciler as
//! `run`, through the Docker API of the simulated managers.
//!
//! Built only with the default cargo feature `demo`, the one reason the binary links the
//! simulator (`swarm-sim`); `--no-default-features` builds the operator alone.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::RwLock;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use jiff::Timestamp;

use crate::docker::{Endpoint, Swarm};
use crate::events::{Event, EventStep, read_events};
use crate::operator::Operator;
use crate::reconciler::{Options, Outcome};
use crate::status::RolloutStatus;

/// `swarm-upgrade demo [OPTIONS]` runs the demo; `demo upgrade-node` and `demo rollback-node`
/// are the simulated hosts' commands its spec runs.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DemoCommand {
    #[command(subcommand)]
    pub host: Option<SimulatedHost>,
    #[command(flatten)]
    pub args: DemoArgs,
}

/// What `ssh HOST apt-get install docker-ce=VERSION` is on a real host, for a simulated one.
#[derive(Debug, clap::Subcommand)]
pub enum SimulatedHost {
    /// The simulated host's upgrade command (the demo spec's `upgrade.command`): stop the
    /// engine of HOSTNAME, install VERSION, start it; exits 0 once the engine is started.
    UpgradeNode {
        /// The simulated swarm's control address, as the demo writes it into its spec.
        #[arg(long = "sim", value_name = "URL")]
        sim: String,
        hostname: String,
        version: String,
    },
    /// The simulated host's rollback command (the demo spec's `upgrade.rollback`): restart
    /// HOSTNAME on the engine version it had before the upgrade.
    RollbackNode {
        #[arg(long = "sim", value_name = "URL")]
        sim: String,
        hostname: String,
    },
}

impl SimulatedHost {
    /// Carries the command out through the simulator's control API.
    pub async fn run(self) -> anyhow::Result<()> {
        use swarm_sim::cli::{NodeCommand, SimAddr, SimCli, SimCommand};
        let node = match self {
            SimulatedHost::UpgradeNode {
                sim,
                hostname,
                version,
            } => NodeCommand::Upgrade {
                sim: SimAddr { addr: sim },
                hostname,
                version,
            },
            SimulatedHost::RollbackNode { sim, hostname } => NodeCommand::Rollback {
                sim: SimAddr { addr: sim },
                hostname,
            },
        };
        swarm_sim::cli::run(SimCli {
            command: SimCommand::Node(node),
        })
        .await
    }
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Append one JSON line per step to this file (as `run --events`).
    #[arg(long)]
    pub events: Option<PathBuf>,
    /// Serve the live rollout page (/), /metrics, /healthz and /status here.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub listen: SocketAddr,
    /// How long the page stays up after the rollout, to look at it (Ctrl-C ends it sooner).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub serve_for: Duration,
    /// How much faster than real time the simulated swarm runs.
    #[arg(long, default_value_t = 5.0)]
    pub time_scale: f64,
    #[arg(long, default_value_t = 3)]
    pub managers: usize,
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// The engine version the simulated nodes start at.
    #[arg(long, default_value = "20.10.24")]
    pub from: String,
    /// The engine version the spec asks for.
    #[arg(long, default_value = "26.1.5")]
    pub to: String,
}

fn demo_spec(exe: &Path, control_url: &str, to: &str) -> String {
    let exe = exe.display();
    format!(
        r#"apiVersion: swarm-upgrade.io/v1alpha1
kind: EngineUpgrade
metadata:
  name: demo
spec:
  version: "{to}"
  upgrade:
    command: ["{exe}", "demo", "upgrade-node", "--sim", "{control_url}", "{{hostname}}", "{{version}}"]
    rollback: ["{exe}", "demo", "rollback-node", "--sim", "{control_url}", "{{hostname}}"]
    timeout: 60s
  strategy:
    maxUnavailableWorkers: 1
    drainTimeout: 60s
    readyTimeout: 60s
    settle: 1s
"#
    )
}

/// `swarm-upgrade demo`, or one of its simulated hosts' commands.
pub async fn dispatch(command: DemoCommand) -> anyhow::Result<ExitCode> {
    match command.host {
        Some(host) => host.run().await.map(|()| ExitCode::SUCCESS),
        None => run(command.args).await,
    }
}

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let started = crate::clock::label_time();
    let sim = swarm_sim::SimHandle::start(swarm_sim::SimConfig {
        managers: args.managers,
        workers: args.workers,
        version: args.from.clone(),
        time_scale: args.time_scale,
        ..swarm_sim::SimConfig::default()
    })
    .await
    .context("starting the simulated swarm")?;
    let dir = tempfile_dir()?;
    let spec_path = dir.join("engine-upgrade.yaml");
    let exe = std::env::current_exe().context("finding this program's path")?;
    std::fs::write(&spec_path, demo_spec(&exe, &sim.control_url(), &args.to))?;
    let events_path = args
        .events
        .clone()
        .unwrap_or_else(|| dir.join("events.jsonl"));
    let operator = Operator::start(
        managers(&sim)?,
        crate::operator::Config {
            spec: spec_path,
            spec_reread: Duration::from_secs(10),
            events: Some(events_path.clone()),
            listen: args.listen,
            options: Options {
                once: true,
                ..Options::default()
            },
        },
    )
    .await?;
    let (metrics, status) = (operator.metrics.clone(), operator.status.clone());
    let swarm = managers(&sim)?;
    let operator_listen = operator.listen;
    print_banner(&args, operator_listen, sim.manager_endpoints().len());

    let rollout = tokio::spawn(operator.run());
    let mut progress = Progress::new(std::io::stdout().is_terminal(), started);
    let outcome = follow(rollout, &mut progress, &events_path, &status).await?;
    let events = read_events(&events_path).unwrap_or_default();
    progress.show(&events, &status);
    progress.finish();

    let rejections = count_rejections(&swarm).await;
    let text = metrics.encode();
    println!("{}", summary(&events, started, rejections, &text));
    serve_a_while(operator_listen, args.serve_for).await;
    sim.shutdown().await;
    Ok(match outcome {
        Outcome::Complete => ExitCode::SUCCESS,
        Outcome::PausedByFailure => ExitCode::from(2),
    })
}

/// The simulated swarm's managers, as the operator reaches them.
fn managers(sim: &swarm_sim::SimHandle) -> anyhow::Result<Swarm> {
    let endpoints: Vec<Endpoint> = sim
        .manager_endpoints()
        .iter()
        .map(|e| Endpoint::parse(e, None))
        .collect::<Result<_, _>>()?;
    Ok(Swarm::new(endpoints))
}

fn print_banner(args: &DemoArgs, listen: SocketAddr, endpoints: usize) {
    println!(
        "Simulated swarm: {} managers + {} workers on {}, running the test stack of the manual upgrade procedure.",
        args.managers, args.workers, args.from
    );
    println!(
        "Operator: upgrading to {} through {endpoints} manager endpoints; metrics on http://{listen}/metrics",
        args.to,
    );
    println!("Watch the rollout: http://{listen}/\n");
}

/// Keeps the process (and so the page) up for `how_long` after the rollout, or until Ctrl-C.
async fn serve_a_while(listen: SocketAddr, how_long: Duration) {
    if how_long.is_zero() {
        return;
    }
    println!(
        "\nThe page stays at http://{listen}/ for {} (Ctrl-C ends it sooner).",
        crate::page::timeline::human(jiff::SignedDuration::try_from(how_long).unwrap_or_default())
    );
    tokio::select! {
        _ = tokio::time::sleep(how_long) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn parse_duration(s: &str) -> Result<Duration, crate::spec::duration::DurationError> {
    crate::spec::SpecDuration::parse(s).map(|d| d.get())
}

/// Shows the rollout's progress from its events until the reconciler returns.
async fn follow(
    mut rollout: tokio::task::JoinHandle<Outcome>,
    progress: &mut Progress,
    events_path: &Path,
    status: &RwLock<RolloutStatus>,
) -> anyhow::Result<Outcome> {
    loop {
        tokio::select! {
            outcome = &mut rollout => return outcome.context("the reconciler stopped"),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                progress.show(&read_events(events_path).unwrap_or_default(), status);
            }
        }
    }
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("swarm-upgrade-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

async fn count_rejections(swarm: &Swarm) -> usize {
    swarm
        .tasks()
        .await
        .map(|tasks| {
            tasks
                .iter()
                .filter(|t| {
                    t.status.as_ref().and_then(|s| s.state)
                        == Some(bollard::models::TaskState::REJECTED)
                })
                .count()
        })
        .unwrap_or(0)
}

/// Prints each new event as a line; on a terminal also a one-line live view of every node.
struct Progress {
    tty: bool,
    started: Timestamp,
    printed: usize,
    live_shown: bool,
}

impl Progress {
    fn new(tty: bool, started: Timestamp) -> Self {
        Self {
            tty,
            started,
            printed: 0,
            live_shown: false,
        }
    }

    fn show(&mut self, events: &[Event], status: &RwLock<RolloutStatus>) {
        let new = &events[self.printed.min(events.len())..];
        if new.is_empty() && !self.tty {
            return;
        }
        if self.live_shown {
            // Move up over the live line and clear it before printing new lines.
            print!("\r\x1b[2K");
        }
        for e in new {
            let at = e.time.duration_since(self.started).as_secs_f64();
            if e.hostname.is_empty() {
                println!("{at:6.1}s  {:<10} {}", e.step.as_str(), e.message);
            } else {
                println!(
                    "{at:6.1}s  {:<10} {:<10} {:<8} {}",
                    e.step.as_str(),
                    e.hostname,
                    e.role,
                    e.message
                );
            }
        }
        self.printed = events.len();
        if self.tty {
            let line = status.read().map(|s| live_line(&s)).unwrap_or_default();
            print!("{line}");
            self.live_shown = true;
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }

    fn finish(&mut self) {
        if self.live_shown {
            println!();
        }
    }
}

fn live_line(status: &RolloutStatus) -> String {
    let nodes: Vec<String> = status
        .nodes
        .iter()
        .map(|n| {
            let what = match (n.step, n.at_target) {
                (Some(s), _) => s.as_str(),
                (None, true) => "done",
                (None, false) => "pending",
            };
            format!("{}:{}", n.hostname, what)
        })
        .collect();
    format!("\x1b[2m  [{}]\x1b[0m", nodes.join("  "))
}

/// Order of nodes, time per step, rejections and connectivity errors.
pub fn summary(
    events: &[Event],
    started: Timestamp,
    rejections: usize,
    metrics_text: &str,
) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let total = events
        .last()
        .map(|e| e.time.duration_since(started).as_secs_f64())
        .unwrap_or(0.0);
    let _ = writeln!(out, "\nSummary");
    let mut order: Vec<&str> = vec![];
    for e in events {
        if e.step == EventStep::Drain && !order.contains(&e.hostname.as_str()) {
            order.push(&e.hostname);
        }
    }
    let _ = writeln!(out, "  order:      {}", order.join(" -> "));
    let pairs = [
        ("drain", EventStep::Drain, EventStep::Drained),
        ("upgrade", EventStep::Upgrade, EventStep::Upgraded),
        ("back ready", EventStep::Upgraded, EventStep::Ready),
        ("held drained", EventStep::Ready, EventStep::Reactivate),
    ];
    let mut per_step: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for host in &order {
        for (name, from, to) in pairs {
            let t0 = events
                .iter()
                .find(|e| e.hostname == *host && e.step == from);
            let t1 = events.iter().find(|e| e.hostname == *host && e.step == to);
            if let (Some(a), Some(b)) = (t0, t1) {
                per_step
                    .entry(name)
                    .or_default()
                    .push(b.time.duration_since(a.time).as_secs_f64());
            }
        }
    }
    for (name, _, _) in pairs {
        if let Some(times) = per_step.get(name) {
            let mean = times.iter().sum::<f64>() / times.len() as f64;
            let max = times.iter().cloned().fold(0.0, f64::max);
            let _ = writeln!(
                out,
                "  {name:<12} mean {mean:5.1}s  max {max:5.1}s  ({} nodes)",
                times.len()
            );
        }
    }
    let failed = events
        .iter()
        .filter(|e| e.step == EventStep::Failed)
        .count();
    let _ = writeln!(out, "  failed:     {failed}");
    let _ = writeln!(
        out,
        "  rejections: {rejections} task(s) rejected in the cluster"
    );
    let connectivity: u64 = metrics_text
        .lines()
        .filter(|l| l.starts_with("swarm_upgrade_connectivity_errors_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    let _ = writeln!(out, "  connectivity errors: {connectivity}");
    let _ = write!(out, "  total:      {total:.1}s wall");
    out
}
