//! Looking at the lab swarm through the docker CLI (28.2.2, static), as the manual upgrade
//! procedure does by hand.

use crate::lab::{LIB_DIR, sock};
use crate::{HOSTS, MANAGERS, wait_for};
use anyhow::{Context, Result, bail};
use jiff::Timestamp;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

/// `docker -H <host's socket> ARGS...`; stdout on success.
pub async fn docker(host: &str, args: &[&str]) -> Result<String> {
    let out = tokio::process::Command::new("docker")
        .arg("-H")
        .arg(sock(host))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .context("running the docker CLI")?;
    if !out.status.success() {
        bail!(
            "docker -H {} {}: {}",
            sock(host),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `docker ARGS` against the first manager that answers as a manager (one may be restarting).
pub async fn manager_docker(args: &[&str]) -> Result<String> {
    let mut errors = vec![];
    for m in MANAGERS {
        match docker(m, args).await {
            Ok(out) => return Ok(out),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    bail!("no manager answered: {}", errors.join("; "))
}

#[derive(Debug, Clone)]
pub struct Node {
    pub id: String,
    pub hostname: String,
    pub role: String,
    pub availability: String,
    pub state: String,
    /// `Status.Message` (e.g. "heartbeat failure"), empty when the engine gives none.
    pub message: String,
    pub version: String,
    pub leader: bool,
    pub labels: BTreeMap<String, String>,
}

impl Node {
    /// Engine version without build metadata ("26.1.5+dfsg1" -> "26.1.5").
    pub fn short_version(&self) -> &str {
        self.version.split('+').next().unwrap_or("")
    }
    /// The operator's labels (prefix `swarm-upgrade.`) still on the node.
    pub fn operator_labels(&self) -> Vec<String> {
        self.labels
            .iter()
            .filter(|(k, _)| k.starts_with("swarm-upgrade."))
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    }
}

/// Each lab host's node ID, as the host's own engine says it (`docker info`). A 20.10 swarm can
/// keep one node's description (hostname, engine version) under another node's ID for minutes
/// after a leader change (seen on this lab, and in CI), so a host is found by its ID, not by the
/// hostname in the swarm's description. An ID the swarm no longer lists (a new lab) is asked
/// for again.
static NODE_IDS: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());

/// Host -> node ID for every host whose engine has answered once (an engine restarting now is
/// asked again next time), among the node IDs the swarm lists.
async fn node_ids(listed: &[&str]) -> BTreeMap<String, String> {
    let known = {
        let mut ids = NODE_IDS.lock().unwrap_or_else(|e| e.into_inner());
        ids.retain(|_, id| listed.contains(&id.as_str()));
        ids.clone()
    };
    let mut found = BTreeMap::new();
    for h in HOSTS.iter().filter(|h| !known.contains_key(**h)) {
        if let Ok(out) = docker(h, &["info", "--format", "{{.Swarm.NodeID}}"]).await {
            let id = out.trim();
            if !id.is_empty() {
                found.insert(h.to_string(), id.to_string());
            }
        }
    }
    let mut ids = NODE_IDS.lock().unwrap_or_else(|e| e.into_inner());
    ids.extend(found);
    ids.clone()
}

/// Every node, by lab host, as a manager sees it; a node whose stored description names another
/// host is keyed by its own host, with the engine version its engine gives.
pub async fn nodes() -> Result<BTreeMap<String, Node>> {
    let ids = manager_docker(&["node", "ls", "-q"]).await?;
    let listed_ids: Vec<&str> = ids.split_whitespace().collect();
    let mut args = vec!["node", "inspect"];
    args.extend(&listed_ids);
    let json: Value = serde_json::from_str(&manager_docker(&args).await?)?;
    let listed = json.as_array().context("node inspect: not an array")?;
    let (mut out, misdescribed) = nodes_by_host(listed, &node_ids(&listed_ids).await);
    for (host, described_as) in misdescribed {
        if let Some(node) = out.get_mut(&host) {
            take_engines_version(node, &described_as).await;
        }
    }
    Ok(out)
}

/// The listed nodes keyed by host (`ids`: host -> node ID, from each host's engine), and the
/// hosts whose node the swarm describes as another host (with that hostname).
fn nodes_by_host(
    listed: &[Value],
    ids: &BTreeMap<String, String>,
) -> (BTreeMap<String, Node>, Vec<(String, String)>) {
    let host_of: BTreeMap<&str, &str> = ids
        .iter()
        .map(|(h, id)| (id.as_str(), h.as_str()))
        .collect();
    let mut out = BTreeMap::new();
    let mut misdescribed = vec![];
    for n in listed {
        let mut node = parse_node(n);
        if let Some(host) = host_of.get(node.id.as_str())
            && *host != node.hostname
        {
            misdescribed.push((
                host.to_string(),
                std::mem::replace(&mut node.hostname, host.to_string()),
            ));
        }
        out.insert(node.hostname.clone(), node);
    }
    (out, misdescribed)
}

/// One `docker node inspect` entry.
fn parse_node(n: &Value) -> Node {
    let s = |p: &str| {
        n.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let labels = n
        .pointer("/Spec/Labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default();
    Node {
        id: s("/ID"),
        hostname: s("/Description/Hostname"),
        role: s("/Spec/Role"),
        availability: s("/Spec/Availability"),
        state: s("/Status/State"),
        message: s("/Status/Message"),
        version: s("/Description/Engine/EngineVersion"),
        leader: n
            .pointer("/ManagerStatus/Leader")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        labels,
    }
}

/// The swarm describes `node`'s host as `described_as`: its engine version then comes from its
/// own engine too (it stays the description's when the engine does not answer). Said once per
/// node and wrong hostname.
async fn take_engines_version(node: &mut Node, described_as: &str) {
    static SAID: Mutex<BTreeSet<(String, String)>> = Mutex::new(BTreeSet::new());
    let host = node.hostname.clone();
    let version = docker(&host, &["version", "--format", "{{.Server.Version}}"]).await;
    let version = version.map(|v| v.trim().to_string()).ok();
    let first = SAID
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert((node.id.clone(), described_as.to_string()));
    if first {
        eprintln!(
            "  note: the swarm describes {host}'s node {} as {described_as} {}; its engine says {host} {}",
            node.id,
            node.version,
            version.as_deref().unwrap_or("(no answer)")
        );
    }
    if let Some(v) = version {
        node.version = v;
    }
}

/// A printable table of the nodes.
pub fn nodes_table(nodes: &BTreeMap<String, Node>) -> String {
    let mut s = String::new();
    for n in nodes.values() {
        s.push_str(&format!(
            "  {:3} {:8} {:6} {:7} {:16} {}{}\n",
            n.hostname,
            n.role,
            n.state,
            n.availability,
            n.version,
            if n.leader { "leader " } else { "" },
            n.operator_labels().join(",")
        ));
    }
    s
}

/// Wait until every lab node is `ready`, as seen by a manager.
/// The hostname of the raft leader now.
pub async fn leader_now() -> Result<String> {
    let nodes = nodes().await?;
    let leader = nodes.values().find(|n| n.leader);
    leader
        .map(|n| n.hostname.clone())
        .ok_or_else(|| anyhow::anyhow!("no leader among {:?}", nodes.keys()))
}

pub async fn wait_all_ready(within: Duration) -> Result<BTreeMap<String, Node>> {
    wait_for(
        "all 5 nodes Ready",
        within,
        Duration::from_millis(500),
        || async {
            let n = nodes().await?;
            if n.len() == HOSTS.len() && n.values().all(|n| n.state == "ready") {
                return Ok(Some(n));
            }
            // kept as the wait's last error: a timeout then names the nodes it waited for
            let waiting: Vec<String> = HOSTS
                .iter()
                .map(|h| match n.get(*h) {
                    None => format!("{h} missing from `docker node ls`"),
                    Some(n) if n.state != "ready" => {
                        format!("{h} {} {:?} (engine {})", n.state, n.message, n.version)
                    }
                    Some(_) => String::new(),
                })
                .filter(|s| !s.is_empty())
                .collect();
            anyhow::bail!("not Ready: {}", waiting.join("; "))
        },
    )
    .await
}

/// `docker stack deploy -c FILE NAME` through n1.
pub async fn deploy_stack(name: &str, file: &Path) -> Result<()> {
    let file = file.to_str().context("stack file path")?;
    manager_docker(&["stack", "deploy", "--detach=true", "-c", file, name]).await?;
    Ok(())
}

/// (running, desired) of a service, from `docker service ls`.
pub async fn replicas(service: &str) -> Result<(u32, u32)> {
    let out = manager_docker(&[
        "service",
        "ls",
        "--filter",
        &format!("name={service}"),
        "--format",
        "{{.Name}} {{.Replicas}}",
    ])
    .await?;
    for line in out.lines() {
        let mut it = line.split_whitespace();
        if it.next() == Some(service) {
            let r = it.next().unwrap_or("");
            let (a, b) = r.split_once('/').context("replicas format")?;
            let b = b.split_whitespace().next().unwrap_or(b);
            return Ok((
                a.parse()?,
                b.trim_end_matches(|c: char| !c.is_ascii_digit()).parse()?,
            ));
        }
    }
    bail!("service {service} not found")
}

/// Wait until every named service runs as many tasks as it wants (and wants at least one).
pub async fn wait_converged(services: &[&str], within: Duration) -> Result<()> {
    wait_for(
        &format!("services {services:?} converged"),
        within,
        Duration::from_millis(500),
        || async {
            for s in services {
                let (run, want) = replicas(s).await?;
                if run != want || want == 0 {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        },
    )
    .await
}

#[derive(Debug, Clone)]
pub struct Task {
    pub id: String,
    pub service: String,
    pub node: String,
    pub state: String,
    pub desired: String,
    pub err: String,
    pub timestamp: Timestamp,
}

/// Every task of a service (history included), with node hostnames.
pub async fn tasks(service: &str) -> Result<Vec<Task>> {
    let ids = manager_docker(&["service", "ps", "-q", "--no-trunc", service]).await?;
    if ids.trim().is_empty() {
        return Ok(vec![]);
    }
    let node_names: BTreeMap<String, String> = nodes()
        .await?
        .into_values()
        .map(|n| (n.id, n.hostname))
        .collect();
    let mut args = vec!["inspect", "--type", "task"];
    args.extend(ids.split_whitespace());
    let json: Value = serde_json::from_str(&manager_docker(&args).await?)?;
    let mut out = vec![];
    for t in json.as_array().context("task inspect: not an array")? {
        let s = |p: &str| {
            t.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let node_id = s("/NodeID");
        out.push(Task {
            id: s("/ID"),
            service: service.to_string(),
            node: node_names.get(&node_id).cloned().unwrap_or(node_id),
            state: s("/Status/State"),
            desired: s("/DesiredState"),
            err: s("/Status/Err"),
            timestamp: s("/Status/Timestamp")
                .parse()
                .unwrap_or(Timestamp::UNIX_EPOCH),
        });
    }
    Ok(out)
}

/// One line of the client log of the manual upgrade procedure's test stack: `<date>: Starting
/// client service`, `<date>: Connectivity error: <detail>`, or (ours, on SIGTERM) `<date>:
/// Stopping client service`.
#[derive(Debug, Clone)]
pub struct ClientLine {
    pub host: String,
    pub time: Timestamp,
    pub start: bool,
    pub stop: bool,
    pub text: String,
}

/// The client logs of the `test` stack on every host (the manual upgrade procedure's `cat` of
/// `/var/lib/docker/volumes/test_cliout/_data/client.log` on each node).
pub fn client_logs() -> Result<Vec<ClientLine>> {
    let mut out = vec![];
    for h in HOSTS {
        let path = format!("{LIB_DIR}/hosts/{h}/data/volumes/test_cliout/_data/client.log");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for line in text.lines() {
            // "Fri Aug 24 15:49:38 UTC 2018: rest"
            let Some((date, rest)) = line.split_once(": ") else {
                continue;
            };
            // `date` pads the day with a space ("Fri Aug  4"): collapse runs of spaces
            let date = date.split_whitespace().collect::<Vec<_>>().join(" ");
            let time = jiff::fmt::strtime::parse("%a %b %d %H:%M:%S UTC %Y", &date)
                .and_then(|t| t.to_datetime())
                .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC))
                .map(|z| z.timestamp())
                .with_context(|| format!("{path}: bad date in {line:?}"))?;
            out.push(ClientLine {
                host: h.to_string(),
                time,
                start: rest.starts_with("Starting client service"),
                stop: rest.starts_with("Stopping client service"),
                text: rest.to_string(),
            });
        }
    }
    Ok(out)
}

/// Connectivity errors counted from the client logs.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Connectivity {
    /// Client starts seen (the test stack's "Starting client service" lines).
    pub client_starts: usize,
    /// Client stops seen ("Stopping client service").
    pub client_stops: usize,
    /// Errors at or after `since`, outside a client's start-up and shutdown graces (the ones that
    /// count as interruptions).
    pub errors: usize,
    /// Errors at or after `since` within `grace` of a client start on the same host (the
    /// client's first resolution of `tasks.service` while its container is still coming up).
    pub startup_errors: usize,
    /// Errors at or after `since` within `CLIENT_SHUTDOWN_GRACE` before a client stop on the same
    /// host: swarm withdraws a stopping task's service binding and waits 2 s before SIGTERM, and
    /// the client's own DNS lookups can time out meanwhile (seen in s2 on the lab, when both
    /// clients ran on the worker being drained). The other client still sees the service.
    pub shutdown_errors: usize,
    /// Errors before `since` (stack warm-up).
    pub before: usize,
    /// The counted error lines, for the report.
    pub samples: Vec<String>,
}

pub const CLIENT_STARTUP_GRACE: Duration = Duration::from_secs(3);
/// Swarm's 2 s gossip-converge delay before a task's SIGTERM, plus the client's 1 s timeout.
pub const CLIENT_SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

pub fn count_connectivity(since: Timestamp) -> Result<Connectivity> {
    classify_client_lines(&client_logs()?, since)
}

/// Counts the client log lines: starts, stops, and errors before `since`, in a client's
/// start-up or shutdown grace on the same host, or neither (the ones that count).
pub fn classify_client_lines(lines: &[ClientLine], since: Timestamp) -> Result<Connectivity> {
    let mut c = Connectivity::default();
    let grace = jiff::SignedDuration::try_from(CLIENT_STARTUP_GRACE)?;
    let shutdown_grace = jiff::SignedDuration::try_from(CLIENT_SHUTDOWN_GRACE)?;
    for l in lines {
        if l.start {
            c.client_starts += 1;
            continue;
        }
        if l.stop {
            c.client_stops += 1;
            continue;
        }
        if l.time < since {
            c.before += 1;
            continue;
        }
        let in_startup = lines
            .iter()
            .any(|s| s.start && s.host == l.host && s.time <= l.time && l.time <= s.time + grace);
        let in_shutdown = lines.iter().any(|s| {
            s.stop && s.host == l.host && l.time <= s.time && s.time <= l.time + shutdown_grace
        });
        if in_startup {
            c.startup_errors += 1;
        } else if in_shutdown {
            c.shutdown_errors += 1;
        } else {
            c.errors += 1;
        }
        if c.samples.len() < 20 {
            c.samples.push(format!("{} {}: {}", l.host, l.time, l.text));
        }
    }
    Ok(c)
}

/// Deploy the `test` stack of the manual upgrade procedure and wait until it has converged (5 web
/// tasks, 2 clients) and both clients have been probing for a few seconds. Returns the time from
/// which connectivity errors count.
pub async fn deploy_test_stack() -> Result<Timestamp> {
    deploy_stack("test", &crate::lab::stack_file("test")).await?;
    wait_converged(&["test_service", "test_client"], Duration::from_secs(90)).await?;
    wait_for(
        "both clients logging",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async { Ok((client_logs()?.iter().filter(|l| l.start).count() >= 2).then_some(())) },
    )
    .await?;
    tokio::time::sleep(CLIENT_STARTUP_GRACE + Duration::from_secs(1)).await;
    Ok(Timestamp::now())
}

/// Waits until no client has logged a connectivity error for `quiet` (a change made outside
/// the operator, such as the admin's plain drain in s2, has settled). Returns the errors logged
/// at or after `since` meanwhile.
pub async fn wait_clients_quiet(
    since: Timestamp,
    quiet: Duration,
    within: Duration,
) -> Result<usize> {
    let quiet = jiff::SignedDuration::try_from(quiet)?;
    wait_for(
        "the clients to log no error for a while",
        within,
        Duration::from_millis(500),
        || async {
            let errors: Vec<Timestamp> = client_logs()?
                .iter()
                .filter(|l| !l.start && !l.stop && l.time >= since)
                .map(|l| l.time)
                .collect();
            let calm_since = errors.iter().max().copied().unwrap_or(since);
            Ok((Timestamp::now() >= calm_since + quiet).then_some(errors.len()))
        },
    )
    .await
}

/// Rejected and failed tasks of the given services since `since`: (rejected, failed).
pub async fn bad_tasks(services: &[&str], since: Timestamp) -> Result<(Vec<Task>, Vec<Task>)> {
    let mut rejected = vec![];
    let mut failed = vec![];
    for s in services {
        for t in tasks(s).await? {
            if t.timestamp < since {
                continue;
            }
            match t.state.as_str() {
                "rejected" => rejected.push(t),
                "failed" => failed.push(t),
                _ => {}
            }
        }
    }
    Ok((rejected, failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inspected(id: &str, hostname: &str, version: &str) -> Value {
        serde_json::json!({
            "ID": id,
            "Description": {"Hostname": hostname, "Engine": {"EngineVersion": version}},
            "Spec": {"Role": "manager", "Availability": "active"},
            "Status": {"State": "ready"},
        })
    }

    /// The CI run of 2026-12-03: after n1's handover the swarm described n3's node as n5 at
    /// 20.10.24 (n5's own node listed as n5 too), so `docker node ls` seemed to lack n3.
    #[test]
    fn a_node_described_as_another_host_is_found_by_its_own_engines_id() {
        let listed = [
            inspected("enesmw", "n5", "20.10.24+dfsg1"),
            inspected("wplqjy", "n5", "26.1.5+dfsg1"),
            inspected("kx1", "n1", "26.1.5+dfsg1"),
        ];
        let ids = BTreeMap::from([
            ("n3".to_string(), "enesmw".to_string()),
            ("n5".to_string(), "wplqjy".to_string()),
        ]); // n1's engine has not answered: its description is taken as it is
        let (nodes, misdescribed) = nodes_by_host(&listed, &ids);
        assert_eq!(nodes.keys().collect::<Vec<_>>(), ["n1", "n3", "n5"]);
        assert_eq!(nodes["n3"].id, "enesmw");
        assert_eq!(nodes["n5"].id, "wplqjy");
        assert_eq!(misdescribed, [("n3".to_string(), "n5".to_string())]);
    }

    fn line(host: &str, secs: i64, text: &str) -> ClientLine {
        ClientLine {
            host: host.into(),
            time: Timestamp::from_second(1_800_000_000 + secs).unwrap(),
            start: text.starts_with("Starting client service"),
            stop: text.starts_with("Stopping client service"),
            text: text.into(),
        }
    }

    #[test]
    fn errors_are_told_apart_by_the_clients_own_start_and_stop() {
        let err = "Connectivity error: tasks.service:80: cannot resolve tasks.service: timed out after 1s";
        let lines = vec![
            line("n4", 0, "Starting client service"),
            line("n4", 1, err), // before `since`
            line("n4", 20, "Starting client service"),
            line("n4", 22, err), // start-up grace
            line("n4", 40, err), // 2 s before this host's client stopped: shutdown grace
            line("n4", 42, "Stopping client service"),
            line("n5", 41, err), // another host's stop does not excuse it
            line("n4", 60, err), // long after: counts
            line("n4", 70, err), // 4 s before a stop: outside the grace, counts
            line("n4", 74, "Stopping client service"),
        ];
        let since = Timestamp::from_second(1_800_000_010).unwrap();
        let c = classify_client_lines(&lines, since).unwrap();
        assert_eq!(
            (c.client_starts, c.client_stops, c.before),
            (2, 2, 1),
            "{c:?}"
        );
        assert_eq!(
            (c.startup_errors, c.shutdown_errors, c.errors),
            (1, 1, 3),
            "{c:?}"
        );
    }
}
