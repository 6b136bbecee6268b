//! docs/architecture.md stays true to the tree: every file or folder it names exists, and
//! every function it names is defined in the file it says (or, when a step names none
//! right after it, in one of the files its paragraph names).

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ sits in the workspace")
        .to_path_buf()
}

/// The text between backticks, in order.
fn quoted(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

fn is_path(quote: &str) -> bool {
    ["host/", "docs/", "tests/"]
        .iter()
        .any(|p| quote.starts_with(p))
}

/// Whether `source` defines a function `name` (`fn name(` or `fn name<`).
fn defines(source: &str, name: &str) -> bool {
    let needle = format!("fn {name}");
    source
        .match_indices(&needle)
        .any(|(at, _)| matches!(source[at + needle.len()..].chars().next(), Some('(' | '<')))
}

/// A paragraph or list item: the unit within which a function's file is looked for.
fn blocks(doc: &str) -> Vec<String> {
    let mut blocks = vec![String::new()];
    for line in doc.lines() {
        let starts_item = line
            .split_once(". ")
            .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
        if line.trim().is_empty() || starts_item || line.starts_with('#') {
            blocks.push(String::new());
        }
        let block = blocks.last_mut().expect("one block at least");
        block.push_str(line);
        block.push('\n');
    }
    blocks
}

#[test]
fn every_file_and_function_the_architecture_map_names_is_there() {
    let root = workspace();
    let doc = std::fs::read_to_string(root.join("docs/architecture.md"))
        .expect("docs/architecture.md is readable");
    let mut wrong = Vec::new();
    let mut functions = 0;
    for block in blocks(&doc) {
        let quotes = quoted(&block);
        for path in quotes.iter().filter(|q| is_path(q)) {
            if !root.join(path).exists() {
                wrong.push(format!("{path} does not exist"));
            }
        }
        let files: Vec<&str> = quotes
            .iter()
            .copied()
            .filter(|q| is_path(q) && q.ends_with(".rs"))
            .collect();
        let read = |file: &str| std::fs::read_to_string(root.join(file)).unwrap_or_default();
        for (i, quote) in quotes.iter().enumerate() {
            let Some(function) = quote.strip_suffix("()") else {
                continue;
            };
            functions += 1;
            let name = function.rsplit("::").next().unwrap_or(function);
            // "`f()` in `file`": that file, and no other, must define it.
            let named = block
                .split(&format!("`{quote}` in `"))
                .nth(1)
                .and_then(|rest| rest.split('`').next())
                .filter(|_| quotes.get(i + 1).is_some_and(|q| is_path(q)));
            match named {
                Some(file) if !defines(&read(file), name) => {
                    wrong.push(format!("{function}() is not defined in {file}"))
                }
                Some(_) => {}
                None if !files.iter().any(|f| defines(&read(f), name)) => wrong.push(format!(
                    "{function}() is defined in none of its paragraph's files ({})",
                    files.join(", ")
                )),
                None => {}
            }
        }
    }
    assert!(
        functions > 20,
        "the map names {functions} functions: too few for a call, a reload and a crash"
    );
    assert!(
        wrong.is_empty(),
        "docs/architecture.md is out of date:\n{}",
        wrong.join("\n")
    );
}
