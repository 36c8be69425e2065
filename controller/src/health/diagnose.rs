//! `swarm-upgrade diagnose`: what went wrong in the cluster, like the manual upgrade procedure's
//! `docker service ps` walkthroughs, with every error classified by the
//! signature table, plus networks near capacity and restart policies that
//! rejections can use up.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use bollard::models::TaskState;
use serde::Serialize;

use super::capacity::{NetworkUsage, network_usage};
use super::signatures::{Reason, classify};
use crate::observe::{Observation, ObservedService, ObservedTask};

/// One rejected or failed task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiagnosedTask {
    pub task_id: String,
    /// `service.slot` or `service.node-id`, as `docker service ps` names it.
    pub name: String,
    pub node: String,
    pub desired_state: String,
    pub state: String,
    pub err: String,
    pub reason: Reason,
    pub timestamp: Option<String>,
}

/// One reason seen in a service, with its explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReasonSummary {
    pub reason: Reason,
    pub tasks: usize,
    pub nodes: Vec<String>,
    pub cause: &'static str,
    pub remedy: &'static str,
}

/// A service with rejected or failed tasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceDiagnosis {
    pub service_id: String,
    pub name: String,
    /// `replicated` or `global`.
    pub mode: &'static str,
    /// Tasks desired running (replicas, or one per node with a task for global).
    pub desired: u64,
    /// Tasks running now.
    pub running: u64,
    pub tasks: Vec<DiagnosedTask>,
    pub reasons: Vec<ReasonSummary>,
}

/// A network with few free addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkNote {
    pub usage: NetworkUsage,
    /// Why it is listed.
    pub message: String,
}

/// A service whose `RestartPolicy.MaxAttempts` rejections can use up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestartRisk {
    pub service: String,
    pub max_attempts: u64,
    /// The most rejected/failed attempts of any one slot (or node, for global).
    pub worst_slot_attempts: u64,
    /// Some slot has used every attempt: it stays short of its task until the
    /// service is updated (`docker service update --force`).
    pub used_up: bool,
    pub message: String,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiagnoseReport {
    pub services: Vec<ServiceDiagnosis>,
    pub networks_near_capacity: Vec<NetworkNote>,
    pub restart_risks: Vec<RestartRisk>,
    /// Every overlay network's usage, for `--json` users.
    pub networks: Vec<NetworkUsage>,
}

impl DiagnoseReport {
    /// Nothing to report.
    pub fn is_clean(&self) -> bool {
        self.services.is_empty()
            && self.networks_near_capacity.is_empty()
            && self.restart_risks.is_empty()
    }
}

fn state_text(s: Option<TaskState>) -> String {
    s.map(|s| s.to_string()).unwrap_or_default()
}

fn title(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// A network is near capacity when it has fewer free addresses than nodes in the
/// cluster (one more node with a task there takes one) or less than 10% free.
pub(crate) fn near_capacity(u: &NetworkUsage, nodes: usize) -> bool {
    u.capacity > 0 && (u.free <= nodes as u64 || u.free * 10 < u.capacity)
}

/// Builds the report. Pure: give it the cluster's listings.
pub fn diagnose(observation: &Observation) -> DiagnoseReport {
    let o = observation;
    let mut services = Vec::new();
    let mut restart_risks = Vec::new();
    let mut sorted: Vec<&ObservedService> = o.services().collect();
    sorted.sort_by_key(|s| &s.spec.name);
    for s in sorted {
        let view = ServiceView::of(o, s);
        restart_risks.extend(view.restart_risk());
        services.extend(view.diagnosis(o));
    }
    let usage = network_usage(o);
    let networks_near_capacity = near_capacity_notes(&usage, o.nodes().count());
    DiagnoseReport {
        services,
        networks_near_capacity,
        restart_risks,
        networks: usage,
    }
}

/// One service and its tasks, as the report reads them.
struct ServiceView<'a> {
    service: &'a ObservedService,
    name: String,
    global: bool,
    own: Vec<&'a ObservedTask>,
    running: u64,
    /// Replicas, or (global) the tasks desired running.
    desired: u64,
}

impl<'a> ServiceView<'a> {
    fn of(o: &'a Observation, s: &'a ObservedService) -> Self {
        let global = s.is_global();
        let own: Vec<&ObservedTask> = o.tasks_of(&s.id).collect();
        let running = own.iter().filter(|t| t.is_running()).count() as u64;
        let desired = if global {
            own.iter()
                .filter(|t| t.desired_state == TaskState::RUNNING)
                .count() as u64
        } else {
            s.spec
                .mode
                .as_ref()
                .and_then(|m| m.replicated.as_ref())
                .and_then(|r| r.replicas)
                .unwrap_or(0)
                .max(0) as u64
        };
        ServiceView {
            service: s,
            name: s.name().to_string(),
            global,
            own,
            running,
            desired,
        }
    }

    /// The slot a task fills: its node for a global service, its slot number otherwise.
    fn slot_key(&self, t: &ObservedTask) -> String {
        if self.global {
            t.node_id.clone()
        } else {
            t.slot.map(|n| n.to_string()).unwrap_or_default()
        }
    }

    /// Rejected and failed tasks, by name, newest first.
    fn problem_rows(&self, o: &Observation) -> Vec<DiagnosedTask> {
        let mut rows: Vec<DiagnosedTask> = self
            .own
            .iter()
            .filter(|t| t.is_problem())
            .map(|t| DiagnosedTask {
                task_id: t.id.clone(),
                name: format!("{}.{}", self.name, self.slot_key(t)),
                node: o.hostname(&t.node_id).to_string(),
                desired_state: state_text(Some(t.desired_state)),
                state: state_text(Some(t.state())),
                reason: classify(&t.status.err),
                err: t.status.err.clone(),
                timestamp: t.status.timestamp.clone(),
            })
            .collect();
        rows.sort_by(|a, b| {
            (&a.name, &b.timestamp)
                .cmp(&(&b.name, &a.timestamp))
                .then(a.task_id.cmp(&b.task_id))
        });
        rows
    }

    /// Restart policy: rejected and failed tasks are attempts of their slot.
    fn restart_risk(&self) -> Option<RestartRisk> {
        let max = self
            .service
            .spec
            .task_template
            .restart_policy
            .as_ref()
            .and_then(|r| r.max_attempts)
            .filter(|&m| m > 0)
            .map(|m| m as u64)?;
        let mut per_slot: HashMap<String, u64> = HashMap::new();
        for t in self.own.iter().filter(|t| t.is_problem()) {
            *per_slot.entry(self.slot_key(t)).or_default() += 1;
        }
        let worst = per_slot.values().copied().max().unwrap_or(0);
        let used_up = worst >= max;
        let (name, running, desired) = (&self.name, self.running, self.desired);
        let message = if used_up {
            format!(
                "{name}: a slot used all {max} restart attempts on rejections/failures; it stays \
                 short of a task even after the cause is gone (running {running}/{desired}): \
                 `docker service update --force {name}`, and raise or remove restart_policy.max_attempts"
            )
        } else {
            format!(
                "{name}: restart_policy.max_attempts={max} ({worst} used by the worst slot); \
                 rejected tasks count as attempts, so an address exhaustion or an engine \
                 restart during the upgrade can use them up and leave the service short of replicas"
            )
        };
        Some(RestartRisk {
            service: name.clone(),
            max_attempts: max,
            worst_slot_attempts: worst,
            used_up,
            message,
        })
    }

    /// The service's entry in the report; none without rejected or failed tasks.
    fn diagnosis(self, o: &Observation) -> Option<ServiceDiagnosis> {
        let rows = self.problem_rows(o);
        if rows.is_empty() {
            return None;
        }
        Some(ServiceDiagnosis {
            service_id: self.service.id.clone(),
            mode: if self.global { "global" } else { "replicated" },
            desired: self.desired,
            running: self.running,
            reasons: reason_summaries(&rows),
            tasks: rows,
            name: self.name,
        })
    }
}

/// The reasons among a service's problem tasks, each with its count and nodes (sorted).
fn reason_summaries(rows: &[DiagnosedTask]) -> Vec<ReasonSummary> {
    let mut by_reason: BTreeMap<Reason, (usize, Vec<String>)> = BTreeMap::new();
    for r in rows {
        let e = by_reason.entry(r.reason).or_default();
        e.0 += 1;
        if !e.1.contains(&r.node) {
            e.1.push(r.node.clone());
        }
    }
    by_reason
        .into_iter()
        .map(|(reason, (n, mut nodes))| {
            nodes.sort();
            ReasonSummary {
                reason,
                tasks: n,
                nodes,
                cause: reason.cause(),
                remedy: reason.remedy(),
            }
        })
        .collect()
}

fn near_capacity_notes(usage: &[NetworkUsage], nodes: usize) -> Vec<NetworkNote> {
    usage
        .iter()
        .filter(|u| near_capacity(u, nodes))
        .map(|u| NetworkNote {
            message: format!(
                "{} free of {}: a node that gets its first task on {} takes one more, and {} \
                 more would overflow it (tasks rejected with \"node is missing network attachments\")",
                u.free,
                u.capacity,
                u.name,
                u.free + 1
            ),
            usage: u.clone(),
        })
        .collect()
}

fn trunc(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

impl fmt::Display for DiagnoseReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_clean() {
            return writeln!(
                f,
                "No rejected or failed tasks, no network near capacity, no restart policy at risk."
            );
        }
        for s in &self.services {
            write_service(f, s)?;
        }
        if !self.networks_near_capacity.is_empty() {
            write_networks(f, &self.networks_near_capacity)?;
        }
        if !self.restart_risks.is_empty() {
            writeln!(f, "RESTART POLICIES REJECTIONS CAN USE UP")?;
            for r in &self.restart_risks {
                writeln!(f, "  {}", r.message)?;
            }
        }
        Ok(())
    }
}

/// A service's problem tasks as `docker service ps` lists them, then its reasons.
fn write_service(f: &mut fmt::Formatter<'_>, s: &ServiceDiagnosis) -> fmt::Result {
    writeln!(
        f,
        "SERVICE {} ({} {}/{})",
        s.name, s.mode, s.running, s.desired
    )?;
    let width =
        |len: fn(&DiagnosedTask) -> usize| s.tasks.iter().map(len).max().unwrap_or(4).max(4);
    let w_name = width(|t| t.name.len());
    let w_node = width(|t| t.node.len());
    writeln!(
        f,
        "{:<14}{:<w_name$}  {:<w_node$}  {:<14}{:<14}ERROR",
        "ID", "NAME", "NODE", "DESIRED STATE", "CURRENT STATE"
    )?;
    for t in &s.tasks {
        writeln!(
            f,
            "{:<14}{:<w_name$}  {:<w_node$}  {:<14}{:<14}\"{}\"",
            trunc(&t.task_id, 12),
            t.name,
            t.node,
            title(&t.desired_state),
            title(&t.state),
            t.err
        )?;
    }
    for r in &s.reasons {
        writeln!(
            f,
            "  => {} ({} task(s) on {})",
            r.reason,
            r.tasks,
            r.nodes.join(", ")
        )?;
        writeln!(f, "     cause:  {}", r.cause)?;
        writeln!(f, "     remedy: {}", r.remedy)?;
    }
    writeln!(f)
}

fn write_networks(f: &mut fmt::Formatter<'_>, notes: &[NetworkNote]) -> fmt::Result {
    writeln!(f, "NETWORKS NEAR CAPACITY")?;
    for n in notes {
        let u = &n.usage;
        writeln!(
            f,
            "  {} {}: {} of {} addresses free ({} task, {} VIP, {} node load-balancer){}",
            u.name,
            u.subnet,
            u.free,
            u.capacity,
            u.used_by_tasks,
            u.vips,
            u.lb_attachments,
            if u.allocator.is_some() {
                " [allocator's count]"
            } else {
                ""
            }
        )?;
        writeln!(f, "     {}", n.message)?;
    }
    writeln!(f)
}
