//! Calls through the host reach the right plugin and come back intact.

use std::io::Write;
use std::process::{Command, Stdio};

use baton_tests::{TestHost, bin, plugin, writes_of};

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

/// `baton_host::ControlClient`, the Rust caller's client of a daemon: its `Invoke` (made
/// by hand) gets what the generated client over tonic's `Channel` gets, answer for
/// answer and failure for failure, and its other calls share its connection.
#[tokio::test]
async fn a_rust_caller_of_the_daemon_gets_what_the_generated_client_gets() {
    use baton_host::ControlClient;
    use baton_proto::host::InvokeRequest;
    use std::time::Duration;

    let host = TestHost::start(
        &(examples()
            + &plugin("small", "echo", &[], "max_message_bytes = 4096\n")
            + &plugin("stuck", "faulty", &[], "")),
    )
    .await;
    host.serving("small", Duration::from_secs(10)).await;
    let ours = ControlClient::connect(&host.socket).await.expect("connect");
    let mut generated = host.client();
    let big: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 253) as u8).collect();
    let calls = [
        ("echo", "echo", Vec::new()),
        ("echo", "echo", b"hello \x00\xff".to_vec()),
        ("echo", "echo", big),
        ("counter", "incr", b"visits".to_vec()),
        ("counter", "nope", b"x".to_vec()),
        ("counter", "incr", Vec::new()),
        ("nosuch", "incr", b"x".to_vec()),
        ("small", "echo", vec![1u8; 5_000]),
        ("small", "echo", vec![1u8; 200_000]),
    ];
    for (plugin, method, payload) in calls {
        let request = InvokeRequest {
            plugin: plugin.into(),
            method: method.into(),
            payload: payload.into(),
            metadata: Default::default(),
        };
        let by_hand = ours.invoke(request.clone()).await;
        let by_tonic = generated
            .invoke(request.clone())
            .await
            .map(|r| r.into_inner());
        match (by_hand, by_tonic) {
            (Ok(a), Ok(b)) => {
                // Both counted: the counter moved by one each time.
                if method == "incr" {
                    let (a, b): (u64, u64) = (
                        String::from_utf8_lossy(&a.payload)
                            .parse()
                            .expect("a count"),
                        String::from_utf8_lossy(&b.payload)
                            .parse()
                            .expect("a count"),
                    );
                    assert_eq!(b, a + 1, "{plugin}.{method}");
                } else {
                    assert!(a.payload == b.payload, "{plugin}.{method}: payloads differ");
                    assert_eq!(a.payload.len(), request.payload.len());
                }
                assert_eq!(a.generation, b.generation, "{plugin}.{method}");
                assert!(a.generation > 0, "{plugin}.{method}: a generation");
            }
            (Err(a), Err(b)) => assert_eq!(
                (a.code(), a.message()),
                (b.code(), b.message()),
                "{plugin}.{method}"
            ),
            (a, b) => panic!("{plugin}.{method}: by hand {a:?}, by tonic {b:?}"),
        }
    }

    // A deadline the plugin does not answer within (it never answers): the daemon
    // gives up when it passes, long before the plugin's own call timeout (30 s).
    host.serving("stuck", Duration::from_secs(10)).await;
    let asked = std::time::Instant::now();
    let late = ours
        .clone()
        .timeout(Duration::from_millis(300))
        .invoke(InvokeRequest {
            plugin: "stuck".into(),
            method: "hang".into(),
            payload: Default::default(),
            metadata: Default::default(),
        })
        .await
        .expect_err("past its deadline");
    assert_eq!(late.code(), tonic::Code::DeadlineExceeded, "{late:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "{:?}",
        asked.elapsed()
    );

    // A request over the client's own answer limit is the daemon's to judge: refused
    // naming the plugin and its limit, and counted, as from any other client.
    let over = ours
        .clone()
        .max_message(1 << 20)
        .invoke(InvokeRequest {
            plugin: "small".into(),
            method: "echo".into(),
            payload: vec![1u8; 2 << 20].into(),
            metadata: Default::default(),
        })
        .await
        .expect_err("over the plugin's limit");
    assert_eq!(over.code(), tonic::Code::OutOfRange, "{over:?}");
    assert!(
        over.message().contains("plugin small")
            && over.message().contains("max_message_bytes = 4096"),
        "{}",
        over.message()
    );

    // The rest of the control API, on the same connection.
    let status = ours
        .supervisor()
        .status(baton_proto::host::StatusRequest {
            plugin: "echo".into(),
        })
        .await
        .expect("status")
        .into_inner();
    assert!(status.calls >= 4, "{status:?}");

    // No daemon there: said at once, with the path.
    let missing = host.socket.with_file_name("nobody-here.sock");
    let err = ControlClient::connect(&missing)
        .await
        .expect_err("no daemon");
    assert!(err.to_string().contains("nobody-here.sock"), "{err}");
}

/// A call through the daemon costs the daemon two writes: the request on to the plugin,
/// the answer back to the caller. Nothing else per call, such as waking its own runtime
/// to arm the call's deadline (an eventfd write per call before the deadline anchor).
#[tokio::test]
async fn a_call_through_the_daemon_costs_the_daemon_two_writes() {
    let host = TestHost::start(&examples()).await;
    host.serving("echo", std::time::Duration::from_secs(10))
        .await;
    let client = baton_host::ControlClient::connect(&host.socket)
        .await
        .expect("connect");
    let request = baton_proto::host::InvokeRequest {
        plugin: "echo".into(),
        method: "echo".into(),
        payload: b"ping".to_vec().into(),
        metadata: Default::default(),
    };
    for _ in 0..50 {
        client
            .invoke(request.clone())
            .await
            .expect("a warm-up call");
    }
    const CALLS: u64 = 500;
    let before = writes_of(host.pid());
    for _ in 0..CALLS {
        client.invoke(request.clone()).await.expect("a call");
    }
    let per_call = (writes_of(host.pid()) - before) as f64 / CALLS as f64;
    assert!(
        (1.9..2.5).contains(&per_call),
        "{per_call:.2} write-like system calls per call in the daemon"
    );
}
