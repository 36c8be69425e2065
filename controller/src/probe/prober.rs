//! One round of probing a target: resolve, then connect to every address.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

use super::target::{ProbeKind, Target};
use crate::health::ProbeMetrics;

/// Probes targets; the operator's `spec.health.probes` and `swarm-upgrade probe`
/// both use it. Each [`probe_once`](Self::probe_once) is one attempt per resolved
/// address, counted into the [`ProbeMetrics`] given with
/// [`with_metrics`](Self::with_metrics).
#[derive(Debug, Clone)]
pub struct Prober {
    timeout: Duration,
    expect_status: u16,
    metrics: Option<ProbeMetrics>,
}

/// The result of probing one address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddrResult {
    pub addr: SocketAddr,
    /// Time to success, or what went wrong.
    #[serde(serialize_with = "ser_result")]
    pub result: Result<Duration, String>,
}

fn ser_result<S: serde::Serializer>(r: &Result<Duration, String>, s: S) -> Result<S::Ok, S::Error> {
    match r {
        Ok(d) => s.collect_str(&format_args!("ok in {d:?}")),
        Err(e) => s.serialize_str(e),
    }
}

/// The result of one round against one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeOutcome {
    pub target: String,
    /// Set when the name could not be resolved (or resolved to nothing); then
    /// `results` is empty and the round counts as one failed attempt.
    pub resolve_error: Option<String>,
    pub results: Vec<AddrResult>,
}

impl ProbeOutcome {
    /// Attempts made: one per address, or one for a failed resolution.
    pub fn attempts(&self) -> u64 {
        if self.resolve_error.is_some() {
            1
        } else {
            self.results.len() as u64
        }
    }

    /// Failed attempts.
    pub fn errors(&self) -> u64 {
        if self.resolve_error.is_some() {
            1
        } else {
            self.results.iter().filter(|r| r.result.is_err()).count() as u64
        }
    }

    pub fn is_ok(&self) -> bool {
        self.errors() == 0
    }

    /// One line per failure, as logged after `Connectivity error: `.
    pub fn error_details(&self) -> Vec<String> {
        if let Some(e) = &self.resolve_error {
            return vec![format!("{}: {e}", self.target)];
        }
        self.results
            .iter()
            .filter_map(|r| {
                r.result
                    .as_ref()
                    .err()
                    .map(|e| format!("{} ({}): {e}", self.target, r.addr))
            })
            .collect()
    }
}

impl fmt::Display for ProbeOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} of {} attempts failed",
            self.target,
            self.errors(),
            self.attempts()
        )
    }
}

impl Prober {
    /// A prober giving each address `timeout` (connect, and for HTTP the response
    /// head too), expecting HTTP 200 unless a target says otherwise.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            expect_status: 200,
            metrics: None,
        }
    }

    /// The HTTP status expected from targets that do not set their own.
    pub fn with_expect_status(mut self, status: u16) -> Self {
        self.expect_status = status;
        self
    }

    /// Count every attempt and error into these counters.
    pub fn with_metrics(mut self, metrics: ProbeMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Resolves `target` (all addresses: `tasks.<service>` gives every task) and
    /// probes each address concurrently.
    pub async fn probe_once(&self, target: &Target) -> ProbeOutcome {
        let outcome = match self.resolve(target).await {
            Ok(addrs) => self.probe_resolved(target, &addrs).await,
            Err(e) => ProbeOutcome {
                target: target.to_string(),
                resolve_error: Some(e),
                results: Vec::new(),
            },
        };
        if let Some(m) = &self.metrics {
            m.record(target.as_str(), outcome.attempts(), outcome.errors());
        }
        outcome
    }

    /// Probes `addrs` as addresses of `target`, without resolving and without
    /// counting into metrics (for callers that resolve themselves).
    pub async fn probe_resolved(&self, target: &Target, addrs: &[SocketAddr]) -> ProbeOutcome {
        if addrs.is_empty() {
            return ProbeOutcome {
                target: target.to_string(),
                resolve_error: Some(format!("{} resolved to no address", target.host)),
                results: Vec::new(),
            };
        }
        let results = futures::future::join_all(addrs.iter().map(|&addr| async move {
            AddrResult {
                addr,
                result: self.probe_addr(target, addr).await,
            }
        }))
        .await;
        ProbeOutcome {
            target: target.to_string(),
            resolve_error: None,
            results,
        }
    }

    async fn resolve(&self, target: &Target) -> Result<Vec<SocketAddr>, String> {
        let lookup = tokio::net::lookup_host((target.host.as_str(), target.port));
        let addrs = match timeout(self.timeout, lookup).await {
            Err(_) => {
                return Err(format!(
                    "cannot resolve {}: timed out after {:?}",
                    target.host, self.timeout
                ));
            }
            Ok(Err(e)) => return Err(format!("cannot resolve {}: {e}", target.host)),
            Ok(Ok(a)) => a,
        };
        let mut out: Vec<SocketAddr> = Vec::new();
        for a in addrs {
            if !out.contains(&a) {
                out.push(a);
            }
        }
        if out.is_empty() {
            return Err(format!("{} resolved to no address", target.host));
        }
        Ok(out)
    }

    async fn probe_addr(&self, target: &Target, addr: SocketAddr) -> Result<Duration, String> {
        let start = Instant::now();
        let work = async {
            let mut stream = TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connect failed: {e}"))?;
            if let ProbeKind::Http { path } = &target.kind {
                let want = target.expect_status.unwrap_or(self.expect_status);
                let got = http_get_status(&mut stream, target, path).await?;
                if got != want {
                    return Err(format!("HTTP status {got}, expected {want}"));
                }
            }
            Ok(())
        };
        match timeout(self.timeout, work).await {
            Err(_) => Err(format!("timed out after {:?}", self.timeout)),
            Ok(Err(e)) => Err(e),
            Ok(Ok(())) => Ok(start.elapsed()),
        }
    }
}

/// Sends `GET path` and returns the response's status code.
async fn http_get_status(
    stream: &mut TcpStream,
    target: &Target,
    path: &str,
) -> Result<u16, String> {
    let host = if target.host.contains(':') {
        format!("[{}]:{}", target.host, target.port)
    } else {
        format!("{}:{}", target.host, target.port)
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: swarm-upgrade-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("HTTP request failed: {e}"))?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    loop {
        if let Some(end) = buf.iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&buf[..end]);
            return parse_status_line(line.trim_end())
                .ok_or_else(|| format!("bad HTTP status line {:?}", line.trim_end()));
        }
        if buf.len() > 8192 {
            return Err("HTTP status line too long".into());
        }
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("HTTP response failed: {e}"))?;
        if n == 0 {
            return Err("connection closed before an HTTP response".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn parse_status_line(line: &str) -> Option<u16> {
    let mut parts = line.split_whitespace();
    let version = parts.next()?;
    if !version.starts_with("HTTP/") {
        return None;
    }
    let code = parts.next()?;
    (code.len() == 3).then(|| code.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line("HTTP/1.1 200 OK"), Some(200));
        assert_eq!(parse_status_line("HTTP/1.0 500"), Some(500));
        assert_eq!(parse_status_line("SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status_line("HTTP/1.1 20"), None);
    }
}
