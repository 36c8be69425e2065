//! Assembles a running operator from its parts: the metered Docker client, the HTTP endpoints,
//! the spec watcher and the reconcile loop. `run` and `demo` both start one this way.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;

use crate::docker::Swarm;
use crate::events::EventSink;
use crate::http::{AppState, serve};
use crate::metrics::{ErrorLabels, Metrics};
use crate::reconciler::{Options, Outcome, Reconciler};
use crate::spec::SpecWatcher;
use crate::status::RolloutStatus;

pub struct Config {
    pub spec: PathBuf,
    pub spec_reread: Duration,
    pub events: Option<PathBuf>,
    pub listen: SocketAddr,
    pub options: Options,
}

pub struct Operator {
    reconciler: Reconciler,
    /// Kept alive while the loop runs: dropping it stops the watching.
    _watcher: SpecWatcher,
    pub listen: SocketAddr,
    pub metrics: Metrics,
    pub status: Arc<RwLock<RolloutStatus>>,
}

impl Operator {
    pub async fn start(swarm: Swarm, config: Config) -> anyhow::Result<Self> {
        let metrics = Metrics::new();
        let hook = metrics.clone();
        let swarm = swarm.with_error_hook(Arc::new(move |e| {
            hook.docker_api_errors
                .get_or_create(&ErrorLabels {
                    error: e.metric_label().to_string(),
                })
                .inc();
        }));
        let cost = metrics.docker_api.clone();
        let swarm = swarm.with_request_hook(Arc::new(move |call, bytes| cost.record(call, bytes)));
        let status = Arc::new(RwLock::new(RolloutStatus::default()));
        let listen = serve(
            config.listen,
            AppState {
                metrics: metrics.clone(),
                status: status.clone(),
            },
        )
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (another operator running? pick an address with --listen)",
                config.listen
            )
        })?;
        let (watcher, spec_rx) = SpecWatcher::spawn(config.spec, config.spec_reread);
        Ok(Self {
            reconciler: Reconciler {
                swarm,
                spec: spec_rx,
                events: EventSink::new(config.events),
                metrics: metrics.clone(),
                status: status.clone(),
                options: config.options,
            },
            _watcher: watcher,
            listen,
            metrics,
            status,
        })
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.reconciler.swarm.endpoints()
    }

    pub async fn run(self) -> Outcome {
        let Self {
            reconciler,
            _watcher,
            ..
        } = self;
        let outcome = reconciler.run().await;
        drop(_watcher);
        outcome
    }
}
