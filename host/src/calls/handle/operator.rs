//! What an operator (through `baton ctl`, or an embedding program) asks of one plugin
//! beyond reloads: stop it and keep it stopped, start it again, restart it (a handover,
//! or from nothing), and take new settings.

use std::sync::atomic::Ordering;

use tokio::sync::oneshot;

use super::PluginHandle;
use crate::calls::command::{Command, Reconfigure, Reconfigured};
use crate::config::{Limits, PluginConfig};

impl PluginHandle {
    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, String>>) -> Command,
    ) -> Result<T, String> {
        let (reply, answer) = oneshot::channel();
        let gone = || format!("plugin {} is stopped for good", self.inner.name);
        self.inner
            .commands
            .send(command(reply))
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Stops the plugin's process (after a final checkpoint, if it keeps them) and
    /// keeps it stopped until [`start`](Self::start): meanwhile its calls fail at once,
    /// saying it was stopped and by whom (`by`, e.g. "baton ctl (uid 1000)"). A serving
    /// plugin that keeps no checkpoints would lose its state: that stop is refused,
    /// saying so, unless `discard_state`.
    pub async fn suspend(&self, by: &str, discard_state: bool) -> Result<String, String> {
        let by = by.to_owned();
        self.ask(|reply| Command::Suspend {
            by,
            discard_state,
            reply,
        })
        .await
    }

    /// Starts a plugin stopped by [`suspend`](Self::suspend) (from its last checkpoint,
    /// if it keeps them); returns the generation serving.
    pub async fn start(&self, by: &str) -> Result<u64, String> {
        let by = by.to_owned();
        self.ask(|reply| Command::Resume { by, reply }).await
    }

    /// Replaces the plugin's process: a handover that keeps the state, or with
    /// `fresh`, a new process that starts from nothing (its checkpoints dropped too),
    /// the way to ship a build that cannot read the old state. Returns the generation
    /// serving.
    pub async fn restart(&self, fresh: bool, by: &str) -> Result<u64, String> {
        let by = by.to_owned();
        self.ask(|reply| Command::Restart { fresh, by, reply })
            .await
    }

    /// Hands the plugin's supervisor new settings (see [`Reconfigure`]).
    pub(crate) async fn reconfigure(
        &self,
        build: impl FnOnce(oneshot::Sender<Result<Reconfigured, String>>) -> Reconfigure,
    ) -> Result<Reconfigured, String> {
        self.ask(|reply| Command::Reconfigure(Box::new(build(reply))))
            .await
    }

    /// Puts in force the settings a call and the resource monitor read.
    pub(crate) fn apply_settings(&self, config: &PluginConfig) {
        let inner = &self.inner;
        inner
            .max_waiting
            .store(config.max_held_calls, Ordering::Relaxed);
        inner
            .max_message_bytes
            .store(config.max_message_bytes, Ordering::Relaxed);
        inner
            .call_timeout_ms
            .store(config.call_timeout_ms, Ordering::Relaxed);
        *inner.limits.lock().unwrap_or_else(|p| p.into_inner()) = Limits::of(config);
        inner.logs.limiter().set_limit(config.log_limit());
    }

    /// The resource limits the monitor checks.
    pub(crate) fn limits(&self) -> Limits {
        *self.inner.limits.lock().unwrap_or_else(|p| p.into_inner())
    }
}
