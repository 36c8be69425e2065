//! The reflector's store stays equal to a fresh full listing of the simulated swarm: after
//! random sequences of changes (nodes drained, reactivated and upgraded, services created,
//! tasks rejected on an exhausted network), after the event stream breaks, and after a
//! leader change. `OBSERVE_SEED` picks the sequence (default: a fixed one, printed).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use swarm_sim::state::{ServiceDef, SpecUpdate};
use swarm_sim::{SimConfig, SimHandle, Stack};
use swarm_upgrade::docker::{Endpoint, Swarm};
use swarm_upgrade::observe::{Cadence, Observation, Reflector};
use swarm_upgrade::reconciler::observe;
use tokio::sync::Notify;

async fn lab() -> (SimHandle, Swarm) {
    let sim = SimHandle::start(SimConfig {
        managers: 3,
        workers: 3,
        time_scale: 50.0,
        stack: Stack::Seed,
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let endpoints = sim
        .manager_endpoints()
        .iter()
        .map(|e| Endpoint::parse(e, None).unwrap())
        .collect();
    (
        sim,
        Swarm::new(endpoints).with_patience(Duration::from_secs(30)),
    )
}

/// A reflector that never lists everything on its own: only events, re-reads and the
/// resyncs the test provokes keep it current.
fn reflector(swarm: &Swarm) -> (Reflector, Arc<Notify>) {
    let wake = Arc::new(Notify::new());
    let cadence = Cadence {
        full_resync: Duration::from_secs(3600),
        unconverged_tasks: Duration::ZERO,
    };
    (Reflector::start(swarm.clone(), cadence, wake.clone()), wake)
}

/// Refreshes until the store equals a fresh listing (the swarm settles and the events
/// arrive); fails with the difference after `patience`.
async fn converges(reflector: &mut Reflector, swarm: &Swarm, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        // Right after the endpoints come back a pass may fail; the next one catches up.
        let refreshed = reflector.refresh(&BTreeSet::new()).await;
        let (_, mut fresh) = observe(swarm).await.expect("fresh listing");
        same_node_versions(reflector.store(), &mut fresh);
        // The planner's input too: its per-node occupancy is kept incrementally.
        let same_snapshot = reflector.store().snapshot() == fresh.snapshot();
        if refreshed.is_ok() && *reflector.store() == fresh && same_snapshot {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "{what}: the store differs from a fresh listing:\n{}\noccupancy: store {:?}\n  fresh {:?}",
                diff(reflector.store(), &fresh),
                reflector.store().snapshot().occupied,
                fresh.snapshot().occupied
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The simulator rewrites a node (its `Version.Index`) when the node's first task of a network
/// lands, without the node event a real swarm sends for every node update: the store keeps the
/// index it last read (the executor re-reads a node before it writes one). Every other field
/// must match.
fn same_node_versions(store: &Observation, fresh: &mut Observation) {
    let versions: Vec<_> = store.nodes().map(|n| (n.id.clone(), n.version)).collect();
    for (id, version) in versions {
        if let Some(node) = fresh.node(&id).cloned() {
            fresh.upsert_node(swarm_upgrade::observe::ObservedNode { version, ..node });
        }
    }
}

fn diff(store: &Observation, fresh: &Observation) -> String {
    let mut out = vec![];
    for n in fresh.nodes() {
        if store.node(&n.id) != Some(n) {
            out.push(format!(
                "node {}: store {:?}\n  fresh {n:?}",
                n.hostname(),
                store.node(&n.id)
            ));
        }
    }
    for s in fresh.services() {
        if store.service(&s.id) != Some(s) {
            out.push(format!(
                "service {}: store {:?}\n  fresh {s:?}",
                s.name(),
                store.service(&s.id)
            ));
        }
    }
    for t in fresh.tasks() {
        if store.task(&t.id) != Some(t) {
            out.push(format!(
                "task {}: store {:?}\n  fresh {t:?}",
                t.id,
                store.task(&t.id)
            ));
        }
    }
    out.push(format!(
        "counts: store {} nodes, {} services, {} networks, {} tasks; fresh {}, {}, {}, {}",
        store.nodes().count(),
        store.services().count(),
        store.networks().count(),
        store.task_count(),
        fresh.nodes().count(),
        fresh.services().count(),
        fresh.networks().count(),
        fresh.task_count()
    ));
    out.join("\n")
}

fn set_availability(sim: &SimHandle, host: &str, availability: &str) {
    sim.sim()
        .with(|c, now| {
            let i = c.find_node(host)?;
            let node = &c.nodes[i];
            let (id, version, role) = (
                node.id.clone(),
                node.version,
                format!("{:?}", node.role).to_lowercase(),
            );
            c.update_node(&id, version, SpecUpdate::new(&role, availability), now)
        })
        .expect("node update");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_follows_random_changes() {
    let seed = std::env::var("OBSERVE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261201u64);
    println!("OBSERVE_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let (sim, swarm) = lab().await;
    let (mut reflector, _wake) = reflector(&swarm);
    converges(&mut reflector, &swarm, "the first listing").await;
    let workers = ["n4", "n5", "n6"];
    for step in 0..12 {
        let host = workers[rng.random_range(0..workers.len())];
        let what = match rng.random_range(0..4) {
            0 => {
                set_availability(&sim, host, "drain");
                format!("drain {host}")
            }
            1 => {
                set_availability(&sim, host, "active");
                format!("activate {host}")
            }
            2 => {
                sim.sim()
                    .upgrade_node(host, "26.1.5")
                    .await
                    .expect("upgrade");
                format!("upgrade {host}")
            }
            _ => {
                let name = format!("svc{step}");
                let replicas = rng.random_range(1..6);
                sim.sim()
                    .with(|c, now| {
                        c.create_service(&ServiceDef::replicated(&name, replicas, &[]), now)
                    })
                    .expect("service");
                format!("create {name} with {replicas} replicas")
            }
        };
        converges(&mut reflector, &swarm, &format!("step {step}: {what}")).await;
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_tasks_reach_the_store() {
    let (sim, swarm) = lab().await;
    let (mut reflector, _wake) = reflector(&swarm);
    converges(&mut reflector, &swarm, "the first listing").await;
    sim.sim()
        .with(|c, now| c.deploy_exhaust(now))
        .expect("exhaust stack");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        reflector.refresh(&BTreeSet::new()).await.unwrap();
        if reflector
            .store()
            .tasks()
            .any(|t| t.state() == bollard::models::TaskState::REJECTED)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no rejection observed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    converges(&mut reflector, &swarm, "with rejections").await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_event_stream_and_a_leader_change_are_caught_up() {
    let (sim, swarm) = lab().await;
    let (mut reflector, _wake) = reflector(&swarm);
    converges(&mut reflector, &swarm, "the first listing").await;

    // The engine serving the event stream (the first endpoint's) stops: the stream breaks,
    // and a change is made before it is open again.
    sim.sim().stop_node("n1").await.expect("stop n1");
    set_availability(&sim, "n5", "drain");
    sim.sim().start_node("n1", None).await.expect("start n1");
    converges(&mut reflector, &swarm, "after the event stream broke").await;

    // The leader's engine stops: another manager leads, and every node is rewritten.
    let leader = reflector
        .store()
        .nodes()
        .find(|n| n.is_leader())
        .map(|n| n.hostname().to_string())
        .expect("a leader");
    sim.sim().stop_node(&leader).await.expect("stop the leader");
    converges(&mut reflector, &swarm, "after the leader stopped").await;
    sim.sim()
        .start_node(&leader, None)
        .await
        .expect("start it again");
    converges(&mut reflector, &swarm, "after the old leader came back").await;
    sim.shutdown().await;
}
