//! Health of the swarm as the operator sees it: task rejections and failures,
//! overlay network address usage and the drain predictions built on it, and the
//! metric families that export them.

pub mod capacity;
pub mod diagnose;
pub mod gates;
pub mod metrics;
pub mod predict;
pub mod probing;
pub mod prometheus;
pub mod rejections;
pub mod signatures;

pub use capacity::{AllocatorCounts, NetworkUsage, network_usage};
pub use diagnose::{DiagnoseReport, diagnose};
pub use gates::{Gate, GateFailure, GateInput, GateMetrics};
pub use metrics::{HealthMetrics, NetworkLabels, ProbeMetrics, ProblemLabels, TargetLabels};
pub use predict::{
    DrainBlocker, DrainPrediction, NetworkImpact, Stranded, TaskGone, TaskMove, predict_drain,
    predict_drain_nodes,
};
pub use probing::ProbeRunner;
pub use rejections::{RejectionTracker, TaskProblem};
pub use signatures::{Reason, SIGNATURES, Signature, classify};
