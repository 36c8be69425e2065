//! The API's node writes: `POST /nodes/{id}/update` and `DELETE /nodes/{id}`.

use crate::clock::{Nanos, secs};

use super::model::*;
use super::store::*;

/// Simulated seconds between a drain and the leader step-down of `leader-change-on-drain`:
/// the drained node's tasks are still moving.
const STEP_DOWN_AFTER_DRAIN: f64 = 0.5;

impl Cluster {
    /// The `out-of-sequence-every` fault: whether this node update is the Nth.
    fn injected_out_of_sequence(&mut self) -> bool {
        self.node_writes += 1;
        let every = self.faults.out_of_sequence_every;
        every > 0 && self.node_writes.is_multiple_of(every)
    }

    /// `POST /nodes/{id}/update?version=N` with a full NodeSpec.
    pub fn update_node(
        &mut self,
        key: &str,
        version: u64,
        spec: SpecUpdate,
        now: Nanos,
    ) -> Result<(), ApiError> {
        let SpecUpdate {
            role,
            availability,
            labels,
            name,
        } = spec;
        let i = self.find_node(key)?;
        if self.nodes[i].version != version || self.injected_out_of_sequence() {
            return Err(ApiError::new(500, ERR_OUT_OF_SEQUENCE));
        }
        let role = parse_role(role.as_deref().unwrap_or(""))?;
        let avail = parse_availability(availability.as_deref().unwrap_or(""))?;
        if role == Role::Worker && self.nodes[i].role == Role::Manager && self.managers_total() == 1
        {
            return Err(ApiError::new(
                400,
                "rpc error: code = FailedPrecondition desc = attempting to demote the last manager of the swarm",
            ));
        }
        let old_av = self.nodes[i].availability;
        let old_role = self.nodes[i].role;
        let demotes_leader =
            role == Role::Worker && self.leader.as_ref() == Some(&self.nodes[i].id);
        let v = self.next_index();
        let n = &mut self.nodes[i];
        n.role = role;
        n.availability = avail;
        n.labels = labels;
        n.spec_name = name.filter(|s| !s.is_empty());
        n.version = v;
        n.updated = now;
        self.role_written(i, old_role, now);
        if demotes_leader {
            self.transfer_leadership(now);
        }
        if old_av != avail && avail == Availability::Drain && self.faults.leader_change_on_drain {
            self.step_down_at = Some(now + secs(STEP_DOWN_AFTER_DRAIN));
        }
        if old_av != avail {
            self.node_event(
                i,
                &[
                    ("availability.old", old_av.as_str()),
                    ("availability.new", avail.as_str()),
                ],
                now,
            );
        } else {
            self.node_event(i, &[], now);
        }
        Ok(())
    }

    /// What a role write does beyond the spec: a promoted manager's raft comes up (a node that
    /// kept stale raft data panics, as swarmkit's does); a demoted one stops its manager later.
    fn role_written(&mut self, i: usize, old_role: Role, now: Nanos) {
        let stop_after = secs(self.timings.demoted_manager_stop);
        let n = &mut self.nodes[i];
        let panics = old_role == Role::Worker && n.role == Role::Manager && n.stale_raft_data;
        if n.role == Role::Manager {
            n.reachable = n.engine_running;
            n.manager_stops_at = None;
            n.stale_raft_data = false;
        } else if old_role == Role::Manager && n.engine_running {
            n.manager_stops_at = Some(now + stop_after);
        }
        if panics {
            self.engine_stop(i, now);
        }
    }

    /// `DELETE /nodes/{id}[?force=true]`
    pub fn remove_node(&mut self, key: &str, force: bool, now: Nanos) -> Result<String, ApiError> {
        let i = self.find_node(key)?;
        let n = &self.nodes[i];
        if n.role == Role::Manager {
            return Err(ApiError::new(
                400,
                format!(
                    "rpc error: code = FailedPrecondition desc = node {} is a cluster manager and is a member of the raft cluster. It must be demoted to worker before removal",
                    n.id
                ),
            ));
        }
        if n.state != NodeState::Down && !force {
            return Err(ApiError::new(
                400,
                format!(
                    "rpc error: code = FailedPrecondition desc = node {} is not down and can't be removed",
                    n.id
                ),
            ));
        }
        let id = n.id.clone();
        let name = n.hostname.clone();
        let ids: Vec<String> = self
            .tasks
            .values()
            .filter(|t| t.node_id.as_deref() == Some(&id) && !t.state.terminal())
            .map(|t| t.id.clone())
            .collect();
        for t in ids {
            self.tasks.get_mut(&t).expect("task").desired = TState::Shutdown;
            self.set_task_state(&t, TState::Orphaned, "node removed", None, now);
        }
        for net in self.networks.values_mut() {
            if let Some(a) = net.lb.remove(&id) {
                net.pool.release(a);
            }
        }
        self.nodes.remove(i);
        self.next_index();
        self.emit("node", "remove", &id, &[("name", &name)], now);
        Ok(id)
    }
}

fn parse_role(role: &str) -> Result<Role, ApiError> {
    match role {
        "manager" => Ok(Role::Manager),
        "worker" => Ok(Role::Worker),
        r => Err(ApiError::new(
            400,
            format!("rpc error: code = InvalidArgument desc = invalid role \"{r}\""),
        )),
    }
}

fn parse_availability(availability: &str) -> Result<Availability, ApiError> {
    match availability {
        "active" => Ok(Availability::Active),
        "pause" => Ok(Availability::Pause),
        "drain" => Ok(Availability::Drain),
        a => Err(ApiError::new(
            400,
            format!("rpc error: code = InvalidArgument desc = invalid availability \"{a}\""),
        )),
    }
}
