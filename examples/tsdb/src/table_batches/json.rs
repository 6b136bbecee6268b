//! A write batch's rows as InfluxDB 3's `table_batches` in JSON
//! (`WriteBatch.table_batches_json`), for a plugin process that said it reads them so
//! but not pickle (a runner before pickle): Python's `json` builds the row dicts in C,
//! where reading them from the protobuf messages goes through an accessor call per tag
//! and field (4.3–5.3 µs a row of 2 tags and 3 fields, against 1.0–1.4 µs from JSON;
//! `tsdb-bench --only runner`).

use std::fmt::Write;

use crate::api::Point;
use crate::api::value::Kind;

/// `tables` as `[{"table_name": NAME, "rows": [{tags…, fields…, "time": ns}]}]`, each
/// table's rows those of its pieces in order (a call carrying several writes has a
/// piece from each). A field named like a tag, or `time`, comes after it, so that a
/// reader keeping the last of a repeated key sees what the messages' reader does.
pub fn table_batches_json<'a>(
    tables: impl IntoIterator<Item = (&'a str, Vec<&'a [Point]>)>,
) -> String {
    let tables: Vec<(&str, Vec<&[Point]>)> = tables.into_iter().collect();
    let points: usize = tables
        .iter()
        .flat_map(|(_, pieces)| pieces)
        .map(|p| p.len())
        .sum();
    let mut out = String::with_capacity(32 + points * 128);
    out.push('[');
    for (i, (name, pieces)) in tables.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"table_name\":");
        string(&mut out, name);
        out.push_str(",\"rows\":[");
        for (j, point) in pieces.into_iter().flatten().enumerate() {
            if j > 0 {
                out.push(',');
            }
            out.push('{');
            for (key, value) in &point.tags {
                string(&mut out, key);
                out.push(':');
                string(&mut out, value);
                out.push(',');
            }
            for (key, value) in &point.fields {
                string(&mut out, key);
                out.push(':');
                match &value.kind {
                    Some(Kind::Float(f)) => float(&mut out, *f),
                    Some(Kind::Integer(n)) => {
                        let _ = write!(out, "{n}");
                    }
                    Some(Kind::Unsigned(n)) => {
                        let _ = write!(out, "{n}");
                    }
                    Some(Kind::Text(t)) => string(&mut out, t),
                    Some(Kind::Boolean(b)) => out.push_str(if *b { "true" } else { "false" }),
                    None => out.push_str("null"),
                }
                out.push(',');
            }
            let _ = write!(out, "\"time\":{}}}", point.time_ns);
        }
        out.push_str("]}");
    }
    out.push(']');
    out
}

/// A float that a JSON reader reads back as a float, the same one: Rust's shortest
/// round-trip form, which always has a point or an exponent. Line protocol has no
/// infinities or NaN; were one here, it is written as Python's `json` reads it.
fn float(out: &mut String, f: f64) {
    if f.is_finite() {
        let _ = write!(out, "{f:?}");
    } else if f.is_nan() {
        out.push_str("NaN");
    } else if f > 0.0 {
        out.push_str("Infinity");
    } else {
        out.push_str("-Infinity");
    }
}

fn string(out: &mut String, text: &str) {
    out.push('"');
    let mut plain = 0;
    for (at, c) in text.char_indices() {
        let escaped = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            c if (c as u32) < 0x20 => "",
            _ => continue,
        };
        out.push_str(&text[plain..at]);
        if escaped.is_empty() {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push_str(escaped);
        }
        plain = at + c.len_utf8();
    }
    out.push_str(&text[plain..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Value;

    fn value(kind: Kind) -> Value {
        Value { kind: Some(kind) }
    }

    #[test]
    fn every_kind_of_value_reads_back_as_it_was() {
        let point = Point {
            tags: [("host".into(), "a \"b\"\\c\n\u{1}é".into())].into(),
            fields: [
                ("whole".into(), value(Kind::Float(2.0))),
                ("tiny".into(), value(Kind::Float(1e-300))),
                ("huge".into(), value(Kind::Float(-1.5e300))),
                ("n".into(), value(Kind::Integer(i64::MIN))),
                ("u".into(), value(Kind::Unsigned(u64::MAX))),
                ("s".into(), value(Kind::Text("ok\t".into()))),
                ("b".into(), value(Kind::Boolean(false))),
            ]
            .into(),
            time_ns: -5,
        };
        let rows = [point.clone(), point];
        let text = table_batches_json([("cpu", vec![&rows[..1], &rows[1..]]), ("empty", vec![])]);
        let read: serde_json::Value = serde_json::from_str(&text).expect(&text);
        let row = &read[0]["rows"][1];
        assert_eq!(read[0]["table_name"], "cpu");
        assert_eq!(row["host"], "a \"b\"\\c\n\u{1}é");
        assert_eq!(row["whole"].as_f64(), Some(2.0));
        // A float stays a float for a reader that tells them apart (Python's json).
        assert!(text.contains("\"whole\":2.0"), "{text}");
        assert_eq!(row["tiny"].as_f64(), Some(1e-300));
        assert_eq!(row["huge"].as_f64(), Some(-1.5e300));
        assert_eq!(row["n"].as_i64(), Some(i64::MIN));
        assert_eq!(row["u"].as_u64(), Some(u64::MAX));
        assert_eq!(row["s"], "ok\t");
        assert_eq!(row["b"], false);
        assert_eq!(row["time"].as_i64(), Some(-5));
        assert_eq!(
            read[1],
            serde_json::json!({"table_name": "empty", "rows": []})
        );
    }

    #[test]
    fn a_field_named_like_a_tag_or_time_comes_after_it() {
        let point = Point {
            tags: [("k".into(), "tag".into())].into(),
            fields: [
                ("k".into(), value(Kind::Integer(1))),
                ("time".into(), value(Kind::Integer(2))),
            ]
            .into(),
            time_ns: 3,
        };
        let text = table_batches_json([("t", vec![&[point][..]])]);
        let (tag, field) = (
            text.find("\"tag\"").expect(&text),
            text.find(":1").expect(&text),
        );
        assert!(tag < field, "{text}");
        assert!(text.ends_with("\"time\":3}]}]"), "{text}");
    }
}
