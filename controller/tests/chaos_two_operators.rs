//! Two operators against one swarm (issue 13, part 3, first half): a misconfigured second
//! replica runs the same spec at the same time. Every node update carries the version index it
//! was read at, and every write re-reads the node and checks its step first, so the two never
//! take the swarm past the invariants: one manager's engine down at a time, workers within
//! `maxUnavailableWorkers`, and the rollout ends clean.

use std::time::Duration;

use swarm_sim::SimConfig;
use tokio::time::Instant;

mod common;
use common::operator_process::{OperatorFiles, free_listen, tail, wait_exit};
use common::sim_lab::SimLab;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_operators_at_once_keep_the_invariants() {
    let lab = SimLab::start(SimConfig {
        time_scale: 20.0,
        workers: 4,
        ..SimConfig::default()
    })
    .await;
    let spec = lab.write_spec(&lab.spec_text(2, ""));
    let started = Instant::now();
    let mut first = lab.operator(&spec, &free_listen());
    let mut second = lab.operator(&spec, &free_listen());
    // Both run meanwhile; waited for one after the other.
    let codes = [
        wait_exit(&mut first, Duration::from_secs(120), &lab).await,
        wait_exit(&mut second, Duration::from_secs(120), &lab).await,
    ];
    let report = lab.invariants(2);
    // Where the two met: a write refused for its stale version index, or a node found moved on.
    let log = lab.log();
    let contended = log.matches("out of sequence").count() + log.matches("re-planning").count();
    println!(
        "two operators: both exited {codes:?} after {:.1} s, {contended} contended writes; invariants: {report}",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(codes, [0, 0], "log tail:\n{}", tail(&lab.log(), 60));
    assert!(report.is_ok(), "{report}\nlog tail:\n{}", tail(&log, 60));
    assert!(
        contended > 0,
        "the two operators never met: no test of them"
    );
    lab.sim.shutdown().await;
}
