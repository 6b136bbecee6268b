//! What the tsdb end-to-end tests share: a database process on a temp directory, an
//! HTTP client, and waiting with a deadline.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The repository's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Polls `check` every 20 ms until it gives a value, or panics naming `what`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
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
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let (status, _, body) = http_full(addr, method, path, &[], body);
    (status, body)
}

/// The rows of `sql`, or `None` while it cannot run (its table not made yet, say).
pub fn query(addr: SocketAddr, sql: &str) -> Option<serde_json::Value> {
    let (status, body) = http(
        addr,
        "GET",
        &format!("/api/v3/query_sql?db=metrics&q={}", encoded(sql)),
        "",
    );
    (status == 200).then(|| serde_json::from_str(&body).expect("JSON rows"))
}

pub fn trigger(addr: SocketAddr, name: &str) -> serde_json::Value {
    find_trigger(addr, name).expect("the trigger")
}

/// Writes `path` whole through a rename, as an editor or a deploy would, keeping its
/// permissions.
pub fn replace(path: &Path, content: &[u8]) {
    let temp = path.with_extension("swap");
    std::fs::write(&temp, content).expect("write");
    let permissions = std::fs::metadata(path).expect("stat").permissions();
    std::fs::set_permissions(&temp, permissions).expect("chmod");
    std::fs::rename(&temp, path).expect("rename");
}

pub struct Tsdb {
    pub child: Child,
    pub log: PathBuf,
    pub addr: SocketAddr,
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

/// tsdb in dev mode on `dir/tsdb.toml`, checking no tokens (the token tests start it
/// with [`start_with`]).
pub fn start(dir: &Path) -> Tsdb {
    start_with(dir, &["--without-auth"])
}

/// tsdb in dev mode on `dir/tsdb.toml`, with `args` after the config.
pub fn start_with(dir: &Path, args: &[&str]) -> Tsdb {
    let log = dir.join("tsdb.log");
    let child = Command::new(env!("CARGO_BIN_EXE_tsdb"))
        .args(["--dev", "--config"])
        .arg(dir.join("tsdb.toml"))
        .args(args)
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

pub fn copy_dir(from: &Path, to: &Path) {
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

/// What a test's plugins run from: the repository's Python, copies of the Python
/// plugins (with their stubs) and of the Rust alerter, in the test's directory, so that
/// a test may edit and replace them.
pub struct Prepared {
    pub python: PathBuf,
    pub py: PathBuf,
    pub alerter: PathBuf,
}

/// Prepares `dir`; `None` (with a line saying so) where there is no Python venv.
pub fn prepare(dir: &Path) -> Option<Prepared> {
    let python = root().join(".venv/bin/python");
    if !python.exists() {
        eprintln!("skipped: no .venv (run plugin-sdk/python/setup-python.sh)");
        return None;
    }
    // The Python plugins, copied so the test may edit them; their stubs made first.
    let py = dir.join("py");
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
    let alerter = dir.join("tsdb-alerter");
    std::fs::copy(env!("CARGO_BIN_EXE_tsdb-alerter"), &alerter).expect("copy the alerter");
    Some(Prepared {
        python,
        py,
        alerter,
    })
}

/// One HTTP/1.1 request with `headers` (each `name: value`) on a fresh connection: the
/// status, the answer's headers (names lower-cased) and the body.
pub fn http_full(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to tsdb");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("a read timeout");
    stream.set_nodelay(true).expect("no Nagle");
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    // One write: a request in pieces waits out the peer's delayed ACK.
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: tsdb\r\nconnection: close\r\n{extra}content-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .expect("send the request");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read the answer");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

/// The value of header `name` in `headers`, if any.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `text` percent-encoded for a query string.
pub fn encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'*' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The JSON rows of `sql` in database `db`; panics naming the answer if it fails.
pub fn rows(addr: SocketAddr, db: &str, sql: &str) -> Vec<serde_json::Value> {
    rows_with(addr, &[], db, sql)
}

/// As [`rows`], sending `headers` (a token) too.
pub fn rows_with(
    addr: SocketAddr,
    headers: &[&str],
    db: &str,
    sql: &str,
) -> Vec<serde_json::Value> {
    let (status, _, body) = http_full(
        addr,
        "GET",
        &format!("/api/v3/query_sql?db={db}&q={}", encoded(sql)),
        headers,
        "",
    );
    assert_eq!(status, 200, "{sql}: {body}");
    serde_json::from_str(&body).expect("JSON rows")
}

/// The token the client-library tests give tsdb in an admin token file, and send.
pub const CLIENT_TOKEN: &str = "apiv3_client-tests-0123456789abcdef";
/// The header that sends it.
pub const CLIENT_AUTH: &str = "authorization: Bearer apiv3_client-tests-0123456789abcdef";

/// A database without plugins or triggers, on `dir`, checking tokens: its operator
/// token is [`CLIENT_TOKEN`], from an admin token file.
pub fn start_bare_with_token(dir: &Path) -> Tsdb {
    use std::os::unix::fs::PermissionsExt;
    let file = dir.join("admin-token.json");
    std::fs::write(&file, format!("{{\"token\": \"{CLIENT_TOKEN}\"}}"))
        .expect("write the token file");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::write(dir.join("plugins.toml"), "").expect("write plugins.toml");
    std::fs::write(
        dir.join("tsdb.toml"),
        "http = \"127.0.0.1:0\"\nplugins = \"plugins.toml\"\nadmin_token_file = \"admin-token.json\"\n",
    )
    .expect("write tsdb.toml");
    start_with(dir, &[])
}

/// Runs tsdb with `args`, expecting it to refuse to start: its exit code and stderr
/// (kept in `dir`). One that starts after all is stopped after 30 s, so the test fails
/// on its exit code rather than waiting for ever.
pub fn exit_of(dir: &Path, args: &[&std::ffi::OsStr]) -> (Option<i32>, String) {
    let stderr = dir.join("refused.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tsdb"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).expect("a log file"))
        .spawn()
        .expect("run tsdb");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for tsdb") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().expect("reap tsdb");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status.code(),
        std::fs::read_to_string(&stderr).unwrap_or_default(),
    )
}

/// A database without plugins or triggers, on `dir`.
pub fn start_bare(dir: &Path) -> Tsdb {
    std::fs::write(dir.join("plugins.toml"), "").expect("write plugins.toml");
    std::fs::write(
        dir.join("tsdb.toml"),
        "http = \"127.0.0.1:0\"\nplugins = \"plugins.toml\"\n",
    )
    .expect("write tsdb.toml");
    start(dir)
}

/// A database with a plugin directory (`DIR/plugins`) whose `.py` files run on the
/// test's Python with tsdb's plugin module on their path, and no configured triggers.
pub fn start_with_plugin_dir(dir: &Path, prepared: &Prepared) -> Tsdb {
    std::fs::write(dir.join("plugins.toml"), "").expect("write plugins.toml");
    std::fs::write(
        dir.join("tsdb.toml"),
        format!(
            "http = \"127.0.0.1:0\"\nplugins = \"plugins.toml\"\nplugin_dir = \"plugins\"\npython = {:?}\npython_path = [{:?}]\n",
            prepared.python.display().to_string(),
            prepared.py.display().to_string()
        ),
    )
    .expect("write tsdb.toml");
    start(dir)
}

/// The status of trigger `name`, if tsdb runs one.
pub fn find_trigger(addr: SocketAddr, name: &str) -> Option<serde_json::Value> {
    let (status, body) = http(
        addr,
        "GET",
        "/api/v3/configure/processing_engine_trigger",
        "",
    );
    assert_eq!(status, 200, "{body}");
    let all: Vec<serde_json::Value> = serde_json::from_str(&body).expect("JSON");
    all.into_iter().find(|t| t["name"] == name)
}

/// The Python alerter's source, as a plugin file to upload.
pub fn alerter_source() -> String {
    std::fs::read_to_string(root().join("examples/tsdb/plugins/python/alerter.py"))
        .expect("read alerter.py")
}

/// `POST /api/v3/configure/processing_engine_trigger` for an alerter on `table:cpu` in
/// `metrics`, named `name`, running `file`: the status and the body.
pub fn create_alert_trigger(addr: SocketAddr, name: &str, file: &str) -> (u16, String) {
    let body = serde_json::json!({
        "db": "metrics",
        "plugin_filename": file,
        "trigger_name": name,
        "trigger_specification": "table:cpu",
        "trigger_arguments": { "threshold": "90" },
        "trigger_settings": { "run_async": false, "error_behavior": "Log" },
        "disabled": false,
    });
    http(
        addr,
        "POST",
        "/api/v3/configure/processing_engine_trigger",
        &body.to_string(),
    )
}

/// Uploads `content` as plugin file `name`: the status and the body.
pub fn upload(addr: SocketAddr, name: &str, content: &str) -> (u16, String) {
    let body = serde_json::json!({ "plugin_name": name, "content": content });
    http(addr, "POST", "/api/v3/plugins/files", &body.to_string())
}
