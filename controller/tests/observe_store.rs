//! The reflector's store stays equal to a fresh full listing of the simulated swarm: after
//! random sequences of changes (nodes drained, reactivated and upgraded, services created,
//! tasks rejected on an exhausted network), after the event stream breaks, and after a
//! leader change. `OBSERVE_SEED` picks the sequence (default: a fixed one, printed).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bollard::models::TaskState;
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

/// The calls each request is made for, in order.
type Calls = Arc<std::sync::Mutex<Vec<&'static str>>>;

/// A client of the simulator's managers that records its calls.
fn recording(sim: &SimHandle) -> (Swarm, Calls) {
    let calls: Calls = Arc::default();
    let record = calls.clone();
    let endpoints = (sim.manager_endpoints().iter())
        .map(|e| Endpoint::parse(e, None).unwrap())
        .collect();
    let swarm = Swarm::new(endpoints)
        .with_request_hook(Arc::new(move |call, _| record.lock().unwrap().push(call)));
    (swarm, calls)
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
    converges_with(reflector, swarm, what, &BTreeSet::new()).await;
}

/// [`converges`], re-reading the nodes `in_flight` every pass as the operator does.
async fn converges_with(
    reflector: &mut Reflector,
    swarm: &Swarm,
    what: &str,
    in_flight: &BTreeSet<String>,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        // Right after the endpoints come back a pass may fail; the next one catches up.
        let refreshed = reflector.refresh(in_flight).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_is_followed_by_its_slots_not_by_whole_task_lists() {
    let (sim, fresh) = lab().await;
    sim.sim()
        .with(|c, now| c.create_service(&ServiceDef::replicated("spread", 12, &[]), now))
        .expect("service");
    let (swarm, calls) = recording(&sim);
    let (mut reflector, _wake) = reflector(&swarm);
    converges(&mut reflector, &fresh, "the first listing").await;
    // Until a pass reads nothing but the service counts: every service has converged.
    for _ in 0..100 {
        calls.lock().unwrap().clear();
        reflector.refresh(&BTreeSet::new()).await.unwrap();
        if *calls.lock().unwrap() == ["services"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        *calls.lock().unwrap(),
        ["services"],
        "the swarm never settled"
    );
    calls.lock().unwrap().clear();

    // The operator drains a node it has in flight: it re-reads that node's tasks every pass.
    let n4 = (reflector.store().nodes())
        .find(|n| n.hostname() == "n4")
        .map(|n| n.id.clone())
        .expect("n4");
    set_availability(&sim, "n4", "drain");
    // The orchestrator moves the tasks a moment later: until then a pass has nothing to follow.
    for _ in 0..100 {
        let (_, now) = observe(&fresh).await.expect("fresh listing");
        if now
            .tasks_on(&n4)
            .all(|t| t.desired_state != TaskState::RUNNING)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    converges_with(
        &mut reflector,
        &fresh,
        "after the drain",
        &BTreeSet::from([n4]),
    )
    .await;
    // The replacements' slots are read until they run.
    let calls = calls.lock().unwrap().clone();
    assert!(calls.contains(&"tasks_of_slots"), "{calls:?}");
    assert!(
        !calls.contains(&"tasks_of_service"),
        "a drain read a whole service's tasks: {calls:?}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_moved_off_a_manager_misses_no_event_and_lists_nothing_again() {
    let (sim, fresh) = lab().await;
    let (swarm, calls) = recording(&sim);
    let (mut reflector, _wake) = reflector(&swarm);
    converges(&mut reflector, &fresh, "the first listing").await;
    // As every pass of the operator does: which node each endpoint is.
    swarm.manager_infos().await;
    // The stream opens a moment after the first listing, and asks for one more then.
    for _ in 0..100 {
        let opened = calls.lock().unwrap().contains(&"events");
        calls.lock().unwrap().clear();
        reflector.refresh(&BTreeSet::new()).await.unwrap();
        let listed = |c: &Vec<&str>| c.contains(&"nodes") || c.contains(&"networks");
        if opened && !listed(&calls.lock().unwrap()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Each manager in turn is put on standby, as before its upgrade, with a change made at
    // once: whichever serves the stream hands it over, and the change still arrives.
    let managers: Vec<String> = (reflector.store().nodes())
        .filter(|n| n.role() == swarm_upgrade::cluster::Role::Manager)
        .map(|n| n.id.clone())
        .collect();
    calls.lock().unwrap().clear();
    for (id, availability) in managers.iter().zip(["drain", "active", "drain"]) {
        let _standby = swarm.standby(id);
        tokio::time::sleep(Duration::from_millis(300)).await;
        set_availability(&sim, "n5", availability);
        converges(&mut reflector, &fresh, &format!("n5 {availability}")).await;
    }
    let calls = calls.lock().unwrap().clone();
    assert!(
        calls.contains(&"node"),
        "the changes were not read: {calls:?}"
    );
    assert!(
        !calls.contains(&"nodes") && !calls.contains(&"networks"),
        "a moved stream listed everything again: {calls:?}"
    );
    sim.shutdown().await;
}
