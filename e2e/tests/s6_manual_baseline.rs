//! Scenario 6: the baseline. The manual upgrade procedure (`e2e/lab/manual-upgrade`: managers
//! drained and upgraded one by one and kept drained, then reactivated; workers one by one; 1 s
//! polling) upgrades the lab 20.10.24 -> 26.1.5 with the `test` stack running. Timed, so the
//! operator's rollout (scenario 1, same run) can be compared: both times, the ratio, per-phase
//! sums and the physical floor (engine stop + start + Ready, summed over nodes) are printed.
//! Asserts the procedure completes and leaves every node Ready, Active at 26.1.5 with the stack
//! converged; its connectivity errors are reported for comparison.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;
use swarm_upgrade_e2e::*;

#[tokio::test]
#[ignore = "needs root: builds a real 5-node swarm (cargo test -p swarm-upgrade-e2e -- --ignored)"]
async fn manual_procedure_baseline() -> anyhow::Result<()> {
    preflight()?;
    let scenario = "s6_manual_baseline";
    let mut lab = Lab::up(scenario).await?;
    let mut fig = Figures::new(scenario, lab.setup_secs);
    wait_all_ready(Duration::from_secs(30)).await?;
    let since = deploy_test_stack().await?;

    let t0 = tokio::time::Instant::now();
    let out = tokio::time::timeout(
        Duration::from_secs(600),
        tokio::process::Command::new(script("manual-upgrade"))
            .arg(TO_VERSION)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output(),
    )
    .await??;
    let secs = t0.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    std::fs::write(
        artefacts_dir(scenario)?.join("events.jsonl"),
        stdout.as_bytes(),
    )?;
    anyhow::ensure!(
        out.status.success(),
        "manual-upgrade failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<Event> = stdout
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;

    assert_rolled_out(&BTreeMap::new()).await?;
    let c = rollout_health(&mut fig, since).await?;
    rollout_times(&mut fig, &events);
    fig.rollout_secs = Some(secs);
    if let Some(op) = Figures::load_recent("s1_rollout", 3600).filter(|f| f.rollout_secs.is_some())
    {
        let lines = fig.compared_with(&op);
        fig.notes.extend(
            lines
                .into_iter()
                .map(|l| format!("vs s1_rollout (this run): {l}")),
        );
    } else {
        fig.notes
            .push("no s1_rollout figures from this run to compare with".into());
    }
    // The baseline's connectivity errors are a figure, not a failure: the manual procedure is
    // what the operator is compared with (a drain can race the clients' resolution of
    // tasks.service; seen once: a 1 s timeout on a task being stopped).
    fig.notes.push(format!(
        "manual procedure: {} connectivity errors (reported, not asserted)",
        c.errors
    ));
    fig.report()?;
    lab.down()?;
    Ok(())
}
