//! The control surface (`/_sim/...` on the control address): what ssh and a package manager do
//! on a real host, plus faults and stacks.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::Faults;
use crate::http::{Resp, err_resp, full, query_map};
use crate::sim::Sim;
use crate::state::{ApiError, NodeFrame};

/// One node as `/_sim/state` reports it: what the recorded history shows of it, and how the
/// simulator serves it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeView {
    #[serde(flatten)]
    pub node: NodeFrame,
    pub backup_version: Option<String>,
    pub version_index: u64,
    pub endpoint: Option<String>,
    pub endpoint_open: bool,
    pub socket: Option<String>,
}

/// `/_sim/state`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimState {
    pub time: String,
    pub time_scale: f64,
    pub leader: Option<String>,
    pub quorum: bool,
    pub nodes: Vec<NodeView>,
    pub tasks: usize,
    pub services: usize,
}

pub async fn state(sim: &Sim) -> SimState {
    let eps = sim.endpoints().await;
    let c = sim.state.lock().expect("state lock");
    SimState {
        time: crate::clock::rfc3339(sim.now()),
        time_scale: sim.clock.scale(),
        leader: c
            .leader
            .as_ref()
            .and_then(|l| c.nodes.iter().find(|n| &n.id == l))
            .map(|n| n.hostname.clone()),
        quorum: c.has_quorum(),
        nodes: c
            .nodes
            .iter()
            .map(|n| {
                let ep = eps.get(&n.id);
                NodeView {
                    node: c.node_frame(n),
                    backup_version: n.backup_version.clone(),
                    version_index: n.version,
                    endpoint: ep.map(|e| format!("tcp://{}", e.0)),
                    endpoint_open: ep.is_some_and(|e| e.2),
                    socket: ep
                        .and_then(|e| e.1.as_ref().map(|p| format!("unix://{}", p.display()))),
                }
            })
            .collect(),
        tasks: c.tasks.len(),
        services: c.services.len(),
    }
}

fn json_ok<T: Serialize>(v: &T) -> Resp {
    let mut r = hyper::Response::new(full(serde_json::to_vec(v).unwrap_or_default()));
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// Body of `POST /_sim/faults`: fault specs to apply (as `--fault`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FaultSpecs {
    pub specs: Vec<String>,
}

pub async fn handle(sim: Arc<Sim>, req: Request<Incoming>) -> Resp {
    match route(sim, req).await {
        Ok(r) => r,
        Err(e) => err_resp(&e),
    }
}

async fn body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    Ok(req
        .into_body()
        .collect()
        .await
        .map_err(|e| ApiError::new(400, e.to_string()))?
        .to_bytes())
}

async fn route(sim: Arc<Sim>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let q = query_map(req.uri().query());
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let method = req.method().clone();
    match (&method, &segs[1..]) {
        (&Method::GET, ["state"]) => Ok(json_ok(&state(&sim).await)),
        (&Method::POST, ["nodes", host, op]) => {
            let version = q.get("version").cloned();
            let r = match *op {
                "stop" => sim.stop_node(host).await?,
                "start" => sim.start_node(host, version.as_deref()).await?,
                "upgrade" => {
                    let v = version.ok_or_else(|| ApiError::new(400, "upgrade needs ?version="))?;
                    sim.upgrade_node(host, &v).await?
                }
                "rollback" => sim.rollback_node(host).await?,
                _ => return Err(ApiError::new(404, format!("unknown node operation {op}"))),
            };
            Ok(json_ok(&r))
        }
        (&Method::GET, ["history"]) => Ok(json_ok(&sim.history())),
        (&Method::POST, ["history"]) => {
            sim.record_history();
            Ok(json_ok(&json!({"recording": true})))
        }
        (&Method::POST, ["leader", "step-down"]) => {
            sim.with(|c, now| c.step_down(now));
            Ok(json_ok(&state(&sim).await))
        }
        (&Method::GET, ["faults"]) => Ok(json_ok(&sim.faults())),
        (&Method::PUT, ["faults"]) => {
            let f: Faults = serde_json::from_slice(&body(req).await?)
                .map_err(|e| ApiError::new(400, format!("invalid faults: {e}")))?;
            sim.set_faults(f.clone());
            Ok(json_ok(&f))
        }
        (&Method::POST, ["faults"]) => {
            let specs: FaultSpecs = serde_json::from_slice(&body(req).await?)
                .map_err(|e| ApiError::new(400, format!("invalid fault specs: {e}")))?;
            let mut f = sim.faults();
            for s in &specs.specs {
                f.apply(s).map_err(|e| ApiError::new(400, e.to_string()))?;
            }
            sim.set_faults(f.clone());
            Ok(json_ok(&f))
        }
        (&Method::POST, ["stacks", name]) => {
            let name = name.to_string();
            sim.with(|c, now| match name.as_str() {
                "seed" => c.deploy_seed(now),
                "exhaust_addrs" | "exhaust-addrs" => c.deploy_exhaust(now),
                _ => Err(ApiError::new(404, format!("unknown stack {name}"))),
            })?;
            Ok(json_ok(&json!({"deployed": name})))
        }
        _ => Err(ApiError::new(404, "page not found")),
    }
}
