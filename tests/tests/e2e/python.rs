//! Python plugins: served, reloaded on save with state kept, interchangeable with the
//! Rust counter, and a broken script is a clean rollback that shows Python's error.

use std::path::{Path, PathBuf};
use std::time::Duration;

use baton_tests::{
    EventLog, Load, TestHost, bin, replace_by_rename, repo_root, script, venv_python, wait_until,
};

/// The Python counter's script, copied to a directory of its own for the test to edit.
fn stage_script() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("baton-py-")
        .tempdir()
        .expect("temp dir");
    let path = dir.path().join("counter.py");
    std::fs::copy(
        repo_root().join("example-plugins/python-counter/counter.py"),
        &path,
    )
    .expect("stage the script");
    (dir, path)
}

fn python_plugin(script: &Path) -> String {
    format!(
        "[plugins.pycounter]\ncommand = \"{}\"\nargs = [\"{}\"]\nwatch = [\"{}/*.py\"]\nsettle_ms = 50\ncopy_binary = false\n",
        venv_python().display(),
        script.display(),
        script.parent().expect("dir").display()
    )
}

async fn wait_for_generation(host: &TestHost, plugin: &str, n: u64) {
    wait_until(
        &format!("{plugin} serves generation {n}"),
        Duration::from_secs(20),
        || async {
            let s = host.status(plugin).await;
            (s.generation >= n && s.state == baton_proto::host::PluginState::Serving as i32)
                .then_some(())
        },
    )
    .await;
}

/// Saves `path` as an editor does: write a temp file, rename it over.
fn save_as_editor(path: &Path, content: &str) {
    replace_by_rename(path, content.as_bytes());
}

#[tokio::test]
async fn saving_the_script_under_load_reloads_it_with_state_and_no_failed_call() {
    let (_dir, path) = stage_script();
    let original = std::fs::read_to_string(&path).expect("read script");
    let host = TestHost::start(&python_plugin(&path)).await;
    let events = EventLog::start(&host).await;
    host.serving("pycounter", Duration::from_secs(20)).await;

    let load = Load::start(&host, 4, "pycounter", "incr", "saves");

    let start = host.status("pycounter").await.generation;
    for i in 1..=4u64 {
        save_as_editor(&path, &format!("{original}\n# saved {i}\n"));
        wait_for_generation(&host, "pycounter", start + i).await;
    }
    let (total, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} calls failed, first: {:?}",
        failures.len(),
        failures.first()
    );
    assert!(total > 0);
    assert_eq!(
        host.call_text("pycounter", "get", "saves").await,
        total.to_string()
    );
    assert_eq!(host.status("pycounter").await.generation, start + 4);
    assert_eq!(events.of_kind("handover_done").len(), 4);
    assert!(events.of_kind("rollback").is_empty());
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

#[tokio::test]
async fn counts_move_from_the_rust_counter_to_the_python_one_and_back() {
    let dir = tempfile::Builder::new()
        .prefix("baton-swap-")
        .tempdir()
        .expect("temp dir");
    let wrapper = dir.path().join("counter");
    let rust = script(&format!("exec {}", bin("counter").display()));
    let python = script(&format!(
        "exec {} {}",
        venv_python().display(),
        repo_root()
            .join("example-plugins/python-counter/counter.py")
            .display()
    ));
    replace_by_rename(&wrapper, &rust);
    let host = TestHost::start(&format!(
        "[plugins.counter]\ncommand = \"{}\"\nsettle_ms = 50\n",
        wrapper.display()
    ))
    .await;
    for _ in 0..3 {
        host.call_text("counter", "incr", "apples").await;
    }
    host.call_text("counter", "incr", "pears").await;
    let rust_pid = host.status("counter").await.pid;
    assert!(
        !cmdline(rust_pid).contains("python"),
        "{}",
        cmdline(rust_pid)
    );

    replace_by_rename(&wrapper, &python);
    wait_for_generation(&host, "counter", 2).await;
    let py_pid = host.status("counter").await.pid;
    assert!(
        cmdline(py_pid).contains("counter.py"),
        "now Python: {}",
        cmdline(py_pid)
    );
    assert_eq!(host.call_text("counter", "get", "apples").await, "3");
    assert_eq!(host.call_text("counter", "incr", "pears").await, "2");

    replace_by_rename(&wrapper, &rust);
    wait_for_generation(&host, "counter", 3).await;
    let back = host.status("counter").await.pid;
    assert!(
        !cmdline(back).contains("python"),
        "back to Rust: {}",
        cmdline(back)
    );
    assert_eq!(host.call_text("counter", "get", "apples").await, "3");
    assert_eq!(host.call_text("counter", "get", "pears").await, "2");
}

#[tokio::test]
async fn a_script_that_fails_to_import_is_rolled_back_with_pythons_error() {
    let (_dir, path) = stage_script();
    let original = std::fs::read_to_string(&path).expect("read script");
    let host = TestHost::start(&python_plugin(&path)).await;
    let events = EventLog::start(&host).await;
    assert_eq!(host.call_text("pycounter", "incr", "kept").await, "1");
    let serving = host.status("pycounter").await;

    save_as_editor(&path, &format!("import baton_no_such_module\n{original}"));
    let rollback = events
        .wait_for("rollback", 1, Duration::from_secs(20))
        .await;
    let why = &rollback[0].message;
    assert!(
        why.contains("ModuleNotFoundError: No module named 'baton_no_such_module'"),
        "{why}"
    );
    assert!(why.contains("plugin pycounter"), "{why}");

    save_as_editor(&path, &format!("{original}\ndef broken(:\n    pass\n"));
    let rollback = events
        .wait_for("rollback", 2, Duration::from_secs(20))
        .await;
    let why = &rollback[1].message;
    assert!(why.contains("SyntaxError"), "{why}");

    // The old generation kept serving, with its state, all along.
    let now = host.status("pycounter").await;
    assert_eq!((now.pid, now.generation), (serving.pid, serving.generation));
    assert_eq!(host.call_text("pycounter", "incr", "kept").await, "2");
    let log = host.log();
    assert!(
        log.contains("ModuleNotFoundError: No module named 'baton_no_such_module'"),
        "{log}"
    );
    assert!(log.contains("SyntaxError"), "{log}");

    // Fixed: reloads, state intact.
    save_as_editor(&path, &original);
    events
        .wait_for("handover_done", 1, Duration::from_secs(20))
        .await;
    assert_eq!(host.call_text("pycounter", "get", "kept").await, "2");
}

#[tokio::test]
async fn a_snapshot_that_lies_about_its_length_is_caught_and_blamed_on_the_old_generation() {
    let liar = repo_root().join("tests/plugins/lying_length.py");
    let config = format!(
        "[plugins.liar]\ncommand = \"{}\"\nargs = [\"{}\"]\nreload = \"manual\"\ncopy_binary = false\n",
        venv_python().display(),
        liar.display()
    );
    let host = TestHost::start(&config).await;
    let events = EventLog::start(&host).await;
    host.serving("liar", Duration::from_secs(20)).await;
    assert_eq!(host.call_text("liar", "incr", "kept").await, "1");
    let serving = host.status("liar").await;

    // The operator's reload fails with the reason, naming the plugin and the culprit.
    let refused = host
        .client()
        .reload(baton_proto::host::ReloadRequest {
            plugin: "liar".into(),
        })
        .await
        .expect_err("the reload rolls back");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().starts_with(&format!(
            "plugin liar rolled back, generation {} keeps serving: the snapshot of generation {} is corrupt",
            serving.generation, serving.generation
        )),
        "{}",
        refused.message()
    );
    let rollback = events
        .wait_for("rollback", 1, Duration::from_secs(20))
        .await;
    let why = &rollback[0].message;
    assert!(why.contains("plugin liar"), "{why}");
    assert!(
        why.contains(&format!(
            "the snapshot of generation {} is corrupt: state length mismatch",
            serving.generation
        )),
        "{why}"
    );
    assert!(!why.contains("refused the state"), "{why}");

    // The old generation serves on, with its state.
    let now = host.status("liar").await;
    assert_eq!((now.pid, now.generation), (serving.pid, serving.generation));
    assert_eq!(host.call_text("liar", "incr", "kept").await, "2");
}
