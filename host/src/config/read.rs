//! Reading the TOML of a config past each mistake in it: the top-level settings and
//! each plugin are read on their own, and a refused key is noted and taken out so the
//! rest of its table is still read. Every mistake is then reported at once.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::error::{ConfigError, Problem, plugin_field, refuse};
use super::spans::KeySpans;
use super::{Config, PluginConfig, suggest};

/// A config as far as it could be read, with every mistake found on the way.
pub(super) struct Parsed {
    /// The top-level settings (defaults where they were refused) and every plugin whose
    /// table could be read.
    pub(super) config: Config,
    pub(super) problems: Vec<Problem>,
    pub(super) spans: KeySpans,
}

/// Reads the TOML `text` of the file at `path` as `T`, as baton reads its own config:
/// past each mistake, every one reported at once (`file:line:column: field \`a.b\`:
/// ...`), a misspelt key with the nearest known one. For a program's own settings file
/// beside baton's, such as a database's.
pub fn read_toml<T: for<'de> Deserialize<'de>>(path: &Path, text: &str) -> Result<T, ConfigError> {
    read_toml_located(path, text).map(|(read, _)| read)
}

/// Where each key of a settings file is written: for the mistakes its program finds
/// after reading it (a value out of range), named by line and column as
/// [`read_toml`]'s own are.
#[derive(Debug)]
pub struct KeyPositions {
    text: String,
    spans: KeySpans,
}

impl KeyPositions {
    /// The line and column (1-based) of `field`'s key (`["triggers", "0", "on"]`),
    /// or of the nearest table holding it when it is not written.
    pub fn at(&self, field: &[&str]) -> Option<(usize, usize)> {
        let field: Vec<String> = field.iter().map(|k| (*k).to_owned()).collect();
        let span = self.spans.find(&field)?;
        Some(super::error::line_column(&self.text, span.start))
    }
}

/// As [`read_toml`], with where each key is written.
pub fn read_toml_located<T: for<'de> Deserialize<'de>>(
    path: &Path,
    text: &str,
) -> Result<(T, KeyPositions), ConfigError> {
    let root = DeTable::parse(text).map_err(|e| {
        Problem {
            field: Vec::new(),
            span: e.span(),
            message: e.message().to_owned(),
        }
        .locate(path, text, &KeySpans::default())
    })?;
    let spans = KeySpans::of(root.get_ref());
    let span = root.span();
    let value = Spanned::new(span, DeValue::Table(root.into_inner()));
    let mut problems = Vec::new();
    let read = read_all::<T>(value, &[], &mut problems, false);
    match (read, refuse(path, text, &spans, problems)) {
        (_, Some(refused)) => Err(refused),
        (Some(read), None) => Ok((
            read,
            KeyPositions {
                text: text.to_owned(),
                spans,
            },
        )),
        // A required key stood in for: said among the problems, so not reached.
        (None, None) => Err(ConfigError::Invalid {
            path: path.to_owned(),
            line: 0,
            column: 0,
            field: String::new(),
            message: "cannot be read".into(),
        }),
    }
}

impl Config {
    /// Parses and checks the values of `text`, going on past each mistake: the
    /// top-level settings and each plugin are read on their own, so one plugin's typo
    /// hides nothing in another. Only a TOML syntax error stops it (`Err`).
    pub(super) fn read(text: &str) -> Result<Parsed, Problem> {
        let mut root = DeTable::parse(text).map_err(|e| Problem {
            field: Vec::new(),
            span: e.span(),
            message: e.message().to_owned(),
        })?;
        let spans = KeySpans::of(root.get_ref());
        let mut problems = Vec::new();
        let plugins = root.get_mut().remove_entry("plugins");
        let span = root.span();
        let root = Spanned::new(span, DeValue::Table(root.into_inner()));
        let mut config =
            read_all::<Config>(root, &[], &mut problems, true).unwrap_or_else(Config::empty);
        if let Some((key, value)) = plugins {
            config.plugins = read_plugins(key, value, &mut problems);
        }
        problems.extend(config.validate());
        Ok(Parsed {
            config,
            problems,
            spans,
        })
    }
}

/// Each `[plugins.NAME]` table read on its own; the ones with mistakes are left out.
fn read_plugins(
    key: Spanned<toml::de::DeString<'_>>,
    value: Spanned<DeValue<'_>>,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, PluginConfig> {
    let mut plugins = BTreeMap::new();
    let span = value.span();
    let DeValue::Table(tables) = value.into_inner() else {
        problems.push(Problem {
            field: vec![key.get_ref().to_string()],
            span: Some(span),
            message: "must be a table of plugins, one `[plugins.NAME]` each".into(),
        });
        return plugins;
    };
    for (name, table) in tables {
        let name = name.into_inner().into_owned();
        let at = plugin_field(&name, "");
        if let Some(plugin) = read_all::<PluginConfig>(table, &at, problems, true) {
            plugins.insert(name, plugin);
        }
    }
    plugins
}

/// Deserializes `value` (whose fields are under `at`), going on past each refused key:
/// the key is noted, taken out, and the rest read again, so that every mistake in it
/// is found. `None` when what is wrong cannot be taken out (a missing required key).
/// `baton`: the file is baton's own, whose keys of one level may be suggested for a
/// key misspelt at the other.
fn read_all<T: for<'de> Deserialize<'de>>(
    mut value: Spanned<DeValue<'_>>,
    at: &[String],
    problems: &mut Vec<Problem>,
    baton: bool,
) -> Option<T> {
    let first = problems.len();
    let mut taken: Vec<Vec<String>> = Vec::new();
    // Set once a required key stands in for a refused or missing one: what is read
    // then only finds the other mistakes, and is not used.
    let mut stand_in = false;
    // Each round takes a key out, so this ends; the bound is only a guard.
    for _ in 0..=count_keys(value.get_ref()) {
        let problem =
            match from_toml::<T>(toml::de::ValueDeserializer::from(value.clone()), at, baton) {
                Ok(read) => return (!stand_in).then_some(read),
                Err(problem) => problem,
            };
        let inside = problem.field[at.len().min(problem.field.len())..].to_vec();
        if take_out(value.get_mut(), &inside) {
            taken.push(problem.field.clone());
            problems.push(problem);
            continue;
        }
        // A required key that is missing because it was refused, or misspelt, is
        // said already.
        let said = taken.contains(&problem.field)
            || problem.field.last().is_some_and(|key| {
                let hint = format!("did you mean `{key}`?");
                problems[first..].iter().any(|p| p.message.ends_with(&hint))
            });
        if !said {
            problems.push(problem);
        }
        if stand_in || !stand_in_for(value.get_mut(), &inside) {
            return None;
        }
        stand_in = true;
    }
    None
}

/// Puts an empty string where the required key at `path` is missing (the one required
/// key, `command`, is a string), so that the rest of its table can be read; false if
/// it cannot.
fn stand_in_for(value: &mut DeValue<'_>, path: &[String]) -> bool {
    let (DeValue::Table(table), [key]) = (value, path) else {
        return false;
    };
    let span = 0..0;
    table.insert(
        Spanned::new(span.clone(), std::borrow::Cow::Owned(key.clone())),
        Spanned::new(span, DeValue::String(std::borrow::Cow::Borrowed(""))),
    );
    true
}

/// Removes the key at `path` (or the outermost key on it that is not a table, such as
/// an array whose element was refused); false when there is none.
fn take_out(value: &mut DeValue<'_>, path: &[String]) -> bool {
    let (DeValue::Table(table), Some(key)) = (value, path.first()) else {
        return false;
    };
    let inner_is_table = table
        .get(key.as_str())
        .is_some_and(|v| v.get_ref().is_table());
    if inner_is_table && path.len() > 1 {
        return table
            .get_mut(key.as_str())
            .is_some_and(|v| take_out(v.get_mut(), &path[1..]));
    }
    table.remove(key.as_str()).is_some()
}

fn count_keys(value: &DeValue<'_>) -> usize {
    match value {
        DeValue::Table(table) => table.values().map(|v| 1 + count_keys(v.get_ref())).sum(),
        _ => 0,
    }
}

/// Deserializes one part of the document (whose fields are under `at`), turning serde's
/// refusal into a [`Problem`] with the field's whole path and a suggestion for a
/// misspelt key.
fn from_toml<'de, T: Deserialize<'de>>(
    de: impl serde::Deserializer<'de, Error = toml::de::Error>,
    at: &[String],
    baton: bool,
) -> Result<T, Problem> {
    serde_path_to_error::deserialize(de).map_err(|e| {
        let mut field = at.to_vec();
        field.extend(
            e.path()
                .iter()
                .map(ToString::to_string)
                .filter(|s| !s.is_empty() && s != "?"),
        );
        let inner = e.into_inner();
        let message = inner.message().to_owned();
        let mut span = inner.span();
        if let Some(key) = quoted(&message, "unknown field `") {
            // The misspelt key is where the parser stopped; say which one was meant.
            if field.last().map(String::as_str) != Some(key) {
                field.push(key.to_owned());
            }
            let message = baton
                .then(|| across_levels(&field, &message))
                .flatten()
                .or_else(|| suggest::did_you_mean(&message))
                .unwrap_or(message);
            return Problem {
                field,
                span,
                message,
            };
        }
        if let Some(key) = quoted(&message, "missing field `") {
            // Placed at the table that lacks it, which is written, unlike the key.
            if field.last().map(String::as_str) != Some(key) {
                field.push(key.to_owned());
            }
            span = None;
            return Problem {
                field,
                span,
                message: "required, but missing".into(),
            };
        }
        let message = suggest::did_you_mean(&message).unwrap_or(message);
        Problem {
            field,
            span,
            message,
        }
    })
}

/// A suggestion for an unknown key at the top of the file or in a plugin's table that
/// looks like a key of the other one (`chekpoint_interval_ms` at the top).
fn across_levels(field: &[String], message: &str) -> Option<String> {
    match field {
        [_] => {
            let keys = suggest::keys_of::<PluginConfig>();
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            suggest::did_you_mean_across(
                message,
                &keys,
                "a per-plugin key: it belongs in a `[plugins.NAME]` table",
            )
        }
        [plugins, _, _] if plugins == "plugins" => {
            let keys = suggest::keys_of::<Config>();
            let keys: Vec<&str> = keys
                .iter()
                .map(String::as_str)
                .filter(|k| *k != "plugins")
                .collect();
            suggest::did_you_mean_across(
                message,
                &keys,
                "a top-level key: it belongs above the first `[plugins.*]` table",
            )
        }
        _ => None,
    }
}

/// The name in backticks right after `prefix` at the start of `message`.
fn quoted<'m>(message: &'m str, prefix: &str) -> Option<&'m str> {
    message.strip_prefix(prefix)?.split('`').next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Settings {
        a: u32,
        t: BTreeMap<String, u32>,
    }

    #[test]
    fn positions_name_a_key_or_else_the_table_that_would_hold_it() {
        let text = "a = 1\n[t]\n  b = 2\n";
        let (_, at) = read_toml_located::<Settings>(Path::new("s.toml"), text).expect("read");
        assert_eq!(at.at(&["a"]), Some((1, 1)));
        assert_eq!(at.at(&["t", "b"]), Some((3, 3)));
        assert_eq!(at.at(&["t", "c"]), Some((2, 2)));
        assert_eq!(at.at(&["z"]), None);
    }
}
