//! The module graph of each crate is a tree a newcomer can draw: no module imports one that
//! imports it back (directly or round a longer loop). A module is a source file (`a.rs`,
//! `a/mod.rs`, `a/b.rs`); an edge is a `crate::...` or `super::...` path in its code. A parent
//! and its own submodules may name each other (that is how `mod.rs` re-exports).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`health::gates`) -> the module paths its code names.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn module_name(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts.join("::")
}

fn source_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable src dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without its `#[cfg(test)]` module (tests may reach anywhere) and without
/// comments (a doc comment naming a module is not an import).
fn code_without_tests(text: &str) -> String {
    let code = text.find("#[cfg(test)]").map_or(text, |i| &text[..i]);
    code.lines()
        .map(|l| l.find("//").map_or(l, |i| &l[..i]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `crate::{a, b::c}` -> `crate::a`, `crate::b::c` (one level of grouping is what rustfmt writes
/// for these paths; nested groups are expanded the same way).
fn expand_groups(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(i) = rest.find("::{") {
        let head_start = rest[..i]
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .map_or(0, |j| j + 1);
        let head = &rest[head_start..i];
        out.push_str(&rest[..head_start]);
        let body = &rest[i + 3..];
        let mut depth = 1;
        let end = body
            .char_indices()
            .find(|&(_, c)| {
                depth += match c {
                    '{' => 1,
                    '}' => -1,
                    _ => 0,
                };
                depth == 0
            })
            .map_or(body.len(), |(k, _)| k);
        let mut items = vec![];
        let (mut depth, mut start) = (0, 0);
        for (k, c) in body[..end].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(&body[start..k]);
                    start = k + 1;
                }
                _ => {}
            }
        }
        items.push(&body[start..end]);
        for item in items {
            out.push_str(&expand_groups(&format!(" {head}::{} ", item.trim())));
        }
        rest = body.get(end + 1..).unwrap_or("");
    }
    out.push_str(rest);
    out
}

/// Every `crate::a::b` / `super::b` path in the code, resolved to the longest known module.
fn references(module: &str, code: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let parent: Vec<&str> = module.split("::").filter(|p| !p.is_empty()).collect();
    let code = expand_groups(code);
    let words = code.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'));
    for word in words {
        let path: Vec<&str> = if let Some(rest) = word.strip_prefix("crate::") {
            rest.split("::").collect()
        } else if let Some(rest) = word.strip_prefix("super::") {
            // `super` of a top-level module is the crate root.
            let mut p: Vec<&str> = parent[..parent.len().saturating_sub(1)].to_vec();
            p.extend(rest.split("::"));
            p
        } else {
            continue;
        };
        let target = (1..=path.len())
            .rev()
            .map(|n| path[..n].join("::"))
            .find(|m| known.contains(m));
        if let Some(t) = target {
            out.insert(t);
        }
    }
    out
}

fn related(a: &str, b: &str) -> bool {
    a == b || b.starts_with(&format!("{a}::")) || a.starts_with(&format!("{b}::"))
}

fn graph(src: &Path) -> Graph {
    let mut files = vec![];
    source_files(src, &mut files);
    let known: BTreeSet<String> = files
        .iter()
        .map(|f| module_name(src, f))
        .filter(|m| !m.is_empty())
        .collect();
    let mut g = Graph::new();
    for file in &files {
        let module = module_name(src, file);
        if module.is_empty() {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("readable source");
        let edges = references(&module, &code_without_tests(&text), &known)
            .into_iter()
            .filter(|t| !related(&module, t))
            .collect();
        g.insert(module, edges);
    }
    g
}

/// One cycle, as the list of modules round it, if the graph has any.
fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    fn visit(
        g: &Graph,
        node: &str,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_string());
        for next in g.get(node).into_iter().flatten() {
            if let Some(c) = visit(g, next, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|n| visit(g, n, &mut Vec::new(), &mut done))
}

/// Groups of modules that reach each other (strongly connected, more than one module).
fn tangles(g: &Graph) -> Vec<BTreeSet<String>> {
    let reach = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(n) = todo.pop() {
            for next in g.get(&n).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> = g.keys().map(|k| (k, reach(k))).collect();
    let mut groups: Vec<BTreeSet<String>> = vec![];
    for (node, reached) in &reaches {
        let group: BTreeSet<String> = reached
            .iter()
            .filter(|other| reaches.get(other).is_some_and(|r| r.contains(*node)))
            .cloned()
            .collect();
        if group.len() > 1 && !groups.contains(&group) {
            groups.push(group);
        }
    }
    groups
}

/// The same graph between top-level modules only (`health::gates` counts as `health`).
fn top_level(g: &Graph) -> Graph {
    let top = |m: &str| m.split("::").next().unwrap_or(m).to_string();
    let mut out = Graph::new();
    for (from, to) in g {
        let entry = out.entry(top(from)).or_default();
        entry.extend(to.iter().map(|t| top(t)).filter(|t| *t != top(from)));
    }
    out
}

/// Checks the file graph and the graph of top-level modules (a cycle through two files of one
/// folder module, such as `spec::load -> health::prometheus -> spec`, is one between folders).
fn assert_acyclic(crate_dir: &str) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(crate_dir)
        .join("src");
    let files = graph(&src);
    assert!(
        files.len() > 3,
        "read too few modules under {}",
        src.display()
    );
    for g in [top_level(&files), files] {
        if let Some(cycle) = find_cycle(&g) {
            let groups: Vec<String> = tangles(&g)
                .iter()
                .map(|t| t.iter().cloned().collect::<Vec<_>>().join(", "))
                .collect();
            panic!(
                "import cycle in {}: {} (make what both need a leaf module they import)\nmodules that import each other: {}",
                src.display(),
                cycle.join(" -> "),
                groups.join(" | ")
            );
        }
    }
}

#[test]
fn the_operator_has_no_import_cycle() {
    assert_acyclic(".");
}

#[test]
fn the_simulator_has_no_import_cycle() {
    assert_acyclic("../sim");
}

#[test]
fn the_real_swarm_suite_has_no_import_cycle() {
    assert_acyclic("../e2e");
}

#[test]
fn a_cycle_is_found_and_named() {
    let mut g = Graph::new();
    g.insert("a".into(), BTreeSet::from(["b".to_string()]));
    g.insert("b".into(), BTreeSet::from(["c".to_string()]));
    g.insert("c".into(), BTreeSet::from(["a".to_string()]));
    g.insert("d".into(), BTreeSet::from(["a".to_string()]));
    assert_eq!(find_cycle(&g).unwrap(), ["a", "b", "c", "a"]);
    let abc: BTreeSet<String> = ["a", "b", "c"].into_iter().map(String::from).collect();
    assert_eq!(tangles(&g), vec![abc]);
    g.get_mut("c").unwrap().clear();
    assert_eq!(find_cycle(&g), None);
    assert!(tangles(&g).is_empty());
}

#[test]
fn comments_are_not_imports() {
    let code =
        code_without_tests("//! see `crate::observe`\nuse crate::spec; // not crate::health\n");
    let known: BTreeSet<String> = ["observe", "spec", "health"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(
        references("docker", &code, &known),
        BTreeSet::from(["spec".to_string()])
    );
}

#[test]
fn paths_resolve_to_the_longest_known_module() {
    let known: BTreeSet<String> = ["health", "health::gates", "spec"]
        .into_iter()
        .map(String::from)
        .collect();
    let code =
        "use crate::health::gates::Gate; use super::spec::X; let v = crate::health::metrics();";
    let refs = references("health::predict", code, &known);
    assert_eq!(
        refs,
        BTreeSet::from(["health".to_string(), "health::gates".to_string()])
    );
    // `super` of a top-level module is the crate root.
    let refs = references("planner", "use super::spec::HealthSpec;", &known);
    assert_eq!(refs, BTreeSet::from(["spec".to_string()]));
    let grouped = "use crate::{health::{gates::Gate, metrics}, spec};";
    assert_eq!(
        references("planner", grouped, &known),
        BTreeSet::from([
            "health".to_string(),
            "health::gates".to_string(),
            "spec".to_string()
        ])
    );
}
