//! Calls through the host reach the right plugin and come back intact.

use std::io::Write;
use std::process::{Command, Stdio};

use baton_tests::{TestHost, bin, plugin};

fn examples() -> String {
    plugin("counter", "counter", &[], "") + &plugin("echo", "echo", &[], "")
}

#[tokio::test]
async fn counter_counts_and_echo_returns_payloads_byte_for_byte() {
    let host = TestHost::start(&examples()).await;
    assert_eq!(host.call_text("counter", "incr", "visits").await, "1");
    assert_eq!(host.call_text("counter", "incr", "visits").await, "2");
    assert_eq!(host.call_text("counter", "get", "visits").await, "2");
    assert_eq!(host.call_text("counter", "get", "other").await, "0");

    let small = b"hello \x00\xff world".to_vec();
    assert_eq!(
        host.invoke("echo", "echo", small.clone())
            .await
            .expect("echo"),
        small
    );
    let big: Vec<u8> = (0..4 << 20)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let back = host
        .invoke("echo", "echo", big.clone())
        .await
        .expect("echo 4 MiB");
    assert_eq!(back.len(), big.len());
    assert!(back == big, "the 4 MiB payload came back changed");
}

#[tokio::test]
async fn errors_name_the_plugin_and_keep_the_plugins_status_code() {
    let host = TestHost::start(&examples()).await;
    let err = host
        .invoke("counter", "nope", "x")
        .await
        .expect_err("unknown method");
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    assert!(
        err.message().contains("plugin counter"),
        "{}",
        err.message()
    );
    assert!(err.message().contains("nope"), "{}", err.message());

    let err = host
        .invoke("counter", "incr", "")
        .await
        .expect_err("empty key");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    let err = host
        .invoke("nosuch", "incr", "x")
        .await
        .expect_err("unknown plugin");
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(
        err.message().contains("nosuch") && err.message().contains("counter"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn the_ctl_cli_lists_and_invokes() {
    let host = TestHost::start(&examples()).await;
    host.serving("counter", std::time::Duration::from_secs(10))
        .await;
    let ctl = |args: &[&str], stdin: Option<&[u8]>| {
        let mut child = Command::new(bin("baton"))
            .arg("ctl")
            .arg("--socket")
            .arg(&host.socket)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run baton ctl");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input)
                .expect("write stdin");
        }
        drop(child.stdin.take());
        child.wait_with_output().expect("baton ctl finishes")
    };
    let out = ctl(&["invoke", "counter", "incr", "cli"], None);
    assert!(out.status.success());
    assert_eq!(out.stdout, b"1");
    let out = ctl(&["invoke", "echo", "echo", "-"], Some(b"from stdin\n"));
    assert_eq!(out.stdout, b"from stdin\n");
    let out = ctl(&["list"], None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("counter") && l.contains("serving")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("echo") && l.contains("serving")),
        "{text}"
    );

    let out = ctl(&["invoke", "counter", "nope"], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("Unimplemented") && err.contains("plugin counter"),
        "{err}"
    );
}

#[tokio::test]
async fn a_payload_over_max_message_bytes_fails_clearly_both_ways() {
    let host = TestHost::start(&plugin("echo", "echo", &[], "max_message_bytes = 65536\n")).await;
    assert_eq!(
        host.invoke("echo", "echo", vec![7u8; 60_000])
            .await
            .expect("under the limit")
            .len(),
        60_000
    );
    let err = host
        .invoke("echo", "echo", vec![7u8; 70_000])
        .await
        .expect_err("over the limit");
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err:?}");
    assert!(
        err.message().contains("plugin echo") && err.message().contains("65536"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn oversized_headers_are_refused_without_harm_to_the_daemon() {
    let host = baton_tests::TestHost::start(&baton_tests::plugin("echo", "echo", &[], "")).await;
    host.serving("echo", std::time::Duration::from_secs(10))
        .await;
    // 100 KiB of metadata: over what the control socket takes in headers (64 KiB).
    let mut request = tonic::Request::new(baton_proto::host::InvokeRequest {
        plugin: "echo".into(),
        method: "echo".into(),
        payload: b"hi".to_vec().into(),
        metadata: Default::default(),
    });
    let big: tonic::metadata::MetadataValue<_> = "x".repeat(100 << 10).parse().expect("ASCII");
    request.metadata_mut().insert("x-big", big);
    let refused = host.client().invoke(request).await;
    assert!(
        refused.is_err(),
        "a request with 100 KiB of headers was served"
    );
    // The daemon serves on, on new connections and old.
    assert_eq!(
        host.call_text("echo", "echo", "still here").await,
        "still here"
    );
}
