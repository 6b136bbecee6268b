//! Every file of an InfluxDB 3 plugin package is its code: a change to its helper
//! module, to a config file it reads, or an upload over it reloads it live, with its
//! cache (InfluxDB reloads only on the entry file's mtime and keeps stale helpers).

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{http, wait_until};
use crate::{ask, create, edit, serving_generation, start_with_fixtures, wait_reloaded};

#[test]
fn a_change_to_any_file_of_a_package_reloads_it_with_its_cache() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let Some(db) = start_with_fixtures(dir.path()) else {
        return;
    };
    let addr = db.addr;
    create(addr, "pkg", "pkg_reload", "request:pkg", Value::Null);
    let package = dir.path().join("plugins/pkg_reload");
    serving_generation(addr, "pkg");
    let first = ask(addr, "pkg");
    assert_eq!(
        (&first["helper"], &first["settings"], &first["calls"]),
        (&json!("helper 1"), &json!({ "threshold": 90 }), &json!(1)),
        "{first}"
    );

    // Each change: the new code answers, and the count kept in the cache goes on.
    let mut calls = 1;
    let mut changed = |what: &str, change: &dyn Fn(), seen: &dyn Fn(&Value) -> bool| {
        let before = serving_generation(addr, "pkg");
        change();
        wait_reloaded(addr, "pkg", before);
        let answer = wait_until(what, Duration::from_secs(30), || {
            let answer = ask(addr, "pkg");
            calls += 1;
            seen(&answer).then_some(answer)
        });
        assert_eq!(
            answer["calls"], calls,
            "the cache moved with {what}: {answer}"
        );
    };
    changed(
        "the helper module's change is live",
        &|| edit(&package.join("helper.py"), "helper 1", "helper 2"),
        &|a| a["helper"] == "helper 2",
    );
    changed(
        "the config file's change is live",
        &|| edit(&package.join("settings.json"), "90", "95"),
        &|a| a["settings"]["threshold"] == 95,
    );
    changed(
        "the uploaded helper is live",
        &|| {
            let body = json!({
                "plugin_name": "pkg_reload",
                "files": [{ "relative_path": "helper.py", "content": "VERSION = \"uploaded\"\n" }],
            });
            let (status, answer) =
                http(addr, "PUT", "/api/v3/plugins/directory", &body.to_string());
            assert_eq!(status, 200, "{answer}");
        },
        &|a| a["helper"] == "uploaded",
    );
}

#[test]
fn a_single_files_helper_modules_beside_it_reload_it_with_its_cache() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let Some(db) = start_with_fixtures(dir.path()) else {
        return;
    };
    let addr = db.addr;
    create(
        addr,
        "single",
        "single_helped.py",
        "request:single",
        Value::Null,
    );
    let plugins = dir.path().join("plugins");
    let before = serving_generation(addr, "single");
    let first = ask(addr, "single");
    assert_eq!(
        (&first["rule"], &first["calls"]),
        (&json!("limit 1"), &json!(1))
    );

    // A file it does not import changes nothing; the module its helper imports does.
    edit(&plugins.join("scheduled.py"), "\n", "\n\n");
    edit(&plugins.join("single_limits.py"), "LIMIT = 1", "LIMIT = 2");
    let after = wait_reloaded(addr, "single", before);
    let answer = wait_until(
        "the helper's change is live",
        Duration::from_secs(30),
        || {
            let answer = ask(addr, "single");
            (answer["rule"] == "limit 2").then_some(answer)
        },
    );
    assert!(
        answer["calls"].as_u64() >= Some(2),
        "the cache moved: {answer}"
    );
    assert_eq!(after, before + 1, "one reload, for the helper alone");
}
