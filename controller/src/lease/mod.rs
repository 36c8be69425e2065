//! `run --ha`: one active operator among several, elected with a lease kept in the swarm's own
//! object, as Kubernetes keeps a Lease.
//!
//! The lease is a few labels in `Swarm.Spec.Labels` ([`record`]), written with the swarm's
//! version index (`POST /swarm/update?version=N`), so of two operators that read the same
//! version only one write succeeds. Whether the lease has expired is judged as client-go's
//! leaderelection judges it ([`election`], pure): a standby takes over when the record has not
//! changed for the lease's duration on the standby's own clock; no host's clock is trusted by
//! another. The holder stops acting once it has not renewed for two thirds of the duration,
//! before any standby may take over. [`elector`] is the loop doing the reads and writes.

pub mod election;
pub mod elector;
pub mod record;

pub use election::{Decision, Election, LeaseTimings};
pub use elector::{LeaseGate, LeaseHandle, LeaseMetrics, LeaseRole, LeaseState, spawn};
pub use record::LeaseRecord;

/// `run --ha`: who this operator is in the election, and the lease's duration.
#[derive(Debug, Clone)]
pub struct HaConfig {
    pub identity: String,
    pub timings: LeaseTimings,
}
