//! Pre-flight checks: before the rollout drains its first node, the swarm must be one a careful
//! person would start on. A refusal holds every start (nothing is drained) and says the cause
//! and the fix; it lifts by itself once the cause is gone. A warning only informs (and is
//! exported as `swarm_upgrade_preflight_warnings{check}`).
//!
//! The checks are pure functions of the observation and the spec, and apply only while no node
//! is under way: once a node carries the operator's mark, or the selected nodes run mixed
//! versions, the rollout has begun and the rules of the planner decide (a node that goes
//! `unknown` after a leader change is then waited for, not refused). The one exception is a
//! downgrade: a node newer than the target is never started without `allowDowngrade`.
//!
//! Blocking services (`spec.health.blockingServices`) are not a pre-flight check: they hold
//! their node whenever it would be started, during the rollout too.

use std::collections::{BTreeMap, BTreeSet};

use bollard::models::SystemInfo;
use bollard::models::TaskState;
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use super::{BlockerKind, Planner, Rollout, selects};
use crate::cluster::{NodeView, Snapshot, State, occupies_node};
use crate::health::gates::{Gate, GateInput, evaluate};
use crate::marks;
use crate::observe::Observation;
use crate::spec::{EngineUpgradeSpec, HealthSpec, version_core};

/// How far back a rejected task counts as the swarm's own problem at the start.
pub const RECENT_REJECTIONS: SignedDuration = SignedDuration::from_mins(5);

/// The majors of Docker Engine, in release order (21 and 22 were never released): a jump is
/// counted in releases, not in numbers. A major outside the list counts by its number.
const ENGINE_MAJORS: [u64; 11] = [17, 18, 19, 20, 23, 24, 25, 26, 27, 28, 29];

/// One pre-flight check; its name is the `check` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// The target is older than a node's engine (without `strategy.allowDowngrade`).
    Downgrade,
    /// A node the spec selects is not Ready (down, disconnected or unknown).
    NodeNotReady,
    /// A manager is not Ready or not reachable by raft.
    ManagerUnreachable,
    /// An even number of managers: no more fault tolerance than one manager fewer.
    EvenManagers,
    /// An engine has `live-restore` on: it would not start again after the upgrade.
    LiveRestore,
    /// A service does not run every task it wants.
    UnconvergedServices,
    /// Tasks were rejected in the last [`RECENT_REJECTIONS`].
    RejectedTasks,
    /// The target is more than one major release past a node's engine (a warning).
    MajorVersionJump,
}

impl Check {
    pub const ALL: [Check; 8] = [
        Check::Downgrade,
        Check::NodeNotReady,
        Check::ManagerUnreachable,
        Check::EvenManagers,
        Check::LiveRestore,
        Check::UnconvergedServices,
        Check::RejectedTasks,
        Check::MajorVersionJump,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Check::Downgrade => "downgrade",
            Check::NodeNotReady => "node_not_ready",
            Check::ManagerUnreachable => "manager_unreachable",
            Check::EvenManagers => "even_managers",
            Check::LiveRestore => "live_restore",
            Check::UnconvergedServices => "unconverged_services",
            Check::RejectedTasks => "rejected_tasks",
            Check::MajorVersionJump => "major_version_jump",
        }
    }
}

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub check: Check,
    /// true: nothing starts while it holds; false: a warning.
    pub refuses: bool,
    pub node: Option<String>,
    pub message: String,
}

/// What the checks and the blocking services read from the store beyond the snapshot. Built
/// once per pass by [`Workload::observe`]; the whole-swarm part only while a check applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workload {
    /// "service web: 1/2 running", one per service short of what it wants.
    pub unconverged: Vec<String>,
    /// The tasks rejected in the last [`RECENT_REJECTIONS`], summed up.
    pub recent_rejections: Option<String>,
    /// Per node ID: the services matching `spec.health.blockingServices` with a task there.
    pub blocking: BTreeMap<String, BTreeSet<String>>,
}

impl Workload {
    pub fn observe(
        spec: &EngineUpgradeSpec,
        snapshot: &Snapshot,
        observation: &Observation,
        now: Timestamp,
    ) -> Self {
        let mut workload = Self {
            blocking: blocking_services(spec, observation),
            ..Self::default()
        };
        // Only what a check will read: nothing while under way or with nothing left to start
        // (a long-running operator's idle passes after the rollout skip the whole-swarm scan).
        let pending = (snapshot.nodes.iter())
            .any(|n| in_rollout(spec, n) && !spec.is_target(&n.engine_version));
        if !pending || under_way(spec, &snapshot.nodes) {
            return workload;
        }
        // The convergence gate's own rule, over every service.
        let failures = evaluate(&GateInput {
            observation,
            affected_nodes: &[],
            since: now,
            probe_errors: 0,
            spec: &HealthSpec::default(),
            prometheus: None,
        });
        workload.unconverged = (failures.into_iter())
            .filter(|f| f.gate == Gate::ServicesConverged)
            .map(|f| f.message)
            .collect();
        // Task timestamps are the managers' clocks: the window is measured on them.
        let swarm_now = observation.swarm_now(now);
        workload.recent_rejections = recent_rejections(observation, swarm_now - RECENT_REJECTIONS);
        workload
    }
}

/// Tasks the swarm rejected after `since` ("2 tasks rejected (2× test_client on n5: no
/// suitable node)"). Failed tasks are left out: a node that went down fails its tasks, and
/// that is the node's check, not this one.
fn recent_rejections(observation: &Observation, since: Timestamp) -> Option<String> {
    let mut groups: BTreeMap<(&str, &str, &str), usize> = BTreeMap::new();
    for task in observation
        .tasks()
        .filter(|t| t.state() == TaskState::REJECTED)
    {
        let recent = (task.status.timestamp.as_deref())
            .and_then(|ts| ts.parse::<Timestamp>().ok())
            .is_some_and(|ts| ts > since);
        if recent {
            let service = observation.service_name(&task.service_id);
            let node = task.node().map_or("no node", |n| observation.hostname(n));
            *groups
                .entry((service, node, task.status.err.as_str()))
                .or_default() += 1;
        }
    }
    let total: usize = groups.values().sum();
    let details: Vec<String> = (groups.into_iter())
        .map(|((service, node, err), n)| format!("{n}× {service} on {node}: {err}"))
        .collect();
    (total > 0).then(|| format!("{total} task(s) rejected ({})", details.join("; ")))
}

/// Per node ID, the services matching `health.blockingServices` whose task occupies it.
fn blocking_services(
    spec: &EngineUpgradeSpec,
    observation: &Observation,
) -> BTreeMap<String, BTreeSet<String>> {
    let selector = &spec.health.blocking_services;
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    if selector.is_empty() {
        return out;
    }
    for service in observation
        .services()
        .filter(|s| selector.matches(&s.spec.labels))
    {
        for task in observation.tasks_of(&service.id) {
            if let Some(node) = task.node().filter(|_| occupies_node(task.state())) {
                out.entry(node.to_string())
                    .or_default()
                    .insert(service.name().to_string());
            }
        }
    }
    out
}

/// Records which managers' own engines run with `live-restore` (`/info` `LiveRestoreEnabled`),
/// by the node ID their `/info` names. Only the engines the operator reaches are known.
pub fn observe_live_restore(snapshot: &mut Snapshot, own: &[SystemInfo]) {
    snapshot.live_restore = own
        .iter()
        .filter(|info| info.live_restore_enabled == Some(true))
        .filter_map(|info| info.swarm.as_ref()?.node_id.clone())
        .filter(|id| !id.is_empty())
        .collect();
}

/// Selected by the spec and not held by an admin.
fn in_rollout(spec: &EngineUpgradeSpec, node: &NodeView) -> bool {
    selects(&spec.node_selector, node) && marks::hold_reason(&node.labels).is_none()
}

/// The rollout has begun: a node carries the operator's mark, or the nodes it covers run the
/// target and an older version side by side.
fn under_way(spec: &EngineUpgradeSpec, nodes: &[NodeView]) -> bool {
    let covered: Vec<&NodeView> = nodes.iter().filter(|n| in_rollout(spec, n)).collect();
    let at_target = covered
        .iter()
        .filter(|n| spec.is_target(&n.engine_version))
        .count();
    nodes.iter().any(|n| n.mark().is_some()) || (at_target > 0 && at_target < covered.len())
}

/// `major.minor.patch` of an engine version ("20.10.24+dfsg1" -> (20, 10, 24)).
fn parse_version(version: &str) -> Option<(u64, u64, u64)> {
    let core = version_core(version);
    let core = core.split('-').next().unwrap_or(core);
    let mut parts = core.split('.').map(str::parse::<u64>);
    let major = parts.next()?.ok()?;
    let minor = parts.next().unwrap_or(Ok(0)).ok()?;
    let patch = parts.next().unwrap_or(Ok(0)).ok()?;
    Some((major, minor, patch))
}

/// How many major releases lie from `from` to `to` (0: same major).
fn major_releases(from: u64, to: u64) -> u64 {
    let index = |m| ENGINE_MAJORS.iter().position(|&k| k == m);
    match (index(from), index(to)) {
        (Some(a), Some(b)) => b.saturating_sub(a) as u64,
        _ => to.saturating_sub(from),
    }
}

/// Every finding for this pass: the downgrade check always, the others before the first drain.
pub(super) fn findings(p: &Planner<'_>, rollout: &Rollout<'_>) -> Vec<Finding> {
    let input = p.input;
    let spec = input.spec;
    let pending: Vec<&NodeView> = rollout
        .order
        .iter()
        .copied()
        .filter(|n| rollout.unstarted(n))
        .collect();
    let mut out = downgrades(spec, &pending);
    if pending.is_empty() || under_way(spec, &input.snapshot.nodes) {
        return out;
    }
    out.extend(nodes_not_ready(rollout));
    out.extend(manager_quorum(rollout));
    out.extend(live_restore(input.snapshot, rollout));
    out.extend(workload(input.workload));
    out.extend(major_jumps(spec, &pending));
    out
}

fn downgrades(spec: &EngineUpgradeSpec, pending: &[&NodeView]) -> Vec<Finding> {
    let Some(target) = parse_version(&spec.version) else {
        return vec![];
    };
    if spec.strategy.allow_downgrade {
        return vec![];
    }
    pending
        .iter()
        .filter(|n| parse_version(&n.engine_version).is_some_and(|v| v > target))
        .map(|n| Finding {
            check: Check::Downgrade,
            refuses: true,
            node: Some(n.hostname.clone()),
            message: format!(
                "{} runs {}, newer than the target {}: the rollout would downgrade it; set \
                 spec.strategy.allowDowngrade: true if that is meant, else raise spec.version",
                n.hostname, n.engine_version, spec.version
            ),
        })
        .collect()
}

fn nodes_not_ready(rollout: &Rollout<'_>) -> Vec<Finding> {
    rollout
        .workers()
        .filter(|n| rollout.selected(n) && n.state != State::Ready)
        .map(|n| Finding {
            check: Check::NodeNotReady,
            refuses: true,
            node: Some(n.hostname.clone()),
            message: format!(
                "worker {} is {}: bring its engine back, or leave it out (label {}=REASON, or \
                 spec.nodeSelector), or remove it from the swarm (`docker node rm {}`)",
                n.hostname,
                n.state,
                marks::HOLD,
                n.hostname
            ),
        })
        .collect()
}

/// Quorum is N/2+1 of N managers; the rollout stops one manager at a time.
fn manager_quorum(rollout: &Rollout<'_>) -> Vec<Finding> {
    let managers: Vec<&NodeView> = rollout.managers().collect();
    let total = managers.len();
    let quorum = total / 2 + 1;
    let mut out: Vec<Finding> = managers
        .iter()
        .filter(|m| !m.is_healthy())
        .map(|m| Finding {
            check: Check::ManagerUnreachable,
            refuses: true,
            node: Some(m.hostname.clone()),
            message: format!(
                "manager {} is {}{}: with it away, {} of {total} managers are up for a quorum of \
                 {quorum}, and upgrading another would stop one more; bring it back, or demote \
                 and remove it (`docker node demote {}`, `docker node rm {}`)",
                m.hostname,
                m.state,
                if m.state == State::Ready {
                    " but not reachable by raft"
                } else {
                    ""
                },
                managers.iter().filter(|o| o.is_healthy()).count(),
                m.hostname,
                m.hostname
            ),
        })
        .collect();
    if total > 0 && total.is_multiple_of(2) {
        out.push(Finding {
            check: Check::EvenManagers,
            refuses: true,
            node: None,
            message: even_managers(total, quorum),
        });
    }
    out
}

fn even_managers(total: usize, quorum: usize) -> String {
    // While one manager is upgraded, total-1 are up; the margin is how many more may fail.
    let up = total - 1;
    let during = if up < quorum {
        "while a manager is upgraded the swarm has no quorum: services cannot be changed or \
         rescheduled until it is back"
            .to_string()
    } else if up == quorum {
        "while a manager is upgraded, one more manager lost stops the swarm's control plane \
         (margin 0)"
            .to_string()
    } else {
        format!(
            "while a manager is upgraded, only {} more may be lost",
            up - quorum
        )
    };
    format!(
        "the swarm has {total} managers: quorum is {quorum}, so it tolerates {} manager(s) down, \
         no more than {} would; {during}. Make the count odd (`docker node promote` a worker or \
         `docker node demote` a manager)",
        total - quorum,
        total - 1
    )
}

/// Seen on the lab at 20.10.24 and 26.1.5 alike: an engine of a swarm node started with
/// live-restore exits at once ("Error starting cluster component: --live-restore daemon
/// configuration is incompatible with swarm mode"). A running engine reports it after a
/// daemon.json reload: the upgrade's restart would leave the node down.
fn live_restore(snapshot: &Snapshot, rollout: &Rollout<'_>) -> Vec<Finding> {
    rollout
        .order
        .iter()
        .filter(|n| snapshot.live_restore.contains(&n.id))
        .map(|n| Finding {
            check: Check::LiveRestore,
            refuses: true,
            node: Some(n.hostname.clone()),
            message: format!(
                "{} runs with live-restore on: a swarm node's engine started with it exits at \
                 once (\"--live-restore daemon configuration is incompatible with swarm mode\", \
                 docker/docs#16059), so the upgrade would leave it down; set \"live-restore\": \
                 false in its daemon.json and reload the engine (`kill -HUP` dockerd)",
                n.hostname
            ),
        })
        .collect()
}

fn workload(workload: &Workload) -> Vec<Finding> {
    let mut out = vec![];
    if !workload.unconverged.is_empty() {
        out.push(Finding {
            check: Check::UnconvergedServices,
            refuses: true,
            node: None,
            message: format!(
                "the swarm is not converged before the rollout ({}): the rollout would mix its \
                 own effects with this; fix the services (`docker service ps --no-trunc NAME`), \
                 the rollout starts once each runs what it wants",
                workload.unconverged.join(", ")
            ),
        });
    }
    if let Some(problems) = &workload.recent_rejections {
        out.push(Finding {
            check: Check::RejectedTasks,
            refuses: true,
            node: None,
            message: format!(
                "the swarm already rejects tasks: {problems}; fix their cause first \
                 (`swarm-upgrade diagnose`; the rollout starts once none was rejected for {} \
                 minutes)",
                RECENT_REJECTIONS.as_secs() / 60
            ),
        });
    }
    out
}

fn major_jumps(spec: &EngineUpgradeSpec, pending: &[&NodeView]) -> Vec<Finding> {
    let Some((to, ..)) = parse_version(&spec.version) else {
        return vec![];
    };
    let mut by_major: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
    for n in pending {
        if let Some((from, ..)) = parse_version(&n.engine_version)
            && major_releases(from, to) > 1
        {
            by_major.entry(from).or_default().push(&n.hostname);
        }
    }
    by_major
        .into_iter()
        .map(|(from, mut hosts)| {
            hosts.sort_unstable();
            (from, hosts)
        })
        .map(|(from, hosts)| Finding {
            check: Check::MajorVersionJump,
            refuses: false,
            node: None,
            message: format!(
                "{} at {from}.x: the target {} is {} major releases on; read the release notes of \
                 each one skipped (removed storage drivers, API and default changes) before it \
                 goes on",
                hosts.join(", "),
                spec.version,
                major_releases(from, to)
            ),
        })
        .collect()
}

/// Shows every finding; returns whether a new node may start.
pub(super) fn gate(p: &mut Planner<'_>, findings: &[Finding]) -> bool {
    for f in findings {
        let (kind, message) = if f.refuses {
            let message = format!(
                "pre-flight {}: {}; nothing is drained",
                f.check.name(),
                f.message
            );
            (BlockerKind::Preflight, message)
        } else {
            let message = format!("pre-flight warning {}: {}", f.check.name(), f.message);
            (BlockerKind::PreflightWarning, message)
        };
        p.blockers.push(super::Blocker {
            kind,
            node: f.node.clone(),
            message,
        });
    }
    !findings.iter().any(|f| f.refuses)
}

impl Planner<'_> {
    /// A node that runs a task of a blocking service is not started; says which and why.
    pub(super) fn held_by_blocking_service(&mut self, node: &NodeView) -> bool {
        let Some(services) = self.input.workload.blocking.get(&node.id) else {
            return false;
        };
        let names: Vec<&str> = services.iter().map(String::as_str).collect();
        let labels: Vec<String> = (self.spec().health.blocking_services.labels.iter())
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        self.block(
            BlockerKind::BlockingService,
            Some(node),
            format!(
                "not draining {}: it runs a task of {} (spec.health.blockingServices {}); it \
                 starts once no such task runs there",
                node.hostname,
                names.join(", "),
                labels.join(",")
            ),
        );
        true
    }
}

#[cfg(test)]
mod tests;
