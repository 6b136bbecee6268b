//! Deleting a database or a table deletes its data, in Parquet and in the log alike,
//! for good: a crash right after the answer does not bring it back, and a database
//! written again under the same name starts empty.

use std::path::Path;
use std::time::Duration;

use crate::common::{Tsdb, http, rows, start, wait_until};

fn start_small_snapshots(dir: &Path) -> Tsdb {
    std::fs::write(dir.join("plugins.toml"), "").expect("write plugins.toml");
    std::fs::write(
        dir.join("tsdb.toml"),
        "http = \"127.0.0.1:0\"\nplugins = \"plugins.toml\"\nsnapshot_rows = 20\n",
    )
    .expect("write tsdb.toml");
    start(dir)
}

fn write(db: &Tsdb, database: &str, lines: &str) {
    let (status, body) = http(
        db.addr,
        "POST",
        &format!("/api/v3/write_lp?db={database}&precision=s"),
        lines,
    );
    assert_eq!(status, 204, "{body}");
}

/// The Parquet files under `DATA_DIR/dbs/NAME`.
fn parquet_files(dir: &Path, database: &str) -> usize {
    std::fs::read_dir(dir.join("data/dbs").join(database))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
                .count()
        })
        .unwrap_or(0)
}

fn query_answer(db: &Tsdb, database: &str, sql: &str) -> (u16, String) {
    http(
        db.addr,
        "GET",
        &format!(
            "/api/v3/query_sql?db={database}&q={}",
            crate::common::encoded(sql)
        ),
        "",
    )
}

/// SIGKILL, so the next start replays the log rather than reading a final snapshot.
fn crash(mut db: Tsdb) {
    db.child.kill().expect("SIGKILL tsdb");
    db.child.wait().expect("reap tsdb");
}

#[test]
fn a_deleted_database_or_table_is_gone_from_parquet_and_log_and_stays_gone_after_a_crash() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = start_small_snapshots(dir.path());
    // 24 rows start a snapshot (Parquet files); the 3 after it stay in the log alone.
    let lines: Vec<String> = (0..12)
        .map(|n| format!("cpu,host=h{} v={n} {}", n % 4, 1_700_000_000 + n / 4))
        .collect();
    write(&db, "doomed", &lines.join("\n"));
    write(&db, "kept", &lines.join("\n"));
    wait_until("a snapshot wrote Parquet", Duration::from_secs(60), || {
        (parquet_files(dir.path(), "doomed") > 0).then_some(())
    });
    write(
        &db,
        "doomed",
        "cpu,host=late v=9 1700000100\nmem,host=a used=1i 1700000100",
    );
    write(&db, "kept", "cpu,host=late v=9 1700000100");

    // A table: gone, its database and the other table untouched.
    let (status, body) = http(
        db.addr,
        "DELETE",
        "/api/v3/configure/table?db=doomed&table=mem",
        "",
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = query_answer(&db, "doomed", "SELECT * FROM mem");
    assert!(status >= 400 && body.contains("mem"), "{status} {body}");
    assert_eq!(
        rows(db.addr, "doomed", "SELECT count(*) AS n FROM cpu"),
        [serde_json::json!({"n": 13})]
    );
    let (status, body) = http(
        db.addr,
        "DELETE",
        "/api/v3/configure/table?db=doomed&table=mem",
        "",
    );
    assert_eq!(status, 404, "{body}");

    // The database: gone from queries, the list and the disk.
    let (status, body) = http(
        db.addr,
        "DELETE",
        "/api/v3/configure/database?db=doomed",
        "",
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = query_answer(&db, "doomed", "SELECT count(*) FROM cpu");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("database not found"), "{body}");
    let (_, listed) = http(db.addr, "GET", "/api/v3/configure/database?format=json", "");
    assert!(!listed.contains("doomed"), "{listed}");
    wait_until(
        "the deleted files are removed",
        Duration::from_secs(30),
        || (parquet_files(dir.path(), "doomed") == 0).then_some(()),
    );
    let (status, body) = http(
        db.addr,
        "DELETE",
        "/api/v3/configure/database?db=doomed",
        "",
    );
    assert_eq!(status, 404, "a second delete: {body}");

    // A crash right after: the log's drop record keeps it deleted.
    crash(db);
    let db = start(dir.path());
    let (status, body) = query_answer(&db, "doomed", "SELECT count(*) FROM cpu");
    assert_eq!(status, 404, "back after a crash: {body}");
    assert_eq!(
        rows(db.addr, "kept", "SELECT count(*) AS n FROM cpu"),
        [serde_json::json!({"n": 13})]
    );

    // The name again: a new, empty database; and so it stays after another crash.
    write(&db, "doomed", "cpu,host=new v=1 1700000200");
    assert_eq!(
        rows(db.addr, "doomed", "SELECT count(*) AS n FROM cpu"),
        [serde_json::json!({"n": 1})]
    );
    crash(db);
    let db = start(dir.path());
    assert_eq!(
        rows(db.addr, "doomed", "SELECT host FROM cpu"),
        [serde_json::json!({"host": "new"})]
    );
    assert_eq!(
        rows(db.addr, "kept", "SELECT count(*) AS n FROM cpu"),
        [serde_json::json!({"n": 13})]
    );
    let (status, body) = http(db.addr, "DELETE", "/api/v3/configure/table?db=kept", "");
    assert_eq!(
        (status, body.contains("table is missing")),
        (400, true),
        "{body}"
    );
}
