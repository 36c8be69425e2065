//! The Docker Engine API's swarm subset, as an engine serves it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response};
use rand::Rng;
use serde_json::{Value, json};

use crate::clock::{Nanos, parse_time_arg, rfc3339};
use crate::http::{Resp, err_resp, full, ok_json, query_map};
use crate::render::{self, With};
use crate::sim::{Endpoint, Sim};
use crate::state::{
    ApiError, ERR_NO_LEADER, ERR_NOT_MANAGER, ERR_SWARM_LOCKED, Role, api_versions,
};

/// The serving engine's identity.
#[derive(Debug, Clone)]
pub struct Serving {
    pub node_id: String,
    pub hostname: String,
    pub version: String,
    pub role: Role,
    /// Its own engine runs a manager (`/info` `ControlAvailable`), as for a while after a demotion.
    pub runs_manager: bool,
    pub addr: String,
    pub api_max: &'static str,
    pub api_min: &'static str,
    /// Autolock: the engine runs, its swarm component waits for the unlock key.
    pub locked: bool,
}

/// Parses `a.b` API versions.
fn parse_api(v: &str) -> Option<(u32, u32)> {
    let (a, b) = v.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Splits `/v1.41/nodes` into (Some("1.41"), "/nodes").
fn split_version(path: &str) -> (Option<&str>, &str) {
    if let Some(rest) = path.strip_prefix("/v") {
        let end = rest.find('/').unwrap_or(rest.len());
        let v = &rest[..end];
        if parse_api(v).is_some() {
            let p = &rest[end..];
            return (Some(v), if p.is_empty() { "/" } else { p });
        }
    }
    (None, path)
}

/// The engine's `filters` parameter: `{"k":{"v":true}}` or the legacy `{"k":["v"]}`.
pub fn parse_filters(
    q: &HashMap<String, String>,
) -> Result<BTreeMap<String, Vec<String>>, ApiError> {
    let mut out = BTreeMap::new();
    let Some(raw) = q.get("filters") else {
        return Ok(out);
    };
    if raw.trim().is_empty() {
        return Ok(out);
    }
    let v: Value = serde_json::from_str(raw)
        .map_err(|e| ApiError::new(400, format!("invalid filter: {e}")))?;
    let Value::Object(m) = v else {
        return Err(ApiError::new(400, "invalid filter: not an object"));
    };
    for (k, v) in m {
        let vals: Vec<String> = match v {
            Value::Object(o) => o
                .into_iter()
                .filter(|(_, b)| b.as_bool().unwrap_or(false))
                .map(|(k, _)| k)
                .collect(),
            Value::Array(a) => a
                .into_iter()
                .filter_map(|x| x.as_str().map(|s| s.to_string()))
                .collect(),
            _ => return Err(ApiError::new(400, format!("invalid filter '{k}'"))),
        };
        out.insert(k, vals);
    }
    Ok(out)
}

fn check_keys(f: &BTreeMap<String, Vec<String>>, allowed: &[&str]) -> Result<(), ApiError> {
    for k in f.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(ApiError::new(400, format!("invalid filter '{k}'")));
        }
    }
    Ok(())
}

fn label_match(labels: Option<&HashMap<String, String>>, want: &str) -> bool {
    let Some(l) = labels else { return false };
    match want.split_once('=') {
        Some((k, v)) => l.get(k).is_some_and(|x| x == v),
        None => l.contains_key(want),
    }
}

/// Entry point for every request on every endpoint.
pub async fn handle(
    sim: Arc<Sim>,
    ep: Endpoint,
    req: Request<Incoming>,
) -> Result<Resp, std::io::Error> {
    let path = req.uri().path().to_string();
    if path.starts_with("/_sim") {
        if ep == Endpoint::Control {
            return Ok(crate::control::handle(sim, req).await);
        }
        return Ok(err_resp(&ApiError::new(404, "page not found")));
    }
    // A partitioned endpoint takes the request and answers nothing until the partition heals.
    while sim.is_partitioned(&ep) {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let faults = sim.faults();
    if faults.latency_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(faults.latency_ms)).await;
    }
    let (drop, fail) = {
        let mut rng = rand::rng();
        (
            faults.drop_rate > 0.0 && rng.random_bool(faults.drop_rate),
            faults.error_rate > 0.0 && rng.random_bool(faults.error_rate),
        )
    };
    if drop {
        return Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "simulated dropped connection",
        ));
    }
    let serving = match serving(&sim, &ep) {
        Ok(s) => s,
        Err(e) => return Ok(err_resp(&e)),
    };
    let mut resp = if fail {
        err_resp(&ApiError::new(
            500,
            "simulated fault: internal server error",
        ))
    } else {
        match route(&sim, &serving, req).await {
            Ok(r) => r,
            Err(e) => err_resp(&e),
        }
    };
    let h = resp.headers_mut();
    h.insert("api-version", HeaderValue::from_static(serving.api_max));
    h.insert("docker-experimental", HeaderValue::from_static("false"));
    h.insert("ostype", HeaderValue::from_static("linux"));
    if let Ok(v) = HeaderValue::from_str(&format!("Docker/{} (linux)", serving.version)) {
        h.insert("server", v);
    }
    Ok(resp)
}

fn serving(sim: &Sim, ep: &Endpoint) -> Result<Serving, ApiError> {
    let c = sim.state.lock().expect("state lock");
    let n = match ep {
        Endpoint::Node(id) => c.nodes.iter().find(|n| &n.id == id),
        Endpoint::Control => c
            .leader
            .as_ref()
            .and_then(|l| c.nodes.iter().find(|n| &n.id == l))
            .or_else(|| {
                c.nodes
                    .iter()
                    .find(|n| n.role == Role::Manager && n.engine_running)
            }),
    };
    let n = n.ok_or_else(|| match ep {
        Endpoint::Node(_) => ApiError::new(503, "This node is not part of a swarm"),
        Endpoint::Control => ApiError::new(500, ERR_NO_LEADER),
    })?;
    // A locked engine is the new one; the swarm's description of the node is not updated yet.
    let version = n.locked_engine.as_ref().unwrap_or(&n.engine_version);
    let (api_max, api_min) = api_versions(version);
    Ok(Serving {
        node_id: n.id.clone(),
        hostname: n.hostname.clone(),
        version: version.clone(),
        role: n.role,
        runs_manager: n.runs_manager(),
        addr: n.addr.clone(),
        api_max,
        api_min,
        locked: n.locked_engine.is_some(),
    })
}

/// Cluster-state calls: only on a manager, and only with a leader.
fn cluster_call(sim: &Sim, s: &Serving) -> Result<(), ApiError> {
    let c = sim.state.lock().expect("state lock");
    let role = c
        .nodes
        .iter()
        .find(|n| n.id == s.node_id)
        .map(|n| n.role)
        .unwrap_or(s.role);
    if s.locked {
        return Err(ApiError::new(503, ERR_SWARM_LOCKED));
    }
    if role != Role::Manager {
        return Err(ApiError::new(503, ERR_NOT_MANAGER));
    }
    c.check_leader()
}

async fn route(sim: &Arc<Sim>, s: &Serving, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let (req_version, rest) = split_version(req.uri().path());
    check_api_version(s, req_version)?;
    let rest = rest.trim_end_matches('/').to_string();
    let q = query_map(req.uri().query());
    let method = req.method().clone();
    let segs: Vec<&str> = rest.split('/').filter(|x| !x.is_empty()).collect();
    match (&method, segs.as_slice()) {
        (&Method::GET | &Method::HEAD, ["_ping"]) => Ok(ping(sim, s, method == Method::HEAD)),
        (&Method::GET, ["version"]) => ok_json(&version(s)),
        (&Method::GET, ["info"]) => ok_json(&info(sim, s)),
        (&Method::GET, ["events"]) => events(sim, &q),
        _ => cluster_route(sim, s, &method, &segs, &q, req).await,
    }
}

/// Refuses a `/vX.Y/` prefix outside the serving engine's API range, as the engine does.
fn check_api_version(s: &Serving, req_version: Option<&str>) -> Result<(), ApiError> {
    let Some(v) = req_version else {
        return Ok(());
    };
    let want = parse_api(v).unwrap_or((0, 0));
    if want > parse_api(s.api_max).unwrap_or((0, 0)) {
        return Err(ApiError::new(
            400,
            format!(
                "client version {v} is too new. Maximum supported API version is {}",
                s.api_max
            ),
        ));
    }
    if want < parse_api(s.api_min).unwrap_or((0, 0)) {
        return Err(ApiError::new(
            400,
            format!(
                "client version {v} is too old. Minimum supported API version is {}, please upgrade your client to a newer version",
                s.api_min
            ),
        ));
    }
    Ok(())
}

/// The swarm's own endpoints: each checks [`cluster_call`] first; an unknown path is a 404
/// on any node (the check is per matched route so a worker answers it as the engine does).
/// Longer than a screen because it is the route table, one arm per route, read in one place.
async fn cluster_route(
    sim: &Arc<Sim>,
    s: &Serving,
    method: &Method,
    segs: &[&str],
    q: &HashMap<String, String>,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    match (method, segs) {
        (&Method::GET, ["nodes"]) => {
            cluster_call(sim, s)?;
            list_nodes(sim, q)
        }
        (&Method::GET, ["nodes", id]) => {
            cluster_call(sim, s)?;
            inspect_node(sim, id)
        }
        (&Method::DELETE, ["nodes", id]) => {
            cluster_call(sim, s)?;
            remove_node(sim, id, q)
        }
        (&Method::POST, ["nodes", id, "update"]) => {
            cluster_call(sim, s)?;
            update_node(sim, id, q, req).await
        }
        (&Method::POST, ["services", "create"]) => {
            cluster_call(sim, s)?;
            crate::api_writes::create_service(sim, req).await
        }
        (&Method::POST, ["services", id, "update"]) => {
            cluster_call(sim, s)?;
            crate::api_writes::update_service(sim, id, q, req).await
        }
        (&Method::DELETE, ["services", id]) => {
            cluster_call(sim, s)?;
            crate::api_writes::remove_service(sim, id)
        }
        (&Method::POST, ["networks", "create"]) => {
            cluster_call(sim, s)?;
            crate::api_writes::create_network(sim, req).await
        }
        (&Method::DELETE, ["networks", id]) => {
            cluster_call(sim, s)?;
            crate::api_writes::remove_network(sim, id)
        }
        (&Method::GET, ["services"]) => {
            cluster_call(sim, s)?;
            list_services(sim, q)
        }
        (&Method::GET, ["services", id]) => {
            cluster_call(sim, s)?;
            inspect_service(sim, id)
        }
        (&Method::GET, ["tasks"]) => {
            cluster_call(sim, s)?;
            list_tasks(sim, s, q)
        }
        (&Method::GET, ["tasks", id]) => {
            cluster_call(sim, s)?;
            inspect_task(sim, s, id)
        }
        (&Method::GET, ["networks"]) => {
            cluster_call(sim, s)?;
            list_networks(sim, q)
        }
        (&Method::GET, ["networks", id]) => {
            cluster_call(sim, s)?;
            inspect_network(sim, s, id, q)
        }
        (&Method::GET, ["swarm"]) => {
            cluster_call(sim, s)?;
            let c = sim.state.lock().expect("state lock");
            ok_json(&cluster_info(&c))
        }
        (&Method::POST, ["swarm", "update"]) => {
            cluster_call(sim, s)?;
            crate::api_swarm::update_swarm(sim, q, req).await
        }
        (&Method::GET, ["swarm", "unlockkey"]) => {
            cluster_call(sim, s)?;
            crate::api_swarm::unlock_key(sim)
        }
        (&Method::POST, ["swarm", "unlock"]) => {
            crate::api_swarm::unlock(sim, &s.node_id, req).await
        }
        _ => Err(ApiError::new(404, "page not found")),
    }
}

fn inspect_node(sim: &Sim, id: &str) -> Result<Resp, ApiError> {
    let nodes = sim.nodes();
    let i = sim.state.lock().expect("state lock").find_node(id)?;
    Ok(json_list(nodes.get(i).map(|e| &e.json), false))
}

fn remove_node(sim: &Sim, id: &str, q: &HashMap<String, String>) -> Result<Resp, ApiError> {
    let force = q.get("force").is_some_and(|v| v == "1" || v == "true");
    sim.with(|c, now| c.remove_node(id, force, now))?;
    ok_json(&json!({}))
}

/// `POST /nodes/{id}/update?version=N` with a `NodeSpec` body.
async fn update_node(
    sim: &Sim,
    id: &str,
    q: &HashMap<String, String>,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let version: u64 = q
        .get("version")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ApiError::new(400, "invalid node version: missing or invalid version"))?;
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(|e| ApiError::new(400, e.to_string()))?
        .to_bytes();
    let spec: bollard::models::NodeSpec = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(400, format!("invalid JSON: {e}")))?;
    let labels = spec
        .labels
        .unwrap_or_default()
        .into_iter()
        .collect::<BTreeMap<_, _>>();
    let update = crate::state::SpecUpdate {
        role: spec.role.map(|r| r.to_string()),
        availability: spec.availability.map(|a| a.to_string()),
        labels,
        name: spec.name,
    };
    sim.with(|c, now| c.update_node(id, version, update, now))?;
    Ok(Response::new(full(Bytes::new())))
}

fn inspect_service(sim: &Sim, id: &str) -> Result<Resp, ApiError> {
    let snap = sim.snapshot();
    let sid = sim.state.lock().expect("state lock").find_service(id)?;
    let svc = snap
        .services
        .iter()
        .find(|x| x.id.as_deref() == Some(&sid))
        .ok_or_else(|| ApiError::new(404, format!("service {id} not found")))?;
    ok_json(svc)
}

/// A task by its full id or by a unique prefix of it.
fn inspect_task(sim: &Sim, s: &Serving, id: &str) -> Result<Resp, ApiError> {
    let snap = sim.snapshot();
    let t = snap
        .tasks
        .iter()
        .find(|e| e.key.id == *id)
        .or_else(|| {
            let m: Vec<_> = snap
                .tasks
                .iter()
                .filter(|e| e.key.id.starts_with(id))
                .collect();
            (m.len() == 1).then(|| m[0])
        })
        .ok_or_else(|| ApiError::new(404, format!("task {id} not found")))?;
    Ok(task_resp(s, std::slice::from_ref(t), false))
}

fn inspect_network(
    sim: &Sim,
    s: &Serving,
    id: &str,
    q: &HashMap<String, String>,
) -> Result<Resp, ApiError> {
    let verbose = q.get("verbose").is_some_and(|v| v == "1" || v == "true");
    let c = sim.state.lock().expect("state lock");
    let nid = c.find_network(id)?;
    let n = &c.networks[&nid];
    ok_json(&render::network_inspect(&c, n, Some(&s.node_id), verbose))
}

fn ping(sim: &Sim, s: &Serving, head: bool) -> Resp {
    let mut r = Response::new(full(if head {
        Bytes::new()
    } else {
        Bytes::from_static(b"OK")
    }));
    let h = r.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        "cache-control",
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert("pragma", HeaderValue::from_static("no-cache"));
    h.insert("builder-version", HeaderValue::from_static("2"));
    let role = sim
        .state
        .lock()
        .expect("state lock")
        .nodes
        .iter()
        .find(|n| n.id == s.node_id)
        .map(|n| n.role)
        .unwrap_or(s.role);
    h.insert(
        "swarm",
        HeaderValue::from_static(if s.locked {
            "locked"
        } else if role == Role::Manager {
            "active/manager"
        } else {
            "active/worker"
        }),
    );
    r
}

fn version(s: &Serving) -> bollard::models::SystemVersion {
    use bollard::models::{SystemVersion, SystemVersionComponents, SystemVersionPlatform};
    let newer = s.api_min == "1.24";
    let (go, commit, containerd, build) = if newer {
        (
            "go1.24.4",
            "411e817",
            "1.7.24~ds1",
            "2026-08-13T05:35:48.000000000+00:00",
        )
    } else {
        (
            "go1.19.8",
            "5d6db84",
            "1.6.20~ds1",
            "2026-05-07T21:09:36.000000000+00:00",
        )
    };
    let kernel = "6.18.44-fc-v782";
    let details = HashMap::from([
        ("ApiVersion".to_string(), s.api_max.to_string()),
        ("Arch".to_string(), "amd64".to_string()),
        ("BuildTime".to_string(), build.to_string()),
        ("Experimental".to_string(), "false".to_string()),
        ("GitCommit".to_string(), commit.to_string()),
        ("GoVersion".to_string(), go.to_string()),
        ("KernelVersion".to_string(), kernel.to_string()),
        ("MinAPIVersion".to_string(), s.api_min.to_string()),
        ("Os".to_string(), "linux".to_string()),
    ]);
    let comp = |name: &str, version: &str, commit: &str| SystemVersionComponents {
        name: name.to_string(),
        version: version.to_string(),
        details: Some(HashMap::from([(
            "GitCommit".to_string(),
            commit.to_string(),
        )])),
    };
    SystemVersion {
        platform: Some(SystemVersionPlatform {
            name: String::new(),
        }),
        components: Some(vec![
            SystemVersionComponents {
                name: "Engine".into(),
                version: s.version.clone(),
                details: Some(details),
            },
            comp("containerd", containerd, containerd),
            comp("runc", "1.1.5+ds1", "1.1.5+ds1-1+deb12u1"),
            comp("docker-init", "0.19.0", ""),
        ]),
        version: Some(s.version.clone()),
        api_version: Some(s.api_max.to_string()),
        min_api_version: Some(s.api_min.to_string()),
        git_commit: Some(commit.into()),
        go_version: Some(go.into()),
        os: Some("linux".into()),
        arch: Some("amd64".into()),
        kernel_version: Some(kernel.into()),
        experimental: None,
        build_time: Some(build.into()),
    }
}

const INFO_TEMPLATE: &str = r#"{"ID":"QVRO:IVKQ:KP7Q:XN2J:4H3A:HMX2:JBDX:NJHW:QXAI:JMEE:TYDJ:5YU2","Containers":0,"ContainersRunning":0,"ContainersPaused":0,"ContainersStopped":0,"Images":1,"Driver":"overlay2","DriverStatus":[["Backing Filesystem","extfs"],["Supports d_type","true"],["Native Overlay Diff","true"],["userxattr","false"]],"Plugins":{"Volume":["local"],"Network":["bridge","host","ipvlan","macvlan","null","overlay"],"Log":["awslogs","fluentd","gcplogs","gelf","journald","json-file","local","logentries","splunk","syslog"]},"MemoryLimit":true,"SwapLimit":true,"CpuCfsPeriod":true,"CpuCfsQuota":true,"CPUShares":true,"CPUSet":true,"PidsLimit":true,"IPv4Forwarding":true,"Debug":false,"NFd":68,"OomKillDisable":true,"NGoroutines":244,"LoggingDriver":"json-file","CgroupDriver":"cgroupfs","CgroupVersion":"1","NEventsListener":2,"KernelVersion":"6.18.44-fc-v782","OperatingSystem":"Debian GNU/Linux 12 (bookworm)","OSVersion":"12","OSType":"linux","Architecture":"x86_64","IndexServerAddress":"https://index.docker.io/v1/","RegistryConfig":{"AllowNondistributableArtifactsCIDRs":[],"AllowNondistributableArtifactsHostnames":[],"InsecureRegistryCIDRs":["127.0.0.0/8"],"IndexConfigs":{"docker.io":{"Name":"docker.io","Mirrors":[],"Secure":true,"Official":true}},"Mirrors":[]},"NCPU":2,"MemTotal":25276063744,"DockerRootDir":"/var/lib/docker","HttpProxy":"","HttpsProxy":"","NoProxy":"","Labels":[],"ExperimentalBuild":false,"Runtimes":{"io.containerd.runc.v2":{"path":"runc"},"runc":{"path":"runc"}},"DefaultRuntime":"runc","LiveRestoreEnabled":false,"Isolation":"","InitBinary":"docker-init","ContainerdCommit":{"ID":"1.6.20~ds1-1+deb12u3","Expected":"1.6.20~ds1-1+deb12u3"},"RuncCommit":{"ID":"1.1.5+ds1-1+deb12u1","Expected":"1.1.5+ds1-1+deb12u1"},"InitCommit":{"ID":"","Expected":""},"SecurityOptions":["name=seccomp,profile=default"]}"#;

fn cluster_info(c: &crate::state::Cluster) -> bollard::models::ClusterInfo {
    use bollard::models::*;
    let mut spec = crate::api_swarm::current_spec(c);
    // Autolock is the one setting the simulated swarm acts on: served as it is.
    spec.encryption_config = Some(SwarmSpecEncryptionConfig {
        auto_lock_managers: Some(c.unlock_key.is_some()),
    });
    ClusterInfo {
        id: Some(c.cluster_id.clone()),
        version: Some(ObjectVersion {
            index: Some(c.swarm_version),
        }),
        created_at: Some(rfc3339(c.created)),
        updated_at: Some(rfc3339(c.swarm_updated.unwrap_or(c.created))),
        spec: Some(spec),
        tls_info: Some(TlsInfo {
            trust_root: Some(String::new()),
            cert_issuer_subject: Some("MBMxETAPBgNVBAMTCHN3YXJtLWNh".into()),
            cert_issuer_public_key: Some(String::new()),
        }),
        root_rotation_in_progress: Some(false),
        data_path_port: Some(4789),
        default_addr_pool: None,
        subnet_size: Some(24),
    }
}

fn info(sim: &Sim, s: &Serving) -> Value {
    use bollard::models::*;
    let mut i: SystemInfo = serde_json::from_str(INFO_TEMPLATE).expect("info template");
    let c = sim.state.lock().expect("state lock");
    let now = sim.now();
    let running = c
        .tasks
        .values()
        .filter(|t| {
            t.node_id.as_deref() == Some(&s.node_id) && t.state == crate::state::TState::Running
        })
        .count() as i64;
    i.containers = Some(running);
    i.containers_running = Some(running);
    i.name = Some(s.hostname.clone());
    i.server_version = Some(s.version.clone());
    i.system_time = Some(rfc3339(now));
    i.docker_root_dir = Some("/var/lib/docker".into());
    i.swarm = Some(swarm_info(&c, s));
    i.live_restore_enabled = Some(c.faults.live_restore.contains(&s.hostname));
    let mut v = serde_json::to_value(engine_fields(i, s)).unwrap_or(Value::Null);
    unmodelled_fields(&mut v, s);
    v
}

/// `Swarm`: a manager with a leader also reports the cluster.
fn swarm_info(c: &crate::state::Cluster, s: &Serving) -> bollard::models::SwarmInfo {
    use bollard::models::*;
    let is_mgr = s.role == Role::Manager;
    let managers: Vec<PeerNode> = c
        .nodes
        .iter()
        .filter(|n| n.role == Role::Manager)
        .map(|n| PeerNode {
            node_id: Some(n.id.clone()),
            addr: Some(format!("{}:2377", n.addr)),
        })
        .collect();
    let mut swarm = SwarmInfo {
        node_id: Some(s.node_id.clone()),
        node_addr: Some(s.addr.clone()),
        local_node_state: Some(LocalNodeState::ACTIVE),
        control_available: Some(s.runs_manager),
        error: Some(String::new()),
        remote_managers: Some(managers),
        nodes: None,
        managers: None,
        cluster: None,
    };
    if is_mgr && c.leader.is_some() {
        swarm.nodes = Some(c.nodes.len() as i64);
        swarm.managers = Some(c.managers_total() as i64);
        swarm.cluster = Some(cluster_info(c));
    }
    if s.locked {
        swarm = crate::api_swarm::locked_swarm_info(&s.addr);
    }
    swarm
}

/// The fields each engine version (told apart by its minimum API) adds or nulls.
fn engine_fields(i: bollard::models::SystemInfo, s: &Serving) -> With<bollard::models::SystemInfo> {
    let mut out = With::new(i)
        .with("GenericResources", Value::Null)
        .with("Warnings", Value::Null)
        .with("BridgeNfIptables", json!(true))
        .with("BridgeNfIp6tables", json!(true));
    if let Some(p) = out.extra.get_mut("Plugins") {
        *p = Value::Null;
    }
    let mut plugins = serde_json::to_value(out.inner.plugins.take()).unwrap_or(Value::Null);
    plugins["Authorization"] = Value::Null;
    out = out.with("Plugins", plugins);
    if s.api_min == "1.24" {
        out = out
            .with("CDISpecDirs", json!([]))
            .with("KernelMemoryTCP", json!(true));
        out.inner.containerd_commit = Some(bollard::models::Commit {
            id: Some("1.7.24~ds1-6+deb13u1".into()),
        });
    } else {
        out = out
            .with("KernelMemory", json!(true))
            .with("KernelMemoryTCP", json!(true));
    }
    out
}

/// Fields the engines send that bollard's 1.53 models no longer have.
fn unmodelled_fields(v: &mut Value, s: &Serving) {
    for k in ["ContainerdCommit", "RuncCommit", "InitCommit"] {
        if let Some(o) = v.get_mut(k).and_then(|x| x.as_object_mut()) {
            let id = o.get("ID").cloned().unwrap_or(json!(""));
            o.insert("Expected".into(), id);
        }
    }
    if s.api_min == "1.24"
        && let Some(rt) = v.get_mut("Runtimes").and_then(|x| x.as_object_mut())
    {
        let features = r#"{"ociVersionMin":"1.0.0","ociVersionMax":"1.0.2-dev","hooks":["prestart","createRuntime","createContainer","startContainer","poststart","poststop"]}"#;
        for r in rt.values_mut() {
            r["status"] = json!({"org.opencontainers.runtime-spec.features": features});
        }
    }
    if let Some(o) = v.get_mut("RegistryConfig").and_then(|x| x.as_object_mut()) {
        o.insert("AllowNondistributableArtifactsCIDRs".into(), json!([]));
        o.insert("AllowNondistributableArtifactsHostnames".into(), json!([]));
    }
    if let Some(o) = v
        .get_mut("Swarm")
        .and_then(|x| x.get_mut("Cluster"))
        .and_then(|x| x.as_object_mut())
    {
        o.insert("DefaultAddrPool".into(), Value::Null);
    }
}

fn list_nodes(sim: &Sim, q: &HashMap<String, String>) -> Result<Resp, ApiError> {
    let f = parse_filters(q)?;
    check_keys(
        &f,
        &["id", "label", "membership", "name", "node.label", "role"],
    )?;
    let entries = sim.nodes();
    let out = entries.iter().filter(|e| {
        let n = &e.node;
        f.iter().all(|(k, vals)| {
            vals.is_empty()
                || vals.iter().any(|v| {
                    let spec = n.spec.as_ref();
                    let desc = n.description.as_ref();
                    match k.as_str() {
                        "id" => n.id.as_deref().is_some_and(|id| id.starts_with(v.as_str())),
                        "name" => {
                            desc.and_then(|d| d.hostname.as_deref())
                                .is_some_and(|h| h.starts_with(v.as_str()))
                                || spec
                                    .and_then(|s| s.name.as_deref())
                                    .is_some_and(|h| h.starts_with(v.as_str()))
                        }
                        "role" => spec
                            .and_then(|s| s.role)
                            .is_some_and(|r| r.to_string() == *v),
                        "membership" => v == "accepted",
                        "node.label" => label_match(spec.and_then(|s| s.labels.as_ref()), v),
                        "label" => label_match(
                            desc.and_then(|d| d.engine.as_ref())
                                .and_then(|e| e.labels.as_ref()),
                            v,
                        ),
                        _ => false,
                    }
                })
        })
    });
    Ok(json_list(out.map(|e| &e.json), true))
}

/// Pre-serialized JSON objects as one answer: a list, or the single object.
fn json_list<'a>(items: impl IntoIterator<Item = &'a Bytes>, list: bool) -> Resp {
    let items: Vec<&Bytes> = items.into_iter().collect();
    let mut body = Vec::with_capacity(items.iter().map(|b| b.len() + 1).sum::<usize>() + 2);
    if list {
        body.push(b'[');
    }
    for (i, b) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(b);
    }
    if list {
        body.push(b']');
    }
    let mut r = Response::new(full(body));
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

fn list_services(sim: &Sim, q: &HashMap<String, String>) -> Result<Resp, ApiError> {
    let f = parse_filters(q)?;
    check_keys(&f, &["id", "label", "mode", "name"])?;
    let status = q.get("status").is_some_and(|v| v == "1" || v == "true");
    let snap = sim.snapshot();
    let mut out = vec![];
    for (svc, st) in snap.services.iter().zip(snap.service_status.iter()) {
        let spec = svc.spec.as_ref();
        let ok = f.iter().all(|(k, vals)| {
            vals.is_empty()
                || vals.iter().any(|v| match k.as_str() {
                    "id" => svc
                        .id
                        .as_deref()
                        .is_some_and(|id| id.starts_with(v.as_str())),
                    "name" => spec
                        .and_then(|s| s.name.as_deref())
                        .is_some_and(|n| n.starts_with(v.as_str())),
                    "label" => label_match(spec.and_then(|s| s.labels.as_ref()), v),
                    "mode" => {
                        let global = spec
                            .and_then(|s| s.mode.as_ref())
                            .is_some_and(|m| m.global.is_some());
                        (v == "global") == global
                    }
                    _ => false,
                })
        });
        if ok {
            let mut s = svc.clone();
            if status {
                s.service_status = Some(st.clone());
            }
            out.push(s);
        }
    }
    ok_json(&out)
}

fn task_resp(s: &Serving, tasks: &[Arc<render::TaskEntry>], list: bool) -> Resp {
    // 25.0+ engines add "Volumes" to tasks. Each task's JSON is serialized once per version.
    let newer = s.api_min == "1.24";
    let mut body = Vec::with_capacity(tasks.iter().map(|t| t.json.len() + 20).sum::<usize>() + 2);
    if list {
        body.push(b'[');
    }
    for (i, t) in tasks.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        if newer {
            t.json_with_volumes(&mut body);
        } else {
            body.extend_from_slice(&t.json);
        }
    }
    if list {
        body.push(b']');
    }
    let mut r = Response::new(full(body));
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

fn list_tasks(sim: &Sim, s: &Serving, q: &HashMap<String, String>) -> Result<Resp, ApiError> {
    let f = parse_filters(q)?;
    check_keys(
        &f,
        &[
            "id",
            "label",
            "name",
            "node",
            "service",
            "desired-state",
            "up-to-date",
            "_up-to-date",
            "runtime",
        ],
    )?;
    let snap = sim.snapshot();
    let wanted = TaskFilter::resolve(&sim.state.lock().expect("state lock"), &f);
    for v in f.get("desired-state").into_iter().flatten() {
        if !["running", "shutdown", "accepted"].contains(&v.as_str()) {
            return Err(ApiError::new(
                400,
                format!("Invalid desired-state filter: '{v}'"),
            ));
        }
    }
    let out: Vec<Arc<render::TaskEntry>> = snap
        .tasks
        .iter()
        .filter(|e| wanted.matches(e, &f))
        .cloned()
        .collect();
    Ok(task_resp(s, &out, true))
}

/// The task list's node and service filters (IDs or names) resolved to IDs.
struct TaskFilter {
    node_ids: Option<Vec<String>>,
    svc_ids: Option<Vec<String>>,
    /// `_up-to-date`: the tasks of their service's current template (the CLI's progress
    /// display asks for them).
    up_to_date: Option<HashSet<String>>,
}

impl TaskFilter {
    fn resolve(c: &crate::state::Cluster, f: &BTreeMap<String, Vec<String>>) -> Self {
        let node_ids = f.get("node").filter(|v| !v.is_empty()).map(|vals| {
            vals.iter()
                .filter_map(|v| c.find_node(v).ok().map(|i| c.nodes[i].id.clone()))
                .collect()
        });
        let svc_ids = f
            .get("service")
            .filter(|v| !v.is_empty())
            .map(|vals| vals.iter().filter_map(|v| c.find_service(v).ok()).collect());
        let up_to_date = f.contains_key("_up-to-date").then(|| {
            c.tasks
                .values()
                .filter(|t| {
                    c.services
                        .get(&t.service_id)
                        .is_some_and(|s| s.template == t.template)
                })
                .map(|t| t.id.clone())
                .collect()
        });
        TaskFilter {
            node_ids,
            svc_ids,
            up_to_date,
        }
    }

    fn matches(&self, e: &render::TaskEntry, f: &BTreeMap<String, Vec<String>>) -> bool {
        let k = &e.key;
        if let Some(n) = &self.node_ids
            && !k.node_id.as_ref().is_some_and(|id| n.contains(id))
        {
            return false;
        }
        if let Some(sv) = &self.svc_ids
            && !sv.contains(&k.service_id)
        {
            return false;
        }
        if let Some(u) = &self.up_to_date
            && !u.contains(&k.id)
        {
            return false;
        }
        f.iter().all(|(key, vals)| {
            vals.is_empty()
                || vals.iter().any(|v| match key.as_str() {
                    "id" => k.id.starts_with(v.as_str()),
                    // swarmkit looks a prefix up in a lowercased index and then compares it
                    // with the name as written: a prefix with capitals finds nothing.
                    "name" => {
                        k.name.starts_with(v.as_str())
                            && k.name.to_lowercase().starts_with(v.as_str())
                    }
                    "desired-state" => match v.as_str() {
                        "running" | "accepted" => k.desired_running,
                        _ => !k.desired_running,
                    },
                    "label" => label_match(e.out.inner.labels.as_ref(), v),
                    _ => true,
                })
        })
    }
}

fn list_networks(sim: &Sim, q: &HashMap<String, String>) -> Result<Resp, ApiError> {
    let f = parse_filters(q)?;
    check_keys(
        &f,
        &["dangling", "driver", "id", "label", "name", "scope", "type"],
    )?;
    let c = sim.state.lock().expect("state lock");
    let out: Vec<_> = c
        .networks
        .values()
        .filter(|n| {
            f.iter().all(|(k, vals)| {
                vals.is_empty()
                    || vals.iter().any(|v| match k.as_str() {
                        "name" => n.name.contains(v.as_str()),
                        "id" => n.id.starts_with(v.as_str()),
                        "driver" => v == "overlay",
                        "scope" => v == "swarm",
                        "type" => v == "custom" || (v == "builtin" && n.ingress),
                        "label" => label_match(
                            Some(
                                &n.labels
                                    .iter()
                                    .map(|(a, b)| (a.clone(), b.clone()))
                                    .collect(),
                            ),
                            v,
                        ),
                        _ => true,
                    })
            })
        })
        .map(render::network_summary)
        .collect();
    ok_json(&out)
}

fn events(sim: &Arc<Sim>, q: &HashMap<String, String>) -> Result<Resp, ApiError> {
    let f = parse_filters(q)?;
    let now = sim.now();
    let since = match q.get("since") {
        Some(v) if !v.is_empty() => Some(
            parse_time_arg(v).ok_or_else(|| ApiError::new(400, format!("invalid since: {v}")))?,
        ),
        _ => None,
    };
    let until = match q.get("until") {
        Some(v) if !v.is_empty() => Some(
            parse_time_arg(v).ok_or_else(|| ApiError::new(400, format!("invalid until: {v}")))?,
        ),
        _ => None,
    };
    let matches = move |e: &crate::state::Event| -> bool {
        f.iter().all(|(k, vals)| {
            vals.is_empty()
                || vals.iter().any(|v| match k.as_str() {
                    "type" => e.typ == v,
                    "event" | "action" => e.action == v,
                    "scope" => v == "swarm",
                    "node" => e.typ == "node" && (e.id == *v || e.attrs.get("name") == Some(v)),
                    "service" => {
                        e.typ == "service" && (e.id == *v || e.attrs.get("name") == Some(v))
                    }
                    "network" => {
                        e.typ == "network" && (e.id == *v || e.attrs.get("name") == Some(v))
                    }
                    _ => true,
                })
        })
    };
    let (rx, backlog) = {
        let c = sim.state.lock().expect("state lock");
        let rx = c.event_tx.subscribe();
        let backlog: Vec<crate::state::Event> = match since {
            Some(s) => c
                .events
                .iter()
                .filter(|e| e.time >= s && until.is_none_or(|u| e.time <= u))
                .cloned()
                .collect(),
            None => vec![],
        };
        (rx, backlog)
    };
    let last = backlog.last().map(|e| e.time).unwrap_or(Nanos::MIN);
    let sim2 = sim.clone();
    let stream = async_stream(sim2, rx, backlog, last, until, now, matches);
    let body = StreamBody::new(stream).boxed_unsync();
    let mut r = Response::new(body);
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    Ok(r)
}

fn line(e: &crate::state::Event) -> Result<Frame<Bytes>, Infallible> {
    let mut v = serde_json::to_vec(&render::event(e)).unwrap_or_default();
    v.push(b'\n');
    Ok(Frame::data(Bytes::from(v)))
}

fn async_stream(
    sim: Arc<Sim>,
    mut rx: tokio::sync::broadcast::Receiver<crate::state::Event>,
    backlog: Vec<crate::state::Event>,
    last: Nanos,
    until: Option<Nanos>,
    _now: Nanos,
    matches: impl Fn(&crate::state::Event) -> bool + Send + Sync + 'static,
) -> impl futures::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + 'static {
    let (tx, out) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(256);
    tokio::spawn(async move {
        for e in backlog.iter().filter(|e| matches(e)) {
            if tx.send(line(e)).await.is_err() {
                return;
            }
        }
        // Send headers promptly even when nothing happens.
        if tx.send(Ok(Frame::data(Bytes::new()))).await.is_err() {
            return;
        }
        loop {
            let wait = until.map(|u| sim.clock.to_real(u - sim.now()));
            if until.is_some_and(|u| sim.now() >= u) {
                return;
            }
            let ev = tokio::select! {
                r = rx.recv() => r,
                _ = async {
                    match wait {
                        Some(w) => tokio::time::sleep(w).await,
                        None => std::future::pending().await,
                    }
                } => return,
                _ = tx.closed() => return,
            };
            match ev {
                Ok(e) => {
                    if e.time <= last || until.is_some_and(|u| e.time > u) || !matches(&e) {
                        continue;
                    }
                    if tx.send(line(&e)).await.is_err() {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::pct_decode;

    #[test]
    fn version_prefix() {
        assert_eq!(split_version("/v1.41/nodes"), (Some("1.41"), "/nodes"));
        assert_eq!(split_version("/nodes"), (None, "/nodes"));
        assert_eq!(split_version("/v1.45/_ping"), (Some("1.45"), "/_ping"));
        assert_eq!(split_version("/volumes"), (None, "/volumes"));
    }

    #[test]
    fn filters_both_forms() {
        let mut q = HashMap::new();
        q.insert(
            "filters".to_string(),
            r#"{"node":{"n5":true},"desired-state":["running"]}"#.to_string(),
        );
        let f = parse_filters(&q).unwrap();
        assert_eq!(f["node"], vec!["n5"]);
        assert_eq!(f["desired-state"], vec!["running"]);
        assert_eq!(pct_decode("%7B%22a%22%3A1%7D"), r#"{"a":1}"#);
    }
}
