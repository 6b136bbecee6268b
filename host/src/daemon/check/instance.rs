//! A plugin process started for checking, the way a host starts one: its environment,
//! its handshake line, its output kept for the report, and its health.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_proto::plugin::plugin_client::PluginClient;
use baton_proto::{PROTOCOL_VERSION, TOKEN_METADATA_KEY};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

use super::CheckOptions;
use crate::launch::{StderrExcerpt, describe_exit, new_token, unix_channel};

/// A plugin process started for checking.
pub(super) struct Instance {
    pub(super) child: Child,
    pub(super) pid: u32,
    pub(super) socket: PathBuf,
    pub(super) token: String,
    pub(super) channel: Channel,
    pub(super) stray: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Instance {
    pub(super) fn rpc(
        &self,
    ) -> PluginClient<tonic::service::interceptor::InterceptedService<Channel, Token>> {
        PluginClient::with_interceptor(self.channel.clone(), Token(self.token.clone()))
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }

    pub(super) fn stderr_tail(&self) -> String {
        let excerpt = excerpt_of(&self.stderr);
        if excerpt.is_empty() {
            String::new()
        } else {
            format!(" ({excerpt})")
        }
    }

    pub(super) async fn exit_within(&mut self, grace: Duration) -> Option<String> {
        tokio::time::timeout(grace, self.child.wait())
            .await
            .ok()
            .map(|status| describe_exit(&status))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.pid) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

#[derive(Clone)]
pub(super) struct Token(String);

impl tonic::service::Interceptor for Token {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let value = self
            .0
            .parse()
            .map_err(|_| tonic::Status::internal("token is not valid metadata"))?;
        req.metadata_mut().insert(TOKEN_METADATA_KEY, value);
        Ok(req)
    }
}

/// Starts one instance and reads its handshake line. The line's verdicts are returned
/// with the instance, which is `None` when it cannot be used.
pub(super) async fn start(
    opts: &CheckOptions,
    dir: &Path,
    n: u32,
) -> (Result<Instance, String>, Option<String>) {
    let socket = dir.join(format!("plugin-{n}.sock"));
    let token = match new_token() {
        Ok(t) => t,
        Err(e) => return (Err(e.to_string()), None),
    };
    let mut command = Command::new(&opts.command);
    command
        .args(&opts.args)
        .env(baton_proto::env::SOCKET, &socket)
        .env(
            baton_proto::env::PROTOCOL_VERSION,
            PROTOCOL_VERSION.to_string(),
        )
        .env(baton_proto::env::TOKEN, &token)
        .env(baton_proto::env::PLUGIN_NAME, "check")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            return (
                Err(format!("cannot run {}: {e}", opts.command.display())),
                None,
            );
        }
    };
    let pid = child.id().unwrap_or(0);
    let stderr_lines: Arc<Mutex<Vec<String>>> = Arc::default();
    if let Some(err) = child.stderr.take() {
        let sink = stderr_lines.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(err).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
    }
    let Some(out) = child.stdout.take() else {
        return (Err("stdout was not captured".into()), None);
    };
    let mut out = BufReader::new(out).lines();
    let first = tokio::select! {
        line = tokio::time::timeout(opts.timeout, out.next_line()) => line,
        status = child.wait() => {
            // Give stderr a moment to be read, so the reason shows.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let excerpt = suffix(excerpt_of(&stderr_lines));
            return (Err(format!("exited before printing the handshake line ({}){excerpt}", describe_exit(&status))), None);
        }
    };
    let line = match first {
        Ok(Ok(Some(line))) => line,
        Ok(Ok(None)) => {
            // Exiting closes stdout first; say how it exited, and why.
            let status = tokio::time::timeout(Duration::from_millis(500), child.wait()).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            let excerpt = suffix(excerpt_of(&stderr_lines));
            let how = match status {
                Ok(status) => format!("exited ({})", describe_exit(&status)),
                Err(_) => "closed stdout".to_owned(),
            };
            return (
                Err(format!(
                    "{how} without printing the handshake line{excerpt}"
                )),
                None,
            );
        }
        Ok(Err(e)) => return (Err(format!("cannot read stdout: {e}")), None),
        Err(_) => {
            return (
                Err(format!(
                    "printed no handshake line within {:?} (expected `baton|{PROTOCOL_VERSION}|unix|{}`)",
                    opts.timeout,
                    socket.display()
                )),
                None,
            );
        }
    };
    let stray: Arc<Mutex<Vec<String>>> = Arc::default();
    {
        let sink = stray.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = out.next_line().await {
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
    }
    let instance = Instance {
        child,
        pid,
        channel: unix_channel(&socket),
        socket,
        token,
        stray,
        stderr: stderr_lines,
    };
    (Ok(instance), Some(line))
}

pub(super) async fn wait_serving(instance: &Instance, timeout: Duration) -> Result<(), String> {
    let mut health = tonic_health::pb::health_client::HealthClient::new(instance.channel.clone());
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = "no answer".to_owned();
    loop {
        let check = health.check(tonic_health::pb::HealthCheckRequest {
            service: "baton.plugin.v1.Plugin".into(),
        });
        match tokio::time::timeout_at(deadline, check).await {
            Ok(Ok(r))
                if r.get_ref().status
                    == tonic_health::pb::health_check_response::ServingStatus::Serving as i32 =>
            {
                return Ok(());
            }
            Ok(Ok(r)) => last = format!("status {}", r.get_ref().status),
            Ok(Err(s)) => last = format!("{:?}: {}", s.code(), s.message()),
            Err(_) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "grpc.health.v1.Health/Check for \"baton.plugin.v1.Plugin\" did not say SERVING within {timeout:?} (last: {last}){}",
                instance.stderr_tail()
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The first error line and the last lines of what a checked process wrote on stderr.
fn excerpt_of(lines: &Mutex<Vec<String>>) -> StderrExcerpt {
    StderrExcerpt::of_lines(&lines.lock().unwrap_or_else(|p| p.into_inner()))
}

/// `; <excerpt>`, or nothing when the process wrote nothing on stderr.
fn suffix(excerpt: StderrExcerpt) -> String {
    if excerpt.is_empty() {
        String::new()
    } else {
        format!("; {excerpt}")
    }
}
