//! The SQL InfluxDB 3's plugins rely on (DataFusion's), each construct answered over
//! `query_sql` as InfluxDB answers it, typed as InfluxDB types it.

use std::net::SocketAddr;

use serde_json::{Value, json};

use crate::common::{http, http_full, rows, start_bare};

/// `sql` in database `db` with `$name` parameters, over POST: its JSON rows.
fn with_params(addr: SocketAddr, sql: &str, params: Value) -> Vec<Value> {
    let request = json!({"db": "s", "q": sql, "params": params});
    let (status, _, body) = http_full(
        addr,
        "POST",
        "/api/v3/query_sql",
        &["content-type: application/json"],
        &request.to_string(),
    );
    assert_eq!(status, 200, "{sql}: {body}");
    serde_json::from_str(&body).expect("JSON rows")
}

#[test]
fn the_sql_influxdb_plugins_use_answers_as_influxdb_does() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = start_bare(dir.path());
    // Two series a minute apart, every 20 s, and a table whose name needs quoting.
    let mut lines = String::new();
    for (i, v) in [1.0, 2.0, 3.0, 4.0, 5.0, 6.0].iter().enumerate() {
        let t = 1_700_000_000 + 20 * i as i64;
        lines.push_str(&format!(
            "cpu,host=a,region=eu usage={v},count={i}i,big={}u,up=true {t}\n",
            u64::MAX - i as u64
        ));
        lines.push_str(&format!("cpu,host=b,region=us usage={} {t}\n", v * 10.0));
    }
    lines.push_str("my\\ table,k=x\"q v=1i 1700000000\n");
    let (status, body) = http(db.addr, "POST", "/api/v3/write_lp?db=s&precision=s", &lines);
    assert_eq!(status, 204, "{body}");

    // SHOW TABLES: user tables in `iox`, BASE TABLE; system tables too; information_schema views.
    let tables = rows(db.addr, "s", "SHOW TABLES");
    let kind = |schema: &str, name: &str| {
        tables
            .iter()
            .find(|t| t["table_schema"] == schema && t["table_name"] == name)
            .map(|t| (t["table_catalog"].clone(), t["table_type"].clone()))
    };
    assert_eq!(
        kind("iox", "cpu"),
        Some((json!("public"), json!("BASE TABLE")))
    );
    assert_eq!(
        kind("iox", "my table"),
        Some((json!("public"), json!("BASE TABLE")))
    );
    assert_eq!(
        kind("system", "processing_engine_logs").map(|k| k.1),
        Some(json!("BASE TABLE"))
    );
    assert_eq!(
        kind("information_schema", "columns").map(|k| k.1),
        Some(json!("VIEW"))
    );

    // information_schema.columns with Arrow's type names.
    let columns = rows(
        db.addr,
        "s",
        "SELECT column_name, data_type FROM information_schema.columns \
         WHERE table_name = 'cpu' ORDER BY column_name",
    );
    let types: Vec<(String, String)> = columns
        .iter()
        .map(|c| {
            (
                c["column_name"].as_str().unwrap_or_default().to_owned(),
                c["data_type"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let expect = |name: &str, ty: &str| {
        assert!(
            types.iter().any(|(n, t)| n == name && t == ty),
            "{name} {ty}: {types:?}"
        );
    };
    expect("host", "Dictionary(Int32, Utf8)");
    expect("usage", "Float64");
    expect("count", "Int64");
    expect("big", "UInt64");
    expect("up", "Boolean");
    assert!(
        types
            .iter()
            .any(|(n, t)| n == "time" && t.starts_with("Timestamp(")),
        "{types:?}"
    );

    // Typed results: booleans, unsigned integers past i64, time as InfluxDB prints it.
    let first = rows(
        db.addr,
        "s",
        "SELECT big, up, count, time FROM cpu WHERE host = 'a' ORDER BY time LIMIT 1",
    );
    assert_eq!(
        first,
        vec![json!({"big": u64::MAX, "up": true, "count": 0, "time": "2023-11-14T22:13:20"})]
    );

    // "ident" quoting with "" escape, a table named by a string literal.
    assert_eq!(
        rows(db.addr, "s", "SELECT \"k\", v FROM 'my table'"),
        vec![json!({"k": "x\"q", "v": 1})]
    );
    assert_eq!(
        rows(db.addr, "s", "SELECT count(*) AS n FROM \"my table\""),
        vec![json!({"n": 1})]
    );

    // $name parameters, strings coerced by context: a timestamp, a number.
    assert_eq!(
        with_params(
            db.addr,
            "SELECT usage FROM cpu WHERE host = $host AND time >= $since AND usage > $min ORDER BY time",
            json!({"host": "a", "since": "2023-11-14T22:14:00Z", "min": "4.5"}),
        ),
        vec![json!({"usage": 5.0}), json!({"usage": 6.0})]
    );
    assert_eq!(
        with_params(
            db.addr,
            "SELECT count(*) AS n FROM cpu WHERE time >= to_timestamp_nanos(arrow_cast($p, 'Int64'))",
            json!({"p": "1700000060000000000"}),
        ),
        vec![json!({"n": 6})]
    );

    // ISO strings compared with time; now() and INTERVAL; IN; ORDER BY … LIMIT.
    assert_eq!(
        rows(
            db.addr,
            "s",
            "SELECT count(*) AS n FROM cpu WHERE time >= '2023-11-14T22:14:00Z' \
             AND time < now() - INTERVAL '1 hour' AND host IN ('a', 'b')"
        ),
        vec![json!({"n": 8})]
    );
    assert_eq!(
        rows(
            db.addr,
            "s",
            "SELECT usage FROM cpu ORDER BY usage DESC LIMIT 2"
        ),
        vec![json!({"usage": 60.0}), json!({"usage": 50.0})]
    );

    // DATE_BIN with an origin, its alias in GROUP BY beside a quoted tag; the aggregates.
    let per_minute = rows(
        db.addr,
        "s",
        "SELECT DATE_BIN(INTERVAL '1 minute', time, '1970-01-01T00:00:00Z') AS _time, \"host\", \
         avg(usage) AS avg, sum(usage) AS sum, min(usage) AS min, max(usage) AS max, \
         median(usage) AS median, count(usage) AS n, stddev(usage) AS sd, var(usage) AS var, \
         approx_median(usage) AS am, first_value(usage ORDER BY time) AS first, \
         last_value(usage ORDER BY time) AS last, MIN(time) AS since \
         FROM cpu WHERE host = 'a' GROUP BY _time, \"host\" ORDER BY _time",
    );
    assert_eq!(per_minute.len(), 3, "{per_minute:?}");
    let m = &per_minute[0];
    // 22:13:20, :40 in the first minute; 22:14:00, :20, :40, 22:15:00 … in the next.
    assert_eq!(m["_time"], "2023-11-14T22:13:00");
    assert_eq!(m["host"], "a");
    assert_eq!(m["n"], 2);
    assert_eq!(m["sum"], 3.0);
    assert_eq!(m["avg"], 1.5);
    assert_eq!(
        (m["min"].clone(), m["max"].clone()),
        (json!(1.0), json!(2.0))
    );
    assert_eq!(m["median"], 1.5);
    assert_eq!(
        (m["first"].clone(), m["last"].clone()),
        (json!(1.0), json!(2.0))
    );
    assert_eq!(m["since"], "2023-11-14T22:13:20");
    let sd = m["sd"].as_f64().expect("stddev");
    let var = m["var"].as_f64().expect("var");
    assert!(
        (sd - 0.5f64.sqrt()).abs() < 1e-9 && (var - 0.5).abs() < 1e-9,
        "{m}"
    );
    assert!(m["am"].as_f64().is_some(), "{m}");
    let next = &per_minute[1];
    assert_eq!(next["_time"], "2023-11-14T22:14:00");
    assert_eq!(next["n"], 3);
    assert_eq!(next["median"], 4.0);
}
