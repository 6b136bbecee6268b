//! Where a plugin runs: in its config's directory or its `cwd`, with or without a user of
//! its own, never in the runtime directory the host deletes when it exits; and a `cwd`
//! its user cannot enter is refused naming it, not retried as crashes.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use baton_proto::host::PluginState;
use baton_tests::{TestHost, bin, wait_until};

/// The faulty plugin with `extra` settings, restarted quickly and failed at its first
/// crash, so that a start refused as a crash shows at once.
fn faulty(extra: &str) -> String {
    format!(
        "[plugins.faulty]\ncommand = \"{}\"\nargs = [\"ok\"]\n{extra}\n\
         [plugins.faulty.restart]\nmax_crashes = 1\ninitial_backoff_ms = 20\nmax_backoff_ms = 100\n",
        bin("faulty").display()
    )
}

fn cwd_of(pid: u32) -> std::path::PathBuf {
    std::fs::read_link(format!("/proc/{pid}/cwd")).expect("the plugin's working directory")
}

/// Writes a file through the plugin, relative to its working directory, then stops the
/// host and checks the file is still there, in `dir`.
async fn files_written_in_the_working_directory_outlive_the_host(mut host: TestHost, dir: &Path) {
    let status = host.serving("faulty", Duration::from_secs(10)).await;
    assert_eq!(
        cwd_of(status.pid),
        dir.canonicalize().expect("the directory")
    );
    assert_eq!(
        host.call_text("faulty", "write-file", "data.txt 5").await,
        "wrote 5"
    );
    assert_eq!(host.stop(Duration::from_secs(10)), Some(0));
    assert_eq!(
        std::fs::read_to_string(dir.join("data.txt")).expect("the plugin's file outlives the host"),
        "xxxxx"
    );
}

#[tokio::test]
async fn a_plugin_runs_in_its_configs_directory_and_its_files_outlive_the_host() {
    let host = TestHost::start(&faulty("")).await;
    let dir = host.dir.path().to_owned();
    files_written_in_the_working_directory_outlive_the_host(host, &dir).await;
}

#[tokio::test]
async fn a_plugin_with_its_own_user_runs_in_its_cwd_not_in_the_runtime_directory() {
    let Some(nobody) = baton_tests::nobody_when_root("running a plugin as another user") else {
        return;
    };
    // A directory of the plugin's user, as an operator would give it for its data.
    let data = tempfile::Builder::new()
        .prefix("baton-data-")
        .tempdir_in("/tmp")
        .expect("a data dir");
    std::os::unix::fs::chown(
        data.path(),
        Some(nobody.uid.as_raw()),
        Some(nobody.gid.as_raw()),
    )
    .expect("hand the data dir to nobody");
    let host = TestHost::start(&faulty(&format!(
        "user = \"nobody\"\ncwd = \"{}\"",
        data.path().display()
    )))
    .await;
    files_written_in_the_working_directory_outlive_the_host(host, data.path()).await;
}

#[tokio::test]
async fn a_working_directory_closed_to_the_plugins_user_is_named_and_not_a_crash() {
    if baton_tests::nobody_when_root("running a plugin as another user").is_none() {
        return;
    }
    // Root's, mode 0700: closed to nobody.
    let closed = tempfile::Builder::new()
        .prefix("baton-closed-")
        .tempdir_in("/tmp")
        .expect("a dir");
    let dir = closed.path().to_owned();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let host = TestHost::start(&faulty(&format!(
        "user = \"nobody\"\ncwd = \"{}\"",
        dir.display()
    )))
    .await;
    let status = wait_until(
        "the start is refused three times, naming the directory",
        Duration::from_secs(20),
        || async {
            let s = host.status("faulty").await;
            (s.restarts >= 3).then_some(s)
        },
    )
    .await;
    let e = &status.last_error;
    assert!(
        e.contains(&format!("the working directory {}", dir.display()))
            && e.contains("closed to user nobody")
            && e.contains("mode 700")
            && e.contains("`cwd`"),
        "{e}"
    );
    // With max_crashes = 1, a refusal counted as a crash would have failed it.
    assert_ne!(status.state, PluginState::Failed as i32, "{e}");
    // Opened by the operator, it starts at the next try.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).expect("chmod");
    let serving = host.serving("faulty", Duration::from_secs(20)).await;
    assert_eq!(
        cwd_of(serving.pid),
        dir.canonicalize().expect("the directory")
    );
}
