//! The rollout's steps as an append-only JSON-lines file (`--events FILE`) and as log lines.

use std::fmt;
use std::path::{Path, PathBuf};

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
    Paused,
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
            EventStep::Paused => "paused",
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

/// Writes each event to the log and, when configured, appends it to the events file.
#[derive(Debug, Clone, Default)]
pub struct EventSink {
    path: Option<PathBuf>,
}

impl EventSink {
    pub fn new(path: Option<PathBuf>) -> Self {
        Self { path }
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub async fn emit(&self, event: &Event) -> std::io::Result<()> {
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
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut line = serde_json::to_vec(event).map_err(std::io::Error::other)?;
        line.push(b'\n');
        // One write per line with O_APPEND, so concurrent writers never interleave a line.
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await?;
        file.write_all(&line).await?;
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
