//! `swarm-upgrade timeline`: writes the timeline of an events file as SVG, or as PNG through a
//! headless Chromium when one is installed (argv only, a fresh profile each time).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::timeline::{Timeline, TimelineError};

/// The browsers tried, in order, for a PNG (Debian's package first).
pub(crate) const RENDERERS: [&str; 3] = ["chromium", "chromium-browser", "google-chrome"];

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Timeline(#[from] TimelineError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: the picture is written as .svg or .png; name the file so")]
    UnknownFormat { path: PathBuf },
    #[error(
        "no renderer for a PNG: none of {} is on PATH; install Chromium (apt install chromium) or write an .svg",
        RENDERERS.join(", ")
    )]
    NoRenderer,
    #[error("cannot start the renderer {program}: {source}")]
    RendererStart {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("the renderer {program} failed ({status}) without writing {out}: {stderr}")]
    RendererFailed {
        program: PathBuf,
        status: std::process::ExitStatus,
        out: PathBuf,
        stderr: String,
    },
}

/// Draws the timeline of `events` into `out` (.svg, or .png with `renderer` or one on PATH).
pub fn export(events: &Path, out: &Path, renderer: Option<&Path>) -> Result<(), ExportError> {
    let timeline = Timeline::from_file(events)?;
    let svg = super::render::svg(&timeline);
    let write_error = |source| ExportError::Write {
        path: out.to_path_buf(),
        source,
    };
    match out.extension().and_then(|e| e.to_str()) {
        Some("svg") => std::fs::write(out, svg).map_err(write_error),
        Some("png") => {
            let program = match renderer {
                Some(p) => p.to_path_buf(),
                None => find_renderer().ok_or(ExportError::NoRenderer)?,
            };
            let (width, height) = super::render::size(&timeline);
            let dir = tempfile::tempdir().map_err(write_error)?;
            let page = dir.path().join("timeline.svg");
            std::fs::write(&page, svg).map_err(write_error)?;
            let out = std::path::absolute(out).map_err(write_error)?;
            screenshot(&program, &page, &out, (width, height), dir.path())
        }
        _ => Err(ExportError::UnknownFormat {
            path: out.to_path_buf(),
        }),
    }
}

/// The first of [`RENDERERS`] on PATH.
pub(crate) fn find_renderer() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    RENDERERS.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// The flags of a headless Chromium that reaches nothing but the file it is shown and keeps
/// no state: a fresh profile in `profile`.
pub fn headless_flags(profile: &Path) -> Vec<String> {
    let mut flags: Vec<String> = [
        "--headless",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ]
    .map(String::from)
    .into();
    // Chromium's sandbox refuses to run as root.
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        flags.push("--no-sandbox".into());
    }
    flags.push(format!("--user-data-dir={}", profile.display()));
    flags
}

fn screenshot(
    program: &Path,
    page: &Path,
    out: &Path,
    (width, height): (f64, f64),
    scratch: &Path,
) -> Result<(), ExportError> {
    let _ = std::fs::remove_file(out);
    let output = Command::new(program)
        .args(headless_flags(&scratch.join("profile")))
        .arg(format!("--window-size={},{}", width.ceil(), height.ceil()))
        .arg(format!("--screenshot={}", out.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .map_err(|source| ExportError::RendererStart {
            program: program.to_path_buf(),
            source,
        })?;
    if output.status.success() && out.is_file() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(ExportError::RendererFailed {
        program: program.to_path_buf(),
        status: output.status,
        out: out.to_path_buf(),
        stderr: stderr.lines().rev().take(5).collect::<Vec<_>>().join(" | "),
    })
}
