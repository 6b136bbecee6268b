//! The task that owns one plugin: its processes, its lifecycle state machine and its
//! restart policy. Everything else talks to it through a [`PluginHandle`] and messages.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_proto::plugin::{SnapshotRequest, StateChunk};
use baton_proto::state::{ChunkCheck, ReassemblyError};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::checkpoint::{CheckpointStore, snapshot_error};
use crate::events::{Event, EventSender};
use crate::handle::PluginHandle;
use crate::launch::{Generation, Launcher, PluginRpc};
use crate::metrics::CallMetrics;
use crate::route::{Live, Route};
use crate::watch::{Fingerprint, WatchSet};

mod checkpoints;
mod restart;

pub use restart::RestartPolicy;

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
    /// Resident memory of the serving process, as last measured.
    pub rss_bytes: Option<u64>,
    /// CPU use of the serving process (100 = one core), as last measured.
    pub cpu_percent: Option<f32>,
    /// Calls made through the host.
    pub calls: u64,
    /// Calls that ended in an error.
    pub errors: u64,
    /// The most recent lifecycle event, as `kind: message`.
    pub last_event: Option<String>,
}

/// Messages to a supervisor.
pub(crate) enum Command {
    /// Stop the plugin for good; answer when its process is reaped.
    Stop(oneshot::Sender<()>),
    /// Hand over to a fresh process now; answer with the new generation or why not.
    Reload(oneshot::Sender<Result<u64, String>>),
    /// The serving process crossed a resource limit (the text says which): hand it
    /// over to a fresh one, unless that keeps happening.
    OverLimit { pid: u32, reason: String },
}

/// How handles send a supervisor commands. A stop is also flagged at once, so that
/// work in progress (a checkpoint) can cut itself short instead of making the stop
/// wait for its turn in the queue.
#[derive(Clone)]
pub(crate) struct CommandSender {
    tx: mpsc::Sender<Command>,
    stopping: Arc<watch::Sender<bool>>,
}

impl CommandSender {
    pub(crate) async fn send(&self, cmd: Command) -> Result<(), mpsc::error::SendError<Command>> {
        if matches!(cmd, Command::Stop(_)) {
            self.stopping.send_replace(true);
        }
        self.tx.send(cmd).await
    }

    pub(crate) fn try_send(&self, cmd: Command) -> Result<(), mpsc::error::TrySendError<Command>> {
        self.tx.try_send(cmd)
    }
}

pub(crate) struct Supervisor {
    launcher: Launcher,
    route: watch::Sender<Route>,
    status: Arc<Mutex<PluginStatus>>,
    commands: mpsc::Receiver<Command>,
    /// Set as soon as a stop is asked for, before the command is read.
    stopping: watch::Receiver<bool>,
    events: EventSender,
    policy: RestartPolicy,
    /// What the plugin's code is made of, for noticing changes.
    watch_set: WatchSet,
    /// Nudges from the host's file watcher (when `reload = "watch"`).
    changes: Option<mpsc::Receiver<()>>,
    /// The last generation number handed out.
    last_number: u64,
    /// The files as they were when the newest generation was launched.
    loaded: Fingerprint,
    /// Files whose load was rolled back: not tried again until they change.
    rejected: Option<Fingerprint>,
    /// The serving generation as callers see it.
    live: Option<Arc<Live>>,
    /// Old generations being shut down after a handover.
    retiring: JoinSet<()>,
    /// A `baton ctl reload` waiting for the next start (of a failed or crashed plugin).
    pending_reload: Option<oneshot::Sender<Result<u64, String>>>,
    /// Recent snapshots of the state, for restarts.
    checkpoints: CheckpointStore,
    /// How often to take one; `None`: never.
    checkpoint_every: Option<Duration>,
    /// A checkpoint ran (or was cut off) after a stop was asked for: the stop takes no
    /// other.
    stop_checkpoint_done: bool,
}

/// Starts the supervisor task of one plugin and returns its handle.
pub(crate) fn spawn(
    launcher: Launcher,
    events: EventSender,
    changes: Option<mpsc::Receiver<()>>,
    checkpoints: CheckpointStore,
    metrics: CallMetrics,
) -> (PluginHandle, tokio::task::JoinHandle<()>) {
    let name = launcher.name.clone();
    let (route_tx, route_rx) = watch::channel(Route::Starting);
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    let (stopping_tx, stopping) = watch::channel(false);
    let cmd_tx = CommandSender {
        tx: cmd_tx,
        stopping: Arc::new(stopping_tx),
    };
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
        rss_bytes: None,
        cpu_percent: None,
        calls: 0,
        errors: 0,
        last_event: None,
    }));
    let handle = PluginHandle::new(
        name,
        &launcher.config,
        route_rx,
        status.clone(),
        cmd_tx,
        launcher.logs.clone(),
        metrics,
    );
    let policy = RestartPolicy::new(launcher.config.restart.clone());
    let launcher_checkpoint_every = launcher
        .config
        .checkpoint_interval_ms
        .map(Duration::from_millis);
    let watch_set = launcher.watch_set();
    let supervisor = Supervisor {
        launcher,
        route: route_tx,
        status,
        commands: cmd_rx,
        stopping,
        events,
        policy,
        watch_set,
        changes,
        last_number: 0,
        loaded: Fingerprint::default(),
        rejected: None,
        live: None,
        retiring: JoinSet::new(),
        pending_reload: None,
        checkpoint_every: launcher_checkpoint_every,
        checkpoints,
        stop_checkpoint_done: false,
    };
    let span = tracing::info_span!("plugin", name = %handle.name());
    let task = tokio::spawn(tracing::Instrument::instrument(supervisor.run(), span));
    (handle, task)
}

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
}

/// How a handover ended.
enum Handover {
    /// The new generation serves.
    Done(u64),
    /// The old generation serves on; the reason says why.
    RolledBack(String),
    /// The old generation died during the handover.
    OldDied(String),
}

/// The next nudge from the file watcher; never, without one.
async fn next_change(changes: &mut Option<mpsc::Receiver<()>>) -> Option<()> {
    match changes {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Streams generation `from`'s `Snapshot` into `to`'s `Restore`, checking order and
/// checksum on the way; the host holds at most a few chunks at a time.
/// More than `limit` bytes of state is refused, naming `plugin`'s `max_state_bytes`.
async fn transfer(
    plugin: &str,
    limit: u64,
    from: (u64, PluginRpc),
    to: (u64, PluginRpc),
) -> Result<(u32, u64), String> {
    let (old, mut old_rpc) = from;
    let (new, mut new_rpc) = to;
    let snapshot = old_rpc
        .snapshot(SnapshotRequest {})
        .await
        .map_err(|s| format!("Snapshot of generation {old} failed: {}", s.message()))?
        .into_inner();
    let (tx, rx) = mpsc::channel::<StateChunk>(2);
    let pump = async move {
        let mut snapshot = snapshot;
        let mut check = ChunkCheck::new(limit);
        loop {
            match snapshot.message().await {
                Ok(Some(chunk)) => {
                    // Checked before it is passed on: a bad chunk never reaches n+1.
                    check.push(&chunk).map_err(|e| {
                        PumpError::Snapshot(match e {
                            ReassemblyError::TooLarge { .. } => format!(
                                "the snapshot of generation {old} was cut off: {}",
                                snapshot_error(plugin, &e)
                            ),
                            e => format!("the snapshot of generation {old} is corrupt: {e}"),
                        })
                    })?;
                    if tx.send(chunk).await.is_err() {
                        return Err(PumpError::ReceiverGone);
                    }
                }
                Ok(None) => break,
                Err(s) => {
                    return Err(PumpError::Snapshot(format!(
                        "the Snapshot stream of generation {old} failed: {}",
                        s.message()
                    )));
                }
            }
        }
        check.finish().map_err(|e| {
            PumpError::Snapshot(format!(
                "the snapshot of generation {old} is incomplete: {e}"
            ))
        })
    };
    let restore = new_rpc.restore(tokio_stream::wrappers::ReceiverStream::new(rx));
    let (pumped, restored) = tokio::join!(pump, restore);
    match (pumped, restored) {
        // A bad snapshot also fails the Restore (its stream ends early); the snapshot
        // is the cause, and blaming n+1 would send its author looking in the wrong place.
        (Err(PumpError::Snapshot(e)), _) => Err(e),
        (_, Err(s)) => Err(format!(
            "generation {new} refused the state ({:?}): {}",
            s.code(),
            s.message()
        )),
        (Err(PumpError::ReceiverGone), Ok(_)) => {
            Err(format!("generation {new} stopped reading the state"))
        }
        (Ok(moved), Ok(_)) => Ok(moved),
    }
}

/// Why the pump from n's `Snapshot` into n+1's `Restore` stopped.
enum PumpError {
    /// n's snapshot failed its checks or broke off.
    Snapshot(String),
    /// n+1 stopped reading; its `Restore` result says why.
    ReceiverGone,
}

impl Supervisor {
    fn name(&self) -> &str {
        &self.launcher.name
    }

    fn update(&self, f: impl FnOnce(&mut PluginStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn emit(&self, generation: u64, kind: &'static str, message: String) {
        self.publish(Event::new(self.name(), generation, kind, message));
    }

    fn publish(&self, event: Event) {
        self.update(|s| s.last_event = Some(format!("{}: {}", event.kind, event.message)));
        let _ = self.events.send(event);
    }

    fn next_number(&mut self) -> u64 {
        self.last_number += 1;
        self.last_number
    }

    fn answer_pending(&mut self, result: Result<u64, String>) {
        if let Some(reply) = self.pending_reload.take() {
            let _ = reply.send(result);
        }
    }

    async fn run(mut self) {
        let mut restarting = false;
        loop {
            let number = self.next_number();
            self.update(|s| {
                s.generation = number;
                if !restarting {
                    s.state = PluginState::Starting;
                }
            });
            self.loaded = self.watch_set.fingerprint();
            let launched = {
                let launch = self.launcher.launch(number);
                tokio::pin!(launch);
                loop {
                    tokio::select! {
                        launched = &mut launch => break Ok(launched),
                        cmd = self.commands.recv() => match cmd {
                            Some(Command::Reload(reply)) => {
                                let _ = reply.send(Err(format!("plugin {} is starting generation {number}", self.launcher.name)));
                            }
                            Some(Command::OverLimit { .. }) => {}
                            stop => break Err(stop),
                        },
                    }
                }
            };
            // Dropping the launch (above) killed a half-started process (kill_on_drop).
            let launched = match launched {
                Ok(launched) => launched,
                Err(stop) => {
                    self.finish(stop).await;
                    return;
                }
            };
            let (reason, uptime, tripped, host_side) = match launched {
                Ok(generation) => {
                    self.restore_checkpoint(&generation).await;
                    self.serve_started(&generation, restarting);
                    self.answer_pending(Ok(generation.number));
                    match self.serve(generation).await {
                        Ended::Stopped => return,
                        Ended::Crashed { reason, uptime } => (reason, uptime, false, false),
                        Ended::Tripped { reason } => (reason, Duration::ZERO, true, false),
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
                    (reason, Duration::ZERO, false, e.is_host_side())
                }
            };
            restarting = true;
            self.live = None;
            let delay = if tripped {
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
                        s.last_error = Some(reason.clone());
                        s.restarts += 1;
                    });
                    tracing::info!(
                        delay_ms = delay.as_millis() as u64,
                        "restarting after backoff"
                    );
                    if !self.wait_to_restart(Some(delay)).await {
                        return;
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
                    if !self.wait_to_restart(None).await {
                        return;
                    }
                    // Revived by an operator or a new binary: a fresh start.
                    self.policy.reset();
                }
            }
        }
    }

    /// Waits out a restart delay (`None`: until revived). A reload request or a changed
    /// binary cuts the wait short. Returns false when the plugin is to stop.
    async fn wait_to_restart(&mut self, delay: Option<Duration>) -> bool {
        let sleep = async {
            match delay {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return true,
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Reload(reply)) => {
                        // Answered once the next generation serves, or fails to start.
                        self.pending_reload = Some(reply);
                        return true;
                    }
                    Some(Command::OverLimit { .. }) => {}
                    stop => {
                        self.finish(stop).await;
                        return false;
                    }
                },
                Some(()) = next_change(&mut self.changes) => {
                    if self.settled_change().await.is_some() {
                        tracing::info!("the plugin's files changed; starting the new version now");
                        return true;
                    }
                }
            }
        }
    }

    fn serve_started(&mut self, generation: &Generation, restarted: bool) {
        let live = Arc::new(Live::of(generation));
        self.live = Some(live.clone());
        self.update(|s| {
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
        let mut ticker = self.checkpoint_every.map(|every| {
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        loop {
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
                        self.checkpoint(&current).await;
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
                        let outcome = self.handover(&mut current, "requested by an operator", fingerprint).await;
                        let _ = reply.send(match &outcome {
                            Handover::Done(n) => Ok(*n),
                            Handover::RolledBack(why) => Err(format!("plugin {} rolled back, generation {} keeps serving: {why}", self.name(), current.number)),
                            Handover::OldDied(status) => Err(format!("plugin {}: generation {} exited during the handover: {status}", self.name(), current.number)),
                        });
                        outcome
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
                            self.stop_generation(current).await;
                            return Ended::Tripped { reason: message };
                        }
                        let fingerprint = self.watch_set.fingerprint();
                        self.handover(&mut current, &reason, fingerprint).await
                    }
                    stop => {
                        if self.checkpoint_every.is_some() && !self.stop_checkpoint_done {
                            // The freshest state for the next start of the host.
                            self.checkpoint(&current).await;
                        }
                        self.stop_generation(current).await;
                        self.finish(stop).await;
                        return Ended::Stopped;
                    }
                },
                Some(()) = next_change(&mut self.changes) => {
                    let Some(fingerprint) = self.settled_change().await else { continue };
                    self.handover(&mut current, "its files changed", fingerprint).await
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

    /// Moves the plugin to a fresh process: start n+1 beside n, hold calls, let calls
    /// on n finish, stream n's state into n+1, switch, and retire n. Any failure before
    /// the switch kills n+1 and releases the held calls to n, whose state never changed.
    async fn handover(
        &mut self,
        current: &mut Generation,
        why: &str,
        fingerprint: Fingerprint,
    ) -> Handover {
        let Some(old_live) = self.live.clone() else {
            return Handover::RolledBack("no generation is serving".into());
        };
        let started = Instant::now();
        let timeout = self.launcher.config.handover_timeout();
        let deadline = tokio::time::Instant::now() + timeout;
        let old = current.number;
        let number = self.next_number();
        tracing::info!(from = old, to = number, "handover started: {why}");
        self.emit(
            old,
            "reload_started",
            format!(
                "plugin {} handing over from generation {old} to {number}: {why}",
                self.name()
            ),
        );
        self.update(|s| s.state = PluginState::HandingOver);

        // 1. Start n+1 beside n; n keeps serving meanwhile.
        let mut next = tokio::select! {
            launched = tokio::time::timeout_at(deadline, self.launcher.launch(number)) => match launched {
                Ok(Ok(next)) => next,
                Ok(Err(e)) => {
                    return self.rollback(None, fingerprint, format!("generation {number} failed to start: {e}")).await;
                }
                Err(_) => {
                    return self.rollback(None, fingerprint, format!("generation {number} did not start within the handover timeout of {timeout:?}")).await;
                }
            },
            status = current.wait() => {
                current.clean_up();
                return Handover::OldDied(status);
            }
        };

        // 2. Hold new calls; 3. let n's calls finish, then move the state.
        self.route.send_replace(Route::Held);
        let held_at = Instant::now();
        let (old_rpc, new_rpc) = (current.rpc.clone(), next.rpc.clone());
        let (name, limit) = (
            self.launcher.name.clone(),
            self.launcher.config.max_state_bytes,
        );
        let mut drain = Duration::ZERO;
        let moved = tokio::select! {
            moved = tokio::time::timeout_at(deadline, async {
                let why = format!(
                    "plugin {name} moved to generation {number} (a reload); reopen the stream"
                );
                old_live
                    .drained_ending_streams(self.launcher.config.stream_drain(), &why)
                    .await;
                drain = held_at.elapsed();
                transfer(&name, limit, (old, old_rpc), (number, new_rpc)).await
            }) => match moved {
                Ok(Ok(moved)) => moved,
                Ok(Err(reason)) => {
                    // A transfer that broke off because n+1 died says more as its exit.
                    let reason = match tokio::time::timeout(Duration::from_millis(250), next.wait()).await {
                        Ok(status) => format!("generation {number} exited during the handover: {status} ({reason})"),
                        Err(_) => reason,
                    };
                    return self.rollback(Some(next), fingerprint, reason).await;
                }
                Err(_) => {
                    let reason = format!("the handover outran its timeout of {timeout:?} (calls in flight on generation {old} did not finish, or the state transfer was too slow)");
                    return self.rollback(Some(next), fingerprint, reason).await;
                }
            },
            status = current.wait() => {
                current.clean_up();
                next.kill().await;
                return Handover::OldDied(status);
            }
            status = next.wait() => {
                next.clean_up();
                let reason = format!("generation {number} exited during the handover: {status}");
                return self.rollback(Some(next), fingerprint, reason).await;
            }
        };

        // 4. Switch: held calls go to n+1.
        let (schema, bytes) = moved;
        let live = Arc::new(Live::of(&next));
        self.live = Some(live.clone());
        self.route.send_replace(Route::Serving(live));
        let hold = held_at.elapsed();

        // 5. Retire n in the background: Shutdown, SIGTERM, SIGKILL, reap.
        let retired = std::mem::replace(current, next);
        let grace = self.launcher.config.shutdown_grace();
        let name = self.launcher.name.clone();
        self.retiring.spawn(async move {
            let number = retired.number;
            let status = retired.stop(grace).await;
            tracing::info!(plugin = %name, generation = number, "retired generation stopped: {status}");
        });

        self.loaded = fingerprint;
        self.rejected = None;
        self.update(|s| {
            s.state = PluginState::Serving;
            s.generation = number;
            s.pid = Some(current.pid);
            s.rss_bytes = None;
            s.cpu_percent = None;
            s.socket = Some(current.socket.clone());
            s.plugin_version = current.describe.plugin_version.clone();
            s.methods = current
                .describe
                .methods
                .iter()
                .map(|m| m.name.clone())
                .collect();
            s.ready_at = Some(current.ready_at);
            s.reloads += 1;
        });
        let total = started.elapsed();
        let message = format!(
            "plugin {} handed over from generation {old} to {number}: calls held {:.2} ms ({:.2} ms for calls in flight to finish), {bytes} bytes of state (schema {schema}) moved, {:.1} ms in all",
            self.name(),
            hold.as_secs_f64() * 1e3,
            drain.as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e3
        );
        tracing::info!(generation = number, pid = current.pid, "{message}");
        let mut event = Event::new(self.name(), number, "handover_done", message);
        event.hold_us = hold.as_micros() as u64;
        event.state_bytes = bytes;
        event.duration_us = total.as_micros() as u64;
        event.drain_us = drain.as_micros() as u64;
        self.publish(event);
        Handover::Done(number)
    }

    async fn rollback(
        &mut self,
        next: Option<Generation>,
        fingerprint: Fingerprint,
        reason: String,
    ) -> Handover {
        // Release the held calls first: n never stopped being able to serve them.
        if let Some(live) = self.live.clone() {
            self.route.send_replace(Route::Serving(live));
        }
        if let Some(next) = next {
            next.kill().await;
        }
        self.rejected = Some(fingerprint);
        let message = format!(
            "plugin {} rolled back, the old generation keeps serving: {reason}",
            self.name()
        );
        tracing::error!("{message}");
        self.update(|s| {
            s.state = PluginState::Serving;
            s.last_error = Some(message.clone());
        });
        let generation = self.live.as_ref().map_or(0, |l| l.generation);
        self.emit(generation, "rollback", message);
        Handover::RolledBack(reason)
    }

    async fn stop_generation(&mut self, generation: Generation) {
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

    /// Ends the task: waits for retiring generations, answers the stop request.
    async fn finish(&mut self, cmd: Option<Command>) {
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
            Some(Command::Reload(reply)) => {
                let _ = reply.send(Err(format!("plugin {} is stopping", self.launcher.name)));
            }
            Some(Command::OverLimit { .. }) | None => {}
        }
    }
}
