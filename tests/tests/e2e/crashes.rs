//! A plugin that dies is restarted; its neighbours never notice; a crash loop fails fast.

use std::time::{Duration, Instant};

use baton_proto::host::PluginState;
use baton_tests::{TestHost, alive, plugin, wait_until, writes_of};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

#[tokio::test]
async fn a_killed_plugin_is_restarted_and_its_neighbour_never_notices() {
    let host = TestHost::start(
        &(plugin("counter", "counter", &[], "") + &plugin("echo", "echo", &[], "")),
    )
    .await;
    assert_eq!(host.call_text("counter", "incr", "k").await, "1");
    let before = host.serving("counter", Duration::from_secs(10)).await;
    let echo_before = host.serving("echo", Duration::from_secs(10)).await;

    // Keep calling echo the whole time: not one call may fail.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let echo_calls = {
        let client = host.client();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut client = client;
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 100_000 {
                let reply = client
                    .invoke(baton_proto::host::InvokeRequest {
                        plugin: "echo".into(),
                        method: "echo".into(),
                        payload: format!("{n}").into_bytes().into(),
                        metadata: Default::default(),
                    })
                    .await
                    .expect("echo never fails while counter crashes");
                assert_eq!(reply.into_inner().payload, format!("{n}").into_bytes());
                n += 1;
            }
            n
        })
    };

    kill(Pid::from_raw(before.pid as i32), Signal::SIGKILL).expect("kill counter");
    let killed_at = Instant::now();
    // A call racing the kill itself may have reached the dying process (it is then in
    // flight, and fails); the host notices the exit at once, and the next call succeeds.
    wait_until(
        "the host notices the exit",
        Duration::from_secs(1),
        || async {
            let s = host.status("counter").await;
            (s.pid != before.pid).then_some(())
        },
    )
    .await;
    assert_eq!(host.call_text("counter", "incr", "fresh").await, "1");
    let recovered = killed_at.elapsed();
    assert!(
        recovered < Duration::from_secs(1),
        "recovery took {recovered:?}"
    );

    let after = host.status("counter").await;
    assert_ne!(after.pid, before.pid);
    assert_eq!(after.generation, before.generation + 1);
    assert_eq!(after.restarts, 1);
    assert!(
        after.last_error.contains("killed by signal 9 (SIGKILL)"),
        "{}",
        after.last_error
    );
    assert!(!alive(before.pid));

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let n = echo_calls.await.expect("echo caller");
    assert!(n > 0);
    let echo_after = host.status("echo").await;
    assert_eq!(
        (echo_after.pid, echo_after.generation, echo_after.restarts),
        (echo_before.pid, echo_before.generation, 0)
    );

    let log = host.log();
    assert!(log.contains("plugin counter (generation 1"), "{log}");
    assert!(
        log.contains("exited unexpectedly: killed by signal 9 (SIGKILL)"),
        "{log}"
    );
}

#[tokio::test]
async fn a_call_in_flight_when_the_plugin_dies_gets_unavailable_naming_it() {
    let host = TestHost::start(&plugin("faulty", "faulty", &["ok"], "")).await;
    let before = host.serving("faulty", Duration::from_secs(10)).await;
    let err = host
        .invoke("faulty", "crash", "")
        .await
        .expect_err("the plugin exits mid-call");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    let msg = err.message();
    assert!(
        msg.contains("plugin faulty") && msg.contains(&format!("pid {}", before.pid)),
        "{msg}"
    );
    assert!(msg.contains("exit code 3"), "{msg}");

    let err = host
        .invoke("faulty", "abort", "")
        .await
        .expect_err("the plugin aborts mid-call");
    assert!(err.message().contains("SIGABRT"), "{}", err.message());
    // And it is back.
    assert_eq!(
        host.invoke("faulty", "echo", "again")
            .await
            .expect("restarted"),
        b"again"
    );
}

#[tokio::test]
async fn a_crash_loop_ends_in_failed_and_calls_fail_fast() {
    let host = TestHost::start(
        &(plugin(
            "flaky",
            "faulty",
            &["exit-at-start"],
            "[plugins.flaky.restart]\ninitial_backoff_ms = 10\nmax_crashes = 4\n",
        ) + &plugin("echo", "echo", &[], "")),
    )
    .await;
    let status = wait_until("flaky is failed", Duration::from_secs(10), || async {
        let s = host.status("flaky").await;
        (s.state == PluginState::Failed as i32).then_some(s)
    })
    .await;
    assert!(
        status.last_error.contains("plugin flaky failed: 4 crashes"),
        "{}",
        status.last_error
    );
    assert!(
        status.last_error.contains("exit code 3"),
        "{}",
        status.last_error
    );
    assert!(
        status
            .last_error
            .contains("cannot open /nonexistent/faulty.conf"),
        "{}",
        status.last_error
    );

    let started = Instant::now();
    let err = host
        .invoke("flaky", "echo", "x")
        .await
        .expect_err("failed plugin");
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(
        err.message().contains("plugin flaky failed"),
        "{}",
        err.message()
    );
    assert_eq!(
        host.invoke("echo", "echo", "fine").await.expect("echo"),
        b"fine"
    );
}

#[tokio::test]
async fn calls_made_while_a_plugin_restarts_wait_for_it() {
    let host = TestHost::start(&plugin(
        "slow",
        "faulty",
        &["ok"],
        "[plugins.slow.env]\nFAULTY_START_DELAY_MS = \"400\"\n",
    ))
    .await;
    let before = kill_and_wait_for_restart(&host, "slow").await;
    // The new process takes 400 ms to start; these calls wait rather than fail.
    let started = Instant::now();
    let calls: Vec<_> = (0..4)
        .map(|i| spawn_echo(&host, "slow", format!("held {i}")))
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        let reply = call.await.expect("task").expect("a held call succeeds");
        assert_eq!(reply.payload, format!("held {i}").into_bytes());
        assert_eq!(reply.generation, before.generation + 1);
    }
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "the calls did not wait: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn calls_beyond_max_held_calls_are_refused_not_queued() {
    let host = TestHost::start(&plugin(
        "slow",
        "faulty",
        &["ok"],
        "max_held_calls = 3\n[plugins.slow.env]\nFAULTY_START_DELAY_MS = \"1500\"\n",
    ))
    .await;
    kill_and_wait_for_restart(&host, "slow").await;
    let calls: Vec<_> = (0..6)
        .map(|i| spawn_echo(&host, "slow", format!("{i}")))
        .collect();
    let mut ok = 0;
    let mut refused = 0;
    for call in calls {
        match call.await.expect("task") {
            Ok(_) => ok += 1,
            Err(s) => {
                assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}");
                assert!(
                    s.message().contains("plugin slow") && s.message().contains("max_held_calls"),
                    "{}",
                    s.message()
                );
                refused += 1;
            }
        }
    }
    assert_eq!((ok, refused), (3, 3));
}

/// Starts a call to `plugin`'s `echo` in a task of its own, so that several calls can
/// be waiting at once.
fn spawn_echo(
    host: &TestHost,
    plugin: &str,
    payload: String,
) -> tokio::task::JoinHandle<Result<baton_proto::host::InvokeResponse, tonic::Status>> {
    let mut client = host.client();
    let request = baton_proto::host::InvokeRequest {
        plugin: plugin.into(),
        method: "echo".into(),
        payload: payload.into_bytes().into(),
        metadata: Default::default(),
    };
    tokio::spawn(async move { client.invoke(request).await.map(|r| r.into_inner()) })
}

/// SIGKILLs the plugin's serving process and waits until the host is restarting it;
/// returns the status from before the kill.
async fn kill_and_wait_for_restart(host: &TestHost, name: &str) -> baton_proto::host::PluginStatus {
    let before = host.serving(name, Duration::from_secs(10)).await;
    kill(Pid::from_raw(before.pid as i32), Signal::SIGKILL).expect("kill");
    wait_until(
        "the host is restarting it",
        Duration::from_secs(1),
        || async {
            let s = host.status(name).await;
            (s.state != PluginState::Serving as i32).then_some(())
        },
    )
    .await;
    before
}

/// A call written to a plugin that dies before reading it never ran: the host proves it
/// (the plugin's socket closed with the request unread) and runs it on the restarted
/// plugin instead of failing it. Here the plugin is stopped, the call written to it, and
/// the plugin killed, as a process killed a moment before the call and still being torn
/// down would be.
#[tokio::test]
async fn a_call_the_plugin_died_without_reading_runs_on_its_restart() {
    let host = TestHost::start(&plugin("counter", "counter", &[], "")).await;
    let before = host.serving("counter", Duration::from_secs(10)).await;
    let client = baton_host::ControlClient::connect(&host.socket)
        .await
        .expect("connect");
    let incr = baton_proto::host::InvokeRequest {
        plugin: "counter".into(),
        method: "incr".into(),
        payload: b"k".to_vec().into(),
        metadata: Default::default(),
    };
    // Warm: the control connection is open, so the call below makes the daemon write
    // nothing but the request to the plugin.
    assert_eq!(
        &client.invoke(incr.clone()).await.expect("a call").payload[..],
        b"1"
    );

    let plugin = Pid::from_raw(before.pid as i32);
    kill(plugin, Signal::SIGSTOP).expect("SIGSTOP the plugin");
    let writes = writes_of(host.pid());
    let call = tokio::spawn({
        let client = client.clone();
        let incr = incr.clone();
        async move { client.invoke(incr).await }
    });
    wait_until(
        "the daemon wrote the request to the stopped plugin",
        Duration::from_secs(10),
        || async { (writes_of(host.pid()) > writes).then_some(()) },
    )
    .await;
    kill(plugin, Signal::SIGKILL).expect("SIGKILL the plugin");

    let answer = call
        .await
        .expect("joined")
        .expect("the call runs on the restarted plugin");
    // The counter keeps no checkpoints: the new process counts from zero, once.
    assert_eq!(&answer.payload[..], b"1");
    let after = host.status("counter").await;
    assert!(
        after.generation > before.generation && after.pid != before.pid,
        "{after:?}"
    );
}
