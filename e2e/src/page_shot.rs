//! A screenshot of the operator's live rollout page (`GET /`), taken by Debian's headless
//! Chromium, for the scenario's artefacts.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::lab::artefacts_dir;
use crate::operator::Operator;

const CHROMIUM: &str = "/usr/bin/chromium";

/// The page at a rollout's end: an operator started again (`run`, no `--once`) on the
/// upgraded swarm, appending to the scenario's events file, serves it once it has planned.
pub async fn screenshot_page_at_end(scenario: &str, spec: &str) -> Result<PathBuf> {
    let op = Operator::start_again(scenario, spec, false).await?;
    crate::wait_for(
        "the operator started again to report the rollout complete",
        Duration::from_secs(60),
        Duration::from_millis(250),
        || async {
            let status: serde_json::Value = serde_json::from_str(&op.get("/status").await?)?;
            Ok((status["phase"] == "complete").then_some(()))
        },
    )
    .await?;
    screenshot_page(scenario, &op).await
}

/// Saves the page `op` serves as `rollout-page.png` in the scenario's artefacts folder, once its
/// first status has loaded (the page polls `/status`; Chromium's virtual time lets it).
pub async fn screenshot_page(scenario: &str, op: &Operator) -> Result<PathBuf> {
    if !std::path::Path::new(CHROMIUM).is_file() {
        bail!("{CHROMIUM} is missing: apt install chromium (.ci/run installs it)");
    }
    let dir = artefacts_dir(scenario)?;
    let out = dir.join("rollout-page.png");
    let _ = std::fs::remove_file(&out);
    let profile = tempfile::tempdir().context("a profile folder for chromium")?;
    let mut cmd = tokio::process::Command::new(CHROMIUM);
    cmd.args(swarm_upgrade::page::export::headless_flags(profile.path()))
        .args(["--window-size=1280,2200", "--virtual-time-budget=5000"])
        .arg(format!("--screenshot={}", out.display()))
        .arg(format!("http://127.0.0.1:{}/", op.port))
        .kill_on_drop(true);
    let run = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .context("chromium took over 60 s for one screenshot")?
        .context("starting chromium")?;
    if !run.status.success() || !out.is_file() {
        bail!(
            "chromium failed ({}) to save {}: {}",
            run.status,
            out.display(),
            String::from_utf8_lossy(&run.stderr)
        );
    }
    Ok(out)
}
