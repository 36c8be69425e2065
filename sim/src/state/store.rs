//! The cluster store: every object, the raft index, the event log, and the primitives that
//! change an object (each moves its `Version.Index` and marks the state changed). Every other
//! part of the model changes objects only through these.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand::Rng;
use rand::rngs::StdRng;

use crate::clock::{Nanos, SEC, secs};
use crate::config::{Faults, Timings};

use super::model::*;

const EVENT_LOG: usize = 50_000;

pub struct Cluster {
    pub rng: StdRng,
    pub timings: Timings,
    pub faults: Faults,
    pub index: u64,
    /// Bumped on every change but heartbeat bumps; the task snapshot is rebuilt when it moves.
    pub generation: u64,
    pub cluster_id: String,
    pub created: Nanos,
    pub nodes: Vec<NodeRec>,
    pub services: BTreeMap<String, ServiceRec>,
    pub tasks: BTreeMap<String, TaskRec>,
    pub networks: BTreeMap<String, NetworkRec>,
    pub leader: Option<String>,
    /// The unlock key while autolock is on (`EncryptionConfig.AutoLockManagers`).
    pub unlock_key: Option<String>,
    /// `Version.Index` of the swarm object (`GET /swarm`), moved by `POST /swarm/update`.
    pub swarm_version: u64,
    /// The swarm's `Spec` as `POST /swarm/update` last wrote it (labels, raft, dispatcher, CA
    /// settings: served back as written); `None` until then (the defaults `swarm init` sets).
    pub swarm_spec: Option<serde_json::Value>,
    /// When the swarm object last changed (`UpdatedAt`).
    pub swarm_updated: Option<Nanos>,
    pub election_at: Option<Nanos>,
    pub events: VecDeque<Event>,
    pub event_tx: tokio::sync::broadcast::Sender<Event>,
    pub(super) next_vxlan: u32,
    pub(super) dirty: bool,
    /// Tasks an agent still has to move (assigned up to running, or running but no longer
    /// wanted): the agents visit these, not every task.
    pub(super) moving: BTreeSet<String>,
    /// Every node's state over time, when a test asked for it.
    pub(super) history: Option<History>,
    /// Node updates answered so far (the `out-of-sequence-every` fault counts them).
    pub(super) node_writes: u64,
    /// A leader step-down scheduled by the `leader-change-on-drain` fault.
    pub(super) step_down_at: Option<Nanos>,
    /// The manager that stepped down: the next election prefers another one.
    pub(super) stepped_down: Option<String>,
}

pub(super) fn gen_id(rng: &mut StdRng) -> String {
    const A: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..25)
        .map(|_| A[rng.random_range(0..A.len())] as char)
        .collect()
}

pub(super) fn gen_hex(rng: &mut StdRng, n: usize) -> String {
    const A: &[u8] = b"0123456789abcdef";
    (0..n)
        .map(|_| A[rng.random_range(0..A.len())] as char)
        .collect()
}

impl Cluster {
    pub(super) fn next_index(&mut self) -> u64 {
        self.index += 1;
        self.generation += 1;
        self.dirty = true;
        self.index
    }

    /// Marks the state changed (the read snapshot is rebuilt).
    pub fn touch(&mut self) {
        self.generation += 1;
        self.dirty = true;
    }

    /// Adds a node `n<k>` (k = position + 1) that joins as ready.
    pub fn add_node(&mut self, role: Role, version: &str, now: Nanos) -> String {
        let i = self.nodes.len();
        let id = gen_id(&mut self.rng);
        let v = self.next_index();
        let jitter = self.rng.random_range(0.2..1.0);
        let mut n = NodeRec {
            id: id.clone(),
            hostname: format!("n{}", i + 1),
            role,
            availability: Availability::Active,
            labels: BTreeMap::new(),
            spec_name: None,
            engine_running: true,
            locked_engine: None,
            engine_version: version.to_string(),
            backup_version: None,
            state: NodeState::Ready,
            message: String::new(),
            reachable: true,
            addr: format!("10.98.{}.{}", i / 200, 11 + i % 200),
            version: v,
            created: now,
            updated: now,
            stopped_at: None,
            started_at: now,
            ready_at: None,
            restart_reject_until: None,
            next_bump: now + secs(self.timings.version_bump * jitter),
            ingress_addr: None,
            failures: vec![],
            manager_stops_at: None,
            stale_raft_data: false,
        };
        if let Some(ing) = self.networks.values_mut().find(|n| n.ingress) {
            n.ingress_addr = ing.pool.alloc();
            if let Some(a) = n.ingress_addr {
                ing.lb.insert(id.clone(), a);
            }
        }
        self.nodes.push(n);
        id
    }

    pub fn node_idx(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    pub fn emit(
        &mut self,
        typ: &'static str,
        action: &'static str,
        id: &str,
        attrs: &[(&str, &str)],
        now: Nanos,
    ) {
        let e = Event {
            typ,
            action,
            id: id.to_string(),
            attrs: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            time: now,
        };
        if self.events.len() >= EVENT_LOG {
            self.events.pop_front();
        }
        self.events.push_back(e.clone());
        let _ = self.event_tx.send(e);
    }

    pub(super) fn node_event(&mut self, i: usize, attrs: &[(&str, &str)], now: Nanos) {
        let id = self.nodes[i].id.clone();
        let name = self.nodes[i].hostname.clone();
        let mut a: Vec<(&str, &str)> = attrs.to_vec();
        a.push(("name", &name));
        self.emit("node", "update", &id, &a, now);
    }

    pub(super) fn set_node_state(&mut self, i: usize, st: NodeState, msg: &str, now: Nanos) {
        let old = self.nodes[i].state;
        if old == st {
            return;
        }
        let v = self.next_index();
        let n = &mut self.nodes[i];
        n.state = st;
        n.message = msg.to_string();
        n.version = v;
        n.updated = now;
        self.node_event(
            i,
            &[("state.old", old.as_str()), ("state.new", st.as_str())],
            now,
        );
    }

    /// A node's version index moves without anything to reconcile (status/heartbeat updates).
    /// The generation stays: nothing the task snapshot shows changed (node listings keep their
    /// own cache, by node version), so a 1,000-node fleet's heartbeats do not rebuild it.
    pub(super) fn bump_node(&mut self, i: usize, now: Nanos) {
        self.index += 1;
        let v = self.index;
        self.nodes[i].version = v;
        self.nodes[i].updated = now;
    }

    pub(super) fn set_task_state(
        &mut self,
        id: &str,
        st: TState,
        msg: &str,
        err: Option<&str>,
        now: Nanos,
    ) {
        let v = self.next_index();
        let Some(t) = self.tasks.get_mut(id) else {
            return;
        };
        t.state = st;
        t.message = msg.to_string();
        t.err = err.map(|s| s.to_string());
        t.status_at = now;
        t.updated = now;
        t.version = v;
        self.track(id);
        let t = self.tasks.get_mut(id).expect("the task just changed");
        if st.terminal() {
            let addrs = std::mem::take(&mut t.addresses);
            let node = t.node_id.clone();
            let svc = t.service_id.clone();
            for (net, a) in addrs {
                if let Some(n) = self.networks.get_mut(&net) {
                    n.pool.release(a);
                }
            }
            if matches!(st, TState::Rejected | TState::Failed)
                && let Some(i) = node.and_then(|n| self.node_idx(&n))
            {
                self.nodes[i].failures.push((svc, now));
            }
        }
    }

    pub(super) fn set_desired(&mut self, id: &str, d: TState, now: Nanos) {
        if self.tasks.get(id).is_none_or(|t| t.desired == d) {
            return;
        }
        let v = self.next_index();
        if let Some(t) = self.tasks.get_mut(id) {
            t.desired = d;
            t.updated = now;
            t.version = v;
        }
        self.track(id);
    }

    /// Keeps `moving` exact for task `id` after any change of its state or desired state (or
    /// its removal).
    pub(super) fn track(&mut self, id: &str) {
        let moving = self.tasks.get(id).is_some_and(|t| {
            t.state >= TState::Assigned
                && !t.state.terminal()
                && (t.state != TState::Running || t.desired != TState::Running)
        });
        if moving {
            self.moving.insert(id.to_string());
        } else {
            self.moving.remove(id);
        }
    }

    pub(super) fn new_task(
        &mut self,
        service_id: &str,
        slot: Option<u64>,
        node: Option<String>,
        now: Nanos,
    ) -> String {
        let id = gen_id(&mut self.rng);
        let v = self.next_index();
        let (template, image) = self
            .services
            .get(service_id)
            .map_or((0, String::new()), |s| (s.template, s.image.clone()));
        self.tasks.insert(
            id.clone(),
            TaskRec {
                id: id.clone(),
                service_id: service_id.to_string(),
                slot,
                node_id: node,
                state: TState::New,
                desired: TState::Running,
                message: "created".into(),
                err: None,
                status_at: now,
                created: now,
                updated: now,
                version: v,
                addresses: vec![],
                container_id: None,
                pid: 0,
                exit_code: 0,
                next_at: now,
                prepare_started: 0,
                stop_at: None,
                template,
                image,
            },
        );
        id
    }

    /// A task the orchestrator already replaced: shut down on `node` a minute ago, kept as
    /// history.
    pub(super) fn add_history_task(&mut self, service_id: &str, slot: u64, node: &str, now: Nanos) {
        let id = self.new_task(service_id, Some(slot), Some(node.to_string()), now);
        let container = gen_hex(&mut self.rng, 64);
        let t = self.tasks.get_mut(&id).expect("the task just added");
        let at = now - 60 * SEC;
        t.desired = TState::Shutdown;
        t.state = TState::Shutdown;
        t.message = "shutdown".into();
        t.container_id = Some(container);
        t.created = at - 60 * SEC;
        t.status_at = at;
        t.updated = at;
    }
}
