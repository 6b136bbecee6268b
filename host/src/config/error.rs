//! How a config file is refused: [`ConfigError`], which names the file, line and column
//! and the field's path, and the helpers that find that place in the text.

use std::path::PathBuf;

/// 1-based line and column of a byte offset.
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, column)
}

/// The span of the table header or key a validation error is about, for its line number.
pub(super) fn find_key(text: &str, field: &str) -> Option<std::ops::Range<usize>> {
    if !field.contains('.') {
        // A top-level key: at the start of a line, before the first table.
        let top = text.find("\n[").map_or(text, |end| &text[..end]);
        let mut offset = 0;
        for line in top.split_inclusive('\n') {
            let key = line.trim_start();
            if key
                .strip_prefix(field)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
            {
                let at = offset + line.len() - key.len();
                return Some(at..at);
            }
            offset += line.len();
        }
        return None;
    }
    let mut parts = field.split('.');
    let (_, name) = (parts.next()?, parts.next()?);
    let header = format!("[plugins.{name}");
    let table_at = text.find(&header)?;
    match parts.next_back() {
        None => Some(table_at..table_at),
        Some(key) => text[table_at..]
            .find(&format!("\n{key}"))
            .map(|i| table_at + i + 1..table_at + i + 1)
            .or(Some(table_at..table_at)),
    }
}

/// A config file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the config file: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid configuration.
    #[error("{}:{line}:{column}: {}{message}", path.display(), field_prefix(field))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 if unknown).
        line: usize,
        /// 1-based column (0 if unknown).
        column: usize,
        /// The dotted path of the field, such as `plugins.counter.call_timeout_ms`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

fn field_prefix(field: &str) -> String {
    if field.is_empty() || field == "." {
        String::new()
    } else {
        format!("field `{field}`: ")
    }
}
