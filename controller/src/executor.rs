//! Carries out the planner's actions: node updates (read, modify, write with the version index,
//! retried when the managers changed the node meanwhile) and the node-side commands.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::models::NodeSpec;
use jiff::Timestamp;

use crate::cluster::{Availability, NodeView};
use crate::docker::{ApiError, Swarm};
use crate::events::{Event, EventSink, EventStep};
use crate::marks::{self, Mark, Step};
use crate::metrics::Metrics;
use crate::planner::{Action, Failure, NodeRef, NodeUpdate};
use crate::spec::EngineUpgradeSpec;

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

/// How a node-side command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandOutcome {
    Succeeded,
    Failed(String),
}

fn node_vars(node: &NodeRef, target: &str) -> crate::spec::NodeVars {
    crate::spec::NodeVars {
        id: node.id.clone(),
        hostname: node.hostname.clone(),
        addr: node.addr.clone(),
        role: node.role.as_str().to_string(),
        version: target.to_string(),
        current_version: node.engine_version.clone(),
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

/// Node ids whose upgrade command runs in this process now.
#[derive(Clone, Default)]
pub struct RunningCommands(Arc<Mutex<BTreeSet<String>>>);

impl RunningCommands {
    pub fn snapshot(&self) -> BTreeSet<String> {
        self.0.lock().expect("poisoned").clone()
    }
    fn insert(&self, id: &str) -> bool {
        self.0.lock().expect("poisoned").insert(id.to_string())
    }
    fn remove(&self, id: &str) {
        self.0.lock().expect("poisoned").remove(id);
    }
}

/// Everything an action needs; cloned into the tasks that run commands.
#[derive(Clone)]
pub struct Executor {
    pub swarm: Swarm,
    pub events: EventSink,
    pub metrics: Metrics,
    pub running: RunningCommands,
    /// Woken when a command finishes, so the next pass comes at once.
    pub wake: Arc<tokio::sync::Notify>,
}

impl Executor {
    pub async fn apply(
        &self,
        action: Action,
        spec: &Arc<EngineUpgradeSpec>,
    ) -> Result<(), ExecError> {
        match action {
            Action::Update(update) => self.update(&update).await,
            Action::RunUpgrade {
                node,
                expect,
                mark,
                events,
                finished,
                message,
            } => {
                if self.running.snapshot().contains(&node.id) {
                    return Ok(());
                }
                self.write(&node, expect, None, Some(&mark)).await?;
                self.finished(finished);
                for step in events {
                    let msg = if step == EventStep::Upgrade {
                        format!(
                            "running {}",
                            node_vars(&node, &spec.version)
                                .expand_argv(&spec.upgrade.command)
                                .join(" ")
                        )
                    } else {
                        message.clone()
                    };
                    self.emit(step, &node, &mark, msg).await?;
                }
                self.spawn_upgrade(node, mark, spec.clone());
                Ok(())
            }
            Action::Fail(failure) => self.fail(failure, spec).await,
        }
    }

    async fn update(&self, u: &NodeUpdate) -> Result<(), ExecError> {
        self.write(&u.node, u.expect, u.availability, u.mark.as_ref())
            .await?;
        self.finished(u.finished);
        let (from, to) = match &u.mark {
            Some(m) => (m.from_version.clone(), m.target.clone()),
            None => (u.node.engine_version.clone(), u.node.engine_version.clone()),
        };
        for step in &u.events {
            let message = match (step, u.availability) {
                (EventStep::Ready, _) => format!("Ready at {to}"),
                (EventStep::Reactivate, Some(a)) => format!("setting availability back to {a}"),
                _ => u.message.clone(),
            };
            let event = Event::node(*step, &u.node, &from, &to, message);
            self.events.emit(&event).await?;
        }
        if u.events.is_empty() {
            tracing::info!(node = %u.node.hostname, "{}", u.message);
        }
        Ok(())
    }

    fn finished(&self, finished: Option<(Step, Duration)>) {
        if let Some((step, took)) = finished {
            self.metrics.observe_step(step, took.as_secs_f64());
        }
    }

    async fn emit(
        &self,
        step: EventStep,
        node: &NodeRef,
        mark: &Mark,
        message: String,
    ) -> Result<(), ExecError> {
        let event = Event::node(step, node, &mark.from_version, &mark.target, message);
        Ok(self.events.emit(&event).await?)
    }

    /// Read the node, check it is where the planner saw it, change availability and marks,
    /// write with its version index; on "out of sequence" read again. Never overwrites what
    /// the admin or the managers changed meanwhile: every attempt starts from a fresh read.
    async fn write(
        &self,
        node: &NodeRef,
        expect: Option<Step>,
        availability: Option<Availability>,
        mark: Option<&Mark>,
    ) -> Result<(), ExecError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let raw = self.swarm.node(&node.id).await?;
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
            match self
                .swarm
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

    fn spawn_upgrade(&self, node: NodeRef, mark: Mark, spec: Arc<EngineUpgradeSpec>) {
        if !self.running.insert(&node.id) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let standby = this.swarm.standby(&node.id);
            let outcome = run_node_command(
                &spec.upgrade.command,
                &node,
                &spec.version,
                spec.upgrade.timeout.get(),
            )
            .await;
            drop(standby);
            let took = Timestamp::now().duration_since(mark.since);
            let result = match outcome {
                CommandOutcome::Succeeded => {
                    this.metrics
                        .observe_step(Step::Upgrading, took.as_secs_f64().max(0.0));
                    let upgraded = mark.at(Step::Upgraded, Timestamp::now());
                    match this
                        .write(&node, Some(Step::Upgrading), None, Some(&upgraded))
                        .await
                    {
                        Ok(()) => {
                            this.emit(
                                EventStep::Upgraded,
                                &node,
                                &mark,
                                "upgrade command succeeded".into(),
                            )
                            .await
                        }
                        Err(e) => Err(e),
                    }
                }
                CommandOutcome::Failed(reason) => {
                    let mut failed = mark.at(Step::Failed, Timestamp::now());
                    failed.reason = Some(reason.clone());
                    failed.spec_hash = Some(crate::spec::spec_hash(&spec));
                    this.fail(
                        Failure {
                            node: node.clone(),
                            expect: Some(Step::Upgrading),
                            reason,
                            rollback: true,
                            mark: failed,
                        },
                        &spec,
                    )
                    .await
                }
            };
            if let Err(e) = result {
                // The mark still says `upgrading`: the next pass sees no command running and
                // decides again from the node's observed state.
                tracing::warn!(node = %node.hostname, error = %e, "recording the upgrade's outcome failed");
            }
            this.running.remove(&node.id);
            this.wake.notify_one();
        });
    }

    /// Roll back (if asked and configured), give the node back when that is safe, mark it
    /// failed and pause: the rollout never moves on to another node by itself.
    async fn fail(&self, f: Failure, spec: &Arc<EngineUpgradeSpec>) -> Result<(), ExecError> {
        self.emit(EventStep::Failed, &f.node, &f.mark, f.reason.clone())
            .await?;
        // Without a rollback the node's engine is in an unknown state unless it never stopped.
        let mut restore = !f.rollback;
        if f.rollback {
            match &spec.upgrade.rollback {
                Some(argv) => {
                    self.emit(
                        EventStep::Rollback,
                        &f.node,
                        &f.mark,
                        format!(
                            "running {}",
                            node_vars(&f.node, &spec.version)
                                .expand_argv(argv)
                                .join(" ")
                        ),
                    )
                    .await?;
                    let standby = self.swarm.standby(&f.node.id);
                    let outcome =
                        run_node_command(argv, &f.node, &spec.version, spec.upgrade.timeout.get())
                            .await;
                    drop(standby);
                    match outcome {
                        CommandOutcome::Succeeded => restore = true,
                        CommandOutcome::Failed(why) => {
                            tracing::error!(node = %f.node.hostname, "rollback failed: {why}");
                        }
                    }
                }
                None => tracing::warn!(
                    node = %f.node.hostname,
                    "no upgrade.rollback in the spec: the node is left drained for a person to look at"
                ),
            }
        }
        let availability = restore.then_some(f.mark.previous);
        let mut mark = f.mark.clone();
        if !restore {
            let note = " (left drained: no successful rollback)";
            mark.reason = mark.reason.map(|r| format!("{r}{note}"));
        }
        self.write(&f.node, f.expect, availability, Some(&mark))
            .await?;
        let message = format!(
            "rollout paused: {} failed: {}",
            f.node.hostname,
            mark.reason.as_deref().unwrap_or("")
        );
        self.emit(EventStep::Paused, &f.node, &f.mark, message)
            .await
    }
}

/// `swarm-upgrade resume`: hands failed nodes back so the rollout retries them in order.
pub async fn clear_failures(swarm: &Swarm, events: &EventSink) -> Result<Vec<String>, ExecError> {
    let nodes = swarm.nodes().await?;
    let mut cleared = vec![];
    let executor = Executor {
        swarm: swarm.clone(),
        events: events.clone(),
        metrics: Metrics::new(),
        running: RunningCommands::default(),
        wake: Arc::default(),
    };
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
            executor
                .write(&r, Some(Step::Failed), Some(mark.previous), None)
                .await?;
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
