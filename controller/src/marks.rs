//! The operator's per-node state, kept in node labels so a restarted operator resumes where it was.
//!
//! All keys share one prefix; a node without them is untouched by the operator. They are written
//! in the same node update as the availability change they describe, so the two never disagree.
//! One key of that prefix is the admin's, never written or removed by the operator:
//! [`HOLD`].

use std::collections::BTreeMap;
use std::fmt;

use jiff::Timestamp;
use serde::Serialize;

use crate::vocab::Availability;

pub const PREFIX: &str = "swarm-upgrade.";
pub const STEP: &str = "swarm-upgrade.step";
pub const PREVIOUS_AVAILABILITY: &str = "swarm-upgrade.previous-availability";
pub const TARGET: &str = "swarm-upgrade.target-version";
pub const FROM: &str = "swarm-upgrade.from-version";
pub(crate) const SINCE: &str = "swarm-upgrade.since";
pub const REASON: &str = "swarm-upgrade.reason";
pub(crate) const SPEC_HASH: &str = "swarm-upgrade.spec-hash";
/// The operator demoted this manager (the leader) to hand raft leadership over before its
/// engine stops (`strategy.leaderHandover`); it is promoted back in the write that drops this.
pub(crate) const DEMOTED: &str = "swarm-upgrade.demoted";
/// The admin's per-node hold: `docker node update --label-add swarm-upgrade.hold=REASON NODE`
/// keeps the node out of the rollout until the label is removed.
pub const HOLD: &str = "swarm-upgrade.hold";

/// Where a node is in its upgrade cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    /// Set to drain; its tasks are moving off.
    Draining,
    /// The upgrade command is running (or must be run again after a restart).
    Upgrading,
    /// The command succeeded; waiting for the node to be Ready at the target.
    Upgraded,
    /// Ready at the target, still drained (managers wait here for each other).
    Ready,
    /// Back to its earlier availability; waiting `settle` before the next node.
    Settling,
    /// The upgrade failed and `upgrade.rollback` is running (or must be run again after a
    /// restart); the node stays drained and the rollout is paused. Ends at `failed`.
    #[serde(rename = "rolling-back")]
    RollingBack,
    /// The upgrade failed; the rollout is paused until the spec changes or `resume`.
    Failed,
}

impl Step {
    pub const ALL: [Step; 7] = [
        Step::Draining,
        Step::Upgrading,
        Step::Upgraded,
        Step::Ready,
        Step::Settling,
        Step::RollingBack,
        Step::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Draining => "draining",
            Step::Upgrading => "upgrading",
            Step::Upgraded => "upgraded",
            Step::Ready => "ready",
            Step::Settling => "settling",
            Step::RollingBack => "rolling-back",
            Step::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Step::ALL.into_iter().find(|step| step.as_str() == s)
    }

    /// Whether the operator has the node's engine in hand: its upgrade or rollback is under way,
    /// or it failed (after its command ran, its engine may be half-upgraded).
    pub(crate) fn engine_in_hand(self) -> bool {
        matches!(
            self,
            Step::Upgrading | Step::Upgraded | Step::RollingBack | Step::Failed
        )
    }

    /// Whether a node at this step is out of service because of the operator.
    pub(crate) fn holds_node(self) -> bool {
        matches!(
            self,
            Step::Draining | Step::Upgrading | Step::Upgraded | Step::Ready | Step::RollingBack
        )
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the operator is doing to one node, as stored in its labels.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mark {
    pub step: Step,
    /// The availability the node had before the operator touched it; it is restored at the end.
    pub previous: Availability,
    pub target: String,
    pub from_version: String,
    pub since: Timestamp,
    pub reason: Option<String>,
    /// For a failed node: the spec it failed under. A different spec retries the node.
    pub spec_hash: Option<String>,
    /// A manager the operator demoted to a worker for its upgrade ([`DEMOTED`]).
    pub demoted: bool,
}

/// Labels under the prefix that do not make a valid mark: the planner will not guess.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "node labels {PREFIX}* are unreadable ({problem}); remove them with `docker node update --label-rm {STEP} NODE` after checking the node's availability"
)]
pub struct MarkError {
    pub problem: String,
}

impl Mark {
    /// `None` when the node carries no step label.
    pub(crate) fn from_labels(
        labels: &BTreeMap<String, String>,
    ) -> Option<Result<Mark, MarkError>> {
        let step = labels.get(STEP)?;
        Some(Self::parse(step, labels))
    }

    fn parse(step: &str, labels: &BTreeMap<String, String>) -> Result<Mark, MarkError> {
        let bad = |problem: String| MarkError { problem };
        let step = Step::parse(step).ok_or_else(|| bad(format!("unknown step {step:?}")))?;
        let previous = labels
            .get(PREVIOUS_AVAILABILITY)
            .and_then(|a| Availability::parse(a))
            .ok_or_else(|| bad(format!("{PREVIOUS_AVAILABILITY} missing or invalid")))?;
        let target = labels
            .get(TARGET)
            .cloned()
            .ok_or_else(|| bad(format!("{TARGET} missing")))?;
        let since = labels
            .get(SINCE)
            .and_then(|s| s.parse::<Timestamp>().ok())
            .ok_or_else(|| bad(format!("{SINCE} missing or not a timestamp")))?;
        Ok(Mark {
            step,
            previous,
            target,
            from_version: labels.get(FROM).cloned().unwrap_or_default(),
            since,
            reason: labels.get(REASON).cloned(),
            spec_hash: labels.get(SPEC_HASH).cloned(),
            demoted: labels.get(DEMOTED).is_some_and(|v| v == "true"),
        })
    }

    /// Writes this mark into a node's labels, replacing any earlier mark and nothing else.
    pub(crate) fn write_to(&self, labels: &mut BTreeMap<String, String>) {
        clear(labels);
        labels.insert(STEP.into(), self.step.as_str().into());
        labels.insert(PREVIOUS_AVAILABILITY.into(), self.previous.as_str().into());
        labels.insert(TARGET.into(), self.target.clone());
        labels.insert(FROM.into(), self.from_version.clone());
        labels.insert(SINCE.into(), self.since.to_string());
        if let Some(reason) = &self.reason {
            labels.insert(REASON.into(), reason.clone());
        }
        if let Some(hash) = &self.spec_hash {
            labels.insert(SPEC_HASH.into(), hash.clone());
        }
        if self.demoted {
            labels.insert(DEMOTED.into(), "true".into());
        }
    }

    /// The same mark moved to another step, timed from `now`.
    pub fn at(&self, step: Step, now: Timestamp) -> Mark {
        Mark {
            step,
            since: now,
            reason: None,
            spec_hash: None,
            ..self.clone()
        }
    }
}

/// A label the operator writes (and removes): the prefix's, but the admin's [`HOLD`].
pub(crate) fn is_operator_label(key: &str) -> bool {
    key.starts_with(PREFIX) && key != HOLD
}

/// Removes every operator label, leaving the admin's (a hold among them).
pub fn clear(labels: &mut BTreeMap<String, String>) {
    labels.retain(|k, _| !is_operator_label(k));
}

pub fn has_any(labels: &BTreeMap<String, String>) -> bool {
    labels.keys().any(|k| is_operator_label(k))
}

/// The reason of the admin's hold on the node, if held (an empty reason reads "no reason given").
pub(crate) fn hold_reason(labels: &BTreeMap<String, String>) -> Option<&str> {
    labels.get(HOLD).map(|r| match r.trim() {
        "" => "no reason given",
        r => r,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark() -> Mark {
        Mark {
            step: Step::Upgrading,
            previous: Availability::Pause,
            target: "26.1.5".into(),
            from_version: "20.10.24".into(),
            since: "2026-11-25T10:00:00Z".parse().unwrap(),
            reason: None,
            spec_hash: None,
            demoted: false,
        }
    }

    #[test]
    fn round_trips_through_labels_keeping_the_admins() {
        let mut labels = BTreeMap::from([("zone".to_string(), "a".to_string())]);
        mark().write_to(&mut labels);
        assert_eq!(Mark::from_labels(&labels).unwrap().unwrap(), mark());
        assert_eq!(labels.get("zone").map(String::as_str), Some("a"));
        labels.insert(HOLD.into(), "disk swap on Friday".into());
        clear(&mut labels);
        assert_eq!(
            labels,
            BTreeMap::from([
                ("zone".to_string(), "a".to_string()),
                (HOLD.to_string(), "disk swap on Friday".to_string())
            ])
        );
        assert!(!has_any(&labels), "a hold is the admin's label");
        assert_eq!(hold_reason(&labels), Some("disk swap on Friday"));
        labels.insert(HOLD.into(), " ".into());
        assert_eq!(hold_reason(&labels), Some("no reason given"));
    }

    #[test]
    fn failed_marks_keep_reason_and_spec() {
        let failed = Mark {
            step: Step::Failed,
            reason: Some("upgrade command exited with status 1".into()),
            spec_hash: Some("abc".into()),
            ..mark()
        };
        let mut labels = BTreeMap::new();
        failed.write_to(&mut labels);
        assert_eq!(Mark::from_labels(&labels).unwrap().unwrap(), failed);
        let next = failed.at(Step::Draining, failed.since);
        assert_eq!(next.reason, None);
        assert_eq!(next.previous, Availability::Pause);
    }

    #[test]
    fn a_demoted_manager_is_remembered_across_steps() {
        let demoted = Mark {
            demoted: true,
            ..mark()
        };
        let mut labels = BTreeMap::new();
        demoted.write_to(&mut labels);
        assert_eq!(labels.get(DEMOTED).map(String::as_str), Some("true"));
        assert_eq!(Mark::from_labels(&labels).unwrap().unwrap(), demoted);
        assert!(demoted.at(Step::Upgraded, demoted.since).demoted);
        mark().write_to(&mut labels);
        assert!(
            !labels.contains_key(DEMOTED),
            "a new mark replaces the flag"
        );
    }

    #[test]
    fn unreadable_marks_are_reported_not_guessed() {
        let mut labels = BTreeMap::new();
        mark().write_to(&mut labels);
        labels.remove(PREVIOUS_AVAILABILITY);
        let err = Mark::from_labels(&labels).unwrap().unwrap_err();
        assert!(err.to_string().contains("previous-availability"));
        labels.insert(STEP.into(), "dancing".into());
        assert!(Mark::from_labels(&labels).unwrap().is_err());
        assert!(Mark::from_labels(&BTreeMap::new()).is_none());
    }
}
