//! The task that owns one plugin: its processes, its lifecycle state machine and its
//! restart policy. Everything else talks to it through a [`PluginHandle`] and messages.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use crate::config::RestartConfig;
use crate::events::{Event, EventSender};
use crate::handle::{Live, PluginHandle, Route};
use crate::process::{Generation, Launcher};

/// Where a plugin is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginState {
    /// A process is starting.
    Starting,
    /// Calls are served.
    Serving,
    /// A new generation is taking over.
    HandingOver,
    /// Exited unasked; a restart is scheduled.
    Crashed,
    /// Crash loop: calls fail fast until revived.
    Failed,
    /// Shutting down.
    Stopping,
}

/// What the host reports about one plugin.
#[derive(Debug, Clone)]
pub struct PluginStatus {
    /// Configured name.
    pub name: String,
    /// Lifecycle state.
    pub state: PluginState,
    /// The newest generation number launched.
    pub generation: u64,
    /// The serving process's pid, if one serves.
    pub pid: Option<u32>,
    /// The serving process's socket.
    pub socket: Option<std::path::PathBuf>,
    /// Restarts after crashes or failed starts.
    pub restarts: u64,
    /// Completed handovers.
    pub reloads: u64,
    /// The most recent failure, in words.
    pub last_error: Option<String>,
    /// The serving build's version.
    pub plugin_version: String,
    /// The serving build's methods.
    pub methods: Vec<String>,
    /// When the serving process became ready.
    pub ready_at: Option<Instant>,
}

/// Messages to a supervisor.
pub(crate) enum Command {
    /// Stop the plugin for good; answer when its process is reaped.
    Stop(oneshot::Sender<()>),
}

/// Exponential backoff with a crash-loop breaker.
#[derive(Debug)]
pub struct RestartPolicy {
    config: RestartConfig,
    /// Crashes in a row without a stable period between them.
    streak: u32,
    /// When recent crashes happened, for the breaker's window.
    recent: VecDeque<Instant>,
}

impl RestartPolicy {
    /// A policy with no crashes yet.
    pub fn new(config: RestartConfig) -> Self {
        Self {
            config,
            streak: 0,
            recent: VecDeque::new(),
        }
    }

    /// Records a crash of a process that had served for `uptime`; returns the delay
    /// before the next start, or `None` when the breaker trips.
    pub fn on_crash(&mut self, now: Instant, uptime: Duration) -> Option<Duration> {
        if uptime >= Duration::from_millis(self.config.stable_after_ms) {
            self.streak = 0;
            self.recent.clear();
        }
        self.streak = self.streak.saturating_add(1);
        let window = Duration::from_millis(self.config.crash_window_ms);
        self.recent.push_back(now);
        while self
            .recent
            .front()
            .is_some_and(|&t| now.duration_since(t) > window)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.config.max_crashes as usize {
            return None;
        }
        // The first restart is immediate: a one-off crash should cost milliseconds.
        Some(match self.streak {
            0 | 1 => Duration::ZERO,
            n => {
                let factor = 1u64.checked_shl(n - 2).unwrap_or(u64::MAX);
                Duration::from_millis(
                    self.config
                        .initial_backoff_ms
                        .saturating_mul(factor)
                        .min(self.config.max_backoff_ms),
                )
            }
        })
    }

    /// Forgets past crashes (after an operator revives the plugin).
    pub fn reset(&mut self) {
        self.streak = 0;
        self.recent.clear();
    }
}

pub(crate) struct Supervisor {
    pub(crate) launcher: Launcher,
    pub(crate) route: watch::Sender<Route>,
    pub(crate) status: Arc<Mutex<PluginStatus>>,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) events: EventSender,
    pub(crate) policy: RestartPolicy,
}

/// Starts the supervisor task of one plugin and returns its handle.
pub(crate) fn spawn(
    launcher: Launcher,
    events: EventSender,
) -> (PluginHandle, tokio::task::JoinHandle<()>) {
    let name = launcher.name.clone();
    let (route_tx, route_rx) = watch::channel(Route::Starting);
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    let status = Arc::new(Mutex::new(PluginStatus {
        name: name.to_string(),
        state: PluginState::Starting,
        generation: 0,
        pid: None,
        socket: None,
        restarts: 0,
        reloads: 0,
        last_error: None,
        plugin_version: String::new(),
        methods: Vec::new(),
        ready_at: None,
    }));
    let handle = PluginHandle::new(
        name,
        launcher.config.call_timeout(),
        route_rx,
        status.clone(),
        cmd_tx,
        launcher.logs.clone(),
    );
    let policy = RestartPolicy::new(launcher.config.restart.clone());
    let supervisor = Supervisor {
        launcher,
        route: route_tx,
        status,
        commands: cmd_rx,
        events,
        policy,
    };
    let span = tracing::info_span!("plugin", name = %handle.name());
    let task = tokio::spawn(tracing::Instrument::instrument(supervisor.run(), span));
    (handle, task)
}

/// How a serving generation ended.
enum Ended {
    Crashed { status: String },
    Stopped,
}

impl Supervisor {
    fn name(&self) -> &str {
        &self.launcher.name
    }

    fn update(&self, f: impl FnOnce(&mut PluginStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn emit(&self, generation: u64, kind: &'static str, message: String) {
        let _ = self
            .events
            .send(Event::new(self.name(), generation, kind, message));
    }

    async fn run(mut self) {
        let mut number = 0u64;
        let mut restarting = false;
        loop {
            number += 1;
            self.update(|s| {
                s.generation = number;
                if !restarting {
                    s.state = PluginState::Starting;
                }
            });
            let launched = tokio::select! {
                launched = self.launcher.launch(number) => launched,
                cmd = self.commands.recv() => {
                    // Dropping the launch kills the half-started process (kill_on_drop).
                    self.finish(cmd);
                    return;
                }
            };
            let reason = match launched {
                Ok(generation) => {
                    let pid = generation.pid;
                    self.serve_started(&generation, restarting);
                    let uptime_start = generation.ready_at;
                    match self.serve(generation).await {
                        Ended::Stopped => return,
                        Ended::Crashed { status } => {
                            let reason = format!(
                                "plugin {} (generation {number}, pid {pid}) exited unexpectedly: {status}",
                                self.name()
                            );
                            tracing::error!(generation = number, pid, "{reason}");
                            self.emit(number, "crashed", reason.clone());
                            (reason, uptime_start.elapsed())
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
                    (reason, Duration::ZERO)
                }
            };
            let (reason, uptime) = reason;
            restarting = true;
            match self.policy.on_crash(Instant::now(), uptime) {
                Some(delay) => {
                    self.route.send_replace(Route::Restarting {
                        reason: reason.clone().into(),
                    });
                    self.update(|s| {
                        s.state = PluginState::Crashed;
                        s.pid = None;
                        s.socket = None;
                        s.ready_at = None;
                        s.last_error = Some(reason.clone());
                        s.restarts += 1;
                    });
                    tracing::info!(
                        delay_ms = delay.as_millis() as u64,
                        "restarting after backoff"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        cmd = self.commands.recv() => {
                            self.finish(cmd);
                            return;
                        }
                    }
                }
                None => {
                    let cfg = &self.launcher.config.restart;
                    let failed = format!(
                        "plugin {} failed: {} crashes within {} ms; last: {reason}",
                        self.name(),
                        cfg.max_crashes,
                        cfg.crash_window_ms
                    );
                    tracing::error!("{failed}");
                    self.emit(number, "failed", failed.clone());
                    self.route.send_replace(Route::Failed {
                        reason: failed.clone().into(),
                    });
                    self.update(|s| {
                        s.state = PluginState::Failed;
                        s.pid = None;
                        s.socket = None;
                        s.ready_at = None;
                        s.last_error = Some(failed);
                    });
                    let cmd = self.commands.recv().await;
                    self.finish(cmd);
                    return;
                }
            }
        }
    }

    fn serve_started(&self, generation: &Generation, restarted: bool) {
        let live = Arc::new(Live {
            generation: generation.number,
            pid: generation.pid,
            rpc: generation.rpc.clone(),
            exited: generation.exited.clone(),
        });
        self.update(|s| {
            s.state = PluginState::Serving;
            s.generation = generation.number;
            s.pid = Some(generation.pid);
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
        let (kind, what) = if restarted {
            ("restarted", "restarted")
        } else {
            ("started", "started")
        };
        self.emit(
            generation.number,
            kind,
            format!(
                "plugin {} {what}: generation {}, pid {}, version {}",
                self.name(),
                generation.number,
                generation.pid,
                generation.describe.plugin_version
            ),
        );
    }

    async fn serve(&mut self, mut generation: Generation) -> Ended {
        tokio::select! {
            status = generation.wait() => {
                generation.clean_up();
                Ended::Crashed { status }
            }
            cmd = self.commands.recv() => {
                self.stop_generation(generation).await;
                // With every handle gone nobody can call or stop us, so stop too.
                if let Some(Command::Stop(ack)) = cmd {
                    let _ = ack.send(());
                }
                Ended::Stopped
            }
        }
    }

    async fn stop_generation(&self, generation: Generation) {
        self.route.send_replace(Route::Stopped);
        self.update(|s| s.state = PluginState::Stopping);
        let number = generation.number;
        let status = generation.stop(self.launcher.config.shutdown_grace()).await;
        let message = format!("plugin {} stopped: {status}", self.name());
        tracing::info!(generation = number, "{message}");
        self.emit(number, "stopped", message);
        self.update(|s| {
            s.pid = None;
            s.socket = None;
            s.ready_at = None;
        });
    }

    /// Ends the task when no process is running.
    fn finish(&self, cmd: Option<Command>) {
        self.route.send_replace(Route::Stopped);
        self.update(|s| {
            s.state = PluginState::Stopping;
            s.pid = None;
        });
        if let Some(Command::Stop(ack)) = cmd {
            let _ = ack.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_the_breaker_trips() {
        let mut p = RestartPolicy::new(RestartConfig {
            initial_backoff_ms: 100,
            max_backoff_ms: 250,
            max_crashes: 5,
            crash_window_ms: 60_000,
            stable_after_ms: 60_000,
        });
        let t = Instant::now();
        let ms = |d: Option<Duration>| d.map(|d| d.as_millis());
        assert_eq!(ms(p.on_crash(t, Duration::ZERO)), Some(0));
        assert_eq!(ms(p.on_crash(t, Duration::ZERO)), Some(100));
        assert_eq!(ms(p.on_crash(t, Duration::ZERO)), Some(200));
        assert_eq!(ms(p.on_crash(t, Duration::ZERO)), Some(250));
        assert_eq!(p.on_crash(t, Duration::ZERO), None);
    }

    #[test]
    fn a_stable_run_resets_the_backoff() {
        let mut p = RestartPolicy::new(RestartConfig::default());
        let t = Instant::now();
        for _ in 0..3 {
            p.on_crash(t, Duration::ZERO);
        }
        assert_eq!(
            p.on_crash(t, Duration::from_secs(120)),
            Some(Duration::ZERO)
        );
        assert_eq!(
            p.on_crash(t, Duration::ZERO),
            Some(Duration::from_millis(100))
        );
    }

    #[test]
    fn old_crashes_leave_the_window() {
        let mut p = RestartPolicy::new(RestartConfig {
            max_crashes: 2,
            crash_window_ms: 1_000,
            ..RestartConfig::default()
        });
        let t = Instant::now();
        assert!(p.on_crash(t, Duration::ZERO).is_some());
        assert!(
            p.on_crash(t + Duration::from_secs(5), Duration::ZERO)
                .is_some()
        );
        assert!(
            p.on_crash(t + Duration::from_millis(5_500), Duration::ZERO)
                .is_none()
        );
    }
}
