//! The supervisor's loop: start a generation, serve it (commands, file changes,
//! checkpoint ticks, handovers), and when it ends, restart it after a backoff or mark the
//! plugin failed.
//!
//! The rare steps (a launch, a handover, a checkpoint, a stop…) are awaited as boxed
//! futures: inlined, each would be part of the loop's state machine, and every plugin's
//! task would rest at the size of the largest of them: 20.5 KiB a plugin rather than
//! 6.9.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::handover::Handover;
use super::next_change;
use super::operator::Woken;
use super::{Command, PluginState, Supervisor};
use crate::calls::route::{Live, Route};
use crate::launch::Generation;
use crate::watch::Fingerprint;

/// How a serving generation ended.
enum Ended {
    Crashed {
        reason: String,
        uptime: Duration,
    },
    /// Crossed a resource limit again and again: straight to `Failed`.
    Tripped {
        reason: String,
    },
    Stopped,
    /// Stopped on request; stays so until started.
    Suspended {
        by: String,
        reply: oneshot::Sender<Result<String, String>>,
        /// It kept no checkpoints: its state is gone.
        discarded: bool,
    },
    /// Stopped to start again from nothing.
    Fresh {
        reply: oneshot::Sender<Result<u64, String>>,
    },
}

/// Why a plugin goes straight to `Failed`, without a restart.
enum Tripped {
    /// It crossed a resource limit again right after a fresh start.
    Breaker,
    /// Its build does not serve what its config requires (`services`, `api_descriptors`).
    Mismatch,
}

/// What a plugin waiting to restart does next.
enum Next {
    Start,
    End,
    Suspend {
        by: String,
        reply: oneshot::Sender<Result<String, String>>,
    },
}

impl Supervisor {
    pub(super) async fn run(mut self) {
        let mut restarting = false;
        loop {
            if !self.wait_for_binary().await {
                return;
            }
            let number = self.next_number();
            let retrying = std::mem::take(&mut self.retrying);
            self.update(|s| {
                s.generation = number;
                if !restarting {
                    s.state = PluginState::Starting;
                }
            });
            self.loaded = self.watch_set.fingerprint();
            let launched = {
                let mut launch = Box::pin(self.launcher.launch(number));
                loop {
                    tokio::select! {
                        launched = &mut launch => break Ok(launched),
                        cmd = self.commands.recv() => match cmd {
                            Some(Command::Reload(reply) | Command::Resume { reply, .. } | Command::Restart { reply, .. }) => {
                                let _ = reply.send(Err(format!("plugin {} is starting generation {number}; ask again once it serves", self.launcher.name)));
                            }
                            // Taken once this start has ended, one way or the other.
                            Some(Command::Reconfigure(r)) => self.deferred.push(*r),
                            Some(Command::OverLimit { .. }) => {}
                            stop => break Err(stop),
                        },
                    }
                }
            };
            // Dropping the launch (above) killed a half-started process (kill_on_drop).
            let launched = match launched {
                Ok(launched) => launched,
                Err(Some(Command::Suspend { by, reply, .. })) => {
                    self.emit(
                        number,
                        "stopped",
                        format!("plugin {} stopped by {by} while starting", self.name()),
                    );
                    match Box::pin(self.stay_suspended(number, by, reply, false)).await {
                        Woken::Start => {
                            restarting = false;
                            continue;
                        }
                        Woken::End => return,
                    }
                }
                Err(stop) => {
                    Box::pin(self.finish(stop)).await;
                    return;
                }
            };
            let (reason, uptime, tripped, host_side) = match launched {
                Ok(mut generation) => {
                    Box::pin(self.restore_checkpoint(&mut generation)).await;
                    self.serve_started(&generation, restarting, retrying);
                    self.answer_pending(Ok(generation.number));
                    match self.serve(generation).await {
                        Ended::Stopped => return,
                        Ended::Suspended {
                            by,
                            reply,
                            discarded,
                        } => {
                            match Box::pin(self.stay_suspended(number, by, reply, discarded)).await
                            {
                                Woken::Start => {
                                    restarting = false;
                                    continue;
                                }
                                Woken::End => return,
                            }
                        }
                        Ended::Fresh { reply } => {
                            self.pending_reload = Some(reply);
                            self.live = None;
                            restarting = true;
                            continue;
                        }
                        Ended::Crashed { reason, uptime } => (reason, uptime, None, false),
                        Ended::Tripped { reason } => {
                            (reason, Duration::ZERO, Some(Tripped::Breaker), false)
                        }
                    }
                }
                Err(e) => {
                    let reason = format!(
                        "plugin {} (generation {number}) failed to start: {e}",
                        self.name()
                    );
                    tracing::error!(generation = number, "{reason}");
                    self.emit(number, "start_failed", reason.clone());
                    self.answer_pending(Err(reason.clone()));
                    // Starting it again cannot help; waiting for a change can.
                    let mismatch = e.is_config_mismatch().then_some(Tripped::Mismatch);
                    (reason, Duration::ZERO, mismatch, e.is_host_side())
                }
            };
            restarting = true;
            self.live = None;
            let delay = if tripped.is_some() {
                None
            } else if host_side {
                Some(self.policy.on_host_shortage())
            } else {
                self.policy.on_crash(Instant::now(), uptime)
            };
            match delay {
                Some(delay) => {
                    self.route.send_replace(Route::Restarting {
                        reason: reason.clone().into(),
                    });
                    self.update(|s| {
                        s.state = PluginState::Crashed;
                        s.pid = None;
                        s.socket = None;
                        s.ready_at = None;
                        s.set_error(reason.clone());
                        s.restarts += 1;
                    });
                    tracing::info!(
                        delay_ms = delay.as_millis() as u64,
                        "restarting after backoff"
                    );
                    if !Box::pin(self.after_wait(number, Some(delay))).await {
                        return;
                    }
                }
                None => {
                    let cfg = &self.launcher.config.restart;
                    let name = self.name();
                    let failed = match tripped {
                        Some(Tripped::Mismatch) => format!(
                            "plugin {name} failed: a config mismatch, not retried: {reason}; a build that serves what the config requires, a config that no longer requires it, or `baton ctl restart {name}` starts it again"
                        ),
                        _ => format!(
                            "plugin {name} failed: {} crashes within {} ms; last: {reason}",
                            cfg.max_crashes, cfg.crash_window_ms
                        ),
                    };
                    tracing::error!("{failed}");
                    self.emit(number, "failed", failed.clone());
                    self.route.send_replace(Route::Refusing {
                        reason: failed.clone().into(),
                    });
                    self.update(|s| {
                        s.state = PluginState::Failed;
                        s.pid = None;
                        s.socket = None;
                        s.ready_at = None;
                        s.set_error(failed);
                    });
                    if !Box::pin(self.after_wait(number, None)).await {
                        return;
                    }
                    // Revived by an operator or a new binary: a fresh start.
                    self.policy.reset();
                }
            }
        }
    }

    /// Waits to restart (see `wait_to_restart`), through a suspension if one is asked
    /// for meanwhile. Returns false when the plugin is to stop.
    async fn after_wait(&mut self, number: u64, delay: Option<Duration>) -> bool {
        match self.wait_to_restart(delay).await {
            Next::Start => true,
            Next::End => false,
            Next::Suspend { by, reply } => {
                self.emit(
                    number,
                    "stopped",
                    format!("plugin {} stopped by {by}", self.name()),
                );
                matches!(
                    Box::pin(self.stay_suspended(number, by, reply, false)).await,
                    Woken::Start
                )
            }
        }
    }

    /// Waits out a restart delay (`None`: until revived). A reload request or a changed
    /// binary cuts the wait short, and so do new settings that need a new process.
    async fn wait_to_restart(&mut self, delay: Option<Duration>) -> Next {
        for r in std::mem::take(&mut self.deferred) {
            self.reconfigure_idle(Box::new(r));
        }
        let sleep = async {
            match delay {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => {
                    self.retrying = true;
                    return Next::Start;
                }
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Reload(reply) | Command::Resume { reply, .. } | Command::Restart { fresh: false, reply, .. }) => {
                        // Answered once the next generation serves, or fails to start.
                        self.pending_reload = Some(reply);
                        return Next::Start;
                    }
                    Some(Command::Restart { fresh: true, by, reply }) => {
                        let number = self.last_number;
                        self.emit(number, "restart_requested", format!("plugin {}: a fresh restart requested by {by}; its state is dropped", self.name()));
                        if let Err(why) = Box::pin(self.checkpoints.forget()).await {
                            tracing::warn!("{why}");
                        }
                        self.pending_reload = Some(reply);
                        return Next::Start;
                    }
                    Some(Command::Suspend { by, reply, .. }) => return Next::Suspend { by, reply },
                    Some(Command::Reconfigure(r)) => {
                        // Settings that need a new process may be the fix: they are tried
                        // at once, as a start of their own rather than one more retry of
                        // the failure (whose error would then be kept).
                        let starts = !r.change.process.is_empty();
                        self.reconfigure_idle(r);
                        if starts {
                            tracing::info!("new settings; starting the plugin with them now");
                            return Next::Start;
                        }
                    }
                    Some(Command::OverLimit { .. }) => {}
                    stop => {
                        Box::pin(self.finish(stop)).await;
                        return Next::End;
                    }
                },
                Some(()) = next_change(&mut self.changes) => {
                    if self.settled_change().await.is_some() {
                        tracing::info!("the plugin's files changed; starting the new version now");
                        return Next::Start;
                    }
                }
            }
        }
    }

    /// `retrying`: an automatic restart after a failure, which keeps the failure as the
    /// last error (it explains the restart); any other start clears it.
    fn serve_started(&mut self, generation: &Generation, restarted: bool, retrying: bool) {
        let live = Arc::new(Live::of(generation));
        self.live = Some(live.clone());
        self.update(|s| {
            if !retrying {
                s.clear_error();
            }
            s.state = PluginState::Serving;
            s.generation = generation.number;
            s.pid = Some(generation.pid);
            s.rss_bytes = None;
            s.cpu_percent = None;
            s.socket = Some(generation.socket.clone());
            s.plugin_version = generation.describe.plugin_version.clone();
            s.methods = generation
                .describe
                .methods
                .iter()
                .map(|m| m.name.clone())
                .collect();
            s.ready_at = Some(generation.ready_at);
        });
        self.route.send_replace(Route::Serving(live));
        self.served = true;
        let kind = if restarted { "restarted" } else { "started" };
        self.emit(
            generation.number,
            kind,
            format!(
                "plugin {} {kind}: generation {}, pid {}, version {}",
                self.name(),
                generation.number,
                generation.pid,
                generation.describe.plugin_version
            ),
        );
    }

    async fn serve(&mut self, mut current: Generation) -> Ended {
        let ticker_of = |every: Option<Duration>| {
            every.map(|every| {
                let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            })
        };
        let mut ticking = self.checkpoint_every;
        let mut ticker = ticker_of(ticking);
        loop {
            // New settings that came while this generation was starting.
            if let Some(r) = self.deferred.pop() {
                if let Some(Handover::OldDied(status)) =
                    Box::pin(self.reconfigure(&mut current, Box::new(r))).await
                {
                    return self.crashed(&current, status);
                }
                continue;
            }
            // A config reload may have changed the checkpoint interval.
            if ticking != self.checkpoint_every {
                ticking = self.checkpoint_every;
                ticker = ticker_of(ticking);
            }
            // Old generations that finished stopping.
            while self.retiring.try_join_next().is_some() {}
            // Once a stop is asked for, no new periodic checkpoint starts: with both ready,
            // select! would pick either, and a stop could wait behind several of them.
            let stopping = *self.stopping.borrow();
            let handover = tokio::select! {
                _ = async {
                    match &mut ticker {
                        Some(t) => { t.tick().await; }
                        None => std::future::pending().await,
                    }
                }, if !stopping => {
                    // The stop may have come while this tick waited; it goes first.
                    if !*self.stopping.borrow() {
                        Box::pin(self.checkpoint(&current)).await;
                    }
                    continue;
                }
                status = current.wait() => {
                    current.clean_up();
                    return self.crashed(&current, status);
                }
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Reload(reply)) => {
                        let fingerprint = self.watch_set.fingerprint();
                        let outcome = Box::pin(self.handover(&mut current, "requested by an operator", fingerprint)).await;
                        let _ = reply.send(match &outcome {
                            Handover::Done(n) => Ok(*n),
                            Handover::RolledBack(why) => Err(format!("plugin {} rolled back, generation {} keeps serving: {why}", self.name(), current.number)),
                            Handover::OldDied(status) => Err(format!("plugin {}: generation {} exited during the handover: {status}", self.name(), current.number)),
                        });
                        outcome
                    }
                    Some(Command::Restart { fresh: false, by, reply }) => {
                        let fingerprint = self.watch_set.fingerprint();
                        let outcome = Box::pin(self.handover(&mut current, &format!("a restart requested by {by}"), fingerprint)).await;
                        let _ = reply.send(match &outcome {
                            Handover::Done(n) => Ok(*n),
                            Handover::RolledBack(why) => Err(format!("plugin {} rolled back, generation {} keeps serving: {why}", self.name(), current.number)),
                            Handover::OldDied(status) => Err(format!("plugin {}: generation {} exited during the handover: {status}", self.name(), current.number)),
                        });
                        outcome
                    }
                    Some(Command::Restart { fresh: true, by, reply }) => {
                        Box::pin(self.stop_for_fresh_start(current, &by)).await;
                        return Ended::Fresh { reply };
                    }
                    Some(Command::Suspend { by, discard_state, reply }) => {
                        if let Err(why) = self.may_suspend(discard_state) {
                            let _ = reply.send(Err(why));
                            continue;
                        }
                        let discarded = self.checkpoint_every.is_none();
                        if !discarded {
                            // What the next start restores.
                            Box::pin(self.checkpoint(&current)).await;
                        }
                        Box::pin(self.stop_generation(current, Some(&by))).await;
                        return Ended::Suspended { by, reply, discarded };
                    }
                    Some(Command::Resume { reply, .. }) => {
                        let _ = reply.send(Err(format!("plugin {} is running already (generation {})", self.name(), current.number)));
                        continue;
                    }
                    Some(Command::Reconfigure(r)) => {
                        match Box::pin(self.reconfigure(&mut current, r)).await {
                            Some(outcome) => outcome,
                            None => continue,
                        }
                    }
                    Some(Command::OverLimit { pid, reason }) => {
                        if pid != current.pid {
                            continue; // measured on a generation that is gone
                        }
                        let message = format!("plugin {} (generation {}, pid {pid}) {reason}", self.name(), current.number);
                        tracing::warn!("{message}");
                        self.emit(current.number, "over_limit", message.clone());
                        if self.policy.on_crash(Instant::now(), current.ready_at.elapsed()).is_none() {
                            // Crossing the limit again right after a fresh start is a loop.
                            Box::pin(self.stop_generation(current, None)).await;
                            return Ended::Tripped { reason: message };
                        }
                        let fingerprint = self.watch_set.fingerprint();
                        Box::pin(self.handover(&mut current, &reason, fingerprint)).await
                    }
                    stop => {
                        if self.checkpoint_every.is_some() && !self.stop_checkpoint_done {
                            // The freshest state for the next start of the host.
                            Box::pin(self.checkpoint(&current)).await;
                        }
                        Box::pin(self.stop_generation(current, None)).await;
                        Box::pin(self.finish(stop)).await;
                        return Ended::Stopped;
                    }
                },
                Some(()) = next_change(&mut self.changes) => {
                    let Some(fingerprint) = self.settled_change().await else { continue };
                    Box::pin(self.handover(&mut current, "its files changed", fingerprint)).await
                }
            };
            if let Handover::OldDied(status) = handover {
                return self.crashed(&current, status);
            }
        }
    }

    fn crashed(&self, generation: &Generation, status: String) -> Ended {
        let reason = format!(
            "plugin {} (generation {}, pid {}) exited unexpectedly: {status}",
            self.name(),
            generation.number,
            generation.pid
        );
        tracing::error!(
            generation = generation.number,
            pid = generation.pid,
            "{reason}"
        );
        self.emit(generation.number, "crashed", reason.clone());
        Ended::Crashed {
            reason,
            uptime: generation.ready_at.elapsed(),
        }
    }

    /// After a nudge: the files' new fingerprint once they have stopped changing, if it
    /// differs from what runs and from what was rolled back.
    async fn settled_change(&mut self) -> Option<Fingerprint> {
        let settle = self.launcher.config.settle();
        let mut seen = self.watch_set.fingerprint();
        // A file rewritten for longer than this is loaded as it stands; a torn binary
        // then fails to start and is rolled back, and its next write tries again.
        for _ in 0..50 {
            if seen == self.loaded || Some(&seen) == self.rejected.as_ref() {
                return None;
            }
            tokio::time::sleep(settle).await;
            // Nudges that came while settling belong to this same change.
            if let Some(rx) = &mut self.changes {
                while rx.try_recv().is_ok() {}
            }
            let now = self.watch_set.fingerprint();
            if now == seen {
                break;
            }
            seen = now;
        }
        if !seen.missing().is_empty() {
            // Mid-deploy (removed, not yet replaced): the replacement will nudge again.
            return None;
        }
        Some(seen)
    }

    /// Stops `generation`; `by` names who asked, when an operator did.
    pub(super) async fn stop_generation(&mut self, generation: Generation, by: Option<&str>) {
        self.route.send_replace(Route::Stopped);
        self.update(|s| s.state = PluginState::Stopping);
        let number = generation.number;
        let status = generation.stop(self.launcher.config.shutdown_grace()).await;
        let by = by.map(|by| format!(" by {by}")).unwrap_or_default();
        let message = format!("plugin {} stopped{by}: {status}", self.name());
        tracing::info!(generation = number, "{message}");
        self.emit(number, "stopped", message);
        self.update(|s| {
            s.pid = None;
            s.socket = None;
            s.ready_at = None;
        });
    }

    /// Ends the task: waits for retiring generations, answers the stop request.
    pub(super) async fn finish(&mut self, cmd: Option<Command>) {
        self.route.send_replace(Route::Stopped);
        self.update(|s| {
            s.state = PluginState::Stopping;
            s.pid = None;
        });
        while self.retiring.join_next().await.is_some() {}
        self.answer_pending(Err(format!("plugin {} is stopping", self.launcher.name)));
        match cmd {
            Some(Command::Stop(ack)) => {
                let _ = ack.send(());
            }
            Some(
                Command::Reload(reply)
                | Command::Resume { reply, .. }
                | Command::Restart { reply, .. },
            ) => {
                let _ = reply.send(Err(format!("plugin {} is stopping", self.launcher.name)));
            }
            Some(Command::Suspend { reply, .. }) => {
                let _ = reply.send(Err(format!("plugin {} is stopping", self.launcher.name)));
            }
            Some(Command::Reconfigure(r)) => {
                let _ = r
                    .reply
                    .send(Err(format!("plugin {} is stopping", self.launcher.name)));
            }
            Some(Command::OverLimit { .. }) | None => {}
        }
    }
}
