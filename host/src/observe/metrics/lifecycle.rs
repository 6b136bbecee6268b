//! Lifecycle metrics: reloads, rollbacks, restarts, crashes, handover times and what
//! serves, fed from the host's event stream.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use super::{Metrics, RollbackLabels, StateMovedLabels, plugin_label};
use crate::observe::events::Event;

impl Metrics {
    /// Updates the lifecycle metrics for one event.
    pub fn observe(&self, event: &Event) {
        let label = plugin_label(&event.plugin);
        let generation = i64::try_from(event.generation).unwrap_or(i64::MAX);
        match event.kind.as_ref() {
            "started" | "restarted" => {
                if event.kind == "restarted" {
                    self.restarts.get_or_create(&label).inc();
                }
                self.generation.get_or_create(&label).set(generation);
                self.up.get_or_create(&label).set(1);
            }
            "handover_done" => {
                self.reloads.get_or_create(&label).inc();
                self.generation.get_or_create(&label).set(generation);
                self.up.get_or_create(&label).set(1);
                let seconds = |us: u64| Duration::from_micros(us).as_secs_f64();
                self.handover_hold
                    .get_or_create(&label)
                    .observe(seconds(event.hold_us));
                self.handover_duration
                    .get_or_create(&label)
                    .observe(seconds(event.duration_us));
                let moved = |phase, bytes| {
                    self.handover_state
                        .get_or_create(&StateMovedLabels {
                            plugin: label.plugin.clone(),
                            phase,
                        })
                        .inc_by(bytes);
                };
                moved("serving", event.precopy_bytes.iter().sum());
                moved("held", event.final_bytes);
            }
            "rollback" => {
                self.rollbacks
                    .get_or_create(&RollbackLabels {
                        plugin: label.plugin,
                        reason: rollback_reason(&event.message),
                    })
                    .inc();
            }
            "crashed" => {
                self.crashes.get_or_create(&label).inc();
                self.up.get_or_create(&label).set(0);
            }
            "start_failed" | "failed" | "stopped" => {
                self.up.get_or_create(&label).set(0);
            }
            _ => {}
        }
    }

    /// Feeds the lifecycle metrics from `events` until the stream closes.
    pub(crate) fn follow(
        self: Arc<Self>,
        mut events: broadcast::Receiver<Event>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(event) => self.observe(&event),
                    Err(broadcast::error::RecvError::Lagged(n)) => tracing::warn!(
                        "the metrics missed {n} lifecycle events; their counters are short by as many"
                    ),
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        })
    }
}

/// A short, stable category for a rollback, from its message. Only the host's own words
/// are looked at: a plugin's output quoted in the message (its stderr, a bad handshake
/// line) could say anything.
pub fn rollback_reason(message: &str) -> &'static str {
    let reason = message
        .split_once("keeps serving: ")
        .map_or(message, |(_, r)| r);
    // "generation N failed to start: ...", "generation N refused the state ...".
    let after_generation = reason
        .strip_prefix("generation ")
        .and_then(|r| r.split_once(' '))
        .map(|(_, rest)| rest);
    match after_generation {
        Some(rest) => {
            if let Some(why) = rest.strip_prefix("failed to start: ") {
                if why.starts_with("did not report SERVING") {
                    "health"
                } else if why.starts_with("exited during start-up") || why.starts_with("cannot run")
                {
                    "start_failed"
                } else {
                    // A bad or missing handshake line, Describe failing or lying.
                    "handshake"
                }
            } else if rest.starts_with("refused the state") || rest.starts_with("refused the delta")
            {
                "restore_refused"
            } else if rest.starts_with("exited during the handover")
                || rest.starts_with("exited during the pre-copy")
            {
                "crashed"
            } else if rest.starts_with("did not start within the handover timeout") {
                "timeout"
            } else {
                "other"
            }
        }
        None if reason.starts_with("the handover outran its timeout")
            || reason.starts_with("the pre-copy outran") =>
        {
            "timeout"
        }
        None => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::metrics::tests::{event, sample};

    #[test]
    fn lifecycle_events_feed_the_counters_and_gauges() {
        let m = Metrics::new();
        m.add_plugin("counter");
        let series = |name: &str| format!("{name}{{plugin=\"counter\"}}");
        assert_eq!(sample(&m.text(), &series("baton_reloads_total")), Some(0.0));

        m.observe(&event("counter", 1, "started", "up"));
        let mut done = event("counter", 2, "handover_done", "done");
        done.hold_us = 1_500;
        done.duration_us = 40_000;
        m.observe(&done);
        m.observe(&event("counter", 2, "crashed", "killed"));
        let text = m.text();
        assert_eq!(sample(&text, &series("baton_plugin_up")), Some(0.0));
        m.observe(&event("counter", 3, "restarted", "back"));
        m.observe(&event(
            "counter",
            3,
            "rollback",
            "plugin counter rolled back, the old generation keeps serving: generation 4 refused the state (InvalidArgument): unknown schema 9",
        ));

        let text = m.text();
        assert_eq!(sample(&text, &series("baton_reloads_total")), Some(1.0));
        assert_eq!(sample(&text, &series("baton_restarts_total")), Some(1.0));
        assert_eq!(sample(&text, &series("baton_crashes_total")), Some(1.0));
        assert_eq!(sample(&text, &series("baton_plugin_generation")), Some(3.0));
        assert_eq!(sample(&text, &series("baton_plugin_up")), Some(1.0));
        assert_eq!(
            sample(&text, &series("baton_handover_hold_seconds_sum")),
            Some(0.0015)
        );
        assert_eq!(
            sample(&text, &series("baton_handover_duration_seconds_sum")),
            Some(0.04)
        );
        assert_eq!(
            sample(
                &text,
                "baton_rollbacks_total{plugin=\"counter\",reason=\"restore_refused\"}"
            ),
            Some(1.0),
            "{text}"
        );
    }

    #[test]
    fn rollback_messages_fall_into_stable_categories() {
        let rolled = |reason: &str| {
            rollback_reason(&format!(
                "plugin health rolled back, the old generation keeps serving: {reason}"
            ))
        };
        for (reason, category) in [
            (
                "generation 3 failed to start: exited during start-up (exit code 3); its stderr ended with: refused the state",
                "start_failed",
            ),
            (
                "generation 3 failed to start: cannot run /x/counter: No such file or directory",
                "start_failed",
            ),
            (
                "generation 3 failed to start: printed `hello` on stdout where the handshake line `baton|1|unix|/s` was expected",
                "handshake",
            ),
            (
                "generation 3 failed to start: printed no handshake line (expected `baton|1|unix|/s`) within 5s",
                "handshake",
            ),
            (
                "generation 3 failed to start: Describe failed: boom (Internal)",
                "handshake",
            ),
            (
                "generation 3 failed to start: did not report SERVING for baton.plugin.v1.Plugin on its health service (last: no answer) within 5s",
                "health",
            ),
            (
                "generation 3 refused the state (InvalidArgument): unknown schema version 9",
                "restore_refused",
            ),
            (
                "generation 3 exited during the handover: killed by signal 9 (SIGKILL) (generation 3 stopped reading the state)",
                "crashed",
            ),
            (
                "generation 3 did not start within the handover timeout of 10s",
                "timeout",
            ),
            (
                "the handover outran its timeout of 10s (calls in flight on generation 2 did not finish, or the state transfer was too slow)",
                "timeout",
            ),
            (
                "generation 3 refused the delta (DataLoss): a delta that follows cursor 00 does not follow the state restored here (cursor 01) (in pre-copy round 2, while generation 2 served)",
                "restore_refused",
            ),
            (
                "generation 3 exited during the pre-copy: exit code 3 (generation 3 stopped reading the state)",
                "crashed",
            ),
            ("the pre-copy outran the handover timeout of 10s", "timeout"),
            ("Snapshot of generation 2 failed: unimplemented", "other"),
            ("no generation is serving", "other"),
        ] {
            assert_eq!(rolled(reason), category, "{reason}");
        }
    }
}
