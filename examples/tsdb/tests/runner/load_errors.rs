//! A plugin that does not load: its trigger's status and log say why, naming the file
//! and line, and the database serves on.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{find_trigger, http, wait_until};
use crate::{logs, start_with_fixtures};

#[test]
fn a_plugin_that_does_not_load_is_named_with_its_file_and_line() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let Some(db) = start_with_fixtures(dir.path()) else {
        return;
    };
    for (name, file, says) in [
        (
            "broken",
            "broken.py",
            "SyntaxError: '(' was never closed (broken.py:5)",
        ),
        (
            "missing",
            "missing_import.py",
            "ModuleNotFoundError: No module named 'not_a_module_anywhere' (missing_import.py:1)",
        ),
    ] {
        let body = json!({
            "db": "metrics",
            "plugin_filename": file,
            "trigger_name": name,
            "trigger_specification": "request:x",
            "trigger_arguments": Value::Null,
        });
        let (status, answer) = http(
            db.addr,
            "POST",
            "/api/v3/configure/processing_engine_trigger",
            &body.to_string(),
        );
        // Made: baton keeps trying to start it, as for any plugin.
        assert_eq!(status, 200, "{answer}");
        let status = wait_until("the start failure shows", Duration::from_secs(60), || {
            find_trigger(db.addr, name).filter(|s| !s["plugin_last_error"].is_null())
        });
        let error = status["plugin_last_error"].as_str().unwrap_or_default();
        assert!(error.contains(says), "{says}: {status}");
        let lines = logs(db.addr, name);
        assert!(
            lines.iter().any(|(_, t)| t.contains(says)),
            "{says}: {lines:?}"
        );
    }
    let (status, _) = http(db.addr, "GET", "/health", "");
    assert_eq!(status, 200);
}
