//! Address accounting per overlay network, as swarmkit's allocator counts it
//! (`manager/allocator/network.go`):
//!
//! - capacity: the subnet's size minus the network address, the broadcast
//!   address and the gateway (a `/27` gives 32 - 3 = 29);
//! - one VIP per network for every service in `vip` endpoint mode attached to it
//!   (none for `dnsrr`); services publishing ports in ingress mode also hold a VIP
//!   on `ingress`;
//! - one address per task and network for every allocated task whose *current*
//!   state is at or before `running`: the allocator frees a task's addresses when
//!   the task is reported past `running` (`t.Status.State > TaskStateRunning`),
//!   whatever its desired state;
//! - one load-balancer address per node and network when the node has a task
//!   of that network at or before `running` (`getNodeNetworks`), and on `ingress`
//!   one per node of the cluster, always.
//!
//! The manual upgrade procedure's arithmetic for the exhaustion case: 32 - 3 - 1 - 5 = 23
//! addresses for tasks on a `/27` with one VIP and tasks on 5 nodes.
//!
//! Engines with API >= 1.52 report the allocator's own counts in
//! `GET /networks/{id}` (`Status.IPAM.Subnets`): [`network_usage`] uses them for `free`
//! when present and keeps the model's figures alongside.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};

use bollard::models::TaskState;

use crate::observe::views::NetworkAttachment;
use crate::observe::{Observation, ObservedNetwork, ObservedService, ObservedTask};
use serde::Serialize;

/// The allocator's own counts (API >= 1.52, `Status.IPAM.Subnets`, summed over subnets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AllocatorCounts {
    /// `IPsInUse`: addresses in use or reserved (network, broadcast, gateway included).
    pub in_use: u64,
    /// `DynamicIPsAvailable`.
    pub available: u64,
}

/// Address usage of one overlay network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkUsage {
    pub id: String,
    pub name: String,
    /// The subnet(s), comma-separated.
    pub subnet: String,
    pub ingress: bool,
    /// Addresses swarm can hand out (subnet size - network - broadcast - gateway).
    pub capacity: u64,
    /// Addresses held by tasks at or before `running`.
    pub used_by_tasks: u64,
    /// Service virtual IPs.
    pub vips: u64,
    /// Node load-balancer attachments.
    pub lb_attachments: u64,
    /// Addresses left: the allocator's `DynamicIPsAvailable` when reported, else
    /// `capacity - used()` (never below 0).
    pub free: u64,
    /// IDs of the nodes holding a load-balancer address on this network, sorted.
    pub lb_nodes: Vec<String>,
    /// The allocator's counts, when the engine reports them.
    pub allocator: Option<AllocatorCounts>,
}

impl NetworkUsage {
    /// Addresses used according to the model.
    pub fn used(&self) -> u64 {
        self.used_by_tasks + self.vips + self.lb_attachments
    }

    /// `capacity - used()` by the model, never below 0.
    pub fn model_free(&self) -> u64 {
        self.capacity.saturating_sub(self.used())
    }
}

/// One network as this module sees it.
#[derive(Debug, Clone)]
pub(crate) struct NetInfo {
    pub id: String,
    pub name: String,
    pub ingress: bool,
    pub overlay: bool,
    pub pools: Vec<Pool>,
    pub status: Option<AllocatorCounts>,
}

#[derive(Debug, Clone)]
pub(crate) struct Pool {
    pub subnet: String,
    pub ip_range: Option<String>,
    pub gateway: Option<String>,
}

impl NetInfo {
    pub(crate) fn from_observed(n: &ObservedNetwork) -> Self {
        let pools = n
            .ipam
            .config
            .iter()
            .filter(|p| !p.subnet.is_empty())
            .map(|p| Pool {
                subnet: p.subnet.clone(),
                ip_range: Some(p.ip_range.clone()).filter(|r| !r.is_empty()),
                gateway: Some(p.gateway.clone()).filter(|g| !g.is_empty()),
            })
            .collect();
        let subnets = n
            .status
            .as_ref()
            .and_then(|s| s.ipam.as_ref())
            .map(|i| &i.subnets)
            .filter(|s| !s.is_empty());
        let status = subnets.and_then(|subnets| {
            let mut c = AllocatorCounts {
                in_use: 0,
                available: 0,
            };
            for s in subnets.values() {
                c.in_use = c.in_use.saturating_add(s.ips_in_use?);
                c.available = c.available.saturating_add(s.dynamic_ips_available?);
            }
            Some(c)
        });
        Self {
            id: n.id.clone(),
            name: n.name.clone(),
            ingress: n.ingress,
            overlay: n.is_overlay(),
            pools,
            status,
        }
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.pools
            .iter()
            .map(pool_capacity)
            .fold(0u64, u64::saturating_add)
    }
}

/// Parses `a.b.c.d/n` or an IPv6 CIDR into (address, prefix length).
fn parse_cidr(s: &str) -> Option<(IpAddr, u32)> {
    let (addr, len) = s.trim().split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    let len: u32 = len.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((addr, len))
}

fn block_size(addr: &IpAddr, len: u32) -> u64 {
    let bits = if addr.is_ipv4() { 32 - len } else { 128 - len };
    if bits >= 64 { u64::MAX } else { 1u64 << bits }
}

fn v4_range(addr: Ipv4Addr, len: u32) -> (u32, u32) {
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    let start = u32::from(addr) & mask;
    (start, start | !mask)
}

/// Usable addresses of one IPAM pool as libnetwork's default IPAM gives them to
/// swarm: the network and broadcast addresses are reserved and the gateway is
/// allocated from the pool.
fn pool_capacity(p: &Pool) -> u64 {
    let Some((addr, len)) = parse_cidr(&p.subnet) else {
        return 0;
    };
    let IpAddr::V4(v4) = addr else {
        // IPv6: no broadcast; the gateway takes one.
        return block_size(&addr, len).saturating_sub(1);
    };
    let (net, bcast) = v4_range(v4, len);
    let gw: Option<u32> = p
        .gateway
        .as_deref()
        .and_then(|g| g.parse::<Ipv4Addr>().ok())
        .map(u32::from);
    let (lo, hi) = match p.ip_range.as_deref().and_then(parse_cidr) {
        Some((IpAddr::V4(r), rlen)) if rlen >= len => v4_range(r, rlen),
        _ => (net, bcast),
    };
    let size = u64::from(hi - lo) + 1;
    let inside = |a: u32| a >= lo && a <= hi;
    let mut reserved = 0u64;
    if len <= 30 {
        reserved += u64::from(inside(net)) + u64::from(inside(bcast));
    }
    // Without an explicit gateway, IPAM takes the first address of the subnet.
    let gw = gw.unwrap_or(net.wrapping_add(1));
    if inside(gw) && gw != net && gw != bcast {
        reserved += 1;
    }
    size.saturating_sub(reserved)
}

/// Resolves the network references found in specs (an ID, a name, or an ID prefix).
#[derive(Debug, Clone)]
pub(crate) struct NetIndex {
    pub nets: Vec<NetInfo>,
    by_id: HashMap<String, usize>,
    by_name: HashMap<String, usize>,
    pub ingress: Option<usize>,
}

impl NetIndex {
    pub(crate) fn of(observation: &Observation) -> Self {
        Self::new(observation.networks().map(NetInfo::from_observed).collect())
    }

    pub(crate) fn new(nets: Vec<NetInfo>) -> Self {
        let mut by_id = HashMap::new();
        let mut by_name = HashMap::new();
        let mut ingress = None;
        for (i, n) in nets.iter().enumerate() {
            by_id.insert(n.id.clone(), i);
            by_name.entry(n.name.clone()).or_insert(i);
            if n.ingress && n.overlay && ingress.is_none() {
                ingress = Some(i);
            }
        }
        Self {
            nets,
            by_id,
            by_name,
            ingress,
        }
    }

    pub(crate) fn resolve(&self, target: &str) -> Option<usize> {
        if target.is_empty() {
            return None;
        }
        if let Some(&i) = self.by_id.get(target).or_else(|| self.by_name.get(target)) {
            return Some(i);
        }
        let mut hits = self
            .nets
            .iter()
            .enumerate()
            .filter(|(_, n)| n.id.starts_with(target));
        match (hits.next(), hits.next()) {
            (Some((i, _)), None) => Some(i),
            _ => None,
        }
    }
}

/// True when the service publishes a port through the routing mesh (ingress mode,
/// the default), which attaches its tasks to `ingress` and gives it a VIP there.
pub(crate) fn publishes_ingress(s: &ObservedService) -> bool {
    s.spec
        .endpoint_spec
        .as_ref()
        .is_some_and(|e| e.ports.iter().any(|p| p.publish_mode != "host"))
}

pub(crate) fn is_dnsrr(s: &ObservedService) -> bool {
    s.spec
        .endpoint_spec
        .as_ref()
        .is_some_and(|e| e.mode == "dnsrr")
}

/// The network references of a service's tasks (TaskTemplate.Networks, else the
/// deprecated Spec.Networks).
pub(crate) fn service_network_targets(s: &ObservedService) -> &[NetworkAttachment] {
    let from_template = &s.spec.task_template.networks;
    if from_template.is_empty() {
        &s.spec.networks
    } else {
        from_template
    }
}

/// Network indexes a task is attached to (its own Spec.Networks, else its
/// service's; plus ingress when the service publishes ingress ports), deduplicated.
pub(crate) fn task_networks(
    t: &ObservedTask,
    service: Option<&ObservedService>,
    idx: &NetIndex,
) -> Vec<usize> {
    let targets = if t.spec.networks.is_empty() {
        service.map(service_network_targets).unwrap_or_default()
    } else {
        &t.spec.networks
    };
    let mut out: Vec<usize> = targets
        .iter()
        .filter_map(|t| idx.resolve(&t.target))
        .filter(|&i| idx.nets[i].overlay)
        .collect();
    if service.is_some_and(publishes_ingress)
        && let Some(i) = idx.ingress
    {
        out.push(i);
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// VIP count per network index for one service.
pub(crate) fn service_vips(s: &ObservedService, idx: &NetIndex) -> Vec<usize> {
    if let Some(vips) = s.endpoint.as_ref().and_then(|e| e.virtual_ips.as_ref()) {
        return vips
            .iter()
            .filter(|v| !v.addr.is_empty())
            .filter_map(|v| idx.resolve(&v.network_id))
            .collect();
    }
    if s.endpoint.is_some() || is_dnsrr(s) {
        // An allocated endpoint without VIPs (dnsrr), or dnsrr by spec.
        return Vec::new();
    }
    let mut out: Vec<usize> = service_network_targets(s)
        .iter()
        .filter_map(|t| idx.resolve(&t.target))
        .filter(|&i| idx.nets[i].overlay)
        .collect();
    if publishes_ingress(s)
        && let Some(i) = idx.ingress
    {
        out.push(i);
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The task holds its addresses: allocated (past `new`) and not reported past `running`.
pub(crate) fn holds_addresses(t: &ObservedTask) -> bool {
    let s = t.state();
    s > TaskState::NEW && s <= TaskState::RUNNING
}

/// The task keeps its node's load-balancer attachments: assigned to a node and not
/// reported past `running`.
pub(crate) fn needs_node_attachment(t: &ObservedTask) -> bool {
    t.state() <= TaskState::RUNNING && t.node().is_some()
}

/// Address usage of every overlay network of the observation. Where the engine reports the
/// allocator's counts (`GET /networks/{id}`, API >= 1.52), `free` is the allocator's.
pub fn network_usage(observation: &Observation) -> Vec<NetworkUsage> {
    usage_of(&NetIndex::of(observation), observation)
}

pub(crate) fn usage_of(idx: &NetIndex, observation: &Observation) -> Vec<NetworkUsage> {
    let n = idx.nets.len();
    let mut vips = vec![0u64; n];
    let mut task_addrs = vec![0u64; n];
    let mut lb: Vec<BTreeSet<&str>> = vec![BTreeSet::new(); n];
    for s in observation.services() {
        for i in service_vips(s, idx) {
            vips[i] += 1;
        }
    }
    for t in observation.tasks() {
        let hold = holds_addresses(t);
        let attach = needs_node_attachment(t);
        if !hold && !attach {
            continue;
        }
        let svc = observation.service(&t.service_id);
        for i in task_networks(t, svc, idx) {
            if hold {
                task_addrs[i] += 1;
            }
            if attach && let Some(node) = t.node() {
                lb[i].insert(node);
            }
        }
    }
    if let Some(i) = idx.ingress {
        for node in observation.nodes() {
            lb[i].insert(&node.id);
        }
    }
    idx.nets
        .iter()
        .enumerate()
        .filter(|(_, net)| net.overlay)
        .map(|(i, net)| {
            let capacity = net.capacity();
            let used = task_addrs[i] + vips[i] + lb[i].len() as u64;
            NetworkUsage {
                id: net.id.clone(),
                name: net.name.clone(),
                subnet: net
                    .pools
                    .iter()
                    .map(|p| p.subnet.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                ingress: net.ingress,
                capacity,
                used_by_tasks: task_addrs[i],
                vips: vips[i],
                lb_attachments: lb[i].len() as u64,
                free: net
                    .status
                    .map_or(capacity.saturating_sub(used), |s| s.available),
                lb_nodes: lb[i].iter().map(|n| n.to_string()).collect(),
                allocator: net.status,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(subnet: &str, range: Option<&str>, gw: Option<&str>) -> u64 {
        pool_capacity(&Pool {
            subnet: subnet.into(),
            ip_range: range.map(Into::into),
            gateway: gw.map(Into::into),
        })
    }

    #[test]
    fn capacities() {
        assert_eq!(cap("10.231.0.0/27", None, Some("10.231.0.1")), 29);
        assert_eq!(cap("10.231.0.0/27", None, None), 29);
        assert_eq!(cap("10.0.0.0/24", None, Some("10.0.0.1")), 253);
        assert_eq!(cap("10.0.0.0/16", None, None), 65533);
        assert_eq!(cap("10.0.0.0/29", None, None), 5);
        // A range inside the subnet, gateway outside it.
        assert_eq!(
            cap("10.0.0.0/24", Some("10.0.0.128/28"), Some("10.0.0.1")),
            16
        );
        // A range at the start holds the network address and the gateway.
        assert_eq!(cap("10.0.0.0/24", Some("10.0.0.0/28"), None), 14);
        assert_eq!(cap("garbage", None, None), 0);
    }
}
