//! What draining a node would do: where swarm's scheduler would put its tasks,
//! and whether that needs load-balancer addresses an overlay network cannot give.
//!
//! The model, made exact:
//!
//! - *Displaced* tasks: every task on a drained node at or before `running`.
//!   Those desired `running` and belonging to a replicated service (or job) get a
//!   replacement; a global service's task just goes away; tasks already desired
//!   past `running` are stopping anyway and get none.
//! - A replacement goes to an *eligible* node: not drained, availability
//!   `active`, status `ready`, every placement constraint of the service true
//!   (`node.id`, `node.hostname`, `node.role`, `node.platform.os|arch`,
//!   `node.labels.X`, `engine.labels.X`, with `==`/`!=`, values compared
//!   case-insensitively as swarmkit does), and `MaxReplicas` not reached.
//!   Among them, like the scheduler's spread: fewest tasks of that service, then
//!   fewest tasks overall, then hostname. Placement preferences are not modelled.
//!   No eligible node: the task is *stranded* ("no suitable node").
//! - Per overlay network: each replacement (placed or stranded) takes a task
//!   address when it is created; each displaced task frees its address once
//!   reported past `running`; each placed replacement on a node without a
//!   load-balancer address on the network needs a new one (`new_lb_attachments`);
//!   each drained node frees its load-balancer address once its tasks stopped
//!   (never on `ingress`, which every node keeps).
//! - Ordering, as swarmkit's allocator does it: replacements wait for task addresses
//!   until the displaced tasks are past `running`; the same allocator pass that frees
//!   a displaced task's address frees the drained node's load-balancer address once
//!   its last task there stopped (`DeallocateTask`, then `reallocateNode`), and the
//!   replacements are allocated, scheduled and given node addresses after that. So the
//!   drain **would exhaust** a network when `needed = new_lb_attachments` exceeds
//!   `available = free_before + freed_task_addresses + freed_lb_attachments -
//!   new_task_addresses`. Checked against the real lab on the exhaustion case of the manual
//!   upgrade procedure: draining a node with 6 of the 24 tasks on the full /27 moved them
//!   without a rejection.
//!   The node then rejects the task with "node is missing network attachments".
//! - `used_after`/`free_after` are the steady state once everything settled.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use bollard::models::TaskState;
use serde::Serialize;

use super::capacity::{NetIndex, NetworkUsage, holds_addresses, task_networks, usage_of};
use crate::observe::{Observation, ObservedNode, ObservedService, ObservedTask};

/// A replacement task placed on another node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskMove {
    pub task_id: String,
    pub service_id: String,
    pub service: String,
    pub from_node: String,
    pub to_node: String,
    pub to_hostname: String,
}

/// A displaced task that gets no replacement (global service, or already stopping).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskGone {
    pub task_id: String,
    pub service_id: String,
    pub service: String,
    pub node: String,
}

/// A replacement no node can take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stranded {
    pub task_id: String,
    pub service_id: String,
    pub service: String,
    pub node: String,
    pub reason: String,
}

/// The drain's effect on one overlay network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkImpact {
    pub network_id: String,
    pub name: String,
    pub capacity: u64,
    pub free_before: u64,
    pub used_before: u64,
    /// Replacements attached to this network (each takes an address when created).
    pub new_task_addresses: u64,
    /// Displaced tasks' addresses, freed once they are reported past `running`.
    pub freed_task_addresses: u64,
    /// Nodes (IDs) that need a new load-balancer address, sorted.
    pub new_lb_attachments: Vec<String>,
    /// Drained nodes (IDs) whose load-balancer address is freed, sorted.
    pub freed_lb_attachments: Vec<String>,
    /// `new_lb_attachments.len()`.
    pub needed: u64,
    /// `free_before + freed_task_addresses + freed_lb_attachments - new_task_addresses`
    /// (not below 0).
    pub available: u64,
    /// Steady state after the drain.
    pub used_after: u64,
    /// `capacity - used_after` (negative: over capacity).
    pub free_after: i64,
}

impl NetworkImpact {
    pub(crate) fn would_exhaust(&self) -> bool {
        self.needed > self.available
    }
}

/// Why a drain must not go ahead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DrainBlocker {
    /// New load-balancer attachments exceed the network's free addresses.
    WouldExhaust {
        network: String,
        needed: u64,
        free: u64,
        remedies: Vec<String>,
    },
    /// Draining leaves tasks of `service` nowhere to run.
    NowhereToRun {
        service: String,
        tasks: usize,
        reason: String,
        remedies: Vec<String>,
    },
}

impl fmt::Display for DrainBlocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DrainBlocker::WouldExhaust {
                network,
                needed,
                free,
                remedies,
            } => write!(
                f,
                "draining would exhaust network {network}: {needed} new load-balancer address(es) \
                 needed, {free} free; remedies: {}",
                remedies.join("; ")
            ),
            DrainBlocker::NowhereToRun {
                service,
                tasks,
                reason,
                remedies,
            } => write!(
                f,
                "draining leaves {tasks} task(s) of {service} nowhere to run: {reason}; remedies: {}",
                remedies.join("; ")
            ),
        }
    }
}

/// The prediction for draining one or more nodes at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DrainPrediction {
    /// The drained nodes (IDs).
    pub nodes: Vec<String>,
    /// Their hostnames, same order.
    pub hostnames: Vec<String>,
    pub moves: Vec<TaskMove>,
    pub gone: Vec<TaskGone>,
    pub stranded: Vec<Stranded>,
    /// Every overlay network, touched or not.
    pub networks: Vec<NetworkImpact>,
    pub blockers: Vec<DrainBlocker>,
}

impl DrainPrediction {
    /// No blocker: the drain can go ahead.
    pub fn is_safe(&self) -> bool {
        self.blockers.is_empty()
    }

    pub fn network(&self, name: &str) -> Option<&NetworkImpact> {
        self.networks.iter().find(|n| n.name == name)
    }
}

impl fmt::Display for DrainPrediction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "drain {}: {} task(s) move, {} go away, {} stranded",
            self.hostnames.join(", "),
            self.moves.len(),
            self.gone.len(),
            self.stranded.len()
        )?;
        for n in &self.networks {
            if n.needed == 0
                && n.new_task_addresses == 0
                && n.freed_task_addresses == 0
                && n.freed_lb_attachments.is_empty()
            {
                continue;
            }
            write!(
                f,
                "\n  network {}: {} free, {} new load-balancer address(es) needed, {} available \
                 while tasks move, {} free after",
                n.name, n.free_before, n.needed, n.available, n.free_after
            )?;
        }
        for b in &self.blockers {
            write!(f, "\n  BLOCKED: {b}")?;
        }
        Ok(())
    }
}

/// Evaluates one placement constraint (`key==value` or `key!=value`) on a node,
/// as swarmkit's constraint package does. An unknown key never matches.
pub fn constraint_matches(constraint: &str, node: &ObservedNode) -> bool {
    let (key, value, eq) = if let Some((k, v)) = constraint.split_once("==") {
        (k, v, true)
    } else if let Some((k, v)) = constraint.split_once("!=") {
        (k, v, false)
    } else {
        return false;
    };
    let key = key.trim();
    let value = value.trim();
    let desc = &node.description;
    // A field the engine did not report never matches (a label is a different case).
    let field = |v: &'_ str| Some(v.to_string()).filter(|v| !v.is_empty());
    let actual: Option<String> = match key.to_ascii_lowercase().as_str() {
        "node.id" => field(&node.id),
        "node.hostname" => field(&desc.hostname),
        "node.role" => field(&node.spec.role),
        "node.platform.os" => field(&desc.platform.os),
        "node.platform.arch" => field(&desc.platform.architecture),
        _ => {
            let labels = if let Some(label) = key.strip_prefix("node.labels.") {
                node.spec.labels.get(label)
            } else if let Some(label) = key.strip_prefix("engine.labels.") {
                desc.engine.labels.get(label)
            } else {
                return false;
            };
            match labels {
                Some(v) => Some(v.clone()),
                None => return !eq,
            }
        }
    };
    let matched = actual.is_some_and(|a| a.eq_ignore_ascii_case(value));
    matched == eq
}

/// Counted by the scheduler's spread: desired and current state at or before `running`.
fn counts_for_spread(t: &ObservedTask) -> bool {
    t.desired_state <= TaskState::RUNNING && t.state() <= TaskState::RUNNING && t.node().is_some()
}

/// Predicts draining `node_id` (see the module docs for the model).
pub fn predict_drain(node_id: &str, observation: &Observation) -> DrainPrediction {
    predict_drain_nodes(&[node_id], observation)
}

/// Predicts draining every node of `node_ids` at once.
pub fn predict_drain_nodes(node_ids: &[&str], observation: &Observation) -> DrainPrediction {
    let o = observation;
    let idx = NetIndex::of(o);
    let drained: HashSet<&str> = node_ids.iter().copied().collect();
    let usage: Vec<NetworkUsage> = usage_of(&idx, o);
    let placements = Placements::of(o, &idx, &drained, &displaced_tasks(node_ids, o));
    let net_pos = usage_positions(&idx, &usage);
    let deltas = AddressDeltas::of(&usage, &net_pos, &placements);
    let mut impacts = Vec::new();
    let mut blockers = Vec::new();
    for (p, u) in usage.iter().enumerate() {
        let impact = network_impact(u, p, &deltas, &drained);
        if impact.would_exhaust() {
            blockers.push(exhaust_blocker(
                &impact,
                p,
                &placements,
                &net_pos,
                o,
                drained.len(),
            ));
        }
        impacts.push(impact);
    }
    blockers.extend(nowhere_to_run_blockers(&placements.stranded));
    DrainPrediction {
        nodes: node_ids.iter().map(|s| s.to_string()).collect(),
        hostnames: node_ids
            .iter()
            .map(|id| o.hostname(id).to_string())
            .collect(),
        moves: placements.moves,
        gone: placements.gone,
        stranded: placements.stranded,
        networks: impacts,
        blockers,
    }
}

/// Tasks on the drained nodes at or before `running`, in a stable order.
fn displaced_tasks<'a>(node_ids: &[&str], o: &'a Observation) -> Vec<&'a ObservedTask> {
    let mut displaced: Vec<&ObservedTask> = node_ids
        .iter()
        .flat_map(|n| o.tasks_on(n))
        .filter(|t| t.state() <= TaskState::RUNNING)
        .collect();
    displaced.sort_by(|a, b| (&a.service_id, a.slot, &a.id).cmp(&(&b.service_id, b.slot, &b.id)));
    displaced.dedup_by(|a, b| a.id == b.id);
    displaced
}

/// The scheduler's spread counts: tasks per (service, node) and per node, keyed by the
/// observation's own IDs (a prediction looks them up once per task and candidate node).
struct Spread<'a> {
    per_service: HashMap<(&'a str, &'a str), u64>,
    per_node: HashMap<&'a str, u64>,
}

impl<'a> Spread<'a> {
    fn of(o: &'a Observation) -> Self {
        let mut spread = Spread {
            per_service: HashMap::new(),
            per_node: HashMap::new(),
        };
        for t in o.tasks().filter(|t| counts_for_spread(t)) {
            spread.add(&t.service_id, &t.node_id);
        }
        spread
    }

    fn add(&mut self, service_id: &'a str, node_id: &'a str) {
        *self.per_service.entry((service_id, node_id)).or_default() += 1;
        *self.per_node.entry(node_id).or_default() += 1;
    }

    fn of_service(&self, service_id: &str, node_id: &str) -> u64 {
        // (&str, &str) keys borrow for the lookup only
        self.per_service
            .get(&(service_id, node_id))
            .copied()
            .unwrap_or(0)
    }

    /// The eligible candidate with the fewest tasks of the service, then the fewest tasks
    /// overall; ties go to the first candidate (hostname order).
    fn best<'n>(
        &self,
        service_id: &str,
        svc: &ObservedService,
        candidates: &[&'n ObservedNode],
    ) -> Option<&'n ObservedNode> {
        let cons = svc.constraints();
        let max = svc.max_replicas();
        candidates
            .iter()
            .filter(|n| cons.iter().all(|c| constraint_matches(c, n)))
            .filter(|n| max.is_none_or(|m| self.of_service(service_id, &n.id) < m))
            .min_by_key(|n| {
                (
                    self.of_service(service_id, &n.id),
                    self.per_node.get(n.id.as_str()).copied().unwrap_or(0),
                )
            })
            .copied()
    }
}

/// Where the displaced tasks go, and the network addresses they take and free.
#[derive(Default)]
struct Placements {
    moves: Vec<TaskMove>,
    gone: Vec<TaskGone>,
    stranded: Vec<Stranded>,
    /// Per replacement (placed or stranded): its networks (indexes into the [`NetIndex`])
    /// and its target node.
    replacements: Vec<(Vec<usize>, Option<String>)>,
    /// Per displaced task holding addresses: its networks.
    freed_tasks: Vec<Vec<usize>>,
}

impl Placements {
    fn of<'a>(
        o: &'a Observation,
        idx: &NetIndex,
        drained: &HashSet<&str>,
        displaced: &[&'a ObservedTask],
    ) -> Self {
        let mut candidates: Vec<&ObservedNode> = o
            .nodes()
            .filter(|n| !drained.contains(n.id.as_str()) && n.schedulable())
            .collect();
        candidates.sort_by(|a, b| a.hostname().cmp(b.hostname()).then(a.id.cmp(&b.id)));
        let mut spread = Spread::of(o);
        let mut out = Placements::default();
        for t in displaced {
            out.place(t, o, idx, drained, &candidates, &mut spread);
        }
        out
    }

    /// One displaced task: gone (no replacement wanted), moved, or stranded.
    fn place<'a>(
        &mut self,
        t: &'a ObservedTask,
        o: &'a Observation,
        idx: &NetIndex,
        drained: &HashSet<&str>,
        candidates: &[&'a ObservedNode],
        spread: &mut Spread<'a>,
    ) {
        let task_id = t.id.clone();
        let service_id = t.service_id.clone();
        let from = t.node_id.clone();
        let svc = o.service(&service_id);
        let name = o.service_name(&service_id).to_string();
        let nets = task_networks(t, svc, idx);
        if holds_addresses(t) {
            self.freed_tasks.push(nets.clone());
        }
        let wants_replacement =
            t.desired_state <= TaskState::RUNNING && svc.is_some_and(|s| !s.is_global());
        let Some(svc) = svc.filter(|_| wants_replacement) else {
            self.gone.push(TaskGone {
                task_id,
                service_id,
                service: name,
                node: from,
            });
            return;
        };
        match spread.best(&service_id, svc, candidates) {
            Some(n) => {
                spread.add(&t.service_id, &n.id);
                let to = n.id.clone();
                self.moves.push(TaskMove {
                    task_id,
                    service_id,
                    service: name,
                    from_node: from,
                    to_hostname: n.hostname().to_string(),
                    to_node: to.clone(),
                });
                self.replacements.push((nets, Some(to)));
            }
            None => {
                let reason = why_nowhere(o, drained, svc.constraints(), svc.max_replicas());
                self.stranded.push(Stranded {
                    task_id,
                    service_id,
                    service: name,
                    node: from,
                    reason,
                });
                self.replacements.push((nets, None));
            }
        }
    }
}

/// For each network of the [`NetIndex`], its position in `usage` (none: not an overlay
/// network the usage counts).
fn usage_positions(idx: &NetIndex, usage: &[NetworkUsage]) -> Vec<Option<usize>> {
    let pos_of: HashMap<&str, usize> = usage
        .iter()
        .enumerate()
        .map(|(i, u)| (u.id.as_str(), i))
        .collect();
    idx.nets
        .iter()
        .map(|n| pos_of.get(n.id.as_str()).copied())
        .collect()
}

/// Per network (in `usage` order): task addresses the replacements take, those the
/// displaced tasks free, and the nodes that need a new load-balancer address.
struct AddressDeltas {
    new_tasks: Vec<u64>,
    freed: Vec<u64>,
    new_lb: Vec<BTreeSet<String>>,
}

impl AddressDeltas {
    fn of(usage: &[NetworkUsage], net_pos: &[Option<usize>], placements: &Placements) -> Self {
        let mut d = AddressDeltas {
            new_tasks: vec![0u64; usage.len()],
            freed: vec![0u64; usage.len()],
            new_lb: vec![BTreeSet::new(); usage.len()],
        };
        for nets in &placements.freed_tasks {
            for p in nets.iter().filter_map(|&i| net_pos[i]) {
                d.freed[p] += 1;
            }
        }
        for (nets, to) in &placements.replacements {
            for p in nets.iter().filter_map(|&i| net_pos[i]) {
                d.new_tasks[p] += 1;
                if let Some(to) = to
                    && !usage[p].lb_nodes.iter().any(|n| n == to)
                {
                    d.new_lb[p].insert(to.clone());
                }
            }
        }
        d
    }
}

/// The drain's effect on the network at `usage` position `p`. Every task on a drained node
/// that is at or before running is displaced, so the drained nodes' load-balancer
/// addresses go (never on `ingress`, which every node keeps).
fn network_impact(
    u: &NetworkUsage,
    p: usize,
    deltas: &AddressDeltas,
    drained: &HashSet<&str>,
) -> NetworkImpact {
    let (new_tasks, freed) = (deltas.new_tasks[p], deltas.freed[p]);
    let freed_lb: Vec<String> = if u.ingress {
        Vec::new()
    } else {
        u.lb_nodes
            .iter()
            .filter(|n| drained.contains(n.as_str()))
            .cloned()
            .collect()
    };
    let needed = deltas.new_lb[p].len() as u64;
    // The drained node's load-balancer address is freed in the same allocator pass as its
    // tasks' addresses (swarmkit `doTaskAlloc`: `DeallocateTask` then `reallocateNode`),
    // before the replacements are allocated at the next commit: it counts as available.
    let available = (u.free + freed + freed_lb.len() as u64).saturating_sub(new_tasks);
    let used_before = u.used();
    let used_after =
        (used_before + new_tasks + needed).saturating_sub(freed + freed_lb.len() as u64);
    NetworkImpact {
        network_id: u.id.clone(),
        name: u.name.clone(),
        capacity: u.capacity,
        free_before: u.free,
        used_before,
        new_task_addresses: new_tasks,
        freed_task_addresses: freed,
        new_lb_attachments: deltas.new_lb[p].iter().cloned().collect(),
        freed_lb_attachments: freed_lb,
        needed,
        available,
        used_after,
        free_after: u.capacity as i64 - used_after as i64,
    }
}

/// The blocker for a network the drain would exhaust, naming the services that move onto it.
fn exhaust_blocker(
    impact: &NetworkImpact,
    p: usize,
    placements: &Placements,
    net_pos: &[Option<usize>],
    o: &Observation,
    drained: usize,
) -> DrainBlocker {
    let placed = placements
        .replacements
        .iter()
        .filter(|(_, to)| to.is_some());
    let services: BTreeSet<&str> = placements
        .moves
        .iter()
        .zip(placed)
        .filter(|(_, (nets, _))| nets.iter().any(|&i| net_pos[i] == Some(p)))
        .map(|(m, _)| m.service.as_str())
        .collect();
    let hosts: Vec<&str> = impact
        .new_lb_attachments
        .iter()
        .map(|id| o.hostname(id))
        .collect();
    DrainBlocker::WouldExhaust {
        network: impact.name.clone(),
        needed: impact.needed,
        free: impact.available,
        remedies: exhaust_remedies(impact, &services, &hosts, drained),
    }
}

/// One blocker per service with stranded tasks (the first task's reason speaks for all).
fn nowhere_to_run_blockers(stranded: &[Stranded]) -> Vec<DrainBlocker> {
    let mut by_service: BTreeMap<&str, (usize, &str)> = BTreeMap::new();
    for s in stranded {
        by_service.entry(&s.service).or_insert((0, &s.reason)).0 += 1;
    }
    by_service
        .into_iter()
        .map(|(service, (n, reason))| DrainBlocker::NowhereToRun {
            service: service.to_string(),
            tasks: n,
            reason: reason.to_string(),
            remedies: vec![
                "reactivate or add a node that satisfies the service's placement constraints"
                    .to_string(),
                "relax the service's placement constraints or scale it down while the node is drained"
                    .to_string(),
                "in a cluster without workers, do not drain the managers (upgrade without draining, accepting the interruption)"
                    .to_string(),
            ],
        })
        .collect()
}

fn why_nowhere(
    o: &Observation,
    drained: &HashSet<&str>,
    cons: &[String],
    max: Option<u64>,
) -> String {
    let others: Vec<&ObservedNode> = o
        .nodes()
        .filter(|n| !drained.contains(n.id.as_str()))
        .collect();
    if others.is_empty() {
        return format!(
            "every node ({}) would be drained",
            o.nodes()
                .map(ObservedNode::hostname)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let unavailable = others.iter().filter(|n| !n.schedulable()).count();
    let unmatched = others
        .iter()
        .filter(|n| n.schedulable() && !cons.iter().all(|c| constraint_matches(c, n)))
        .count();
    let mut parts = vec![format!("{} node(s) drained", drained.len())];
    if unavailable > 0 {
        parts.push(format!("{unavailable} other node(s) not active and ready"));
    }
    if unmatched > 0 {
        parts.push(format!(
            "{unmatched} node(s) fail the constraints {}",
            cons.join(" && ")
        ));
    }
    let full = others.len() - unavailable - unmatched;
    if full > 0
        && let Some(m) = max
    {
        parts.push(format!("{full} node(s) already run max_replicas={m}"));
    }
    format!("no suitable node ({})", parts.join(", "))
}

fn exhaust_remedies(
    impact: &NetworkImpact,
    services: &BTreeSet<&str>,
    hosts: &[&str],
    drained: usize,
) -> Vec<String> {
    let short = impact.needed - impact.available;
    let mut out = vec![format!(
        "recreate network {} with a bigger subnet (it has {} addresses; {} more needed now)",
        impact.name, impact.capacity, short
    )];
    if !services.is_empty() {
        out.push(format!(
            "run fewer replicas of {} ({} fewer free {} addresses)",
            services.iter().copied().collect::<Vec<_>>().join(", "),
            short,
            short
        ));
        out.push(format!(
            "keep {} off {} (a placement constraint), so the tasks move to nodes that already have an address on {}",
            services.iter().copied().collect::<Vec<_>>().join(", "),
            hosts.join(", "),
            impact.name
        ));
    }
    if drained > 1 {
        out.push("drain fewer nodes at once (maxUnavailableWorkers: 1)".to_string());
    } else {
        out.push(
            "keep maxUnavailableWorkers: 1 and free addresses first (remove or scale down another service on the network)"
                .to_string(),
        );
    }
    out
}
