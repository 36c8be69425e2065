//! The one table of task rejection and failure signatures.
//!
//! Every place that needs to name why a task was rejected or failed (the
//! `swarm_upgrade_task_rejections_total{reason}` label, the log, `diagnose`) goes
//! through [`classify`], and every explanation comes from [`SIGNATURES`].

use std::fmt;

use serde::{Serialize, Serializer};

/// Why a task was rejected or failed, classified from its `Status.Err`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// "node is missing network attachments, ip addresses may be exhausted"
    NetworkAttachmentsExhausted,
    /// "cannot create a swarm scoped network when swarm is not active"
    SwarmNotActive,
    /// "error while removing network: ..."
    NetworkRemovalFailed,
    /// "no suitable node (...)"
    NoSuitableNode,
    /// "No such image", "pull access denied", "manifest unknown", ...
    ImageUnavailable,
    /// Anything not in the table.
    Other,
}

/// One row of the table: which errors it matches, and what they mean.
#[derive(Debug, Clone, Copy)]
pub struct Signature {
    pub reason: Reason,
    /// Matched case-insensitively as substrings of `Status.Err`; the first row
    /// with any matching pattern wins. Patterns are short enough to also match
    /// the truncated ERROR column of `docker service ps` ("node is missing network attac…").
    pub patterns: &'static [&'static str],
    pub cause: &'static str,
    pub remedy: &'static str,
}

/// The table. Order matters: the first row that matches wins.
pub const SIGNATURES: &[Signature] = &[
    Signature {
        reason: Reason::NetworkAttachmentsExhausted,
        patterns: &[
            "node is missing network attac",
            "ip addresses may be exhausted",
            "no available addresses on this pool",
            "no available ip",
        ],
        cause: "The node has no load-balancer address on one of the task's overlay networks. \
                Every node running a task of an overlay network takes one address of that network \
                besides the task addresses and the service VIPs (a /27 with one VIP and tasks on 5 \
                nodes leaves 32 - 3 - 1 - 5 = 23 for tasks), so a network near capacity overflows \
                when tasks move to a node that had none (a drain, an upgrade). The same error is \
                seen when a manager is reactivated before every manager is upgraded, or when a \
                worker is upgraded before the managers.",
        remedy: "Give the network a bigger subnet (recreate it with --subnet), run fewer replicas, \
                 or move fewer nodes at once (maxUnavailableWorkers: 1); upgrade every manager and \
                 keep them drained until all are upgraded, then the workers. Rejected tasks are \
                 retried on nodes that already have an address.",
    },
    Signature {
        reason: Reason::SwarmNotActive,
        patterns: &[
            "cannot create a swarm scoped",
            "swarm scoped network when swarm is not active",
        ],
        cause: "A node's engine was stopped and started again while the node was still active: \
                tasks were sent to it before its swarm component was running again.",
        remedy: "Drain a node before stopping its engine and reactivate it only once it is back \
                 Ready; swarm replaces the rejected tasks by itself.",
    },
    Signature {
        reason: Reason::NetworkRemovalFailed,
        patterns: &["error while removing network"],
        cause: "An engine just restarted (e.g. by an upgrade) tried to clean up a task's overlay \
                network that it no longer knew about.",
        remedy: "Usually harmless: swarm replaces the task. If it repeats on a node, wait until the \
                 node is Ready and check `docker network ls` there; restart its engine once more \
                 if a stale network stays.",
    },
    Signature {
        reason: Reason::NoSuitableNode,
        patterns: &["no suitable node"],
        cause: "The scheduler found no node satisfying the task's placement constraints, resources \
                or availability: e.g. every eligible node is drained (draining every manager of a \
                cluster without workers leaves tasks nowhere to run).",
        remedy: "Reactivate a node, add a node, or relax the service's placement constraints; do \
                 not drain the last node a service can run on.",
    },
    Signature {
        reason: Reason::ImageUnavailable,
        patterns: &[
            "no such image",
            "pull access denied",
            "manifest unknown",
            "manifest for ",
            "repository does not exist",
            "error pulling image",
            "failed to resolve reference",
            "invalid reference format",
        ],
        cause: "The node could not find the service's image locally and could not pull it (no \
                registry reachable, wrong name or tag, or access denied). Images are per engine.",
        remedy: "Load the image on every node that can run the service (or make the registry \
                 reachable and log in with --with-registry-auth); check the image name and tag.",
    },
    Signature {
        reason: Reason::Other,
        patterns: &[],
        cause: "Not a known signature.",
        remedy: "Inspect the task (`docker inspect TASK`) and the node's engine log.",
    },
];

impl Reason {
    /// Every reason, in table order.
    pub const ALL: [Reason; 6] = [
        Reason::NetworkAttachmentsExhausted,
        Reason::SwarmNotActive,
        Reason::NetworkRemovalFailed,
        Reason::NoSuitableNode,
        Reason::ImageUnavailable,
        Reason::Other,
    ];

    /// The metric label value.
    pub fn label(&self) -> &'static str {
        match self {
            Reason::NetworkAttachmentsExhausted => "network_attachments_exhausted",
            Reason::SwarmNotActive => "swarm_not_active",
            Reason::NetworkRemovalFailed => "network_removal_failed",
            Reason::NoSuitableNode => "no_suitable_node",
            Reason::ImageUnavailable => "image_unavailable",
            Reason::Other => "other",
        }
    }

    /// The table row for this reason.
    pub fn signature(&self) -> &'static Signature {
        SIGNATURES
            .iter()
            .find(|s| s.reason == *self)
            .expect("every reason has a row in SIGNATURES")
    }

    /// What usually causes it, in plain words.
    pub fn cause(&self) -> &'static str {
        self.signature().cause
    }

    /// What to do about it, in plain words.
    pub fn remedy(&self) -> &'static str {
        self.signature().remedy
    }

    #[cfg(test)]
    /// The reason whose [`label`](Self::label) is `label`.
    pub(crate) fn from_label(label: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.label() == label)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.label())
    }
}

/// Classify a task's `Status.Err` (the raw text, or the truncated ERROR column of
/// `docker service ps`, quotes and ellipsis included).
pub fn classify(err: &str) -> Reason {
    let lower = err.to_lowercase();
    SIGNATURES
        .iter()
        .find(|s| s.patterns.iter().any(|p| lower.contains(p)))
        .map_or(Reason::Other, |s| s.reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_exactly_one_row_and_round_trips_its_label() {
        for r in Reason::ALL {
            assert_eq!(
                SIGNATURES.iter().filter(|s| s.reason == r).count(),
                1,
                "{r}"
            );
            assert_eq!(Reason::from_label(r.label()), Some(r));
            assert!(!r.cause().is_empty() && !r.remedy().is_empty());
        }
        assert_eq!(SIGNATURES.len(), Reason::ALL.len());
    }

    #[test]
    fn empty_and_unknown_are_other() {
        assert_eq!(classify(""), Reason::Other);
        assert_eq!(classify("task: non-zero exit (1)"), Reason::Other);
    }
}
