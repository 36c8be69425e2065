//! Scenario 8: an autolocked swarm (`docker swarm update --autolock=true`). Each upgraded
//! manager's engine comes up locked; with `spec.upgrade.unlockKey` the operator unlocks it with
//! `POST /swarm/unlock` on that manager's own engine and the rollout completes: every node Ready,
//! Active, at 26.1.5, the managers unlocked, the order proven by the events file (one unlock per
//! manager), zero connectivity errors, no task rejected, and the key in neither the log, the
//! events nor `/status`.

use std::collections::BTreeMap;
use std::time::Duration;
use swarm_upgrade_e2e::*;

/// The default spec with `upgrade.unlockKey` reading the key from `key_file`.
fn spec_with_unlock_key(key_file: &std::path::Path) -> String {
    let spec = default_spec();
    let at = "    timeout: 3m\n";
    assert!(
        spec.contains(at),
        "the e2e spec's upgrade section changed:\n{spec}"
    );
    spec.replacen(
        at,
        &format!(
            "{at}    unlockKey: {{ file: {:?} }}\n",
            key_file.display().to_string()
        ),
        1,
    )
}

#[tokio::test]
#[ignore = "needs root: builds a real 5-node swarm (cargo test -p swarm-upgrade-e2e -- --ignored)"]
async fn autolocked_rollout_unlocks_each_manager() -> anyhow::Result<()> {
    preflight()?;
    let scenario = "s8_autolock";
    let mut lab = Lab::up(scenario).await?;
    let mut fig = Figures::new(scenario, lab.setup_secs);
    let mut checks = Checks::default();
    wait_all_ready(Duration::from_secs(30)).await?;
    manager_docker(&["swarm", "update", "--autolock=true"]).await?;
    let key = manager_docker(&["swarm", "unlock-key", "-q"]).await?;
    let key = key.trim().to_string();
    checks.check(
        key.starts_with("SWMKEY-1-"),
        "docker swarm unlock-key -q printed a key",
    );
    let key_file = artefacts_dir(scenario)?.join("swarm-unlock-key");
    std::fs::write(&key_file, format!("{key}\n"))?;
    let since = deploy_test_stack().await?;

    let mut op = Operator::start(scenario, &spec_with_unlock_key(&key_file), true, &[]).await?;
    let mut observed = Observed {
        clients: Some(ProbeClients::default()),
        ..Observed::default()
    };
    let exit = watch(&mut op, Duration::from_secs(600), &mut observed, |_| false).await;
    exited_complete(&mut checks, &op, exit, "operator run --once");
    let events = op.events()?;
    order_proven(&mut checks, &mut fig, &events, &[]);
    let mut unlocked: Vec<&str> = events
        .iter()
        .filter(|e| e.step == EventStep::Unlock)
        .map(|e| e.hostname.as_str())
        .collect();
    unlocked.sort();
    checks.check(
        unlocked == MANAGERS,
        format!("one unlock per manager, got {unlocked:?}"),
    );
    fig.notes
        .push(format!("managers unlocked by the operator: {unlocked:?}"));
    rollout_times(&mut fig, &events);
    checks.step("end state", assert_rolled_out(&BTreeMap::new()).await);
    for m in MANAGERS {
        let state = docker(m, &["info", "--format", "{{.Swarm.LocalNodeState}}"]).await;
        checks.check(
            state.as_ref().is_ok_and(|s| s.trim() == "active"),
            format!("{m}'s own engine says its swarm is {state:?}, expected active"),
        );
    }
    no_connectivity_errors(&mut checks, &mut fig, since).await;
    no_rejected_tasks(&mut checks, &fig);
    let secret = &key["SWMKEY-1-".len()..];
    let log = std::fs::read_to_string(&op.log)?;
    let events_text = std::fs::read_to_string(&op.events)?;
    checks.check(
        !log.contains(secret),
        "the unlock key is not in the operator's log",
    );
    checks.check(
        !events_text.contains(secret),
        "the unlock key is not in the events file",
    );
    checks.check(
        observed.scrapes > 0
            && !observed.last_status.contains(secret)
            && !observed.last_metrics.contains(secret),
        "the unlock key is not in /status or /metrics",
    );
    fig.report()?;
    drop(op);
    lab.down()?;
    checks.finish(scenario)
}
