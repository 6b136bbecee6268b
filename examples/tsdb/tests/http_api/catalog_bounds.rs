use crate::common::{alerter_source, find_trigger, http, prepare, start_with_plugin_dir, upload};

/// A trigger named `name` on `spec` with `args`: the status and the body.
fn create(
    addr: std::net::SocketAddr,
    name: &str,
    spec: &str,
    args: &serde_json::Value,
) -> (u16, String) {
    let body = serde_json::json!({
        "db": "metrics",
        "plugin_filename": "alerts.py",
        "trigger_name": name,
        "trigger_specification": spec,
        "trigger_arguments": args,
        "disabled": true,
    });
    http(
        addr,
        "POST",
        "/api/v3/configure/processing_engine_trigger",
        &body.to_string(),
    )
}

#[test]
fn no_request_can_make_the_catalog_too_big_to_start_from() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let Some(prepared) = prepare(dir.path()) else {
        return;
    };
    let db = start_with_plugin_dir(dir.path(), &prepared);
    let (status, body) = upload(db.addr, "alerts.py", &alerter_source());
    assert_eq!(status, 200, "{body}");

    let huge = format!("table:{}", "x".repeat(5 << 20));
    let (status, body) = create(db.addr, "huge", &huge, &serde_json::Value::Null);
    assert_eq!(status, 400, "a 5 MB specification");
    assert!(body.contains("trigger_specification:"), "{body}");

    // Every argument at its longest, of control characters: six bytes each in the
    // catalog's JSON, so one trigger is about 3 MB of the file's 4 MiB.
    let padding = "\u{1}".repeat(4093);
    let args: serde_json::Map<String, serde_json::Value> = (0..64)
        .map(|i| {
            (
                format!("k{i:02}{padding}"),
                serde_json::Value::String("\u{1}".repeat(4096)),
            )
        })
        .collect();
    let args = serde_json::Value::Object(args);
    let (status, body) = create(db.addr, "big1", "table:cpu", &args);
    assert_eq!(status, 200, "{body}");
    let (status, body) = create(db.addr, "big2", "table:cpu", &args);
    assert_eq!(status, 400, "a catalog past 4 MiB");
    assert!(body.contains("trigger_arguments:"), "{body}");
    assert!(
        find_trigger(db.addr, "big2").is_none(),
        "nothing of it stays"
    );
    drop(db);

    let db = start_with_plugin_dir(dir.path(), &prepared);
    assert!(find_trigger(db.addr, "big1").is_some(), "the catalog loads");
    assert!(find_trigger(db.addr, "big2").is_none());
}
