//! Where each key of a config file is written, so that a mistake found after parsing (a
//! value out of range, a bad plugin name, a missing program) is still named by line and
//! column. Quoted keys and dotted keys are found as TOML reads them, not by text search.

use std::collections::HashMap;
use std::ops::Range;

use toml::de::{DeTable, DeValue};

/// The span of every key in a document, by its path of keys.
#[derive(Debug, Default)]
pub(super) struct KeySpans(HashMap<Vec<String>, Range<usize>>);

impl KeySpans {
    /// Every key of `table`, and of the tables inside it.
    pub(super) fn of(table: &DeTable<'_>) -> Self {
        let mut spans = Self::default();
        spans.walk(&mut Vec::new(), table);
        spans
    }

    fn walk(&mut self, prefix: &mut Vec<String>, table: &DeTable<'_>) {
        for (key, value) in table {
            prefix.push(key.get_ref().to_string());
            // A table defined in pieces keeps where its name was first written.
            self.0.entry(prefix.clone()).or_insert_with(|| key.span());
            if let DeValue::Table(inner) = value.get_ref() {
                self.walk(prefix, inner);
            }
            prefix.pop();
        }
    }

    /// The span of `field`'s key; for a field not written (a default, a missing key),
    /// that of the nearest table that holds it, such as `[plugins.counter]`.
    pub(super) fn find(&self, field: &[String]) -> Option<Range<usize>> {
        (1..=field.len())
            .rev()
            .find_map(|n| self.0.get(&field[..n]).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(text: &str) -> KeySpans {
        match DeTable::parse(text) {
            Ok(table) => KeySpans::of(table.get_ref()),
            Err(e) => panic!("{e}"),
        }
    }

    fn at<'a>(text: &'a str, spans: &KeySpans, field: &[&str]) -> Option<&'a str> {
        let field: Vec<String> = field.iter().map(|k| (*k).to_owned()).collect();
        spans.find(&field).map(|s| &text[s])
    }

    #[test]
    fn keys_are_found_quoted_dotted_and_through_their_tables() {
        let text = "socket = \"s\"\n[plugins.\"bad name\"]\ncommand = \"x\"\n\
                    [plugins.ok]\ncommand = \"y\"\nrestart.max_crashes = 2\n";
        let s = spans(text);
        assert_eq!(at(text, &s, &["socket"]), Some("socket"));
        assert_eq!(at(text, &s, &["plugins", "bad name"]), Some("\"bad name\""));
        let command = s.find(&["plugins".into(), "ok".into(), "command".into()]);
        assert_eq!(command.map(|r| r.start), text.rfind("command"));
        assert_eq!(
            at(text, &s, &["plugins", "ok", "restart", "max_crashes"]),
            Some("max_crashes")
        );
        // Not written: the table that would hold it.
        assert_eq!(at(text, &s, &["plugins", "ok", "sha256"]), Some("ok"));
        assert_eq!(at(text, &s, &["nothing"]), None);
    }
}
