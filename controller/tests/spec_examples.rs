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
    assert_eq!(
        s.upgrade.unlock_key,
        Some(swarm_upgrade::spec::UnlockKeySource::File(
            "/run/secrets/swarm-unlock-key".into()
        ))
    );
    assert!(!s.node_selector.labels.is_empty() && !s.node_selector.hostnames.is_empty());
    assert!(!s.strategy.allow_downgrade);
    assert_eq!(
        s.health
            .blocking_services
            .labels
            .get("swarm-upgrade.blocking"),
        Some(&"true".to_string())
    );

    let sim = load("sim-demo.yaml");
    assert_eq!(
        sim.spec.upgrade.command,
        [
            "swarm-upgrade",
            "demo",
            "upgrade-node",
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

fn schema_validator() -> jsonschema::Validator {
    let path = examples_dir().join("../engineupgrade.schema.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::validator_for(&schema).expect("the committed schema is a valid JSON Schema")
}

fn yaml_to_json(text: &str) -> serde_json::Value {
    serde_saphyr::from_str(text).unwrap()
}

#[test]
fn every_example_matches_the_committed_json_schema() {
    let validator = schema_validator();
    for entry in std::fs::read_dir(examples_dir()).unwrap() {
        let path = entry.unwrap().path();
        if !path.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            continue;
        }
        let doc = yaml_to_json(&std::fs::read_to_string(&path).unwrap());
        let errors: Vec<String> = validator
            .iter_errors(&doc)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
    }
}

#[test]
fn the_json_schema_refuses_what_parse_spec_refuses() {
    let validator = schema_validator();
    let base = std::fs::read_to_string(examples_dir().join("full.yaml")).unwrap();
    assert!(validator.is_valid(&yaml_to_json(&base)));
    for (from, to) in [
        ("timeout: 15m", "timeout: 15 minutes"),
        ("timeout: 15m", "timout: 15m"),
        ("version: \"26.1.5\"", "version: \"26.1\""),
        ("\"--to\", \"{version}\"]", "\"--to\", \"{target}\"]"),
        ("maxUnavailableWorkers: 2", "maxUnavailableWorkers: 0"),
        ("start: \"22:00\"", "start: \"10pm\""),
        ("days: [mon, tue, wed, thu, fri]", "days: []"),
        ("days: [mon, tue, wed, thu, fri]", "days: [monday]"),
        ("kind: EngineUpgrade", "kind: Deployment"),
    ] {
        assert_eq!(base.matches(from).count(), 1, "{from}");
        let text = base.replace(from, to);
        assert!(
            swarm_upgrade::spec::parse_spec(&text, std::path::Path::new("x")).is_err(),
            "parse_spec accepts {to}"
        );
        assert!(
            !validator.is_valid(&yaml_to_json(&text)),
            "the schema accepts {to}"
        );
    }
    let empty_cmd = base.replace(
        "command: [\"/opt/upgrade-engine\", \"--node\", \"{hostname}\", \"--from\", \"{current_version}\", \"--to\", \"{version}\"]",
        "command: [\"\"]",
    );
    assert_ne!(empty_cmd, base);
    assert!(!validator.is_valid(&yaml_to_json(&empty_cmd)));
}
