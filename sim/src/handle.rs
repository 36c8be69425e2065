//! [`SimHandle`]: a running simulated swarm (its listeners, ticker and simulator).

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::SimConfig;
use crate::sim::{self, Sim};
use crate::{api, state};

/// A running simulated swarm.
pub struct SimHandle {
    sim: Arc<Sim>,
    control: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    managers: Vec<String>,
}

impl SimHandle {
    /// Starts the swarm: binds the control address and one endpoint per manager on 127.0.0.1.
    pub async fn start(config: SimConfig) -> anyhow::Result<SimHandle> {
        let sim = Sim::new(&config, |sim, ep, req| Box::pin(api::handle(sim, ep, req)))?;
        let control = tokio::net::TcpListener::bind(&config.listen)
            .await
            .map_err(|e| anyhow::anyhow!("binding the control address {}: {e}", config.listen))?;
        let control_addr = control.local_addr()?;
        sim.open_all().await?;
        let mut tasks = vec![sim.spawn_ticker()];
        tasks.push(tokio::spawn(sim::accept_loop(
            sim.clone(),
            sim::Endpoint::Control,
            control,
            None,
        )));
        let ids: Vec<String> = sim.with(|c, _| {
            c.nodes
                .iter()
                .filter(|n| n.role == state::Role::Manager)
                .map(|n| n.id.clone())
                .collect()
        });
        let mut managers = vec![];
        for id in ids {
            if let Some(e) = sim.endpoint_of(&id).await {
                managers.push(e);
            }
        }
        Ok(SimHandle {
            sim,
            control: control_addr,
            tasks,
            managers,
        })
    }

    /// `http://127.0.0.1:PORT`, for `--sim`.
    pub fn control_url(&self) -> String {
        format!("http://{}", self.control)
    }

    /// `tcp://127.0.0.1:PORT` of the control address (the leader's Docker API).
    pub fn control_docker_host(&self) -> String {
        format!("tcp://{}", self.control)
    }

    /// One `tcp://127.0.0.1:PORT` per manager, in node order.
    pub fn manager_endpoints(&self) -> Vec<String> {
        self.managers.clone()
    }

    /// The simulator itself (state, node operations, faults).
    pub fn sim(&self) -> &Arc<Sim> {
        &self.sim
    }

    /// (hostname, role, tcp URL, unix socket URL) of every endpoint, in node order.
    pub async fn endpoint_lines(&self) -> Vec<(String, String, String, Option<String>)> {
        let eps = self.sim.endpoints().await;
        let nodes: Vec<(String, String, state::Role)> = self.sim.with(|c, _| {
            c.nodes
                .iter()
                .map(|n| (n.id.clone(), n.hostname.clone(), n.role))
                .collect()
        });
        nodes
            .into_iter()
            .filter_map(|(id, host, role)| {
                let (addr, unix, _) = eps.get(&id)?;
                Some((
                    host,
                    if role == state::Role::Manager {
                        "manager"
                    } else {
                        "worker"
                    }
                    .to_string(),
                    format!("tcp://{addr}"),
                    unix.as_ref().map(|p| format!("unix://{}", p.display())),
                ))
            })
            .collect()
    }

    /// Endpoint of a node by hostname.
    pub async fn endpoint(&self, hostname: &str) -> Option<String> {
        let id = self.sim.with(|c, _| {
            c.nodes
                .iter()
                .find(|n| n.hostname == hostname)
                .map(|n| n.id.clone())
        })?;
        self.sim.endpoint_of(&id).await
    }

    /// Stops everything and closes every listener.
    pub async fn shutdown(self) {
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
        self.sim.close_all().await;
    }
}
