//! `process_writes` and `process_scheduled_call`: the arguments InfluxDB 3 hands them,
//! their writes (held, and at once), and a raise that drops what the call held.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{find_trigger, http, query, rows, wait_until};
use crate::{create, has, logs, start_with_fixtures};

#[test]
fn a_write_plugin_sees_table_batches_and_writes_every_line_builder_type() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let Some(db) = start_with_fixtures(dir.path()) else {
        return;
    };
    create(
        db.addr,
        "on_write",
        "on_write.py",
        "all_tables",
        json!({ "window": "5m" }),
    );
    let (status, body) = http(
        db.addr,
        "POST",
        "/api/v3/write_lp?db=metrics&precision=nanosecond",
        "cpu,host=a usage=1.5,count=3i,big=7u,on=t,note=\"hi\" 1000000000\ncpu,host=b usage=2.5 2000000000",
    );
    assert_eq!(status, 204, "{body}");

    // Each row holds only the columns its line carried, the time in nanoseconds, and
    // each value in its Python type.
    let seen = wait_until(
        "the plugin writes what it saw",
        Duration::from_secs(60),
        || {
            query(db.addr, "SELECT * FROM seen")
                .filter(|r| r.as_array().is_some_and(|r| r.len() == 1))
        },
    );
    let seen = &seen[0];
    let shape: Value =
        serde_json::from_str(seen["shape"].as_str().expect("a shape")).expect("JSON");
    assert_eq!(
        shape,
        json!({
            "args": { "window": "5m" },
            "batches": [{
                "table_name": "cpu",
                "rows": [
                    { "host": "a", "usage": 1.5, "count": 3, "big": 7, "on": true, "note": "hi", "time": 1_000_000_000 },
                    { "host": "b", "usage": 2.5, "time": 2_000_000_000 },
                ],
            }],
        })
    );
    // Every LineBuilder type landed as its column type.
    assert_eq!(
        (
            &seen["table"],
            &seen["calls"],
            &seen["rows"],
            &seen["whole"],
            &seen["ok"]
        ),
        (
            &json!("cpu"),
            &json!(1),
            &json!(2),
            &json!(2.0),
            &json!(true)
        ),
        "{seen}"
    );
    let types = rows(
        db.addr,
        "metrics",
        "SELECT column_name, data_type FROM information_schema.columns \
         WHERE table_name = 'seen' ORDER BY column_name",
    );
    let types: Vec<(String, String)> = types
        .iter()
        .map(|r| {
            (
                r["column_name"].as_str().unwrap_or_default().to_owned(),
                r["data_type"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    for (column, kind) in [
        ("calls", "Int64"),
        ("rows", "UInt64"),
        ("whole", "Float64"),
        ("ok", "Boolean"),
        ("shape", "Utf8"),
    ] {
        assert!(
            types.iter().any(|(c, t)| c == column && t == kind),
            "{column} {kind}: {types:?}"
        );
    }
    // write_sync_to_db wrote at once, and the plugin's own writes did not fire it again.
    assert_eq!(
        rows(db.addr, "metrics", "SELECT half FROM seen_sync"),
        vec![json!({ "half": 0.5 })]
    );
    let lines = logs(db.addr, "on_write");
    assert!(
        has(&lines, "INFO", "batch 1 of cpu {'rows': 2}"),
        "{lines:?}"
    );

    // A raise fails the call: the trigger's status and log say why and where, and
    // what the call held is not written.
    let (status, body) = http(
        db.addr,
        "POST",
        "/api/v3/write_lp?db=metrics&precision=nanosecond",
        "boom why=\"testing\" 3000000000",
    );
    assert_eq!(status, 204, "{body}");
    let status = wait_until(
        "the failed call is counted",
        Duration::from_secs(60),
        || find_trigger(db.addr, "on_write").filter(|s| s["errors"] == 1),
    );
    let error = status["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains(
            "on_write.py: process_writes raised ValueError: a boom row came: testing (on_write.py:"
        ),
        "{status}"
    );
    assert!(
        query(db.addr, "SELECT * FROM dropped").is_none(),
        "the held write was dropped"
    );
    let lines = logs(db.addr, "on_write");
    assert!(
        has(
            &lines,
            "ERROR",
            "process_writes failed: ValueError: a boom row came: testing"
        ),
        "{lines:?}"
    );

    // The cache carried the count from one call to the next.
    let (status, body) = http(
        db.addr,
        "POST",
        "/api/v3/write_lp?db=metrics&precision=nanosecond",
        "cpu,host=c usage=3.5 4000000000",
    );
    assert_eq!(status, 204, "{body}");
    wait_until("the third call counts 3", Duration::from_secs(60), || {
        query(db.addr, "SELECT calls FROM seen WHERE calls = 3")
            .filter(|r| r.as_array().is_some_and(|r| r.len() == 1))
    });

    // The first write's rows went as messages (the process had not yet said what it
    // reads), the third's too (after a failed call the process may be another); now it
    // has answered, they come pickled, and the plugin is handed the very same dicts.
    let (status, body) = http(
        db.addr,
        "POST",
        "/api/v3/write_lp?db=metrics&precision=nanosecond",
        "cpu,host=a usage=1.5,count=3i,big=7u,on=t,note=\"hi\" 5000000000\ncpu,host=b usage=2.5 6000000000",
    );
    assert_eq!(status, 204, "{body}");
    let seen = wait_until("the fourth call is seen", Duration::from_secs(60), || {
        query(db.addr, "SELECT shape FROM seen WHERE calls = 4")
            .filter(|r| r.as_array().is_some_and(|r| r.len() == 1))
    });
    let pickled: Value =
        serde_json::from_str(seen[0]["shape"].as_str().expect("a shape")).expect("JSON");
    let mut first = shape;
    first["batches"][0]["rows"][0]["time"] = json!(5_000_000_000_i64);
    first["batches"][0]["rows"][1]["time"] = json!(6_000_000_000_i64);
    assert_eq!(pickled, first);
    // Its answer comes after its writes: waited for.
    wait_until(
        "the fourth call says it was pickled",
        Duration::from_secs(60),
        || {
            find_trigger(db.addr, "on_write")
                .filter(|s| s["last_message"] == "process_writes: 2 row(s) in 1 table(s) (pickle)")
        },
    );
}

#[test]
fn a_scheduled_plugin_gets_its_slot_as_a_naive_utc_datetime() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let Some(db) = start_with_fixtures(dir.path()) else {
        return;
    };
    create(db.addr, "ticks", "scheduled.py", "every:1s", Value::Null);
    let ticks = wait_until("two ticks are written", Duration::from_secs(60), || {
        query(db.addr, "SELECT * FROM ticks ORDER BY time")
            .filter(|r| r.as_array().is_some_and(|r| r.len() >= 2))
    });
    let (first, second) = (&ticks[0], &ticks[1]);
    // Naive, in whole seconds, read as UTC by .timestamp() since the plugin runs with
    // TZ=UTC, with PLUGIN_DIR set and args None for a trigger without arguments.
    assert_eq!(
        (
            &first["naive"],
            &first["tz"],
            &first["plugin_dir"],
            &first["args"]
        ),
        (&json!(true), &json!("UTC"), &json!(true), &json!("None")),
        "{first}"
    );
    assert_eq!(first["epoch"], first["utc_epoch"], "{first}");
    let iso = first["iso"].as_str().expect("iso");
    assert_eq!(
        iso.len(),
        "2025-01-01T00:00:00".len(),
        "whole seconds: {iso}"
    );
    // Consecutive slots of every:1s, one second apart.
    let (a, b) = (
        first["epoch"].as_i64().expect("epoch"),
        second["epoch"].as_i64().expect("epoch"),
    );
    assert!(b > a, "{ticks}");
    // Its calls' latency is in its status, as a write trigger's is.
    let status = wait_until("the calls' latency", Duration::from_secs(30), || {
        let status = crate::common::trigger(db.addr, "ticks");
        status["latency_p50_us"].is_u64().then_some(status)
    });
    assert!(status["latency_p99_us"].is_u64(), "{status}");
    assert!(status["calls"].as_u64() >= Some(2), "{status}");
}
