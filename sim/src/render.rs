//! Rendering the state as the engine's JSON, with bollard's model types (so shapes cannot
//! drift) plus the few fields bollard's 1.53 models dropped (`NetworksAttachments`, ...).

use std::collections::HashMap;
use std::sync::Arc;

use bollard::models::*;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::clock::{Nanos, rfc3339};
use crate::state::*;

/// A bollard object plus fields its models do not have.
#[derive(Debug, Clone, Serialize)]
pub struct With<T> {
    #[serde(flatten)]
    pub inner: T,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl<T> With<T> {
    pub fn new(inner: T) -> Self {
        With {
            inner,
            extra: Map::new(),
        }
    }

    pub fn with(mut self, k: &str, v: Value) -> Self {
        self.extra.insert(k.to_string(), v);
        self
    }
}

pub type TaskOut = With<Task>;

const TRUST_ROOT: &str = "-----BEGIN CERTIFICATE-----\nMIIBajCCARCgAwIBAgIUKGneNdrZQ3vmiYCbQtWEA+R8BYUwCgYIKoZIzj0EAwIw\nEzERMA8GA1UEAxMIc3dhcm0tY2EwHhcNMjYxMTI1MDc0NzAwWhcNNDYxMTIwMDc0\nNzAwWjATMREwDwYDVQQDEwhzd2FybS1jYTBZMBMGByqGSM49AgEGCCqGSM49AwEH\nA0IABOZwcwpp1CBFVtcQWbHd7AKB2HYFgeUjcbK4ui97lG7nyVcKOSihh0EO3Rmg\nBo/ibohBbYvH3AlKjOEdEfeQ9PujQjBAMA4GA1UdDwEB/wQEAwIBBjAPBgNVHRMB\nAf8EBTADAQH/MB0GA1UdDgQWBBT86RPgV3erK1tk96lAjeGQN3TaJTAKBggqhkjO\nPQQDAgNIADBFAiEA89c5JG55u9bBrsXSstBiNZ1i7nW0pT60aN42APRkOpsCIDCD\ndCFxnXmz1AWzScCkvCjohP6KRmR72ruhHdZoGjod\n-----END CERTIFICATE-----\n";
const ISSUER_SUBJECT: &str = "MBMxETAPBgNVBAMTCHN3YXJtLWNh";
const ISSUER_KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE5nBzCmnUIEVW1xBZsd3sAoHYdgWB5SNxsri6L3uUbufJVwo5KKGHQQ7dGaAGj+JuiEFti8fcCUqM4R0R95D0+w==";
pub const MEM: i64 = 25_276_063_744;

fn tls() -> TlsInfo {
    TlsInfo {
        trust_root: Some(TRUST_ROOT.into()),
        cert_issuer_subject: Some(ISSUER_SUBJECT.into()),
        cert_issuer_public_key: Some(ISSUER_KEY.into()),
    }
}

fn plugins() -> Vec<EngineDescriptionPlugins> {
    let mut v = vec![];
    for l in [
        "awslogs",
        "fluentd",
        "gcplogs",
        "gelf",
        "journald",
        "json-file",
        "local",
        "logentries",
        "splunk",
        "syslog",
    ] {
        v.push(("Log", l));
    }
    for n in ["bridge", "host", "ipvlan", "macvlan", "null", "overlay"] {
        v.push(("Network", n));
    }
    v.push(("Volume", "local"));
    v.into_iter()
        .map(|(t, n)| EngineDescriptionPlugins {
            typ: Some(t.into()),
            name: Some(n.into()),
        })
        .collect()
}

fn hm(m: &std::collections::BTreeMap<String, String>) -> HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

pub fn node(c: &Cluster, n: &NodeRec) -> Node {
    let is_leader = c.leader.as_deref() == Some(&n.id);
    Node {
        id: Some(n.id.clone()),
        version: Some(ObjectVersion {
            index: Some(n.version),
        }),
        created_at: Some(rfc3339(n.created)),
        updated_at: Some(rfc3339(n.updated)),
        spec: Some(NodeSpec {
            name: n.spec_name.clone(),
            labels: Some(hm(&n.labels)),
            role: Some(match n.role {
                Role::Manager => NodeSpecRoleEnum::MANAGER,
                Role::Worker => NodeSpecRoleEnum::WORKER,
            }),
            availability: Some(match n.availability {
                Availability::Active => NodeSpecAvailabilityEnum::ACTIVE,
                Availability::Pause => NodeSpecAvailabilityEnum::PAUSE,
                Availability::Drain => NodeSpecAvailabilityEnum::DRAIN,
            }),
        }),
        description: Some(NodeDescription {
            hostname: Some(n.hostname.clone()),
            platform: Some(Platform {
                architecture: Some("x86_64".into()),
                os: Some("linux".into()),
            }),
            resources: Some(ResourceObject {
                nano_cpus: Some(2_000_000_000),
                memory_bytes: Some(MEM),
                generic_resources: None,
            }),
            engine: Some(EngineDescription {
                engine_version: Some(n.engine_version.clone()),
                labels: None,
                plugins: Some(plugins()),
            }),
            tls_info: Some(tls()),
        }),
        status: Some(NodeStatus {
            state: Some(match n.state {
                crate::state::NodeState::Ready => bollard::models::NodeState::READY,
                crate::state::NodeState::Down => bollard::models::NodeState::DOWN,
                crate::state::NodeState::Unknown => bollard::models::NodeState::UNKNOWN,
            }),
            message: (!n.message.is_empty()).then(|| n.message.clone()),
            addr: Some(n.addr.clone()),
        }),
        manager_status: (n.role == Role::Manager).then(|| ManagerStatus {
            leader: is_leader.then_some(true),
            reachability: Some(if n.reachable {
                Reachability::REACHABLE
            } else {
                Reachability::UNREACHABLE
            }),
            addr: Some(format!("{}:2377", n.addr)),
        }),
    }
}

fn task_spec(c: &Cluster, s: &ServiceRec) -> TaskSpec {
    TaskSpec {
        container_spec: Some(TaskSpecContainerSpec {
            image: Some(s.image.clone()),
            args: (!s.args.is_empty()).then(|| s.args.clone()),
            mounts: (!s.mounts.is_empty()).then(|| {
                s.mounts
                    .iter()
                    .map(|(src, dst)| Mount {
                        typ: Some(MountType::VOLUME),
                        source: Some(src.clone()),
                        target: Some(dst.clone()),
                        ..Default::default()
                    })
                    .collect()
            }),
            init: Some(false),
            dns_config: Some(TaskSpecContainerSpecDnsConfig::default()),
            isolation: Some(TaskSpecContainerSpecIsolationEnum::DEFAULT),
            ..Default::default()
        }),
        resources: Some(TaskSpecResources {
            limits: Some(Limit::default()),
            reservations: Some(ResourceObject::default()),
            ..Default::default()
        }),
        placement: Some(TaskSpecPlacement {
            constraints: (!s.constraint_strs.is_empty()).then(|| s.constraint_strs.clone()),
            ..Default::default()
        }),
        networks: Some(
            s.networks
                .iter()
                .map(|n| NetworkAttachmentConfig {
                    target: Some(c.networks.get(n).map(|x| x.id.clone()).unwrap_or_default()),
                    ..Default::default()
                })
                .collect(),
        ),
        force_update: Some(s.force_update),
        ..Default::default()
    }
}

pub fn service(c: &Cluster, s: &ServiceRec, counts: Option<(u64, u64)>) -> Service {
    let mut tmpl = task_spec(c, s);
    tmpl.runtime = Some("container".into());
    let mode = match s.mode {
        Mode::Replicated(n) => ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated {
                replicas: Some(n as i64),
            }),
            ..Default::default()
        },
        Mode::Global => ServiceSpecMode {
            global: Some(HashMap::new()),
            ..Default::default()
        },
    };
    let ep_mode = match s.endpoint_mode {
        EndpointMode::Vip => EndpointSpecModeEnum::VIP,
        EndpointMode::Dnsrr => EndpointSpecModeEnum::DNSRR,
    };
    let endpoint = match s.endpoint_mode {
        EndpointMode::Vip => ServiceEndpoint {
            spec: Some(EndpointSpec {
                mode: Some(ep_mode),
                ports: None,
            }),
            ports: None,
            virtual_ips: Some(
                s.vips
                    .iter()
                    .map(|(n, a)| ServiceEndpointVirtualIps {
                        network_id: Some(n.clone()),
                        addr: c.networks.get(n).map(|net| net.pool.cidr(*a)),
                    })
                    .collect(),
            ),
        },
        // The engine reports an empty endpoint spec for dnsrr services.
        EndpointMode::Dnsrr => ServiceEndpoint {
            spec: Some(EndpointSpec::default()),
            ..Default::default()
        },
    };
    Service {
        id: Some(s.id.clone()),
        version: Some(ObjectVersion {
            index: Some(s.version),
        }),
        created_at: Some(rfc3339(s.created)),
        updated_at: Some(rfc3339(s.updated)),
        spec: Some(ServiceSpec {
            name: Some(s.name.clone()),
            labels: Some(hm(&s.labels)),
            task_template: Some(tmpl),
            mode: Some(mode),
            endpoint_spec: Some(EndpointSpec {
                mode: Some(ep_mode),
                ports: None,
            }),
            ..Default::default()
        }),
        endpoint: Some(endpoint),
        service_status: counts.map(|(running, desired)| ServiceServiceStatus {
            running_tasks: Some(running),
            desired_tasks: Some(desired),
            completed_tasks: Some(0),
        }),
        ..Default::default()
    }
}

/// The swarmkit network object embedded in a task's `NetworksAttachments`.
pub fn network_object(n: &NetworkRec) -> Value {
    let ipam = json!({
        "Driver": {"Name": "default"},
        "Configs": [{"Subnet": n.pool.subnet(), "Gateway": n.pool.gateway()}]
    });
    let mut spec = json!({
        "Name": n.name,
        "Labels": n.labels,
        "DriverConfiguration": {"Name": "overlay"},
        "IPAMOptions": ipam,
        "Scope": "swarm"
    });
    if n.attachable {
        spec["Attachable"] = json!(true);
    }
    if n.ingress {
        spec["Ingress"] = json!(true);
    }
    json!({
        "ID": n.id,
        "Version": {"Index": n.version},
        "CreatedAt": rfc3339(n.created),
        "UpdatedAt": rfc3339(n.created),
        "Spec": spec,
        "DriverState": {
            "Name": "overlay",
            "Options": {"com.docker.network.driver.overlay.vxlanid_list": n.vxlan.to_string()}
        },
        "IPAMOptions": ipam
    })
}

pub fn task(c: &Cluster, t: &TaskRec, net_objs: &HashMap<String, Value>) -> TaskOut {
    let svc = c.services.get(&t.service_id);
    let spec = svc.map(|s| {
        let mut spec = task_spec(c, s);
        if let Some(cs) = spec.container_spec.as_mut() {
            cs.image = Some(t.image.clone());
        }
        spec
    });
    let st = match t.state {
        TState::New => TaskState::NEW,
        TState::Pending => TaskState::PENDING,
        TState::Assigned => TaskState::ASSIGNED,
        TState::Accepted => TaskState::ACCEPTED,
        TState::Preparing => TaskState::PREPARING,
        TState::Starting => TaskState::STARTING,
        TState::Running => TaskState::RUNNING,
        TState::Complete => TaskState::COMPLETE,
        TState::Shutdown => TaskState::SHUTDOWN,
        TState::Failed => TaskState::FAILED,
        TState::Rejected => TaskState::REJECTED,
        TState::Orphaned => TaskState::ORPHANED,
    };
    let desired = match t.desired {
        TState::Running => TaskState::RUNNING,
        _ => TaskState::SHUTDOWN,
    };
    let task = Task {
        id: Some(t.id.clone()),
        version: Some(ObjectVersion {
            index: Some(t.version),
        }),
        created_at: Some(rfc3339(t.created)),
        updated_at: Some(rfc3339(t.updated)),
        labels: Some(HashMap::new()),
        spec,
        service_id: Some(t.service_id.clone()),
        slot: t.slot.map(|s| s as i64),
        node_id: t.node_id.clone(),
        status: Some(TaskStatus {
            timestamp: Some(rfc3339(t.status_at)),
            state: Some(st),
            message: Some(t.message.clone()),
            err: t.err.clone(),
            container_status: Some(ContainerStatus {
                container_id: Some(t.container_id.clone().unwrap_or_default()),
                pid: Some(if t.state == TState::Running { t.pid } else { 0 }),
                exit_code: Some(t.exit_code),
            }),
            port_status: Some(PortStatus::default()),
        }),
        desired_state: Some(desired),
        ..Default::default()
    };
    let mut out = With::new(task);
    // Addresses: held ones, or (past running) the ones the task had, as the engine keeps them.
    let nets: Vec<(String, Option<u32>)> = if !t.addresses.is_empty() {
        t.addresses
            .iter()
            .map(|(n, a)| (n.clone(), Some(*a)))
            .collect()
    } else {
        svc.map(|s| s.networks.iter().map(|n| (n.clone(), None)).collect())
            .unwrap_or_default()
    };
    if !nets.is_empty() {
        let atts: Vec<Value> = nets
            .iter()
            .filter_map(|(n, a)| {
                let net = c.networks.get(n)?;
                let addrs: Vec<String> = a.map(|a| net.pool.cidr(a)).into_iter().collect();
                Some(json!({"Network": net_objs.get(n).cloned().unwrap_or(Value::Null), "Addresses": addrs}))
            })
            .collect();
        out = out.with("NetworksAttachments", Value::Array(atts));
    }
    out
}

/// `GET /networks/{id}` (the manager's view: `Containers` and `Peers` are those of the
/// serving node).
pub fn network_inspect(
    c: &Cluster,
    n: &NetworkRec,
    local_node: Option<&str>,
    verbose: bool,
) -> With<NetworkInspect> {
    let local = local_node.filter(|l| n.lb.contains_key(*l));
    let has_local = local.is_some();
    let inspect = NetworkInspect {
        name: Some(n.name.clone()),
        id: Some(n.id.clone()),
        created: Some(rfc3339(n.created)),
        scope: Some("swarm".into()),
        driver: Some("overlay".into()),
        enable_ipv6: Some(false),
        internal: Some(false),
        attachable: Some(n.attachable),
        ingress: Some(n.ingress),
        config_from: Some(ConfigReference {
            network: Some(String::new()),
        }),
        config_only: Some(false),
        options: Some(HashMap::from([(
            "com.docker.network.driver.overlay.vxlanid_list".to_string(),
            n.vxlan.to_string(),
        )])),
        labels: has_local.then(|| hm(&n.labels)),
        peers: has_local.then(|| network_peers(c, n)),
        containers: local.map(|l| local_endpoints(c, n, l)),
        services: local.filter(|_| verbose).map(|_| network_services(c, n)),
        ..Default::default()
    };
    let mut out = With::new(inspect).with(
        "IPAM",
        json!({
            "Driver": "default",
            "Options": null,
            "Config": [{"Subnet": n.pool.subnet(), "Gateway": n.pool.gateway()}]
        }),
    );
    if !has_local {
        out = out
            .with("Containers", Value::Null)
            .with("Labels", spec_labels(n));
    }
    out
}

/// The serving node's endpoints on the network: its running tasks' containers, then its
/// load-balancer endpoint.
fn local_endpoints(c: &Cluster, n: &NetworkRec, local: &str) -> HashMap<String, EndpointResource> {
    let mut containers: HashMap<String, EndpointResource> = HashMap::new();
    for t in c.tasks.values() {
        if t.node_id.as_deref() != Some(local) || t.state != TState::Running {
            continue;
        }
        for (net, a) in &t.addresses {
            if net != &n.id {
                continue;
            }
            let name = c
                .services
                .get(&t.service_id)
                .map(|s| match t.slot {
                    Some(slot) => format!("{}.{}.{}", s.name, slot, t.id),
                    None => format!("{}.{}.{}", s.name, local, t.id),
                })
                .unwrap_or_default();
            let cid = t.container_id.clone().unwrap_or_default();
            containers.insert(
                cid.clone(),
                EndpointResource {
                    name: Some(name),
                    endpoint_id: Some(cid.chars().rev().collect()),
                    mac_address: Some(mac(n.pool.ip(*a))),
                    ipv4_address: Some(n.pool.cidr(*a)),
                    ipv6_address: Some(String::new()),
                },
            );
        }
    }
    if let Some(a) = n.lb.get(local) {
        let (key, name) = if n.ingress {
            ("ingress-sbox".to_string(), "ingress-endpoint".to_string())
        } else {
            (format!("lb-{}", n.name), format!("{}-endpoint", n.name))
        };
        containers.insert(
            key,
            EndpointResource {
                name: Some(name),
                endpoint_id: Some(format!("{:0>64}", n.id)),
                mac_address: Some(mac(n.pool.ip(*a))),
                ipv4_address: Some(n.pool.cidr(*a)),
                ipv6_address: Some(String::new()),
            },
        );
    }
    containers
}

/// Every node with a load-balancer address on the network, in node order.
fn network_peers(c: &Cluster, n: &NetworkRec) -> Vec<PeerInfo> {
    c.nodes
        .iter()
        .filter(|node| n.lb.contains_key(&node.id))
        .map(|node| PeerInfo {
            name: Some(node.id[..12].to_string()),
            ip: Some(node.addr.clone()),
        })
        .collect()
}

/// `?verbose=true`: each service on the network with its VIP and running tasks.
fn network_services(c: &Cluster, n: &NetworkRec) -> HashMap<String, Value> {
    let mut services: HashMap<String, Value> = HashMap::new();
    for s in c.services.values() {
        if !s.networks.contains(&n.id) {
            continue;
        }
        let vip = s
            .vips
            .iter()
            .find(|(net, _)| net == &n.id)
            .map(|(_, a)| n.pool.ip(*a).to_string())
            .unwrap_or_else(|| "<nil>".into());
        let tasks: Vec<Value> = c
            .tasks
            .values()
            .filter(|t| t.service_id == s.id && t.state == TState::Running)
            .filter_map(|t| {
                let (_, a) = t.addresses.iter().find(|(net, _)| net == &n.id)?;
                let host = t
                    .node_id
                    .as_deref()
                    .and_then(|id| c.nodes.iter().find(|x| x.id == id))
                    .map(|x| x.addr.clone())
                    .unwrap_or_default();
                Some(json!({
                    "Name": format!("{}.{}.{}", s.name, t.slot.map(|x| x.to_string()).unwrap_or_else(|| t.node_id.clone().unwrap_or_default()), t.id),
                    "EndpointID": t.container_id.clone().unwrap_or_default(),
                    "EndpointIP": n.pool.ip(*a).to_string(),
                    "Info": {"Host IP": host}
                }))
            })
            .collect();
        services.insert(
            s.name.clone(),
            json!({"VIP": vip, "Ports": [], "LocalLBIndex": 256, "Tasks": tasks}),
        );
    }
    services
}

fn mac(ip: std::net::Ipv4Addr) -> String {
    let o = ip.octets();
    format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

/// `GET /networks` entries (the engine lists swarm networks without containers).
pub fn network_summary(n: &NetworkRec) -> With<NetworkSummary> {
    let s = NetworkSummary {
        name: Some(n.name.clone()),
        id: Some(n.id.clone()),
        created: Some(rfc3339(n.created)),
        scope: Some("swarm".into()),
        driver: Some("overlay".into()),
        enable_ipv6: Some(false),
        internal: Some(false),
        attachable: Some(n.attachable),
        ingress: Some(n.ingress),
        config_from: Some(ConfigReference {
            network: Some(String::new()),
        }),
        config_only: Some(false),
        options: Some(HashMap::from([(
            "com.docker.network.driver.overlay.vxlanid_list".to_string(),
            n.vxlan.to_string(),
        )])),
        ..Default::default()
    };
    With::new(s)
        .with(
            "IPAM",
            json!({
                "Driver": "default",
                "Options": null,
                "Config": [{"Subnet": n.pool.subnet(), "Gateway": n.pool.gateway()}]
            }),
        )
        .with("Containers", Value::Null)
        .with("Labels", spec_labels(n))
}

/// A swarm network's labels as the cluster answers them: `null` when it has none.
fn spec_labels(n: &NetworkRec) -> Value {
    if n.labels.is_empty() {
        Value::Null
    } else {
        json!(n.labels)
    }
}

/// A read-only, cheaply shared view of the state, rebuilt when the state changes.
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub services: Vec<Service>,
    pub service_status: Vec<ServiceServiceStatus>,
    pub tasks: Vec<Arc<TaskEntry>>,
}

/// A rendered task: its lookup keys, its object and its JSON (serialized once per version).
#[derive(Debug)]
pub struct TaskEntry {
    pub key: TaskKey,
    pub out: TaskOut,
    pub json: bytes::Bytes,
}

impl TaskEntry {
    /// The JSON as a 25.0+ engine sends it (with `"Volumes":null`).
    pub fn json_with_volumes(&self, buf: &mut Vec<u8>) {
        let j = &self.json[..];
        buf.extend_from_slice(&j[..j.len() - 1]);
        buf.extend_from_slice(b",\"Volumes\":null}");
    }
}

/// What the task filters look at.
#[derive(Debug, Clone)]
pub struct TaskKey {
    pub id: String,
    pub service_id: String,
    pub node_id: Option<String>,
    pub desired_running: bool,
    pub name: String,
}

/// Keeps rendered tasks between snapshots: only changed tasks are rendered again.
#[derive(Debug, Default)]
pub struct RenderCache {
    tasks: HashMap<String, (u64, Arc<TaskEntry>)>,
    net_versions: Vec<(String, u64)>,
    service_names: Vec<(String, String)>,
}

/// A rendered node: its object (for filters) and its JSON (serialized once per version).
#[derive(Debug)]
pub struct NodeEntry {
    pub node: Node,
    pub json: bytes::Bytes,
}

/// Keeps rendered nodes between listings: only changed nodes are rendered again.
#[derive(Debug, Default)]
pub struct NodeCache {
    nodes: HashMap<String, (u64, bool, Arc<NodeEntry>)>,
}

/// Every node, rendered; apart from the task snapshot, so that a node listing costs what the
/// nodes cost.
pub fn node_entries(c: &Cluster, cache: &mut NodeCache) -> Vec<Arc<NodeEntry>> {
    let mut out = Vec::with_capacity(c.nodes.len());
    for n in &c.nodes {
        let leader = c.leader.as_deref() == Some(&n.id);
        match cache.nodes.get(&n.id) {
            Some((v, l, e)) if *v == n.version && *l == leader => out.push(e.clone()),
            _ => {
                let node = node(c, n);
                let json = bytes::Bytes::from(serde_json::to_vec(&node).unwrap_or_default());
                let e = Arc::new(NodeEntry { node, json });
                cache
                    .nodes
                    .insert(n.id.clone(), (n.version, leader, e.clone()));
                out.push(e);
            }
        }
    }
    if cache.nodes.len() != c.nodes.len() {
        cache
            .nodes
            .retain(|id, _| c.nodes.iter().any(|n| &n.id == id));
    }
    out
}

pub fn snapshot(c: &Cluster, cache: &mut RenderCache) -> Snapshot {
    let counts = c.service_counts();
    let mut services = vec![];
    let mut service_status = vec![];
    for s in c.services.values() {
        let cnt = counts.get(&s.id).copied().unwrap_or((0, 0));
        services.push(service(c, s, None));
        service_status.push(ServiceServiceStatus {
            running_tasks: Some(cnt.0),
            desired_tasks: Some(cnt.1),
            completed_tasks: Some(0),
        });
    }
    let net_versions: Vec<(String, u64)> = c
        .networks
        .values()
        .map(|n| (n.id.clone(), n.version))
        .collect();
    let service_names: Vec<(String, String)> = c
        .services
        .values()
        .map(|s| (s.id.clone(), s.name.clone()))
        .collect();
    if net_versions != cache.net_versions || service_names != cache.service_names {
        cache.tasks.clear();
        cache.net_versions = net_versions;
        cache.service_names = service_names;
    }
    let mut net_objs: Option<HashMap<String, Value>> = None;
    let mut tasks = Vec::with_capacity(c.tasks.len());
    for t in c.tasks.values() {
        if let Some((v, e)) = cache.tasks.get(&t.id)
            && *v == t.version
        {
            tasks.push(e.clone());
            continue;
        }
        let objs = net_objs.get_or_insert_with(|| {
            c.networks
                .values()
                .map(|n| (n.id.clone(), network_object(n)))
                .collect()
        });
        let out = task(c, t, objs);
        let json = bytes::Bytes::from(serde_json::to_vec(&out).unwrap_or_default());
        let sname = c
            .services
            .get(&t.service_id)
            .map(|s| s.name.as_str())
            .unwrap_or("");
        // swarmkit's `naming.Task`: `service.slot.id`, or `service.node.id` for global tasks.
        let name = match t.slot {
            Some(s) => format!("{sname}.{s}.{}", t.id),
            None => format!("{sname}.{}.{}", t.node_id.as_deref().unwrap_or(""), t.id),
        };
        let e = Arc::new(TaskEntry {
            key: TaskKey {
                id: t.id.clone(),
                service_id: t.service_id.clone(),
                node_id: t.node_id.clone(),
                desired_running: t.desired == TState::Running,
                name,
            },
            out,
            json,
        });
        cache.tasks.insert(t.id.clone(), (t.version, e.clone()));
        tasks.push(e);
    }
    if cache.tasks.len() != c.tasks.len() {
        cache.tasks.retain(|id, _| c.tasks.contains_key(id));
    }
    Snapshot {
        generation: c.generation,
        services,
        service_status,
        tasks,
    }
}

pub fn event(e: &Event) -> EventMessage {
    EventMessage {
        typ: Some(match e.typ {
            "node" => EventMessageTypeEnum::NODE,
            "service" => EventMessageTypeEnum::SERVICE,
            "network" => EventMessageTypeEnum::NETWORK,
            _ => EventMessageTypeEnum::DAEMON,
        }),
        action: Some(e.action.to_string()),
        actor: Some(EventActor {
            id: Some(e.id.clone()),
            attributes: Some(
                e.attrs
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
        }),
        scope: Some(EventMessageScopeEnum::SWARM),
        time: Some(e.time / 1_000_000_000),
        time_nano: Some(e.time),
    }
}

pub fn now_string(n: Nanos) -> String {
    rfc3339(n)
}
