//! Connectivity probes: the in-swarm client of the manual upgrade procedure's test stack
//! (`lb-upgrade-test-cli`), run as `swarm-upgrade probe`, and the [`Prober`] the operator uses
//! for `spec.health.probes`. Probe targets are spec types ([`crate::spec::target`]); the HTTP
//! exchange is [`crate::http_client`]'s.

pub mod log;
pub mod metrics;
pub mod prober;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::time::MissedTickBehavior;

pub use self::log::ProbeLog;
pub use self::metrics::{ProbeMetrics, TargetLabels};
pub use self::prober::{AddrResult, ProbeError, ProbeOutcome, Prober};
use crate::spec::duration::DurationError;
pub use crate::spec::target::{ProbeKind, Target, TargetError};

/// `swarm-upgrade probe`: probe targets forever, log failures in the test client's
/// format, count attempts and errors, serve them on `/metrics`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProbeArgs {
    /// HOST:PORT for a TCP connect, or http://HOST[:PORT]/path for an HTTP GET;
    /// repeatable. `tasks.SERVICE:PORT` probes every task of SERVICE.
    #[arg(long = "target", required = true, value_name = "TARGET", value_parser = Target::parse)]
    pub targets: Vec<Target>,

    /// Time between rounds (e.g. 200ms, 1s).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,

    /// Time allowed per address (resolve, connect, HTTP response head).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Append `<date>: Starting client service` and `<date>: Connectivity error: ...`
    /// lines to this file.
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,

    /// Serve Prometheus metrics on http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// HTTP status expected from http:// targets.
    #[arg(long, default_value_t = 200)]
    pub expect_status: u16,

    /// Stop after this many rounds (default: run until SIGTERM or Ctrl-C).
    #[arg(long, value_name = "N")]
    pub rounds: Option<u64>,
}

/// Why a `--interval` or `--timeout` was refused.
#[derive(Debug, thiserror::Error)]
pub enum DurationArgError {
    #[error(transparent)]
    Invalid(#[from] DurationError),
    #[error("invalid duration {0:?}: it must be more than 0")]
    Zero(String),
}

fn parse_duration(s: &str) -> Result<Duration, DurationArgError> {
    let d = crate::spec::SpecDuration::parse(s)?.get();
    if d.is_zero() {
        return Err(DurationArgError::Zero(s.to_string()));
    }
    Ok(d)
}

/// Runs until SIGTERM or Ctrl-C (or `--rounds`).
pub async fn run(args: ProbeArgs) -> anyhow::Result<()> {
    run_until(args, shutdown_signal()).await
}

/// Resolves on SIGTERM or Ctrl-C.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// [`run`] with a caller-provided shutdown future.
pub async fn run_until(args: ProbeArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let mut registry = Registry::with_prefix("swarm_upgrade");
    let metrics = ProbeMetrics::register(&mut registry);
    for t in &args.targets {
        metrics.record(t.as_str(), 0, 0);
    }
    let registry = Arc::new(registry);

    let server = match args.listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            let app = metrics_router(registry.clone());
            Some(tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "metrics server stopped");
                }
            }))
        }
        None => None,
    };

    let log = match &args.log {
        Some(path) => Some(
            ProbeLog::open(path).with_context(|| format!("cannot open log {}", path.display()))?,
        ),
        None => None,
    };
    if let Some(log) = &log {
        log.starting()
            .with_context(|| format!("cannot write log {}", log.path().display()))?;
    }
    tracing::info!(targets = ?args.targets.iter().map(Target::as_str).collect::<Vec<_>>(), "Starting client service");

    let prober = Prober::new(args.timeout)
        .with_expect_status(args.expect_status)
        .with_metrics(metrics);
    let rounds = async {
        let mut ticker = tokio::time::interval(args.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut done = 0u64;
        loop {
            if args.rounds.is_some_and(|n| done >= n) {
                break;
            }
            ticker.tick().await;
            let outcomes =
                futures::future::join_all(args.targets.iter().map(|t| prober.probe_once(t))).await;
            for detail in outcomes.iter().flat_map(ProbeOutcome::error_details) {
                tracing::warn!("Connectivity error: {detail}");
                if let Some(log) = &log
                    && let Err(e) = log.connectivity_error(&detail)
                {
                    tracing::error!(error = %e, "cannot write the log");
                }
            }
            done += 1;
        }
    };
    let signalled = tokio::select! {
        () = rounds => false,
        () = shutdown => true,
    };
    if signalled {
        tracing::info!("Stopping client service");
        if let Some(log) = &log
            && let Err(e) = log.stopping()
        {
            tracing::error!(error = %e, "cannot write the log");
        }
    }
    if let Some(s) = server {
        s.abort();
    }
    Ok(())
}

/// `/metrics` (Prometheus text) and `/healthz` over `registry`.
pub(crate) fn metrics_router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move {
                    let mut body = String::new();
                    match prometheus_client::encoding::text::encode(&mut body, &registry) {
                        Ok(()) => (
                            [(
                                header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            body,
                        )
                            .into_response(),
                        Err(e) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                            .into_response(),
                    }
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
}
