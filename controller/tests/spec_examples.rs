//! Every file in crds-like-specs/examples/ is a working spec.

use std::path::PathBuf;

use swarm_upgrade::spec::load_spec_file;

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds-like-specs/examples")
}

#[test]
fn every_example_parses_and_validates() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(examples_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "examples missing: {files:?}");
    for f in &files {
        if let Err(e) = load_spec_file(f) {
            panic!("{e}");
        }
    }
}

#[test]
fn examples_are_what_they_say() {
    let load =
        |name: &str| load_spec_file(&examples_dir().join(name)).unwrap_or_else(|e| panic!("{e}"));

    let full = load("full.yaml");
    let s = &full.spec;
    assert!(s.upgrade.rollback.is_some() && s.window.is_some());
    assert!(!s.node_selector.labels.is_empty() && !s.node_selector.hostnames.is_empty());

    let sim = load("sim-demo.yaml");
    assert_eq!(
        sim.spec.upgrade.command,
        [
            "swarm-upgrade",
            "sim",
            "node",
            "upgrade",
            "--sim",
            "http://127.0.0.1:2375",
            "{hostname}",
            "{version}"
        ]
    );

    let apt = load("apt-over-ssh.yaml");
    let argv = &apt.spec.upgrade.command;
    assert_eq!(argv[0], "ssh");
    // Node data only as whole argv elements, after `--`, never inside a shell string.
    let addr = argv
        .iter()
        .position(|a| a == "{addr}")
        .expect("{addr} element");
    assert_eq!(argv[addr - 1], "--");
    for a in argv {
        assert!(
            !a.contains('{') || a.starts_with('{') && a.ends_with('}'),
            "{a:?} mixes node data into a string"
        );
        assert!(!a.contains(' '), "{a:?} looks like a shell string");
    }

    let min = load("minimal.yaml");
    assert!(min.spec.window.is_none() && min.spec.upgrade.rollback.is_none());
}
