//! Start the daemon, then build for the first time: a plugin whose binary, and even the
//! directory it goes in, does not exist yet is accepted in dev mode, waits with its calls
//! held, and starts once a build puts the binary in place.

use std::time::Duration;

use baton_proto::host::PluginState;
use baton_tests::{TestHost, bin, wait_until};

#[tokio::test]
async fn config_a_binary_built_after_the_host_started_starts_when_it_appears() {
    let project = tempfile::tempdir().expect("temp dir");
    let binary = project.path().join("target/debug/echo");
    let never = project.path().join("elsewhere/bin/never");
    let host = TestHost::start(&format!(
        "[plugins.echo]\ncommand = \"{}\"\nsettle_ms = 50\ncall_timeout_ms = 20000\n\n\
         [plugins.never]\ncommand = \"{}\"\ncall_timeout_ms = 300\n",
        binary.display(),
        never.display()
    ))
    .await;

    // Each says what it waits for; neither counts as a crash.
    for (name, path) in [("echo", &binary), ("never", &never)] {
        let status = wait_until(
            &format!("{name} says it waits for its binary"),
            Duration::from_secs(10),
            || async {
                let s = host.status(name).await;
                s.last_error.contains("does not exist yet").then_some(s)
            },
        )
        .await;
        assert_eq!(status.state, PluginState::Starting as i32, "{status:?}");
        assert_eq!(status.restarts, 0, "{status:?}");
        assert!(
            status.last_error.contains(&path.display().to_string()),
            "{status:?}"
        );
    }

    // A call waits up to call_timeout_ms, then says why it could not be served.
    let err = host
        .invoke("never", "echo", "x")
        .await
        .expect_err("no binary, no answer");
    assert!(
        err.message().contains(&format!(
            "its binary {} does not exist yet",
            never.display()
        )),
        "{}",
        err.message()
    );

    // A call made before the build is held, and answered once the plugin serves.
    let held = {
        let mut client = host.client();
        tokio::spawn(async move {
            client
                .invoke(baton_proto::host::InvokeRequest {
                    plugin: "echo".into(),
                    method: "echo".into(),
                    payload: b"held".to_vec().into(),
                    metadata: Default::default(),
                })
                .await
        })
    };

    // The build: the directories one at a time, then the binary renamed into place.
    std::fs::create_dir(project.path().join("target")).expect("mkdir target");
    std::fs::create_dir(project.path().join("target/debug")).expect("mkdir debug");
    let staged = project.path().join("target/debug/.echo.partial");
    std::fs::copy(bin("echo"), &staged).expect("stage the binary");
    std::fs::rename(&staged, &binary).expect("rename into place");

    let status = host.serving("echo", Duration::from_secs(10)).await;
    assert!(status.last_error.is_empty(), "{status:?}");
    assert_eq!(status.restarts, 0, "{status:?}");
    let answer = held
        .await
        .expect("the held call's task")
        .expect("the held call is answered");
    assert_eq!(answer.into_inner().payload.as_ref(), b"held");
    assert_eq!(host.call_text("echo", "echo", "hello").await, "hello");
    // The other still waits, untouched.
    assert_eq!(
        host.status("never").await.state,
        PluginState::Starting as i32
    );
}
