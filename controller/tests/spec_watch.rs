//! SpecWatcher: keeps the last good spec, reports the error, picks up the fix without restart.

use std::path::Path;
use std::time::Duration;

use swarm_upgrade::spec::{SpecState, SpecWatcher, WatchOptions};
use tokio::sync::watch;

fn spec(version: &str, comment: &str) -> String {
    format!(
        "# {comment}\napiVersion: swarm-upgrade.io/v1alpha1\nkind: EngineUpgrade\nmetadata: {{name: t}}\nspec:\n  version: \"{version}\"\n  upgrade:\n    command: [/bin/true]\n"
    )
}

const BAD: &str = "apiVersion: swarm-upgrade.io/v1alpha1\nkind: EngineUpgrade\nmetadata: {name: t}\nspec:\n  version: \"26.1.5\"\n  upgrade:\n    command: [/bin/true]\n    timeout: forever\n";

/// Writes like an editor that saves in place.
fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// Writes like an editor that saves to a new file and renames it over the old one.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Waits (real time, for notify) until the state satisfies `pred`.
async fn wait_for(
    rx: &mut watch::Receiver<SpecState>,
    what: &str,
    pred: impl Fn(&SpecState) -> bool,
) -> SpecState {
    let got = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| pred(s)))
        .await
        .map(|r| r.map(|s| s.clone()));
    match got {
        Ok(Ok(s)) => s,
        _ => panic!("timed out waiting for {what}; state: {:?}", *rx.borrow()),
    }
}

fn version(s: &SpecState) -> &str {
    &s.current.as_ref().unwrap().spec.version
}

/// Notify-driven: the periodic re-read is far away.
fn notify_only() -> WatchOptions {
    WatchOptions {
        reread_every: Duration::from_secs(3600),
        use_notify: true,
        debounce: Duration::from_millis(50),
    }
}

#[tokio::test]
async fn good_bad_fixed_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spec.yaml");
    write(&path, &spec("26.1.5", "first"));
    let (_w, mut rx) = SpecWatcher::spawn_with(path.clone(), notify_only());
    {
        let s = rx.borrow_and_update();
        assert_eq!(s.generation, 1);
        assert_eq!(version(&s), "26.1.5");
        assert!(s.error.is_none() && s.content_hash != 0 && !s.is_stale());
    }
    let first_hash = rx.borrow().content_hash;

    // A bad edit keeps the last good spec and reports where and what.
    write(&path, BAD);
    let s = wait_for(&mut rx, "the error", |s| s.error.is_some()).await;
    assert_eq!(s.generation, 1);
    assert_eq!(version(&s), "26.1.5");
    assert!(s.is_stale());
    let e = s.error.unwrap();
    assert_eq!(
        (e.file.as_path(), e.line, e.column),
        (path.as_path(), 8, 14)
    );
    assert!(e.hint.unwrap().contains("\"10m\""));

    // Fixed back to the same content (a comment changed): error cleared, same generation.
    write(&path, &spec("26.1.5", "fixed"));
    let s = wait_for(&mut rx, "the error to clear", |s| s.error.is_none()).await;
    assert_eq!(s.generation, 1);
    assert_eq!(s.content_hash, first_hash);

    // A new version: new generation.
    write(&path, &spec("27.0.1", "next"));
    let s = wait_for(&mut rx, "the new version", |s| s.generation == 2).await;
    assert_eq!(version(&s), "27.0.1");
    assert_ne!(s.content_hash, first_hash);
    assert!(s.error.is_none());
}

#[tokio::test]
async fn replacement_by_rename_is_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spec.yaml");
    write(&path, &spec("26.1.5", "a"));
    let (_w, mut rx) = SpecWatcher::spawn_with(path.clone(), notify_only());
    replace(&path, &spec("26.1.6", "b"));
    let s = wait_for(&mut rx, "the renamed-in file", |s| s.generation == 2).await;
    assert_eq!(version(&s), "26.1.6");
    // The watch survives the rename: a second replacement is seen too.
    replace(&path, BAD);
    wait_for(&mut rx, "the error", |s| s.error.is_some()).await;
    replace(&path, &spec("26.1.7", "c"));
    let s = wait_for(&mut rx, "the second replacement", |s| s.generation == 3).await;
    assert_eq!(version(&s), "26.1.7");
    assert!(s.error.is_none());
}

#[cfg(unix)]
#[tokio::test]
async fn configmap_style_symlink_swap_is_picked_up() {
    use std::os::unix::fs::symlink;
    // Kubernetes: spec.yaml -> ..data/spec.yaml, ..data -> ..2025_01_01 (swapped atomically).
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("..v1")).unwrap();
    write(&d.join("..v1/spec.yaml"), &spec("26.1.5", "v1"));
    symlink("..v1", d.join("..data")).unwrap();
    symlink("..data/spec.yaml", d.join("spec.yaml")).unwrap();
    let (_w, mut rx) = SpecWatcher::spawn_with(d.join("spec.yaml"), notify_only());
    assert_eq!(version(&rx.borrow()), "26.1.5");

    std::fs::create_dir(d.join("..v2")).unwrap();
    write(&d.join("..v2/spec.yaml"), &spec("26.1.9", "v2"));
    symlink("..v2", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    std::fs::remove_dir_all(d.join("..v1")).unwrap();
    let s = wait_for(&mut rx, "the swapped ConfigMap", |s| s.generation == 2).await;
    assert_eq!(version(&s), "26.1.9");
}

#[tokio::test]
async fn burst_of_writes_is_one_reload() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spec.yaml");
    write(&path, &spec("26.1.0", "a"));
    let (_w, mut rx) = SpecWatcher::spawn_with(
        path.clone(),
        WatchOptions {
            debounce: Duration::from_millis(300),
            ..notify_only()
        },
    );
    for i in 1..=5 {
        write(&path, &spec(&format!("26.1.{i}"), "burst"));
    }
    let s = wait_for(&mut rx, "the burst", |s| s.generation >= 2).await;
    assert_eq!(version(&s), "26.1.5", "only the finished file is read");
    assert_eq!(s.generation, 2);
}

/// With notify off, the periodic re-read alone picks up changes (paused tokio time).
#[tokio::test(start_paused = true)]
async fn periodic_reread_without_notify() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spec.yaml");
    write(&path, &spec("26.1.5", "a"));
    let opts = WatchOptions {
        reread_every: Duration::from_secs(30),
        use_notify: false,
        debounce: Duration::from_millis(50),
    };
    let (_w, mut rx) = SpecWatcher::spawn_with(path.clone(), opts);
    rx.borrow_and_update();
    let start = tokio::time::Instant::now();

    write(&path, BAD);
    tokio::time::advance(Duration::from_secs(29)).await;
    tokio::task::yield_now().await;
    assert!(!rx.has_changed().unwrap(), "no re-read before the period");
    rx.changed().await.unwrap();
    assert!(start.elapsed() >= Duration::from_secs(30));
    {
        let s = rx.borrow_and_update();
        assert_eq!(version(&s), "26.1.5");
        assert_eq!(s.error.as_ref().unwrap().line, 8);
    }

    write(&path, &spec("26.1.6", "fixed"));
    rx.changed().await.unwrap();
    assert!(start.elapsed() >= Duration::from_secs(60));
    let s = rx.borrow_and_update().clone();
    assert_eq!(
        (version(&s), s.generation, s.error.is_none()),
        ("26.1.6", 2, true)
    );

    // An unchanged file publishes nothing.
    tokio::time::advance(Duration::from_secs(300)).await;
    tokio::task::yield_now().await;
    assert!(!rx.has_changed().unwrap());
}

#[tokio::test(start_paused = true)]
async fn missing_file_then_created_then_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spec.yaml");
    let opts = WatchOptions {
        reread_every: Duration::from_secs(10),
        use_notify: false,
        debounce: Duration::from_millis(50),
    };
    let (w, mut rx) = SpecWatcher::spawn_with(path.clone(), opts);
    assert_eq!(w.path(), path);
    {
        let s = rx.borrow_and_update();
        assert!(s.current.is_none() && s.generation == 0 && !s.is_stale());
        assert!(s.error.as_ref().unwrap().message.contains("cannot read"));
    }
    write(&path, &spec("26.1.5", "a"));
    w.reload();
    rx.changed().await.unwrap();
    assert_eq!(rx.borrow_and_update().generation, 1);

    std::fs::remove_file(&path).unwrap();
    rx.changed().await.unwrap();
    let s = rx.borrow_and_update().clone();
    assert_eq!(
        version(&s),
        "26.1.5",
        "a deleted file keeps the last good spec"
    );
    assert!(s.is_stale());
}

#[tokio::test]
async fn spawn_with_defaults_loads_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spec.yaml");
    write(&path, &spec("26.1.5", "a"));
    let (_w, rx) = SpecWatcher::spawn(path, Duration::from_secs(5));
    assert_eq!(rx.borrow().generation, 1);
}
