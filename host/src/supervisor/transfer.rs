//! Moving one snapshot from generation n into n+1: n's `Snapshot` piped into n+1's
//! `Restore`, each chunk checked on the way, a few chunks held at a time.

use baton_proto::plugin::{SnapshotRequest, StateChunk};
use baton_proto::state::{ChunkCheck, ReassemblyError};
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::checkpoint::snapshot_error;
use crate::launch::PluginRpc;

/// What one transfer moved.
pub(super) struct Moved {
    /// The snapshot's schema version.
    pub schema: u32,
    /// Bytes of state (or delta) moved.
    pub bytes: u64,
    /// True if n answered with a delta.
    pub delta: bool,
    /// The cursor n's snapshot is consistent as of; empty without incremental snapshots.
    pub cursor: Bytes,
}

/// Streams generation `from`'s `Snapshot` (the changes since `since`, or the whole
/// state when it is empty) into `to`'s `Restore`. More than `limit` bytes is refused,
/// naming `plugin`'s `max_state_bytes`.
pub(super) async fn transfer(
    plugin: &str,
    limit: u64,
    from: (u64, PluginRpc),
    to: (u64, PluginRpc),
    since: Bytes,
) -> Result<Moved, String> {
    let (old, mut old_rpc) = from;
    let (new, mut new_rpc) = to;
    let asked_delta = !since.is_empty();
    let snapshot = old_rpc
        .snapshot(SnapshotRequest { since })
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
                    if chunk.seq == 0 && chunk.delta && !asked_delta {
                        return Err(PumpError::Snapshot(format!(
                            "generation {old} answered a request for its whole state with a delta"
                        )));
                    }
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
        let (schema, bytes) = check.finish().map_err(|e| {
            PumpError::Snapshot(format!(
                "the snapshot of generation {old} is incomplete: {e}"
            ))
        })?;
        let marks = check.marks();
        Ok(Moved {
            schema,
            bytes,
            delta: marks.delta,
            cursor: marks.cursor.clone(),
        })
    };
    let restore = new_rpc.restore(tokio_stream::wrappers::ReceiverStream::new(rx));
    let (pumped, restored) = tokio::join!(pump, restore);
    match (pumped, restored) {
        // A bad snapshot also fails the Restore (its stream ends early); the snapshot
        // is the cause, and blaming n+1 would send its author looking in the wrong place.
        (Err(PumpError::Snapshot(e)), _) => Err(e),
        (_, Err(s)) => Err(format!(
            "generation {new} refused the {} ({:?}): {}",
            if asked_delta { "delta" } else { "state" },
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
