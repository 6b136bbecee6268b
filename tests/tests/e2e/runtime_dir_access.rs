//! A plugin with a user of its own under a runtime directory that user cannot pass
//! through (root's `/run/user/0` is 0700): refused at start naming the directory and
//! the fix, retried as the host's problem, never counted as the plugin's crash.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use baton_proto::host::PluginState;
use baton_tests::{TestHost, bin, wait_until};

#[tokio::test]
async fn a_runtime_directory_closed_to_the_plugins_user_is_named_and_not_a_crash() {
    if baton_tests::nobody_when_root("running a plugin as another user").is_none() {
        return;
    }
    // Like /run/user/0: root's, mode 0700. Short, for the socket paths under it.
    let runtime = tempfile::Builder::new()
        .prefix("rt-")
        .tempdir_in("/tmp")
        .expect("a runtime dir");
    std::fs::set_permissions(runtime.path(), std::fs::Permissions::from_mode(0o700))
        .expect("chmod");
    let host = TestHost::start_with_env(
        &format!(
            "[plugins.counter]\ncommand = \"{}\"\nuser = \"nobody\"\ncwd = \"/\"\n\
             [plugins.counter.restart]\nmax_crashes = 1\ninitial_backoff_ms = 20\nmax_backoff_ms = 100\n",
            bin("counter").display()
        ),
        &[("XDG_RUNTIME_DIR", runtime.path().to_str().expect("utf-8"))],
    )
    .await;
    let status = wait_until(
        "the start is refused three times, naming the directory",
        Duration::from_secs(20),
        || async {
            let s = host.status("counter").await;
            (s.restarts >= 3 || s.state == PluginState::Failed as i32).then_some(s)
        },
    )
    .await;
    let e = &status.last_error;
    // With max_crashes = 1, a refusal counted as a crash would have failed it.
    assert_ne!(status.state, PluginState::Failed as i32, "{e}");
    assert!(
        e.contains("the runtime directory")
            && e.contains("closed to user nobody")
            && e.contains(&format!("{} (mode 700", runtime.path().display()))
            && e.contains("XDG_RUNTIME_DIR"),
        "{e}"
    );
    // Let through by the operator, it starts at the next try.
    std::fs::set_permissions(runtime.path(), std::fs::Permissions::from_mode(0o711))
        .expect("chmod");
    host.serving("counter", Duration::from_secs(20)).await;
    assert_eq!(host.call_text("counter", "incr", "k").await, "1");
}
