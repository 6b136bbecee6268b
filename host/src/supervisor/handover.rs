//! Handing a plugin over to a fresh process, in the steps DESIGN.md numbers: start n+1
//! beside n, hold calls, let n's calls finish and stream its state into n+1, switch, and
//! retire n; or roll back to n, which never stopped being able to serve.

use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_proto::plugin::{SnapshotRequest, StateChunk};
use baton_proto::state::{ChunkCheck, ReassemblyError};
use tokio::sync::mpsc;

use super::{PluginState, Supervisor};
use crate::checkpoint::snapshot_error;
use crate::events::Event;
use crate::launch::{Generation, PluginRpc};
use crate::route::{Live, Route};
use crate::watch::Fingerprint;

/// How a handover ended.
pub(super) enum Handover {
    /// The new generation serves.
    Done(u64),
    /// The old generation serves on; the reason says why.
    RolledBack(String),
    /// The old generation died during the handover.
    OldDied(String),
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
    /// Moves the plugin to a fresh process: start n+1 beside n, hold calls, let calls
    /// on n finish, stream n's state into n+1, switch, and retire n. Any failure before
    /// the switch kills n+1 and releases the held calls to n, whose state never changed.
    pub(super) async fn handover(
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
            s.clear_error();
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
            s.set_error(message.clone());
        });
        let generation = self.live.as_ref().map_or(0, |l| l.generation);
        self.emit(generation, "rollback", message);
        Handover::RolledBack(reason)
    }
}
