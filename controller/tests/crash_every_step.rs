//! Kill -9 at every step boundary (issue 13, part 1): the real binary against the simulated
//! swarm, killed with SIGKILL right after each event step of every node (managers, the leader,
//! workers) and in the middle of each node-side command (its engine stopped), restarted each
//! time; the invariants hold over the whole history and the rollout ends where an uninterrupted
//! one does. Prints the table of boundaries and outcomes.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::Duration;
use tokio::time::Instant;

use swarm_sim::{Faults, SimConfig};
use swarm_upgrade::events::{Event, EventStep};

mod common;
use common::invariants::{Breach, Rules, check_rollout, check_steps};
use common::operator_process::{OperatorFiles, free_listen, tail};
use common::sim_lab::{SimLab, kill9};
use swarm_sim::state::{Frame, NodeFrame};

/// One kill and what the restarted operator did next.
struct Row {
    host: String,
    role: String,
    /// "after `drained`, `upgrade`" (the events of the node update just written), or
    /// "mid-command".
    boundary: String,
    killed_at: Duration,
    /// The first event the next operator wrote, and how long after its start.
    resumed: Option<(String, Duration)>,
}

/// The steps to kill after (every node step the operator writes on an uneventful rollout).
const STEPS: [EventStep; 7] = [
    EventStep::Drain,
    EventStep::Drained,
    EventStep::Upgrade,
    EventStep::Upgraded,
    EventStep::Ready,
    EventStep::Reactivate,
    EventStep::Reactivated,
];

const MID_COMMAND: &str = "mid-command (engine stopped)";

/// Operators run one after another, each killed at the next boundary it reaches.
struct Chain<'a> {
    lab: &'a SimLab,
    spec: std::path::PathBuf,
    leader: String,
    steps: &'a [EventStep],
    mid_command: bool,
    /// (hostname, step or [`MID_COMMAND`]) passed with a kill right after.
    done: BTreeSet<(String, String)>,
    rows: Vec<Row>,
    started: Instant,
}

impl<'a> Chain<'a> {
    async fn new(
        lab: &'a SimLab,
        spec_text: &str,
        steps: &'a [EventStep],
        mid_command: bool,
    ) -> Self {
        Chain {
            lab,
            spec: lab.write_spec(spec_text),
            leader: leader(lab).await,
            steps,
            mid_command,
            done: BTreeSet::new(),
            rows: vec![],
            started: Instant::now(),
        }
    }

    /// Every boundary in `steps` (and mid-command) of `hosts` had its kill.
    fn assert_all_killed(&self, hosts: &[&str]) {
        let mut all: Vec<String> = self.steps.iter().map(|s| s.to_string()).collect();
        if self.mid_command {
            all.push(MID_COMMAND.into());
        }
        let missed = self.missed(hosts, &all);
        assert!(
            missed.is_empty(),
            "no kill after {missed:?}\n{}",
            self.table()
        );
    }

    fn role(&self, host: &str, role: &str) -> String {
        if host == self.leader {
            format!("{role} (leader)")
        } else {
            role.to_string()
        }
    }

    /// Where to kill now, if anywhere: right after the current operator wrote steps not
    /// killed after yet, or while a node's engine is stopped by its command. Returns each
    /// node's steps passed: a node update writes one to three events at once (`drained` and
    /// `upgrade`, `reactivate` and `reactivated`), and one pass may update several nodes (the
    /// managers are reactivated together).
    async fn boundary_now(&self, new_events: &[Event]) -> Vec<(String, String, Vec<String>)> {
        let mut passed: Vec<(String, String, Vec<String>)> = vec![];
        let fresh = new_events
            .iter()
            .filter(|e| self.steps.contains(&e.step))
            .filter(|e| {
                !self
                    .done
                    .contains(&(e.hostname.clone(), e.step.to_string()))
            });
        for e in fresh {
            match passed.iter_mut().find(|(h, _, _)| *h == e.hostname) {
                Some((_, _, steps)) => steps.push(e.step.to_string()),
                None => passed.push((
                    e.hostname.clone(),
                    self.role(&e.hostname, &e.role),
                    vec![e.step.to_string()],
                )),
            }
        }
        if !passed.is_empty() || !self.mid_command {
            return passed;
        }
        let state = swarm_sim::control::state(self.lab.sim.sim()).await;
        state
            .nodes
            .iter()
            .filter(|n| !n.node.engine_running)
            .find(|n| {
                !self
                    .done
                    .contains(&(n.node.hostname.clone(), MID_COMMAND.to_string()))
            })
            .map(|n| {
                let role = self.role(&n.node.hostname, &n.node.role);
                (n.node.hostname.clone(), role, vec![MID_COMMAND.to_string()])
            })
            .into_iter()
            .collect()
    }

    /// Runs operators until one exits by itself, killing each at the next boundary; returns
    /// the last one's exit code.
    async fn run(&mut self, limit: Duration) -> i32 {
        let mut op = self.lab.operator(&self.spec, &free_listen());
        let mut op_started = Instant::now();
        let mut seen_before = self.lab.events().len();
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = op.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "not done within {limit:?}\nlog tail:\n{}",
                tail(&self.lab.log(), 60)
            );
            let events = self.lab.events();
            let new_events = &events[seen_before.min(events.len())..];
            self.note_resumed(new_events, op_started);
            let passed = self.boundary_now(new_events).await;
            if !passed.is_empty() {
                kill9(&mut op);
                let what = |steps: &[String]| match steps {
                    [only] if only == MID_COMMAND => only.clone(),
                    _ => format!("after `{}`", steps.join("`, `")),
                };
                self.rows.push(Row {
                    host: passed
                        .iter()
                        .map(|p| p.0.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    role: passed
                        .iter()
                        .map(|p| p.1.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    boundary: passed
                        .iter()
                        .map(|p| what(&p.2))
                        .collect::<Vec<_>>()
                        .join("; "),
                    killed_at: self.started.elapsed(),
                    resumed: None,
                });
                for (host, _, steps) in passed {
                    self.done
                        .extend(steps.into_iter().map(|s| (host.clone(), s)));
                }
                // Only what was looked at: events the killed operator appended after that read
                // are new to the next round (a boundary the kill came after), not skipped.
                seen_before = events.len();
                op = self.lab.operator(&self.spec, &free_listen());
                op_started = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn note_resumed(&mut self, new_events: &[Event], op_started: Instant) {
        if let Some(row) = self.rows.last_mut()
            && row.resumed.is_none()
            && let Some(e) = new_events.first()
        {
            let what = format!("{} {}", e.step, e.hostname);
            row.resumed = Some((what, op_started.elapsed()));
        }
    }

    /// The (host, step) pairs of `hosts` x `steps` no kill came right after.
    fn missed(&self, hosts: &[&str], steps: &[String]) -> Vec<(String, String)> {
        hosts
            .iter()
            .flat_map(|h| steps.iter().map(move |s| (h.to_string(), s.clone())))
            .filter(|pair| !self.done.contains(pair))
            .collect()
    }

    fn table(&self) -> String {
        let mut out = String::new();
        writeln!(
            out,
            "| # | node | role | killed | at (s) | restarted operator's first event | after |"
        )
        .unwrap();
        writeln!(out, "|---|---|---|---|---|---|---|").unwrap();
        for (i, r) in self.rows.iter().enumerate() {
            let (first, after) = match &r.resumed {
                Some((e, d)) => (e.clone(), format!("{} ms", d.as_millis())),
                None => ("(none: killed again mid-command first)".into(), "-".into()),
            };
            writeln!(
                out,
                "| {} | {} | {} | {} | {:.2} | {first} | {after} |",
                i + 1,
                r.host,
                r.role,
                r.boundary,
                r.killed_at.as_secs_f64(),
            )
            .unwrap();
        }
        out
    }
}

fn config(faults: Faults) -> SimConfig {
    SimConfig {
        time_scale: 20.0,
        faults,
        ..SimConfig::default()
    }
}

async fn leader(lab: &SimLab) -> String {
    swarm_sim::control::state(lab.sim.sim())
        .await
        .leader
        .expect("a leader")
}

/// Every event step of every node, and the middle of every upgrade command: 40 kills in one
/// rollout, each followed by a restart; the rollout completes with every invariant held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_every_step_boundary_the_rollout_converges_safely() {
    let lab = SimLab::start(config(Faults::default())).await;
    let mut chain = Chain::new(&lab, &lab.spec_text(1, ""), &STEPS, true).await;
    let code = chain.run(Duration::from_secs(150)).await;
    let took = chain.started.elapsed();
    println!("{}", chain.table());
    println!(
        "kill -9 at every step boundary: {} kills, converged in {:.1} s (exit {code})",
        chain.rows.len(),
        took.as_secs_f64()
    );
    assert_eq!(code, 0, "log tail:\n{}", tail(&lab.log(), 60));
    // Every node at every step, and once mid-command each.
    chain.assert_all_killed(&["n1", "n2", "n3", "n4", "n5"]);
    // Each restarted operator went on (wrote an event) unless it was killed again first, in
    // the command the killed one had started.
    let stalled = chain
        .rows
        .windows(2)
        .filter(|w| w[0].resumed.is_none() && w[1].boundary != MID_COMMAND);
    assert_eq!(
        stalled.count(),
        0,
        "a restart wrote nothing\n{}",
        chain.table()
    );
    let report = lab.invariants(1);
    println!("invariants: {report}");
    assert!(report.is_ok(), "{report}");
    let order = lab.order(1).await;
    assert!(order.is_ok(), "{order}\n{:#?}", lab.events());
    lab.sim.shutdown().await;
}

/// A failing upgrade, killed after each of its failure steps: the node is rolled back, serving
/// again and marked failed with the reason, and nothing else is touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_every_failure_step_the_failed_node_ends_rolled_back() {
    let lab = SimLab::start(config(Faults {
        fail_upgrade: vec!["n4".into()],
        ..Faults::default()
    }))
    .await;
    let steps = [
        EventStep::Drain,
        EventStep::Upgrade,
        EventStep::Failed,
        EventStep::Rollback,
    ];
    let mut chain = Chain::new(&lab, &lab.spec_text(1, ""), &steps, false).await;
    let code = chain.run(Duration::from_secs(120)).await;
    println!("{}", chain.table());
    assert_eq!(
        code,
        2,
        "paused by the failure; log:\n{}",
        tail(&lab.log(), 60)
    );
    chain.assert_all_killed(&["n4"]);
    let report = lab.invariants_with(Rules::paused, 1);
    println!("invariants: {report}");
    assert!(report.is_ok(), "{report}");
    assert!(
        lab.events().iter().all(|e| e.hostname != "n5"),
        "n5 untouched: {:#?}",
        lab.events()
    );
    lab.sim.shutdown().await;
}

/// `strategy.leaderHandover`, killed right after the leader's demotion, after its upgrade (a
/// worker still), in the middle of its upgrade and right after its promotion: it ends a manager,
/// the rollout completes and every invariant holds (the demoted leader counts as a manager).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_every_handover_step_the_leader_ends_a_manager() {
    let lab = SimLab::start(config(Faults::default())).await;
    let steps = [EventStep::Demote, EventStep::Upgraded, EventStep::Promote];
    let spec = lab.spec_text(1, "    leaderHandover: true\n");
    let mut chain = Chain::new(&lab, &spec, &steps, true).await;
    let leader = chain.leader.clone();
    let code = chain.run(Duration::from_secs(150)).await;
    println!("{}", chain.table());
    assert_eq!(code, 0, "log tail:\n{}", tail(&lab.log(), 60));
    chain.assert_all_killed(&[leader.as_str()]);
    let report = lab.invariants(1);
    println!("invariants: {report}");
    assert!(report.is_ok(), "{report}");
    let order = lab.order(1).await;
    assert!(order.is_ok(), "{order}\n{:#?}", lab.events());
    let nodes = lab.nodes().await;
    let old = nodes.iter().find(|n| n.hostname == leader).unwrap();
    assert_eq!(old.role, swarm_upgrade::cluster::Role::Manager);
    lab.sim.shutdown().await;
}

// ------------------------------------------------------------------ the checker itself

fn node(host: &str, role: &str, version: &str) -> NodeFrame {
    NodeFrame {
        id: host.into(),
        hostname: host.into(),
        role: role.into(),
        leader: host == "n1",
        availability: "active".into(),
        state: "ready".into(),
        reachable: true,
        engine_running: true,
        engine_version: version.into(),
        labels: Default::default(),
    }
}

fn swarm(version: &str) -> Frame {
    Frame {
        at: 0,
        nodes: vec![
            node("n1", "manager", version),
            node("n2", "manager", version),
            node("n3", "manager", version),
            node("n4", "worker", version),
            node("n5", "worker", version),
        ],
    }
}

fn then(frames: &mut Vec<Frame>, change: impl FnOnce(&mut Frame)) {
    let mut next = frames.last().unwrap().clone();
    next.at += 1_000_000_000;
    change(&mut next);
    frames.push(next);
}

fn find<'a>(f: &'a mut Frame, host: &str) -> &'a mut NodeFrame {
    f.nodes.iter_mut().find(|n| n.hostname == host).unwrap()
}

fn mark(n: &mut NodeFrame, step: &str) {
    n.labels.insert("swarm-upgrade.step".into(), step.into());
    n.labels.insert(
        "swarm-upgrade.previous-availability".into(),
        "active".into(),
    );
}

fn breaches(frames: &[Frame]) -> Vec<Breach> {
    let rules = Rules::new("26.1.5", 1, &frames[0]);
    check_steps(frames, &rules)
        .found
        .into_iter()
        .map(|f| f.breach)
        .collect()
}

#[test]
fn the_invariants_catch_each_kind_of_breach() {
    // Two managers down, and the second stopped while the first was.
    let mut frames = vec![swarm("20.10.24")];
    then(&mut frames, |f| find(f, "n2").engine_running = false);
    then(&mut frames, |f| find(f, "n3").engine_running = false);
    let found = breaches(&frames);
    assert!(found.contains(&Breach::TwoManagersDown(vec!["n2".into(), "n3".into()])));
    assert!(found.iter().any(|b| matches!(b, Breach::ManagerStoppedUnguarded { stopped, other, .. } if stopped == "n3" && other == "n2")));

    // A manager stopped while another is `unknown` after a leader change.
    let mut frames = vec![swarm("20.10.24")];
    then(&mut frames, |f| find(f, "n1").state = "unknown".into());
    then(&mut frames, |f| find(f, "n2").engine_running = false);
    assert!(
        breaches(&frames)
            .iter()
            .any(|b| matches!(b, Breach::ManagerStoppedUnguarded { why, .. } if why == "unknown"))
    );

    // A manager upgraded and reactivated while n3 is still on the old version.
    let mut frames = vec![swarm("20.10.24")];
    then(&mut frames, |f| {
        let n2 = find(f, "n2");
        n2.availability = "drain".into();
        mark(n2, "ready");
        n2.engine_version = "26.1.5".into();
    });
    then(&mut frames, |f| {
        find(f, "n2").availability = "active".into()
    });
    assert!(
        breaches(&frames)
            .iter()
            .any(|b| matches!(b, Breach::ManagerReactivatedEarly(h, _) if h == "n2"))
    );

    // A worker drained before the managers are done, and two workers out at once.
    let mut frames = vec![swarm("20.10.24")];
    then(&mut frames, |f| {
        let n4 = find(f, "n4");
        n4.availability = "drain".into();
        mark(n4, "draining");
        let n5 = find(f, "n5");
        n5.availability = "drain".into();
        mark(n5, "draining");
    });
    let found = breaches(&frames);
    assert!(
        found
            .iter()
            .any(|b| matches!(b, Breach::WorkerBeforeManagers { worker, .. } if worker == "n4"))
    );
    assert!(
        found
            .iter()
            .any(|b| matches!(b, Breach::TooManyWorkers { hosts, limit: 1 } if hosts.len() == 2))
    );

    // An admin's drain lifted.
    let mut frames = vec![swarm("26.1.5")];
    find(&mut frames[0], "n5").availability = "drain".into();
    then(&mut frames, |f| {
        find(f, "n5").availability = "active".into()
    });
    assert!(
        breaches(&frames)
            .iter()
            .any(|b| matches!(b, Breach::AdminAvailabilityReplaced { host, .. } if host == "n5"))
    );

    // The end: a node left behind, and one left labelled.
    let mut frames = vec![swarm("26.1.5")];
    find(&mut frames[0], "n4").engine_version = "20.10.24".into();
    then(&mut frames, |f| mark(find(f, "n5"), "settling"));
    let rules = Rules::new("26.1.5", 1, &frames[0]);
    let report = check_rollout(&frames, &rules);
    let ends: Vec<&str> = report
        .found
        .iter()
        .filter_map(|f| match &f.breach {
            Breach::EndState { host, .. } => Some(host.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(ends, ["n4", "n5"], "{report}");

    // And a clean history passes.
    let frames = vec![swarm("26.1.5")];
    assert!(check_rollout(&frames, &Rules::new("26.1.5", 1, &frames[0])).is_ok());
}
