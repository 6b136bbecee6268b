//! The task that owns one plugin: its processes, its lifecycle state machine and its
//! restart policy. Everything else talks to it through a [`PluginHandle`] and messages.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::calls::handle::PluginHandle;
use crate::calls::route::{Live, Route};
use crate::checkpoint::CheckpointStore;
use crate::launch::Launcher;
use crate::observe::events::{Event, EventSender};
use crate::observe::metrics::CallMetrics;
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

use crate::calls::command::{Command, CommandSender, Reconfigure, Reconfigured};
pub use crate::observe::status::{PluginState, PluginStatus};

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
    /// A generation of this plugin has served since the host started: a later start
    /// without a checkpoint has lost a state, where a first one had none to lose.
    served: bool,
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
    let cmd_tx = CommandSender::new(cmd_tx, stopping_tx);
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
        served: false,
    };
    let span = tracing::info_span!("plugin", name = %handle.name());
    let task = tokio::spawn(tracing::Instrument::instrument(supervisor.run(), span));
    (handle, task)
}

/// The next nudge from the file watcher; never, without one.
async fn next_change(changes: &mut Option<mpsc::Receiver<()>>) -> Option<()> {
    match changes {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
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
