//! No module cycles: in every crate of the workspace, the top-level modules
//! (`src/<module>.rs` or `src/<module>/`) use each other in one direction
//! only, so each can be read knowing only what it uses. A child module may
//! use its parent (`super::`), as linkerd nests its modules; two siblings
//! may not use each other. Read from the source text: `crate::<module>`
//! paths outside comments and test modules (`#[cfg(test)] mod …`, `tests.rs`).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// The crates' source folders, from the workspace root (and every
/// `services/*/src`). `fixtures/` is one file: nothing to order.
const CRATES: &[&str] = &[
    "src",
    "discovery/src",
    "cli/src",
    "bench/src",
    "testkit/src",
    "localenv/src",
];

type Graph = BTreeMap<String, BTreeSet<String>>;

#[test]
fn no_crate_has_a_cycle_between_its_top_level_modules() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut folders: Vec<PathBuf> = CRATES.iter().map(|folder| root.join(folder)).collect();
    for service in fs::read_dir(root.join("services")).expect("services/") {
        folders.push(service.expect("services/ entry").path().join("src"));
    }
    assert!(
        folders.len() >= CRATES.len() + 4,
        "expected {} shared crates and at least 4 services",
        CRATES.len()
    );
    let mut cycles = Vec::new();
    for folder in &folders {
        let graph = module_graph(folder);
        assert!(graph.len() > 1, "{}: no modules found", folder.display());
        if let Some(cycle) = find_cycle(&graph) {
            cycles.push(format!("{}: {}", folder.display(), cycle.join(" → ")));
        }
    }
    assert!(cycles.is_empty(), "module cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_checker_sees_a_cycle_through_nested_braces() {
    let mut graph = Graph::new();
    let mut add = |module: &str, source: &str| {
        graph.entry(module.into()).or_default().extend(uses(source));
    };
    add(
        "client",
        "use crate::{\n    limits::MAX,\n    server::{a, b::{c, d}},\n};",
    );
    add("server", "fn f() { crate::client::g(); }");
    add("limits", "// crate::client in a comment does not count");
    assert_eq!(
        uses("use crate::{\n    limits::MAX,\n    server::{a, b::{c, d}},\n};"),
        BTreeSet::from(["limits".to_owned(), "server".to_owned()])
    );
    let cycle = find_cycle(&graph).expect("client ↔ server is a cycle");
    assert_eq!(cycle, ["client", "server", "client"]);
    graph.get_mut("server").unwrap().clear();
    assert_eq!(find_cycle(&graph), None);
}

/// Top-level module → the top-level modules it uses.
fn module_graph(src: &Path) -> Graph {
    let mut graph = Graph::new();
    for file in rust_files(src) {
        let relative = file.strip_prefix(src).expect("below src");
        let first = relative.components().next().expect("a path");
        let module = first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        let is_test = relative.file_name().is_some_and(|name| name == "tests.rs");
        if is_test || matches!(module.as_str(), "lib" | "main" | "bin") {
            continue;
        }
        let text = fs::read_to_string(&file).expect("readable source");
        let mut used = uses(&without_tests(&text));
        used.remove(&module);
        graph.entry(module).or_default().extend(used);
    }
    // Only edges between modules of this crate (not `crate::SomeReExport`).
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for used in graph.values_mut() {
        used.retain(|module| modules.contains(module));
    }
    graph
}

fn rust_files(folder: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(folder).expect("readable folder") {
        let path = entry.expect("folder entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files
}

/// The source without its `#[cfg(test)]` modules (tests may use anything).
fn without_tests(text: &str) -> String {
    match text.find("#[cfg(test)]\nmod ") {
        Some(start) => text[..start].to_owned(),
        None => text.to_owned(),
    }
}

/// The first path segments after each `crate::` outside comments, looking
/// into `crate::{a::…, b}` groups (nested braces included).
fn uses(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            found.extend(group_heads(group));
        } else {
            found.extend(identifier(rest));
        }
    }
    found
}

/// The first segment of each path in a `{…}` group whose opening brace is
/// already consumed.
fn group_heads(group: &str) -> Vec<String> {
    let (mut heads, mut depth, mut expecting) = (Vec::new(), 0usize, true);
    for (index, character) in group.char_indices() {
        match character {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => expecting = true,
            c if expecting && depth == 0 && (c.is_alphabetic() || c == '_') => {
                heads.extend(identifier(&group[index..]));
                expecting = false;
            }
            _ => {}
        }
    }
    heads
}

fn identifier(text: &str) -> Option<String> {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    (end > 0).then(|| text[..end].to_owned())
}

/// A cycle as the modules along it (first = last), if the graph has one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit<'a>(
        module: &'a str,
        graph: &'a Graph,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|on_path| *on_path == module) {
            let mut cycle: Vec<String> = path[start..].iter().map(|m| (*m).to_owned()).collect();
            cycle.push(module.to_owned());
            return Some(cycle);
        }
        if !done.insert(module) {
            return None;
        }
        path.push(module);
        for next in graph.get(module).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|module| visit(module, graph, &mut Vec::new(), &mut done))
}
