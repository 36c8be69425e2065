//! The deployable bundle on the lab, as `charts/swarm-upgrade/README.md` tells a user to deploy it:
//! `docker stack deploy -c charts/swarm-upgrade/stack.yml` with the operator image, the managers'
//! TLS endpoints, the client certificate and the ssh key as swarm secrets, the spec as a swarm
//! config; and Debian's Prometheus scraping it from the `swarm-upgrade-metrics` network with
//! `charts/swarm-upgrade/prometheus-scrape.yml`.

use crate::cluster::docker;
use crate::lab::lab_dir;
use crate::operator::{Event, EventStep, check_order, read_events};
use crate::report::Figures;
use crate::scenario::{Checks, rollout_times};
use crate::{HOSTS, MANAGERS};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// Where lab-up leaves the TLS material and the ssh key (e2e/lab/lib.sh: E2E_TLS, E2E_SSH).
pub const LAB_STATE: &str = "/var/lib/swarm-upgrade-e2e";
/// The port Prometheus publishes on its host (host mode: the lab has no routing mesh).
pub const PROMETHEUS_PORT: u16 = 9091;
/// The worker Prometheus runs on as a plain container (drains do not stop it; its engine's
/// upgrade does, for a few seconds, and `--restart unless-stopped` brings it back).
pub const PROMETHEUS_HOST: &str = "n5";

pub fn chart_dir() -> PathBuf {
    lab_dir().join("../../charts/swarm-upgrade")
}

/// A lab host's address on the bridge.
pub fn host_ip(host: &str) -> String {
    format!("192.168.231.1{}", &host[1..])
}

/// Every manager's TLS endpoint, as `SWARM_UPGRADE_MANAGERS` wants them.
pub fn tls_managers() -> String {
    MANAGERS
        .iter()
        .map(|m| format!("tcp://{}:2376", host_ip(m)))
        .collect::<Vec<_>>()
        .join(",")
}

/// The chart's spec with the lab's timings: no maintenance window (CI runs at any hour), short
/// timeouts, `settle: 500ms` as the other scenarios; the upgrade and rollback commands (ssh)
/// exactly as users get them.
pub fn lab_spec(paused: bool) -> Result<String> {
    let chart = std::fs::read_to_string(chart_dir().join("engine-upgrade.yaml"))
        .context("reading charts/swarm-upgrade/engine-upgrade.yaml")?;
    let without_window = chart
        .split("\n  window:")
        .next()
        .context("the chart's spec")?;
    let mut spec = String::new();
    for line in without_window.lines() {
        let trimmed = line.trim_start();
        let replaced = match trimmed.split(':').next().unwrap_or("") {
            "timeout" => "    timeout: 3m".to_string(),
            "drainTimeout" => "    drainTimeout: 2m".to_string(),
            "readyTimeout" => "    readyTimeout: 2m".to_string(),
            "settle" => "    settle: 500ms".to_string(),
            "paused" => format!("    paused: {paused}"),
            _ => line.to_string(),
        };
        spec.push_str(&replaced);
        spec.push('\n');
    }
    Ok(spec)
}

/// The files a user hands the stack: DOCKER_CERT_PATH and SWARM_UPGRADE_KNOWN_HOSTS.
#[derive(Debug, Clone)]
pub struct BundleFiles {
    pub cert_path: PathBuf,
    pub known_hosts: PathBuf,
}

impl Default for BundleFiles {
    /// The lab's own: the operator's client certificate and every host's key.
    fn default() -> Self {
        Self {
            cert_path: PathBuf::from(format!("{LAB_STATE}/tls/client")),
            known_hosts: PathBuf::from(format!("{LAB_STATE}/ssh/known_hosts")),
        }
    }
}

/// `docker stack deploy -c charts/swarm-upgrade/stack.yml swarm-upgrade` through n1, with only the
/// stack's documented variables set.
pub async fn deploy_operator_stack(spec: &Path, spec_rev: u32) -> Result<()> {
    deploy_operator_stack_with(spec, spec_rev, &BundleFiles::default()).await
}

/// [`deploy_operator_stack`] with other certificates or host keys.
pub async fn deploy_operator_stack_with(
    spec: &Path,
    spec_rev: u32,
    files: &BundleFiles,
) -> Result<()> {
    deploy_operator_replicas(spec, spec_rev, files, 1).await
}

/// [`deploy_operator_stack_with`] with `SWARM_UPGRADE_REPLICAS` set (two: a standby).
pub async fn deploy_operator_replicas(
    spec: &Path,
    spec_rev: u32,
    files: &BundleFiles,
    replicas: u32,
) -> Result<()> {
    let chart = chart_dir();
    let stack = chart.join("stack.yml");
    let out = tokio::process::Command::new("docker")
        .current_dir(&chart)
        .args([
            "-H",
            &crate::lab::sock("n1"),
            "stack",
            "deploy",
            "--detach=true",
        ])
        .args(["--resolve-image", "never", "-c"])
        .arg(&stack)
        .arg("swarm-upgrade")
        .env("SWARM_UPGRADE_IMAGE", "e2e/operator:latest")
        .env("SWARM_UPGRADE_MANAGERS", tls_managers())
        .env("SWARM_UPGRADE_SPEC", spec)
        .env("SWARM_UPGRADE_SPEC_REV", spec_rev.to_string())
        .env("SWARM_UPGRADE_REPLICAS", replicas.to_string())
        .env("DOCKER_CERT_PATH", &files.cert_path)
        .env(
            "SWARM_UPGRADE_SSH_KEY",
            format!("{LAB_STATE}/ssh/operator_ed25519"),
        )
        .env("SWARM_UPGRADE_KNOWN_HOSTS", &files.known_hosts)
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_TLS_VERIFY")
        .output()
        .await
        .context("docker stack deploy")?;
    if !out.status.success() {
        bail!(
            "docker stack deploy -c stack.yml failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The chart's scrape job with the service discovery pointed at a manager's TLS endpoint (the
/// option its comment gives when Prometheus is not on a manager) and a 1 s interval.
pub fn prometheus_config(dir: &Path) -> Result<PathBuf> {
    let chart = std::fs::read_to_string(chart_dir().join("prometheus-scrape.yml"))
        .context("reading charts/swarm-upgrade/prometheus-scrape.yml")?;
    let manager = host_ip(MANAGERS[0]);
    let mut config = String::from("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n");
    for line in chart.lines() {
        match line.trim_start() {
            l if l.starts_with("scrape_interval:") => {
                config.push_str("    scrape_interval: 1s\n");
            }
            l if l.starts_with("refresh_interval:") => {
                config.push_str("        refresh_interval: 5s\n");
            }
            l if l.starts_with("- host: unix:///var/run/docker.sock") => {
                config.push_str(&format!(
                    "      - host: https://{manager}:2376\n        tls_config:\n          ca_file: /etc/prometheus/tls/ca.pem\n          cert_file: /etc/prometheus/tls/cert.pem\n          key_file: /etc/prometheus/tls/key.pem\n"
                ));
            }
            _ => {
                config.push_str(line);
                config.push('\n');
            }
        }
    }
    std::fs::create_dir_all(dir.join("tls"))?;
    for f in ["ca.pem", "cert.pem", "key.pem"] {
        std::fs::copy(
            format!("{LAB_STATE}/tls/client/{f}"),
            dir.join("tls").join(f),
        )
        .with_context(|| format!("copying the client certificate's {f}"))?;
    }
    let path = dir.join("prometheus.yml");
    std::fs::write(&path, config)?;
    Ok(path)
}

/// Debian's Prometheus as a plain container on [`PROMETHEUS_HOST`], attached to the stack's
/// `swarm-upgrade-metrics` network (attachable), answering on that host's address.
pub async fn start_prometheus(config_dir: &Path) -> Result<()> {
    let mount = format!("{}:/etc/prometheus:ro", config_dir.display());
    let publish = format!("{PROMETHEUS_PORT}:9090");
    docker(
        PROMETHEUS_HOST,
        &[
            "run",
            "-d",
            "--name",
            "prometheus",
            "--restart",
            "unless-stopped",
            "--network",
            "swarm-upgrade-metrics",
            "-p",
            &publish,
            "-v",
            &mount,
            "e2e/prometheus:latest",
            "/usr/bin/prometheus",
            "--config.file=/etc/prometheus/prometheus.yml",
            "--storage.tsdb.path=/prometheus",
            "--web.listen-address=0.0.0.0:9090",
        ],
    )
    .await?;
    Ok(())
}

pub fn prometheus_url() -> String {
    format!("http://{}:{PROMETHEUS_PORT}", host_ip(PROMETHEUS_HOST))
}

/// The events file the operator wrote on each host it ran on (the stack's `events` volume is per
/// node), keyed by host; hosts it never ran on are left out.
pub fn events_files() -> Vec<(String, PathBuf)> {
    HOSTS
        .iter()
        .map(|h| {
            (
                h.to_string(),
                PathBuf::from(format!(
                    "{LAB_STATE}/hosts/{h}/data/volumes/swarm-upgrade_events/_data/events.jsonl"
                )),
            )
        })
        .filter(|(_, p)| p.exists())
        .collect()
}

/// One instant query against the lab's Prometheus: the result's samples (labels, value).
pub async fn prom_query(expr: &str) -> Result<Vec<(serde_json::Value, f64)>> {
    let url = format!(
        "{}/api/v1/query?query={}",
        prometheus_url(),
        swarm_upgrade::http_client::query_escape(expr)
    );
    let client = swarm_upgrade::http_client::HttpClient::new(
        "swarm-upgrade-e2e",
        std::time::Duration::from_secs(10),
    );
    let response = client.get(&url, "application/json").await?;
    let v: serde_json::Value = serde_json::from_slice(&response.body).with_context(|| {
        format!(
            "Prometheus answered {}: {}",
            response.status,
            String::from_utf8_lossy(&response.body)
        )
    })?;
    if v["status"] != "success" {
        bail!("query {expr:?}: {}", v["error"]);
    }
    let samples = v["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let value = r["value"][1]
                .as_str()
                .and_then(|s| s.parse::<f64>().ok())
                .unwrap_or(f64::NAN);
            (r["metric"].clone(), value)
        })
        .collect();
    Ok(samples)
}

/// Every PromQL expression the bundle ships: the dashboard's panel queries (its variables filled
/// in as Grafana would for this lab) and the alert rules', each with where it comes from.
pub fn shipped_queries() -> Result<Vec<(String, String)>> {
    let dashboards = chart_dir().join("../../dashboards");
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dashboards.join("swarm-upgrade.json")).context("dashboard")?,
    )?;
    let mut out = vec![];
    fn panels(p: &serde_json::Value, out: &mut Vec<(String, String)>) {
        for panel in p.as_array().into_iter().flatten() {
            for t in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str() {
                    let title = panel["title"].as_str().unwrap_or("?");
                    out.push((format!("dashboard panel {title:?}"), expr.to_string()));
                }
            }
            panels(&panel["panels"], out);
        }
    }
    panels(&dash["panels"], &mut out);
    let alerts: serde_json::Value = serde_saphyr_yaml(&dashboards.join("alerts.yaml"))?;
    for group in alerts["groups"].as_array().into_iter().flatten() {
        for rule in group["rules"].as_array().into_iter().flatten() {
            if let (Some(name), Some(expr)) = (rule["alert"].as_str(), rule["expr"].as_str()) {
                out.push((format!("alert {name}"), expr.to_string()));
            }
        }
    }
    let filled = out
        .into_iter()
        .map(|(from, e)| {
            let e = e
                .replace("$job", "swarm-upgrade")
                .replace("$instance", ".*")
                .replace("$__rate_interval", "1m")
                .replace("$__range", "15m");
            (from, e)
        })
        .collect();
    Ok(filled)
}

fn serde_saphyr_yaml(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    serde_saphyr::from_str(&text).with_context(|| format!("{}", path.display()))
}

/// The metric families an expression reads (`swarm_upgrade_*` and `up`), histogram suffixes off.
pub fn metrics_in(expr: &str) -> Vec<String> {
    let mut names: Vec<String> = expr
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("swarm_upgrade_") || *w == "up")
        .map(|w| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| w.strip_suffix(s))
                .unwrap_or(w)
                .to_string()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Every event since `since`, from every host's `events` volume, in time order, with the host
/// whose volume it is in.
pub fn all_events(since: jiff::Timestamp) -> Result<Vec<(String, Event)>> {
    let mut out = vec![];
    for (host, path) in events_files() {
        for e in read_events(&path)? {
            if e.time >= since {
                out.push((host.clone(), e));
            }
        }
    }
    out.sort_by_key(|(_, e)| e.time);
    Ok(out)
}

/// Waits for the bundle's rollout to complete (its `completed` event in a worker's events
/// volume), proves its order from every operator task's events and puts its step times in the
/// figures. The events since `since`, with the host whose volume holds each.
pub async fn bundle_rollout_done(
    checks: &mut Checks,
    fig: &mut Figures,
    since: jiff::Timestamp,
) -> Result<Vec<(String, Event)>> {
    let done = crate::wait_for(
        "the rollout's `completed` event in a worker's events volume",
        std::time::Duration::from_secs(480),
        std::time::Duration::from_secs(1),
        || async {
            Ok(all_events(since)?
                .iter()
                .any(|(_, e)| e.step == EventStep::Completed)
                .then_some(()))
        },
    )
    .await;
    checks.step("rollout completed", done);
    let events = all_events(since)?;
    let merged: Vec<Event> = events.iter().map(|(_, e)| e.clone()).collect();
    if let Some(notes) = checks.step(
        "order proven by the events of every operator task",
        check_order(&merged, &HOSTS, &[]),
    ) {
        fig.notes.extend(notes);
    }
    rollout_times(fig, &merged);
    Ok(events)
}
