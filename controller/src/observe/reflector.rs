//! Keeps the [`Observation`] current at a cost that follows what changes, like kube-runtime's
//! reflector: list once; follow `GET /events` (nodes, services, networks) and re-read only
//! what an event names; read `GET /services?status=true` each pass (running/desired counts
//! without counting tasks); re-read the tasks of the nodes in flight and of the services whose
//! spec or counts changed or that are not converged (where rejections show up); list
//! everything again on a slow cadence, after the event stream broke, and after a leader change.
//! A full listing of tasks goes one service at a time, so the operator never holds a whole
//! `/tasks` answer.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::store::{Observation, TaskChanges, TaskScope};
use super::views::{ObservedNetwork, ObservedNode, ObservedService, ObservedTask};
use crate::docker::{ApiError, Swarm};

/// Above this many changed nodes, one `GET /nodes` replaces the per-node reads.
const NODES_READ_ONE_BY_ONE: usize = 32;

/// Nodes per `GET /tasks?filters={"node":[...]}`, so that no answer is a whole `/tasks`.
const NODES_PER_TASK_READ: usize = 64;

/// How often the reflector lists everything again, and re-reads unconverged services.
#[derive(Debug, Clone)]
pub struct Cadence {
    /// Between two full listings (events cover what changes in between).
    pub full_resync: Duration,
    /// Between two reads of the tasks of a service that is not converged: bounds how late a
    /// task rejection (which makes no event) reaches the metrics.
    pub unconverged_tasks: Duration,
}

impl Default for Cadence {
    fn default() -> Self {
        Self {
            full_resync: Duration::from_secs(300),
            unconverged_tasks: Duration::from_secs(2),
        }
    }
}

/// What the event stream said changed since the last pass.
#[derive(Debug, Default)]
struct Changed {
    nodes: BTreeSet<String>,
    services: BTreeSet<String>,
    networks: BTreeSet<String>,
    /// The stream broke: events may have been missed.
    resync: bool,
}

pub struct Reflector {
    swarm: Swarm,
    store: Observation,
    cadence: Cadence,
    changed: Arc<Mutex<Changed>>,
    follower: JoinHandle<()>,
    last_full: Option<Instant>,
    /// When each unconverged service's tasks were last read.
    service_tasks_read: HashMap<String, Instant>,
}

impl Drop for Reflector {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

/// A `filters` value (`{"node":[...]}`), URL-encoded for a query string.
fn filters(key: &str, values: &BTreeSet<String>) -> String {
    crate::http_client::query_escape(&serde_json::json!({ key: values }).to_string())
}

impl Reflector {
    /// Starts following the event stream; `wake` is notified on every event and whenever the
    /// stream breaks. The first [`Self::refresh`] lists everything.
    pub fn start(swarm: Swarm, cadence: Cadence, wake: Arc<Notify>) -> Self {
        let changed = Arc::new(Mutex::new(Changed::default()));
        let follower = tokio::spawn(follow_events(swarm.clone(), changed.clone(), wake));
        Self {
            swarm,
            store: Observation::default(),
            cadence,
            changed,
            follower,
            last_full: None,
            service_tasks_read: HashMap::new(),
        }
    }

    /// A reflector that lists on demand and follows no events (for one-shot commands).
    pub fn once(swarm: Swarm) -> Self {
        Self {
            swarm,
            store: Observation::default(),
            cadence: Cadence::default(),
            changed: Arc::default(),
            follower: tokio::spawn(async {}),
            last_full: None,
            service_tasks_read: HashMap::new(),
        }
    }

    pub fn into_store(mut self) -> Observation {
        std::mem::take(&mut self.store)
    }

    pub fn store(&self) -> &Observation {
        &self.store
    }

    pub fn store_mut(&mut self) -> &mut Observation {
        &mut self.store
    }

    /// Brings the store up to date; `in_flight` are the nodes in their cycle now, whose node
    /// and tasks are re-read every pass.
    pub async fn refresh(&mut self, in_flight: &BTreeSet<String>) -> Result<(), ApiError> {
        let changed = std::mem::take(&mut *self.changed.lock().expect("poisoned"));
        let due = self
            .last_full
            .is_none_or(|t| t.elapsed() >= self.cadence.full_resync);
        if due || changed.resync {
            return self.list_everything().await;
        }
        let leader_before = self.leader();
        let nodes: BTreeSet<String> = changed.nodes.union(in_flight).cloned().collect();
        if nodes.len() > NODES_READ_ONE_BY_ONE {
            // A burst (a leader's restart marks every node): one listing is cheaper.
            let listed: Vec<ObservedNode> = self.swarm.get_json("nodes", "/nodes").await?;
            self.store.replace_nodes(listed);
        } else {
            for id in &nodes {
                self.reread_node(id).await?;
            }
        }
        if self.leader() != leader_before {
            // A new leader reports every node `unknown` and then rewrites them all.
            tracing::debug!("the raft leader changed; listing everything again");
            return self.list_everything().await;
        }
        for id in &changed.networks {
            self.reread_network(id).await?;
        }
        let mut stale = self.reread_services(&changed.services).await?;
        // A node's tasks change when it is drained or comes back, without a task event.
        let mut changes = TaskChanges::default();
        let ids: Vec<String> = nodes.into_iter().collect();
        for chunk in ids.chunks(NODES_PER_TASK_READ) {
            let chunk: BTreeSet<String> = chunk.iter().cloned().collect();
            let tasks: Vec<ObservedTask> = self
                .swarm
                .get_json(
                    "tasks_of_nodes",
                    &format!("/tasks?filters={}", filters("node", &chunk)),
                )
                .await?;
            let more = self.store.replace_tasks(&TaskScope::Nodes(chunk), tasks);
            changes.services.extend(more.services);
        }
        // Tasks stopping on a node have replacements elsewhere: read their services' tasks.
        stale.extend(changes.services);
        for id in &stale {
            self.reread_service_tasks(id).await?;
        }
        Ok(())
    }

    /// A service attached to a network the store does not hold: the network was created
    /// without an event reaching the operator (or before the stream was open).
    fn refers_to_unknown_networks(&self) -> bool {
        let known = |target: &str| {
            self.store
                .networks()
                .any(|n| n.id == target || n.name == target || n.id.starts_with(target))
        };
        self.store.services().any(|s| {
            s.spec
                .task_template
                .networks
                .iter()
                .chain(&s.spec.networks)
                .any(|n| !n.target.is_empty() && !known(&n.target))
        })
    }

    fn leader(&self) -> Option<String> {
        self.store
            .nodes()
            .find(|n| n.is_leader())
            .map(|n| n.id.clone())
    }

    /// Every node, service and network, and every service's tasks, one service at a time.
    pub async fn list_everything(&mut self) -> Result<(), ApiError> {
        let nodes: Vec<ObservedNode> = self.swarm.get_json("nodes", "/nodes").await?;
        let services: Vec<ObservedService> = self
            .swarm
            .get_json("services", "/services?status=true")
            .await?;
        let networks: Vec<ObservedNetwork> = self.swarm.get_json("networks", "/networks").await?;
        let ids: BTreeSet<String> = services.iter().map(|s| s.id.clone()).collect();
        self.store.replace_nodes(nodes);
        self.store.replace_services(services);
        self.store.replace_networks(networks);
        let gone: BTreeSet<String> = self
            .store
            .tasks()
            .map(|t| t.service_id.clone())
            .filter(|s| !ids.contains(s))
            .collect();
        self.store.replace_tasks(&TaskScope::Services(gone), vec![]);
        for id in &ids {
            self.reread_service_tasks(id).await?;
        }
        self.last_full = Some(Instant::now());
        Ok(())
    }

    async fn reread_node(&mut self, id: &str) -> Result<(), ApiError> {
        match self.swarm.get_json("node", &format!("/nodes/{id}")).await {
            Ok(node) => self.store.upsert_node(node),
            Err(ApiError::NotFound(_)) => self.store.remove_node(id),
            Err(e) => return Err(e),
        }
        Ok(())
    }

    async fn reread_network(&mut self, id: &str) -> Result<(), ApiError> {
        match self
            .swarm
            .get_json("network", &format!("/networks/{id}"))
            .await
        {
            Ok(network) => self.store.upsert_network(network),
            Err(ApiError::NotFound(_)) => self.store.remove_network(id),
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Lists the services with their counts; returns those whose tasks are worth re-reading:
    /// named by an event, new, changed (spec version or counts), gone, or not converged and
    /// not read for [`Cadence::unconverged_tasks`].
    async fn reread_services(
        &mut self,
        named: &BTreeSet<String>,
    ) -> Result<BTreeSet<String>, ApiError> {
        let listed: Vec<ObservedService> = self
            .swarm
            .get_json("services", "/services?status=true")
            .await?;
        let mut stale: BTreeSet<String> = named.clone();
        let ids: BTreeSet<&str> = listed.iter().map(|s| s.id.as_str()).collect();
        stale.extend(
            self.store
                .services()
                .filter(|s| !ids.contains(s.id.as_str()))
                .map(|s| s.id.clone()),
        );
        for s in &listed {
            let before = self.store.service(&s.id);
            let changed = before
                .is_none_or(|b| b.version != s.version || b.service_status != s.service_status);
            let unconverged = s.converged_by_status() == Some(false)
                && self
                    .service_tasks_read
                    .get(&s.id)
                    .is_none_or(|t| t.elapsed() >= self.cadence.unconverged_tasks);
            if changed || unconverged {
                stale.insert(s.id.clone());
            }
        }
        self.store.replace_services(listed);
        if self.refers_to_unknown_networks() {
            let networks: Vec<ObservedNetwork> =
                self.swarm.get_json("networks", "/networks").await?;
            self.store.replace_networks(networks);
        }
        Ok(stale)
    }

    async fn reread_service_tasks(&mut self, id: &str) -> Result<TaskChanges, ApiError> {
        let scope = BTreeSet::from([id.to_string()]);
        let tasks: Vec<ObservedTask> = if self.store.service(id).is_some() {
            self.swarm
                .get_json(
                    "tasks_of_service",
                    &format!("/tasks?filters={}", filters("service", &scope)),
                )
                .await?
        } else {
            vec![]
        };
        let changes = self.store.replace_tasks(&TaskScope::Services(scope), tasks);
        self.service_tasks_read
            .insert(id.to_string(), Instant::now());
        self.service_tasks_read
            .retain(|s, _| self.store.service(s).is_some());
        Ok(changes)
    }
}

/// Records what each event names; re-opens the stream (on whichever manager answers) when it
/// ends, as it does when that manager's engine stops, and asks for a full listing then. A
/// stream on a manager the operator is about to stop or has demoted is moved elsewhere: an open
/// request holds up that engine's shutdown.
async fn follow_events(swarm: Swarm, changed: Arc<Mutex<Changed>>, wake: Arc<Notify>) {
    loop {
        match swarm.events().await {
            Ok((source, stream)) => {
                // What changed while no stream was open is read by a full listing made now,
                // after the new stream opened: nothing falls between the two.
                changed.lock().expect("poisoned").resync = true;
                wake.notify_one();
                let stream = std::pin::pin!(stream);
                follow_stream(&swarm, source.as_deref(), stream, &changed, &wake).await;
            }
            Err(e) => tracing::debug!("cannot open the event stream: {e}"),
        }
        changed.lock().expect("poisoned").resync = true;
        wake.notify_one();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// How often a quiet stream checks whether its manager is to be avoided.
const SOURCE_CHECK: Duration = Duration::from_millis(250);

async fn follow_stream(
    swarm: &Swarm,
    source: Option<&str>,
    mut stream: std::pin::Pin<
        &mut impl futures::Stream<Item = Result<bollard::models::EventMessage, bollard::errors::Error>>,
    >,
    changed: &Mutex<Changed>,
    wake: &Notify,
) {
    loop {
        match tokio::time::timeout(SOURCE_CHECK, stream.next()).await {
            Err(_) if source.is_some_and(|id| swarm.avoids(id)) => {
                tracing::debug!("moving the event stream off a manager being upgraded or demoted");
                return;
            }
            Err(_) => {}
            Ok(Some(Ok(event))) => {
                record(changed, &event);
                wake.notify_one();
            }
            Ok(Some(Err(e))) => {
                tracing::debug!("event stream ended: {e}");
                return;
            }
            Ok(None) => return,
        }
    }
}

fn record(changed: &Mutex<Changed>, event: &bollard::models::EventMessage) {
    use bollard::models::EventMessageTypeEnum as Type;
    let Some(id) = event.actor.as_ref().and_then(|a| a.id.clone()) else {
        return;
    };
    let mut c = changed.lock().expect("poisoned");
    match event.typ {
        Some(Type::NODE) => c.nodes.insert(id),
        Some(Type::SERVICE) => c.services.insert(id),
        Some(Type::NETWORK) => c.networks.insert(id),
        _ => false,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_url_encoded_json() {
        let f = filters(
            "node",
            &BTreeSet::from(["a1".to_string(), "b2".to_string()]),
        );
        assert_eq!(f, "%7B%22node%22%3A%5B%22a1%22%2C%22b2%22%5D%7D");
    }
}
