//! The `Observation`: every node, service, network and task the operator knows of, indexed by
//! ID, by node and by service, kept current by the [`super::reflector`] and read by every
//! consumer (the planner through [`Observation::snapshot`], the health checks directly).

use bollard::models::TaskState;
use jiff::Timestamp;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::views::{ObservedNetwork, ObservedNode, ObservedService, ObservedTask};
use crate::cluster::{Snapshot, occupies_node};

/// A task's ID as the store's map and indexes hold it: one allocation shared by all of them
/// (at 30,000 tasks, four copies of every ID were a fifth of the store).
type TaskKey = Arc<str>;

/// A replicated service's slot: its ID and the slot's number (`Slot`, from 1).
pub type SlotKey = (String, i64);

/// Where the tasks a listing changed (added, changed or gone) belong.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskChanges {
    pub services: BTreeSet<String>,
    pub nodes: BTreeSet<String>,
    /// Slots whose task is gone or told to stop (a drain, a rejection): the orchestrator
    /// gives each a new task, most often on another node.
    pub vacated: BTreeSet<SlotKey>,
}

impl TaskChanges {
    fn note(&mut self, task: &ObservedTask, gone: bool) {
        self.services.insert(task.service_id.clone());
        if let Some(node) = task.node() {
            self.nodes.insert(node.to_string());
        }
        if let Some(slot) = task.slot.filter(|s| *s > 0)
            && (gone || task.desired_state > TaskState::RUNNING)
        {
            self.vacated.insert((task.service_id.clone(), slot));
        }
    }
}

/// Which tasks a listing covers: the store replaces exactly those.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskScope {
    All,
    /// Tasks assigned to these nodes (`filters={"node":[...]}`).
    Nodes(BTreeSet<String>),
    /// Tasks of these services (`filters={"service":[...]}`).
    Services(BTreeSet<String>),
    /// Tasks of these slots (`filters={"name":["web.3."]}`, the listing then narrowed to
    /// the slots' services: a service named `web.3` would match too).
    Slots(BTreeSet<SlotKey>),
}

/// Objects by ID, iterated in the engine's listing order (messages name them in that order).
#[derive(Debug, Clone)]
struct Listed<T> {
    by_id: HashMap<String, T>,
    order: Vec<String>,
}

impl<T> Default for Listed<T> {
    fn default() -> Self {
        Self {
            by_id: HashMap::new(),
            order: Vec::new(),
        }
    }
}

impl<T: PartialEq> PartialEq for Listed<T> {
    fn eq(&self, other: &Self) -> bool {
        self.by_id == other.by_id
    }
}

/// What a write to a [`Listed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    Unchanged,
    /// Objects changed, but the set of IDs is the same.
    Changed,
    /// An object was added or removed.
    Membership,
}

impl<T: PartialEq> Listed<T> {
    fn replace(&mut self, items: Vec<T>, id: impl Fn(&T) -> &String) -> Write {
        let order: Vec<String> = items.iter().map(|i| id(i).clone()).collect();
        let by_id: HashMap<String, T> = items.into_iter().map(|i| (id(&i).clone(), i)).collect();
        let write = if by_id.len() != self.by_id.len()
            || by_id.keys().any(|k| !self.by_id.contains_key(k))
        {
            Write::Membership
        } else if by_id != self.by_id || order != self.order {
            Write::Changed
        } else {
            Write::Unchanged
        };
        self.order = order;
        self.by_id = by_id;
        write
    }

    fn upsert(&mut self, key: String, item: T) -> Write {
        match self.by_id.insert(key.clone(), item) {
            None => {
                self.order.push(key);
                Write::Membership
            }
            Some(old) if Some(&old) == self.by_id.get(&key) => Write::Unchanged,
            Some(_) => Write::Changed,
        }
    }

    fn remove(&mut self, key: &str) -> Write {
        if self.by_id.remove(key).is_some() {
            self.order.retain(|k| k != key);
            Write::Membership
        } else {
            Write::Unchanged
        }
    }
}

impl<T> Listed<T> {
    fn get(&self, key: &str) -> Option<&T> {
        self.by_id.get(key)
    }

    fn iter(&self) -> impl Iterator<Item = &T> {
        self.order.iter().filter_map(|k| self.by_id.get(k))
    }
}

#[derive(Debug, Clone, Default)]
pub struct Observation {
    nodes: Listed<ObservedNode>,
    services: Listed<ObservedService>,
    networks: Listed<ObservedNetwork>,
    tasks: BTreeMap<TaskKey, ObservedTask>,
    by_node: HashMap<String, BTreeSet<TaskKey>>,
    /// Per node: its tasks not yet past `running` (the planner's drain wait), kept as tasks
    /// come and go rather than counted each pass.
    occupied: HashMap<String, usize>,
    by_service: HashMap<String, BTreeSet<TaskKey>>,
    /// Per node: the services with a spent task there (not kept; see
    /// [`ObservedTask::is_spent`]), such as the tasks a drain just shut down.
    spent_on: HashMap<String, BTreeSet<String>>,
    /// Tasks added or changed since [`Self::take_changed_tasks`] was last called.
    changed_tasks: BTreeSet<TaskKey>,
    /// See [`Self::placement_revision`].
    placement_revision: u64,
}

/// Equal when they hold the same objects (the indexes follow from them).
impl PartialEq for Observation {
    fn eq(&self, other: &Self) -> bool {
        self.nodes == other.nodes
            && self.services == other.services
            && self.networks == other.networks
            && self.tasks == other.tasks
    }
}

impl Observation {
    /// A store holding exactly these listings.
    pub(crate) fn from_listings(
        nodes: Vec<ObservedNode>,
        services: Vec<ObservedService>,
        networks: Vec<ObservedNetwork>,
        tasks: Vec<ObservedTask>,
    ) -> Self {
        let mut o = Self::default();
        o.replace_nodes(nodes);
        o.replace_services(services);
        o.replace_networks(networks);
        o.replace_tasks(&TaskScope::All, tasks);
        o
    }

    /// From the engine's JSON answers to `GET /nodes`, `/services`, `/networks` and `/tasks`
    /// (the captures in `sim/testdata`, for instance).
    pub(crate) fn from_json(
        nodes: &[u8],
        services: &[u8],
        networks: &[u8],
        tasks: &[u8],
    ) -> Result<Self, serde_json::Error> {
        Ok(Self::from_listings(
            serde_json::from_slice(nodes)?,
            serde_json::from_slice(services)?,
            serde_json::from_slice(networks)?,
            serde_json::from_slice(tasks)?,
        ))
    }

    /// From bollard's models of the same objects, through their JSON: for tests that build
    /// engine objects with bollard's types.
    pub fn from_engine_models(
        nodes: &[bollard::models::Node],
        services: &[bollard::models::Service],
        networks: &[bollard::models::Network],
        tasks: &[bollard::models::Task],
    ) -> Result<Self, serde_json::Error> {
        fn json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, serde_json::Error> {
            serde_json::to_vec(v)
        }
        Self::from_json(
            &json(&nodes)?,
            &json(&services)?,
            &json(&networks)?,
            &json(&tasks)?,
        )
    }

    pub fn nodes(&self) -> impl Iterator<Item = &ObservedNode> {
        self.nodes.iter()
    }

    pub fn node(&self, id: &str) -> Option<&ObservedNode> {
        self.nodes.get(id)
    }

    pub fn services(&self) -> impl Iterator<Item = &ObservedService> {
        self.services.iter()
    }

    pub fn service(&self, id: &str) -> Option<&ObservedService> {
        self.services.get(id)
    }

    pub fn networks(&self) -> impl Iterator<Item = &ObservedNetwork> {
        self.networks.iter()
    }

    pub fn tasks(&self) -> impl Iterator<Item = &ObservedTask> {
        self.tasks.values()
    }

    pub fn task(&self, id: &str) -> Option<&ObservedTask> {
        self.tasks.get(id)
    }

    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }

    /// Every task assigned to the node, whatever its state.
    pub fn tasks_on<'a>(&'a self, node_id: &str) -> impl Iterator<Item = &'a ObservedTask> {
        self.indexed(self.by_node.get(node_id))
    }

    /// The services with a task on the node: its tasks' and those of the spent tasks the
    /// last listing showed there (a drained node's services, whose tasks were shut down).
    pub(crate) fn services_on<'a>(&'a self, node_id: &str) -> impl Iterator<Item = &'a str> {
        self.tasks_on(node_id).map(|t| t.service_id.as_str()).chain(
            self.spent_on
                .get(node_id)
                .into_iter()
                .flatten()
                .map(String::as_str),
        )
    }

    /// Every task of the service, whatever its state.
    pub(crate) fn tasks_of<'a>(
        &'a self,
        service_id: &str,
    ) -> impl Iterator<Item = &'a ObservedTask> {
        self.indexed(self.by_service.get(service_id))
    }

    fn indexed<'a>(
        &'a self,
        ids: Option<&'a BTreeSet<TaskKey>>,
    ) -> impl Iterator<Item = &'a ObservedTask> {
        ids.into_iter()
            .flatten()
            .filter_map(|id| self.tasks.get(id))
    }

    /// The node's hostname; its ID when the node is unknown.
    pub fn hostname<'a>(&'a self, node_id: &'a str) -> &'a str {
        self.nodes
            .get(node_id)
            .map_or(node_id, ObservedNode::hostname)
    }

    /// The service's name; its ID when the service is unknown.
    pub(crate) fn service_name<'a>(&'a self, service_id: &'a str) -> &'a str {
        self.services
            .get(service_id)
            .map_or(service_id, ObservedService::name)
    }

    /// The swarm's time: the latest of `now` and the newest node write the managers recorded.
    /// A manager whose clock runs ahead of ours (or a simulated swarm at a time scale) stamps
    /// its tasks in our future; windows over task timestamps are measured on this clock.
    pub(crate) fn swarm_now(&self, now: Timestamp) -> Timestamp {
        (self.nodes.iter())
            .filter_map(|n| n.updated_at.as_deref()?.parse::<Timestamp>().ok())
            .fold(now, Timestamp::max)
    }

    /// The planner's input: every node, and how many tasks still occupy each.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            nodes: self.nodes.iter().map(ObservedNode::to_view).collect(),
            occupied: self
                .occupied
                .iter()
                .map(|(node, n)| (node.clone(), *n))
                .collect(),
            ..Snapshot::default()
        }
    }

    /// Changes whenever a service, network or task changes, or a node joins or leaves: what
    /// address usage follows (a node's own changes, frequent during a rollout, leave it alone).
    /// Consumers that read the whole store keep their result until it changes.
    pub(crate) fn placement_revision(&self) -> u64 {
        self.placement_revision
    }

    /// Node writes move the revision only when the set of nodes changes.
    fn node_write(&mut self, write: Write) {
        if write == Write::Membership {
            self.placement_revision += 1;
        }
    }

    fn placement_write(&mut self, write: Write) {
        if write != Write::Unchanged {
            self.placement_revision += 1;
        }
    }

    pub(crate) fn replace_nodes(&mut self, nodes: Vec<ObservedNode>) {
        let write = self.nodes.replace(nodes, |n| &n.id);
        self.node_write(write);
    }

    pub fn upsert_node(&mut self, node: ObservedNode) {
        let write = self.nodes.upsert(node.id.clone(), node);
        self.node_write(write);
    }

    pub fn remove_node(&mut self, id: &str) {
        let write = self.nodes.remove(id);
        self.node_write(write);
    }

    pub(crate) fn replace_services(&mut self, services: Vec<ObservedService>) {
        let write = self.services.replace(services, |s| &s.id);
        self.placement_write(write);
    }

    #[cfg(test)]
    pub(crate) fn upsert_service(&mut self, service: ObservedService) {
        let write = self.services.upsert(service.id.clone(), service);
        self.placement_write(write);
    }

    pub fn remove_service(&mut self, id: &str) {
        let write = self.services.remove(id);
        self.placement_write(write);
    }

    pub(crate) fn replace_networks(&mut self, networks: Vec<ObservedNetwork>) {
        let write = self.networks.replace(networks, |n| &n.id);
        self.placement_write(write);
    }

    pub fn upsert_network(&mut self, network: ObservedNetwork) {
        let write = self.networks.upsert(network.id.clone(), network);
        self.placement_write(write);
    }

    pub fn remove_network(&mut self, id: &str) {
        let write = self.networks.remove(id);
        self.placement_write(write);
    }

    /// Replaces the tasks `scope` covers by `tasks` (a listing of exactly that scope): tasks
    /// of the scope missing from it are gone (the engine deleted them). Spent tasks
    /// ([`ObservedTask::is_spent`]) are not kept: one that was running is gone from the store.
    pub(crate) fn replace_tasks(
        &mut self,
        scope: &TaskScope,
        tasks: Vec<ObservedTask>,
    ) -> TaskChanges {
        let (spent, tasks): (Vec<_>, Vec<_>) = tasks.into_iter().partition(|t| t.is_spent());
        self.note_spent(scope, &spent);
        let listed: BTreeSet<String> = tasks.iter().map(|t| t.id.clone()).collect();
        let gone: Vec<TaskKey> = match scope {
            TaskScope::All => self.tasks.keys().cloned().collect(),
            TaskScope::Nodes(ids) => self.ids_in(&self.by_node, ids),
            TaskScope::Services(ids) => self.ids_in(&self.by_service, ids),
            TaskScope::Slots(slots) => self.ids_in_slots(slots),
        };
        let mut changes = TaskChanges::default();
        for id in gone.iter().filter(|id| !listed.contains(&***id)) {
            if let Some(old) = self.remove_task(id) {
                changes.note(&old, true);
            }
        }
        for task in tasks {
            if self.tasks.get(task.id.as_str()) != Some(&task) {
                changes.note(&task, false);
                self.upsert_task(task);
            }
        }
        changes
    }

    /// Replaces what the scope's last listing said of spent tasks: which services had one on
    /// which node.
    fn note_spent(&mut self, scope: &TaskScope, spent: &[ObservedTask]) {
        match scope {
            TaskScope::All => self.spent_on.clear(),
            TaskScope::Nodes(ids) => ids.iter().for_each(|n| {
                self.spent_on.remove(n);
            }),
            TaskScope::Services(ids) => self.spent_on.retain(|_, services| {
                services.retain(|s| !ids.contains(s));
                !services.is_empty()
            }),
            // A slot's listing does not show the service's other spent tasks: add only.
            TaskScope::Slots(_) => {}
        }
        for t in spent {
            if let Some(node) = t.node() {
                let services = self.spent_on.entry(node.to_string()).or_default();
                if !services.contains(&t.service_id) {
                    services.insert(t.service_id.clone());
                }
            }
        }
    }

    fn ids_in(
        &self,
        index: &HashMap<String, BTreeSet<TaskKey>>,
        keys: &BTreeSet<String>,
    ) -> Vec<TaskKey> {
        keys.iter()
            .filter_map(|k| index.get(k))
            .flatten()
            .cloned()
            .collect()
    }

    fn ids_in_slots(&self, slots: &BTreeSet<SlotKey>) -> Vec<TaskKey> {
        let mut by_service: BTreeMap<&str, BTreeSet<i64>> = BTreeMap::new();
        for (service, slot) in slots {
            by_service.entry(service).or_default().insert(*slot);
        }
        by_service
            .into_iter()
            .flat_map(|(service, numbers)| {
                (self.by_service.get(service).into_iter().flatten())
                    .filter(move |id| {
                        let slot = self.tasks.get(*id).and_then(|t| t.slot);
                        slot.is_some_and(|n| numbers.contains(&n))
                    })
                    .cloned()
            })
            .collect()
    }

    fn upsert_task(&mut self, task: ObservedTask) {
        let key: TaskKey = match self.tasks.get_key_value(task.id.as_str()) {
            Some((_, old)) if *old == task => return,
            Some((key, old)) => {
                let (key, old) = (key.clone(), old.clone());
                self.unindex(&old);
                key
            }
            None => Arc::from(task.id.as_str()),
        };
        if let Some(node) = task.node() {
            self.by_node
                .entry(node.to_string())
                .or_default()
                .insert(key.clone());
            if occupies_node(task.state()) {
                *self.occupied.entry(node.to_string()).or_default() += 1;
            }
        }
        self.by_service
            .entry(task.service_id.clone())
            .or_default()
            .insert(key.clone());
        self.changed_tasks.insert(key.clone());
        self.tasks.insert(key, task);
        self.placement_revision += 1;
    }

    fn remove_task(&mut self, id: &str) -> Option<ObservedTask> {
        let old = self.tasks.remove(id)?;
        self.placement_revision += 1;
        self.unindex(&old);
        self.changed_tasks.remove(id);
        Some(old)
    }

    fn unindex(&mut self, task: &ObservedTask) {
        if let Some(node) = task.node().filter(|_| occupies_node(task.state()))
            && let Some(n) = self.occupied.get_mut(node)
        {
            *n -= 1;
            if *n == 0 {
                self.occupied.remove(node);
            }
        }
        for (index, key) in [
            (&mut self.by_node, task.node_id.as_str()),
            (&mut self.by_service, task.service_id.as_str()),
        ] {
            if let Some(set) = index.get_mut(key) {
                set.remove(task.id.as_str());
                if set.is_empty() {
                    index.remove(key);
                }
            }
        }
    }

    /// The tasks added or changed since the last call, for consumers that only look at what
    /// changed (rejection tracking).
    pub(crate) fn take_changed_tasks(&mut self) -> Vec<String> {
        std::mem::take(&mut self.changed_tasks)
            .into_iter()
            .map(|id| id.to_string())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::TaskState;

    fn captured() -> Observation {
        let read = |f: &str| swarm_sim::captures::read(&format!("20.10.24/{f}")).into_bytes();
        Observation::from_json(
            &read("nodes.json"),
            &read("services.json"),
            &read("networks.json"),
            &read("tasks.json"),
        )
        .expect("the captured listings parse")
    }

    #[test]
    fn parses_the_captured_listings_and_indexes_them() {
        let o = captured();
        assert_eq!(o.nodes().count(), 5);
        assert!(o.services().count() > 0);
        assert!(o.networks().any(|n| n.ingress && n.is_overlay()));
        let on_nodes: usize = o.nodes().map(|n| o.tasks_on(&n.id).count()).sum();
        let unassigned = o.tasks().filter(|t| t.node().is_none()).count();
        assert_eq!(on_nodes + unassigned, o.task_count());
        let of_services: usize = o.services().map(|s| o.tasks_of(&s.id).count()).sum();
        assert!(of_services <= o.task_count());
        for t in o.tasks() {
            assert_ne!(o.service_name(&t.service_id), "", "{t:?}");
        }
        assert!(
            o.nodes()
                .all(|n| o.hostname(&n.id) == n.description.hostname)
        );
    }

    #[test]
    fn a_scoped_listing_replaces_only_its_scope() {
        let mut o = captured();
        let node = o
            .tasks()
            .find_map(|t| t.node().map(str::to_string))
            .expect("a task on a node");
        let before = o.task_count();
        let on_node = o.tasks_on(&node).count();
        o.take_changed_tasks();
        o.replace_tasks(&TaskScope::Nodes(BTreeSet::from([node.clone()])), vec![]);
        assert_eq!(o.tasks_on(&node).count(), 0);
        assert_eq!(o.task_count(), before - on_node);
        assert!(
            o.take_changed_tasks().is_empty(),
            "removals are not changes"
        );

        let fresh = captured();
        let again: Vec<ObservedTask> = fresh.tasks_on(&node).cloned().collect();
        o.replace_tasks(&TaskScope::Nodes(BTreeSet::from([node.clone()])), again);
        assert_eq!(o, fresh);
        assert_eq!(
            o.snapshot(),
            fresh.snapshot(),
            "the occupancy counts follow the tasks"
        );
        assert_eq!(o.take_changed_tasks().len(), on_node);
    }

    #[test]
    fn spent_tasks_are_not_kept_but_their_services_stay_known_on_the_node() {
        let mut o = captured();
        let task = o
            .tasks()
            .find(|t| t.is_running() && t.node().is_some())
            .expect("a running task on a node")
            .clone();
        let node = task.node().unwrap().to_string();
        let scope = TaskScope::Nodes(BTreeSet::from([node.clone()]));
        let mut listing: Vec<ObservedTask> = o.tasks_on(&node).cloned().collect();
        // the node was drained: its task is shut down
        let shut = listing.iter_mut().find(|t| t.id == task.id).unwrap();
        shut.desired_state = TaskState::SHUTDOWN;
        shut.status.state = TaskState::SHUTDOWN;
        let before = o.task_count();
        let changes = o.replace_tasks(&scope, listing);
        assert!(o.task(&task.id).is_none(), "a spent task is not kept");
        assert_eq!(o.task_count(), before - 1);
        assert!(changes.services.contains(&task.service_id), "{changes:?}");
        assert!(
            o.services_on(&node).any(|s| s == task.service_id),
            "its service is still one of the node's"
        );
        // a rejected task is a problem, kept
        let mut rejected = task.clone();
        rejected.status.state = TaskState::REJECTED;
        o.replace_tasks(&scope, vec![rejected]);
        assert!(o.task(&task.id).is_some());
        // a listing without it: the node's services are forgotten too
        o.replace_tasks(&scope, vec![]);
        assert_eq!(o.services_on(&node).count(), 0);
    }

    #[test]
    fn a_drained_slot_is_vacated_and_its_listing_replaces_only_that_slot() {
        let mut o = captured();
        let task = o
            .tasks()
            .find(|t| t.is_running() && t.slot.is_some_and(|n| n > 0) && t.node().is_some())
            .expect("a running replicated task")
            .clone();
        let (service, slot) = (task.service_id.clone(), task.slot.unwrap());
        let others = o
            .tasks_of(&service)
            .filter(|t| t.slot != Some(slot))
            .count();
        let node = task.node().unwrap().to_string();
        let mut listing: Vec<ObservedTask> = o.tasks_on(&node).cloned().collect();
        // the node is drained: its task is told to stop, still running
        let told = listing.iter_mut().find(|t| t.id == task.id).unwrap();
        told.desired_state = TaskState::SHUTDOWN;
        let changes = o.replace_tasks(&TaskScope::Nodes(BTreeSet::from([node])), listing);
        assert_eq!(
            changes.vacated,
            BTreeSet::from([(service.clone(), slot)]),
            "{changes:?}"
        );

        // the slot's listing: the old task spent, its replacement starting elsewhere
        let mut spent = task.clone();
        spent.desired_state = TaskState::SHUTDOWN;
        spent.status.state = TaskState::SHUTDOWN;
        let mut new = task.clone();
        new.id = "replacement".into();
        new.node_id = "elsewhere".into();
        new.status.state = TaskState::STARTING;
        let scope = TaskScope::Slots(BTreeSet::from([(service.clone(), slot)]));
        o.replace_tasks(&scope, vec![spent, new]);
        assert!(o.task(&task.id).is_none(), "the spent task is not kept");
        assert!(o.task("replacement").is_some());
        let slot_tasks: Vec<_> = o
            .tasks_of(&service)
            .filter(|t| t.slot == Some(slot))
            .collect();
        assert_eq!(slot_tasks.len(), 1);
        assert_eq!(
            o.tasks_of(&service)
                .filter(|t| t.slot != Some(slot))
                .count(),
            others,
            "the service's other slots are left alone"
        );
        // an empty listing of the slot: its tasks are gone
        o.replace_tasks(&scope, vec![]);
        assert!(o.task("replacement").is_none());
        assert_eq!(o.tasks_of(&service).count(), others);
    }

    #[test]
    fn the_placement_revision_moves_with_tasks_services_networks_and_membership() {
        let mut o = captured();
        let fresh = captured();
        let r0 = o.placement_revision();
        // The same listings again: nothing changed.
        o.replace_services(fresh.services().cloned().collect());
        o.replace_networks(fresh.networks().cloned().collect());
        o.replace_tasks(&TaskScope::All, fresh.tasks().cloned().collect());
        o.replace_nodes(fresh.nodes().cloned().collect());
        assert_eq!(o.placement_revision(), r0);

        // A node's own change (its availability) leaves it alone.
        let mut node = fresh.nodes().next().unwrap().clone();
        node.spec.availability = "drain".into();
        o.upsert_node(node.clone());
        assert_eq!(o.placement_revision(), r0);
        // A node leaving moves it.
        o.remove_node(&node.id);
        let r1 = o.placement_revision();
        assert!(r1 > r0);

        // A task gone moves it.
        let task = fresh.tasks().next().unwrap().clone();
        let scope = TaskScope::Services(BTreeSet::from([task.service_id.clone()]));
        let others: Vec<ObservedTask> = fresh
            .tasks_of(&task.service_id)
            .filter(|t| t.id != task.id)
            .cloned()
            .collect();
        o.replace_tasks(&scope, others);
        let r2 = o.placement_revision();
        assert!(r2 > r1);

        // A changed service moves it.
        let mut service = fresh.services().next().unwrap().clone();
        service.version.index += 1;
        o.upsert_service(service);
        assert!(o.placement_revision() > r2);
    }
}
