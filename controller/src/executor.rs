//! Carries out the planner's actions: node updates (read, modify, write with the version index,
//! retried when the managers changed the node meanwhile), their events, and the node-side
//! commands. It decides nothing: a command's outcome goes into [`Commands`], which the loop
//! hands to the planner as an observation.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::models::{NodeSpec, NodeSpecRoleEnum};
use jiff::Timestamp;

use crate::autolock::read_unlock_key;
use crate::clock::Clock;
use crate::cluster::{Availability, NodeView, Role};
use crate::docker::{ApiError, Swarm};
use crate::events::{Event, EventSink};
use crate::marks::{self, Mark, Step};
use crate::metrics::Metrics;
use crate::planner::{Action, CommandEnded, CommandKind, NodeRef, NodeUpdate, node_vars};
use crate::spec::EngineUpgradeSpec;
use crate::ssh_check::{SshCheckFailure, SshLogin, check_login};
pub use crate::vocab::CommandOutcome;

/// How often a node update is retried after "update out of sequence".
const MAX_UPDATE_ATTEMPTS: usize = 8;

/// How long a failed ssh login to a node stands before it is tried again (the loop asks every
/// pass; a node's sshd, or fail2ban, should not see a login every quarter second).
const SSH_RECHECK: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{0}")]
    Api(#[from] ApiError),
    /// The node moved on since it was observed; the next pass plans again from what it is now.
    #[error("node {node} is no longer at step {expected:?} (now {found:?}); re-planning")]
    Moved {
        node: String,
        expected: Option<Step>,
        found: Option<Step>,
    },
    #[error("could not write the events file: {0}")]
    Events(#[from] std::io::Error),
    /// The upgrade command's ssh cannot log in to the node: it is not drained.
    #[error("{0}")]
    SshLogin(Box<SshCheckFailure>),
}

impl ExecError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            ExecError::Api(e) => e.metric_label(),
            ExecError::Moved { .. } => "moved",
            ExecError::Events(_) => "events_file",
            ExecError::SshLogin(f) => f.problem.metric_label(),
        }
    }
}

/// The node spec as the operator wants it: what it read, with availability and marks changed.
fn modified_spec(current: &NodeView, raw: &NodeSpec, change: &SpecChange<'_>) -> NodeSpec {
    let mut labels: BTreeMap<String, String> = current.labels.clone();
    match change.mark {
        Some(m) => m.write_to(&mut labels),
        None => marks::clear(&mut labels),
    }
    let mut spec = raw.clone();
    spec.labels = Some(labels.into_iter().collect());
    if let Some(a) = change.availability {
        spec.availability = Some(a.to_engine());
    }
    if let Some(role) = change.role {
        spec.role = Some(match role {
            Role::Manager => NodeSpecRoleEnum::MANAGER,
            Role::Worker => NodeSpecRoleEnum::WORKER,
        });
    }
    spec
}

/// What one node update changes in the node's spec (`None`: kept as it is; no mark: the
/// operator's labels removed).
#[derive(Debug, Clone, Copy)]
struct SpecChange<'a> {
    availability: Option<Availability>,
    role: Option<Role>,
    mark: Option<&'a Mark>,
}

impl<'a> SpecChange<'a> {
    /// What the planner's update changes in the node's spec.
    fn of(u: &'a NodeUpdate) -> Self {
        SpecChange {
            availability: u.availability,
            role: u.role,
            mark: u.mark.as_ref(),
        }
    }
}

/// Runs `argv` with the node's placeholders and environment, within `timeout`.
pub async fn run_node_command(
    argv: &[String],
    node: &NodeRef,
    target: &str,
    timeout: Duration,
) -> CommandOutcome {
    let vars = node_vars(node, target);
    let argv = vars.expand_argv(argv);
    let Some((program, args)) = argv.split_first() else {
        return CommandOutcome::Failed("empty command".into());
    };
    let mut cmd = tokio::process::Command::new(program);
    // Output goes to files, not pipes: if the operator is killed mid-upgrade, a pipe would
    // break and take the command down at its next write; a file lets it finish its work.
    let (out_file, err_file) = match (
        OutputFile::create(node, "out"),
        OutputFile::create(node, "err"),
    ) {
        (Ok(o), Ok(e)) => (o, e),
        (Err(e), _) | (_, Err(e)) => {
            return CommandOutcome::Failed(format!("cannot create the command's output file: {e}"));
        }
    };
    cmd.args(args)
        .envs(vars.env())
        .stdin(Stdio::null())
        .stdout(out_file.stdio())
        .stderr(err_file.stdio())
        // Its own process group: a timeout kills the command and its children, and a
        // Ctrl-C aimed at the operator does not cut an engine upgrade in half.
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return CommandOutcome::Failed(format!(
                "cannot start {program:?}: {e} (check upgrade.command in the spec)"
            ));
        }
    };
    let pid = child.id();
    let waited = tokio::time::timeout(timeout, child.wait()).await;
    let (out, err) = (out_file.read(), err_file.read());
    for line in out.lines().chain(err.lines()) {
        tracing::debug!(node = %node.hostname, command = %program, "{line}");
    }
    match waited {
        Ok(Ok(status)) => {
            if status.success() {
                CommandOutcome::Succeeded
            } else {
                let tail = last_line(&err).or_else(|| last_line(&out));
                CommandOutcome::Failed(format!(
                    "{} exited with {}{}",
                    program,
                    status
                        .code()
                        .map(|c| format!("status {c}"))
                        .unwrap_or_else(|| "a signal".into()),
                    tail.map(|t| format!(": {t}")).unwrap_or_default()
                ))
            }
        }
        Ok(Err(e)) => CommandOutcome::Failed(format!("waiting for {program}: {e}")),
        Err(_) => {
            if let Some(pid) = pid {
                // SAFETY: kill(2) on the group we created; no memory is touched.
                unsafe {
                    libc::kill(-(pid as i32), libc::SIGKILL);
                }
            }
            CommandOutcome::Failed(format!(
                "{program} did not finish within {} and was killed",
                crate::spec::SpecDuration(timeout)
            ))
        }
    }
}

/// A command's stdout or stderr, in a file of its own that is removed once read.
struct OutputFile {
    path: std::path::PathBuf,
    file: std::fs::File,
}

impl OutputFile {
    fn create(node: &NodeRef, stream: &str) -> std::io::Result<Self> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "swarm-upgrade-{}-{}-{}.{stream}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            node.id
        ));
        let file = std::fs::File::create(&path)?;
        Ok(Self { path, file })
    }

    fn stdio(&self) -> Stdio {
        self.file
            .try_clone()
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null())
    }

    fn read(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.path).unwrap_or_default()).into_owned()
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn last_line(text: &str) -> Option<String> {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.chars().take(200).collect())
}

/// The node-side commands of this process: which run now, and how the last one on each node
/// ended (until the planner has acted on it). Lost with the process, by design: the node's
/// labels say what to do without it.
#[derive(Clone, Default)]
pub struct Commands(Arc<Mutex<CommandTable>>);

#[derive(Default)]
struct CommandTable {
    running: BTreeSet<String>,
    ended: BTreeMap<String, CommandEnded>,
    /// Per node id: the last failed ssh login before a drain, and when.
    ssh_failures: BTreeMap<String, (Timestamp, SshCheckFailure)>,
}

impl Commands {
    fn table(&self) -> std::sync::MutexGuard<'_, CommandTable> {
        self.0.lock().expect("poisoned")
    }

    /// Node ids whose command runs now.
    pub fn running(&self) -> BTreeSet<String> {
        self.table().running.clone()
    }

    /// Per node id: the command that ended there and how.
    pub fn ended(&self) -> BTreeMap<String, CommandEnded> {
        self.table().ended.clone()
    }

    /// Marks a command as running on `id`; false when one already is.
    fn begin(&self, id: &str) -> bool {
        let mut table = self.table();
        table.ended.remove(id);
        table.running.insert(id.to_string())
    }

    fn end(&self, id: &str, ended: CommandEnded) {
        let mut table = self.table();
        table.running.remove(id);
        table.ended.insert(id.to_string(), ended);
    }

    /// The command did not happen (nothing to report): the planner may ask for it again.
    fn abandon(&self, id: &str) {
        self.table().running.remove(id);
    }

    /// Per node id, why its ssh login failed, for the failures younger than [`SSH_RECHECK`]
    /// (older ones are forgotten): the planner does not drain those nodes.
    pub fn ssh_failures(&self, now: Timestamp) -> BTreeMap<String, String> {
        let mut table = self.table();
        let fresh = |at: &Timestamp| now.duration_since(*at).unsigned_abs() < SSH_RECHECK;
        table.ssh_failures.retain(|_, (at, _)| fresh(at));
        (table.ssh_failures.iter())
            .map(|(id, (_, failure))| (id.clone(), failure.to_string()))
            .collect()
    }

    fn ssh_failed(&self, id: &str, now: Timestamp, failure: &SshCheckFailure) {
        let entry = (now, failure.clone());
        self.table().ssh_failures.insert(id.to_string(), entry);
    }

    /// The node moved off the step its ended command ran at: the outcome is used up.
    fn consumed(&self, id: &str, left_step: Option<Step>) {
        let mut table = self.table();
        if table
            .ended
            .get(id)
            .is_some_and(|e| Some(e.command.step()) == left_step)
        {
            table.ended.remove(id);
        }
    }
}

/// Everything an action needs; cloned into the tasks that run commands.
#[derive(Clone)]
pub struct Executor {
    pub swarm: Swarm,
    pub events: EventSink,
    pub metrics: Metrics,
    pub commands: Commands,
    pub clock: Clock,
    /// Woken when a command finishes, so the next pass comes at once.
    pub wake: Arc<tokio::sync::Notify>,
}

impl Executor {
    pub async fn apply(
        &self,
        action: &Action,
        spec: &Arc<EngineUpgradeSpec>,
    ) -> Result<(), ExecError> {
        match action {
            Action::Start(update) => {
                self.ssh_login_before_drain(update, spec).await?;
                self.update(update).await?
            }
            Action::Update(update) => self.update(update).await?,
            Action::Run { command, update } => {
                if self.commands.running().contains(&update.node.id) {
                    return Ok(());
                }
                self.update(update).await?;
                let started = update.mark.as_ref().map_or(self.clock.now(), |m| m.since);
                self.spawn_command(*command, update.node.clone(), started, spec.clone());
            }
            Action::Unlock(update) => {
                self.emit_events(update).await?;
                let started = update.mark.as_ref().map_or(self.clock.now(), |m| m.since);
                self.spawn_unlock(update.node.clone(), started, spec.clone());
                // The node stays at its step: the outcome (maybe in already) is not used up.
                return Ok(());
            }
        }
        let update = action.update();
        self.commands.consumed(&update.node.id, update.expect);
        Ok(())
    }

    /// When the upgrade command runs ssh, its login must work before the node is drained
    /// (see [`crate::ssh_check`]).
    async fn ssh_login_before_drain(
        &self,
        u: &NodeUpdate,
        spec: &EngineUpgradeSpec,
    ) -> Result<(), ExecError> {
        let argv = node_vars(&u.node, &spec.version).expand_argv(&spec.upgrade.command);
        let Some(login) = SshLogin::from_argv(&argv) else {
            return Ok(());
        };
        if u.availability != Some(Availability::Drain) {
            return Ok(());
        }
        // A failed login is reported to the planner, which holds the node until it is tried
        // again (`Commands::ssh_failures`).
        let now = self.clock.now();
        check_login(&login, &u.node.hostname)
            .await
            .map_err(|failure| {
                self.commands.ssh_failed(&u.node.id, now, &failure);
                ExecError::SshLogin(Box::new(failure))
            })
    }

    /// Writes the update, then emits the events it stands for.
    async fn update(&self, u: &NodeUpdate) -> Result<(), ExecError> {
        write_node(&self.swarm, &u.node, u.expect, &SpecChange::of(u)).await?;
        if u.role == Some(Role::Worker) {
            self.swarm.note_demoted(&u.node.id);
        }
        if let Some((step, took)) = u.finished {
            self.metrics.observe_step(step, took.as_secs_f64());
        }
        self.emit_events(u).await
    }

    /// The events an update stands for (or its message as a log line when it has none).
    async fn emit_events(&self, u: &NodeUpdate) -> Result<(), ExecError> {
        let (from, to) = match &u.mark {
            Some(m) => (m.from_version.as_str(), m.target.as_str()),
            None => (
                u.node.engine_version.as_str(),
                u.node.engine_version.as_str(),
            ),
        };
        let now = self.clock.now();
        let events: Vec<Event> = u
            .events
            .iter()
            .map(|e| Event::node(now, e.step, &u.node, from, to, e.message.clone()))
            .collect();
        self.events.emit_all(&events).await?;
        if u.events.is_empty() {
            tracing::info!(node = %u.node.hostname, "{}", u.message);
        }
        Ok(())
    }

    /// Runs the command in a task of its own; its outcome is recorded for the next pass.
    fn spawn_command(
        &self,
        command: CommandKind,
        node: NodeRef,
        started: Timestamp,
        spec: Arc<EngineUpgradeSpec>,
    ) {
        if !self.commands.begin(&node.id) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let argv = match command {
                CommandKind::Upgrade => Some(&spec.upgrade.command),
                CommandKind::Rollback => spec.upgrade.rollback.as_ref(),
                // Not a node-side command: planned as `Action::Unlock` (see `spawn_unlock`).
                CommandKind::Unlock => None,
            };
            let outcome = match argv {
                Some(argv) => {
                    let _standby = this.swarm.standby(&node.id);
                    this.swarm.event_stream_moved_off(&node.id).await;
                    run_node_command(argv, &node, &spec.version, spec.upgrade.timeout.get()).await
                }
                // The spec changed while the node waited for its rollback.
                None => CommandOutcome::Failed("the spec no longer has an upgrade.rollback".into()),
            };
            if let CommandOutcome::Failed(why) = &outcome {
                tracing::warn!(node = %node.hostname, command = ?command, "{why}");
            }
            let ended = CommandEnded {
                command,
                started,
                outcome,
            };
            this.commands.end(&node.id, ended);
            this.wake.notify_one();
        });
    }
}

/// How long an unlock that did not happen (the engine away, a passing error) waits before the
/// planner may ask for it again.
const UNLOCK_RETRY: Duration = Duration::from_secs(2);

impl Executor {
    /// Unlocks a locked manager in a task of its own; its outcome is recorded for the next pass.
    fn spawn_unlock(&self, node: NodeRef, started: Timestamp, spec: Arc<EngineUpgradeSpec>) {
        if !self.commands.begin(&node.id) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            match this.unlock(&node, &spec).await {
                Some(outcome) => {
                    let ended = CommandEnded {
                        command: CommandKind::Unlock,
                        started,
                        outcome,
                    };
                    this.commands.end(&node.id, ended);
                }
                None => {
                    tokio::time::sleep(UNLOCK_RETRY).await;
                    this.commands.abandon(&node.id);
                }
            }
            this.wake.notify_one();
        });
    }

    /// `None`: it did not happen this time and may be asked again. The key is read now (a
    /// rotated secret is picked up) and goes nowhere but the request.
    async fn unlock(&self, node: &NodeRef, spec: &EngineUpgradeSpec) -> Option<CommandOutcome> {
        let Some(source) = &spec.upgrade.unlock_key else {
            return Some(CommandOutcome::Failed(
                "the spec no longer has an upgrade.unlockKey".into(),
            ));
        };
        let key = match read_unlock_key(source) {
            Ok(key) => key,
            Err(e) => return Some(CommandOutcome::Failed(e.to_string())),
        };
        match self.swarm.unlock(&node.id, &node.addr, key.expose()).await {
            Ok(()) => {
                tracing::info!(node = %node.hostname, "unlocked with the key from {source}");
                Some(CommandOutcome::Succeeded)
            }
            // 400: not a key at all; 401: not this swarm's key.
            Err(ApiError::Status {
                status: 400 | 401,
                message,
            }) => Some(CommandOutcome::Failed(format!(
                "the unlock key was refused by {} ({message}); check {source}",
                node.hostname
            ))),
            Err(e) => {
                tracing::warn!(node = %node.hostname, "unlocking failed, trying again: {e}");
                None
            }
        }
    }
}

/// Read the node, check it is where the planner saw it, change availability and marks,
/// write with its version index; on "out of sequence" read again. Never overwrites what
/// the admin or the managers changed meanwhile: every attempt starts from a fresh read.
async fn write_node(
    swarm: &Swarm,
    node: &NodeRef,
    expect: Option<Step>,
    change: &SpecChange<'_>,
) -> Result<(), ExecError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let raw = swarm.node(&node.id).await?;
        let current = NodeView::from_engine(&raw).map_err(ApiError::from)?;
        let found = current.mark().and_then(Result::ok).map(|m| m.step);
        if found != expect {
            if attempt > 1 && already_written(&current, change) {
                // An earlier attempt was applied and its answer lost (a dropped connection,
                // a 5xx after the commit): the node is as this update wants it.
                tracing::debug!(node = %node.hostname, "the update was applied before; its answer was lost");
                return Ok(());
            }
            return Err(ExecError::Moved {
                node: node.hostname.clone(),
                expected: expect,
                found,
            });
        }
        let mut mark = change.mark.cloned();
        if let Some(m) = mark.as_mut()
            && expect.is_none()
        {
            // Record the availability as it is now, not as it was when planned.
            m.previous = current.availability;
        }
        let change = SpecChange {
            mark: mark.as_ref(),
            ..*change
        };
        let raw_spec = raw.spec.as_ref().expect("from_engine checked Spec");
        let spec = modified_spec(&current, raw_spec, &change);
        match swarm
            .update_node(&node.id, spec, current.version_index)
            .await
        {
            Ok(()) => return Ok(()),
            Err(ApiError::OutOfSequence) if attempt < MAX_UPDATE_ATTEMPTS => {
                tracing::debug!(node = %node.hostname, attempt, "update out of sequence; reading the node again");
                tokio::time::sleep(Duration::from_millis(20 * attempt as u64)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether `current` is what the update writes: its mark's step, availability and role.
fn already_written(current: &NodeView, change: &SpecChange<'_>) -> bool {
    let step = current.mark().and_then(Result::ok).map(|m| m.step);
    step == change.mark.map(|m| m.step)
        && change
            .availability
            .is_none_or(|a| a == current.availability)
        && change.role.is_none_or(|r| r == current.role)
}

/// `swarm-upgrade resume`: writes what the planner hands back ([`crate::planner::resume`]);
/// returns the nodes' hostnames.
pub async fn resume(swarm: &Swarm) -> Result<Vec<String>, ExecError> {
    let nodes = swarm.nodes().await?;
    let views: Vec<NodeView> = nodes
        .iter()
        .filter_map(|n| NodeView::from_engine(n).ok())
        .collect();
    let mut handed_back = vec![];
    for u in crate::planner::resume(&views) {
        write_node(swarm, &u.node, u.expect, &SpecChange::of(&u)).await?;
        handed_back.push(u.node.hostname);
    }
    Ok(handed_back)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeRef {
        NodeRef {
            id: "abc".into(),
            hostname: "n1; rm -rf /".into(),
            role: Role::Manager,
            addr: "10.0.0.1".into(),
            engine_version: "20.10.24".into(),
        }
    }

    #[test]
    fn an_outcome_stays_until_the_node_leaves_the_commands_step() {
        let commands = Commands::default();
        assert!(commands.begin("abc"));
        assert!(!commands.begin("abc"), "one command per node at a time");
        let started: Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        let ended = CommandEnded {
            command: CommandKind::Upgrade,
            started,
            outcome: CommandOutcome::Succeeded,
        };
        commands.end("abc", ended.clone());
        assert!(commands.running().is_empty());
        // An update from another step (a failed write retried later, another node) keeps it.
        commands.consumed("abc", Some(Step::Draining));
        assert_eq!(commands.ended().get("abc"), Some(&ended));
        commands.consumed("abc", Some(Step::Upgrading));
        assert!(commands.ended().is_empty());
        // A new run forgets the last outcome.
        commands.end("abc", ended);
        assert!(commands.begin("abc"));
        assert!(commands.ended().is_empty());
    }

    #[tokio::test]
    async fn placeholders_and_env_reach_the_command_as_data() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let argv: Vec<String> = [
            "/bin/sh",
            "-c",
            "printf '%s|' \"$1\" \"$2\" \"$SWARM_UPGRADE_NODE_HOSTNAME\" \"$SWARM_UPGRADE_TARGET_VERSION\" > \"$3\"",
            "sh",
            "{hostname}",
            "{version}",
            out.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let outcome = run_node_command(&argv, &node(), "26.1.5", Duration::from_secs(10)).await;
        assert_eq!(outcome, CommandOutcome::Succeeded);
        assert_eq!(
            std::fs::read_to_string(out).unwrap(),
            "n1; rm -rf /|26.1.5|n1; rm -rf /|26.1.5|"
        );
    }

    #[tokio::test]
    async fn failures_say_how_and_why() {
        let argv: Vec<String> = ["/bin/sh", "-c", "echo disk full >&2; exit 3"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        match run_node_command(&argv, &node(), "26.1.5", Duration::from_secs(10)).await {
            CommandOutcome::Failed(why) => {
                assert!(
                    why.contains("status 3") && why.contains("disk full"),
                    "{why}"
                )
            }
            other => panic!("{other:?}"),
        }
        let missing = vec!["/nonexistent/upgrade".to_string()];
        match run_node_command(&missing, &node(), "26.1.5", Duration::from_secs(10)).await {
            CommandOutcome::Failed(why) => assert!(why.contains("cannot start"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_command_past_its_timeout_is_killed() {
        let argv: Vec<String> = ["/bin/sh", "-c", "sleep 30"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let started = tokio::time::Instant::now();
        match run_node_command(&argv, &node(), "26.1.5", Duration::from_millis(300)).await {
            CommandOutcome::Failed(why) => assert!(why.contains("killed"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
