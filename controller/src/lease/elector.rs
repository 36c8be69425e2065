//! The election's reads and writes: `GET /swarm`, the lease labels changed in the spec as
//! read (every other field and label kept), `POST /swarm/update` with the version read. Runs
//! as its own task; the loop asks its [`LeaseGate`] before every write to the cluster.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::{Map, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::election::{Decision, Election, LeaseTimings};
use super::record::{self, LeaseRecord};
use crate::docker::{ApiError, Swarm};
use crate::metrics::Metrics;

/// How many times a release is tried when other writes to the swarm come between.
const RELEASE_ATTEMPTS: usize = 5;

/// This operator's part in the election, as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "role")]
pub enum LeaseRole {
    /// Not read the lease yet, or it cannot be read or written now.
    Candidate {
        reason: Option<String>,
    },
    Active,
    Standby {
        holder: String,
    },
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LeaseState {
    pub identity: String,
    #[serde(flatten)]
    pub role: LeaseRole,
    /// Until when this operator may act (its last renewal sent, plus the renew deadline).
    #[serde(skip)]
    pub active_until: Option<Instant>,
}

impl LeaseState {
    /// One line for a person: what this operator does and why.
    pub fn describe(&self) -> String {
        match &self.role {
            LeaseRole::Active => format!("active: {} holds the lease", self.identity),
            LeaseRole::Standby { holder } => format!("standby: {holder} holds the lease"),
            LeaseRole::Candidate { reason: None } => "standby: reading the lease".into(),
            LeaseRole::Candidate {
                reason: Some(reason),
            } => format!("standby: the lease cannot be read or written: {reason}"),
        }
    }
}

/// Whether this operator may write to the cluster now: it holds the lease and renewed it
/// within the renew deadline (on its own clock, however late the elector task runs).
#[derive(Clone)]
pub struct LeaseGate(watch::Receiver<LeaseState>);

impl LeaseGate {
    pub(crate) fn is_active(&self) -> bool {
        let state = self.0.borrow();
        state.role == LeaseRole::Active
            && state
                .active_until
                .is_some_and(|until| Instant::now() < until)
    }

    pub fn state(&self) -> LeaseState {
        self.0.borrow().clone()
    }

    /// Until the elector publishes a new state.
    pub async fn changed(&mut self) {
        if self.0.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// `swarm_upgrade_ha_active` and `swarm_upgrade_ha_lease_transitions_total`.
#[derive(Clone)]
pub struct LeaseMetrics {
    active: Gauge,
    transitions: Counter,
}

impl LeaseMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            active: Gauge::default(),
            transitions: Counter::default(),
        };
        registry.register(
            "ha_active",
            "1 while this operator holds the lease and acts (run --ha); 0 on standby",
            m.active.clone(),
        );
        registry.register(
            "ha_lease_transitions",
            "Times the lease changed holders, as this operator saw it (its own takeovers included)",
            m.transitions.clone(),
        );
        m
    }
}

/// The running election; [`Self::release`] it on a clean shutdown.
pub struct LeaseHandle {
    task: JoinHandle<()>,
    swarm: Swarm,
    identity: String,
    gate: LeaseGate,
}

impl LeaseHandle {
    pub fn gate(&self) -> LeaseGate {
        self.gate.clone()
    }

    /// Stops renewing and, if this operator holds the lease, releases it (an empty holder), so
    /// a standby takes over at once instead of after the lease's duration.
    pub async fn release(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
        match release(&self.swarm, &self.identity).await {
            Ok(true) => tracing::info!(identity = %self.identity, "released the lease"),
            Ok(false) => {}
            Err(e) => tracing::warn!(
                "could not release the lease ({e}); a standby takes over once it expires"
            ),
        }
    }
}

impl Drop for LeaseHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The identity `run --ha` uses unless given one: the host name (a swarm task's is its
/// container ID) and a random suffix, so two processes never share one.
pub(crate) fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "swarm-upgrade".into());
    format!("{host}-{:06x}", rand::random::<u32>() & 0xff_ffff)
}

/// Starts the election for `identity` on `swarm`, its metrics in `metrics`' registry.
pub fn spawn(
    swarm: Swarm,
    identity: String,
    timings: LeaseTimings,
    metrics: &Metrics,
) -> LeaseHandle {
    let metrics = metrics.with_registry(LeaseMetrics::register);
    let (tx, rx) = watch::channel(LeaseState {
        identity: identity.clone(),
        role: LeaseRole::Candidate { reason: None },
        active_until: None,
    });
    // A lease write that waits longer than a renewal period is too late to matter.
    let patient = swarm.clone().with_patience(timings.renew_every());
    let election = Election::new(identity.clone(), timings);
    let task = tokio::spawn(campaign(patient, election, tx, metrics));
    LeaseHandle {
        task,
        swarm,
        identity,
        gate: LeaseGate(rx),
    }
}

/// The swarm object's version index and spec.
fn version_and_spec(swarm: &Value) -> Result<(u64, Map<String, Value>), ApiError> {
    let version = swarm
        .pointer("/Version/Index")
        .and_then(Value::as_u64)
        .ok_or_else(|| missing("Version.Index"))?;
    let spec = swarm
        .get("Spec")
        .and_then(Value::as_object)
        .cloned()
        .ok_or_else(|| missing("Spec"))?;
    Ok((version, spec))
}

fn missing(field: &str) -> ApiError {
    ApiError::Status {
        status: 200,
        message: format!("GET /swarm answered without {field}"),
    }
}

/// The spec's labels, for changing in place (created when the swarm has none).
fn labels_of(spec: &mut Map<String, Value>) -> &mut Map<String, Value> {
    let labels = spec
        .entry("Labels")
        .or_insert_with(|| Value::Object(Map::new()));
    if !labels.is_object() {
        *labels = Value::Object(Map::new());
    }
    labels.as_object_mut().expect("made an object above")
}

/// One read, decide, maybe write; returns how long to wait before the next.
async fn campaign_round(
    swarm: &Swarm,
    election: &mut Election,
    tx: &watch::Sender<LeaseState>,
    metrics: &LeaseMetrics,
) -> Result<Duration, ApiError> {
    let timings = election.timings();
    let (version, mut spec) = version_and_spec(&swarm.swarm_object().await?)?;
    let read_at = Instant::now();
    let current = LeaseRecord::from_labels(
        spec.get("Labels").and_then(Value::as_object),
        timings.duration,
    );
    let record = match election.decide(current, read_at) {
        Decision::Standby { holder, expires_in } => {
            publish(tx, election, LeaseRole::Standby { holder }, metrics);
            return Ok(timings.retry().min(expires_in));
        }
        Decision::Acquire(record) | Decision::Renew(record) => record,
    };
    record.write_to(labels_of(&mut spec));
    let sent_at = Instant::now();
    match swarm.update_swarm_spec(&Value::Object(spec), version).await {
        Ok(()) => {
            election.written(sent_at);
            publish(tx, election, LeaseRole::Active, metrics);
            Ok(timings.renew_every())
        }
        // Another write came first (another operator, or an admin's `docker swarm update`):
        // read again now; the record says who holds the lease.
        Err(ApiError::OutOfSequence) => Ok(Duration::ZERO),
        Err(e) => Err(e),
    }
}

async fn campaign(
    swarm: Swarm,
    mut election: Election,
    tx: watch::Sender<LeaseState>,
    metrics: LeaseMetrics,
) {
    loop {
        let wait = match campaign_round(&swarm, &mut election, &tx, &metrics).await {
            Ok(wait) => wait,
            Err(e) => {
                tracing::warn!("the lease in the swarm object: {e}");
                let role = if election.is_active(Instant::now()) {
                    LeaseRole::Active
                } else {
                    LeaseRole::Candidate {
                        reason: Some(e.to_string()),
                    }
                };
                publish(&tx, &election, role, &metrics);
                election.timings().retry()
            }
        };
        // The holder stops acting at its deadline even if no round runs by then: the gate
        // reads `active_until` itself.
        tokio::time::sleep(wait).await;
    }
}

fn publish(
    tx: &watch::Sender<LeaseState>,
    election: &Election,
    role: LeaseRole,
    metrics: &LeaseMetrics,
) {
    let active_until = election.active_until();
    tx.send_if_modified(|state| {
        let holder_of = |role: &LeaseRole, me: &str| match role {
            LeaseRole::Active => Some(me.to_string()),
            LeaseRole::Standby { holder } => Some(holder.clone()),
            LeaseRole::Candidate { .. } => None,
        };
        let before = holder_of(&state.role, &state.identity);
        let after = holder_of(&role, &state.identity);
        if after.is_some() && before.is_some() && before != after {
            metrics.transitions.inc();
        }
        if state.role != role {
            match &role {
                LeaseRole::Active => tracing::info!(identity = %state.identity, "holding the lease: acting on the swarm"),
                LeaseRole::Standby { holder } => tracing::info!(identity = %state.identity, %holder, "standby: another operator holds the lease; observing only"),
                LeaseRole::Candidate { .. } => {}
            }
        }
        let changed = state.role != role;
        state.role = role;
        state.active_until = active_until;
        metrics
            .active
            .set((state.role == LeaseRole::Active) as i64);
        // The deadline moves on every renewal; the gate reads it, no wake-up needed.
        changed
    });
}

/// Releases the lease if `identity` holds it; `Ok(false)` when it does not.
async fn release(swarm: &Swarm, identity: &str) -> Result<bool, ApiError> {
    for _ in 0..RELEASE_ATTEMPTS {
        let (version, mut spec) = version_and_spec(&swarm.swarm_object().await?)?;
        let labels = labels_of(&mut spec);
        if labels.get(record::HOLDER).and_then(Value::as_str) != Some(identity) {
            return Ok(false);
        }
        record::release(labels);
        match swarm.update_swarm_spec(&Value::Object(spec), version).await {
            Ok(()) => return Ok(true),
            Err(ApiError::OutOfSequence) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::OutOfSequence)
}
