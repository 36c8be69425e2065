//! Scenario 11: two replicas of the bundle (`SWARM_UPGRADE_REPLICAS=2`, `run --ha`), one on
//! each worker. One holds the lease in the swarm's labels and acts; mid-rollout (a manager's
//! upgrade under way) its container is killed with SIGKILL; the other takes over within the
//! lease's bound (the measured time is in the figures) and finishes the rollout. Checks what
//! s1 checks (order, zero connectivity errors, every node Ready/Active at the target, no label
//! left) and that the two never acted at once: the events of the workers' `events` volumes
//! change hands no more often than the lease did.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use swarm_upgrade::events::EventStep;
use swarm_upgrade_e2e::bundle::*;
use swarm_upgrade_e2e::*;
use tokio::time::Instant;

const HOLDER: &str = "swarm-upgrade.lease.holder";
const TRANSITIONS: &str = "swarm-upgrade.lease.transitions";
/// The stack's lease (the operator's default `--ha-lease-duration`).
const LEASE: Duration = Duration::from_secs(15);

#[tokio::test]
#[ignore = "needs root: builds a real 5-node swarm (cargo test -p swarm-upgrade-e2e -- --ignored)"]
async fn the_standby_replica_finishes_when_the_active_one_is_killed() -> Result<()> {
    preflight()?;
    let scenario = "s11_ha";
    let mut lab = Lab::up(scenario).await?;
    let mut fig = Figures::new(scenario, lab.setup_secs);
    let mut checks = Checks::default();
    wait_all_ready(Duration::from_secs(30)).await?;
    let stack_ready = deploy_test_stack().await?;
    let dir = artefacts_dir(scenario)?;
    let setup_errors =
        wait_clients_quiet(stack_ready, Duration::from_secs(5), Duration::from_secs(90)).await?;
    fig.notes.push(format!(
        "setting up the test stack: {setup_errors} connectivity errors (reported, not counted)"
    ));

    let spec = dir.join("engine-upgrade.yaml");
    std::fs::write(&spec, lab_spec(false)?)?;
    let since = jiff::Timestamp::now();
    deploy_operator_replicas(&spec, 1, &BundleFiles::default(), 2).await?;
    wait_for(
        "both operator tasks running",
        Duration::from_secs(90),
        Duration::from_millis(500),
        || async { Ok((replicas("swarm-upgrade_operator").await? == (2, 2)).then_some(())) },
    )
    .await?;

    // Mid-rollout: a manager's upgrade command under way.
    let (host, container, holder) = wait_for(
        "a manager's upgrade under way, the lease held",
        Duration::from_secs(240),
        Duration::from_millis(200),
        || async {
            let upgrading = all_events(since)?.iter().any(|(_, e)| {
                e.step == EventStep::Upgrade && MANAGERS.contains(&e.hostname.as_str())
            });
            if !upgrading {
                return Ok(None);
            }
            let holder = lease().await?.remove(HOLDER).unwrap_or_default();
            Ok(holder_container(&holder)
                .await?
                .map(|(host, id)| (host, id, holder)))
        },
    )
    .await?;
    docker(&host, &["kill", &container]).await?;
    let killed = Instant::now();
    let took = wait_for(
        "another operator holding the lease",
        LEASE * 4,
        Duration::from_millis(100),
        || async {
            let now = lease().await.ok().and_then(|mut l| l.remove(HOLDER));
            Ok(now
                .filter(|h| !h.is_empty() && *h != holder)
                .map(|h| (h, killed.elapsed())))
        },
    )
    .await;
    if let Some((new_holder, after)) = checks.step("takeover", took) {
        fig.notes.push(format!(
            "killed the active operator {holder} on {host}; {new_holder} took the lease {:.1} s later (lease {LEASE:?}; bound: the lease plus the standby's reads)",
            after.as_secs_f64()
        ));
        checks.check(
            after <= LEASE + Duration::from_secs(5),
            format!("the takeover took {after:?}"),
        );
    }

    let events = bundle_rollout_done(&mut checks, &mut fig, since).await?;
    never_two_acting(&mut checks, &mut fig, &events).await;
    checks.step("end state", assert_rolled_out(&BTreeMap::new()).await);
    no_connectivity_errors(&mut checks, &mut fig, since).await;
    no_rejected_tasks(&mut checks, &fig);

    fig.report()?;
    lab.down()?;
    checks.finish(scenario)
}

/// The swarm's labels (`docker info`: `Swarm.Cluster.Spec.Labels`).
async fn lease() -> Result<BTreeMap<String, String>> {
    let out = manager_docker(&["info", "--format", "{{json .Swarm.Cluster.Spec.Labels}}"]).await?;
    let labels: Option<BTreeMap<String, String>> =
        serde_json::from_str(out.trim()).context("the swarm's labels")?;
    Ok(labels.unwrap_or_default())
}

/// The worker and container of the operator task whose identity is `holder`: its default
/// identity starts with the container's host name, the first 12 characters of its ID.
async fn holder_container(holder: &str) -> Result<Option<(String, String)>> {
    if holder.is_empty() {
        return Ok(None);
    }
    for host in WORKERS {
        let filter = "label=com.docker.swarm.service.name=swarm-upgrade_operator";
        let ids = docker(host, &["ps", "-q", "--no-trunc", "--filter", filter]).await?;
        if let Some(id) = ids
            .split_whitespace()
            .find(|id| holder.starts_with(&id[..12.min(id.len())]))
        {
            return Ok(Some((host.to_string(), id.to_string())));
        }
    }
    Ok(None)
}

/// The events pass from one worker's volume to the other's no more often than the lease
/// changed hands after the first holder took it: two acting operators would interleave.
async fn never_two_acting(checks: &mut Checks, fig: &mut Figures, events: &[(String, Event)]) {
    let handovers = events.windows(2).filter(|w| w[0].0 != w[1].0).count();
    let transitions: Option<usize> = lease()
        .await
        .ok()
        .and_then(|l| l.get(TRANSITIONS).and_then(|t| t.parse().ok()));
    let hosts: Vec<&str> = {
        let mut h: Vec<&str> = events.iter().map(|(h, _)| h.as_str()).collect();
        h.dedup();
        h
    };
    fig.notes.push(format!(
        "events by volume in time order: {}; the lease changed hands {} times",
        hosts.join(" -> "),
        transitions.map_or("?".into(), |t| t.to_string())
    ));
    match transitions {
        Some(t) => checks.check(
            handovers < t.max(1),
            format!("the events change volumes {handovers} times, the lease only {t} times"),
        ),
        None => checks.check(false, "the swarm has no lease label at the end"),
    }
    checks.check(handovers >= 1, "the standby never wrote an event");
}
