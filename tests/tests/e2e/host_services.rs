//! Host services: plugins call back into their host (log, key-value store, events) on
//! the host's own socket, and only with their launch token.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use baton_proto::host::host_client::HostClient;
use baton_proto::host::{KvGetRequest, ReloadRequest};
use baton_tests::{
    EventLog, TestHost, bin_dir, plugin, repo_root, unix_channel, venv_python, wait_until,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The host-services socket, as the plugin is told it.
async fn host_socket(host: &TestHost, plugin: &str) -> PathBuf {
    let status = host.serving(plugin, Duration::from_secs(10)).await;
    PathBuf::from(
        baton_tests::process_env(status.pid, "BATON_HOST_SOCKET").expect("BATON_HOST_SOCKET"),
    )
}

#[tokio::test]
async fn calls_without_a_plugins_token_are_refused() {
    let host = TestHost::start(&plugin("notes", "notes", &[], "")).await;
    let socket = host_socket(&host, "notes").await;
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&socket)
            .expect("host.sock exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "host socket mode {mode:o}");
    }
    let mut client = HostClient::new(unix_channel(&socket).await.expect("connect"));

    let err = client
        .kv_get(KvGetRequest { key: "k".into() })
        .await
        .expect_err("no token");
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("x-baton-token"), "{}", err.message());

    let mut request = tonic::Request::new(KvGetRequest { key: "k".into() });
    request
        .metadata_mut()
        .insert("x-baton-token", "0".repeat(64).parse().expect("metadata"));
    let err = client.kv_get(request).await.expect_err("wrong token");
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");

    // The plugin itself, with its token, gets through.
    assert_eq!(host.call_text("notes", "put", "k=v").await, "ok");
    assert_eq!(host.call_text("notes", "get", "k").await, "v");
}

#[tokio::test]
async fn the_store_outlives_reloads_and_crashes_of_the_plugin() {
    let host = TestHost::start(&plugin("notes", "notes", &[], "")).await;
    let first = host.serving("notes", Duration::from_secs(10)).await;
    assert_eq!(host.call_text("notes", "put", "colour=teal").await, "ok");
    assert_eq!(host.call_text("notes", "get", "colour").await, "teal");

    let reloaded = host
        .client()
        .reload(ReloadRequest {
            plugin: "notes".into(),
        })
        .await
        .expect("reload")
        .into_inner()
        .generation;
    assert_eq!(reloaded, first.generation + 1);
    assert_eq!(host.call_text("notes", "get", "colour").await, "teal");
    assert_eq!(host.call_text("notes", "put", "shape=round").await, "ok");

    let before = host.status("notes").await;
    kill(Pid::from_raw(before.pid as i32), Signal::SIGKILL).expect("kill notes");
    let after = wait_until(
        "a new notes process serves",
        Duration::from_secs(10),
        || async {
            let s = host.status("notes").await;
            (s.pid != before.pid
                && s.pid != 0
                && s.state == baton_proto::host::PluginState::Serving as i32)
                .then_some(s)
        },
    )
    .await;
    assert_eq!(after.generation, before.generation + 1);
    assert_eq!(after.restarts, 1);
    assert_eq!(host.call_text("notes", "get", "colour").await, "teal");
    assert_eq!(host.call_text("notes", "get", "shape").await, "round");
    assert_eq!(host.call_text("notes", "list", "").await, "colour\nshape");

    // The host's limits reach the plugin's caller as the host phrased them.
    let err = host
        .invoke("notes", "put", format!("{}=x", "k".repeat(2000)))
        .await
        .expect_err("key over the limit");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("max_key_bytes"), "{}", err.message());
    assert!(err.message().contains("plugin notes"), "{}", err.message());
}

#[tokio::test]
async fn plugin_events_and_log_lines_reach_the_host_with_the_plugins_name() {
    let host = TestHost::start(&plugin("notes", "notes", &[], "")).await;
    let events = EventLog::start(&host).await;
    let status = host.serving("notes", Duration::from_secs(10)).await;
    assert_eq!(host.call_text("notes", "put", "todo=buy milk").await, "ok");

    let saved = events
        .wait_for("plugin:note_saved", 1, Duration::from_secs(10))
        .await;
    assert_eq!(saved[0].plugin, "notes");
    assert_eq!(saved[0].generation, status.generation);
    assert!(
        saved[0].message.contains("\"todo\""),
        "{}",
        saved[0].message
    );
    // A plugin's event can never pass for one of the host's own.
    assert!(
        events.all().iter().all(|e| e.kind != "note_saved"),
        "{:?}",
        events.all()
    );

    let line = wait_until(
        "the plugin's Log call shows in the host's log",
        Duration::from_secs(10),
        || async {
            host.log()
                .lines()
                .find(|l| l.contains("note saved"))
                .map(str::to_owned)
        },
    )
    .await;
    for part in [
        "INFO",
        "key=todo",
        "bytes=8",
        "plugin=notes",
        &format!("generation={}", status.generation),
    ] {
        assert!(line.contains(part), "{part:?} missing from: {line}");
    }
}

#[tokio::test]
async fn the_python_sdk_reaches_the_host_services_too() {
    let script = repo_root().join("example-plugins/python-notes/notes.py");
    let host = TestHost::start(&format!(
        "[plugins.pynotes]\ncommand = \"{}\"\nargs = [\"{}\"]\ncopy_binary = false\n",
        venv_python().display(),
        script.display()
    ))
    .await;
    let events = EventLog::start(&host).await;
    host.serving("pynotes", Duration::from_secs(20)).await;
    assert_eq!(host.call_text("pynotes", "put", "lang=python").await, "ok");
    let saved = events
        .wait_for("plugin:note_saved", 1, Duration::from_secs(10))
        .await;
    assert_eq!(saved[0].plugin, "pynotes");

    host.client()
        .reload(ReloadRequest {
            plugin: "pynotes".into(),
        })
        .await
        .expect("reload");
    assert_eq!(host.call_text("pynotes", "get", "lang").await, "python");
    assert_eq!(host.call_text("pynotes", "list", "la").await, "lang");
    let err = host
        .invoke("pynotes", "put", format!("{}=x", "k".repeat(2000)))
        .await
        .expect_err("key over the limit");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("max_key_bytes"), "{}", err.message());

    wait_until(
        "the Python plugin's Log call shows in the host's log",
        Duration::from_secs(10),
        || async {
            host.log()
                .lines()
                .any(|l| l.contains("note saved") && l.contains("plugin=pynotes"))
                .then_some(())
        },
    )
    .await;
}

/// The `embed` example: a program that links baton-host, offers its plugins a service
/// of its own, and has a plugin call it back with its identity attached.
#[tokio::test]
async fn an_embedders_service_is_reached_by_its_plugins_with_their_identity() {
    let example = bin_dir().join("examples").join("embed");
    assert!(
        example.exists(),
        "{} is missing: build the examples first (`cargo build --workspace --all-targets`)",
        example.display()
    );
    let child = tokio::process::Command::new(&example)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run the embed example");
    let started = Instant::now();
    // On timeout the child is dropped, and killed with its plugins (PDEATHSIG).
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("the embed example ran longer than 30 s"))
        .expect("wait for the example");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?} after {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status,
        started.elapsed()
    );
    for line in [
        "counter: visits = 2",
        "writer: row 1 inserted",
        "database row: \"hello from a plugin\" by plugin writer (generation 1)",
        "a call without a token: Unauthenticated",
    ] {
        assert!(stdout.contains(line), "{line:?} missing from:\n{stdout}");
    }
}
