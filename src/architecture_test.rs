//! The rules of ARCHITECTURE.md that a machine can check, read off the source
//! files themselves: the core names no egui, `util` imports nothing of ours above
//! it, and no module imports a module that imports it back (between top-level
//! modules, and between the files of one folder).
//!
//! Imports are read from `crate::x`, `super::x` and `use` groups outside comments
//! and test modules: a lint of our own conventions, not a Rust parser.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use regex::Regex;

struct SourceFile {
    /// Path under `src/` without `.rs`, split: `["echo", "pipeline"]`.
    parts: Vec<String>,
    /// The file's code without comments and without its test module.
    code: String,
}

fn source_files() -> Vec<SourceFile> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    walk(&src, &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let production = match text.find("#[cfg(test)]") {
                Some(i) => &text[..i],
                None => &text[..],
            };
            let code = production
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            let rel = path.strip_prefix(&src).unwrap().with_extension("");
            let parts = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            SourceFile { parts, code }
        })
        .collect()
}

/// Names a path prefix reaches: `prefix::name` and every `name` in `prefix::{a, b::c}`.
fn reached(code: &str, prefix: &str) -> BTreeSet<String> {
    let single = Regex::new(&format!(r"\b{prefix}::([a-z_][a-z0-9_]*)")).unwrap();
    let group = Regex::new(&format!(r"\b{prefix}::\{{([^}}]*)\}}")).unwrap();
    let first_word = Regex::new(r"(?:^|,)\s*([a-z_][a-z0-9_]*)").unwrap();
    let mut out: BTreeSet<String> = single
        .captures_iter(code)
        .map(|c| c[1].to_string())
        .collect();
    for g in group.captures_iter(code) {
        out.extend(first_word.captures_iter(&g[1]).map(|c| c[1].to_string()));
    }
    out.remove("self");
    out
}

type Graph = BTreeMap<String, BTreeSet<String>>;

fn two_way(graph: &Graph) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (a, targets) in graph {
        for b in targets {
            if a < b && graph.get(b).is_some_and(|t| t.contains(a)) {
                out.push((a.clone(), b.clone()));
            }
        }
    }
    out
}

/// Top-level modules and, per folder, its files, each with what it imports.
fn graphs() -> (Graph, BTreeMap<String, Graph>) {
    let mut top = Graph::new();
    let mut folders: BTreeMap<String, Graph> = BTreeMap::new();
    for file in source_files() {
        let module = file.parts[0].clone();
        if module == "lib" || module == "main" || module == "architecture_test" {
            continue;
        }
        let targets = top.entry(module.clone()).or_default();
        targets.extend(
            reached(&file.code, "crate")
                .into_iter()
                .filter(|t| *t != module),
        );
        if file.parts.len() == 2 && file.parts[1] != "mod" {
            let me = file.parts[1].clone();
            let mut siblings = reached(&file.code, "super");
            siblings.extend(reached(&file.code, &format!("crate::{module}")));
            siblings.remove(&me);
            folders
                .entry(module)
                .or_default()
                .entry(me)
                .or_default()
                .extend(siblings);
        }
    }
    (top, folders)
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let (top, folders) = graphs();
    assert!(top.len() > 8, "the walk found the modules: {top:?}");
    assert_eq!(two_way(&top), Vec::new(), "top-level modules");
    for (folder, files) in &folders {
        assert_eq!(two_way(files), Vec::new(), "files of src/{folder}/");
    }
}

#[test]
fn util_imports_nothing_above_it() {
    let (top, _) = graphs();
    assert_eq!(top["util"], BTreeSet::new());
}

#[test]
fn only_the_ui_names_egui() {
    let egui = Regex::new(r"\b(egui|eframe|egui_extras|egui_plot|rfd|poll_promise)::").unwrap();
    for file in source_files() {
        if file.parts[0] == "ui" || file.parts[0] == "main" || file.parts[0] == "architecture_test"
        {
            continue;
        }
        assert!(
            !egui.is_match(&file.code),
            "src/{}.rs names a GUI crate",
            file.parts.join("/")
        );
    }
}

#[test]
fn the_checks_see_a_cycle_when_there_is_one() {
    let mut graph = Graph::new();
    graph.insert("a".into(), ["b".to_string()].into());
    graph.insert("b".into(), ["a".to_string(), "c".to_string()].into());
    assert_eq!(two_way(&graph), [("a".to_string(), "b".to_string())]);
    let code = "use super::{plan::Plan, guide};\nlet x = crate::echo::pipeline::answer;";
    assert_eq!(
        reached(code, "super"),
        ["guide", "plan"].map(String::from).into()
    );
    assert_eq!(
        reached(code, "crate::echo"),
        ["pipeline"].map(String::from).into()
    );
}
