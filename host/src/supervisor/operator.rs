//! What operators ask of one plugin beyond reloads: stop it and keep it stopped, start
//! it again, restart it from nothing (`--fresh`), and take new settings from a config
//! reload (in place, or through a handover to a generation that runs with them).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::handover::Handover;
use super::next_change;
use super::{Command, PluginState, Reconfigure, Reconfigured, Supervisor};
use crate::calls::route::Route;
use crate::config::PluginConfig;
use crate::launch::Generation;

type Api = Option<Arc<Result<prost_reflect::DescriptorPool, String>>>;

/// What a suspended plugin does next.
pub(super) enum Woken {
    /// Start a generation (the caller waits in `pending_reload`).
    Start,
    /// The plugin is to stop for good; the task has finished.
    End,
}

impl Supervisor {
    /// Puts `config` (and what goes with it) in force; returns what was in force.
    fn swap_settings(
        &mut self,
        config: PluginConfig,
        api: Api,
        changes: Option<Option<mpsc::Receiver<()>>>,
    ) -> (PluginConfig, Api) {
        let old_config = std::mem::replace(&mut self.launcher.config, config);
        let old_api = std::mem::replace(&mut self.launcher.api, api);
        self.policy.set_config(self.launcher.config.restart.clone());
        self.checkpoint_every = self
            .launcher
            .config
            .checkpoint_interval_ms
            .map(Duration::from_millis);
        if let Some(changes) = changes {
            self.changes = changes;
        }
        self.watch_set = self.launcher.watch_set();
        (old_config, old_api)
    }

    /// Takes new settings while no process runs: the next start uses them.
    pub(super) fn reconfigure_idle(&mut self, r: Box<Reconfigure>) {
        let Reconfigure {
            config,
            api,
            changes,
            reply,
            ..
        } = *r;
        self.swap_settings(config, api, changes);
        let _ = reply.send(Ok(Reconfigured::InPlace));
    }

    /// Takes new settings while `current` serves: in place when no key needs a new
    /// process, else through a handover (which, rolled back, restores the old ones).
    /// `None` when no handover ran.
    pub(super) async fn reconfigure(
        &mut self,
        current: &mut Generation,
        r: Box<Reconfigure>,
    ) -> Option<Handover> {
        let Reconfigure {
            config,
            change,
            api,
            changes,
            reply,
        } = *r;
        let (old_config, old_api) = self.swap_settings(config, api, changes);
        if change.process.is_empty() {
            // The operator changed what this plugin runs with, and it took: an earlier
            // failure (say, past a limit just raised) no longer describes it, as after a
            // handover.
            self.update(|s| s.clear_error());
            let _ = reply.send(Ok(Reconfigured::InPlace));
            return None;
        }
        let fingerprint = self.watch_set.fingerprint();
        let why = format!("its settings changed ({})", change.process.join(", "));
        let outcome = self.handover(current, &why, fingerprint).await;
        let answer = match &outcome {
            Handover::Done(n) => Ok(Reconfigured::Generation(*n)),
            Handover::RolledBack(why) => {
                self.swap_settings(old_config, old_api, None);
                Err(format!(
                    "plugin {} rolled back, generation {} keeps serving with its previous settings: {why}",
                    self.name(),
                    current.number
                ))
            }
            Handover::OldDied(status) => Err(format!(
                "plugin {}: generation {} exited during the handover ({status}); it restarts with the new settings",
                self.name(),
                current.number
            )),
        };
        let _ = reply.send(answer);
        Some(outcome)
    }

    /// Stops `current` for a fresh start: no snapshot, every checkpoint dropped.
    pub(super) async fn stop_for_fresh_start(&mut self, current: Generation, by: &str) {
        let number = current.number;
        self.emit(
            number,
            "restart_requested",
            format!(
                "plugin {}: a fresh restart requested by {by}; its state is dropped",
                self.name()
            ),
        );
        self.stop_generation(current, Some(by)).await;
        self.forget_state(number).await;
    }

    async fn forget_state(&mut self, number: u64) {
        if let Err(why) = self.checkpoints.forget().await {
            tracing::warn!("{why}");
            self.emit(number, "checkpoint_failed", why);
        }
    }

    /// Whether the serving plugin may be stopped: one that keeps no checkpoints holds
    /// its state only in its process, so its stop must be asked for knowing that.
    pub(super) fn may_suspend(&self, discard_state: bool) -> Result<(), String> {
        if self.checkpoint_every.is_some() || discard_state {
            return Ok(());
        }
        let name = self.name();
        Err(format!(
            "plugin {name} keeps no checkpoints: its state (in the process) would not survive the stop; \
             `baton ctl stop {name} --discard-state` stops it anyway, or set \
             plugins.{name}.checkpoint_interval_ms (and reload the config) to keep it across a stop"
        ))
    }

    /// Keeps the plugin stopped (calls fail at once, saying by whom) until it is
    /// started, restarted or stopped for good. `discarded`: its state went with its
    /// process, which the answer says.
    pub(super) async fn stay_suspended(
        &mut self,
        number: u64,
        by: String,
        reply: oneshot::Sender<Result<String, String>>,
        discarded: bool,
    ) -> Woken {
        let name = self.name().to_owned();
        let reason =
            format!("plugin {name} was stopped by {by}; `baton ctl start {name}` starts it again");
        self.route.send_replace(Route::Refusing {
            reason: reason.clone().into(),
        });
        self.live = None;
        self.update(|s| {
            s.state = PluginState::Stopped;
            s.pid = None;
            s.socket = None;
            s.ready_at = None;
        });
        let note = if discarded {
            "; its state discarded (it keeps no checkpoints)"
        } else {
            ""
        };
        if discarded {
            self.emit(
                number,
                "state_discarded",
                format!(
                    "plugin {name} stopped by {by} without checkpoints: its state is discarded"
                ),
            );
        }
        let _ = reply.send(Ok(format!("plugin {name} stopped (by {by}){note}")));
        loop {
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Resume { by, reply }) => {
                        self.emit(number, "start_requested", format!("plugin {name}: start requested by {by}"));
                        self.pending_reload = Some(reply);
                        self.policy.reset();
                        return Woken::Start;
                    }
                    Some(Command::Restart { fresh, by, reply }) => {
                        let how = if fresh { "a fresh start" } else { "a start" };
                        self.emit(number, "start_requested", format!("plugin {name}: {how} requested by {by}"));
                        if fresh {
                            self.forget_state(number).await;
                        }
                        self.pending_reload = Some(reply);
                        self.policy.reset();
                        return Woken::Start;
                    }
                    Some(Command::Suspend { reply, .. }) => {
                        let _ = reply.send(Ok(format!("plugin {name} is stopped already")));
                    }
                    Some(Command::Reload(reply)) => {
                        let _ = reply.send(Err(reason.clone()));
                    }
                    Some(Command::Reconfigure(r)) => self.reconfigure_idle(r),
                    Some(Command::OverLimit { .. }) => {}
                    stop => {
                        self.finish(stop).await;
                        return Woken::End;
                    }
                },
                // Whatever changed is loaded at the next start.
                Some(()) = next_change(&mut self.changes) => {}
            }
        }
    }
}
