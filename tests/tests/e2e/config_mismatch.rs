//! A build the `services` gate refuses at start (it lacks a service the config
//! requires) is a config mismatch: `failed` at once with the reason in its status, not
//! a crash retried until the breaker trips; a config that fixes it starts it.

use std::time::Duration;

use baton_proto::host::PluginState;
use baton_tests::{TestHost, bin, plugin, wait_until};

const REQUIRED: &str = "kv.v1.KV";

#[tokio::test]
async fn a_build_lacking_a_required_service_fails_at_once_not_as_a_crash() {
    let echo = plugin(
        "echo",
        "echo",
        &[],
        &format!("services = [\"{REQUIRED}\"]\n"),
    );
    let host = TestHost::start(&echo).await;
    let status = wait_until(
        "echo is failed or restarting",
        Duration::from_secs(10),
        || async {
            let s = host.status("echo").await;
            [PluginState::Failed as i32, PluginState::Crashed as i32]
                .contains(&s.state)
                .then_some(s)
        },
    )
    .await;
    assert_eq!(
        status.state,
        PluginState::Failed as i32,
        "retried as a crash: {status:?}"
    );
    assert_eq!((status.generation, status.restarts), (1, 0), "{status:?}");
    for words in [
        "plugin echo",
        &format!("does not serve {REQUIRED} (required by `services` in the config)"),
        "a config mismatch",
    ] {
        assert!(status.last_error.contains(words), "{words:?}: {status:?}");
    }
    let refused = host.invoke("echo", "echo", "x").await.expect_err("failed");
    assert!(
        refused
            .message()
            .contains(&format!("does not serve {REQUIRED}")),
        "{}",
        refused.message()
    );

    // Not retried meanwhile; the config without the requirement starts it.
    let path = host.dir.path().join("baton.toml");
    let fixed = format!(
        "socket = \"{}\"\n\n[plugins.echo]\ncommand = \"{}\"\n",
        host.socket.display(),
        bin("echo").display()
    );
    assert_eq!(host.status("echo").await.generation, 1);
    baton_tests::replace_by_rename(&path, fixed.as_bytes());
    let (ok, _, err) = host.ctl(&["reload-config"]);
    assert!(ok, "{err}");
    host.serving("echo", Duration::from_secs(10)).await;
    assert_eq!(host.call_text("echo", "echo", "x").await, "x");
}
