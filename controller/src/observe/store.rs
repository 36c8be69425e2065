//! The `Observation`: every node, service, network and task the operator knows of, indexed by
//! ID, by node and by service, kept current by the [`super::reflector`] and read by every
//! consumer (the planner through [`Observation::snapshot`], the health checks directly).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::views::{ObservedNetwork, ObservedNode, ObservedService, ObservedTask};
use crate::cluster::Snapshot;

/// Where the tasks a listing changed (added, changed or gone) belong.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskChanges {
    pub services: BTreeSet<String>,
    pub nodes: BTreeSet<String>,
}

impl TaskChanges {
    fn note(&mut self, task: &ObservedTask) {
        self.services.insert(task.service_id.clone());
        if let Some(node) = task.node() {
            self.nodes.insert(node.to_string());
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

impl<T> Listed<T> {
    fn replace(&mut self, items: Vec<T>, id: impl Fn(&T) -> &String) {
        self.order = items.iter().map(|i| id(i).clone()).collect();
        self.by_id = items.into_iter().map(|i| (id(&i).clone(), i)).collect();
    }

    fn upsert(&mut self, key: String, item: T) {
        if self.by_id.insert(key.clone(), item).is_none() {
            self.order.push(key);
        }
    }

    fn remove(&mut self, key: &str) {
        if self.by_id.remove(key).is_some() {
            self.order.retain(|k| k != key);
        }
    }

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
    tasks: BTreeMap<String, ObservedTask>,
    by_node: HashMap<String, BTreeSet<String>>,
    by_service: HashMap<String, BTreeSet<String>>,
    /// Tasks added or changed since [`Self::take_changed_tasks`] was last called.
    changed_tasks: BTreeSet<String>,
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
    pub fn from_listings(
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
    pub fn from_json(
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

    /// Every task of the service, whatever its state.
    pub fn tasks_of<'a>(&'a self, service_id: &str) -> impl Iterator<Item = &'a ObservedTask> {
        self.indexed(self.by_service.get(service_id))
    }

    fn indexed<'a>(
        &'a self,
        ids: Option<&'a BTreeSet<String>>,
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
    pub fn service_name<'a>(&'a self, service_id: &'a str) -> &'a str {
        self.services
            .get(service_id)
            .map_or(service_id, ObservedService::name)
    }

    /// The planner's input: every node, and the tasks that still occupy one.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            nodes: self.nodes.iter().map(ObservedNode::to_view).collect(),
            tasks: self
                .tasks
                .values()
                .map(ObservedTask::to_view)
                .filter(|t| t.node_id.is_some() && t.occupies_node())
                .collect(),
        }
    }

    pub fn replace_nodes(&mut self, nodes: Vec<ObservedNode>) {
        self.nodes.replace(nodes, |n| &n.id);
    }

    pub fn upsert_node(&mut self, node: ObservedNode) {
        self.nodes.upsert(node.id.clone(), node);
    }

    pub fn remove_node(&mut self, id: &str) {
        self.nodes.remove(id);
    }

    pub fn replace_services(&mut self, services: Vec<ObservedService>) {
        self.services.replace(services, |s| &s.id);
    }

    pub fn upsert_service(&mut self, service: ObservedService) {
        self.services.upsert(service.id.clone(), service);
    }

    pub fn remove_service(&mut self, id: &str) {
        self.services.remove(id);
    }

    pub fn replace_networks(&mut self, networks: Vec<ObservedNetwork>) {
        self.networks.replace(networks, |n| &n.id);
    }

    pub fn upsert_network(&mut self, network: ObservedNetwork) {
        self.networks.upsert(network.id.clone(), network);
    }

    pub fn remove_network(&mut self, id: &str) {
        self.networks.remove(id);
    }

    /// Replaces the tasks `scope` covers by `tasks` (a listing of exactly that scope): tasks
    /// of the scope missing from it are gone (the engine deleted them).
    pub fn replace_tasks(&mut self, scope: &TaskScope, tasks: Vec<ObservedTask>) -> TaskChanges {
        let listed: BTreeSet<String> = tasks.iter().map(|t| t.id.clone()).collect();
        let gone: Vec<String> = match scope {
            TaskScope::All => self.tasks.keys().cloned().collect(),
            TaskScope::Nodes(ids) => self.ids_in(&self.by_node, ids),
            TaskScope::Services(ids) => self.ids_in(&self.by_service, ids),
        };
        let mut changes = TaskChanges::default();
        for id in gone.iter().filter(|id| !listed.contains(*id)) {
            if let Some(old) = self.remove_task(id) {
                changes.note(&old);
            }
        }
        for task in tasks {
            if self.tasks.get(&task.id) != Some(&task) {
                changes.note(&task);
                self.upsert_task(task);
            }
        }
        changes
    }

    fn ids_in(
        &self,
        index: &HashMap<String, BTreeSet<String>>,
        keys: &BTreeSet<String>,
    ) -> Vec<String> {
        keys.iter()
            .filter_map(|k| index.get(k))
            .flatten()
            .cloned()
            .collect()
    }

    fn upsert_task(&mut self, task: ObservedTask) {
        if self.tasks.get(&task.id) == Some(&task) {
            return;
        }
        if let Some(old) = self.tasks.get(&task.id).cloned() {
            self.unindex(&old);
        }
        if let Some(node) = task.node() {
            self.by_node
                .entry(node.to_string())
                .or_default()
                .insert(task.id.clone());
        }
        self.by_service
            .entry(task.service_id.clone())
            .or_default()
            .insert(task.id.clone());
        self.changed_tasks.insert(task.id.clone());
        self.tasks.insert(task.id.clone(), task);
    }

    fn remove_task(&mut self, id: &str) -> Option<ObservedTask> {
        let old = self.tasks.remove(id)?;
        self.unindex(&old);
        self.changed_tasks.remove(id);
        Some(old)
    }

    fn unindex(&mut self, task: &ObservedTask) {
        for (index, key) in [
            (&mut self.by_node, task.node_id.as_str()),
            (&mut self.by_service, task.service_id.as_str()),
        ] {
            if let Some(set) = index.get_mut(key) {
                set.remove(&task.id);
                if set.is_empty() {
                    index.remove(key);
                }
            }
        }
    }

    /// The tasks added or changed since the last call, for consumers that only look at what
    /// changed (rejection tracking).
    pub fn take_changed_tasks(&mut self) -> Vec<String> {
        std::mem::take(&mut self.changed_tasks)
            .into_iter()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(o.take_changed_tasks().len(), on_node);
    }
}
