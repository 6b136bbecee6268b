//! An operator's hands on a running daemon: `baton ctl stop|start|restart [--fresh]` on
//! one plugin, and the config read again (`SIGHUP`, `baton ctl reload-config`) with
//! plugins added, removed, changed (state kept) and untouched, a broken config refused
//! whole, and keys that cannot change named.

use std::time::{Duration, Instant};

use baton_proto::host::PluginState;
use baton_tests::{EventLog, TestHost, plugin, wait_until};

async fn count(host: &TestHost) -> u64 {
    host.call_text("counter", "get", "k")
        .await
        .parse()
        .expect("a count")
}

#[tokio::test]
async fn stop_start_and_restart_one_plugin_with_and_without_its_state() {
    let host = TestHost::start(&format!(
        "{}{}",
        plugin(
            "counter",
            "counter",
            &[],
            "checkpoint_interval_ms = 60000\n"
        ),
        plugin("echo", "echo", &[], "")
    ))
    .await;
    host.serving("counter", Duration::from_secs(10)).await;
    host.serving("echo", Duration::from_secs(10)).await;
    let events = EventLog::start(&host).await;
    for _ in 0..3 {
        host.call_text("counter", "incr", "k").await;
    }

    // Stopped: its calls fail at once, saying by whom; the neighbour does not notice.
    let (ok, out, err) = host.ctl(&["stop", "counter"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("plugin counter stopped (by baton ctl (uid "),
        "{out}"
    );
    let status = host.status("counter").await;
    assert_eq!(status.state, PluginState::Stopped as i32, "{status:?}");
    assert_eq!(status.pid, 0);
    let asked = Instant::now();
    let refused = host
        .invoke("counter", "get", "k")
        .await
        .expect_err("a stopped plugin");
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "refused at once, not after the call timeout: {:?}",
        asked.elapsed()
    );
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    assert!(
        refused
            .message()
            .contains("plugin counter was stopped by baton ctl (uid ")
            && refused.message().contains("`baton ctl start counter`"),
        "{}",
        refused.message()
    );
    assert_eq!(host.call_text("echo", "echo", "hi").await, "hi");
    let stopped = events.wait_for("stopped", 1, Duration::from_secs(5)).await;
    assert!(
        stopped[0].message.contains("stopped by baton ctl"),
        "{stopped:?}"
    );
    let (ok, _, err) = host.ctl(&["stop", "counter"]);
    assert!(ok, "stopping a stopped plugin is no error: {err}");

    // Started: from the checkpoint taken as it stopped.
    let (ok, out, err) = host.ctl(&["start", "counter"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("plugin counter started: generation 2"),
        "{out}"
    );
    assert_eq!(count(&host).await, 3);
    events
        .wait_for("start_requested", 1, Duration::from_secs(5))
        .await;
    let (ok, _, err) = host.ctl(&["start", "counter"]);
    assert!(
        !ok && err.contains("plugin counter is not stopped"),
        "{err}"
    );

    // Restarted: a handover, state kept.
    let (ok, out, err) = host.ctl(&["restart", "counter"]);
    assert!(ok, "{err}");
    assert!(out.contains("state kept): generation 3"), "{out}");
    assert_eq!(count(&host).await, 3);
    events
        .wait_for("handover_done", 1, Duration::from_secs(5))
        .await;

    // Restarted fresh: the state is dropped, checkpoints too (a stop and start after
    // it restores the fresh state, not the old one).
    let (ok, out, err) = host.ctl(&["restart", "counter", "--fresh"]);
    assert!(ok, "{err}");
    assert!(out.contains("started fresh"), "{out}");
    assert_eq!(count(&host).await, 0);
    host.call_text("counter", "incr", "k").await;
    assert!(host.ctl(&["stop", "counter"]).0);
    assert!(host.ctl(&["start", "counter"]).0);
    assert_eq!(count(&host).await, 1);
    let fresh = events
        .wait_for("restart_requested", 1, Duration::from_secs(5))
        .await;
    assert!(
        fresh[0].message.contains("its state is dropped"),
        "{fresh:?}"
    );

    let (ok, _, err) = host.ctl(&["stop", "nope"]);
    assert!(!ok && err.contains("no plugin named \"nope\""), "{err}");
}

/// Rewrites `host`'s config file with `plugins_toml` (its socket line kept).
fn rewrite_config(host: &TestHost, plugins_toml: &str) {
    let path = host.dir.path().join("baton.toml");
    let text = format!("socket = \"{}\"\n\n{plugins_toml}", host.socket.display());
    baton_tests::replace_by_rename(&path, text.as_bytes());
}

#[tokio::test]
async fn a_config_reload_adds_removes_and_changes_plugins_keeping_state_and_refuses_a_bad_config() {
    let before = format!(
        "{}{}{}{}",
        plugin("counter", "counter", &[], ""),
        plugin("slow", "faulty", &[], "call_timeout_ms = 30000\n"),
        plugin("gone", "echo", &[], ""),
        plugin("same", "echo", &[], "")
    );
    let mut host = TestHost::start(&before).await;
    for name in ["counter", "slow", "gone", "same"] {
        host.serving(name, Duration::from_secs(10)).await;
    }
    for _ in 0..5 {
        host.call_text("counter", "incr", "k").await;
    }
    let slow_before = host.status("slow").await;
    let same_before = host.status("same").await;

    // SIGHUP, which used to end the daemon, reads the config again.
    let after = format!(
        "{}{}{}{}",
        plugin(
            "counter",
            "counter",
            &[],
            "[plugins.counter.env]\nMOOD = \"new\"\n"
        ),
        plugin("slow", "faulty", &[], "call_timeout_ms = 300\n"),
        plugin("same", "echo", &[], ""),
        plugin("new", "echo", &[], "")
    );
    rewrite_config(&host, &after);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(host.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("SIGHUP the daemon");
    wait_until(
        "the config reload is done",
        Duration::from_secs(20),
        || async {
            let names: Vec<String> = host.list().await.into_iter().map(|p| p.name).collect();
            let counter = host.status("counter").await;
            (names == ["counter", "new", "same", "slow"]
                && counter.generation == 2
                && counter.state == PluginState::Serving as i32)
                .then_some(())
        },
    )
    .await;
    assert!(baton_tests::alive(host.pid()), "the daemon lives on");
    // Changed environment: a new generation, with the state moved.
    assert_eq!(count(&host).await, 5);
    // A new limit applies in place: same process, and a call now times out fast.
    let slow = host.status("slow").await;
    assert_eq!(
        (slow.generation, slow.pid),
        (slow_before.generation, slow_before.pid)
    );
    let asked = Instant::now();
    let timed_out = host.invoke("slow", "hang", "").await.expect_err("a hang");
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "call_timeout_ms = 300 in force: {timed_out:?} after {:?}",
        asked.elapsed()
    );
    // Untouched, and the new one serves.
    let same = host.status("same").await;
    assert_eq!(
        (same.generation, same.pid),
        (same_before.generation, same_before.pid)
    );
    host.serving("new", Duration::from_secs(10)).await;
    assert_eq!(host.call_text("new", "echo", "hi").await, "hi");

    // A config with an error is refused whole, saying where; nothing changes.
    rewrite_config(
        &host,
        &format!("{after}\n[plugins.broken]\ncomand = \"x\"\n"),
    );
    let (ok, _, err) = host.ctl(&["reload-config"]);
    assert!(!ok, "refused");
    assert!(
        err.contains("nothing changed") && err.contains("baton.toml:") && err.contains("comand"),
        "{err}"
    );
    assert_eq!(host.list().await.len(), 4);

    // `reload-config` says what it changed; a key that cannot change is named.
    let last = format!(
        "metrics_addr = \"127.0.0.1:0\"\n{}{}{}",
        plugin(
            "counter",
            "counter",
            &[],
            "[plugins.counter.env]\nMOOD = \"new\"\n"
        ),
        plugin("slow", "faulty", &[], "call_timeout_ms = 300\n"),
        plugin("same", "echo", &[], "")
    );
    rewrite_config(&host, &last);
    let (ok, out, err) = host.ctl(&["reload-config"]);
    assert!(!ok, "a key that cannot change is reported as a problem");
    assert!(out.contains("plugin new: removed, stopped"), "{out}");
    assert!(
        out.contains("0 added, 1 removed, 0 handed over, 0 updated in place, 3 unchanged"),
        "{out}"
    );
    assert!(
        err.contains("`metrics_addr` cannot change while the host runs"),
        "{err}"
    );
    assert_eq!(host.list().await.len(), 3);
    assert_eq!(count(&host).await, 5);
    assert_eq!(host.stop(Duration::from_secs(10)), Some(0));
}

#[tokio::test]
async fn settings_a_new_generation_cannot_start_with_are_rolled_back_and_tried_again_next_time() {
    let mut host = TestHost::start(&plugin("f", "faulty", &[], "")).await;
    let first = host.serving("f", Duration::from_secs(10)).await;
    rewrite_config(&host, &plugin("f", "faulty", &["exit-at-start"], ""));
    let (ok, out, err) = host.ctl(&["reload-config"]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("plugin f: args changed, not applied")
            && err.contains("keeps serving with its previous settings"),
        "{err}"
    );
    let serving = host.status("f").await;
    assert_eq!(serving.pid, first.pid, "the old generation serves on");
    assert_eq!(host.call_text("f", "echo", "still").await, "still");
    // The file still differs from what runs: the next reload tries again.
    let (ok, _, err) = host.ctl(&["reload-config"]);
    assert!(!ok && err.contains("plugin f: args changed"), "{err}");
    // Put back as it runs: nothing to do.
    rewrite_config(&host, &plugin("f", "faulty", &[], ""));
    let (ok, out, err) = host.ctl(&["reload-config"]);
    assert!(ok, "{err}");
    assert!(out.contains("1 unchanged"), "{out}");
    assert_eq!(host.stop(Duration::from_secs(10)), Some(0));
}
