//! Stack fixtures: the manual upgrade procedure's test stack, its `exhaust_addrs` stack, and a
//! fleet of about N tasks a node for scale runs.

use crate::clock::Nanos;

use super::model::*;
use super::store::*;

impl Cluster {
    /// The manual upgrade procedure's test stack.
    pub fn deploy_seed(&mut self, now: Nanos) -> Result<(), ApiError> {
        self.create_network("test_tnet", "10.0.1.0/24", true, now)?;
        let mut svc = ServiceDef::global("test_service", &["test_tnet"]);
        svc.endpoint_mode = EndpointMode::Dnsrr;
        svc.args = ["nginx", "-g", "daemon off;"].map(String::from).to_vec();
        self.create_service(&svc, now)?;
        let mut cli = ServiceDef::replicated("test_client", 2, &["test_tnet"]);
        cli.image = "ctelfer/lb-upgrade-test-cli:latest".into();
        cli.args = ["sh", "-c", "while true; do sleep 1; done"]
            .map(String::from)
            .to_vec();
        cli.mounts = vec![("test_cliout".into(), "/out".into())];
        self.create_service(&cli, now)?;
        Ok(())
    }

    /// The manual upgrade procedure's `exhaust_addrs` stack: a /27 and 24 replicas.
    pub fn deploy_exhaust(&mut self, now: Nanos) -> Result<(), ApiError> {
        self.create_network("ex_default", "10.0.2.0/27", false, now)?;
        let mut svc = ServiceDef::replicated("ex_service", 24, &["ex_default"]);
        svc.args = ["nginx", "-g", "daemon off;"].map(String::from).to_vec();
        self.create_service(&svc, now)?;
        Ok(())
    }

    /// A fleet with about `per_node` running tasks on every node: two global services (an agent
    /// and a monitor, as most fleets run) and `per_node - 2` replicated services of one replica
    /// per node, all on one overlay sized for them. With `history`, every replicated slot also
    /// keeps one shut-down task, as after one rolling update (the engine keeps up to 5).
    pub fn deploy_fleet(
        &mut self,
        per_node: usize,
        history: bool,
        now: Nanos,
    ) -> Result<(), ApiError> {
        let nodes = self.nodes.len();
        let globals = per_node.min(2);
        let replicated = per_node - globals;
        // Tasks, one load balancer per node, one VIP per service, and room for a rollout.
        let need = 2 * (nodes * per_node + nodes + per_node) + 256;
        let prefix = (32 - need.next_power_of_two().trailing_zeros()).clamp(9, 24);
        self.create_network("fleet_net", &format!("10.128.0.0/{prefix}"), false, now)?;
        for name in ["fleet_agent", "fleet_monitor"].into_iter().take(globals) {
            self.create_service(&ServiceDef::global(name, &["fleet_net"]), now)?;
        }
        for i in 1..=replicated {
            let name = format!("fleet_app{i}");
            let id = self.create_service(
                &ServiceDef::replicated(&name, nodes as u64, &["fleet_net"]),
                now,
            )?;
            if history {
                for slot in 1..=nodes as u64 {
                    let node = self.nodes[(slot as usize - 1) % nodes].id.clone();
                    self.add_history_task(&id, slot, &node, now);
                }
            }
        }
        Ok(())
    }
}
