//! The task that owns one plugin: its processes, its lifecycle state machine and its
//! restart policy. Everything else talks to it through a [`PluginHandle`] and messages.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::checkpoint::CheckpointStore;
use crate::events::{Event, EventSender};
use crate::handle::PluginHandle;
use crate::launch::Launcher;
use crate::metrics::CallMetrics;
use crate::route::{Live, Route};
use crate::watch::{Fingerprint, WatchSet};

mod checkpoints;
mod handover;
mod lifecycle;
mod operator;
mod precopy;
mod restart;
mod transfer;
mod waiting;

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
    /// Stopped on request (`baton ctl stop`): calls fail until it is started.
    Stopped,
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
    /// The most recent failure, in words; cleared by a later start or handover, except
    /// the automatic restart after a crash (which it explains).
    pub last_error: Option<String>,
    /// When `last_error` happened.
    pub last_error_at: Option<SystemTime>,
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
    /// The 99th percentile of the latency of the plugin's recent calls (up to the last
    /// 1024, of the last 60 s); `None` without any.
    pub p99_latency: Option<Duration>,
}

impl PluginStatus {
    pub(crate) fn set_error(&mut self, error: String) {
        self.last_error = Some(error);
        self.last_error_at = Some(SystemTime::now());
    }

    pub(crate) fn clear_error(&mut self) {
        self.last_error = None;
        self.last_error_at = None;
    }
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
    /// Stop the process (a final checkpoint first, if it keeps them) and keep the
    /// plugin stopped until `Resume`; `by` says who asked. Answers what was done.
    Suspend {
        by: String,
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// Start a suspended plugin; answers with the generation serving.
    Resume {
        by: String,
        reply: oneshot::Sender<Result<u64, String>>,
    },
    /// A new process: a handover (state kept), or with `fresh` a start from nothing.
    Restart {
        fresh: bool,
        by: String,
        reply: oneshot::Sender<Result<u64, String>>,
    },
    /// New settings from a config reload.
    Reconfigure(Box<Reconfigure>),
}

/// A plugin's new settings, and what they take.
pub(crate) struct Reconfigure {
    pub(crate) config: crate::config::PluginConfig,
    pub(crate) change: crate::config::PluginChange,
    /// The application's descriptors for the new settings.
    pub(crate) api: Option<Arc<Result<prost_reflect::DescriptorPool, String>>>,
    /// A new subscription to the file watcher, when what is watched changed (`None`
    /// inside: no longer watched).
    pub(crate) changes: Option<Option<mpsc::Receiver<()>>>,
    pub(crate) reply: oneshot::Sender<Result<Reconfigured, String>>,
}

/// How new settings were taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reconfigured {
    /// Read in place; the same process serves.
    InPlace,
    /// Handed over to this generation, which runs with them.
    Generation(u64),
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
    /// New settings that came while a generation was starting, taken once it has.
    deferred: Vec<Reconfigure>,
    /// The next start is the automatic restart after a failure (its backoff ran out),
    /// not one an operator or a change of files asked for.
    retrying: bool,
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
        last_error_at: None,
        plugin_version: String::new(),
        methods: Vec::new(),
        ready_at: None,
        rss_bytes: None,
        cpu_percent: None,
        calls: 0,
        errors: 0,
        last_event: None,
        p99_latency: None,
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
        deferred: Vec::new(),
        retrying: false,
    };
    let span = tracing::info_span!("plugin", name = %handle.name());
    let task = tokio::spawn(tracing::Instrument::instrument(supervisor.run(), span));
    (handle, task)
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
        self.events.send(event);
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
}
