//! Scale benchmark of `swarm-sim serve` in its own process: a fleet of N nodes with T running
//! tasks a node (`--nodes N --tasks-per-node T`), measured from outside.
//!
//! Prints the time to converge, the idle CPU share of one core (from `/proc/PID/stat` over a
//! window in which nobody calls the API), the resident memory, and the latency of full
//! `GET /tasks`, filtered `GET /tasks` and `GET /nodes` answers.
//!
//! `cargo bench -p swarm-sim --bench scale`; environment: `SIM_NODES` (1000),
//! `SIM_TASKS_PER_NODE` (30), `SIM_TIME_SCALE` (1), `SIM_IDLE_SECS` (30), `SIM_ROUNDS` (10),
//! `SIM_HISTORY` (1; 0 = no shut-down tasks of history).

use std::process::Stdio;
use std::time::Duration;

use tokio::time::Instant;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

fn env(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// `GET path` of `addr`: the status and the whole body.
async fn get(addr: &str, path: &str) -> (u16, Vec<u8>) {
    let answer = swarm_sim::client::request(addr, "GET", path, None)
        .await
        .expect("answer");
    (answer.status, answer.body)
}

/// Milliseconds of `rounds` calls of `path`, after checking each answers 200; and the size.
async fn time_calls(addr: &str, path: &str, rounds: usize) -> (Vec<f64>, usize) {
    let mut ms = vec![];
    let mut bytes = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        let (status, body) = get(addr, path).await;
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        bytes = body.len();
    }
    (ms, bytes)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: u32, ticks_per_sec: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // Fields after the `(comm)`; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().expect("utime") + f[12].parse::<f64>().expect("stime");
    ticks / ticks_per_sec
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS");
    kb / 1024.0
}

fn clock_ticks() -> f64 {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf CLK_TCK");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a number of ticks")
}

/// (running, desired) over all services, from `GET /services?status=true`.
async fn service_counts(addr: &str) -> (u64, u64) {
    let (_, body) = get(addr, "/v1.41/services?status=true").await;
    let v: Value = serde_json::from_slice(&body).expect("services JSON");
    v.as_array()
        .expect("a list")
        .iter()
        .fold((0, 0), |(r, d), s| {
            let st = &s["ServiceStatus"];
            (
                r + st["RunningTasks"].as_u64().unwrap_or(0),
                d + st["DesiredTasks"].as_u64().unwrap_or(0),
            )
        })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let nodes = env("SIM_NODES", 1000);
    let per_node = env("SIM_TASKS_PER_NODE", 30);
    let scale = env("SIM_TIME_SCALE", 1);
    let idle_secs = env("SIM_IDLE_SECS", 30);
    let rounds = env("SIM_ROUNDS", 10);
    let t0 = Instant::now();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_swarm-sim"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(["--nodes", &nodes.to_string()])
        .args(["--tasks-per-node", &per_node.to_string()])
        .args(["--time-scale", &scale.to_string()])
        .args((env("SIM_HISTORY", 1) == 0).then_some("--no-task-history"))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("swarm-sim serve starts");
    let pid = child.id().expect("a pid");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next_line().await.expect("stdout").expect("a line");
    let control = first
        .strip_prefix("control http://")
        .expect("`control http://ADDR` first")
        .to_string();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let started = t0.elapsed();
    let (running, desired) = loop {
        let (r, d) = service_counts(&control).await;
        if r >= d && d > 0 {
            break (r, d);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(900),
            "did not converge: {r}/{d}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let converged = t0.elapsed();
    let (_, state) = get(&control, "/_sim/state").await;
    let state: Value = serde_json::from_slice(&state).expect("state JSON");
    // Let the last convergence work settle before the idle window.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let ticks = clock_ticks();
    let cpu0 = cpu_secs(pid, ticks);
    let w0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(idle_secs as u64)).await;
    let idle_cpu = cpu_secs(pid, ticks) - cpu0;
    let idle_wall = w0.elapsed().as_secs_f64();
    let rss = rss_mb(pid);

    let (mut tasks_ms, tasks_bytes) = time_calls(&control, "/v1.41/tasks", rounds).await;
    let mid = format!("n{}", nodes / 2);
    let node_filter = format!("/v1.41/tasks?filters=%7B%22node%22%3A%5B%22{mid}%22%5D%7D");
    let (mut filtered_ms, _) = time_calls(&control, &node_filter, rounds).await;
    let (mut nodes_ms, nodes_bytes) = time_calls(&control, "/v1.41/nodes", rounds).await;
    let rss_after = rss_mb(pid);
    child.kill().await.expect("stopping swarm-sim");

    println!("swarm-sim scale benchmark (swarm-sim serve in its own process)");
    println!(
        "  fleet: {nodes} nodes, {per_node} tasks/node, time scale {scale}: {running}/{desired} running, {} tasks in the store",
        state["tasks"]
    );
    println!(
        "  started in {:.1} s, converged after {:.1} s",
        started.as_secs_f64(),
        converged.as_secs_f64()
    );
    println!(
        "  idle: {:.2} CPU s over {idle_wall:.1} s = {:.1} % of a core; RSS {rss:.0} MB",
        idle_cpu,
        100.0 * idle_cpu / idle_wall
    );
    println!(
        "  GET /tasks (full, {:.1} MB): p50 {:.1} ms, max {:.1} ms ({rounds} calls)",
        tasks_bytes as f64 / 1e6,
        pct(&mut tasks_ms, 0.5),
        pct(&mut tasks_ms, 1.0)
    );
    println!(
        "  GET /tasks?filters={{\"node\":[\"{mid}\"]}}: p50 {:.1} ms",
        pct(&mut filtered_ms, 0.5)
    );
    println!(
        "  GET /nodes ({:.2} MB): p50 {:.1} ms, max {:.1} ms",
        nodes_bytes as f64 / 1e6,
        pct(&mut nodes_ms, 0.5),
        pct(&mut nodes_ms, 1.0)
    );
    println!("  RSS after the calls: {rss_after:.0} MB");
}
