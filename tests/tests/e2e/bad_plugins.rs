//! Plugins that cannot start get a clear error naming them and what was seen versus
//! expected, while the other plugins of the host keep serving.

use std::time::Duration;

use baton_tests::{TestHost, plugin, wait_until};

#[tokio::test]
async fn each_bad_plugin_is_named_with_what_was_seen_and_expected() {
    let once = "handshake_timeout_ms = 3000\n";
    let config = plugin("garbage", "faulty", &["garbage"], once)
        + &plugin("oldproto", "faulty", &["wrong-version"], once)
        + &plugin("mute", "faulty", &["silent"], once)
        + &plugin("quitter", "faulty", &["exit-at-start"], once)
        + &plugin("unhealthy", "faulty", &["no-health"], once)
        + &plugin("echo", "echo", &[], "");
    let host = TestHost::start(&config).await;

    let error_of = |name: &'static str| {
        let host = &host;
        async move {
            wait_until(
                &format!("{name} reports an error"),
                Duration::from_secs(15),
                || async {
                    let s = host.status(name).await;
                    (!s.last_error.is_empty()).then_some(s.last_error)
                },
            )
            .await
        }
    };
    let e = error_of("garbage").await;
    assert!(
        e.contains("plugin garbage") && e.contains("Hello! I am a plugin that prints banners."),
        "{e}"
    );
    assert!(e.contains("where the handshake line `baton|1|unix|"), "{e}");

    let e = error_of("oldproto").await;
    assert!(
        e.contains("plugin oldproto") && e.contains("protocol version \"99\", this host speaks 1"),
        "{e}"
    );

    let e = error_of("mute").await;
    assert!(
        e.contains("plugin mute") && e.contains("printed no handshake line"),
        "{e}"
    );
    assert!(e.contains("within 3s"), "{e}");

    let e = error_of("quitter").await;
    assert!(
        e.contains("plugin quitter") && e.contains("exit code 3"),
        "{e}"
    );
    assert!(e.contains("cannot open /nonexistent/faulty.conf"), "{e}");

    let e = error_of("unhealthy").await;
    assert!(
        e.contains("plugin unhealthy") && e.contains("did not report SERVING"),
        "{e}"
    );

    // Meanwhile the good plugin serves.
    assert_eq!(
        host.invoke("echo", "echo", "still here")
            .await
            .expect("echo"),
        b"still here"
    );
    // The host logs each failure too.
    let log = host.log();
    for name in ["garbage", "oldproto", "mute", "quitter", "unhealthy"] {
        assert!(
            log.contains(&format!("plugin {name} (generation 1) failed to start")),
            "{name}: {log}"
        );
    }
}

#[tokio::test]
async fn stray_stdout_after_the_handshake_is_logged_not_fatal() {
    let host = TestHost::start(&plugin("faulty", "faulty", &["ok"], "")).await;
    host.invoke("faulty", "stdout", "").await.expect("call");
    wait_until(
        "the stray line is logged",
        Duration::from_secs(5),
        || async {
            host.log()
                .contains("stray stdout after the handshake")
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        host.invoke("faulty", "echo", "ok")
            .await
            .expect("still serving"),
        b"ok"
    );
}
