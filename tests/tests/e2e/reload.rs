//! Hot reload: a changed binary is started beside the old one, the state moves across,
//! calls switch over, and nothing is lost; any failure leaves the old one serving.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use baton_tests::{
    EventLog, Load, TestHost, bin, fd_count, replace_by_hard_link, replace_by_rename,
    rewrite_in_place, script, wait_until, zombie_children,
};

/// A copy of a workspace binary in a directory of its own, for the test to replace.
fn stage(binary: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("baton-plugin-")
        .tempdir()
        .expect("temp dir");
    let path = dir.path().join(binary);
    std::fs::copy(bin(binary), &path).expect("stage the binary");
    (dir, path)
}

fn counter_at(path: &Path, extra: &str) -> String {
    format!(
        "[plugins.counter]\ncommand = \"{}\"\nsettle_ms = 50\n{extra}\n",
        path.display()
    )
}

async fn generation(host: &TestHost) -> u64 {
    host.status("counter").await.generation
}

async fn wait_for_generation(host: &TestHost, n: u64) {
    wait_until(
        &format!("counter serves generation {n}"),
        Duration::from_secs(15),
        || async {
            let s = host.status("counter").await;
            (s.generation >= n && s.state == baton_proto::host::PluginState::Serving as i32)
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        generation(host).await,
        n,
        "the generation went up more than once"
    );
}

#[tokio::test]
async fn reloads_under_load_lose_no_call_and_no_update() {
    let (_dir, path) = stage("counter");
    let original = std::fs::read(&path).expect("read binary");
    let other = path.with_file_name("counter-other-build");
    std::fs::copy(&path, &other).expect("second build");
    let host = TestHost::start(&counter_at(&path, "")).await;
    let events = EventLog::start(&host).await;
    host.serving("counter", Duration::from_secs(10)).await;

    let load = Load::start(&host, 4, "counter", "incr", "hits");

    let reloads = 21u64;
    let start_generation = generation(&host).await;
    for i in 0..reloads {
        match i % 3 {
            0 => replace_by_rename(&path, &original),
            1 => replace_by_hard_link(&path, &other),
            _ => rewrite_in_place(&path, &original),
        }
        wait_for_generation(&host, start_generation + i + 1).await;
        // The old process is retired after each switch.
        let done = events
            .wait_for("handover_done", i as usize + 1, Duration::from_secs(10))
            .await;
        let done = &done[i as usize];
        assert!(done.state_bytes > 0);
        // Under load there are calls in flight to wait for, and the state takes time too.
        assert!(
            done.hold_us > 0 && done.drain_us <= done.hold_us,
            "hold {} us, drain {} us",
            done.hold_us,
            done.drain_us
        );
    }
    let (total, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} calls failed, first: {:?}",
        failures.len(),
        failures.first()
    );
    assert!(total > reloads * 4, "too few calls made: {total}");
    assert_eq!(
        host.call_text("counter", "get", "hits").await,
        total.to_string()
    );
    assert!(
        events.of_kind("rollback").is_empty(),
        "{:?}",
        events.of_kind("rollback")
    );

    // Quiet afterwards: no further reload without a further change.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(generation(&host).await, start_generation + reloads);
    assert_eq!(events.of_kind("reload_started").len() as u64, reloads);
    let holds: Vec<u64> = events
        .of_kind("handover_done")
        .iter()
        .map(|e| e.hold_us)
        .collect();
    eprintln!("hold times (us) over {reloads} reloads under load: {holds:?}");
}

/// Replaces the staged counter with `broken`, expects a rollback whose reason contains
/// `why`, with the old generation still serving its state; then puts a good build back.
async fn expect_rollback(
    host: &TestHost,
    events: &EventLog,
    path: &Path,
    broken: &[u8],
    why: &str,
) {
    let before = host.serving("counter", Duration::from_secs(10)).await;
    let count: u64 = host
        .call_text("counter", "incr", "kept")
        .await
        .parse()
        .expect("a number");
    let rollbacks = events.of_kind("rollback").len();
    replace_by_rename(path, broken);
    let rolled = events
        .wait_for("rollback", rollbacks + 1, Duration::from_secs(20))
        .await;
    let event = &rolled[rollbacks];
    assert!(
        event.message.contains(why),
        "expected {why:?} in: {}",
        event.message
    );
    assert!(
        event.message.contains("plugin counter"),
        "{}",
        event.message
    );
    let after = host.status("counter").await;
    assert_eq!(
        (after.pid, after.state),
        (before.pid, baton_proto::host::PluginState::Serving as i32)
    );
    assert!(after.last_error.contains(why), "{}", after.last_error);
    assert_eq!(
        host.call_text("counter", "get", "kept").await,
        count.to_string()
    );
}

#[tokio::test]
async fn every_failed_handover_rolls_back_to_the_old_generation() {
    let (_dir, path) = stage("counter");
    let good = std::fs::read(&path).expect("read binary");
    let faulty = bin("faulty");
    let host = TestHost::start(&counter_at(
        &path,
        "handshake_timeout_ms = 1500\nhandover_timeout_ms = 3000\n",
    ))
    .await;
    let events = EventLog::start(&host).await;

    expect_rollback(
        &host,
        &events,
        &path,
        &script("echo 'boom: this build is broken' >&2; exit 3"),
        "exit code 3",
    )
    .await;
    let last = events.of_kind("rollback").pop().expect("rollback");
    assert!(
        last.message.contains("boom: this build is broken"),
        "stderr is shown: {}",
        last.message
    );

    expect_rollback(
        &host,
        &events,
        &path,
        &script("echo 'not a handshake'; sleep 60"),
        "printed `not a handshake`",
    )
    .await;
    expect_rollback(
        &host,
        &events,
        &path,
        &script(&format!("exec {} no-health", faulty.display())),
        "did not report SERVING",
    )
    .await;
    expect_rollback(
        &host,
        &events,
        &path,
        &script(&format!(
            "FAULTY_RESTORE=refuse exec {} ok",
            faulty.display()
        )),
        "refused the state (FailedPrecondition): faulty refuses state schema 1",
    )
    .await;
    expect_rollback(
        &host,
        &events,
        &path,
        &script(&format!(
            "FAULTY_RESTORE=crash exec {} ok",
            faulty.display()
        )),
        "exited during the handover: exit code 4",
    )
    .await;
    expect_rollback(
        &host,
        &events,
        &path,
        &script(&format!("FAULTY_RESTORE=hang exec {} ok", faulty.display())),
        "outran its timeout",
    )
    .await;

    // A rolled-back build is not tried again until it changes.
    let attempts = events.of_kind("reload_started").len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(events.of_kind("reload_started").len(), attempts);

    // A good build goes through, with the state.
    let count = host.call_text("counter", "get", "kept").await;
    let done = events.of_kind("handover_done").len();
    replace_by_rename(&path, &good);
    events
        .wait_for("handover_done", done + 1, Duration::from_secs(15))
        .await;
    assert_eq!(host.call_text("counter", "get", "kept").await, count);
    // No process of any rolled-back attempt is left (the retired one is reaped
    // in the background, a moment after it exits).
    wait_until("no zombie children", Duration::from_secs(5), || async {
        zombie_children(host.pid()).is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_slowly_written_binary_loads_once_complete_and_a_burst_reloads_once() {
    let (_dir, path) = stage("counter");
    let good = std::fs::read(&path).expect("read binary");
    let host = TestHost::start(&format!(
        "[plugins.counter]\ncommand = \"{}\"\nsettle_ms = 600\n",
        path.display()
    ))
    .await;
    let events = EventLog::start(&host).await;
    assert_eq!(host.call_text("counter", "incr", "k").await, "1");
    let start = generation(&host).await;

    // Written in 8 parts, 150 ms apart: never still for the 600 ms settle time until done.
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .expect("open");
        for part in good.chunks(good.len().div_ceil(8)) {
            f.write_all(part).expect("write part");
            f.flush().expect("flush");
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }
    wait_for_generation(&host, start + 1).await;
    assert!(
        events.of_kind("rollback").is_empty(),
        "a partial binary was loaded: {:?}",
        events.of_kind("rollback")
    );
    assert_eq!(events.of_kind("reload_started").len(), 1);
    assert_eq!(host.call_text("counter", "get", "k").await, "1");

    // Ten saves within the settle time: one reload. (A small wrapper script is saved,
    // so that ten writes fit in the settle time on a slow disk.)
    let wrapper = script(&format!("exec {}", bin("counter").display()));
    let burst_started = Instant::now();
    for _ in 0..10 {
        rewrite_in_place(&path, &wrapper);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        burst_started.elapsed() < Duration::from_millis(600),
        "the burst took {:?}",
        burst_started.elapsed()
    );
    wait_for_generation(&host, start + 2).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        generation(&host).await,
        start + 2,
        "the burst caused more than one reload"
    );
    assert_eq!(events.of_kind("reload_started").len(), 2);
}

#[tokio::test]
async fn a_hundred_reloads_leak_no_process_fd_or_socket() {
    let (_dir, path) = stage("counter");
    let host = TestHost::start(&counter_at(
        &path,
        "reload = \"manual\"\ncopy_binary = false\n",
    ))
    .await;
    host.serving("counter", Duration::from_secs(10)).await;
    assert_eq!(host.call_text("counter", "incr", "k").await, "1");
    let socket_dir = PathBuf::from(host.status("counter").await.socket)
        .parent()
        .expect("dir")
        .to_owned();
    // Warm up, so lazily opened descriptors are counted in the baseline.
    for _ in 0..3 {
        host.client()
            .reload(baton_proto::host::ReloadRequest {
                plugin: "counter".into(),
            })
            .await
            .expect("reload");
    }
    let fds_before = fd_count(host.pid());
    let gen_before = generation(&host).await;
    for _ in 0..100 {
        host.client()
            .reload(baton_proto::host::ReloadRequest {
                plugin: "counter".into(),
            })
            .await
            .expect("reload");
    }
    assert_eq!(generation(&host).await, gen_before + 100);
    assert_eq!(host.call_text("counter", "get", "k").await, "1");
    // Retired generations stop in the background; wait for the last ones.
    let live = host.status("counter").await;
    wait_until(
        "only the live socket remains",
        Duration::from_secs(10),
        || async {
            let mut names: Vec<String> = std::fs::read_dir(&socket_dir)
                .expect("socket dir")
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            // Each plugin has a socket directory of its own.
            (names == [format!("{}.sock", live.generation)]).then_some(())
        },
    )
    .await;
    wait_until("no zombie children", Duration::from_secs(5), || async {
        zombie_children(host.pid()).is_empty().then_some(())
    })
    .await;
    let fds_after = fd_count(host.pid());
    assert!(
        fds_after <= fds_before + 2,
        "fds grew from {fds_before} to {fds_after}"
    );
}

#[tokio::test]
async fn reload_off_ignores_changes_and_manual_waits_for_the_operator() {
    let (_dir_off, off_path) = stage("counter");
    let (_dir_manual, manual_path) = stage("echo");
    let host = TestHost::start(&format!(
        "[plugins.counter]\ncommand = \"{}\"\nreload = \"off\"\nsettle_ms = 20\n\n[plugins.echo]\ncommand = \"{}\"\nreload = \"manual\"\nsettle_ms = 20\n",
        off_path.display(),
        manual_path.display()
    ))
    .await;
    let events = EventLog::start(&host).await;
    host.serving("counter", Duration::from_secs(10)).await;
    host.serving("echo", Duration::from_secs(10)).await;
    let good = std::fs::read(&off_path).expect("read");
    replace_by_rename(&off_path, &good);
    let echo_good = std::fs::read(&manual_path).expect("read");
    replace_by_rename(&manual_path, &echo_good);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        events.of_kind("reload_started").is_empty(),
        "{:?}",
        events.all()
    );
    assert_eq!(host.status("counter").await.generation, 1);
    assert_eq!(host.status("echo").await.generation, 1);

    let reply = host
        .client()
        .reload(baton_proto::host::ReloadRequest {
            plugin: "echo".into(),
        })
        .await
        .expect("manual reload")
        .into_inner();
    assert_eq!(reply.generation, 2);
    assert_eq!(
        host.invoke("echo", "echo", "after").await.expect("echo"),
        b"after"
    );
}

#[tokio::test]
async fn the_polling_watcher_sees_changes_where_no_events_come() {
    let (_dir, path) = stage("counter");
    let good = std::fs::read(&path).expect("read");
    let host = TestHost::start(&format!(
        "watcher = \"poll\"\npoll_interval_ms = 50\n\n{}",
        counter_at(&path, "")
    ))
    .await;
    assert_eq!(host.call_text("counter", "incr", "k").await, "1");
    let start = generation(&host).await;
    replace_by_rename(&path, &good);
    wait_for_generation(&host, start + 1).await;
    assert_eq!(host.call_text("counter", "get", "k").await, "1");
}
