//! Scenario 4: a host whose upgrade fails. `upgrade-host` is made to fail on the non-leader
//! managers n2 and n3 (failure injection: it stops the engine, switches, and exits 1 with the new
//! engine down), so the first node the operator touches fails. The operator runs the rollback
//! (`rollback-host`): that host is back on 20.10.24, Ready, Active and serving (its web task
//! answers HTTP over the overlay); the rollout pauses with the reason (`--once` exits 2; a
//! restarted operator reports Paused in /status and touches nothing); no other node was touched,
//! but for the next manager drained ahead, which is handed back to its availability.

use serde_json::Value;
use std::time::Duration;
use swarm_upgrade_e2e::*;

const FAILING: [&str; 2] = ["n2", "n3"];

/// The address of `service`'s running task on `host` on the `test_tnet` overlay.
async fn task_ip(service: &str, host: &str) -> anyhow::Result<Option<String>> {
    let ids = manager_docker(&[
        "service",
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        "desired-state=running",
        "--filter",
        &format!("node={host}"),
        service,
    ])
    .await?;
    for id in ids.split_whitespace() {
        let v: Value =
            serde_json::from_str(&manager_docker(&["inspect", "--type", "task", id]).await?)?;
        if v.pointer("/0/Status/State").and_then(Value::as_str) != Some("running") {
            continue;
        }
        for a in v
            .pointer("/0/NetworksAttachments")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if a.pointer("/Network/Spec/Name").and_then(Value::as_str) == Some("test_tnet")
                && let Some(addr) = a.pointer("/Addresses/0").and_then(Value::as_str)
            {
                return Ok(Some(addr.split('/').next().unwrap_or(addr).to_string()));
            }
        }
    }
    Ok(None)
}

/// HTTP GET / of `ip:80` from inside a running client container (over the overlay).
async fn http_from_client(ip: &str) -> anyhow::Result<String> {
    for h in HOSTS {
        let ids = docker(
            h,
            &[
                "ps",
                "-q",
                "--filter",
                "label=com.docker.swarm.service.name=test_client",
            ],
        )
        .await?;
        if let Some(id) = ids.split_whitespace().next() {
            // busybox nc; the request is fixed text, the address is an argument
            return docker(
                h,
                &[
                    "exec",
                    id,
                    "sh",
                    "-c",
                    "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 \"$0\" 80",
                    ip,
                ],
            )
            .await;
        }
    }
    anyhow::bail!("no running client container")
}

#[tokio::test]
#[ignore = "needs root: builds a real 5-node swarm (cargo test -p swarm-upgrade-e2e -- --ignored)"]
async fn failed_upgrade_rolls_back_and_pauses() -> anyhow::Result<()> {
    preflight()?;
    let scenario = "s4_failed_upgrade";
    let mut lab = Lab::up(scenario).await?;
    let mut fig = Figures::new(scenario, lab.setup_secs);
    let mut checks = Checks::default();
    wait_all_ready(Duration::from_secs(30)).await?;
    let since = deploy_test_stack().await?;
    let before = nodes().await?;
    let marker_dir = std::path::Path::new(RUN_DIR).join("fail-upgrade");
    std::fs::create_dir_all(&marker_dir)?;
    for h in FAILING {
        std::fs::write(marker_dir.join(h), "")?;
    }

    let mut op = Operator::start(scenario, &default_spec(), true, &[]).await?;
    let mut observed = Observed::default();
    let exit = watch(&mut op, Duration::from_secs(300), &mut observed, |_| false).await;
    if let Some(st) = checks.step("operator run --once", exit) {
        checks.check(
            st.and_then(|s| s.code()) == Some(2),
            format!(
                "operator exit {st:?}, expected 2 (paused on a failure); log:\n{}",
                op.log_tail(20)
            ),
        );
    }
    let events = op.events()?;
    rollout_times(&mut fig, &events);
    let failed: Vec<&Event> = events
        .iter()
        .filter(|e| e.step == EventStep::Failed)
        .collect();
    checks.check(
        failed.len() == 1,
        format!("expected one `failed` event, got {}", failed.len()),
    );
    let host = failed
        .first()
        .map(|e| e.hostname.clone())
        .unwrap_or_default();
    checks.check(
        FAILING.contains(&host.as_str()),
        format!("failed host {host:?} is not one of {FAILING:?}"),
    );
    for step in [EventStep::Failed, EventStep::Rollback, EventStep::Paused] {
        checks.check(
            events
                .iter()
                .any(|e| e.step == step && (e.hostname == host || step == EventStep::Paused)),
            format!("no `{step}` event for {host}"),
        );
    }
    if let Some(p) = events.iter().find(|e| e.step == EventStep::Paused) {
        fig.notes.push(format!("paused: {}", p.message));
        checks.check(
            p.message.contains(&host),
            format!("pause reason does not name {host}: {}", p.message),
        );
    }
    // Another node may only have been drained ahead (the next manager, while the failing one
    // was upgraded) and handed back when the rollout paused: `drain` then `reactivated`.
    let mut others: std::collections::BTreeMap<&str, Vec<EventStep>> = Default::default();
    for e in events
        .iter()
        .filter(|e| !e.hostname.is_empty() && e.hostname != host)
    {
        others.entry(e.hostname.as_str()).or_default().push(e.step);
    }
    let touched: Vec<String> = others
        .iter()
        .filter(|(_, steps)| steps.as_slice() != [EventStep::Drain, EventStep::Reactivated])
        .map(|(h, steps)| format!("{h} {steps:?}"))
        .collect();
    checks.check(
        touched.is_empty(),
        format!("other nodes touched beyond a drain ahead handed back: {touched:?}"),
    );
    if !others.is_empty() {
        fig.notes.push(format!(
            "drained ahead and handed back: {:?}",
            others.keys().collect::<Vec<_>>()
        ));
    }

    // the failed host: back on 20.10.24, Ready, Active, serving
    let after = wait_all_ready(Duration::from_secs(60)).await;
    if let Some(after) = checks.step("all nodes Ready after the rollback", after) {
        eprint!("{}", nodes_table(&after));
        for (h, n) in &after {
            checks.check(
                n.short_version() == FROM_VERSION,
                format!("{h} on {} not {FROM_VERSION}", n.version),
            );
            checks.check(
                n.availability == "active",
                format!("{h} is {} not active", n.availability),
            );
            if *h != host {
                let b = before
                    .get(h)
                    .map(|b| b.availability.clone())
                    .unwrap_or_default();
                checks.check(
                    n.availability == b,
                    format!("{h} availability changed {b} -> {}", n.availability),
                );
                checks.check(
                    n.operator_labels().is_empty(),
                    format!("{h} labelled {:?}", n.operator_labels()),
                );
            } else {
                fig.notes.push(format!(
                    "{h} labels after the failure: {:?}",
                    n.operator_labels()
                ));
            }
        }
    }
    checks.step(
        "services converged after the rollback",
        wait_converged(&["test_service", "test_client"], Duration::from_secs(90)).await,
    );
    let ip = wait_for(
        "the failed host's web task running",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || task_ip("test_service", &host),
    )
    .await;
    if let Some(ip) = checks.step("web task on the failed host", ip) {
        // Right after the rollback the host's overlay peers may not have learnt its new task
        // yet (seen once: the first request timed out): asked again for a while, timed.
        let asked = tokio::time::Instant::now();
        let answer = wait_for(
            "an answer from the failed host's web task",
            Duration::from_secs(30),
            Duration::from_secs(1),
            || async { http_from_client(&ip).await.map(Some) },
        )
        .await;
        if let Some(a) = checks.step("HTTP to the failed host's web task", answer) {
            checks.check(
                a.contains("200 OK"),
                format!("{host} ({ip}) answered {a:?}"),
            );
            fig.notes.push(format!(
                "{host} web task {ip} answers over the overlay (after {:.1} s of asking)",
                asked.elapsed().as_secs_f64()
            ));
        }
    }

    // a restarted operator stays paused, says why, and touches nothing
    let n_events = op.events()?.len();
    drop(op);
    let op = Operator::start_again(scenario, &default_spec(), false).await?;
    let status = wait_for(
        "Paused in /status",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async {
            let s = op.get("/status").await?;
            let v: Value = serde_json::from_str(&s)?;
            let paused = v["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Paused" && c["status"] == true)
                .cloned();
            Ok(paused)
        },
    )
    .await;
    if let Some(c) = checks.step("restarted operator reports Paused", status) {
        fig.notes.push(format!("/status Paused: {c}"));
        checks.check(
            c.to_string().contains(&host),
            format!("Paused condition does not name {host}: {c}"),
        );
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let m = parse_metrics(&op.get("/metrics").await.unwrap_or_default());
    fig.notes.push(format!(
        "metrics: paused {} failed_nodes {}",
        metric_sum(&m, "swarm_upgrade_paused", &[]),
        metric_sum(&m, "swarm_upgrade_failed_nodes", &[])
    ));
    let later: Vec<String> = read_events(&op.events)?
        .iter()
        .skip(n_events)
        .map(|e| format!("{} {} {}", e.hostname, e.step, e.message))
        .collect();
    checks.check(
        later.is_empty(),
        format!("the restarted, paused operator acted: {later:?}"),
    );
    if let Some(c) = checks.step("connectivity", rollout_health(&mut fig, since).await) {
        fig.notes.push(format!(
            "connectivity errors during failure+rollback: {}",
            c.errors
        ));
    }
    fig.report()?;
    drop(op);
    lab.down()?;
    checks.finish(scenario)
}
