//! The connectivity probes' counters (`swarm_upgrade_connectivity_{errors,probes}_total{target}`),
//! shared by the operator's probes and `swarm-upgrade probe`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    pub target: String,
}

/// Connectivity probe counters, shared by the operator's probes and `swarm-upgrade probe`.
#[derive(Clone, Debug, Default)]
pub struct ProbeMetrics {
    pub connectivity_errors: Family<TargetLabels, Counter>,
    pub connectivity_probes: Family<TargetLabels, Counter>,
}

impl ProbeMetrics {
    /// Creates the two families and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "connectivity_errors",
            "Connectivity probe attempts that failed, by target",
            m.connectivity_errors.clone(),
        );
        registry.register(
            "connectivity_probes",
            "Connectivity probe attempts (one per resolved address), by target",
            m.connectivity_probes.clone(),
        );
        m
    }

    /// Adds `attempts` attempts of which `errors` failed for `target`.
    pub fn record(&self, target: &str, attempts: u64, errors: u64) {
        let labels = TargetLabels {
            target: target.to_string(),
        };
        self.connectivity_probes
            .get_or_create(&labels)
            .inc_by(attempts);
        // Create the error series at 0 too, so it is exported before the first error.
        self.connectivity_errors
            .get_or_create(&labels)
            .inc_by(errors);
    }

    /// Errors counted so far for `target`.
    pub fn errors(&self, target: &str) -> u64 {
        let labels = TargetLabels {
            target: target.to_string(),
        };
        self.connectivity_errors.get(&labels).map_or(0, |c| c.get())
    }

    /// Attempts counted so far for `target`.
    pub fn probes(&self, target: &str) -> u64 {
        let labels = TargetLabels {
            target: target.to_string(),
        };
        self.connectivity_probes.get(&labels).map_or(0, |c| c.get())
    }
}
