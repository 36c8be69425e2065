//! Scenario 2: the same rollout with worker n5 drained by the admin beforehand. n5 is upgraded and
//! stays drained (the operator gives every node back its own earlier availability); every other
//! node ends Active at 26.1.5; no operator label remains.

use std::collections::BTreeMap;
use std::time::Duration;
use swarm_upgrade_e2e::*;

#[tokio::test]
#[ignore = "needs root: builds a real 5-node swarm (cargo test -p swarm-upgrade-e2e -- --ignored)"]
async fn admin_drained_worker_stays_drained() -> anyhow::Result<()> {
    preflight()?;
    let scenario = "s2_drained_worker";
    let mut lab = Lab::up(scenario).await?;
    let mut fig = Figures::new(scenario, lab.setup_secs);
    let mut checks = Checks::default();
    wait_all_ready(Duration::from_secs(30)).await?;
    let stack_ready = deploy_test_stack().await?;
    // The admin's drain, before the operator runs: a plain `node update`, without the
    // operator's wait for the overlay gossip to withdraw the node's endpoints. Its errors (a
    // client resolving the stopped web task's address for 25 s was seen on the lab) are the
    // admin's, reported but not the operator's: connectivity counts from when they stopped.
    manager_docker(&["node", "update", "--availability", "drain", "n5"]).await?;
    wait_converged(&["test_service", "test_client"], Duration::from_secs(60)).await?;
    let admin_drain_errors =
        wait_clients_quiet(stack_ready, Duration::from_secs(5), Duration::from_secs(90)).await?;
    fig.notes.push(format!(
        "the admin's plain drain of n5 (before the operator ran): {admin_drain_errors} connectivity errors (reported, not counted)"
    ));
    let since = jiff::Timestamp::now();

    let mut op = Operator::start(scenario, &default_spec(), true, &[]).await?;
    let mut observed = Observed::default();
    let exit = watch(&mut op, Duration::from_secs(420), &mut observed, |_| false).await;
    exited_complete(&mut checks, &op, exit, "operator run --once");
    let events = op.events()?;
    order_proven(&mut checks, &mut fig, &events, &["n5"]);
    // the operator must never have set n5 active
    let n5_active = events
        .iter()
        .filter(|e| {
            e.hostname == "n5" && matches!(e.step, EventStep::Reactivate | EventStep::Reactivated)
        })
        .find(|e| e.message.contains("active"));
    checks.check(
        n5_active.is_none(),
        format!("n5 (admin-drained) was reactivated: {n5_active:?}"),
    );
    rollout_times(&mut fig, &events);
    let want = BTreeMap::from([("n5", "drain")]);
    checks.step("end state (n5 drained)", assert_rolled_out(&want).await);
    no_connectivity_errors(&mut checks, &mut fig, since).await;
    no_rejected_tasks(&mut checks, &fig);
    fig.report()?;
    drop(op);
    lab.down()?;
    checks.finish(scenario)
}
