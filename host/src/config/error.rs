//! How a config file is refused: [`ConfigError`], which names the file, line and column
//! and the field's path of every mistake in it, and [`Problem`], a mistake not yet
//! placed in the file.

use std::ops::Range;
use std::path::{Path, PathBuf};

use super::spans::KeySpans;

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

/// One mistake, found by the parser, by the checks of values, or on disk.
#[derive(Debug)]
pub(super) struct Problem {
    /// The field's path as keys: `["plugins", "counter", "restart", "max_crashes"]`.
    pub(super) field: Vec<String>,
    /// Where the parser saw it, when it knows better than the field's key does (the
    /// bad value itself, a misspelt key).
    pub(super) span: Option<Range<usize>>,
    /// What is wrong.
    pub(super) message: String,
}

impl Problem {
    /// A mistake in `field`, given as dotted keys (`plugins`, then the plugin's name as
    /// one key, then the rest split at dots).
    pub(super) fn at(field: Vec<String>, message: impl Into<String>) -> Self {
        Self {
            field,
            span: None,
            message: message.into(),
        }
    }

    /// This mistake, placed in `text` by its own span or its field's key.
    pub(super) fn locate(self, path: &Path, text: &str, spans: &KeySpans) -> ConfigError {
        let span = self.span.or_else(|| spans.find(&self.field));
        let (line, column) = span.map_or((0, 0), |s| line_column(text, s.start));
        ConfigError::Invalid {
            path: path.to_owned(),
            line,
            column,
            field: dotted(&self.field),
            message: self.message,
        }
    }
}

/// The path of a plugin's field: `plugin_field("a.b", "restart.max_crashes")` is
/// `["plugins", "a.b", "restart", "max_crashes"]` (a name may hold dots; a key does not).
pub(super) fn plugin_field(name: &str, key: &str) -> Vec<String> {
    let mut field = vec!["plugins".to_owned(), name.to_owned()];
    field.extend(key.split('.').filter(|k| !k.is_empty()).map(str::to_owned));
    field
}

/// Places every problem in `text` and makes one error of them, in file order; `None`
/// when there are none.
pub(super) fn refuse(
    path: &Path,
    text: &str,
    spans: &KeySpans,
    problems: Vec<Problem>,
) -> Option<ConfigError> {
    let mut located: Vec<ConfigError> = problems
        .into_iter()
        .map(|p| p.locate(path, text, spans))
        .collect();
    located.sort_by_key(|e| match e {
        ConfigError::Invalid { line, column, .. } => (*line, *column),
        _ => (0, 0),
    });
    // One cause can reach two checks by the same path (a value serde refused, and
    // the check of the same value); once is enough.
    located.dedup_by(|a, b| a.to_string() == b.to_string());
    match located.len() {
        0 => None,
        1 => located.pop(),
        _ => Some(ConfigError::Several(located)),
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
    /// More than one mistake: each an [`Invalid`](Self::Invalid), in file order, one
    /// per line when shown.
    #[error("{}", lines(.0))]
    Several(Vec<ConfigError>),
}

impl ConfigError {
    /// Each mistake on its own: the one, or each of several.
    pub fn each(&self) -> Vec<&ConfigError> {
        match self {
            Self::Several(all) => all.iter().collect(),
            one => vec![one],
        }
    }
}

/// `["plugins", "a", "args", "[0]"]` as `plugins.a.args[0]`.
fn dotted(field: &[String]) -> String {
    let mut text = String::new();
    for key in field {
        if !text.is_empty() && !key.starts_with('[') {
            text.push('.');
        }
        text.push_str(key);
    }
    text
}

fn lines(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

fn field_prefix(field: &str) -> String {
    if field.is_empty() || field == "." {
        String::new()
    } else {
        format!("field `{field}`: ")
    }
}
