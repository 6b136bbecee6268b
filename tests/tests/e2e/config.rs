//! A bad config stops the host before it starts anything, naming file, line, column and
//! field of every mistake in it; `baton validate` says the same without starting.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use baton_tests::{bin, run_refused_config, run_until_exit};

fn run_with(config: &str) -> (Option<i32>, String) {
    run_refused_config("bad.toml", config)
}

/// A fresh directory holding `text` as `baton.toml`.
fn config_dir(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("baton.toml");
    std::fs::write(&path, text).expect("write config");
    (dir, path)
}

/// `baton run` on `config`, which should refuse it; a host that starts instead is
/// killed after a few seconds (and its exit code is then `None`).
fn refused(config: &Path) -> (Option<i32>, String) {
    run_until_exit(config, Duration::from_secs(5))
}

/// `baton <args>`, with its exit code, stdout and stderr.
fn baton(args: &[&str], config: &Path, env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let out = Command::new(bin("baton"))
        .args(args)
        .arg(config)
        .envs(env.iter().copied())
        .output()
        .expect("run baton");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn plugin_table(name: &str, command: &Path) -> String {
    format!("[plugins.{name}]\ncommand = \"{}\"\n", command.display())
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
fn a_spin_beyond_a_millisecond_is_refused_naming_the_field() {
    let (code, err) = run_with("[plugins.fast]\ncommand = \"/bin/true\"\nspin_us = 5000\n");
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("bad.toml:3:") && err.contains("plugins.fast.spin_us"),
        "{err}"
    );
    assert!(err.contains("at most 1000"), "{err}");

    let (code, err) = run_with("control_spin_us = 1001\n");
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("bad.toml:1:") && err.contains("`control_spin_us`"),
        "{err}"
    );
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

#[test]
fn a_program_that_is_not_there_is_refused_at_load_not_retried() {
    // Production: a binary that is not in place is a mistake, never waited for.
    let (dir, config) = config_dir("");
    let missing = dir.path().join("build/counter");
    std::fs::write(
        &config,
        format!(
            "mode = \"production\"\n\n{}",
            plugin_table("counter", &missing)
        ),
    )
    .expect("write config");
    let (code, err) = refused(&config);
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains(&format!(
            "{}:4:1: field `plugins.counter.command`: {} does not exist",
            config.display(),
            missing.display()
        )),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    // Dev mode without a watch on it: nothing would notice it appear.
    std::fs::write(
        &config,
        "[plugins.counter]\ncommand = \"./build/counter\"\nreload = \"manual\"\n",
    )
    .expect("write config");
    let (code, err) = refused(&config);
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("field `plugins.counter.command`")
            && err.contains("build/counter does not exist")
            && err.contains("reload = \"watch\""),
        "{err}"
    );

    // A bare name is looked up in PATH, as a shell would.
    std::fs::write(
        &config,
        "[plugins.counter]\nreload = \"off\"\ncommand = \"baton-no-such-program\"\n",
    )
    .expect("write config");
    let (code, err) = refused(&config);
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains(&format!(
            "{}:3:1: field `plugins.counter.command`: `baton-no-such-program` is not found in PATH",
            config.display()
        )),
        "{err}"
    );
    assert!(
        !err.contains("./"),
        "no file beside the config, no hint: {err}"
    );

    // ...with a hint when the file is right beside the config.
    std::fs::copy(bin("counter"), dir.path().join("my-counter")).expect("copy");
    std::fs::write(&config, "[plugins.counter]\ncommand = \"my-counter\"\n").expect("write config");
    let (code, err) = refused(&config);
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("`my-counter` is not found in PATH")
            && err.contains("write command = \"./my-counter\""),
        "{err}"
    );
    // The plugin's own PATH is where it would be looked up.
    std::fs::write(
        &config,
        format!(
            "[plugins.counter]\ncommand = \"my-counter\"\nenv = {{ PATH = \"{}\" }}\n",
            dir.path().display()
        ),
    )
    .expect("write config");
    let (code, out, err) = baton(&["validate"], &config, &[]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "config OK: 1 plugin: counter\n");
}

#[test]
fn production_without_a_pin_is_refused_at_load() {
    let (dir, config) = config_dir("");
    let binary = dir.path().join("counter");
    std::fs::copy(bin("counter"), &binary).expect("stage");
    std::fs::write(
        &config,
        format!(
            "mode = \"production\"\n{}",
            plugin_table("counter", &binary)
        ),
    )
    .expect("write config");
    let (code, err) = refused(&config);
    assert_eq!(code, Some(64), "{err}");
    let pin = format!("{}.sha256", binary.display());
    assert!(
        err.contains(&format!(
            "{}:2:10: field `plugins.counter.sha256`: production mode runs only pinned binaries",
            config.display()
        )) && err.contains(&pin),
        "{err}"
    );
    // A pin file beside the binary is a pin; whether it matches is checked at each start.
    std::fs::write(&pin, format!("{}  counter\n", "0".repeat(64))).expect("pin");
    let (code, out, err) = baton(&["validate"], &config, &[]);
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "config OK: 1 plugin: counter\n"),
        "{err}"
    );
}

#[test]
fn socket_paths_that_cannot_fit_are_config_errors_for_validate_too() {
    let long = format!("/tmp/{}/baton.sock", "d".repeat(110));
    let (_dir, config) = config_dir(&format!(
        "watcher = \"poll\"\nsocket = \"{long}\"\n{}",
        plugin_table("counter", &bin("counter"))
    ));
    let (code, out, err) = baton(&["validate"], &config, &[]);
    assert_eq!(code, Some(64), "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains(&format!("{}:2:1: field `socket`", config.display()))
            && err.contains("126 bytes"),
        "{err}"
    );
    // The runtime directory is the environment's part: refused by validate as by run.
    let deep = tempfile::Builder::new()
        .prefix(&"r".repeat(60))
        .tempdir()
        .expect("a long runtime dir");
    std::fs::write(&config, plugin_table("counter", &bin("counter"))).expect("write config");
    let (code, _, err) = baton(
        &["validate"],
        &config,
        &[("XDG_RUNTIME_DIR", deep.path().to_str().expect("utf-8"))],
    );
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("XDG_RUNTIME_DIR") && err.contains("107-byte limit"),
        "{err}"
    );
}

#[test]
fn validate_and_run_check_check_a_config_and_exit() {
    let (dir, config) = config_dir("");
    std::fs::write(
        &config,
        format!(
            "socket = \"ctl.sock\"\n{}{}",
            plugin_table("echo", &bin("echo")),
            plugin_table("counter", &bin("counter"))
        ),
    )
    .expect("write config");
    for args in [&["validate"][..], &["run", "--check", "--config"]] {
        let (code, out, err) = baton(args, &config, &[]);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        assert_eq!(out, "config OK: 2 plugins: counter, echo\n", "{args:?}");
        assert!(err.is_empty(), "{args:?}: {err}");
    }
    // Nothing was started: no control socket was ever bound.
    assert!(!dir.path().join("ctl.sock").exists());

    std::fs::write(&config, "[plugins.echo]\ncomand = \"x\"\n").expect("write config");
    for args in [&["validate"][..], &["run", "--check", "--config"]] {
        let (code, out, err) = baton(args, &config, &[]);
        assert_eq!(code, Some(64), "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert!(err.contains("did you mean `command`?"), "{args:?}: {err}");
    }
}

#[test]
fn every_mistake_in_a_config_is_reported_each_with_its_place() {
    let (_dir, config) = config_dir(
        "mode = \"dev\"\n\
         \n\
         [plugins.a]\n\
         command = \"baton-no-such-program\"\n\
         call_timeout_ms = 0\n\
         \n\
         [plugins.b]\n\
         comand = \"./b\"\n\
         \n\
         [plugins.\"c c\"]\n\
         command = \"./c\"\n\
         [plugins.\"c c\".restart]\n\
         max_crashes = 0\n",
    );
    let (code, err) = refused(&config);
    assert_eq!(code, Some(64), "{err}");
    let file = config.display().to_string();
    let expected = [
        format!(
            "error: {file}:4:1: field `plugins.a.command`: `baton-no-such-program` is not found in PATH"
        ),
        format!("error: {file}:5:1: field `plugins.a.call_timeout_ms`: must be at least 1, got 0"),
        format!(
            "error: {file}:8:1: field `plugins.b.comand`: unknown key `comand`; did you mean `command`?"
        ),
        format!("error: {file}:10:10: field `plugins.c c`: \"c c\" is not a plugin name"),
        format!(
            "error: {file}:13:1: field `plugins.c c.restart.max_crashes`: must be at least 1, got 0"
        ),
    ];
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), expected.len(), "{err}");
    for (line, expected) in lines.iter().zip(&expected) {
        assert!(
            line.starts_with(expected.as_str()),
            "{line}\nexpected: {expected}"
        );
    }
}

#[test]
fn a_misspelt_key_gets_a_did_you_mean_at_its_line_and_column() {
    let (code, err) = run_with("[plugins.counter]\n  comand = \"./counter\"\n");
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains(
            "bad.toml:2:3: field `plugins.counter.comand`: unknown key `comand`; did you mean `command`?"
        ),
        "{err}"
    );
    let (code, err) = run_with("mode = \"prod\"\nwatchr = \"poll\"\n");
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("bad.toml:2:1: field `watchr`: unknown key `watchr`; did you mean `watcher`?"),
        "{err}"
    );
    assert!(err.contains("bad.toml:1:8: field `mode`"), "{err}");
}

#[test]
fn a_bad_plugin_name_is_placed_at_its_table_header() {
    let (code, err) = run_with(&format!(
        "mode = \"dev\"\n\n[plugins.\"my plugin\"]\ncommand = \"{}\"\n",
        bin("echo").display()
    ));
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains(
            "bad.toml:3:10: field `plugins.my plugin`: \"my plugin\" is not a plugin name"
        ),
        "{err}"
    );
    // Written as a dotted key, too.
    let (code, err) = run_with(&format!(
        "plugins.\"a/b\".command = \"{}\"\n",
        bin("echo").display()
    ));
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("bad.toml:1:9: field `plugins.a/b`"), "{err}");
}

#[test]
fn a_config_file_past_16_mib_is_refused_without_reading_it_all() {
    // Valid TOML all through (comment lines), so only its size can refuse it.
    let line = format!("# {}\n", "x".repeat(1021));
    let (_dir, config) = config_dir(&line.repeat(16 * 1024 + 1));
    let (code, _, err) = baton(&["validate"], &config, &[]);
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains(&config.display().to_string())
            && err.contains("cannot read the config file")
            && err.contains("over 16777216 bytes"),
        "{err}"
    );
    // At the bound itself it is read.
    std::fs::write(&config, line.repeat(16 * 1024)).expect("write config");
    let (code, out, err) = baton(&["validate"], &config, &[]);
    assert_eq!(code, Some(0), "{out}{err}");
}

#[test]
fn validate_names_the_program_it_waits_for_and_where_a_misplaced_key_belongs() {
    // Dev mode, reload by watch: a binary not built yet is waited for, and said.
    let (dir, config) = config_dir("");
    let missing = dir.path().join("target/my-plugin");
    std::fs::write(&config, plugin_table("mine", &missing)).expect("write config");
    let (code, out, err) = baton(&["validate"], &config, &[]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out,
        format!(
            "config OK: 1 plugin: mine\nnote: plugin mine: {} does not exist yet; `baton run` waits for it and starts the plugin when it appears (dev mode, reload = \"watch\")\n",
            missing.display()
        )
    );

    // A per-plugin key written at the top, and a top-level key inside a plugin.
    std::fs::write(
        &config,
        format!(
            "chekpoint_interval_ms = 1000\n{}pol_interval_ms = 5\n",
            plugin_table("counter", &bin("counter"))
        ),
    )
    .expect("write config");
    let (code, err) = refused(&config);
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("field `chekpoint_interval_ms`: unknown key `chekpoint_interval_ms`; did you mean `checkpoint_interval_ms`? `checkpoint_interval_ms` is a per-plugin key: it belongs in a `[plugins.NAME]` table"),
        "{err}"
    );
    assert!(
        err.contains("field `plugins.counter.pol_interval_ms`: unknown key `pol_interval_ms`; did you mean `poll_interval_ms`? `poll_interval_ms` is a top-level key: it belongs above the first `[plugins.*]` table"),
        "{err}"
    );
}
