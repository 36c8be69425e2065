//! `swarm-upgrade timeline`: the SVG read back (roxmltree) and checked against the events file
//! it was drawn from: one row per node in the order the nodes started, one bar per step in
//! time order, starting and ending at the events' times, failures and pauses marked.

use std::path::Path;
use std::process::Command;

use jiff::{SignedDuration, Timestamp};
use swarm_upgrade::events::{Event, EventStep};

fn event(at: i64, host: &str, role: &str, step: EventStep) -> Event {
    let t0: Timestamp = "2026-12-01T22:00:00Z".parse().unwrap();
    Event {
        time: t0 + SignedDuration::from_millis(at),
        node_id: if host.is_empty() {
            String::new()
        } else {
            format!("id-{host}")
        },
        hostname: host.to_string(),
        role: role.to_string(),
        step,
        from_version: "20.10.24".into(),
        to_version: "26.1.5".into(),
        message: format!("{host} {step} <&\"'>"),
    }
}

/// One node's whole cycle from `at` (ms), each step `d` long; returns the time it ends.
fn cycle(events: &mut Vec<Event>, at: i64, host: &str, role: &str, d: i64) -> i64 {
    use EventStep::*;
    for (i, step) in [
        Drain,
        Drained,
        Upgrade,
        Upgraded,
        Ready,
        Reactivate,
        Reactivated,
    ]
    .into_iter()
    .enumerate()
    {
        events.push(event(at + d * i as i64, host, role, step));
    }
    at + 7 * d
}

/// Managers one at a time, then a worker, then a worker whose upgrade fails and is rolled back.
fn rollout_with_a_failure() -> Vec<Event> {
    use EventStep::*;
    let mut events = vec![];
    let mut at = 0;
    for (host, d) in [("n2", 900), ("n3", 1100), ("n1", 1300)] {
        at = cycle(&mut events, at, host, "manager", d);
    }
    at = cycle(&mut events, at + 500, "n4", "worker", 700);
    for (step, after) in [(Drain, 0), (Drained, 600), (Upgrade, 400), (Rollback, 5000)] {
        at += after;
        events.push(event(at, "n5", "worker", step));
    }
    events.push(event(at + 3000, "n5", "worker", Failed));
    events.push(event(at + 3100, "", "", Paused));
    events
}

fn timeline(events_file: &Path, out: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_swarm-upgrade"))
        .arg("timeline")
        .arg("--events")
        .arg(events_file)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

fn write_events(path: &Path, events: &[Event]) {
    let text: String = events
        .iter()
        .map(|e| serde_json::to_string(e).unwrap() + "\n")
        .collect();
    std::fs::write(path, text).unwrap();
}

fn has_class(node: &roxmltree::Node, class: &str) -> bool {
    node.attribute("class")
        .is_some_and(|c| c.split_whitespace().any(|c| c == class))
}

fn time_attr(node: &roxmltree::Node, name: &str) -> Timestamp {
    node.attribute(name).unwrap().parse().unwrap()
}

/// The bar a node's event begins, by the events file's vocabulary.
fn bar_begun_by(step: EventStep) -> Option<&'static str> {
    match step {
        EventStep::Drain => Some("drain"),
        EventStep::Upgrade => Some("upgrade"),
        EventStep::Upgraded => Some("ready"),
        EventStep::Reactivate => Some("reactivate"),
        EventStep::Rollback => Some("rollback"),
        _ => None,
    }
}

/// Checks the SVG against the events it was drawn from.
fn check_against(svg: &str, events: &[Event]) {
    let doc = roxmltree::Document::parse(svg).expect("the timeline is well-formed XML");
    let mut in_time: Vec<&Event> = events.iter().collect();
    in_time.sort_by_key(|e| e.time);
    let mut hosts: Vec<&str> = vec![];
    for e in &in_time {
        if !e.hostname.is_empty() && !hosts.contains(&e.hostname.as_str()) {
            hosts.push(&e.hostname);
        }
    }
    let rows: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("g") && has_class(n, "row"))
        .collect();
    let row_hosts: Vec<&str> = rows
        .iter()
        .map(|r| r.attribute("data-node").unwrap())
        .collect();
    assert_eq!(
        row_hosts, hosts,
        "one row per node, in the order they started"
    );

    for (row, host) in rows.iter().zip(&hosts) {
        let mine: Vec<&&Event> = in_time.iter().filter(|e| e.hostname == *host).collect();
        // Each bar begins at its event and ends at the node's next event (or the picture's end).
        let last = in_time.last().unwrap().time;
        let expected: Vec<(&str, Timestamp, Timestamp)> = mine
            .iter()
            .enumerate()
            .filter_map(|(i, e)| {
                let end = mine.get(i + 1).map_or(last, |next| next.time);
                bar_begun_by(e.step).map(|b| (b, e.time, end))
            })
            .collect();
        let bars: Vec<_> = row
            .descendants()
            .filter(|n| n.has_tag_name("rect") && has_class(n, "bar"))
            .collect();
        let drawn: Vec<(&str, Timestamp, Timestamp)> = bars
            .iter()
            .map(|b| {
                let step = b.attribute("data-step").unwrap();
                (step, time_attr(b, "data-start"), time_attr(b, "data-end"))
            })
            .collect();
        assert_eq!(
            drawn, expected,
            "{host}: one bar per step, from its event to the next"
        );
        let xs: Vec<f64> = bars
            .iter()
            .map(|b| b.attribute("x").unwrap().parse().unwrap())
            .collect();
        assert!(
            xs.windows(2).all(|w| w[0] <= w[1]),
            "{host}: bars drawn out of time order: {xs:?}"
        );
        let failures = row
            .descendants()
            .filter(|n| has_class(n, "failure"))
            .count();
        let failed = mine.iter().filter(|e| e.step == EventStep::Failed).count();
        assert_eq!(failures, failed, "{host}: failures marked");
        assert!(
            row.descendants().any(|n| n.text() == Some(*host)),
            "{host}: the row names its node"
        );
    }
    let marks: Vec<&str> = doc
        .descendants()
        .filter(|n| has_class(n, "rollout-mark"))
        .map(|n| n.attribute("data-step").unwrap())
        .collect();
    let rollout: Vec<&str> = in_time
        .iter()
        .filter(|e| e.hostname.is_empty())
        .map(|e| e.step.as_str())
        .collect();
    assert_eq!(marks, rollout, "pauses and completion marked");
}

#[test]
fn the_svg_has_a_row_per_node_and_a_bar_per_step_in_time_order() {
    let dir = tempfile::tempdir().unwrap();
    let events = rollout_with_a_failure();
    let file = dir.path().join("rollout.jsonl");
    // Written out of order: the picture follows the times, not the lines.
    let mut shuffled = events.clone();
    shuffled.swap(3, 9);
    write_events(&file, &shuffled);
    let out = dir.path().join("rollout.svg");
    let run = timeline(&file, &out);
    assert!(run.status.success(), "{run:?}");
    let svg = std::fs::read_to_string(&out).unwrap();
    check_against(&svg, &events);
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let rollback = doc
        .descendants()
        .find(|n| n.attribute("data-step") == Some("rollback"))
        .unwrap();
    assert!(
        has_class(&rollback, "failed"),
        "the rolled-back step ends in the failure"
    );
    assert_eq!(
        doc.descendants().filter(|n| has_class(n, "held")).count(),
        4 + 1,
        "each reactivated node was held drained once (and the legend shows it)"
    );
}

/// The events file of a rollout of the simulated swarm by the operator (`swarm-upgrade demo
/// --events`, 3 managers and 2 workers).
#[test]
fn the_svg_of_a_simulated_rollout_matches_its_events() {
    let file = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/demo-rollout.jsonl"
    ));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo.svg");
    let run = timeline(file, &out);
    assert!(run.status.success(), "{run:?}");
    let events = swarm_upgrade::events::read_events(file).unwrap();
    assert!(
        events.len() > 30,
        "a whole rollout: {} events",
        events.len()
    );
    check_against(&std::fs::read_to_string(&out).unwrap(), &events);
}

#[test]
fn a_bad_events_file_or_picture_name_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rollout.jsonl");
    let mut text = serde_json::to_string(&rollout_with_a_failure()[0]).unwrap();
    text.push_str("\nnot an event\n");
    std::fs::write(&file, text).unwrap();
    let run = timeline(&file, &dir.path().join("x.svg"));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(stderr.contains("line 2 is not an event"), "{stderr}");

    write_events(&file, &rollout_with_a_failure());
    let run = timeline(&file, &dir.path().join("x.txt"));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(stderr.contains("as .svg or .png"), "{stderr}");

    let run = Command::new(env!("CARGO_BIN_EXE_swarm-upgrade"))
        .args([
            "timeline",
            "--renderer",
            "/nonexistent/chromium",
            "--events",
        ])
        .arg(&file)
        .arg("--out")
        .arg(dir.path().join("x.png"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(
        stderr.contains("cannot start the renderer /nonexistent/chromium"),
        "{stderr}"
    );
}

#[test]
#[ignore = "needs chromium (apt install chromium)"]
fn a_png_is_drawn_by_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rollout.jsonl");
    write_events(&file, &rollout_with_a_failure());
    let out = dir.path().join("rollout.png");
    let run = timeline(&file, &out);
    assert!(run.status.success(), "{run:?}");
    let png = std::fs::read(&out).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    // IHDR: the width is the SVG's.
    assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 960);
}
