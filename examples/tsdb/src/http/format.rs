//! A query's rows in the formats `query_sql` offers: `json`, `jsonl`, `csv`, `pretty`.
//! A column named `time` holding integers is nanoseconds since the epoch, shown as
//! InfluxDB shows a timestamp (`2023-11-14T22:13:20.5`, UTC, no offset).

use crate::storage::{Cell, Rows};

/// The formats, by their `format=` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    JsonLines,
    Csv,
    Pretty,
}

impl Format {
    /// From `format=`; `Err` names what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        Ok(match text {
            "json" => Self::Json,
            "jsonl" | "json_lines" => Self::JsonLines,
            "csv" => Self::Csv,
            "pretty" => Self::Pretty,
            "parquet" => {
                return Err(
                    "format=parquet is not supported yet (json, jsonl, csv, pretty are)".into(),
                );
            }
            other => {
                return Err(format!(
                    "format={other:?} is not one of json, jsonl, csv, pretty"
                ));
            }
        })
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::JsonLines => "application/jsonl",
            Self::Csv => "text/csv",
            Self::Pretty => "text/plain; charset=utf-8",
        }
    }

    pub fn render(self, rows: &Rows) -> String {
        match self {
            Self::Json => serde_json::Value::Array(objects(rows).collect()).to_string(),
            Self::JsonLines => objects(rows).map(|o| format!("{o}\n")).collect(),
            Self::Csv => csv(rows),
            Self::Pretty => pretty(rows),
        }
    }
}

/// Nanoseconds since the epoch as InfluxDB prints a timestamp column.
fn timestamp(ns: i64) -> String {
    let at = chrono::DateTime::from_timestamp(
        ns.div_euclid(1_000_000_000),
        ns.rem_euclid(1_000_000_000) as u32,
    );
    at.map_or_else(
        || ns.to_string(),
        |t| t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.f").to_string(),
    )
}

fn is_time(name: &str) -> bool {
    name == "time"
}

fn json_cell(name: &str, cell: &Cell) -> serde_json::Value {
    match cell {
        Cell::Null => serde_json::Value::Null,
        Cell::Integer(i) if is_time(name) => timestamp(*i).into(),
        Cell::Integer(i) => (*i).into(),
        Cell::Real(r) => (*r).into(),
        Cell::Text(t) => t.clone().into(),
    }
}

fn text_cell(name: &str, cell: &Cell) -> String {
    match cell {
        Cell::Null => String::new(),
        Cell::Integer(i) if is_time(name) => timestamp(*i),
        Cell::Integer(i) => i.to_string(),
        Cell::Real(r) => r.to_string(),
        Cell::Text(t) => t.clone(),
    }
}

fn objects(rows: &Rows) -> impl Iterator<Item = serde_json::Value> + '_ {
    rows.rows.iter().map(|cells| {
        let object: serde_json::Map<String, serde_json::Value> = rows
            .names
            .iter()
            .zip(cells)
            .filter(|(_, c)| **c != Cell::Null)
            .map(|(n, c)| (n.clone(), json_cell(n, c)))
            .collect();
        serde_json::Value::Object(object)
    })
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

fn csv(rows: &Rows) -> String {
    let mut out = rows
        .names
        .iter()
        .map(|n| csv_field(n))
        .collect::<Vec<_>>()
        .join(",");
    out.push('\n');
    for cells in &rows.rows {
        let line: Vec<String> = rows
            .names
            .iter()
            .zip(cells)
            .map(|(n, c)| csv_field(&text_cell(n, c)))
            .collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}

fn pretty(rows: &Rows) -> String {
    let cells: Vec<Vec<String>> = rows
        .rows
        .iter()
        .map(|r| {
            rows.names
                .iter()
                .zip(r)
                .map(|(n, c)| text_cell(n, c))
                .collect()
        })
        .collect();
    let widths: Vec<usize> = rows
        .names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([n.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let rule: String = widths
        .iter()
        .map(|w| format!("+{}", "-".repeat(w + 2)))
        .collect::<String>()
        + "+\n";
    let line = |values: &[String]| {
        values
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("| {v}{} ", " ".repeat(w - v.chars().count())))
            .collect::<String>()
            + "|\n"
    };
    let mut out = rule.clone();
    out.push_str(&line(&rows.names));
    out.push_str(&rule);
    for r in &cells {
        out.push_str(&line(r));
    }
    out.push_str(&rule);
    out
}
