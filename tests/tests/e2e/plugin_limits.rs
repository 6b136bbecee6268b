//! A plugin's processes, descriptors and file sizes are bounded in the plugin itself
//! (`max_processes`, `max_open_files`, `max_file_bytes`); without `max_open_files` it
//! gets the ordinary open-files limit the daemon started with, not the one the daemon
//! raised for itself; and a plugin that dies of a limit is told so in its status.

use std::time::Duration;

use baton_proto::host::PluginState;
use baton_tests::{TestHost, bin, generation_cgroups, pids_cgroups_usable, rlimit_of, wait_until};

fn faulty(extra: &str) -> String {
    format!(
        "[plugins.faulty]\ncommand = \"{}\"\nargs = [\"ok\"]\n{extra}\n",
        bin("faulty").display()
    )
}

/// How many the plugin's `method` got before it was stopped, and what stopped it.
async fn how_far(host: &TestHost, method: &str, count: &str) -> (usize, String) {
    let said = host.call_text("faulty", method, count).await;
    let (n, why) = said
        .split_once(": ")
        .unwrap_or_else(|| panic!("{method} said {said:?}"));
    let n = n
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{method} said {said:?}"));
    (n, why.to_owned())
}

#[tokio::test]
async fn a_plugin_starts_with_the_ordinary_open_files_limit_not_the_daemons_raised_one() {
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("this test's limit");
    if hard <= 1024 {
        eprintln!("skipped: the hard open-files limit ({hard}) leaves nothing to raise");
        return;
    }
    let host = TestHost::start_with_soft_open_files(&faulty(""), 1024).await;
    // The daemon raised its own, for its many sockets.
    let daemon = rlimit_of(host.pid(), "Max open files").expect("the daemon's limits");
    assert_eq!(daemon, (hard.to_string(), hard.to_string()));
    // Its plugin starts with the limit the daemon was given.
    let plain = host.serving("faulty", Duration::from_secs(10)).await;
    let limit = rlimit_of(plain.pid, "Max open files").expect("the plugin's limits");
    assert_eq!(limit, ("1024".to_owned(), hard.to_string()));
    let (opened, why) = how_far(&host, "open-files", "2000").await;
    assert!(
        opened < 1024 && why.contains("Too many open files"),
        "{opened}: {why}"
    );
}

#[tokio::test]
async fn a_plugin_cannot_hold_more_than_max_open_files() {
    let host = TestHost::start(&faulty("max_open_files = 64")).await;
    let bounded = host.serving("faulty", Duration::from_secs(10)).await;
    // Soft and hard, so the plugin cannot raise it.
    let limit = rlimit_of(bounded.pid, "Max open files").expect("the plugin's limits");
    assert_eq!(limit, ("64".to_owned(), "64".to_owned()));
    let (opened, why) = how_far(&host, "open-files", "2000").await;
    assert!(
        opened < 64 && why.contains("Too many open files"),
        "{opened}: {why}"
    );
}

async fn max_processes_holds(user: &str) {
    let host = TestHost::start(&faulty(&format!("max_processes = 24\n{user}"))).await;
    let (started, why) = how_far(&host, "spawn", "200").await;
    assert!(
        started < 24 && why.contains("Resource temporarily unavailable"),
        "started {started}: {why}"
    );
    // It serves on; and when it dies after its forks were refused, its status says why.
    assert_eq!(
        host.call_text("faulty", "echo", "still here").await,
        "still here"
    );
    let _ = host.invoke("faulty", "crash", "").await;
    let e = wait_until(
        "the crash is in the status",
        Duration::from_secs(10),
        || async {
            let s = host.status("faulty").await;
            (s.last_error.contains("exit code 3")).then_some(s.last_error)
        },
    )
    .await;
    eprintln!("status: {e}");
    assert!(e.contains("max_processes = 24"), "{e}");
}

#[tokio::test]
async fn a_plugin_cannot_start_more_than_max_processes() {
    // Without a user of its own, only a pids cgroup holds it.
    if let Err(why) = pids_cgroups_usable() {
        eprintln!("skipped: {why}");
        return;
    }
    max_processes_holds("").await;
}

#[tokio::test]
async fn a_plugin_with_its_own_user_gets_its_limits_from_a_root_host_without_pid_namespaces() {
    if baton_tests::nobody_when_root("a root host switching a plugin's user").is_none() {
        return;
    }
    // Set by the host as root, before the switch to the plugin's user; above it when
    // CAP_SYS_RESOURCE allows (a limit above the host's own hard one is refused before
    // the fork otherwise).
    let open_files = 4096;
    let host = TestHost::start_without_pid_namespaces(&faulty(&format!(
        "max_processes = 24\nmax_open_files = {open_files}\nuser = \"nobody\"\ncwd = \"/tmp\""
    )))
    .await;
    wait_until(
        "the host says it has no PID namespaces",
        Duration::from_secs(5),
        || async {
            host.log()
                .contains("plugins run without PID namespaces")
                .then_some(())
        },
    )
    .await;
    let plugin = host.serving("faulty", Duration::from_secs(10)).await;
    assert_eq!(plugin.restarts, 0, "{}", plugin.last_error);
    let limit = rlimit_of(plugin.pid, "Max open files").expect("the plugin's limits");
    assert_eq!(limit, (open_files.to_string(), open_files.to_string()));
    let nobody = nix::unistd::User::from_name("nobody")
        .ok()
        .flatten()
        .expect("nobody");
    let status = std::fs::read_to_string(format!("/proc/{}/status", plugin.pid)).expect("status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    let uid = nobody.uid.to_string();
    assert_eq!(field("Uid:"), [uid.as_str(); 4].join(" "));
    // Only its own group: no supplementary groups of the host's.
    assert_eq!(field("Groups:"), "");
    let (started, why) = how_far(&host, "spawn", "200").await;
    assert!(
        started < 24 && why.contains("Resource temporarily unavailable"),
        "started {started}: {why}"
    );
}

#[tokio::test]
async fn a_start_cancelled_by_a_stop_leaves_no_pids_cgroup_behind() {
    if let Err(why) = pids_cgroups_usable() {
        eprintln!("skipped: {why}");
        return;
    }
    let host = TestHost::start(&format!(
        "[plugins.silent]\ncommand = \"{}\"\nargs = [\"silent\"]\nmax_processes = 8\n\
         handshake_timeout_ms = 60000\n",
        bin("faulty").display()
    ))
    .await;
    // Its start hangs (no handshake line) with its processes in their cgroup.
    wait_until(
        "the starting generation's cgroup is there",
        Duration::from_secs(10),
        || async { (!generation_cgroups(host.pid()).is_empty()).then_some(()) },
    )
    .await;
    let (ok, out, err) = host.ctl(&["stop", "silent", "--discard-state"]);
    assert!(ok, "{out}{err}");
    wait_until(
        "the cancelled start's cgroup is removed",
        Duration::from_secs(15),
        || async { generation_cgroups(host.pid()).is_empty().then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn a_plugin_with_its_own_user_cannot_start_more_than_max_processes() {
    if baton_tests::nobody_when_root("running a plugin as another user").is_none() {
        return;
    }
    max_processes_holds("user = \"nobody\"\ncwd = \"/tmp\"").await;
}

#[tokio::test]
async fn a_plugin_writing_past_max_file_bytes_is_stopped_and_its_status_names_the_limit() {
    let data = tempfile::tempdir().expect("a data dir");
    let host = TestHost::start(&faulty(&format!(
        "max_file_bytes = 1048576\ncwd = \"{}\"",
        data.path().display()
    )))
    .await;
    assert_eq!(
        host.call_text("faulty", "write-file", "small.bin 1048576")
            .await,
        "wrote 1048576"
    );
    let over = host.invoke("faulty", "write-file", "big.bin 4194304").await;
    assert!(over.is_err(), "a 4 MiB file was written: {over:?}");
    let e = wait_until(
        "the plugin's end is in its status",
        Duration::from_secs(10),
        || async {
            let s = host.status("faulty").await;
            (s.last_error.contains("SIGXFSZ") || s.state == PluginState::Failed as i32)
                .then_some(s.last_error)
        },
    )
    .await;
    eprintln!("status: {e}");
    assert!(e.contains("max_file_bytes = 1048576"), "{e}");
    let size = std::fs::metadata(data.path().join("big.bin"))
        .expect("the file")
        .len();
    assert_eq!(size, 1 << 20);
}
