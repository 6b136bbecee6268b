//! Plugins never outlive their host, and a graceful stop leaves nothing behind.

use std::path::PathBuf;
use std::time::Duration;

use baton_tests::{TestHost, alive, plugin, wait_until};

async fn start_two() -> (TestHost, Vec<u32>, PathBuf) {
    let host = TestHost::start(
        &(plugin("counter", "counter", &[], "") + &plugin("echo", "echo", &[], "")),
    )
    .await;
    let a = host.serving("counter", Duration::from_secs(10)).await;
    let b = host.serving("echo", Duration::from_secs(10)).await;
    let dir = PathBuf::from(&a.socket)
        .parent()
        .expect("socket dir")
        .to_owned();
    (host, vec![a.pid, b.pid], dir)
}

#[tokio::test]
async fn sigkill_of_the_host_takes_every_plugin_with_it() {
    let (mut host, pids, _) = start_two().await;
    assert!(pids.iter().all(|&p| alive(p)));
    host.kill();
    wait_until(
        "every plugin process is gone",
        Duration::from_secs(1),
        || async { pids.iter().all(|&p| !alive(p)).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn a_graceful_stop_reaps_plugins_and_removes_the_socket_directory() {
    let (mut host, pids, dir) = start_two().await;
    assert!(dir.is_dir());
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dir)
            .expect("socket dir")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "socket dir mode {mode:o}");
    }
    assert_eq!(
        host.stop(Duration::from_secs(10)),
        Some(0),
        "host exit code"
    );
    assert!(pids.iter().all(|&p| !alive(p)));
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(!host.socket.exists(), "control socket still exists");
    let log = host.log();
    assert!(log.contains("plugin counter stopped: exit code 0"), "{log}");
    assert!(log.contains("plugin echo stopped: exit code 0"), "{log}");
}

#[tokio::test]
async fn a_plugin_that_ignores_shutdown_is_killed_after_the_grace_period() {
    let host = TestHost::start(&plugin(
        "stuck",
        "faulty",
        &["ok"],
        "shutdown_grace_ms = 300\n",
    ))
    .await;
    let s = host.serving("stuck", Duration::from_secs(10)).await;
    // A call that never returns keeps the plugin's graceful shutdown from finishing.
    let client = host.client();
    let _hung = tokio::spawn(async move {
        let mut client = client;
        let _ = client
            .invoke(baton_proto::host::InvokeRequest {
                plugin: "stuck".into(),
                method: "hang".into(),
                payload: Default::default(),
                metadata: Default::default(),
            })
            .await;
    });
    wait_until(
        "the hanging call is in flight",
        Duration::from_secs(5),
        || async { host.log().contains("hanging on purpose").then_some(()) },
    )
    .await;
    let mut host = host;
    assert_eq!(host.stop(Duration::from_secs(10)), Some(0));
    assert!(!alive(s.pid));
    let log = host.log();
    assert!(
        log.contains("plugin stuck stopped: killed by signal 9 (SIGKILL)"),
        "{log}"
    );
}
