use crate::common::{
    alerter_source, create_alert_trigger, find_trigger, http, prepare, start_with_plugin_dir,
    upload,
};

#[test]
fn bad_trigger_and_upload_requests_are_refused_naming_the_field_and_change_nothing() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let Some(prepared) = prepare(dir.path()) else {
        return;
    };
    let db = start_with_plugin_dir(dir.path(), &prepared);
    let plugins = dir.path().join("plugins");
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).expect("mkdir");
    std::fs::write(outside.join("secret.py"), "print('outside')").expect("write");
    std::os::unix::fs::symlink(outside.join("secret.py"), plugins.join("link.py"))
        .expect("a link out of the plugin dir");
    std::os::unix::fs::symlink(&outside, plugins.join("linkdir")).expect("a dir link");
    let (status, body) = upload(db.addr, "alerts.py", &alerter_source());
    assert_eq!(status, 200, "{body}");

    let trigger = |overrides: serde_json::Value| {
        let mut body = serde_json::json!({
            "db": "metrics",
            "plugin_filename": "alerts.py",
            "trigger_name": "t",
            "trigger_specification": "table:cpu",
            "trigger_arguments": null,
            "trigger_settings": { "run_async": false, "error_behavior": "log" },
            "disabled": false,
        });
        for (k, v) in overrides.as_object().expect("an object") {
            body[k] = v.clone();
        }
        http(
            db.addr,
            "POST",
            "/api/v3/configure/processing_engine_trigger",
            &body.to_string(),
        )
    };
    for (overrides, field) in [
        // Its system tables hold every trigger's log and the tokens' hashes.
        (serde_json::json!({"db": "_internal"}), "db"),
        (
            serde_json::json!({"trigger_specification": "tables"}),
            "trigger_specification",
        ),
        (
            serde_json::json!({"trigger_specification": "every:1ms"}),
            "trigger_specification",
        ),
        (
            serde_json::json!({"trigger_specification": "every:18446744073709551615h"}),
            "trigger_specification",
        ),
        (
            serde_json::json!({"trigger_specification": "every:18446744073709551615s"}),
            "trigger_specification",
        ),
        (
            serde_json::json!({"plugin_filename": "nope.py"}),
            "plugin_filename",
        ),
        (
            serde_json::json!({"plugin_filename": "../tsdb.toml"}),
            "plugin_filename",
        ),
        (
            serde_json::json!({"plugin_filename": "/etc/passwd"}),
            "plugin_filename",
        ),
        (
            serde_json::json!({"plugin_filename": "link.py"}),
            "plugin_filename",
        ),
        (
            serde_json::json!({"plugin_filename": "linkdir/secret.py"}),
            "plugin_filename",
        ),
        (
            serde_json::json!({"trigger_name": "bad name"}),
            "trigger_name",
        ),
        (serde_json::json!({"db": "bad/db"}), "db"),
        (
            serde_json::json!({"trigger_arguments": {"threshold": 90}}),
            "trigger_arguments.threshold",
        ),
        (serde_json::json!({"disabled": "no"}), "disabled"),
        (
            serde_json::json!({"trigger_settings": {"error_behavior": "explode"}}),
            "error_behavior",
        ),
    ] {
        let (status, body) = trigger(overrides.clone());
        assert_eq!(status, 400, "{overrides}: {body}");
        assert!(body.contains(field), "{overrides}: names {field}: {body}");
    }
    assert!(find_trigger(db.addr, "t").is_none(), "nothing was made");
    let (status, body) = http(
        db.addr,
        "POST",
        "/api/v3/configure/processing_engine_trigger/enable?trigger_name=nope",
        "",
    );
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("trigger_name:"), "names the field: {body}");

    // A duplicate name is refused, and the first trigger is untouched.
    let (status, body) = create_alert_trigger(db.addr, "t", "alerts.py");
    assert_eq!(status, 200, "{body}");
    let (status, body) = create_alert_trigger(db.addr, "t", "alerts.py");
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("trigger_name"), "{body}");
    assert!(find_trigger(db.addr, "t").is_some());
    let (status, body) = http(
        db.addr,
        "DELETE",
        "/api/v3/configure/database?db=metrics",
        "",
    );
    assert_eq!(status, 409, "a database with a trigger: {body}");

    // Uploads never leave the plugin dir, and a bad file in a directory upload
    // means no file of it is written.
    for name in [
        "../evil.py",
        "/tmp/evil.py",
        "linkdir/evil.py",
        ".hidden.py",
    ] {
        let (status, body) = upload(db.addr, name, "x = 1");
        assert_eq!(status, 400, "{name}: {body}");
        assert!(body.contains("plugin_name"), "{name}: {body}");
    }
    assert!(!outside.join("evil.py").exists());
    assert!(!dir.path().join("evil.py").exists());
    let body = serde_json::json!({
        "plugin_name": "pkg",
        "files": [
            { "relative_path": "__init__.py", "content": "x = 1" },
            { "relative_path": "../../escape.py", "content": "x = 2" },
        ],
    });
    let (status, answer) = http(
        db.addr,
        "PUT",
        "/api/v3/plugins/directory",
        &body.to_string(),
    );
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("files[1].relative_path"), "{answer}");
    assert!(
        !plugins.join("pkg").exists(),
        "nothing of the upload was written"
    );
    // Each part passes alone, but the joined name has 9 parts; and a file and a folder
    // of one name: refused whole, p/a.py not written first.
    for files in [
        serde_json::json!([
            { "relative_path": "a.py", "content": "x = 1" },
            { "relative_path": "b/c/d/e/f/g/h/i.py", "content": "x = 2" },
        ]),
        serde_json::json!([
            { "relative_path": "a", "content": "x = 1" },
            { "relative_path": "a/b.py", "content": "x = 2" },
        ]),
    ] {
        let body = serde_json::json!({ "plugin_name": "p", "files": files });
        let (status, answer) = http(
            db.addr,
            "PUT",
            "/api/v3/plugins/directory",
            &body.to_string(),
        );
        assert_eq!(status, 400, "{answer}");
        assert!(answer.contains("files[1].relative_path"), "{answer}");
        assert!(!plugins.join("p").exists(), "{answer}: nothing was written");
    }
    let big = "x".repeat((1 << 20) + 1);
    let (status, body) = upload(db.addr, "big.py", &big);
    assert_eq!(status, 400, "{body}");
    assert!(!plugins.join("big.py").exists());
}
