//! tsdb under a write load while its on-write alerters are reloaded twenty times (ten
//! edits of the Python one's file, ten new builds of the Rust one) and the Rust one is
//! killed with SIGKILL twice, beside a plugin that dies on every batch of its table:
//! every accepted point is stored once, every one reaches its trigger's plugin and is
//! applied once (batches a crash lost are sent again, and named), the alerters' states
//! equal a straight replay of the data, and the scheduled downsampler misses no bucket.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Prepared, http, prepare, query, replace, start, trigger, wait_until};

/// Points of each table per write; the writer also sends one `bad` point now and then.
const PER_TABLE: usize = 10;
const HOSTS: usize = 5;

/// The value of point `n` of a table: rising from 0 to 99 and falling back, so that each
/// series crosses any threshold again and again.
fn value(n: usize) -> f64 {
    ((n * 7) % 100) as f64
}

/// What the alerter's state must be after `values` (in order, per series): alerts
/// raised when a series goes from at or below `threshold` (or nothing) to above it.
fn replay(values: &[(String, f64)], threshold: f64) -> u64 {
    let mut last: BTreeMap<&str, f64> = BTreeMap::new();
    let mut alerts = 0;
    for (series, v) in values {
        let before = last.insert(series, *v);
        if *v > threshold && before.is_none_or(|b| b <= threshold) {
            alerts += 1;
        }
    }
    alerts
}

#[test]
fn a_write_load_through_twenty_reloads_and_two_crashes_loses_nothing() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let Some(Prepared {
        python,
        py,
        alerter,
    }) = prepare(dir.path())
    else {
        return;
    };
    let plugins = format!(
        r#"
[plugins.alerter]
command = "{alerter}"
settle_ms = 20
checkpoint_interval_ms = 200

[plugins.pyalerter]
command = "{python}"
args = ["{py}/alerter.py"]
copy_binary = false
watch = ["{py}/alerter.py"]
settle_ms = 20
checkpoint_interval_ms = 200

[plugins.downsampler]
command = "{python}"
args = ["{py}/downsampler.py"]
copy_binary = false

[plugins.crashy]
command = "{crashy}"
restart = {{ max_crashes = 1000000 }}
"#,
        alerter = alerter.display(),
        crashy = env!("CARGO_BIN_EXE_tsdb-alerter"),
        python = python.display(),
        py = py.display(),
    );
    std::fs::write(dir.path().join("plugins.toml"), plugins).expect("write plugins.toml");
    std::fs::write(
        dir.path().join("tsdb.toml"),
        r#"
http = "127.0.0.1:0"
plugins = "plugins.toml"

[[triggers]]
name = "cpu_alerts"
plugin = "alerter"
on = "table:cpu"
database = "metrics"
error_policy = "retry"
args = { threshold = "90" }

[[triggers]]
name = "mem_alerts"
plugin = "pyalerter"
on = "table:mem"
database = "metrics"
error_policy = "retry"
args = { threshold = "50" }

[[triggers]]
name = "downsample"
plugin = "downsampler"
on = "every:500ms"
database = "metrics"
args = { source = "cpu", target = "cpu_1s", bucket_seconds = "1", grace_ms = "300" }

[[triggers]]
name = "crashy"
plugin = "crashy"
on = "table:bad"
database = "metrics"
args = { crash = "always" }
"#,
    )
    .expect("write tsdb.toml");
    let db = start(dir.path());
    let addr = db.addr;
    for name in ["cpu_alerts", "mem_alerts", "downsample", "crashy"] {
        wait_until(
            &format!("{name}'s plugin serves"),
            Duration::from_secs(30),
            || (trigger(addr, name)["plugin_state"] == "serving").then_some(()),
        );
    }

    // The writer: line protocol, continuously, until the reloads are done and at least
    // 20,000 points were accepted. Each point carries its number, `n`, to find it once.
    let reloads_done = Arc::new(AtomicBool::new(false));
    let writer = std::thread::spawn({
        let done = reloads_done.clone();
        move || {
            let (mut cpu, mut mem, mut accepted, mut refused) = (Vec::new(), Vec::new(), 0, 0);
            let mut n = 0usize;
            let mut batch_number = 0usize;
            while !(done.load(Ordering::Relaxed) && accepted >= 20_000) && batch_number < 20_000 {
                batch_number += 1;
                let mut body = String::new();
                let (mut these_cpu, mut these_mem) = (Vec::new(), Vec::new());
                // Each point its own time: a series' points at one time would replace
                // each other (last write wins), as lines without a time would.
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as i64);
                for i in 0..PER_TABLE {
                    let host = format!("h{}", i % HOSTS);
                    let t = now + i as i64;
                    let v = value(n);
                    body.push_str(&format!("cpu,host={host} value={v},n={n}i {t}\n"));
                    these_cpu.push((format!("cpu,host={host}"), v));
                    n += 1;
                    let v = value(n);
                    body.push_str(&format!("mem,host={host} value={v},n={n}i {t}\n"));
                    these_mem.push((format!("mem,host={host}"), v));
                    n += 1;
                }
                if batch_number.is_multiple_of(50) {
                    body.push_str(&format!("bad value=1,n={n}i\n"));
                    n += 1;
                }
                let (status, answer) = http(
                    addr,
                    "POST",
                    "/api/v3/write_lp?db=metrics&accept_partial=false",
                    &body,
                );
                if status == 204 {
                    accepted += these_cpu.len() + these_mem.len();
                    cpu.extend(these_cpu);
                    mem.extend(these_mem);
                } else {
                    refused += 1;
                    eprintln!("write refused ({status}): {answer}");
                }
                // The load's pace, not a wait for anything: about 200 writes a second.
                std::thread::sleep(Duration::from_millis(5));
            }
            (cpu, mem, accepted, refused)
        }
    });

    // Twenty reloads, two SIGKILLs, each awaited.
    let generation = |name: &str| {
        trigger(addr, name)["plugin_generation"]
            .as_u64()
            .unwrap_or(0)
    };
    let script = py.join("alerter.py");
    let text = std::fs::read_to_string(&script).expect("read alerter.py");
    let mut build = std::fs::read(&alerter).expect("read the alerter");
    for round in 0..10 {
        let before = generation("mem_alerts");
        replace(&script, format!("{text}\n# edit {round}\n").as_bytes());
        wait_until(
            "the edited Python alerter serves",
            Duration::from_secs(20),
            || (generation("mem_alerts") > before).then_some(()),
        );
        let before = generation("cpu_alerts");
        build.extend_from_slice(format!("build {round}").as_bytes());
        replace(&alerter, &build);
        wait_until(
            "the new Rust alerter serves",
            Duration::from_secs(20),
            || (generation("cpu_alerts") > before).then_some(()),
        );
        if round == 3 || round == 7 {
            let status = trigger(addr, "cpu_alerts");
            let pid = status["plugin_pid"].as_u64().expect("a pid");
            let killed = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .expect("kill");
            assert!(killed.success());
            let before = status["plugin_generation"].as_u64().unwrap_or(0);
            wait_until(
                "the killed alerter is back",
                Duration::from_secs(20),
                || {
                    let t = trigger(addr, "cpu_alerts");
                    (t["plugin_generation"].as_u64()? > before && t["plugin_state"] == "serving")
                        .then_some(())
                },
            );
        }
    }
    reloads_done.store(true, Ordering::Relaxed);
    let (cpu, mem, accepted, refused) = writer.join().expect("the writer");
    assert_eq!(refused, 0, "every write was accepted");
    assert!(accepted >= 20_000, "{accepted} points");

    // Every accepted point is in the database, once.
    let count = |table: &str| {
        let rows = query(
            addr,
            &format!("SELECT COUNT(*) AS n, COUNT(DISTINCT n) AS d FROM {table}"),
        )
        .expect("a count");
        (
            rows[0]["n"].as_u64().unwrap_or(0),
            rows[0]["d"].as_u64().unwrap_or(0),
        )
    };
    assert_eq!(count("cpu"), (cpu.len() as u64, cpu.len() as u64));
    assert_eq!(count("mem"), (mem.len() as u64, mem.len() as u64));

    // Every point reached its alerter and was applied once: the count of points and of
    // alerts in its state are those of a straight replay.
    for (name, points, threshold) in [("cpu_alerts", &cpu, 90.0), ("mem_alerts", &mem, 50.0)] {
        let expected = format!(
            "{} alert(s) so far, {} points",
            replay(points, threshold),
            points.len()
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let status = loop {
            let seen = trigger(addr, name);
            if seen["last_message"] == expected.as_str() {
                break seen;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name} did not reach {expected:?} within 30 s: {seen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(status["errors"], 0, "{status}");
        eprintln!(
            "{name}: {expected}; write → answer p50 {} µs, p99 {} µs; replays: {}",
            status["latency_p50_us"], status["latency_p99_us"], status["replays"]
        );
    }

    // The downsampler's table: every bucket of cpu that has ended has its mean.
    let buckets = wait_until(
        "the downsampler catches up",
        Duration::from_secs(20),
        || {
            let source = query(
                addr,
                "SELECT DATE_BIN(INTERVAL '1 second', time, TIMESTAMP '1970-01-01T00:00:00Z') AS b, AVG(value) AS mean FROM cpu GROUP BY b ORDER BY b",
            )?;
            let target = query(
                addr,
                "SELECT time AS b, value AS mean FROM cpu_1s ORDER BY b",
            )?;
            let (source, target) = (source.as_array()?.clone(), target.as_array()?.clone());
            // The last bucket may still be open; all before it must be there, once, exact.
            let closed = &source[..source.len().saturating_sub(1)];
            let matches = closed.len() <= target.len()
                && closed.iter().zip(&target).all(|(s, t)| {
                    s["b"] == t["b"]
                        && (s["mean"].as_f64().unwrap_or(f64::NAN)
                            - t["mean"].as_f64().unwrap_or(0.0))
                        .abs()
                            < 1e-9
                });
            matches.then_some(closed.len())
        },
    );
    assert!(buckets >= 5, "{buckets} whole buckets");

    // The plugin that dies on every batch: its trigger logs each failure; the others
    // went on untouched (above), and the host restarted it each time.
    let crashy = trigger(addr, "crashy");
    assert!(crashy["errors"].as_u64().unwrap_or(0) >= 1, "{crashy}");
    assert_eq!(
        crashy["enabled"], true,
        "the log policy keeps it on: {crashy}"
    );
    assert!(
        crashy["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("exited during the call")),
        "{crashy}"
    );
    drop(db);
}
