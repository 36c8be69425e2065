//! The simulated swarm's model and its reconciliation, one module per swarmkit component;
//! [`Cluster::tick`] drives them with the simulated time (nothing here sleeps).

mod agents;
mod allocator;
mod autolock;
mod heartbeats;
mod history;
mod lookup;
mod model;
mod networks;
mod node_writes;
mod orchestrator;
mod raft;
mod scheduler;
mod services;
mod stacks;
mod store;

pub use autolock::{
    ERR_INVALID_KEY_STRING, ERR_INVALID_UNLOCK_KEY, ERR_NOT_LOCKED, ERR_SWARM_LOCKED,
};
pub use model::*;
pub use store::Cluster;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand::SeedableRng;
use rand::rngs::StdRng;
use store::gen_id;

use crate::clock::Nanos;
use crate::config::{Faults, Timings};

impl Cluster {
    pub fn new(
        managers: usize,
        workers: usize,
        version: &str,
        timings: Timings,
        faults: Faults,
        seed: u64,
        now: Nanos,
    ) -> Cluster {
        let (event_tx, _) = tokio::sync::broadcast::channel(4096);
        let mut rng = StdRng::seed_from_u64(seed);
        let cluster_id = gen_id(&mut rng);
        let mut c = Cluster {
            rng,
            timings,
            faults,
            index: 10,
            generation: 1,
            cluster_id,
            created: now,
            nodes: vec![],
            services: BTreeMap::new(),
            tasks: BTreeMap::new(),
            networks: BTreeMap::new(),
            leader: None,
            unlock_key: None,
            swarm_version: 10,
            swarm_spec: None,
            swarm_updated: None,
            election_at: None,
            events: VecDeque::new(),
            event_tx,
            next_vxlan: 4096,
            dirty: true,
            moving: BTreeSet::new(),
            history: None,
            node_writes: 0,
            step_down_at: None,
            stepped_down: None,
        };
        c.create_network_inner("ingress", "10.0.0.0/24", false, true, now)
            .expect("ingress subnet");
        for i in 0..managers + workers {
            let role = if i < managers {
                Role::Manager
            } else {
                Role::Worker
            };
            c.add_node(role, version, now);
        }
        c.leader = c
            .nodes
            .iter()
            .find(|n| n.role == Role::Manager)
            .map(|n| n.id.clone());
        c
    }

    // ---------------------------------------------------------------- the reconcile loop

    /// Advances the simulation to `now`. Returns true if anything changed.
    pub fn tick(&mut self, now: Nanos) -> bool {
        let gen_before = self.generation;
        self.tick_nodes(now);
        self.tick_raft(now);
        if self.leader.is_some() && self.dirty {
            self.orchestrate(now);
            self.allocate_tasks(now);
            self.schedule(now);
            self.allocate_node_lbs();
            self.reap_history();
        }
        let settled = self.generation;
        self.tick_agents(now);
        if self.leader.is_some() && self.generation != settled {
            // The restart supervisor reacts to the agents' reports in the same pass.
            self.dirty = true;
            self.orchestrate(now);
        }
        // Anything that changed after the reconcile passes is reconciled on the next tick.
        self.dirty = self.generation != settled;
        self.record_frame(now);
        self.generation != gen_before
    }
}

#[cfg(test)]
mod tests {
    use super::lookup::{Ambiguous, resolve_key};
    use super::*;
    use crate::clock::{MS, SEC};

    fn cluster(m: usize, w: usize) -> Cluster {
        Cluster::new(
            m,
            w,
            "20.10.24",
            Timings::default(),
            Faults::default(),
            7,
            0,
        )
    }

    fn run(c: &mut Cluster, from: Nanos, to: Nanos) {
        let mut t = from;
        while t <= to {
            c.tick(t);
            t += 100 * MS;
        }
    }

    #[test]
    fn api_versions_by_engine() {
        assert_eq!(api_versions("20.10.24"), ("1.41", "1.12"));
        assert_eq!(api_versions("20.10.24+dfsg1"), ("1.41", "1.12"));
        assert_eq!(api_versions("26.1.5"), ("1.45", "1.24"));
        assert!(version_cmp("20.10.24", "26.1.5").is_lt());
        assert!(version_cmp("26.1.5+dfsg1", "26.1.5").is_eq());
    }

    #[test]
    fn lookups_resolve_keys_as_the_engine_does() {
        let mut c = cluster(3, 2);
        c.deploy_seed(0).unwrap();
        let n2 = c.nodes[1].id.clone();
        assert_eq!(c.find_node(&n2).unwrap(), 1);
        assert_eq!(c.find_node(&c.nodes[3].hostname.clone()).unwrap(), 3);
        assert_eq!(c.find_node(&n2[..12]).unwrap(), 1);
        assert_eq!(c.find_node("no-such-node").unwrap_err().status, 404);
        assert_eq!(
            c.find_node("").unwrap_err().status,
            404,
            "the empty key is no prefix"
        );
        let service = c.find_service("test_client").unwrap();
        assert_eq!(c.find_service(&service[..10]).unwrap(), service);
        let network = c.find_network("test_tnet").unwrap();
        assert_eq!(c.find_network(&network).unwrap(), network);

        // A prefix shared by several IDs: nodes and services are rejected as ambiguous,
        // networks are not found (as the engine answers each); a name wins over a prefix.
        let objects = || [(1, "abc1", false), (2, "abc2", false), (3, "xyz", false)].into_iter();
        let err = resolve_key("node", "abc", objects(), Ambiguous::Rejected).unwrap_err();
        assert_eq!(
            (err.status, err.message.as_str()),
            (400, "node abc is ambiguous (2 matches found)")
        );
        let err = resolve_key("network", "abc", objects(), Ambiguous::NotFound).unwrap_err();
        assert_eq!(
            (err.status, err.message.as_str()),
            (404, "network abc not found")
        );
        assert_eq!(
            resolve_key("node", "abc2", objects(), Ambiguous::Rejected).unwrap(),
            2
        );
        let named = [(1, "abc1", false), (2, "zzz", true)].into_iter();
        assert_eq!(
            resolve_key("node", "abc", named, Ambiguous::Rejected).unwrap(),
            2
        );
    }

    /// A demoted manager's engine stopped before it has stopped its manager keeps its raft
    /// data, and panics when promoted again (as on the real lab); stopped after, it does not.
    #[test]
    fn promoting_a_manager_stopped_mid_demotion_crashes_its_engine() {
        for (wait, survives) in [(0, false), (3 * SEC, true)] {
            let mut c = cluster(3, 2);
            run(&mut c, 0, 5 * SEC);
            let id = c.nodes[1].id.clone();
            let demote = SpecUpdate::new("worker", "drain");
            c.update_node(&id, c.nodes[1].version, demote, 5 * SEC)
                .unwrap();
            assert!(
                c.nodes[1].runs_manager(),
                "its manager stops a moment later"
            );
            run(&mut c, 5 * SEC, 5 * SEC + wait);
            let stopped = 5 * SEC + wait + 100 * MS;
            c.engine_stop(1, stopped);
            c.engine_start(1, "26.1.5", stopped + SEC);
            run(&mut c, stopped + SEC, stopped + 5 * SEC);
            let promote = SpecUpdate::new("manager", "drain");
            let at = stopped + 5 * SEC;
            c.update_node(&id, c.nodes[1].version, promote, at).unwrap();
            assert_eq!(c.nodes[1].engine_running, survives, "waited {wait}");
        }
    }

    #[test]
    fn seed_stack_converges() {
        let mut c = cluster(3, 2);
        c.deploy_seed(0).unwrap();
        run(&mut c, 0, 20 * SEC);
        let running = c
            .tasks
            .values()
            .filter(|t| t.state == TState::Running)
            .count();
        assert_eq!(running, 5 + 2);
        // 5 tasks of test_service + 2 of test_client + 1 VIP + 5 LB on test_tnet.
        let net = c.networks.values().find(|n| n.name == "test_tnet").unwrap();
        assert_eq!(net.pool.in_use(), 7 + 1 + 5);
    }

    #[test]
    fn drain_moves_tasks() {
        let mut c = cluster(3, 2);
        c.deploy_seed(0).unwrap();
        run(&mut c, 0, 20 * SEC);
        let client = c.find_service("test_client").unwrap();
        let on: Vec<String> = c
            .tasks
            .values()
            .filter(|t| t.service_id == client && t.state == TState::Running)
            .map(|t| t.node_id.clone().unwrap())
            .collect();
        let victim = on[0].clone();
        let i = c.node_idx(&victim).unwrap();
        let v = c.nodes[i].version;
        let role = if c.nodes[i].role == Role::Manager {
            "manager"
        } else {
            "worker"
        };
        c.update_node(&victim, v, SpecUpdate::new(role, "drain"), 20 * SEC)
            .unwrap();
        assert_eq!(
            c.update_node(&victim, v, SpecUpdate::new(role, "drain"), 20 * SEC),
            Err(ApiError::new(500, ERR_OUT_OF_SEQUENCE))
        );
        run(&mut c, 20 * SEC, 40 * SEC);
        assert!(
            !c.tasks
                .values()
                .any(|t| t.node_id.as_deref() == Some(&victim) && t.state == TState::Running)
        );
        let running = c
            .tasks
            .values()
            .filter(|t| t.service_id == client && t.state == TState::Running)
            .count();
        assert_eq!(running, 2);
    }

    #[test]
    fn fleet_runs_the_asked_tasks_on_every_node_with_history() {
        let mut c = cluster(3, 7);
        c.deploy_fleet(5, true, 0).unwrap();
        run(&mut c, 0, 30 * SEC);
        for n in &c.nodes {
            let running = c
                .tasks
                .values()
                .filter(|t| t.node_id.as_deref() == Some(&n.id) && t.state == TState::Running)
                .count();
            assert_eq!(running, 5, "{}", n.hostname);
        }
        // Three replicated services of one replica per node, one shut-down task per slot.
        let history = c
            .tasks
            .values()
            .filter(|t| t.state == TState::Shutdown && t.desired == TState::Shutdown)
            .count();
        assert_eq!(history, 3 * 10);
        assert!(
            c.moving.is_empty(),
            "nothing left in motion: {:?}",
            c.moving
        );
    }
}
