//! No import circles in baton-host: the module graph read from `host/src` (`use` lines and
//! `crate::`/`super::`/`self::` paths, test code left out) has none, at two levels:
//!
//! - between files: no file imports, through others, one that imports it back (a module
//!   and its own submodules may use each other: a folder's `mod.rs` is its facade);
//! - between folders: under each module, its children (each with everything below it)
//!   import each other one way only.
//!
//! A name reached through a `use` re-export counts for the module that defines it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Module = Vec<String>;

fn name(module: &[String]) -> String {
    if module.is_empty() {
        "lib".into()
    } else {
        module.join("/")
    }
}

/// Source without comments, string and char literals' contents, and `#[cfg(test)]`
/// items; and the names of child modules declared `#[cfg(test)] mod name;`.
fn code_of(source: &str) -> (String, Vec<String>) {
    let bytes: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let next = bytes.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < bytes.len() && bytes[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < bytes.len() {
                if bytes[i] == '/' && bytes.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if bytes[i] == '*' && bytes.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == 'r' && matches!(next, Some('"' | '#')) && !ident_before(&bytes, i) {
            // A raw string: r"…", r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while bytes.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if bytes.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            while j < bytes.len() {
                if bytes[j] == '"' && (0..hashes).all(|h| bytes.get(j + 1 + h) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < bytes.len() && bytes[i] != '"' {
                i += if bytes[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && next == Some('\\') {
            // '\n', '\'', '\u{..}'
            i += 2;
            while i < bytes.len() && bytes[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else if c == '\'' && bytes.get(i + 2) == Some(&'\'') {
            i += 3;
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    drop_test_items(&out)
}

fn ident_before(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

fn drop_test_items(code: &str) -> (String, Vec<String>) {
    let mut kept = String::with_capacity(code.len());
    let mut test_modules = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        kept.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        // The item ends at its first `;` outside braces, or at its braces' close.
        let mut depth = 0usize;
        let mut end = after.len();
        for (j, ch) in after.char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        end = j + 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    end = j + 1;
                    break;
                }
                _ => {}
            }
        }
        let item = after[..end].trim();
        let words: Vec<&str> = item
            .split(|c: char| c.is_whitespace() || c == ';')
            .filter(|w| !w.is_empty())
            .collect();
        if let [.., "mod", module] = words.as_slice() {
            test_modules.push((*module).to_string());
        }
        rest = &after[end..];
    }
    kept.push_str(rest);
    (kept, test_modules)
}

/// `a::{b, c::{d, e}}` as `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        return vec![tree.to_string()];
    };
    let close = tree.rfind('}').unwrap_or(tree.len());
    let (prefix, body) = (&tree[..open], &tree[open + 1..close]);
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (j, ch) in body.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&body[start..j]);
                start = j + 1;
            }
            _ => {}
        }
    }
    items.push(&body[start..]);
    items
        .into_iter()
        .filter(|item| !item.trim().is_empty())
        .flat_map(expand)
        .map(|tail| format!("{prefix}{tail}"))
        .collect()
}

struct Crate {
    modules: BTreeSet<Module>,
    /// Per module: each name its `use` lines bring in, and the path it stands for.
    imported: BTreeMap<Module, BTreeMap<String, String>>,
}

impl Crate {
    /// The module `path` (seen from `from`) leads to: the one defining the item it names.
    fn resolve(&self, from: &Module, path: &str, depth: usize) -> Option<Module> {
        let segments: Vec<&str> = path
            .split("::")
            .map(|s| s.split(" as ").next().unwrap_or(s).trim())
            .filter(|s| !s.is_empty())
            .collect();
        let first = *segments.first()?;
        if depth > 16 {
            return None;
        }
        let mut module = match first {
            "crate" => Vec::new(),
            "super" | "self" => from.clone(),
            _ if self.modules.contains(&child(from, first)) => from.clone(),
            _ => return None,
        };
        let mut rest = &segments[..];
        if first == "crate" {
            rest = &rest[1..];
        }
        while let Some(&s) = rest.first() {
            match s {
                "super" => {
                    module.pop();
                }
                "self" => {}
                _ => break,
            }
            rest = &rest[1..];
        }
        for &segment in rest {
            if self.modules.contains(&child(&module, segment)) {
                module.push(segment.to_string());
                continue;
            }
            if let Some(target) = self.imported.get(&module).and_then(|m| m.get(segment))
                && target != path
                && let Some(found) = self.resolve(&module, target, depth + 1)
            {
                return Some(found);
            }
            break;
        }
        Some(module)
    }
}

fn child(module: &Module, name: &str) -> Module {
    let mut child = module.clone();
    child.push(name.to_string());
    child
}

/// The `crate::…`, `super::…` and `self::…` paths written in `code`.
fn inline_paths(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    for start in ["crate::", "super::", "self::"] {
        for (at, _) in code.match_indices(start) {
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let path: String = code[at..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            paths.push(path.trim_end_matches(':').to_string());
        }
    }
    paths
}

fn use_trees(code: &str) -> Vec<String> {
    let mut trees = Vec::new();
    for (at, _) in code.match_indices("use ") {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(end) = code[at..].find(';') {
            trees.extend(expand(&code[at + 4..at + end]));
        }
    }
    trees
}

fn read_crate(src: &Path) -> (Crate, BTreeMap<Module, BTreeSet<Module>>) {
    let mut files = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("host/src is readable") {
            let path = entry.expect("a directory entry").path();
            let relative = path.strip_prefix(src).expect("under src");
            if relative.starts_with("bin") {
                continue; // the binary is another crate
            }
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let mut module: Module = relative
                    .with_extension("")
                    .iter()
                    .map(|s| s.to_string_lossy().into_owned())
                    .collect();
                if matches!(module.last().map(String::as_str), Some("mod" | "lib")) {
                    module.pop();
                }
                let source = std::fs::read_to_string(&path).expect("a source file");
                files.insert(module, code_of(&source));
            }
        }
    }
    // Modules declared for tests only, and everything below them, are test code.
    let test_only: Vec<Module> = files
        .iter()
        .flat_map(|(m, (_, tests))| tests.iter().map(|t| child(m, t)))
        .collect();
    files.retain(|m, _| !test_only.iter().any(|t| m.starts_with(t)));
    let modules: BTreeSet<Module> = files.keys().cloned().collect();
    let mut imported = BTreeMap::new();
    for (module, (code, _)) in &files {
        let mut names = BTreeMap::new();
        for tree in use_trees(code) {
            if tree.ends_with('*') {
                continue;
            }
            let (path, alias) = match tree.split_once(" as ") {
                Some((path, alias)) => (path.trim(), alias.trim()),
                None => (tree.trim(), tree.rsplit("::").next().unwrap_or("").trim()),
            };
            names.insert(alias.to_string(), path.to_string());
        }
        imported.insert(module.clone(), names);
    }
    let krate = Crate { modules, imported };
    let mut edges = BTreeMap::new();
    for (module, (code, _)) in &files {
        let mut to: BTreeSet<Module> = use_trees(code)
            .iter()
            .chain(inline_paths(code).iter())
            .filter_map(|path| krate.resolve(module, path, 0))
            .collect();
        to.remove(module);
        edges.insert(module.clone(), to);
    }
    (krate, edges)
}

/// Strongly connected components of more than one node (Tarjan).
fn circles(nodes: &[Module], edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct State<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<Module, usize>,
        low: BTreeMap<Module, usize>,
        stack: Vec<Module>,
        found: Vec<Vec<Module>>,
    }
    fn visit(s: &mut State, v: &Module) {
        let n = s.index.len();
        s.index.insert(v.clone(), n);
        s.low.insert(v.clone(), n);
        s.stack.push(v.clone());
        for w in s.edges.get(v).cloned().unwrap_or_default() {
            if !s.index.contains_key(&w) {
                visit(s, &w);
                let low = s.low[v].min(s.low[&w]);
                s.low.insert(v.clone(), low);
            } else if s.stack.contains(&w) {
                let low = s.low[v].min(s.index[&w]);
                s.low.insert(v.clone(), low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                let done = &w == v;
                component.push(w);
                if done {
                    break;
                }
            }
            if component.len() > 1 {
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in nodes {
        if !state.index.contains_key(v) {
            visit(&mut state, v);
        }
    }
    state.found
}

fn describe(component: &[Module], edges: &BTreeMap<Module, BTreeSet<Module>>) -> String {
    let mut lines = vec![format!(
        "circle: {}",
        component
            .iter()
            .map(|m| name(m))
            .collect::<Vec<_>>()
            .join(" ")
    )];
    for a in component {
        let to: Vec<String> = edges[a]
            .iter()
            .filter(|b| component.contains(b))
            .map(|b| name(b))
            .collect();
        lines.push(format!("    {} -> {}", name(a), to.join(", ")));
    }
    lines.join("\n")
}

#[test]
fn no_module_of_baton_host_imports_one_that_imports_it_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let (krate, edges) = read_crate(&src);
    assert!(
        krate.modules.len() > 50,
        "read {} modules",
        krate.modules.len()
    );
    let related = |a: &Module, b: &Module| a.starts_with(b) || b.starts_with(a);
    let mut found = Vec::new();

    // Between files.
    let files: BTreeMap<Module, BTreeSet<Module>> = edges
        .iter()
        .map(|(a, to)| {
            (
                a.clone(),
                to.iter().filter(|b| !related(a, b)).cloned().collect(),
            )
        })
        .collect();
    let nodes: Vec<Module> = krate.modules.iter().cloned().collect();
    for component in circles(&nodes, &files) {
        found.push(describe(&component, &files));
    }

    // Between the children of each module, each taken with everything below it.
    for parent in &krate.modules {
        let depth = parent.len() + 1;
        let children: Vec<Module> = krate
            .modules
            .iter()
            .filter(|m| m.len() == depth && m.starts_with(parent))
            .cloned()
            .collect();
        let mut between: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
        for (a, to) in &edges {
            if a.len() < depth || !a.starts_with(parent) {
                continue;
            }
            for b in to {
                if b.len() >= depth && b.starts_with(parent) && a[..depth] != b[..depth] {
                    between
                        .entry(a[..depth].to_vec())
                        .or_default()
                        .insert(b[..depth].to_vec());
                }
            }
        }
        for component in circles(&children, &between) {
            found.push(format!(
                "under {}: {}",
                name(parent),
                describe(&component, &between)
            ));
        }
    }
    assert!(
        found.is_empty(),
        "import circles in host/src:\n{}",
        found.join("\n")
    );
}
