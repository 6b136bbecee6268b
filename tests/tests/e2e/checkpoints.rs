//! Checkpoints on disk as an operator relies on them: only the host's own files count
//! and strangers are left alone, a runaway snapshot is cut off without costing memory
//! or a prompt stop, a large checkpoint never stalls other plugins, and the files are
//! private.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use baton_tests::{EventLog, TestHost, plugin, repo_root, venv_python, wait_until};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Waits for a checkpoint of `plugin` whose snapshot began after `after_ms`.
async fn checkpoint_after(events: &EventLog, plugin: &str, after_ms: u64) {
    wait_until(
        &format!("a checkpoint of {plugin} taken after the last call"),
        Duration::from_secs(10),
        || async {
            events
                .of_kind("checkpoint")
                .iter()
                .any(|e| e.plugin == plugin && e.unix_ms > after_ms)
                .then_some(())
        },
    )
    .await;
}

/// The host's own checkpoint files in `dir` (`ckpt-<sequence>.ckpt`), oldest first.
fn own_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("ckpt-") && n.ends_with(".ckpt"))
    });
    files.sort();
    files
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .expect("stat")
        .permissions()
        .mode()
        & 0o777
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

#[tokio::test]
async fn junk_files_and_a_future_timestamp_never_cost_the_state() {
    let state = tempfile::tempdir().expect("state dir");
    let dir = state.path().join("counter");
    std::fs::create_dir(&dir).expect("plugin dir");
    for junk in ["zzz-1.ckpt", "zzz-2.ckpt", "zzz-3.ckpt"] {
        std::fs::write(dir.join(junk), b"not a checkpoint").expect("junk");
    }
    let config = format!(
        "state_dir = \"{}\"\n{}",
        state.path().display(),
        plugin("counter", "counter", &[], "checkpoint_interval_ms = 100\n")
    );

    // Junk that sorts after the host's files costs nothing, and is left alone.
    let mut host = TestHost::start(&config).await;
    let events = EventLog::start(&host).await;
    for _ in 0..5 {
        host.call_text("counter", "incr", "k").await;
    }
    checkpoint_after(&events, "counter", now_ms()).await;
    host.kill();
    let mut host = TestHost::start(&config).await;
    let events = EventLog::start(&host).await;
    assert_eq!(host.call_text("counter", "get", "k").await, "5");
    for junk in ["zzz-1.ckpt", "zzz-2.ckpt", "zzz-3.ckpt"] {
        assert!(dir.join(junk).exists(), "{junk} was removed");
        assert!(
            host.log()
                .contains(&format!("{junk} is not one of the host's checkpoints")),
            "{junk} is not named in a warning: {}",
            host.log()
        );
    }

    // A checkpoint with a name from a clock running ahead holds older state: the
    // host's own sequence decides what is newest, not names or clocks.
    let five = std::fs::read(own_files(&dir).pop().expect("a checkpoint")).expect("read");
    for _ in 0..3 {
        host.call_text("counter", "incr", "k").await;
    }
    checkpoint_after(&events, "counter", now_ms()).await;
    host.kill();
    let planted = dir.join("9999999999999999-000001.ckpt");
    std::fs::write(&planted, &five).expect("plant the old state under a future name");
    let host = TestHost::start(&config).await;
    let events = EventLog::start(&host).await;
    assert_eq!(host.call_text("counter", "get", "k").await, "8");
    assert!(planted.exists());
    let log = host.log();
    assert!(
        log.contains("9999999999999999-000001.ckpt is not one of the host's checkpoints"),
        "{log}"
    );
    // Named once, not at every checkpoint.
    checkpoint_after(&events, "counter", now_ms()).await;
    assert_eq!(
        host.log()
            .matches("9999999999999999-000001.ckpt is not one")
            .count(),
        1
    );
}

#[tokio::test]
async fn an_endless_snapshot_is_cut_off_at_max_state_bytes_and_the_host_still_stops_promptly() {
    let state = tempfile::tempdir().expect("state dir");
    let marker = state.path().join("runaway-snapshot-started");
    let script = repo_root().join("tests/plugins/endless_snapshot.py");
    let table = |name: &str, extra: &str| {
        format!(
            "[plugins.{name}]\ncommand = \"{}\"\nargs = [\"{}\"]\ncopy_binary = false\nreload = \"manual\"\ncheckpoint_interval_ms = 300\nhandover_timeout_ms = 60000\n{extra}\n",
            venv_python().display(),
            script.display()
        )
    };
    let config = format!(
        "state_dir = \"{}\"\n{}{}",
        state.path().display(),
        table("endless", "max_state_bytes = 16777216\n"),
        // With the default limit (1 GiB), to be stopped while it streams.
        table(
            "runaway",
            &format!("env = {{ ENDLESS_MARKER = \"{}\" }}\n", marker.display())
        ),
    );
    let mut host = TestHost::start(&config).await;
    let events = EventLog::start(&host).await;
    host.serving("endless", Duration::from_secs(20)).await;
    host.serving("runaway", Duration::from_secs(20)).await;

    // The checkpoint fails with the size, the limit and the key; the plugin serves on.
    let failed = wait_until(
        "endless's checkpoint fails at its limit",
        Duration::from_secs(20),
        || async {
            events
                .of_kind("checkpoint_failed")
                .into_iter()
                .find(|e| e.plugin == "endless")
        },
    )
    .await;
    for words in [
        "plugin endless",
        "larger than max_state_bytes = 16777216 bytes",
        "at least 1",
        "plugins.endless.max_state_bytes",
    ] {
        assert!(
            failed.message.contains(words),
            "{words}: {}",
            failed.message
        );
    }
    assert_eq!(host.call_text("endless", "incr", "k").await, "1");

    // So does a handover, and the old generation keeps serving.
    let refused = host
        .client()
        .reload(baton_proto::host::ReloadRequest {
            plugin: "endless".into(),
        })
        .await
        .expect_err("the reload rolls back");
    assert!(
        refused
            .message()
            .contains("was cut off: the state is larger than max_state_bytes = 16777216"),
        "{}",
        refused.message()
    );
    assert_eq!(host.call_text("endless", "incr", "k").await, "2");

    // Nothing is buffered whole: the host stays small while two plugins stream.
    let rss = rss_bytes(host.pid());
    assert!(rss < 150 << 20, "the host holds {} MiB", rss >> 20);

    // Stopped while a snapshot streams without end: no waiting for it to finish.
    wait_until(
        "runaway's snapshot streams",
        Duration::from_secs(20),
        || async { marker.exists().then_some(()) },
    )
    .await;
    let stopping = Instant::now();
    let code = host.stop(Duration::from_secs(30));
    let took = stopping.elapsed();
    assert_eq!(code, Some(0), "{}", host.log());
    assert!(
        took < Duration::from_secs(8),
        "the host took {took:?} to stop"
    );
    let leftovers: Vec<_> = std::fs::read_dir(state.path().join("runaway"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn a_large_checkpoint_does_not_stall_a_neighbours_calls() {
    let state = tempfile::tempdir().expect("state dir");
    const STATE: u64 = 96 << 20;
    // One async worker, so that any blocking on it shows in every call.
    let config = format!(
        "worker_threads = 1\nstate_dir = \"{}\"\n{}{}",
        state.path().display(),
        plugin(
            "big",
            "bench-plugin",
            &[],
            "checkpoint_interval_ms = 1000\nhandover_timeout_ms = 60000\n"
        ),
        plugin("echo", "echo", &[], ""),
    );
    let host = TestHost::start(&config).await;
    let events = EventLog::start(&host).await;
    host.serving("echo", Duration::from_secs(10)).await;
    host.call_text("big", "fill", &STATE.to_string()).await;
    let filled = events.of_kind("checkpoint").len();
    let (mut latencies, started) = (Vec::new(), Instant::now());
    while events
        .of_kind("checkpoint")
        .iter()
        .skip(filled)
        .filter(|e| e.plugin == "big" && e.state_bytes == STATE)
        .count()
        < 3
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no 3 checkpoints of 96 MiB within 60 s"
        );
        let t = Instant::now();
        host.call_text("echo", "echo", "ping").await;
        latencies.push(t.elapsed());
    }
    latencies.sort();
    let worst = latencies.last().copied().unwrap_or_default();
    let p50 = latencies[latencies.len() / 2];
    eprintln!(
        "echo during 96 MiB checkpoints: worst {worst:?}, p50 {p50:?}, {} calls",
        latencies.len()
    );
    assert!(
        worst < Duration::from_millis(200),
        "an echo call took {worst:?} during 96 MiB checkpoints (p50 {p50:?}, {} calls)",
        latencies.len()
    );
}

#[tokio::test]
async fn checkpoint_files_are_private_and_symlinks_are_never_followed() {
    let root = tempfile::tempdir().expect("temp dir");
    let state = root.path().join("state");
    let dir = state.join("counter");
    let config = format!(
        "state_dir = \"{}\"\n{}",
        state.display(),
        plugin("counter", "counter", &[], "checkpoint_interval_ms = 100\n")
    );

    // Made by the host: 0700 directories, 0600 files.
    let mut host = TestHost::start(&config).await;
    let events = EventLog::start(&host).await;
    host.call_text("counter", "incr", "k").await;
    checkpoint_after(&events, "counter", now_ms()).await;
    host.kill();
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&dir), 0o700);
    let files = own_files(&dir);
    assert!(!files.is_empty());
    for f in &files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }

    // An existing directory open to others is tightened (and says so); symlinks
    // planted at the names the next temp files take are never written through.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let victim = root.path().join("victim");
    std::fs::write(&victim, b"precious").expect("victim");
    let highest: u64 = files
        .last()
        .and_then(|f| f.file_name()?.to_str()?.get(5..25)?.parse().ok())
        .expect("a sequence number");
    let mut planted = vec![dir.join(".checkpoint.tmp")];
    planted.extend((1..=3).map(|n| dir.join(format!(".ckpt-{:020}.tmp", highest + n))));
    for link in &planted {
        std::os::unix::fs::symlink(&victim, link).expect("plant a symlink");
    }
    let host = TestHost::start(&config).await;
    let events = EventLog::start(&host).await;
    host.call_text("counter", "incr", "k").await;
    checkpoint_after(&events, "counter", now_ms()).await;
    wait_until(
        "three more checkpoints",
        Duration::from_secs(10),
        || async { (events.of_kind("checkpoint").len() >= 4).then_some(()) },
    )
    .await;
    assert_eq!(std::fs::read(&victim).expect("victim"), b"precious");
    assert_eq!(mode(&dir), 0o700);
    assert!(
        host.log()
            .contains("was mode 0755, open to other users; it is now 0700"),
        "{}",
        host.log()
    );
    assert_eq!(host.call_text("counter", "get", "k").await, "2");
}

/// The line of `log` that holds `text`.
fn line_with<'a>(log: &'a str, text: &str) -> Option<&'a str> {
    log.lines().find(|l| l.contains(text))
}

#[tokio::test]
async fn a_first_start_is_said_at_info_and_a_restart_that_lost_its_state_at_warn() {
    let state = tempfile::tempdir().expect("state dir");
    // No checkpoint is taken in this test's time: the crash loses the count.
    let config = format!(
        "state_dir = \"{}\"\n{}",
        state.path().display(),
        plugin(
            "counter",
            "counter",
            &[],
            "checkpoint_interval_ms = 600000\n"
        )
    );
    let host = TestHost::start(&config).await;
    assert_eq!(host.call_text("counter", "incr", "k").await, "1");
    let first = "counter starts with an empty state: its first start, no checkpoint taken yet";
    let log = host.log();
    let line = line_with(&log, first).unwrap_or_else(|| panic!("no first-start line: {log}"));
    assert!(line.contains("INFO"), "{line}");
    assert!(!log.contains("EMPTY state"), "{log}");

    let s = host.serving("counter", Duration::from_secs(5)).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(s.pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the plugin");
    let lost =
        "counter starts with an EMPTY state: it stopped before its first checkpoint was taken";
    let log = wait_until(
        "the restart says what it lost",
        Duration::from_secs(10),
        || async {
            let log = host.log();
            line_with(&log, lost).is_some().then_some(log)
        },
    )
    .await;
    let line = line_with(&log, lost).unwrap_or_default();
    assert!(line.contains("WARN"), "{line}");
}
