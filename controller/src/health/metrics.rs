//! The health metric families. Registered under the operator registry's prefix
//! (`swarm_upgrade`), they come out as:
//!
//! - `swarm_upgrade_task_rejections_total{service,node,reason}`
//! - `swarm_upgrade_task_failures_total{service,node,reason}`
//! - `swarm_upgrade_connectivity_errors_total{target}`
//! - `swarm_upgrade_connectivity_probes_total{target}`
//! - `swarm_upgrade_network_free_addresses{network}`
//! - `swarm_upgrade_network_capacity_addresses{network}`

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::capacity::NetworkUsage;
use super::rejections::TaskProblem;
pub use crate::probe::{ProbeMetrics, TargetLabels};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProblemLabels {
    pub service: String,
    pub node: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NetworkLabels {
    pub network: String,
}

/// All health metric families.
#[derive(Clone, Debug, Default)]
pub struct HealthMetrics {
    task_rejections: Family<ProblemLabels, Counter>,
    task_failures: Family<ProblemLabels, Counter>,
    probes: ProbeMetrics,
    network_free_addresses: Family<NetworkLabels, Gauge>,
    network_capacity: Family<NetworkLabels, Gauge>,
    exported_networks: Arc<Mutex<HashSet<String>>>,
    // Unregistered running totals over every label set.
    rejections_seen: Counter,
    failures_seen: Counter,
}

impl HealthMetrics {
    /// Creates every family and registers it in `registry` (whose prefix, e.g.
    /// `swarm_upgrade`, is prepended to each name).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            probes: ProbeMetrics::register(registry),
            ..Self::default()
        };
        registry.register(
            "task_rejections",
            "Tasks seen rejected, each counted once, by service, node and classified reason",
            m.task_rejections.clone(),
        );
        registry.register(
            "task_failures",
            "Tasks seen failed, each counted once, by service, node and classified reason",
            m.task_failures.clone(),
        );
        registry.register(
            "network_free_addresses",
            "Addresses an overlay network can still give to tasks, VIPs and node load-balancer attachments",
            m.network_free_addresses.clone(),
        );
        registry.register(
            "network_capacity_addresses",
            "Addresses of an overlay network usable by swarm (subnet size minus network, broadcast and gateway)",
            m.network_capacity.clone(),
        );
        m
    }

    /// Counts each problem once into the rejections or failures family.
    pub fn record_problems(&self, problems: &[TaskProblem]) {
        for p in problems {
            let labels = ProblemLabels {
                service: p.service.clone(),
                node: p.node.clone(),
                reason: p.reason.label().to_string(),
            };
            let (family, total) = if p.is_rejection() {
                (&self.task_rejections, &self.rejections_seen)
            } else {
                (&self.task_failures, &self.failures_seen)
            };
            family.get_or_create(&labels).inc();
            total.inc();
        }
    }

    /// The connectivity counters (hand a clone to a [`crate::probe::Prober`]).
    pub fn probe_metrics(&self) -> &ProbeMetrics {
        &self.probes
    }

    /// Sets the capacity and free gauges of every network in `usage`, and removes
    /// the series of networks exported before but absent now.
    pub fn set_network_usage(&self, usage: &[NetworkUsage]) {
        let mut exported = self
            .exported_networks
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let now: HashSet<String> = usage.iter().map(|u| u.name.clone()).collect();
        for gone in exported.difference(&now) {
            let labels = NetworkLabels {
                network: gone.clone(),
            };
            self.network_free_addresses.remove(&labels);
            self.network_capacity.remove(&labels);
        }
        for u in usage {
            let labels = NetworkLabels {
                network: u.name.clone(),
            };
            self.network_capacity
                .get_or_create(&labels)
                .set(i64::try_from(u.capacity).unwrap_or(i64::MAX));
            self.network_free_addresses
                .get_or_create(&labels)
                .set(i64::try_from(u.free).unwrap_or(i64::MAX));
        }
        *exported = now;
    }

    /// Rejections counted so far with these labels.
    pub fn rejections(&self, service: &str, node: &str, reason: &str) -> u64 {
        let labels = ProblemLabels {
            service: service.into(),
            node: node.into(),
            reason: reason.into(),
        };
        self.task_rejections.get(&labels).map_or(0, |c| c.get())
    }

    /// Failures counted so far with these labels.
    pub fn failures(&self, service: &str, node: &str, reason: &str) -> u64 {
        let labels = ProblemLabels {
            service: service.into(),
            node: node.into(),
            reason: reason.into(),
        };
        self.task_failures.get(&labels).map_or(0, |c| c.get())
    }

    /// Sum of all rejections counted so far (for "no new rejections since" gates).
    pub fn total_rejections(&self) -> u64 {
        self.rejections_seen.get()
    }

    /// Sum of all failures counted so far.
    pub fn total_failures(&self) -> u64 {
        self.failures_seen.get()
    }
}
