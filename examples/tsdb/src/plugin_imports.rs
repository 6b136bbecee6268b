//! The helper modules a single-file InfluxDB 3 plugin imports from beside it in the
//! plugin directory (`import rules`, `from utils.time import slot`), found by reading its
//! import lines, and theirs in turn, so that a change to one reloads the plugin as a
//! change to a package's file does. InfluxDB keeps such helpers imported, stale, until
//! it restarts.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::plugin_dir::PluginDir;

/// How much of each file is read for its imports.
const READ_BYTES: u64 = 1 << 20;
/// How many helper modules are followed from one plugin: a bound on the files read
/// and watched, whatever the plugin directory holds.
const MAX_HELPERS: usize = 64;

/// The top-level module names `line` imports: `import a, b.c as d` gives `a` and `b`;
/// `from a.b import c` gives `a`; a relative import (`from . import x`) gives none,
/// since a single file has no package for it to be relative to.
fn imported(line: &str) -> Vec<String> {
    let line = line.trim_start();
    let line = line.split('#').next().unwrap_or_default();
    let first = |name: &str| name.split('.').next().unwrap_or_default().trim().to_owned();
    let names: Vec<String> = if let Some(rest) = line.strip_prefix("import ") {
        rest.split(',')
            .map(|part| first(part.split(" as ").next().unwrap_or_default()))
            .collect()
    } else if let Some(rest) = line.strip_prefix("from ") {
        let module = rest.split(" import").next().unwrap_or_default().trim();
        if module.starts_with('.') {
            Vec::new()
        } else {
            vec![first(module)]
        }
    } else {
        Vec::new()
    };
    names
        .into_iter()
        .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_alphanumeric() || c == '_'))
        .collect()
}

fn read_head(path: &Path) -> String {
    let mut bytes = Vec::new();
    let _ = std::fs::File::open(path).and_then(|f| f.take(READ_BYTES).read_to_end(&mut bytes));
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The files and package directories in `dir` that `plugin` (a file in `dir`) imports,
/// directly or through one another; at most [`MAX_HELPERS`], each inside `dir` (a
/// link out of it is not followed).
pub fn helpers_of(dir: &PluginDir, plugin: &Path) -> Vec<PathBuf> {
    let mut found: BTreeSet<PathBuf> = BTreeSet::new();
    let mut to_read = vec![plugin.to_owned()];
    while let Some(file) = to_read.pop() {
        let text = read_head(&file);
        for name in text.lines().flat_map(imported) {
            if found.len() >= MAX_HELPERS {
                return found.into_iter().collect();
            }
            let module = dir
                .resolve_plugin(&format!("{name}.py"), "import")
                .or_else(|_| dir.resolve_plugin(&name, "import"));
            let Ok(module) = module else { continue };
            if module == plugin || !found.insert(module.clone()) {
                continue;
            }
            if module.is_dir() {
                to_read.push(module.join("__init__.py"));
            } else {
                to_read.push(module);
            }
        }
    }
    found.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_lines_name_their_top_level_modules() {
        assert_eq!(imported("import rules"), ["rules"]);
        assert_eq!(imported("    import a, b.c as d  # why"), ["a", "b"]);
        assert_eq!(imported("from utils.time import slot"), ["utils"]);
        assert_eq!(imported("from . import x"), Vec::<String>::new());
        assert_eq!(imported("from .rel import x"), Vec::<String>::new());
        assert_eq!(imported("# import hidden"), Vec::<String>::new());
        assert_eq!(imported("important = 1"), Vec::<String>::new());
        assert_eq!(imported("x = 'import y'"), Vec::<String>::new());
    }

    #[test]
    fn helpers_are_followed_through_each_other_and_stay_in_the_directory() {
        let root = tempfile::tempdir().expect("a temp dir");
        let plugins = root.path().join("plugins");
        std::fs::create_dir(&plugins).expect("mkdir");
        let write = |name: &str, text: &str| {
            std::fs::write(plugins.join(name), text).expect("write");
        };
        write(
            "plugin.py",
            "import json\nimport rules\nfrom pkg.sub import f\n",
        );
        write("rules.py", "from limits import MAX\n");
        write("limits.py", "MAX = 1\n");
        write("unrelated.py", "X = 1\n");
        std::fs::create_dir(plugins.join("pkg")).expect("mkdir");
        write("pkg/__init__.py", "");
        std::fs::write(root.path().join("outside.py"), "").expect("write");
        std::os::unix::fs::symlink(root.path().join("outside.py"), plugins.join("linked.py"))
            .expect("link");
        write("other.py", "import linked\n");
        let dir = PluginDir::open(&plugins).expect("the plugin directory");
        let plugin = dir.resolve_plugin("plugin.py", "f").expect("resolved");
        let names: Vec<String> = helpers_of(&dir, &plugin)
            .iter()
            .map(|p| {
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(names, ["limits.py", "pkg", "rules.py"]);
        let other = dir.resolve_plugin("other.py", "f").expect("resolved");
        assert!(helpers_of(&dir, &other).is_empty());
    }
}
