//! The rollout's safety invariants (issue 13), checked over the simulator's recorded history of
//! every node's state ([`swarm_sim::state::Frame`]), so that no moment between two samples is
//! missed: never two managers' engines down at once; a manager's engine stopped only while
//! every other manager is Ready and Reachable; no manager reactivated before every manager is
//! upgraded; no worker touched before the managers are done; never more than
//! `maxUnavailableWorkers` workers out of service because of the operator; an admin's drain or
//! pause never replaced; and at the end every node Ready at the target (or failed, with the
//! reason, and serving again), its earlier availability back, no `swarm-upgrade.` label left.
//!
//! The order of the events file is checked apart, by [`swarm_upgrade::rollout_check`]; these
//! rules look at what the swarm went through, whatever the operator wrote about it.

use std::collections::BTreeMap;
use std::fmt;

use swarm_sim::state::{Frame, NodeFrame};
use swarm_upgrade::marks;
use swarm_upgrade::spec::version_core;

/// What the rollout was asked to do, and the swarm before it began.
#[derive(Debug, Clone)]
pub struct Rules {
    pub target: String,
    pub max_unavailable_workers: usize,
    /// Hostname -> availability before the rollout (`active`, `pause`, `drain`).
    pub before: BTreeMap<String, String>,
    /// Hostname -> role before the rollout: a manager demoted for its upgrade (a leader
    /// handover) is still a manager of the rollout's order, and must end a manager.
    pub roles: BTreeMap<String, String>,
    /// The rollout ends complete; when false (paused by a failure), the nodes it did not reach
    /// end as they began.
    pub complete: bool,
}

impl Rules {
    /// The rules for a rollout to `target` that starts from `first` (the first recorded frame).
    pub fn new(target: &str, max_unavailable_workers: usize, first: &Frame) -> Self {
        Self {
            target: target.to_string(),
            max_unavailable_workers,
            before: first
                .nodes
                .iter()
                .map(|n| (n.hostname.clone(), n.availability.clone()))
                .collect(),
            roles: first
                .nodes
                .iter()
                .map(|n| (n.hostname.clone(), n.role.clone()))
                .collect(),
            complete: true,
        }
    }

    /// For a rollout that ends paused by a failure.
    pub fn paused(mut self) -> Self {
        self.complete = false;
        self
    }

    fn at_target(&self, n: &NodeFrame) -> bool {
        version_core(&n.engine_version) == self.target
    }

    /// A manager of the rollout: a manager when it began (demoted since, or not).
    fn was_manager(&self, n: &NodeFrame) -> bool {
        self.roles
            .get(&n.hostname)
            .map_or(n.role.as_str(), String::as_str)
            == "manager"
    }
}

/// One moment an invariant did not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Breach {
    #[error("managers {0:?} had their engines down at once")]
    TwoManagersDown(Vec<String>),
    #[error("manager {stopped}'s engine stopped while manager {other} was {why}")]
    ManagerStoppedUnguarded {
        stopped: String,
        other: String,
        why: String,
    },
    #[error("manager {0} reactivated while managers {1:?} were not yet upgraded and ready")]
    ManagerReactivatedEarly(String, Vec<String>),
    #[error("worker {worker} touched ({what}) while managers {waiting:?} were not done")]
    WorkerBeforeManagers {
        worker: String,
        what: &'static str,
        waiting: Vec<String>,
    },
    #[error(
        "workers {hosts:?} out of service by the operator at once (maxUnavailableWorkers {limit})"
    )]
    TooManyWorkers { hosts: Vec<String>, limit: usize },
    #[error("{host}'s availability {was} (set by an admin) replaced: {now}")]
    AdminAvailabilityReplaced {
        host: String,
        was: String,
        now: String,
    },
    #[error("at the end, {host} is {what}")]
    EndState { host: String, what: String },
}

/// A breach and when it happened (simulated seconds since the first frame).
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub at_secs: f64,
    pub breach: Breach,
}

/// Every breach in a history, and how much history there was.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub frames: usize,
    pub found: Vec<Found>,
}

impl Report {
    pub fn is_ok(&self) -> bool {
        self.found.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} frames, {} breaches", self.frames, self.found.len())?;
        for found in self.found.iter().take(20) {
            write!(f, "\n- t={:.2}s: {}", found.at_secs, found.breach)?;
        }
        Ok(())
    }
}

/// Checks every step of `frames` and the last frame as the end state.
pub fn check_rollout(frames: &[Frame], rules: &Rules) -> Report {
    let mut report = check_steps(frames, rules);
    if let Some(last) = frames.last() {
        let at = secs_since(frames, last);
        report
            .found
            .extend(end_breaches(last, rules).into_iter().map(|breach| Found {
                at_secs: at,
                breach,
            }));
    }
    report
}

/// Checks every frame, and every change from one frame to the next (not the end state).
pub fn check_steps(frames: &[Frame], rules: &Rules) -> Report {
    let mut found = vec![];
    // A state that lasts many frames is one breach, reported where it began.
    let mut standing: Vec<Breach> = vec![];
    for (i, frame) in frames.iter().enumerate() {
        let at = secs_since(frames, frame);
        let mut breaches = frame_breaches(frame, rules);
        if i > 0 {
            breaches.extend(change_breaches(&frames[i - 1], frame, rules));
        }
        for breach in breaches.iter().filter(|b| !standing.contains(b)) {
            found.push(Found {
                at_secs: at,
                breach: breach.clone(),
            });
        }
        standing = breaches;
    }
    Report {
        frames: frames.len(),
        found,
    }
}

fn secs_since(frames: &[Frame], frame: &Frame) -> f64 {
    let start = frames.first().map_or(frame.at, |f| f.at);
    frame.at.saturating_sub(start) as f64 / 1e9
}

/// The raft managers now.
fn managers(frame: &Frame) -> impl Iterator<Item = &NodeFrame> {
    frame.nodes.iter().filter(|n| n.role == "manager")
}

/// The rollout's managers: managers when it began, demoted since or not.
fn rollout_managers<'a>(frame: &'a Frame, rules: &'a Rules) -> impl Iterator<Item = &'a NodeFrame> {
    frame.nodes.iter().filter(|n| rules.was_manager(n))
}

fn step(n: &NodeFrame) -> Option<&str> {
    n.labels.get(marks::STEP).map(String::as_str)
}

/// What holds in every single frame: one manager down at most, workers within the limit, an
/// admin's availability kept.
fn frame_breaches(frame: &Frame, rules: &Rules) -> Vec<Breach> {
    let mut out = vec![];
    let down: Vec<String> = rollout_managers(frame, rules)
        .filter(|m| !m.engine_running)
        .map(|m| m.hostname.clone())
        .collect();
    if down.len() > 1 {
        out.push(Breach::TwoManagersDown(down));
    }
    let out_of_service: Vec<String> = frame
        .nodes
        .iter()
        .filter(|n| !rules.was_manager(n) && out_of_service_by_operator(n, rules))
        .map(|n| n.hostname.clone())
        .collect();
    if out_of_service.len() > rules.max_unavailable_workers {
        out.push(Breach::TooManyWorkers {
            hosts: out_of_service,
            limit: rules.max_unavailable_workers,
        });
    }
    for n in &frame.nodes {
        out.extend(admin_availability_breach(n, rules));
    }
    out
}

/// Marked by the operator and not serving as it was: drained from its earlier availability,
/// or its engine not up and Ready.
fn out_of_service_by_operator(n: &NodeFrame, rules: &Rules) -> bool {
    if step(n).is_none() {
        return false;
    }
    let before = rules.before.get(&n.hostname).map(String::as_str);
    (n.availability == "drain" && before != Some("drain")) || !n.engine_running
}

/// An admin's drain is never lifted; an admin's pause is drained for the upgrade (a paused node
/// still runs tasks) but remembered as the availability to restore.
fn admin_availability_breach(n: &NodeFrame, rules: &Rules) -> Option<Breach> {
    let was = rules.before.get(&n.hostname)?;
    if was == "active" {
        return None;
    }
    let remembered = n.labels.get(marks::PREVIOUS_AVAILABILITY);
    let lifted = was == "drain" && n.availability != "drain";
    let forgotten = remembered.is_some_and(|r| r != was);
    let replaced_unmarked = step(n).is_none() && n.availability != *was;
    (lifted || forgotten || replaced_unmarked).then(|| Breach::AdminAvailabilityReplaced {
        host: n.hostname.clone(),
        was: was.clone(),
        now: format!(
            "{} (remembered: {})",
            n.availability,
            remembered.map_or("nothing", String::as_str)
        ),
    })
}

/// What holds from one frame to the next: a manager stops only under the quorum guard, is
/// reactivated only once every manager is upgraded, and workers wait for the managers.
fn change_breaches(prev: &Frame, cur: &Frame, rules: &Rules) -> Vec<Breach> {
    let mut out = vec![];
    for (p, c) in prev.nodes.iter().zip(&cur.nodes) {
        if p.id != c.id {
            continue;
        }
        if rules.was_manager(c) {
            if p.engine_running && !c.engine_running {
                out.extend(unguarded_stop(prev, p));
            }
            out.extend(early_reactivation(p, c, cur, rules));
        } else {
            out.extend(early_worker(prev, p, c, rules));
        }
    }
    out
}

fn unguarded_stop(prev: &Frame, stopped: &NodeFrame) -> Option<Breach> {
    managers(prev).filter(|m| m.id != stopped.id).find_map(|m| {
        let why = if !m.engine_running {
            "down"
        } else if m.state != "ready" {
            m.state.as_str()
        } else if !m.reachable {
            "unreachable"
        } else {
            return None;
        };
        Some(Breach::ManagerStoppedUnguarded {
            stopped: stopped.hostname.clone(),
            other: m.hostname.clone(),
            why: why.to_string(),
        })
    })
}

/// Managers not yet upgraded and ready (the ones a reactivation must wait for).
fn managers_not_upgraded(frame: &Frame, rules: &Rules) -> Vec<String> {
    rollout_managers(frame, rules)
        .filter(|m| !(rules.at_target(m) && m.engine_running && m.state == "ready"))
        .map(|m| m.hostname.clone())
        .collect()
}

/// A manager back from drain after its upgrade, while another is not upgraded. A manager
/// drained ahead and handed back before its upgrade, or rolled back, is no reactivation.
fn early_reactivation(p: &NodeFrame, c: &NodeFrame, cur: &Frame, rules: &Rules) -> Option<Breach> {
    let undrained = p.availability == "drain" && c.availability != "drain";
    if !undrained || !rules.at_target(c) {
        return None;
    }
    let waiting = managers_not_upgraded(cur, rules);
    (!waiting.is_empty()).then(|| Breach::ManagerReactivatedEarly(c.hostname.clone(), waiting))
}

/// Managers not done: not at the target, or still in their cycle (settling counts as done: the
/// node serves again).
fn managers_not_done(frame: &Frame, rules: &Rules) -> Vec<String> {
    rollout_managers(frame, rules)
        .filter(|m| !rules.at_target(m) || step(m).is_some_and(|s| s != "settling"))
        .map(|m| m.hostname.clone())
        .collect()
}

fn early_worker(prev: &Frame, p: &NodeFrame, c: &NodeFrame, rules: &Rules) -> Option<Breach> {
    let what = if step(p).is_none() && step(c).is_some() {
        "marked"
    } else if p.availability != c.availability {
        "availability changed"
    } else if p.engine_running && !c.engine_running {
        "engine stopped"
    } else {
        return None;
    };
    let waiting = managers_not_done(prev, rules);
    (!waiting.is_empty()).then(|| Breach::WorkerBeforeManagers {
        worker: c.hostname.clone(),
        what,
        waiting,
    })
}

/// The end: each node Ready at the target with its earlier availability and no mark, or
/// failed with a reason and serving as before.
pub fn end_breaches(last: &Frame, rules: &Rules) -> Vec<Breach> {
    let mut out = vec![];
    for n in &last.nodes {
        let was = rules.before.get(&n.hostname).cloned().unwrap_or_default();
        let mut problems = vec![];
        if n.availability != was {
            problems.push(format!("{} (was {was})", n.availability));
        }
        if let Some(role) = rules.roles.get(&n.hostname).filter(|r| **r != n.role) {
            problems.push(format!("a {} (was a {role})", n.role));
        }
        match step(n) {
            Some("failed") => {
                if n.labels.get(marks::REASON).is_none_or(|r| r.is_empty()) {
                    problems.push("failed without a reason".into());
                }
            }
            None if !rules.complete && n.engine_running && n.state == "ready" => {
                // Not reached before the pause: as it began (its availability checked above).
            }
            _ => {
                if !rules.at_target(n) {
                    problems.push(format!("at {}, not {}", n.engine_version, rules.target));
                }
                if !n.engine_running || n.state != "ready" {
                    problems.push(format!(
                        "{} (engine running: {})",
                        n.state, n.engine_running
                    ));
                }
                let left: Vec<&String> = n
                    .labels
                    .keys()
                    .filter(|k| k.starts_with(marks::PREFIX))
                    .collect();
                if !left.is_empty() {
                    problems.push(format!("still labelled {left:?}"));
                }
            }
        }
        if !problems.is_empty() {
            out.push(Breach::EndState {
                host: n.hostname.clone(),
                what: problems.join(", "),
            });
        }
    }
    out
}
