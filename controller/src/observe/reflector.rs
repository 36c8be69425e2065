//! Keeps the [`Observation`] current at a cost that follows what changes, like kube-runtime's
//! reflector: list once; follow `GET /events` (nodes, services, networks) and re-read only
//! what an event names; read `GET /services?status=true` each pass (running/desired counts
//! without counting tasks); re-read the tasks of the nodes in flight and of the services whose
//! spec or counts changed or that are not converged (where rejections show up); list
//! everything again on a slow cadence, after the event stream broke, and after a leader change.
//! A full listing of tasks goes one service at a time, so the operator never holds a whole
//! `/tasks` answer.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use bollard::models::{EventMessage, TaskState};

use super::store::{Observation, SlotKey, TaskChanges, TaskScope};
use super::views::{ObservedNetwork, ObservedNode, ObservedService, ObservedTask};
use crate::docker::{ApiError, Swarm};
use crate::vocab::{Availability, State};

/// Above this many changed nodes, one `GET /nodes` replaces the per-node reads.
const NODES_READ_ONE_BY_ONE: usize = 32;

/// Nodes per `GET /tasks?filters={"node":[...]}`, so that no answer is a whole `/tasks`.
const NODES_PER_TASK_READ: usize = 64;

/// Slot names per `GET /tasks?filters={"name":[...]}` (a query string stays a few kB).
const SLOTS_PER_TASK_READ: usize = 64;

/// How long a node that left the cycle, or whose availability changed or that went down or
/// came back, is re-read at least: the orchestrator moves its tasks a moment later.
const SETTLING_AT_LEAST: Duration = Duration::from_secs(2);

/// How long such a node is re-read at most while a task on it is starting or stopping.
const SETTLING_AT_MOST: Duration = Duration::from_secs(60);

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
    /// Per service, the slots followed by name until their new task runs.
    moved: BTreeMap<String, BTreeSet<i64>>,
    /// The services whose tasks the last pass re-read (see [`Touched`]).
    touched_last_pass: BTreeSet<String>,
    /// The nodes in flight at the last pass.
    in_flight_last_pass: BTreeSet<String>,
    /// Nodes that left the cycle, with when: re-read until their tasks run, as a reactivated
    /// node's new global tasks start after the operator has moved on.
    settling: BTreeMap<String, Instant>,
    /// Services whose tasks showed them converged ahead of their counts at the last pass.
    ahead_last_pass: BTreeSet<String>,
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

/// Swarmkit keeps task names lowercased in the index it looks a name prefix up in.
fn is_lowercase(name: &str) -> bool {
    !name.chars().any(char::is_uppercase)
}

/// What this pass re-read of each service's tasks: whether a change in its counts is
/// explained by tasks the store already follows.
struct Touched {
    /// Services with a task changed on the nodes re-read or a slot followed, in this pass or
    /// the last.
    services: BTreeSet<String>,
    /// Per service: its followed slots and its tasks on the re-read nodes not running yet.
    starting: HashMap<String, usize>,
}

impl Touched {
    fn new(
        store: &Observation,
        nodes: &BTreeSet<String>,
        services: BTreeSet<String>,
        moved: &BTreeMap<String, BTreeSet<i64>>,
    ) -> Self {
        let mut starting: HashMap<String, usize> = HashMap::new();
        let on_nodes = nodes.iter().flat_map(|n| store.tasks_on(n));
        for t in on_nodes.filter(|t| t.desired_state == TaskState::RUNNING && !t.is_running()) {
            *starting.entry(t.service_id.clone()).or_default() += 1;
        }
        for (id, slots) in moved {
            let waiting = slots.iter().filter(|n| {
                !store
                    .tasks_of(id)
                    .any(|t| t.slot == Some(**n) && t.is_running())
            });
            *starting.entry(id.clone()).or_default() += waiting.count();
        }
        Self { services, starting }
    }

    /// The service's tasks re-read this pass account for every task it lacks.
    fn explains(&self, service: &ObservedService) -> bool {
        let Some(status) = service.service_status else {
            return false;
        };
        let lacking = status.desired_tasks.saturating_sub(status.running_tasks);
        self.services.contains(&service.id)
            && lacking as usize <= self.starting.get(&service.id).copied().unwrap_or(0)
    }
}

impl Reflector {
    /// Starts following the event stream; `wake` is notified on every event and whenever the
    /// stream breaks. The first [`Self::refresh`] lists everything.
    pub fn start(swarm: Swarm, cadence: Cadence, wake: Arc<Notify>) -> Self {
        let changed = Arc::new(Mutex::new(Changed::default()));
        let follower = tokio::spawn(follow_events(swarm.clone(), changed.clone(), wake));
        Self::with(swarm, cadence, changed, follower)
    }

    /// A reflector that lists on demand and follows no events (for one-shot commands).
    pub fn once(swarm: Swarm) -> Self {
        let follower = tokio::spawn(async {});
        Self::with(swarm, Cadence::default(), Arc::default(), follower)
    }

    fn with(
        swarm: Swarm,
        cadence: Cadence,
        changed: Arc<Mutex<Changed>>,
        follower: JoinHandle<()>,
    ) -> Self {
        Self {
            swarm,
            store: Observation::default(),
            cadence,
            changed,
            follower,
            last_full: None,
            service_tasks_read: HashMap::new(),
            moved: BTreeMap::new(),
            touched_last_pass: BTreeSet::new(),
            in_flight_last_pass: BTreeSet::new(),
            settling: BTreeMap::new(),
            ahead_last_pass: BTreeSet::new(),
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
        // The counts are read with the nodes, before the tasks: the tasks read next are at
        // least as new, and explain them.
        let swarm = self.swarm.clone();
        let counts = async move {
            (swarm.get_json::<Vec<ObservedService>>("services", "/services?status=true")).await
        };
        let (nodes, listed) = tokio::join!(self.refresh_nodes(&changed.nodes, in_flight), counts);
        let (nodes, listed) = (nodes?, listed?);
        for id in &changed.networks {
            self.reread_network(id).await?;
        }
        // A drain stops a node's tasks without a task event; their slots get new tasks on
        // other nodes, followed by name rather than by re-reading each service's task list.
        let on_nodes = self.reread_node_tasks(&nodes).await?;
        let mut stale = self.follow_slots(on_nodes.vacated);
        self.reread_moved_slots().await?;
        // The counts were read before this pass's tasks: a change the last pass's tasks
        // showed may only reach the counts now.
        let mine: BTreeSet<String> = (on_nodes.services.into_iter())
            .chain(self.moved.keys().cloned())
            .collect();
        let last = std::mem::replace(&mut self.touched_last_pass, mine.clone());
        let touched = Touched::new(
            &self.store,
            &nodes,
            mine.union(&last).cloned().collect(),
            &self.moved,
        );
        stale.extend(self.replace_services(listed, &touched).await?);
        for id in &stale {
            self.reread_service_tasks(id).await?;
        }
        self.drop_settled_slots();
        self.drop_settled_nodes();
        Ok(())
    }

    /// Re-reads the nodes the events named and those followed (in flight, settling); returns
    /// the nodes whose tasks to re-read this pass.
    async fn refresh_nodes(
        &mut self,
        named: &BTreeSet<String>,
        in_flight: &BTreeSet<String>,
    ) -> Result<BTreeSet<String>, ApiError> {
        let leader_before = self.leader();
        self.note_released(in_flight);
        let reread: BTreeSet<String> = (named.iter().chain(in_flight))
            .chain(self.settling.keys())
            .cloned()
            .collect();
        let before = self.node_conditions(&reread);
        // A burst (a new leader rewrites every node): one listing is cheaper.
        let list_all = reread.len() > NODES_READ_ONE_BY_ONE;
        if list_all {
            self.list_nodes().await?;
        } else {
            for id in &reread {
                self.reread_node(id).await?;
            }
        }
        if self.leader() != leader_before {
            // Every node changes as the new leader learns it again (`unknown`, then `ready`),
            // which changes no task: only the nodes are listed, and the networks in case.
            tracing::debug!("the raft leader changed; listing the nodes and networks again");
            if !list_all {
                self.list_nodes().await?;
            }
            let networks = self.swarm.get_json("networks", "/networks").await?;
            self.store.replace_networks(networks);
        }
        // A node's own tasks change with its availability or when it goes down or comes
        // back; not when it only turns `unknown` and `ready` again under a new leader (a task
        // that changes anyway shows in its service's counts). Such a node is then followed
        // for a while, as one released from the cycle is: its tasks move a moment later.
        let after = self.node_conditions(&reread);
        let now = Instant::now();
        for id in reread.iter().filter(|id| before.get(*id) != after.get(*id)) {
            self.settling.insert(id.clone(), now);
        }
        Ok(in_flight
            .iter()
            .chain(self.settling.keys())
            .cloned()
            .collect())
    }

    /// What of each node decides whether its tasks may have changed: its availability, and
    /// whether it is down (`unknown` counts as up: a new leader's view before it hears again).
    fn node_conditions(&self, ids: &BTreeSet<String>) -> BTreeMap<String, (Availability, bool)> {
        (ids.iter())
            .filter_map(|id| {
                let n = self.store.node(id)?;
                let down = matches!(n.state(), State::Down | State::Disconnected);
                Some((id.clone(), (n.availability(), down)))
            })
            .collect()
    }

    /// The nodes that left the cycle since the last pass start settling.
    fn note_released(&mut self, in_flight: &BTreeSet<String>) {
        let now = Instant::now();
        for id in self.in_flight_last_pass.difference(in_flight) {
            self.settling.insert(id.clone(), now);
        }
        for id in in_flight {
            self.settling.remove(id);
        }
        self.in_flight_last_pass = in_flight.clone();
    }

    /// A settling node is re-read for a while (its new tasks are created a moment after it is
    /// active again), then as long as a task on it is starting or stopping, up to
    /// [`SETTLING_AT_MOST`].
    fn drop_settled_nodes(&mut self) {
        let store = &self.store;
        self.settling.retain(|id, since| {
            // A task starting, or one told to stop that still runs.
            let moving = (store.tasks_on(id)).any(|t| {
                (t.desired_state == TaskState::RUNNING) != (t.state() == TaskState::RUNNING)
            });
            let elapsed = since.elapsed();
            elapsed < SETTLING_AT_LEAST || (moving && elapsed < SETTLING_AT_MOST)
        });
    }

    async fn reread_node_tasks(
        &mut self,
        nodes: &BTreeSet<String>,
    ) -> Result<TaskChanges, ApiError> {
        let mut changes = TaskChanges::default();
        let ids: Vec<&String> = nodes.iter().collect();
        for chunk in ids.chunks(NODES_PER_TASK_READ) {
            let chunk: BTreeSet<String> = chunk.iter().map(|id| (*id).clone()).collect();
            let tasks: Vec<ObservedTask> = self
                .swarm
                .get_json(
                    "tasks_of_nodes",
                    &format!("/tasks?filters={}", filters("node", &chunk)),
                )
                .await?;
            let more = self.store.replace_tasks(&TaskScope::Nodes(chunk), tasks);
            changes.services.extend(more.services);
            changes.vacated.extend(more.vacated);
        }
        Ok(changes)
    }

    /// Starts following these slots; returns the services whose slots cannot be looked up
    /// by name (swarmkit finds no task by a name with capitals), to be read whole.
    fn follow_slots(&mut self, vacated: BTreeSet<SlotKey>) -> BTreeSet<String> {
        let mut whole = BTreeSet::new();
        for (service, slot) in vacated {
            match self.store.service(&service) {
                Some(s) if is_lowercase(s.name()) => {
                    self.moved.entry(service).or_default().insert(slot);
                }
                Some(_) => {
                    whole.insert(service);
                }
                None => {}
            }
        }
        whole
    }

    /// Re-reads the tasks of every followed slot, a batch of names per request.
    async fn reread_moved_slots(&mut self) -> Result<(), ApiError> {
        let slots: Vec<(SlotKey, String)> = self
            .moved
            .iter()
            .filter_map(|(id, slots)| Some((id, slots, self.store.service(id)?.name())))
            .flat_map(|(id, slots, name)| {
                slots
                    .iter()
                    .map(move |n| ((id.clone(), *n), format!("{name}.{n}.")))
            })
            .collect();
        for chunk in slots.chunks(SLOTS_PER_TASK_READ) {
            let names: BTreeSet<String> = chunk.iter().map(|(_, name)| name.clone()).collect();
            let scope: BTreeSet<SlotKey> = chunk.iter().map(|(key, _)| key.clone()).collect();
            let listed: Vec<ObservedTask> = self
                .swarm
                .get_json(
                    "tasks_of_slots",
                    &format!("/tasks?filters={}", filters("name", &names)),
                )
                .await?;
            let tasks = (listed.into_iter())
                .filter(|t| {
                    t.slot
                        .is_some_and(|n| scope.contains(&(t.service_id.clone(), n)))
                })
                .collect();
            self.store.replace_tasks(&TaskScope::Slots(scope), tasks);
        }
        Ok(())
    }

    /// Stops following a slot once its new task runs (or its service is gone, or converged
    /// without it: scaled down).
    fn drop_settled_slots(&mut self) {
        let store = &self.store;
        self.moved.retain(|id, slots| {
            let Some(service) = store.service(id) else {
                return false;
            };
            let converged = service.converged_by_status() == Some(true);
            slots.retain(|n| {
                let tasks: Vec<&ObservedTask> =
                    store.tasks_of(id).filter(|t| t.slot == Some(*n)).collect();
                let runs = tasks.iter().any(|t| t.is_running());
                let wanted = tasks.iter().any(|t| t.desired_state == TaskState::RUNNING);
                !runs && (wanted || !converged)
            });
            !slots.is_empty()
        });
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
    pub(crate) async fn list_everything(&mut self) -> Result<(), ApiError> {
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
        self.moved.clear();
        for id in &ids {
            self.reread_service_tasks(id).await?;
        }
        self.last_full = Some(Instant::now());
        Ok(())
    }

    async fn list_nodes(&mut self) -> Result<(), ApiError> {
        let listed: Vec<ObservedNode> = self.swarm.get_json("nodes", "/nodes").await?;
        self.store.replace_nodes(listed);
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

    /// Stores the services as listed with their counts; returns those whose tasks are worth
    /// re-reading: new, respecified (a service event always comes with a new version, and an
    /// event without one, as after a leader change, changes no task) or gone; or whose counts changed, or
    /// that are not converged and not read for [`Cadence::unconverged_tasks`], unless what
    /// they lack is in the slots and nodes being followed ([`Touched`]).
    async fn replace_services(
        &mut self,
        listed: Vec<ObservedService>,
        touched: &Touched,
    ) -> Result<BTreeSet<String>, ApiError> {
        let mut stale = BTreeSet::new();
        let ids: BTreeSet<&str> = listed.iter().map(|s| s.id.as_str()).collect();
        stale.extend(
            self.store
                .services()
                .filter(|s| !ids.contains(s.id.as_str()))
                .map(|s| s.id.clone()),
        );
        let mut ahead = BTreeSet::new();
        for s in &listed {
            let before = self.store.service(&s.id);
            let respecified = before.is_none_or(|b| b.version != s.version);
            let counted = before.is_some_and(|b| b.service_status != s.service_status);
            let due = s.converged_by_status() == Some(false)
                && self
                    .service_tasks_read
                    .get(&s.id)
                    .is_none_or(|t| t.elapsed() >= self.cadence.unconverged_tasks);
            let unexplained = (counted || due)
                && !touched.explains(s)
                && !self.counts_lag_tasks(s, touched, &mut ahead);
            if respecified || unexplained {
                tracing::debug!(
                    service = s.name(),
                    respecified,
                    counted,
                    due,
                    status = ?s.service_status,
                    followed = touched.services.contains(&s.id),
                    starting = touched.starting.get(&s.id).copied().unwrap_or(0),
                    "re-reading all of a service's tasks"
                );
                stale.insert(s.id.clone());
            }
        }
        self.ahead_last_pass = ahead;
        self.store.replace_services(listed);
        if self.refers_to_unknown_networks() {
            let networks: Vec<ObservedNetwork> =
                self.swarm.get_json("networks", "/networks").await?;
            self.store.replace_networks(networks);
        }
        Ok(stale)
    }

    /// The counts were read before this pass's tasks: when those tasks already show the
    /// service converged, the counts get one pass to catch up before it is read whole.
    fn counts_lag_tasks(
        &self,
        service: &ObservedService,
        touched: &Touched,
        ahead: &mut BTreeSet<String>,
    ) -> bool {
        let Some(status) = service.service_status else {
            return false;
        };
        let running = self.store.tasks_of(&service.id).filter(|t| t.is_running());
        let lagging = touched.services.contains(&service.id)
            && running.count() as u64 >= status.desired_tasks
            && !self.ahead_last_pass.contains(&service.id);
        if lagging {
            ahead.insert(service.id.clone());
        }
        lagging
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

/// The engine's event stream, owned, so that a new one can open before it is let go.
type EventStream =
    Pin<Box<dyn futures::Stream<Item = Result<EventMessage, bollard::errors::Error>> + Send>>;

/// Records what each event names; re-opens the stream (on whichever manager answers) when it
/// ends, as it does when that manager's engine stops, and asks for a full listing then. A
/// stream on a manager the operator is about to stop or has demoted is handed over to another
/// manager first (see [`hand_over`]): an open request holds up that engine's shutdown, and a
/// hand-over misses no event, so it needs no full listing.
async fn follow_events(swarm: Swarm, changed: Arc<Mutex<Changed>>, wake: Arc<Notify>) {
    let mut handed: Option<(Option<String>, EventStream)> = None;
    let mut last_seen: Option<LastEvent> = None;
    loop {
        let opened = match handed.take() {
            Some(next) => Ok(next),
            None => match swarm.events(None).await {
                Ok((source, stream)) => {
                    // What changed while no stream was open is read by a full listing made
                    // now, after the new stream opened: nothing falls between the two.
                    changed.lock().expect("poisoned").resync = true;
                    wake.notify_one();
                    Ok((source, Box::pin(stream) as EventStream))
                }
                Err(e) => Err(e),
            },
        };
        match opened {
            Ok((source, mut stream)) => {
                let (source, seen) = (source.as_deref(), &mut last_seen);
                let end = follow_stream(&swarm, source, &mut stream, &changed, &wake, seen);
                if let StreamEnd::Moving = end.await {
                    handed = hand_over(&swarm, stream, last_seen, &changed, &wake).await;
                    if handed.is_some() {
                        continue;
                    }
                }
            }
            Err(e) => tracing::debug!("cannot open the event stream: {e}"),
        }
        changed.lock().expect("poisoned").resync = true;
        wake.notify_one();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// How long the stream being let go is still read while its successor starts.
const HAND_OVER_OVERLAP: Duration = Duration::from_millis(500);

/// How far back, before the engine time it is estimated to be, a stream taken over replays:
/// covers the managers' clocks differing by as much.
const REPLAY_MARGIN_NANOS: i64 = 5_000_000_000;

/// The engine time of the last event seen, and when it was seen.
#[derive(Debug, Clone, Copy)]
struct LastEvent {
    engine_nanos: i64,
    at: Instant,
}

impl LastEvent {
    /// `since` for a stream that replays what may not have been seen: a few seconds before
    /// the engine's time now, estimated from the last event (in `seconds.nanoseconds`).
    fn replay_from(&self) -> String {
        let elapsed = i64::try_from(self.at.elapsed().as_nanos()).unwrap_or(i64::MAX);
        let t = (self.engine_nanos.saturating_add(elapsed)).saturating_sub(REPLAY_MARGIN_NANOS);
        format!(
            "{}.{:09}",
            t.div_euclid(1_000_000_000),
            t.rem_euclid(1_000_000_000)
        )
    }
}

/// Opens a stream on another manager that first replays the last few seconds' events, and
/// reads both until the new one delivers (or for [`HAND_OVER_OVERLAP`]): no event falls
/// between them. Before any event was seen there is nothing to estimate the engine's time
/// from, and the overlap alone covers the gap. `None` when no other manager answers; the
/// caller then lists everything again.
async fn hand_over(
    swarm: &Swarm,
    mut old: EventStream,
    last_seen: Option<LastEvent>,
    changed: &Mutex<Changed>,
    wake: &Notify,
) -> Option<(Option<String>, EventStream)> {
    let since = last_seen.map(|l| l.replay_from());
    let (source, new) = swarm.events(since).await.ok()?;
    // Served by a manager to avoid only because no other answered: `events` says so.
    source.as_ref()?;
    let mut new: EventStream = Box::pin(new);
    let overlap = tokio::time::sleep(HAND_OVER_OVERLAP);
    tokio::pin!(overlap);
    loop {
        tokio::select! {
            event = new.next() => {
                if let Some(Ok(event)) = event {
                    record(changed, &event);
                    wake.notify_one();
                    tracing::debug!("the event stream moved to another manager");
                    return Some((source, new));
                }
                return None;
            }
            Some(Ok(event)) = old.next() => {
                record(changed, &event);
                wake.notify_one();
            }
            () = &mut overlap => {
                tracing::debug!("the event stream moved to another manager (nothing to replay)");
                return Some((source, new));
            }
        }
    }
}

/// How often a quiet stream checks whether its manager is to be avoided (it is also told).
const SOURCE_CHECK: Duration = Duration::from_millis(250);

/// Why a stream stopped being followed.
enum StreamEnd {
    /// It ended or failed: events may have been missed.
    Broke,
    /// Its manager is to be avoided.
    Moving,
}

async fn follow_stream(
    swarm: &Swarm,
    source: Option<&str>,
    stream: &mut EventStream,
    changed: &Mutex<Changed>,
    wake: &Notify,
    last_seen: &mut Option<LastEvent>,
) -> StreamEnd {
    loop {
        // Checked on every event too: a busy stream is never quiet for long.
        if source.is_some_and(|endpoint| swarm.avoids_endpoint(endpoint)) {
            tracing::debug!("moving the event stream off a manager being upgraded or demoted");
            return StreamEnd::Moving;
        }
        let next = tokio::select! {
            next = tokio::time::timeout(SOURCE_CHECK, stream.next()) => next,
            () = swarm.avoid_changed() => continue,
        };
        match next {
            Err(_) => {}
            Ok(Some(Ok(event))) => {
                if let Some(engine_nanos) = event.time_nano {
                    *last_seen = Some(LastEvent {
                        engine_nanos,
                        at: Instant::now(),
                    });
                }
                record(changed, &event);
                wake.notify_one();
            }
            Ok(Some(Err(e))) => {
                tracing::debug!("event stream ended: {e}");
                return StreamEnd::Broke;
            }
            Ok(None) => return StreamEnd::Broke,
        }
    }
}

fn record(changed: &Mutex<Changed>, event: &EventMessage) {
    use bollard::models::EventMessageTypeEnum as Type;
    let Some(id) = event.actor.as_ref().and_then(|a| a.id.clone()) else {
        return;
    };
    let mut c = changed.lock().expect("poisoned");
    match event.typ {
        Some(Type::NODE) => c.nodes.insert(id),
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
