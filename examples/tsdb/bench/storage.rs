//! The storage engine's figures, for this tsdb and (with `--sqlite DIR`, a directory
//! holding a `tsdb` binary of the SQLite engine before this one) the same workload
//! against that one in the same run: ingest with 1 and 16 writers, a
//! `DATE_BIN` query over every point, bytes on disk per point, and the restart time.

use std::io::BufReader;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::{connect, request, spawn};

/// Points per write.
const BATCH: usize = 1_000;
/// The first point's time; point `n` is series `n % 16`, `(n / 16) * 10 ms` after it.
const BASE_NS: i64 = 1_700_000_000_000_000_000;

/// Which SQL the engine speaks.
#[derive(Clone, Copy, PartialEq)]
pub enum Dialect {
    DataFusion,
    Sqlite,
}

impl Dialect {
    fn per_minute(self) -> &'static str {
        match self {
            Self::DataFusion => {
                "SELECT DATE_BIN(INTERVAL '1 minute', time) AS minute, host, avg(value) AS v, \
                 max(value) AS top FROM cpu GROUP BY minute, host ORDER BY minute, host"
            }
            Self::Sqlite => {
                "SELECT (time / 60000000000) * 60000000000 AS minute, host, avg(value) AS v, \
                 max(value) AS top FROM cpu GROUP BY minute, host ORDER BY minute, host"
            }
        }
    }
}

/// One engine's figures.
pub struct Figures {
    pub one_writer: f64,
    pub sixteen_writers: f64,
    pub query: Duration,
    pub query_rows: usize,
    pub bytes_per_point: f64,
    /// After a stop: for this tsdb, everything in Parquet.
    pub bytes_per_point_stopped: f64,
    /// SIGKILL, then a start until it serves (the log replayed), and then its first
    /// `count(*)`.
    pub restart_after_crash: (Duration, Duration),
    /// SIGTERM until it exits, then a start until it serves, and then its first
    /// `count(*)`.
    pub restart_after_stop: (Duration, Duration),
}

struct Instance {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn start(bin: &Path, dir: &Path) -> Result<Instance, String> {
    // A restart replays the log before it serves: minutes, for 10 million points.
    let (child, addr) = spawn(bin, dir, Duration::from_secs(600))?;
    Ok(Instance { child, addr })
}

fn body(first: usize) -> String {
    let mut body = String::with_capacity(BATCH * 48);
    for n in first..first + BATCH {
        let time = BASE_NS + (n / 16) as i64 * 10_000_000;
        // A value that does not repeat in a pattern, so compression is not flattered.
        let value = ((n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as f64 / 1000.0;
        body.push_str(&format!("cpu,host=h{} value={value} {time}\n", n % 16));
    }
    body
}

/// Writes batches `from..to` (each `BATCH` points) with `writers` connections, the
/// batches dealt round-robin so that every writer writes the present, as clients do.
fn write(addr: SocketAddr, writers: usize, from: usize, to: usize) -> Result<f64, String> {
    let started = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            std::thread::spawn(move || -> Result<(), String> {
                let mut conn = connect(addr)?;
                for batch in (from + w..to).step_by(writers) {
                    let (status, answer) = request(
                        &mut conn,
                        "POST",
                        "/api/v3/write_lp?db=bench",
                        body(batch * BATCH),
                    )?;
                    if status != 204 {
                        return Err(format!("a write was refused ({status}): {answer}"));
                    }
                }
                Ok(())
            })
        })
        .collect();
    for handle in handles {
        handle.join().map_err(|_| "a writer panicked")??;
    }
    Ok(((to - from) * BATCH) as f64 / started.elapsed().as_secs_f64())
}

fn query(conn: &mut BufReader<TcpStream>, sql: &str) -> Result<serde_json::Value, String> {
    let encoded: String = sql
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'*' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (status, answer) = request(
        conn,
        "GET",
        &format!("/api/v3/query_sql?db=bench&q={encoded}"),
        "",
    )?;
    if status != 200 {
        return Err(format!("{sql}: {status} {answer}"));
    }
    serde_json::from_str(&answer).map_err(|e| format!("{sql}: {e}"))
}

fn bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => bytes_under(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// Runs the workload over `points` points against the `tsdb` at `bin`.
pub fn measure(bin: &Path, dialect: Dialect, points: usize) -> Result<Figures, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    std::fs::write(dir.path().join("plugins.toml"), "").map_err(|e| e.to_string())?;
    // The SQLite tsdb knew no tokens (nor the key that turns them off).
    let auth = match dialect {
        Dialect::DataFusion => "without_auth = true\n",
        Dialect::Sqlite => "",
    };
    std::fs::write(
        dir.path().join("tsdb.toml"),
        format!("http = \"127.0.0.1:0\"\nplugins = \"plugins.toml\"\n{auth}"),
    )
    .map_err(|e| e.to_string())?;
    let batches = points.div_ceil(BATCH);
    let half = batches / 2;
    let db = start(bin, dir.path())?;
    let one_writer = write(db.addr, 1, 0, half)?;
    let sixteen_writers = write(db.addr, 16, half, batches)?;
    let mut conn = connect(db.addr)?;
    let count = query(&mut conn, "SELECT count(*) AS n FROM cpu")?;
    let stored = count[0]["n"].as_u64().unwrap_or(0);
    if stored != (batches * BATCH) as u64 {
        return Err(format!(
            "{} holds {stored} points, not {}",
            bin.display(),
            batches * BATCH
        ));
    }
    let sql = dialect.per_minute();
    let mut times = Vec::new();
    let mut query_rows = 0;
    for _ in 0..3 {
        let started = Instant::now();
        let rows = query(&mut conn, sql)?;
        times.push(started.elapsed());
        query_rows = rows.as_array().map_or(0, Vec::len);
    }
    times.sort();
    let bytes_per_point = bytes_under(&dir.path().join("data")) as f64 / stored as f64;
    drop(conn);
    let mut db = db;
    db.child.kill().map_err(|e| e.to_string())?;
    db.child.wait().map_err(|e| e.to_string())?;
    let restarted = |started: Instant| -> Result<(Instance, (Duration, Duration)), String> {
        let db = start(bin, dir.path())?;
        let serving = started.elapsed();
        let queried = Instant::now();
        let mut conn = connect(db.addr)?;
        let count = query(&mut conn, "SELECT count(*) AS n FROM cpu")?;
        if count[0]["n"].as_u64() != Some(stored) {
            return Err(format!("after a restart: {count}"));
        }
        Ok((db, (serving, queried.elapsed())))
    };
    let (db, restart_after_crash) = restarted(Instant::now())?;
    let started = Instant::now();
    drop(db);
    let (_db, restart_after_stop) = restarted(started)?;
    let bytes_per_point_stopped = bytes_under(&dir.path().join("data")) as f64 / stored as f64;
    Ok(Figures {
        one_writer,
        sixteen_writers,
        query: times[1],
        query_rows,
        bytes_per_point,
        bytes_per_point_stopped,
        restart_after_crash,
        restart_after_stop,
    })
}

/// Prints this engine's figures beside the baseline's, if one ran.
pub fn print(points: usize, ours: &Figures, baseline: Option<(&str, &Figures)>) {
    let name = baseline.map_or("(none: --sqlite DIR)", |(n, _)| n);
    println!();
    println!("| storage, {points} points | this tsdb | baseline {name} | ratio |");
    println!("|---|---:|---:|---:|");
    let row = |what: &str, ours: f64, theirs: Option<f64>, unit: &str, digits: usize| {
        let theirs_text = theirs.map_or(String::new(), |t| format!("{t:.digits$} {unit}"));
        let ratio = theirs.map_or(String::new(), |t| format!("{:.2}×", ours / t));
        println!("| {what} | {ours:.digits$} {unit} | {theirs_text} | {ratio} |");
    };
    let b = baseline.map(|(_, f)| f);
    row(
        "ingest, 1 writer, 1,000-point writes",
        ours.one_writer,
        b.map(|f| f.one_writer),
        "points/s",
        0,
    );
    row(
        "ingest, 16 writers",
        ours.sixteen_writers,
        b.map(|f| f.sixteen_writers),
        "points/s",
        0,
    );
    row(
        &format!(
            "per-minute avg and max per series over every point ({} rows), median of 3",
            ours.query_rows
        ),
        ours.query.as_secs_f64() * 1e3,
        b.map(|f| f.query.as_secs_f64() * 1e3),
        "ms",
        1,
    );
    row(
        "bytes on disk per point, after the writes",
        ours.bytes_per_point,
        b.map(|f| f.bytes_per_point),
        "B",
        1,
    );
    row(
        "bytes on disk per point, after a stop (this tsdb: all of it Parquet)",
        ours.bytes_per_point_stopped,
        b.map(|f| f.bytes_per_point_stopped),
        "B",
        1,
    );
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    row(
        "restart after a SIGKILL, until it serves (the log replayed)",
        ms(ours.restart_after_crash.0),
        b.map(|f| ms(f.restart_after_crash.0)),
        "ms",
        0,
    );
    row(
        "then its first count(*) over every point",
        ms(ours.restart_after_crash.1),
        b.map(|f| ms(f.restart_after_crash.1)),
        "ms",
        0,
    );
    row(
        "restart after a stop (SIGTERM until exit, then start until it serves)",
        ms(ours.restart_after_stop.0),
        b.map(|f| ms(f.restart_after_stop.0)),
        "ms",
        0,
    );
    row(
        "then its first count(*) over every point",
        ms(ours.restart_after_stop.1),
        b.map(|f| ms(f.restart_after_stop.1)),
        "ms",
        0,
    );
}

/// The `tsdb` binary in `dir`.
pub fn binary(dir: &Path) -> PathBuf {
    dir.join("tsdb")
}
