use std::time::Duration;

use crate::common::{
    alerter_source, create_alert_trigger, find_trigger, http, prepare, query,
    start_with_plugin_dir, upload, wait_until,
};

#[test]
fn triggers_and_databases_made_over_http_survive_a_restart() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let Some(prepared) = prepare(dir.path()) else {
        return;
    };
    let db = start_with_plugin_dir(dir.path(), &prepared);
    let (status, body) = http(
        db.addr,
        "POST",
        "/api/v3/configure/database",
        r#"{"db":"fresh"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = http(
        db.addr,
        "POST",
        "/api/v3/configure/database",
        r#"{"db":"fresh"}"#,
    );
    assert_eq!(status, 409, "a second create: {body}");
    let (status, body) = upload(db.addr, "alerts.py", &alerter_source());
    assert_eq!(status, 200, "{body}");
    let (status, body) = create_alert_trigger(db.addr, "hot_cpu", "alerts.py");
    assert_eq!(status, 200, "{body}");
    let (status, body) = http(
        db.addr,
        "POST",
        "/api/v3/configure/database",
        r#"{"db":"doomed"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = http(
        db.addr,
        "DELETE",
        "/api/v3/configure/database?db=doomed",
        "",
    );
    assert_eq!(status, 200, "{body}");
    let switch = "processing_engine_trigger/disable?db=metrics&trigger_name=hot_cpu";
    let (status, body) = http(db.addr, "POST", &format!("/api/v3/configure/{switch}"), "");
    assert_eq!(status, 200, "{body}");
    drop(db);

    let db = start_with_plugin_dir(dir.path(), &prepared);
    let (status, body) = http(db.addr, "GET", "/api/v3/configure/database?format=json", "");
    assert_eq!(status, 200, "{body}");
    let listed: Vec<serde_json::Value> = serde_json::from_str(&body).expect("JSON");
    let names: Vec<&str> = listed
        .iter()
        .filter_map(|row| row["iox::database"].as_str())
        .collect();
    assert_eq!(names, ["fresh", "metrics"], "{body}");
    let trigger = find_trigger(db.addr, "hot_cpu").expect("the trigger is back");
    assert_eq!(trigger["enabled"], false, "still disabled: {trigger}");
    let switch = "processing_engine_trigger/enable?db=metrics&trigger_name=hot_cpu";
    let (status, body) = http(db.addr, "POST", &format!("/api/v3/configure/{switch}"), "");
    assert_eq!(status, 200, "{body}");

    // It fires after the restart, its plugin started from the catalog.
    let (status, body) = http(
        db.addr,
        "POST",
        "/api/v3/write_lp?db=metrics",
        "cpu,host=a value=97",
    );
    assert_eq!(status, 204, "{body}");
    wait_until(
        "the restored trigger writes an alert",
        Duration::from_secs(60),
        || {
            query(db.addr, "SELECT * FROM alerts")
                .filter(|rows| rows.as_array().is_some_and(|r| r.len() == 1))
        },
    );
}
