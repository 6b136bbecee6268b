//! What tsdb does when a trigger's plugin misbehaves beyond raising: a call that does
//! not return within the trigger's call timeout, and a process that baton found over its
//! memory limit and could not move to a fresh one. Either way the process is killed, so
//! baton starts it again, and the trigger's status and log say which it was.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tonic::Status;

use crate::triggers::{Engine, Trigger};

/// After baton reports a process over its memory limit, how long its move to a fresh
/// process may take before tsdb kills it: a handover waits for the calls in flight, and
/// a call that leaks without end never finishes.
const MOVE_GRACE: Duration = Duration::from_secs(3);

/// The target of each call's "starting/finished execution" lines: in
/// `system.processing_engine_logs`, and out of tsdb's own log unless `TSDB_LOG` asks
/// for it (two lines a call would bury everything else there).
pub const CALL_LOG: &str = "tsdb::engine_calls";

impl Trigger {
    /// `call`, failed with DEADLINE_EXCEEDED naming the trigger and `entry` when it
    /// outruns the trigger's call timeout; the process that held it is then killed, since
    /// a Python call cannot be interrupted and would hold its thread and memory for ever.
    /// Its start and end go to the trigger's log, as InfluxDB's engine writes them.
    pub(crate) async fn bounded<T>(
        &self,
        entry: &str,
        call: impl Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        let serving = self.plugin.status().pid;
        let name = &self.config.name;
        tracing::info!(target: CALL_LOG, trigger = %name, "starting execution of {entry}");
        let started = std::time::Instant::now();
        match tokio::time::timeout(self.call_timeout, call).await {
            Ok(Err(status)) if crashed(&status) => Err(self.crashed(entry, &status)),
            Ok(outcome) => {
                let took = started.elapsed();
                tracing::info!(target: CALL_LOG, trigger = %name, "finished execution of {entry} in {took:.2?}");
                outcome
            }
            Err(_) => Err(self.timed_out(entry, serving)),
        }
    }

    fn crashed(&self, entry: &str, status: &Status) -> Status {
        let name = &self.config.name;
        let message = format!(
            "trigger {name}: {entry} crashed: {}; baton starts it again",
            status.message()
        );
        tracing::error!(trigger = %name, "{message}");
        Status::unavailable(message)
    }

    fn timed_out(&self, entry: &str, serving: Option<u32>) -> Status {
        let name = &self.config.name;
        let timeout = self.call_timeout;
        // Only the process the call went to: a restart meanwhile serves with another.
        let killed = serving
            .filter(|pid| self.plugin.status().pid == Some(*pid))
            .filter(|pid| kill_process(*pid));
        let message = match killed {
            Some(pid) => format!(
                "trigger {name}: {entry} timed out: no answer within {timeout:?} (the call timeout); its process (pid {pid}) was killed and baton starts it again"
            ),
            None => format!(
                "trigger {name}: {entry} timed out: no answer within {timeout:?} (the call timeout)"
            ),
        };
        tracing::error!(trigger = %name, "{message}");
        Status::deadline_exceeded(message)
    }
}

/// baton's words for a process that died under a call.
fn crashed(status: &Status) -> bool {
    status.code() == tonic::Code::Unavailable && status.message().contains("exited during the call")
}

fn kill_process(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok()
}

/// Follows baton's `over_limit` events for the triggers' plugins: each is said in the
/// trigger's log, and a process still serving `MOVE_GRACE` later is killed.
pub fn watch_memory(engine: Arc<Engine>, host: &baton_host::Host) {
    let mut events = host.subscribe();
    tokio::spawn(async move {
        loop {
            let event = match events.recv().await {
                Ok(event) => event,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            if event.kind != "over_limit" {
                continue;
            }
            let Some(trigger) = engine.by_plugin(&event.plugin) else {
                continue;
            };
            let Some(pid) = trigger.plugin.status().pid else {
                continue;
            };
            let name = trigger.config.name.clone();
            let message = format!(
                "trigger {name}: its process (pid {pid}) is over its memory limit: {}; baton moves it to a fresh process",
                event.message
            );
            tracing::error!(trigger = %name, "{message}");
            trigger.update(|s| {
                s.last_error = Some(message);
                s.last_error_unix_ms = Some(crate::triggers::unix_ms(std::time::SystemTime::now()));
            });
            tokio::spawn(async move {
                tokio::time::sleep(MOVE_GRACE).await;
                if trigger.plugin.status().pid == Some(pid) && kill_process(pid) {
                    tracing::error!(
                        trigger = %name,
                        "trigger {name}: its process (pid {pid}) was still over its memory limit {MOVE_GRACE:?} later (a call that does not end); it was killed and baton starts it again"
                    );
                }
            });
        }
    });
}
