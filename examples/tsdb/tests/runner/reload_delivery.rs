//! Under a steady write load, an InfluxDB 3 write plugin reloaded again and again (by
//! edits of its package's helper module) sees every row once: none lost, none twice. The plugin counts the rows it is handed in its
//! cache (which the reloads carry) and writes one row per row seen, so both counts can
//! be held against what was written.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{find_trigger, http, query, wait_until};
use crate::{create, edit, serving_generation, start_with_fixtures, wait_reloaded};

const RELOADS: u64 = 5;
const ROWS_PER_WRITE: u64 = 10;
/// Batches the writer may be ahead of the plugin: well under the trigger's queue (1024),
/// so that no batch is dropped for a full queue, which is not what this test is about.
const MAX_AHEAD: u64 = 300;
const MAX_WRITES: u64 = 20_000;

#[test]
fn reloads_under_writes_lose_no_row_and_deliver_none_twice() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let Some(db) = start_with_fixtures(dir.path()) else {
        return;
    };
    let addr = db.addr;
    create(addr, "counter", "counter", "table:load", Value::Null);
    let file = dir.path().join("plugins/counter/version.py");
    serving_generation(addr, "counter");

    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, writes) = (stop.clone(), writes.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && n < MAX_WRITES {
                let body: Vec<String> = (0..ROWS_PER_WRITE)
                    .map(|k| {
                        let t = 1_000_000_000 + n * ROWS_PER_WRITE + k;
                        format!("load,w=a v={k}i {t}")
                    })
                    .collect();
                let (status, answer) = http(
                    addr,
                    "POST",
                    "/api/v3/write_lp?db=metrics&precision=nanosecond",
                    &body.join("\n"),
                );
                assert_eq!(status, 204, "{answer}");
                n += 1;
                writes.store(n, Ordering::Relaxed);
                if n.is_multiple_of(20) {
                    wait_until(
                        "the plugin keeps up with the writer",
                        Duration::from_secs(120),
                        || {
                            let done = find_trigger(addr, "counter")?["batches"].as_u64()?;
                            (n.saturating_sub(done) < MAX_AHEAD).then_some(())
                        },
                    );
                }
            }
            n
        })
    };

    // Each reload starts with writes going on, and is followed by more.
    for version in 1..=RELOADS {
        let now = writes.load(Ordering::Relaxed);
        wait_until("more writes", Duration::from_secs(60), || {
            (writes.load(Ordering::Relaxed) >= now + 20).then_some(())
        });
        let before = serving_generation(addr, "counter");
        edit(
            &file,
            &format!("VERSION = {version}"),
            &format!("VERSION = {}", version + 1),
        );
        wait_reloaded(addr, "counter", before);
    }
    let now = writes.load(Ordering::Relaxed);
    wait_until(
        "writes after the last reload",
        Duration::from_secs(60),
        || (writes.load(Ordering::Relaxed) >= now + 20).then_some(()),
    );
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().expect("the writer") * ROWS_PER_WRITE;

    let tally = |column: &str| {
        query(addr, &format!("SELECT {column} FROM tally"))
            .and_then(|r| r[0][column].as_u64())
            .unwrap_or(0)
    };
    wait_until(
        "the plugin has seen every row written",
        Duration::from_secs(120),
        || (tally("rows") >= written).then_some(()),
    );
    let status = find_trigger(addr, "counter").expect("the trigger");
    assert_eq!(
        (&status["errors"], &status["dropped"]),
        (&json!(0), &json!(0)),
        "{status}"
    );
    // Every write was delivered (writes queued behind a call go in the next, together):
    // the calls have all ended, and the plugin counted each call once.
    let batches = written / ROWS_PER_WRITE;
    let status = wait_until("every call ended", Duration::from_secs(60), || {
        let status = find_trigger(addr, "counter")?;
        (status["batches"].as_u64()? >= batches).then_some(status)
    });
    assert_eq!(status["batches"], json!(batches), "{status}");
    assert_eq!(tally("rows"), written, "rows counted in the plugin's cache");
    assert_eq!(
        json!(tally("batches")),
        status["calls"],
        "calls counted in the plugin's cache"
    );
    let echoed = query(
        addr,
        "SELECT COUNT(*) AS n, COUNT(DISTINCT version) AS versions FROM echo",
    )
    .expect("the echo table");
    assert_eq!(
        (&echoed[0]["n"], &echoed[0]["versions"]),
        (&json!(written), &json!(RELOADS + 1)),
        "one echo row per row written, from every version"
    );
    eprintln!(
        "{written} rows in {batches} writes ({} calls) across {RELOADS} reloads: each seen once",
        status["calls"]
    );
}
