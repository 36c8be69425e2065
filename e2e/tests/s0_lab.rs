//! The lab alone (no operator): 5 engines at 20.10.24 form a 3-manager/2-worker swarm, the `test`
//! stack of the manual upgrade procedure runs on it, and its clients see every web task without a
//! connectivity error.

use std::time::Duration;
use swarm_upgrade_e2e::*;

#[tokio::test]
#[ignore = "needs root: builds a real 5-node swarm (cargo test -p swarm-upgrade-e2e -- --ignored)"]
async fn lab_forms_swarm_and_runs_test_stack() -> anyhow::Result<()> {
    preflight()?;
    let mut lab = Lab::up("s0_lab").await?;
    let mut fig = Figures::new("s0_lab", lab.setup_secs);

    let nodes = wait_all_ready(Duration::from_secs(30)).await?;
    eprint!("{}", nodes_table(&nodes));
    for h in HOSTS {
        let n = nodes
            .get(h)
            .ok_or_else(|| anyhow::anyhow!("node {h} missing"))?;
        let want_role = if MANAGERS.contains(&h) {
            "manager"
        } else {
            "worker"
        };
        assert_eq!(n.role, want_role, "{h} role");
        assert_eq!(n.state, "ready", "{h} state");
        assert_eq!(n.availability, "active", "{h} availability");
        assert_eq!(n.short_version(), FROM_VERSION, "{h} engine");
    }

    let t0 = tokio::time::Instant::now();
    let since = deploy_test_stack().await?;
    fig.notes.push(format!(
        "test stack converged and probing in {:.1}s",
        t0.elapsed().as_secs_f64()
    ));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let c = count_connectivity(since)?;
    fig.connectivity(&c);
    let (rejected, failed) = bad_tasks(&["test_service", "test_client"], since).await?;
    fig.rejected_tasks = Some(rejected.len());
    fig.failed_tasks = Some(failed.len());
    fig.report()?;
    assert_eq!(
        c.errors, 0,
        "connectivity errors on a steady swarm: {:#?}",
        c.samples
    );
    assert!(
        c.client_starts >= 2,
        "expected 2 client starts, saw {}",
        c.client_starts
    );
    lab.down()?;
    Ok(())
}
