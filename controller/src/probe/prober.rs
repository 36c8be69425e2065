//! One round of probing a target: resolve, then connect to every address.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

use super::metrics::ProbeMetrics;
use crate::http_client::{HttpError, get_status_over};
use crate::spec::{ProbeKind, Target};

/// Why one probe attempt failed. Its text is what follows the target in a
/// `Connectivity error: ` log line (the e2e suite and operators read those).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("cannot resolve {host}: timed out after {after:?}")]
    ResolveTimedOut { host: String, after: Duration },
    #[error("{host} resolved to no address")]
    NoAddress { host: String },
    #[error("connect failed: {source}")]
    Connect {
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("HTTP request failed: {}", .source.cause())]
    Http {
        #[source]
        source: Arc<HttpError>,
    },
    #[error("HTTP status {got}, expected {want}")]
    UnexpectedStatus { got: u16, want: u16 },
    #[error("timed out after {after:?}")]
    TimedOut { after: Duration },
}

impl ProbeError {
    /// The `reason` label of a metric counting this failure.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ProbeError::Resolve { .. } | ProbeError::ResolveTimedOut { .. } => "resolve",
            ProbeError::NoAddress { .. } => "no_address",
            ProbeError::Connect { .. } => "connect",
            ProbeError::Http { .. } => "http",
            ProbeError::UnexpectedStatus { .. } => "http_status",
            ProbeError::TimedOut { .. } => "timeout",
        }
    }
}

/// Outcomes compare by what they say (the io sources have no equality of their own).
impl PartialEq for ProbeError {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for ProbeError {}

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
    pub result: Result<Duration, ProbeError>,
}

fn ser_result<S: serde::Serializer>(
    r: &Result<Duration, ProbeError>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match r {
        Ok(d) => s.collect_str(&format_args!("ok in {d:?}")),
        Err(e) => s.collect_str(e),
    }
}

fn ser_error<S: serde::Serializer>(e: &Option<ProbeError>, s: S) -> Result<S::Ok, S::Error> {
    match e {
        Some(e) => s.collect_str(e),
        None => s.serialize_none(),
    }
}

/// The result of one round against one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeOutcome {
    pub target: String,
    /// Set when the name could not be resolved (or resolved to nothing); then
    /// `results` is empty and the round counts as one failed attempt.
    #[serde(serialize_with = "ser_error")]
    pub resolve_error: Option<ProbeError>,
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
                resolve_error: Some(ProbeError::NoAddress {
                    host: target.host.clone(),
                }),
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

    async fn resolve(&self, target: &Target) -> Result<Vec<SocketAddr>, ProbeError> {
        let lookup = tokio::net::lookup_host((target.host.as_str(), target.port));
        let addrs = match timeout(self.timeout, lookup).await {
            Err(_) => {
                return Err(ProbeError::ResolveTimedOut {
                    host: target.host.clone(),
                    after: self.timeout,
                });
            }
            Ok(Err(e)) => {
                return Err(ProbeError::Resolve {
                    host: target.host.clone(),
                    source: Arc::new(e),
                });
            }
            Ok(Ok(a)) => a,
        };
        let mut out: Vec<SocketAddr> = Vec::new();
        for a in addrs {
            if !out.contains(&a) {
                out.push(a);
            }
        }
        if out.is_empty() {
            return Err(ProbeError::NoAddress {
                host: target.host.clone(),
            });
        }
        Ok(out)
    }

    async fn probe_addr(&self, target: &Target, addr: SocketAddr) -> Result<Duration, ProbeError> {
        let start = Instant::now();
        let work = async {
            let stream = TcpStream::connect(addr)
                .await
                .map_err(|e| ProbeError::Connect {
                    source: Arc::new(e),
                })?;
            if let ProbeKind::Http { path } = &target.kind {
                let want = target.expect_status.unwrap_or(self.expect_status);
                let got = get_status_over(stream, &authority(target), path, "swarm-upgrade-probe")
                    .await
                    .map_err(|e| ProbeError::Http {
                        source: Arc::new(e),
                    })?;
                if got != want {
                    return Err(ProbeError::UnexpectedStatus { got, want });
                }
            }
            Ok(())
        };
        match timeout(self.timeout, work).await {
            Err(_) => Err(ProbeError::TimedOut {
                after: self.timeout,
            }),
            Ok(Err(e)) => Err(e),
            Ok(Ok(())) => Ok(start.elapsed()),
        }
    }
}

/// The target's `Host` header: `host:port`, an IPv6 host in brackets.
fn authority(target: &Target) -> String {
    if target.host.contains(':') {
        format!("[{}]:{}", target.host, target.port)
    } else {
        format!("{}:{}", target.host, target.port)
    }
}
