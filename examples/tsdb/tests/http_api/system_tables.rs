//! `system.processing_engine_triggers` and `system.processing_engine_logs`: from a
//! database its own triggers, from `_internal` all; the logs hold the plugin's own lines,
//! baton's lifecycle events for it (a crash, a rolled-back reload) and tsdb's.

use std::time::Duration;

use serde_json::json;

use crate::common::{
    alerter_source, create_alert_trigger, find_trigger, http, prepare, rows, start_with_plugin_dir,
    upload, wait_until,
};

const TRIGGERS: &str = "SELECT trigger_name, plugin_filename, trigger_specification, disabled \
                        FROM system.processing_engine_triggers ORDER BY trigger_name";

fn logs(addr: std::net::SocketAddr, db: &str) -> Vec<(String, String)> {
    rows(
        addr,
        db,
        "SELECT log_level, log_text FROM system.processing_engine_logs \
         WHERE trigger_name = 'hot_cpu' ORDER BY event_time",
    )
    .iter()
    .map(|r| {
        (
            r["log_level"].as_str().unwrap_or_default().to_owned(),
            r["log_text"].as_str().unwrap_or_default().to_owned(),
        )
    })
    .collect()
}

fn has(lines: &[(String, String)], level: &str, text: &str) -> bool {
    lines.iter().any(|(l, t)| l == level && t.contains(text))
}

#[test]
fn system_tables_show_each_databases_triggers_and_their_logs() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let Some(prepared) = prepare(dir.path()) else {
        return;
    };
    let db = start_with_plugin_dir(dir.path(), &prepared);
    let (status, body) = upload(db.addr, "alerts.py", &alerter_source());
    assert_eq!(status, 200, "{body}");
    let (status, body) = create_alert_trigger(db.addr, "hot_cpu", "alerts.py");
    assert_eq!(status, 200, "{body}");
    let (status, body) = http(db.addr, "POST", "/api/v3/write_lp?db=other", "t v=1");
    assert_eq!(status, 204, "{body}");

    let expected = vec![json!({
        "trigger_name": "hot_cpu",
        "plugin_filename": "alerts.py",
        "trigger_specification": "table:cpu",
        "disabled": false,
    })];
    assert_eq!(rows(db.addr, "_internal", TRIGGERS), expected);
    assert_eq!(rows(db.addr, "metrics", TRIGGERS), expected);
    assert_eq!(
        rows(db.addr, "other", TRIGGERS),
        Vec::<serde_json::Value>::new()
    );

    // The plugin's own line (sent to baton's Log service) and baton's start.
    let (status, body) = http(
        db.addr,
        "POST",
        "/api/v3/write_lp?db=metrics",
        "cpu,host=a value=95",
    );
    assert_eq!(status, 204, "{body}");
    let lines = wait_until("the plugin's log line", Duration::from_secs(60), || {
        let lines = logs(db.addr, "_internal");
        has(&lines, "WARN", "1 alert(s) raised").then_some(lines)
    });
    assert!(has(&lines, "INFO", "baton: started"), "{lines:?}");
    assert_eq!(logs(db.addr, "metrics"), logs(db.addr, "_internal"));
    assert!(logs(db.addr, "other").is_empty());

    // A crash: baton's event is there, as an error, and the trigger goes on.
    let pid = wait_until("the plugin runs", Duration::from_secs(30), || {
        find_trigger(db.addr, "hot_cpu")?["plugin_pid"].as_u64()
    });
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    wait_until("the crash in the logs", Duration::from_secs(60), || {
        has(&logs(db.addr, "metrics"), "ERROR", "baton: crashed").then_some(())
    });

    // A broken edit: rolled back, its SyntaxError in the logs.
    wait_until("the plugin runs again", Duration::from_secs(60), || {
        let s = find_trigger(db.addr, "hot_cpu")?;
        (s["plugin_state"] == "serving" && s["plugin_pid"].as_u64() != Some(pid)).then_some(())
    });
    let broken = format!("{}\ndef broken(:\n", alerter_source());
    let (status, body) = upload(db.addr, "alerts.py", &broken);
    assert_eq!(status, 200, "{body}");
    // The plugin's own SyntaxError (its output) and baton's event for the failed
    // start arrive apart: wait for both.
    wait_until("the rollback in the logs", Duration::from_secs(60), || {
        let lines = logs(db.addr, "metrics");
        let error = lines
            .iter()
            .any(|(l, t)| l == "ERROR" && t.contains("SyntaxError"));
        let event = lines
            .iter()
            .any(|(_, t)| t.contains("baton: rollback") || t.contains("baton: start_failed"));
        (error && event).then_some(())
    });
}
