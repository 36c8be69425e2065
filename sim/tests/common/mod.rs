#![allow(dead_code)]

use std::time::Duration;

use swarm_sim::{SimConfig, SimHandle, Stack};

/// A fast swarm: 20 simulated seconds per real second.
pub fn config(scale: f64) -> SimConfig {
    SimConfig {
        time_scale: scale,
        ..SimConfig::default()
    }
}

pub async fn start(cfg: SimConfig) -> SimHandle {
    SimHandle::start(cfg).await.expect("sim starts")
}

pub async fn start_default() -> SimHandle {
    start(config(20.0)).await
}

/// One request to `tcp://HOST:PORT` (or `HOST:PORT`) or `unix:///PATH`; Err if the
/// connection fails (refused, dropped).
pub async fn try_http(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, hyper::HeaderMap, Vec<u8>), swarm_sim::client::ClientError> {
    let a = swarm_sim::client::request(addr, method, path, body).await?;
    Ok((a.status, a.headers, a.body))
}

pub async fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, Vec<u8>) {
    let (s, _, b) = try_http(addr, method, path, body).await.expect("request");
    (s, b)
}

pub async fn get_json(addr: &str, path: &str) -> serde_json::Value {
    let (s, b) = http(addr, "GET", path, None).await;
    assert_eq!(s, 200, "GET {path}: {}", String::from_utf8_lossy(&b));
    serde_json::from_slice(&b).expect("json")
}

/// Polls `f` every 20 ms (real) until it returns Some, or panics after `secs` real seconds.
pub async fn wait_for<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn no_stack(scale: f64) -> SimConfig {
    SimConfig {
        stack: Stack::None,
        ..config(scale)
    }
}

/// The node with `hostname` in a `/nodes` answer.
pub fn node_by_host<'a>(nodes: &'a serde_json::Value, host: &str) -> &'a serde_json::Value {
    nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["Description"]["Hostname"] == host)
        .unwrap_or_else(|| panic!("no node {host}"))
}

/// Waits (20 s at most) until `n` tasks run: the test stack of the manual upgrade procedure
/// runs 7.
pub async fn wait_for_running_tasks(ep: &str, n: usize) {
    wait_for(&format!("{n} running tasks"), 20, || async {
        let t = get_json(ep, "/tasks").await;
        let running = t
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["Status"]["State"] == "running")
            .count();
        (running == n).then_some(())
    })
    .await;
}
