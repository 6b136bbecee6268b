//! tsdb end to end, with real processes: the database binary, its Rust and Python
//! plugins under baton, line protocol over HTTP into SQLite, triggers on writes, on a
//! schedule and on HTTP requests, each error policy's effect, and the dev loop (a plugin
//! edited while data streams in reloads with its state; one with a syntax error rolls
//! back and says so in the trigger status).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Prepared, http, prepare, query, replace, start, trigger, wait_until};

#[test]
fn the_processing_engine_end_to_end() {
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
settle_ms = 50

[plugins.summary]
command = "{summary}"

[plugins.pyalerter]
command = "{python}"
args = ["{py}/alerter.py"]
copy_binary = false
watch = ["{py}/alerter.py"]
settle_ms = 50

[plugins.downsampler]
command = "{python}"
args = ["{py}/downsampler.py"]
copy_binary = false

[plugins.everything]
command = "{summary_dir}/tsdb-alerter"
"#,
        alerter = alerter.display(),
        summary = env!("CARGO_BIN_EXE_tsdb-summary"),
        python = python.display(),
        summary_dir = Path::new(env!("CARGO_BIN_EXE_tsdb-alerter"))
            .parent()
            .expect("a directory")
            .display(),
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
args = { threshold = "90" }

[[triggers]]
name = "mem_alerts"
plugin = "pyalerter"
on = "table:mem"
database = "metrics"
args = { threshold = "50" }

[[triggers]]
name = "downsample"
plugin = "downsampler"
on = "every:1s"
database = "metrics"
args = { source = "cpu", target = "cpu_1m" }

[[triggers]]
name = "every_second"
plugin = "downsampler"
on = "cron:* * * * * *"
database = "metrics"
args = { source = "cpu", target = "cpu_cron" }

[[triggers]]
name = "summary"
plugin = "summary"
on = "request:summary"
database = "metrics"

[[triggers]]
name = "broken"
plugin = "alerter"
on = "table:bad"
database = "metrics"
error_policy = "disable"
args = { fail = "always" }

[[triggers]]
name = "all"
plugin = "everything"
on = "all_tables"
database = "metrics"
args = { threshold = "1000" }
"#,
    )
    .expect("write tsdb.toml");
    let db = start(dir.path());
    let addr = db.addr;
    for name in ["cpu_alerts", "mem_alerts", "downsample", "summary"] {
        let mut seen = serde_json::Value::Null;
        let deadline = Instant::now() + Duration::from_secs(30);
        while seen["plugin_state"] != "serving" {
            assert!(
                Instant::now() < deadline,
                "{name}'s plugin does not serve: {seen}\n{}",
                std::fs::read_to_string(&db.log).unwrap_or_default()
            );
            seen = trigger(addr, name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    // Line protocol in; a batch with a bad line is refused whole, naming it.
    let minute = 1_700_000_040_000_000_000_i64; // a whole minute, long past
    let write = |body: &str| http(addr, "POST", "/api/v3/write_lp?db=metrics", body);
    let (status, body) = write(&format!(
        "cpu,host=a value=50 {}\ncpu,host=a value=95 {}",
        minute,
        minute + 1_000_000_000
    ));
    assert_eq!(status, 204, "{body}");
    let (status, body) = http(
        addr,
        "POST",
        "/api/v3/write_lp?db=metrics&accept_partial=false",
        &format!("cpu,host=b value=1 {minute}\ncpu,host=b value=oops {minute}"),
    );
    assert_eq!(status, 400, "{body}");
    let refused: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(refused["data"]["line_number"], 2, "{body}");
    assert!(
        refused["data"]["error_message"]
            .as_str()
            .is_some_and(|m| m.starts_with("column 18:")),
        "{body}"
    );
    let count = query(addr, "SELECT COUNT(*) AS n FROM cpu").expect("cpu rows");
    assert_eq!(count[0]["n"], 2, "nothing of it was written");

    // On write: the Rust alerter raised one alert, written back through the database's API.
    let alerts = wait_until("the cpu alert is written", Duration::from_secs(10), || {
        let rows = query(addr, "SELECT * FROM alerts")?;
        (rows.as_array()?.len() == 1).then_some(rows)
    });
    assert_eq!(alerts[0]["series"], "cpu,host=a", "{alerts}");
    assert_eq!(alerts[0]["value"], 95.0);

    // On request: the summary, computed with Query.
    let (status, body) = http(addr, "GET", "/api/v3/engine/summary?table=cpu", "");
    assert_eq!(status, 200, "{body}");
    let summary: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        (summary["points"].as_i64(), summary["max"].as_f64()),
        (Some(2), Some(95.0)),
        "{summary}"
    );

    // On schedule: the Python downsampler wrote the minute's mean.
    let downsampled = wait_until("the minute is downsampled", Duration::from_secs(15), || {
        let rows = query(addr, "SELECT * FROM cpu_1m")?;
        (rows.as_array()?.len() == 1).then_some(rows)
    });
    assert_eq!(downsampled[0]["value"], 72.5, "{downsampled}");
    assert_eq!(
        downsampled[0]["time"], "2023-11-14T22:14:00",
        "{downsampled}"
    );

    // A cron schedule (every second) runs the same plugin with other args.
    wait_until("the cron trigger ran", Duration::from_secs(15), || {
        let rows = query(addr, "SELECT * FROM cpu_cron")?;
        (rows.as_array()?.len() == 1).then_some(())
    });

    // The error policy `disable`: one failure, and the trigger waits to be enabled again.
    assert_eq!(write(&format!("bad value=1 {minute}")).0, 204);
    let broken = wait_until(
        "the broken trigger is disabled",
        Duration::from_secs(10),
        || {
            let t = trigger(addr, "broken");
            (t["enabled"] == false).then_some(t)
        },
    );
    assert!(
        broken["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("told to fail")),
        "{broken}"
    );
    let (status, _) = http(
        addr,
        "POST",
        "/api/v3/configure/processing_engine_trigger/enable?trigger_name=broken",
        "",
    );
    assert_eq!(status, 200);
    assert_eq!(trigger(addr, "broken")["enabled"], true);

    // all_tables: one trigger sees the writes of every table: cpu (2 points), bad (1)
    // and the alerts the alerter wrote back (1), and the downsampled rows after them.
    let all = wait_until(
        "the all_tables trigger caught up",
        Duration::from_secs(10),
        || {
            let t = trigger(addr, "all");
            let message = t["last_message"].as_str()?.to_owned();
            let points: u64 = message
                .strip_prefix("0 alert(s) so far, ")?
                .strip_suffix(" points")?
                .parse()
                .ok()?;
            (points >= 4).then_some(t)
        },
    );
    assert_eq!(all["errors"], 0, "{all}");

    // The dev loop, on the Python alerter, while data streams in.
    let mem = |n: i64, value: f64| write(&format!("mem,host=a value={value} {}", minute + n));
    assert_eq!(mem(0, 10.0).0, 204);
    assert_eq!(mem(1, 60.0).0, 204);
    wait_until("the mem alert", Duration::from_secs(10), || {
        (trigger(addr, "mem_alerts")["last_message"]
            .as_str()?
            .starts_with("1 alert(s) so far"))
        .then_some(())
    });
    let before = trigger(addr, "mem_alerts")["plugin_generation"]
        .as_u64()
        .expect("a generation");
    let script = py.join("alerter.py");
    let text = std::fs::read_to_string(&script).expect("read alerter.py");
    let edited = Instant::now();
    replace(&script, format!("{text}\n# edited\n").as_bytes());
    let mut n = 2;
    wait_until("the edited alerter serves", Duration::from_secs(10), || {
        assert_eq!(
            mem(n, 10.0 + n as f64 % 5.0).0,
            204,
            "writes go on during the reload"
        );
        n += 1;
        (trigger(addr, "mem_alerts")["plugin_generation"].as_u64()? > before).then_some(())
    });
    eprintln!(
        "the Python alerter reloaded {:?} after its file changed",
        edited.elapsed()
    );
    assert_eq!(mem(n, 70.0).0, 204);
    wait_until(
        "the count went on from the state moved",
        Duration::from_secs(10),
        || {
            (trigger(addr, "mem_alerts")["last_message"]
                .as_str()?
                .starts_with("2 alert(s) so far"))
            .then_some(())
        },
    );

    // A syntax error: rolled back, said where the developer looks; the old one serves on.
    let generation = trigger(addr, "mem_alerts")["plugin_generation"].as_u64();
    replace(&script, format!("{text}\ndef broken(:\n").as_bytes());
    let status = wait_until("the rollback is shown", Duration::from_secs(15), || {
        let t = trigger(addr, "mem_alerts");
        t["plugin_last_error"]
            .as_str()
            .is_some_and(|e| e.contains("SyntaxError"))
            .then_some(t)
    });
    assert!(
        status["plugin_last_error"]
            .as_str()
            .is_some_and(|e| e.contains("rolled back")),
        "{status}"
    );
    assert_eq!(
        trigger(addr, "mem_alerts")["plugin_generation"].as_u64(),
        generation
    );
    assert_eq!(mem(n + 1, 10.0).0, 204);
    assert_eq!(mem(n + 2, 80.0).0, 204);
    wait_until(
        "the old generation still alerts",
        Duration::from_secs(10),
        || {
            (trigger(addr, "mem_alerts")["last_message"]
                .as_str()?
                .starts_with("3 alert(s) so far"))
            .then_some(())
        },
    );
    let log = std::fs::read_to_string(&db.log).expect("the log");
    assert!(log.contains("SyntaxError"), "the log shows the error too");

    // The Rust alerter, redeployed (a new build: bytes appended to an ELF file change
    // nothing it runs): its state (last values, count) moves along.
    let mut bytes = std::fs::read(&alerter).expect("read the alerter");
    bytes.extend_from_slice(b"new build");
    replace(&alerter, &bytes);
    wait_until("the new alerter serves", Duration::from_secs(15), || {
        (trigger(addr, "cpu_alerts")["plugin_generation"].as_u64()? >= 2).then_some(())
    });
    assert_eq!(
        write(&format!("cpu,host=a value=99 {}", minute + 2_000_000_000)).0,
        204
    );
    assert_eq!(
        write(&format!("cpu,host=c value=99 {}", minute + 2_000_000_000)).0,
        204
    );
    wait_until(
        "one new alert (host=a was over the threshold already)",
        Duration::from_secs(10),
        || {
            (trigger(addr, "cpu_alerts")["last_message"]
                .as_str()?
                .starts_with("2 alert(s) so far"))
            .then_some(())
        },
    );
}
