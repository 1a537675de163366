//! The layering of `src/`, checked from the code's own paths: no two top-level
//! modules may reach each other (an arrow may only point down, see `src/lib.rs`),
//! and no file may reach back to a file that reaches it. Every `crate::`, `super::`
//! and `self::` path of non-test code (up to a file's first `#[cfg(test)]`, comments
//! left out), `use` groups expanded, is resolved to the longest file module it
//! names. The same measure as `../shared/tools/module_cycles.py`, in Rust with std
//! only so that `cargo test` (and so CI) runs it. Also the house limit on the length
//! of a function of non-test code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module's path below the crate root: `["fs", "sink"]` for `src/fs/sink/mod.rs`.
type Module = Vec<String>;
/// Who imports whom.
type Graph = BTreeMap<Module, BTreeSet<Module>>;

#[test]
fn top_level_modules_import_each_other_in_one_direction_only() {
    let report = circles(&graph(false));
    assert!(
        report.is_empty(),
        "top-level modules that reach each other (see the map in src/lib.rs):\n{}",
        report.join("\n")
    );
}

#[test]
fn no_file_circles() {
    let report = circles(&graph(true));
    assert!(
        report.is_empty(),
        "files that reach each other:\n{}",
        report.join("\n")
    );
}

/// The house limit on a function's length (signature to closing brace).
const MAX_FUNCTION_LINES: usize = 60;

#[test]
fn no_function_is_longer_than_the_house_limit() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut long = Vec::new();
    for path in module_files(&src).values() {
        let text = std::fs::read_to_string(path).expect("a source file is readable");
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (line, name, length) in function_lengths(code) {
            if length > MAX_FUNCTION_LINES {
                long.push(format!("{}:{line} {name}: {length} lines", path.display()));
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_FUNCTION_LINES} lines (split them into named steps):\n{}",
        long.join("\n")
    );
}

/// Each function of `code` with a body: (its first line, its name, its length in
/// lines from the signature to the closing brace at the signature's indentation).
fn function_lengths(code: &str) -> Vec<(usize, String, usize)> {
    let lines: Vec<&str> = code.lines().collect();
    let mut out = Vec::new();
    for (at, line) in lines.iter().enumerate() {
        let indent = leading_ws(line);
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(fn_at) = words.iter().position(|w| *w == "fn") else {
            continue;
        };
        let before_ok = words[..fn_at].iter().all(|w| {
            w.starts_with("pub") || ["const", "unsafe", "async", "extern", "\"C\""].contains(w)
        });
        if !before_ok || words.len() <= fn_at + 1 || line.trim_end().ends_with(';') {
            continue;
        }
        let name: String = words[fn_at + 1]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let closing = format!("{}}}", &line[..indent]);
        if let Some(end) = lines[at..].iter().position(|l| l.starts_with(&closing)) {
            out.push((at + 1, name, end + 1));
        }
    }
    out
}

/// The import graph of `src/`, between files (`by_file`) or top-level modules.
fn graph(by_file: bool) -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = module_files(&src);
    let known: BTreeSet<Module> = files.keys().cloned().collect();
    let mut edges = Graph::new();
    for (module, path) in &files {
        if module.is_empty() {
            continue; // lib.rs and main.rs: the root may reach anything
        }
        let text = std::fs::read_to_string(path).expect("a source file is readable");
        let from = node(module, by_file);
        let targets = edges.entry(from.clone()).or_default();
        for reference in references(&code_only(&text), module) {
            let target = if by_file {
                longest_file(&reference, &known)
            } else {
                reference
                    .first()
                    .map(|top| vec![top.clone()])
                    .filter(|top| known.contains(top))
            };
            if let Some(target) = target.filter(|target| *target != from) {
                targets.insert(target);
            }
        }
    }
    edges
}

/// The node a module counts as: itself, or its top-level module.
fn node(module: &Module, by_file: bool) -> Module {
    if by_file {
        module.clone()
    } else {
        module[..1].to_vec()
    }
}

/// Every `.rs` file under `src`, by module path.
fn module_files(src: &Path) -> BTreeMap<Module, PathBuf> {
    let mut out = BTreeMap::new();
    let mut pending = vec![src.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/ is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                out.insert(module_of(src, &path), path);
            }
        }
    }
    out
}

fn module_of(src: &Path, path: &Path) -> Module {
    let relative = path
        .strip_prefix(src)
        .expect("under src/")
        .with_extension("");
    let mut module: Module = relative
        .components()
        .map(|part| part.as_os_str().to_string_lossy().into_owned())
        .collect();
    if module.last().is_some_and(|last| last == "mod") {
        module.pop();
    }
    if module == ["lib"] || module == ["main"] {
        module.clear();
    }
    module
}

/// The longest prefix of `path` that is a file module.
fn longest_file(path: &[String], known: &BTreeSet<Module>) -> Option<Module> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|prefix| known.contains(prefix))
}

/// The text before the first `#[cfg(test)]`, without comments.
fn code_only(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("//") {
            rest = after.find('\n').map_or("", |end| &after[end..]);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.find("*/").map_or("", |end| &after[end + 2..]);
        } else {
            let next = rest.chars().next().expect("not empty");
            out.push(next);
            rest = &rest[next.len_utf8()..];
        }
    }
    out
}

/// Every absolute path the code of `module` names, `use` groups expanded.
fn references(code: &str, module: &Module) -> Vec<Module> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    for (at, _) in code.match_indices("::") {
        // The path starts at the identifier before the first `::` of a run.
        let start = code[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1);
        let head = &code[start..at];
        let preceded = start >= 2 && &code[start - 2..start] == "::";
        let word_before = start > 0 && (bytes[start - 1].is_ascii_alphanumeric());
        if preceded || word_before || !matches!(head, "crate" | "super" | "self") {
            continue;
        }
        let (tree, _) = use_tree(&code[start..]);
        for path in tree {
            if let Some(absolute) = absolute(&path, module) {
                out.push(absolute);
            }
        }
    }
    out
}

/// `crate::a::b`, `super::x`, `self::y` as a path from the crate root.
fn absolute(path: &[String], module: &Module) -> Option<Module> {
    let mut base: Module = match path.first()?.as_str() {
        "crate" => Vec::new(),
        "self" => module.clone(),
        "super" => module[..module.len().saturating_sub(1)].to_vec(),
        _ => return None,
    };
    let mut rest = &path[1..];
    while rest.first().is_some_and(|part| part == "super") {
        base.pop();
        rest = &rest[1..];
    }
    base.extend(rest.iter().filter(|part| *part != "self").cloned());
    Some(base)
}

/// The paths a use tree (or a plain path) at the start of `text` names, and how
/// many bytes it took: `a::{b::C, d}` is `a::b::C` and `a::d`.
fn use_tree(text: &str) -> (Vec<Vec<String>>, usize) {
    let mut prefix = Vec::new();
    let mut at = 0;
    loop {
        let ident_len = text[at..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(text.len() - at);
        if ident_len > 0 {
            prefix.push(text[at..at + ident_len].to_string());
            at += ident_len;
        }
        let after_ws = at + leading_ws(&text[at..]);
        if !text[after_ws..].starts_with("::") {
            return (vec![prefix], at);
        }
        at = after_ws + 2;
        at += leading_ws(&text[at..]);
        if text[at..].starts_with('{') {
            let (branches, used) = group(&text[at + 1..]);
            let paths = branches
                .into_iter()
                .map(|branch| prefix.iter().cloned().chain(branch).collect())
                .collect();
            return (paths, at + 1 + used);
        }
        if text[at..].starts_with('*') {
            return (vec![prefix], at + 1);
        }
    }
}

/// The branches of a `{...}` group whose `{` was just read, and the bytes up to and
/// including its `}`.
fn group(text: &str) -> (Vec<Vec<String>>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        at += leading_ws(&text[at..]);
        match text[at..].chars().next() {
            None => return (out, at),
            Some('}') => return (out, at + 1),
            Some(',') => at += 1,
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                let (paths, used) = use_tree(&text[at..]);
                out.extend(paths);
                at += used;
                at += skip_rename(&text[at..]);
            }
            Some(other) => at += other.len_utf8(), // `*` and anything unexpected
        }
    }
}

/// The bytes of an ` as name` after a path, if there is one.
fn skip_rename(text: &str) -> usize {
    let ws = leading_ws(text);
    match text[ws..].strip_prefix("as ") {
        Some(rest) => {
            let name = leading_ws(rest);
            let len = rest[name..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len() - name);
            ws + 3 + name + len
        }
        None => 0,
    }
}

fn leading_ws(text: &str) -> usize {
    text.len() - text.trim_start().len()
}

/// One line per group of nodes that reach each other (Tarjan's strongly connected
/// components), then one per pair that import each other directly.
fn circles(edges: &Graph) -> Vec<String> {
    let name = |module: &Module| module.join("/");
    let mut lines: Vec<String> = strongly_connected(edges)
        .into_iter()
        .filter(|group| group.len() > 1)
        .map(|group| {
            let names: Vec<String> = group.iter().map(name).collect();
            format!("cycle: {}", names.join(" "))
        })
        .collect();
    for (from, targets) in edges {
        for to in targets.iter().filter(|to| *to > from) {
            if edges.get(to).is_some_and(|back| back.contains(from)) {
                lines.push(format!("pair: {} <-> {}", name(from), name(to)));
            }
        }
    }
    lines
}

/// Tarjan's algorithm, each group sorted.
fn strongly_connected(edges: &Graph) -> Vec<Vec<Module>> {
    let mut tarjan = Tarjan {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        groups: Vec::new(),
    };
    for node in edges.keys() {
        if !tarjan.index.contains_key(node) {
            tarjan.visit(node);
        }
    }
    tarjan.groups
}

struct Tarjan<'a> {
    edges: &'a Graph,
    index: BTreeMap<&'a Module, usize>,
    low: BTreeMap<&'a Module, usize>,
    stack: Vec<&'a Module>,
    on_stack: BTreeSet<&'a Module>,
    groups: Vec<Vec<Module>>,
}

impl<'a> Tarjan<'a> {
    fn visit(&mut self, node: &'a Module) {
        let number = self.index.len();
        self.index.insert(node, number);
        self.low.insert(node, number);
        self.stack.push(node);
        self.on_stack.insert(node);
        for next in self.edges.get(node).into_iter().flatten() {
            if !self.index.contains_key(next) {
                self.visit(next);
                let low = self.low[node].min(self.low[next]);
                self.low.insert(node, low);
            } else if self.on_stack.contains(next) {
                let low = self.low[node].min(self.index[next]);
                self.low.insert(node, low);
            }
        }
        if self.low[node] == self.index[node] {
            let mut group = Vec::new();
            while let Some(member) = self.stack.pop() {
                self.on_stack.remove(member);
                group.push(member.clone());
                if member == node {
                    break;
                }
            }
            group.sort();
            self.groups.push(group);
        }
    }
}

#[test]
fn use_groups_expand_into_paths() {
    let module: Module = vec!["fs".into(), "sink".into()];
    let code = "use crate::{a::B, c::{d, e as f}};\nuse super::{self, g::H};\nx = crate::k::l(1);";
    let mut found = references(code, &module);
    found.sort();
    let expected: Vec<Module> = ["a/B", "c/d", "c/e", "fs", "fs/g/H", "k/l"]
        .iter()
        .map(|path| path.split('/').map(String::from).collect())
        .collect();
    assert_eq!(found, expected);
}
