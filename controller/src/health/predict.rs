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
//!   new_task_addresses`. Checked against the real lab on the seed's case: draining a
//!   node with 6 of the 24 tasks on the full /27 moved them without a rejection.
//!   The node then rejects the task with "node is missing network attachments".
//! - `used_after`/`free_after` are the steady state once everything settled.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use bollard::models::TaskState;
use serde::Serialize;

use super::capacity::{NetIndex, NetworkUsage, holds_addresses, task_networks, usage_of};
use crate::observe::{Observation, ObservedNode, ObservedTask};

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
    pub fn would_exhaust(&self) -> bool {
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
    let idx = NetIndex::of(observation);
    let o = observation;
    let drained: HashSet<&str> = node_ids.iter().copied().collect();
    let usage: Vec<NetworkUsage> = usage_of(&idx, o);

    // Spread counts: per (service, node) and per node.
    let mut svc_count: HashMap<(String, String), u64> = HashMap::new();
    let mut node_count: HashMap<String, u64> = HashMap::new();
    for t in o.tasks().filter(|t| counts_for_spread(t)) {
        let node = t.node_id.clone();
        *svc_count
            .entry((t.service_id.clone(), node.clone()))
            .or_default() += 1;
        *node_count.entry(node).or_default() += 1;
    }

    // Displaced tasks, in a stable order.
    let mut displaced: Vec<&ObservedTask> = node_ids
        .iter()
        .flat_map(|n| o.tasks_on(n))
        .filter(|t| t.state() <= TaskState::RUNNING)
        .collect();
    displaced.sort_by(|a, b| (&a.service_id, a.slot, &a.id).cmp(&(&b.service_id, b.slot, &b.id)));
    displaced.dedup_by(|a, b| a.id == b.id);

    let mut candidates: Vec<&ObservedNode> = o
        .nodes()
        .filter(|n| !drained.contains(n.id.as_str()) && n.schedulable())
        .collect();
    candidates.sort_by(|a, b| a.hostname().cmp(b.hostname()).then(a.id.cmp(&b.id)));

    let mut moves = Vec::new();
    let mut gone = Vec::new();
    let mut stranded = Vec::new();
    // (task, network indexes, target node) for the network accounting.
    let mut replacements: Vec<(Vec<usize>, Option<String>)> = Vec::new();
    let mut freed_tasks: Vec<Vec<usize>> = Vec::new();

    for t in &displaced {
        let task_id = t.id.clone();
        let service_id = t.service_id.clone();
        let from = t.node_id.clone();
        let svc = o.service(&service_id);
        let name = o.service_name(&service_id).to_string();
        let nets = task_networks(t, svc, &idx);
        if holds_addresses(t) {
            freed_tasks.push(nets.clone());
        }
        let wants_replacement =
            t.desired_state <= TaskState::RUNNING && svc.is_some_and(|s| !s.is_global());
        let Some(svc) = svc.filter(|_| wants_replacement) else {
            gone.push(TaskGone {
                task_id,
                service_id,
                service: name,
                node: from,
            });
            continue;
        };
        let cons = svc.constraints();
        let max = svc.max_replicas();
        let count_of = |n: &str, c: &HashMap<(String, String), u64>| {
            c.get(&(service_id.clone(), n.to_string()))
                .copied()
                .unwrap_or(0)
        };
        let best = candidates
            .iter()
            .filter(|n| cons.iter().all(|c| constraint_matches(c, n)))
            .filter(|n| max.is_none_or(|m| count_of(&n.id, &svc_count) < m))
            .min_by_key(|n| {
                (
                    count_of(&n.id, &svc_count),
                    node_count.get(&n.id).copied().unwrap_or(0),
                )
            })
            .copied();
        match best {
            Some(n) => {
                let to = n.id.clone();
                *svc_count
                    .entry((service_id.clone(), to.clone()))
                    .or_default() += 1;
                *node_count.entry(to.clone()).or_default() += 1;
                moves.push(TaskMove {
                    task_id,
                    service_id,
                    service: name,
                    from_node: from,
                    to_hostname: n.hostname().to_string(),
                    to_node: to.clone(),
                });
                replacements.push((task_networks(t, Some(svc), &idx), Some(to)));
            }
            None => {
                let reason = why_nowhere(o, &drained, cons, max);
                stranded.push(Stranded {
                    task_id,
                    service_id,
                    service: name,
                    node: from,
                    reason,
                });
                replacements.push((task_networks(t, Some(svc), &idx), None));
            }
        }
    }

    // Network accounting.
    let pos_of: HashMap<&str, usize> = usage
        .iter()
        .enumerate()
        .map(|(i, u)| (u.id.as_str(), i))
        .collect();
    let net_pos = |i: usize| pos_of.get(idx.nets[i].id.as_str()).copied();
    let mut new_tasks = vec![0u64; usage.len()];
    let mut freed = vec![0u64; usage.len()];
    let mut new_lb: Vec<BTreeSet<String>> = vec![BTreeSet::new(); usage.len()];
    for nets in &freed_tasks {
        for p in nets.iter().filter_map(|&i| net_pos(i)) {
            freed[p] += 1;
        }
    }
    for (nets, to) in &replacements {
        for p in nets.iter().filter_map(|&i| net_pos(i)) {
            new_tasks[p] += 1;
            if let Some(to) = to
                && !usage[p].lb_nodes.iter().any(|n| n == to)
            {
                new_lb[p].insert(to.clone());
            }
        }
    }
    // Tasks on drained nodes that stay at or before running after the drain:
    // none (every such task is displaced), so their load-balancer addresses go.
    let mut impacts = Vec::new();
    let mut blockers = Vec::new();
    for (p, u) in usage.iter().enumerate() {
        let freed_lb: Vec<String> = if u.ingress {
            Vec::new()
        } else {
            u.lb_nodes
                .iter()
                .filter(|n| drained.contains(n.as_str()))
                .cloned()
                .collect()
        };
        let needed = new_lb[p].len() as u64;
        // The drained node's load-balancer address is freed in the same allocator pass as its
        // tasks' addresses (swarmkit `doTaskAlloc`: `DeallocateTask` then `reallocateNode`),
        // before the replacements are allocated at the next commit: it counts as available.
        let available = (u.free + freed[p] + freed_lb.len() as u64).saturating_sub(new_tasks[p]);
        let used_before = u.used();
        let used_after =
            (used_before + new_tasks[p] + needed).saturating_sub(freed[p] + freed_lb.len() as u64);
        let impact = NetworkImpact {
            network_id: u.id.clone(),
            name: u.name.clone(),
            capacity: u.capacity,
            free_before: u.free,
            used_before,
            new_task_addresses: new_tasks[p],
            freed_task_addresses: freed[p],
            new_lb_attachments: new_lb[p].iter().cloned().collect(),
            freed_lb_attachments: freed_lb,
            needed,
            available,
            used_after,
            free_after: u.capacity as i64 - used_after as i64,
        };
        if impact.would_exhaust() {
            let services: BTreeSet<&str> = moves
                .iter()
                .zip(replacements.iter().filter(|(_, to)| to.is_some()))
                .filter(|(_, (nets, _))| nets.iter().any(|&i| net_pos(i) == Some(p)))
                .map(|(m, _)| m.service.as_str())
                .collect();
            let hosts: Vec<&str> = impact
                .new_lb_attachments
                .iter()
                .map(|id| o.hostname(id))
                .collect();
            blockers.push(DrainBlocker::WouldExhaust {
                network: u.name.clone(),
                needed,
                free: available,
                remedies: exhaust_remedies(&impact, &services, &hosts, drained.len()),
            });
        }
        impacts.push(impact);
    }

    let mut by_service: BTreeMap<&str, (usize, &str)> = BTreeMap::new();
    for s in &stranded {
        by_service.entry(&s.service).or_insert((0, &s.reason)).0 += 1;
    }
    for (service, (n, reason)) in by_service {
        blockers.push(DrainBlocker::NowhereToRun {
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
        });
    }

    DrainPrediction {
        nodes: node_ids.iter().map(|s| s.to_string()).collect(),
        hostnames: node_ids
            .iter()
            .map(|id| o.hostname(id).to_string())
            .collect(),
        moves,
        gone,
        stranded,
        networks: impacts,
        blockers,
    }
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
