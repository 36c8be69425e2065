//! The level-triggered loop: bring the observation up to date, plan, act, requeue.
//!
//! Nothing that matters lives only here: the per-node state is in node labels, so a new
//! process picks up exactly where a killed one stopped. What lives here is what may be lost:
//! which commands this process runs, and the last status for `/status`.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::{Notify, watch};

use std::collections::BTreeSet;

use crate::clock::Clock;
use crate::cluster::{NodeView, Snapshot};
use crate::docker::{ApiError, Swarm};
use crate::events::{Event, EventSink, EventStep};
use crate::executor::{Commands, Executor};
use crate::gossip::GossipWatch;
use crate::health::capacity::network_usage;
use crate::health::gates::{GateFailure, GateInput, GateMetrics, evaluate};
use crate::health::metrics::HealthMetrics;
use crate::health::predict::predict_drain_nodes;
use crate::health::probing::{self, ProbeRunner};
use crate::health::prometheus::evaluate_gate;
use crate::health::rejections::RejectionTracker;
use crate::lease::LeaseGate;
use crate::metrics::{ErrorLabels, Metrics};
use crate::observe::{Cadence, Observation, Reflector};
use crate::planner::preflight::{self, Workload};
use crate::planner::{Action, CommandEnded, Plan, PlanInput, plan};
use crate::spec::{EngineUpgrade, SpecState, spec_hash};
use crate::spec::{EngineUpgradeSpec, HealthSpec};
use crate::status::RolloutStatus;

/// The shortest time between two passes, however many events arrive.
const MIN_PASS_INTERVAL: Duration = Duration::from_millis(50);
/// The least time between passes woken by cluster events while nothing is under way.
const IDLE_PASS_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct Options {
    /// Between passes while something is under way.
    pub poll_active: Duration,
    /// Between passes while nothing is (events wake the loop sooner). Task rejections make no
    /// event, so this bounds how late one shows in the metrics.
    pub poll_idle: Duration,
    /// Stop when the rollout is complete (exit 0) or paused by a failure (exit 2).
    pub once: bool,
    /// The loop's one clock, handed to the executor and the health watch.
    pub clock: Clock,
    /// `run --ha`: act only while holding the lease in the swarm object.
    pub ha: Option<crate::lease::HaConfig>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            poll_active: Duration::from_millis(250),
            poll_idle: Duration::from_secs(2),
            once: false,
            clock: Clock::system(),
            ha: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Complete,
    PausedByFailure,
}

/// Observes the cluster once, from scratch: for `plan`, `status` and `diagnose`, which run once.
pub async fn observe(swarm: &Swarm) -> Result<(Snapshot, Observation), ApiError> {
    let mut reflector = Reflector::once(swarm.clone());
    reflector.list_everything().await?;
    let own = swarm.manager_infos().await;
    let snapshot = planner_input(swarm, own, reflector.store()).await;
    Ok((snapshot, reflector.into_store()))
}

/// The planner's input from the store, with what each manager's engine says of itself (its
/// own `/info`, `own`).
async fn planner_input(
    swarm: &Swarm,
    mut own: Vec<bollard::models::SystemInfo>,
    observation: &Observation,
) -> Snapshot {
    let mut snapshot = observation.snapshot();
    let workers = snapshot.nodes.iter().filter(|n| !n.is_manager());
    swarm.note_workers(workers.map(|n| n.id.as_str()));
    for id in demoted_by_us(&snapshot.nodes) {
        own.extend(swarm.own_info(&id).await);
    }
    crate::autolock::observe_locks(&mut snapshot, &mut own);
    preflight::observe_live_restore(&mut snapshot, &own);
    observe_own_managers(&mut snapshot.nodes, &own);
    correct_descriptions(&mut snapshot.nodes, own);
    snapshot
}

/// Managers the operator demoted that are workers now: their endpoints are on standby, but
/// the planner must hear from their own engines whether their managers have stopped.
fn demoted_by_us(views: &[NodeView]) -> Vec<String> {
    let demoted = |v: &&NodeView| v.mark().and_then(Result::ok).is_some_and(|m| m.demoted);
    let workers = views.iter().filter(|v| !v.is_manager());
    workers.filter(demoted).map(|v| v.id.clone()).collect()
}

/// Whether each reached engine runs a manager itself (`ControlAvailable`): a demoted manager's
/// engine does until it has cleared its raft data, and the planner stops it only after.
fn observe_own_managers(views: &mut [NodeView], own: &[bollard::models::SystemInfo]) {
    for swarm in own.iter().filter_map(|info| info.swarm.as_ref()) {
        let Some(id) = swarm.node_id.as_deref() else {
            continue;
        };
        if let Some(view) = views.iter_mut().find(|v| v.id == id) {
            view.runs_manager = own_manager_known(swarm)
                .then_some(swarm.control_available)
                .flatten();
        }
    }
}

/// Whether the engine's `ControlAvailable` says what its manager is doing. While the engine
/// restarts its swarm component (state `error` or `pending`, no node ID of its own) it reads
/// `false` whatever became of the manager, and a manager that stopped that way kept its raft
/// data: an engine stopped then and promoted back later panics in raft (moby/moby#29180).
fn own_manager_known(swarm: &bollard::models::SwarmInfo) -> bool {
    swarm.local_node_state == Some(bollard::models::LocalNodeState::ACTIVE)
        && swarm.error.as_deref().is_none_or(str::is_empty)
}

/// A 20.10 swarm can store one node's description (hostname, engine version) under another
/// node's ID, and keep it until that node's description changes again (seen on the real lab
/// after a leader change). Where the operator reaches a node's own engine, what that engine
/// says about itself wins.
fn correct_descriptions(
    views: &mut [NodeView],
    own: impl IntoIterator<Item = bollard::models::SystemInfo>,
) {
    for info in own {
        let (Some(id), Some(name), Some(version)) = (
            info.swarm.as_ref().and_then(|s| s.node_id.clone()),
            info.name.clone(),
            info.server_version.clone(),
        ) else {
            continue;
        };
        if let Some(view) = views.iter_mut().find(|v| v.id == id)
            && (view.hostname != name || view.engine_version != version)
        {
            tracing::warn!(
                node_id = %id,
                swarm_says = %format!("{} {}", view.hostname, view.engine_version),
                engine_says = %format!("{name} {version}"),
                "the swarm's description of this node is not the node's own; using the node's"
            );
            view.hostname = name;
            view.engine_version = version;
        }
    }
}

/// Counts task rejections and failures (each once) and network address usage.
pub struct HealthWatch {
    pub metrics: HealthMetrics,
    tracker: RejectionTracker,
    gate_metrics: GateMetrics,
    probes: Option<ProbeRunner>,
    clock: Clock,
    /// When the current step began (a node started, or the operator started): the gates
    /// count rejections, failures and probe errors from here.
    step_since: Timestamp,
    probe_errors_at_step: u64,
    /// Probe rounds done when the step began: the gates wait for one more, so that "no new
    /// probe error" means the probes looked again, however soon the next pass comes.
    probe_rounds_at_step: u64,
    /// Logged once per change, not every pass.
    last_failures: Vec<GateFailure>,
    /// The store's placement revision the network usage gauges were last set from.
    usage_revision: Option<u64>,
}

impl HealthWatch {
    /// A health watch on the system clock (benchmarks, metric exposition).
    pub fn new(metrics: &Metrics) -> Self {
        Self::with_clock(metrics, Clock::system())
    }

    pub(crate) fn with_clock(metrics: &Metrics, clock: Clock) -> Self {
        Self {
            metrics: metrics.with_registry(HealthMetrics::register),
            tracker: RejectionTracker::new(),
            gate_metrics: metrics.with_registry(GateMetrics::register),
            probes: None,
            clock,
            step_since: clock.now(),
            probe_errors_at_step: 0,
            probe_rounds_at_step: 0,
            last_failures: vec![],
            usage_revision: None,
        }
    }

    fn probe_errors(&self) -> u64 {
        self.probes.as_ref().map_or(0, ProbeRunner::errors_total)
    }

    /// A new step begins: the gates look at what happens from now on.
    pub(crate) fn step_started(&mut self) {
        self.step_since = self.clock.now();
        self.probe_errors_at_step = self.probe_errors();
        self.probe_rounds_at_step = self.probes.as_ref().map_or(0, ProbeRunner::rounds_total);
    }

    /// Runs the configured probes, and evaluates the health gates when `spec.health` is set.
    /// Returns the failing gates' messages (empty when they pass or none are configured).
    pub async fn gates(
        &mut self,
        spec: &HealthSpec,
        snapshot: &Snapshot,
        observation: &Observation,
    ) -> Vec<GateFailure> {
        match &mut self.probes {
            Some(runner) => runner.update(spec.probes.clone()),
            None if !spec.probes.is_empty() => {
                self.probes = Some(probing::spawn(
                    spec.probes.clone(),
                    self.metrics.probe_metrics().clone(),
                ));
            }
            None => {}
        }
        if !spec.has_gates() {
            return vec![];
        }
        if let Some(runner) = &self.probes {
            // The gates mean nothing before the probes have looked once since the step began:
            // wait for a round.
            let patience = spec
                .probes
                .iter()
                .map(|p| p.interval.get() + p.timeout.get())
                .max()
                .unwrap_or_default()
                * 2;
            let deadline = tokio::time::Instant::now() + patience;
            while runner.rounds_total() <= self.probe_rounds_at_step
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let prometheus = match &spec.prometheus {
            Some(gate) => Some(evaluate_gate(gate).await),
            None => None,
        };
        // The nodes in their cycle now: services with a task there are the ones to check.
        let affected: Vec<String> = snapshot
            .nodes
            .iter()
            .filter(|n| n.mark().is_some())
            .map(|n| n.id.clone())
            .collect();
        let failures = evaluate(&GateInput {
            observation,
            affected_nodes: &affected,
            since: self.step_since,
            probe_errors: self
                .probe_errors()
                .saturating_sub(self.probe_errors_at_step),
            spec,
            prometheus: prometheus.as_ref(),
        });
        self.gate_metrics.record(&failures);
        if !failures.is_empty() && spec.resume_when_healthy {
            // "Passes again" means nothing new goes wrong from here: restart the window.
            self.step_started();
        }
        if failures != self.last_failures {
            for f in &failures {
                tracing::warn!(gate = f.gate.name(), "{}", f.message);
            }
            if failures.is_empty() && !self.last_failures.is_empty() {
                tracing::info!("health gates pass again");
            }
            self.last_failures = failures.clone();
        }
        failures
    }

    /// Reports the rejected and failed tasks among those that changed since the last call,
    /// and sets the network usage gauges.
    pub fn observe(&mut self, observation: &mut Observation) {
        let changed = observation.take_changed_tasks();
        let problems = self.tracker.observe_changes(observation, &changed);
        for p in &problems {
            tracing::warn!(
                task = %p.task_id,
                service = %p.service,
                node = %p.node,
                state = ?p.state,
                reason = p.reason.label(),
                "task {}: {}",
                if p.is_rejection() { "rejected" } else { "failed" },
                p.err
            );
        }
        self.metrics.record_problems(&problems);
        // Address usage reads every task: only again when a task, service or network changed.
        let revision = observation.placement_revision();
        if self.usage_revision != Some(revision) {
            self.metrics.set_network_usage(&network_usage(observation));
            self.usage_revision = Some(revision);
        }
    }
}

/// Plans against the cluster as it is now, for `plan` and `status`.
pub(crate) async fn plan_now(
    swarm: &Swarm,
    spec: &EngineUpgrade,
) -> Result<(Plan, Observation), ApiError> {
    let (snapshot, observation) = observe(swarm).await?;
    let p = plan_with_predictions(
        &spec.spec,
        &spec_hash(&spec.spec),
        &snapshot,
        &observation,
        &BTreeSet::new(),
        &[],
        &BTreeMap::new(),
    );
    Ok((p, observation))
}

/// Plans one observation, outside the loop (`plan`, `status`, benchmarks): no command of this
/// process has ended, and the time is the system's now.
pub fn plan_with_predictions(
    spec: &EngineUpgradeSpec,
    hash: &str,
    snapshot: &Snapshot,
    observation: &Observation,
    running: &BTreeSet<String>,
    health_failures: &[GateFailure],
    lingering_endpoints: &BTreeMap<String, usize>,
) -> Plan {
    plan_pass(&Pass {
        spec,
        hash,
        snapshot,
        observation,
        running,
        ended: &BTreeMap::new(),
        health_failures,
        lingering_endpoints,
        ssh_failures: &BTreeMap::new(),
        now: Clock::system().now(),
    })
}

/// What one pass of the loop plans from.
struct Pass<'a> {
    spec: &'a EngineUpgradeSpec,
    hash: &'a str,
    snapshot: &'a Snapshot,
    observation: &'a Observation,
    running: &'a BTreeSet<String>,
    ended: &'a BTreeMap<String, CommandEnded>,
    health_failures: &'a [GateFailure],
    lingering_endpoints: &'a BTreeMap<String, usize>,
    ssh_failures: &'a BTreeMap<String, String>,
    now: jiff::Timestamp,
}

/// Plans with the address-exhaustion and nowhere-to-run prediction as the planner's drain check.
fn plan_pass(pass: &Pass<'_>) -> Plan {
    let observation = pass.observation;
    let predict = |draining: &[&str]| {
        let prediction = predict_drain_nodes(draining, observation);
        (!prediction.is_safe()).then(|| {
            let reasons: Vec<String> = prediction.blockers.iter().map(|b| b.to_string()).collect();
            reasons.join("; ")
        })
    };
    let workload = Workload::observe(pass.spec, pass.snapshot, observation, pass.now);
    plan(&PlanInput {
        spec: pass.spec,
        spec_hash: pass.hash,
        snapshot: pass.snapshot,
        running_commands: pass.running,
        ended_commands: pass.ended,
        drain_check: &predict,
        health_failures: pass.health_failures,
        lingering_endpoints: pass.lingering_endpoints,
        ssh_failures: pass.ssh_failures,
        workload: &workload,
        now: pass.now,
    })
}

pub struct Reconciler {
    pub swarm: Swarm,
    pub spec: watch::Receiver<SpecState>,
    pub events: EventSink,
    pub metrics: Metrics,
    pub status: Arc<RwLock<RolloutStatus>>,
    pub options: Options,
    /// With `run --ha`: asked before every write; a standby observes and plans only.
    pub lease: Option<LeaseGate>,
}

impl Reconciler {
    /// Whether this operator may write to the cluster now (always, without `--ha`).
    fn may_act(&self) -> bool {
        self.lease.as_ref().is_none_or(LeaseGate::is_active)
    }

    // One pass per turn: observe, plan, announce, act, report, wait. Longer than a screen
    // because each part is a line or two around a helper; the observation's part is in flux.
    pub async fn run(mut self) -> Outcome {
        let wake = Arc::new(Notify::new());
        let clock = self.options.clock;
        let executor = Executor {
            swarm: self.swarm.clone(),
            events: self.events.clone(),
            metrics: self.metrics.clone(),
            commands: Commands::default(),
            clock,
            wake: wake.clone(),
        };
        let mut reflector = Reflector::start(self.swarm.clone(), Cadence::default(), wake.clone());
        let mut in_flight: BTreeSet<String> = BTreeSet::new();
        let mut health = HealthWatch::with_clock(&self.metrics, clock);
        let mut announced = Announced::default();
        let mut blocker_log = BlockerLog::default();
        let mut gossip = GossipWatch::default();
        let mut last_error: Option<String> = None;
        let mut owed_written = false;
        let outcome = loop {
            let state = self.spec.borrow_and_update().clone();
            self.metrics.spec_valid.set(state.error.is_none() as i64);
            let Some(spec) = state.current.clone() else {
                self.wait_for_a_valid_spec(&state, clock).await;
                continue;
            };
            self.metrics.reconciles.inc();
            let spec_error = state.error.as_ref().map(|e| e.to_string());
            let upgrade_spec = Arc::new(spec.spec.clone());
            let hash = spec_hash(&upgrade_spec);
            let pass_started = tokio::time::Instant::now();
            in_flight.extend(executor.commands.running());
            // The managers' own `/info` does not depend on the store: asked meanwhile, the
            // pass waits for one round trip fewer (on a loaded fleet, 50-150 ms each).
            let (refreshed, own) =
                tokio::join!(reflector.refresh(&in_flight), self.swarm.manager_infos());
            let snapshot = match refreshed {
                Ok(()) => planner_input(&self.swarm, own, reflector.store()).await,
                Err(e) => {
                    self.count_error(e.metric_label());
                    tracing::warn!("observing the cluster failed: {e}");
                    last_error = Some(e.to_string());
                    if let Ok(mut st) = self.status.write() {
                        st.last_error = last_error.clone();
                        st.updated_at = Some(clock.now());
                    }
                    // Mid-rollout, a failed observation is tried again soon, not after the
                    // idle interval.
                    self.wait(&wake, !in_flight.is_empty()).await;
                    continue;
                }
            };
            in_flight = nodes_in_flight(&snapshot);
            if !owed_written && self.may_act() {
                write_owed_events(&self.events, &snapshot, clock.now()).await;
                owed_written = true;
            }
            health.observe(reflector.store_mut());
            let observation = reflector.store();
            let health_failures = health
                .gates(&upgrade_spec.health, &snapshot, observation)
                .await;
            let running = executor.commands.running();
            let ended = executor.commands.ended();
            let lingering = gossip.lingering(&self.swarm, &snapshot, observation).await;
            let now = clock.now();
            let p = plan_pass(&Pass {
                spec: &upgrade_spec,
                hash: &hash,
                snapshot: &snapshot,
                observation,
                running: &running,
                ended: &ended,
                health_failures: &health_failures,
                lingering_endpoints: &lingering,
                ssh_failures: &executor.commands.ssh_failures(now),
                now,
            });
            if p.actions.iter().any(|a| matches!(a, Action::Start(_))) {
                health.step_started();
            }
            self.metrics.observe_plan(&p);
            blocker_log.log(&p.blockers);

            if self.may_act() {
                announced
                    .announce(&self.events, clock.now(), &p, &upgrade_spec)
                    .await;
            }

            let busy = !p.actions.is_empty() || p.nodes.iter().any(|n| n.step.is_some());
            // What the executor changes shows as an event, maybe after the next pass begins:
            // the nodes acted on are re-read then, so the planner never sees them as before.
            in_flight.extend(p.actions.iter().map(|a| a.node().id.clone()));
            let pass_error = self.act(&executor, &p, &upgrade_spec).await;
            if pass_error.is_some() || p.actions.is_empty() {
                last_error = pass_error;
            }
            let mut status = RolloutStatus::from_plan(
                &spec.metadata.name,
                &upgrade_spec.version,
                state.generation,
                &p,
                spec_error,
                last_error.clone(),
            );
            status.ha = self.lease.as_ref().map(|gate| gate.state().describe());
            {
                let mut shared = self.status.write().expect("poisoned");
                status.observe_cluster(&shared, &snapshot, observation);
                *shared = status;
            }

            self.metrics
                .reconcile_duration
                .observe(pass_started.elapsed().as_secs_f64());
            if self.options.once && p.actions.is_empty() && running.is_empty() {
                if p.complete {
                    break Outcome::Complete;
                }
                if p.failed {
                    break Outcome::PausedByFailure;
                }
            }
            self.wait(&wake, busy).await;
        };
        drop(reflector);
        outcome
    }

    /// Nothing to act on (no spec yet, or only a bad one): say so, and wait for the file to change.
    async fn wait_for_a_valid_spec(&mut self, state: &SpecState, clock: Clock) {
        let error = state
            .error
            .as_ref()
            .map(|e| e.to_string())
            .unwrap_or_else(|| "no spec loaded yet".into());
        tracing::error!("no valid spec to act on: {error}");
        *self.status.write().expect("poisoned") = RolloutStatus {
            spec_error: Some(error),
            updated_at: Some(clock.now()),
            ..Default::default()
        };
        let _ = self.spec.changed().await;
    }

    /// Carries out the plan's actions in order; returns the last error, if any.
    async fn act(
        &self,
        executor: &Executor,
        p: &Plan,
        spec: &Arc<EngineUpgradeSpec>,
    ) -> Option<String> {
        let mut pass_error = None;
        for action in &p.actions {
            // Asked before each write: a holder that lost the lease stops at once.
            if !self.may_act() {
                if self
                    .lease
                    .as_ref()
                    .is_some_and(|g| g.state().role == crate::lease::LeaseRole::Active)
                {
                    tracing::warn!("the lease was not renewed in time: not acting until it is");
                }
                break;
            }
            if let Err(e) = executor.apply(action, spec).await {
                self.count_error(e.metric_label());
                tracing::warn!("{e}");
                pass_error = Some(e.to_string());
            }
        }
        pass_error
    }

    fn count_error(&self, label: &str) {
        self.metrics
            .reconcile_errors
            .get_or_create(&ErrorLabels {
                error: label.to_string(),
            })
            .inc();
    }

    /// Until something may have changed: a cluster event, a finished command, a spec change,
    /// or the poll interval (short while a step is under way: most steps end without an event).
    async fn wait(&mut self, wake: &Notify, busy: bool) {
        let interval = if busy {
            self.options.poll_active
        } else {
            self.options.poll_idle
        };
        let started = tokio::time::Instant::now();
        let (spec, lease) = (&mut self.spec, &mut self.lease);
        // The role changed (this operator took the lease, or lost it): plan again now.
        let lease_changed = async {
            match lease.as_mut() {
                Some(gate) => gate.changed().await,
                None => std::future::pending().await,
            }
        };
        let by_the_cluster = tokio::select! {
            _ = wake.notified() => true,
            _ = spec.changed() => false,
            _ = lease_changed => false,
            _ = tokio::time::sleep(interval) => false,
        };
        // A burst of cluster events (a leader change rewrites every node) is one pass, not many;
        // with nothing under way, the nodes' own status writes (thousands of nodes' worth on a
        // large fleet) wake at most one pass a second.
        let gap = if by_the_cluster && !busy {
            IDLE_PASS_INTERVAL
        } else {
            MIN_PASS_INTERVAL
        };
        tokio::time::sleep_until(started + gap).await;
    }
}

/// A problem holding the rollout back (a pre-flight refusal, a failing gate) is logged as a
/// warning when it first shows, and at debug level on the passes after: a waiting operator
/// says why without repeating it several times a second. Ordinary waits stay at debug.
#[derive(Default)]
struct BlockerLog {
    shown: BTreeSet<String>,
}

impl BlockerLog {
    fn log(&mut self, blockers: &[crate::planner::Blocker]) {
        for b in blockers {
            if b.kind.is_problem() && !self.shown.contains(&b.message) {
                tracing::warn!(kind = ?b.kind, node = ?b.node, "{}", b.message);
            } else {
                tracing::debug!(kind = ?b.kind, node = ?b.node, "{}", b.message);
            }
        }
        self.shown = blockers.iter().map(|b| b.message.clone()).collect();
    }
}

/// Rollout-wide events already written, so each is written once per occasion.
#[derive(Default)]
struct Announced {
    /// The version whose completion was announced.
    complete: Option<String>,
    paused_by_spec: bool,
    /// A failed node held the rollout at the last pass.
    paused_by_failure: bool,
    /// The failed nodes then, for the `resumed` event's message.
    failed_nodes: Vec<String>,
}

impl Announced {
    async fn announce(
        &mut self,
        events: &EventSink,
        now: jiff::Timestamp,
        p: &Plan,
        spec: &EngineUpgradeSpec,
    ) {
        if p.complete && p.actions.is_empty() {
            if self.complete.as_deref() != Some(spec.version.as_str()) {
                let held = p.held().count();
                let message = match held {
                    0 => format!("every selected node is at {}", spec.version),
                    1 => format!(
                        "every selected node is at {}, with 1 node held",
                        spec.version
                    ),
                    n => format!(
                        "every selected node is at {}, with {n} nodes held",
                        spec.version
                    ),
                };
                let event = Event::rollout(now, EventStep::Completed, &spec.version, message);
                if let Err(e) = events.emit(&event).await {
                    tracing::error!("events file: {e}");
                }
                self.complete = Some(spec.version.clone());
            }
        } else if !p.complete {
            self.complete = None;
        }
        let paused_by_spec = spec.strategy.paused;
        if paused_by_spec && !self.paused_by_spec {
            let message = "spec.strategy.paused is true";
            let event = Event::rollout(now, EventStep::Paused, &spec.version, message);
            if let Err(e) = events.emit(&event).await {
                tracing::error!("events file: {e}");
            }
        }
        if let Some(message) = self.resumed(p, paused_by_spec) {
            let event = Event::rollout(now, EventStep::Resumed, &spec.version, message);
            if let Err(e) = events.emit(&event).await {
                tracing::error!("events file: {e}");
            }
        }
        self.paused_by_spec = paused_by_spec;
    }

    /// Why the rollout goes on again, when it was paused (by the spec or a failed node) at the
    /// last pass and is not now. Seen by this process only: a restart starts afresh.
    fn resumed(&mut self, p: &Plan, paused_by_spec: bool) -> Option<String> {
        // A failure this pass writes pauses too, though its mark is not observed yet (and a
        // quick `swarm-upgrade resume` may clear it before it ever is).
        let pausing: Vec<String> = p
            .actions
            .iter()
            .map(Action::update)
            .filter(|u| u.events.iter().any(|e| e.step == EventStep::Paused))
            .map(|u| u.node.hostname.clone())
            .collect();
        let failed_now = p.failed || !pausing.is_empty();
        let was_failed = std::mem::replace(&mut self.paused_by_failure, failed_now);
        let failed_before = std::mem::take(&mut self.failed_nodes);
        if failed_now {
            self.failed_nodes = p
                .blockers
                .iter()
                .filter(|b| b.kind == crate::planner::BlockerKind::PausedByFailure)
                .filter_map(|b| b.node.clone())
                .chain(pausing)
                .collect::<BTreeSet<String>>()
                .into_iter()
                .collect();
        }
        if paused_by_spec || failed_now || !(was_failed || self.paused_by_spec) {
            return None;
        }
        Some(if was_failed {
            let who = match failed_before.is_empty() {
                true => "the failed node".to_string(),
                false => failed_before.join(", "),
            };
            format!(
                "the failure of {who} is cleared (`swarm-upgrade resume` or a changed spec); the rollout goes on"
            )
        } else {
            "spec.strategy.paused is false".to_string()
        })
    }
}

/// Once, before a new process acts: the events a killed one owed. A node update and its
/// events are two writes; an operator killed between them leaves the node at a step the events
/// file does not show, and the next one would never write it.
async fn write_owed_events(events: &EventSink, snapshot: &Snapshot, now: Timestamp) {
    let Some(path) = events.path() else {
        return;
    };
    let written = crate::events::read_events(path).unwrap_or_default();
    let owed = owed_events(&written, snapshot, now);
    if !owed.is_empty()
        && let Err(e) = events.emit_all(&owed).await
    {
        tracing::error!("events file: {e}");
    }
}

/// For each marked node, the events of the update that brought it to its step, if the file
/// lacks them: the step's own event since the step began, and the events written with it
/// (`drained` before `upgrade`; `ready` and `reactivate` before `reactivated`) if its cycle
/// (from its last `drain`) lacks them. Only that update's events can be missing: each
/// update's events are one append, made before the next update.
fn owed_events(written: &[Event], snapshot: &Snapshot, now: Timestamp) -> Vec<Event> {
    use crate::marks::Step;
    use EventStep::*;
    let mut owed = vec![];
    for node in &snapshot.nodes {
        let Some(Ok(mark)) = node.mark() else {
            continue;
        };
        let (step, with): (EventStep, &[EventStep]) = match mark.step {
            Step::Draining => (Drain, &[]),
            Step::Upgrading => (Upgrade, &[Drained]),
            Step::Upgraded => (Upgraded, &[]),
            Step::Ready => (Ready, &[]),
            Step::Settling => (Reactivated, &[Ready, Reactivate]),
            Step::RollingBack => (Rollback, &[Failed]),
            Step::Failed => continue,
        };
        let mine: Vec<&Event> = written.iter().filter(|e| e.node_id == node.id).collect();
        if mine.iter().any(|e| e.step == step && e.time >= mark.since) {
            continue;
        }
        let this_cycle = mine
            .iter()
            .rposition(|e| e.step == Drain)
            .map_or(&mine[..0], |i| &mine[i..]);
        let missing_with = with
            .iter()
            .filter(|w| !this_cycle.iter().any(|e| e.step == **w));
        let node_ref = crate::vocab::NodeRef {
            id: node.id.clone(),
            hostname: node.hostname.clone(),
            role: node.role,
            addr: node.addr.clone(),
            engine_version: node.engine_version.clone(),
        };
        for step in missing_with.copied().chain([step]) {
            let message = format!(
                "{step} (written after an operator restart: the operator that made this step stopped before writing its event)"
            );
            let (from, to) = (&mark.from_version, &mark.target);
            owed.push(Event::node(now, step, &node_ref, from, to, message));
        }
    }
    owed
}

/// The nodes in their cycle (marked by the operator): their node and tasks are re-read every
/// pass, since most steps end without an event.
fn nodes_in_flight(snapshot: &Snapshot) -> BTreeSet<String> {
    snapshot
        .nodes
        .iter()
        .filter(|n| n.mark().is_some())
        .map(|n| n.id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The five lab nodes as a 20.10 manager listed them.
    fn captured_views() -> Vec<NodeView> {
        let nodes: Vec<bollard::models::Node> = swarm_sim::captures::json("20.10.24/nodes.json");
        nodes
            .iter()
            .map(|n| NodeView::from_engine(n).unwrap())
            .collect()
    }

    #[test]
    fn an_engine_restarting_its_swarm_component_does_not_say_its_manager_stopped() {
        let mut views = captured_views();
        let id = views[0].id.clone();
        let info = |state, error: &str, control| bollard::models::SystemInfo {
            swarm: Some(bollard::models::SwarmInfo {
                node_id: Some(id.clone()),
                local_node_state: Some(state),
                error: Some(error.into()),
                control_available: Some(control),
                ..Default::default()
            }),
            ..Default::default()
        };
        use bollard::models::LocalNodeState::{ACTIVE, ERROR, PENDING};
        let cases = [
            (info(ACTIVE, "", false), Some(false)),
            (info(ACTIVE, "", true), Some(true)),
            (
                info(ERROR, "manager stopped: raft node stopped", false),
                None,
            ),
            (info(PENDING, "", false), None),
            // The manager is stopping: its control socket is gone, its raft data not yet.
            (info(ACTIVE, "rpc error: code = Unavailable", true), None),
        ];
        for (own, expected) in cases {
            views[0].runs_manager = Some(true);
            observe_own_managers(&mut views, std::slice::from_ref(&own));
            assert_eq!(views[0].runs_manager, expected, "{:?}", own.swarm);
        }
    }

    #[test]
    fn a_nodes_own_engine_corrects_a_swapped_description() {
        let mut views = captured_views();
        // As seen on the lab: the swarm shows n2's node with n5's hostname and engine.
        let n2 = views.iter().position(|v| v.hostname == "n2").unwrap();
        let id = views[n2].id.clone();
        views[n2].hostname = "n5".into();
        views[n2].engine_version = "20.10.24+dfsg1".into();
        let own = bollard::models::SystemInfo {
            name: Some("n2".into()),
            server_version: Some("26.1.5+dfsg1".into()),
            swarm: Some(bollard::models::SwarmInfo {
                node_id: Some(id.clone()),
                ..Default::default()
            }),
            ..Default::default()
        };
        correct_descriptions(&mut views, [own]);
        let fixed = views.iter().find(|v| v.id == id).unwrap();
        assert_eq!(
            (fixed.hostname.as_str(), fixed.engine_version.as_str()),
            ("n2", "26.1.5+dfsg1")
        );
        assert_eq!(views.iter().filter(|v| v.hostname == "n5").count(), 1);
    }
}
