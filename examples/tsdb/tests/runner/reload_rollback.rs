//! A broken edit of an InfluxDB 3 plugin is rolled back: the new process never goes
//! live, the old one serves on with its cache, and the trigger's status and log name
//! the error with its file and line. Fixed, the plugin reloads again.

use std::time::Duration;

use serde_json::Value;

use crate::common::{find_trigger, wait_until};
use crate::{ask, create, logs, serving_generation, start_with_fixtures, wait_reloaded};

#[test]
fn a_broken_edit_is_rolled_back_and_named_with_its_file_and_line() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let Some(db) = start_with_fixtures(dir.path()) else {
        return;
    };
    let addr = db.addr;
    create(addr, "pkg", "pkg_reload", "request:pkg", Value::Null);
    let package = dir.path().join("plugins/pkg_reload");
    serving_generation(addr, "pkg");
    assert_eq!(ask(addr, "pkg")["calls"], 1);
    let helper = package.join("helper.py");
    let init = package.join("__init__.py");
    let good_helper = std::fs::read_to_string(&helper).expect("read helper.py");
    let good_init = std::fs::read_to_string(&init).expect("read __init__.py");

    let mut calls = 1;
    for (file, broken, says) in [
        (
            &helper,
            format!("{good_helper}def oops(:\n"),
            "SyntaxError: invalid syntax (helper.py:2)",
        ),
        (
            &helper,
            format!("import not_a_module_anywhere\n{good_helper}"),
            "ModuleNotFoundError: No module named 'not_a_module_anywhere' (helper.py:1)",
        ),
        (
            &init,
            good_init.replace(
                "SETTINGS =",
                "raise RuntimeError('no settings today')\nSETTINGS =",
            ),
            "RuntimeError: no settings today (__init__.py:9)",
        ),
    ] {
        crate::common::replace(file, broken.as_bytes());
        let status = wait_until(
            &format!("the rollback names {says:?}"),
            Duration::from_secs(60),
            || {
                find_trigger(addr, "pkg").filter(|s| {
                    s["plugin_last_error"]
                        .as_str()
                        .is_some_and(|e| e.contains(says))
                })
            },
        );
        assert_eq!(status["plugin_state"], "serving", "{status}");
        eprintln!("rolled back: {}", status["plugin_last_error"]);
        // The old version serves on, its cache with it.
        calls += 1;
        let answer = ask(addr, "pkg");
        assert_eq!(
            (&answer["helper"], &answer["calls"]),
            (&Value::from("helper 1"), &Value::from(calls)),
            "{answer}"
        );
        let lines = logs(addr, "pkg");
        assert!(
            lines.iter().any(|(l, t)| l == "ERROR" && t.contains(says)),
            "{says}: {lines:?}"
        );
        // Put right, before the next break.
        let before = serving_generation(addr, "pkg");
        crate::common::replace(&helper, good_helper.as_bytes());
        crate::common::replace(&init, good_init.as_bytes());
        wait_reloaded(addr, "pkg", before);
        calls += 1;
        assert_eq!(ask(addr, "pkg")["calls"], calls);
    }
}
