//! Scenario 8: the bundle of s7, deployed with the mistakes a user makes, on the real swarm.
//! First a client certificate from another CA (the lab's `other-ca/`): dockerd refuses it, and
//! the operator says which endpoint, why and what to do, in its log and its `/status`. Then
//! the right certificates with a `known_hosts` that lacks the managers' host keys: the
//! operator's ssh login check before the first drain fails, named the same way. Each has its
//! metric label on `/metrics`, and no node is drained or labelled, its engine untouched.

use std::time::Duration;

use anyhow::Context;

use swarm_upgrade_e2e::bundle::*;
use swarm_upgrade_e2e::*;

#[tokio::test]
#[ignore = "needs root: builds a real 5-node swarm (cargo test -p swarm-upgrade-e2e -- --ignored)"]
async fn bad_configuration_is_named_and_nothing_is_drained() -> anyhow::Result<()> {
    preflight()?;
    let scenario = "s9_bundle_misconfigured";
    let mut lab = Lab::up(scenario).await?;
    let mut fig = Figures::new(scenario, lab.setup_secs);
    let mut checks = Checks::default();
    wait_all_ready(Duration::from_secs(30)).await?;
    let dir = artefacts_dir(scenario)?;
    let spec = dir.join("engine-upgrade.yaml");
    std::fs::write(&spec, lab_spec(false)?)?;

    let other_ca = BundleFiles {
        cert_path: format!("{LAB_STATE}/tls/other-ca").into(),
        ..BundleFiles::default()
    };
    deploy_operator_stack_with(&spec, 1, &other_ca).await?;
    named(
        &mut checks,
        &mut fig,
        "a client certificate from another CA",
        &[
            ":2376: ",
            "refused the operator's client certificate",
            "Fix: ",
        ],
        "swarm_upgrade_docker_api_errors_total",
        "tls_client_cert_refused",
    )
    .await;
    nothing_touched(&mut checks).await;
    remove_operator_stack().await?;

    // The managers' host keys left out, as when `ssh-keyscan` was run on the workers only.
    let workers_only = dir.join("known_hosts.workers-only");
    let all = std::fs::read_to_string(format!("{LAB_STATE}/ssh/known_hosts"))?;
    let kept: Vec<&str> = all
        .lines()
        .filter(|l| {
            WORKERS
                .iter()
                .any(|w| l.starts_with(&format!("{} ", host_ip(w))))
        })
        .collect();
    anyhow::ensure!(kept.len() == WORKERS.len(), "the lab's known_hosts: {all}");
    std::fs::write(&workers_only, kept.join("\n") + "\n")?;
    let missing_keys = BundleFiles {
        known_hosts: workers_only,
        ..BundleFiles::default()
    };
    deploy_operator_stack_with(&spec, 2, &missing_keys).await?;
    named(
        &mut checks,
        &mut fig,
        "a manager's host key missing from known_hosts",
        &[
            "not drained",
            "host key is not in /etc/swarm-upgrade/known_hosts",
            "Fix: ",
        ],
        "swarm_upgrade_reconcile_errors_total",
        "ssh_host_key_unknown",
    )
    .await;
    // The operator keeps trying each pass (the login every minute): still nothing drained.
    tokio::time::sleep(Duration::from_secs(10)).await;
    nothing_touched(&mut checks).await;

    fig.report()?;
    lab.down()?;
    checks.finish(scenario)
}

/// The operator's `/status` names the problem (every word of `says`), its log does too, and
/// `/metrics` has `family{error="label"}`.
async fn named(
    checks: &mut Checks,
    fig: &mut Figures,
    case: &str,
    says: &[&str],
    family: &str,
    label: &str,
) {
    let status = wait_for(
        &format!("the operator's /status naming {case}"),
        Duration::from_secs(120),
        Duration::from_secs(2),
        || async {
            let status: serde_json::Value = serde_json::from_str(&operator_http("/status").await?)?;
            // A failed call shows in `last_error`; a node the planner holds for it (an ssh
            // login that failed) in its blocker, for as long as it is held.
            let blockers = status["blockers"].as_array().cloned().unwrap_or_default();
            let said = std::iter::once(&status["last_error"])
                .chain(blockers.iter().map(|b| &b["message"]))
                .filter_map(|m| m.as_str());
            Ok(said
                .into_iter()
                .find(|error| says.iter().all(|s| error.contains(s)))
                .map(str::to_string))
        },
    )
    .await;
    let Some(error) = checks.step(case, status) else {
        return;
    };
    fig.notes.push(format!("{case}: /status says: {error}"));
    let logs = operator_log().await;
    let logged = logs.as_deref().unwrap_or_default();
    checks.check(
        says.iter().all(|s| logged.contains(s)),
        format!("{case}: the operator's log does not say it: {logs:?}"),
    );
    // Right after a redeploy the published port may still reach the task being replaced for
    // a moment: ask again for a while rather than once.
    let counted = wait_for(
        &format!("{case}: {family}{{error=\"{label}\"}} on /metrics"),
        Duration::from_secs(20),
        Duration::from_secs(1),
        || async {
            let metrics = operator_http("/metrics").await?;
            Ok(metrics
                .lines()
                .any(|l| l.starts_with(family) && l.contains(&format!("error=\"{label}\"")))
                .then_some(()))
        },
    )
    .await;
    checks.check(
        counted.is_ok(),
        format!("{case}: no {family}{{error=\"{label}\"}} on /metrics"),
    );
}

/// `docker service logs` of the operator: its log is on the task's stderr, which the CLI
/// passes on as its own.
async fn operator_log() -> anyhow::Result<String> {
    let out = tokio::process::Command::new("docker")
        .args([
            "-H",
            &sock("n1"),
            "service",
            "logs",
            "--raw",
            "swarm-upgrade_operator",
        ])
        .output()
        .await?;
    anyhow::ensure!(out.status.success(), "docker service logs: {out:?}");
    Ok(String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout))
}

/// GET on the operator's port from inside the `swarm-upgrade-metrics` network (the stack
/// publishes no port), with the lab's busybox at the running task's address (busybox-static's
/// wget crashes there, with a name or an address).
async fn operator_http(path: &str) -> anyhow::Result<String> {
    let task = manager_docker(&[
        "service",
        "ps",
        "-q",
        "-f",
        "desired-state=running",
        "swarm-upgrade_operator",
    ])
    .await?;
    let task = task
        .split_whitespace()
        .next()
        .context("no running operator task")?;
    let format = r#"{{range .NetworksAttachments}}{{if eq .Network.Spec.Name "swarm-upgrade-metrics"}}{{range .Addresses}}{{.}} {{end}}{{end}}{{end}}"#;
    let addrs = manager_docker(&["inspect", "--format", format, task]).await?;
    let ip = addrs
        .split_whitespace()
        .next()
        .and_then(|a| a.split('/').next())
        .context("the operator task has no address on swarm-upgrade-metrics")?;
    // busybox's nc with the request on stdin: no shell, the address only an argument.
    let mut child = tokio::process::Command::new("docker")
        .args(["-H", &sock("n1"), "run", "--rm", "-i", "--network"])
        .args([
            "swarm-upgrade-metrics",
            "e2e/busybox:latest",
            "nc",
            "-w",
            "5",
            ip,
            "9090",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let request = format!("GET {path} HTTP/1.0\r\n\r\n");
    let mut stdin = child.stdin.take().context("stdin")?;
    tokio::io::AsyncWriteExt::write_all(&mut stdin, request.as_bytes()).await?;
    drop(stdin);
    let out = child.wait_with_output().await?;
    let answer = String::from_utf8_lossy(&out.stdout);
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .with_context(|| format!("no HTTP answer from {ip}:9090: {answer}"))?;
    anyhow::ensure!(head.contains(" 200 "), "{ip}:9090{path}: {head}");
    Ok(body.to_string())
}

/// Every node active, without operator labels, at the version it started with.
async fn nothing_touched(checks: &mut Checks) {
    let nodes = match nodes().await {
        Ok(n) => n,
        Err(e) => return checks.check(false, format!("reading the nodes: {e:#}")),
    };
    for h in HOSTS {
        let Some(n) = nodes.get(h) else {
            checks.check(false, format!("node {h} missing"));
            continue;
        };
        checks.check(
            n.availability == "active",
            format!(
                "{h} is {} (drained by a misconfigured operator)",
                n.availability
            ),
        );
        checks.check(
            n.operator_labels().is_empty(),
            format!("{h} carries {:?}", n.operator_labels()),
        );
        checks.check(
            n.short_version() == FROM_VERSION,
            format!("{h}'s engine was changed to {}", n.version),
        );
    }
}

/// `docker stack rm swarm-upgrade`, waiting until its service and network are gone (its
/// secrets cannot be updated in place).
async fn remove_operator_stack() -> anyhow::Result<()> {
    manager_docker(&["stack", "rm", "swarm-upgrade"]).await?;
    wait_for(
        "the operator stack removed",
        Duration::from_secs(90),
        Duration::from_secs(1),
        || async {
            let services = manager_docker(&["service", "ls", "-q"]).await?;
            let networks =
                manager_docker(&["network", "ls", "-q", "-f", "name=swarm-upgrade-metrics"])
                    .await?;
            Ok((services.trim().is_empty() && networks.trim().is_empty()).then_some(()))
        },
    )
    .await
}
