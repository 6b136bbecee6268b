use serde_json::json;

use super::run_client;
use crate::common::{rows, start_bare};

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

/// Its `query()` is not tested: it goes over Arrow Flight, which tsdb does not serve yet.
#[test]
fn influxdb3_python_writes_lines_and_points_through_v2_and_v3_write() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = start_bare(dir.path());

    // Its default: /api/v2/write, `Authorization: Token ...`.
    if run_client("influxdb3_python_writes.py", db.addr, &["v2"]).is_none() {
        return;
    }
    assert_eq!(rows(db.addr, "v2", READ_BACK), written());
    // write_use_v2_api=False: /api/v3/write_lp?precision=second..nanosecond&no_sync=true,
    // with `Authorization: Bearer ...` as InfluxDB 3 Enterprise and Edge users send it.
    run_client(
        "influxdb3_python_writes.py",
        db.addr,
        &["v3", "--v3", "--bearer"],
    );
    assert_eq!(rows(db.addr, "v3", READ_BACK), written());
}

#[test]
fn influxdb3_python_gzip_writes_are_decoded_on_both_endpoints() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = start_bare(dir.path());

    if run_client("influxdb3_python_writes.py", db.addr, &["v2", "--gzip"]).is_none() {
        return;
    }
    assert_eq!(rows(db.addr, "v2", READ_BACK), written());
    run_client(
        "influxdb3_python_writes.py",
        db.addr,
        &["v3", "--v3", "--gzip"],
    );
    assert_eq!(rows(db.addr, "v3", READ_BACK), written());
}
