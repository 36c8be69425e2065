//! The real `docker` CLI (static client 28.2.2) against the simulator.

mod common;

use common::*;

/// The docker CLI: `/usr/local/bin/docker`, else the first executable `docker` on `PATH`.
fn docker_bin() -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let preferred = std::path::PathBuf::from("/usr/local/bin/docker");
    if executable(&preferred) {
        return Some(preferred);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("docker"))
        .find(|candidate| executable(candidate))
}

/// This tier fails, not skips, without the CLI.
fn require_docker() {
    assert!(
        docker_bin().is_some(),
        "no docker CLI at /usr/local/bin/docker or on PATH: install one (the machine image ships \
         /usr/local/bin/docker 28.2.2)"
    );
}

async fn docker(host: &str, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(docker_bin().unwrap())
        .arg("-H")
        .arg(host)
        .args(args)
        .env(
            "DOCKER_CONFIG",
            std::env::temp_dir().join("swarm-sim-docker-config"),
        )
        .output()
        .await
        .expect("docker runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the docker CLI (/usr/local/bin/docker or on PATH): cargo test --workspace -- --ignored"]
async fn docker_cli_works_against_the_sim() {
    require_docker();
    // The CLI reads a node and writes it back once, without retrying "update out of sequence"
    // (as on a real swarm, where an idle node is rarely rewritten): keep the managers' own
    // rewrites of nodes out of that window here; tests/api.rs covers them.
    let mut cfg = config(20.0);
    cfg.timings.version_bump = 1e9;
    let h = start(cfg).await;
    let ep = h.manager_endpoints()[0].clone();
    wait_for_running_tasks(&ep, 7).await;

    // node ls: 5 nodes, n1 is self and leader, the engine version column.
    let (ok, out, err) = docker(&ep, &["node", "ls"]).await;
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].contains("HOSTNAME") && lines[0].contains("ENGINE VERSION"),
        "{out}"
    );
    assert_eq!(lines.len(), 6, "{out}");
    let n1 = lines.iter().find(|l| l.contains(" n1 ")).unwrap();
    assert!(
        n1.contains(" * ")
            && n1.contains("Leader")
            && n1.contains("Ready")
            && n1.contains("20.10.24"),
        "{n1}"
    );
    let (ok, out, _) = docker(
        &ep,
        &[
            "node",
            "ls",
            "--format",
            "{{.Hostname}} {{.ManagerStatus}}",
            "--filter",
            "role=worker",
        ],
    )
    .await;
    assert!(ok);
    let workers: Vec<&str> = out.lines().map(|l| l.trim()).collect();
    assert_eq!(workers, ["n4", "n5"]);

    // node inspect by hostname.
    let (ok, out, err) = docker(&ep, &["node", "inspect", "n2", "--format", "{{.Description.Hostname}} {{.Spec.Role}} {{.ManagerStatus.Reachability}} {{.Description.Engine.EngineVersion}}"]).await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "n2 manager reachable 20.10.24");

    // node update --availability drain: test_client tasks move off n4/n5.
    let (ok, _, err) = docker(&ep, &["node", "update", "--availability", "drain", "n5"]).await;
    assert!(ok, "{err}");
    let (ok, _, err) = docker(&ep, &["node", "update", "--label-add", "zone=a", "n4"]).await;
    assert!(ok, "{err}");
    let (_, out, _) = docker(
        &ep,
        &["node", "inspect", "n4", "--format", "{{json .Spec.Labels}}"],
    )
    .await;
    assert_eq!(out.trim(), r#"{"zone":"a"}"#);
    let (_, out, _) = docker(
        &ep,
        &[
            "node",
            "inspect",
            "n5",
            "--format",
            "{{.Spec.Availability}}",
        ],
    )
    .await;
    assert_eq!(out.trim(), "drain");
    let n5 = get_json(&ep, "/nodes/n5").await["ID"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for("nothing running on n5", 20, || async {
        let t = get_json(&ep, "/tasks").await;
        (!t.as_array()
            .unwrap()
            .iter()
            .any(|t| t["NodeID"] == n5.as_str() && t["Status"]["State"] == "running"))
        .then_some(())
    })
    .await;

    // service ls: replicas as the engine's ServiceStatus reports them.
    wait_for("service ls settles", 20, || async {
        let (ok, out, _) = docker(
            &ep,
            &[
                "service",
                "ls",
                "--format",
                "{{.Name}} {{.Mode}} {{.Replicas}}",
            ],
        )
        .await;
        assert!(ok);
        let got: Vec<&str> = out.lines().collect();
        (got == ["test_client replicated 2/2", "test_service global 4/4"]).then_some(())
    })
    .await;

    // service ps: the drained node's tasks are shut down, history shown.
    let (ok, out, err) = docker(
        &ep,
        &[
            "service",
            "ps",
            "test_service",
            "--format",
            "{{.Name}} {{.Node}} {{.DesiredState}} {{.CurrentState}}",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("test_service.") && l.contains(" n5 Shutdown Shutdown")),
        "{out}"
    );
    assert_eq!(
        out.lines()
            .filter(|l| l.contains(" Running Running"))
            .count(),
        4,
        "{out}"
    );
    let (ok, out, _) = docker(
        &ep,
        &[
            "service",
            "ps",
            "test_client",
            "--filter",
            "desired-state=running",
            "--format",
            "{{.Name}} {{.Node}}",
        ],
    )
    .await;
    assert!(ok);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(!out.contains("n5"), "{out}");

    // network inspect: IPAM config.
    let (ok, out, err) = docker(&ep, &["network", "inspect", "test_tnet", "--format", "{{(index .IPAM.Config 0).Subnet}} {{(index .IPAM.Config 0).Gateway}} {{.Driver}} {{.Scope}}"]).await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "10.0.1.0/24 10.0.1.1 overlay swarm");

    // The control address is the leader's API; a stopped engine's endpoint refuses.
    let (ok, out, _) = docker(
        &h.control_docker_host(),
        &["info", "--format", "{{.Name}} {{.Swarm.ControlAvailable}}"],
    )
    .await;
    assert!(ok);
    assert_eq!(out.trim(), "n1 true");
    h.sim().stop_node("n3").await.unwrap();
    let (ok, _, err) = docker(&h.manager_endpoints()[2], &["node", "ls"]).await;
    assert!(!ok);
    assert!(
        err.contains("Cannot connect") || err.contains("refused"),
        "{err}"
    );

    // Against a 26.1.5 endpoint the CLI negotiates 1.45.
    h.sim().upgrade_node("n2", "26.1.5").await.unwrap();
    let (ok, out, err) = docker(
        &h.manager_endpoints()[1],
        &[
            "version",
            "--format",
            "{{.Server.APIVersion}} {{.Client.APIVersion}}",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "1.45 1.45");
    h.shutdown().await;
}

/// Runs the CLI and fails the test with its output when it fails.
async fn docker_ok(host: &str, args: &[&str]) -> String {
    let (ok, out, err) = docker(host, args).await;
    assert!(ok, "docker {}: {out}{err}", args.join(" "));
    out
}

/// Image, desired state and current state of every task of `service`, via `docker service ps`.
async fn service_ps(ep: &str, service: &str) -> Vec<(String, String, String)> {
    let fmt = "{{.Image}}|{{.DesiredState}}|{{.CurrentState}}";
    docker_ok(ep, &["service", "ps", service, "--format", fmt])
        .await
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            (f[0].to_string(), f[1].to_string(), f[2].to_string())
        })
        .collect()
}

async fn running_with(ep: &str, service: &str, image: &str) -> usize {
    service_ps(ep, service)
        .await
        .iter()
        .filter(|(i, d, c)| i == image && d == "Running" && c.starts_with("Running"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the docker CLI (/usr/local/bin/docker or on PATH): cargo test --workspace -- --ignored"]
async fn docker_cli_shapes_services_and_networks() {
    require_docker();
    let h = start_default().await;
    let ep = h.manager_endpoints()[0].clone();

    // network create (a given subnet, and the next free /24), ls, inspect.
    docker_ok(
        &ep,
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            "10.0.9.0/24",
            "web_net",
        ],
    )
    .await;
    docker_ok(
        &ep,
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "--label",
            "team=blue",
            "spare",
        ],
    )
    .await;
    let (ok, _, err) = docker(&ep, &["network", "create", "-d", "overlay", "spare"]).await;
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, _, err) = docker(&ep, &["network", "create", "local_bridge"]).await;
    assert!(!ok && err.contains("--driver overlay"), "{err}");
    let names = docker_ok(
        &ep,
        &[
            "network",
            "ls",
            "--format",
            "{{.Name}} {{.Driver}} {{.Scope}}",
        ],
    )
    .await;
    for n in ["ingress", "test_tnet", "web_net", "spare"] {
        assert!(names.contains(&format!("{n} overlay swarm")), "{names}");
    }
    let fmt = "{{(index .IPAM.Config 0).Subnet}} {{.Labels.team}}";
    assert_eq!(
        docker_ok(&ep, &["network", "inspect", "spare", "--format", fmt])
            .await
            .trim(),
        "10.0.2.0/24 blue"
    );
    assert_eq!(
        docker_ok(
            &ep,
            &[
                "network",
                "inspect",
                "web_net",
                "--format",
                "{{(index .IPAM.Config 0).Subnet}}"
            ]
        )
        .await
        .trim(),
        "10.0.9.0/24"
    );

    // service create (waits for convergence as the CLI does), ls, ps.
    docker_ok(
        &ep,
        &[
            "service",
            "create",
            "--no-resolve-image",
            "--name",
            "web",
            "--replicas",
            "3",
            "--network",
            "web_net",
            "nginx:1.25",
        ],
    )
    .await;
    assert_eq!(running_with(&ep, "web", "nginx:1.25").await, 3);
    let ls = docker_ok(
        &ep,
        &[
            "service",
            "ls",
            "--format",
            "{{.Name}} {{.Mode}} {{.Replicas}} {{.Image}}",
        ],
    )
    .await;
    assert!(
        ls.lines().any(|l| l == "web replicated 3/3 nginx:1.25"),
        "{ls}"
    );

    // scale, then a new image rolled out one task at a time (the old tasks stay as history).
    docker_ok(&ep, &["service", "scale", "web=5"]).await;
    assert_eq!(running_with(&ep, "web", "nginx:1.25").await, 5);
    docker_ok(
        &ep,
        &[
            "service",
            "update",
            "--no-resolve-image",
            "--image",
            "nginx:1.26",
            "web",
        ],
    )
    .await;
    let ps = service_ps(&ep, "web").await;
    assert_eq!(running_with(&ep, "web", "nginx:1.26").await, 5, "{ps:?}");
    let history = ps
        .iter()
        .filter(|(i, d, _)| i == "nginx:1.25" && d == "Shutdown")
        .count();
    assert_eq!(history, 5, "{ps:?}");

    // A network in use cannot be removed; once its service is gone it can.
    let (ok, _, err) = docker(&ep, &["network", "rm", "web_net"]).await;
    assert!(!ok && err.contains("is in use by service"), "{err}");
    docker_ok(&ep, &["service", "rm", "web"]).await;
    let ls = docker_ok(&ep, &["service", "ls", "--format", "{{.Name}}"]).await;
    assert!(!ls.lines().any(|l| l == "web"), "{ls}");
    docker_ok(&ep, &["network", "rm", "web_net", "spare"]).await;
    let names = docker_ok(&ep, &["network", "ls", "--format", "{{.Name}}"]).await;
    assert!(
        !names.contains("web_net") && !names.contains("spare"),
        "{names}"
    );
    wait_for("the removed service's tasks reaped", 20, || async {
        let tasks = get_json(&ep, "/tasks").await;
        let images: Vec<&str> = tasks
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["Spec"]["ContainerSpec"]["Image"].as_str())
            .collect();
        (!images.iter().any(|i| i.starts_with("nginx:1.2"))).then_some(())
    })
    .await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the docker CLI (/usr/local/bin/docker or on PATH): cargo test --workspace -- --ignored"]
async fn docker_cli_talks_over_the_unix_socket() {
    require_docker();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(20.0);
    cfg.socket_dir = Some(dir.path().to_path_buf());
    let h = start(cfg).await;
    let host = format!("unix://{}", dir.path().join("n1.sock").display());
    let (ok, out, err) = docker(&host, &["version", "--format", "{{.Server.Version}}"]).await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "20.10.24");
    h.shutdown().await;
}
