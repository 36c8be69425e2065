//! The prober and `swarm-upgrade probe` against real local listeners.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use prometheus_client::registry::Registry;
use swarm_upgrade::http_client::HttpClient;
use swarm_upgrade::probe::ProbeMetrics;
use swarm_upgrade::probe::{ProbeArgs, Prober, Target, log::DATE_FORMAT, run_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A listener that accepts and closes every connection.
async fn accepting() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            drop(s);
        }
    });
    addr
}

/// An address nothing listens on (connections are refused).
async fn refusing() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

/// A minimal HTTP server answering every request with `status`, recording paths.
async fn http_server(status: u16) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 512];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                let _ = tx.send(path);
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                );
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    (addr, rx)
}

/// A listener that accepts and never answers.
async fn silent() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    addr
}

fn metrics() -> ProbeMetrics {
    ProbeMetrics::register(&mut Registry::with_prefix("swarm_upgrade"))
}

#[tokio::test]
async fn tcp_connect_accepting_and_refusing() {
    let m = metrics();
    let prober = Prober::new(Duration::from_secs(2)).with_metrics(m.clone());
    let ok = Target::parse(&accepting().await.to_string()).unwrap();
    let bad = Target::parse(&refusing().await.to_string()).unwrap();

    let out = prober.probe_once(&ok).await;
    assert!(out.is_ok(), "{out:?}");
    assert_eq!((out.attempts(), out.errors()), (1, 0));
    let out = prober.probe_once(&bad).await;
    assert_eq!((out.attempts(), out.errors()), (1, 1));
    let details = out.error_details();
    assert_eq!(details.len(), 1);
    assert!(
        details[0].starts_with(&format!("{bad} ({bad}): connect failed")),
        "{details:?}"
    );
    prober.probe_once(&bad).await;

    assert_eq!((m.probes(ok.as_str()), m.errors(ok.as_str())), (1, 0));
    assert_eq!((m.probes(bad.as_str()), m.errors(bad.as_str())), (2, 2));
}

#[tokio::test]
async fn every_address_of_a_target_is_probed() {
    let prober = Prober::new(Duration::from_secs(2));
    let addrs = [accepting().await, refusing().await, accepting().await];
    let target = Target::parse("tasks.test_service:80").unwrap();
    let out = prober.probe_resolved(&target, &addrs).await;
    assert_eq!((out.attempts(), out.errors()), (3, 1));
    assert_eq!(
        out.error_details()[0].split(": ").next().unwrap(),
        format!("tasks.test_service:80 ({})", addrs[1])
    );
    let none = prober.probe_resolved(&target, &[]).await;
    assert_eq!((none.attempts(), none.errors()), (1, 1));
}

#[tokio::test]
async fn names_resolve_and_unresolvable_names_fail() {
    let m = metrics();
    let prober = Prober::new(Duration::from_secs(5)).with_metrics(m.clone());
    let port = accepting().await.port();
    let t = Target::parse(&format!("localhost:{port}")).unwrap();
    let out = prober.probe_once(&t).await;
    assert!(out.resolve_error.is_none(), "{out:?}");
    assert!(
        out.results
            .iter()
            .any(|r| r.addr.ip().is_loopback() && r.result.is_ok())
    );

    let t = Target::parse("no-such-host.invalid:80").unwrap();
    let out = prober.probe_once(&t).await;
    assert!(out.resolve_error.is_some());
    assert_eq!((out.attempts(), out.errors()), (1, 1));
    assert!(out.error_details()[0].starts_with("no-such-host.invalid:80: "));
    assert_eq!(m.errors("no-such-host.invalid:80"), 1);
}

#[tokio::test]
async fn http_get_200_vs_500_and_expected_status() {
    let m = metrics();
    let prober = Prober::new(Duration::from_secs(2)).with_metrics(m.clone());
    let (ok_addr, mut paths) = http_server(200).await;
    let (bad_addr, _) = http_server(500).await;
    let ok = Target::parse(&format!("http://{ok_addr}/healthz")).unwrap();
    let bad = Target::parse(&format!("http://{bad_addr}/")).unwrap();

    assert!(prober.probe_once(&ok).await.is_ok());
    assert_eq!(paths.recv().await.unwrap(), "/healthz");
    let out = prober.probe_once(&bad).await;
    assert_eq!(out.errors(), 1);
    assert!(
        out.error_details()[0].ends_with("HTTP status 500, expected 200"),
        "{out:?}"
    );

    // Expecting 500 makes the 500 server healthy and the 200 one failing.
    let expect_500 = Prober::new(Duration::from_secs(2)).with_expect_status(500);
    assert!(expect_500.probe_once(&bad).await.is_ok());
    assert_eq!(expect_500.probe_once(&ok).await.errors(), 1);
    // A target's own expectation wins.
    assert!(
        expect_500
            .probe_once(&ok.clone().with_expect_status(200))
            .await
            .is_ok()
    );

    // A TCP server that is not HTTP fails the HTTP probe but passes a TCP one.
    let plain = accepting().await;
    let out = prober
        .probe_once(&Target::parse(&format!("http://{plain}/")).unwrap())
        .await;
    assert_eq!(out.errors(), 1);
    assert_eq!((m.probes(ok.as_str()), m.errors(ok.as_str())), (1, 0));
    assert_eq!((m.probes(bad.as_str()), m.errors(bad.as_str())), (1, 1));
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let addr = silent().await;
    let prober = Prober::new(Duration::from_millis(300));
    let t = Target::parse(&format!("http://{addr}/")).unwrap();
    let out = prober.probe_once(&t).await;
    assert_eq!(out.errors(), 1);
    assert!(
        out.error_details()[0].ends_with("timed out after 300ms"),
        "{out:?}"
    );
}

#[test]
fn the_e2e_command_line_parses() {
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        probe: ProbeArgs,
    }
    let cli = Cli::try_parse_from([
        "probe",
        "--target",
        "tasks.service:80",
        "--interval",
        "200ms",
        "--timeout",
        "1s",
        "--log",
        "/out/client.log",
        "--listen",
        "0.0.0.0:9100",
    ])
    .unwrap();
    let a = cli.probe;
    assert_eq!(a.targets, [Target::parse("tasks.service:80").unwrap()]);
    assert_eq!(a.interval, Duration::from_millis(200));
    assert_eq!(a.timeout, Duration::from_secs(1));
    assert_eq!(a.log.unwrap().to_str(), Some("/out/client.log"));
    assert_eq!(a.listen.unwrap().to_string(), "0.0.0.0:9100");
    assert_eq!(a.expect_status, 200);
    assert_eq!(a.rounds, None);

    let d = Cli::try_parse_from(["probe", "--target", "a:1", "--target", "http://b/x"]).unwrap();
    assert_eq!(d.probe.targets.len(), 2);
    assert_eq!(d.probe.interval, Duration::from_secs(1));
    assert!(Cli::try_parse_from(["probe"]).is_err());
    assert!(Cli::try_parse_from(["probe", "--target", "nohost"]).is_err());
    assert!(Cli::try_parse_from(["probe", "--target", "a:1", "--interval", "0s"]).is_err());
}

async fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// The body of `GET path` on `addr`, which must answer 200.
async fn http_get(addr: SocketAddr, path: &str) -> String {
    let response = HttpClient::new("probe-test", Duration::from_secs(5))
        .get(&format!("http://{addr}{path}"), "*/*")
        .await
        .unwrap();
    assert_eq!(response.status, 200, "GET {path}");
    response.text()
}

fn check_log_line(line: &str) -> &str {
    // "Fri Aug 24 15:49:38 UTC 2018: <message>"
    let (date, message) = line.split_at(28);
    jiff::fmt::strtime::parse(DATE_FORMAT, date)
        .and_then(|p| p.to_datetime())
        .unwrap_or_else(|e| panic!("bad date {date:?} in {line:?}: {e}"));
    message
        .strip_prefix(": ")
        .unwrap_or_else(|| panic!("{line:?}"))
}

#[tokio::test]
async fn the_probe_command_logs_counts_and_serves_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("out/client.log");
    let listen = free_port().await;
    let ok = accepting().await;
    let bad = refusing().await;
    let args = ProbeArgs {
        targets: vec![
            Target::parse(&ok.to_string()).unwrap(),
            Target::parse(&bad.to_string()).unwrap(),
        ],
        interval: Duration::from_millis(50),
        timeout: Duration::from_secs(1),
        log: Some(log.clone()),
        listen: Some(listen),
        expect_status: 200,
        rounds: None,
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run_until(args, async {
        let _ = stop_rx.await;
    }));

    // Wait until at least 3 rounds were counted.
    let metrics = loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let body = match TcpStream::connect(listen).await {
            Ok(_) => http_get(listen, "/metrics").await,
            Err(_) => continue,
        };
        let line = format!("swarm_upgrade_connectivity_errors_total{{target=\"{bad}\"}} ");
        let n: u64 = body
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if n >= 3 {
            break body;
        }
    };
    assert!(http_get(listen, "/healthz").await.ends_with("ok\n"));
    stop_tx.send(()).unwrap();
    task.await.unwrap().unwrap();

    assert!(metrics.contains(&format!(
        "swarm_upgrade_connectivity_errors_total{{target=\"{ok}\"}} 0"
    )));
    assert!(metrics.contains("# TYPE swarm_upgrade_connectivity_probes counter"));
    let probes_ok: u64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!(
                "swarm_upgrade_connectivity_probes_total{{target=\"{ok}\"}} "
            ))
        })
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(probes_ok >= 3);

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(check_log_line(lines[0]), "Starting client service");
    assert_eq!(
        check_log_line(lines[lines.len() - 1]),
        "Stopping client service",
        "the shutdown is logged last"
    );
    let errors: Vec<&str> = lines[1..lines.len() - 1]
        .iter()
        .map(|l| check_log_line(l))
        .collect();
    assert!(errors.len() >= 3, "{text}");
    for e in errors {
        let detail = e.strip_prefix("Connectivity error: ").unwrap();
        assert!(
            detail.starts_with(&format!("{bad} ({bad}): connect failed")),
            "{e}"
        );
    }
    // The metrics server is gone once run returns.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(TcpStream::connect(listen).await.is_err());
}

#[tokio::test]
async fn rounds_bounds_the_run_and_the_log_is_appended() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("client.log");
    let bad = refusing().await;
    let args = ProbeArgs {
        targets: vec![Target::parse(&bad.to_string()).unwrap()],
        interval: Duration::from_millis(10),
        timeout: Duration::from_secs(1),
        log: Some(log.clone()),
        listen: None,
        expect_status: 200,
        rounds: Some(2),
    };
    run_until(args.clone(), std::future::pending())
        .await
        .unwrap();
    run_until(args, std::future::pending()).await.unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let messages: Vec<&str> = text.lines().map(check_log_line).collect();
    assert_eq!(
        messages
            .iter()
            .filter(|m| **m == "Starting client service")
            .count(),
        2
    );
    assert_eq!(
        messages
            .iter()
            .filter(|m| m.starts_with("Connectivity error: "))
            .count(),
        4
    );
    assert!(
        !messages.contains(&"Stopping client service"),
        "runs that end by --rounds are not stopped by a signal"
    );
}
