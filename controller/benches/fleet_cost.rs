//! What the operator costs a fleet, measured with the simulator and the operator in separate
//! processes (`swarm-sim serve` as a child of this bench, `swarm-upgrade run` as another), so the
//! figures are the operator's own: resident memory (VmHWM), CPU seconds, bytes read from the
//! managers (its `swarm_upgrade_docker_api_response_bytes_total`), and how soon it acts once a node
//! it upgraded is Ready again. Prints a table; asserts nothing about time. The rollout is
//! measured in two parts: the managers' phase (every manager upgraded and reactivated: the
//! engines serving the operator restart, and a leader change makes it list everything again)
//! and then `FLEET_ROLL_SECS` of the workers' phase, the steady state of a long rollout, whose
//! cost is also given per worker upgraded (bytes per second follow the simulator's speed).
//!
//! `cargo bench -p swarm-upgrade --bench fleet_cost`
//! env: `FLEET_NODES` (default `100,1000,5000`), `FLEET_TASKS_PER_NODE` (30), `FLEET_IDLE_SECS`
//! (60), `FLEET_ROLL_SECS` (60), `FLEET_TIME_SCALE` (5), `FLEET_KEEP` (keep each fleet's spec, events
//! and operator log), `FLEET_OPERATOR_LOG` (the operator's `RUST_LOG`, default `warn`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

const FROM: &str = "20.10.24";
const TO: &str = "26.1.5";
const OPERATOR: &str = env!("CARGO_BIN_EXE_swarm-upgrade");

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs the simulator when this bench starts itself as `serve-sim ARGS...`.
fn serve_sim_child() -> Option<()> {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some("serve-sim") {
        return None;
    }
    let argv = std::iter::once("swarm-sim".to_string())
        .chain(std::iter::once("serve".to_string()))
        .chain(args);
    let cli = <swarm_sim::cli::SimCli as clap::Parser>::parse_from(argv);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    if let Err(e) = rt.block_on(swarm_sim::cli::run(cli)) {
        eprintln!("swarm-sim: {e:#}");
        std::process::exit(1);
    }
    Some(())
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start past the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// VmHWM or VmRSS of a process, in MB.
fn mem_mb(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

struct SimUp {
    _proc: Proc,
    control: String,
    managers: Vec<String>,
}

fn start_sim(nodes: usize, tasks_per_node: usize, scale: f64) -> SimUp {
    let exe = std::env::current_exe().expect("own path");
    let mut child = Command::new(exe)
        .args(["serve-sim", "--listen", "127.0.0.1:0", "--nodes"])
        .arg(nodes.to_string())
        .arg("--tasks-per-node")
        .arg(tasks_per_node.to_string())
        .arg("--time-scale")
        .arg(scale.to_string())
        // An idle swarm does not rewrite its nodes every few seconds (the simulator's default,
        // there to exercise "update out of sequence"): one rewrite per node per 10 real minutes.
        .args(["--node-rewrite-secs", &(600.0 * scale).to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting the simulator");
    let stdout = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    let mut control = String::new();
    let mut managers = vec![];
    // `control URL`, then one `HOST ROLE URL` line per endpoint, then nothing until it stops.
    for line in lines.by_ref() {
        let line = line.expect("simulator output");
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["control", url] => control = url.to_string(),
            [_, "manager", url, ..] => managers.push(url.to_string()),
            _ => {}
        }
        if managers.len() == 3 {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    SimUp {
        _proc: Proc(child),
        control,
        managers,
    }
}

fn write_spec(path: &Path, version: &str, control: &str) {
    let spec = format!(
        r#"apiVersion: swarm-upgrade.io/v1alpha1
kind: EngineUpgrade
metadata: {{ name: fleet-bench }}
spec:
  version: "{version}"
  upgrade:
    command: {command}
    timeout: 2m
  strategy:
    maxUnavailableWorkers: 1
    drainTimeout: 5m
    readyTimeout: 5m
    settle: 0s
"#,
        command = upgrade_command(control)
    );
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, spec).expect("spec");
    std::fs::rename(&tmp, path).expect("spec");
}

/// The simulated host's upgrade command, as the demo's spec has it.
fn upgrade_command(control: &str) -> String {
    let control = control.trim_start_matches("http://");
    format!(
        r#"["{OPERATOR}", "demo", "upgrade-node", "--sim", "{control}", "{{hostname}}", "{{version}}"]"#
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn start_operator(dir: &Path, managers: &[String], listen: &str) -> Proc {
    let log = std::fs::File::create(dir.join("operator.log")).expect("log");
    let hosts = managers.join(",");
    let child = Command::new(OPERATOR)
        .args(["run", "--spec"])
        .arg(dir.join("spec.yaml"))
        .args(["--docker-host", &hosts, "--listen", listen, "--events"])
        .arg(dir.join("events.jsonl"))
        .env(
            "RUST_LOG",
            std::env::var("FLEET_OPERATOR_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting the operator");
    Proc(child)
}

fn http_client() -> swarm_upgrade::http_client::HttpClient {
    swarm_upgrade::http_client::HttpClient::new(
        "swarm-upgrade-fleet-bench",
        Duration::from_secs(10),
    )
}

/// The operator's `/metrics` text, or `None` while it does not answer.
async fn scrape(listen: &str) -> Option<String> {
    let response = http_client()
        .get(&format!("http://{listen}/metrics"), "text/plain")
        .await
        .ok()?;
    String::from_utf8(response.body.to_vec()).ok()
}

/// Sum of every sample of a metric family (all label sets).
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Per `call` label: the sum of a metric family's samples.
fn metric_by_call(text: &str, name: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name).and_then(|r| r.strip_prefix('{')) else {
            continue;
        };
        let call = rest
            .split(',')
            .find_map(|kv| kv.strip_prefix("call=\""))
            .and_then(|v| v.split('"').next())
            .unwrap_or("?");
        if let Some(v) = line
            .rsplit_once(' ')
            .and_then(|(_, v)| v.parse::<f64>().ok())
        {
            *out.entry(call.to_string()).or_default() += v;
        }
    }
    out
}

const BYTES: &str = "swarm_upgrade_docker_api_response_bytes_total";
const REQUESTS: &str = "swarm_upgrade_docker_api_requests_total";
const PASSES: &str = "swarm_upgrade_reconcile_duration_seconds_count";
const PASS_SECS: &str = "swarm_upgrade_reconcile_duration_seconds_sum";

struct Phase {
    secs: f64,
    cpu: f64,
    bytes: f64,
    requests: f64,
    /// Per call: (requests, bytes) over the phase.
    by_call: BTreeMap<String, (f64, f64)>,
    /// The operator's peak resident memory so far (VmHWM) and its resident memory (VmRSS) at
    /// the phase's end, MB: where the peak happens.
    hwm_mb: f64,
    rss_mb: f64,
    /// Reconcile passes over the phase, and their summed duration in seconds.
    passes: f64,
    pass_secs: f64,
}

impl Phase {
    fn cpu_pct(&self) -> f64 {
        100.0 * self.cpu / self.secs
    }
    fn mb_per_s(&self) -> f64 {
        self.bytes / self.secs / 1e6
    }
}

/// The operator's cost while `until` runs.
async fn measure(pid: u32, listen: &str, until: impl Future<Output = ()>) -> Phase {
    let m0 = scrape(listen).await.unwrap_or_default();
    let (c0, t0) = (cpu_secs(pid), Instant::now());
    until.await;
    let m1 = scrape(listen).await.unwrap_or_default();
    let (c1, took) = (cpu_secs(pid), t0.elapsed().as_secs_f64());
    Phase {
        secs: took,
        cpu: c1 - c0,
        bytes: metric_sum(&m1, BYTES) - metric_sum(&m0, BYTES),
        requests: metric_sum(&m1, REQUESTS) - metric_sum(&m0, REQUESTS),
        by_call: per_call_delta(&m0, &m1),
        hwm_mb: mem_mb(pid, "VmHWM:"),
        rss_mb: mem_mb(pid, "VmRSS:"),
        passes: metric_sum(&m1, PASSES) - metric_sum(&m0, PASSES),
        pass_secs: metric_sum(&m1, PASS_SECS) - metric_sum(&m0, PASS_SECS),
    }
}

fn per_call_delta(before: &str, after: &str) -> BTreeMap<String, (f64, f64)> {
    let (r0, b0) = (
        metric_by_call(before, REQUESTS),
        metric_by_call(before, BYTES),
    );
    let (r1, b1) = (
        metric_by_call(after, REQUESTS),
        metric_by_call(after, BYTES),
    );
    r1.iter()
        .map(|(call, r)| {
            let bytes = b1.get(call).copied().unwrap_or(0.0) - b0.get(call).copied().unwrap_or(0.0);
            let requests = r - r0.get(call).copied().unwrap_or(0.0);
            (call.clone(), (requests, bytes))
        })
        .filter(|(_, (r, _))| *r > 0.0)
        .collect()
}

/// Waits until every service of the simulated swarm runs all the tasks it wants.
async fn sim_converged(manager: &str) {
    #[derive(serde::Deserialize)]
    struct Counts {
        #[serde(rename = "RunningTasks")]
        running: u64,
        #[serde(rename = "DesiredTasks")]
        desired: u64,
    }
    #[derive(serde::Deserialize)]
    struct Service {
        #[serde(rename = "ServiceStatus")]
        status: Option<Counts>,
    }
    let url = format!(
        "{}/services?status=true",
        manager.replace("tcp://", "http://")
    );
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        if let Ok(r) = http_client().get(&url, "application/json").await
            && let Ok(services) = serde_json::from_slice::<Vec<Service>>(&r.body)
            && !services.is_empty()
            && services
                .iter()
                .all(|s| s.status.as_ref().is_some_and(|c| c.running == c.desired))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("the simulated swarm did not converge in 10 minutes");
}

/// Waits until the operator answers `/metrics` and has finished a pass.
async fn operator_ready(listen: &str) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        if let Some(m) = scrape(listen).await
            && metric_sum(&m, "swarm_upgrade_reconciles_total") >= 1.0
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the operator did not complete a pass within 300 s");
}

type ReadyTimes = std::sync::Arc<std::sync::Mutex<BTreeMap<String, Vec<jiff::Timestamp>>>>;

/// How often the node being upgraded is looked at: the latency figures are this coarse.
const READY_POLL: Duration = Duration::from_millis(50);

/// Wall-clock instants at which each node the operator is upgrading was first seen Ready at
/// `version` by a manager (`GET /nodes/{id}`, every [`READY_POLL`]). Polled rather than read
/// from the event stream: a worker whose engine comes back within the heartbeat period never
/// goes `down`, so no event says it became `ready`.
fn watch_ready(managers: &[String], events: &Path, version: &str) -> ReadyTimes {
    let seen = ReadyTimes::default();
    let out = seen.clone();
    let managers: Vec<String> = managers
        .iter()
        .map(|m| m.replacen("tcp://", "http://", 1))
        .collect();
    let (events, version) = (events.to_path_buf(), version.to_string());
    tokio::spawn(async move {
        let client = http_client();
        loop {
            for (host, (id, since)) in upgrading(&events) {
                let known = out.lock().unwrap().get(&host).cloned().unwrap_or_default();
                if known.iter().any(|t| *t >= since) {
                    continue; // seen Ready in this cycle already: the first sighting counts
                }
                if let Some(at) = ready_at(&client, &managers, &id, &version).await {
                    out.lock().unwrap().entry(host).or_default().push(at);
                }
            }
            tokio::time::sleep(READY_POLL).await;
        }
    });
    seen
}

/// The nodes whose upgrade command the operator started and whose `ready` step it has not
/// logged yet: hostname -> (node ID, when the command started).
fn upgrading(events: &Path) -> BTreeMap<String, (String, jiff::Timestamp)> {
    let text = std::fs::read_to_string(events).unwrap_or_default();
    let mut out = BTreeMap::new();
    for v in text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    {
        let (Some(host), Some(id), Some(time)) = (
            v["hostname"].as_str(),
            v["node_id"].as_str(),
            v["time"].as_str().and_then(|t| t.parse().ok()),
        ) else {
            continue;
        };
        match v["step"].as_str() {
            Some("upgrade") => {
                out.insert(host.to_string(), (id.to_string(), time));
            }
            Some("ready") => {
                out.remove(host);
            }
            _ => {}
        }
    }
    out
}

/// Now, if the first manager that answers shows the node Ready at `version`.
async fn ready_at(
    client: &swarm_upgrade::http_client::HttpClient,
    managers: &[String],
    id: &str,
    version: &str,
) -> Option<jiff::Timestamp> {
    for m in managers {
        let Ok(answer) = client
            .get(&format!("{m}/nodes/{id}"), "application/json")
            .await
        else {
            continue;
        };
        let node: serde_json::Value = serde_json::from_slice(&answer.body).ok()?;
        let ready = node["Status"]["State"] == "ready"
            && node["Description"]["Engine"]["EngineVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with(version));
        // The wall clock: compared with the operator's wall-clock event times.
        #[allow(clippy::disallowed_methods)]
        return ready.then(jiff::Timestamp::now);
    }
    None
}

/// For each node the operator upgraded: from the simulator's last `ready` for that node between
/// the start of its upgrade command and the operator's `ready` step, to that step, in ms (a node
/// whose engine came back before the command returned is timed from then, too).
fn reaction_ms(events: &Path, ready: &BTreeMap<String, Vec<jiff::Timestamp>>) -> Vec<f64> {
    let text = std::fs::read_to_string(events).unwrap_or_default();
    let mut upgrade_at: BTreeMap<String, jiff::Timestamp> = BTreeMap::new();
    let mut out = vec![];
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(host), Some(step), Some(time)) = (
            v["hostname"].as_str(),
            v["step"].as_str(),
            v["time"]
                .as_str()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok()),
        ) else {
            continue;
        };
        match step {
            "upgrade" => {
                upgrade_at.insert(host.to_string(), time);
            }
            "ready" => {
                let Some(since) = upgrade_at.remove(host) else {
                    continue;
                };
                let sim_ready = ready.get(host).and_then(|ts| {
                    ts.iter()
                        .filter(|t| **t >= since && **t <= time)
                        .max()
                        .copied()
                });
                if let Some(r) = sim_ready {
                    out.push(time.duration_since(r).as_secs_f64() * 1000.0);
                }
            }
            _ => {}
        }
    }
    out
}

/// Until the operator's first reads are done: 5 s in which it read less than 1 MB (after a
/// start it reads each service's tasks once; at 5,000 nodes that takes a minute or more), at
/// most 600 s.
async fn caught_up(listen: &str) {
    let t0 = Instant::now();
    let mut before = metric_sum(&scrape(listen).await.unwrap_or_default(), BYTES);
    while t0.elapsed() < Duration::from_secs(600) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let now = metric_sum(&scrape(listen).await.unwrap_or_default(), BYTES);
        if now - before < 1e6 {
            return;
        }
        before = now;
    }
}

/// Until every manager is reactivated (the managers' phase of the rollout), at most `cap`.
async fn managers_done(events: &Path, managers: usize, cap: f64) {
    let t0 = Instant::now();
    while t0.elapsed().as_secs_f64() < cap {
        let text = std::fs::read_to_string(events).unwrap_or_default();
        let done = (text.lines())
            .filter(|l| {
                l.contains("\"role\":\"manager\"") && l.contains("\"step\":\"reactivated\"")
            })
            .count();
        if done >= managers {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sleep(secs: f64) {
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}

fn count_step(events: &Path, step: &str) -> usize {
    std::fs::read_to_string(events)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&format!("\"step\":\"{step}\"")))
        .count()
}

struct Row {
    nodes: usize,
    tasks: usize,
    idle: Phase,
    /// The rollout until every manager is upgraded and reactivated.
    managers: Phase,
    /// The workers' phase after it, for `FLEET_ROLL_SECS`.
    roll: Phase,
    /// Nodes upgraded in the workers' phase.
    workers_upgraded: usize,
    hwm_mb: f64,
    upgraded: usize,
    reaction: Vec<f64>,
}

async fn one_fleet(
    nodes: usize,
    per_node: usize,
    idle_secs: f64,
    roll_secs: f64,
    scale: f64,
) -> Row {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("fleet-cost-{nodes}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("work dir");
    eprintln!("fleet {nodes} nodes: starting the simulator");
    let sim = start_sim(nodes, per_node, scale);
    write_spec(&dir.join("spec.yaml"), FROM, &sim.control);
    let listen = format!("127.0.0.1:{}", free_port());
    let op = start_operator(&dir, &sim.managers, &listen);
    operator_ready(&listen).await;
    // Idle means a converged swarm: while tasks are still starting the operator rightly reads
    // the unconverged services' tasks. Then let the operator's passes catch up.
    sim_converged(&sim.managers[0]).await;
    caught_up(&listen).await;
    eprintln!("fleet {nodes} nodes: idle for {idle_secs} s");
    let idle = measure(op.pid(), &listen, sleep(idle_secs)).await;
    let events = dir.join("events.jsonl");
    let ready = watch_ready(&sim.managers, &events, TO);
    write_spec(&dir.join("spec.yaml"), TO, &sim.control);
    eprintln!("fleet {nodes} nodes: the managers' phase");
    let until = managers_done(&events, sim.managers.len(), 600.0);
    let managers = measure(op.pid(), &listen, until).await;
    let before = count_step(&events, "upgraded");
    eprintln!("fleet {nodes} nodes: the workers' phase for {roll_secs} s");
    let roll = measure(op.pid(), &listen, sleep(roll_secs)).await;
    let reaction = reaction_ms(&events, &ready.lock().unwrap());
    let row = Row {
        nodes,
        tasks: nodes * per_node,
        idle,
        managers,
        roll,
        workers_upgraded: count_step(&events, "upgraded") - before,
        hwm_mb: mem_mb(op.pid(), "VmHWM:"),
        upgraded: count_step(&events, "upgraded"),
        reaction,
    };
    drop(op);
    drop(sim);
    if std::env::var_os("FLEET_KEEP").is_some() {
        eprintln!(
            "fleet {nodes} nodes: spec, events and operator log kept in {}",
            dir.display()
        );
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    row
}

/// Where each phase's requests and bytes went, per call, per second.
fn print_calls(rows: &[Row]) {
    for r in rows {
        let phases = [
            ("idle", &r.idle),
            ("managers' phase", &r.managers),
            ("workers' phase", &r.roll),
        ];
        for (phase, p) in phases {
            let calls: Vec<String> = p
                .by_call
                .iter()
                .map(|(call, (n, b))| {
                    format!("{call} {:.1}/s {:.3} MB/s", n / p.secs, b / p.secs / 1e6)
                })
                .collect();
            println!(
                "{} nodes, {phase} ({:.1} s, {:.1} MB, CPU {:.2} %, at its end VmHWM {:.1} MB, VmRSS {:.1} MB; {:.0} passes of {:.0} ms on average): {}",
                r.nodes,
                p.secs,
                p.bytes / 1e6,
                p.cpu_pct(),
                p.hwm_mb,
                p.rss_mb,
                p.passes,
                1000.0 * p.pass_secs / p.passes.max(1.0),
                calls.join("; ")
            );
        }
    }
}

fn print(rows: &mut [Row]) {
    println!(
        "\n| nodes | tasks | operator VmHWM MB | CPU idle % | CPU rolling % | MB/s idle | MB/s rolling | MB per worker | req/s idle | req/s rolling | nodes upgraded | ready->next p50 ms | p99 ms |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let (p50, p99) = (
            percentile(&mut r.reaction, 0.5),
            percentile(&mut r.reaction, 0.99),
        );
        println!(
            "| {} | {} | {:.1} | {:.2} | {:.2} | {:.3} | {:.3} | {:.1} | {:.1} | {:.1} | {} | {:.0} | {:.0} |",
            r.nodes,
            r.tasks,
            r.hwm_mb,
            r.idle.cpu_pct(),
            r.roll.cpu_pct(),
            r.idle.mb_per_s(),
            r.roll.mb_per_s(),
            r.roll.bytes / 1e6 / r.workers_upgraded.max(1) as f64,
            r.idle.requests / r.idle.secs,
            r.roll.requests / r.roll.secs,
            r.upgraded,
            p50,
            p99
        );
    }
}

fn main() {
    if serve_sim_child().is_some() {
        return;
    }
    let fleets: Vec<usize> = std::env::var("FLEET_NODES")
        .unwrap_or_else(|_| "100,1000,5000".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let per_node = env_or("FLEET_TASKS_PER_NODE", 30);
    let idle = env_or("FLEET_IDLE_SECS", 60.0);
    let roll = env_or("FLEET_ROLL_SECS", 60.0);
    let scale = env_or("FLEET_TIME_SCALE", 5.0);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut rows = vec![];
    for n in fleets {
        rows.push(rt.block_on(one_fleet(n, per_node, idle, roll, scale)));
    }
    print(&mut rows);
    print_calls(&rows);
}
