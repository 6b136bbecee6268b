//! The messages a plugin's handles send its supervisor, and the sender they share.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

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
    /// plugin stopped until `Resume`; `by` says who asked. Without checkpoints, its
    /// state is lost: refused unless `discard_state`. Answers what was done.
    Suspend {
        by: String,
        discard_state: bool,
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
    pub(crate) fn new(tx: mpsc::Sender<Command>, stopping: watch::Sender<bool>) -> Self {
        Self {
            tx,
            stopping: Arc::new(stopping),
        }
    }

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
