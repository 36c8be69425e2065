//! Fuzzed spec files: the shipped examples mutated byte by byte and line by line, and documents
//! generated from the spec's own field names with values of every type. Each is either a valid
//! spec or refused with its file, a line and column inside the file and a hint; none panics.
//! A running watcher keeps the last good spec through a stream of them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use swarm_upgrade::spec::{
    API_VERSION, KIND, SpecError, SpecWatcher, WatchOptions, parse_spec_bytes,
};

/// The shipped examples: every mutation starts from one of them.
fn examples() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds-like-specs/examples");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    out.sort();
    assert!(out.len() >= 3, "examples missing in {}", dir.display());
    out
}

/// Bits of YAML (and not) that parsers and the spec's types trip on.
const FRAGMENTS: &[&str] = &[
    ": ",
    "\n",
    "\n  ",
    "- ",
    "[",
    "]",
    "{",
    "}",
    "\"",
    "'",
    "#",
    "&anchor ",
    "*anchor",
    "*nowhere",
    "!!binary ",
    "!tag ",
    "\t",
    "---\n",
    "...\n",
    "? ",
    "|\n",
    ">-\n",
    "~",
    "null",
    "true",
    "-1",
    "0",
    "1e400",
    "0x7fffffffffffffffffff",
    "340282366920938463463374607431768211456",
    "18446744073709551616",
    "-9223372036854775809",
    ".nan",
    "99999999999999999999h",
    "1h1h1h",
    "ünïcødé",
    "🚀",
    "\u{202e}",
    "\u{feff}",
    "\0",
    "\r\n",
    "{hostname",
    "{nope}",
    "<<: *anchor\n",
];

/// Values of the wrong type (or the right type with a wrong value) for any field.
const ODD_VALUES: &[&str] = &[
    "",
    "~",
    "[]",
    "{}",
    "[1, 2, 3]",
    "{a: b}",
    "true",
    "-5",
    "0",
    "4294967296",
    "18446744073709551616",
    "1.5",
    "1e400",
    "\"\"",
    "\"26.1.5\"",
    "26.1.5",
    "0s",
    "-1s",
    "99999999999999999999d",
    "\"ünïcødé 🚀\"",
    "'\u{202e}gnp.exe'",
    "!!binary aGVsbG8=",
    "&a [*a]",
    "*a",
    "|\n  multi\n  line",
    "\"http://[::1\"",
    "\"tasks.web:99999\"",
    "\"http://x:1/\"",
    "[\"{hostname\"]",
];

#[derive(Debug, Clone)]
enum Mutation {
    SetByte {
        at: usize,
        byte: u8,
    },
    Insert {
        at: usize,
        fragment: usize,
    },
    Delete {
        at: usize,
        len: usize,
    },
    Truncate {
        at: usize,
    },
    DropLine {
        line: usize,
    },
    DuplicateLine {
        line: usize,
    },
    ReplaceValue {
        line: usize,
        value: usize,
    },
    Nest {
        line: usize,
        depth: usize,
        flow_map: bool,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = any::<usize>();
    prop_oneof![
        (at, any::<u8>()).prop_map(|(at, byte)| Mutation::SetByte { at, byte }),
        (at, 0..FRAGMENTS.len()).prop_map(|(at, fragment)| Mutation::Insert { at, fragment }),
        (at, 1usize..40).prop_map(|(at, len)| Mutation::Delete { at, len }),
        at.prop_map(|at| Mutation::Truncate { at }),
        at.prop_map(|line| Mutation::DropLine { line }),
        at.prop_map(|line| Mutation::DuplicateLine { line }),
        (at, 0..ODD_VALUES.len()).prop_map(|(line, value)| Mutation::ReplaceValue { line, value }),
        (
            at,
            prop_oneof![1usize..64, 1000usize..200_000],
            any::<bool>()
        )
            .prop_map(|(line, depth, flow_map)| Mutation::Nest {
                line,
                depth,
                flow_map
            }),
    ]
}

/// Splits into lines keeping their ends, so that joining gives the text back.
fn lines(text: &[u8]) -> Vec<Vec<u8>> {
    text.split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

/// `line` with the value after its first `: ` (or its `- `) replaced.
fn with_value(line: &[u8], value: &[u8]) -> Vec<u8> {
    let text = line.strip_suffix(b"\n").unwrap_or(line);
    let cut = text
        .windows(2)
        .position(|w| w == b": " || w == b"- ")
        .map_or(text.len(), |i| i + 2);
    [&text[..cut], value, b"\n"].concat()
}

fn apply(text: &mut Vec<u8>, m: &Mutation) {
    let at = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
    match *m {
        Mutation::SetByte { at: i, byte } if !text.is_empty() => {
            let i = i % text.len();
            text[i] = byte;
        }
        Mutation::SetByte { .. } => text.push(b'x'),
        Mutation::Insert { at: i, fragment } => {
            let i = at(i, text.len());
            text.splice(i..i, FRAGMENTS[fragment].bytes());
        }
        Mutation::Delete { at: i, len } => {
            let start = at(i, text.len());
            let end = (start + len).min(text.len());
            text.drain(start..end);
        }
        Mutation::Truncate { at: i } => text.truncate(at(i, text.len())),
        Mutation::DropLine { .. }
        | Mutation::DuplicateLine { .. }
        | Mutation::ReplaceValue { .. }
        | Mutation::Nest { .. } => apply_to_lines(text, m),
    }
}

fn apply_to_lines(text: &mut Vec<u8>, m: &Mutation) {
    let mut ls = lines(text);
    if ls.is_empty() {
        return;
    }
    let n = ls.len();
    match *m {
        Mutation::DropLine { line } => {
            ls.remove(line % n);
        }
        Mutation::DuplicateLine { line } => {
            let l = ls[line % n].clone();
            ls.insert(line % n, l);
        }
        Mutation::ReplaceValue { line, value } => {
            ls[line % n] = with_value(&ls[line % n], ODD_VALUES[value].as_bytes());
        }
        Mutation::Nest {
            line,
            depth,
            flow_map,
        } => {
            let (open, close) = if flow_map { ("{a: ", "}") } else { ("[", "]") };
            let nested = format!("{}1{}", open.repeat(depth), close.repeat(depth));
            ls[line % n] = with_value(&ls[line % n], nested.as_bytes());
        }
        _ => unreachable!("byte mutations are applied by `apply`"),
    }
    *text = ls.concat();
}

/// A valid spec, or an error that locates itself inside `text` and says what to do.
fn check_outcome(text: &[u8], file: &Path) -> Result<(), TestCaseError> {
    match parse_spec_bytes(text, file) {
        Ok(spec) => {
            prop_assert_eq!(spec.api_version.as_str(), API_VERSION);
            prop_assert_eq!(spec.kind.as_str(), KIND);
        }
        Err(e) => check_located(&e, text, file)?,
    }
    Ok(())
}

fn check_located(e: &SpecError, text: &[u8], file: &Path) -> Result<(), TestCaseError> {
    let shown = e.to_string();
    prop_assert_eq!(&e.file, file, "{}", shown);
    let line_count = text.split(|&b| b == b'\n').count();
    prop_assert!(
        e.line >= 1 && e.line <= line_count,
        "line {} outside 1..={line_count}: {shown}",
        e.line
    );
    let line = text.split(|&b| b == b'\n').nth(e.line - 1).unwrap_or(b"");
    // Columns count characters; a line of invalid UTF-8 counts its bytes.
    let width = std::str::from_utf8(line).map_or(line.len(), |l| l.chars().count());
    prop_assert!(
        e.column >= 1 && e.column <= width + 1,
        "column {} outside 1..={} of line {}: {shown}",
        e.column,
        width + 1,
        e.line
    );
    prop_assert!(!e.message.trim().is_empty(), "no message: {:?}", e);
    prop_assert!(
        e.hint.as_ref().is_some_and(|h| !h.trim().is_empty()),
        "no hint: {shown}"
    );
    prop_assert!(
        shown.starts_with(&format!("{}:{}:{}: ", file.display(), e.line, e.column)),
        "{shown}"
    );
    Ok(())
}

fn mutated_example() -> impl Strategy<Value = Vec<u8>> {
    let seeds = examples();
    (0..seeds.len(), proptest::collection::vec(mutation(), 1..5)).prop_map(move |(i, ms)| {
        let mut text = seeds[i].1.clone();
        for m in &ms {
            apply(&mut text, m);
        }
        text
    })
}

proptest! {
    #![proptest_config(Config { cases: 3000, ..Config::default() })]

    #[test]
    fn a_mutated_example_is_valid_or_refused_with_a_location(text in mutated_example()) {
        check_outcome(&text, Path::new("specs/engine.yaml"))?;
    }

    #[test]
    fn arbitrary_bytes_are_refused_with_a_location(text in proptest::collection::vec(any::<u8>(), 0..400)) {
        check_outcome(&text, Path::new("arbitrary.yaml"))?;
    }
}

// ---------------------------------------------------------------------------------------------
// Documents generated from the spec's field names

/// Every key the spec knows, plus near misses.
const KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "spec",
    "version",
    "upgrade",
    "command",
    "rollback",
    "timeout",
    "unlockKey",
    "file",
    "env",
    "strategy",
    "maxUnavailableWorkers",
    "drainTimeout",
    "readyTimeout",
    "settle",
    "paused",
    "nodeSelector",
    "labels",
    "hostnames",
    "window",
    "days",
    "start",
    "end",
    "timezone",
    "health",
    "probes",
    "target",
    "interval",
    "expectStatus",
    "maxConnectivityErrors",
    "prometheus",
    "url",
    "query",
    "resumeWhenHealthy",
    "comand",
    "Version",
    "ünïcødé",
];

#[derive(Debug, Clone)]
enum Node {
    Scalar(String),
    List(Vec<Node>),
    Map(Vec<(String, Node)>),
}

fn node() -> impl Strategy<Value = Node> {
    let scalar = prop_oneof![
        (0..ODD_VALUES.len()).prop_map(|i| ODD_VALUES[i].to_string()),
        Just(API_VERSION.to_string()),
        Just(KIND.to_string()),
        "[a-z0-9:/.{}\" -]{0,12}",
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| f.to_string()),
    ]
    .prop_map(Node::Scalar);
    scalar.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Node::List),
            proptest::collection::vec((0..KEYS.len(), inner), 0..6).prop_map(|entries| {
                Node::Map(
                    entries
                        .into_iter()
                        .map(|(k, v)| (KEYS[k].to_string(), v))
                        .collect(),
                )
            }),
        ]
    })
}

/// Block style; a multi-line scalar is indented under its key, so it may or may not be valid.
fn render(node: &Node, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match node {
        Node::Scalar(s) => {
            out.push(' ');
            out.push_str(s);
            out.push('\n');
        }
        Node::List(items) if items.is_empty() => out.push_str(" []\n"),
        Node::Map(entries) if entries.is_empty() => out.push_str(" {}\n"),
        Node::List(items) => {
            out.push('\n');
            for item in items {
                out.push_str(&format!("{pad}-"));
                render(item, indent + 2, out);
            }
        }
        Node::Map(entries) => {
            out.push('\n');
            for (k, v) in entries {
                out.push_str(&format!("{pad}{k}:"));
                render(v, indent + 2, out);
            }
        }
    }
}

/// A document with the right header and a generated `metadata` and `spec`.
fn generated_spec() -> impl Strategy<Value = String> {
    (node(), node()).prop_map(|(metadata, spec)| {
        let mut out = format!("apiVersion: {API_VERSION}\nkind: {KIND}\nmetadata:");
        render(&metadata, 2, &mut out);
        out.push_str("spec:");
        render(&spec, 2, &mut out);
        out
    })
}

proptest! {
    #![proptest_config(Config { cases: 2000, ..Config::default() })]

    #[test]
    fn a_generated_spec_is_valid_or_refused_with_a_location(text in generated_spec()) {
        check_outcome(text.as_bytes(), Path::new("generated.yaml"))?;
    }
}

// ---------------------------------------------------------------------------------------------
// The watcher through a stream of bad specs

/// `count` mutated examples that the operator refuses, deterministically drawn.
fn refused_specs(count: usize, file: &Path) -> Vec<(Vec<u8>, SpecError)> {
    let mut runner = TestRunner::deterministic();
    let strategy = mutated_example();
    let mut out = Vec::new();
    while out.len() < count {
        let text = strategy.new_tree(&mut runner).unwrap().current();
        if let Err(e) = parse_spec_bytes(&text, file) {
            out.push((text, e));
        }
    }
    out
}

/// Writes like an editor that saves to a new file and renames it over the old one.
fn replace(path: &PathBuf, text: &[u8]) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_keeps_the_last_good_spec_through_a_stream_of_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spec.yaml");
    let good = &examples()[0].1;
    replace(&path, good);
    let (watcher, mut rx) = SpecWatcher::spawn_with(
        path.clone(),
        WatchOptions {
            reread_every: Duration::from_secs(3600),
            use_notify: true,
            debounce: Duration::from_millis(5),
        },
    );
    let first = rx.borrow().clone();
    assert!(first.error.is_none(), "{:?}", first.error);
    let good_hash = first.content_hash;
    assert_ne!(good_hash, 0);

    let bad = refused_specs(300, &path);
    let started = tokio::time::Instant::now();
    for (i, (text, want)) in bad.iter().enumerate() {
        replace(&path, text);
        watcher.reload();
        let waited = tokio::time::timeout(
            Duration::from_secs(10),
            rx.wait_for(|s| s.error.as_ref() == Some(want)),
        )
        .await
        .map(|got| got.unwrap().clone());
        let Ok(state) = waited else {
            panic!(
                "bad spec {i} never reported: want {want}, have {:?}",
                rx.borrow().error
            );
        };
        assert_eq!(
            state.content_hash, good_hash,
            "bad spec {i} replaced the good one"
        );
        assert_eq!(state.generation, first.generation, "bad spec {i}");
        assert!(state.is_stale());
        let current = state.current.expect("the last good spec stays");
        assert_eq!(
            current.spec.version,
            first.current.as_ref().unwrap().spec.version
        );
    }
    println!(
        "watcher: {} refused specs in a row, each reported, the good spec kept: {:?}",
        bad.len(),
        started.elapsed()
    );

    replace(&path, good);
    watcher.reload();
    let back = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| s.error.is_none()))
        .await
        .expect("the good spec again clears the error")
        .unwrap()
        .clone();
    assert_eq!(
        (back.generation, back.content_hash),
        (first.generation, good_hash)
    );
}

/// The mutations reach both outcomes and many kinds of error (a mutator that only ever broke
/// the first line would prove little); prints the mix.
#[test]
fn the_mutations_reach_valid_specs_and_many_kinds_of_error() {
    let file = Path::new("specs/engine.yaml");
    let mut runner = TestRunner::deterministic();
    let strategy = mutated_example();
    let (mut valid, mut kinds) = (0, std::collections::BTreeMap::<String, usize>::new());
    let started = tokio::time::Instant::now();
    for _ in 0..3000 {
        let text = strategy.new_tree(&mut runner).unwrap().current();
        match parse_spec_bytes(&text, file) {
            Ok(_) => valid += 1,
            Err(e) => {
                // The message up to its first quote, number or backtick: the kind of error.
                let kind: String = e
                    .message
                    .split(['"', '`', '(', ':'])
                    .next()
                    .unwrap_or_default()
                    .chars()
                    .filter(|c| !c.is_ascii_digit())
                    .take(40)
                    .collect();
                *kinds.entry(kind.trim().to_string()).or_default() += 1;
            }
        }
    }
    println!(
        "3000 mutated examples in {:?}: {valid} valid",
        started.elapsed()
    );
    for (kind, n) in &kinds {
        println!("  {n:5}  {kind}");
    }
    assert!(valid > 0, "no mutation left a valid spec");
    assert!(kinds.len() >= 10, "few kinds of error: {kinds:?}");
}
