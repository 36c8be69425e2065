//! The operator's own connectivity probes (`spec.health.probes`): one background task per
//! target, each probing every resolved address on its interval with [`Prober`], counting into
//! the shared [`ProbeMetrics`] (`swarm_upgrade_connectivity_errors_total{target}`,
//! `swarm_upgrade_connectivity_probes_total{target}`) and into the runner's own monotonic totals,
//! which the connectivity gate reads by difference from the step's start.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::metrics::ProbeMetrics;
use crate::probe::{ProbeOutcome, Prober, Target};
use crate::spec::ProbeSpec;

#[derive(Debug, Default)]
struct Shared {
    errors: AtomicU64,
    attempts: AtomicU64,
    rounds: AtomicU64,
    /// The last outcome per target (as written in the spec).
    last: Mutex<BTreeMap<String, ProbeOutcome>>,
}

/// Runs the probes in background tasks until dropped (or [`update`](Self::update)d with other
/// probes). Create it inside a tokio runtime.
#[derive(Debug)]
pub struct ProbeRunner {
    probes: Vec<ProbeSpec>,
    metrics: ProbeMetrics,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

/// Starts probing `probes`, recording into `metrics`. A target that does not parse (the spec
/// loader refuses those) is logged and skipped.
pub fn spawn(probes: Vec<ProbeSpec>, metrics: ProbeMetrics) -> ProbeRunner {
    let mut runner = ProbeRunner {
        probes: Vec::new(),
        metrics,
        shared: Arc::default(),
        tasks: Vec::new(),
    };
    runner.start(probes);
    runner
}

impl ProbeRunner {
    /// Probe errors counted since the runner was spawned, across every target ever probed
    /// (monotonic: it never goes down, also across [`update`](Self::update)). Errors since a
    /// step began = `errors_total()` now - `errors_total()` then.
    pub fn errors_total(&self) -> u64 {
        self.shared.errors.load(Ordering::Relaxed)
    }

    /// Attempts counted since the runner was spawned (one per resolved address per round, or
    /// one for a failed resolution), monotonic like [`errors_total`](Self::errors_total).
    pub fn attempts_total(&self) -> u64 {
        self.shared.attempts.load(Ordering::Relaxed)
    }

    /// Completed rounds, across every target.
    pub fn rounds_total(&self) -> u64 {
        self.shared.rounds.load(Ordering::Relaxed)
    }

    /// The probes being run.
    pub fn probes(&self) -> &[ProbeSpec] {
        &self.probes
    }

    /// The latest outcome of each target currently probed (by target as written), for status
    /// and logs: which target failed, and how.
    pub fn last_outcomes(&self) -> Vec<ProbeOutcome> {
        let last = self.shared.last.lock().unwrap_or_else(|e| e.into_inner());
        self.probes
            .iter()
            .filter_map(|p| last.get(p.target.trim()).cloned())
            .collect()
    }

    /// Switches to `probes` if they differ from the current ones: every task is stopped and
    /// the new set started (counters are kept). Same probes: nothing happens.
    pub fn update(&mut self, probes: Vec<ProbeSpec>) {
        if probes == self.probes {
            return;
        }
        self.stop();
        self.shared
            .last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.start(probes);
    }

    fn start(&mut self, probes: Vec<ProbeSpec>) {
        for p in &probes {
            let target = match Target::parse(&p.target) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(probe = %p.target, error = %e, "probe target skipped");
                    continue;
                }
            };
            let target = match p.expect_status {
                Some(s) => target.with_expect_status(s),
                None => target,
            };
            let prober = Prober::new(p.timeout.get()).with_metrics(self.metrics.clone());
            let interval = p.interval.get();
            let shared = Arc::clone(&self.shared);
            self.tasks.push(tokio::spawn(async move {
                let mut ticks = tokio::time::interval(interval);
                ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    let outcome = prober.probe_once(&target).await;
                    shared
                        .attempts
                        .fetch_add(outcome.attempts(), Ordering::Relaxed);
                    shared.errors.fetch_add(outcome.errors(), Ordering::Relaxed);
                    shared.rounds.fetch_add(1, Ordering::Relaxed);
                    for detail in outcome.error_details() {
                        tracing::warn!(probe = %target, "Connectivity error: {detail}");
                    }
                    shared
                        .last
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(target.as_str().to_string(), outcome);
                }
            }));
        }
        self.probes = probes;
    }

    fn stop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for ProbeRunner {
    fn drop(&mut self) {
        self.stop();
    }
}
