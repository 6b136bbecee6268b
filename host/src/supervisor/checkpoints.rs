//! The supervisor's side of checkpoints: taking one from the serving generation (calls
//! held meanwhile), and giving the latest to a new process before it serves.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use super::Supervisor;
use crate::calls::route::Route;
use crate::checkpoint::{Checkpoint, KEEP_REFUSED, REFUSED_DIR, SetAside, TakeError, Unusable};
use crate::io::printable;
use crate::launch::Generation;
use crate::observe::events::Event;

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

    /// Before a new process serves: give it the newest checkpoint it accepts. One it
    /// refuses is named and kept aside (out of what is loaded and pruned), and the next
    /// older one is offered, up to [`MAX_OFFERED`]; it starts empty, and says so, only
    /// when none is accepted.
    pub(super) async fn restore_checkpoint(&mut self, generation: &mut Generation) {
        if self.checkpoint_every.is_none() {
            return;
        }
        if let Some(checkpoint) = self.checkpoints.latest().cloned() {
            match self.offer(generation, checkpoint, "memory").await {
                Offered::Accepted | Offered::Died => {}
                Offered::Refused(why) | Offered::Failed(why) => self.started_empty(
                    generation,
                    format!("it did not take its checkpoint in memory ({why}); without a state_dir it is the only one kept"),
                ),
            }
            return;
        }
        let mut tried = HashSet::new();
        let (mut refused, mut kept, mut unusable) = (0usize, 0usize, 0usize);
        for _ in 0..MAX_OFFERED {
            let Some((checkpoint, file)) = self
                .next_on_disk(generation, &mut tried, &mut unusable)
                .await
            else {
                break;
            };
            match self
                .offer(generation, checkpoint, &file.display().to_string())
                .await
            {
                Offered::Accepted | Offered::Died => return,
                Offered::Refused(_) => {
                    refused += 1;
                    kept += usize::from(self.keep_aside(generation, &file).await);
                }
                Offered::Failed(why) => {
                    self.started_empty(generation, format!("its Restore failed ({why})"));
                    return;
                }
            }
        }
        // Never "kept" for a file that was removed or left in place.
        let aside = if kept == refused {
            format!("kept aside in {REFUSED_DIR}/ of its checkpoint directory")
        } else {
            format!(
                "{kept} of them kept aside in {REFUSED_DIR}/ of its checkpoint directory, the others not (above)"
            )
        };
        let why = match (refused, unusable) {
            (0, 0) if !self.served => {
                let message = format!(
                    "plugin {} starts with an empty state: its first start, no checkpoint taken yet",
                    self.name()
                );
                tracing::info!("{message}");
                self.emit(generation.number, "checkpoint_none", message);
                return;
            }
            (0, 0) => "it stopped before its first checkpoint was taken".to_owned(),
            (0, n) => format!("none of its {n} checkpoint(s) could be used (above)"),
            (r, _) if r >= MAX_OFFERED => format!(
                "it refused the {r} newest of its checkpoints ({aside}); older ones were not offered"
            ),
            (r, 0) => format!("it refused all {r} of its checkpoints ({aside})"),
            (r, n) => {
                format!("it refused {r} of its checkpoints ({aside}), and {n} could not be used")
            }
        };
        self.started_empty(generation, why);
    }

    /// The newest checkpoint on disk not in `tried`, naming (and adding to `tried`)
    /// the unusable ones passed over on the way.
    async fn next_on_disk(
        &mut self,
        generation: &Generation,
        tried: &mut HashSet<PathBuf>,
        unusable: &mut usize,
    ) -> Option<(Checkpoint, PathBuf)> {
        let name = self.name().to_owned();
        let limit = self.launcher.config.max_state_bytes;
        let loaded = self.checkpoints.load_except(limit, tried).await;
        self.report_notices(generation.number);
        if let Some(why) = loaded.refused {
            let message = format!("plugin {name}: cannot use its checkpoints: {why}");
            tracing::error!("{message}");
            self.emit(generation.number, "checkpoint_failed", message);
        }
        for (file, why) in loaded.skipped {
            let shown = file.display();
            let (kind, message) = match why {
                Unusable::Corrupt(why) => (
                    "checkpoint_corrupt",
                    format!("plugin {name}: checkpoint {shown} is corrupt, skipped: {why}"),
                ),
                Unusable::TooLarge { len } => (
                    "checkpoint_too_large",
                    format!(
                        "plugin {name}: checkpoint {shown} holds {len} bytes of state, more than max_state_bytes = {limit}; skipped (raise plugins.{name}.max_state_bytes to use it)"
                    ),
                ),
            };
            tracing::error!("{message}");
            self.emit(generation.number, kind, message);
            *unusable += 1;
            tried.insert(file);
        }
        let (checkpoint, file) = loaded.checkpoint?;
        tried.insert(file.clone());
        Some((checkpoint, file))
    }

    /// Offers `checkpoint` (from `source`) to the new process's `Restore`.
    async fn offer(
        &mut self,
        generation: &mut Generation,
        checkpoint: Checkpoint,
        source: &str,
    ) -> Offered {
        let name = self.name().to_owned();
        let len = checkpoint.state.len();
        let chunks = baton_proto::state::chunks(checkpoint.schema_version, checkpoint.state);
        let mut rpc = generation.rpc.clone();
        let status = match rpc.restore(tokio_stream::iter(chunks)).await {
            Ok(_) => {
                let message = format!(
                    "plugin {name} (generation {}) restored {len} bytes of state from the checkpoint in {source}",
                    generation.number,
                );
                tracing::info!("{message}");
                self.emit(generation.number, "checkpoint_restored", message);
                return Offered::Accepted;
            }
            Err(status) => status,
        };
        let why = format!(
            "{:?}: {}",
            status.code(),
            printable::quoted(status.message(), MAX_REASON_CHARS)
        );
        // A connection that drops mid-call comes back as Unknown (an h2 error) or
        // Internal (a broken pipe) as often as Unavailable: a process killed for its
        // memory or by a segfault while restoring said nothing about the checkpoint.
        // Only a status it answered while alive is a refusal; its death is a crash of
        // the start, handled as one, and the file stays where it is.
        let code = status.code();
        if matches!(
            code,
            tonic::Code::Unknown
                | tonic::Code::Internal
                | tonic::Code::Unavailable
                | tonic::Code::Cancelled
                | tonic::Code::DeadlineExceeded
        ) && let Ok(exit) = tokio::time::timeout(EXIT_SHOWS_WITHIN, generation.wait()).await
        {
            let message = format!(
                "plugin {name} (generation {}) died while restoring the checkpoint in {source} ({exit}; Restore ended with {why}): the checkpoint is not set aside, and is offered again at its next start",
                generation.number,
            );
            tracing::error!("{message}");
            self.emit(generation.number, "checkpoint_restore_died", message);
            return Offered::Died;
        }
        // No answer from a process still alive (its connection broke) says nothing
        // about the checkpoint either, and it is not set aside.
        if matches!(
            code,
            tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::DeadlineExceeded
        ) {
            return Offered::Failed(why);
        }
        let message = format!(
            "plugin {name} (generation {}) refused the checkpoint {source} ({why})",
            generation.number,
        );
        tracing::error!("{message}");
        self.emit(generation.number, "checkpoint_refused", message);
        Offered::Refused(why)
    }

    /// Moves a refused checkpoint file aside, saying where (or that it was removed, or
    /// why it could not be moved); whether it is kept aside.
    async fn keep_aside(&mut self, generation: &Generation, file: &std::path::Path) -> bool {
        let name = self.name().to_owned();
        let set = self.checkpoints.set_aside(file).await;
        let kept = matches!(set, Ok(SetAside::Kept(_)));
        let (kind, message) = match set {
            Ok(SetAside::Kept(kept)) => (
                "checkpoint_set_aside",
                format!(
                    "plugin {name}: the refused checkpoint is kept aside as {} (never loaded or pruned; move it back to offer it again); the next older one is offered",
                    kept.display()
                ),
            ),
            Ok(SetAside::Removed(removed)) => (
                "checkpoint_refused_removed",
                format!(
                    "plugin {name}: {REFUSED_DIR}/ already keeps {KEEP_REFUSED}: {} removed, not kept (the first ones refused are kept, they hold the state from before); the next older one is offered",
                    removed.display()
                ),
            ),
            Err(why) => (
                "checkpoint_set_aside",
                format!(
                    "plugin {name}: the refused checkpoint {} cannot be kept aside ({why}); the next older one is offered",
                    file.display()
                ),
            ),
        };
        tracing::warn!("{message}");
        self.emit(generation.number, kind, message);
        self.report_notices(generation.number);
        kept
    }

    fn started_empty(&mut self, generation: &Generation, why: String) {
        let message = format!("plugin {} starts with an EMPTY state: {why}", self.name());
        tracing::warn!("{message}");
        self.emit(generation.number, "checkpoint_none", message);
    }
}

/// Checkpoints offered to a new process at one start, newest first: each is read whole
/// (up to `max_state_bytes`) and streamed to it, so a plugin refusing each costs a
/// bounded start. The pruner keeps 3, so this only cuts short a directory that has more.
const MAX_OFFERED: usize = 8;

/// How long a `Restore` that ended with a broken connection waits for the process's
/// exit to show before taking the status as the plugin's answer. Its exit is seen at
/// once on a dead process (a kill, an abort); the wait costs a live plugin answering
/// `Unknown` or `Internal` this much per refusal, at most [`MAX_OFFERED`] times a start.
const EXIT_SHOWS_WITHIN: Duration = Duration::from_secs(1);

/// How much of a plugin's refusal is repeated in the host's log and events.
const MAX_REASON_CHARS: usize = 512;

/// How an offer of a checkpoint to `Restore` went.
enum Offered {
    Accepted,
    /// The plugin answered with a refusal (its words).
    Refused(String),
    /// No answer from a process still alive: its connection broke (what was seen).
    Failed(String),
    /// The process died in `Restore` (said and published): a crash, not a refusal.
    Died,
}

fn show(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}
