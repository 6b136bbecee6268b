//! The control socket's path is shared ground: a host removes only a socket it bound
//! itself, only a stale socket is ever taken over, and anything else there is left alone.

use std::time::Duration;

use baton_tests::{TestHost, plugin, run_until_exit};

#[tokio::test]
async fn a_stopped_host_leaves_a_socket_that_is_no_longer_its_own() {
    let shared = tempfile::tempdir().expect("temp dir");
    let socket = shared.path().join("s.sock");
    let mut first = TestHost::start_at(&socket, &plugin("echo", "echo", &[], "")).await;
    // As `rm -f baton.sock` in a script would: the first host still runs, unreachable.
    std::fs::remove_file(&socket).expect("remove the first host's socket");
    let second = TestHost::start_at(&socket, &plugin("echo", "echo", &[], "")).await;
    second.serving("echo", Duration::from_secs(10)).await;

    assert_eq!(
        first.stop(Duration::from_secs(10)),
        Some(0),
        "the first host stops"
    );
    assert!(
        socket.exists(),
        "the first host removed {}, which the second host had bound",
        socket.display()
    );
    assert_eq!(
        second.call_text("echo", "echo", "still here").await,
        "still here"
    );
    let fresh = baton_tests::unix_channel(&socket).await;
    assert!(
        fresh.is_ok(),
        "a new client reaches the second host: {fresh:?}"
    );
}

#[test]
fn a_file_that_is_not_a_socket_is_never_deleted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let precious = dir.path().join("precious.txt");
    std::fs::write(&precious, "do not delete\n").expect("write the file");
    let config = dir.path().join("baton.toml");
    std::fs::write(&config, "socket = \"precious.txt\"\n").expect("write the config");

    let (code, stderr) = run_until_exit(&config, Duration::from_secs(10));
    assert_eq!(
        std::fs::read_to_string(&precious).ok().as_deref(),
        Some("do not delete\n"),
        "the file at the socket path was replaced; host said: {stderr}"
    );
    assert_eq!(code, Some(64), "{stderr}");
    for part in [
        precious.display().to_string(),
        "`socket`".into(),
        "not a socket".into(),
    ] {
        assert!(stderr.contains(&part), "{part:?} missing from: {stderr}");
    }
}

#[tokio::test]
async fn a_stale_socket_is_taken_over_and_a_live_one_is_not() {
    let shared = tempfile::tempdir().expect("temp dir");
    let socket = shared.path().join("s.sock");
    // A socket file nobody listens on any more, as a killed host leaves behind.
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind"));
    let host = TestHost::start_at(&socket, "").await;
    assert!(host.list().await.is_empty());

    let config = shared.path().join("second.toml");
    std::fs::write(&config, format!("socket = \"{}\"\n", socket.display())).expect("config");
    let (code, stderr) = run_until_exit(&config, Duration::from_secs(10));
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains("in use"), "{stderr}");
    assert!(host.list().await.is_empty(), "the first host still answers");
}

#[tokio::test]
async fn with_control_spin_us_the_daemon_polls_between_close_calls_and_sleeps_past_its_bound() {
    let spins = TestHost::start(&format!(
        "control_spin_us = 1000\n\n{}",
        plugin("echo", "faulty", &["ok"], "")
    ))
    .await;
    let sleeps = TestHost::start(&plugin("echo", "faulty", &["ok"], "")).await;
    for host in [&spins, &sleeps] {
        host.serving("echo", Duration::from_secs(10)).await;
    }
    // 100 calls, 2 ms apart: after each answer the spinning daemon polls for 1 ms.
    let spun = baton_tests::cpu_used_during(spins.pid(), spins.paced_echoes("echo")).await;
    let slept = baton_tests::cpu_used_during(sleeps.pid(), sleeps.paced_echoes("echo")).await;
    assert!(
        spun >= slept + Duration::from_millis(40),
        "the spinning daemon used {spun:?} of CPU, the other {slept:?}"
    );
    let idle =
        baton_tests::cpu_used_during(spins.pid(), tokio::time::sleep(Duration::from_millis(500)))
            .await;
    assert!(idle <= Duration::from_millis(30), "idle, it used {idle:?}");
}
