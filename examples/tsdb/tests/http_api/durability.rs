//! What a write's 204 promises: the point is in the write-ahead log, so a SIGKILL at any
//! moment loses nothing acknowledged; snapshots move the data into Parquet files any
//! Arrow tool reads; a torn log tail is dropped with a warning naming file and offset.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{Tsdb, root, rows, start, wait_until};

/// One write on a fresh connection; the status, or `None` when tsdb is gone.
fn try_write(addr: SocketAddr, path: &str, body: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .ok()?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: tsdb\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    let answer = String::from_utf8_lossy(&answer);
    answer.split(' ').nth(1)?.parse().ok()
}

fn config(dir: &Path, snapshot_rows: usize) {
    std::fs::write(dir.join("plugins.toml"), "").expect("write plugins.toml");
    std::fs::write(
        dir.join("tsdb.toml"),
        format!(
            "http = \"127.0.0.1:0\"\nplugins = \"plugins.toml\"\nsnapshot_rows = {snapshot_rows}\n"
        ),
    )
    .expect("write tsdb.toml");
}

fn sigkill(db: &mut Tsdb) {
    db.child.kill().expect("SIGKILL tsdb");
    db.child.wait().expect("reap tsdb");
}

/// Every point id the database holds in `load`.
fn stored_ids(addr: SocketAddr) -> BTreeSet<i64> {
    rows(addr, "d", "SELECT n FROM load")
        .iter()
        .map(|r| r["n"].as_i64().expect("an integer n"))
        .collect()
}

#[test]
fn every_acknowledged_point_survives_a_sigkill_mid_write_load() {
    let dir = tempfile::tempdir().expect("a temp dir");
    // Snapshots every few hundred rows, so the kill also lands around Parquet writes.
    config(dir.path(), 700);
    let mut db = start(dir.path());
    let addr = db.addr;
    let acknowledged: Arc<Mutex<BTreeSet<i64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4i64)
        .map(|w| {
            let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
            std::thread::spawn(move || {
                // Bounded: 2,000 batches per writer at most, however long the kill takes.
                for batch in 0..2_000i64 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let ids: Vec<i64> = (0..25).map(|i| (w * 2_000 + batch) * 25 + i).collect();
                    let body: String = ids
                        .iter()
                        .map(|n| {
                            format!(
                                "load,writer=w{w} n={n}i {}\n",
                                1_700_000_000_000_000_000 + n
                            )
                        })
                        .collect();
                    match try_write(addr, "/api/v3/write_lp?db=d", &body) {
                        Some(204) => acknowledged.lock().expect("lock").extend(ids),
                        Some(status) => panic!("write answered {status}"),
                        None => break,
                    }
                }
            })
        })
        .collect();
    // Kill once several snapshots' worth has been acknowledged, writers still going.
    wait_until(
        "3,000 points acknowledged",
        Duration::from_secs(120),
        || (acknowledged.lock().expect("lock").len() >= 3_000).then_some(()),
    );
    sigkill(&mut db);
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().expect("a writer");
    }
    let acknowledged = acknowledged.lock().expect("lock").clone();
    let parquet = count_files(&dir.path().join("data/dbs/d"), "parquet");
    assert!(parquet > 0, "no snapshot was written before the kill");

    let db = start(dir.path());
    let stored = stored_ids(db.addr);
    let lost: Vec<_> = acknowledged.difference(&stored).take(10).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged points are gone after the restart, e.g. {lost:?}",
        acknowledged.difference(&stored).count(),
        acknowledged.len()
    );
    // Nothing stored twice: one row per id.
    let count = rows(db.addr, "d", "SELECT count(*) AS c FROM load");
    assert_eq!(count[0]["c"].as_i64(), Some(stored.len() as i64));
}

fn count_files(dir: &Path, ext: &str) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == ext))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn a_restart_reads_parquet_and_log_alike_and_pyarrow_reads_the_files() {
    let dir = tempfile::tempdir().expect("a temp dir");
    config(dir.path(), 100);
    let mut db = start(dir.path());
    // 300 points over 3 writes: snapshots to Parquet; then the same series and times
    // rewritten (last write wins across a file and the buffer) and a new field.
    for part in 0..3 {
        let body: String = (0..100)
            .map(|i| {
                let n = part * 100 + i;
                format!("m,host=h{} v={n}i,ok=true {}\n", n % 3, 1_700_000_000 + n)
            })
            .collect();
        assert_eq!(
            try_write(db.addr, "/api/v3/write_lp?db=d&precision=s", &body),
            Some(204)
        );
    }
    wait_until("a Parquet file", Duration::from_secs(60), || {
        (count_files(&dir.path().join("data/dbs/d"), "parquet") > 0).then_some(())
    });
    let body: String = (0..50)
        .map(|n| {
            format!(
                "m,host=h{} v={}i,note=\"again\" {}\n",
                n % 3,
                -n,
                1_700_000_000 + n
            )
        })
        .collect();
    assert_eq!(
        try_write(db.addr, "/api/v3/write_lp?db=d&precision=s", &body),
        Some(204)
    );
    let sql = "SELECT host, v, ok, note, time FROM m ORDER BY time";
    let before = rows(db.addr, "d", sql);
    assert_eq!(before.len(), 300);
    assert_eq!(before[10]["v"], -10);
    assert_eq!(before[10]["note"], "again");
    assert_eq!(before[10]["ok"], true);
    assert_eq!(before[200]["v"], 200);
    sigkill(&mut db);

    let db = start(dir.path());
    assert_eq!(
        rows(db.addr, "d", sql),
        before,
        "the same rows after a restart"
    );
    let log = std::fs::read_to_string(&db.log).expect("the log");
    assert!(log.contains("Parquet files"), "{log}");

    // The files are plain Parquet with InfluxDB's types.
    let python = root().join(".venv/bin/python");
    if !python.exists() {
        println!("skipped the pyarrow check: no .venv (run plugin-sdk/python/setup-python.sh)");
        return;
    }
    let script = r#"
import glob, sys
import pyarrow.parquet as pq
files = sorted(glob.glob(sys.argv[1] + "/*.parquet"))
assert files, "no files"
rows = 0
for f in files:
    t = pq.read_table(f)
    rows += t.num_rows
    types = {field.name: str(field.type) for field in t.schema}
    assert types["time"] == "timestamp[ns]", types
    assert types["host"] == "dictionary<values=string, indices=int32, ordered=0>", types
    assert types["v"] == "int64", types
    assert types["ok"] == "bool", types
print(len(files), rows)
"#;
    let out = Command::new(&python)
        .args(["-c", script])
        .arg(dir.path().join("data/dbs/d"))
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "pyarrow: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let rows_in_files: usize = text
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("a row count");
    assert!(rows_in_files >= 100, "{text}");
}

#[test]
fn a_torn_log_tail_is_dropped_with_a_warning_naming_file_and_offset() {
    let dir = tempfile::tempdir().expect("a temp dir");
    config(dir.path(), 1_000_000);
    let mut db = start(dir.path());
    assert_eq!(
        try_write(db.addr, "/api/v3/write_lp?db=d", "t v=1i 1\nt v=2i 2\n"),
        Some(204)
    );
    sigkill(&mut db);
    // A record cut off by the crash: a header promising more bytes than follow.
    let wal_dir = dir.path().join("data/wal");
    let newest = std::fs::read_dir(&wal_dir)
        .expect("the log dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
        .max()
        .expect("a log file with the write");
    let good = std::fs::metadata(&newest).expect("stat").len();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&newest)
        .expect("open the log file");
    file.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 5, 6])
        .expect("tear the tail");
    drop(file);

    let db = start(dir.path());
    let answer = rows(db.addr, "d", "SELECT v FROM t ORDER BY time");
    assert_eq!(
        answer,
        vec![serde_json::json!({"v": 1}), serde_json::json!({"v": 2})]
    );
    let log = std::fs::read_to_string(&db.log).expect("the log");
    assert!(
        log.contains(&newest.display().to_string()) && log.contains(&format!("offset {good}")),
        "no warning naming {} and offset {good}: {log}",
        newest.display()
    );
    assert_eq!(std::fs::metadata(&newest).expect("stat").len(), good);
}

#[test]
fn a_stop_writes_the_buffers_as_parquet_so_the_next_start_replays_nothing() {
    let dir = tempfile::tempdir().expect("a temp dir");
    config(dir.path(), 1_000_000);
    let mut db = start(dir.path());
    let body: String = (0..50)
        .map(|n| format!("s v={n}i {}\n", 1_000 + n))
        .collect();
    assert_eq!(
        try_write(db.addr, "/api/v3/write_lp?db=d", &body),
        Some(204)
    );
    assert_eq!(count_files(&dir.path().join("data/dbs/d"), "parquet"), 0);
    let status = Command::new("kill")
        .arg(db.child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = wait_until("tsdb stops", Duration::from_secs(60), || {
        db.child.try_wait().expect("wait")
    });
    assert!(exit.success(), "{exit}");
    assert_eq!(count_files(&dir.path().join("data/dbs/d"), "parquet"), 1);

    let db = start(dir.path());
    let log = std::fs::read_to_string(&db.log).expect("the log");
    assert!(
        log.contains("1 Parquet files, 0 log records replayed"),
        "{log}"
    );
    assert_eq!(
        rows(db.addr, "d", "SELECT count(*) AS n, sum(v) AS s FROM s"),
        vec![serde_json::json!({"n": 50, "s": 1225})]
    );
}
