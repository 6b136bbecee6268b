//! Lifecycle events: what happened to which plugin, broadcast to whoever listens
//! (`baton ctl events`, tests, an embedding program).

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

/// One thing that happened to a plugin.
#[derive(Debug, Clone)]
pub struct Event {
    /// Unix time in milliseconds.
    pub unix_ms: u64,
    /// The plugin's configured name.
    pub plugin: String,
    /// The generation it concerns.
    pub generation: u64,
    /// A short stable word: `started`, `crashed`, `restarted`, `start_failed`, `failed`,
    /// `reload_started`, `handover_done`, `rollback`, `stopped`; or `plugin:<word>` for
    /// an event the plugin emitted itself through the host services.
    pub kind: Cow<'static, str>,
    /// Detail in words.
    pub message: String,
    /// For `handover_done`: how long calls were held, in microseconds.
    pub hold_us: u64,
    /// For `handover_done`: bytes of state moved.
    pub state_bytes: u64,
    /// For `handover_done`: the whole handover, in microseconds.
    pub duration_us: u64,
    /// For `handover_done`: the part of `hold_us` spent waiting for calls in flight on
    /// the old generation; the rest moved the state.
    pub drain_us: u64,
}

impl Event {
    /// An event stamped now.
    pub fn new(
        plugin: &str,
        generation: u64,
        kind: impl Into<Cow<'static, str>>,
        message: String,
    ) -> Self {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Self {
            unix_ms,
            plugin: plugin.to_owned(),
            generation,
            kind: kind.into(),
            message,
            hold_us: 0,
            state_bytes: 0,
            duration_us: 0,
            drain_us: 0,
        }
    }
}

/// The sending side every supervisor shares.
pub type EventSender = tokio::sync::broadcast::Sender<Event>;
