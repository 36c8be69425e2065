//! The rollout's timeline as SVG: one row per node, one bar per step (drain, upgrade, ready,
//! reactivate, and rollback when one ran), time on the x axis, failures and pauses marked.
//! Drawn from the events file (`events`), so it is the same live and after the fact.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use jiff::{SignedDuration, Timestamp};

use crate::events::{Event, EventStep};

#[derive(Debug, thiserror::Error)]
pub enum TimelineError {
    #[error("cannot read the events file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} line {line} is not an event of `--events` (one JSON object per line): {source}"
    )]
    Parse {
        path: PathBuf,
        line: usize,
        source: serde_json::Error,
    },
}

/// A timed step of one node, drawn as a bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarStep {
    Drain,
    Upgrade,
    /// From the upgrade command's success until the node is Ready at the target.
    Ready,
    Reactivate,
    Rollback,
}

impl BarStep {
    pub fn as_str(self) -> &'static str {
        match self {
            BarStep::Drain => "drain",
            BarStep::Upgrade => "upgrade",
            BarStep::Ready => "ready",
            BarStep::Reactivate => "reactivate",
            BarStep::Rollback => "rollback",
        }
    }

    /// The step an event begins, if it begins one.
    fn started_by(step: EventStep) -> Option<BarStep> {
        match step {
            EventStep::Drain => Some(BarStep::Drain),
            EventStep::Upgrade => Some(BarStep::Upgrade),
            EventStep::Upgraded => Some(BarStep::Ready),
            EventStep::Reactivate => Some(BarStep::Reactivate),
            EventStep::Rollback => Some(BarStep::Rollback),
            _ => None,
        }
    }

    /// Whether `step` ends this bar (a failure ends any).
    fn ended_by(self, step: EventStep) -> bool {
        matches!(
            (self, step),
            (_, EventStep::Failed)
                | (BarStep::Drain, EventStep::Drained)
                | (BarStep::Upgrade, EventStep::Upgraded)
                | (BarStep::Ready, EventStep::Ready)
                | (BarStep::Reactivate, EventStep::Reactivated)
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub step: BarStep,
    pub start: Timestamp,
    pub end: Timestamp,
    /// Not ended by an event: still under way (or the events file stops there).
    pub open: bool,
    /// Ended by the node's failure.
    pub failed: bool,
}

/// A moment on a node's row: its failure, or its unlock after an upgrade (autolock).
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    pub step: EventStep,
    pub at: Timestamp,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub hostname: String,
    pub role: String,
    pub bars: Vec<Bar>,
    /// Ready and still drained until reactivated (managers wait here for each other).
    pub held: Vec<(Timestamp, Timestamp)>,
    pub markers: Vec<Marker>,
}

/// The timeline of a rollout, from its events.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    pub start: Timestamp,
    pub end: Timestamp,
    /// One per node, in the order the nodes first appear in the events.
    pub rows: Vec<Row>,
    /// Rollout-wide moments: `paused` and `completed`.
    pub rollout_marks: Vec<Marker>,
}

impl Timeline {
    /// Builds the timeline; `now`, when given (the live page), extends the open bars to it.
    pub(crate) fn from_events(events: &[Event], now: Option<Timestamp>) -> Self {
        let mut events: Vec<&Event> = events.iter().collect();
        events.sort_by_key(|e| e.time);
        let start = events.first().map(|e| e.time).unwrap_or_default();
        let last = events.last().map(|e| e.time).unwrap_or(start);
        let end = now.map_or(last, |n| n.max(last));
        let mut builders: Vec<RowBuilder> = vec![];
        let mut rollout_marks = vec![];
        for e in events {
            if e.hostname.is_empty() {
                rollout_marks.push(Marker {
                    step: e.step,
                    at: e.time,
                    message: e.message.clone(),
                });
                continue;
            }
            let i = match builders.iter().position(|b| b.row.hostname == e.hostname) {
                Some(i) => i,
                None => {
                    builders.push(RowBuilder::new(&e.hostname, &e.role));
                    builders.len() - 1
                }
            };
            builders[i].add(e);
        }
        let rows = builders.into_iter().map(|b| b.finish(end)).collect();
        Self {
            start,
            end,
            rows,
            rollout_marks,
        }
    }

    /// Reads an events file and builds its timeline (`swarm-upgrade timeline`).
    pub(crate) fn from_file(path: &Path) -> Result<Self, TimelineError> {
        let text = std::fs::read_to_string(path).map_err(|source| TimelineError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let events = parse_events(&text).map_err(|(line, source)| TimelineError::Parse {
            path: path.to_path_buf(),
            line,
            source,
        })?;
        Ok(Self::from_events(&events, None))
    }

    /// Seconds from the start, as drawn on the x axis.
    pub fn offset(&self, t: Timestamp) -> f64 {
        t.duration_since(self.start).as_secs_f64()
    }

    pub(crate) fn span_seconds(&self) -> f64 {
        self.offset(self.end).max(0.0)
    }
}

/// Parses an events file's text; the error is the 1-based line that is not an event.
pub(crate) fn parse_events(text: &str) -> Result<Vec<Event>, (usize, serde_json::Error)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| (i + 1, e)))
        .collect()
}

/// Parses what can be parsed of an events file being written: a last line caught half
/// written is left for the next read.
pub(crate) fn parse_events_lenient(text: &str) -> Vec<Event> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

struct RowBuilder {
    row: Row,
    open: Option<(BarStep, Timestamp)>,
    ready_at: Option<Timestamp>,
}

impl RowBuilder {
    fn new(hostname: &str, role: &str) -> Self {
        Self {
            row: Row {
                hostname: hostname.to_string(),
                role: role.to_string(),
                bars: vec![],
                held: vec![],
                markers: vec![],
            },
            open: None,
            ready_at: None,
        }
    }

    fn add(&mut self, e: &Event) {
        if let Some((step, start)) = self.open
            && step.ended_by(e.step)
        {
            self.close(step, start, e.time, false, e.step == EventStep::Failed);
        }
        if matches!(
            e.step,
            EventStep::Failed | EventStep::Unlock | EventStep::Demote | EventStep::Promote
        ) {
            self.row.markers.push(Marker {
                step: e.step,
                at: e.time,
                message: e.message.clone(),
            });
        }
        if e.step == EventStep::Ready {
            self.ready_at = Some(e.time);
        }
        if let Some(step) = BarStep::started_by(e.step) {
            if let Some((open, start)) = self.open.take() {
                // A step began before the last one was seen to end (a rollback after a failed
                // upgrade command): the last ends here.
                self.close(open, start, e.time, false, false);
            }
            if let Some(ready) = self.ready_at.take()
                && step == BarStep::Reactivate
            {
                self.row.held.push((ready, e.time));
            }
            self.open = Some((step, e.time));
        }
    }

    fn close(&mut self, step: BarStep, start: Timestamp, end: Timestamp, open: bool, failed: bool) {
        self.row.bars.push(Bar {
            step,
            start,
            end,
            open,
            failed,
        });
        self.open = None;
    }

    fn finish(mut self, end: Timestamp) -> Row {
        if let Some((step, start)) = self.open.take() {
            self.close(step, start, end, true, false);
        }
        self.row
    }
}

/// A duration in words for labels: `850ms`, `12.3s`, `4m05s`, `1h02m`.
pub fn human(d: SignedDuration) -> String {
    let secs = d.as_secs_f64();
    let mut out = String::new();
    let _ = if secs < 1.0 {
        write!(out, "{:.0}ms", secs * 1000.0)
    } else if secs < 60.0 {
        write!(out, "{secs:.1}s")
    } else if secs < 3600.0 {
        write!(out, "{}m{:02}s", secs as u64 / 60, secs as u64 % 60)
    } else {
        write!(out, "{}h{:02}m", secs as u64 / 3600, secs as u64 / 60 % 60)
    };
    out
}
