//! `POST /api/v3/plugin_test/wal` and `/schedule`: a plugin run once on given input,
//! answered in InfluxDB's shape (`log_lines`, `database_writes`, `errors`, and
//! `trigger_time` for a schedule), its writes returned and never applied; its cache
//! kept between tests under one `cache_name`; a raise in `errors` with the plugin's
//! line, its held writes dropped; and each bad request refused naming its field.

use std::net::SocketAddr;

use serde_json::{Value, json};

use crate::common::{http, rows};
use crate::start_with_fixtures;

fn test(addr: SocketAddr, kind: &str, body: Value) -> (u16, Value) {
    let (code, answer) = http(
        addr,
        "POST",
        &format!("/api/v3/plugin_test/{kind}"),
        &body.to_string(),
    );
    let value = serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer}"));
    (code, value)
}

fn tables(addr: SocketAddr, db: &str) -> Vec<String> {
    let (code, body) = http(
        addr,
        "GET",
        &format!("/api/v3/query_sql?db={db}&q=SHOW%20TABLES"),
        "",
    );
    if code != 200 {
        return Vec::new();
    }
    serde_json::from_str::<Vec<Value>>(&body)
        .unwrap_or_default()
        .iter()
        .filter(|r| r["table_schema"] == "iox")
        .filter_map(|r| r["table_name"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_wal_test_answers_what_the_plugin_logged_and_would_write_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let Some(db) = start_with_fixtures(dir.path()) else {
        return;
    };
    // metrics exists, with a table of its own, so that "nothing written" is seen.
    let (code, _) = http(
        db.addr,
        "POST",
        "/api/v3/write_lp?db=metrics",
        "cpu,host=z usage=1i 1",
    );
    assert_eq!(code, 204);
    let input = "cpu,host=a usage=50i 1700000000000000000\ncpu,host=b usage=95i 1700000001000000000\nmem,host=a usage=99i 1700000002000000000";
    let body = json!({
        "filename": "tested.py", "database": "metrics", "input_lp": input,
        "cache_name": "mine", "input_arguments": { "threshold": "90" },
    });
    let (code, answer) = test(db.addr, "wal", body.clone());
    eprintln!("{answer}");
    assert_eq!(code, 200, "{answer}");
    assert_eq!(
        answer,
        json!({
            "log_lines": ["INFO: call 1 threshold 90", "WARN: tables ['cpu', 'mem']"],
            "database_writes": {
                "metrics": [
                    "hot,host=b usage=95i 1700000001000000000",
                    "hot,host=a usage=99i 1700000002000000000",
                ],
                "audit": ["seen rows=3i"],
            },
            "errors": [],
        })
    );
    // The cache is the test's: a second run under the same name counts 2, another name 1.
    let (_, again) = test(db.addr, "wal", body.clone());
    assert_eq!(
        again["log_lines"][0], "INFO: call 2 threshold 90",
        "{again}"
    );
    let mut other = body.clone();
    other["cache_name"] = json!("other");
    let (_, fresh) = test(db.addr, "wal", other);
    assert_eq!(
        fresh["log_lines"][0], "INFO: call 1 threshold 90",
        "{fresh}"
    );

    // Nothing was written: no `hot` in metrics, no `audit` database at all.
    assert_eq!(tables(db.addr, "metrics"), vec!["cpu".to_owned()]);
    assert_eq!(
        rows(db.addr, "metrics", "SELECT count(*) AS n FROM cpu")[0]["n"],
        1
    );
    assert!(tables(db.addr, "audit").is_empty());

    // A raise: in `errors` with the plugin's line; the held writes dropped, the one
    // made at once (write_sync) kept, as it would have been written.
    let mut raising = body;
    raising["input_arguments"] = json!({ "raise": "yes" });
    raising["cache_name"] = Value::Null;
    let (code, answer) = test(db.addr, "wal", raising);
    eprintln!("{answer}");
    assert_eq!(code, 200, "{answer}");
    let errors = answer["errors"].as_array().cloned().unwrap_or_default();
    assert_eq!(errors.len(), 1, "{answer}");
    assert!(
        errors[0].as_str().is_some_and(
            |e| e.starts_with("process_writes raised ValueError: asked to raise (tested.py:")
        ),
        "{answer}"
    );
    assert_eq!(
        answer["database_writes"],
        json!({ "audit": ["seen rows=3i"] })
    );
}

#[test]
fn a_schedule_test_runs_at_the_schedules_next_slot() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let Some(db) = start_with_fixtures(dir.path()) else {
        return;
    };
    let (code, answer) = test(
        db.addr,
        "schedule",
        json!({ "filename": "tested.py", "database": "metrics", "schedule": "every:10s" }),
    );
    eprintln!("{answer}");
    assert_eq!(code, 200, "{answer}");
    let at = answer["trigger_time"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let parsed = chrono::DateTime::parse_from_rfc3339(&at).expect("trigger_time is RFC 3339");
    assert_eq!(parsed.timestamp() % 10, 0, "{at}");
    let naive = parsed.naive_utc().format("%Y-%m-%dT%H:%M:%S").to_string();
    assert_eq!(
        answer["log_lines"],
        json!([format!("INFO: scheduled at {naive} call 1")])
    );
    assert_eq!(
        answer["database_writes"],
        json!({ "metrics": ["ticks,by=test calls=1.0"] })
    );
    assert_eq!(answer["errors"], json!([]));

    // A cron expression as InfluxDB takes it (with seconds), and a raise.
    let (code, answer) = test(
        db.addr,
        "schedule",
        json!({ "filename": "tested.py", "database": "metrics", "schedule": "0 * * * * *",
                "input_arguments": { "raise": "1" } }),
    );
    assert_eq!(code, 200, "{answer}");
    assert!(
        answer["trigger_time"]
            .as_str()
            .is_some_and(|t| t.ends_with(":00Z")),
        "{answer}"
    );
    assert!(
        answer["errors"][0]
            .as_str()
            .is_some_and(|e| e.contains("RuntimeError: scheduled failure (tested.py:")),
        "{answer}"
    );
    assert_eq!(answer["database_writes"], json!({}));
    assert!(tables(db.addr, "metrics").is_empty());
}

#[test]
fn a_plugin_that_does_not_load_is_an_error_of_the_test_and_bad_requests_name_their_field() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let Some(db) = start_with_fixtures(dir.path()) else {
        return;
    };
    let (code, answer) = test(
        db.addr,
        "wal",
        json!({ "filename": "missing_import.py", "database": "metrics", "input_lp": "cpu v=1" }),
    );
    eprintln!("{answer}");
    assert_eq!(code, 200, "{answer}");
    assert!(
        answer["errors"][0].as_str().is_some_and(|e| e.contains(
            "ModuleNotFoundError: No module named 'not_a_module_anywhere' (missing_import.py:1) — install it with POST /api/v3/configure/plugin_environment/install_packages"
        )),
        "{answer}"
    );
    let ok = json!({ "filename": "tested.py", "database": "metrics", "input_lp": "cpu usage=1i" });
    let with = |key: &str, value: Value| {
        let mut body = ok.clone();
        body[key] = value;
        body
    };
    let without = |key: &str| {
        let mut body = ok.clone();
        body.as_object_mut().map(|o| o.remove(key));
        body
    };
    for (kind, body, says) in [
        ("wal", without("filename"), "missing field `filename`"),
        ("wal", without("input_lp"), "missing field `input_lp`"),
        (
            "wal",
            with("filename", json!("../../etc/passwd")),
            "filename",
        ),
        (
            "wal",
            with("filename", json!("nothing.py")),
            "filename: no plugin file \"nothing.py\"",
        ),
        ("wal", with("filename", json!(7)), "filename: invalid type"),
        (
            "wal",
            with("input_lp", json!("cpu usage=")),
            "input_lp: line 1",
        ),
        ("wal", with("input_lp", json!("")), "input_lp: no line"),
        ("wal", with("database", json!("")), "database: empty"),
        (
            "wal",
            with("input_arguments", json!({ "a": 1 })),
            "input_arguments.a: invalid type",
        ),
        (
            "wal",
            with("surprise", json!(true)),
            "unknown field `surprise`",
        ),
        (
            "schedule",
            json!({ "filename": "tested.py", "database": "metrics", "schedule": "bogus" }),
            "schedule: \"bogus\" is not a cron expression",
        ),
        (
            "schedule",
            json!({ "filename": "tested.py", "database": "metrics", "schedule": "every:0s" }),
            "schedule",
        ),
        (
            "schedule",
            json!({ "filename": "tested.py" }),
            "missing field `database`",
        ),
    ] {
        let (code, answer) = test(db.addr, kind, body.clone());
        eprintln!("{kind} {body} -> {code} {answer}");
        assert_eq!(code, 400, "{body}: {answer}");
        assert!(
            answer["error"].as_str().is_some_and(|e| e.contains(says)),
            "{says}: {answer}"
        );
    }
}
