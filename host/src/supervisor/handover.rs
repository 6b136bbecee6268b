//! Handing a plugin over to a fresh process, in the steps DESIGN.md numbers: start n+1
//! beside n, hold calls, let n's calls finish and stream its state into n+1, switch, and
//! retire n; or roll back to n, which never stopped being able to serve. A plugin with
//! incremental snapshots has most of its state copied before the hold (pre-copy).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::precopy::{PreCopy, precopy};
use super::transfer::transfer;
use super::{PluginState, Supervisor};
use crate::calls::route::{Live, Route};
use crate::launch::Generation;
use crate::observe::events::Event;
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

        let (name, limit) = (
            self.launcher.name.clone(),
            self.launcher.config.max_state_bytes,
        );

        // 1b. Pre-copy: while n serves, copy its state into n+1, then what changed since.
        let incremental = self.launcher.config.pre_copy
            && current.describe.incremental_snapshots
            && next.describe.incremental_snapshots
            && current.describe.state_schema_version == next.describe.state_schema_version;
        let mut copied: Option<PreCopy> = None;
        if incremental {
            let (old_rpc, new_rpc) = (current.rpc.clone(), next.rpc.clone());
            // Half the handover's time at most, so the final delta has the rest.
            let budget = timeout / 2;
            let work = precopy(&name, limit, (old, old_rpc), (number, new_rpc), budget);
            let late = format!("the pre-copy outran the handover timeout of {timeout:?}");
            match self
                .watched(
                    current,
                    next,
                    &fingerprint,
                    "pre-copy",
                    deadline,
                    late,
                    work,
                )
                .await
            {
                Ok((done, back)) => {
                    copied = Some(done);
                    next = back;
                }
                Err(ended) => return ended,
            }
        }
        let since = copied
            .as_ref()
            .map_or_else(Bytes::new, |c| c.cursor.clone());

        // 2. Hold new calls; 3. let n's calls finish, then move the state (or what of it
        // changed since the pre-copy).
        self.route.send_replace(Route::Held);
        let held_at = Instant::now();
        let (old_rpc, new_rpc) = (current.rpc.clone(), next.rpc.clone());
        let mut drain = Duration::ZERO;
        let stream_drain = self.launcher.config.stream_drain();
        let work = async {
            let why =
                format!("plugin {name} moved to generation {number} (a reload); reopen the stream");
            old_live.drained_ending_streams(stream_drain, &why).await;
            drain = held_at.elapsed();
            transfer(&name, limit, (old, old_rpc), (number, new_rpc), since).await
        };
        let late = format!(
            "the handover outran its timeout of {timeout:?} (calls in flight on generation {old} did not finish, or the state transfer was too slow)"
        );
        let (moved, next) = match self
            .watched(
                current,
                next,
                &fingerprint,
                "handover",
                deadline,
                late,
                work,
            )
            .await
        {
            Ok(done) => done,
            Err(ended) => return ended,
        };

        // 4. Switch: held calls go to n+1.
        let (schema, final_bytes) = (moved.schema, moved.bytes);
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
        let moved_how = match &copied {
            Some(c) => format!(
                "{}; then {final_bytes} bytes ({}) moved with calls held",
                c.describe(),
                if moved.delta {
                    "the final delta"
                } else {
                    "the whole state"
                }
            ),
            None => format!("{final_bytes} bytes of state moved with calls held"),
        };
        let message = format!(
            "plugin {} handed over from generation {old} to {number}: calls held {:.2} ms ({:.2} ms for calls in flight to finish), {moved_how} (schema {schema}), {:.1} ms in all",
            self.name(),
            hold.as_secs_f64() * 1e3,
            drain.as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e3
        );
        tracing::info!(generation = number, pid = current.pid, "{message}");
        let mut event = Event::new(self.name(), number, "handover_done", message);
        event.hold_us = hold.as_micros() as u64;
        event.duration_us = total.as_micros() as u64;
        event.drain_us = drain.as_micros() as u64;
        event.final_bytes = final_bytes;
        match copied {
            Some(c) => {
                event.state_bytes = c.rounds.iter().sum::<u64>() + final_bytes;
                event.precopy_bytes = c.rounds;
                event.precopy = c.outcome.into();
            }
            None => {
                event.state_bytes = final_bytes;
                event.precopy = "stop_and_copy".into();
            }
        }
        self.publish(event);
        Handover::Done(number)
    }

    /// Runs one phase of a handover, `work`, until `deadline`, watching both processes:
    /// n exiting is its crash (`OldDied`, n+1 killed); n+1 exiting, the work failing or
    /// running late (`late` says how) roll back to n. A failed `work` is given a moment
    /// for a process's exit to show, which says more than the broken call.
    #[allow(clippy::too_many_arguments)]
    async fn watched<T>(
        &mut self,
        current: &mut Generation,
        mut next: Generation,
        fingerprint: &Fingerprint,
        phase: &str,
        deadline: tokio::time::Instant,
        late: String,
        work: impl std::future::Future<Output = Result<T, String>>,
    ) -> Result<(T, Generation), Handover> {
        let number = next.number;
        let reason = tokio::select! {
            done = tokio::time::timeout_at(deadline, work) => match done {
                Ok(Ok(value)) => return Ok((value, next)),
                Ok(Err(reason)) => reason,
                Err(_) => return Err(self.rollback(Some(next), fingerprint.clone(), late).await),
            },
            status = current.wait() => {
                current.clean_up();
                next.kill().await;
                return Err(Handover::OldDied(status));
            }
            status = next.wait() => {
                next.clean_up();
                let reason = format!("generation {number} exited during the {phase}: {status}");
                return Err(self.rollback(Some(next), fingerprint.clone(), reason).await);
            }
        };
        tokio::select! {
            status = current.wait() => {
                current.clean_up();
                next.kill().await;
                Err(Handover::OldDied(status))
            }
            status = next.wait() => {
                next.clean_up();
                let reason = format!("generation {number} exited during the {phase}: {status} ({reason})");
                Err(self.rollback(Some(next), fingerprint.clone(), reason).await)
            }
            _ = tokio::time::sleep(Duration::from_millis(250)) => {
                Err(self.rollback(Some(next), fingerprint.clone(), reason).await)
            }
        }
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
