//! The agents: each node's engine (stop/start) and the task lifecycle it runs (accepted,
//! preparing, starting, running, shutdown), including the rejections the version-skew and
//! restart-while-active faults cause.

use std::collections::HashMap;

use rand::Rng;

use crate::clock::{MS, Nanos, secs};

use super::model::*;
use super::store::*;

impl Cluster {
    /// The node's engine stops (its API goes away; heartbeats stop).
    pub fn engine_stop(&mut self, i: usize, now: Nanos) {
        if self.nodes[i].locked_engine.take().is_some() {
            // Its swarm component never started: the swarm already counts it as stopped.
            self.touch();
            return;
        }
        if !self.nodes[i].engine_running {
            return;
        }
        let n = &mut self.nodes[i];
        n.engine_running = false;
        n.stale_raft_data |= n.manager_stops_at.take().is_some();
        n.stopped_at = Some(now);
        n.ready_at = None;
        if self.leader.as_deref() == Some(&self.nodes[i].id) {
            self.leader = None;
            self.election_at = Some(now + secs(self.timings.election));
        }
        if !self.has_quorum() {
            self.leader = None;
            self.election_at = None;
        }
        self.touch();
    }

    /// The node's engine starts at `version` (a manager of an autolocked swarm comes up locked).
    pub fn engine_start(&mut self, i: usize, version: &str, now: Nanos) {
        if self.nodes[i].engine_running || self.nodes[i].locked_engine.is_some() {
            return;
        }
        if self.starts_locked(i) {
            self.come_up_locked(i, version);
            return;
        }
        self.engine_started(i, version, now);
    }

    /// The node's engine and its swarm component run at `version`.
    pub(super) fn engine_started(&mut self, i: usize, version: &str, now: Nanos) {
        let was_active = self.nodes[i].availability == Availability::Active;
        let version_changed = self.nodes[i].engine_version != version;
        {
            let n = &mut self.nodes[i];
            n.engine_running = true;
            n.engine_version = version.to_string();
            n.stopped_at = None;
            n.started_at = now;
            n.ready_at = Some(now + secs(self.timings.node_ready));
            n.restart_reject_until = if was_active {
                Some(now + secs(self.timings.restart_active_window))
            } else {
                None
            };
        }
        // Containers died with the engine (no live-restore): the agent reports its tasks.
        let nid = self.nodes[i].id.clone();
        let ids: Vec<String> = self
            .tasks
            .values()
            .filter(|t| {
                t.node_id.as_deref() == Some(&nid)
                    && !t.state.terminal()
                    && t.state >= TState::Assigned
            })
            .map(|t| t.id.clone())
            .collect();
        for id in ids {
            let desired = self.tasks[&id].desired;
            if desired == TState::Running {
                self.set_task_state(
                    &id,
                    TState::Failed,
                    "started",
                    Some("task: non-zero exit (143)"),
                    now,
                );
                if let Some(t) = self.tasks.get_mut(&id) {
                    t.exit_code = 143;
                }
            } else {
                self.set_task_state(&id, TState::Shutdown, "shutdown", None, now);
            }
        }
        if version_changed {
            self.bump_node(i, now);
            self.node_event(i, &[], now);
        }
        if self.leader.is_none() && self.has_quorum() && self.election_at.is_none() {
            self.election_at = Some(now + secs(self.timings.election));
        }
        self.touch();
    }

    /// Does the version-skew fault apply to node `i`?
    pub(super) fn skewed(&self, i: usize) -> bool {
        if !self.faults.version_skew {
            return false;
        }
        let n = &self.nodes[i];
        let mgr_versions: Vec<&str> = self
            .nodes
            .iter()
            .filter(|m| m.role == Role::Manager)
            .map(|m| m.engine_version.as_str())
            .collect();
        let Some(oldest) = mgr_versions.iter().min_by(|a, b| version_cmp(a, b)) else {
            return false;
        };
        let newest = mgr_versions
            .iter()
            .max_by(|a, b| version_cmp(a, b))
            .expect("non-empty");
        let node_newer = version_cmp(&n.engine_version, oldest) == std::cmp::Ordering::Greater;
        let mgrs_mixed = version_cmp(oldest, newest) != std::cmp::Ordering::Equal;
        node_newer || (n.role == Role::Manager && mgrs_mixed)
    }

    /// The agents: advance the tasks on nodes whose engine runs.
    pub(super) fn tick_agents(&mut self, now: Nanos) {
        let pos: HashMap<String, usize> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.clone(), i))
            .collect();
        for id in self.tasks_in_motion(now) {
            let tk = &self.tasks[&id];
            let Some(ni) = tk.node_id.as_ref().and_then(|n| pos.get(n).copied()) else {
                continue;
            };
            if !self.nodes[ni].engine_running {
                continue;
            }
            if tk.desired != TState::Running {
                self.stop_task(&id, now);
            } else if tk.next_at <= now {
                self.advance_task(&id, ni, now);
            }
        }
    }

    /// Only tasks in motion; a running task that should run has nothing to do.
    fn tasks_in_motion(&self, now: Nanos) -> Vec<String> {
        self.moving
            .iter()
            .filter(|id| {
                let tk = &self.tasks[*id];
                tk.next_at <= now || tk.desired != TState::Running || tk.state == TState::Preparing
            })
            .cloned()
            .collect()
    }

    /// A task desired stopped: its stop is scheduled (a running task takes `task_stop`),
    /// then it shuts down.
    fn stop_task(&mut self, id: &str, now: Nanos) {
        let tk = &self.tasks[id];
        match tk.stop_at {
            None => {
                let d = if tk.state == TState::Running {
                    secs(self.timings.task_stop)
                } else {
                    100 * MS
                };
                self.tasks.get_mut(id).expect("task").stop_at = Some(now + d);
            }
            Some(at) if now >= at => {
                self.set_task_state(id, TState::Shutdown, "shutdown", None, now);
            }
            _ => {}
        }
    }

    /// A task desired running, due for its next step: assigned -> accepted -> preparing ->
    /// starting -> running.
    fn advance_task(&mut self, id: &str, ni: usize, now: Nanos) {
        let t = &self.timings;
        match self.tasks[id].state {
            TState::Assigned => {
                self.tasks.get_mut(id).expect("task").next_at = now + secs(t.task_accept);
                self.set_task_state(id, TState::Accepted, "accepted", None, now);
            }
            TState::Accepted => {
                let prepare = secs(t.task_prepare);
                let tk = self.tasks.get_mut(id).expect("task");
                tk.next_at = now + prepare;
                tk.prepare_started = now;
                self.set_task_state(id, TState::Preparing, "preparing", None, now);
            }
            TState::Preparing => self.prepare_task(id, ni, now),
            TState::Starting => {
                let cid = gen_hex(&mut self.rng, 64);
                let pid = self.rng.random_range(1000..60000);
                let tk = self.tasks.get_mut(id).expect("task");
                tk.container_id = Some(cid);
                tk.pid = pid;
                tk.exit_code = -1;
                self.set_task_state(id, TState::Running, "started", None, now);
            }
            _ => {}
        }
    }

    /// Preparing: rejected while the engine restarts (when that fault is on), started once
    /// the node has every network's attachment, rejected after `attachment_wait` without.
    fn prepare_task(&mut self, id: &str, ni: usize, now: Nanos) {
        let tk = &self.tasks[id];
        let node = &self.nodes[ni];
        if self.faults.restart_active
            && node
                .restart_reject_until
                .is_some_and(|u| tk.prepare_started < u)
        {
            self.set_task_state(
                id,
                TState::Rejected,
                "preparing",
                Some(ERR_SWARM_NOT_ACTIVE),
                now,
            );
            return;
        }
        let nets = self
            .services
            .get(&tk.service_id)
            .map(|s| s.networks.as_slice())
            .unwrap_or(&[]);
        let attached = nets.iter().all(|n| {
            self.networks
                .get(n)
                .is_none_or(|net| net.lb.contains_key(&node.id))
        }) && !self.skewed(ni);
        if attached {
            let start = secs(self.timings.task_start);
            self.tasks.get_mut(id).expect("task").next_at = now + start;
            self.set_task_state(id, TState::Starting, "starting", None, now);
        } else if now >= tk.prepare_started + secs(self.timings.attachment_wait) {
            self.set_task_state(
                id,
                TState::Rejected,
                "preparing",
                Some(ERR_MISSING_ATTACHMENTS),
                now,
            );
        }
    }
}
