//! Bringing the lab up and down (the scripts in `e2e/lab/`), and the locks that keep one lab per
//! machine.

use anyhow::{Context, Result, bail};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Mutex, MutexGuard};

/// Where the lab keeps its sockets and pidfiles (see `e2e/lab/lib.sh`).
pub const RUN_DIR: &str = "/run/swarm-upgrade-e2e";
/// Where the hosts' data-roots live.
pub const LIB_DIR: &str = "/var/lib/swarm-upgrade-e2e";
/// Machine-wide lock: one lab at a time, whichever process (another `cargo test`) wants one.
const MACHINE_LOCK: &str = "/run/swarm-upgrade-e2e.lock";

static PROCESS_LOCK: Mutex<()> = Mutex::new(());

/// `e2e/lab/`: the host-side scripts.
pub fn lab_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("lab")
}

/// A script of `e2e/lab/`.
pub fn script(name: &str) -> PathBuf {
    lab_dir().join(name)
}

/// `e2e/stacks/NAME/docker-compose.yml`.
pub fn stack_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("stacks")
        .join(name)
        .join("docker-compose.yml")
}

/// `target/<profile>`: the folder above the test executable's `deps/`.
pub fn profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("current_exe")?;
    let deps = exe.parent().context("test executable has no folder")?;
    let dir = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().context("deps/ has no parent")?
    } else {
        deps
    };
    Ok(dir.to_path_buf())
}

/// The operator binary the tests drive: `target/<profile>/swarm-upgrade`. Cargo does not build
/// another package's binary for this crate's tests, so on a fresh checkout the error names the
/// command that builds it (`cargo test --workspace` builds it too).
pub fn operator_bin() -> Result<PathBuf> {
    let dir = profile_dir()?;
    let bin = dir.join("swarm-upgrade");
    if !bin.is_file() {
        let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug");
        bail!(
            "the operator binary {} is missing: run `{}` first, then the e2e suite again",
            bin.display(),
            build_command(profile)
        );
    }
    Ok(bin)
}

/// The command that builds the operator binary into `target/<profile>/`.
fn build_command(profile: &str) -> String {
    match profile {
        "debug" => "cargo build -p swarm-upgrade".to_string(),
        "release" => "cargo build --release -p swarm-upgrade".to_string(),
        other => format!("cargo build --profile {other} -p swarm-upgrade"),
    }
}

/// Where a scenario leaves its artefacts (engine logs, events, operator log, figures).
pub fn artefacts_dir(scenario: &str) -> Result<PathBuf> {
    let dir = profile_dir()?.join("e2e").join(scenario);
    std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
    Ok(dir)
}

/// The unix socket URL of a host's engine.
pub fn sock(host: &str) -> String {
    format!("unix://{RUN_DIR}/{host}.sock")
}

/// Fails, saying why, when the suite cannot run here (not root). The scenarios are
/// `#[ignore]`d, so only an explicit `-- --ignored` run reaches this: it never passes unchecked.
pub fn preflight() -> Result<()> {
    // SAFETY: geteuid has no preconditions and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the real-swarm suite builds network namespaces and runs engines: run it as root \
             (cargo test -p swarm-upgrade-e2e -- --ignored)"
        );
    }
    Ok(())
}

/// A running lab. Dropping it tears the lab down (also when the test panics).
pub struct Lab {
    scenario: String,
    down: bool,
    /// Seconds `lab-up` took (bundles, network, engines, images, swarm).
    pub setup_secs: f64,
    _machine_lock: std::fs::File,
    _process_lock: MutexGuard<'static, ()>,
}

impl Lab {
    /// Tear down whatever an earlier run left and bring up a fresh lab at 20.10.24: 5 engines,
    /// a 3-manager/2-worker swarm, the busybox and client images on every host.
    pub async fn up(scenario: &str) -> Result<Lab> {
        let process_lock = PROCESS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let machine_lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(MACHINE_LOCK)
            .with_context(|| format!("open {MACHINE_LOCK}"))?;
        let fd = machine_lock.as_raw_fd();
        // Blocking wait for another process's lab to finish; nothing else runs on this test's
        // runtime meanwhile, so blocking it is what we want.
        let rc = block_in_place_or(|| {
            // SAFETY: flock on a descriptor we own.
            unsafe { libc::flock(fd, libc::LOCK_EX) }
        });
        if rc != 0 {
            bail!("flock {MACHINE_LOCK}: {}", std::io::Error::last_os_error());
        }
        let bin = operator_bin()?;
        let mut lab = Lab {
            scenario: scenario.to_string(),
            down: false,
            setup_secs: 0.0,
            _machine_lock: machine_lock,
            _process_lock: process_lock,
        };
        eprintln!("[{scenario}] lab-up");
        let t0 = tokio::time::Instant::now();
        let out = tokio::process::Command::new(script("lab-up"))
            .env("SWARM_UPGRADE_BIN", &bin)
            .env_remove("SWARM_UPGRADE_E2E_FAIL_HOSTS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await
            .context("running e2e/lab/lab-up")?;
        lab.setup_secs = t0.elapsed().as_secs_f64();
        let stderr = String::from_utf8_lossy(&out.stderr);
        for line in stderr.lines() {
            eprintln!("[{scenario}] {line}");
        }
        if !out.status.success() {
            bail!("lab-up failed ({}): {stderr}", out.status);
        }
        eprintln!("[{scenario}] lab up in {:.1}s", lab.setup_secs);
        Ok(lab)
    }

    pub fn scenario(&self) -> &str {
        &self.scenario
    }

    /// Tear the lab down now (engine logs kept in the scenario's artefacts folder).
    pub fn down(&mut self) -> Result<()> {
        if self.down {
            return Ok(());
        }
        self.down = true;
        let keep = artefacts_dir(&self.scenario)?;
        let t0 = tokio::time::Instant::now();
        let status = std::process::Command::new(script("lab-down"))
            .env("SWARM_UPGRADE_E2E_KEEP_LOGS", &keep)
            .stdin(Stdio::null())
            .status()
            .context("running e2e/lab/lab-down")?;
        eprintln!(
            "[{}] lab down in {:.1}s (engine logs in {})",
            self.scenario,
            t0.elapsed().as_secs_f64(),
            keep.display()
        );
        if !status.success() {
            bail!("lab-down failed: {status}");
        }
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = self.down() {
            eprintln!("[{}] teardown: {e:#}", self.scenario);
        }
    }
}

/// Run a blocking call; on a multi-thread runtime tell tokio first.
fn block_in_place_or<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::build_command;

    #[test]
    fn the_missing_binary_error_names_the_build_command_of_its_profile() {
        assert_eq!(build_command("debug"), "cargo build -p swarm-upgrade");
        assert_eq!(
            build_command("release"),
            "cargo build --release -p swarm-upgrade"
        );
        assert_eq!(
            build_command("ci"),
            "cargo build --profile ci -p swarm-upgrade"
        );
    }
}
