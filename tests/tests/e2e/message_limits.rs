//! A payload over a plugin's `max_message_bytes` fails with OUT_OF_RANGE that names the
//! plugin, the size, the limit and the config key, whatever its size and whichever way
//! it came (control API or `baton ctl`), and it counts as a failed call.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use baton_proto::host::InvokeRequest;
use baton_proto::host::supervisor_client::SupervisorClient;
use baton_tests::{TestHost, bin, plugin, unix_channel};

/// Over 64 MiB (the default limit) and over the control API's own decoding limit.
const HUGE: usize = 68_000_000;

fn assert_names_everything(message: &str, plugin: &str, size: usize, limit: usize) {
    for part in [
        format!("plugin {plugin}"),
        format!("{size} bytes"),
        format!("max_message_bytes = {limit}"),
    ] {
        assert!(message.contains(&part), "{part:?} missing from: {message}");
    }
}

fn ctl_invoke(host: &TestHost, plugin: &str, payload: &[u8]) -> (bool, String) {
    let mut child = Command::new(bin("baton"))
        .arg("ctl")
        .arg("--socket")
        .arg(&host.socket)
        .args(["invoke", plugin, "echo", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run baton ctl");
    let mut stdin = child.stdin.take().expect("stdin");
    // The CLI may answer before reading everything; a broken pipe is fine then.
    let _ = stdin.write_all(payload);
    drop(stdin);
    let out = child.wait_with_output().expect("baton ctl finishes");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn oversized_payloads_fail_with_out_of_range_on_every_path_and_are_counted() {
    let host = TestHost::start(
        &(plugin("echo", "echo", &[], "max_message_bytes = 1000000\n")
            + &plugin("big", "echo", &[], "")),
    )
    .await;
    host.serving("echo", Duration::from_secs(10)).await;
    host.serving("big", Duration::from_secs(10)).await;
    // A stock client: no limit on what it sends, so the host is the one to judge.
    let mut client = SupervisorClient::new(unix_channel(&host.socket).await.expect("connect"));
    let invoke = |plugin: &str, size: usize| InvokeRequest {
        plugin: plugin.into(),
        method: "echo".into(),
        payload: vec![7u8; size].into(),
        metadata: Default::default(),
    };

    let mut refused = 0;
    for (plugin, size, limit) in [
        ("echo", 2_000_000, 1_000_000),
        ("echo", HUGE, 1_000_000),
        ("big", HUGE, 64 << 20),
    ] {
        let err = client
            .invoke(invoke(plugin, size))
            .await
            .expect_err("over the limit");
        assert_eq!(
            err.code(),
            tonic::Code::OutOfRange,
            "{plugin}, {size}: {err:?}"
        );
        assert_names_everything(err.message(), plugin, size, limit);
        if plugin == "echo" {
            refused += 1;
        }
    }
    // The connection is still good, and a payload under the limit goes through.
    let back = client
        .invoke(invoke("echo", 900_000))
        .await
        .expect("under the limit");
    assert_eq!(back.into_inner().payload.len(), 900_000);

    for size in [2_000_000, HUGE] {
        let (ok, stderr) = ctl_invoke(&host, "echo", &vec![7u8; size]);
        assert!(!ok, "{stderr}");
        assert!(stderr.contains("OutOfRange"), "{stderr}");
        assert_names_everything(&stderr, "echo", size, 1_000_000);
        refused += 1;
    }

    let echo = host.status("echo").await;
    assert_eq!(
        (echo.calls, echo.errors),
        (refused + 1, refused),
        "every refused call counts as a failed call"
    );
    let big = host.status("big").await;
    assert_eq!((big.calls, big.errors), (1, 1));
}
