//! The operator's Prometheus metrics, all under `swarm_upgrade_`.

use std::sync::Arc;
use std::sync::Mutex;

use prometheus_client::encoding::{EncodeLabelSet, text::encode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Metric;
use prometheus_client::registry::Registry;

use crate::cluster::Role;
use crate::marks::Step;
use crate::planner::Plan;
use crate::planner::preflight::{Check, Finding};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    pub role: String,
    /// The operator's step, or `idle` for an untouched node.
    pub step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabels {
    pub role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    /// The pre-flight check (`planner::preflight::Check::name`).
    pub check: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub call: String,
}

/// A notification that did not reach its webhook: the webhook's name (never its URL) and why.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationFailureLabels {
    pub webhook: String,
    pub reason: String,
}

/// The operator's own cost to the managers: requests and the bytes of their answers, by call.
#[derive(Clone, Debug, Default)]
pub struct DockerApiMetrics {
    pub requests: Family<CallLabels, Counter>,
    /// Counted for the reads the operator parses itself (bollard's answers are not sized).
    pub response_bytes: Family<CallLabels, Counter>,
}

impl DockerApiMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "docker_api_requests",
            "Docker API requests the operator made, by call",
            m.requests.clone(),
        );
        registry.register(
            "docker_api_response_bytes",
            "Bytes of the Docker API answers the operator read, by call",
            m.response_bytes.clone(),
        );
        m
    }

    /// Counts one request and its answer's bytes.
    pub fn record(&self, call: &str, bytes: u64) {
        let labels = CallLabels {
            call: call.to_string(),
        };
        self.requests.get_or_create(&labels).inc();
        self.response_bytes.get_or_create(&labels).inc_by(bytes);
    }

    /// Requests and bytes counted so far under `call`.
    pub fn of(&self, call: &str) -> (u64, u64) {
        let labels = CallLabels {
            call: call.to_string(),
        };
        let get = |f: &Family<CallLabels, Counter>| f.get(&labels).map_or(0, |c| c.get());
        (get(&self.requests), get(&self.response_bytes))
    }
}

/// Every family the operator exports. Cheap to clone (families are shared handles).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    pub nodes: Family<NodeLabels, Gauge>,
    pub nodes_at_target: Family<RoleLabels, Gauge>,
    pub step_duration: Family<StepLabels, Histogram>,
    pub reconciles: Counter,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub docker_api_errors: Family<ErrorLabels, Counter>,
    pub docker_api: DockerApiMetrics,
    pub reconcile_duration: Histogram,
    pub spec_valid: Gauge,
    pub paused: Gauge,
    pub complete: Gauge,
    pub failed_nodes: Gauge,
    pub held_nodes: Gauge,
    pub notifications_failed: Family<NotificationFailureLabels, Counter>,
    pub preflight_warnings: Family<CheckLabels, Gauge>,
    pub preflight_refusals: Family<CheckLabels, Gauge>,
}

fn step_histogram() -> Histogram {
    Histogram::new([
        0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    ])
}

const SPEC_VALID_HELP: &str =
    "1 when the spec file as it is now is valid; 0 when the operator runs on the last good one";
const PAUSED_HELP: &str = "1 when the rollout is paused (by the spec or by a failed node)";
const COMPLETE_HELP: &str =
    "1 when every selected node is at the target and no operator label is left";
const FAILED_HELP: &str = "Nodes marked failed under the current spec";
const NOTIFICATIONS_FAILED_HELP: &str = "Notifications not delivered to a webhook (after its retries, or not queued), by webhook name and reason";
const HELD_HELP: &str = "Nodes an admin holds out of the rollout (label swarm-upgrade.hold)";
const PREFLIGHT_WARNINGS_HELP: &str = "What each pre-flight check warns about before the first drain (0 once the rollout is under way)";
const PREFLIGHT_REFUSALS_HELP: &str =
    "What each pre-flight check refuses to start on: while any is above 0 nothing is drained";

/// Registers `metric` under `name` and gives it back (a metric is a handle: the clone the
/// registry keeps and the one returned count together).
fn registered<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("swarm_upgrade");
        let nodes = registered(
            &mut r,
            "nodes",
            "Nodes by role and the operator's step (idle: untouched)",
            Family::default(),
        );
        let nodes_at_target = registered(
            &mut r,
            "nodes_at_target",
            "Nodes whose engine is at the target version",
            Family::default(),
        );
        let step_duration = registered(
            &mut r,
            "step_duration_seconds",
            "Time nodes spent in each step",
            Family::new_with_constructor(step_histogram as fn() -> Histogram),
        );
        let reconciles = registered(&mut r, "reconciles", "Reconcile passes", Counter::default());
        let reconcile_errors = registered(
            &mut r,
            "reconcile_errors",
            "Reconcile passes that failed, by error",
            Family::default(),
        );
        let docker_api_errors = registered(
            &mut r,
            "docker_api_errors",
            "Docker API calls that failed (each endpoint try), by error",
            Family::default(),
        );
        let docker_api = DockerApiMetrics::register(&mut r);
        let reconcile_duration = registered(
            &mut r,
            "reconcile_duration_seconds",
            "Time one reconcile pass took (observe, plan, act)",
            Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        );
        let metrics = Self {
            nodes,
            nodes_at_target,
            step_duration,
            reconciles,
            reconcile_errors,
            docker_api_errors,
            docker_api,
            reconcile_duration,
            spec_valid: registered(&mut r, "spec_valid", SPEC_VALID_HELP, Gauge::default()),
            paused: registered(&mut r, "paused", PAUSED_HELP, Gauge::default()),
            complete: registered(&mut r, "complete", COMPLETE_HELP, Gauge::default()),
            failed_nodes: registered(&mut r, "failed_nodes", FAILED_HELP, Gauge::default()),
            held_nodes: registered(&mut r, "held_nodes", HELD_HELP, Gauge::default()),
            notifications_failed: registered(
                &mut r,
                "notifications_failed",
                NOTIFICATIONS_FAILED_HELP,
                Family::default(),
            ),
            preflight_warnings: registered(
                &mut r,
                "preflight_warnings",
                PREFLIGHT_WARNINGS_HELP,
                Family::default(),
            ),
            preflight_refusals: registered(
                &mut r,
                "preflight_refusals",
                PREFLIGHT_REFUSALS_HELP,
                Family::default(),
            ),
            registry: Arc::new(Mutex::new(r)),
        };
        // Every check's series from the start (0), for alerts and the dashboard.
        metrics.observe_preflight(&[]);
        metrics
    }

    /// Lets other modules (health) register their families in the same registry.
    pub fn with_registry<T>(&self, f: impl FnOnce(&mut Registry) -> T) -> T {
        let mut registry = self.registry.lock().expect("metrics registry poisoned");
        f(&mut registry)
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().expect("metrics registry poisoned");
        encode(&mut out, &registry).expect("writing to a String cannot fail");
        out
    }

    /// Sets the node gauges from a fresh plan.
    pub(crate) fn observe_plan(&self, plan: &Plan) {
        self.nodes.clear();
        self.nodes_at_target.clear();
        for role in [Role::Manager, Role::Worker] {
            self.nodes_at_target
                .get_or_create(&RoleLabels {
                    role: role.as_str().into(),
                })
                .set(0);
            for step in Step::ALL.iter().map(|s| s.as_str()).chain(["idle"]) {
                self.nodes
                    .get_or_create(&NodeLabels {
                        role: role.as_str().into(),
                        step: step.into(),
                    })
                    .set(0);
            }
        }
        for n in &plan.nodes {
            let step = n.step.map(|s| s.as_str()).unwrap_or("idle");
            self.nodes
                .get_or_create(&NodeLabels {
                    role: n.role.as_str().into(),
                    step: step.into(),
                })
                .inc();
            if n.at_target {
                self.nodes_at_target
                    .get_or_create(&RoleLabels {
                        role: n.role.as_str().into(),
                    })
                    .inc();
            }
        }
        self.paused.set(plan.is_paused() as i64);
        self.complete.set(plan.complete as i64);
        self.held_nodes.set(plan.held().count() as i64);
        self.observe_preflight(&plan.preflight);
        self.failed_nodes.set(
            plan.blockers
                .iter()
                .filter(|b| b.kind == crate::planner::BlockerKind::PausedByFailure)
                .count() as i64,
        );
    }

    /// One series per check and kind, 0 when it found nothing.
    fn observe_preflight(&self, findings: &[Finding]) {
        for check in Check::ALL {
            let count = |refuses: bool| {
                (findings.iter())
                    .filter(|f| f.check == check && f.refuses == refuses)
                    .count() as i64
            };
            let labels = CheckLabels {
                check: check.name().into(),
            };
            self.preflight_warnings
                .get_or_create(&labels)
                .set(count(false));
            self.preflight_refusals
                .get_or_create(&labels)
                .set(count(true));
        }
    }

    pub fn observe_step(&self, step: Step, seconds: f64) {
        self.step_duration
            .get_or_create(&StepLabels {
                step: step.as_str().into(),
            })
            .observe(seconds);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_prefix_and_counters_their_total() {
        let m = Metrics::new();
        m.reconciles.inc();
        m.docker_api_errors
            .get_or_create(&ErrorLabels {
                error: "unreachable".into(),
            })
            .inc();
        m.observe_step(Step::Draining, 1.5);
        let text = m.encode();
        assert!(text.contains("swarm_upgrade_reconciles_total 1"), "{text}");
        assert!(
            text.contains("swarm_upgrade_docker_api_errors_total{error=\"unreachable\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("swarm_upgrade_step_duration_seconds_count{step=\"draining\"} 1"),
            "{text}"
        );
        assert!(text.contains("swarm_upgrade_spec_valid 0"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
