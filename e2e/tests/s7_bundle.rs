//! Scenario 7: the bundle, deployed as `charts/swarm-upgrade/README.md` says, upgrades the swarm
//! it runs on. `docker stack deploy -c charts/swarm-upgrade/stack.yml` (only its documented
//! variables set) runs the operator image on a worker; it reaches the managers only over their
//! TLS endpoints and upgrades every host over ssh (a key pinned to a forced command, the upgrade
//! outliving the session), with the test stack running. Deployed paused first, then unpaused
//! with a new spec revision (README step 5). Checks what s1 checks, and that the operator was
//! moved off its worker by its own drain and the new task finished the rollout, that two operator
//! tasks never acted at once (their events, in the `events` volume of each worker, do not
//! interleave), and that Debian's Prometheus, on the `swarm-upgrade-metrics` network with the
//! chart's scrape job, scraped it: every dashboard and alert query returns data from it, or
//! reads only metrics of an event that did not happen.

use std::collections::BTreeMap;
use std::time::Duration;

use swarm_upgrade_e2e::bundle::*;
use swarm_upgrade_e2e::*;

/// Metrics that exist only once their event happened, with that event and how the scenario
/// knows it did not.
const EVENT_METRICS: &[(&str, &str)] = &[
    // A manager being upgraded is on standby: the operator asks the others, so a rollout can
    // end without a single failed call.
    (
        "swarm_upgrade_docker_api_errors_total",
        "a failed Docker API call",
    ),
    ("swarm_upgrade_task_rejections_total", "a task rejected"),
    ("swarm_upgrade_task_failures_total", "a task failed"),
    (
        "swarm_upgrade_connectivity_probes_total",
        "spec.health.probes (not in the chart's spec)",
    ),
    (
        "swarm_upgrade_connectivity_errors_total",
        "spec.health.probes (not in the chart's spec)",
    ),
    (
        "swarm_upgrade_health_gate_failing",
        "spec.health (not in the chart's spec)",
    ),
    (
        "swarm_upgrade_health_gate_failures_total",
        "spec.health (not in the chart's spec)",
    ),
    (
        "swarm_upgrade_reconcile_errors_total",
        "a failed reconcile step",
    ),
    (
        "swarm_upgrade_notifications_failed_total",
        "spec.notify (not in the chart's spec)",
    ),
];

#[tokio::test]
#[ignore = "needs root: builds a real 5-node swarm (cargo test -p swarm-upgrade-e2e -- --ignored)"]
async fn the_bundle_upgrades_the_swarm_it_runs_on() -> anyhow::Result<()> {
    preflight()?;
    let scenario = "s7_bundle";
    let mut lab = Lab::up(scenario).await?;
    let mut fig = Figures::new(scenario, lab.setup_secs);
    let mut checks = Checks::default();
    wait_all_ready(Duration::from_secs(30)).await?;
    let stack_ready = deploy_test_stack().await?;
    let dir = artefacts_dir(scenario)?;

    // Paused first: the stack makes the metrics network, Prometheus joins it and scrapes.
    let spec = dir.join("engine-upgrade.yaml");
    std::fs::write(&spec, lab_spec(true)?)?;
    deploy_operator_stack(&spec, 1).await?;
    wait_for(
        "the operator's task running",
        Duration::from_secs(90),
        Duration::from_millis(500),
        || async { Ok((replicas("swarm-upgrade_operator").await? == (1, 1)).then_some(())) },
    )
    .await?;
    let prometheus = dir.join("prometheus");
    prometheus_config(&prometheus)?;
    start_prometheus(&prometheus).await?;
    wait_for(
        "Prometheus scraping the operator",
        Duration::from_secs(90),
        Duration::from_secs(1),
        || async {
            let up = prom_query(r#"up{job="swarm-upgrade"} == 1"#).await?;
            Ok((!up.is_empty()).then_some(()))
        },
    )
    .await?;

    // Setting up the bundle and Prometheus is not the rollout: wait until the clients are quiet
    // again and count the rollout's connectivity from there (as s2 does with the admin's drain;
    // once on the lab, while they were set up, a client timed out on one web task for 20 s).
    let setup_errors =
        wait_clients_quiet(stack_ready, Duration::from_secs(5), Duration::from_secs(90)).await?;
    fig.notes.push(format!(
        "deploying the bundle paused and starting Prometheus: {setup_errors} connectivity errors (reported, not counted)"
    ));
    let since = jiff::Timestamp::now();

    // Unpaused the documented way: a new revision of the spec config.
    std::fs::write(&spec, lab_spec(false)?)?;
    let (task_times, sampler) = sample_operator_tasks();
    let started = jiff::Timestamp::now();
    deploy_operator_stack(&spec, 2).await?;
    let events = bundle_rollout_done(&mut checks, &mut fig, started).await?;
    sampler.abort();
    operator_moved(&mut checks, &mut fig, &events, &task_times);
    checks.step("end state", assert_rolled_out(&BTreeMap::new()).await);
    no_connectivity_errors(&mut checks, &mut fig, since).await;
    no_rejected_tasks(&mut checks, &fig);
    // Prometheus's host was upgraded too. A plain container on an attachable overlay network
    // is not restarted by its restart policy when its engine restarts (moby/moby#32607, seen
    // here: it stays exited), so it is started again, as charts/swarm-upgrade/README.md says.
    let back = wait_for(
        "Prometheus answering again after its host's upgrade",
        Duration::from_secs(90),
        Duration::from_secs(1),
        || async {
            let _ = docker(PROMETHEUS_HOST, &["start", "prometheus"]).await;
            // scraping the operator again: instant queries read its latest samples
            let up = prom_query(r#"up{job="swarm-upgrade"} == 1"#)
                .await
                .unwrap_or_default();
            Ok((!up.is_empty()).then_some(()))
        },
    )
    .await;
    checks.step("Prometheus back", back);
    scraped_during_rollout(&mut checks, &mut fig).await;
    let happened = fig_happened(&fig);
    shipped_queries_answer(&mut checks, &mut fig, &happened).await;

    fig.report()?;
    lab.down()?;
    checks.finish(scenario)
}

/// One operator task: the host it ran on and when its container ran.
#[derive(Debug, Clone)]
struct OperatorTask {
    host: String,
    started: jiff::Timestamp,
    finished: Option<jiff::Timestamp>,
}

impl OperatorTask {
    fn holds(&self, t: jiff::Timestamp) -> bool {
        self.started <= t && self.finished.is_none_or(|f| t <= f)
    }
}

type TaskTimes = std::sync::Arc<std::sync::Mutex<BTreeMap<String, OperatorTask>>>;

/// Samples the operator service's tasks every second while the rollout runs: a container's start
/// time is read from its engine while it exists (an upgraded node's agent removes the containers
/// of its old tasks), its end from the container or, once gone, the task's shutdown time.
fn sample_operator_tasks() -> (TaskTimes, tokio::task::JoinHandle<()>) {
    let times = TaskTimes::default();
    let out = times.clone();
    let handle = tokio::spawn(async move {
        loop {
            if let Ok(ids) = manager_docker(&[
                "service",
                "ps",
                "-q",
                "--no-trunc",
                "swarm-upgrade_operator",
            ])
            .await
            {
                for id in ids.split_whitespace() {
                    let known = out.lock().unwrap().get(id).cloned();
                    if let Some(t) = sample_task(id, known).await {
                        out.lock().unwrap().insert(id.to_string(), t);
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    (times, handle)
}

async fn sample_task(id: &str, known: Option<OperatorTask>) -> Option<OperatorTask> {
    let f = "{{.NodeID}} {{.Status.ContainerStatus.ContainerID}} {{.Status.State}} {{.Status.Timestamp.Format \"2006-01-02T15:04:05.999999999Z07:00\"}}";
    let task = manager_docker(&["inspect", "--format", f, id]).await.ok()?;
    let words: Vec<&str> = task.split_whitespace().collect();
    let [node, container, state, at] = words.as_slice() else {
        return known;
    };
    let host = manager_docker(&[
        "node",
        "inspect",
        "--format",
        "{{.Description.Hostname}}",
        node,
    ])
    .await
    .ok()?
    .trim()
    .to_string();
    let fmt = "{{.State.StartedAt}} {{.State.Running}} {{.State.FinishedAt}}";
    match docker(&host, &["inspect", "--format", fmt, container]).await {
        Ok(times) => {
            let w: Vec<&str> = times.split_whitespace().collect();
            let started = w.first()?.parse().ok()?;
            let finished = (w.get(1) != Some(&"true"))
                .then(|| w.get(2).and_then(|f| f.parse().ok()))
                .flatten();
            Some(OperatorTask {
                host,
                started,
                finished,
            })
        }
        Err(_) => known.map(|mut k| {
            if k.finished.is_none() && ["shutdown", "complete", "failed"].contains(state) {
                k.finished = at.parse().ok();
            }
            k
        }),
    }
}

/// The operator ran on more than one worker (moved by its own drain); no two of its containers
/// ran at the same time; and every event in a host's volume was written while a task ran there.
fn operator_moved(
    checks: &mut Checks,
    fig: &mut Figures,
    events: &[(String, Event)],
    sampled: &TaskTimes,
) {
    let mut tasks: Vec<OperatorTask> = sampled.lock().unwrap().values().cloned().collect();
    tasks.sort_by_key(|t| t.started);
    let first = events.first().map(|(_, e)| e.time);
    let acting: Vec<&OperatorTask> = tasks
        .iter()
        .filter(|t| first.is_some_and(|f| t.finished.is_none_or(|end| end >= f)))
        .collect();
    fig.notes.push(format!(
        "operator tasks during the rollout: {}",
        acting
            .iter()
            .map(|t| format!(
                "{} {}..{}",
                t.host,
                t.started,
                t.finished.map_or("running".into(), |f| f.to_string())
            ))
            .collect::<Vec<_>>()
            .join("; ")
    ));
    let mut hosts: Vec<&str> = acting.iter().map(|t| t.host.as_str()).collect();
    hosts.sort();
    hosts.dedup();
    checks.check(
        hosts.len() >= 2,
        format!("the operator ran only on {hosts:?}: it was not moved by its own drain"),
    );
    for pair in acting.windows(2) {
        checks.check(
            pair[0].finished.is_some_and(|end| end <= pair[1].started),
            format!(
                "two operator tasks ran at once: on {} until {:?} and on {} from {}",
                pair[0].host, pair[0].finished, pair[1].host, pair[1].started
            ),
        );
    }
    let orphans: Vec<String> = events
        .iter()
        .filter(|(host, e)| !acting.iter().any(|t| t.host == *host && t.holds(e.time)))
        .map(|(host, e)| format!("{host}: {} {} at {}", e.hostname, e.step, e.time))
        .collect();
    checks.check(
        orphans.is_empty(),
        format!("events written while no operator task ran on that host: {orphans:?}"),
    );
}

/// Prometheus saw the rollout in progress: between 1 and 4 nodes at the target at some scrape.
async fn scraped_during_rollout(checks: &mut Checks, fig: &mut Figures) {
    let expr = r#"count_over_time(((sum(swarm_upgrade_nodes_at_target{job="swarm-upgrade"}) > 0) < 5)[20m:1s])"#;
    match prom_query(expr).await {
        Ok(r) => {
            let seconds = r.first().map_or(0.0, |(_, v)| *v);
            fig.notes.push(format!(
                "Prometheus saw the rollout in progress for {seconds:.0} one-second steps"
            ));
            checks.check(
                seconds > 0.0,
                "Prometheus never scraped the operator mid-rollout (1 to 4 nodes at the target)",
            );
        }
        Err(e) => checks.check(false, format!("querying Prometheus: {e:#}")),
    }
}

/// Which of the event-only metrics' events happened in this run.
fn fig_happened(fig: &Figures) -> Vec<&'static str> {
    let mut happened = vec![];
    if fig.rejected_tasks.unwrap_or(0) > 0 {
        happened.push("a task rejected");
    }
    if fig.failed_tasks.unwrap_or(0) > 0 {
        happened.push("a task failed");
    }
    happened
}

/// Each query of the dashboard and the alert rules returns data from the lab's Prometheus, or
/// every metric it reads that has no series is one whose event did not happen here. An alert's
/// condition may be empty (it is not firing) as long as the metrics it reads are there.
async fn shipped_queries_answer(checks: &mut Checks, fig: &mut Figures, happened: &[&str]) {
    let queries = match shipped_queries() {
        Ok(q) => q,
        Err(e) => return checks.check(false, format!("reading the shipped queries: {e:#}")),
    };
    let (mut with_data, mut waiting) = (0, vec![]);
    for (from, expr) in &queries {
        let data = match prom_query(expr).await {
            Ok(r) => !r.is_empty(),
            Err(e) => {
                checks.check(false, format!("{from}: {e:#}"));
                continue;
            }
        };
        let mut missing = vec![];
        for metric in metrics_in(expr) {
            // Over the run, not at its end: the operator's task is replaced by its own drain,
            // and what the first task counted (a task that failed while it ran) is gone from
            // the second's /metrics; Prometheus still holds it.
            let present = format!(
                r#"count(last_over_time({{__name__=~"{metric}(_bucket|_sum|_count)?", job="swarm-upgrade"}}[30m]))"#
            );
            if prom_query(&present)
                .await
                .map(|r| r.is_empty())
                .unwrap_or(true)
            {
                missing.push(metric);
            }
        }
        let unexplained: Vec<&String> = missing
            .iter()
            .filter(|m| {
                !EVENT_METRICS
                    .iter()
                    .any(|(name, event)| name == m && !happened.contains(event))
            })
            .collect();
        checks.check(
            unexplained.is_empty(),
            format!("{from}: no series for {unexplained:?} in Prometheus ({expr})"),
        );
        if data {
            with_data += 1;
        } else {
            let why: Vec<&str> = missing
                .iter()
                .filter_map(|m| EVENT_METRICS.iter().find(|(n, _)| n == m).map(|(_, e)| *e))
                .collect();
            waiting.push(format!(
                "{from}: {}",
                if why.is_empty() {
                    "its condition did not hold".to_string()
                } else {
                    format!("needs {}", why.join(", "))
                }
            ));
        }
    }
    fig.notes.push(format!(
        "{with_data} of {} shipped queries returned data from Prometheus; the others: {}",
        queries.len(),
        waiting.join("; ")
    ));
    checks.check(with_data > 0, "no shipped query returned data");
}
