//! The supervisor's side of checkpoints: taking one from the serving generation (calls
//! held meanwhile), and giving the latest to a new process before it serves.

use std::time::Duration;

use super::Supervisor;
use crate::checkpoint::{TakeError, Unusable};
use crate::events::Event;
use crate::launch::Generation;
use crate::route::Route;

impl Supervisor {
    /// Takes a checkpoint of the serving generation. Calls are held while it exports
    /// (the contract promises no calls during a snapshot), which costs them about as
    /// long as the snapshot takes; they resume before the file is synced.
    ///
    /// Bounded by `max_state_bytes` and `handover_timeout_ms`, and once a stop is asked
    /// for, by `shutdown_grace_ms` from then on: a checkpoint running when the stop
    /// comes is the final one if it ends in that time, and is abandoned otherwise, so
    /// a plugin streaming without end cannot hold the host's exit.
    pub(super) async fn checkpoint(&mut self, current: &Generation) {
        let Some(live) = self.live.clone() else {
            return;
        };
        let name = self.launcher.name.clone();
        let config = &self.launcher.config;
        let (timeout, grace, limit) = (
            config.handover_timeout(),
            config.shutdown_grace(),
            config.max_state_bytes,
        );
        // Every call answered before this moment is in the checkpoint (calls are
        // drained first); the event carries it so that what a crash may lose is known.
        let taken_at = Event::new(&name, current.number, "checkpoint", String::new()).unix_ms;
        self.route.send_replace(Route::Held);
        let mut stopping = self.stopping.clone();
        let mut stop_seen = *stopping.borrow();
        let outcome = {
            let route = &self.route;
            let release = || {
                route.send_replace(Route::Serving(live.clone()));
            };
            // A connection of its own, read on the checkpoint thread: a large state
            // then never shares a worker (or a connection) with other plugins' calls.
            let connect = current.separate_rpc();
            let take = async {
                let why =
                    format!("plugin {name} is taking a checkpoint of its state; reopen the stream");
                live.drained_ending_streams(config.stream_drain(), &why)
                    .await;
                self.checkpoints.take(&name, connect, limit, release).await
            };
            tokio::pin!(take);
            let now = tokio::time::Instant::now();
            let mut deadline = now
                + if stop_seen {
                    timeout.min(grace)
                } else {
                    timeout
                };
            loop {
                tokio::select! {
                    taken = &mut take => break Some(taken),
                    _ = tokio::time::sleep_until(deadline) => break None,
                    Ok(_) = stopping.wait_for(|s| *s), if !stop_seen => {
                        stop_seen = true;
                        deadline = deadline.min(tokio::time::Instant::now() + grace);
                    }
                }
            }
        };
        self.route.send_replace(Route::Serving(live));
        self.stop_checkpoint_done |= stop_seen;
        self.report_notices(current.number);
        let failed = |what: String| format!("plugin {name}: {what}");
        let message = match outcome {
            Some(Ok(taken)) => {
                tracing::debug!(bytes = taken.bytes, file = ?taken.file, "checkpoint saved");
                let mut event = Event::new(
                    &name,
                    current.number,
                    "checkpoint",
                    format!("plugin {name}: checkpoint of {} bytes saved", taken.bytes),
                );
                event.unix_ms = taken_at;
                event.state_bytes = taken.bytes;
                // Not the status's last event: it would hide everything else there.
                self.events.send(event);
                return;
            }
            Some(Err(TakeError::Snapshot(e))) => failed(format!("checkpoint failed: {e}")),
            // The previous checkpoint files are untouched (see CheckpointStore::take).
            Some(Err(TakeError::Write(e))) => failed(format!(
                "cannot write a checkpoint ({e}); the previous one is kept"
            )),
            None if stop_seen => failed(format!(
                "checkpoint abandoned: the host is stopping, and it did not end within shutdown_grace_ms ({}); the previous one is kept",
                show(grace.min(timeout))
            )),
            None => failed(format!(
                "checkpoint failed: the snapshot took longer than {timeout:?}"
            )),
        };
        tracing::error!("{message}");
        self.emit(current.number, "checkpoint_failed", message);
    }

    /// Logs and publishes what the checkpoint store noticed (strangers in its
    /// directory, a directory it had to tighten).
    fn report_notices(&mut self, generation: u64) {
        for notice in self.checkpoints.take_notices() {
            let message = format!("plugin {}: {}", self.name(), notice.message);
            tracing::warn!("{message}");
            self.emit(generation, notice.kind, message);
        }
    }

    /// Before a new process serves: give it the latest checkpoint, if there is one.
    pub(super) async fn restore_checkpoint(&mut self, generation: &Generation) {
        if self.checkpoint_every.is_none() {
            return;
        }
        let name = self.name().to_owned();
        let limit = self.launcher.config.max_state_bytes;
        let (checkpoint, source) = match self.checkpoints.latest() {
            Some(c) => (Some(c.clone()), "memory".to_owned()),
            None => {
                let loaded = self.checkpoints.load(limit).await;
                self.report_notices(generation.number);
                if let Some(why) = loaded.refused {
                    let message = format!("plugin {name}: cannot use its checkpoints: {why}");
                    tracing::error!("{message}");
                    self.emit(generation.number, "checkpoint_failed", message);
                }
                for (file, why) in &loaded.skipped {
                    let file = file.display();
                    let (kind, message) = match why {
                        Unusable::Corrupt(why) => (
                            "checkpoint_corrupt",
                            format!("plugin {name}: checkpoint {file} is corrupt, skipped: {why}"),
                        ),
                        Unusable::TooLarge { len } => (
                            "checkpoint_too_large",
                            format!(
                                "plugin {name}: checkpoint {file} holds {len} bytes of state, more than max_state_bytes = {limit}; skipped (raise plugins.{name}.max_state_bytes to use it)"
                            ),
                        ),
                    };
                    tracing::error!("{message}");
                    self.emit(generation.number, kind, message);
                }
                match loaded.checkpoint {
                    Some((c, file)) => (Some(c), file.display().to_string()),
                    None => (None, String::new()),
                }
            }
        };
        let Some(checkpoint) = checkpoint else {
            let message =
                format!("plugin {name} starts with an EMPTY state: no valid checkpoint was found");
            tracing::warn!("{message}");
            self.emit(generation.number, "checkpoint_none", message);
            return;
        };
        let len = checkpoint.state.len();
        let chunks = baton_proto::state::chunks(checkpoint.schema_version, checkpoint.state);
        let mut rpc = generation.rpc.clone();
        match rpc.restore(tokio_stream::iter(chunks)).await {
            Ok(_) => {
                let message = format!(
                    "plugin {name} (generation {}) restored {len} bytes of state from the checkpoint in {source}",
                    generation.number,
                );
                tracing::info!("{message}");
                self.emit(generation.number, "checkpoint_restored", message);
            }
            Err(s) => {
                let message = format!(
                    "plugin {name} (generation {}) refused the checkpoint from {source} ({:?}: {}); it starts with an EMPTY state",
                    generation.number,
                    s.code(),
                    s.message()
                );
                tracing::error!("{message}");
                self.emit(generation.number, "checkpoint_refused", message);
            }
        }
    }
}

fn show(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}
