use serde_json::json;

use super::run_client;
use crate::common::{CLIENT_AUTH, rows_with, start_bare_with_token};

/// What `influxdb3_python_writes.py` writes, as `query_sql` shows it (a column a line
/// did not carry is left out of its row, as InfluxDB leaves nulls out).
fn written() -> Vec<serde_json::Value> {
    vec![
        json!({"room": "attic", "temp": -3.5, "hum": 80, "time": "2023-11-14T22:13:23.456"}),
        json!({"room": "cellar", "temp": 12.5, "hum": 70,
               "time": "2023-11-14T22:13:25.123456789"}),
        json!({"room": "hall", "temp": 19.25, "hum": 41, "time": "2023-11-14T22:13:22.123"}),
        json!({"room": "kitchen", "temp": 21.5, "hum": 40, "time": "2023-11-14T22:13:21"}),
        json!({"room": "living room", "temp": 22.75, "hum": 39,
               "note": "a \"quoted\", \\ note", "time": "2023-11-14T22:13:24.123456"}),
    ]
}

const READ_BACK: &str = "SELECT room, temp, hum, note, time FROM home ORDER BY room";

#[test]
fn influxdb3_python_writes_lines_and_points_through_v2_and_v3_write() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = start_bare_with_token(dir.path());

    // Its default: /api/v2/write, `Authorization: Token ...`.
    if run_client("influxdb3_python_writes.py", db.addr, &["v2"]).is_none() {
        return;
    }
    assert_eq!(
        rows_with(db.addr, &[CLIENT_AUTH], "v2", READ_BACK),
        written()
    );
    // write_use_v2_api=False: /api/v3/write_lp?precision=second..nanosecond&no_sync=true,
    // with `Authorization: Bearer ...` as InfluxDB 3 Enterprise and Edge users send it.
    run_client(
        "influxdb3_python_writes.py",
        db.addr,
        &["v3", "--v3", "--bearer"],
    );
    assert_eq!(
        rows_with(db.addr, &[CLIENT_AUTH], "v3", READ_BACK),
        written()
    );
}

#[test]
fn influxdb3_python_gzip_writes_are_decoded_on_both_endpoints() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = start_bare_with_token(dir.path());

    if run_client("influxdb3_python_writes.py", db.addr, &["v2", "--gzip"]).is_none() {
        return;
    }
    assert_eq!(
        rows_with(db.addr, &[CLIENT_AUTH], "v2", READ_BACK),
        written()
    );
    run_client(
        "influxdb3_python_writes.py",
        db.addr,
        &["v3", "--v3", "--gzip"],
    );
    assert_eq!(
        rows_with(db.addr, &[CLIENT_AUTH], "v3", READ_BACK),
        written()
    );
}

/// Its `query()`: Arrow Flight's DoGet on the HTTP port, a JSON ticket with a `$room`
/// parameter, `authorization: Bearer ...`; each column comes back in its type.
#[test]
fn influxdb3_python_queries_over_flight_with_a_parameter_in_each_column_type() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = start_bare_with_token(dir.path());

    let Some(stdout) = run_client("influxdb3_python_queries.py", db.addr, &["sensors"]) else {
        return;
    };
    let read: serde_json::Value = serde_json::from_str(stdout.trim()).expect("the script's JSON");
    // Tags come as strings (InfluxDB 3 sends its dictionaries decoded), the time as
    // nanoseconds, unsigned integers and booleans as such.
    assert_eq!(
        read["schema"],
        json!({"room": "string", "temp": "double", "count": "int64", "seen": "uint64",
               "ok": "bool", "label": "string", "time": "timestamp[ns]"})
    );
    assert_eq!(
        read["rows"],
        json!([
            {"room": "kitchen", "temp": 21.5, "count": 7, "seen": 12, "ok": true,
             "label": "warm", "time": 1_700_000_001_000_000_001_u64},
            {"room": "kitchen", "temp": -0.25, "count": -3, "seen": u64::MAX, "ok": false,
             "label": "a \"b\"", "time": 1_700_000_002_000_000_002_u64},
        ])
    );
    // mode="pandas" where pandas is installed (the venv does not require it).
    if !read["pandas"].is_null() {
        assert_eq!(read["pandas"]["rows"], 2, "{}", read["pandas"]);
    }
    let missing = read["missing_database"].as_str().expect("a message");
    assert!(
        missing.contains("not found") && missing.contains("\"no_such_db\""),
        "{missing}"
    );
    let bad_sql = read["bad_sql"].as_str().expect("a message");
    assert!(bad_sql.contains("No field named nope"), "{bad_sql}");
}
