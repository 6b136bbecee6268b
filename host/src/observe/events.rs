//! Lifecycle events: what happened to which plugin, broadcast to whoever listens
//! (`baton ctl events`, tests, an embedding program), the last few kept for late comers.
//!
//! The history is kept per plugin, in two rings: what the host said about it, and what it
//! emitted itself. A plugin emitting at its full rate then pushes out only its own
//! emitted events, never a neighbour's nor the host's record of anyone.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;

/// The host's own events kept per plugin for `baton ctl events --last N`: enough for
/// what led up to a problem.
pub const KEPT_HOST_EVENTS: usize = 128;
/// Events a plugin emitted itself (`plugin:*`), kept per plugin: at most 128 of 4 KiB
/// messages, about 550 KiB for a plugin that fills its ring.
pub const KEPT_PLUGIN_EVENTS: usize = 128;
/// The last events of plugins removed from the config (their `removed` among them),
/// kept after their rings are dropped.
pub const KEPT_REMOVED_EVENTS: usize = 64;

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
    /// For `handover_done`: the bytes copied in each pre-copy round while the old
    /// generation served; empty for a stop-and-copy handover.
    pub precopy_bytes: Vec<u64>,
    /// For `handover_done`: the bytes moved while calls were held.
    pub final_bytes: u64,
    /// For `handover_done`: how the state moved (`stop_and_copy`, `converged`,
    /// `not_shrinking`, `round_limit`, `time_limit`, `no_cursor`).
    pub precopy: Cow<'static, str>,
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
            precopy_bytes: Vec::new(),
            final_bytes: 0,
            precopy: Cow::Borrowed(""),
        }
    }
}

/// The kept history: rings per plugin, each event numbered so that rings merge in the
/// order the events happened.
#[derive(Default)]
struct History {
    next: u64,
    /// Per plugin: the host's events about it, and the events it emitted.
    plugins: HashMap<String, (Ring, Ring)>,
    removed: Ring,
}

type Ring = VecDeque<(u64, Event)>;

fn push(ring: &mut Ring, limit: usize, entry: (u64, Event)) {
    if ring.len() >= limit {
        ring.pop_front();
    }
    ring.push_back(entry);
}

/// The sending side every supervisor shares: a broadcast to live subscribers, and the
/// kept history for those who subscribe later.
#[derive(Clone)]
pub struct EventSender {
    live: broadcast::Sender<Event>,
    kept: Arc<Mutex<History>>,
}

impl EventSender {
    /// A sender whose subscribers may fall `capacity` events behind before they lag.
    pub fn new(capacity: usize) -> Self {
        Self {
            live: broadcast::channel(capacity).0,
            kept: Arc::default(),
        }
    }

    /// Keeps `event` and sends it to every subscriber; nobody listening is fine.
    pub fn send(&self, event: Event) {
        // Under the lock, so that `subscribe_after` sees each event exactly once: kept
        // before it subscribed, or sent after.
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        let number = kept.next;
        kept.next += 1;
        let emitted = event.kind.starts_with("plugin:");
        let (host, own) = kept.plugins.entry(event.plugin.clone()).or_default();
        if emitted {
            push(own, KEPT_PLUGIN_EVENTS, (number, event.clone()));
        } else {
            push(host, KEPT_HOST_EVENTS, (number, event.clone()));
        }
        let _ = self.live.send(event);
    }

    /// Drops the history of `plugin`, removed from the config, but for the host's last
    /// event about it (its removal), so the plugins ever configured do not add up.
    pub fn forget(&self, plugin: &str) {
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((mut host, _)) = kept.plugins.remove(plugin)
            && let Some(last) = host.pop_back()
        {
            push(&mut kept.removed, KEPT_REMOVED_EVENTS, last);
        }
    }

    /// A live feed of the events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.live.subscribe()
    }

    /// The last `n` kept events that `wanted` accepts, oldest first, and a live feed of
    /// every event after them: none missed, none twice.
    pub fn subscribe_after(
        &self,
        n: usize,
        wanted: impl Fn(&Event) -> bool,
    ) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        let mut recent: Vec<&(u64, Event)> = kept
            .plugins
            .values()
            .flat_map(|(host, own)| host.iter().chain(own))
            .chain(&kept.removed)
            .filter(|(_, e)| wanted(e))
            .collect();
        recent.sort_unstable_by_key(|(number, _)| *number);
        let skip = recent.len().saturating_sub(n);
        let recent = recent[skip..].iter().map(|(_, e)| e.clone()).collect();
        (recent, self.live.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_events_are_kept_and_the_feed_goes_on_from_there() {
        let events = EventSender::new(16);
        for i in 0..KEPT_HOST_EVENTS + 10 {
            let plugin = if i % 2 == 0 { "even" } else { "odd" };
            events.send(Event::new(plugin, i as u64, "started", String::new()));
        }
        let (recent, mut feed) = events.subscribe_after(3, |e| e.plugin == "odd");
        let generations: Vec<u64> = recent.iter().map(|e| e.generation).collect();
        let last = (KEPT_HOST_EVENTS + 9) as u64;
        assert_eq!(generations, [last - 4, last - 2, last]);
        let (all, _) = events.subscribe_after(usize::MAX, |_| true);
        assert_eq!(
            all.len(),
            KEPT_HOST_EVENTS + 10,
            "each plugin keeps its own"
        );
        events.send(Event::new("odd", 1000, "stopped", String::new()));
        assert_eq!(feed.try_recv().map(|e| e.generation).ok(), Some(1000));
    }

    #[test]
    fn a_plugins_own_events_push_out_only_its_own() {
        let events = EventSender::new(16);
        events.send(Event::new("loud", 1, "started", String::new()));
        events.send(Event::new("quiet", 1, "started", String::new()));
        for _ in 0..KEPT_PLUGIN_EVENTS * 3 {
            events.send(Event::new("loud", 1, "plugin:noise", String::new()));
        }
        let (all, _) = events.subscribe_after(usize::MAX, |_| true);
        assert_eq!(all.len(), 2 + KEPT_PLUGIN_EVENTS);
        assert_eq!((&*all[0].plugin, &*all[0].kind), ("loud", "started"));
        assert_eq!((&*all[1].plugin, &*all[1].kind), ("quiet", "started"));

        events.send(Event::new("loud", 1, "removed", String::new()));
        events.forget("loud");
        let (all, _) = events.subscribe_after(usize::MAX, |_| true);
        let kinds: Vec<&str> = all.iter().map(|e| &*e.kind).collect();
        assert_eq!(kinds, ["started", "removed"], "only its removal stays");
    }
}
