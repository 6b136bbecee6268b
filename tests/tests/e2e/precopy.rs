//! Live handovers (pre-copy): a plugin with incremental snapshots has its state copied
//! while it keeps serving, and calls are held only for the last delta; every failure on
//! the way leaves the old generation serving with its state.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use baton_proto::host::InvokeRequest;
use baton_tests::{EventLog, TestHost, plugin, wait_until};

fn deltas(extra: &str) -> String {
    plugin(
        "kv",
        "deltas",
        &[],
        &format!("handover_timeout_ms = 30000\n{extra}"),
    )
}

async fn call(host: &TestHost, method: &str, payload: &str) -> String {
    let out = host.invoke("kv", method, payload).await;
    String::from_utf8(out.unwrap_or_else(|s| panic!("kv {method} {payload}: {s:?}")))
        .expect("UTF-8")
}

/// `writers` tasks each putting `w<i>-<n>=v<n>` for n = 0, 1, … until stopped; each
/// returns how many of its writes were acknowledged and every failure.
struct Writers {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(usize, Vec<tonic::Status>)>>,
}

impl Writers {
    fn start(host: &TestHost, writers: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..writers)
            .map(|w| {
                let (mut client, stop) = (host.client(), stop.clone());
                tokio::spawn(async move {
                    let (mut acked, mut failed) = (0, Vec::new());
                    // Bounded by the stop flag, and by a count should it never come.
                    for n in 0..2_000_000usize {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let request = InvokeRequest {
                            plugin: "kv".into(),
                            method: "put".into(),
                            payload: format!("w{w}-{n}=v{n}").into_bytes().into(),
                            metadata: Default::default(),
                        };
                        match client.invoke(request).await {
                            // Writes are numbered from 0 without gaps: a failed one
                            // would leave a hole the check below reports.
                            Ok(_) => acked = n + 1,
                            Err(s) => {
                                failed.push(s);
                                break;
                            }
                        }
                    }
                    (acked, failed)
                })
            })
            .collect();
        Self { stop, tasks }
    }

    async fn finish(self) -> Vec<(usize, Vec<tonic::Status>)> {
        self.stop.store(true, Ordering::Relaxed);
        let mut done = Vec::new();
        for t in self.tasks {
            done.push(t.await.expect("a writer panicked"));
        }
        done
    }
}

async fn reload(host: &TestHost) -> (bool, String) {
    let (ok, out, err) = host.ctl(&["reload", "kv"]);
    (ok, format!("{out}{err}"))
}

#[tokio::test]
async fn twenty_live_handovers_under_load_keep_every_acknowledged_write() {
    let host = TestHost::start(&deltas("")).await;
    let events = EventLog::start(&host).await;
    host.serving("kv", Duration::from_secs(10)).await;
    // 4 MiB to copy while serving, so the pre-copy has rounds to run.
    call(&host, "fill", "4096 1024").await;
    let writers = Writers::start(&host, 4);
    for i in 0..20 {
        // Writes land between handovers too.
        wait_until("writes to land", Duration::from_secs(5), || async {
            (call(&host, "len", "").await.parse::<usize>().ok()? > 4096 + 50 * (i + 1))
                .then_some(())
        })
        .await;
        let (ok, out) = reload(&host).await;
        assert!(ok, "reload {i}: {out}");
    }
    let done = writers.finish().await;
    for (w, (acked, failed)) in done.iter().enumerate() {
        assert!(failed.is_empty(), "writer {w} saw failed calls: {failed:?}");
        assert!(*acked > 0, "writer {w} wrote nothing");
        let missing = call(&host, "missing", &format!("w{w} {acked}")).await;
        assert_eq!(
            missing, "",
            "writer {w}'s acknowledged writes that are gone"
        );
    }
    let handovers = events
        .wait_for("handover_done", 20, Duration::from_secs(5))
        .await;
    for e in &handovers {
        assert_ne!(e.precopy, "stop_and_copy", "{}", e.message);
        assert!(!e.precopy_bytes.is_empty(), "{}", e.message);
        // The first round is the whole state; what moved with calls held is a delta.
        assert!(e.precopy_bytes[0] >= 4 << 20, "{}", e.message);
        assert!(e.final_bytes < e.precopy_bytes[0] / 4, "{}", e.message);
        assert_eq!(
            e.state_bytes,
            e.precopy_bytes.iter().sum::<u64>() + e.final_bytes
        );
        assert!(e.message.contains("pre-copy round"), "{}", e.message);
    }
    assert!(events.of_kind("rollback").is_empty());
    assert_eq!(host.status("kv").await.generation, 21);
}

#[tokio::test]
async fn a_delta_out_of_order_is_refused_and_the_handover_rolls_back() {
    let host = TestHost::start(&deltas("")).await;
    let events = EventLog::start(&host).await;
    host.serving("kv", Duration::from_secs(10)).await;
    call(&host, "put", "kept=yes").await;
    let pid = host.status("kv").await.pid;
    call(&host, "fault", "wrong-base").await;

    let (ok, out) = reload(&host).await;
    assert!(!ok, "the reload went through: {out}");
    let rollback = events
        .wait_for("rollback", 1, Duration::from_secs(10))
        .await;
    let message = &rollback[0].message;
    assert!(
        message.contains("refused the delta (DataLoss)")
            && message.contains("does not follow the state restored here"),
        "{message}"
    );
    // The old generation serves on, with its state.
    assert_eq!(host.status("kv").await.pid, pid);
    assert_eq!(call(&host, "get", "kept").await, "yes");
    assert_eq!(host.status("kv").await.generation, 1);

    // Mended, the same handover goes through.
    call(&host, "fault", "").await;
    let (ok, out) = reload(&host).await;
    assert!(ok, "{out}");
    assert_eq!(call(&host, "get", "kept").await, "yes");
}

#[tokio::test]
async fn the_old_generation_dying_between_precopy_rounds_is_a_crash_and_leaves_no_new_process() {
    let marker = format!("precopy-crash-{}", std::process::id());
    let config = plugin(
        "kv",
        "deltas",
        &[&marker],
        "handover_timeout_ms = 30000\n[plugins.kv.restart]\nstable_after_ms = 1\n",
    );
    let host = TestHost::start(&config).await;
    let events = EventLog::start(&host).await;
    host.serving("kv", Duration::from_secs(10)).await;
    // More than one small delta's worth, so a delta round follows the whole state.
    call(&host, "fill", "512 1024").await;
    let first = host.status("kv").await.pid;
    call(&host, "fault", "exit-on-delta").await;

    let (ok, out) = reload(&host).await;
    assert!(!ok, "the reload went through: {out}");
    assert!(
        out.contains("generation 1 exited during the handover"),
        "{out}"
    );
    let crashed = events.wait_for("crashed", 1, Duration::from_secs(10)).await;
    assert_eq!(crashed[0].generation, 1, "{}", crashed[0].message);
    // A dead process keeps serving nothing: no rollback to it is announced.
    assert!(
        events.of_kind("rollback").is_empty(),
        "{:?}",
        events.of_kind("rollback")
    );
    // The plugin comes back (a crash restart) and serves; generation 2 was killed.
    wait_until(
        "kv serving a new process",
        Duration::from_secs(10),
        || async {
            host.invoke("kv", "len", "").await.ok()?;
            (host.status("kv").await.pid != first).then_some(())
        },
    )
    .await;
    wait_until(
        "one process of the plugin left",
        Duration::from_secs(5),
        || async { (processes_with(&marker) == 1).then_some(()) },
    )
    .await;
    assert!(events.of_kind("handover_done").is_empty());
}

/// How many plugin processes have `marker` among their arguments (the host's PID
/// namespace helpers, `__baton-pid-init`, carry it too and are not counted).
fn processes_with(marker: &str) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                let mut args = c.split(|&b| b == 0);
                args.clone().any(|a| a == marker.as_bytes())
                    && !args.any(|a| a == b"__baton-pid-init")
            })
        })
        .count()
}

#[tokio::test]
async fn the_new_generation_dying_while_it_applies_a_delta_rolls_back_without_a_failed_call() {
    let host = TestHost::start(&deltas(
        "env = { DELTAS_FAULT = \"exit-on-restore-delta\" }",
    ))
    .await;
    let events = EventLog::start(&host).await;
    host.serving("kv", Duration::from_secs(10)).await;
    call(&host, "fill", "256 1024").await;
    let pid = host.status("kv").await.pid;
    let writers = Writers::start(&host, 2);
    let (ok, out) = reload(&host).await;
    assert!(!ok, "the reload went through: {out}");
    let rollback = events
        .wait_for("rollback", 1, Duration::from_secs(10))
        .await;
    assert!(
        rollback[0]
            .message
            .contains("generation 2 exited during the"),
        "{}",
        rollback[0].message
    );
    let done = writers.finish().await;
    for (w, (acked, failed)) in done.iter().enumerate() {
        assert!(failed.is_empty(), "writer {w}: {failed:?}");
        assert_eq!(call(&host, "missing", &format!("w{w} {acked}")).await, "");
    }
    assert_eq!(host.status("kv").await.pid, pid);
    assert_eq!(
        call(&host, "len", "")
            .await
            .parse::<usize>()
            .ok()
            .map(|n| n >= 256),
        Some(true)
    );
}

#[tokio::test]
async fn a_plugin_without_incremental_snapshots_or_with_pre_copy_off_is_stopped_and_copied() {
    for (extra, why) in [
        ("env = { DELTAS_PLAIN = \"1\" }", "no incremental snapshots"),
        ("pre_copy = false", "pre_copy = false"),
    ] {
        let host = TestHost::start(&deltas(extra)).await;
        let events = EventLog::start(&host).await;
        host.serving("kv", Duration::from_secs(10)).await;
        call(&host, "fill", "300 1024").await;
        let digest = call(&host, "digest", "").await;
        let (ok, out) = reload(&host).await;
        assert!(ok, "{why}: {out}");
        let done = events
            .wait_for("handover_done", 1, Duration::from_secs(5))
            .await;
        let e = &done[0];
        assert_eq!(e.precopy, "stop_and_copy", "{why}: {}", e.message);
        assert!(e.precopy_bytes.is_empty(), "{why}");
        assert_eq!(e.final_bytes, e.state_bytes, "{why}");
        assert!(e.final_bytes > 300 * 1024, "{why}: {}", e.message);
        assert!(e.message.contains("moved with calls held"), "{}", e.message);
        assert_eq!(call(&host, "digest", "").await, digest, "{why}");
    }
}

#[tokio::test]
async fn deltas_that_do_not_shrink_end_the_precopy_and_the_event_says_so() {
    let host = TestHost::start(&deltas("")).await;
    let events = EventLog::start(&host).await;
    host.serving("kv", Duration::from_secs(10)).await;
    call(&host, "fill", "8192 1024").await;
    let digest = call(&host, "digest", "").await;
    call(&host, "fault", "no-shrink").await;
    let (ok, out) = reload(&host).await;
    assert!(ok, "{out}");
    let done = events
        .wait_for("handover_done", 1, Duration::from_secs(5))
        .await;
    let e = &done[0];
    assert_eq!(e.precopy, "not_shrinking", "{}", e.message);
    assert_eq!(e.precopy_bytes.len(), 2, "{}", e.message);
    assert!(
        e.message.contains("not clearly smaller") && e.message.contains("moved with calls held"),
        "{}",
        e.message
    );
    assert!(e.final_bytes >= 8 << 20, "{}", e.message);
    assert_eq!(call(&host, "digest", "").await, digest);
}
