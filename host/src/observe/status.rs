//! What the host reports about one plugin: where it is in its lifecycle, what serves,
//! and what it has cost. Its supervisor keeps it; handles and the control API read it.

use std::time::{Duration, Instant, SystemTime};

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
