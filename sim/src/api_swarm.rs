//! The Docker API's swarm-object calls beyond `GET /swarm`: `POST /swarm/update` (the whole
//! spec, kept as written: labels, raft, dispatcher and CA settings; autolock on or off, key
//! rotation), `GET /swarm/unlockkey` and `POST /swarm/unlock`, answered as the engine answers
//! them.

use std::collections::HashMap;

use bollard::models::{
    LocalNodeState, SwarmInfo, SwarmSpec, SwarmSpecCaConfig, SwarmSpecDispatcher,
    SwarmSpecOrchestration, SwarmSpecRaft, SwarmSpecTaskDefaults, SwarmUnlockRequest,
};
use http_body_util::BodyExt;
use hyper::Request;
use hyper::body::Incoming;
use serde_json::json;

use crate::http::{Resp, full, ok_json};
use crate::sim::Sim;
use crate::state::{ApiError, Cluster, ERR_OUT_OF_SEQUENCE, ERR_SWARM_LOCKED};

/// moby's answer to a spec with another name (`daemon/cluster/swarm.go`).
const ERR_SPEC_NAME: &str = "swarm spec must be named \"default\"";

/// The spec as `docker swarm init` leaves it (what a 20.10 engine serves).
fn init_spec() -> SwarmSpec {
    SwarmSpec {
        name: Some("default".into()),
        labels: Some(HashMap::new()),
        orchestration: Some(SwarmSpecOrchestration {
            task_history_retention_limit: Some(5),
        }),
        raft: Some(SwarmSpecRaft {
            snapshot_interval: Some(10000),
            keep_old_snapshots: Some(0),
            log_entries_for_slow_followers: Some(500),
            election_tick: Some(10),
            heartbeat_tick: Some(1),
        }),
        dispatcher: Some(SwarmSpecDispatcher {
            heartbeat_period: Some(5_000_000_000),
        }),
        ca_config: Some(SwarmSpecCaConfig {
            node_cert_expiry: Some(7_776_000_000_000_000),
            ..Default::default()
        }),
        encryption_config: None,
        task_defaults: Some(SwarmSpecTaskDefaults::default()),
    }
}

/// The swarm's spec now: as last written, else as `swarm init` left it.
pub fn current_spec(c: &Cluster) -> SwarmSpec {
    c.swarm_spec
        .as_ref()
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_else(init_spec)
}

async fn body_json<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, ApiError> {
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(|e| ApiError::new(400, format!("reading the request body: {e}")))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| ApiError::new(400, format!("invalid JSON: {e}")))
}

/// 200 with no body, as the engine answers a swarm update or an unlock.
fn empty_ok() -> Resp {
    hyper::Response::new(full(bytes::Bytes::new()))
}

fn flag(q: &HashMap<String, String>, name: &str) -> bool {
    q.get(name).is_some_and(|v| v == "1" || v == "true")
}

/// `POST /swarm/update?version=N&rotateManagerUnlockKey=...` with the whole `SwarmSpec`, as
/// `docker swarm update` sends it: refused with "update out of sequence" unless `version` is
/// the swarm's version index now; the spec is kept as sent (as swarmkit stores it, a field left
/// out is gone), and autolock turned on or off as it says.
pub async fn update_swarm(
    sim: &Sim,
    q: &HashMap<String, String>,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let version: u64 = q
        .get("version")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ApiError::new(400, "invalid swarm version: missing or invalid version"))?;
    let mut spec: SwarmSpec = body_json(req).await?;
    match spec.name.as_deref() {
        None | Some("") => spec.name = Some("default".into()),
        Some("default") => {}
        Some(_) => return Err(ApiError::new(400, ERR_SPEC_NAME)),
    }
    let autolock = spec
        .encryption_config
        .as_ref()
        .and_then(|e| e.auto_lock_managers)
        .unwrap_or(false);
    let rotate = flag(q, "rotateManagerUnlockKey");
    let stored = serde_json::to_value(&spec)
        .map_err(|e| ApiError::new(500, format!("storing the swarm spec: {e}")))?;
    sim.with(|c, now| {
        if c.swarm_version != version {
            return Err(ApiError::new(500, ERR_OUT_OF_SEQUENCE));
        }
        c.swarm_spec = Some(stored);
        c.swarm_updated = Some(now);
        c.set_autolock(autolock, rotate);
        Ok(())
    })?;
    Ok(empty_ok())
}

/// `GET /swarm/unlockkey`: the key, or `""` while autolock is off.
pub fn unlock_key(sim: &Sim) -> Result<Resp, ApiError> {
    let key = sim.with(|c, _| c.unlock_key.clone()).unwrap_or_default();
    ok_json(&json!({ "UnlockKey": key }))
}

/// `POST /swarm/unlock {"UnlockKey": ...}` on node `node_id`'s own engine.
pub async fn unlock(sim: &Sim, node_id: &str, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let body: SwarmUnlockRequest = body_json(req).await?;
    let key = body.unlock_key.unwrap_or_default();
    sim.with(|c, now| {
        let i = c
            .node_idx(node_id)
            .ok_or_else(|| ApiError::new(503, "This node is not part of a swarm"))?;
        c.unlock(i, &key, now)
    })?;
    Ok(empty_ok())
}

/// `/info`'s `Swarm` of a locked manager: its swarm component did not start, so it knows no
/// node ID, no managers and no cluster; only its address, the state and the error.
pub fn locked_swarm_info(node_addr: &str) -> SwarmInfo {
    SwarmInfo {
        node_id: Some(String::new()),
        node_addr: Some(node_addr.to_string()),
        local_node_state: Some(LocalNodeState::LOCKED),
        control_available: Some(false),
        error: Some(ERR_SWARM_LOCKED.into()),
        remote_managers: None,
        nodes: None,
        managers: None,
        cluster: None,
    }
}
