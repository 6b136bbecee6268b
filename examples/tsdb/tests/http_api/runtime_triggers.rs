use std::time::Duration;

use crate::common::{
    alerter_source, create_alert_trigger, find_trigger, http, prepare, query,
    start_with_plugin_dir, upload, wait_until,
};

#[test]
fn a_trigger_made_over_http_runs_its_python_file_and_stops_when_deleted() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let Some(prepared) = prepare(dir.path()) else {
        return;
    };
    let db = start_with_plugin_dir(dir.path(), &prepared);

    let (status, body) = upload(db.addr, "alerts.py", &alerter_source());
    assert_eq!(status, 200, "{body}");
    let (status, body) = create_alert_trigger(db.addr, "hot_cpu", "alerts.py");
    assert_eq!(status, 200, "{body}");

    // The trigger fires: its plugin, started at run time, writes an alert row.
    let (status, body) = http(
        db.addr,
        "POST",
        "/api/v3/write_lp?db=metrics",
        "cpu,host=a value=95",
    );
    assert_eq!(status, 204, "{body}");
    wait_until(
        "the new trigger's plugin writes an alert",
        Duration::from_secs(60),
        || {
            query(db.addr, "SELECT * FROM alerts")
                .filter(|rows| rows.as_array().is_some_and(|r| r.len() == 1))
        },
    );
    // The plugin writes its alert during the call, so the call is counted a moment after.
    let status = wait_until(
        "the trigger counts its call",
        Duration::from_secs(10),
        || find_trigger(db.addr, "hot_cpu").filter(|s| s["calls"] == 1),
    );
    let pid = status["plugin_pid"].as_u64().expect("its plugin runs");

    // Its file removed by hand, a trigger made later leaves it running as it was.
    std::fs::remove_file(dir.path().join("plugins/alerts.py")).expect("rm alerts.py");
    let (status, body) = upload(db.addr, "other.py", &alerter_source());
    assert_eq!(status, 200, "{body}");
    let (status, body) = create_alert_trigger(db.addr, "other", "other.py");
    assert_eq!(status, 200, "{body}");
    let status = find_trigger(db.addr, "hot_cpu").expect("the trigger is listed");
    assert_eq!(status["plugin_pid"].as_u64(), Some(pid), "{status}");
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());

    // An enabled trigger is deleted only with force, as InfluxDB does.
    let path = "/api/v3/configure/processing_engine_trigger?db=metrics&trigger_name=hot_cpu";
    let (status, body) = http(db.addr, "DELETE", path, "");
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("force"), "{body}");
    let (status, body) = http(db.addr, "DELETE", &format!("{path}&force=true"), "");
    assert_eq!(status, 200, "{body}");

    // Gone from the list, and its plugin process stopped, with tsdb still serving.
    assert!(find_trigger(db.addr, "hot_cpu").is_none());
    wait_until(
        "the deleted trigger's plugin exits",
        Duration::from_secs(30),
        || (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(()),
    );
    let (status, body) = http(
        db.addr,
        "POST",
        "/api/v3/write_lp?db=metrics",
        "cpu,host=a value=50\ncpu,host=b value=99",
    );
    assert_eq!(status, 204, "{body}");
    let (status, body) = http(db.addr, "DELETE", path, "");
    assert_eq!(status, 404, "{body}");
}
