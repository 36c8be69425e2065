//! parse_spec: every class of bad spec names file, line, column and what to write instead.

use std::path::Path;
use std::time::Duration;

use swarm_upgrade::spec::{SpecError, Weekday, load_spec_file, parse_spec};

const GOOD: &str = r#"apiVersion: swarm-upgrade.io/v1alpha1
kind: EngineUpgrade
metadata:
  name: engine-26
spec:
  version: "26.1.5"
  upgrade:
    command: ["/opt/upgrade-engine", "{hostname}", "{version}"]
    rollback: ["/opt/rollback-engine", "{hostname}"]
    timeout: 10m
  strategy:
    maxUnavailableWorkers: 2
    drainTimeout: 5m
    readyTimeout: 4m
    settle: 10s
    paused: false
  nodeSelector: { labels: { tier: web }, hostnames: [] }
  window:
    days: [fri]
    start: "22:00"
    end: "04:00"
    timezone: UTC
"#;

/// GOOD with `from` (which must occur once) replaced by `to`.
fn edit(from: &str, to: &str) -> String {
    assert_eq!(
        GOOD.matches(from).count(),
        1,
        "{from:?} must occur once in GOOD"
    );
    GOOD.replace(from, to)
}

fn err(text: &str) -> SpecError {
    let e = parse_spec(text, Path::new("specs/prod.yaml")).expect_err("the spec must be refused");
    assert_eq!(e.file, Path::new("specs/prod.yaml"));
    e
}

#[track_caller]
fn assert_at(e: &SpecError, line: usize, column: usize, message: &str, hint: &str) {
    assert_eq!((e.line, e.column), (line, column), "wrong place: {e}");
    assert!(
        e.message.contains(message),
        "message {:?} lacks {message:?}",
        e.message
    );
    let h = e.hint.as_deref().unwrap_or_default();
    assert!(h.contains(hint), "hint {h:?} lacks {hint:?}");
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!("specs/prod.yaml:{line}:{column}: ")),
        "{shown}"
    );
}

#[test]
fn good_spec_parses_with_all_fields() {
    let s = parse_spec(GOOD, Path::new("x.yaml")).unwrap();
    assert_eq!(s.metadata.name, "engine-26");
    assert_eq!(s.spec.version, "26.1.5");
    assert_eq!(s.spec.upgrade.command[1], "{hostname}");
    assert_eq!(s.spec.upgrade.rollback.as_ref().unwrap().len(), 2);
    assert_eq!(s.spec.upgrade.timeout.get(), Duration::from_secs(600));
    assert_eq!(s.spec.strategy.max_unavailable_workers, 2);
    assert_eq!(
        s.spec.strategy.ready_timeout.get(),
        Duration::from_secs(240)
    );
    assert_eq!(s.spec.node_selector.labels["tier"], "web");
    assert_eq!(s.spec.window.as_ref().unwrap().days, vec![Weekday::Fri]);
}

#[test]
fn defaults_apply() {
    let s = parse_spec(
        "apiVersion: swarm-upgrade.io/v1alpha1\nkind: EngineUpgrade\nmetadata: {name: m}\nspec:\n  version: 26.1.5\n  upgrade:\n    command: [/bin/true]\n",
        Path::new("x.yaml"),
    )
    .unwrap();
    assert_eq!(s.spec.version, "26.1.5");
    assert_eq!(s.spec.upgrade.timeout.get(), Duration::from_secs(600));
    assert_eq!(s.spec.strategy.max_unavailable_workers, 1);
    assert_eq!(
        s.spec.strategy.drain_timeout.get(),
        Duration::from_secs(300)
    );
    assert_eq!(
        s.spec.strategy.ready_timeout.get(),
        Duration::from_secs(300)
    );
    assert_eq!(s.spec.strategy.settle.get(), Duration::from_secs(10));
    assert!(!s.spec.strategy.paused);
    assert!(s.spec.node_selector.labels.is_empty() && s.spec.node_selector.hostnames.is_empty());
    assert!(s.spec.window.is_none() && s.spec.upgrade.rollback.is_none());
    assert!(s.spec.is_target("26.1.5+dfsg1"));
}

#[test]
fn yaml_syntax_error() {
    let e = err(&edit(
        "    timeout: 10m\n",
        "    timeout: 10m\n   bad: [1, 2\n",
    ));
    assert!(e.line >= 11, "{e}");
    assert!(e.column >= 1, "{e}");
    assert!(e.hint.unwrap().contains("indent with spaces"));

    let e = err(&edit("  version: \"26.1.5\"", "  version: \"26.1.5"));
    assert!(e.line >= 6, "{e}");
}

#[test]
fn tab_indentation_is_a_syntax_error() {
    let e = err(&edit("  version: \"26.1.5\"", "\tversion: \"26.1.5\""));
    assert_eq!(e.line, 6, "{e}");
    assert!(e.hint.unwrap().contains("not tabs"));
}

#[test]
fn unknown_field_names_the_valid_ones() {
    let e = err(&edit("    timeout: 10m", "    timout: 10m"));
    assert_at(
        &e,
        10,
        5,
        "unknown field `timout` in spec.upgrade",
        "did you mean `timeout`?",
    );
    assert!(
        e.hint
            .as_deref()
            .unwrap()
            .contains("command, rollback, timeout"),
        "{e}"
    );

    let e = err(&edit("    paused: false", "    pause: false"));
    assert_at(
        &e,
        16,
        5,
        "unknown field `pause`",
        "maxUnavailableWorkers, drainTimeout, readyTimeout, settle, paused",
    );

    let e = err(&format!("{GOOD}status: {{}}\n"));
    assert_at(
        &e,
        23,
        1,
        "unknown field `status` at the top level",
        "apiVersion, kind, metadata, spec",
    );

    let e = err(&edit("labels: { tier: web }", "label: { tier: web }"));
    assert_at(
        &e,
        17,
        19,
        "unknown field `label` in spec.nodeSelector",
        "did you mean `labels`?",
    );
}

#[test]
fn missing_field() {
    let e = err(&edit("  version: \"26.1.5\"\n", ""));
    assert_at(
        &e,
        5,
        1,
        "missing field `version` in spec",
        "add `version:` under spec",
    );
    let e =
        err("apiVersion: swarm-upgrade.io/v1alpha1\nkind: EngineUpgrade\nmetadata: {name: x}\n");
    assert_at(
        &e,
        1,
        1,
        "missing field `spec` at the top level",
        "add `spec:` at the top level",
    );
}

#[test]
fn bad_duration() {
    let e = err(&edit("timeout: 10m", "timeout: 10 minutes"));
    assert_at(
        &e,
        10,
        14,
        "invalid duration \"10 minutes\"",
        "\"30s\", \"10m\", \"1h30m\"",
    );
    assert!(e.message.contains("spec.upgrade.timeout"), "{e}");
    let e = err(&edit("settle: 10s", "settle: 10"));
    assert_at(
        &e,
        15,
        13,
        "a unit is missing",
        "write a number with a unit",
    );
}

#[test]
fn wrong_type() {
    let e = err(&edit(
        "    command: [\"/opt/upgrade-engine\", \"{hostname}\", \"{version}\"]",
        "    command: /opt/upgrade-engine {hostname}",
    ));
    assert_at(&e, 8, 14, "expected sequence", "write a list");
    let e = err(&edit(
        "maxUnavailableWorkers: 2",
        "maxUnavailableWorkers: two",
    ));
    assert_eq!((e.line, e.column), (12, 28), "{e}");
    let e = err(&edit("days: [fri]", "days: [fri, funday]"));
    assert_at(
        &e,
        19,
        17,
        "unknown value `funday`",
        "mon, tue, wed, thu, fri, sat, sun",
    );
}

#[test]
fn wrong_api_version_and_kind() {
    let e = err(&edit(
        "apiVersion: swarm-upgrade.io/v1alpha1",
        "apiVersion: swarm-upgrade.io/v1",
    ));
    assert_at(
        &e,
        1,
        1,
        "apiVersion is \"swarm-upgrade.io/v1\"",
        "write `apiVersion: swarm-upgrade.io/v1alpha1`",
    );
    // Checked before the fields, so another kind is not reported as unknown fields.
    let e = err("apiVersion: swarm-upgrade.io/v1alpha1\nkind: Deployment\nspec: {replicas: 3}\n");
    assert_at(
        &e,
        2,
        1,
        "kind is \"Deployment\"",
        "write `kind: EngineUpgrade`",
    );
}

#[test]
fn empty_version() {
    let e = err(&edit("version: \"26.1.5\"", "version: \"\""));
    assert_at(&e, 6, 3, "spec.version is empty", "version: \"26.1.5\"");
}

#[test]
fn version_not_n_n_n() {
    let e = err(&edit("version: \"26.1.5\"", "version: \"26.1\""));
    assert_at(
        &e,
        6,
        3,
        "\"26.1\" is not a version like N.N.N",
        "build metadata after '+'",
    );
    let e = err(&edit("version: \"26.1.5\"", "version: v26.1.5"));
    assert_at(&e, 6, 3, "not a version", "\"26.1.5\"");
    assert!(
        parse_spec(
            &edit("version: \"26.1.5\"", "version: 26.1.5+dfsg1"),
            Path::new("x")
        )
        .is_ok()
    );
}

#[test]
fn empty_command_and_empty_program() {
    let e = err(&edit(
        "command: [\"/opt/upgrade-engine\", \"{hostname}\", \"{version}\"]",
        "command: []",
    ));
    assert_at(
        &e,
        8,
        5,
        "upgrade.command is empty",
        "command: [\"/opt/upgrade-engine\"",
    );
    let e = err(&edit(
        "command: [\"/opt/upgrade-engine\", \"{hostname}\", \"{version}\"]",
        "command: [\"\", \"{hostname}\"]",
    ));
    assert_at(
        &e,
        8,
        15,
        "upgrade.command[0], the program to run, is empty",
        "name the program",
    );
    let e = err(&edit(
        "rollback: [\"/opt/rollback-engine\", \"{hostname}\"]",
        "rollback: []",
    ));
    assert_at(&e, 9, 5, "upgrade.rollback is empty", "rollback: [");
}

#[test]
fn unknown_placeholder() {
    let e = err(&edit(
        "\"{hostname}\", \"{version}\"]",
        "\"{hostname}\", \"{target_version}\"]",
    ));
    assert_at(
        &e,
        8,
        52,
        "unknown placeholder {target_version}",
        "{id} {hostname} {addr} {role} {version} {current_version}",
    );
    let e = err(&edit(
        "[\"/opt/rollback-engine\", \"{hostname}\"]",
        "[\"/opt/rollback-engine\", \"{host\"]",
    ));
    assert_at(&e, 9, 40, "not closed", "{{");
    // Doubled braces are literal.
    assert!(
        parse_spec(
            &edit(
                "\"{hostname}\", \"{version}\"]",
                "\"{hostname}\", \"{{x}}\"]"
            ),
            Path::new("x")
        )
        .is_ok()
    );
}

#[test]
fn max_unavailable_zero() {
    let e = err(&edit(
        "maxUnavailableWorkers: 2",
        "maxUnavailableWorkers: 0",
    ));
    assert_at(&e, 12, 5, "maxUnavailableWorkers is 0", "at least 1");
}

#[test]
fn zero_timeouts() {
    let e = err(&edit("timeout: 10m", "timeout: 0s"));
    assert_at(&e, 10, 5, "upgrade.timeout is zero", "positive duration");
    let e = err(&edit("drainTimeout: 5m", "drainTimeout: 0m"));
    assert_at(
        &e,
        13,
        5,
        "strategy.drainTimeout is zero",
        "drainTimeout: 5m",
    );
    let e = err(&edit("readyTimeout: 4m", "readyTimeout: 0ms"));
    assert_at(
        &e,
        14,
        5,
        "strategy.readyTimeout is zero",
        "positive duration",
    );
    // A zero settle is fine.
    assert!(parse_spec(&edit("settle: 10s", "settle: 0s"), Path::new("x")).is_ok());
}

#[test]
fn window_time_not_hh_mm() {
    let e = err(&edit("start: \"22:00\"", "start: \"10pm\""));
    assert_at(
        &e,
        20,
        5,
        "start time \"10pm\" is not HH:MM",
        "\"00:00\" to \"23:59\"",
    );
    let e = err(&edit("end: \"04:00\"", "end: \"24:00\""));
    assert_at(
        &e,
        21,
        5,
        "end time \"24:00\" is not HH:MM",
        "end: \"22:00\"",
    );
}

#[test]
fn unknown_timezone() {
    let e = err(&edit("timezone: UTC", "timezone: Mars/Olympus"));
    assert_at(
        &e,
        22,
        5,
        "unknown time zone \"Mars/Olympus\"",
        "Europe/Berlin",
    );
    assert!(
        parse_spec(
            &edit("timezone: UTC", "timezone: America/New_York"),
            Path::new("x")
        )
        .is_ok()
    );
}

#[test]
fn empty_days() {
    let e = err(&edit("days: [fri]", "days: []"));
    assert_at(&e, 19, 5, "no days", "days: [mon, tue, wed, thu, fri]");
}

#[test]
fn empty_name() {
    let e = err(&edit("name: engine-26", "name: \"\""));
    assert_at(&e, 4, 3, "metadata.name is empty", "name: engine-26");
}

#[test]
fn empty_file_and_multiple_documents() {
    let e = err("");
    assert_eq!((e.line, e.column), (1, 1), "{e}");
    assert!(e.hint.unwrap().contains("apiVersion"));
    // A lone carriage return is a line break to the parser, not to an editor (found by
    // spec_fuzz): the error stays on the file's one line.
    let e = err("\r");
    assert_eq!((e.line, e.column), (1, 2), "{e}");
    let e = err(&format!("{GOOD}---\n{GOOD}"));
    assert!(e.line >= 23, "{e}");
    assert!(e.hint.unwrap().contains("single document"));
}

#[test]
fn load_spec_file_reads_and_reports_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, GOOD).unwrap();
    assert_eq!(load_spec_file(&good).unwrap().spec.version, "26.1.5");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, edit("timeout: 10m", "timeout: soon")).unwrap();
    let e = load_spec_file(&bad).unwrap_err();
    assert_eq!(e.file, bad);
    assert_eq!((e.line, e.column), (10, 14));
    let e = load_spec_file(&dir.path().join("missing.yaml")).unwrap_err();
    assert!(e.message.contains("cannot read"), "{e}");
}
