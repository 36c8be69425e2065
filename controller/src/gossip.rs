//! Whether a drained node's service endpoints have left the managers' overlay gossip: the
//! manual upgrade procedure waits for that before it stops the engine, so that no peer keeps
//! routing connections to a node about to go away.

use std::collections::{BTreeMap, BTreeSet};

use crate::cluster::Snapshot;
use crate::docker::Swarm;
use crate::marks::Step;
use crate::observe::Observation;

/// Remembers the drained nodes already found clear, so that the managers' overlay views
/// (megabytes each on a large fleet) are asked for only while a node may still linger.
#[derive(Debug, Default)]
pub struct GossipWatch {
    clear: BTreeSet<String>,
}

impl GossipWatch {
    /// For nodes drained by the operator whose tasks have stopped: how many of their service
    /// endpoints the managers' overlay gossip still announces. Asked of every manager, since a
    /// manager only sees the networks it has tasks on; a manager that does not answer is
    /// skipped. A node found clear by every manager is not asked about again while it stays
    /// drained and empty: nothing is scheduled on a drained node, so no endpoint of it returns.
    pub async fn lingering(
        &mut self,
        swarm: &Swarm,
        snapshot: &Snapshot,
        observation: &Observation,
    ) -> BTreeMap<String, usize> {
        let drained = drained_and_empty(snapshot);
        self.clear
            .retain(|id| drained.values().any(|d| d.as_str() == id));
        let asked: BTreeMap<String, String> = drained
            .into_iter()
            .filter(|(_, id)| !self.clear.contains(id))
            .collect();
        if asked.is_empty() {
            return BTreeMap::new();
        }
        let (lingering, every_view) = count_announced(swarm, observation, &asked).await;
        if every_view {
            let clear = asked.values().filter(|id| !lingering.contains_key(*id));
            self.clear.extend(clear.cloned());
        }
        lingering
    }
}

/// The nodes in the operator's drain step with no task left, by address.
fn drained_and_empty(snapshot: &Snapshot) -> BTreeMap<String, String> {
    snapshot
        .nodes
        .iter()
        .filter(|n| {
            n.mark()
                .and_then(Result::ok)
                .is_some_and(|m| m.step == Step::Draining)
                && snapshot.tasks_on(&n.id) == 0
                && !n.addr.is_empty()
        })
        .map(|n| (n.addr.clone(), n.id.clone()))
        .collect()
}

/// Per node id, the endpoints still announced (the most any one manager announces, summed
/// over the overlays); and whether every manager answered for every overlay.
async fn count_announced(
    swarm: &Swarm,
    observation: &Observation,
    nodes_by_addr: &BTreeMap<String, String>,
) -> (BTreeMap<String, usize>, bool) {
    let mut lingering = BTreeMap::new();
    let mut every_view = true;
    let overlays = observation
        .networks()
        .filter(|n| n.is_overlay() && !n.ingress);
    for network in overlays {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for view in swarm.network_endpoints_on_every_manager(&network.id).await {
            let Ok(view) = view else {
                every_view = false;
                continue;
            };
            let mut here: BTreeMap<&str, usize> = BTreeMap::new();
            for (host, n) in &view.tasks_by_host {
                if let Some((addr, _)) = nodes_by_addr.get_key_value(host.as_str()) {
                    *here.entry(addr.as_str()).or_default() += n;
                }
            }
            for (addr, n) in here {
                let e = seen.entry(addr).or_default();
                *e = (*e).max(n);
            }
        }
        for (addr, n) in seen {
            *lingering.entry(nodes_by_addr[addr].clone()).or_default() += n;
        }
    }
    (lingering, every_view)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use swarm_sim::state::SpecUpdate;
    use swarm_sim::{SimConfig, SimHandle, Stack};

    use super::*;
    use crate::docker::Endpoint;
    use crate::marks::Mark;
    use crate::observe::Reflector;

    /// The seed stack's swarm (its services on an overlay), and a client that counts the
    /// managers' overlay views it asks for.
    async fn lab() -> (SimHandle, Swarm, Arc<Mutex<usize>>) {
        let sim = SimHandle::start(SimConfig {
            managers: 3,
            workers: 2,
            time_scale: 50.0,
            stack: Stack::Seed,
            ..SimConfig::default()
        })
        .await
        .expect("simulator");
        let views = Arc::new(Mutex::new(0));
        let counted = views.clone();
        let endpoints = (sim.manager_endpoints().iter())
            .map(|e| Endpoint::parse(e, None).unwrap())
            .collect();
        let swarm = Swarm::new(endpoints).with_request_hook(Arc::new(move |call, _| {
            *counted.lock().unwrap() += usize::from(call == "network_verbose");
        }));
        (sim, swarm, views)
    }

    fn drain(sim: &SimHandle, host: &str) {
        sim.sim()
            .with(|c, now| {
                let i = c.find_node(host)?;
                let (id, version) = (c.nodes[i].id.clone(), c.nodes[i].version);
                c.update_node(&id, version, SpecUpdate::new("worker", "drain"), now)
            })
            .expect("drain");
    }

    /// The swarm as listed now, with `host` in the operator's drain step and (as the planner
    /// will see it once its tasks stop) nothing on it.
    async fn observed(swarm: &Swarm, host: &str) -> (Snapshot, Observation) {
        let mut reflector = Reflector::once(swarm.clone());
        reflector.list_everything().await.expect("listing");
        let observation = reflector.into_store();
        let mut snapshot = observation.snapshot();
        let node = (snapshot.nodes.iter_mut())
            .find(|n| n.hostname == host)
            .expect("node");
        let mark = Mark {
            step: Step::Draining,
            previous: crate::vocab::Availability::Active,
            target: "26.1.5".into(),
            from_version: "20.10.24".into(),
            since: jiff::Timestamp::UNIX_EPOCH,
            reason: None,
            spec_hash: None,
            demoted: false,
        };
        mark.write_to(&mut node.labels);
        let id = node.id.clone();
        snapshot.occupied.remove(&id);
        (snapshot, observation)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_drained_node_found_clear_is_not_asked_about_again() {
        let (sim, swarm, views) = lab().await;
        let mut watch = GossipWatch::default();
        // Once its tasks run, the managers announce their endpoints, pass after pass.
        let (mut snapshot, mut observation) = observed(&swarm, "n4").await;
        for _ in 0..100 {
            let mut fresh = GossipWatch::default();
            if !fresh
                .lingering(&swarm, &snapshot, &observation)
                .await
                .is_empty()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            (snapshot, observation) = observed(&swarm, "n4").await;
        }
        let first = watch.lingering(&swarm, &snapshot, &observation).await;
        assert!(
            first.values().sum::<usize>() > 0,
            "n4's endpoints never announced"
        );
        let asked = *views.lock().unwrap();
        watch.lingering(&swarm, &snapshot, &observation).await;
        assert!(
            *views.lock().unwrap() > asked,
            "not asked again while it lingers"
        );

        drain(&sim, "n4");
        let mut clear = false;
        for _ in 0..100 {
            let (snapshot, observation) = observed(&swarm, "n4").await;
            if watch
                .lingering(&swarm, &snapshot, &observation)
                .await
                .is_empty()
            {
                clear = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(clear, "the drained node's endpoints were never withdrawn");
        let (snapshot, observation) = observed(&swarm, "n4").await;
        let before = *views.lock().unwrap();
        assert!(
            watch
                .lingering(&swarm, &snapshot, &observation)
                .await
                .is_empty()
        );
        assert_eq!(
            *views.lock().unwrap(),
            before,
            "a clear node was asked about again"
        );

        // Out of the drain step and back in: asked again.
        let (mut snapshot, observation) = observed(&swarm, "n4").await;
        let n4 = (snapshot.nodes.iter_mut())
            .find(|n| n.hostname == "n4")
            .unwrap();
        crate::marks::clear(&mut n4.labels);
        watch.lingering(&swarm, &snapshot, &observation).await;
        let (snapshot, observation) = observed(&swarm, "n4").await;
        watch.lingering(&swarm, &snapshot, &observation).await;
        assert!(
            *views.lock().unwrap() > before,
            "a node drained anew was not asked about"
        );
        sim.shutdown().await;
    }
}
