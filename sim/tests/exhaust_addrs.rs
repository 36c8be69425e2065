//! The seed's `exhaust_addrs` case: a /27 overlay (32 - 3 = 29 usable), one VIP, 24 replicas on
//! 5 nodes that each need a load-balancer address: 32 - 3 - 1 - 5 = 23 < 24.

use std::collections::{BTreeMap, BTreeSet};

use swarm_sim::clock::{MS, Nanos, SEC};
use swarm_sim::state::{Cluster, ERR_MISSING_ATTACHMENTS, TState};
use swarm_sim::{Faults, Timings};

fn run(c: &mut Cluster, from: Nanos, to: Nanos) {
    let mut t = from;
    while t <= to {
        c.tick(t);
        t += 100 * MS;
    }
}

fn ex_tasks(c: &Cluster) -> Vec<swarm_sim::state::TaskRec> {
    let svc = c.find_service("ex_service").unwrap();
    c.tasks
        .values()
        .filter(|t| t.service_id == svc)
        .cloned()
        .collect()
}

fn check(with_seed_stack: bool) {
    let mut c = Cluster::new(
        3,
        2,
        "20.10.24",
        Timings::default(),
        Faults::default(),
        1,
        0,
    );
    if with_seed_stack {
        c.deploy_seed(0).unwrap();
        run(&mut c, 0, 20 * SEC);
    }
    let t0 = 20 * SEC;
    c.deploy_exhaust(t0).unwrap();
    let net = c
        .networks
        .values()
        .find(|n| n.name == "ex_default")
        .unwrap();
    assert_eq!(net.pool.capacity(), 29);

    // ~25 s later (as in the seed's first listing): 19/24, one node's tasks stuck preparing.
    run(&mut c, t0, t0 + 25 * SEC);
    let tasks = ex_tasks(&c);
    let running: Vec<_> = tasks
        .iter()
        .filter(|t| t.state == TState::Running)
        .collect();
    let preparing: Vec<_> = tasks
        .iter()
        .filter(|t| t.state == TState::Preparing)
        .collect();
    assert_eq!(running.len(), 19, "19/24 running");
    assert_eq!(preparing.len(), 5, "5 preparing");
    let bad: BTreeSet<_> = preparing
        .iter()
        .map(|t| t.node_id.clone().unwrap())
        .collect();
    assert_eq!(bad.len(), 1, "all the preparing tasks are on one node");
    let bad = bad.into_iter().next().unwrap();
    assert!(running.iter().all(|t| t.node_id.as_deref() != Some(&bad)));
    let net = c
        .networks
        .values()
        .find(|n| n.name == "ex_default")
        .unwrap();
    assert!(
        !net.lb.contains_key(&bad),
        "that node has no load-balancer address"
    );
    assert_eq!(net.lb.len(), 4);
    assert_eq!(net.pool.free(), 0);

    // After the engine's 30 s wait: rejected with the engine's error, then 24/24 elsewhere.
    run(&mut c, t0 + 25 * SEC, t0 + 90 * SEC);
    let tasks = ex_tasks(&c);
    let rejected: Vec<_> = tasks
        .iter()
        .filter(|t| t.state == TState::Rejected)
        .collect();
    assert_eq!(rejected.len(), 5);
    for t in &rejected {
        assert_eq!(t.node_id.as_deref(), Some(bad.as_str()));
        assert_eq!(t.err.as_deref(), Some(ERR_MISSING_ATTACHMENTS));
        assert_eq!(t.message, "preparing");
        assert_eq!(t.desired, TState::Shutdown);
        assert!(t.addresses.is_empty(), "a rejected task's address is freed");
    }
    let running: Vec<_> = tasks
        .iter()
        .filter(|t| t.state == TState::Running && t.desired == TState::Running)
        .collect();
    assert_eq!(running.len(), 24, "settles 24/24");
    assert!(
        running.iter().all(|t| t.node_id.as_deref() != Some(&bad)),
        "no task on that node"
    );
    let slots: BTreeSet<_> = running.iter().map(|t| t.slot.unwrap()).collect();
    assert_eq!(slots.len(), 24);
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for t in &running {
        *per_node.entry(t.node_id.clone().unwrap()).or_default() += 1;
    }
    assert_eq!(per_node.len(), 4);
    let net = c
        .networks
        .values()
        .find(|n| n.name == "ex_default")
        .unwrap();
    assert_eq!(net.lb.len(), 4);
    // 24 tasks + 1 VIP + 4 LB = 29 = the whole /27.
    assert_eq!(net.pool.in_use(), 29);
}

#[test]
fn exhaust_addrs_alone_reproduces_the_seed() {
    check(false);
}

#[test]
fn exhaust_addrs_next_to_the_seed_stack_reproduces_the_seed() {
    check(true);
}
