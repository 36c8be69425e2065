//! Scenario 1: the full rollout 20.10.24 -> 26.1.5 by the operator, with the seed's `test` stack
//! running. Every node ends Ready, Active, at 26.1.5 with no operator label; the events file
//! proves managers first (one at a time), managers reactivated only after all three are upgraded,
//! no worker touched before, workers one at a time; services converged; zero connectivity errors
//! in the client logs after the clients started; no task rejected; `/metrics` showed the progress.

use std::collections::BTreeMap;
use std::time::Duration;
use swarm_upgrade_e2e::*;

#[tokio::test]
async fn full_rollout_without_interruption() -> anyhow::Result<()> {
    if !preflight()? {
        return Ok(());
    }
    let scenario = "s1_rollout";
    let mut lab = Lab::up(scenario).await?;
    let mut fig = Figures::new(scenario, lab.setup_secs);
    let mut checks = Checks::default();
    wait_all_ready(Duration::from_secs(30)).await?;
    let since = deploy_test_stack().await?;

    let mut op = Operator::start(scenario, &default_spec(), true, &[]).await?;
    let mut observed = Observed::default();
    let exit = watch(&mut op, Duration::from_secs(420), &mut observed, |_| false).await;
    if let Some(st) = checks.step("operator run --once", exit) {
        checks.check(
            st.and_then(|s| s.code()) == Some(0),
            format!(
                "operator exit {st:?}, expected 0 (Complete); log:\n{}",
                op.log_tail(20)
            ),
        );
    }
    let events = op.events()?;
    if let Some(notes) = checks.step(
        "order proven by the events file",
        check_order(&events, &HOSTS, &[]),
    ) {
        fig.notes.extend(notes);
    }
    rollout_times(&mut fig, &events);
    checks.step("end state", assert_rolled_out(&BTreeMap::new()).await);
    if let Some(c) = checks.step("connectivity", rollout_health(&mut fig, since).await) {
        checks.check(
            c.errors == 0,
            format!("{} connectivity errors: {:?}", c.errors, c.samples),
        );
    }
    checks.check(
        fig.rejected_tasks == Some(0),
        format!("{:?} tasks rejected during the rollout", fig.rejected_tasks),
    );
    checks.check(
        observed.showed_progress(),
        format!(
            "/metrics never showed the rollout in progress (nodes_at_target values {:?} over {} scrapes)",
            observed.at_target_values, observed.scrapes
        ),
    );
    fig.notes.push(format!(
        "/metrics: {} scrapes, nodes_at_target took {:?}, steps seen {:?}",
        observed.scrapes, observed.at_target_values, observed.steps_seen
    ));
    fig.report()?;
    drop(op);
    lab.down()?;
    checks.finish(scenario)
}
