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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use bollard::models::{Node, Service, Task, TaskState};
use jiff::Timestamp;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Serialize, Serializer};

use super::predict::{constraint_matches, node_schedulable};
use super::signatures::classify;
use crate::spec::HealthSpec;

/// Everything the gates look at, for one step.
#[derive(Debug, Clone)]
pub struct GateInput<'a> {
    pub services: &'a [Service],
    pub tasks: &'a [Task],
    pub nodes: &'a [Node],
    /// Nodes the step affects (the node about to start, or the one just reactivated), by node ID
    /// or hostname. Empty: every service is checked.
    pub affected_nodes: &'a [String],
    /// When the step began: rejections/failures newer than this count.
    pub since: Timestamp,
    /// Probe errors counted since `since` (see [`super::probing::ProbeRunner::errors_total`]).
    pub probe_errors: u64,
    pub spec: &'a HealthSpec,
    /// Result of the Prometheus query, if configured and already evaluated: `Ok(series count)`
    /// or `Err(message)`. `None` while `spec.prometheus` is set fails the gate ("not evaluated"):
    /// evaluate it (with [`super::prometheus::evaluate_gate`]) before calling [`evaluate`].
    pub prometheus: Option<Result<usize, String>>,
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

fn task_state(t: &Task) -> Option<TaskState> {
    t.status.as_ref().and_then(|s| s.state)
}

fn is_running(t: &Task) -> bool {
    task_state(t) == Some(TaskState::RUNNING) && t.desired_state == Some(TaskState::RUNNING)
}

fn service_name(s: &Service) -> String {
    s.spec
        .as_ref()
        .and_then(|sp| sp.name.clone())
        .or_else(|| s.id.clone())
        .unwrap_or_default()
}

fn constraints(s: &Service) -> Vec<String> {
    s.spec
        .as_ref()
        .and_then(|sp| sp.task_template.as_ref())
        .and_then(|t| t.placement.as_ref())
        .and_then(|p| p.constraints.clone())
        .unwrap_or_default()
}

fn hostname(n: &Node) -> String {
    n.description
        .as_ref()
        .and_then(|d| d.hostname.clone())
        .or_else(|| n.id.clone())
        .unwrap_or_default()
}

enum Want {
    Replicas(u64),
    Global,
}

fn wanted(s: &Service) -> Option<Want> {
    let mode = s.spec.as_ref()?.mode.as_ref();
    let Some(mode) = mode else {
        // No mode: the engine's default is replicated with 1 replica.
        return Some(Want::Replicas(1));
    };
    if let Some(r) = &mode.replicated {
        return Some(Want::Replicas(r.replicas.unwrap_or(1).max(0) as u64));
    }
    if mode.global.is_some() {
        return Some(Want::Global);
    }
    // Jobs run to completion: nothing to converge.
    None
}

fn services_converged(input: &GateInput) -> Option<GateFailure> {
    // Affected node IDs (the list may hold IDs or hostnames).
    let affected: HashSet<&str> = input
        .nodes
        .iter()
        .filter(|n| {
            input
                .affected_nodes
                .iter()
                .any(|a| n.id.as_deref() == Some(a.as_str()) || hostname(n) == *a)
        })
        .filter_map(|n| n.id.as_deref())
        .chain(input.affected_nodes.iter().map(String::as_str))
        .collect();
    let relevant: Option<HashSet<&str>> = (!input.affected_nodes.is_empty()).then(|| {
        input
            .tasks
            .iter()
            .filter(|t| t.node_id.as_deref().is_some_and(|n| affected.contains(n)))
            .filter_map(|t| t.service_id.as_deref())
            .collect()
    });
    let mut short = Vec::new();
    for s in input.services {
        let Some(id) = s.id.as_deref() else { continue };
        if relevant.as_ref().is_some_and(|r| !r.contains(id)) {
            continue;
        }
        let Some(want) = wanted(s) else { continue };
        let running: Vec<&Task> = input
            .tasks
            .iter()
            .filter(|t| t.service_id.as_deref() == Some(id) && is_running(t))
            .collect();
        match want {
            Want::Replicas(replicas) => {
                let n = running.len() as u64;
                if n != replicas {
                    short.push(format!(
                        "service {}: {n}/{replicas} running",
                        service_name(s)
                    ));
                }
            }
            Want::Global => {
                let cons = constraints(s);
                let eligible: Vec<&Node> = input
                    .nodes
                    .iter()
                    .filter(|n| {
                        node_schedulable(n) && cons.iter().all(|c| constraint_matches(c, n))
                    })
                    .collect();
                let on: HashSet<&str> = running
                    .iter()
                    .filter_map(|t| t.node_id.as_deref())
                    .collect();
                let missing: Vec<String> = eligible
                    .iter()
                    .filter(|n| !n.id.as_deref().is_some_and(|id| on.contains(id)))
                    .map(|n| hostname(n))
                    .collect();
                if !missing.is_empty() {
                    short.push(format!(
                        "service {}: {}/{} running (global; none on {})",
                        service_name(s),
                        eligible.len() - missing.len(),
                        eligible.len(),
                        missing.join(", ")
                    ));
                }
            }
        }
    }
    (!short.is_empty()).then(|| GateFailure {
        gate: Gate::ServicesConverged,
        message: short.join(", "),
    })
}

fn no_new_rejections(input: &GateInput) -> Option<GateFailure> {
    let services: HashMap<&str, String> = input
        .services
        .iter()
        .filter_map(|s| Some((s.id.as_deref()?, service_name(s))))
        .collect();
    let hostnames: HashMap<&str, String> = input
        .nodes
        .iter()
        .filter_map(|n| Some((n.id.as_deref()?, hostname(n))))
        .collect();
    let mut rejected = 0usize;
    let mut failed = 0usize;
    // (reason, node) -> (count, services)
    let mut groups: BTreeMap<(&'static str, String), (usize, Vec<String>)> = BTreeMap::new();
    for t in input.tasks {
        let Some(status) = &t.status else { continue };
        let state = status.state;
        if !matches!(state, Some(TaskState::REJECTED | TaskState::FAILED)) {
            continue;
        }
        let Some(ts) = status
            .timestamp
            .as_deref()
            .and_then(|ts| ts.parse::<Timestamp>().ok())
        else {
            continue;
        };
        if ts <= input.since {
            continue;
        }
        if state == Some(TaskState::REJECTED) {
            rejected += 1;
        } else {
            failed += 1;
        }
        let reason = classify(status.err.as_deref().unwrap_or_default()).label();
        let node = t
            .node_id
            .as_deref()
            .filter(|n| !n.is_empty())
            .map(|n| hostnames.get(n).cloned().unwrap_or_else(|| n.to_string()))
            .unwrap_or_else(|| "no node".to_string());
        let service = t
            .service_id
            .as_deref()
            .map(|s| services.get(s).cloned().unwrap_or_else(|| s.to_string()))
            .unwrap_or_default();
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
    let message = match &input.prometheus {
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
