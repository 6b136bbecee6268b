//! A plugin whose binary is not there yet (the daemon started before the first build,
//! or a clean removed it): it waits for the file watcher to see the file appear, with
//! calls held, instead of failing starts that would count as crashes.

use std::path::Path;
use std::sync::Arc;

use super::next_change;
use super::{Command, PluginState, Supervisor};
use crate::calls::route::Route;
use crate::watch::WatchSet;

/// How many settle periods a file being written may take before it is tried anyway;
/// a torn binary then fails its start like any other.
const MAX_SETTLES: usize = 50;

impl Supervisor {
    /// Waits until the plugin's binary exists, when it is a path the file watcher
    /// follows (`reload = "watch"`); without a watcher there is nothing to wait for, and
    /// the start fails as it would. Returns false when the plugin is to stop instead.
    pub(super) async fn wait_for_binary(&mut self) -> bool {
        let binary = self.launcher.config.command.clone();
        if self.changes.is_none() || !crate::config::is_path(&binary) || binary.exists() {
            return true;
        }
        let reason = format!(
            "its binary {} does not exist yet; it starts when the file appears",
            binary.display()
        );
        let message = format!("plugin {} waits: {reason}", self.name());
        tracing::warn!("{message}");
        self.emit(self.last_number, "waiting", message.clone());
        self.route.send_replace(Route::Waiting {
            reason: Arc::from(reason.as_str()),
        });
        self.update(|s| {
            s.state = PluginState::Starting;
            s.pid = None;
            s.socket = None;
            s.ready_at = None;
            s.last_error = Some(message.clone());
        });
        loop {
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Reload(reply)) => {
                        let _ = reply.send(Err(message.clone()));
                    }
                    Some(Command::OverLimit { .. }) => {}
                    stop => {
                        self.finish(stop).await;
                        return false;
                    }
                },
                Some(()) = next_change(&mut self.changes) => {
                    if binary.exists() && self.settled(&binary).await {
                        break;
                    }
                }
            }
        }
        tracing::info!("{} appeared; starting the plugin", binary.display());
        // The wait was not an error of the plugin's; what comes next says how it went.
        self.update(|s| {
            if s.last_error.as_deref() == Some(message.as_str()) {
                s.last_error = None;
            }
        });
        true
    }

    /// Waits until `binary` has stayed unchanged for the settle time (a build may still
    /// be writing it); false if it went away again meanwhile.
    async fn settled(&mut self, binary: &Path) -> bool {
        let file = WatchSet::new(Some(binary), &[]);
        let mut seen = file.fingerprint();
        for _ in 0..MAX_SETTLES {
            tokio::time::sleep(self.launcher.config.settle()).await;
            // Nudges that came while settling belong to this same change.
            if let Some(rx) = &mut self.changes {
                while rx.try_recv().is_ok() {}
            }
            let now = file.fingerprint();
            if now == seen {
                break;
            }
            seen = now;
        }
        seen.missing().is_empty()
    }
}
