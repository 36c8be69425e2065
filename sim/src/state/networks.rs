//! Overlay networks: creating (with a subnet given or the next free /24) and removing them.

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
        let pool = Pool::new(subnet).map_err(|e| ApiError::new(400, e.to_string()))?;
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

    /// `POST /networks/create`: a swarm-scoped overlay, on `subnet` or the next free
    /// `10.0.N.0/24`.
    pub fn create_overlay(
        &mut self,
        name: &str,
        subnet: Option<&str>,
        attachable: bool,
        labels: BTreeMap<String, String>,
        now: Nanos,
    ) -> Result<String, ApiError> {
        if name.is_empty() {
            return Err(ApiError::new(400, "network name must not be empty"));
        }
        let subnet = match subnet {
            Some(s) => s.to_string(),
            None => self.free_subnet()?,
        };
        let id = self.create_network_inner(name, &subnet, attachable, false, now)?;
        self.networks
            .get_mut(&id)
            .expect("the network just made")
            .labels = labels;
        self.emit("network", "create", &id, &[("name", name)], now);
        Ok(id)
    }

    /// The first `10.0.N.0/24` that overlaps no network's subnet.
    fn free_subnet(&self) -> Result<String, ApiError> {
        (0..=255u32)
            .map(|n| (u32::from(std::net::Ipv4Addr::new(10, 0, n as u8, 0)), 24u8))
            .find(|&(base, prefix)| {
                self.networks
                    .values()
                    .all(|net| !net.pool.overlaps(base, prefix))
            })
            .map(|(base, _)| format!("{}/24", std::net::Ipv4Addr::from(base)))
            .ok_or_else(|| {
                ApiError::new(
                    500,
                    "rpc error: code = ResourceExhausted desc = could not find an available, non-overlapping IPv4 address pool",
                )
            })
    }

    /// `DELETE /networks/{id}`: refused while a service uses it, and for `ingress`.
    pub fn remove_network(&mut self, key: &str, now: Nanos) -> Result<(), ApiError> {
        let id = self.find_network(key)?;
        let net = &self.networks[&id];
        if net.ingress {
            return Err(ApiError::new(
                403,
                "rpc error: code = PermissionDenied desc = the simulator keeps its ingress network",
            ));
        }
        if let Some(s) = self.services.values().find(|s| s.networks.contains(&id)) {
            return Err(ApiError::new(
                400,
                format!(
                    "rpc error: code = FailedPrecondition desc = network {id} is in use by service {}",
                    s.id
                ),
            ));
        }
        let name = net.name.clone();
        self.networks.remove(&id);
        self.next_index();
        self.emit("network", "remove", &id, &[("name", &name)], now);
        Ok(())
    }
}
