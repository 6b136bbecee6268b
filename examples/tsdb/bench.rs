//! `tsdb-bench [--quick] [--only trigger|storage|runner] [--sqlite DIR]`: tsdb's ingest
//! throughput with an on-write trigger (the Rust alerter) beside the same database without
//! it, measured in interleaved rounds in one run, and the trigger's latency (a write
//! accepted → the plugin answered, from the trigger's status); then the storage engine's
//! figures (`bench/storage.rs`), beside those of the `tsdb` in `DIR` (a build of the SQLite
//! engine) when given; then InfluxDB 3 plugins on the Python runner against the floor of
//! an in-process engine (`bench/runner.rs`; skipped without the repository's `.venv`).
//! Build it in release: `cargo build --release -p baton-tsdb`, then
//! `./target/release/tsdb-bench`.

#[path = "bench/runner.rs"]
mod runner;
#[path = "bench/storage.rs"]
mod storage;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running tsdb on a directory of its own.
struct Db {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn start(bin: &Path, with_trigger: bool) -> Result<Db, String> {
    // Without it every batch fails and the figures are of nothing (cargo builds only
    // the binaries it is asked for).
    let alerter = bin.join("tsdb-alerter");
    if !alerter.exists() {
        return Err(format!(
            "{} is missing: build it beside tsdb-bench (cargo build --release -p baton-tsdb)",
            alerter.display()
        ));
    }
    let plugins = format!(
        "[plugins.alerter]\ncommand = \"{}\"\n",
        bin.join("tsdb-alerter").display()
    );
    let trigger = if with_trigger {
        "[[triggers]]\nname = \"alerts\"\nplugin = \"alerter\"\non = \"table:cpu\"\ndatabase = \"bench\"\nargs = { threshold = \"90\" }\n"
    } else {
        ""
    };
    launch(bin, &plugins, trigger)
}

/// The `tsdb` in `bin` on a new directory, with `plugins` as its plugins.toml and
/// `config` after the HTTP address in its tsdb.toml, once it serves.
fn launch(bin: &Path, plugins: &str, config: &str) -> Result<Db, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    std::fs::write(dir.path().join("plugins.toml"), plugins).map_err(|e| e.to_string())?;
    std::fs::write(
        dir.path().join("tsdb.toml"),
        format!(
            "http = \"127.0.0.1:0\"\nplugins = \"plugins.toml\"\nwithout_auth = true\n{config}"
        ),
    )
    .map_err(|e| e.to_string())?;
    let (child, addr) = spawn(&bin.join("tsdb"), dir.path(), Duration::from_secs(30))?;
    Ok(Db { child, addr, dir })
}

/// Runs the `tsdb` at `tsdb` on `dir/tsdb.toml`, its log in `dir/tsdb.log`, until it
/// says where it serves (or `timeout`, when it is killed).
fn spawn(tsdb: &Path, dir: &Path, timeout: Duration) -> Result<(Child, SocketAddr), String> {
    let log = dir.join("tsdb.log");
    let mut child = Command::new(tsdb)
        .arg("--config")
        .arg(dir.join("tsdb.toml"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", tsdb.display()))?;
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(at) = text.find("serving http://") {
            let rest = &text[at + "serving http://".len()..];
            if let Some(addr) = rest.split_whitespace().next().and_then(|a| a.parse().ok()) {
                return Ok((child, addr));
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{} did not start: {text}", tsdb.display()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One request on a kept-alive connection; the status and the body.
fn request(
    conn: &mut BufReader<TcpStream>,
    method: &str,
    path: &str,
    body: impl AsRef<[u8]>,
) -> Result<(u16, String), String> {
    let io = |e: std::io::Error| e.to_string();
    let body = body.as_ref();
    // One write, and no Nagle: a request in pieces waits out the peer's delayed ACK.
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: tsdb\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    conn.get_mut().write_all(&request).map_err(io)?;
    let mut line = String::new();
    conn.read_line(&mut line).map_err(io)?;
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {line:?}"))?;
    let mut length = 0;
    loop {
        line.clear();
        conn.read_line(&mut line).map_err(io)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body).map_err(io)?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The status of trigger `name`, once `done` holds for it or `timeout` has passed.
fn trigger_when(
    conn: &mut BufReader<TcpStream>,
    name: &str,
    timeout: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> Result<serde_json::Value, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let (_, body) = request(
            conn,
            "GET",
            "/api/v3/configure/processing_engine_trigger",
            "",
        )?;
        let all: Vec<serde_json::Value> =
            serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        let status = all
            .into_iter()
            .find(|t| t["name"] == name)
            .ok_or_else(|| format!("tsdb runs no trigger {name}"))?;
        if done(&status) || Instant::now() > deadline {
            return Ok(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Trigger `name`'s status once it has answered `want` batches (or after a minute).
fn delivered(
    conn: &mut BufReader<TcpStream>,
    name: &str,
    want: u64,
) -> Result<serde_json::Value, String> {
    trigger_when(conn, name, Duration::from_secs(60), |t| {
        t["batches"].as_u64() >= Some(want)
    })
}

/// Points per second over `batches` writes of `per_batch` points.
fn connect(addr: SocketAddr) -> Result<BufReader<TcpStream>, String> {
    let stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(BufReader::new(stream))
}

fn ingest(db: &Db, batches: usize, per_batch: usize, start_n: &mut usize) -> Result<f64, String> {
    let mut conn = connect(db.addr)?;
    let started = Instant::now();
    for _ in 0..batches {
        let mut body = String::with_capacity(per_batch * 40);
        for _ in 0..per_batch {
            let n = *start_n;
            *start_n += 1;
            body.push_str(&format!(
                "cpu,host=h{} value={},n={n}i {}\n",
                n % 16,
                (n * 7) % 100,
                stamp(n)
            ));
        }
        let (status, answer) = request(&mut conn, "POST", "/api/v3/write_lp?db=bench", &body)?;
        if status != 204 {
            return Err(format!("a write was refused ({status}): {answer}"));
        }
    }
    Ok((batches * per_batch) as f64 / started.elapsed().as_secs_f64())
}

fn run(quick: bool) -> Result<(), String> {
    let bin = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .parent()
        .ok_or("no directory for this binary")?
        .to_owned();
    let (rounds, batches, per_batch) = if quick { (2, 20, 100) } else { (10, 200, 100) };
    let plain = start(&bin, false)?;
    let triggered = start(&bin, true)?;
    let (mut a, mut b, mut n) = (Vec::new(), Vec::new(), 0);
    for round in 0..=rounds {
        let (x, y) = (
            ingest(&plain, batches, per_batch, &mut n)?,
            ingest(&triggered, batches, per_batch, &mut n)?,
        );
        // Round 0 warms both up.
        if round > 0 {
            a.push(x);
            b.push(y);
        }
    }
    // The trigger's queue drains; then its latencies cover every batch of the rounds.
    let mut conn = connect(triggered.addr)?;
    let want = ((rounds + 1) * batches) as u64;
    let status = delivered(&mut conn, "alerts", want)?;
    // The latency of a batch that finds the trigger idle: a third database, written to
    // at a pace its plugin keeps up with.
    let paced = start(&bin, true)?;
    let mut conn = connect(paced.addr)?;
    let paced_writes = if quick { 20 } else { 500 };
    for _ in 0..paced_writes {
        let mut body = String::new();
        for _ in 0..per_batch {
            body.push_str(&format!(
                "cpu,host=h{} value={},n={n}i {}\n",
                n % 16,
                (n * 7) % 100,
                stamp(n)
            ));
            n += 1;
        }
        let (status, answer) = request(&mut conn, "POST", "/api/v3/write_lp?db=bench", &body)?;
        if status != 204 {
            return Err(format!("a write was refused ({status}): {answer}"));
        }
        // The pace of this writer: 200 writes a second.
        std::thread::sleep(Duration::from_millis(5));
    }
    let idle = delivered(&mut conn, "alerts", paced_writes as u64)?;
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (pa, pb) = (median(&mut a), median(&mut b));
    println!("| figure | value | baseline | ratio |");
    println!("|---|---:|---:|---:|");
    println!(
        "| ingest, no trigger (median of {rounds} rounds of {batches} writes × {per_batch} points) | {pa:.0} points/s | | |"
    );
    println!(
        "| ingest with the on-write alerter | {pb:.0} points/s | {pa:.0} | {:.2}× |",
        pb / pa
    );
    println!(
        "| trigger latency, write accepted → plugin answered, p50 / p99 (last 4096 calls, from each call's first write) | {} / {} µs | | |",
        status["latency_p50_us"], status["latency_p99_us"]
    );
    println!(
        "| batches delivered (in calls) / errors / dropped | {} ({}) / {} / {} | | |",
        status["batches"], status["calls"], status["errors"], status["dropped"]
    );
    println!(
        "| trigger latency with the writer paced at 200 writes/s × {per_batch} points, p50 / p99 | {} / {} µs | | |",
        idle["latency_p50_us"], idle["latency_p99_us"]
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let only = value("--only");
    let sqlite = value("--sqlite").map(std::path::PathBuf::from);
    let outcome = (|| {
        let sections = ["trigger", "storage", "runner"];
        if let Some(only) = only.as_deref().filter(|o| !sections.contains(o)) {
            return Err(format!("--only {only}: one of {}", sections.join(", ")));
        }
        let chosen = |section: &str| only.as_deref().is_none_or(|o| o == section);
        if chosen("trigger") {
            run(quick)?;
        }
        if chosen("storage") {
            run_storage(quick, sqlite.as_deref())?;
        }
        if chosen("runner") {
            runner::run(quick)?;
        }
        Ok::<(), String>(())
    })();
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tsdb-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The storage figures: 10 million points (100,000 with `--quick`).
fn run_storage(quick: bool, sqlite: Option<&Path>) -> Result<(), String> {
    let bin = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .parent()
        .ok_or("no directory for this binary")?
        .to_owned();
    let points = if quick { 100_000 } else { 10_000_000 };
    let baseline = sqlite
        .map(|dir| storage::measure(&storage::binary(dir), storage::Dialect::Sqlite, points))
        .transpose()?;
    let ours = storage::measure(&storage::binary(&bin), storage::Dialect::DataFusion, points)?;
    storage::print(points, &ours, baseline.as_ref().map(|b| ("SQLite tsdb", b)));
    Ok(())
}

/// Point `n`'s time: its own nanosecond after the bench's start, so that no two points
/// of a series share a time (they would replace each other: last write wins).
fn stamp(n: usize) -> i64 {
    static START: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let start = *START.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(0))
    });
    start + i64::try_from(n).unwrap_or(0)
}
