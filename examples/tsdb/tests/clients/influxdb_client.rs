use serde_json::json;

use super::run_client;
use crate::common::{CLIENT_AUTH, rows_with, start_bare_with_token};

/// What `influxdb_client_writes.py` writes, as `query_sql` shows it: each time exact
/// to the digit its precision carries, the escaped tag and string whole.
fn written() -> Vec<serde_json::Value> {
    let line = |host: &str, time: &str| json!({"host": host, "usage": 1.5, "count": 7, "note": "l", "time": time});
    let point = |host: &str, time: &str| json!({"host": host, "usage": 0.25, "count": 1, "note": "say \"hi\" \\ é", "time": time});
    vec![
        line("line-ms", "2023-11-14T22:13:32.123"),
        line("line-ns", "2023-11-14T22:13:34.123456789"),
        line("line-s", "2023-11-14T22:13:31"),
        line("line-us", "2023-11-14T22:13:33.123456"),
        point("point-ms", "2023-11-14T22:13:22.123"),
        point("point-ns", "2023-11-14T22:13:24.123456789"),
        point("point-s", "2023-11-14T22:13:21"),
        point("point-us", "2023-11-14T22:13:23.123456"),
        json!({"host": "web 1,eu=x", "usage": 0.5, "count": 2, "note": "p",
               "time": "2023-11-14T22:13:25.654321"}),
    ]
}

const READ_BACK: &str = "SELECT host, usage, count, note, time FROM cpu ORDER BY host";

#[test]
fn influxdb_client_writes_points_and_lines_at_each_precision_through_v2_write() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = start_bare_with_token(dir.path());

    if run_client("influxdb_client_writes.py", db.addr, &["plain"]).is_none() {
        return;
    }
    assert_eq!(
        rows_with(db.addr, &[CLIENT_AUTH], "plain", READ_BACK),
        written()
    );
}

#[test]
fn influxdb_client_gzip_writes_are_decoded() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = start_bare_with_token(dir.path());

    // enable_gzip sends every write with Content-Encoding: gzip.
    if run_client("influxdb_client_writes.py", db.addr, &["zipped", "--gzip"]).is_none() {
        return;
    }
    assert_eq!(
        rows_with(db.addr, &[CLIENT_AUTH], "zipped", READ_BACK),
        written()
    );
}
