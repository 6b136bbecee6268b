//! Client libraries written by others, from PyPI in the repository's venv, talking to
//! the real `tsdb` binary unchanged: InfluxDB 2's `influxdb-client` and InfluxDB 3's
//! `influxdb3-python` writing, plain and gzip'd, with the token tsdb checks (from an admin
//! token file), and querying over Arrow Flight, as `pyarrow.flight` does on its own. Each test runs a
//! script beside this file with `.venv/bin/python`, then reads back over `query_sql`
//! what the script wrote, or checks what the script read (its JSON on stdout).

#[path = "../common/mod.rs"]
mod common;

mod gzip;
mod influxdb3_python;
mod influxdb_client;
mod pyarrow_flight;
mod tokens;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{root, wait_until};

/// The exit status a script gives when its client library does not import.
const SKIPPED: i32 = 77;

/// A client script's process, killed if the test ends before it does.
struct Script(Child);

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `script` (a file beside this one) against the database at `addr` with `args`
/// after the URL: its stdout. `None`, with a "skipped: <why>" line, where the venv or the
/// client library is missing; panics with the script's output if it fails.
fn run_client(script: &str, addr: SocketAddr, args: &[&str]) -> Option<String> {
    let python = root().join(".venv/bin/python");
    if !python.exists() {
        println!("skipped: no .venv (run plugin-sdk/python/setup-python.sh)");
        return None;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let child = Command::new(&python)
        .arg(root().join("examples/tsdb/tests/clients").join(script))
        .arg(format!("http://{addr}"))
        .args(args)
        .env("TSDB_TOKEN", crate::common::CLIENT_TOKEN)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("a stdout file"))
        .stderr(std::fs::File::create(&err).expect("a stderr file"))
        .spawn()
        .expect("start the client script");
    let mut script_process = Script(child);
    // A client waits on tsdb's answers, so a loaded machine only slows it: the deadline
    // is for a hang, not a measure.
    let status = wait_until(
        &format!("{script} {args:?} exits"),
        Duration::from_secs(120),
        || script_process.0.try_wait().expect("wait for the script"),
    );
    let stdout = std::fs::read_to_string(&out).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    if status.code() == Some(SKIPPED) {
        println!("{}", stdout.trim());
        return None;
    }
    assert!(
        status.success(),
        "{script} {args:?}: {status}\nstdout: {stdout}\nstderr: {stderr}"
    );
    Some(stdout)
}
