//! Carries out the planner's actions: node updates (read, modify, write with the version index,
//! retried when the managers changed the node meanwhile), their events, and the node-side
//! commands. It decides nothing: a command's outcome goes into [`Commands`], which the loop
//! hands to the planner as an observation.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::models::NodeSpec;
use jiff::Timestamp;

use crate::clock::Clock;
use crate::cluster::{Availability, NodeView};
use crate::docker::{ApiError, Swarm};
use crate::events::{Event, EventSink};
use crate::marks::{self, Mark, Step};
use crate::metrics::Metrics;
use crate::planner::{Action, CommandEnded, CommandKind, NodeRef, NodeUpdate, node_vars};
use crate::spec::EngineUpgradeSpec;
pub use crate::vocab::CommandOutcome;

/// How often a node update is retried after "update out of sequence".
const MAX_UPDATE_ATTEMPTS: usize = 8;

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
}

impl ExecError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            ExecError::Api(e) => e.metric_label(),
            ExecError::Moved { .. } => "moved",
            ExecError::Events(_) => "events_file",
        }
    }
}

/// The node spec as the operator wants it: what it read, with availability and marks changed.
fn modified_spec(
    current: &NodeView,
    raw: &NodeSpec,
    availability: Option<Availability>,
    mark: Option<&Mark>,
) -> NodeSpec {
    let mut labels: BTreeMap<String, String> = current.labels.clone();
    match mark {
        Some(m) => m.write_to(&mut labels),
        None => marks::clear(&mut labels),
    }
    let mut spec = raw.clone();
    spec.labels = Some(labels.into_iter().collect());
    if let Some(a) = availability {
        spec.availability = Some(a.to_engine());
    }
    spec
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
            Action::Start(update) | Action::Update(update) => self.update(update).await?,
            Action::Run { command, update } => {
                if self.commands.running().contains(&update.node.id) {
                    return Ok(());
                }
                self.update(update).await?;
                let started = update.mark.as_ref().map_or(self.clock.now(), |m| m.since);
                self.spawn_command(*command, update.node.clone(), started, spec.clone());
            }
        }
        let update = action.update();
        self.commands.consumed(&update.node.id, update.expect);
        Ok(())
    }

    /// Writes the update, then emits the events it stands for.
    async fn update(&self, u: &NodeUpdate) -> Result<(), ExecError> {
        write_node(
            &self.swarm,
            &u.node,
            u.expect,
            u.availability,
            u.mark.as_ref(),
        )
        .await?;
        if let Some((step, took)) = u.finished {
            self.metrics.observe_step(step, took.as_secs_f64());
        }
        let (from, to) = match &u.mark {
            Some(m) => (m.from_version.as_str(), m.target.as_str()),
            None => (
                u.node.engine_version.as_str(),
                u.node.engine_version.as_str(),
            ),
        };
        for e in &u.events {
            let event = Event::node(
                self.clock.now(),
                e.step,
                &u.node,
                from,
                to,
                e.message.clone(),
            );
            self.events.emit(&event).await?;
        }
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
            };
            let outcome = match argv {
                Some(argv) => {
                    let _standby = this.swarm.standby(&node.id);
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

/// Read the node, check it is where the planner saw it, change availability and marks,
/// write with its version index; on "out of sequence" read again. Never overwrites what
/// the admin or the managers changed meanwhile: every attempt starts from a fresh read.
async fn write_node(
    swarm: &Swarm,
    node: &NodeRef,
    expect: Option<Step>,
    availability: Option<Availability>,
    mark: Option<&Mark>,
) -> Result<(), ExecError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let raw = swarm.node(&node.id).await?;
        let current = NodeView::from_engine(&raw).map_err(ApiError::from)?;
        let found = current.mark().and_then(Result::ok).map(|m| m.step);
        if found != expect {
            return Err(ExecError::Moved {
                node: node.hostname.clone(),
                expected: expect,
                found,
            });
        }
        let mut mark = mark.cloned();
        if let Some(m) = mark.as_mut()
            && expect.is_none()
        {
            // Record the availability as it is now, not as it was when planned.
            m.previous = current.availability;
        }
        let spec = modified_spec(
            &current,
            raw.spec.as_ref().expect("from_engine checked Spec"),
            availability,
            mark.as_ref(),
        );
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

/// `swarm-upgrade resume`: hands failed nodes back so the rollout retries them in order.
pub async fn clear_failures(swarm: &Swarm, _events: &EventSink) -> Result<Vec<String>, ExecError> {
    let nodes = swarm.nodes().await?;
    let mut cleared = vec![];
    for raw in &nodes {
        let Ok(node) = NodeView::from_engine(raw) else {
            continue;
        };
        if let Some(Ok(mark)) = node.mark()
            && mark.step == Step::Failed
        {
            let r = NodeRef {
                id: node.id.clone(),
                hostname: node.hostname.clone(),
                role: node.role,
                addr: node.addr.clone(),
                engine_version: node.engine_version.clone(),
            };
            write_node(swarm, &r, Some(Step::Failed), Some(mark.previous), None).await?;
            cleared.push(node.hostname.clone());
        }
    }
    Ok(cleared)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Role;

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
