//! Fixtures the integration tests share: the engine captures and the operator's observation of
//! them, and the operator binary as a child process.
#![allow(dead_code)]

/// The operator's observation of these engine objects (converted through their JSON).
pub fn obs(
    nodes: &[bollard::models::Node],
    services: &[bollard::models::Service],
    networks: &[bollard::models::Network],
    tasks: &[bollard::models::Task],
) -> swarm_upgrade::observe::Observation {
    swarm_upgrade::observe::Observation::from_engine_models(nodes, services, networks, tasks)
        .expect("bollard's models convert")
}

/// A captured engine answer (`testdata/engine-captures/REL`).
pub fn capture<T: serde::de::DeserializeOwned>(rel: &str) -> T {
    swarm_sim::captures::json(rel)
}

pub mod invariants;
pub mod operator_process;
pub mod sim_lab;
