//! One running generation of a plugin: its process, its client, and stopping it.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_proto::plugin::DescribeResponse;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::Child;
use tokio::sync::watch;

use super::{PluginRpc, TokenService, UnixClient, plugin_rpc};
use crate::services::Admission;

/// How a process ended, in words.
pub fn describe_exit(status: &std::io::Result<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(sig)) => match Signal::try_from(sig) {
                Ok(signal) => format!("killed by signal {sig} ({})", signal.as_str()),
                Err(_) => format!("killed by signal {sig}"),
            },
            _ => s.to_string(),
        },
        Err(e) => format!("unknown exit status ({e})"),
    }
}

/// A running, handshaken, healthy plugin process: one generation.
pub struct Generation {
    /// Counts processes of this plugin, from 1.
    pub number: u64,
    /// The plugin's process id.
    pub pid: u32,
    /// Its process group: the plugin's own pid, or in a PID namespace its keeper's
    /// (see [`crate::launch::pid_init`]), which is the host's child.
    pub(super) group: u32,
    /// Its socket.
    pub socket: PathBuf,
    /// The client the host calls it through.
    pub rpc: PluginRpc,
    /// The same connection as a plain gRPC transport carrying the token, for calls to
    /// the application services it serves.
    pub transport: TokenService<UnixClient>,
    /// Its launch token, for [`separate_rpc`](Self::separate_rpc).
    pub(super) token: Arc<str>,
    pub(super) max_message: usize,
    /// What it said about itself.
    pub describe: DescribeResponse,
    /// When it became ready.
    pub ready_at: Instant,
    /// Set to how it ended, once it has.
    pub exited: watch::Receiver<Option<String>>,
    pub(super) exit_tx: watch::Sender<Option<String>>,
    pub(super) child: Child,
    /// The private copy of the binary it runs, removed when it ends.
    pub(super) copy: Option<PathBuf>,
    /// The tasks reading its stdout and stderr: stopped shortly after it ends, even if
    /// something it left behind still holds the other ends of the pipes.
    pub(super) readers: [tokio::task::AbortHandle; 2],
    /// Its token's right to call the host services, revoked when this is dropped.
    pub(super) _admission: Admission,
    /// The limits it runs under, named in how it ended when it met one.
    pub(super) limits: super::rlimits::LimitsInForce,
}

impl Generation {
    /// Makes a client on a connection of its own, driven by the runtime it is made on:
    /// for bulk transfers that should share neither a worker nor a connection with calls.
    pub fn separate_rpc(&self) -> impl FnOnce() -> Option<PluginRpc> + Send + 'static {
        let (socket, token, max) = (self.socket.clone(), self.token.clone(), self.max_message);
        move || plugin_rpc(UnixClient::new(&socket), &token, max).map(|(rpc, _)| rpc)
    }

    /// Waits for the process to exit, and records how.
    pub async fn wait(&mut self) -> String {
        let exit = self.child.wait().await;
        let status = describe_exit(&exit) + &self.limits.explain(&exit);
        self.exit_tx.send_replace(Some(status.clone()));
        status
    }

    /// Stops the process: `Shutdown`, then SIGTERM, then SIGKILL, each after waiting
    /// part of `grace`; always reaps it and removes its socket.
    pub async fn stop(mut self, grace: Duration) -> String {
        let mut rpc = self.rpc.clone();
        let asked =
            tokio::time::timeout(grace, rpc.shutdown(baton_proto::plugin::ShutdownRequest {}));
        let status = match tokio::time::timeout(grace, async {
            let _ = asked.await;
            self.child.wait().await
        })
        .await
        {
            Ok(status) => describe_exit(&status),
            Err(_) => {
                kill_group(self.group, Signal::SIGTERM);
                match tokio::time::timeout(grace.min(Duration::from_secs(1)), self.child.wait())
                    .await
                {
                    Ok(status) => describe_exit(&status),
                    Err(_) => {
                        kill_group(self.group, Signal::SIGKILL);
                        describe_exit(&self.child.wait().await)
                    }
                }
            }
        };
        // Descendants the plugin left behind in its group go with it.
        kill_group(self.group, Signal::SIGKILL);
        self.exit_tx.send_replace(Some(status.clone()));
        self.remove_files();
        status
    }

    fn remove_files(&self) {
        let readers = self.readers.clone();
        let cgroup = self.limits.cgroup.clone();
        tokio::spawn(async move {
            // Time for its last lines to arrive.
            tokio::time::sleep(OUTPUT_DRAIN).await;
            for reader in readers {
                reader.abort();
            }
            if let Some(cgroup) = cgroup {
                cgroup.remove().await;
            }
        });
        let _ = std::fs::remove_file(&self.socket);
        if let Some(copy) = &self.copy {
            let _ = std::fs::remove_file(copy);
        }
    }

    /// Kills the process group at once and reaps it: for a generation that never served.
    pub async fn kill(mut self) {
        kill_group(self.group, Signal::SIGKILL);
        let status = describe_exit(&self.child.wait().await);
        self.exit_tx.send_replace(Some(status));
        self.remove_files();
    }

    /// After the process exited on its own: kill what is left of its group, remove its socket.
    pub fn clean_up(&self) {
        kill_group(self.group, Signal::SIGKILL);
        self.remove_files();
    }
}

/// How long output readers of an ended generation wait for its last lines.
const OUTPUT_DRAIN: Duration = Duration::from_millis(500);

pub(super) fn kill_group(pid: u32, signal: Signal) {
    if let Ok(pid) = i32::try_from(pid)
        && pid > 0
    {
        let _ = killpg(Pid::from_raw(pid), signal);
    }
}
