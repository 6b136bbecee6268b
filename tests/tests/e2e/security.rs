//! Production mode lets nothing run that does not belong: pinned SHA-256, binaries and
//! directories writable by their owner only, and a cleared environment.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use baton_proto::host::PluginState;
use baton_tests::{
    TestHost, Watched, bin, ctl_at, ctl_command, plugin, replace_by_rename, wait_until,
};

fn stage() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("baton-prod-")
        .tempdir()
        .expect("temp dir");
    let path = dir.path().join("counter");
    std::fs::copy(bin("counter"), &path).expect("stage");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    (dir, path)
}

fn sha256(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a hash")
        .to_owned()
}

fn production(path: &Path, extra: &str) -> String {
    format!(
        "mode = \"production\"\n[plugins.counter]\ncommand = \"{}\"\n{extra}\n[plugins.counter.restart]\nmax_crashes = 2\n",
        path.display()
    )
}

async fn refusal(host: &TestHost) -> String {
    wait_until(
        "the counter is refused",
        Duration::from_secs(10),
        || async {
            let s = host.status("counter").await;
            (s.state == PluginState::Failed as i32).then_some(s.last_error)
        },
    )
    .await
}

#[tokio::test]
async fn production_refuses_unpinned_mismatched_and_writable_binaries() {
    let (dir, path) = stage();
    // No pin at all is the operator's to fix: refused with the config, nothing runs.
    let config = dir.path().join("baton.toml");
    std::fs::write(&config, production(&path, "")).expect("write the config");
    let (code, e) = baton_tests::run_until_exit(&config, Duration::from_secs(5));
    assert_eq!(code, Some(64), "{e}");
    assert!(
        e.contains("plugins.counter.sha256") && e.contains("production mode runs only pinned"),
        "{e}"
    );
    assert!(
        e.contains(&format!("{}.sha256", path.display())),
        "names the pin file: {e}"
    );

    std::fs::write(
        path.with_extension("sha256"),
        format!("{}  counter\n", "0".repeat(64)),
    )
    .expect("pin");
    let host = TestHost::start(&production(&path, "")).await;
    let e = refusal(&host).await;
    assert!(
        e.contains(&format!("its SHA-256 is {}", sha256(&path)))
            && e.contains("but the pin says 0000"),
        "{e}"
    );
    drop(host);

    // The right pin, from the file in sha256sum's format: it runs.
    std::fs::write(
        path.with_extension("sha256"),
        format!("{}  counter\n", sha256(&path)),
    )
    .expect("pin");
    let host = TestHost::start(&production(&path, "")).await;
    assert_eq!(host.call_text("counter", "incr", "k").await, "1");
    // A pin removed after the config was loaded still stops the next start.
    std::fs::remove_file(path.with_extension("sha256")).expect("remove the pin");
    let err = host
        .client()
        .reload(baton_proto::host::ReloadRequest {
            plugin: "counter".into(),
        })
        .await
        .expect_err("an unpinned binary is refused");
    assert!(
        err.message().contains("no SHA-256 pin"),
        "{}",
        err.message()
    );
    drop(host);
    std::fs::write(
        path.with_extension("sha256"),
        format!("{}  counter\n", sha256(&path)),
    )
    .expect("pin");

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o775)).expect("chmod");
    let host = TestHost::start(&production(&path, "")).await;
    let e = refusal(&host).await;
    assert!(
        e.contains("is group-writable (mode 775)") && e.contains("chmod go-w"),
        "{e}"
    );
    drop(host);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
        .expect("chmod dir");
    let host = TestHost::start(&production(&path, "")).await;
    let e = refusal(&host).await;
    assert!(
        e.contains(&format!("{} is world-writable", dir.path().display())),
        "{e}"
    );
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
        .expect("chmod dir");
}

#[tokio::test]
async fn a_tampered_binary_is_rolled_back_and_a_pin_in_the_config_works() {
    let (_dir, path) = stage();
    let pin = sha256(&path);
    let host = TestHost::start(&production(&path, &format!("sha256 = \"{pin}\""))).await;
    assert_eq!(host.call_text("counter", "incr", "k").await, "1");
    // Someone swaps the binary (here: for the echo plugin) without the operator's pin.
    replace_by_rename(&path, &std::fs::read(bin("echo")).expect("read"));
    let err = host
        .client()
        .reload(baton_proto::host::ReloadRequest {
            plugin: "counter".into(),
        })
        .await
        .expect_err("the tampered binary is refused");
    assert!(
        err.message().contains("but the pin says"),
        "{}",
        err.message()
    );
    assert_eq!(
        host.call_text("counter", "get", "k").await,
        "1",
        "the old generation serves on"
    );
}

#[tokio::test]
async fn production_plugins_get_a_cleared_environment() {
    let (_dir, path) = stage();
    let pin = sha256(&path);
    let env = [
        ("BATON_TEST_SECRET", "hunter2"),
        ("BATON_TEST_WANTED", "yes"),
    ];
    let host = TestHost::start_with_env(
        &production(
            &path,
            &format!("sha256 = \"{pin}\"\ninherit_env = [\"BATON_TEST_WANTED\"]"),
        ),
        &env,
    )
    .await;
    let pid = host.serving("counter", Duration::from_secs(10)).await.pid;
    let environ =
        String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ")).expect("environ"))
            .replace('\0', "\n");
    assert!(!environ.contains("BATON_TEST_SECRET"), "{environ}");
    assert!(environ.contains("BATON_TEST_WANTED=yes"), "{environ}");
    assert!(environ.lines().any(|l| l.starts_with("PATH=")), "{environ}");
    assert!(environ.contains("BATON_PLUGIN_TOKEN="), "{environ}");

    // In dev mode the environment is inherited.
    let (_dev_dir, dev_path) = stage();
    let dev = TestHost::start_with_env(
        &format!("[plugins.counter]\ncommand = \"{}\"\n", dev_path.display()),
        &env,
    )
    .await;
    let pid = dev.serving("counter", Duration::from_secs(10)).await.pid;
    let environ =
        String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ")).expect("environ"))
            .into_owned();
    assert!(environ.contains("BATON_TEST_SECRET=hunter2"));
}

fn process_uid(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[tokio::test]
async fn a_plugin_can_run_as_another_user_and_still_dies_with_the_host() {
    let Some(nobody) = baton_tests::nobody_when_root("running a plugin as another user") else {
        return;
    };
    let mut host = TestHost::start(&format!(
        "[plugins.counter]\ncommand = \"{}\"\nuser = \"nobody\"\n",
        bin("counter").display()
    ))
    .await;
    assert_eq!(host.call_text("counter", "incr", "k").await, "1");
    let status = host.serving("counter", Duration::from_secs(10)).await;
    assert_eq!(process_uid(status.pid), Some(nobody.uid.as_raw()));
    // A reload keeps working with the plugin's own directory and copy.
    host.client()
        .reload(baton_proto::host::ReloadRequest {
            plugin: "counter".into(),
        })
        .await
        .expect("reload");
    assert_eq!(host.call_text("counter", "get", "k").await, "1");
    // PR_SET_PDEATHSIG is set after the switch of user, so it still holds.
    let pid = host.status("counter").await.pid;
    host.kill();
    wait_until(
        "the plugin dies with the host",
        Duration::from_secs(1),
        || async { (!baton_tests::alive(pid)).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn an_unknown_user_is_refused_by_name() {
    let host = TestHost::start(&format!(
        "[plugins.counter]\ncommand = \"{}\"\nuser = \"baton-no-such-user\"\n[plugins.counter.restart]\nmax_crashes = 1\n",
        bin("counter").display()
    ))
    .await;
    let e = refusal(&host).await;
    if nix::unistd::geteuid().is_root() {
        assert!(e.contains("there is no user \"baton-no-such-user\""), "{e}");
    } else {
        assert!(e.contains("need the host to run as root"), "{e}");
    }
}

/// Control characters in `text` other than newline and tab.
fn controls(text: &str) -> Vec<char> {
    text.chars()
        .filter(|&c| {
            (c.is_control() && c != '\n' && c != '\t') || ('\u{202a}'..='\u{202e}').contains(&c)
        })
        .collect()
}

#[tokio::test]
async fn a_plugins_control_characters_reach_no_log_line_or_terminal_raw() {
    let host = TestHost::start(&plugin("tricky", "faulty", &["ok"], "")).await;
    host.serving("tricky", Duration::from_secs(10)).await;
    assert_eq!(
        host.call_text("tricky", "terminal-tricks", "").await,
        "done"
    );
    let log = wait_until(
        "the plugin's lines in the host's log",
        Duration::from_secs(10),
        || async {
            let log = host.log();
            (log.contains("red") && log.contains("FORGED by the plugin")).then_some(log)
        },
    )
    .await;
    assert!(
        controls(&log).is_empty(),
        "raw controls in the host's log: {:?}",
        controls(&log)
    );
    assert!(
        !log.lines().any(|l| l.starts_with("2026-01-01T00:00:00Z")),
        "a plugin forged a line of the host's log:\n{log}"
    );
    let (code, out, err) = ctl_at(&host.socket, &["logs", "tricky"], &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("red"), "{out}");
    assert!(
        controls(&out).is_empty(),
        "`ctl logs` printed raw {:?}: {out}",
        controls(&out)
    );
    // `ctl events` follows until stopped.
    let events = Watched::spawn(ctl_command(
        &host.socket,
        &["events", "--last", "50", "tricky"],
    ));
    events
        .wait_for_stdout("the plugin's event", Duration::from_secs(10), |out| {
            out.contains("cleared the screen")
        })
        .await;
    let out = events.stdout();
    assert!(
        controls(&out).is_empty(),
        "`ctl events` printed raw {:?}: {out}",
        controls(&out)
    );
    events.signal(nix::sys::signal::Signal::SIGKILL);
}
