//! `influxdb3_local.query` in a plugin test: each query the runner asks (a `{"query":
//! {sql, database, args}}` line) is run on the real database through the plugins' own
//! query path (host_api's parameters and cells), and answered on one JSON line.
//!
//! Values keep their Python type through JSON: an integer (i64, u64, a time in
//! nanoseconds) is a JSON integer, a finite float always has a `.` or an exponent, a
//! NaN or an infinity is `{"float": "nan" | "inf" | "-inf"}`; text, booleans and NULL
//! are JSON's own.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value as Json, json};

use crate::api::{Value, value};
use crate::config::PluginDatabases;
use crate::db::Db;
use crate::host_api::{from_cell, named_params};

/// The largest query line read from the runner (its SQL and arguments).
pub const MAX_QUERY_LINE: usize = 1 << 20;
/// The largest answer to one query.
pub const MAX_ROWS_LINE: usize = 8 << 20;
/// Queries one test may run.
pub const MAX_QUERIES: usize = 1_000;

/// One query the runner asks.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryLine {
    pub sql: String,
    /// The test's database when absent.
    #[serde(default)]
    pub database: Option<String>,
    /// `$name` to value, the name without its `$`.
    #[serde(default)]
    pub args: BTreeMap<String, Json>,
}

/// The queries of one test: where they may read, and how many were run.
pub struct TestQueries<'a> {
    db: &'a Db,
    database: &'a str,
    reach: PluginDatabases,
    asked: usize,
}

impl<'a> TestQueries<'a> {
    /// For a test in `database`, reaching as tsdb.toml's `plugin_databases` says.
    pub fn new(db: &'a Db, database: &'a str, reach: PluginDatabases) -> Self {
        Self {
            db,
            database,
            reach,
            asked: 0,
        }
    }

    /// The answer line to `query` (which came on a line of `size` bytes): `{"rows":
    /// {"names": [...], "rows": [[...], ...]}}`, or `{"error": MESSAGE}` which the
    /// plugin gets as a `QueryError`.
    pub async fn answer(&mut self, query: QueryLine, size: usize) -> Vec<u8> {
        let reply = match self.run(query, size).await {
            Ok(rows) => json!({ "rows": rows }),
            Err(message) => json!({ "error": message }),
        };
        let line = reply.to_string().into_bytes();
        if line.len() > MAX_ROWS_LINE {
            return json!({ "error": format!(
                "query: the answer is larger than {MAX_ROWS_LINE} bytes, the most a plugin test takes; narrow it (LIMIT, WHERE time > ...)"
            ) })
            .to_string()
            .into_bytes();
        }
        line
    }

    async fn run(&mut self, query: QueryLine, size: usize) -> Result<Json, String> {
        self.asked += 1;
        if self.asked > MAX_QUERIES {
            return Err(format!(
                "query: a plugin test may run at most {MAX_QUERIES} queries"
            ));
        }
        if size > MAX_QUERY_LINE {
            return Err(format!(
                "query: the SQL and its arguments are larger than {MAX_QUERY_LINE} bytes"
            ));
        }
        let database = query.database.as_deref().unwrap_or(self.database);
        if self.reach == PluginDatabases::Own && database != self.database {
            return Err(format!(
                "a plugin test in database {:?} may not use database {database:?} ({})",
                self.database,
                crate::config::OWN_DATABASES_ONLY
            ));
        }
        let mut args = Vec::with_capacity(query.args.len());
        for (name, v) in query.args {
            let v = to_value(&v).map_err(|e| format!("query args: ${name}: {e}"))?;
            args.push((name, v));
        }
        let output = self
            .db
            .query(database, &query.sql, named_params(args))
            .await
            .map_err(|e| e.to_string())?;
        let rows = crate::db::value::rows(&output);
        let cells: Vec<Json> = rows
            .rows
            .into_iter()
            .map(|row| row.into_iter().map(|c| to_json(from_cell(c))).collect())
            .collect();
        Ok(json!({ "names": rows.names, "rows": cells }))
    }
}

/// An argument as the plugin API carries it.
fn to_value(v: &Json) -> Result<Value, String> {
    let kind = match v {
        Json::Null => None,
        Json::Bool(b) => Some(value::Kind::Boolean(*b)),
        Json::String(s) => Some(value::Kind::Text(s.clone())),
        Json::Number(n) if n.is_f64() => n.as_f64().map(value::Kind::Float),
        Json::Number(n) => {
            Some(value::Kind::Integer(n.as_i64().ok_or_else(|| {
                format!("{n} does not fit in a 64-bit integer")
            })?))
        }
        Json::Object(o) => match (o.len(), o.get("float").and_then(Json::as_str)) {
            (1, Some(text)) => Some(value::Kind::Float(non_finite(text)?)),
            _ => return Err(format!("{v} is not a value")),
        },
        Json::Array(_) => return Err(format!("{v} is not a value")),
    };
    Ok(Value { kind })
}

fn non_finite(text: &str) -> Result<f64, String> {
    match text {
        "nan" => Ok(f64::NAN),
        "inf" => Ok(f64::INFINITY),
        "-inf" => Ok(f64::NEG_INFINITY),
        _ => Err(format!("{text:?} is not nan, inf or -inf")),
    }
}

/// A result value as the runner rebuilds it (see the module's documentation).
fn to_json(v: Value) -> Json {
    match v.kind {
        None => Json::Null,
        Some(value::Kind::Integer(i)) => json!(i),
        Some(value::Kind::Unsigned(u)) => json!(u),
        Some(value::Kind::Float(f)) if f.is_finite() => json!(f),
        Some(value::Kind::Float(f)) => {
            let text = if f.is_nan() {
                "nan"
            } else if f > 0.0 {
                "inf"
            } else {
                "-inf"
            };
            json!({ "float": text })
        }
        Some(value::Kind::Text(t)) => json!(t),
        Some(value::Kind::Boolean(b)) => json!(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(sql: &str, database: Option<&str>) -> QueryLine {
        QueryLine {
            sql: sql.into(),
            database: database.map(str::to_owned),
            args: BTreeMap::new(),
        }
    }

    async fn ask(queries: &mut TestQueries<'_>, query: QueryLine, size: usize) -> Json {
        serde_json::from_slice(&queries.answer(query, size).await).expect("a JSON line")
    }

    /// The bounds a test's queries are held to: the count, the size of a query line,
    /// and with `plugin_databases = "own"` the test's database.
    #[tokio::test]
    async fn a_test_queries_within_its_bounds() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let db = Db::open(dir.path(), crate::db::Options::default()).expect("a database");
        crate::http::store(
            &db,
            "metrics",
            "cpu,host=a v=1u 5\nother v=2i 6",
            crate::line_protocol::Precision::Nanoseconds,
            false,
        )
        .await
        .expect("a write");
        crate::http::store(
            &db,
            "elsewhere",
            "cpu v=3i 7",
            crate::line_protocol::Precision::Nanoseconds,
            false,
        )
        .await
        .expect("a write");

        let mut queries = TestQueries::new(&db, "metrics", PluginDatabases::Own);
        let mut host = line("SELECT time, host, v FROM cpu WHERE host = $host", None);
        host.args.insert("host".into(), json!("a"));
        assert_eq!(
            ask(&mut queries, host, 10).await,
            json!({ "rows": { "names": ["time", "host", "v"], "rows": [[5, "a", 1]] } })
        );
        assert_eq!(
            ask(
                &mut queries,
                line("SELECT v FROM cpu", Some("elsewhere")),
                10
            )
            .await,
            json!({ "error": format!("a plugin test in database \"metrics\" may not use database \"elsewhere\" ({})", crate::config::OWN_DATABASES_ONLY) })
        );
        assert_eq!(
            ask(&mut queries, line("SELECT 1", None), MAX_QUERY_LINE + 1).await,
            json!({ "error": "query: the SQL and its arguments are larger than 1048576 bytes" })
        );
        let mut any = TestQueries::new(&db, "metrics", PluginDatabases::Any);
        assert_eq!(
            ask(&mut any, line("SELECT v FROM cpu", Some("elsewhere")), 10).await,
            json!({ "rows": { "names": ["v"], "rows": [[3]] } })
        );
        assert_eq!(
            ask(&mut any, line("SELECT repeat('x', 9000000) AS x", None), 10).await,
            json!({ "error": "query: the answer is larger than 8388608 bytes, the most a plugin test takes; narrow it (LIMIT, WHERE time > ...)" })
        );
        // Only the count is checked past the cap, so the test need not run 1,000.
        any.asked = MAX_QUERIES - 1;
        assert_eq!(
            ask(&mut any, line("SELECT v FROM other", None), 10).await,
            json!({ "rows": { "names": ["v"], "rows": [[2]] } })
        );
        assert_eq!(
            ask(&mut any, line("SELECT v FROM other", None), 10).await,
            json!({ "error": "query: a plugin test may run at most 1000 queries" })
        );
    }

    fn kind(v: &str) -> Option<value::Kind> {
        to_value(&serde_json::from_str(v).expect("JSON"))
            .ok()
            .and_then(|v| v.kind)
    }

    #[test]
    fn every_float_is_told_from_an_integer_on_the_line() {
        for f in [1.0, -0.0, 1e16, 1e300, 5e-324, 123456789.0, f64::MAX] {
            let text = to_json(Value {
                kind: Some(value::Kind::Float(f)),
            })
            .to_string();
            assert!(text.contains(['.', 'e', 'E']), "{f} written as {text}");
            assert_eq!(kind(&text), Some(value::Kind::Float(f)), "{text}");
        }
        for (f, text) in [
            (f64::INFINITY, r#"{"float":"inf"}"#),
            (f64::NEG_INFINITY, r#"{"float":"-inf"}"#),
        ] {
            let json = to_json(Value {
                kind: Some(value::Kind::Float(f)),
            });
            assert_eq!(json.to_string(), text);
            assert_eq!(kind(text), Some(value::Kind::Float(f)));
        }
        let nan = to_json(Value {
            kind: Some(value::Kind::Float(f64::NAN)),
        });
        assert_eq!(nan.to_string(), r#"{"float":"nan"}"#);
    }

    #[test]
    fn integers_keep_their_width_and_arguments_their_kind() {
        let big = to_json(Value {
            kind: Some(value::Kind::Unsigned(u64::MAX)),
        });
        assert_eq!(big.to_string(), "18446744073709551615");
        assert_eq!(
            kind("-9223372036854775808"),
            Some(value::Kind::Integer(i64::MIN))
        );
        assert_eq!(kind("true"), Some(value::Kind::Boolean(true)));
        assert_eq!(kind("\"a\""), Some(value::Kind::Text("a".into())));
        assert_eq!(kind("null"), None);
        for bad in [
            "18446744073709551615",
            "[1]",
            "{\"float\":\"x\"}",
            "{\"a\":1}",
        ] {
            assert!(
                to_value(&serde_json::from_str(bad).expect("JSON")).is_err(),
                "{bad}"
            );
        }
    }
}
