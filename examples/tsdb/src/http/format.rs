//! A query's answer in the formats `query_sql` offers: `json`, `jsonl`, `csv`, `pretty`
//! and `parquet`. A timestamp is shown as InfluxDB shows one (`2023-11-14T22:13:20.5`,
//! UTC, no offset); booleans and unsigned integers keep their types.

use crate::db::QueryOutput;
use crate::db::value::{Cell, Rows, rows};

/// The formats, by their `format=` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    JsonLines,
    Csv,
    Pretty,
    Parquet,
}

impl Format {
    /// From `format=`; `Err` names what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        Ok(match text {
            "json" => Self::Json,
            "jsonl" | "json_lines" => Self::JsonLines,
            "csv" => Self::Csv,
            "pretty" => Self::Pretty,
            "parquet" => Self::Parquet,
            other => {
                return Err(format!(
                    "format={other:?} is not one of json, jsonl, csv, pretty, parquet"
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
            Self::Parquet => "application/vnd.apache.parquet",
        }
    }

    pub fn render(self, output: &QueryOutput) -> Result<Vec<u8>, String> {
        if self == Self::Parquet {
            return parquet(output);
        }
        let rows = &rows(output);
        Ok(match self {
            Self::Json => format!("[{}]", objects(rows).collect::<Vec<_>>().join(",")),
            Self::JsonLines => objects(rows).map(|o| format!("{o}\n")).collect(),
            Self::Csv => csv(rows),
            Self::Pretty | Self::Parquet => pretty(rows),
        }
        .into_bytes())
    }
}

/// The answer as one Parquet file, its schema as the query made it.
fn parquet(output: &QueryOutput) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let fail =
        |e: parquet::errors::ParquetError| format!("cannot write the answer as Parquet: {e}");
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut out, output.schema.clone(), None)
        .map_err(fail)?;
    for batch in &output.batches {
        writer.write(batch).map_err(fail)?;
    }
    writer.close().map_err(fail)?;
    Ok(out)
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

fn json_cell(cell: &Cell) -> serde_json::Value {
    match cell {
        Cell::Null => serde_json::Value::Null,
        Cell::Time(t) => timestamp(*t).into(),
        Cell::Integer(i) => (*i).into(),
        Cell::Unsigned(u) => (*u).into(),
        // JSON has no NaN or infinity: InfluxDB writes them as null too.
        Cell::Real(r) => {
            serde_json::Number::from_f64(*r).map_or(serde_json::Value::Null, Into::into)
        }
        Cell::Text(t) => t.clone().into(),
        Cell::Boolean(b) => (*b).into(),
    }
}

fn text_cell(cell: &Cell) -> String {
    match cell {
        Cell::Null => String::new(),
        Cell::Time(t) => timestamp(*t),
        Cell::Integer(i) => i.to_string(),
        Cell::Unsigned(u) => u.to_string(),
        Cell::Real(r) => r.to_string(),
        Cell::Text(t) => t.clone(),
        Cell::Boolean(b) => b.to_string(),
    }
}

/// Each row as a JSON object whose keys are in the query's column order, as InfluxDB
/// writes them (a JSON map would sort them).
fn objects(rows: &Rows) -> impl Iterator<Item = String> + '_ {
    rows.rows.iter().map(|cells| {
        let members: Vec<String> = rows
            .names
            .iter()
            .zip(cells)
            .filter(|(_, c)| **c != Cell::Null)
            .map(|(n, c)| format!("{}:{}", serde_json::Value::from(n.as_str()), json_cell(c)))
            .collect();
        format!("{{{}}}", members.join(","))
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
            .map(|(_, c)| csv_field(&text_cell(c)))
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
                .map(|(_, c)| text_cell(c))
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
