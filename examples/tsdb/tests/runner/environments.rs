//! The plugins' environments, with real pip from the machine's package index: a plugin
//! that lacks a module says which and how to install it; `install_packages` installs it
//! into the shared environment, where a trigger made again finds it; two plugin
//! packages pinning two versions of one library in their own `requirements.txt` each
//! run on their own; and every request that would pass pip an option, a path or a URL
//! is refused naming its field.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{find_trigger, http, replace, root, wait_until};
use crate::{ask, create, has, logs, start_with_fixtures};

/// Why pip cannot fetch from the package index here, if it cannot: one small download.
fn index_unreachable(scratch: &std::path::Path) -> Option<String> {
    let python = root().join(".venv/bin/python");
    let out = Command::new(python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-input",
            "-q",
            "-d",
        ])
        .arg(scratch)
        .arg("six==1.16.0")
        .output()
        .ok()?;
    (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).trim().to_owned())
}

/// tsdb with the fixtures, where pip can fetch from a package index (`None`, saying
/// why, where it cannot).
fn start_where_pip_reaches_an_index(dir: &std::path::Path) -> Option<crate::common::Tsdb> {
    if let Some(why) = index_unreachable(&dir.join("probe")) {
        eprintln!("skipped: pip cannot reach a package index: {why}");
        return None;
    }
    start_with_fixtures(dir)
}

fn post(addr: std::net::SocketAddr, path: &str, body: Value) -> (u16, String) {
    http(addr, "POST", path, &body.to_string())
}

const PACKAGES: &str = "/api/v3/configure/plugin_environment/install_packages";
const REQUIREMENTS: &str = "/api/v3/configure/plugin_environment/install_requirements";

#[test]
fn a_missing_module_is_named_with_its_install_and_installed_with_pip() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let Some(db) = start_where_pip_reaches_an_index(dir.path()) else {
        return;
    };
    create(db.addr, "needs", "needs_six.py", "request:six", Value::Null);
    let status = wait_until("the missing module shows", Duration::from_secs(60), || {
        find_trigger(db.addr, "needs").filter(|s| !s["plugin_last_error"].is_null())
    });
    let error = status["plugin_last_error"].as_str().unwrap_or_default();
    eprintln!("the trigger's error: {error}");
    assert!(
        error.contains("ModuleNotFoundError: No module named 'six'")
            && error.contains(
                r#"install it with POST /api/v3/configure/plugin_environment/install_packages {"packages": ["six"]}"#
            ),
        "{status}"
    );

    let started = Instant::now();
    let (code, answer) = post(db.addr, PACKAGES, json!({ "packages": ["six==1.16.0"] }));
    assert_eq!(code, 200, "{answer}");
    eprintln!(
        "install_packages six==1.16.0: {answer} in {:?}",
        started.elapsed()
    );
    let env = dir.path().join("data/plugin_envs/shared");
    assert!(env.join("bin/python").exists(), "{answer}");

    let (code, answer) = http(
        db.addr,
        "DELETE",
        "/api/v3/configure/processing_engine_trigger?db=metrics&trigger_name=needs&force=true",
        "",
    );
    assert_eq!(code, 200, "{answer}");
    create(db.addr, "needs", "needs_six.py", "request:six", Value::Null);
    let answer = wait_until("the trigger runs with six", Duration::from_secs(60), || {
        let (code, body) = http(db.addr, "GET", "/api/v3/engine/six", "");
        (code == 200).then_some(body)
    });
    assert_eq!(
        serde_json::from_str::<Value>(&answer).ok(),
        Some(json!({ "six": "1.16.0" }))
    );

    // install_requirements, from a file of the plugin directory: six moves to 1.17.0.
    std::fs::write(
        dir.path().join("plugins/reqs.txt"),
        "# the newer one\nsix==1.17.0\n",
    )
    .expect("write reqs.txt");
    let (code, answer) = post(
        db.addr,
        REQUIREMENTS,
        json!({ "requirements_location": "reqs.txt" }),
    );
    assert_eq!(code, 200, "{answer}");
}

#[test]
fn two_plugin_packages_pin_two_versions_of_one_library_each_in_its_own_environment() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let Some(db) = start_where_pip_reaches_an_index(dir.path()) else {
        return;
    };
    let started = Instant::now();
    create(db.addr, "old", "six_old", "request:old", Value::Null);
    create(db.addr, "new", "six_new", "request:new", Value::Null);
    eprintln!(
        "two triggers made, each with its environment installed, in {:?}",
        started.elapsed()
    );
    for (path, version) in [("old", "1.16.0"), ("new", "1.17.0")] {
        wait_until(&format!("{path} serves"), Duration::from_secs(60), || {
            find_trigger(db.addr, path).filter(|s| s["plugin_state"] == "serving")
        });
        assert_eq!(ask(db.addr, path), json!({ "six": version }), "{path}");
    }
    let envs: Vec<String> = std::fs::read_dir(dir.path().join("data/plugin_envs"))
        .expect("the environments' directory")
        .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
        .collect();
    assert_eq!(
        envs.iter().filter(|n| n.starts_with("req-")).count(),
        2,
        "{envs:?}"
    );

    // A package whose requirements.txt passes pip an option is refused, naming the line.
    std::fs::write(
        dir.path().join("plugins/six_old/requirements.txt"),
        "six==1.16.0\n--index-url http://127.0.0.1:1/simple\n",
    )
    .expect("edit requirements.txt");
    let (code, answer) = post(
        db.addr,
        "/api/v3/configure/processing_engine_trigger",
        json!({
            "db": "metrics", "plugin_filename": "six_old", "trigger_name": "old2",
            "trigger_specification": "request:old2", "trigger_arguments": null,
        }),
    );
    eprintln!("{answer}");
    assert_eq!(code, 400, "{answer}");
    assert!(
        answer.contains("plugin_filename")
            && answer.contains("line 2")
            && answer.contains("pip option"),
        "{answer}"
    );
}

#[test]
fn requests_that_would_pass_pip_an_option_a_path_or_a_url_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let Some(db) = start_with_fixtures(dir.path()) else {
        return;
    };
    std::fs::write(dir.path().join("plugins/editable.txt"), "six\n-e .\n").expect("write");
    for (path, body, says) in [
        (
            PACKAGES,
            json!({ "packages": ["--index-url=http://127.0.0.1:1/"] }),
            "packages[0]: \"--index-url=http://127.0.0.1:1/\" is a pip option",
        ),
        (
            PACKAGES,
            json!({ "packages": ["six", "../evil"] }),
            "packages[1]: \"../evil\" does not start with a package name",
        ),
        (
            PACKAGES,
            json!({ "packages": ["pkg/evil.whl"] }),
            "packages[0]: \"pkg/evil.whl\" is a path",
        ),
        (
            PACKAGES,
            json!({ "packages": ["six @ https://127.0.0.1/six.whl"] }),
            "packages[0]: \"six @ https://127.0.0.1/six.whl\" is a URL",
        ),
        (
            PACKAGES,
            json!({ "packages": [] }),
            "packages: the list is empty",
        ),
        (
            PACKAGES,
            json!({ "packages": "six" }),
            "packages: invalid type",
        ),
        (PACKAGES, json!({ "pkgs": ["six"] }), "unknown field `pkgs`"),
        (
            REQUIREMENTS,
            json!({ "requirements_location": "../../etc/passwd" }),
            "requirements_location",
        ),
        (
            REQUIREMENTS,
            json!({ "requirements_location": "/etc/passwd" }),
            "requirements_location",
        ),
        (
            REQUIREMENTS,
            json!({ "requirements_location": "nothing.txt" }),
            "requirements_location: no plugin file \"nothing.txt\"",
        ),
        (
            REQUIREMENTS,
            json!({ "requirements_location": "editable.txt" }),
            "requirements_location, line 2: \"-e .\" is a pip option",
        ),
        (
            REQUIREMENTS,
            json!({}),
            "missing field `requirements_location`",
        ),
    ] {
        let (code, answer) = post(db.addr, path, body.clone());
        eprintln!("{body} -> {code} {answer}");
        assert_eq!(code, 400, "{body}: {answer}");
        let error = serde_json::from_str::<Value>(&answer).unwrap_or_default()["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(error.contains(says), "{body}: {says}: {answer}");
    }
    assert!(
        !dir.path().join("data/plugin_envs/shared").exists(),
        "a refused request made no environment"
    );
}

#[test]
fn a_changed_requirements_txt_is_installed_and_the_plugin_moved_onto_it_with_its_cache() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let Some(db) = start_where_pip_reaches_an_index(dir.path()) else {
        return;
    };
    create(
        db.addr,
        "pinned",
        "six_pinned",
        "request:pinned",
        Value::Null,
    );
    wait_until("pinned serves", Duration::from_secs(60), || {
        find_trigger(db.addr, "pinned").filter(|s| s["plugin_state"] == "serving")
    });
    assert_eq!(
        ask(db.addr, "pinned"),
        json!({ "six": "1.16.0", "calls": 1 })
    );
    assert_eq!(
        ask(db.addr, "pinned"),
        json!({ "six": "1.16.0", "calls": 2 })
    );

    // The pin moves: installed beside the old environment, the plugin handed over to
    // it with its cache. Until then it answers from the old one (pip takes seconds).
    let requirements = dir.path().join("plugins/six_pinned/requirements.txt");
    replace(&requirements, b"six==1.17.0\n");
    let started = Instant::now();
    let moved = wait_until(
        "the plugin runs on six 1.17.0",
        Duration::from_secs(300),
        || {
            let answer = ask(db.addr, "pinned");
            (answer["six"] == "1.17.0").then_some(answer)
        },
    );
    eprintln!(
        "moved onto the new requirements in {:?}: {moved}",
        started.elapsed()
    );
    let calls = moved["calls"].as_u64().expect("a count");
    assert!(calls >= 3, "the cache was lost: {moved}");
    let lines = logs(db.addr, "pinned");
    assert!(
        has(
            &lines,
            "INFO",
            "requirements.txt changed: installing it with pip"
        ) && has(&lines, "INFO", "the plugin now runs on its new environment"),
        "{lines:?}"
    );

    // A file pip must not be given: the plugin stays where it is, the log says why.
    replace(&requirements, b"six==1.16.0\n-e .\n");
    let refused = wait_until("the refusal is logged", Duration::from_secs(60), || {
        logs(db.addr, "pinned")
            .into_iter()
            .find(|(level, text)| level == "ERROR" && text.contains("was not installed"))
    });
    assert!(refused.1.contains("pip option"), "{refused:?}");
    let after = ask(db.addr, "pinned");
    assert_eq!(after["six"], "1.17.0", "{after}");
    assert_eq!(after["calls"].as_u64(), Some(calls + 1), "{after}");
}
