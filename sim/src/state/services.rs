//! Services: creating, updating (scale, or a new task template rolled out one task at a time
//! by the orchestrator) and removing them.

use crate::clock::Nanos;

use super::model::*;
use super::store::*;

impl Cluster {
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
        let (networks, constraints) = self.resolve_def(def)?;
        let vips = self.allocate_vips(def.endpoint_mode, &networks)?;
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
                force_update: def.force_update,
                version,
                created: now,
                updated: now,
                vips,
                template: 1,
            },
        );
        self.emit("service", "create", &id, &[("name", &def.name)], now);
        Ok(id)
    }

    /// A definition's network IDs and parsed constraints.
    fn resolve_def(&self, def: &ServiceDef) -> Result<(Vec<String>, Vec<Constraint>), ApiError> {
        let networks = def
            .networks
            .iter()
            .map(|n| self.find_network(n))
            .collect::<Result<Vec<_>, _>>()?;
        let constraints = def
            .constraints
            .iter()
            .map(|c| Constraint::parse(c))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ApiError::new(400, e.to_string()))?;
        Ok((networks, constraints))
    }

    /// One virtual IP per network for a `vip` service; none for `dnsrr`.
    fn allocate_vips(
        &mut self,
        mode: EndpointMode,
        networks: &[String],
    ) -> Result<Vec<(String, u32)>, ApiError> {
        let mut vips = vec![];
        if mode == EndpointMode::Vip {
            for n in networks {
                let net = self.networks.get_mut(n).expect("network");
                let Some(a) = net.pool.alloc() else {
                    self.release_vips(&vips);
                    return Err(ApiError::new(
                        500,
                        "rpc error: code = ResourceExhausted desc = could not allocate VIP: no available IPv4 addresses on this network's address pools",
                    ));
                };
                vips.push((n.clone(), a));
            }
        }
        Ok(vips)
    }

    fn release_vips(&mut self, vips: &[(String, u32)]) {
        for (n, a) in vips {
            if let Some(net) = self.networks.get_mut(n) {
                net.pool.release(*a);
            }
        }
    }

    /// `POST /services/{id}/update?version=N` with a full ServiceSpec: a new replica count is
    /// reconciled at once; a new task template (image, command, networks, mounts, constraints,
    /// `--force`) is rolled out by the orchestrator one task at a time.
    pub fn update_service(
        &mut self,
        key: &str,
        version: u64,
        def: &ServiceDef,
        now: Nanos,
    ) -> Result<(), ApiError> {
        let id = self.find_service(key)?;
        let old = self.services[&id].clone();
        if old.version != version {
            return Err(ApiError::new(500, ERR_OUT_OF_SEQUENCE));
        }
        if def.name != old.name {
            return Err(ApiError::new(
                400,
                "rpc error: code = Unimplemented desc = renaming services is not supported",
            ));
        }
        if matches!(def.mode, Mode::Global) != matches!(old.mode, Mode::Global) {
            return Err(ApiError::new(
                400,
                "rpc error: code = Unimplemented desc = service mode change is not allowed",
            ));
        }
        let (networks, constraints) = self.resolve_def(def)?;
        let template_changed = def.image != old.image
            || def.args != old.args
            || networks != old.networks
            || def.mounts != old.mounts
            || def.constraints != old.constraint_strs
            || def.force_update != old.force_update;
        let vips = if networks != old.networks || def.endpoint_mode != old.endpoint_mode {
            self.release_vips(&old.vips);
            self.allocate_vips(def.endpoint_mode, &networks)?
        } else {
            old.vips.clone()
        };
        let v = self.next_index();
        let s = self.services.get_mut(&id).expect("the service found");
        s.image = def.image.clone();
        s.args = def.args.clone();
        s.mode = def.mode.clone();
        s.networks = networks;
        s.endpoint_mode = def.endpoint_mode;
        s.constraints = constraints;
        s.constraint_strs = def.constraints.clone();
        s.labels = def.labels.clone();
        s.mounts = def.mounts.clone();
        s.force_update = def.force_update;
        s.vips = vips;
        s.version = v;
        s.updated = now;
        if template_changed {
            s.template += 1;
        }
        let mut attrs: Vec<(String, String)> = vec![("name".into(), old.name.clone())];
        if def.image != old.image {
            attrs.push(("image.new".into(), def.image.clone()));
            attrs.push(("image.old".into(), old.image.clone()));
        }
        if let (Mode::Replicated(a), Mode::Replicated(b)) = (&old.mode, &def.mode)
            && a != b
        {
            attrs.push(("replicas.new".into(), b.to_string()));
            attrs.push(("replicas.old".into(), a.to_string()));
        }
        let attrs: Vec<(&str, &str)> = attrs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.emit("service", "update", &id, &attrs, now);
        Ok(())
    }

    /// `DELETE /services/{id}`: its tasks are shut down, then reaped.
    pub fn remove_service(&mut self, key: &str, now: Nanos) -> Result<(), ApiError> {
        let id = self.find_service(key)?;
        let s = self.services.remove(&id).expect("the service found");
        self.release_vips(&s.vips);
        let tasks: Vec<String> = self
            .tasks
            .values()
            .filter(|t| t.service_id == id)
            .map(|t| t.id.clone())
            .collect();
        for t in tasks {
            self.set_desired(&t, TState::Shutdown, now);
        }
        self.next_index();
        self.emit("service", "remove", &id, &[("name", &s.name)], now);
        Ok(())
    }
}
