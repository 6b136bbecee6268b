//! A bad config stops the host before it starts anything, naming file, line and field.

use std::process::Command;

use baton_tests::{bin, run_refused_config};

fn run_with(config: &str) -> (Option<i32>, String) {
    run_refused_config("bad.toml", config)
}

#[test]
fn bad_configs_name_file_line_and_field_and_exit_64() {
    let (code, err) = run_with("[plugins.counter]\ncommand = \"x\"\ncall_timeout_ms = \"soon\"\n");
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("bad.toml:3:"), "{err}");
    assert!(err.contains("plugins.counter.call_timeout_ms"), "{err}");

    let (code, err) = run_with("[plugins.counter]\ncommand = \"x\"\nretries = 3\n");
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("bad.toml:3:") && err.contains("retries"),
        "{err}"
    );

    let (code, err) = run_with("socket = 7\n");
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("bad.toml:1:") && err.contains("socket"),
        "{err}"
    );

    let (code, err) = run_with("[plugins.counter]\nargs = []\n");
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("command"), "{err}");
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");
}

#[test]
fn a_missing_config_file_is_named() {
    let out = Command::new(bin("baton"))
        .args(["run", "--config", "/nonexistent/baton.toml"])
        .output()
        .expect("run baton");
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/baton.toml") && err.contains("cannot read"),
        "{err}"
    );
}
