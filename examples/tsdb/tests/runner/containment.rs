//! Each trigger is its own process: a crash, a segfault, a `sys.exit()`, a hang and a
//! leak of one plugin are contained and restarted, named in its status and log, while
//! tsdb and the other triggers answer on; a plugin that calls tsdb's own HTTP API during
//! its call is answered; and `run_async` decides whether a write waits for its trigger.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{find_trigger, http, query, rows, wait_until};
use crate::{has, logs, start_with_fixtures_and};

/// Makes trigger `name` on `table` running `file`, with `run_async` as given.
fn create(addr: SocketAddr, name: &str, file: &str, spec: &str, args: Value, run_async: bool) {
    let body = json!({
        "db": "metrics",
        "plugin_filename": file,
        "trigger_name": name,
        "trigger_specification": spec,
        "trigger_arguments": args,
        "trigger_settings": { "run_async": run_async, "error_behavior": "Log" },
    });
    let (status, answer) = http(
        addr,
        "POST",
        "/api/v3/configure/processing_engine_trigger",
        &body.to_string(),
    );
    assert_eq!(status, 200, "{answer}");
}

fn write(addr: SocketAddr, lines: &str) {
    let (status, body) = http(addr, "POST", "/api/v3/write_lp?db=metrics", lines);
    assert_eq!(status, 204, "{body}");
}

/// The rows trigger `name` recorded in `handled`.
fn handled(addr: SocketAddr, name: &str) -> Vec<Value> {
    rows(
        addr,
        "metrics",
        &format!("SELECT how, pid FROM handled WHERE trigger = '{name}' ORDER BY time"),
    )
}

fn serving_pid(addr: SocketAddr, name: &str) -> Option<u64> {
    find_trigger(addr, name)
        .filter(|s| s["plugin_state"] == "serving")
        .and_then(|s| s["plugin_pid"].as_u64())
}

#[test]
fn a_crash_a_segfault_a_sys_exit_a_hang_and_a_leak_are_each_contained() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let Some(db) = start_with_fixtures_and(
        dir.path(),
        "trigger_call_timeout_ms = 3000\ntrigger_max_memory_mb = 200\n",
    ) else {
        return;
    };
    create(
        db.addr,
        "bystander",
        "misbehave.py",
        "table:calm",
        json!({"name": "bystander"}),
        false,
    );
    for (name, how, says) in [
        ("exits", "exit", "exit code 3"),
        ("segfaults", "segfault", "SIGSEGV"),
        ("sys_exits", "sys_exit", "exit code 4"),
        (
            "hangs",
            "hang",
            "process_writes timed out: no answer within 3s",
        ),
    ] {
        create(
            db.addr,
            name,
            "misbehave.py",
            &format!("table:{name}"),
            json!({"name": name}),
            false,
        );
        let first = wait_until("the plugin serves", Duration::from_secs(60), || {
            serving_pid(db.addr, name)
        });
        // Synchronous: the write is answered once the call has failed.
        write(db.addr, &format!("{name},k=1 how=\"{how}\""));
        let status = find_trigger(db.addr, name).expect("the trigger");
        let error = status["last_error"].as_str().unwrap_or_default();
        assert!(
            error.contains(&format!("trigger {name}: process_writes")) && error.contains(says),
            "{how}: {status}"
        );
        // baton starts it again, and it handles the next row.
        let again = wait_until("a fresh process serves", Duration::from_secs(60), || {
            serving_pid(db.addr, name).filter(|pid| *pid != first)
        });
        write(db.addr, &format!("{name},k=1 how=\"fine\""));
        let seen = handled(db.addr, name);
        assert_eq!(seen.len(), 1, "{how}: {seen:?}");
        assert_eq!(seen[0]["pid"], again, "{how}");
        let lines = logs(db.addr, name);
        assert!(
            has(&lines, "ERROR", &format!("trigger {name}: process_writes")),
            "{how}: {lines:?}"
        );
        assert!(has(&lines, "ERROR", says), "{how}: {lines:?}");
        // tsdb and the other trigger never stopped answering.
        write(db.addr, &format!("calm,k=1 how=\"after_{how}\""));
        assert!(
            handled(db.addr, "bystander")
                .iter()
                .any(|r| r["how"] == format!("after_{how}")),
            "{how}"
        );
    }
    let lines = logs(db.addr, "sys_exits");
    assert!(
        has(
            &lines,
            "ERROR",
            "process_writes called sys.exit(4) (misbehave.py:"
        ),
        "{lines:?}"
    );

    // A leak: 64 MiB more at each call, until baton finds it over 200 MiB and moves it.
    create(
        db.addr,
        "leaks",
        "misbehave.py",
        "table:leaks",
        json!({"name": "leaks"}),
        false,
    );
    let first = wait_until("the leaking plugin serves", Duration::from_secs(60), || {
        serving_pid(db.addr, "leaks")
    });
    let mut moved = None;
    for call in 0..12 {
        write(db.addr, &format!("leaks,k={call} how=\"leak\""));
        moved = (0..50).find_map(|_| {
            let pid = serving_pid(db.addr, "leaks").filter(|pid| *pid != first);
            if pid.is_none() {
                std::thread::sleep(Duration::from_millis(100));
            }
            pid
        });
        if moved.is_some() {
            break;
        }
    }
    assert!(moved.is_some(), "the leaking plugin was never replaced");
    let status = find_trigger(db.addr, "leaks").expect("the trigger");
    let error = status["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("trigger leaks: its process") && error.contains("over its memory limit"),
        "{status}"
    );
    let lines = logs(db.addr, "leaks");
    assert!(has(&lines, "ERROR", "over its memory limit"), "{lines:?}");
    write(db.addr, "calm,k=1 how=\"after_leak\"");
    assert!(
        handled(db.addr, "bystander")
            .iter()
            .any(|r| r["how"] == "after_leak")
    );
    let (status, _) = http(db.addr, "GET", "/health", "");
    assert_eq!(status, 200);
}

#[test]
fn a_plugin_that_calls_tsdbs_own_http_api_during_its_call_is_answered() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let Some(db) = start_with_fixtures_and(dir.path(), "trigger_call_timeout_ms = 20000\n") else {
        return;
    };
    create(
        db.addr,
        "sink",
        "alert_sink.py",
        "request:alert",
        Value::Null,
        false,
    );
    // Synchronous, and writing over HTTP into the very table it watches: waiting for
    // itself would never end.
    create(
        db.addr,
        "caller",
        "calls_back.py",
        "table:cpu",
        json!({"url": format!("http://{}", db.addr)}),
        false,
    );
    write(db.addr, "cpu,host=a usage=1");
    let answered = wait_until(
        "the plugin's calls were answered",
        Duration::from_secs(60),
        || {
            query(db.addr, "SELECT * FROM answered")
                .filter(|r| r.as_array().is_some_and(|r| !r.is_empty()))
        },
    );
    assert_eq!(answered[0]["alert_status"], 200, "{answered:?}");
    assert_eq!(answered[0]["alert"], r#"{"received": "a"}"#, "{answered:?}");
    assert_eq!(answered[0]["write_status"], 204, "{answered:?}");
    let alerts = rows(db.addr, "metrics", "SELECT host FROM alerts");
    assert_eq!(alerts, vec![json!({"host": "a"})]);
    let from_plugin = rows(
        db.addr,
        "metrics",
        "SELECT host FROM cpu WHERE host = 'from_plugin'",
    );
    assert_eq!(from_plugin.len(), 1);
    let status = find_trigger(db.addr, "caller").expect("the trigger");
    assert!(status["last_error"].is_null(), "{status}");
}

#[test]
fn run_async_false_answers_a_write_after_its_trigger_and_true_before() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let Some(db) = start_with_fixtures_and(dir.path(), "") else {
        return;
    };
    for (name, run_async) in [("waited", false), ("not_waited", true)] {
        create(
            db.addr,
            name,
            "slow.py",
            &format!("table:{name}"),
            json!({"name": name, "sleep": "4"}),
            run_async,
        );
        wait_until("the plugin serves", Duration::from_secs(60), || {
            serving_pid(db.addr, name)
        });
    }
    let done = |name: &str| {
        query(
            db.addr,
            &format!("SELECT n FROM slow_done WHERE trigger = '{name}'"),
        )
        .and_then(|r| r.as_array().map(Vec::len))
        .unwrap_or(0)
    };
    // The write waits for the plugin's call: its row is there when the write answers.
    write(db.addr, "waited,k=1 v=1");
    assert_eq!(
        done("waited"),
        1,
        "{:?} {:?}",
        logs(db.addr, "waited"),
        find_trigger(db.addr, "waited")
    );
    // The write is answered while the plugin still sleeps: no row yet.
    write(db.addr, "not_waited,k=1 v=1");
    assert_eq!(done("not_waited"), 0);
    wait_until(
        "the asynchronous call ends",
        Duration::from_secs(60),
        || (done("not_waited") == 1).then_some(()),
    );
}
