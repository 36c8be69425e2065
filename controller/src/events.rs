//! The rollout's steps as an append-only JSON-lines file (`--events FILE`) and as log lines.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::vocab::{NodeRef, Role};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventStep {
    Drain,
    Drained,
    Upgrade,
    Upgraded,
    Ready,
    Reactivate,
    Reactivated,
    Failed,
    Rollback,
    /// An upgraded manager came up locked (autolock) and is being unlocked with the key.
    Unlock,
    /// The drained leader is demoted to a worker: leadership moves to another manager
    /// (`strategy.leaderHandover`).
    Demote,
    /// A manager demoted for its upgrade is promoted back, Ready at the target.
    Promote,
    Paused,
    /// A paused rollout goes on (a failure cleared, or `strategy.paused` set back to false).
    Resumed,
    Completed,
}

impl EventStep {
    pub fn as_str(self) -> &'static str {
        match self {
            EventStep::Drain => "drain",
            EventStep::Drained => "drained",
            EventStep::Upgrade => "upgrade",
            EventStep::Upgraded => "upgraded",
            EventStep::Ready => "ready",
            EventStep::Reactivate => "reactivate",
            EventStep::Reactivated => "reactivated",
            EventStep::Failed => "failed",
            EventStep::Rollback => "rollback",
            EventStep::Unlock => "unlock",
            EventStep::Demote => "demote",
            EventStep::Promote => "promote",
            EventStep::Paused => "paused",
            EventStep::Resumed => "resumed",
            EventStep::Completed => "completed",
        }
    }
}

impl fmt::Display for EventStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of the events file. Rollout-wide steps (paused, completed) have empty node fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub time: Timestamp,
    pub node_id: String,
    pub hostname: String,
    pub role: String,
    pub step: EventStep,
    pub from_version: String,
    pub to_version: String,
    pub message: String,
}

impl Event {
    pub fn node(
        time: Timestamp,
        step: EventStep,
        node: &NodeRef,
        from_version: &str,
        to_version: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            time,
            node_id: node.id.clone(),
            hostname: node.hostname.clone(),
            role: node.role.as_str().to_string(),
            step,
            from_version: from_version.to_string(),
            to_version: to_version.to_string(),
            message: message.into(),
        }
    }

    pub fn rollout(
        time: Timestamp,
        step: EventStep,
        to_version: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            time,
            node_id: String::new(),
            hostname: String::new(),
            role: String::new(),
            step,
            from_version: String::new(),
            to_version: to_version.to_string(),
            message: message.into(),
        }
    }

    pub fn role(&self) -> Option<Role> {
        match self.role.as_str() {
            "manager" => Some(Role::Manager),
            "worker" => Some(Role::Worker),
            _ => None,
        }
    }
}

/// Told of every event as it is written (the notification webhooks). It must not wait: the
/// reconcile loop writes the events.
pub trait EventListener: Send + Sync {
    fn events_written(&self, events: &[Event]);
}

/// Writes each event to the log and, when configured, appends it to the events file and
/// tells the listener (the notification webhooks, queued, never waited for).
#[derive(Clone, Default)]
pub struct EventSink {
    path: Option<PathBuf>,
    listener: Option<Arc<dyn EventListener>>,
}

impl fmt::Debug for EventSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventSink")
            .field("path", &self.path)
            .field("listener", &self.listener.is_some())
            .finish()
    }
}

impl EventSink {
    pub fn new(path: Option<PathBuf>) -> Self {
        Self {
            path,
            listener: None,
        }
    }

    pub(crate) fn with_listener(mut self, listener: Arc<dyn EventListener>) -> Self {
        self.listener = Some(listener);
        self
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub async fn emit(&self, event: &Event) -> std::io::Result<()> {
        self.emit_all(std::slice::from_ref(event)).await
    }

    /// Writes the events of one step (a node update) to the log and as one append to the
    /// file: a crash writes them all or none, never the first without the rest.
    pub(crate) async fn emit_all(&self, events: &[Event]) -> std::io::Result<()> {
        let mut lines = vec![];
        for event in events {
            tracing::info!(
                step = %event.step,
                node = %event.hostname,
                node_id = %event.node_id,
                role = %event.role,
                from_version = %event.from_version,
                to_version = %event.to_version,
                "{}",
                event.message
            );
            serde_json::to_writer(&mut lines, event).map_err(std::io::Error::other)?;
            lines.push(b'\n');
        }
        if let Some(listener) = &self.listener
            && !events.is_empty()
        {
            listener.events_written(events);
        }
        let Some(path) = &self.path else {
            return Ok(());
        };
        if lines.is_empty() {
            return Ok(());
        }
        // One write with O_APPEND, so concurrent writers never interleave a line.
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await?;
        file.write_all(&lines).await?;
        file.flush().await
    }
}

/// Reads an events file back (tests, `demo` summary).
pub fn read_events(path: &Path) -> std::io::Result<Vec<Event>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(std::io::Error::other))
        .collect()
}
