//! The host's files in its runtime directory: nothing a plugin's user plants there can
//! redirect what the host writes, and the host runs only what the OS would run.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use baton_proto::host::{PluginState, ReloadRequest};
use baton_tests::{EventLog, TestHost, bin, process_env, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The directory a plugin binds its socket in, read from its environment.
fn socket_dir_of(pid: u32) -> PathBuf {
    let socket = process_env(pid, "BATON_PLUGIN_SOCKET").expect("the plugin's socket variable");
    Path::new(&socket)
        .parent()
        .expect("a socket directory")
        .to_owned()
}

async fn serving_generation(
    host: &TestHost,
    name: &str,
    n: u64,
) -> baton_proto::host::PluginStatus {
    wait_until(
        &format!("{name} serves generation {n}"),
        Duration::from_secs(10),
        || async {
            let s = host.status(name).await;
            (s.generation >= n && s.state == PluginState::Serving as i32).then_some(s)
        },
    )
    .await
}

#[tokio::test]
async fn links_planted_by_the_plugins_user_never_redirect_the_hosts_writes() {
    let Some(nobody) = baton_tests::nobody_when_root("running a plugin as another user") else {
        return;
    };
    // A root-owned file the plugin's user must never be able to touch.
    let victim_dir = tempfile::tempdir().expect("temp dir");
    let victim = victim_dir.path().join("root-only.conf");
    std::fs::write(&victim, "precious\n").expect("write the victim");
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).expect("chmod");

    let host = TestHost::start(&format!(
        "[plugins.counter]\ncommand = \"{}\"\nuser = \"nobody\"\n",
        bin("counter").display()
    ))
    .await;
    assert_eq!(host.call_text("counter", "incr", "k").await, "1");
    let first = host.serving("counter", Duration::from_secs(10)).await;
    let plugin_dir = socket_dir_of(first.pid);
    assert_eq!(
        std::fs::metadata(&plugin_dir)
            .expect("the plugin's directory")
            .uid(),
        nobody.uid.as_raw(),
        "the plugin's user owns its socket directory"
    );
    // As the plugin's user would: links at every name a later generation could use.
    for n in 2..=4 {
        for name in [
            format!("counter.{n}.bin"),
            format!("counter.{n}"),
            format!("counter.{n}.sock"),
        ] {
            let link = plugin_dir.join(name);
            std::os::unix::fs::symlink(&victim, &link).expect("plant a link");
            std::os::unix::fs::lchown(&link, Some(nobody.uid.as_raw()), Some(nobody.gid.as_raw()))
                .expect("hand the link to the plugin user");
        }
    }
    kill(Pid::from_raw(first.pid as i32), Signal::SIGKILL).expect("kill the plugin");
    let second = serving_generation(&host, "counter", 2).await;
    let untouched = |victim: &Path| {
        let meta = std::fs::metadata(victim).expect("the victim is still there");
        assert_eq!(std::fs::read_to_string(victim).expect("read"), "precious\n");
        assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o600));
    };
    untouched(&victim);
    host.client()
        .reload(ReloadRequest {
            plugin: "counter".into(),
        })
        .await
        .expect("a reload");
    serving_generation(&host, "counter", second.generation + 1).await;

    untouched(&victim);
    // The binary the plugin runs is not in a directory its user can write.
    let exe = std::fs::read_link(format!("/proc/{}/exe", host.status("counter").await.pid))
        .expect("the plugin's executable");
    assert!(!exe.starts_with(&plugin_dir), "{}", exe.display());
}

#[tokio::test]
async fn a_binary_without_its_execute_bit_is_not_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("counter");
    std::fs::copy(bin("counter"), &path).expect("stage");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let host = TestHost::start(&format!(
        "[plugins.counter]\ncommand = \"{}\"\nreload = \"watch\"\nsettle_ms = 50\n",
        path.display()
    ))
    .await;
    let events = EventLog::start(&host).await;
    assert_eq!(host.call_text("counter", "incr", "k").await, "1");

    // Deployed without its execute bit: the OS would not run it, so neither does baton.
    let tmp = dir.path().join("counter.new");
    std::fs::copy(bin("counter"), &tmp).expect("stage");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    std::fs::rename(&tmp, &path).expect("rename into place");
    let rollback = events
        .wait_for("rollback", 1, Duration::from_secs(10))
        .await;
    let why = &rollback[0].message;
    assert!(
        why.contains("may not execute it") && why.contains("mode 644"),
        "{why}"
    );
    assert_eq!(host.call_text("counter", "get", "k").await, "1");
    assert_eq!(host.status("counter").await.generation, 1);

    // Made executable, the same build goes live, state kept.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    serving_generation(&host, "counter", 2).await;
    assert_eq!(host.call_text("counter", "get", "k").await, "1");

    // And a plugin whose binary was never executable does not start at all.
    let other = dir.path().join("plain");
    std::fs::copy(bin("counter"), &other).expect("stage");
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let refused = TestHost::start(&format!(
        "[plugins.counter]\ncommand = \"{}\"\n[plugins.counter.restart]\nmax_crashes = 1\n",
        other.display()
    ))
    .await;
    let e = wait_until(
        "the plain file is refused",
        Duration::from_secs(10),
        || async {
            let s = refused.status("counter").await;
            (s.state == PluginState::Failed as i32).then_some(s.last_error)
        },
    )
    .await;
    assert!(e.contains("may not execute it"), "{e}");
}

#[tokio::test]
async fn a_long_plugin_name_keeps_reloading_past_generation_ten() {
    // A runtime directory of 22 bytes: with the plugin's 64-character name in its socket
    // path, generation 1 would fit the 107-byte limit and generation 10 would not.
    let runtime = tempfile::Builder::new()
        .prefix("")
        .rand_bytes(17)
        .tempdir_in("/tmp")
        .expect("a runtime dir");
    let runtime_path = runtime.path().to_str().expect("utf-8").to_owned();
    assert_eq!(runtime_path.len(), 22, "{runtime_path}");
    let name = "n".repeat(64);
    let host = TestHost::start_with_env(
        &format!(
            "[plugins.{name}]\ncommand = \"{}\"\nreload = \"manual\"\n",
            bin("counter").display()
        ),
        &[("XDG_RUNTIME_DIR", &runtime_path)],
    )
    .await;
    assert_eq!(host.call_text(&name, "incr", "k").await, "1");
    for _ in 0..10 {
        host.client()
            .reload(ReloadRequest {
                plugin: name.clone(),
            })
            .await
            .expect("every reload goes through");
    }
    let status = serving_generation(&host, &name, 11).await;
    assert!(status.socket.len() <= 107, "{}", status.socket);
    assert_eq!(host.call_text(&name, "get", "k").await, "1");
}

#[tokio::test]
async fn socket_paths_that_cannot_fit_are_refused_before_anything_runs() {
    let counter = format!(
        "[plugins.counter]\ncommand = \"{}\"\n",
        bin("counter").display()
    );
    // The control socket is a config field: its file, line, field and length are named.
    let long = format!("/tmp/{}/baton.sock", "d".repeat(110));
    let (code, stderr) =
        baton_tests::run_refused_config("baton.toml", &format!("socket = \"{long}\"\n{counter}"));
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("baton.toml:1:1")
            && stderr.contains("socket")
            && stderr.contains("126 bytes"),
        "{stderr}"
    );
    // The runtime directory comes from the environment: named, with the limit.
    let deep = tempfile::Builder::new()
        .prefix(&"r".repeat(60))
        .tempdir()
        .expect("a long runtime dir");
    let (code, stderr) = baton_tests::run_refused_config_with_env(
        "baton.toml",
        &format!("socket = \"baton.sock\"\n{counter}"),
        &[("XDG_RUNTIME_DIR", deep.path().to_str().expect("utf-8"))],
    );
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("XDG_RUNTIME_DIR") && stderr.contains("107-byte limit"),
        "{stderr}"
    );
}
