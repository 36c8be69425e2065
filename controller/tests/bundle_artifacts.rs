//! The deployable bundle (`charts/`) and the monitoring artifacts (`dashboards/`) against the
//! operator they belong to:
//!
//! - every `swarm_upgrade_*` name in the Grafana dashboard and the alert rules is exported by
//!   the operator's registry (operator and health families);
//! - the dashboard is well-formed for Grafana: unique panel ids, every panel and query on the
//!   `${datasource}` variable, no hard-coded datasource; its queries parse as PromQL;
//! - the alert rules parse, each has a summary and a description with cause and fix, and
//!   `promtool check rules` / `promtool test rules` pass (promtool is required: CI installs it);
//! - the stack file parses, has what running a single operator safely needs, and
//!   `docker stack config` accepts it; the scrape config is valid for Prometheus;
//! - the example spec in `charts/` parses with the operator's own parser.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bollard::models::{
    Ipam, IpamConfig, Network, Node, NodeDescription, Service, ServiceSpec, Task, TaskState,
    TaskStatus,
};
use serde::Deserialize;
use serde_json::Value;
use swarm_upgrade::health::{Reason, RejectionTracker, network_usage};
use swarm_upgrade::marks::Step;
use swarm_upgrade::metrics::{ErrorLabels, Metrics, NodeLabels, RoleLabels};
use swarm_upgrade::observe::Observation;
use swarm_upgrade::reconciler::HealthWatch;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("controller/ has a parent")
        .to_path_buf()
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn yaml(rel: &str) -> Value {
    serde_saphyr::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not valid YAML: {e}"))
}

fn dashboard() -> Value {
    serde_json::from_str(&read("dashboards/swarm-upgrade.json"))
        .unwrap_or_else(|e| panic!("dashboards/swarm-upgrade.json is not valid JSON: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Metric names
// ---------------------------------------------------------------------------------------------

/// A task in `state` with `Status.Err` = `err`.
fn problem_task(id: &str, state: TaskState, err: &str) -> Task {
    Task {
        id: Some(id.into()),
        service_id: Some("svc-id".into()),
        node_id: Some("node-id".into()),
        status: Some(TaskStatus {
            state: Some(state),
            err: Some(err.into()),
            timestamp: Some("2026-01-01T00:00:00Z".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The operator's exposition text with the health families registered, and a series in every
/// family: prometheus-client leaves a family without series out of the text entirely (no HELP
/// or TYPE line), so each is populated through the operator's public APIs.
fn exposition() -> String {
    let metrics = Metrics::new();
    let health = HealthWatch::new(&metrics);
    // Registered by `run --ha`, which the stack runs.
    metrics.with_registry(swarm_upgrade::lease::LeaseMetrics::register);
    metrics.reconciles.inc();
    for family in [&metrics.docker_api_errors, &metrics.reconcile_errors] {
        family
            .get_or_create(&ErrorLabels {
                error: "unreachable".into(),
            })
            .inc();
    }
    metrics
        .nodes
        .get_or_create(&NodeLabels {
            role: "manager".into(),
            step: "draining".into(),
        })
        .set(1);
    metrics
        .nodes_at_target
        .get_or_create(&RoleLabels {
            role: "manager".into(),
        })
        .set(2);
    metrics.observe_step(Step::Draining, 3.0);
    metrics.docker_api.record("services", 2048);
    metrics.reconcile_duration.observe(0.02);
    metrics
        .notifications_failed
        .get_or_create(&swarm_upgrade::metrics::NotificationFailureLabels {
            webhook: "ops-chat".into(),
            reason: "timeout".into(),
        })
        .inc();

    let service = Service {
        id: Some("svc-id".into()),
        spec: Some(ServiceSpec {
            name: Some("ex_service".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let node = Node {
        id: Some("node-id".into()),
        // An engine always sends the spec; the operator refuses a node without one.
        spec: Some(bollard::models::NodeSpec {
            role: Some(bollard::models::NodeSpecRoleEnum::WORKER),
            availability: Some(bollard::models::NodeSpecAvailabilityEnum::ACTIVE),
            ..Default::default()
        }),
        description: Some(NodeDescription {
            hostname: Some("tk1706-ubuntu-1".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let tasks = [
        problem_task(
            "t1",
            TaskState::REJECTED,
            "node is missing network attachments, ip addresses may be exhausted",
        ),
        problem_task("t2", TaskState::FAILED, "task: non-zero exit (1)"),
    ];
    let observation = Observation::from_engine_models(&[node], &[service], &[], &tasks).unwrap();
    let problems = RejectionTracker::new().observe(&observation);
    assert_eq!(problems.len(), 2, "{problems:?}");
    health.metrics.record_problems(&problems);
    health.metrics.probe_metrics().record("tasks.web:80", 3, 1);

    // The seed's network: a /27 overlay.
    let network = Network {
        id: Some("net-id".into()),
        name: Some("ex_default".into()),
        driver: Some("overlay".into()),
        scope: Some("swarm".into()),
        ipam: Some(Ipam {
            config: Some(vec![IpamConfig {
                subnet: Some("10.0.9.0/27".into()),
                gateway: Some("10.0.9.1".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let usage = network_usage(&Observation::from_engine_models(&[], &[], &[network], &[]).unwrap());
    assert_eq!(usage.len(), 1, "{usage:?}");
    health.metrics.set_network_usage(&usage);
    metrics.encode()
}

/// Sample names the exposition can carry, from its `# TYPE` lines: counters get `_total`,
/// histograms `_bucket`, `_sum` and `_count` (OpenMetrics, as prometheus-client writes them).
fn exported_sample_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            panic!("malformed TYPE line: {line}");
        };
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                names.insert(name.to_string());
            }
        }
    }
    names
}

/// Every `swarm_upgrade_*` identifier in `text`.
fn referenced_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("swarm_upgrade_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        // Skip a match inside a longer identifier (e.g. `my_swarm_upgrade_x`).
        let preceded = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if !preceded {
            names.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    names
}

#[test]
fn type_lines_agree_with_the_samples() {
    // prometheus-client writes no HELP/TYPE for a family without series, so the check below
    // depends on exposition() populating every family: each TYPE line must have samples, and
    // every sample name must be one derived from the TYPE lines.
    let text = exposition();
    let names = exported_sample_names(&text);
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let sample = line.split(['{', ' ']).next().unwrap_or_default();
        assert!(
            names.contains(sample),
            "sample {sample} not derived from TYPE lines"
        );
    }
    for name in &names {
        assert!(
            text.contains(&format!("\n{name}{{")) || text.contains(&format!("\n{name} ")),
            "{name} has no sample:\n{text}"
        );
    }
}

#[test]
fn every_metric_in_the_dashboard_and_alerts_is_exported() {
    let exported = exported_sample_names(&exposition());
    // Every family the brief names, so a renamed family is caught even if no query uses it.
    for name in [
        "swarm_upgrade_nodes",
        "swarm_upgrade_nodes_at_target",
        "swarm_upgrade_spec_valid",
        "swarm_upgrade_paused",
        "swarm_upgrade_complete",
        "swarm_upgrade_failed_nodes",
        "swarm_upgrade_network_free_addresses",
        "swarm_upgrade_network_capacity_addresses",
        "swarm_upgrade_step_duration_seconds_bucket",
        "swarm_upgrade_reconciles_total",
        "swarm_upgrade_reconcile_errors_total",
        "swarm_upgrade_docker_api_errors_total",
        "swarm_upgrade_task_rejections_total",
        "swarm_upgrade_task_failures_total",
        "swarm_upgrade_connectivity_errors_total",
        "swarm_upgrade_connectivity_probes_total",
        "swarm_upgrade_notifications_failed_total",
    ] {
        assert!(
            exported.contains(name),
            "{name} is not exported: {exported:?}"
        );
    }

    let mut sources = vec![(
        "dashboards/swarm-upgrade.json",
        dashboard_exprs().join("\n"),
    )];
    sources.push((
        "dashboards/alerts.yaml",
        alert_rules()
            .iter()
            .map(|r| r.expr.clone())
            .collect::<Vec<_>>()
            .join("\n"),
    ));
    for (file, text) in sources {
        let used = referenced_names(&text);
        assert!(
            used.len() >= 5,
            "{file}: suspiciously few metric names: {used:?}"
        );
        let missing: Vec<_> = used.difference(&exported).collect();
        assert!(
            missing.is_empty(),
            "{file} uses metrics the operator does not export: {missing:?}\nexported: {exported:?}"
        );
    }
}

#[test]
fn dashboard_uses_every_operator_family() {
    let used = referenced_names(&dashboard_exprs().join("\n"));
    let exported = exported_sample_names(&exposition());
    for name in exported.iter().filter(|n| n.starts_with("swarm_upgrade_")) {
        // A histogram is covered by any of its sample names.
        let family = name
            .strip_suffix("_bucket")
            .or_else(|| name.strip_suffix("_sum"))
            .or_else(|| name.strip_suffix("_count"))
            .unwrap_or(name);
        assert!(
            used.iter().any(|u| u == name || u.starts_with(family)),
            "the dashboard shows nothing of {name}"
        );
    }
}

#[test]
fn label_values_in_alerts_are_ones_the_operator_writes() {
    let reasons: BTreeSet<&str> = Reason::ALL.iter().map(|r| r.label()).collect();
    for rule in alert_rules() {
        let mut rest = rule.expr.as_str();
        while let Some(at) = rest.find("reason=\"") {
            let tail = &rest[at + "reason=\"".len()..];
            let end = tail.find('"').expect("closing quote");
            assert!(
                reasons.contains(&tail[..end]),
                "{}: reason {:?} is not one of {reasons:?}",
                rule.alert,
                &tail[..end]
            );
            rest = &tail[end..];
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Dashboard
// ---------------------------------------------------------------------------------------------

/// All panels, rows' nested panels included.
fn panels(dash: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().expect("panels is an array") {
        out.push(p);
        if let Some(nested) = p.get("panels").and_then(Value::as_array) {
            out.extend(nested);
        }
    }
    out
}

/// Every query of every panel, and the template variables' queries.
fn dashboard_exprs() -> Vec<String> {
    let dash = dashboard();
    let mut exprs = Vec::new();
    for p in panels(&dash) {
        for t in p["targets"].as_array().into_iter().flatten() {
            exprs.push(
                t["expr"]
                    .as_str()
                    .expect("every target has an expr")
                    .to_string(),
            );
        }
    }
    for v in dash["templating"]["list"].as_array().expect("templating") {
        if let Some(q) = v["query"]["query"].as_str() {
            exprs.push(q.to_string());
        }
    }
    exprs
}

fn is_datasource_variable(ds: &Value) -> bool {
    ds["uid"] == "${datasource}" && ds["type"] == "prometheus"
}

#[test]
fn dashboard_is_valid_grafana_json() {
    let dash = dashboard();
    let schema = dash["schemaVersion"].as_u64().expect("schemaVersion");
    assert!(
        (36..=41).contains(&schema),
        "schemaVersion {schema}, expected ~39"
    );
    assert!(dash["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(dash["uid"].as_str().is_some_and(|t| !t.is_empty()));

    let vars = dash["templating"]["list"].as_array().expect("variables");
    let ds_var = vars
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("a `datasource` variable");
    assert_eq!(ds_var["type"], "datasource");
    assert_eq!(ds_var["query"], "prometheus");

    let all = panels(&dash);
    assert!(all.len() >= 10, "only {} panels", all.len());
    let mut ids = BTreeSet::new();
    for p in &all {
        let id = p["id"].as_u64().expect("every panel has a numeric id");
        assert!(ids.insert(id), "panel id {id} is used twice");
        let title = p["title"].as_str().unwrap_or("?");
        let grid = &p["gridPos"];
        for k in ["h", "w", "x", "y"] {
            assert!(grid[k].is_u64(), "panel {title}: gridPos.{k}");
        }
        assert!(
            grid["x"].as_u64().unwrap() + grid["w"].as_u64().unwrap() <= 24,
            "panel {title} is wider than the grid"
        );
        if p["type"] == "row" {
            continue;
        }
        assert!(
            is_datasource_variable(&p["datasource"]),
            "panel {title}: datasource {} is not the ${{datasource}} variable",
            p["datasource"]
        );
        let targets = p["targets"].as_array().expect("every panel has targets");
        assert!(!targets.is_empty(), "panel {title} has no query");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert!(
                is_datasource_variable(&t["datasource"]),
                "panel {title}: a query's datasource {} is not the variable",
                t["datasource"]
            );
            assert!(refs.insert(t["refId"].as_str().expect("refId")));
            assert!(t["expr"].as_str().is_some_and(|e| !e.trim().is_empty()));
        }
    }

    // No hard-coded datasource anywhere: every `datasource` object is the variable, except
    // Grafana's own built-in annotation source.
    fn walk(v: &Value, path: &str) {
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    if k == "datasource" {
                        let builtin = child["uid"] == "-- Grafana --";
                        assert!(
                            builtin || is_datasource_variable(child),
                            "{path}.datasource = {child} is hard-coded"
                        );
                    }
                    walk(child, &format!("{path}.{k}"));
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(child, &format!("{path}[{i}]"));
                }
            }
            _ => {}
        }
    }
    walk(&dash, "$");
}

#[test]
#[ignore = "needs promtool (Debian package prometheus): cargo test --workspace -- --ignored"]
fn dashboard_queries_are_valid_promql() {
    // promtool parses expressions in rule files: turn each panel query into a recording rule,
    // with Grafana's variables replaced by what Grafana would send.
    let mut rules = String::from("groups:\n  - name: dashboard-queries\n    rules:\n");
    let dash = dashboard();
    let mut n = 0;
    for p in panels(&dash) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m")
                .replace("$__range", "6h")
                .replace("$job", "swarm-upgrade")
                .replace("$instance", ".*");
            assert!(!expr.contains('$'), "unexpanded variable in {expr}");
            n += 1;
            rules.push_str(&format!(
                "      - record: dashboard:query_{n}\n        expr: {}\n",
                serde_json::to_string(&expr).unwrap()
            ));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-queries.yaml");
    std::fs::write(&file, &rules).unwrap();
    let out = promtool(&["check", "rules", file.to_str().unwrap()], &repo());
    assert_success("promtool check rules (dashboard queries)", &out, &rules);
}

// ---------------------------------------------------------------------------------------------
// Alert rules
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Debug, Deserialize)]
struct RuleGroup {
    name: String,
    rules: Vec<AlertRule>,
}

#[derive(Debug, Deserialize)]
struct AlertRule {
    alert: String,
    expr: String,
    #[serde(default, rename = "for")]
    for_: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

fn alert_rules() -> Vec<AlertRule> {
    let file: RuleFile = serde_saphyr::from_str(&read("dashboards/alerts.yaml"))
        .unwrap_or_else(|e| panic!("dashboards/alerts.yaml: {e}"));
    file.groups.into_iter().flat_map(|g| g.rules).collect()
}

#[test]
fn alert_rules_parse_and_explain_cause_and_fix() {
    let file: RuleFile = serde_saphyr::from_str(&read("dashboards/alerts.yaml")).unwrap();
    assert_eq!(
        file.groups
            .iter()
            .map(|g| g.name.as_str())
            .collect::<Vec<_>>(),
        ["swarm-upgrade"]
    );
    let rules = alert_rules();
    let mut names = BTreeSet::new();
    for r in &rules {
        assert!(names.insert(r.alert.as_str()), "{} twice", r.alert);
        for key in ["summary", "description"] {
            let text = r.annotations.get(key).map(String::as_str).unwrap_or("");
            assert!(
                text.trim().len() >= 20,
                "{}: annotation `{key}` missing or too short",
                r.alert
            );
        }
        let description = &r.annotations["description"];
        assert!(
            description.contains("Cause") && description.contains("Fix"),
            "{}: the description must name the cause and the fix: {description}",
            r.alert
        );
        assert!(
            r.labels.contains_key("severity"),
            "{}: no severity label",
            r.alert
        );
    }
    for wanted in [
        "SwarmUpgradePausedByFailure",
        "SwarmUpgradeSpecInvalid",
        "SwarmUpgradeNetworkAttachmentsExhausted",
        "SwarmUpgradeSwarmNotActiveRejections",
        "SwarmUpgradeConnectivityErrors",
        "SwarmUpgradeNetworkNearCapacity",
        "SwarmUpgradeDockerApiUnreachable",
        "SwarmUpgradeOperatorDown",
    ] {
        assert!(names.contains(wanted), "no alert {wanted}");
    }
    let by_name: BTreeMap<_, _> = rules.iter().map(|r| (r.alert.as_str(), r)).collect();
    assert_eq!(
        by_name["SwarmUpgradeSpecInvalid"].for_.as_deref(),
        Some("5m")
    );
    let down = &by_name["SwarmUpgradeOperatorDown"].expr;
    assert!(down.contains("absent(up{job=\"swarm-upgrade\"})") && down.contains("== 0"));
    assert!(
        by_name["SwarmUpgradeNetworkAttachmentsExhausted"]
            .expr
            .contains("[10m]")
    );
    assert!(
        by_name["SwarmUpgradeSwarmNotActiveRejections"]
            .expr
            .contains("[10m]")
    );
}

/// Runs promtool; fails the test, with the way to install it, when it is missing.
fn promtool(args: &[&str], dir: &Path) -> Output {
    match Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "promtool is not installed, and the alert rules cannot be checked without it: \
             `apt-get install prometheus` (Debian/Ubuntu; .ci/run installs it), or put \
             promtool from a Prometheus release on PATH"
        ),
        Err(e) => panic!("running promtool: {e}"),
    }
}

fn assert_success(what: &str, out: &Output, context: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}\n---\n{context}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "needs promtool (Debian package prometheus): cargo test --workspace -- --ignored"]
fn promtool_checks_the_rules() {
    let out = promtool(
        &["check", "rules", "alerts.yaml"],
        &repo().join("dashboards"),
    );
    assert_success("promtool check rules dashboards/alerts.yaml", &out, "");
}

#[test]
#[ignore = "needs promtool (Debian package prometheus): cargo test --workspace -- --ignored"]
fn promtool_unit_tests_of_the_rules_pass() {
    let out = promtool(
        &["test", "rules", "alerts.test.yaml"],
        &repo().join("dashboards"),
    );
    assert_success("promtool test rules dashboards/alerts.test.yaml", &out, "");
    // Every alert is exercised by the unit tests, firing and not firing.
    let tests = read("dashboards/alerts.test.yaml");
    for r in alert_rules() {
        let name = format!("alertname: {}", r.alert);
        let blocks: Vec<&str> = tests.split(&name).skip(1).collect();
        assert!(
            !blocks.is_empty(),
            "alerts.test.yaml never tests {}",
            r.alert
        );
        let first_lines = |b: &str| b.lines().nth(1).unwrap_or("").trim().to_string();
        assert!(
            blocks.iter().any(|b| first_lines(b) == "exp_alerts: []"),
            "alerts.test.yaml never shows {} not firing",
            r.alert
        );
        assert!(
            blocks.iter().any(|b| first_lines(b) == "exp_alerts:"),
            "alerts.test.yaml never shows {} firing",
            r.alert
        );
    }
}

#[test]
#[ignore = "needs promtool (Debian package prometheus): cargo test --workspace -- --ignored"]
fn scrape_config_is_valid_for_prometheus() {
    let scrape = yaml("charts/swarm-upgrade/prometheus-scrape.yml");
    let jobs = scrape["scrape_configs"].as_array().expect("scrape_configs");
    let job = jobs
        .iter()
        .find(|j| j["job_name"] == "swarm-upgrade")
        .expect("a job named swarm-upgrade (the alerts' up{job=\"swarm-upgrade\"})");
    let sd = &job["dockerswarm_sd_configs"][0];
    assert_eq!(sd["role"], "tasks");
    assert_eq!(sd["port"], 9090, "the operator's --listen port");
    let stack = yaml("charts/swarm-upgrade/stack.yml");
    let network = stack["networks"]["metrics"]["name"].as_str().unwrap();
    assert!(
        job["relabel_configs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["regex"] == network),
        "the scrape job keeps the stack's metrics network {network}"
    );

    // A whole prometheus.yml with the snippet and the alert rules.
    let text = read("charts/swarm-upgrade/prometheus-scrape.yml");
    let rules = repo().join("dashboards/alerts.yaml");
    let config = format!(
        "global:\n  scrape_interval: 15s\nrule_files:\n  - {}\n{text}",
        serde_json::to_string(rules.to_str().unwrap()).unwrap()
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("prometheus.yml");
    std::fs::write(&file, &config).unwrap();
    let out = promtool(&["check", "config", file.to_str().unwrap()], dir.path());
    assert_success("promtool check config", &out, &config);
}

// ---------------------------------------------------------------------------------------------
// Stack file and spec
// ---------------------------------------------------------------------------------------------

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn stack_file_runs_one_acting_operator_safely() {
    let stack = yaml("charts/swarm-upgrade/stack.yml");
    assert_eq!(stack["version"], "3.8");
    let op = &stack["services"]["operator"];
    assert!(op["image"].as_str().is_some_and(|i| !i.is_empty()));

    let command = strings(&op["command"]);
    assert_eq!(command.first(), Some(&"run"));
    let arg = |flag: &str| -> &str {
        let i = command
            .iter()
            .position(|a| *a == flag)
            .unwrap_or_else(|| panic!("no {flag} in {command:?}"));
        command[i + 1]
    };
    assert_eq!(arg("--listen"), "0.0.0.0:9090");
    assert!(arg("--events").starts_with("/var/lib/swarm-upgrade/"));
    assert!(arg("--docker-host").contains("tcp://"));

    // The spec is a swarm config mounted where --spec points, from the example spec file.
    let spec_path = arg("--spec");
    let mounted = op["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["target"] == spec_path)
        .expect("a config mounted at the --spec path");
    let source = mounted["source"].as_str().unwrap();
    assert_eq!(
        stack["configs"][source]["file"], "${SWARM_UPGRADE_SPEC:-./engine-upgrade.yaml}",
        "the spec config comes from SWARM_UPGRADE_SPEC, by default the example spec"
    );

    // The events volume is mounted where --events writes.
    let events_dir = Path::new(arg("--events")).parent().unwrap();
    assert!(
        strings(&op["volumes"])
            .iter()
            .any(|v| v.ends_with(&format!(":{}", events_dir.display()))),
        "a volume at {}",
        events_dir.display()
    );

    // TLS client files where DOCKER_CERT_PATH points.
    let cert_path = op["environment"]["DOCKER_CERT_PATH"].as_str().unwrap();
    let secret_targets: Vec<&str> = op["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["target"].as_str())
        .collect();
    for f in ["ca.pem", "cert.pem", "key.pem"] {
        let want = format!("{cert_path}/{f}");
        assert!(
            secret_targets.contains(&want.as_str()),
            "no secret at {want}"
        );
    }

    // One replica unless asked for two, of which only the lease's holder acts. No replica
    // limit per node: on two workers, a drained one's replica would have nowhere to run, and
    // the operator would never drain either (the drain prediction blocks it).
    let deploy = &op["deploy"];
    assert_eq!(deploy["replicas"], "${SWARM_UPGRADE_REPLICAS:-1}");
    assert!(deploy["placement"].get("max_replicas_per_node").is_none());
    assert!(command.contains(&"--ha"), "{command:?}");
    assert_eq!(
        deploy["update_config"]["order"], "stop-first",
        "two operators must never run at once"
    );
    assert_eq!(deploy["rollback_config"]["order"], "stop-first");
    assert_eq!(deploy["restart_policy"]["condition"], "any");
    // Not constrained to managers: with every manager drained at the end of the manager phase
    // such a task would have nowhere to run (README.md).
    let constraints = strings(&deploy["placement"]["constraints"]);
    assert!(
        constraints.contains(&"node.role == worker"),
        "{constraints:?}"
    );
    assert!(!constraints.iter().any(|c| c.contains("manager")));
    assert_eq!(deploy["labels"]["prometheus.io/scrape"], "true");
    assert_eq!(deploy["labels"]["prometheus.io/port"], "9090");
    assert_eq!(op["healthcheck"]["disable"], true);

    // The example spec's ssh key and known_hosts are what the stack mounts.
    let spec = read("charts/swarm-upgrade/engine-upgrade.yaml");
    for target in secret_targets
        .iter()
        .copied()
        .filter(|t| t.contains("ssh"))
        .chain(
            op["configs"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|c| c["target"].as_str())
                .filter(|t| t.contains("known_hosts")),
        )
    {
        assert!(
            spec.contains(target),
            "the example spec does not use {target}"
        );
    }
}

/// The docker CLI, if there is one that has `docker stack config`.
fn docker_cli() -> Option<PathBuf> {
    ["/usr/local/bin/docker", "docker"]
        .into_iter()
        .map(PathBuf::from)
        .find(|d| {
            Command::new(d)
                .args(["stack", "config", "--help"])
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

#[test]
#[ignore = "needs the docker CLI with `stack config` (/usr/local/bin/docker): cargo test --workspace -- --ignored"]
fn docker_stack_config_accepts_the_stack_file() {
    let docker = docker_cli().expect(
        "no docker CLI with `stack config` on PATH or at /usr/local/bin/docker: install one",
    );
    // `docker stack config` validates against the compose schema and interpolates, offline:
    // point it at no engine to be sure it does not need one.
    let out = Command::new(&docker)
        .args(["stack", "config", "-c", "stack.yml"])
        .current_dir(repo().join("charts/swarm-upgrade"))
        .env("DOCKER_HOST", "unix:///nonexistent/swarm-upgrade-test.sock")
        .env(
            "SWARM_UPGRADE_IMAGE",
            "registry.example.com/swarm-upgrade:test",
        )
        .env(
            "SWARM_UPGRADE_MANAGERS",
            "tcp://10.0.0.11:2376,tcp://10.0.0.12:2376",
        )
        .env("SWARM_UPGRADE_SPEC_REV", "7")
        .env("SWARM_UPGRADE_REPLICAS", "2")
        .output()
        .expect("running docker stack config");
    assert_success("docker stack config -c stack.yml", &out, "");
    let rendered: Value = serde_saphyr::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    let op = &rendered["services"]["operator"];
    assert_eq!(op["deploy"]["replicas"], 2);
    assert_eq!(op["image"], "registry.example.com/swarm-upgrade:test");
    assert!(strings(&op["command"]).contains(&"tcp://10.0.0.11:2376,tcp://10.0.0.12:2376"));
    assert_eq!(
        rendered["configs"]["engine-upgrade"]["name"],
        "swarm-upgrade-spec-7"
    );

    // And it rejects what the compose schema does not allow (the check is real).
    let dir = tempfile::tempdir().unwrap();
    let bad = read("charts/swarm-upgrade/stack.yml").replace(
        "    stop_grace_period: 30s\n",
        "    stop_grace_period: 30s\n    no_such_key: 1\n",
    );
    std::fs::write(dir.path().join("stack.yml"), bad).unwrap();
    let out = Command::new(&docker)
        .args(["stack", "config", "-c", "stack.yml"])
        .current_dir(dir.path())
        .env("DOCKER_HOST", "unix:///nonexistent/swarm-upgrade-test.sock")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "docker stack config accepted an unknown key"
    );
}

#[test]
fn example_spec_in_charts_parses() {
    let rel = "charts/swarm-upgrade/engine-upgrade.yaml";
    let path = repo().join(rel);
    let spec = swarm_upgrade::spec::parse_spec(&read(rel), &path)
        .unwrap_or_else(|e| panic!("{rel} does not parse: {e}"));
    assert_eq!(spec.kind, "EngineUpgrade");
    assert!(!spec.spec.upgrade.command.is_empty());
    assert!(spec.spec.upgrade.rollback.is_some());
    assert_eq!(spec.spec.strategy.max_unavailable_workers, 1);
}
