//! Scenario 9: the plain-container mode of `charts/swarm-upgrade/README.md` ("A swarm without
//! workers, or without a TCP API"): the operator image run with `docker run --restart
//! unless-stopped` on a manager, its local socket first and the other managers' TLS endpoints,
//! upgrading over ssh. It is killed with its own manager's engine and started again by the
//! restart policy on the new engine, and the rollout finishes: every node at 26.1.5, active,
//! no label left, in order.

use std::collections::BTreeMap;
use std::time::Duration;

use swarm_upgrade::events::EventStep;
use swarm_upgrade_e2e::bundle::*;
use swarm_upgrade_e2e::*;

/// The manager the operator runs on.
const HOST: &str = "n1";

#[tokio::test]
#[ignore = "needs root: builds a real 5-node swarm (cargo test -p swarm-upgrade-e2e -- --ignored)"]
async fn the_plain_container_survives_its_own_managers_upgrade() -> anyhow::Result<()> {
    preflight()?;
    let scenario = "s10_plain_container";
    let mut lab = Lab::up(scenario).await?;
    let mut fig = Figures::new(scenario, lab.setup_secs);
    let mut checks = Checks::default();
    wait_all_ready(Duration::from_secs(30)).await?;
    let dir = artefacts_dir(scenario)?;
    let etc = dir.join("etc-swarm-upgrade");
    std::fs::create_dir_all(&etc)?;
    std::fs::write(etc.join("engine-upgrade.yaml"), lab_spec(false)?)?;
    std::fs::copy(
        format!("{LAB_STATE}/ssh/known_hosts"),
        etc.join("known_hosts"),
    )?;

    let started = jiff::Timestamp::now();
    run_operator_container(&etc).await?;
    let events_file = std::path::PathBuf::from(format!(
        "{LAB_STATE}/hosts/{HOST}/data/volumes/swarm-upgrade-events/_data/events.jsonl"
    ));
    let done = wait_for(
        "the rollout's `completed` event in the container's events volume",
        Duration::from_secs(600),
        Duration::from_secs(2),
        || async {
            let events = read_events(&events_file)?;
            Ok(events
                .iter()
                .any(|e| e.time >= started && e.step == EventStep::Completed)
                .then_some(()))
        },
    )
    .await;
    checks.step("rollout completed", done);
    let events: Vec<Event> = read_events(&events_file)?
        .into_iter()
        .filter(|e| e.time >= started)
        .collect();
    if let Some(notes) = checks.step("order", check_order(&events, &HOSTS, &[])) {
        fig.notes.extend(notes);
    }
    rollout_times(&mut fig, &events);
    checks.step("end state", assert_rolled_out_without_stack().await);
    restarted_on_the_new_engine(&mut checks, &mut fig, &events, &dir).await;

    fig.report()?;
    lab.down()?;
    checks.finish(scenario)
}

/// The container was started again after its own engine's upgrade began (a daemon starting
/// its restart-policy containers does not count as a restart in `RestartCount`), and its log
/// shows both runs.
async fn restarted_on_the_new_engine(
    checks: &mut Checks,
    fig: &mut Figures,
    events: &[Event],
    dir: &std::path::Path,
) {
    let upgrade_began = events
        .iter()
        .find(|e| e.hostname == HOST && e.step == EventStep::Upgrade)
        .map(|e| e.time);
    let started = docker(
        HOST,
        &[
            "inspect",
            "--format",
            "{{.State.StartedAt}}",
            "swarm-upgrade",
        ],
    )
    .await
    .ok()
    .and_then(|t| t.trim().parse::<jiff::Timestamp>().ok());
    fig.notes.push(format!(
        "{HOST}'s upgrade began {upgrade_began:?}; the operator container last started {started:?}"
    ));
    checks.check(
        matches!((upgrade_began, started), (Some(u), Some(s)) if s > u),
        format!("the operator container was not started again after {HOST}'s upgrade began"),
    );
    let log = tokio::process::Command::new("docker")
        .args(["-H", &sock(HOST), "logs", "swarm-upgrade"])
        .output()
        .await;
    let log = log
        .map(|o| {
            String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout)
        })
        .unwrap_or_default();
    let _ = std::fs::write(dir.join("operator.log"), &log);
    let runs = log.matches("swarm-upgrade running").count();
    fig.notes
        .push(format!("operator runs in its container's log: {runs}"));
    checks.check(
        runs >= 2,
        format!("the container's log shows {runs} operator runs, not 2 or more"),
    );
}

/// The README's `docker run`, with the lab's paths: n1's engine socket as the local one, the
/// other managers over TLS, the ssh key where the chart's spec wants it.
async fn run_operator_container(etc: &std::path::Path) -> anyhow::Result<()> {
    let socket = sock(HOST).trim_start_matches("unix://").to_string();
    let others: Vec<String> = tls_managers()
        .split(',')
        .filter(|e| !e.contains(&host_ip(HOST)))
        .map(str::to_string)
        .collect();
    let docker_host = format!("unix:///var/run/docker.sock,{}", others.join(","));
    let mounts = [
        format!("{socket}:/var/run/docker.sock"),
        format!("{}:/etc/swarm-upgrade:ro", etc.display()),
        format!("{LAB_STATE}/ssh/operator_ed25519:/run/secrets/swarm-upgrade-ssh-key:ro"),
        format!("{LAB_STATE}/tls/client:/etc/docker-tls:ro"),
        "swarm-upgrade-events:/var/lib/swarm-upgrade".to_string(),
    ];
    let mut args: Vec<&str> = vec![
        "run",
        "-d",
        "--name",
        "swarm-upgrade",
        "--restart",
        "unless-stopped",
        "-e",
        "DOCKER_TLS_VERIFY=1",
        "-e",
        "DOCKER_CERT_PATH=/etc/docker-tls",
    ];
    for m in &mounts {
        args.extend(["-v", m.as_str()]);
    }
    args.extend([
        "e2e/operator:latest",
        "run",
        "--spec",
        "/etc/swarm-upgrade/engine-upgrade.yaml",
        "--docker-host",
        &docker_host,
        "--events",
        "/var/lib/swarm-upgrade/events.jsonl",
        "--listen",
        "0.0.0.0:9090",
    ]);
    docker(HOST, &args).await?;
    Ok(())
}

/// What `assert_rolled_out` checks, without the test stack (not deployed here).
async fn assert_rolled_out_without_stack() -> anyhow::Result<()> {
    let nodes = wait_all_ready(Duration::from_secs(60)).await?;
    eprint!("{}", nodes_table(&nodes));
    let mut wrong = BTreeMap::new();
    for h in HOSTS {
        match nodes.get(h) {
            Some(n)
                if n.short_version() == TO_VERSION
                    && n.availability == "active"
                    && n.operator_labels().is_empty() => {}
            Some(n) => {
                wrong.insert(
                    h,
                    format!("{} {} {:?}", n.version, n.availability, n.operator_labels()),
                );
            }
            None => {
                wrong.insert(h, "missing".into());
            }
        }
    }
    anyhow::ensure!(wrong.is_empty(), "not rolled out: {wrong:?}");
    Ok(())
}
