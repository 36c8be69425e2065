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
use crate::lease::LeaseHandle;
use crate::metrics::{ErrorLabels, Metrics};
use crate::notify::Notifier;
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

/// How long an exiting operator (`run --once`) waits for its webhooks.
const NOTIFY_GRACE: Duration = Duration::from_secs(10);

pub struct Operator {
    reconciler: Reconciler,
    notifier: Notifier,
    /// With `run --ha`: the election, released on a clean shutdown.
    lease: Option<LeaseHandle>,
    /// Kept alive while the loop runs: dropping it stops the watching.
    _watcher: SpecWatcher,
    pub listen: SocketAddr,
    // Read by the demo, which prints the rollout's progress and metrics.
    #[cfg_attr(not(feature = "demo"), allow(dead_code))]
    pub metrics: Metrics,
    #[cfg_attr(not(feature = "demo"), allow(dead_code))]
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
                events: config.events.clone(),
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
        let notifier = Notifier::new(spec_rx.clone(), metrics.notifications_failed.clone());
        let events = EventSink::new(config.events).with_listener(Arc::new(notifier.clone()));
        let lease = config.options.ha.as_ref().map(|ha| {
            crate::lease::spawn(swarm.clone(), ha.identity.clone(), ha.timings, &metrics)
        });
        Ok(Self {
            notifier,
            reconciler: Reconciler {
                swarm,
                spec: spec_rx,
                events,
                metrics: metrics.clone(),
                status: status.clone(),
                options: config.options,
                lease: lease.as_ref().map(LeaseHandle::gate),
            },
            lease,
            _watcher: watcher,
            listen,
            metrics,
            status,
        })
    }

    /// The election (with `run --ha`), to release once the loop is stopped.
    pub(crate) fn take_lease(&mut self) -> Option<LeaseHandle> {
        self.lease.take()
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.reconciler.swarm.endpoints()
    }

    pub async fn run(self) -> Outcome {
        let Self {
            reconciler,
            notifier,
            _watcher,
            ..
        } = self;
        let outcome = reconciler.run().await;
        drop(_watcher);
        notifier.flush(NOTIFY_GRACE).await;
        outcome
    }
}
