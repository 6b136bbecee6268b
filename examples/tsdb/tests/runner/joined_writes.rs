//! The writes that queue while a trigger's call runs reach the plugin together in its
//! next call, as InfluxDB 3 hands a plugin the writes of one WAL flush: each table once,
//! its rows in the order of the writes, and the status counting calls and writes apart.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{find_trigger, http, query, wait_until};
use crate::{create_with, serving_generation, start_with_fixtures};

#[test]
fn writes_queued_behind_a_call_come_in_the_next_one_each_table_once() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let Some(db) = start_with_fixtures(dir.path()) else {
        return;
    };
    let gate = dir.path().join("gate");
    // Answered at once: the writes queue while the first call waits on the gate.
    let args = json!({ "gate": gate.display().to_string() });
    create_with(db.addr, "joined", "joined.py", "all_tables", args, true);
    serving_generation(db.addr, "joined");
    let write = |lines: &str| {
        let (status, answer) = http(
            db.addr,
            "POST",
            "/api/v3/write_lp?db=metrics&precision=nanosecond",
            lines,
        );
        assert_eq!(status, 204, "{answer}");
    };
    write("cpu,host=a v=1 1");
    // The first call has begun (and waits on the gate) before the others are written.
    wait_until("the first call is running", Duration::from_secs(60), || {
        query(db.addr, "SELECT n FROM started")
            .filter(|r| r.as_array().is_some_and(|r| r.len() == 1))
    });
    for lines in [
        "cpu,host=a v=2 2",
        "mem,host=a free=3i 3",
        "cpu,host=b v=4 4\nmem,host=b free=5i 5",
        "cpu,host=a v=6 6",
    ] {
        write(lines);
    }
    std::fs::write(&gate, "").expect("open the gate");
    let status = wait_until("every write delivered", Duration::from_secs(60), || {
        let status = find_trigger(db.addr, "joined")?;
        (status["batches"] == 5).then_some(status)
    });
    // A call's held writes are written before it answers: every call is recorded.
    let calls = query(db.addr, "SELECT shape FROM calls ORDER BY call").expect("the calls");
    let shapes: Vec<Value> = calls
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| serde_json::from_str(r["shape"].as_str().expect("a shape")).expect("JSON"))
        .collect();
    assert_eq!(
        shapes,
        [
            json!([["cpu", [1]]]),
            // The four queued writes in one call, each table once, rows in write order.
            json!([["cpu", [2, 4, 6]], ["mem", [3, 5]]]),
        ]
    );
    assert_eq!(
        (&status["calls"], &status["errors"]),
        (&json!(2), &json!(0)),
        "{status}"
    );
    // The second call got the rows as a pickle, joined from each write's piece.
    assert!(
        status["last_message"]
            .as_str()
            .is_some_and(|m| m.contains("5 row(s) in 2 table(s) (pickle)")),
        "{status}"
    );
    let listed = query(
        db.addr,
        "SELECT calls, batches FROM system.processing_engine_triggers WHERE trigger_name = 'joined'",
    )
    .expect("the trigger's row");
    assert_eq!(listed, json!([{ "calls": 2, "batches": 5 }]));
}
