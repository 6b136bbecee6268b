//! InfluxDB 3 plugins, unchanged, on tsdb: the real binary runs each trigger's file on
//! `python -m influxdb3_runner`, and these tests drive the plugins in `fixtures/` over
//! HTTP — each entry point, every `influxdb3_local` call, each `LineBuilder` type,
//! every return convention of `process_request`, and each bad input with its message.

#[path = "../common/mod.rs"]
mod common;

mod cache_through_crash;
mod containment;
mod environments;
mod joined_writes;
mod load_errors;
mod plugin_tests;
mod reload_cache;
mod reload_delivery;
mod reload_files;
mod reload_rollback;
mod requests;
mod writes_and_schedules;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Tsdb, copy_dir, find_trigger, http, replace, root, rows, start, wait_until};

/// tsdb with a plugin directory holding the fixtures, its Python the repository's and
/// the runner on its path; `None` (said) where there is no venv.
pub fn start_with_fixtures(dir: &Path) -> Option<Tsdb> {
    start_with_fixtures_and(dir, "")
}

/// As [`start_with_fixtures`], with `extra` lines in tsdb.toml.
pub fn start_with_fixtures_and(dir: &Path, extra: &str) -> Option<Tsdb> {
    let python = root().join(".venv/bin/python");
    if !python.exists() {
        eprintln!("skipped: no .venv (run plugin-sdk/python/setup-python.sh)");
        return None;
    }
    let runner = root().join("examples/tsdb/influxdb3_runner");
    let status = Command::new(&python)
        .arg(runner.join("generate.py"))
        .status()
        .expect("generate the runner's stubs");
    assert!(status.success());
    std::fs::write(dir.join("plugins.toml"), "").expect("write plugins.toml");
    std::fs::write(
        dir.join("tsdb.toml"),
        format!(
            "http = \"127.0.0.1:0\"\nplugins = \"plugins.toml\"\nplugin_dir = \"plugins\"\npython = {:?}\npython_path = [{:?}]\n{extra}",
            python.display().to_string(),
            runner.display().to_string()
        ),
    )
    .expect("write tsdb.toml");
    let db = start(dir);
    copy_dir(
        &root().join("examples/tsdb/tests/runner/fixtures"),
        &dir.join("plugins"),
    );
    Some(db)
}

/// Makes trigger `name` in `metrics` on `file`: panics with the answer if refused.
pub fn create(addr: SocketAddr, name: &str, file: &str, spec: &str, args: serde_json::Value) {
    create_with(addr, name, file, spec, args, false);
}

/// As [`create`], `run_async` as given (`create`'s is InfluxDB's default, false).
pub fn create_with(
    addr: SocketAddr,
    name: &str,
    file: &str,
    spec: &str,
    args: serde_json::Value,
    run_async: bool,
) {
    let body = serde_json::json!({
        "db": "metrics",
        "plugin_filename": file,
        "trigger_name": name,
        "trigger_specification": spec,
        "trigger_arguments": args,
        "trigger_settings": { "run_async": run_async, "error_behavior": "Log" },
        "disabled": false,
    });
    let (status, answer) = http(
        addr,
        "POST",
        "/api/v3/configure/processing_engine_trigger",
        &body.to_string(),
    );
    assert_eq!(status, 200, "{answer}");
}

/// The lines of trigger `name` in `system.processing_engine_logs`, as (level, text).
pub fn logs(addr: SocketAddr, name: &str) -> Vec<(String, String)> {
    rows(
        addr,
        "metrics",
        &format!(
            "SELECT log_level, log_text FROM system.processing_engine_logs \
             WHERE trigger_name = '{name}' ORDER BY event_time"
        ),
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

pub fn has(lines: &[(String, String)], level: &str, text: &str) -> bool {
    lines.iter().any(|(l, t)| l == level && t.contains(text))
}

/// The JSON answer of request trigger path `path` (after `/api/v3/engine/`); panics
/// naming the answer unless it is a 200.
pub fn ask(addr: SocketAddr, path: &str) -> serde_json::Value {
    let (status, body) = http(addr, "GET", &format!("/api/v3/engine/{path}"), "");
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// Trigger `name`'s plugin generation once it serves.
pub fn serving_generation(addr: SocketAddr, name: &str) -> u64 {
    wait_until(
        &format!("trigger {name} serves"),
        Duration::from_secs(60),
        || {
            let status = find_trigger(addr, name)?;
            (status["plugin_state"] == "serving")
                .then(|| status["plugin_generation"].as_u64())
                .flatten()
        },
    )
}

/// Waits until trigger `name` serves a generation newer than `before`; that one.
pub fn wait_reloaded(addr: SocketAddr, name: &str, before: u64) -> u64 {
    wait_until(
        &format!("trigger {name} reloads past generation {before}"),
        Duration::from_secs(60),
        || {
            let status = find_trigger(addr, name)?;
            let generation = status["plugin_generation"].as_u64()?;
            (generation > before && status["plugin_state"] == "serving").then_some(generation)
        },
    )
}

/// Replaces `from` with `to` in the file at `path`, as an editor saves it (a rename);
/// panics if `from` is not there.
pub fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).expect("read a plugin file");
    assert!(text.contains(from), "{} holds no {from:?}", path.display());
    replace(path, text.replacen(from, to, 1).as_bytes());
}
