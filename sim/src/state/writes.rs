//! The API's writes: creating networks and services, updating and removing nodes.

use std::collections::BTreeMap;

use crate::clock::Nanos;
use crate::ipam::Pool;

use super::model::*;
use super::store::*;

impl Cluster {
    pub(super) fn create_network_inner(
        &mut self,
        name: &str,
        subnet: &str,
        attachable: bool,
        ingress: bool,
        now: Nanos,
    ) -> Result<String, ApiError> {
        if self.networks.values().any(|n| n.name == name) {
            return Err(ApiError::new(
                409,
                format!("network with name {name} already exists"),
            ));
        }
        let pool = Pool::new(subnet).map_err(|e| ApiError::new(400, e))?;
        let id = gen_id(&mut self.rng);
        let version = self.next_index();
        let vxlan = self.next_vxlan;
        self.next_vxlan += 1;
        self.networks.insert(
            id.clone(),
            NetworkRec {
                id: id.clone(),
                name: name.to_string(),
                pool,
                ingress,
                attachable,
                vxlan,
                labels: BTreeMap::new(),
                created: now,
                version,
                lb: BTreeMap::new(),
            },
        );
        Ok(id)
    }

    pub fn create_network(
        &mut self,
        name: &str,
        subnet: &str,
        attachable: bool,
        now: Nanos,
    ) -> Result<String, ApiError> {
        self.create_network_inner(name, subnet, attachable, false, now)
    }

    pub fn create_service(&mut self, def: &ServiceDef, now: Nanos) -> Result<String, ApiError> {
        if self.services.values().any(|s| s.name == def.name) {
            return Err(ApiError::new(
                409,
                format!(
                    "rpc error: code = AlreadyExists desc = name conflicts with an existing object: service {} already exists",
                    def.name
                ),
            ));
        }
        let mut networks = vec![];
        for n in &def.networks {
            networks.push(self.find_network(n)?);
        }
        let constraints = def
            .constraints
            .iter()
            .map(|c| Constraint::parse(c))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ApiError::new(400, e))?;
        let mut vips = vec![];
        if def.endpoint_mode == EndpointMode::Vip {
            for n in &networks {
                let net = self.networks.get_mut(n).expect("network");
                let a = net.pool.alloc().ok_or_else(|| {
                    ApiError::new(500, "rpc error: code = ResourceExhausted desc = could not allocate VIP: no available IPv4 addresses on this network's address pools")
                })?;
                vips.push((n.clone(), a));
            }
        }
        let id = gen_id(&mut self.rng);
        let version = self.next_index();
        self.services.insert(
            id.clone(),
            ServiceRec {
                id: id.clone(),
                name: def.name.clone(),
                image: def.image.clone(),
                args: def.args.clone(),
                mode: def.mode.clone(),
                networks,
                endpoint_mode: def.endpoint_mode,
                constraints,
                constraint_strs: def.constraints.clone(),
                labels: def.labels.clone(),
                mounts: def.mounts.clone(),
                version,
                created: now,
                updated: now,
                vips,
            },
        );
        self.emit("service", "create", &id, &[("name", &def.name)], now);
        Ok(id)
    }

    // ---------------------------------------------------------------- API writes

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
        let role = role.as_deref();
        let availability = availability.as_deref();
        let i = self.find_node(key)?;
        if self.nodes[i].version != version {
            return Err(ApiError::new(500, ERR_OUT_OF_SEQUENCE));
        }
        let role = match role.unwrap_or("") {
            "manager" => Role::Manager,
            "worker" => Role::Worker,
            r => {
                return Err(ApiError::new(
                    400,
                    format!("rpc error: code = InvalidArgument desc = invalid role \"{r}\""),
                ));
            }
        };
        let avail = match availability.unwrap_or("") {
            "active" => Availability::Active,
            "pause" => Availability::Pause,
            "drain" => Availability::Drain,
            a => {
                return Err(ApiError::new(
                    400,
                    format!(
                        "rpc error: code = InvalidArgument desc = invalid availability \"{a}\""
                    ),
                ));
            }
        };
        if role == Role::Worker && self.nodes[i].role == Role::Manager && self.managers_total() == 1
        {
            return Err(ApiError::new(
                400,
                "rpc error: code = FailedPrecondition desc = attempting to demote the last manager of the swarm",
            ));
        }
        let old_av = self.nodes[i].availability;
        let v = self.next_index();
        let n = &mut self.nodes[i];
        n.role = role;
        n.availability = avail;
        n.labels = labels;
        n.spec_name = name.filter(|s| !s.is_empty());
        n.version = v;
        n.updated = now;
        if role == Role::Manager {
            n.reachable = n.engine_running;
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
