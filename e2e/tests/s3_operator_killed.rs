//! Scenario 3: the operator is killed with SIGKILL while a manager is drained (its first manager
//! `drained` event), restarted, killed again while a worker is upgrading (its first worker
//! `upgrade` event: the node-side command is running), restarted; it finishes the rollout, and
//! no node is left drained or labelled.

use std::collections::BTreeMap;
use std::time::Duration;
use swarm_upgrade_e2e::*;

#[tokio::test]
#[ignore = "needs root: builds a real 5-node swarm (cargo test -p swarm-upgrade-e2e -- --ignored)"]
async fn operator_killed_twice_finishes_the_rollout() -> anyhow::Result<()> {
    preflight()?;
    let scenario = "s3_operator_killed";
    let mut lab = Lab::up(scenario).await?;
    let mut fig = Figures::new(scenario, lab.setup_secs);
    let mut checks = Checks::default();
    wait_all_ready(Duration::from_secs(30)).await?;
    let since = deploy_test_stack().await?;

    let mut op = Operator::start(scenario, &default_spec(), true, &[]).await?;
    let mut observed = Observed::default();
    let t0 = tokio::time::Instant::now();

    // kill 1: a manager is drained
    let stop = watch(&mut op, Duration::from_secs(240), &mut observed, |ev| {
        ev.iter()
            .any(|e| e.role == "manager" && e.step == EventStep::Drained)
    })
    .await;
    let mut killed = 0;
    match checks.step("waiting for a manager drained", stop) {
        Some(None) => {
            op.kill9().await?;
            killed += 1;
            let ev = op.events()?;
            let m = ev
                .iter()
                .find(|e| e.role == "manager" && e.step == EventStep::Drained)
                .map(|e| e.hostname.clone())
                .unwrap_or_default();
            let nodes = nodes().await?;
            let state = nodes
                .get(&m)
                .map(|n| format!("{} labels {:?}", n.availability, n.operator_labels()));
            fig.notes.push(format!(
                "kill 1 at {:.1}s: manager {m} drained (now {state:?})",
                t0.elapsed().as_secs_f64()
            ));
            op.restart().await?;
        }
        Some(Some(st)) => checks.check(
            false,
            format!("operator exited ({st}) before a manager was drained"),
        ),
        None => {}
    }

    // kill 2: a worker is upgrading
    let stop = watch(&mut op, Duration::from_secs(300), &mut observed, |ev| {
        ev.iter()
            .any(|e| e.role == "worker" && e.step == EventStep::Upgrade)
    })
    .await;
    match checks.step("waiting for a worker upgrading", stop) {
        Some(None) => {
            op.kill9().await?;
            killed += 1;
            let w = op
                .events()?
                .iter()
                .find(|e| e.role == "worker" && e.step == EventStep::Upgrade)
                .map(|e| e.hostname.clone())
                .unwrap_or_default();
            let log = std::fs::read_to_string(format!("{LIB_DIR}/hosts/{w}/upgrade.log"))
                .unwrap_or_default();
            fig.notes.push(format!(
                "kill 2 at {:.1}s: worker {w} upgrading (upgrade-host log so far: {:?})",
                t0.elapsed().as_secs_f64(),
                log.lines().last().unwrap_or("")
            ));
            op.restart().await?;
        }
        Some(Some(st)) => checks.check(
            false,
            format!("operator exited ({st}) before a worker upgraded"),
        ),
        None => {}
    }
    checks.check(
        killed == 2,
        format!("operator killed {killed} times, expected 2"),
    );

    let exit = watch(&mut op, Duration::from_secs(420), &mut observed, |_| false).await;
    exited_complete(&mut checks, &op, exit, "restarted operator run --once");
    let events = op.events()?;
    order_proven(&mut checks, &mut fig, &events, &[]);
    rollout_times(&mut fig, &events);
    checks.step(
        "end state (nothing drained or labelled)",
        assert_rolled_out(&BTreeMap::new()).await,
    );
    no_connectivity_errors(&mut checks, &mut fig, since).await;
    fig.report()?;
    drop(op);
    lab.down()?;
    checks.finish(scenario)
}
