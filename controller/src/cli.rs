//! The `swarm-upgrade` command line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::docker::{Endpoint, Swarm, TlsFiles};
use crate::operator::Operator;
use crate::reconciler::{Options, Outcome, plan_now};
use crate::spec::load_spec_file;
use crate::status::RolloutStatus;

/// Keeps every Docker Swarm node's engine at a declared version: drain, upgrade, reactivate,
/// one node at a time, managers first.
#[derive(Debug, Parser)]
#[command(name = "swarm-upgrade", version, about, long_about = None)]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "SWARM_UPGRADE_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Reconcile the cluster toward the spec, continuously.
    Run(RunArgs),
    /// Print the ordered plan for the cluster as it is now, and what blocks it; change nothing.
    Plan(PlanArgs),
    /// Print the nodes (role, availability, engine, step) and the rollout's conditions.
    Status(PlanArgs),
    /// Hand failed nodes back so the rollout retries them (after the cause is fixed).
    Resume(ClusterArgs),
    /// Print the JSON Schema of the spec file.
    Schema,
    /// Every service with rejected or failed tasks, the classified cause and remedy, and
    /// networks near capacity.
    Diagnose(DiagnoseArgs),
    /// Upgrade a simulated swarm (3 managers, 2 workers, 20.10.24 -> 26.1.5) with the real
    /// operator, showing each step; no Docker needed. `demo upgrade-node` is the simulated
    /// host's upgrade command the demo's spec runs.
    #[cfg(feature = "demo")]
    Demo(crate::demo::DemoCommand),
    /// Draw a rollout's timeline from its events file (`run --events`): one row per node, a bar
    /// per step, failures and pauses marked; SVG, or PNG when Chromium is installed.
    Timeline(TimelineArgs),
    /// The in-swarm connectivity client of the manual upgrade procedure's test stack: connects
    /// to every address behind each target each interval, logs each failure as
    /// `<date>: Connectivity error: ...`, serves /metrics.
    Probe(crate::probe::ProbeArgs),
}

#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Manager endpoints, comma-separated (unix:///path, tcp://HOST:PORT, https://HOST:PORT).
    /// The operator uses whichever answers and fails over while one is being upgraded.
    /// TLS as the docker CLI: DOCKER_TLS_VERIFY and DOCKER_CERT_PATH.
    #[arg(
        long,
        env = "DOCKER_HOST",
        default_value = "unix:///var/run/docker.sock"
    )]
    pub docker_host: String,
}

impl ClusterArgs {
    pub fn swarm(&self) -> anyhow::Result<Swarm> {
        let tls = TlsFiles::from_env();
        let endpoints = Endpoint::parse_list(&self.docker_host, tls.as_ref())?;
        Ok(Swarm::new(endpoints))
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The EngineUpgrade spec file (YAML). Edits are picked up without a restart.
    #[arg(long)]
    pub spec: PathBuf,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Append one JSON line per step to this file.
    #[arg(long)]
    pub events: Option<PathBuf>,
    /// Serve /metrics, /healthz and /status here.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub listen: SocketAddr,
    /// Exit 0 once the rollout is complete, 2 once a failure pauses it (for CI).
    #[arg(long)]
    pub once: bool,
    /// Poll interval while a step is under way (cluster events wake the loop sooner).
    #[arg(long, default_value = "250ms", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// Re-read the spec file this often even without a file event (config mounts, editors).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub spec_reread: Duration,
    #[command(flatten)]
    pub ha: HaArgs,
}

/// Running two or more replicas: one acts, the others stand by.
#[derive(Debug, Args)]
pub struct HaArgs {
    /// Act only while holding the lease kept in the swarm's own labels
    /// (`docker swarm inspect`: swarm-upgrade.lease.*); otherwise observe, and take over once
    /// the holder has not renewed it for --ha-lease-duration. Run two replicas on different
    /// nodes with this flag.
    #[arg(long, env = "SWARM_UPGRADE_HA")]
    pub ha: bool,
    /// This operator's name in the lease [default: the host name (a swarm task's container
    /// ID) and a random suffix].
    #[arg(long, env = "SWARM_UPGRADE_HA_IDENTITY", requires = "ha")]
    pub ha_identity: Option<String>,
    /// How long the lease stands without a renewal; the holder renews every third of it and
    /// stops acting after two thirds without one.
    #[arg(long, default_value = "15s", value_parser = parse_duration, env = "SWARM_UPGRADE_HA_LEASE_DURATION")]
    pub ha_lease_duration: Duration,
}

impl HaArgs {
    fn config(&self) -> Option<crate::lease::HaConfig> {
        self.ha.then(|| crate::lease::HaConfig {
            identity: self
                .ha_identity
                .clone()
                .unwrap_or_else(crate::lease::elector::default_identity),
            timings: crate::lease::LeaseTimings {
                duration: self.ha_lease_duration,
            },
        })
    }
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The EngineUpgrade spec file (YAML).
    #[arg(long)]
    pub spec: PathBuf,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DiagnoseArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TimelineArgs {
    /// The events file a rollout wrote (`run --events FILE`).
    #[arg(long)]
    pub events: PathBuf,
    /// Where to write the picture: FILE.svg, or FILE.png (drawn by a headless Chromium).
    #[arg(long)]
    pub out: PathBuf,
    /// The browser that draws a PNG [default: the first of chromium, chromium-browser,
    /// google-chrome on PATH].
    #[arg(long, value_name = "PATH")]
    pub renderer: Option<PathBuf>,
}

fn parse_duration(s: &str) -> Result<Duration, crate::spec::duration::DurationError> {
    crate::spec::SpecDuration::parse(s).map(|d| d.get())
}

pub(crate) fn init_logging(format: LogFormat, default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo shows its own progress; its log is for warnings unless RUST_LOG says otherwise.
    let default_level = match cli.command {
        #[cfg(feature = "demo")]
        Command::Demo(_) => "warn",
        _ => "info",
    };
    init_logging(cli.log_format, default_level);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => run(args).await,
        Command::Plan(args) => plan(args, false).await,
        Command::Status(args) => plan(args, true).await,
        Command::Resume(args) => {
            let swarm = args.swarm()?;
            let cleared = crate::executor::resume(&swarm).await?;
            if cleared.is_empty() {
                println!("no failed node");
            } else {
                println!("handed back for a retry: {}", cleared.join(", "));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Diagnose(args) => {
            let swarm = args.cluster.swarm()?.with_patience(Duration::from_secs(5));
            let (_, observation) = crate::reconciler::observe(&swarm)
                .await
                .context("reading the cluster")?;
            let report = crate::health::diagnose::diagnose(&observation);
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "demo")]
        Command::Demo(command) => crate::demo::dispatch(command).await,
        Command::Probe(args) => {
            crate::probe::run(args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Timeline(args) => {
            crate::page::export::export(&args.events, &args.out, args.renderer.as_deref())?;
            println!("wrote {}", args.out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema => {
            print!("{}", crate::spec::schema_json());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load(path: &Path) -> anyhow::Result<crate::spec::EngineUpgrade> {
    load_spec_file(path).map_err(|e| anyhow::anyhow!("{e}"))
}

async fn plan(args: PlanArgs, as_status: bool) -> anyhow::Result<ExitCode> {
    let spec = load(&args.spec)?;
    let swarm = args.cluster.swarm()?.with_patience(Duration::from_secs(5));
    let (p, observation) = plan_now(&swarm, &spec)
        .await
        .context("reading the cluster")?;
    let status =
        RolloutStatus::from_plan(&spec.metadata.name, &spec.spec.version, 0, &p, None, None);
    // What draining each node still to come would do to the networks, node by node.
    let predictions: Vec<_> = p
        .nodes
        .iter()
        .filter(|n| n.order.is_some() && n.step.is_none())
        .map(|n| crate::health::predict::predict_drain(&n.id, &observation))
        .collect();
    if args.json {
        let value = if as_status {
            serde_json::to_value(&status)?
        } else {
            serde_json::json!({ "plan": p, "predictions": predictions })
        };
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", status.render());
    if !as_status {
        println!();
        if p.actions.is_empty() {
            println!("next: nothing to do now");
        }
        for a in &p.actions {
            println!("next: {} {}", a.node().hostname, describe(a));
        }
        if !predictions.is_empty() {
            println!(
                "\npredictions (each node drained on its own, from the cluster as it is now):"
            );
            for prediction in &predictions {
                println!("  {}", prediction.to_string().replace('\n', "\n  "));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn describe(action: &crate::planner::Action) -> String {
    use crate::marks::Step;
    let u = action.update();
    let fails = u
        .mark
        .as_ref()
        .is_some_and(|m| matches!(m.step, Step::Failed | Step::RollingBack));
    if fails && u.expect != Some(Step::RollingBack) {
        format!("fails: {}", u.message)
    } else {
        u.message.clone()
    }
}

async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    // Fail early and clearly on a bad spec at start; later bad edits keep the last good one.
    load(&args.spec)?;
    let mut operator = Operator::start(
        args.cluster.swarm()?,
        crate::operator::Config {
            spec: args.spec.clone(),
            spec_reread: args.spec_reread,
            events: args.events.clone(),
            listen: args.listen,
            options: Options {
                poll_active: args.poll_interval,
                once: args.once,
                ha: args.ha.config(),
                ..Options::default()
            },
        },
    )
    .await?;
    tracing::info!(listen = %operator.listen, endpoints = ?operator.endpoints(), "swarm-upgrade running");
    let lease = operator.take_lease();
    let outcome = tokio::select! {
        outcome = operator.run() => Some(outcome),
        _ = shutdown_signal() => {
            tracing::info!("stopping; node state is kept in node labels");
            None
        }
    };
    // The loop is stopped: no write of this operator follows the release.
    if let Some(lease) = lease {
        lease.release().await;
    }
    Ok(match outcome {
        None | Some(Outcome::Complete) => ExitCode::SUCCESS,
        Some(Outcome::PausedByFailure) => ExitCode::from(2),
    })
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
