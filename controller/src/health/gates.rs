//! The health gates (`spec.health`): checked before each node is started and after each
//! reactivation, from the observed state alone. Pure: the caller observes, runs the probes
//! ([`super::probing`]) and the Prometheus query ([`super::prometheus`]), and passes the results.
//!
//! - `services_converged`: every service with a task on an affected node (every service if none
//!   is given) runs as many tasks as it wants: for a replicated service, tasks with current and
//!   desired state `running` equal `Replicas`; for a global service, one such task on every
//!   eligible node (active, ready, matching the placement constraints). Jobs are not checked.
//! - `no_new_rejections`: no task of any service was rejected or failed after the step began
//!   (by `Status.Timestamp`).
//! - `connectivity_errors`: the operator's probes failed at most `maxConnectivityErrors` times
//!   since the step began.
//! - `prometheus_query`: the configured query returned no series (and could be run).

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use bollard::models::TaskState;
use jiff::Timestamp;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Serialize, Serializer};

use super::predict::constraint_matches;
use super::prometheus::PrometheusError;
use super::signatures::classify;
use crate::observe::{Observation, ObservedNode, ObservedService, ObservedTask, Wanted};
use crate::spec::HealthSpec;

/// Everything the gates look at, for one step.
#[derive(Debug, Clone)]
pub struct GateInput<'a> {
    pub observation: &'a Observation,
    /// Nodes the step affects (the node about to start, or the one just reactivated), by node ID
    /// or hostname. Empty: every service is checked.
    pub affected_nodes: &'a [String],
    /// When the step began: rejections/failures newer than this count.
    pub since: Timestamp,
    /// Probe errors counted since `since` (see [`super::probing::ProbeRunner::errors_total`]).
    pub probe_errors: u64,
    pub spec: &'a HealthSpec,
    /// Result of the Prometheus query, if configured and already evaluated: `Ok(series count)`
    /// or why it could not be run. `None` while `spec.prometheus` is set fails the gate ("not evaluated"):
    /// evaluate it (with [`super::prometheus::evaluate_gate`]) before calling [`evaluate`].
    pub prometheus: Option<&'a Result<usize, PrometheusError>>,
}

/// One gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Gate {
    ServicesConverged,
    NoNewRejections,
    ConnectivityErrors,
    PrometheusQuery,
}

impl Gate {
    pub const ALL: [Gate; 4] = [
        Gate::ServicesConverged,
        Gate::NoNewRejections,
        Gate::ConnectivityErrors,
        Gate::PrometheusQuery,
    ];

    /// snake_case name, used as the `gate` metric label and in status.
    pub fn name(&self) -> &'static str {
        match self {
            Gate::ServicesConverged => "services_converged",
            Gate::NoNewRejections => "no_new_rejections",
            Gate::ConnectivityErrors => "connectivity_errors",
            Gate::PrometheusQuery => "prometheus_query",
        }
    }

    pub fn from_name(name: &str) -> Option<Gate> {
        Gate::ALL.into_iter().find(|g| g.name() == name)
    }
}

impl fmt::Display for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Gate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// A gate that did not pass, with the figures that made it fail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GateFailure {
    pub gate: Gate,
    pub message: String,
}

impl fmt::Display for GateFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "health gate {} failed: {}", self.gate, self.message)
    }
}

/// One line for status and logs: every failure, `; `-separated.
pub fn summary(failures: &[GateFailure]) -> String {
    failures
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Evaluates every gate; empty when all pass. Failures come in [`Gate::ALL`] order, at most one
/// per gate (its message covers every service / task concerned).
pub fn evaluate(input: &GateInput) -> Vec<GateFailure> {
    let mut out = Vec::new();
    if let Some(f) = services_converged(input) {
        out.push(f);
    }
    if let Some(f) = no_new_rejections(input) {
        out.push(f);
    }
    if input.probe_errors > input.spec.max_connectivity_errors {
        out.push(GateFailure {
            gate: Gate::ConnectivityErrors,
            message: format!(
                "{} probe errors > maxConnectivityErrors {}",
                input.probe_errors, input.spec.max_connectivity_errors
            ),
        });
    }
    if let Some(f) = prometheus_query(input) {
        out.push(f);
    }
    out
}

fn services_converged(input: &GateInput) -> Option<GateFailure> {
    let o = input.observation;
    // Affected node IDs (the list may hold IDs or hostnames).
    let affected: HashSet<&str> = o
        .nodes()
        .filter(|n| {
            input
                .affected_nodes
                .iter()
                .any(|a| n.id == *a || n.hostname() == a)
        })
        .map(|n| n.id.as_str())
        .chain(input.affected_nodes.iter().map(String::as_str))
        .collect();
    let relevant: Option<HashSet<&str>> = (!input.affected_nodes.is_empty())
        .then(|| affected.iter().flat_map(|n| o.services_on(n)).collect());
    let mut short = Vec::new();
    for s in o.services() {
        if relevant
            .as_ref()
            .is_some_and(|r| !r.contains(s.id.as_str()))
        {
            continue;
        }
        let Some(want) = s.wanted() else { continue };
        if let Some(gap) = convergence_gap(o, s, want) {
            short.push(gap);
        }
    }
    (!short.is_empty()).then(|| GateFailure {
        gate: Gate::ServicesConverged,
        message: short.join(", "),
    })
}

/// What the service lacks, or `None` when it runs every task it wants.
fn convergence_gap(o: &Observation, s: &ObservedService, want: Wanted) -> Option<String> {
    let running: Vec<&ObservedTask> = o.tasks_of(&s.id).filter(|t| t.is_running()).collect();
    match want {
        Wanted::Replicas(replicas) => {
            let n = running.len() as u64;
            (n != replicas).then(|| format!("service {}: {n}/{replicas} running", s.name()))
        }
        Wanted::Global => {
            let eligible: Vec<&ObservedNode> = o
                .nodes()
                .filter(|n| {
                    n.schedulable() && s.constraints().iter().all(|c| constraint_matches(c, n))
                })
                .collect();
            let on: HashSet<&str> = running.iter().filter_map(|t| t.node()).collect();
            let missing: Vec<&str> = eligible
                .iter()
                .filter(|n| !on.contains(n.id.as_str()))
                .map(|n| n.hostname())
                .collect();
            (!missing.is_empty()).then(|| {
                format!(
                    "service {}: {}/{} running (global; none on {})",
                    s.name(),
                    eligible.len() - missing.len(),
                    eligible.len(),
                    missing.join(", ")
                )
            })
        }
    }
}

fn no_new_rejections(input: &GateInput) -> Option<GateFailure> {
    let o = input.observation;
    let mut rejected = 0usize;
    let mut failed = 0usize;
    // (reason, node) -> (count, services)
    let mut groups: BTreeMap<(&'static str, String), (usize, Vec<String>)> = BTreeMap::new();
    for t in o.tasks().filter(|t| t.is_problem()) {
        let Some(ts) = t
            .status
            .timestamp
            .as_deref()
            .and_then(|ts| ts.parse::<Timestamp>().ok())
        else {
            continue;
        };
        if ts <= input.since {
            continue;
        }
        if t.state() == TaskState::REJECTED {
            rejected += 1;
        } else {
            failed += 1;
        }
        let reason = classify(&t.status.err).label();
        let node = t.node().map_or("no node", |n| o.hostname(n)).to_string();
        let service = o.service_name(&t.service_id).to_string();
        let g = groups.entry((reason, node)).or_default();
        g.0 += 1;
        if !g.1.contains(&service) {
            g.1.push(service);
        }
    }
    if rejected + failed == 0 {
        return None;
    }
    let plural = |n: usize| if n == 1 { "task" } else { "tasks" };
    let what = match (rejected, failed) {
        (r, 0) => format!("{r} {} rejected", plural(r)),
        (0, f) => format!("{f} {} failed", plural(f)),
        (r, f) => format!("{r} {} rejected and {f} failed", plural(r)),
    };
    let details: Vec<String> = groups
        .into_iter()
        .map(|((reason, node), (count, mut svcs))| {
            svcs.sort();
            format!("{count}× {reason} on {node}: {}", svcs.join(", "))
        })
        .collect();
    Some(GateFailure {
        gate: Gate::NoNewRejections,
        message: format!("{what} since {} ({})", input.since, details.join("; ")),
    })
}

fn prometheus_query(input: &GateInput) -> Option<GateFailure> {
    let gate = input.spec.prometheus.as_ref()?;
    let message = match input.prometheus {
        None => format!("query {:?} not evaluated yet", gate.query),
        Some(Ok(0)) => return None,
        Some(Ok(1)) => format!("query {:?} returned 1 series", gate.query),
        Some(Ok(n)) => format!("query {:?} returned {n} series", gate.query),
        Some(Err(e)) => format!("query {:?} could not be run: {e}", gate.query),
    };
    Some(GateFailure {
        gate: Gate::PrometheusQuery,
        message,
    })
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GateLabels {
    pub gate: String,
}

/// Gate metrics, registered under the operator registry's prefix:
///
/// - `swarm_upgrade_health_gate_failing{gate}`: 1 while the gate fails, else 0.
/// - `swarm_upgrade_health_gate_failures_total{gate}`: times the gate went from passing to
///   failing.
#[derive(Clone, Debug, Default)]
pub struct GateMetrics {
    failing: Family<GateLabels, Gauge>,
    failures: Family<GateLabels, Counter>,
}

impl GateMetrics {
    /// Creates both families in `registry`, with a 0 series for every gate.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "health_gate_failing",
            "1 while the health gate fails (the rollout is paused on it), else 0",
            m.failing.clone(),
        );
        registry.register(
            "health_gate_failures",
            "Times the health gate went from passing to failing",
            m.failures.clone(),
        );
        for g in Gate::ALL {
            let l = Self::labels(g);
            m.failing.get_or_create(&l).set(0);
            m.failures.get_or_create(&l).inc_by(0);
        }
        m
    }

    fn labels(g: Gate) -> GateLabels {
        GateLabels {
            gate: g.name().to_string(),
        }
    }

    /// Records one evaluation: sets every gate's `failing` gauge and counts the gates that
    /// start failing now.
    pub fn record(&self, failures: &[GateFailure]) {
        for g in Gate::ALL {
            let l = Self::labels(g);
            let now = failures.iter().any(|f| f.gate == g);
            let was = self.failing.get_or_create(&l).set(i64::from(now)) == 1;
            if now && !was {
                self.failures.get_or_create(&l).inc();
            }
        }
    }

    /// Whether `gate` failed at the last [`record`](Self::record).
    pub fn is_failing(&self, gate: Gate) -> bool {
        self.failing
            .get(&Self::labels(gate))
            .is_some_and(|g| g.get() == 1)
    }

    /// How many times `gate` went from passing to failing.
    pub fn failures_total(&self, gate: Gate) -> u64 {
        self.failures
            .get(&Self::labels(gate))
            .map_or(0, |c| c.get())
    }
}
