//! The orchestrators: replicated (one task per slot) and global (one per eligible node), the
//! restart supervisor, the task reaper (history retention) and each service's task counts.

use std::collections::{BTreeMap, HashMap};

use crate::clock::Nanos;

use super::model::*;
use super::store::*;

/// Orchestration.TaskHistoryRetentionLimit
const TASK_HISTORY: usize = 5;

/// What one orchestration pass decides, carried out in this order once it is done.
#[derive(Default)]
struct Orders {
    /// Tasks to set desired `shutdown`.
    shutdown: Vec<String>,
    /// New tasks: (service, slot for replicated, node for global).
    create: Vec<(String, Option<u64>, Option<String>)>,
}

impl Cluster {
    pub(super) fn orchestrate(&mut self, now: Nanos) {
        if !self.dirty {
            return;
        }
        let mut orders = Orders::default();
        let live = self.supervise(&mut orders);
        for s in self.services.values() {
            let tasks = live.get(s.id.as_str()).map(|v| v.as_slice()).unwrap_or(&[]);
            if let Some(t) = Self::next_to_update(s, tasks) {
                orders.shutdown.push(t.id.clone());
            }
            match s.mode {
                Mode::Replicated(n) => Self::fill_slots(s, n, tasks, &mut orders),
                Mode::Global => self.fill_nodes(s, tasks, &mut orders),
            }
        }
        for id in orders.shutdown {
            self.set_desired(&id, TState::Shutdown, now);
        }
        for (svc, slot, node) in orders.create {
            self.new_task(&svc, slot, node, now);
        }
    }

    /// The restart supervisor: a dead task, a task on a drained node or one its constraints
    /// no longer allow, and a task whose node was removed are shut down. Returns the rest of
    /// the tasks desired running, per service.
    fn supervise(&self, orders: &mut Orders) -> HashMap<&str, Vec<&TaskRec>> {
        let node_pos: HashMap<&str, usize> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.as_str(), i))
            .collect();
        let mut live: HashMap<&str, Vec<&TaskRec>> = HashMap::new();
        for t in self.tasks.values() {
            if t.desired != TState::Running {
                continue;
            }
            if t.state.terminal() {
                orders.shutdown.push(t.id.clone());
                continue;
            }
            let node = t.node_id.as_deref().and_then(|n| node_pos.get(n).copied());
            if let (Some(ni), Some(svc)) = (node, self.services.get(&t.service_id)) {
                let n = &self.nodes[ni];
                let drained = n.availability == Availability::Drain;
                let constraint_fails = !svc.constraints.iter().all(|c| c.matches(n));
                if drained || constraint_fails {
                    orders.shutdown.push(t.id.clone());
                    continue;
                }
            } else if t.node_id.is_some() {
                orders.shutdown.push(t.id.clone());
                continue;
            }
            live.entry(t.service_id.as_str()).or_default().push(t);
        }
        live
    }

    /// Replicated: one task per slot 1..=n; extra tasks of a slot and slots above n go.
    fn fill_slots(s: &ServiceRec, n: u64, tasks: &[&TaskRec], orders: &mut Orders) {
        let mut slots: BTreeMap<u64, Vec<&TaskRec>> = BTreeMap::new();
        for t in tasks {
            slots.entry(t.slot.unwrap_or(0)).or_default().push(t);
        }
        for slot in 1..=n {
            match slots.get(&slot) {
                None => orders.create.push((s.id.clone(), Some(slot), None)),
                Some(v) if v.len() > 1 => {
                    for t in &v[1..] {
                        orders.shutdown.push(t.id.clone());
                    }
                }
                _ => {}
            }
        }
        for v in slots.range(n + 1..).map(|(_, v)| v) {
            orders.shutdown.extend(v.iter().map(|t| t.id.clone()));
        }
    }

    /// Global: a task on every active, not-down node the constraints allow that has none.
    fn fill_nodes(&self, s: &ServiceRec, tasks: &[&TaskRec], orders: &mut Orders) {
        let mut have: HashMap<&str, usize> = HashMap::new();
        for t in tasks {
            if let Some(n) = t.node_id.as_deref() {
                *have.entry(n).or_default() += 1;
            }
        }
        for n in &self.nodes {
            let eligible = n.availability == Availability::Active
                && n.state != NodeState::Down
                && s.constraints.iter().all(|c| c.matches(n));
            if eligible && !have.contains_key(n.id.as_str()) {
                orders.create.push((s.id.clone(), None, Some(n.id.clone())));
            }
        }
    }

    /// The updater (parallelism 1, stop-first): while no task of the current template is on
    /// its way up, the first task of an older template is replaced (the slot it frees is
    /// filled from the current template).
    fn next_to_update<'t>(s: &ServiceRec, tasks: &[&'t TaskRec]) -> Option<&'t TaskRec> {
        let starting = tasks
            .iter()
            .any(|t| t.template == s.template && t.state < TState::Running);
        if starting {
            return None;
        }
        tasks.iter().find(|t| t.template < s.template).copied()
    }

    /// Task history retention: at most `TASK_HISTORY` tasks per slot (per node for global);
    /// the finished tasks of a removed service go at once.
    pub(super) fn reap_history(&mut self) {
        if !self.dirty {
            return;
        }
        let orphans: Vec<String> = self
            .tasks
            .values()
            .filter(|t| t.state.terminal() && !self.services.contains_key(&t.service_id))
            .map(|t| t.id.clone())
            .collect();
        for id in &orphans {
            self.tasks.remove(id);
            self.track(id);
        }
        if !orphans.is_empty() {
            self.touch();
        }
        type Group = Vec<(Nanos, String, bool)>;
        let mut groups: HashMap<(String, String), Group> = HashMap::new();
        for t in self.tasks.values() {
            let key = match t.slot {
                Some(s) => s.to_string(),
                None => t.node_id.clone().unwrap_or_default(),
            };
            let removable = t.state.terminal() && t.desired != TState::Running;
            groups
                .entry((t.service_id.clone(), key))
                .or_default()
                .push((t.created, t.id.clone(), removable));
        }
        let mut removed = false;
        for (_, mut v) in groups {
            if v.len() <= TASK_HISTORY {
                continue;
            }
            v.sort();
            let mut excess = v.len() - TASK_HISTORY;
            for (_, id, removable) in v {
                if excess == 0 {
                    break;
                }
                if removable {
                    self.tasks.remove(&id);
                    self.track(&id);
                    excess -= 1;
                    removed = true;
                }
            }
        }
        if removed {
            self.touch();
        }
    }

    /// How many tasks of a service are running (for `ServiceStatus`).
    pub fn service_counts(&self) -> HashMap<String, (u64, u64)> {
        // As swarmkit's `ListServiceStatuses`: running counts every task whose state is
        // running (one told to stop included, until it stops); a global service desires as
        // many tasks as have desired state running.
        let mut counts: HashMap<String, (u64, u64)> = HashMap::new();
        for t in self.tasks.values() {
            let c = counts.entry(t.service_id.clone()).or_default();
            c.0 += u64::from(t.state == TState::Running);
            c.1 += u64::from(t.desired == TState::Running);
        }
        self.services
            .values()
            .map(|s| {
                let (running, desired_tasks) = counts.get(&s.id).copied().unwrap_or((0, 0));
                let desired = match s.mode {
                    Mode::Replicated(n) => n,
                    Mode::Global => desired_tasks,
                };
                (s.id.clone(), (running, desired))
            })
            .collect()
    }
}
