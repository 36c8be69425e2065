//! The `swarm-upgrade` binary run as a child process against the simulator: its files (events,
//! log) in a test directory, and waiting for it to exit with what to show when it does not.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use swarm_upgrade::cluster::NodeView;
use swarm_upgrade::docker::Swarm;
use swarm_upgrade::events::{Event, read_events};

/// A test directory the operator writes `events.jsonl` and `operator.log` into.
pub trait OperatorFiles {
    fn dir(&self) -> &Path;

    fn path(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }

    fn events(&self) -> Vec<Event> {
        read_events(&self.path("events.jsonl")).unwrap_or_default()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("operator.log")).unwrap_or_default()
    }
}

/// A free local address for the operator's `--listen`.
pub fn free_listen() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Waits until an event matching `pred` is in the events file, up to `limit`; fails with the
/// log's tail past that.
pub async fn wait_event(
    files: &impl OperatorFiles,
    limit: Duration,
    pred: impl Fn(&Event) -> bool,
) -> Event {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(e) = files.events().into_iter().find(|e| pred(e)) {
            return e;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "event not seen within {limit:?}\nlog tail:\n{}",
            tail(&files.log(), 40)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for the process to exit, up to `limit`; kills it and fails past that.
pub async fn wait_exit(child: &mut Child, limit: Duration, files: &impl OperatorFiles) -> i32 {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "operator still running after {limit:?}\nevents: {:#?}\nlog tail:\n{}",
                files.events(),
                tail(&files.log(), 40)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for the exit and checks its code, showing the events and the log when it differs.
pub async fn expect_exit(child: &mut Child, code: i32, files: &impl OperatorFiles) {
    let got = wait_exit(child, Duration::from_secs(120), files).await;
    assert_eq!(
        got,
        code,
        "operator exit code\nevents: {:#?}\nlog tail:\n{}",
        files.events(),
        tail(&files.log(), 60)
    );
}

/// Every node of the swarm, as the planner sees it.
pub async fn node_views(swarm: &Swarm) -> Vec<NodeView> {
    swarm
        .nodes()
        .await
        .unwrap()
        .iter()
        .map(|n| NodeView::from_engine(n).unwrap())
        .collect()
}

/// The operator as `run` starts it, in this process, on `spec`: the base URL of its `/status`
/// and `/metrics`, and its loop (abort it to stop).
pub async fn run_in_process(
    swarm: Swarm,
    spec: PathBuf,
) -> (
    String,
    tokio::task::JoinHandle<swarm_upgrade::reconciler::Outcome>,
) {
    use swarm_upgrade::operator::{Config, Operator};
    let operator = Operator::start(
        swarm,
        Config {
            spec,
            spec_reread: Duration::from_secs(60),
            events: None,
            listen: "127.0.0.1:0".parse().unwrap(),
            options: Default::default(),
        },
    )
    .await
    .unwrap();
    let base = format!("http://{}", operator.listen);
    (base, tokio::spawn(operator.run()))
}
