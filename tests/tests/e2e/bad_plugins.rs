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

/// What Node.js prints when a module is missing, shaped as it is: a few lines of
/// where, the error, then a long stack and a closing object: the error is far from
/// the end of stderr.
fn node_style_crash_at_start() -> Vec<u8> {
    let mut body = String::from(
        "cat >&2 <<'TRACE'\n\
         node:internal/modules/cjs/loader:1228\n  throw err;\n  ^\n\n\
         Error: Cannot find module 'baton-no-such-module'\n\
         Require stack:\n- /srv/plugin/dist/main.js\n",
    );
    for i in 0..20 {
        body.push_str(&format!(
            "    at Module._load (node:internal/modules/cjs/loader:{}:12)\n",
            1000 + i
        ));
    }
    body.push_str("{\n  code: 'MODULE_NOT_FOUND'\n}\n\nNode.js v20.20.2\nTRACE\nexit 1");
    baton_tests::script(&body)
}

#[tokio::test]
async fn a_failed_start_names_the_first_error_line_of_stderr_not_only_the_last_lines() {
    const ERROR_LINE: &str = "Error: Cannot find module 'baton-no-such-module'";
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("plugin");
    baton_tests::replace_by_rename(
        &path,
        &baton_tests::script(&format!("exec {}", baton_tests::bin("echo").display())),
    );
    let broken = dir.path().join("broken");
    baton_tests::replace_by_rename(&broken, &node_style_crash_at_start());
    let host = TestHost::start(&format!(
        "[plugins.echo]\ncommand = \"{}\"\nsettle_ms = 50\n\n\
         [plugins.broken]\ncommand = \"{}\"\n[plugins.broken.restart]\nmax_crashes = 1\n",
        path.display(),
        broken.display()
    ))
    .await;
    let events = baton_tests::EventLog::start(&host).await;
    host.serving("echo", Duration::from_secs(10)).await;

    // A host that starts on the broken build says why it did not start.
    let e = wait_until(
        "broken reports an error",
        Duration::from_secs(15),
        || async {
            let s = host.status("broken").await;
            (!s.last_error.is_empty()).then_some(s.last_error)
        },
    )
    .await;
    assert!(e.contains(ERROR_LINE), "{e}");
    assert!(
        e.contains("Node.js v20.20.2"),
        "the end is still shown: {e}"
    );

    // And a reload to it rolls back, saying the same.
    baton_tests::replace_by_rename(&path, &node_style_crash_at_start());
    let rollback = events
        .wait_for("rollback", 1, Duration::from_secs(20))
        .await;
    let why = &rollback[0].message;
    assert!(why.contains("plugin echo"), "{why}");
    assert!(why.contains(ERROR_LINE), "{why}");
    assert_eq!(
        host.invoke("echo", "echo", "still here")
            .await
            .expect("the old generation serves on"),
        b"still here"
    );
}
