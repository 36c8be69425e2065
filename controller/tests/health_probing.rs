//! The operator's own probes (ProbeRunner) on 127.0.0.1 listeners, and the Prometheus gate's
//! query against a tiny local HTTP server.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use swarm_upgrade::health::ProbeMetrics;
use swarm_upgrade::health::probing::{ProbeRunner, spawn};
use swarm_upgrade::health::prometheus::{evaluate_gate, query_series_count};
use swarm_upgrade::spec::{ProbeSpec, PrometheusGate, SpecDuration};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn probe(target: &str, interval_ms: u64) -> ProbeSpec {
    ProbeSpec {
        target: target.into(),
        interval: SpecDuration(Duration::from_millis(interval_ms)),
        timeout: SpecDuration(Duration::from_millis(500)),
        expect_status: None,
    }
}

/// A listener that accepts and closes every connection.
async fn accepting() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            drop(s);
        }
    });
    addr.to_string()
}

/// A port nothing listens on.
async fn closed() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr.to_string()
}

/// A server answering every request with `status` and `body`; counts requests and keeps the
/// last request line.
struct Server {
    addr: String,
    requests: Arc<AtomicUsize>,
    last_request: Arc<std::sync::Mutex<String>>,
}

async fn http_server(response: impl Fn() -> String + Send + Sync + 'static) -> Server {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let requests = Arc::new(AtomicUsize::new(0));
    let last_request = Arc::new(std::sync::Mutex::new(String::new()));
    let (r, lr) = (Arc::clone(&requests), Arc::clone(&last_request));
    let response = Arc::new(response);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let (r, lr, response) = (Arc::clone(&r), Arc::clone(&lr), Arc::clone(&response));
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&buf).to_string();
                *lr.lock().unwrap() = text.lines().next().unwrap_or_default().to_string();
                r.fetch_add(1, Ordering::SeqCst);
                let _ = s.write_all(response().as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    Server {
        addr,
        requests,
        last_request,
    }
}

fn reply(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Polls `cond` every 10 ms for up to 5 s.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The error total once any round in flight has finished.
async fn settled_errors(runner: &ProbeRunner) -> u64 {
    tokio::time::sleep(Duration::from_millis(300)).await;
    runner.errors_total()
}

#[tokio::test]
async fn counts_attempts_and_errors_per_target() {
    let mut registry = Registry::with_prefix("swarm_upgrade");
    let metrics = ProbeMetrics::register(&mut registry);
    let up = accepting().await;
    let down = closed().await;
    let runner = spawn(vec![probe(&up, 20), probe(&down, 20)], metrics.clone());
    assert_eq!(runner.probes().len(), 2);

    eventually("3 rounds of each", || {
        metrics.probes(&up) >= 3 && metrics.probes(&down) >= 3
    })
    .await;
    assert_eq!(metrics.errors(&up), 0);
    assert!(metrics.errors(&down) >= 3);
    assert!(runner.errors_total() >= 3);
    assert!(runner.attempts_total() >= 6);
    assert!(runner.rounds_total() >= 6);

    let last = runner.last_outcomes();
    assert_eq!(last.len(), 2);
    assert!(last[0].is_ok(), "{last:?}");
    assert!(!last[1].is_ok());
    assert!(
        last[1].error_details()[0].contains("connect failed"),
        "{last:?}"
    );

    let mut text = String::new();
    encode(&mut text, &registry).unwrap();
    assert!(
        text.contains(&format!(
            "swarm_upgrade_connectivity_errors_total{{target=\"{up}\"}} 0"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "swarm_upgrade_connectivity_probes_total{{target=\"{down}\"}}"
        )),
        "{text}"
    );
}

#[tokio::test]
async fn errors_total_is_monotonic_and_a_step_reads_it_by_difference() {
    let down = closed().await;
    let runner = spawn(vec![probe(&down, 20)], ProbeMetrics::default());
    eventually("a first error", || runner.errors_total() >= 1).await;
    let at_step_start = runner.errors_total();
    let mut prev = at_step_start;
    for _ in 0..5 {
        eventually("another error", || runner.errors_total() > prev).await;
        let now = runner.errors_total();
        assert!(now > prev);
        prev = now;
    }
    assert!(runner.errors_total() - at_step_start >= 5);
}

#[tokio::test]
async fn a_healthy_target_counts_no_errors() {
    let up = accepting().await;
    let runner = spawn(vec![probe(&up, 10)], ProbeMetrics::default());
    eventually("5 rounds", || runner.rounds_total() >= 5).await;
    assert_eq!(runner.errors_total(), 0);
    assert_eq!(runner.attempts_total(), runner.rounds_total());
}

#[tokio::test]
async fn update_restarts_on_change_and_keeps_the_counters() {
    let metrics = ProbeMetrics::default();
    let up = accepting().await;
    let down = closed().await;
    let mut runner = spawn(vec![probe(&down, 20)], metrics.clone());
    eventually("errors", || runner.errors_total() >= 2).await;

    // The same probes: kept running as they are.
    runner.update(vec![probe(&down, 20)]);
    assert_eq!(runner.probes(), [probe(&down, 20)]);

    // Switch to the healthy target: errors stop growing, but are not reset.
    runner.update(vec![probe(&up, 20)]);
    let errors = settled_errors(&runner).await;
    assert!(errors >= 2);
    let probes_up = metrics.probes(&up);
    assert!(probes_up >= 1);
    let down_probes = metrics.probes(&down);
    eventually("more rounds of up", || metrics.probes(&up) >= probes_up + 3).await;
    assert_eq!(runner.errors_total(), errors);
    assert_eq!(
        metrics.probes(&down),
        down_probes,
        "the old target still probed"
    );
    assert_eq!(runner.last_outcomes().len(), 1);
    assert!(runner.last_outcomes()[0].is_ok());

    // Back to none.
    runner.update(Vec::new());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let frozen = metrics.probes(&up);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(metrics.probes(&up), frozen);
    assert!(runner.last_outcomes().is_empty());
}

#[tokio::test]
async fn dropping_the_runner_stops_probing() {
    let metrics = ProbeMetrics::default();
    let down = closed().await;
    let runner = spawn(vec![probe(&down, 10)], metrics.clone());
    eventually("rounds", || metrics.probes(&down) >= 2).await;
    drop(runner);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let n = metrics.probes(&down);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(metrics.probes(&down), n);
}

#[tokio::test]
async fn http_probes_expect_the_status() {
    let metrics = ProbeMetrics::default();
    let ok = http_server(|| reply("200 OK", "ok")).await;
    let teapot = http_server(|| reply("418 I'm a teapot", "")).await;
    let want_ok = format!("http://{}/healthz", ok.addr);
    let want_teapot = format!("http://{}/", teapot.addr);
    let wrong = format!("http://{}/other", ok.addr);
    let mut teapot_probe = probe(&want_teapot, 20);
    teapot_probe.expect_status = Some(418);
    let mut wrong_probe = probe(&wrong, 20);
    wrong_probe.expect_status = Some(204);
    let runner = spawn(
        vec![probe(&want_ok, 20), teapot_probe, wrong_probe],
        metrics.clone(),
    );
    eventually("rounds", || {
        metrics.probes(&want_ok) >= 2
            && metrics.probes(&want_teapot) >= 2
            && metrics.probes(&wrong) >= 2
    })
    .await;
    assert_eq!(metrics.errors(&want_ok), 0);
    assert_eq!(metrics.errors(&want_teapot), 0);
    assert!(metrics.errors(&wrong) >= 2);
    assert!(ok.requests.load(Ordering::SeqCst) >= 4);
    assert!(teapot.requests.load(Ordering::SeqCst) >= 2);
    let outcomes = runner.last_outcomes();
    assert!(
        outcomes[2].error_details()[0].contains("HTTP status 200, expected 204"),
        "{outcomes:?}"
    );
}

#[tokio::test]
async fn an_unparseable_target_is_skipped() {
    let up = accepting().await;
    let runner = spawn(
        vec![probe("no-port", 10), probe(&up, 10)],
        ProbeMetrics::default(),
    );
    eventually("rounds", || runner.rounds_total() >= 3).await;
    assert_eq!(runner.errors_total(), 0);
    assert_eq!(runner.last_outcomes().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Prometheus

const EMPTY: &str = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
const TWO: &str = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"ALERTS","alertname":"NodeDown","alertstate":"firing","severity":"critical"},"value":[1764057171.123,"1"]},{"metric":{"__name__":"ALERTS","alertname":"DiskFull","alertstate":"firing","severity":"critical"},"value":[1764057171.123,"1"]}]}}"#;
const QUERY: &str = r#"ALERTS{alertstate="firing",severity="critical"}"#;
const T: Duration = Duration::from_secs(2);

#[tokio::test]
async fn prometheus_counts_series() {
    let empty = http_server(|| reply("200 OK", EMPTY)).await;
    let two = http_server(|| reply("200 OK", TWO)).await;
    assert_eq!(
        query_series_count(&format!("http://{}", empty.addr), QUERY, T)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        query_series_count(&format!("http://{}/", two.addr), QUERY, T)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        *two.last_request.lock().unwrap(),
        "GET /api/v1/query?query=ALERTS%7Balertstate%3D%22firing%22%2Cseverity%3D%22critical%22%7D HTTP/1.1"
    );
    // Behind a path prefix.
    query_series_count(&format!("http://{}/prom/", empty.addr), "up", T)
        .await
        .unwrap();
    assert_eq!(
        *empty.last_request.lock().unwrap(),
        "GET /prom/api/v1/query?query=up HTTP/1.1"
    );
    // Through the spec's gate.
    let gate = PrometheusGate {
        url: format!("http://{}", two.addr),
        query: QUERY.into(),
        timeout: SpecDuration::from_secs(2),
    };
    assert_eq!(evaluate_gate(&gate).await.unwrap(), 2);
}

#[tokio::test]
async fn prometheus_reads_chunked_responses() {
    let server = http_server(|| {
        let (a, b) = TWO.split_at(40);
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
            a.len(),
            b.len()
        )
    })
    .await;
    assert_eq!(
        query_series_count(&format!("http://{}", server.addr), QUERY, T)
            .await
            .unwrap(),
        2
    );
}

#[tokio::test]
async fn prometheus_errors_say_what_happened() {
    let url = |s: &Server| format!("http://{}", s.addr);
    let e500 = http_server(|| reply("500 Internal Server Error", "boom")).await;
    let e = query_series_count(&url(&e500), QUERY, T)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("answered HTTP 500: boom"), "{e}");

    let bad_query = http_server(|| {
        reply(
            "400 Bad Request",
            r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:7: parse error"}"#,
        )
    })
    .await;
    let e = query_series_count(&url(&bad_query), "ALERTS{", T)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("HTTP 400: bad_data: invalid parameter"), "{e}");

    let scalar = http_server(|| {
        reply(
            "200 OK",
            r#"{"status":"success","data":{"resultType":"scalar","result":[1764057171.1,"1"]}}"#,
        )
    })
    .await;
    let e = query_series_count(&url(&scalar), "1", T)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("returns a scalar, not series"), "{e}");

    let not_json = http_server(|| reply("200 OK", "<html>")).await;
    let e = query_series_count(&url(&not_json), QUERY, T)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid JSON"), "{e}");

    let down = closed().await;
    let e = query_series_count(&format!("http://{down}"), QUERY, T)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot connect"), "{e}");

    let e = query_series_count("https://p:9090", QUERY, T)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("https is not"), "{e}");

    // A server that never answers: the timeout.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = l.local_addr().unwrap();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    let e = query_series_count(
        &format!("http://{silent}"),
        QUERY,
        Duration::from_millis(200),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("timed out after 200ms"), "{e}");
}
