//! Keeps the last good spec while the file changes: watch plus periodic re-read.
//!
//! The file's *parent directory* is watched (notify), not the file: editors save by writing a
//! new file and renaming it over the old one, and Kubernetes ConfigMap volumes swap a `..data`
//! symlink, so a watch on the file itself goes deaf after the first change. Any event in the
//! directory triggers a re-read after a short quiet period (bursts are debounced); the file is
//! also re-read every `reread_every` in case events are lost (network filesystems, a directory
//! that was itself replaced). Reading is cheap and a state is only published when it changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::Watcher as _;
use tokio::sync::{mpsc, watch};

use super::{EngineUpgrade, SpecError, parse_spec_bytes};

/// What the operator should act on, as last read from the spec file.
#[derive(Debug, Clone)]
pub struct SpecState {
    /// The last good spec; `None` only while the file has never been good.
    pub current: Option<Arc<EngineUpgrade>>,
    /// Bumps each time a good spec with a different content is loaded (first good load: 1;
    /// 0 while there has been none). Formatting- or comment-only edits do not count: the
    /// content is the parsed spec, not the bytes.
    pub generation: u64,
    /// Hash of `current`'s content (FNV-1a over its canonical JSON form; stable across runs,
    /// so it may be shown in status and metrics). 0 while there is no good spec.
    pub content_hash: u64,
    /// The latest load error; `None` when the file as it is now is good. While it is set the
    /// operator keeps acting on `current` and says so in its log, status and metrics.
    pub error: Option<SpecError>,
    /// When `current` was loaded (the first read of this generation's content); while there
    /// has never been a good spec, when the file was last read.
    pub loaded_at: jiff::Timestamp,
}

impl SpecState {
    /// Whether the operator is acting on an older spec than the file says (there is an error
    /// and a last good spec to fall back on).
    pub fn is_stale(&self) -> bool {
        self.error.is_some() && self.current.is_some()
    }
}

/// How a [`SpecWatcher`] notices changes.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Re-read the file this often whatever notify says (0 disables the periodic re-read).
    pub reread_every: Duration,
    /// Watch the parent directory with notify. Tests turn it off to prove the periodic path.
    pub use_notify: bool,
    /// Quiet period after a filesystem event before the file is read, so that a burst of
    /// events (write, chmod, rename) leads to one read of the finished file.
    pub debounce: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            reread_every: Duration::from_secs(30),
            use_notify: true,
            debounce: Duration::from_millis(100),
        }
    }
}

/// Watches a spec file and publishes [`SpecState`] on a `tokio::sync::watch` channel.
///
/// Dropping it stops the watching task (the receivers keep the last state).
pub struct SpecWatcher {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
    kick: mpsc::UnboundedSender<()>,
    // Kept alive for as long as the watcher; dropping it stops the OS watch.
    _notify: Option<notify::RecommendedWatcher>,
}

impl SpecWatcher {
    /// Loads `path` now (the receiver's first value already reflects the file), then keeps
    /// watching it: notify on the parent directory plus a re-read every `reread_every`.
    /// Must be called inside a tokio runtime.
    pub fn spawn(
        path: PathBuf,
        reread_every: Duration,
    ) -> (SpecWatcher, watch::Receiver<SpecState>) {
        Self::spawn_with(
            path,
            WatchOptions {
                reread_every,
                ..WatchOptions::default()
            },
        )
    }

    /// [`spawn`](Self::spawn) with every option.
    pub fn spawn_with(
        path: PathBuf,
        opts: WatchOptions,
    ) -> (SpecWatcher, watch::Receiver<SpecState>) {
        let mut loader = Loader::new(path.clone());
        let (tx, rx) = watch::channel(loader.initial());
        let (kick_tx, kick_rx) = mpsc::unbounded_channel();
        let notify = if opts.use_notify {
            start_notify(&path, kick_tx.clone())
        } else {
            None
        };
        let task = tokio::spawn(run(loader, tx, kick_rx, opts));
        let watcher = SpecWatcher {
            path,
            task,
            kick: kick_tx,
            _notify: notify,
        };
        (watcher, rx)
    }

    /// Asks for a re-read now (after the debounce), e.g. on SIGHUP.
    pub fn reload(&self) {
        let _ = self.kick.send(());
    }

    /// The spec file being watched.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SpecWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn start_notify(
    path: &Path,
    kick: mpsc::UnboundedSender<()>,
) -> Option<notify::RecommendedWatcher> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let handler = move |res: notify::Result<notify::Event>| {
        // Access events (reads, including our own) change nothing.
        if let Ok(ev) = &res
            && matches!(ev.kind, notify::EventKind::Access(_))
        {
            return;
        }
        let _ = kick.send(());
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the spec file; relying on the periodic re-read");
            return None;
        }
    };
    if let Err(e) = watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the spec file's directory; relying on the periodic re-read");
        return None;
    }
    Some(watcher)
}

async fn run(
    mut loader: Loader,
    tx: watch::Sender<SpecState>,
    mut kick: mpsc::UnboundedReceiver<()>,
    opts: WatchOptions,
) {
    let period = if opts.reread_every.is_zero() {
        Duration::from_secs(u64::from(u32::MAX))
    } else {
        opts.reread_every
    };
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tx.closed() => return,
            _ = interval.tick() => {}
            got = kick.recv() => {
                if got.is_none() {
                    // Only the watcher holds a sender; it is gone.
                    return;
                }
                // Debounce: wait until the directory has been quiet for `debounce`, at most
                // 20 times that in all.
                let deadline = tokio::time::Instant::now() + opts.debounce * 20;
                loop {
                    let quiet = tokio::time::sleep(opts.debounce);
                    tokio::select! {
                        _ = quiet => break,
                        more = kick.recv() => if more.is_none() { return },
                    }
                    if tokio::time::Instant::now() >= deadline {
                        break;
                    }
                }
            }
        }
        let next = loader.reload(&tx.borrow());
        if let Some(state) = next {
            tx.send_replace(state);
        }
    }
}

/// Reads the file and works out the next state.
struct Loader {
    path: PathBuf,
}

impl Loader {
    fn new(path: PathBuf) -> Self {
        Self { path }
    }

    fn read(&self) -> Result<EngineUpgrade, SpecError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => parse_spec_bytes(&bytes, &self.path),
            Err(e) => Err(SpecError {
                file: self.path.clone(),
                line: 0,
                column: 0,
                message: format!("cannot read the spec file: {e}"),
                hint: Some(
                    "check the path given to --spec; the last good spec stays in force".into(),
                ),
            }),
        }
    }

    fn initial(&mut self) -> SpecState {
        let empty = SpecState {
            current: None,
            generation: 0,
            content_hash: 0,
            error: None,
            loaded_at: crate::clock::label_time(),
        };
        self.reload(&empty).unwrap_or(empty)
    }

    /// The next state, or `None` if nothing changed.
    fn reload(&mut self, prev: &SpecState) -> Option<SpecState> {
        let now = crate::clock::label_time();
        match self.read() {
            Ok(spec) => {
                let hash = content_hash(&spec);
                let same = prev.current.is_some() && prev.content_hash == hash;
                if same {
                    // Unchanged, or good again after an error with the same content as before.
                    return prev.error.is_some().then(|| {
                        tracing::info!(file = %self.path.display(), generation = prev.generation, "spec file is good again; it is the spec in force");
                        SpecState {
                            error: None,
                            ..prev.clone()
                        }
                    });
                }
                let generation = prev.generation + 1;
                tracing::info!(
                    file = %self.path.display(),
                    generation,
                    name = %spec.metadata.name,
                    version = %spec.spec.version,
                    "loaded spec"
                );
                Some(SpecState {
                    current: Some(Arc::new(spec)),
                    generation,
                    content_hash: hash,
                    error: None,
                    loaded_at: now,
                })
            }
            Err(e) => {
                if prev.error.as_ref() == Some(&e) {
                    return None;
                }
                match &prev.current {
                    Some(_) => {
                        tracing::warn!(error = %e, generation = prev.generation, "spec file is not valid; keeping the last good spec")
                    }
                    None => {
                        tracing::error!(error = %e, "spec file is not valid and there is no good spec yet")
                    }
                }
                Some(SpecState {
                    error: Some(e),
                    loaded_at: if prev.current.is_some() {
                        prev.loaded_at
                    } else {
                        now
                    },
                    ..prev.clone()
                })
            }
        }
    }
}

/// [`super::stable_hash`] over the spec's canonical JSON form.
pub fn content_hash(spec: &EngineUpgrade) -> u64 {
    let json = serde_json::to_vec(spec).unwrap_or_default();
    super::stable_hash(&json)
}
