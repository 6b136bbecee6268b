//! `process_request`: its arguments, every return convention, a raise, and what
//! `influxdb3_local` does inside a request (writes, `$name` queries, the cache, the log).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{header, http, http_full, rows, wait_until};
use crate::{create, has, logs, start_with_fixtures, start_with_fixtures_and};

fn has_text(lines: &[(String, String)], text: &str) -> bool {
    lines.iter().any(|(_, t)| t.contains(text))
}

fn call(addr: std::net::SocketAddr, case: &str) -> (u16, Vec<(String, String)>, String) {
    http_full(
        addr,
        "GET",
        &format!("/api/v3/engine/cases?case={case}"),
        &[],
        "",
    )
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[test]
fn every_return_convention_and_each_bad_return() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let Some(db) = start_with_fixtures(dir.path()) else {
        return;
    };
    create(
        db.addr,
        "cases",
        "http_cases.py",
        "request:cases",
        json!({ "mode": "test" }),
    );

    // The arguments: query parameters, lower-cased headers without Authorization, the
    // body as bytes, and the trigger's arguments.
    let (status, _, body) = wait_until("the plugin answers", Duration::from_secs(60), || {
        let answer = http_full(
            db.addr,
            "POST",
            "/api/v3/engine/cases?case=echo&x=1",
            &["X-Custom: Yes", "Authorization: Bearer secret"],
            "raw body",
        );
        (answer.0 != 502).then_some(answer)
    });
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        json_of(&body),
        json!({
            "query": { "case": "echo", "x": "1" },
            "headers": { "x-custom": "Yes" },
            "body": "raw body",
            "body_type": "bytes",
            "args": { "mode": "test" },
        })
    );

    let html = "text/html; charset=utf-8";
    for (case, want_status, want_type, want_body) in [
        ("text", 200, html, "<b>hello</b>"),
        ("list", 200, "application/json", r#"[1, "two", null]"#),
        ("status", 201, html, "made"),
        ("headers", 200, html, "with headers"),
        ("both", 202, "application/json", r#"{"ok": true}"#),
        ("stream", 200, html, "abc"),
    ] {
        let (status, headers, body) = call(db.addr, case);
        assert_eq!(
            (status, header(&headers, "content-type"), body.as_str()),
            (want_status, Some(want_type), want_body),
            "case {case}"
        );
    }
    let (_, headers, _) = call(db.addr, "headers");
    assert_eq!(header(&headers, "x-plugin"), Some("yes"));
    let (_, headers, _) = call(db.addr, "both");
    assert_eq!(header(&headers, "x-plugin"), Some("both"));

    // A raise, a return that is no response, and bad LineBuilder and write calls: 500
    // and {"error": ...} naming what went wrong.
    for (case, error) in [
        ("raise", "RuntimeError: the plugin gave up"),
        (
            "none",
            "ResponseError: process_request returned None; return a str, dict, list, tuple or iterable",
        ),
        (
            "bad_line",
            "ValueError: uint64 field 'u' cannot be negative (-3)",
        ),
        (
            "bad_write",
            "TypeError: write: str has no build() (pass a LineBuilder)",
        ),
        (
            "cache_bad_ttl",
            "TypeError: cache ttl for 'k': 'soon' is not a number of seconds",
        ),
    ] {
        let (status, _, body) = call(db.addr, case);
        assert_eq!(status, 500, "case {case}: {body}");
        assert_eq!(json_of(&body), json!({ "error": error }), "case {case}");
    }
    // The raise is in the trigger's log, with the plugin's file and line.
    let lines = logs(db.addr, "cases");
    assert!(
        has(
            &lines,
            "ERROR",
            "process_request failed: RuntimeError: the plugin gave up (http_cases.py:"
        ),
        "{lines:?}"
    );

    // What a call held is dropped when it raises.
    let (status, _, _) = call(db.addr, "raise_after_write");
    assert_eq!(status, 500);
    let (status, body) = http(
        db.addr,
        "GET",
        "/api/v3/query_sql?db=metrics&q=SELECT%20*%20FROM%20never",
        "",
    );
    assert_ne!(status, 200, "the held write was dropped: {body}");
}

#[test]
fn writes_queries_cache_and_log_from_inside_a_call() {
    let dir = tempfile::tempdir().expect("a temp dir");
    // InfluxDB 3's rule, so that the plugin may write and read another database.
    let Some(db) = start_with_fixtures_and(dir.path(), "plugin_databases = \"any\"\n") else {
        return;
    };
    create(
        db.addr,
        "cases",
        "http_cases.py",
        "request:cases",
        Value::Null,
    );
    let (status, _, body) = wait_until("the plugin answers", Duration::from_secs(60), || {
        let answer = call(db.addr, "write");
        (answer.0 != 502).then_some(answer)
    });
    assert_eq!((status, body.as_str()), (200, "written"));
    // write_sync landed at once, the held write_to_db when the call returned.
    assert_eq!(
        rows(db.addr, "metrics", "SELECT n FROM held"),
        vec![json!({ "n": 7 })]
    );

    // Another database, as in InfluxDB 3: the held write makes it, a query reads it.
    let (status, _, body) = call(db.addr, "write_elsewhere");
    assert_eq!((status, body.as_str()), (200, "held"));
    assert_eq!(
        rows(db.addr, "elsewhere", "SELECT n FROM m"),
        vec![json!({ "n": 1 })]
    );
    let (status, _, body) = call(db.addr, "query_elsewhere");
    assert_eq!((status, json_of(&body)), (200, json!([{ "n": 1 }])));

    // query: DataFusion's DATE_BIN, a $name argument, and InfluxDB's Python types (a
    // timestamp as int nanoseconds, a tag as str).
    let (status, _, body) = call(db.addr, "query&host=a");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        json_of(&body),
        json!([{ "_time": 0, "host": "a", "mean": 15.0, "n": 2, "last": 120_000_000_000_i64 }])
    );
    // Types as InfluxDB maps them, NULL as None.
    let (status, body) = http(
        db.addr,
        "POST",
        "/api/v3/write_lp?db=metrics&precision=nanosecond",
        "typed,t=x f=1.5,i=-2i,u=3u,b=t,s=\"str\" 10\ntyped,t=y f=2.5 20",
    );
    assert_eq!(status, 204, "{body}");
    let (status, _, body) = call(db.addr, "query_types");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        json_of(&body),
        json!([
            { "b": true, "f": 1.5, "i": -2, "s": "str", "t": "x", "time": 10, "u": 3 },
            { "b": null, "f": 2.5, "i": null, "s": null, "t": "y", "time": 20, "u": null },
        ])
    );
    // A query error and a refused write_sync raise, with tsdb's message.
    let (_, _, body) = call(db.addr, "query_error");
    let error = json_of(&body);
    assert_eq!(error["type"], "QueryError", "{error}");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("nowhere")),
        "{error}"
    );
    let (_, _, body) = call(db.addr, "sync_conflict");
    let error = json_of(&body);
    assert_eq!(error["type"], "WriteError", "{error}");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("is a float column; this line gives it an integer")),
        "{error}"
    );

    // The cache keeps live objects per trigger or globally, a default for what is
    // missing, and forgets an entry when its ttl ends.
    assert_eq!(call(db.addr, "cache_put").0, 200);
    let put_at = Instant::now();
    let (_, _, body) = call(db.addr, "cache_get");
    let got = json_of(&body);
    if put_at.elapsed() < Duration::from_millis(1500) {
        assert_eq!(got["short"], "soon gone", "{got}");
    }
    assert_eq!(
        (
            &got["live"],
            &got["shared_global"],
            &got["shared_trigger"],
            &got["missing"]
        ),
        (
            &json!([0]),
            &json!("everyone's"),
            &Value::Null,
            &json!("the default")
        ),
        "{got}"
    );
    let got = wait_until("the ttl ends", Duration::from_secs(30), || {
        let got = json_of(&call(db.addr, "cache_get").2);
        (got["short"] == "expired").then_some(got)
    });
    assert!(put_at.elapsed() >= Duration::from_millis(1500));
    // The same list, appended to by each get.
    assert!(
        got["live"].as_array().is_some_and(|l| l.len() >= 2),
        "{got}"
    );
    let (_, _, body) = call(db.addr, "cache_delete");
    assert_eq!(json_of(&body), json!([true, false, null]));

    // info, warn and error: str()-ed, joined by a space, at their level.
    assert_eq!(call(db.addr, "log").2, "logged");
    let lines = wait_until("the log lines land", Duration::from_secs(10), || {
        let lines = logs(db.addr, "cases");
        has(&lines, "ERROR", "error line None").then_some(lines)
    });
    assert!(has(&lines, "INFO", "info line 1 {'k': 'v'}"), "{lines:?}");
    let lines = wait_until(
        "the library's warning lands",
        Duration::from_secs(10),
        || {
            let lines = logs(db.addr, "cases");
            lines
                .iter()
                .any(|(_, t)| t.contains("library warning"))
                .then_some(lines)
        },
    );
    assert!(!has_text(&lines, "library chatter"), "{lines:?}");
    // A request's latency is in its trigger's status.
    let status = crate::common::trigger(db.addr, "cases");
    assert!(status["latency_p50_us"].is_u64(), "{status}");
    // Each call's start and end, as InfluxDB's engine logs them.
    assert!(
        has(&lines, "INFO", "starting execution of process_request"),
        "{lines:?}"
    );
    assert!(
        has(&lines, "INFO", "finished execution of process_request in "),
        "{lines:?}"
    );
    assert!(has(&lines, "WARN", "warn line 2.5"), "{lines:?}");

    // A package directory: its __init__.py's entry point, a helper module beside it,
    // and LineBuilder there at import.
    create(
        db.addr,
        "pkg",
        "pkg_plugin",
        "request:pkg",
        json!({ "a": "b" }),
    );
    let (status, body) = http(db.addr, "GET", "/api/v3/engine/pkg", "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        json_of(&body),
        json!({ "helper": "from the helper module", "builder": "LineBuilder", "args": { "a": "b" } })
    );
    // Its print()s, at load and in a call, are lines of its log, not a broken handshake.
    let lines = wait_until("the prints land", Duration::from_secs(10), || {
        let lines = logs(db.addr, "pkg");
        has_text(&lines, "pkg_plugin printed in a call").then_some(lines)
    });
    assert!(
        has_text(&lines, "pkg_plugin printed while loading"),
        "{lines:?}"
    );
}

#[test]
fn by_default_a_plugin_keeps_to_its_triggers_databases() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let Some(db) = start_with_fixtures(dir.path()) else {
        return;
    };
    create(
        db.addr,
        "cases",
        "http_cases.py",
        "request:cases",
        Value::Null,
    );
    let refused = "plugin trigger-cases has no trigger in database \"elsewhere\", so it may not use it (tsdb.toml's plugin_databases is \"own\", the default; plugin_databases = \"any\" lets plugins use every database, as InfluxDB 3 does)";
    let (status, _, body) = wait_until("the plugin answers", Duration::from_secs(60), || {
        let answer = call(db.addr, "write_elsewhere");
        (answer.0 != 502).then_some(answer)
    });
    assert_eq!(status, 500, "{body}");
    assert_eq!(
        json_of(&body),
        json!({ "error": format!("WriteError: write to 'elsewhere': {refused}") })
    );
    let (status, _, body) = call(db.addr, "query_elsewhere");
    assert_eq!(status, 500, "{body}");
    assert_eq!(
        json_of(&body),
        json!({ "error": format!("QueryError: {refused}") })
    );
    // Its own database is open to it.
    let (status, _, body) = call(db.addr, "write");
    assert_eq!((status, body.as_str()), (200, "written"));
}

#[test]
fn use_global_entries_are_shared_between_triggers_processes() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let Some(db) = start_with_fixtures(dir.path()) else {
        return;
    };
    for name in ["cases", "other"] {
        create(
            db.addr,
            name,
            "http_cases.py",
            &format!("request:{name}"),
            Value::Null,
        );
    }
    let at = |trigger: &str, case: &str| {
        http_full(
            db.addr,
            "GET",
            &format!("/api/v3/engine/{trigger}?case={case}"),
            &[],
            "",
        )
    };
    let (status, _, body) = wait_until("the plugin answers", Duration::from_secs(60), || {
        let answer = at("cases", "cache_global_put");
        (answer.0 != 502).then_some(answer)
    });
    assert_eq!((status, body.as_str()), (200, "put"));
    // The other trigger's process sees the value (a copy: it was pickled); the
    // generator, which cannot be pickled, stays in the process that put it, said.
    let (status, _, body) = wait_until("the other plugin answers", Duration::from_secs(60), || {
        let answer = at("other", "cache_global_get");
        (answer.0 != 502).then_some(answer)
    });
    assert_eq!(status, 200, "{body}");
    let got = json_of(&body);
    assert_eq!(
        (&got["g"], &got["gen"], &got["trigger_scope"]),
        (&json!({ "n": 1 }), &json!("NoneType"), &Value::Null),
        "{got}"
    );
    let mine = json_of(&at("cases", "cache_global_get").2);
    assert_eq!(mine["gen"], "generator", "{mine}");
    let lines = wait_until("the warning", Duration::from_secs(10), || {
        let lines = logs(db.addr, "cases");
        has(
            &lines,
            "WARN",
            "cache: key 'gen' (use_global=True) holds a generator",
        )
        .then_some(lines)
    });
    assert!(
        has(&lines, "WARN", "not shared with the other triggers"),
        "{lines:?}"
    );
    // A time to live holds across processes.
    wait_until("the shared ttl ends", Duration::from_secs(30), || {
        (json_of(&at("other", "cache_global_get").2)["brief"] == "expired").then_some(())
    });
    // A delete by one is seen by the other.
    let (_, _, body) = at("other", "cache_global_delete");
    assert_eq!(json_of(&body), json!([true, false]));
    assert_eq!(
        json_of(&at("cases", "cache_global_get").2)["g"],
        Value::Null
    );
    // The shared cache is bounded, and says by what.
    let (status, _, body) = at("cases", "cache_global_big");
    assert_eq!(status, 500, "{body}");
    let error = json_of(&body)["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // The pickled size: the 2 MiB string and pickle's few bytes around it.
    assert!(
        error.starts_with("SharedCacheError: cache value of \"big\": 20971")
            && error.ends_with(" bytes, over the shared cache's 1048576"),
        "{body}"
    );
}
