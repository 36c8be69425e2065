//! Reading and validating a spec file, with errors that name file, line, column and the fix.
//!
//! Parsing is two passes over the text: the YAML event stream (granit-parser, the parser under
//! serde-saphyr) gives the line and column of every key and value by path, then serde-saphyr
//! deserializes the types (its errors carry their own location). Semantic checks run on the
//! parsed value and are located through the first pass.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_saphyr::granit_parser::{Event, Parser};

use super::base_url::BaseUrl;
use super::target::{ProbeKind, Target};
use super::{
    API_VERSION, ArgTemplateError, EngineUpgrade, HealthSpec, KIND, PLACEHOLDERS, ProbeSpec,
    PrometheusGate, SpecDuration, parse_arg_template,
};

/// A spec that cannot be used, with where and what to write instead.
///
/// `line` and `column` are 1-based; both are 0 only when the file could not be read at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}:{line}:{column}: {message}{}", file.display(), hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
pub struct SpecError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub hint: Option<String>,
}

/// Parses and validates a spec. `file` is only used in errors.
pub fn parse_spec(text: &str, file: &Path) -> Result<EngineUpgrade, SpecError> {
    let locs = Locator::new(text);
    let lines = EditorLines::new(text);
    let err = |pos: Pos, message: String, hint: String| {
        spec_error(file, lines.of_parser(pos), message, hint)
    };

    // apiVersion and kind first: a document of another kind would otherwise be reported as a
    // list of unknown fields.
    for (key, want) in [("apiVersion", API_VERSION), ("kind", KIND)] {
        let path = [Seg::key(key)];
        if let Some(entry) = locs.get(&path)
            && let Some(got) = &entry.text
            && got != want
        {
            return Err(err(
                entry.key.unwrap_or(entry.value),
                format!("{key} is {got:?}, this operator reads only {want:?}"),
                format!("write `{key}: {want}`"),
            ));
        }
    }

    let doc: EngineUpgrade =
        serde_saphyr::from_str(text).map_err(|e| from_yaml_error(&e, &locs, &lines, file))?;

    if let Some(issue) = semantic_issue(&doc) {
        let pos = locs.locate(&issue.path, issue.at);
        return Err(err(pos, issue.message, issue.hint));
    }
    Ok(doc)
}

/// Parses a spec file's bytes: text that is not UTF-8 is refused at its first bad byte.
pub fn parse_spec_bytes(bytes: &[u8], file: &Path) -> Result<EngineUpgrade, SpecError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse_spec(text, file),
        Err(e) => Err(not_utf8(bytes, e.valid_up_to(), file)),
    }
}

/// Where the first byte that is not UTF-8 is: its line, and its column in characters.
fn not_utf8(bytes: &[u8], valid_up_to: usize, file: &Path) -> SpecError {
    let before = &bytes[..valid_up_to];
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
    // `before` is valid UTF-8 by construction.
    let column = 1 + String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count();
    spec_error(
        file,
        Pos { line, column },
        format!(
            "the spec is not UTF-8 text (byte 0x{:02x})",
            bytes[valid_up_to]
        ),
        "save the file as UTF-8; YAML takes no other encoding here".into(),
    )
}

/// Reads and parses a spec file.
pub fn load_spec_file(file: &Path) -> Result<EngineUpgrade, SpecError> {
    let bytes = std::fs::read(file).map_err(|e| SpecError {
        file: file.to_path_buf(),
        line: 0,
        column: 0,
        message: format!("cannot read the spec file: {e}"),
        hint: Some("check the path given to --spec".into()),
    })?;
    parse_spec_bytes(&bytes, file)
}

// ---------------------------------------------------------------------------------------------
// Semantic checks

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// The key of a mapping entry (or the element, for a sequence element).
    Key,
    /// The value.
    Value,
}

struct Issue {
    path: Vec<Seg>,
    at: At,
    message: String,
    hint: String,
}

fn issue(path: &[&str], at: At, message: impl Into<String>, hint: impl Into<String>) -> Issue {
    Issue {
        path: path.iter().map(|k| Seg::key(k)).collect(),
        at,
        message: message.into(),
        hint: hint.into(),
    }
}

/// `N.N.N`, optionally `+build` (letters, digits, '.', '-').
pub(crate) fn is_version(v: &str) -> bool {
    let (core, build) = match v.split_once('+') {
        Some((c, b)) => (c, Some(b)),
        None => (v, None),
    };
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && build.is_none_or(|b| {
            !b.is_empty()
                && b.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-')
        })
}

fn argv_issue(argv: &[String], field: &str) -> Option<Issue> {
    let path = ["spec", "upgrade", field];
    if argv.is_empty() {
        return Some(issue(
            &path,
            At::Key,
            format!("upgrade.{field} is empty"),
            format!(
                "write the program and its arguments as a list, like {field}: [\"/opt/upgrade-engine\", \"{{hostname}}\", \"{{version}}\"]"
            ),
        ));
    }
    let mut elem_path: Vec<Seg> = path.iter().map(|k| Seg::key(k)).collect();
    if argv[0].trim().is_empty() {
        elem_path.push(Seg::Index(0));
        return Some(Issue {
            path: elem_path,
            at: At::Value,
            message: format!("upgrade.{field}[0], the program to run, is empty"),
            hint: "the first element must name the program, like \"/opt/upgrade-engine\"".into(),
        });
    }
    for (i, arg) in argv.iter().enumerate() {
        if let Err(e) = parse_arg_template(arg) {
            elem_path.push(Seg::Index(i));
            let valid = PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(" ");
            let hint = match &e {
                ArgTemplateError::UnknownPlaceholder(_) => {
                    format!("use one of {valid}; write {{{{ and }}}} for literal braces")
                }
                _ => format!("write {{{{ and }}}} for literal braces; placeholders are {valid}"),
            };
            return Some(Issue {
                path: elem_path,
                at: At::Value,
                message: format!("upgrade.{field}[{i}] {arg:?}: {e}"),
                hint,
            });
        }
    }
    None
}

fn zero_issue(d: SpecDuration, path: &[&str], name: &str) -> Option<Issue> {
    d.get().is_zero().then(|| {
        issue(
            path,
            At::Key,
            format!("{name} is zero"),
            format!(
                "write a positive duration, like {}: 5m",
                path[path.len() - 1]
            ),
        )
    })
}

fn semantic_issue(doc: &EngineUpgrade) -> Option<Issue> {
    if doc.metadata.name.trim().is_empty() {
        return Some(issue(
            &["metadata", "name"],
            At::Key,
            "metadata.name is empty",
            "name the rollout, like `name: engine-26`",
        ));
    }
    let spec = &doc.spec;
    if spec.version.trim().is_empty() {
        return Some(issue(
            &["spec", "version"],
            At::Key,
            "spec.version is empty",
            "write the target engine version, quoted, like version: \"26.1.5\"",
        ));
    }
    if !is_version(&spec.version) {
        return Some(issue(
            &["spec", "version"],
            At::Key,
            format!(
                "spec.version {:?} is not a version like N.N.N",
                spec.version
            ),
            "write the engine version as docker version prints it, quoted, like version: \"26.1.5\" (build metadata after '+' is allowed: \"26.1.5+dfsg1\")",
        ));
    }
    if let Some(i) = argv_issue(&spec.upgrade.command, "command") {
        return Some(i);
    }
    if let Some(rollback) = &spec.upgrade.rollback
        && let Some(i) = argv_issue(rollback, "rollback")
    {
        return Some(i);
    }
    let zeros = [
        (
            spec.upgrade.timeout,
            &["spec", "upgrade", "timeout"][..],
            "upgrade.timeout",
        ),
        (
            spec.strategy.drain_timeout,
            &["spec", "strategy", "drainTimeout"][..],
            "strategy.drainTimeout",
        ),
        (
            spec.strategy.ready_timeout,
            &["spec", "strategy", "readyTimeout"][..],
            "strategy.readyTimeout",
        ),
    ];
    for (d, path, name) in zeros {
        if let Some(i) = zero_issue(d, path, name) {
            return Some(i);
        }
    }
    if spec.strategy.max_unavailable_workers == 0 {
        return Some(issue(
            &["spec", "strategy", "maxUnavailableWorkers"],
            At::Key,
            "strategy.maxUnavailableWorkers is 0: no worker could ever be upgraded",
            "write at least 1 (maxUnavailableWorkers: 1); to stop the rollout write paused: true",
        ));
    }
    if let Some(window) = &spec.window
        && let Err(e) = window.validate()
    {
        return Some(issue(
            &["spec", "window", e.field],
            At::Key,
            format!("window: {}", e.message),
            e.hint,
        ));
    }
    health_issue(&spec.health).or_else(|| webhook_issue(&spec.notify))
}

fn webhook_issue(notify: &super::NotifySpec) -> Option<Issue> {
    let found = super::notify::notify_issue(notify)?;
    Some(Issue {
        path: vec![
            Seg::key("spec"),
            Seg::key("notify"),
            Seg::key("webhooks"),
            Seg::Index(found.index),
            Seg::key(found.field),
        ],
        at: At::Value,
        message: found.message,
        hint: found.hint,
    })
}

fn health_issue(health: &HealthSpec) -> Option<Issue> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, p) in health.probes.iter().enumerate() {
        if let Some(issue) = probe_issue(i, p, &mut seen) {
            return Some(issue);
        }
    }
    health.prometheus.as_ref().and_then(prometheus_issue)
}

fn probe_path(i: usize, field: &str) -> Vec<Seg> {
    vec![
        Seg::key("spec"),
        Seg::key("health"),
        Seg::key("probes"),
        Seg::Index(i),
        Seg::key(field),
    ]
}

/// `health.probes[i]`; `seen` maps the targets of the probes before it to their index.
fn probe_issue(i: usize, p: &ProbeSpec, seen: &mut HashMap<String, usize>) -> Option<Issue> {
    let target = match Target::parse(&p.target) {
        Ok(t) => t,
        Err(e) => {
            return Some(Issue {
                path: probe_path(i, "target"),
                at: At::Value,
                message: format!("health.probes[{i}].target: {e}"),
                hint: "write HOST:PORT for a TCP connect (like \"tasks.web:80\") or http://HOST[:PORT]/path for an HTTP GET".into(),
            });
        }
    };
    if let Some(first) = seen.insert(target.as_str().to_string(), i) {
        return Some(Issue {
            path: probe_path(i, "target"),
            at: At::Value,
            message: format!(
                "health.probes[{i}].target {:?} is already probed by health.probes[{first}]",
                p.target.trim()
            ),
            hint: "list each target once".into(),
        });
    }
    for (d, field) in [(p.interval, "interval"), (p.timeout, "timeout")] {
        if d.get().is_zero() {
            return Some(Issue {
                path: probe_path(i, field),
                at: At::Key,
                message: format!("health.probes[{i}].{field} is zero"),
                hint: format!("write a positive duration, like {field}: 1s"),
            });
        }
    }
    p.expect_status
        .and_then(|status| expect_status_issue(i, p, &target, status))
}

/// `expectStatus` needs an HTTP target and a status between 100 and 599.
fn expect_status_issue(i: usize, p: &ProbeSpec, target: &Target, status: u16) -> Option<Issue> {
    if !matches!(target.kind, ProbeKind::Http { .. }) {
        return Some(Issue {
            path: probe_path(i, "expectStatus"),
            at: At::Key,
            message: format!(
                "health.probes[{i}].expectStatus is set but {:?} is a TCP target",
                p.target.trim()
            ),
            hint: format!(
                "remove expectStatus, or probe over HTTP: target: \"http://{}/\"",
                target.as_str()
            ),
        });
    }
    if !(100..=599).contains(&status) {
        return Some(Issue {
            path: probe_path(i, "expectStatus"),
            at: At::Value,
            message: format!("health.probes[{i}].expectStatus {status} is not an HTTP status"),
            hint: "write a status between 100 and 599, like expectStatus: 200".into(),
        });
    }
    None
}

fn prometheus_issue(prom: &PrometheusGate) -> Option<Issue> {
    let path = ["spec", "health", "prometheus"];
    if let Err(e) = BaseUrl::parse(&prom.url) {
        let mut p: Vec<Seg> = path.iter().map(|k| Seg::key(k)).collect();
        p.push(Seg::key("url"));
        return Some(Issue {
            path: p,
            at: At::Value,
            message: format!("health.prometheus.url {:?}: {e}", prom.url),
            hint: "write the server's base URL, like url: http://prometheus:9090".into(),
        });
    }
    if prom.query.trim().is_empty() {
        return Some(issue(
            &["spec", "health", "prometheus", "query"],
            At::Key,
            "health.prometheus.query is empty",
            "write a PromQL query that returns series only when something is wrong, like query: 'ALERTS{alertstate=\"firing\",severity=\"critical\"}'",
        ));
    }
    zero_issue(
        prom.timeout,
        &["spec", "health", "prometheus", "timeout"],
        "health.prometheus.timeout",
    )
}

// ---------------------------------------------------------------------------------------------
// serde-saphyr errors

/// Positions as an editor and `grep -n` count them: only `\n` ends a line. The YAML parser also
/// ends a line at a lone `\r` (found by fuzzing), so its positions are mapped here.
struct EditorLines {
    /// For each of the parser's lines: the file's line and the column it starts at (both 1-based).
    starts: Vec<Pos>,
    /// The file's last line and its width, for a position past the end.
    last: Pos,
}

impl EditorLines {
    fn new(text: &str) -> Self {
        let mut starts = vec![Pos { line: 1, column: 1 }];
        let (mut line, mut column) = (1, 1);
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                // `\r\n` is one break to both: counted at its `\n`.
                '\r' if chars.peek() == Some(&'\n') => {}
                '\n' => {
                    (line, column) = (line + 1, 1);
                    starts.push(Pos { line, column });
                }
                // A lone `\r` breaks the parser's line only: the editor's goes on.
                '\r' => {
                    column += 1;
                    starts.push(Pos { line, column });
                }
                _ => column += 1,
            }
        }
        let last = Pos { line, column };
        EditorLines { starts, last }
    }

    fn of_parser(&self, pos: Pos) -> Pos {
        match self.starts.get(pos.line.wrapping_sub(1)) {
            Some(start) => Pos {
                line: start.line,
                column: start.column + pos.column.saturating_sub(1),
            },
            None => self.last,
        }
    }
}

fn spec_error(file: &Path, pos: Pos, message: String, hint: String) -> SpecError {
    SpecError {
        file: file.to_path_buf(),
        line: pos.line,
        column: pos.column,
        message,
        hint: Some(hint),
    }
}

fn from_yaml_error(
    e: &serde_saphyr::Error,
    locs: &Locator,
    lines: &EditorLines,
    file: &Path,
) -> SpecError {
    let inner = e.without_snippet();
    let (line, column) = e
        .location()
        .map(|l| (l.line() as usize, l.column() as usize))
        .filter(|(l, _)| *l > 0)
        .unwrap_or((1, 1));
    let mut pos = Pos { line, column };
    let here = locs.path_at(pos);
    let (message, hint) = match field_error(inner, here, locs, &mut pos) {
        Some(described) => described,
        None => syntax_error(inner, here),
    };
    spec_error(file, lines.of_parser(pos), message, hint)
}

/// "in spec.health", or "at the top level".
fn in_map(path: &[Seg]) -> String {
    if path.is_empty() {
        "at the top level".to_string()
    } else {
        format!("in {}", display_path(path))
    }
}

/// The message and hint for an error serde reports about a field or a value at `here`;
/// none for the parser's own errors. A missing field moves `pos` to the mapping's key.
fn field_error(
    inner: &serde_saphyr::Error,
    here: Option<&[Seg]>,
    locs: &Locator,
    pos: &mut Pos,
) -> Option<(String, String)> {
    use serde_saphyr::Error as E;
    let parent = here.map(|p| &p[..p.len().saturating_sub(1)]).unwrap_or(&[]);
    let described = match inner {
        E::SerdeUnknownField {
            field, expected, ..
        } => {
            let mut hint = format!("valid fields {}: {}", in_map(parent), expected.join(", "));
            if let Some(near) = closest(field, expected) {
                hint = format!("did you mean `{near}`? {hint}");
            }
            (format!("unknown field `{field}` {}", in_map(parent)), hint)
        }
        E::SerdeMissingField { field, .. } => {
            // serde-saphyr points at some key of the mapping; the mapping's own key is clearer.
            if here.is_some() {
                *pos = locs.locate(parent, At::Key);
            }
            (
                format!("missing field `{field}` {}", in_map(parent)),
                format!(
                    "add `{field}:` {}",
                    in_map(parent).replacen("in ", "under ", 1)
                ),
            )
        }
        E::SerdeUnknownVariant {
            variant, expected, ..
        } => (
            format!(
                "unknown value `{variant}`{}",
                here.map(|p| format!(" for {}", display_path(p)))
                    .unwrap_or_default()
            ),
            format!("write one of: {}", expected.join(", ")),
        ),
        E::SerdeInvalidType {
            unexpected,
            expected,
            ..
        }
        | E::SerdeInvalidValue {
            unexpected,
            expected,
            ..
        } => (
            format!(
                "{}is {unexpected}, expected {expected}",
                here.map(|p| format!("{} ", display_path(p)))
                    .unwrap_or_default()
            ),
            format!("write {expected} here"),
        ),
        _ => return None,
    };
    Some(described)
}

/// The message and hint for the parser's errors and the spec types' own messages.
fn syntax_error(inner: &serde_saphyr::Error, here: Option<&[Seg]>) -> (String, String) {
    use serde_saphyr::Error as E;
    match inner {
        E::Unexpected { expected, .. } => {
            let what = here
                .map(|p| format!(" for {}", display_path(p)))
                .unwrap_or_default();
            let hint = if expected.contains("sequence") {
                "write a list, like [\"a\", \"b\"] or one `- item` per line".to_string()
            } else if expected.contains("mapping") {
                "write a mapping of `key: value` entries".to_string()
            } else if expected.contains("scalar") {
                "write a single value (quote it if it contains ':', '#', '[' or '{')".to_string()
            } else {
                format!("write {expected} here")
            };
            (format!("expected {expected}{what}"), hint)
        }
        E::Message { msg, .. } => match msg.split_once("; write ") {
            // SpecDuration's error: "invalid duration ...: reason; write a number ..."
            Some((m, h)) => (
                format!(
                    "{m}{}",
                    here.map(|p| format!(" in {}", display_path(p)))
                        .unwrap_or_default()
                ),
                format!("write {h}"),
            ),
            None => (msg.clone(), SCHEMA_HINT.to_string()),
        },
        E::DuplicateMappingKey { key, .. } => (
            format!(
                "duplicate key{}",
                key.as_ref().map(|k| format!(" `{k}`")).unwrap_or_default()
            ),
            "keep only one of the two entries".to_string(),
        ),
        E::Eof { .. } => (
            "the spec is empty or ends too early".to_string(),
            format!(
                "a spec starts with `apiVersion: {API_VERSION}` and `kind: {KIND}`; see crds-like-specs/examples/"
            ),
        ),
        E::MultipleDocuments { .. } => (
            "the file holds more than one YAML document".to_string(),
            "keep a single document: remove the `---` line and what follows".to_string(),
        ),
        E::ExternalMessage { msg, .. } => (
            format!("YAML syntax error: {}", strip_location(msg)),
            SYNTAX_HINT.to_string(),
        ),
        other => {
            let text = strip_location(&other.to_string());
            (text, SYNTAX_HINT.to_string())
        }
    }
}

const SYNTAX_HINT: &str = "fix the YAML here: indent with spaces (not tabs), put a space after ':', close every bracket and quote, and quote values that contain ': ' or ' #'";
const SCHEMA_HINT: &str = "see crds-like-specs/engineupgrade.schema.json for what each field takes";

/// "msg at line 3, column 4" -> "msg".
fn strip_location(s: &str) -> String {
    let s = s.trim();
    for marker in [" at line ", " at char "] {
        if let Some(i) = s.rfind(marker)
            && s[i + marker.len()..]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || " ,".contains(c))
        {
            return s[..i].to_string();
        }
    }
    s.to_string()
}

/// The expected name nearest to a misspelt one, if it is near enough to be a typo.
fn closest<'a>(got: &str, expected: &[&'a str]) -> Option<&'a str> {
    let got_l = got.to_ascii_lowercase();
    expected
        .iter()
        .map(|e| (levenshtein(&got_l, &e.to_ascii_lowercase()), *e))
        .filter(|(d, e)| *d <= 2.max(e.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, e)| e)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

// ---------------------------------------------------------------------------------------------
// Locations by YAML path

/// One step of a path into the document.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Seg {
    Key(String),
    Index(usize),
}

impl Seg {
    fn key(k: &str) -> Self {
        Seg::Key(k.to_string())
    }
}

fn display_path(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Pos {
    line: usize,
    column: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

#[derive(Debug, Clone)]
struct Entry {
    /// The key, for a mapping entry.
    key: Option<Pos>,
    /// The value's first character.
    value: Pos,
    /// The value's text, for a scalar.
    text: Option<String>,
}

/// Where each key and value of the first document is, by path.
#[derive(Debug, Default)]
struct Locator {
    entries: HashMap<Vec<Seg>, Entry>,
}

struct Frame {
    is_map: bool,
    next_index: usize,
    pending_key: Option<(String, Pos)>,
}

impl Locator {
    fn new(text: &str) -> Self {
        let mut me = Locator::default();
        let mut frames: Vec<Frame> = Vec::new();
        let mut path: Vec<Seg> = Vec::new();
        for item in Parser::new_from_str(text) {
            // A syntax error: serde-saphyr reports it; keep what was found before it.
            let Ok((event, span)) = item else { break };
            let pos = Pos {
                line: span.start.line(),
                column: span.start.col() + 1,
            };
            let (start, is_map, scalar) = match event {
                Event::Scalar(s, ..) => (false, false, Some(s.into_owned())),
                Event::Alias(_) => (false, false, None),
                Event::MappingStart(..) => (true, true, None),
                Event::SequenceStart(..) => (true, false, None),
                Event::MappingEnd | Event::SequenceEnd => {
                    frames.pop();
                    if !frames.is_empty() {
                        path.pop();
                    }
                    continue;
                }
                Event::DocumentEnd => break,
                _ => continue,
            };
            let seg = match frames.last_mut() {
                None => None,
                Some(f) if f.is_map && f.pending_key.is_none() => {
                    // A key. A complex (non-scalar) key's subtree goes under a path no lookup uses.
                    f.pending_key = Some((scalar.clone().unwrap_or_default(), pos));
                    if start {
                        frames.push(Frame {
                            is_map,
                            next_index: 0,
                            pending_key: None,
                        });
                        path.push(Seg::Key("\u{0}complex key".into()));
                    }
                    continue;
                }
                Some(f) if f.is_map => {
                    let (k, kpos) = f.pending_key.take().unwrap_or((String::new(), pos));
                    Some((Seg::Key(k), Some(kpos)))
                }
                Some(f) => {
                    f.next_index += 1;
                    Some((Seg::Index(f.next_index - 1), None))
                }
            };
            let key_pos = seg.as_ref().and_then(|(_, k)| *k);
            let mut entry_path = path.clone();
            if let Some((s, _)) = &seg {
                entry_path.push(s.clone());
            }
            me.entries.entry(entry_path).or_insert(Entry {
                key: key_pos,
                value: pos,
                text: scalar,
            });
            if start {
                if let Some((s, _)) = seg {
                    path.push(s);
                }
                frames.push(Frame {
                    is_map,
                    next_index: 0,
                    pending_key: None,
                });
            }
        }
        me
    }

    fn get(&self, path: &[Seg]) -> Option<&Entry> {
        self.entries.get(path)
    }

    /// Where the thing at `path` is; the nearest written ancestor if it is not written (a
    /// default), and 1:1 if nothing is.
    fn locate(&self, path: &[Seg], at: At) -> Pos {
        for n in (0..=path.len()).rev() {
            if let Some(e) = self.entries.get(&path[..n]) {
                return match (at, n == path.len()) {
                    (At::Value, true) => e.value,
                    _ => e.key.unwrap_or(e.value),
                };
            }
        }
        Pos { line: 1, column: 1 }
    }

    /// The path whose key (or, failing that, value) starts at `pos`.
    fn path_at(&self, pos: Pos) -> Option<&[Seg]> {
        self.entries
            .iter()
            .filter(|(_, e)| e.key == Some(pos))
            .chain(self.entries.iter().filter(|(_, e)| e.value == pos))
            .map(|(p, _)| p.as_slice())
            .max_by_key(|p| p.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locator_finds_keys_and_values() {
        let text = "a: 1\nb:\n  c: [x, {d: y}]\n  e:\n    - f\n    - g: h\n";
        let l = Locator::new(text);
        let p = |segs: &[Seg]| {
            l.get(segs)
                .map(|e| (e.key.map(|k| k.to_string()), e.value.to_string()))
        };
        assert_eq!(
            p(&[Seg::key("a")]),
            Some((Some("1:1".into()), "1:4".into()))
        );
        assert_eq!(
            p(&[Seg::key("b"), Seg::key("c"), Seg::Index(1), Seg::key("d")]),
            Some((Some("3:11".into()), "3:14".into()))
        );
        assert_eq!(
            p(&[Seg::key("b"), Seg::key("e"), Seg::Index(0)]),
            Some((None, "5:7".into()))
        );
        assert_eq!(
            p(&[Seg::key("b"), Seg::key("e"), Seg::Index(1), Seg::key("g")]),
            Some((Some("6:7".into()), "6:10".into()))
        );
        assert_eq!(
            l.locate(&[Seg::key("b"), Seg::key("zz")], At::Key),
            Pos { line: 2, column: 1 }
        );
    }

    #[test]
    fn a_lone_carriage_return_stays_inside_its_line() {
        // The parser's lines: "a: [", "x]", "b: 1"; the editor's: "a: [\rx]", "b: 1".
        let lines = EditorLines::new("a: [\rx]\r\nb: 1\n");
        let at = |line, column| lines.of_parser(Pos { line, column }).to_string();
        assert_eq!(at(1, 4), "1:4");
        assert_eq!(at(2, 1), "1:6", "the x after the carriage return");
        assert_eq!(at(3, 4), "2:4");
        assert_eq!(at(9, 1), "3:1", "past the end: the end of the file");
    }

    #[test]
    fn versions() {
        for ok in ["26.1.5", "20.10.24", "26.1.5+dfsg1", "1.2.3+a.b-c"] {
            assert!(is_version(ok), "{ok}");
        }
        for bad in [
            "",
            "26",
            "26.1",
            "26.1.5.1",
            "v26.1.5",
            "26.1.x",
            "26.1.5+",
            "26.1.5-rc1",
            " 26.1.5",
            "26..1",
        ] {
            assert!(!is_version(bad), "{bad}");
        }
    }

    #[test]
    fn typo_suggestions() {
        assert_eq!(
            closest("comand", &["command", "rollback", "timeout"]),
            Some("command")
        );
        assert_eq!(
            closest("maxUnavailable", &["maxUnavailableWorkers", "settle"]),
            Some("maxUnavailableWorkers")
        );
        assert_eq!(closest("foo", &["command", "rollback", "timeout"]), None);
        assert_eq!(
            closest(
                "maxunavailableworkers",
                &["maxUnavailableWorkers", "settle"]
            ),
            Some("maxUnavailableWorkers")
        );
    }
}
