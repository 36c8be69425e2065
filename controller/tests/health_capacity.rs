//! Address accounting and drain prediction: the real captures, the seed's case,
//! and a property test over many random small clusters.

mod common;

use common::{capture, obs};

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng};
use std::collections::{BTreeSet, HashMap};

use bollard::models::*;
use swarm_upgrade::health::{
    DrainBlocker, DrainPrediction, NetworkUsage, network_usage, predict_drain, predict_drain_nodes,
};

/// The operator's view of one node (through its JSON).
fn observed(n: &bollard::models::Node) -> swarm_upgrade::observe::ObservedNode {
    serde_json::from_value(serde_json::to_value(n).expect("serializes")).expect("a node")
}

/// Like [`obs`], with networks as `GET /networks/{id}` answers them.
fn obs_inspected(
    nodes: &[bollard::models::Node],
    services: &[bollard::models::Service],
    inspected: &[bollard::models::NetworkInspect],
    tasks: &[bollard::models::Task],
) -> swarm_upgrade::observe::Observation {
    let mut o = obs(nodes, services, &[], tasks);
    for n in inspected {
        let json = serde_json::to_value(n).expect("serializes");
        o.upsert_network(serde_json::from_value(json).expect("a network"));
    }
    o
}

struct Cluster {
    networks: Vec<Network>,
    services: Vec<Service>,
    tasks: Vec<Task>,
    nodes: Vec<Node>,
}

fn lab_20() -> Cluster {
    Cluster {
        networks: capture("20.10.24/networks.json"),
        services: capture("20.10.24/services.json"),
        tasks: capture("20.10.24/tasks.json"),
        nodes: capture("20.10.24/nodes.json"),
    }
}

fn by_name<'a>(u: &'a [NetworkUsage], name: &str) -> &'a NetworkUsage {
    u.iter().find(|n| n.name == name).unwrap()
}

fn node_id(c: &Cluster, host: &str) -> String {
    c.nodes
        .iter()
        .find(|n| n.description.as_ref().unwrap().hostname.as_deref() == Some(host))
        .unwrap()
        .id
        .clone()
        .unwrap()
}

#[test]
fn the_captured_networks_count_as_the_allocator_did() {
    let c = lab_20();
    let u = network_usage(&obs(&c.nodes, &c.services, &c.networks, &c.tasks));
    // Only the swarm overlays: bridge, host, none, docker_gwbridge are not counted.
    let names: BTreeSet<&str> = u.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, BTreeSet::from(["ex_default", "ingress", "tnet"]));

    // The seed's case: 32 - 3 = 29 usable; 1 VIP + 24 tasks + 4 nodes = 29.
    let ex = by_name(&u, "ex_default");
    assert_eq!(ex.subnet, "10.231.0.0/27");
    assert_eq!(
        (
            ex.capacity,
            ex.vips,
            ex.used_by_tasks,
            ex.lb_attachments,
            ex.free
        ),
        (29, 1, 24, 4, 0)
    );
    // n1 (whose tasks were all rejected) has no load-balancer address there.
    assert!(!ex.lb_nodes.contains(&node_id(&c, "n1")));
    assert_eq!(ex.lb_nodes.len(), 4);
    // With tasks on all 5 nodes only 32 - 3 - 1 - 5 = 23 task addresses fit.
    assert_eq!(ex.capacity - ex.vips - 5, 23);

    // tnet /24: test_client's VIP (test_service is dnsrr: none), 5 + 2 tasks, 5 nodes.
    // The verbose capture shows exactly .2-.14 taken: 13 addresses.
    let tnet = by_name(&u, "tnet");
    assert_eq!(
        (
            tnet.capacity,
            tnet.vips,
            tnet.used_by_tasks,
            tnet.lb_attachments,
            tnet.free
        ),
        (253, 1, 7, 5, 240)
    );
    assert_eq!(tnet.used(), 13);

    // ingress: one load-balancer address per node, nothing else.
    let ingress = by_name(&u, "ingress");
    assert!(ingress.ingress);
    assert_eq!(
        (
            ingress.capacity,
            ingress.vips,
            ingress.used_by_tasks,
            ingress.lb_attachments,
            ingress.free
        ),
        (253, 0, 0, 5, 248)
    );
    assert!(u.iter().all(|n| n.allocator.is_none()));
}

#[test]
fn the_mixed_version_capture_counts_the_same() {
    let mut networks: Vec<Network> = vec![capture("26.1.5/network-ex_default.json")];
    networks.push(capture("20.10.24/network-tnet.json"));
    let services: Vec<Service> = capture("26.1.5/services.json");
    let tasks: Vec<Task> = capture("26.1.5/tasks.json");
    let nodes: Vec<Node> = capture("26.1.5/nodes-mixed-versions.json");
    let u = network_usage(&obs(&nodes, &services, &networks, &tasks));
    let ex = by_name(&u, "ex_default");
    assert_eq!((ex.used(), ex.free, ex.lb_attachments), (29, 0, 4));
    // n1's shut-down tasks freed their addresses (.13 was reused by pvewfnxn).
    let tnet = by_name(&u, "tnet");
    assert_eq!(
        (tnet.used_by_tasks, tnet.lb_attachments, tnet.free),
        (7, 5, 240)
    );
}

#[test]
fn allocator_counts_are_used_when_the_engine_reports_them() {
    let mut raw: serde_json::Value = capture("26.1.5/network-ex_default-verbose.json");
    let c = lab_20();
    // API < 1.52: no Status, the model decides.
    let inspect: NetworkInspect = serde_json::from_value(raw.clone()).unwrap();
    let u = network_usage(&obs_inspected(&c.nodes, &c.services, &[inspect], &c.tasks));
    assert_eq!((u[0].free, u[0].allocator), (0, None));

    // API >= 1.52: Status.IPAM.Subnets (IPsInUse counts the 3 reserved too).
    raw["Status"] = serde_json::json!({"IPAM": {"Subnets": {"10.231.0.0/27": {
        "IPsInUse": 32, "DynamicIPsAvailable": 0}}}});
    let inspect: NetworkInspect = serde_json::from_value(raw.clone()).unwrap();
    let u = network_usage(&obs_inspected(&c.nodes, &c.services, &[inspect], &c.tasks));
    let a = u[0].allocator.unwrap();
    assert_eq!((a.in_use, a.available, u[0].free), (32, 0, 0));
    assert_eq!(
        a.in_use,
        u[0].used() + 3,
        "the model agrees with the allocator"
    );

    // When they disagree the allocator's free count wins; the model stays visible.
    raw["Status"]["IPAM"]["Subnets"]["10.231.0.0/27"]["DynamicIPsAvailable"] = 3.into();
    let inspect: NetworkInspect = serde_json::from_value(raw).unwrap();
    let u = network_usage(&obs_inspected(&c.nodes, &c.services, &[inspect], &c.tasks));
    assert_eq!((u[0].free, u[0].model_free()), (3, 0));
}

#[test]
fn the_seeds_exhaustion_is_predicted_before_draining_a_manager() {
    let c = lab_20();
    let n1 = node_id(&c, "n1");
    let n2 = node_id(&c, "n2");
    let p = predict_drain(&n2, &obs(&c.nodes, &c.services, &c.networks, &c.tasks));
    // n2's 6 ex_service tasks all go to n1, the only node without one.
    let ex_moves: Vec<_> = p
        .moves
        .iter()
        .filter(|m| m.service == "ex_service")
        .collect();
    assert_eq!(ex_moves.len(), 6);
    assert!(
        ex_moves
            .iter()
            .all(|m| m.to_node == n1 && m.to_hostname == "n1")
    );
    // The global test_service task just goes away.
    assert_eq!(p.gone.len(), 1);
    assert_eq!(p.gone[0].service, "test_service");

    let ex = p.network("ex_default").unwrap();
    assert_eq!(ex.new_lb_attachments, vec![n1.clone()]);
    // n1 needs a load-balancer address and the /27 has none free, but n2's is freed in the
    // same allocator pass as its tasks' addresses, before the replacements are allocated: the
    // drain fits exactly. The real lab agrees: draining a node holding 6 of the 24 tasks on
    // the full network moved them without a single rejection.
    assert_eq!((ex.needed, ex.available, ex.free_before), (1, 1, 0));
    assert_eq!((ex.new_task_addresses, ex.freed_task_addresses), (6, 6));
    assert_eq!(ex.freed_lb_attachments, vec![n2.clone()]);
    assert_eq!((ex.used_after, ex.free_after), (29, 0));
    assert!(p.is_safe(), "{p}");
    let text = p.to_string();
    assert!(!text.contains("BLOCKED"), "{text}");

    // tnet: n2 loses its only tnet task, so its load-balancer address goes.
    let tnet = p.network("tnet").unwrap();
    assert_eq!(tnet.freed_lb_attachments, vec![n2]);
    assert_eq!((tnet.needed, tnet.free_after), (0, 242));
}

#[test]
fn draining_n1_moves_test_client_where_the_real_swarm_put_it() {
    let c = lab_20();
    let n1 = node_id(&c, "n1");
    let p = predict_drain(&n1, &obs(&c.nodes, &c.services, &c.networks, &c.tasks));
    assert!(p.is_safe(), "{p}");
    // The 26.1.5 capture (taken after n1 was drained and upgraded) shows
    // test_client.1 running on n2 (n8l57hsa).
    assert_eq!(p.moves.len(), 1);
    assert_eq!(
        (p.moves[0].service.as_str(), p.moves[0].to_hostname.as_str()),
        ("test_client", "n2")
    );
    let later: Vec<Task> = capture("26.1.5/tasks.json");
    let real = later
        .iter()
        .find(|t| t.id.as_deref().unwrap().starts_with("n8l57hsa"))
        .unwrap();
    assert_eq!(real.node_id.as_deref(), Some(p.moves[0].to_node.as_str()));
    // n1 had only rejected ex_service tasks: nothing to free there.
    let ex = p.network("ex_default").unwrap();
    assert_eq!(
        (ex.freed_task_addresses, ex.needed, ex.free_after),
        (0, 0, 0)
    );
}

#[test]
fn draining_every_manager_of_a_cluster_without_workers_leaves_tasks_nowhere() {
    let mut c = lab_20();
    c.nodes.retain(|n| n.manager_status.is_some());
    let ids: Vec<String> = c.nodes.iter().map(|n| n.id.clone().unwrap()).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let p = predict_drain_nodes(&refs, &obs(&c.nodes, &c.services, &c.networks, &c.tasks));
    assert!(!p.stranded.is_empty());
    let blocker = p
        .blockers
        .iter()
        .find_map(|b| match b {
            DrainBlocker::NowhereToRun {
                service,
                tasks,
                reason,
                ..
            } if service == "ex_service" => Some((*tasks, reason.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        blocker.0, 12,
        "6 on n2 and 6 on n3; n1 has only rejected ones"
    );
    assert!(
        blocker
            .1
            .contains("every node (n2, n1, n3) would be drained"),
        "{}",
        blocker.1
    );
}

#[test]
fn placement_constraints_decide_where_tasks_go() {
    let mut c = lab_20();
    let ex = c
        .services
        .iter_mut()
        .find(|s| s.spec.as_ref().unwrap().name.as_deref() == Some("ex_service"))
        .unwrap();
    let placement = ex
        .spec
        .as_mut()
        .unwrap()
        .task_template
        .as_mut()
        .unwrap()
        .placement
        .get_or_insert_default();
    placement.constraints = Some(vec!["node.role==worker".into()]);
    let n4 = node_id(&c, "n4");
    let n5 = node_id(&c, "n5");
    let p = predict_drain(&n4, &obs(&c.nodes, &c.services, &c.networks, &c.tasks));
    assert!(
        p.moves
            .iter()
            .filter(|m| m.service == "ex_service")
            .all(|m| m.to_node == n5)
    );
    // n5 already has an address on ex_default: no new one needed.
    assert!(
        p.network("ex_default")
            .unwrap()
            .new_lb_attachments
            .is_empty()
    );
    assert!(p.is_safe(), "{p}");

    // Only n4 is eligible; draining it strands its tasks.
    let placement = c.services[0]
        .spec
        .as_mut()
        .unwrap()
        .task_template
        .as_mut()
        .unwrap()
        .placement
        .as_mut()
        .unwrap();
    placement.constraints = Some(vec!["node.hostname==N4".into()]);
    let p = predict_drain(&n4, &obs(&c.nodes, &c.services, &c.networks, &c.tasks));
    assert_eq!(p.stranded.len(), 6);
    assert!(
        p.stranded[0]
            .reason
            .contains("fail the constraints node.hostname==N4")
    );
}

// ---------------------------------------------------------------------------
// Property test over random small clusters.

/// Seeded draws for the generated clusters (rand's StdRng: reproducible per seed).
struct Rng(StdRng);
impl Rng {
    fn seeded(seed: u64) -> Self {
        Self(StdRng::seed_from_u64(seed))
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0.random_range(0..n)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.0.random_bool(percent as f64 / 100.0)
    }
}

fn overlay(id: &str, subnet: &str, ingress: bool) -> Network {
    Network {
        id: Some(id.into()),
        name: Some(id.into()),
        driver: Some("overlay".into()),
        scope: Some("swarm".into()),
        ingress: Some(ingress),
        ipam: Some(Ipam {
            config: Some(vec![IpamConfig {
                subnet: Some(subnet.into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn random_cluster(rng: &mut Rng) -> Cluster {
    let mut networks = vec![overlay("ingress", "10.0.0.0/24", true)];
    for i in 0..=rng.below(3) {
        let prefix = 26 + rng.below(4);
        networks.push(overlay(
            &format!("net{i}"),
            &format!("10.{}.0.0/{prefix}", 10 + i),
            false,
        ));
    }
    let n_nodes = 1 + rng.below(6);
    let nodes: Vec<Node> = (0..n_nodes)
        .map(|i| Node {
            id: Some(format!("node{i}")),
            spec: Some(NodeSpec {
                role: Some(if i == 0 || rng.chance(30) {
                    NodeSpecRoleEnum::MANAGER
                } else {
                    NodeSpecRoleEnum::WORKER
                }),
                availability: Some(match rng.below(10) {
                    0 => NodeSpecAvailabilityEnum::DRAIN,
                    1 => NodeSpecAvailabilityEnum::PAUSE,
                    _ => NodeSpecAvailabilityEnum::ACTIVE,
                }),
                labels: Some(HashMap::from([(
                    "zone".to_string(),
                    if rng.chance(50) { "a" } else { "b" }.to_string(),
                )])),
                ..Default::default()
            }),
            description: Some(NodeDescription {
                hostname: Some(format!("h{i}")),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                state: Some(if rng.chance(90) {
                    NodeState::READY
                } else {
                    NodeState::DOWN
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    let constraint_pool = [
        "node.role==manager",
        "node.role==worker",
        "node.role!=manager",
        "node.labels.zone==a",
        "node.labels.zone!=b",
        "node.hostname!=h0",
    ];
    let mut services = Vec::new();
    let mut tasks = Vec::new();
    for s in 0..=rng.below(4) {
        let sid = format!("svc{s}");
        let global = rng.chance(25);
        let dnsrr = rng.chance(30);
        let nets: Vec<String> = networks[1..]
            .iter()
            .filter(|_| rng.chance(60))
            .map(|n| n.id.clone().unwrap())
            .collect();
        let constraints: Vec<String> = constraint_pool
            .iter()
            .filter(|_| rng.chance(15))
            .map(|c| c.to_string())
            .collect();
        let max_replicas = if rng.chance(20) {
            1 + rng.below(3) as i64
        } else {
            0
        };
        let spec_nets: Vec<NetworkAttachmentConfig> = nets
            .iter()
            .map(|n| NetworkAttachmentConfig {
                target: Some(n.clone()),
                ..Default::default()
            })
            .collect();
        let task_spec = TaskSpec {
            networks: Some(spec_nets.clone()),
            placement: Some(TaskSpecPlacement {
                constraints: Some(constraints.clone()),
                max_replicas: Some(max_replicas),
                ..Default::default()
            }),
            ..Default::default()
        };
        let vips = (!dnsrr).then(|| {
            nets.iter()
                .enumerate()
                .map(|(k, n)| ServiceEndpointVirtualIps {
                    network_id: Some(n.clone()),
                    addr: Some(format!("10.9.{s}.{k}/24")),
                })
                .collect::<Vec<_>>()
        });
        services.push(Service {
            id: Some(sid.clone()),
            spec: Some(ServiceSpec {
                name: Some(format!("service{s}")),
                task_template: Some(task_spec.clone()),
                mode: Some(if global {
                    ServiceSpecMode {
                        global: Some(HashMap::new()),
                        ..Default::default()
                    }
                } else {
                    ServiceSpecMode {
                        replicated: Some(ServiceSpecModeReplicated { replicas: Some(3) }),
                        ..Default::default()
                    }
                }),
                endpoint_spec: Some(EndpointSpec {
                    mode: Some(if dnsrr {
                        EndpointSpecModeEnum::DNSRR
                    } else {
                        EndpointSpecModeEnum::VIP
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            endpoint: Some(ServiceEndpoint {
                virtual_ips: vips,
                ..Default::default()
            }),
            ..Default::default()
        });
        let n_tasks = if global { n_nodes } else { 1 + rng.below(8) };
        for k in 0..n_tasks {
            let node = if global { k } else { rng.below(n_nodes) };
            let (desired, state) = match rng.below(10) {
                0 => (TaskState::SHUTDOWN, TaskState::REJECTED),
                1 => (TaskState::SHUTDOWN, TaskState::SHUTDOWN),
                2 => (TaskState::SHUTDOWN, TaskState::RUNNING),
                3 => (TaskState::RUNNING, TaskState::PREPARING),
                _ => (TaskState::RUNNING, TaskState::RUNNING),
            };
            tasks.push(Task {
                id: Some(format!("t{s}x{k}")),
                service_id: Some(sid.clone()),
                slot: Some(k as i64),
                node_id: Some(format!("node{node}")),
                spec: Some(task_spec.clone()),
                desired_state: Some(desired),
                status: Some(TaskStatus {
                    state: Some(state),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
    }
    Cluster {
        networks,
        services,
        tasks,
        nodes,
    }
}

/// The cluster once the predicted drain has settled.
fn apply(c: &Cluster, p: &DrainPrediction) -> Cluster {
    let drained: BTreeSet<&str> = p.nodes.iter().map(String::as_str).collect();
    let mut nodes = c.nodes.clone();
    for n in &mut nodes {
        if drained.contains(n.id.as_deref().unwrap()) {
            n.spec.as_mut().unwrap().availability = Some(NodeSpecAvailabilityEnum::DRAIN);
        }
    }
    let by_id: HashMap<&str, &Task> = c
        .tasks
        .iter()
        .map(|t| (t.id.as_deref().unwrap(), t))
        .collect();
    let mut tasks = c.tasks.clone();
    for t in &mut tasks {
        let st = t.status.as_mut().unwrap();
        if drained.contains(t.node_id.as_deref().unwrap())
            && st.state.unwrap() <= TaskState::RUNNING
        {
            st.state = Some(TaskState::SHUTDOWN);
            t.desired_state = Some(TaskState::SHUTDOWN);
        }
    }
    for m in &p.moves {
        let mut t = by_id[m.task_id.as_str()].clone();
        t.id = Some(format!("new-{}", m.task_id));
        t.node_id = Some(m.to_node.clone());
        t.desired_state = Some(TaskState::RUNNING);
        t.status = Some(TaskStatus {
            state: Some(TaskState::RUNNING),
            ..Default::default()
        });
        tasks.push(t);
    }
    for s in &p.stranded {
        let mut t = by_id[s.task_id.as_str()].clone();
        t.id = Some(format!("new-{}", s.task_id));
        t.node_id = None;
        t.desired_state = Some(TaskState::RUNNING);
        t.status = Some(TaskStatus {
            state: Some(TaskState::PENDING),
            ..Default::default()
        });
        tasks.push(t);
    }
    Cluster {
        networks: c.networks.clone(),
        services: c.services.clone(),
        tasks,
        nodes,
    }
}

fn schedulable(n: &Node) -> bool {
    n.spec.as_ref().unwrap().availability == Some(NodeSpecAvailabilityEnum::ACTIVE)
        && n.status.as_ref().unwrap().state == Some(NodeState::READY)
}

fn check(c: &Cluster, drained: &[&str], seed: u64) {
    let ctx = format!("seed {seed}, drained {drained:?}");
    let p = predict_drain_nodes(drained, &obs(&c.nodes, &c.services, &c.networks, &c.tasks));
    let node = |id: &str| {
        c.nodes
            .iter()
            .find(|n| n.id.as_deref() == Some(id))
            .unwrap()
    };
    let svc = |id: &str| {
        c.services
            .iter()
            .find(|s| s.id.as_deref() == Some(id))
            .unwrap()
    };

    // Every displaced task is accounted for exactly once.
    let displaced: BTreeSet<&str> = c
        .tasks
        .iter()
        .filter(|t| {
            drained.contains(&t.node_id.as_deref().unwrap())
                && t.status.as_ref().unwrap().state.unwrap() <= TaskState::RUNNING
        })
        .map(|t| t.id.as_deref().unwrap())
        .collect();
    let mut seen: Vec<&str> = p.moves.iter().map(|m| m.task_id.as_str()).collect();
    seen.extend(p.gone.iter().map(|g| g.task_id.as_str()));
    seen.extend(p.stranded.iter().map(|s| s.task_id.as_str()));
    assert_eq!(seen.len(), displaced.len(), "{ctx}");
    assert_eq!(
        seen.iter().copied().collect::<BTreeSet<_>>(),
        displaced,
        "{ctx}"
    );

    // Moves go to eligible nodes only.
    for m in &p.moves {
        let n = node(&m.to_node);
        assert!(!drained.contains(&m.to_node.as_str()), "{ctx}");
        assert!(schedulable(n), "{ctx}");
        let cons = svc(&m.service_id)
            .spec
            .as_ref()
            .unwrap()
            .task_template
            .as_ref()
            .unwrap()
            .placement
            .as_ref()
            .unwrap()
            .constraints
            .clone()
            .unwrap();
        assert!(
            cons.iter()
                .all(|k| swarm_upgrade::health::predict::constraint_matches(k, &observed(n))),
            "{ctx}: {m:?} {cons:?}"
        );
    }
    // Stranded tasks really have nowhere to go (ignoring max_replicas).
    for s in &p.stranded {
        let placement = svc(&s.service_id)
            .spec
            .as_ref()
            .unwrap()
            .task_template
            .as_ref()
            .unwrap()
            .placement
            .as_ref()
            .unwrap()
            .clone();
        if placement.max_replicas.unwrap_or(0) == 0 {
            let cons = placement.constraints.unwrap();
            assert!(
                !c.nodes
                    .iter()
                    .any(|n| !drained.contains(&n.id.as_deref().unwrap())
                        && schedulable(n)
                        && cons.iter().all(
                            |k| swarm_upgrade::health::predict::constraint_matches(k, &observed(n))
                        )),
                "{ctx}: {s:?}"
            );
        }
    }

    // Blockers are exactly what the figures say.
    for n in &p.networks {
        assert_eq!(n.needed, n.new_lb_attachments.len() as u64, "{ctx}");
        assert_eq!(
            n.available,
            (n.free_before + n.freed_task_addresses + n.freed_lb_attachments.len() as u64)
                .saturating_sub(n.new_task_addresses),
            "{ctx}"
        );
        assert!(n.new_task_addresses <= n.freed_task_addresses + p.stranded.len() as u64);
        let blocked = p.blockers.iter().any(|b| {
            matches!(b,
            DrainBlocker::WouldExhaust { network, needed, free, .. }
                if *network == n.name && *needed == n.needed && *free == n.available)
        });
        assert_eq!(blocked, n.needed > n.available, "{ctx}: {n:?}");
    }
    let nowhere: BTreeSet<&str> = p
        .blockers
        .iter()
        .filter_map(|b| match b {
            DrainBlocker::NowhereToRun { service, .. } => Some(service.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        nowhere,
        p.stranded
            .iter()
            .map(|s| s.service.as_str())
            .collect::<BTreeSet<_>>(),
        "{ctx}"
    );
    assert_eq!(
        p.is_safe(),
        p.stranded.is_empty() && p.networks.iter().all(|n| n.needed <= n.available),
        "{ctx}"
    );

    // The predicted steady state is what the usage model computes on the
    // cluster after the drain.
    let before = network_usage(&obs(&c.nodes, &c.services, &c.networks, &c.tasks));
    let after_cluster = apply(c, &p);
    let after = network_usage(&obs(
        &after_cluster.nodes,
        &after_cluster.services,
        &after_cluster.networks,
        &after_cluster.tasks,
    ));
    for n in &p.networks {
        let b = by_name(&before, &n.name);
        let a = by_name(&after, &n.name);
        assert_eq!(n.used_before, b.used(), "{ctx}");
        assert_eq!(n.used_after, a.used(), "{ctx}: {n:?}");
        let mut lb: BTreeSet<String> = b.lb_nodes.iter().cloned().collect();
        for f in &n.freed_lb_attachments {
            assert!(lb.remove(f), "{ctx}");
        }
        for x in &n.new_lb_attachments {
            assert!(lb.insert(x.clone()), "{ctx}");
        }
        assert_eq!(
            lb,
            a.lb_nodes.iter().cloned().collect::<BTreeSet<_>>(),
            "{ctx}: {}",
            n.name
        );
    }
}

#[test]
fn predictions_are_internally_consistent_on_random_clusters() {
    let mut blocked = 0;
    let mut stranded = 0;
    for seed in 1..=1500u64 {
        let mut rng = Rng::seeded(seed);
        let c = random_cluster(&mut rng);
        let ids: Vec<String> = c.nodes.iter().map(|n| n.id.clone().unwrap()).collect();
        let first = rng.below(ids.len() as u64) as usize;
        check(&c, &[ids[first].as_str()], seed);
        if ids.len() > 2 {
            let second = (first + 1 + rng.below(ids.len() as u64 - 1) as usize) % ids.len();
            check(&c, &[ids[first].as_str(), ids[second].as_str()], seed);
        }
        let p = predict_drain(
            &ids[first],
            &obs(&c.nodes, &c.services, &c.networks, &c.tasks),
        );
        blocked += usize::from(
            p.blockers
                .iter()
                .any(|b| matches!(b, DrainBlocker::WouldExhaust { .. })),
        );
        stranded += usize::from(!p.stranded.is_empty());
    }
    // The generator reaches both kinds of blocker. An exhaustion needs a full network, a
    // replacement on a node without an address there, and no address the drain frees in
    // the same pass: rare in random clusters (3 of 1,500 here); predict_vs_sim.rs builds
    // tight networks on purpose and checks the outcome on the simulator.
    assert!(blocked >= 3, "{blocked}");
    assert!(stranded > 10, "{stranded}");
}
