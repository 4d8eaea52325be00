//! The layout is the architecture, so it is checked like behaviour: within each crate, no
//! two source files import each other (directly or round a circle), and the layers of
//! auditd point one way only (handlers never import the router, the query layer never
//! imports handlers, the state or the router).
//!
//! The check reads the sources: every `crate::`/`super::` path, in `use` declarations and
//! in code, is resolved to the module file it names (a re-export counts as an import of
//! the file that re-exports). Unit tests (`#[cfg(test)]`, last in each file) are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// A module, as the path of names from the crate root (`["query", "records"]`).
type Module = Vec<String>;

struct Crate {
    /// Every module of the crate, with the source text that counts (tests cut off).
    modules: BTreeMap<Module, String>,
}

impl Crate {
    fn read(src: &Path) -> Crate {
        let mut modules = BTreeMap::new();
        let mut pending = vec![src.to_path_buf()];
        while let Some(dir) = pending.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    pending.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let module = module_of(src, &path);
                    let text = fs::read_to_string(&path).unwrap();
                    let text = match text.find("#[cfg(test)]") {
                        Some(at) => text[..at].to_owned(),
                        None => text,
                    };
                    modules.insert(module, text);
                }
            }
        }
        Crate { modules }
    }

    /// The module a path names: its longest prefix that is a module of this crate.
    fn resolve(&self, path: &[String]) -> Option<Module> {
        (0..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|candidate| self.modules.contains_key(candidate))
    }

    /// Which modules each module imports (itself and its parents excluded: a `mod.rs` is
    /// where a module's children are declared, not a dependency of theirs).
    fn imports(&self) -> BTreeMap<Module, BTreeSet<Module>> {
        let mut graph = BTreeMap::new();
        for (module, text) in &self.modules {
            let mut targets = BTreeSet::new();
            for path in paths_in(text) {
                let absolute = match path.first().map(String::as_str) {
                    Some("crate") => path[1..].to_vec(),
                    Some("super") => {
                        let mut base = self.parent_of(module);
                        let mut rest = &path[1..];
                        while rest.first().map(String::as_str) == Some("super") {
                            base.pop();
                            rest = &rest[1..];
                        }
                        base.extend_from_slice(rest);
                        base
                    }
                    Some("self") => {
                        let mut base = module.clone();
                        base.extend_from_slice(&path[1..]);
                        base
                    }
                    _ => continue,
                };
                if let Some(target) = self.resolve(&absolute) {
                    if &target != module && !module.starts_with(&target) {
                        targets.insert(target);
                    }
                }
            }
            graph.insert(module.clone(), targets);
        }
        graph
    }

    /// The module `super` names in `module`'s file.
    fn parent_of(&self, module: &Module) -> Module {
        let mut parent = module.clone();
        parent.pop();
        parent
    }
}

fn module_of(src: &Path, file: &Path) -> Module {
    let relative: PathBuf = file.strip_prefix(src).unwrap().with_extension("");
    let mut names: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        names.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        names.pop();
    }
    names
}

/// Every `crate::`, `super::` and `self::` path in `text`, with `use` trees expanded.
fn paths_in(text: &str) -> Vec<Vec<String>> {
    let code: String = text
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut paths = Vec::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let starts_path = ["crate::", "super::", "self::"]
            .iter()
            .find(|p| bytes[i..].starts_with(p.as_bytes()))
            .filter(|_| i == 0 || !is_ident(bytes[i - 1]) && bytes[i - 1] != b':');
        match starts_path {
            Some(_) => {
                let end = tree_end(&code, i);
                expand(&code[i..end], &mut Vec::new(), &mut paths);
                i = end;
            }
            None => i += 1,
        }
    }
    paths
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Where a path starting at `start` ends: after its last segment, or after the closing
/// brace of its `use` tree.
fn tree_end(code: &str, start: usize) -> usize {
    let bytes = code.as_bytes();
    let mut depth = 0usize;
    let mut i = start;
    while i < bytes.len() {
        match bytes[i] {
            b'{' => depth += 1,
            b'}' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            b':' => {}
            b if is_ident(b) => {}
            b' ' | b'\n' | b',' | b'*' if depth > 0 => {}
            _ if depth == 0 => return i,
            _ => {}
        }
        i += 1;
    }
    i
}

/// Expands a path or `use` tree (`a::{b, c::{d}}`) into its full paths.
fn expand(tree: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let tree = tree.trim();
    let (head, rest) = match tree.find('{') {
        Some(brace) => (
            &tree[..brace],
            Some(&tree[brace + 1..tree.rfind('}').unwrap_or(tree.len())]),
        ),
        None => (tree, None),
    };
    let depth_before = prefix.len();
    prefix.extend(
        head.split("::")
            .map(str::trim)
            .filter(|s| !s.is_empty() && *s != "*" && *s != "self")
            .map(|s| s.split_whitespace().next().unwrap_or(s).to_owned()),
    );
    match rest {
        None => out.push(prefix.clone()),
        Some(inner) => {
            for item in split_top_level(inner) {
                expand(item, prefix, out);
            }
            out.push(prefix.clone());
        }
    }
    prefix.truncate(depth_before);
}

fn split_top_level(inner: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items.into_iter().filter(|s| !s.trim().is_empty()).collect()
}

/// The circles in `graph`: strongly connected components of more than one module.
fn circles(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    let reaches = |from: &Module| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(m) = stack.pop() {
            for next in graph.get(&m).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let reach: BTreeMap<&Module, BTreeSet<Module>> =
        graph.keys().map(|m| (m, reaches(m))).collect();
    let mut found: Vec<Vec<Module>> = Vec::new();
    for (m, r) in &reach {
        if !r.contains(*m) || found.iter().any(|c| c.contains(m)) {
            continue;
        }
        let circle: Vec<Module> = reach
            .iter()
            .filter(|(other, other_reach)| r.contains(**other) && other_reach.contains(*m))
            .map(|(other, _)| (*other).clone())
            .collect();
        found.push(circle);
    }
    found
}

fn crate_src(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name).join("src")
}

fn show(module: &Module) -> String {
    if module.is_empty() {
        "crate root".to_owned()
    } else {
        module.join("::")
    }
}

#[test]
fn no_two_source_files_import_each_other() {
    let mut described = Vec::new();
    for name in ["audit-layer", "auditd", "pg-provision", "migrations"] {
        let krate = Crate::read(&crate_src(name));
        for circle in circles(&krate.imports()) {
            let members: Vec<String> = circle.iter().map(show).collect();
            described.push(format!("{name}: {}", members.join(" <-> ")));
        }
    }
    assert!(described.is_empty(), "import circles: {described:#?}");
}

#[test]
fn auditd_layers_point_one_way() {
    let krate = Crate::read(&crate_src("auditd"));
    let graph = krate.imports();
    // (a module prefix, what it must never import)
    let rules: &[(&str, &[&str])] = &[
        ("handlers", &["router", "server", "commands"]),
        (
            "query",
            &[
                "handlers", "router", "state", "access", "server", "commands",
            ],
        ),
        (
            "auth",
            &["handlers", "router", "state", "query", "server", "commands"],
        ),
        ("state", &["handlers", "router", "server", "commands"]),
        ("router", &["server", "commands"]),
        ("server", &["commands"]),
    ];
    let mut broken = Vec::new();
    for (module, targets) in &graph {
        for (prefix, forbidden) in rules {
            if module.first().map(String::as_str) != Some(prefix) {
                continue;
            }
            for target in targets {
                if forbidden.contains(&target.first().map(String::as_str).unwrap_or("")) {
                    broken.push(format!("{} imports {}", show(module), show(target)));
                }
            }
        }
    }
    assert!(broken.is_empty(), "{broken:#?}");
}

#[test]
fn the_check_sees_a_circle_when_there_is_one() {
    // The same reading applied to a made-up crate with a circle: the check can fail.
    let mut modules = BTreeMap::new();
    modules.insert(vec![], "mod a; mod b;".to_owned());
    modules.insert(
        vec!["a".to_owned()],
        "use crate::b::{self, Thing};\nfn f() { super::b::g(); }".to_owned(),
    );
    modules.insert(
        vec!["b".to_owned()],
        "pub fn g() { crate::a::h() }".to_owned(),
    );
    let krate = Crate { modules };
    let found = circles(&krate.imports());
    assert_eq!(
        found,
        vec![vec![vec!["a".to_owned()], vec!["b".to_owned()]]],
        "{:?}",
        krate.imports()
    );
}
