//! What the rollout scenarios share: the end state every rollout must reach, and the figures.

use crate::cluster::*;
use crate::operator::{Event, Operator, check_order, step_times};
use crate::report::Figures;
use crate::{HOSTS, MANAGERS, TO_VERSION};
use anyhow::{Result, ensure};
use jiff::Timestamp;
use std::collections::BTreeMap;
use std::process::ExitStatus;
use std::time::Duration;

/// After a rollout: every node Ready at 26.1.5 with `availability[host]` (default `active`),
/// no operator label left, the `test` stack converged.
pub async fn assert_rolled_out(availability: &BTreeMap<&str, &str>) -> Result<()> {
    let nodes = wait_all_ready(Duration::from_secs(60)).await?;
    eprint!("{}", nodes_table(&nodes));
    for h in HOSTS {
        let n = nodes
            .get(h)
            .ok_or_else(|| anyhow::anyhow!("node {h} missing"))?;
        ensure!(n.state == "ready", "{h} is {}", n.state);
        ensure!(
            n.short_version() == TO_VERSION,
            "{h} engine {} not {TO_VERSION}",
            n.version
        );
        let role = if MANAGERS.contains(&h) {
            "manager"
        } else {
            "worker"
        };
        ensure!(n.role == role, "{h} is a {}, not a {role}", n.role);
        let want = availability.get(h).copied().unwrap_or("active");
        ensure!(
            n.availability == want,
            "{h} availability {} not {want}",
            n.availability
        );
        ensure!(
            n.operator_labels().is_empty(),
            "{h} still carries operator labels {:?}",
            n.operator_labels()
        );
    }
    wait_converged(&["test_service", "test_client"], Duration::from_secs(90)).await?;
    Ok(())
}

/// Connectivity and task figures of a rollout that began at `since`, into `fig`.
pub async fn rollout_health(fig: &mut Figures, since: Timestamp) -> Result<Connectivity> {
    // the clients write their errors as they happen; give the last round time to land
    tokio::time::sleep(Duration::from_secs(2)).await;
    let c = count_connectivity(since)?;
    fig.connectivity(&c);
    let (rejected, failed) = bad_tasks(&["test_service", "test_client"], since).await?;
    fig.rejected_tasks = Some(rejected.len());
    fig.failed_tasks = Some(failed.len());
    for t in rejected.iter().chain(failed.iter()) {
        fig.notes.push(format!(
            "task {} {} on {}: {} ({})",
            t.service, t.state, t.node, t.err, t.timestamp
        ));
    }
    for s in &c.samples {
        fig.notes.push(format!("client log: {s}"));
    }
    Ok(c)
}

/// Rollout time (first event to the last) and per-node step times, into `fig`.
pub fn rollout_times(fig: &mut Figures, events: &[Event]) {
    if let (Some(a), Some(b)) = (events.first(), events.last()) {
        fig.rollout_secs = Some(b.time.duration_since(a.time).as_secs_f64());
    }
    fig.steps = step_times(events);
}

/// `run --once` ended with exit code 0 (the rollout complete); `what` names the run.
pub fn exited_complete(
    checks: &mut Checks,
    op: &Operator,
    exit: Result<Option<ExitStatus>>,
    what: &str,
) {
    if let Some(st) = checks.step(what, exit) {
        checks.check(
            st.and_then(|s| s.code()) == Some(0),
            format!(
                "operator exit {st:?}, expected 0 (Complete); log:\n{}",
                op.log_tail(20)
            ),
        );
    }
}

/// The events file proves the rollout's order ([`check_order`]); the orders go to the figures.
/// `kept_drained`: nodes the admin drained beforehand.
pub fn order_proven(
    checks: &mut Checks,
    fig: &mut Figures,
    events: &[Event],
    kept_drained: &[&str],
) {
    if let Some(notes) = checks.step(
        "order proven by the events file",
        check_order(events, &crate::HOSTS, kept_drained),
    ) {
        fig.notes.extend(notes);
    }
}

/// No connectivity error during the rollout that began at `since` (its figures into `fig`).
pub async fn no_connectivity_errors(
    checks: &mut Checks,
    fig: &mut Figures,
    since: Timestamp,
) -> Option<Connectivity> {
    let c = checks.step("connectivity", rollout_health(fig, since).await)?;
    checks.check(
        c.errors == 0,
        format!("{} connectivity errors: {:?}", c.errors, c.samples),
    );
    Some(c)
}

/// No task of the test stack rejected during the rollout (after [`rollout_health`]).
pub fn no_rejected_tasks(checks: &mut Checks, fig: &Figures) {
    checks.check(
        fig.rejected_tasks == Some(0),
        format!("{:?} tasks rejected during the rollout", fig.rejected_tasks),
    );
}

/// Checks collected through a scenario and reported together at the end (after teardown), so a
/// failing scenario says everything that went wrong, not only the first thing.
#[derive(Debug, Default)]
pub struct Checks {
    failed: Vec<String>,
    passed: usize,
}

impl Checks {
    pub fn check(&mut self, ok: bool, what: impl Into<String>) {
        if ok {
            self.passed += 1;
        } else {
            let what = what.into();
            eprintln!("  CHECK FAILED: {what}");
            self.failed.push(what);
        }
    }

    /// Record an error from a step as a failed check; `Some` of the value otherwise.
    pub fn step<T>(&mut self, what: &str, r: Result<T>) -> Option<T> {
        match r {
            Ok(v) => {
                self.passed += 1;
                Some(v)
            }
            Err(e) => {
                self.check(false, format!("{what}: {e:#}"));
                None
            }
        }
    }

    pub fn finish(self, scenario: &str) -> Result<()> {
        if self.failed.is_empty() {
            eprintln!("[{scenario}] all {} checks passed", self.passed);
            return Ok(());
        }
        print_artefact_tails(scenario);
        anyhow::bail!(
            "[{scenario}] {} of {} checks failed:\n  - {}",
            self.failed.len(),
            self.failed.len() + self.passed,
            self.failed.join("\n  - ")
        )
    }
}

/// The last lines of the operator's log and of each engine's log, printed when a check failed:
/// CI keeps a failing test's output, not its artefacts folder.
fn print_artefact_tails(scenario: &str) {
    let Ok(dir) = crate::lab::artefacts_dir(scenario) else {
        return;
    };
    let logs = std::iter::once(("operator.log".to_string(), 40))
        .chain(HOSTS.iter().map(|h| (format!("{h}-dockerd.log"), 12)));
    for (name, lines) in logs {
        let Ok(text) = std::fs::read_to_string(dir.join(&name)) else {
            continue;
        };
        let all: Vec<&str> = text.lines().collect();
        eprintln!("---- last {lines} lines of {name} ----");
        for l in &all[all.len().saturating_sub(lines)..] {
            eprintln!("  {l}");
        }
    }
}
