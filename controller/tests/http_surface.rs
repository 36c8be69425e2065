//! The operator's HTTP surface (`/metrics`, `/status`, `/healthz`): read-only, bounded, and
//! indifferent to garbage, slow clients and many scrapers, while a rollout runs. The operator
//! runs as its own process; the figures printed are its reconcile passes with and without the
//! scrape load.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use swarm_sim::SimConfig;
use swarm_upgrade::http_client::HttpClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;
use common::operator_process::{OperatorFiles, free_listen, node_views, tail};
use common::sim_lab::{BIN, SimLab, TARGET};

/// The operator's header timeout (`HEADER_READ_TIMEOUT`), as a client sees it.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// The shared simulated-swarm lab, with the operator started the way these figures need it.
struct Lab(SimLab);

impl std::ops::Deref for Lab {
    type Target = SimLab;
    fn deref(&self) -> &SimLab {
        &self.0
    }
}

impl Lab {
    async fn start() -> Self {
        Lab(SimLab::start(SimConfig {
            time_scale: 20.0,
            ..SimConfig::default()
        })
        .await)
    }

    /// Starts the operator (its own process) on a rollout to `TARGET`; returns it and its
    /// base URL once `/healthz` answers.
    async fn operator(&self) -> (Child, String) {
        let url = self.sim.control_url();
        let spec = self.path("spec.yaml");
        std::fs::write(
            &spec,
            format!(
                r#"apiVersion: swarm-upgrade.io/v1alpha1
kind: EngineUpgrade
metadata:
  name: http-surface
spec:
  version: "{TARGET}"
  upgrade:
    command: ["{BIN}", "demo", "upgrade-node", "--sim", "{url}", "{{hostname}}", "{{version}}"]
    timeout: 60s
  strategy:
    maxUnavailableWorkers: 1
    drainTimeout: 60s
    readyTimeout: 60s
    settle: 200ms
"#
            ),
        )
        .unwrap();
        let listen = free_listen();
        let mut child = Command::new(BIN)
            .arg("run")
            .arg("--spec")
            .arg(&spec)
            .arg("--docker-host")
            .arg(self.sim.manager_endpoints().join(","))
            .arg("--listen")
            .arg(&listen)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.path("operator.log")).unwrap())
            .spawn()
            .expect("operator starts");
        let base = format!("http://{listen}");
        let http = HttpClient::new("test", Duration::from_secs(2));
        for _ in 0..100 {
            if http.get(&format!("{base}/healthz"), "*/*").await.is_ok() {
                return (child, base);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the operator never listened: {}", tail(&self.log(), 20));
    }

    /// Until every node runs the target, is back to its availability and carries no label of
    /// the operator's; the time it took.
    async fn wait_rolled_out(&self, started: Instant) -> Duration {
        loop {
            let nodes = node_views(&self.swarm).await;
            let done = nodes.iter().all(|n| {
                n.engine_version.starts_with(TARGET)
                    && n.labels.keys().all(|k| !k.starts_with("swarm-upgrade."))
            });
            if done {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(240),
                "the rollout did not finish: {nodes:#?}\n{}",
                tail(&self.log(), 40)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// `(count, sum)` of the operator's reconcile passes, from its `/metrics`.
async fn passes(base: &str) -> (f64, f64) {
    let http = HttpClient::new("test", Duration::from_secs(5));
    let text = http
        .get(&format!("{base}/metrics"), "*/*")
        .await
        .unwrap()
        .text();
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} not in /metrics"))
    };
    (
        value("swarm_upgrade_reconcile_duration_seconds_count"),
        value("swarm_upgrade_reconcile_duration_seconds_sum"),
    )
}

/// Sends `bytes` on a fresh connection and returns what came back before the server closed it
/// or `limit` passed, and whether it closed.
async fn exchange(addr: &str, bytes: &[u8], limit: Duration) -> (Vec<u8>, bool) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server may close before it has read everything (a head too large): that is fine.
    let _ = stream.write_all(bytes).await;
    let mut got = Vec::new();
    let closed = tokio::time::timeout(limit, stream.read_to_end(&mut got))
        .await
        .is_ok();
    (got, closed)
}

/// What came back to `bytes` (see [`exchange`]).
async fn raw(addr: &str, bytes: &[u8], limit: Duration) -> Vec<u8> {
    exchange(addr, bytes, limit).await.0
}

fn status_of(answer: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(answer);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// The operator's address, from its base URL.
fn addr(base: &str) -> &str {
    base.strip_prefix("http://").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoints_are_read_only_and_refuse_garbage() {
    let lab = Lab::start().await;
    let (mut op, base) = lab.operator().await;
    let addr = addr(&base);
    let quick = Duration::from_secs(3);
    for path in ["/metrics", "/status", "/healthz"] {
        let get = raw(
            addr,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            quick,
        )
        .await;
        assert_eq!(status_of(&get), Some(200), "GET {path}");
        let head = raw(
            addr,
            format!("HEAD {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            quick,
        )
        .await;
        assert_eq!(status_of(&head), Some(200), "HEAD {path}");
        for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
            let got = raw(
                addr,
                format!("{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}").as_bytes(),
                quick,
            )
            .await;
            assert_eq!(
                status_of(&got),
                Some(405),
                "{method} {path}: {}",
                String::from_utf8_lossy(&got)
            );
        }
    }
    // A body announced as 10 GB on a read-only route: refused without reading it.
    let started = Instant::now();
    let got = raw(
        addr,
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\nabc",
        quick,
    )
    .await;
    assert_eq!(status_of(&got), Some(405));
    println!("POST with a 10 GB body: 405 in {:?}", started.elapsed());

    // A request head of 1 MiB: refused, not buffered.
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let got = raw(addr, huge.as_bytes(), quick).await;
    assert_eq!(
        status_of(&got),
        Some(431),
        "{}",
        String::from_utf8_lossy(&got)
    );
    let many = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\n{}\r\n",
        "X-A: b\r\n".repeat(20_000)
    );
    let got = raw(addr, many.as_bytes(), quick).await;
    assert!(
        matches!(status_of(&got), Some(431) | Some(400)),
        "{}",
        String::from_utf8_lossy(&got)
    );

    // Garbage: a bad request or a closed connection, at the latest after the header timeout
    // (blank lines before a request are allowed, so "\r\n\r\n" waits for one).
    let garbage: [&[u8]; 6] = [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"GET /metrics HTTP/9.9\r\n\r\n",
        b"GET \xff\xfe HTTP/1.1\r\n\r\n",
        b"\r\n\r\n\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    ];
    for bytes in garbage {
        let (got, closed) = exchange(addr, bytes, HEADER_TIMEOUT * 2).await;
        assert!(
            closed,
            "{:?} hung the connection",
            String::from_utf8_lossy(bytes)
        );
        assert!(
            matches!(status_of(&got), None | Some(400) | Some(404) | Some(505)),
            "{:?}: {}",
            String::from_utf8_lossy(bytes),
            String::from_utf8_lossy(&got)
        );
    }
    // Random bytes, many connections.
    let mut rng = StdRng::seed_from_u64(0x9e37_79b9_7f4a_7c15);
    for _ in 0..200 {
        let mut bytes = [0u8; 256];
        rng.fill(&mut bytes[..]);
        raw(addr, &bytes, Duration::from_millis(500)).await;
    }

    // Slowloris: half a request line, held open. Each is dropped by the operator once the
    // header timeout passes; a real scrape meanwhile is served at once.
    let mut slow = Vec::new();
    for _ in 0..40 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metr").await.unwrap();
        slow.push(s);
    }
    let http = HttpClient::new("test", Duration::from_secs(2));
    let started = Instant::now();
    let r = http.get(&format!("{base}/metrics"), "*/*").await.unwrap();
    assert_eq!(r.status, 200);
    println!(
        "a scrape beside 40 slowloris connections: {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    for mut s in slow {
        let mut buf = Vec::new();
        let closed = tokio::time::timeout(HEADER_TIMEOUT * 3, s.read_to_end(&mut buf)).await;
        assert!(
            closed.is_ok(),
            "a slowloris connection was kept past {:?}",
            HEADER_TIMEOUT * 3
        );
    }
    println!(
        "40 slowloris connections all closed by the operator after {:?}",
        started.elapsed()
    );

    assert!(
        op.try_wait().unwrap().is_none(),
        "the operator died: {}",
        tail(&lab.log(), 30)
    );
    assert_eq!(
        http.get(&format!("{base}/healthz"), "*/*")
            .await
            .unwrap()
            .status,
        200
    );
    op.kill().unwrap();
    let _ = op.wait();
    assert!(!lab.log().contains("panicked"), "{}", tail(&lab.log(), 30));
}

/// Scrapers and garbage on a thread and runtime of their own (so that they do not take the
/// workers of the simulator, which shares this process), until `stop`:
/// (scrapes answered, scrapes failed, garbage connections).
fn load_thread(
    base: &str,
    scrapers: usize,
    aim: Aim,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(u64, u64, u64)> {
    let operator = base.to_string();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let base = match aim {
                Aim::Operator => operator,
                Aim::Elsewhere => stand_in(&operator).await,
            };
            let sent = Arc::new(AtomicU64::new(0));
            let garbage = garbage_load(addr(&base), stop.clone(), sent.clone());
            let (mut ok, mut failed) = (0, 0);
            for task in scrape_load(&base, scrapers, stop) {
                let (o, f) = task.await.unwrap();
                ok += o;
                failed += f;
            }
            garbage.await.unwrap();
            (ok, failed, sent.load(Ordering::Relaxed))
        })
    })
}

/// Where the scrape load goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Aim {
    Operator,
    /// A stand-in server on the load's own thread, serving the operator's pages as they are
    /// now: the same load on the machine, none on the operator (the control).
    Elsewhere,
}

/// Serves `/metrics` and `/status` as the operator at `base` answers them now; its base URL.
async fn stand_in(base: &str) -> String {
    let http = HttpClient::new("test", Duration::from_secs(5));
    let metrics = http
        .get(&format!("{base}/metrics"), "*/*")
        .await
        .unwrap()
        .text();
    let status = http
        .get(&format!("{base}/status"), "*/*")
        .await
        .unwrap()
        .text();
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || async move { metrics }),
        )
        .route("/status", axum::routing::get(move || async move { status }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{local}")
}

/// Scrapers hammering `/metrics` and `/status` until `stop`; (scrapes, failures).
fn scrape_load(
    base: &str,
    scrapers: usize,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<(u64, u64)>> {
    (0..scrapers)
        .map(|i| {
            let base = base.to_string();
            let stop = stop.clone();
            tokio::spawn(async move {
                let http = HttpClient::new("scraper", Duration::from_secs(10));
                let (mut ok, mut failed) = (0, 0);
                let path = if i % 2 == 0 { "/metrics" } else { "/status" };
                while !stop.load(Ordering::Relaxed) {
                    match http.get(&format!("{base}{path}"), "*/*").await {
                        Ok(r) if r.status == 200 && !r.body.is_empty() => ok += 1,
                        _ => failed += 1,
                    }
                }
                (ok, failed)
            })
        })
        .collect()
}

/// Garbage and slowloris connections, one every few milliseconds, until `stop`.
fn garbage_load(
    addr: &str,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    let addr = addr.to_string();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            if let Ok(mut s) = TcpStream::connect(&addr).await {
                let _ = s.write_all(b"GET /status HTTP/1.1\r\nX-Slow: ").await;
                held.push(s);
            }
            raw(
                &addr,
                b"\x00\x01garbage\r\n\r\n",
                Duration::from_millis(200),
            )
            .await;
            sent.fetch_add(2, Ordering::Relaxed);
            held.truncate(32);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

async fn rollout(scrapers: usize, aim: Aim) -> (Duration, f64, f64, u64, u64, u64) {
    let lab = Lab::start().await;
    let (mut op, base) = lab.operator().await;
    let (count0, sum0) = passes(&base).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = (scrapers > 0).then(|| load_thread(&base, scrapers, aim, stop.clone()));
    let took = lab.wait_rolled_out(Instant::now()).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, sent) = load.map_or((0, 0, 0), |l| l.join().unwrap());
    let (count1, sum1) = passes(&base).await;
    assert!(
        op.try_wait().unwrap().is_none(),
        "the operator died: {}",
        tail(&lab.log(), 30)
    );
    op.kill().unwrap();
    let _ = op.wait();
    assert!(!lab.log().contains("panicked"), "{}", tail(&lab.log(), 30));
    let (count, sum) = (count1 - count0, sum1 - sum0);
    (took, count, sum, ok, failed, sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_scrapes_during_a_rollout_do_not_slow_the_loop() {
    let (took, count, sum, ..) = rollout(0, Aim::Operator).await;
    println!(
        "no scrape load:  rollout {took:?}, {count} passes, mean pass {:.1} ms",
        sum / count * 1000.0
    );
    let quiet_mean = sum / count;
    let scrapers = 32;
    let mut under_load = 0.0;
    for aim in [Aim::Elsewhere, Aim::Operator] {
        let (took, count, sum, ok, failed, garbage) = rollout(scrapers, aim).await;
        println!(
            "{scrapers} scrapers on {aim:?}: rollout {took:?}, {count} passes, mean pass {:.1} ms; {ok} scrapes answered, {failed} failed, {garbage} garbage/slowloris connections beside them",
            sum / count * 1000.0
        );
        assert_eq!(failed, 0, "scrapes of {aim:?} failed");
        assert!(ok > 100, "only {ok} scrapes of {aim:?} answered");
        under_load = sum / count;
    }
    // Timing on a shared 2-core machine is noisy: only a collapse fails.
    assert!(
        under_load < quiet_mean * 20.0 + 1.0,
        "the loop's passes went from {quiet_mean:.3}s to {under_load:.3}s under scrape load"
    );
}
