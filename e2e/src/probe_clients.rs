//! The in-swarm connectivity clients' own `/metrics` (`swarm-upgrade probe --listen
//! 0.0.0.0:9100` in the `test` stack), read from inside each container's network namespace:
//! the overlay is not reachable from the harness. The namespaces are the files the lab engines
//! keep under their exec-root (`NetworkSettings.SandboxKey`); only the clients listen on 9100,
//! so no engine is asked anything (the sampling must not load the engines being upgraded). A
//! scenario samples them through a rollout and checks the exported counters against the logs.

use crate::HOSTS;
use crate::lab::RUN_DIR;
use crate::metrics_text::{metric_sum, parse_metrics};
use anyhow::{Result, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use swarm_upgrade::http_client::HttpClient;

const METRICS_PORT: u16 = 9100;
const METRICS_PATH: &str = "/metrics";

/// What one client container's `/metrics` said last.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ClientCounters {
    pub probes: f64,
    pub errors: f64,
}

impl ClientCounters {
    /// Sums `swarm_upgrade_connectivity_{probes,errors}_total` over their `target` labels.
    pub fn parse(text: &str) -> Result<ClientCounters> {
        let samples = parse_metrics(text);
        let probes = "swarm_upgrade_connectivity_probes_total";
        if !samples.keys().any(|k| k.starts_with(probes)) {
            bail!("no {probes} in the client's /metrics:\n{text}");
        }
        Ok(ClientCounters {
            probes: metric_sum(&samples, probes, &[]),
            errors: metric_sum(&samples, "swarm_upgrade_connectivity_errors_total", &[]),
        })
    }
}

/// The latest counters of every client container seen, by its network namespace.
#[derive(Debug, Default, Clone)]
pub struct ProbeClients {
    pub latest: BTreeMap<PathBuf, (String, ClientCounters)>,
    /// Scrapes that reached a client but failed, with the last reason.
    pub failed_scrapes: usize,
    pub last_failure: Option<String>,
}

impl ProbeClients {
    /// Reads the `/metrics` of every client container running now, once.
    pub async fn sample(&mut self) {
        let found = tokio::task::spawn_blocking(|| {
            HOSTS
                .iter()
                .flat_map(|host| {
                    sandboxes(host)
                        .into_iter()
                        .map(move |ns| (host.to_string(), get_in_netns(&ns, METRICS_PATH), ns))
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for (host, got, ns) in found {
            match got.map(|text| text.map(|t| ClientCounters::parse(&t))) {
                // not a client, or gone since the directory was read
                Ok(None) => {}
                Ok(Some(Ok(c))) => {
                    self.latest.insert(ns, (host, c));
                }
                Ok(Some(Err(e))) | Err(e) => {
                    self.failed_scrapes += 1;
                    self.last_failure = Some(format!("{host} {}: {e:#}", ns.display()));
                }
            }
        }
    }

    /// Counters summed over every container seen.
    pub fn totals(&self) -> ClientCounters {
        self.latest
            .values()
            .fold(ClientCounters::default(), |a, (_, c)| ClientCounters {
                probes: a.probes + c.probes,
                errors: a.errors + c.errors,
            })
    }
}

/// The network namespaces of a lab host's containers (none when its engine is down).
fn sandboxes(host: &str) -> Vec<PathBuf> {
    let dir = Path::new(RUN_DIR).join(format!("{host}.x")).join("netns");
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// `GET path` from 127.0.0.1:9100 in the network namespace at `netns`, on a thread of its own
/// with a current-thread runtime: `setns` moves only the calling thread, which then ends (a
/// pooled thread would stay in the container's namespace), and the client connects from it.
/// `None` when nothing listens there or the namespace is gone.
fn get_in_netns(netns: &Path, path: &str) -> Result<Option<String>> {
    let netns = netns.to_path_buf();
    let url = format!("http://127.0.0.1:{METRICS_PORT}{path}");
    std::thread::spawn(move || -> Result<Option<String>> {
        use std::os::fd::AsRawFd;
        let Ok(ns) = std::fs::File::open(&netns) else {
            return Ok(None);
        };
        // SAFETY: setns on an open namespace fd; it changes only this thread's namespace.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            // EINVAL: the file is no longer a namespace (the container stopped).
            return Ok(None);
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let client = HttpClient::new("swarm-upgrade-e2e", Duration::from_secs(2));
        match runtime.block_on(client.get(&url, "*/*")) {
            Err(e) if e.is_connect() => Ok(None),
            Err(e) => Err(e.into()),
            Ok(r) if r.status != 200 => bail!("GET {url}: HTTP {}", r.status),
            Ok(r) => Ok(Some(r.text())),
        }
    })
    .join()
    .map_err(|_| anyhow::anyhow!("scrape thread panicked"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_summed_over_targets() {
        let text = "# HELP swarm_upgrade_connectivity_probes Connection attempts.\n\
                    # TYPE swarm_upgrade_connectivity_probes counter\n\
                    swarm_upgrade_connectivity_probes_total{target=\"tasks.service:80\"} 120\n\
                    swarm_upgrade_connectivity_probes_total{target=\"tasks.other:80\"} 3\n\
                    swarm_upgrade_connectivity_errors_total{target=\"tasks.service:80\"} 2\n\
                    # EOF\n";
        assert_eq!(
            ClientCounters::parse(text).unwrap(),
            ClientCounters {
                probes: 123.0,
                errors: 2.0
            }
        );
        assert!(ClientCounters::parse("# EOF\n").is_err());
    }
}
