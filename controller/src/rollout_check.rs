//! The rollout's order, proven from an events file: managers first and one at a time, no
//! manager reactivated before every manager is upgraded and ready, no worker touched before the
//! managers are reactivated, workers within `maxUnavailableWorkers`, every node drained before
//! its upgrade (unless an admin had drained it), one hostname per node id, `completed` last.
//!
//! The simulator tests and the real-swarm suite check their events files with [`check_order`].
//! A restarted operator repeats steps; a node's first `drain`/`upgrade` starts it and its first
//! `reactivated` (or, kept drained, `ready`) ends it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::cluster::Role;
use crate::events::{Event, EventStep};

/// The nodes a rollout was to upgrade, as the cluster knows them.
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    /// Hostname -> role of every node to upgrade.
    pub nodes: BTreeMap<String, Role>,
    /// Nodes an admin drained beforehand: they need no `drain` nor `reactivated`.
    pub kept_drained: BTreeSet<String>,
    /// Workers allowed out of service at once (the spec's `maxUnavailableWorkers`).
    pub max_unavailable_workers: usize,
}

impl Fleet {
    /// A fleet of `(hostname, role)` nodes, none kept drained, one worker at a time.
    pub fn new<'a>(nodes: impl IntoIterator<Item = (&'a str, Role)>) -> Self {
        Self {
            nodes: nodes.into_iter().map(|(h, r)| (h.to_string(), r)).collect(),
            kept_drained: BTreeSet::new(),
            max_unavailable_workers: 1,
        }
    }

    pub fn with_kept_drained<'a>(mut self, hosts: impl IntoIterator<Item = &'a str>) -> Self {
        self.kept_drained = hosts.into_iter().map(str::to_string).collect();
        self
    }

    pub fn with_max_unavailable_workers(mut self, n: usize) -> Self {
        self.max_unavailable_workers = n.max(1);
        self
    }

    fn hosts(&self, role: Role) -> impl Iterator<Item = &str> {
        self.nodes
            .iter()
            .filter(move |(_, r)| **r == role)
            .map(|(h, _)| h.as_str())
    }
}

/// One way an events file breaks the rollout's order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("event `{step}` names {hostname} ({node_id}) with role {said}: {hostname} is a {is}")]
    WrongRole {
        step: EventStep,
        hostname: String,
        node_id: String,
        said: String,
        is: &'static str,
    },
    #[error("event `{step}` names {hostname} ({node_id}), which is not a node of the rollout")]
    UnknownHost {
        step: EventStep,
        hostname: String,
        node_id: String,
    },
    #[error("node id {node_id} appears in the events under several hostnames {hostnames:?}")]
    SeveralHostnames {
        node_id: String,
        hostnames: Vec<String>,
    },
    #[error("no `{step}` event for {hostname}")]
    MissingStep { hostname: String, step: EventStep },
    #[error("{hostname} upgraded before it was drained")]
    UpgradedBeforeDrained { hostname: String },
    #[error("manager {hostname} reactivated before every manager was upgraded and ready")]
    ManagerReactivatedEarly { hostname: String },
    #[error("manager {second} drained before manager {first} was ready")]
    ManagersOverlap { first: String, second: String },
    #[error("worker {hostname} touched ({step}) before the managers were reactivated")]
    WorkerBeforeManagers { hostname: String, step: EventStep },
    #[error(
        "worker {hostname} drained while {busy:?} were out of service (maxUnavailableWorkers: {limit})"
    )]
    TooManyWorkers {
        hostname: String,
        busy: Vec<String>,
        limit: usize,
    },
    #[error("last event is `{0}`, not `completed`")]
    NotCompletedLast(EventStep),
    #[error("no events")]
    NoEvents,
}

/// What [`check_order`] found: the order nodes were taken in, and every violation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderReport {
    pub manager_order: Vec<String>,
    pub worker_order: Vec<String>,
    pub violations: Vec<Violation>,
}

impl OrderReport {
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }
}

impl fmt::Display for OrderReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "manager order: {}; worker order: {}",
            self.manager_order.join(" -> "),
            self.worker_order.join(" -> ")
        )?;
        for v in &self.violations {
            write!(f, "\n- {v}")?;
        }
        Ok(())
    }
}

/// Checks `events` against the rollout's order for `fleet`; see the module docs.
pub fn check_order(events: &[Event], fleet: &Fleet) -> OrderReport {
    let index = Index { events };
    let mut violations = identity_violations(events, fleet);
    violations.extend(missing_steps(&index, fleet));
    let managers: Vec<&str> = fleet.hosts(Role::Manager).collect();
    let workers: Vec<&str> = fleet.hosts(Role::Worker).collect();
    let manager_order = index.by_start(&managers);
    violations.extend(manager_violations(&index, &manager_order));
    violations.extend(workers_after_managers(&index, &managers, &workers, fleet));
    let worker_order = index.by_start(&workers);
    violations.extend(worker_concurrency(&index, &worker_order, fleet));
    match events.last() {
        None => violations.push(Violation::NoEvents),
        Some(e) if e.step != EventStep::Completed => {
            violations.push(Violation::NotCompletedLast(e.step))
        }
        Some(_) => {}
    }
    OrderReport {
        manager_order: manager_order.iter().map(|(h, _)| h.to_string()).collect(),
        worker_order: worker_order.iter().map(|(h, _)| h.to_string()).collect(),
        violations,
    }
}

/// Positions of steps in the events file.
struct Index<'a> {
    events: &'a [Event],
}

impl Index<'_> {
    fn first(&self, host: &str, step: EventStep) -> Option<usize> {
        self.events
            .iter()
            .position(|e| e.hostname == host && e.step == step)
    }

    fn last(&self, host: &str, step: EventStep) -> Option<usize> {
        self.events
            .iter()
            .rposition(|e| e.hostname == host && e.step == step)
    }

    /// Where the node was first taken out of service.
    fn start(&self, host: &str) -> Option<usize> {
        self.first(host, EventStep::Drain)
            .or_else(|| self.first(host, EventStep::Upgrade))
    }

    /// Where the node was back: reactivated, or (kept drained) ready.
    fn end(&self, host: &str) -> Option<usize> {
        self.first(host, EventStep::Reactivated)
            .or_else(|| self.first(host, EventStep::Ready))
    }

    /// The hosts that started, in the order they started.
    fn by_start<'h>(&self, hosts: &[&'h str]) -> Vec<(&'h str, usize)> {
        let mut order: Vec<(&str, usize)> = hosts
            .iter()
            .filter_map(|h| Some((*h, self.start(h)?)))
            .collect();
        order.sort_by_key(|(_, i)| *i);
        order
    }
}

fn identity_violations(events: &[Event], fleet: &Fleet) -> Vec<Violation> {
    let mut out = vec![];
    let mut names: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for e in events.iter().filter(|e| !e.node_id.is_empty()) {
        names.entry(&e.node_id).or_default().insert(&e.hostname);
        match fleet.nodes.get(&e.hostname) {
            None => out.push(Violation::UnknownHost {
                step: e.step,
                hostname: e.hostname.clone(),
                node_id: e.node_id.clone(),
            }),
            Some(role) if !e.role.is_empty() && e.role != role.as_str() => {
                out.push(Violation::WrongRole {
                    step: e.step,
                    hostname: e.hostname.clone(),
                    node_id: e.node_id.clone(),
                    said: e.role.clone(),
                    is: role.as_str(),
                })
            }
            Some(_) => {}
        }
    }
    for (id, hosts) in names.into_iter().filter(|(_, h)| h.len() > 1) {
        out.push(Violation::SeveralHostnames {
            node_id: id.to_string(),
            hostnames: hosts.into_iter().map(str::to_string).collect(),
        });
    }
    out
}

fn missing_steps(index: &Index, fleet: &Fleet) -> Vec<Violation> {
    use EventStep::*;
    let mut out = vec![];
    for host in fleet.nodes.keys() {
        let kept = fleet.kept_drained.contains(host);
        let needed: &[EventStep] = if kept {
            &[Upgrade, Upgraded, Ready]
        } else {
            &[Drain, Upgrade, Upgraded, Ready, Reactivated]
        };
        for &step in needed {
            if index.first(host, step).is_none() {
                out.push(Violation::MissingStep {
                    hostname: host.clone(),
                    step,
                });
            }
        }
        if !kept && index.first(host, Drain) > index.first(host, Upgrade) {
            out.push(Violation::UpgradedBeforeDrained {
                hostname: host.clone(),
            });
        }
    }
    out
}

/// Managers one at a time, and none reactivated before the last one is ready.
fn manager_violations(index: &Index, order: &[(&str, usize)]) -> Vec<Violation> {
    let mut out = vec![];
    let last_ready = order
        .iter()
        .filter_map(|(m, _)| index.last(m, EventStep::Ready))
        .max();
    for (m, _) in order {
        // A manager drained ahead and handed back before its upgrade (the rollout paused) is
        // back on its old engine: only a reactivation after its upgrade counts.
        let upgraded = index.first(m, EventStep::Upgrade).unwrap_or(0);
        let reactivated = index.events[upgraded..]
            .iter()
            .position(|e| {
                e.hostname == *m && matches!(e.step, EventStep::Reactivate | EventStep::Reactivated)
            })
            .map(|i| upgraded + i);
        if let (Some(r), Some(ready)) = (reactivated, last_ready)
            && r < ready
        {
            out.push(Violation::ManagerReactivatedEarly {
                hostname: m.to_string(),
            });
        }
    }
    // The next manager may be drained ahead; its engine is stopped only after the previous
    // one is Ready again.
    for pair in order.windows(2) {
        let previous_ready = index.first(pair[0].0, EventStep::Ready);
        let stopped = index
            .first(pair[1].0, EventStep::Upgrade)
            .unwrap_or(pair[1].1);
        if previous_ready.is_none_or(|ready| stopped < ready) {
            out.push(Violation::ManagersOverlap {
                first: pair[0].0.to_string(),
                second: pair[1].0.to_string(),
            });
        }
    }
    out
}

fn workers_after_managers(
    index: &Index,
    managers: &[&str],
    workers: &[&str],
    fleet: &Fleet,
) -> Vec<Violation> {
    let managers_done = managers
        .iter()
        .filter_map(|m| {
            if fleet.kept_drained.contains(*m) {
                index.last(m, EventStep::Ready)
            } else {
                index.last(m, EventStep::Reactivated)
            }
        })
        .max()
        .unwrap_or(0);
    index.events[..managers_done]
        .iter()
        .filter(|e| workers.contains(&e.hostname.as_str()))
        .map(|e| Violation::WorkerBeforeManagers {
            hostname: e.hostname.clone(),
            step: e.step,
        })
        .take(1)
        .collect()
}

/// At no worker's start are `maxUnavailableWorkers` others already out of service.
fn worker_concurrency(index: &Index, order: &[(&str, usize)], fleet: &Fleet) -> Vec<Violation> {
    let mut out = vec![];
    for (i, (worker, start)) in order.iter().enumerate() {
        let busy: Vec<String> = order[..i]
            .iter()
            .filter(|(w, _)| index.end(w).is_none_or(|end| end > *start))
            .map(|(w, _)| w.to_string())
            .collect();
        if busy.len() >= fleet.max_unavailable_workers {
            out.push(Violation::TooManyWorkers {
                hostname: worker.to_string(),
                busy,
                limit: fleet.max_unavailable_workers,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const MANAGERS: [&str; 3] = ["n1", "n2", "n3"];

    fn lab() -> Fleet {
        Fleet::new(["n1", "n2", "n3", "n4", "n5"].map(|h| {
            let role = if MANAGERS.contains(&h) {
                Role::Manager
            } else {
                Role::Worker
            };
            (h, role)
        }))
    }

    fn event(host: &str, step: EventStep) -> Event {
        let role = if host.is_empty() {
            ""
        } else if MANAGERS.contains(&host) {
            "manager"
        } else {
            "worker"
        };
        Event {
            time: jiff::Timestamp::UNIX_EPOCH,
            node_id: if host.is_empty() {
                String::new()
            } else {
                format!("id-{host}")
            },
            hostname: host.into(),
            role: role.into(),
            step,
            from_version: String::new(),
            to_version: String::new(),
            message: String::new(),
        }
    }

    /// The manual upgrade procedure's order: n2, n3, n1 upgraded, then reactivated, then the
    /// workers one by one.
    fn procedure_order() -> Vec<Event> {
        use EventStep::*;
        let mut events = vec![];
        for m in ["n2", "n3", "n1"] {
            for s in [Drain, Drained, Upgrade, Upgraded, Ready] {
                events.push(event(m, s));
            }
        }
        for m in ["n1", "n2", "n3"] {
            events.push(event(m, Reactivate));
            events.push(event(m, Reactivated));
        }
        for w in ["n4", "n5"] {
            for s in [
                Drain,
                Drained,
                Upgrade,
                Upgraded,
                Ready,
                Reactivate,
                Reactivated,
            ] {
                events.push(event(w, s));
            }
        }
        events.push(event("", Completed));
        events
    }

    fn moved(mut events: Vec<Event>, host: &str, step: EventStep, to: usize) -> Vec<Event> {
        let i = events
            .iter()
            .position(|e| e.hostname == host && e.step == step)
            .unwrap();
        let e = events.remove(i);
        events.insert(to, e);
        events
    }

    #[test]
    fn the_procedure_order_passes() {
        let report = check_order(&procedure_order(), &lab());
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.manager_order, ["n2", "n3", "n1"]);
        assert_eq!(report.worker_order, ["n4", "n5"]);
    }

    #[test]
    fn a_manager_reactivated_early_is_caught() {
        let events = moved(procedure_order(), "n2", EventStep::Reactivated, 6);
        let report = check_order(&events, &lab());
        assert!(
            report
                .violations
                .contains(&Violation::ManagerReactivatedEarly {
                    hostname: "n2".into()
                }),
            "{report}"
        );
    }

    #[test]
    fn overlapping_managers_are_caught() {
        // n3 drained ahead, but upgraded before n2 is ready
        let events = moved(procedure_order(), "n3", EventStep::Drain, 3);
        let events = moved(events, "n3", EventStep::Drained, 4);
        let events = moved(events, "n3", EventStep::Upgrade, 5);
        let report = check_order(&events, &lab());
        assert_eq!(
            report.violations,
            [Violation::ManagersOverlap {
                first: "n2".into(),
                second: "n3".into()
            }]
        );
    }

    #[test]
    fn a_manager_drained_ahead_is_no_overlap() {
        // n3 drained while n2 is upgraded, upgraded after n2 is ready
        let events = moved(procedure_order(), "n3", EventStep::Drain, 3);
        let events = moved(events, "n3", EventStep::Drained, 4);
        let report = check_order(&events, &lab());
        assert!(report.is_ok(), "{report}");
    }

    #[test]
    fn a_manager_handed_back_before_its_upgrade_is_not_reactivated_early() {
        // n3 drained ahead, handed back (a pause), then upgraded in its turn
        let mut events = procedure_order();
        events.insert(3, event("n3", EventStep::Drain));
        events.insert(4, event("n3", EventStep::Reactivated));
        let report = check_order(&events, &lab());
        assert!(report.is_ok(), "{report}");
        // but reactivated after its upgrade and before n1 is ready, it is caught
        let events = moved(procedure_order(), "n3", EventStep::Reactivated, 10);
        let report = check_order(&events, &lab());
        assert!(
            report
                .violations
                .contains(&Violation::ManagerReactivatedEarly {
                    hostname: "n3".into()
                }),
            "{report}"
        );
    }

    #[test]
    fn a_worker_before_the_managers_is_caught() {
        let events = moved(procedure_order(), "n4", EventStep::Drain, 0);
        let report = check_order(&events, &lab());
        assert!(
            report
                .violations
                .contains(&Violation::WorkerBeforeManagers {
                    hostname: "n4".into(),
                    step: EventStep::Drain
                }),
            "{report}"
        );
    }

    #[test]
    fn workers_are_held_to_max_unavailable() {
        // n5 drained right after n4's drain
        let at = procedure_order()
            .iter()
            .position(|e| e.hostname == "n4")
            .unwrap();
        let events = moved(procedure_order(), "n5", EventStep::Drain, at + 1);
        let report = check_order(&events, &lab());
        assert!(
            report.violations.contains(&Violation::TooManyWorkers {
                hostname: "n5".into(),
                busy: vec!["n4".into()],
                limit: 1
            }),
            "{report}"
        );
        let two = lab().with_max_unavailable_workers(2);
        assert!(check_order(&events, &two).is_ok());
    }

    #[test]
    fn missing_steps_and_completed_last() {
        let mut events: Vec<Event> = procedure_order()
            .into_iter()
            .filter(|e| !(e.hostname == "n5" && e.step == EventStep::Drain))
            .collect();
        events.pop();
        let report = check_order(&events, &lab());
        assert!(report.violations.contains(&Violation::MissingStep {
            hostname: "n5".into(),
            step: EventStep::Drain
        }));
        assert!(
            report
                .violations
                .contains(&Violation::NotCompletedLast(EventStep::Reactivated))
        );
        // An admin-drained n5 needs no drain.
        let kept: Vec<Event> = procedure_order()
            .into_iter()
            .filter(|e| {
                !(e.hostname == "n5"
                    && matches!(
                        e.step,
                        EventStep::Drain
                            | EventStep::Drained
                            | EventStep::Reactivate
                            | EventStep::Reactivated
                    ))
            })
            .collect();
        let report = check_order(&kept, &lab().with_kept_drained(["n5"]));
        assert!(report.is_ok(), "{report}");
        assert_eq!(
            check_order(&[], &lab()).violations.last(),
            Some(&Violation::NoEvents)
        );
    }

    /// A real events file from the lab (2026-11-25): after the managers were reactivated the
    /// operator logged n2's node id under hostname n5 with role manager and drained n2 again.
    #[test]
    fn the_captured_node_mixup_is_caught() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../e2e/tests/data/operator-events-node-mixup.jsonl");
        let events = crate::events::read_events(&path).unwrap();
        let report = check_order(&events, &lab());
        let wrong_role = report.violations.iter().any(|v| {
            matches!(v, Violation::WrongRole { hostname, said, is, .. }
                if hostname == "n5" && said == "manager" && *is == "worker")
        });
        let several = report.violations.iter().any(|v| {
            matches!(v, Violation::SeveralHostnames { hostnames, .. }
                if hostnames.contains(&"n5".to_string()) && hostnames.contains(&"n2".to_string()))
        });
        assert!(wrong_role && several, "{report}");
    }
}
