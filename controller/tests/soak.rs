//! The soak (issue 13, part 7): one operator process enforcing the spec continuously while the
//! target version is flipped back and forth (26.1.5, 20.10.24, 26.1.5, ...), a worker's upgrade
//! fails (the rollout pauses; the fault is fixed and `swarm-upgrade resume` run), a worker's
//! engine stops and comes back between rollouts, and services have tasks rejected (the
//! simulator's restart-while-active fault). The operator's RSS and open file descriptors are
//! sampled throughout and printed; neither may grow after the first simulated hour beyond the
//! tolerances below, and every rollout must converge with the invariants held.
//!
//! Time: the simulated swarm runs at `SOAK_TIME_SCALE` (default 100) times real time; the
//! operator runs on real time, with its spec durations scaled down (settle 200ms, polls of
//! 250ms) so that it keeps pace. "Simulated hours" are the simulator's clock: 12 of them are
//! 12 h / 100 = 7.2 real minutes and some 50 rollouts, not 12 hours of the operator's timers.
//!
//!   cargo test -p swarm-upgrade --test soak                                 # short: 2 simulated hours (CI)
//!   SOAK_SIM_HOURS=12 cargo test -p swarm-upgrade --test soak -- --ignored --nocapture   # the soak

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use swarm_sim::SimConfig;
use swarm_upgrade::cluster::Role;
use swarm_upgrade::events::EventStep;
use swarm_upgrade::http_client::HttpClient;
use swarm_upgrade::marks;
use swarm_upgrade::spec::version_core;

mod common;
use common::invariants::{Rules, check_rollout};
use common::operator_process::{free_listen, wait_event};
use common::sim_lab::{BIN, SimLab, TARGET, kill9};

const OLD: &str = "20.10.24";
/// RSS may end up to this much above the first hour's highest sample.
const RSS_TOLERANCE: f64 = 0.10;
const RSS_SLACK_KIB: u64 = 2048;
/// Open descriptors may end up this many above the first hour's most.
const FD_SLACK: usize = 4;

fn env_f64(name: &str, default: f64) -> f64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// One look at the operator process.
#[derive(Debug, Clone, Copy)]
struct Sample {
    sim_hours: f64,
    real_secs: f64,
    rss_kib: u64,
    fds: usize,
    rollouts: usize,
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

struct Clock {
    lab_start_sim: i64,
    real_start: tokio::time::Instant,
}

impl Clock {
    fn sim_hours(&self, lab: &SimLab) -> f64 {
        (lab.sim.sim().now() - self.lab_start_sim) as f64 / 3.6e12
    }
}

/// Samples the operator every `every` until the returned handle is aborted.
fn sample_operator(
    lab: Arc<SimLab>,
    clock: Arc<Clock>,
    pid: u32,
    rollouts: Arc<Mutex<usize>>,
    every: Duration,
) -> (Arc<Mutex<Vec<Sample>>>, tokio::task::JoinHandle<()>) {
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let out = samples.clone();
    let task = tokio::spawn(async move {
        loop {
            if let (Some(rss_kib), Some(fds)) = (rss_kib(pid), open_fds(pid)) {
                out.lock().unwrap().push(Sample {
                    sim_hours: clock.sim_hours(&lab),
                    real_secs: clock.real_start.elapsed().as_secs_f64(),
                    rss_kib,
                    fds,
                    rollouts: *rollouts.lock().unwrap(),
                });
            }
            tokio::time::sleep(every).await;
        }
    });
    (samples, task)
}

fn spec_for(lab: &SimLab, target: &str) -> String {
    // The target flips down and back up.
    lab.spec_text(1, "    allowDowngrade: true\n").replace(
        &format!("version: \"{TARGET}\""),
        &format!("version: \"{target}\""),
    )
}

/// Until the events file has a `step` event (of `host`, if given) written after `since`.
async fn wait_step(
    lab: &SimLab,
    since: jiff::Timestamp,
    step: EventStep,
    host: Option<&str>,
    to: &str,
) {
    wait_event(lab, Duration::from_secs(180), |e| {
        e.step == step
            && e.time >= since
            && version_core(&e.to_version) == to
            && host.is_none_or(|h| e.hostname == h)
    })
    .await;
}

/// The last recorded frame at or before `at` (simulated nanoseconds), as an index.
fn frame_at(frames: &[swarm_sim::state::Frame], at: i64) -> usize {
    frames.iter().rposition(|f| f.at <= at).unwrap_or(0)
}

async fn run_soak(hours: f64) {
    let time_scale = env_f64("SOAK_TIME_SCALE", 100.0);
    let mut config = SimConfig {
        time_scale,
        ..SimConfig::default()
    };
    config.faults.restart_active = true;
    let lab = Arc::new(SimLab::start_converged(config).await);
    let clock = Arc::new(Clock {
        lab_start_sim: lab.sim.sim().now(),
        real_start: tokio::time::Instant::now(),
    });
    let workers: Vec<String> = lab
        .nodes()
        .await
        .into_iter()
        .filter(|n| n.role == Role::Worker)
        .map(|n| n.hostname)
        .collect();
    let (failing, restarted) = (workers[0].clone(), workers[1].clone());
    let listen = free_listen();
    let spec = lab.write_spec(&spec_for(&lab, TARGET));
    let mut op = lab.operator_with(&spec, &listen, false);
    let rollouts = Arc::new(Mutex::new(0usize));
    let (samples, sampler) = sample_operator(
        lab.clone(),
        clock.clone(),
        op.id(),
        rollouts.clone(),
        Duration::from_millis(500),
    );

    let mut cycle = 0usize;
    let mut target = TARGET;
    loop {
        cycle += 1;
        if cycle > 1 {
            target = if target == TARGET { OLD } else { TARGET };
        }
        let chaos = Chaos {
            fail_upgrade: (cycle % 3 == 2).then_some(failing.as_str()),
            restart_after: cycle.is_multiple_of(3).then_some(restarted.as_str()),
            time_scale,
        };
        one_rollout(&lab, target, cycle > 1, &chaos).await;
        *rollouts.lock().unwrap() += 1;
        if clock.sim_hours(&lab) >= hours && target == TARGET {
            break;
        }
    }
    sampler.abort();
    let rejections = metric_sum(&listen, "swarm_upgrade_task_rejections_total").await;
    kill9(&mut op);
    let samples = samples.lock().unwrap().clone();
    print_table(&samples, time_scale);
    println!(
        "{cycle} rollouts converged in {:.2} simulated hours ({:.0} real s); {rejections} task rejections counted",
        clock.sim_hours(&lab),
        clock.real_start.elapsed().as_secs_f64()
    );
    assert!(
        rejections > 0,
        "no service had a task rejected: the soak did not test that"
    );
    assert_no_growth(&samples);
    if let Ok(lab) = Arc::try_unwrap(lab) {
        lab.sim.shutdown().await;
    }
}

/// What goes wrong during one rollout.
struct Chaos<'a> {
    /// This worker's upgrade fails: the rollout pauses until the fault is fixed and
    /// `swarm-upgrade resume` runs.
    fail_upgrade: Option<&'a str>,
    /// This worker's engine stops and comes back once the rollout is done.
    restart_after: Option<&'a str>,
    time_scale: f64,
}

/// Flips the spec to `target` (when `flip`), waits for the rollout to complete through
/// `chaos`, and checks that it converged.
async fn one_rollout(lab: &SimLab, target: &str, flip: bool, chaos: &Chaos<'_>) {
    let flip_sim = lab.sim.sim().now();
    let flipped = swarm_upgrade::clock::Clock::system().now();
    if let Some(host) = chaos.fail_upgrade {
        set_fail_upgrade(lab, Some(host));
    }
    if flip {
        lab.write_spec(&spec_for(lab, target));
    }
    if let Some(host) = chaos.fail_upgrade {
        wait_step(lab, flipped, EventStep::Paused, Some(host), target).await;
        set_fail_upgrade(lab, None);
        resume(lab);
    }
    wait_step(lab, flipped, EventStep::Completed, None, target).await;
    assert_converged(lab, flip_sim, target).await;
    if let Some(host) = chaos.restart_after {
        restart_worker(lab, host, chaos.time_scale).await;
    }
}

fn set_fail_upgrade(lab: &SimLab, host: Option<&str>) {
    let mut faults = lab.sim.sim().faults();
    faults.fail_upgrade = host.map(String::from).into_iter().collect();
    lab.sim.sim().set_faults(faults);
}

fn resume(lab: &SimLab) {
    let out = Command::new(BIN)
        .args(["resume", "--docker-host"])
        .arg(lab.sim.manager_endpoints().join(","))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// Every node at `target` with no operator label, and the invariants over the rollout's
/// history (from the flip on).
async fn assert_converged(lab: &SimLab, flip_sim: i64, target: &str) {
    for n in lab.nodes().await {
        assert_eq!(version_core(&n.engine_version), target, "{n:?}");
        assert!(
            !marks::has_any(&n.labels),
            "{} keeps {:?}",
            n.hostname,
            n.labels
        );
    }
    let frames = lab.sim.sim().history();
    let rollout = &frames[frame_at(&frames, flip_sim)..];
    let rules = Rules::new(target, 1, &rollout[0]);
    let report = check_rollout(rollout, &rules);
    assert!(report.is_ok(), "rollout to {target}: {report}");
}

/// A worker's engine stops and comes back while nothing is under way (its tasks are rejected
/// for a while: it comes back active).
async fn restart_worker(lab: &SimLab, host: &str, time_scale: f64) {
    let sim = lab.sim.sim().clone();
    sim.stop_node(host).await.unwrap();
    // Three simulated minutes down: long enough for the swarm to see it down.
    tokio::time::sleep(Duration::from_secs_f64(180.0 / time_scale)).await;
    sim.start_node(host, None).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while lab.node(host).await.state != swarm_upgrade::cluster::State::Ready {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{host} never back Ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn metric_sum(listen: &str, family: &str) -> u64 {
    let client = HttpClient::new("soak", Duration::from_secs(2));
    let text = client
        .get(&format!("http://{listen}/metrics"), "*/*")
        .await
        .unwrap()
        .text();
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) || l.starts_with(&format!("{family} ")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// About 25 rows, evenly over the run.
fn print_table(samples: &[Sample], time_scale: f64) {
    println!("operator process, sampled every 0.5 real s (simulated time at x{time_scale}):");
    println!(
        "{:>9} {:>8} {:>9} {:>5} {:>8}",
        "sim h", "real s", "RSS KiB", "fds", "rollouts"
    );
    let step = (samples.len() / 25).max(1);
    for (i, s) in samples.iter().enumerate() {
        if i % step == 0 || i + 1 == samples.len() {
            println!(
                "{:>9.2} {:>8.1} {:>9} {:>5} {:>8}",
                s.sim_hours, s.real_secs, s.rss_kib, s.fds, s.rollouts
            );
        }
    }
}

/// After the first simulated hour, RSS stays within `RSS_TOLERANCE` (+ slack) of the first
/// hour's highest sample, and the open descriptors within `FD_SLACK` of its most.
fn assert_no_growth(samples: &[Sample]) {
    let (first, later): (Vec<&Sample>, Vec<&Sample>) =
        samples.iter().partition(|s| s.sim_hours < 1.0);
    assert!(
        !first.is_empty() && !later.is_empty(),
        "samples on both sides of the first simulated hour: {} and {}",
        first.len(),
        later.len()
    );
    let rss_first = first.iter().map(|s| s.rss_kib).max().unwrap();
    let rss_later = later.iter().map(|s| s.rss_kib).max().unwrap();
    let fds_first = first.iter().map(|s| s.fds).max().unwrap();
    let fds_later = later.iter().map(|s| s.fds).max().unwrap();
    let rss_limit = (rss_first as f64 * (1.0 + RSS_TOLERANCE)) as u64 + RSS_SLACK_KIB;
    println!(
        "RSS: first hour max {rss_first} KiB, later max {rss_later} KiB (limit {rss_limit}); fds: first hour max {fds_first}, later max {fds_later} (limit {})",
        fds_first + FD_SLACK
    );
    assert!(
        rss_later <= rss_limit,
        "the operator's RSS grew: {rss_first} -> {rss_later} KiB"
    );
    assert!(
        fds_later <= fds_first + FD_SLACK,
        "the operator's open descriptors grew: {fds_first} -> {fds_later}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_short() {
    run_soak(2.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the long soak: SOAK_SIM_HOURS (default 12) simulated hours, ~7 real minutes at x100"]
async fn soak() {
    run_soak(env_f64("SOAK_SIM_HOURS", 12.0)).await;
}
