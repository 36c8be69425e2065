//! Scale benchmark: 1,000 nodes and 30,000 tasks in memory; full `/tasks` over HTTP.
//!
//! `cargo bench -p swarm-sim --bench scale` (env `SIM_NODES`, `SIM_TASKS`, `SIM_ROUNDS`,
//! `SIM_TIME_SCALE`).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use swarm_sim::state::{Mode, ServiceDef, TState};
use swarm_sim::{SimConfig, SimHandle, Stack};

fn env(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

async fn get(addr: &str, path: &str) -> (u16, usize) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut s, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .uri(path)
        .header("host", "docker")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = s.send_request(req).await.unwrap();
    let st = r.status().as_u16();
    let b = r.into_body().collect().await.unwrap().to_bytes();
    (st, b.len())
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let nodes = env("SIM_NODES", 1000);
    let tasks = env("SIM_TASKS", 30_000);
    let rounds = env("SIM_ROUNDS", 20);
    let per_service = 1000.min(tasks).max(1);
    let t0 = tokio::time::Instant::now();
    let h = SimHandle::start(SimConfig {
        managers: 3,
        workers: nodes - 3,
        time_scale: env("SIM_TIME_SCALE", 50) as f64,
        stack: Stack::None,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    h.sim()
        .with(|c, now| {
            c.create_network("big", "10.128.0.0/14", false, now)?;
            let mut made = 0;
            let mut i = 0;
            while made < tasks {
                let n = per_service.min(tasks - made);
                let mut d = ServiceDef::replicated(&format!("svc{i}"), n as u64, &["big"]);
                d.mode = Mode::Replicated(n as u64);
                c.create_service(&d, now)?;
                made += n;
                i += 1;
            }
            Ok::<_, swarm_sim::ApiError>(())
        })
        .unwrap();
    let setup = t0.elapsed();
    loop {
        let running = h.sim().with(|c, _| {
            c.tasks
                .values()
                .filter(|t| t.state == TState::Running)
                .count()
        });
        if running >= tasks {
            break;
        }
        if t0.elapsed() > Duration::from_secs(600) {
            panic!("did not converge: {running}/{tasks}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let converge = t0.elapsed();
    let ep = h.manager_endpoints()[0]
        .trim_start_matches("tcp://")
        .to_string();

    // Full list, state unchanged between calls (snapshot reused).
    let mut ms = vec![];
    let mut bytes = 0;
    for _ in 0..rounds {
        let t = tokio::time::Instant::now();
        let (s, b) = get(&ep, "/v1.41/tasks").await;
        assert_eq!(s, 200);
        bytes = b;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    // Full list right after a change (snapshot rebuilt, changed tasks re-rendered).
    let mut ms_changed = vec![];
    for i in 0..rounds {
        let host = format!("n{}", 4 + i % (nodes - 3));
        h.sim().with(|c, now| {
            let idx = c.find_node(&host).unwrap();
            let v = c.nodes[idx].version;
            let _ = c.update_node(
                &host,
                v,
                swarm_sim::state::SpecUpdate::new("worker", "active"),
                now,
            );
        });
        let t = tokio::time::Instant::now();
        let (s, _) = get(&ep, "/v1.41/tasks").await;
        assert_eq!(s, 200);
        ms_changed.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let mut ms_filtered = vec![];
    for i in 0..rounds {
        let f = format!("%7B%22node%22%3A%5B%22n{}%22%5D%7D", 4 + i);
        let t = tokio::time::Instant::now();
        let (s, _) = get(&ep, &format!("/v1.41/tasks?filters={f}")).await;
        assert_eq!(s, 200);
        ms_filtered.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let t = tokio::time::Instant::now();
    let (_, node_bytes) = get(&ep, "/v1.41/nodes").await;
    let nodes_ms = t.elapsed().as_secs_f64() * 1000.0;
    let n_tasks = h.sim().with(|c, _| c.tasks.len());
    println!("swarm-sim scale benchmark");
    println!(
        "  nodes: {nodes}, tasks in store: {n_tasks} ({tasks} running), services: {}",
        tasks.div_ceil(per_service)
    );
    println!(
        "  setup: {:.2} s, converged (all running) after {:.2} s",
        setup.as_secs_f64(),
        converge.as_secs_f64()
    );
    println!(
        "  GET /tasks (full list): {bytes} bytes ({:.1} MB)",
        bytes as f64 / 1e6
    );
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!(
        "    unchanged state: mean {:.1} ms, p50 {:.1} ms, p99 {:.1} ms ({rounds} rounds)",
        mean(&ms),
        pct(&mut ms, 0.5),
        pct(&mut ms, 0.99)
    );
    println!(
        "    after a change:  mean {:.1} ms, p50 {:.1} ms, p99 {:.1} ms",
        mean(&ms_changed),
        pct(&mut ms_changed, 0.5),
        pct(&mut ms_changed, 0.99)
    );
    println!(
        "  GET /tasks?filters=node: p50 {:.1} ms, p99 {:.1} ms",
        pct(&mut ms_filtered, 0.5),
        pct(&mut ms_filtered, 0.99)
    );
    println!("  GET /nodes: {node_bytes} bytes in {nodes_ms:.1} ms");
    h.shutdown().await;
}
