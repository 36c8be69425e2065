//! The Docker API's service and network writes: decoding a `ServiceSpec` or a network create
//! request (with bollard's models) into the model's definitions, and answering as the engine.

use std::collections::BTreeMap;
use std::collections::HashMap;

use bollard::models::{EndpointSpecModeEnum, MountType, ServiceSpec};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};

use crate::http::{Resp, full, json_resp};
use crate::sim::Sim;
use crate::state::{ApiError, EndpointMode, Mode, ServiceDef};

async fn body_json<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, ApiError> {
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(|e| ApiError::new(400, format!("reading the request body: {e}")))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| ApiError::new(400, format!("invalid JSON: {e}")))
}

fn version_param(q: &HashMap<String, String>, kind: &str) -> Result<u64, ApiError> {
    q.get("version")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            ApiError::new(
                400,
                format!("invalid {kind} version: missing or invalid version"),
            )
        })
}

/// A `ServiceSpec` as the model's definition. Positional command words are `Args`, as the
/// docker CLI sends them; an entrypoint override (`Command`) comes first.
pub fn service_def(spec: ServiceSpec) -> Result<ServiceDef, ApiError> {
    let name = spec.name.filter(|n| !n.is_empty()).ok_or_else(|| {
        ApiError::new(
            400,
            "rpc error: code = InvalidArgument desc = meta: name must be provided",
        )
    })?;
    let task = spec.task_template.unwrap_or_default();
    let container = task.container_spec.unwrap_or_default();
    let image = container.image.filter(|i| !i.is_empty()).ok_or_else(|| {
        ApiError::new(
            400,
            "rpc error: code = InvalidArgument desc = ContainerSpec: image reference must be provided",
        )
    })?;
    let mode = match spec.mode {
        Some(m) if m.global.is_some() => Mode::Global,
        Some(m) => Mode::Replicated(
            m.replicated
                .and_then(|r| r.replicas)
                .map_or(1, |r| r.max(0) as u64),
        ),
        None => Mode::Replicated(1),
    };
    let networks = task
        .networks
        .or(spec.networks)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|n| n.target)
        .collect();
    let endpoint_mode = match spec.endpoint_spec.and_then(|e| e.mode) {
        Some(EndpointSpecModeEnum::DNSRR) => EndpointMode::Dnsrr,
        _ => EndpointMode::Vip,
    };
    let mounts = container
        .mounts
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.typ.is_none_or(|t| t == MountType::VOLUME))
        .map(|m| (m.source.unwrap_or_default(), m.target.unwrap_or_default()))
        .collect();
    Ok(ServiceDef {
        name,
        image,
        args: container
            .command
            .unwrap_or_default()
            .into_iter()
            .chain(container.args.unwrap_or_default())
            .collect(),
        mode,
        networks,
        endpoint_mode,
        constraints: task
            .placement
            .and_then(|p| p.constraints)
            .unwrap_or_default(),
        labels: spec.labels.unwrap_or_default().into_iter().collect(),
        mounts,
        force_update: task.force_update.unwrap_or(0),
    })
}

/// `POST /services/create`
pub async fn create_service(sim: &Sim, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let def = service_def(body_json(req).await?)?;
    let id = sim.with(|c, now| c.create_service(&def, now))?;
    Ok(json_resp(201, &json!({"ID": id, "Warnings": null})))
}

/// `POST /services/{id}/update?version=N`
pub async fn update_service(
    sim: &Sim,
    key: &str,
    q: &HashMap<String, String>,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let version = version_param(q, "service")?;
    let def = service_def(body_json(req).await?)?;
    sim.with(|c, now| c.update_service(key, version, &def, now))?;
    Ok(json_resp(200, &json!({"Warnings": null})))
}

/// `DELETE /services/{id}`
pub fn remove_service(sim: &Sim, key: &str) -> Result<Resp, ApiError> {
    sim.with(|c, now| c.remove_service(key, now))?;
    Ok(Response::new(full(Bytes::new())))
}

/// `POST /networks/create`: swarm-scoped overlays only (what a manager shares with the swarm).
pub async fn create_network(sim: &Sim, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let v: Value = body_json(req).await?;
    let name = v["Name"].as_str().unwrap_or_default().to_string();
    let driver = v["Driver"].as_str().unwrap_or("");
    if driver != "overlay" {
        return Err(ApiError::new(
            400,
            format!(
                "the simulated swarm serves only swarm-scoped overlay networks, not driver \"{driver}\": use --driver overlay"
            ),
        ));
    }
    let subnet = v["IPAM"]["Config"]
        .as_array()
        .and_then(|c| c.first())
        .and_then(|c| c["Subnet"].as_str())
        .map(str::to_string);
    let labels: BTreeMap<String, String> = v["Labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    let attachable = v["Attachable"].as_bool().unwrap_or(false);
    let id =
        sim.with(|c, now| c.create_overlay(&name, subnet.as_deref(), attachable, labels, now))?;
    Ok(json_resp(201, &json!({"Id": id, "Warning": ""})))
}

/// `DELETE /networks/{id}`
pub fn remove_network(sim: &Sim, key: &str) -> Result<Resp, ApiError> {
    sim.with(|c, now| c.remove_network(key, now))?;
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    Ok(r)
}
