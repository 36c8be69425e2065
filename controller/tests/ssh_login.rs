//! The ssh login checked before a drain, against a real sshd the test starts (Debian's
//! openssh-server, run as the user running the tests, on a free port): a missing or changed
//! host key and a refused key are named with the node, the cause and the fix, nothing runs on
//! the node, and the operator drains nothing; with the right files the login passes and the
//! operator goes on to drain.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use swarm_sim::{SimConfig, SimHandle, Stack};
use swarm_upgrade::docker::{Endpoint, Swarm};
use swarm_upgrade::ssh_check::{SshLogin, SshProblem, check_login};

mod common;
use common::operator_process::run_in_process;

const NEEDS: &str = "needs sshd and ssh (Debian: openssh-server openssh-client; .ci/run installs them): cargo test -p swarm-upgrade --test ssh_login -- --ignored";

struct Sshd {
    dir: tempfile::TempDir,
    port: u16,
    pid: u32,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the sshd this test started; no memory is touched.
        unsafe {
            libc::kill(self.pid as i32, libc::SIGTERM);
        }
    }
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", ""])
        .arg("-f")
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("ssh-keygen: {e}; {NEEDS}"));
    assert!(out.status.success(), "ssh-keygen: {out:?}");
}

fn public(path: &Path) -> String {
    let text = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

impl Sshd {
    /// An sshd whose one key (`operator`) may only run a forced command that leaves a file.
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for key in ["host", "operator", "stranger", "other-host"] {
            keygen(&d.join(key));
        }
        let forced = format!(
            "command=\"touch {}\"",
            d.join("forced-command-ran").display()
        );
        let authorized = format!("{forced} {}\n", public(&d.join("operator")));
        std::fs::write(d.join("authorized_keys"), authorized).unwrap();
        let port = free_port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nAuthorizedKeysFile {keys}\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
             StrictModes no\nPidFile {pid}\n",
            host = d.join("host").display(),
            keys = d.join("authorized_keys").display(),
            pid = d.join("sshd.pid").display(),
        );
        std::fs::write(d.join("sshd_config"), config).unwrap();
        let sshd = ["/usr/sbin/sshd", "sshd"]
            .into_iter()
            .find(|p| Command::new(p).arg("-V").output().is_ok())
            .unwrap_or_else(|| panic!("no sshd; {NEEDS}"));
        // Debian's sshd refuses to start without its privilege separation directory, which
        // only its service unit creates (RuntimeDirectory=sshd); a fresh CI machine has none.
        if !Path::new("/run/sshd").exists() {
            let _ = std::fs::create_dir_all("/run/sshd");
        }
        let out = Command::new(sshd)
            .arg("-f")
            .arg(d.join("sshd_config"))
            .arg("-E")
            .arg(d.join("sshd.log"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "sshd did not start: {out:?}; its log: {}",
            std::fs::read_to_string(d.join("sshd.log")).unwrap_or_default()
        );
        let pid = wait_for_file(&d.join("sshd.pid"))
            .await
            .trim()
            .parse()
            .unwrap();
        let known = format!("[127.0.0.1]:{port} {}\n", public(&d.join("host")));
        std::fs::write(d.join("known_hosts"), known).unwrap();
        let wrong = format!("[127.0.0.1]:{port} {}\n", public(&d.join("other-host")));
        std::fs::write(d.join("known_hosts.changed"), wrong).unwrap();
        std::fs::write(d.join("known_hosts.empty"), "").unwrap();
        Self { dir, port, pid }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The chart's upgrade command, pointed at this sshd.
    fn command(&self, known_hosts: &str, key: &str) -> Vec<String> {
        let kh = format!("UserKnownHostsFile={}", self.path(known_hosts).display());
        let key = self.path(key).display().to_string();
        let port = self.port.to_string();
        [
            "ssh",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            &kh,
            "-i",
            &key,
            "-p",
            &port,
            "-l",
            &user(),
            "--",
            "127.0.0.1",
            "sudo",
            "/usr/local/sbin/upgrade-docker-engine",
            "{version}",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn forced_command_ran(&self) -> bool {
        self.path("forced-command-ran").exists()
    }
}

async fn wait_for_file(path: &Path) -> String {
    for _ in 0..100 {
        if let Ok(text) = std::fs::read_to_string(path)
            && !text.trim().is_empty()
        {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never appeared", path.display());
}

#[tokio::test]
#[ignore = "needs sshd and ssh (openssh-server, openssh-client)"]
async fn each_bad_login_is_named_and_runs_nothing() {
    let sshd = Sshd::start().await;
    let login = |kh: &str, key: &str| SshLogin::from_argv(&sshd.command(kh, key)).unwrap();
    check_login(&login("known_hosts", "operator"), "n1")
        .await
        .expect("the right key and host key log in");
    for (kh, key, problem, says) in [
        (
            "known_hosts.empty",
            "operator",
            SshProblem::HostKeyUnknown,
            "host key is not in",
        ),
        (
            "known_hosts.changed",
            "operator",
            SshProblem::HostKeyChanged,
            "not the one in",
        ),
        (
            "known_hosts",
            "stranger",
            SshProblem::KeyRefused,
            "refused the operator's key",
        ),
    ] {
        let failure = check_login(&login(kh, key), "n1").await.unwrap_err();
        let text = failure.to_string();
        eprintln!("{text}");
        assert_eq!(failure.problem, problem, "{text}");
        assert!(
            text.starts_with("n1: not drained: ") && text.contains("127.0.0.1"),
            "{text}"
        );
        assert!(text.contains(says) && text.contains("Fix: "), "{text}");
        if problem != SshProblem::KeyRefused {
            assert!(
                text.contains(&sshd.path(kh).display().to_string()),
                "{text}"
            );
        }
    }
    let closed = SshLogin::from_argv(&{
        let mut argv = sshd.command("known_hosts", "operator");
        let at = argv.iter().position(|a| a == "-p").unwrap();
        argv[at + 1] = free_port().to_string();
        argv
    })
    .unwrap();
    let failure = check_login(&closed, "n1").await.unwrap_err();
    assert_eq!(failure.problem, SshProblem::Unreachable, "{failure}");
    assert!(
        !sshd.forced_command_ran(),
        "the login check ran the node's forced command"
    );
}

const SPEC: &str = r#"apiVersion: swarm-upgrade.io/v1alpha1
kind: EngineUpgrade
metadata:
  name: ssh-test
spec:
  version: "26.1.5"
  upgrade:
    timeout: 1m
  strategy:
    settle: 0s
"#;

/// The operator on the simulated swarm, upgrading over ssh to the test's sshd with the given
/// known_hosts: (the first node's availability and operator labels after the first passes,
/// `/status`'s last error, `/metrics`).
async fn operator_run(
    sshd: &Sshd,
    known_hosts: &str,
) -> (Vec<(String, String, bool)>, String, String) {
    let sim = SimHandle::start(SimConfig {
        time_scale: 20.0,
        stack: Stack::None,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let endpoints = |sim: &SimHandle| -> Vec<Endpoint> {
        sim.manager_endpoints()
            .iter()
            .map(|e| Endpoint::parse(e, None).unwrap())
            .collect()
    };
    let mut spec: serde_json::Value = serde_saphyr::from_str(SPEC).unwrap();
    spec["spec"]["upgrade"]["command"] = serde_json::json!(sshd.command(known_hosts, "operator"));
    let spec_path = sshd.path(&format!("spec-{known_hosts}.yaml"));
    std::fs::write(&spec_path, serde_json::to_string(&spec).unwrap()).unwrap();
    let (base, running) = run_in_process(Swarm::new(endpoints(&sim)), spec_path).await;
    let http = swarm_upgrade::http_client::HttpClient::new("test", Duration::from_secs(5));
    let mut last_error = String::new();
    let mut nodes = vec![];
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let status = http
            .get(&format!("{base}/status"), "application/json")
            .await;
        let status: serde_json::Value = serde_json::from_slice(&status.unwrap().body).unwrap();
        // The pass whose check failed says so in `last_error`; the passes after, in the
        // planner's ssh blocker, which holds the node until the login is tried again.
        let blocker = (status["blockers"].as_array().into_iter().flatten())
            .find(|b| b["kind"] == "ssh_login")
            .and_then(|b| b["message"].as_str());
        last_error = (status["last_error"].as_str().or(blocker))
            .unwrap_or_default()
            .to_string();
        nodes = node_states(&Swarm::new(endpoints(&sim))).await;
        if !last_error.is_empty() || nodes.iter().any(|(_, a, _)| a != "active") {
            break;
        }
    }
    let metrics = http.get(&format!("{base}/metrics"), "text/plain").await;
    running.abort();
    sim.shutdown().await;
    (nodes, last_error, metrics.unwrap().text())
}

/// (hostname, availability, has operator labels) of every node.
async fn node_states(swarm: &Swarm) -> Vec<(String, String, bool)> {
    swarm
        .nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|n| {
            let spec = n.spec.unwrap_or_default();
            let availability = spec.availability.map(|a| a.to_string()).unwrap_or_default();
            let labelled = spec
                .labels
                .unwrap_or_default()
                .keys()
                .any(|k| k.starts_with("swarm-upgrade"));
            let name = n.description.and_then(|d| d.hostname).unwrap_or_default();
            (name, availability, labelled)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs sshd and ssh (openssh-server, openssh-client)"]
async fn an_unknown_host_key_drains_nothing_and_says_so() {
    let sshd = Sshd::start().await;
    let (nodes, last_error, metrics) = operator_run(&sshd, "known_hosts.empty").await;
    assert!(
        last_error.contains("not drained") && last_error.contains("host key is not in"),
        "/status last_error: {last_error:?}"
    );
    let label = SshProblem::HostKeyUnknown.metric_label();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("swarm_upgrade_reconcile_errors_total")
                && l.contains(&format!("error=\"{label}\""))),
        "no {label} in /metrics"
    );
    for (name, availability, labelled) in &nodes {
        assert_eq!(availability, "active", "{name} was drained");
        assert!(!labelled, "{name} was labelled");
    }
    assert!(!sshd.forced_command_ran());
}

/// The control: with the right known_hosts the same operator does drain (so the test above
/// shows the check stopping it, not a rollout that never began).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs sshd and ssh (openssh-server, openssh-client)"]
async fn a_good_login_lets_the_drain_go_ahead() {
    let sshd = Sshd::start().await;
    let (nodes, last_error, _) = operator_run(&sshd, "known_hosts").await;
    assert!(
        nodes
            .iter()
            .any(|(_, a, labelled)| a == "drain" && *labelled),
        "no node drained: {nodes:?} (last error {last_error:?})"
    );
}
