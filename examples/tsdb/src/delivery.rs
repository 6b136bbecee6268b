//! Delivering one write trigger's batches to its plugin: in order, one call at a time,
//! numbered; the writes queued while a call runs go together in the next (as InfluxDB 3
//! hands a plugin a WAL flush's writes in one call), so a plugin slower than the writes
//! pays its per-call cost once for many. Through baton's channel a call waits out a
//! reload or a restart, so across reloads each batch reaches the plugin exactly once. A
//! crash can lose what the plugin had applied since its last checkpoint: after a failed
//! call, and whenever the plugin was restarted since the last batch, the database asks
//! the plugin where its state stands (`Position`) and sends every batch after that
//! again, from the batches it keeps (the last `KEPT`). The plugin ignores batches it
//! has; so each batch is applied once, and the ones sent twice are named in the
//! trigger's status.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tonic::Code;

use crate::api::PositionRequest;
use crate::config::ErrorPolicy;
use crate::table_batches::{Batch, RowsForm};
use crate::triggers::{Queued, Trigger};

/// Batches kept after delivery, to send again to a plugin that lost them.
const KEPT: usize = 4096;
/// Tries of one batch under the `retry` policy.
const ATTEMPTS: u32 = 4;
/// Replays named in the status.
const REPLAYS_SHOWN: usize = 16;
/// Rows one call may carry in the writes joined behind its first: enough that a call's
/// own cost (near a millisecond through the Python runner) is small beside its rows',
/// few enough to keep the call far from a message limit and a plugin's call timeout.
/// A single larger write still goes whole.
pub(crate) const JOINED_ROWS: usize = 16_384;
/// Bytes one call may carry in joined writes, as sent: half the 4 MiB that gRPC's
/// servers take by default (tonic's, a Go or Node.js plugin's), which a plugin may not
/// have raised; writes that passed alone must not fail together.
pub(crate) const JOINED_BYTES: usize = 2 << 20;

pub(crate) async fn deliver(trigger: Arc<Trigger>, mut batches: mpsc::Receiver<Queued>) {
    let mut kept: VecDeque<Batch> = VecDeque::new();
    let mut pending: VecDeque<Queued> = VecDeque::new();
    let mut restarts = trigger.plugin.status().restarts;
    // Where the plugin's state stands, as far as the database knows.
    let mut last_sent = 0;
    // The plugin process that said how it reads the rows (pickle, JSON): it gets them
    // so. Another (a reload, a restart) gets the messages until it says so too.
    let mut reads: Option<(u32, RowsForm)> = None;
    while let Some(next) = batches.recv().await {
        pending.push_back(next);
        // `done` goes when this batch's call has ended: the write waiting for it
        // (`run_async = false`) is then answered.
        while let Some(first) = pending.pop_front() {
            let plugin = trigger.plugin.status();
            // What waits behind it joins it, unless batches sent again come first.
            let (mut batch, accepted, mut done) = if pending.is_empty() {
                let form = form_for(reads, plugin.pid);
                join_queued(first, form, &mut batches, &mut pending)
            } else {
                first
            };
            if !trigger.enabled() {
                continue; // written while the trigger was off: not its business
            }
            // Restarted since the last batch: it may have come back from an older state.
            let now = plugin.restarts;
            if now != restarts {
                restarts = now;
                let current = (batch.clone(), accepted, std::mem::take(&mut done));
                match resend_lost(&trigger, &mut kept, &mut pending, current).await {
                    Ok(position) => {
                        last_sent = position;
                        continue;
                    }
                    Err(back) => done = back,
                }
            }
            batch.head.previous = last_sent;
            let mut attempt = 1;
            loop {
                let mut client = trigger.client();
                let sent = batch.sent_as(form_for(reads, plugin.pid));
                let call = client.on_write(sent);
                match trigger.bounded("process_writes", call).await {
                    Ok(answer) => {
                        let answer = answer.into_inner();
                        let form = RowsForm::of(&answer);
                        reads = plugin.pid.map(|pid| (pid, form));
                        trigger
                            .reads_pickle
                            .store(form == RowsForm::Pickle, Ordering::Relaxed);
                        trigger.answered(answer.message, accepted.elapsed(), batch.writes);
                        last_sent = batch.head.sequence;
                        kept.push_back(batch);
                        if kept.len() > KEPT {
                            kept.pop_front();
                        }
                        break;
                    }
                    Err(status) => {
                        // The process may be another after this: it says again.
                        reads = None;
                        if trigger.config.error_policy != ErrorPolicy::Retry || attempt == ATTEMPTS
                        {
                            trigger.failed(&status);
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                        attempt += 1;
                        restarts = trigger.plugin.status().restarts;
                        let current = (batch.clone(), accepted, std::mem::take(&mut done));
                        match resend_lost(&trigger, &mut kept, &mut pending, current).await {
                            Ok(position) => {
                                last_sent = position;
                                break;
                            }
                            Err(back) => done = back,
                        }
                    }
                }
            }
            drop(done);
        }
    }
}

/// How process `pid` reads the rows: as `reads` says if it is the process that said so,
/// else as messages.
fn form_for(reads: Option<(u32, RowsForm)>, pid: Option<u32>) -> RowsForm {
    match (reads, pid) {
        (Some((said, form)), Some(now)) if said == now => form,
        _ => RowsForm::Messages,
    }
}

/// `first` and the batches queued behind it, as one, up to `JOINED_ROWS` rows and
/// `JOINED_BYTES` sent as `form`: the one that would pass them waits in `pending`.
fn join_queued(
    mut joined: Queued,
    form: RowsForm,
    batches: &mut mpsc::Receiver<Queued>,
    pending: &mut VecDeque<Queued>,
) -> Queued {
    let (mut rows, mut bytes) = (joined.0.rows(), 0);
    while rows < JOINED_ROWS {
        let Ok(next) = batches.try_recv() else {
            break;
        };
        if bytes == 0 {
            // Measured only once there is something to join it with.
            bytes = joined.0.sent_len(form);
        }
        let (more_rows, more_bytes) = (next.0.rows(), next.0.sent_len(form));
        if rows + more_rows > JOINED_ROWS || bytes + more_bytes > JOINED_BYTES {
            pending.push_back(next);
            break;
        }
        rows += more_rows;
        bytes += more_bytes;
        joined.0.join(next.0);
        joined.2.extend(next.2);
    }
    joined
}

/// Asks the plugin where its state stands and, if that is behind what the database
/// sent it, puts the batches it lost that are still kept (and `current`) back in front
/// of `pending`, and returns the position to go on from. When nothing was lost, or the
/// plugin keeps no position (or cannot say), gives back `current`'s waiter.
async fn resend_lost(
    trigger: &Trigger,
    kept: &mut VecDeque<Batch>,
    pending: &mut VecDeque<Queued>,
    current: Queued,
) -> Result<u64, Vec<tokio::sync::oneshot::Sender<()>>> {
    let mut client = trigger.client();
    let call = client.position(PositionRequest {
        trigger: trigger.config.name.clone(),
    });
    let asked = trigger.bounded("its position", call).await;
    let position = match asked {
        Ok(p) => p.into_inner().sequence,
        Err(s) if s.code() == Code::Unimplemented => return Err(current.2),
        Err(s) => {
            tracing::warn!(trigger = %trigger.config.name, "cannot learn the plugin's position: {}", s.message());
            return Err(current.2);
        }
    };
    let lost: Vec<Batch> = kept
        .iter()
        .filter(|b| b.head.sequence > position)
        .cloned()
        .collect();
    // A batch may carry several writes: it resumes at its first.
    let resumes_at = lost
        .first()
        .map_or(current.0.first_sequence(), Batch::first_sequence);
    if lost.is_empty() && position + 1 >= resumes_at {
        return Err(current.2);
    }
    let mut line = match (lost.first(), lost.last()) {
        (Some(first), Some(last)) => format!(
            "batches {}–{} sent again: the plugin's state stood at batch {position} (it was restarted)",
            first.first_sequence(),
            last.head.sequence
        ),
        _ => format!("the plugin's state stood at batch {position} (it was restarted)"),
    };
    if position + 1 < resumes_at {
        line.push_str(&format!(
            "; batches {}–{} are no longer kept and stay lost to it",
            position + 1,
            resumes_at - 1
        ));
    }
    tracing::warn!(trigger = %trigger.config.name, "{line}");
    trigger.update(|s| {
        s.replays.push(line);
        if s.replays.len() > REPLAYS_SHOWN {
            s.replays.remove(0);
        }
    });
    kept.retain(|b| b.head.sequence <= position);
    pending.push_front(current);
    let now = Instant::now();
    for batch in lost.into_iter().rev() {
        pending.push_front((batch, now, Vec::new()));
    }
    // Past a gap the database cannot fill, the plugin goes on from the next batch.
    Ok(position.max(resumes_at.saturating_sub(1)))
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::api::{Point, Value, WriteBatch, value::Kind};
    use crate::table_batches::shared;

    fn queued(sequence: u64, rows: usize, text: usize) -> Queued {
        let points = (0..rows)
            .map(|n| Point {
                fields: [(
                    "note".to_owned(),
                    Value {
                        kind: Some(Kind::Text("x".repeat(text))),
                    },
                )]
                .into(),
                time_ns: n as i64,
                ..Point::default()
            })
            .collect();
        let head = WriteBatch {
            sequence,
            ..WriteBatch::default()
        };
        let batch = Batch::new(head, shared([("t".to_owned(), points)].into()));
        (batch, Instant::now(), Vec::new())
    }

    fn join_all(first: Queued, rest: Vec<Queued>, form: RowsForm) -> (Queued, VecDeque<Queued>) {
        let (tx, mut rx) = mpsc::channel(16);
        for q in rest {
            tx.try_send(q).expect("room");
        }
        let mut pending = VecDeque::new();
        let joined = join_queued(first, form, &mut rx, &mut pending);
        (joined, pending)
    }

    #[test]
    fn what_is_queued_joins_up_to_the_rows_bound_and_the_next_waits() {
        let (joined, pending) = join_all(
            queued(1, 8_000, 1),
            vec![queued(2, 8_000, 1), queued(3, 8_000, 1), queued(4, 1, 1)],
            RowsForm::Pickle,
        );
        assert_eq!((joined.0.writes, joined.0.head.sequence), (2, 2));
        let waiting: Vec<u64> = pending.iter().map(|q| q.0.head.sequence).collect();
        assert_eq!(
            waiting,
            [3],
            "the one past the bound waits, the rest stay queued"
        );
    }

    #[test]
    fn writes_that_pass_alone_are_not_joined_past_the_bytes_bound() {
        // Three writes of about 0.9 MiB each: two go together, the third waits.
        for form in [RowsForm::Messages, RowsForm::Json, RowsForm::Pickle] {
            let (joined, pending) = join_all(
                queued(1, 9, 100_000),
                vec![queued(2, 9, 100_000), queued(3, 9, 100_000)],
                form,
            );
            assert_eq!(joined.0.writes, 2, "{form:?}");
            assert_eq!(pending.len(), 1, "{form:?}");
            assert!(
                joined.0.sent_as(form).encoded_len() <= JOINED_BYTES + 1024,
                "{form:?}"
            );
        }
        // A single write past the bound still goes, whole and alone.
        let (joined, pending) = join_all(
            queued(1, 30, 100_000),
            vec![queued(2, 1, 1)],
            RowsForm::Messages,
        );
        assert_eq!((joined.0.writes, pending.len()), (1, 1));
    }
}
