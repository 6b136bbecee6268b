//! tsdb end to end, with real processes: the database binary, its Rust and Python
//! plugins under baton, line protocol over HTTP into SQLite, triggers on writes, on a
//! schedule and on HTTP requests, each error policy's effect, and the dev loop (a plugin
//! edited while data streams in reloads with its state; one with a syntax error rolls
//! back and says so in the trigger status).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Polls `check` every 20 ms until it gives a value, or panics naming `what`.
fn wait_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One HTTP/1.1 request on a fresh connection: the status and the body.
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to tsdb");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("a read timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: tsdb\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send the request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the answer");
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The rows of `sql`, or `None` while it cannot run (its table not made yet, say).
fn query(addr: SocketAddr, sql: &str) -> Option<serde_json::Value> {
    let q: String = sql
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'*' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (status, body) = http(
        addr,
        "GET",
        &format!("/api/v3/query_sql?db=metrics&q={q}"),
        "",
    );
    (status == 200).then(|| serde_json::from_str(&body).expect("JSON rows"))
}

fn trigger(addr: SocketAddr, name: &str) -> serde_json::Value {
    let (status, body) = http(
        addr,
        "GET",
        "/api/v3/configure/processing_engine_trigger",
        "",
    );
    assert_eq!(status, 200, "{body}");
    let all: Vec<serde_json::Value> = serde_json::from_str(&body).expect("JSON");
    all.into_iter()
        .find(|t| t["name"] == name)
        .expect("the trigger")
}

/// Writes `path` whole through a rename, as an editor or a deploy would, keeping its
/// permissions.
fn replace(path: &Path, content: &[u8]) {
    let temp = path.with_extension("swap");
    std::fs::write(&temp, content).expect("write");
    let permissions = std::fs::metadata(path).expect("stat").permissions();
    std::fs::set_permissions(&temp, permissions).expect("chmod");
    std::fs::rename(&temp, path).expect("rename");
}

struct Tsdb {
    child: Child,
    log: PathBuf,
    addr: SocketAddr,
}

impl Drop for Tsdb {
    fn drop(&mut self) {
        let _ = nix_kill(self.child.id());
        let _ = self.child.wait();
    }
}

fn nix_kill(pid: u32) -> std::io::Result<()> {
    // SIGTERM to the database stops its plugins with it.
    Command::new("kill")
        .arg(pid.to_string())
        .status()
        .map(|_| ())
}

fn start(dir: &Path) -> Tsdb {
    let log = dir.join("tsdb.log");
    let child = Command::new(env!("CARGO_BIN_EXE_tsdb"))
        .args(["--dev", "--config"])
        .arg(dir.join("tsdb.toml"))
        .env("TSDB_LOG", "info,baton::plugin=info")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("stdout.log")).expect("log"))
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start tsdb");
    let addr = wait_until("tsdb serves HTTP", Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&log).ok()?;
        let at = text.find("serving http://")? + "serving http://".len();
        text[at..].split_whitespace().next()?.parse().ok()
    });
    Tsdb { child, log, addr }
}

#[test]
fn the_processing_engine_end_to_end() {
    let python = root().join(".venv/bin/python");
    if !python.exists() {
        eprintln!("skipped: no .venv (run plugin-sdk/python/setup-python.sh)");
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    // The Python plugins, copied so the test may edit them; their stubs made first.
    let py = dir.path().join("py");
    std::fs::create_dir(&py).expect("mkdir");
    let source = root().join("examples/tsdb/plugins/python");
    for file in [
        "gen_stubs.py",
        "tsdb_plugin.py",
        "alerter.py",
        "downsampler.py",
    ] {
        std::fs::copy(source.join(file), py.join(file)).expect("copy a plugin file");
    }
    let status = Command::new(&python)
        .arg(source.join("gen_stubs.py"))
        .status()
        .expect("generate the stubs");
    assert!(status.success());
    copy_dir(&source.join("tsdb_api"), &py.join("tsdb_api"));
    // The Rust alerter, copied so that replacing it reloads it.
    let alerter = dir.path().join("tsdb-alerter");
    std::fs::copy(env!("CARGO_BIN_EXE_tsdb-alerter"), &alerter).expect("copy the alerter");
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
"#,
        alerter = alerter.display(),
        summary = env!("CARGO_BIN_EXE_tsdb-summary"),
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
"#,
    )
    .expect("write tsdb.toml");
    let db = start(dir.path());
    let addr = db.addr;
    for name in ["cpu_alerts", "mem_alerts", "downsample", "summary"] {
        wait_until(
            &format!("{name}'s plugin serves"),
            Duration::from_secs(30),
            || (trigger(addr, name)["plugin_state"] == "serving").then_some(()),
        );
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
    let (status, body) = write(&format!(
        "cpu,host=b value=1 {minute}\ncpu,host=b value=oops {minute}"
    ));
    assert_eq!(status, 400, "{body}");
    let refused: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        (refused["line"].as_u64(), refused["column"].as_u64()),
        (Some(2), Some(18)),
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
    assert_eq!(downsampled[0]["time"], minute, "{downsampled}");

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

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read a dir") {
        let entry = entry.expect("an entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}
