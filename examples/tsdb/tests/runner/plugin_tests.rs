//! `POST /api/v3/plugin_test/wal` and `/schedule`: a plugin run once on given input,
//! answered in InfluxDB's shape (`log_lines`, `database_writes`, `errors`, and
//! `trigger_time` for a schedule), its writes returned and never applied; its cache
//! kept between tests under one `cache_name`; a raise in `errors` with the plugin's
//! line, its held writes dropped; and each bad request refused naming its field.

use std::net::SocketAddr;

use serde_json::{Value, json};

use crate::common::{http, rows};
use crate::{start_with_fixtures, start_with_fixtures_and};

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

/// What `queries.py` reads: host a's rows fall in two minutes, the second without a
/// `note` (a NULL); `big` holds the largest u64.
const QUERIED: &str = "cpu,host=a usage=1.5,big=18446744073709551615u,ok=true,note=\"warm\" 1700000000000000000\n\
cpu,host=a usage=2.5,big=5u,ok=false 1700000010000000000\n\
cpu,host=a usage=4.0,big=7u,ok=true 1700000050000000000\n\
cpu,host=b usage=9.0,big=1u,ok=true,note=\"other\" 1700000000000000000";

fn write(addr: SocketAddr, db: &str, lines: &str) {
    let (code, body) = http(addr, "POST", &format!("/api/v3/write_lp?db={db}"), lines);
    assert_eq!(code, 204, "{body}");
}

#[test]
fn a_plugin_test_queries_the_real_database_as_a_trigger_does() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let Some(db) = start_with_fixtures(dir.path()) else {
        return;
    };
    write(db.addr, "metrics", QUERIED);
    // The test's own input is not written, so the query does not see it.
    let body = json!({
        "filename": "queries.py", "database": "metrics",
        "input_lp": "cpu,host=a usage=100.0,big=1u,ok=true 1700000020000000000",
    });
    let (code, answer) = test(db.addr, "wal", body.clone());
    eprintln!("{answer}");
    assert_eq!(code, 200, "{answer}");
    assert_eq!(
        answer,
        json!({
            "log_lines": [
                "INFO: reading cpu",
                "INFO: minute=1699999980000000000:int host='a':str n=2:int total=4.0:float big=18446744073709551615:int all_ok=False:bool note='warm':str",
                "INFO: minute=1700000040000000000:int host='a':str n=1:int total=4.0:float big=7:int all_ok=True:bool note=None:NoneType",
            ],
            "database_writes": { "metrics": [
                "asked table=\"cpu\"",
                "summary,host=a n=2i,total=4.0,big=18446744073709551615u,all_ok=f,note=\"warm\" 1699999980000000000",
                "summary,host=a n=1i,total=4.0,big=7u,all_ok=t,note=\"(none)\" 1700000040000000000",
            ] },
            "errors": [],
        })
    );
    assert_eq!(
        rows(db.addr, "metrics", "SELECT count(*) AS n FROM cpu")[0]["n"],
        4
    );
    assert_eq!(tables(db.addr, "metrics"), vec!["cpu".to_owned()]);

    // A failing query is the plugin's QueryError with tsdb's message; what the plugin
    // logged and wrote at once before it is kept.
    let mut failing = body;
    failing["input_arguments"] = json!({ "table": "nope" });
    let (code, answer) = test(db.addr, "wal", failing);
    eprintln!("{answer}");
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["log_lines"], json!(["INFO: reading nope"]));
    assert_eq!(
        answer["database_writes"],
        json!({ "metrics": ["asked table=\"nope\""] })
    );
    let errors = answer["errors"].as_array().cloned().unwrap_or_default();
    assert_eq!(errors.len(), 1, "{answer}");
    // The message is the one tsdb gives an HTTP client for the same table.
    let (code, refused) = http(
        db.addr,
        "GET",
        "/api/v3/query_sql?db=metrics&q=SELECT%20*%20FROM%20nope",
        "",
    );
    assert_eq!(code, 400, "{refused}");
    let says = serde_json::from_str::<Value>(&refused).expect("a JSON error")["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        says,
        "Error during planning: table 'public.iox.nope' not found"
    );
    assert!(
        errors[0].as_str().is_some_and(|e| e.starts_with(&format!(
            "process_writes raised QueryError: {says} (queries.py:"
        ))),
        "{answer}"
    );
}

#[test]
fn a_schedule_test_queries_another_database_only_with_plugin_databases_any() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let Some(db) = start_with_fixtures_and(dir.path(), "plugin_databases = \"any\"\n") else {
        return;
    };
    write(db.addr, "metrics", QUERIED);
    // A test in `elsewhere` reads `metrics`, as a plugin may in InfluxDB 3.
    let (code, answer) = test(
        db.addr,
        "schedule",
        json!({ "filename": "queries.py", "database": "elsewhere", "schedule": "every:10s",
                "input_arguments": { "host": "b", "database": "metrics" } }),
    );
    eprintln!("{answer}");
    assert_eq!(code, 200, "{answer}");
    assert_eq!(
        answer["log_lines"],
        json!([
            "INFO: reading cpu",
            "INFO: minute=1699999980000000000:int host='b':str n=1:int total=9.0:float big=1:int all_ok=True:bool note='other':str",
        ])
    );
    assert_eq!(
        answer["database_writes"],
        json!({ "elsewhere": [
            "asked table=\"cpu\"",
            "summary,host=b n=1i,total=9.0,big=1u,all_ok=t,note=\"other\" 1699999980000000000",
        ] })
    );
    assert_eq!(answer["errors"], json!([]));
    drop(db);

    let dir = tempfile::tempdir().expect("a temp dir");
    let Some(db) = start_with_fixtures(dir.path()) else {
        return;
    };
    write(db.addr, "metrics", QUERIED);
    write(db.addr, "elsewhere", QUERIED);
    let ask = |args: Value| {
        test(
            db.addr,
            "schedule",
            json!({ "filename": "queries.py", "database": "metrics", "input_arguments": args }),
        )
    };
    let (code, answer) = ask(json!({ "host": "b" }));
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["errors"], json!([]), "{answer}");
    assert_eq!(answer["log_lines"].as_array().map(Vec::len), Some(2));
    let (code, answer) = ask(json!({ "host": "b", "database": "elsewhere" }));
    assert_eq!(code, 200, "{answer}");
    assert!(
        answer["errors"][0].as_str().is_some_and(|e| e.starts_with(
            "process_scheduled_call raised QueryError: a plugin test in database \"metrics\" may not use database \"elsewhere\" (tsdb.toml's plugin_databases is \"own\", the default; plugin_databases = \"any\" lets plugins use every database, as InfluxDB 3 does) (queries.py:"
        )),
        "{answer}"
    );
}
