//! The operator at scale against a simulated swarm of 1,000 nodes and 30,000 tasks: the first
//! full listing into the observation store, then reconcile passes as the loop makes them (the
//! reflector's incremental refresh with one node in flight, rejection tracking and network
//! usage, plan with drain predictions), with the bytes each pass reads. Prints figures; asserts
//! nothing about time.
//!
//! `cargo bench -p swarm-upgrade --bench reconcile_scale` (env `SIM_NODES`, `SIM_TASKS`, `ROUNDS`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use swarm_sim::state::{Mode, ServiceDef, TState};
use swarm_sim::{SimConfig, SimHandle, Stack};
use swarm_upgrade::docker::{Endpoint, Swarm};
use swarm_upgrade::metrics::Metrics;
use swarm_upgrade::observe::{Cadence, Reflector};
use swarm_upgrade::reconciler::{HealthWatch, plan_with_predictions};
use swarm_upgrade::spec::{parse_spec, spec_hash};

/// The system allocator, counting the bytes live on the heap: what dropping the store frees is
/// the store's own size.
struct Counting;

static LIVE_BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller's layout, as given.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: a pointer this allocator gave, with its layout.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live_mb() -> f64 {
    LIVE_BYTES.load(Ordering::Relaxed) as f64 / 1e6
}

fn env(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn stats(v: &mut [f64]) -> String {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let p = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    format!(
        "mean {mean:7.1} ms  p50 {:7.1} ms  p99 {:7.1} ms",
        p(0.5),
        p(0.99)
    )
}

/// Peak resident memory of this process (the simulator runs in it too).
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let nodes = env("SIM_NODES", 1000);
    let tasks = env("SIM_TASKS", 30_000);
    let rounds = env("ROUNDS", 10);
    let sim = SimHandle::start(SimConfig {
        managers: 3,
        workers: nodes - 3,
        time_scale: 50.0,
        stack: Stack::None,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    sim.sim()
        .with(|c, now| {
            c.create_network("big", "10.128.0.0/14", false, now)?;
            let mut made = 0;
            let mut i = 0;
            while made < tasks {
                let n = 1000.min(tasks - made);
                let mut d = ServiceDef::replicated(&format!("svc{i}"), n as u64, &["big"]);
                d.mode = Mode::Replicated(n as u64);
                c.create_service(&d, now)?;
                made += n;
                i += 1;
            }
            Ok::<_, swarm_sim::ApiError>(())
        })
        .unwrap();
    let t0 = tokio::time::Instant::now();
    loop {
        let running = sim.sim().with(|c, _| {
            c.tasks
                .values()
                .filter(|t| t.state == TState::Running)
                .count()
        });
        if running >= tasks {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "sim did not converge"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss_before = peak_rss_mb();

    let endpoints = sim
        .manager_endpoints()
        .iter()
        .map(|e| Endpoint::parse(e, None).unwrap())
        .collect();
    let metrics = Metrics::new();
    let cost = metrics.docker_api.clone();
    let bytes = Arc::new(AtomicU64::new(0));
    let counted = bytes.clone();
    let swarm = Swarm::new(endpoints)
        .with_patience(Duration::from_secs(60))
        .with_request_hook(Arc::new(move |call, n| {
            cost.record(call, n);
            counted.fetch_add(n, Ordering::Relaxed);
        }));
    let spec = parse_spec(
        "apiVersion: swarm-upgrade.io/v1alpha1\nkind: EngineUpgrade\nmetadata: {name: bench}\nspec:\n  version: \"26.1.5\"\n  upgrade:\n    command: [\"/bin/true\"]\n",
        std::path::Path::new("bench.yaml"),
    )
    .unwrap();
    let hash = spec_hash(&spec.spec);
    let mut health = HealthWatch::new(&metrics);

    let t = tokio::time::Instant::now();
    let mut reflector = Reflector::start(swarm.clone(), Cadence::default(), Arc::default());
    reflector.refresh(&BTreeSet::new()).await.unwrap();
    let full_ms = t.elapsed().as_secs_f64() * 1000.0;
    let full_bytes = bytes.swap(0, Ordering::Relaxed);
    let rss_listed = peak_rss_mb();
    // One worker in flight, as while it drains.
    let in_flight: BTreeSet<String> = reflector
        .store()
        .nodes()
        .find(|n| !n.is_leader() && n.spec.role == "worker")
        .map(|n| n.id.clone())
        .into_iter()
        .collect();

    let (mut observe_ms, mut health_ms, mut plan_ms, mut pass_bytes) =
        (vec![], vec![], vec![], vec![]);
    let mut actions = 0;
    for _ in 0..rounds {
        let t = tokio::time::Instant::now();
        reflector.refresh(&in_flight).await.unwrap();
        let snapshot = reflector.store().snapshot();
        observe_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        pass_bytes.push(bytes.swap(0, Ordering::Relaxed) as f64 / 1024.0);
        let t = tokio::time::Instant::now();
        health.observe(reflector.store_mut());
        health_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = tokio::time::Instant::now();
        let plan = plan_with_predictions(
            &spec.spec,
            &hash,
            &snapshot,
            reflector.store(),
            &BTreeSet::new(),
            &[],
            &Default::default(),
        );
        plan_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        actions = plan.actions.len();
    }
    println!("swarm-upgrade reconcile pass at scale");
    println!(
        "  cluster: {nodes} nodes, {tasks} running tasks, {} services",
        tasks.div_ceil(1000)
    );
    println!(
        "  first full listing (one service's tasks at a time):     {full_ms:7.1} ms, {:.1} MB read",
        full_bytes as f64 / 1e6
    );
    println!(
        "  refresh (services with counts, one node in flight):     {}",
        stats(&mut observe_ms)
    );
    pass_bytes.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "  bytes read per refresh:                                 mean {:7.1} KiB  max {:7.1} KiB",
        pass_bytes.iter().sum::<f64>() / pass_bytes.len() as f64,
        pass_bytes.last().copied().unwrap_or(0.0)
    );
    println!(
        "  health (rejection tracking, network usage):             {}",
        stats(&mut health_ms)
    );
    println!(
        "  plan with drain predictions ({actions} action(s)):            {}",
        stats(&mut plan_ms)
    );
    println!(
        "  peak RSS (simulator in this process): {:.0} MB loaded, {:.0} MB after the listing, {:.0} MB after {rounds} passes",
        rss_before,
        rss_listed,
        peak_rss_mb()
    );
    // The simulator is idle now (nothing in flight), so what the drop frees is the store's.
    let before_drop = live_mb();
    let store = reflector.into_store();
    let held = store.tasks().count();
    drop(store);
    let store_mb = before_drop - live_mb();
    let before_drop = live_mb();
    drop(health);
    let health_mb = before_drop - live_mb();
    println!(
        "  the observation store's heap: {store_mb:.1} MB for {held} tasks and {nodes} nodes ({:.0} bytes a task, all of it counted against the tasks)",
        store_mb * 1e6 / held.max(1) as f64
    );
    println!("  the health watch's heap (rejections seen, gauges): {health_mb:.1} MB");
    sim.shutdown().await;
}
