//! `baton check`: launches a plugin the way a host does and checks, one line each, every
//! part of the contract a plugin author can get wrong, with the reason when it fails.

use std::path::PathBuf;
use std::time::Duration;

use baton_proto::plugin::plugin_client::PluginClient;
use baton_proto::plugin::{DescribeRequest, DescribeResponse, InvokeRequest, ShutdownRequest};
use baton_proto::{PROTOCOL_VERSION, TOKEN_METADATA_KEY};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tonic::Code;

use crate::launch::{check_handshake, describe_exit};

mod incremental;
mod instance;
mod probes;
mod refusals;

use instance::{start, wait_serving};
use probes::{call, check_services, is_unauthenticated, joined, snapshot};

/// What to check and how.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// The plugin's program.
    pub command: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Calls (method, payload) made before the snapshot check, to give it some state.
    pub calls: Vec<(String, Vec<u8>)>,
    /// How long start-up and each call may take.
    pub timeout: Duration,
    /// How long the plugin may take to exit after `Shutdown` or SIGTERM.
    pub grace: Duration,
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Done right; the text says what was seen.
    Pass(String),
    /// Done wrong; the text says what was expected and what came.
    Fail(String),
    /// Not checked, because an earlier check failed.
    Skip(String),
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct CheckLine {
    /// What was checked.
    pub name: &'static str,
    /// How it went.
    pub verdict: Verdict,
}

/// The report being written, in the order of [`ALL_CHECKS`].
#[derive(Default)]
struct Report(Vec<CheckLine>);

impl Report {
    fn push(&mut self, verdict: Verdict) {
        let name = ALL_CHECKS.get(self.0.len()).copied().unwrap_or("extra");
        self.0.push(CheckLine { name, verdict });
    }
    fn pass(&mut self, text: impl Into<String>) {
        self.push(Verdict::Pass(text.into()));
    }
    fn fail(&mut self, text: impl Into<String>) {
        self.push(Verdict::Fail(text.into()));
    }
    /// Marks every check not yet done as skipped, and returns the report.
    fn skip_rest(mut self) -> Vec<CheckLine> {
        while self.0.len() < ALL_CHECKS.len() {
            self.push(Verdict::Skip("needs the checks above".into()));
        }
        self.0
    }
}

/// Runs every check; the plugin's processes are gone when it returns.
pub async fn run(opts: &CheckOptions) -> Vec<CheckLine> {
    let mut report = Report::default();
    let dir = match tempfile::Builder::new().prefix("baton-check-").tempdir() {
        Ok(d) => d,
        Err(e) => {
            report.fail(format!("cannot make a socket directory: {e}"));
            return report.skip_rest();
        }
    };
    let timeout = opts.timeout;

    let (started, first) = start(opts, dir.path(), 1).await;
    let (mut a, first) = match (started, first) {
        (Ok(a), Some(first)) => (a, first),
        (Err(e), _) => {
            report.fail(e);
            return report.skip_rest();
        }
        (Ok(_), None) => {
            report.fail("no handshake line");
            return report.skip_rest();
        }
    };
    let fields: Vec<&str> = first.splitn(4, '|').collect();
    let well_formed = fields.len() == 4 && fields[0] == "baton" && fields[2] == "unix";
    match check_handshake(&first, &a.socket) {
        Ok(()) => {
            report.pass(format!("`{first}`"));
            report.pass(format!("speaks {PROTOCOL_VERSION}, as the host does"));
        }
        Err(e) if well_formed && fields[1] != PROTOCOL_VERSION.to_string() => {
            report.pass(format!("`{first}`"));
            report.fail(e.to_string());
            return report.skip_rest();
        }
        Err(e) => {
            report.fail(format!("{e}{}", a.stderr_tail()));
            return report.skip_rest();
        }
    }

    if let Err(e) = wait_serving(&a, timeout).await {
        report.fail(e);
        return report.skip_rest();
    }
    report.pass("SERVING for baton.plugin.v1.Plugin");

    let mut bare = PluginClient::new(a.channel.clone());
    let no_token = bare
        .invoke(InvokeRequest {
            method: "baton-check".into(),
            ..Default::default()
        })
        .await
        .map(|_| ());
    let no_token_describe = bare.describe(DescribeRequest {}).await.map(|_| ());
    let mut wrong = tonic::Request::new(DescribeRequest {});
    if let Ok(v) = "0".repeat(64).parse() {
        wrong.metadata_mut().insert(TOKEN_METADATA_KEY, v);
    }
    let wrong_token = bare.describe(wrong).await.map(|_| ());
    match is_unauthenticated(no_token)
        .and(is_unauthenticated(no_token_describe))
        .map_err(|e| format!("a call without x-baton-token: {e}"))
        .and(is_unauthenticated(wrong_token).map_err(|e| format!("a call with a wrong token: {e}")))
    {
        Ok(()) => report.pass("refused with UNAUTHENTICATED (no token, wrong token)"),
        Err(e) => report.fail(e),
    }

    let describe: Option<DescribeResponse> =
        match tokio::time::timeout(timeout, a.rpc().describe(DescribeRequest {})).await {
            Ok(Ok(d)) => Some(d.into_inner()),
            Ok(Err(s)) => {
                report.fail(format!("Describe failed ({:?}): {}", s.code(), s.message()));
                None
            }
            Err(_) => {
                report.fail(format!("Describe did not answer within {timeout:?}"));
                None
            }
        };
    if let Some(d) = &describe {
        let methods: Vec<&str> = d.methods.iter().map(|m| m.name.as_str()).collect();
        if d.protocol_version != PROTOCOL_VERSION {
            report.fail(format!(
                "Describe reports protocol version {}, expected {PROTOCOL_VERSION}",
                d.protocol_version
            ));
        } else if d.name.is_empty() {
            report.fail("Describe gives no name");
        } else {
            report.pass(format!(
                "{} {}, methods [{}], state schema {}",
                d.name,
                d.plugin_version,
                methods.join(", "),
                d.state_schema_version
            ));
        }
    }

    match describe.as_ref().map(|d| d.services.as_slice()) {
        None => report.push(Verdict::Skip("needs Describe".into())),
        Some([]) => report.push(Verdict::Skip("Describe lists none".into())),
        Some(services) => match check_services(&a, services, timeout).await {
            Ok(()) => report.pass(format!(
                "{}: served, and refused without the token",
                services.join(", ")
            )),
            Err(e) => report.fail(e),
        },
    }

    if opts.calls.is_empty() {
        report.push(Verdict::Skip(
            "none given (--call METHOD=PAYLOAD gives the snapshot check some state)".into(),
        ));
    } else {
        let mut results = Vec::new();
        let mut failed = None;
        for (method, payload) in &opts.calls {
            match call(&a, method, payload.clone(), timeout).await {
                Ok(out) => results.push(format!("{method} -> {:?}", String::from_utf8_lossy(&out))),
                Err(s) => {
                    failed = Some(format!(
                        "{method}({:?}) failed ({:?}): {}",
                        String::from_utf8_lossy(payload),
                        s.code(),
                        s.message()
                    ));
                    break;
                }
            }
        }
        match failed {
            Some(e) => report.fail(e),
            None => report.pass(results.join("; ")),
        }
    }

    let unknown = call(&a, "baton-check-no-such-method", b"x".to_vec(), timeout).await;
    // A transport error usually means the process died; give its exit a moment to show.
    let exited = match &unknown {
        Err(s) if matches!(s.code(), Code::Unknown | Code::Unavailable | Code::Internal) => {
            a.exit_within(Duration::from_millis(500)).await
        }
        _ => a
            .child
            .try_wait()
            .ok()
            .flatten()
            .map(|s| describe_exit(&Ok(s))),
    };
    match (unknown, exited.is_none()) {
        (_, false) => report.fail(format!(
            "the plugin exited ({}) when called with an unknown method{}",
            exited.unwrap_or_default(),
            a.stderr_tail()
        )),
        (Err(s), true) if s.code() == Code::Unimplemented && !s.message().is_empty() => {
            report.pass(format!("UNIMPLEMENTED: {}", s.message()))
        }
        (Err(s), true) => report.fail(format!(
            "expected UNIMPLEMENTED with a message, got {:?}: {:?}",
            s.code(),
            s.message()
        )),
        (Ok(out), true) => report.fail(format!(
            "expected UNIMPLEMENTED, but the call succeeded with {:?}",
            String::from_utf8_lossy(&out)
        )),
    }

    // A second instance, restored from the first, must export the same state.
    let (second, second_line) = start(opts, dir.path(), 2).await;
    let mut b = second.ok().filter(|_| second_line.is_some());
    let first_alive = matches!(a.child.try_wait(), Ok(None));
    let transfer = async {
        if !first_alive {
            return Err("the first instance is no longer running".to_owned());
        }
        let Some(b) = &b else {
            return Err("a second instance did not start".to_owned());
        };
        wait_serving(b, timeout).await?;
        let original = snapshot(&a, timeout).await?;
        let mut rpc = b.rpc();
        let restored =
            tokio::time::timeout(timeout, rpc.restore(tokio_stream::iter(original.clone())))
                .await
                .map_err(|_| format!("Restore did not answer within {timeout:?}"))?
                .map_err(|s| {
                    format!(
                        "Restore of the first instance's snapshot failed ({:?}): {}",
                        s.code(),
                        s.message()
                    )
                })?
                .into_inner();
        let again = snapshot(b, timeout).await?;
        let (x, y) = (joined(&original), joined(&again));
        if x != y {
            return Err(format!(
                "the restored instance's snapshot differs: {} bytes before, {} after{}",
                x.len(),
                y.len(),
                x.iter()
                    .zip(&y)
                    .position(|(p, q)| p != q)
                    .map_or(String::new(), |i| format!(", first difference at byte {i}"))
            ));
        }
        // Optional in the contract, so not a failure, but worth saying: a receiver
        // that knows the length allocates once and refuses an oversized state early.
        let announced = match original.first().map_or(0, |c| c.total_bytes) {
            0 if !x.is_empty() => {
                "; the first chunk does not announce total_bytes (receivers cannot allocate once)"
            }
            _ => "",
        };
        Ok(format!(
            "{} bytes in {} chunks (schema {}) restored ({} bytes read) and reproduced{announced}",
            x.len(),
            original.len(),
            original.first().map_or(0, |c| c.schema_version),
            restored.bytes_restored
        ))
    };
    let transferred = transfer.await;
    let moved = transferred.is_ok();
    match transferred {
        Ok(text) => report.pass(text),
        Err(e) => report.fail(e),
    }

    match (&b, describe.as_ref().map(|d| d.incremental_snapshots)) {
        (_, None) => report.push(Verdict::Skip("needs Describe".into())),
        (_, Some(false)) => report.push(Verdict::Skip("Describe does not declare them".into())),
        (Some(b), Some(true)) if moved => {
            match incremental::check(&a, b, &opts.calls, timeout).await {
                Ok(text) => report.pass(text),
                Err(e) => report.fail(e),
            }
        }
        _ => report.push(Verdict::Skip("needs the snapshot and restore check".into())),
    }

    // On the first instance, which no later check calls: a bad stream it accepts may
    // have changed its state.
    if matches!(a.child.try_wait(), Ok(None)) {
        match refusals::check(&mut a, timeout).await {
            Ok(text) => report.pass(text),
            Err(e) => report.fail(e),
        }
    } else {
        report.push(Verdict::Skip(
            "the first instance is no longer running".into(),
        ));
    }

    match &mut b {
        Some(b) => {
            let asked = tokio::time::timeout(timeout, b.rpc().shutdown(ShutdownRequest {})).await;
            match (asked, b.exit_within(opts.grace).await) {
                (Ok(Ok(_)), Some(status)) => {
                    report.pass(format!("answered, then exited ({status})"))
                }
                (Ok(Ok(_)), None) => report.fail(format!(
                    "answered, but did not exit within {:?}",
                    opts.grace
                )),
                (Ok(Err(s)), _) => {
                    report.fail(format!("Shutdown failed ({:?}): {}", s.code(), s.message()))
                }
                (Err(_), _) => report.fail(format!("Shutdown did not answer within {timeout:?}")),
            }
        }
        None => report.push(Verdict::Skip("no second instance to shut down".into())),
    }

    let _ = i32::try_from(a.pid).map(|pid| kill(Pid::from_raw(pid), Signal::SIGTERM));
    match a.exit_within(opts.grace).await {
        Some(status) => report.pass(format!("exited after SIGTERM ({status})")),
        None => report.fail(format!("still running {:?} after SIGTERM", opts.grace)),
    }

    let mut stray: Vec<String> = a.stray.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some(b) = &b {
        stray.extend(
            b.stray
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned(),
        );
    }
    match stray.first() {
        None => report.pass("nothing after the handshake line"),
        Some(first) => report.fail(format!(
            "{} line(s) on stdout after the handshake, first: {first:?} (logs belong on stderr)",
            stray.len()
        )),
    }
    report.skip_rest()
}

/// Every check, in the order they run.
pub const ALL_CHECKS: [&str; 14] = [
    "handshake line",
    "protocol version",
    "health",
    "calls without the token",
    "describe",
    "application services",
    "calls",
    "unknown method",
    "snapshot and restore",
    "incremental snapshots",
    "restore refusals",
    "shutdown",
    "sigterm",
    "stdout",
];
