//! The e2e harness: a real 5-node Docker Swarm (3 managers n1-n3, 2 workers n4 n5) in network
//! namespaces on this machine, engines 20.10.24 upgraded to 26.1.5, and the test procedure of the
//! manual upgrade procedure run against it by the operator.
//!
//! The host side lives in `e2e/lab/` (shell: bundles, lab-up, lab-down, upgrade-host,
//! rollback-host, manual-upgrade); this crate drives it and checks what the manual procedure
//! checks by hand. One lab at a time on a machine: [`Lab::up`] takes a process-wide and a
//! machine-wide lock.
//!
//! Modules, each using only those before it (and this root's constants and [`wait_for`]):
//! `lab` (the scripts, paths and locks) and `metrics_text` (Prometheus text) -> `cluster` (the
//! swarm through the docker CLI, the test stack, its client logs) and `probe_clients` (the
//! clients' `/metrics`) -> `operator` (the binary, its spec, endpoints, events and their order)
//! -> `report` (figures) and `page_shot` -> `scenario` (the checks every rollout shares) ->
//! `bundle` (the deployable stack on the lab, with Prometheus).

pub mod bundle;
pub mod cluster;
pub mod lab;
pub mod metrics_text;
pub mod operator;
pub mod page_shot;
pub mod probe_clients;
pub mod report;
pub mod scenario;

pub use cluster::*;
pub use lab::*;
pub use metrics_text::*;
pub use operator::*;
pub use page_shot::*;
pub use probe_clients::*;
pub use report::*;
pub use scenario::*;

/// The engine version every scenario starts from, and the one it upgrades to.
pub const FROM_VERSION: &str = "20.10.24";
pub const TO_VERSION: &str = "26.1.5";
pub const MANAGERS: [&str; 3] = ["n1", "n2", "n3"];
pub const WORKERS: [&str; 2] = ["n4", "n5"];
pub const HOSTS: [&str; 5] = ["n1", "n2", "n3", "n4", "n5"];

/// Wait for a condition on observed state: `check` is polled every `every` until it returns
/// `Some`, or `within` passes (then an error naming `what`).
pub async fn wait_for<T, F, Fut>(
    what: &str,
    within: std::time::Duration,
    every: std::time::Duration,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + within;
    let mut last_err = None;
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if tokio::time::Instant::now() >= deadline {
            let detail = last_err
                .map(|e| format!(" (last error: {e:#})"))
                .unwrap_or_default();
            anyhow::bail!("timed out after {within:?} waiting for {what}{detail}");
        }
        tokio::time::sleep(every).await;
    }
}
