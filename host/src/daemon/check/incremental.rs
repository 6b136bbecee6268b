//! The check of incremental snapshots, for a plugin whose `Describe` declares them: its
//! snapshots end with a cursor, a snapshot since that cursor (after the `--call`s change
//! the state) restores on top of the whole one into a second instance, the two then
//! export the same state, and a delta replayed out of order is refused with DATA_LOSS.

use std::time::Duration;

use baton_proto::plugin::StateChunk;
use baton_proto::state::cursor_text;
use tonic::Code;

use super::instance::Instance;
use super::probes::{call, joined, restore, snapshot, snapshot_since};

fn cursor_of(chunks: &[StateChunk]) -> bytes::Bytes {
    chunks.last().map(|c| c.cursor.clone()).unwrap_or_default()
}

/// `a` serves and keeps its state; `b` is a second instance of the same plugin.
pub(super) async fn check(
    a: &Instance,
    b: &Instance,
    calls: &[(String, Vec<u8>)],
    timeout: Duration,
) -> Result<String, String> {
    let whole = snapshot(a, timeout).await?;
    let base = cursor_of(&whole);
    if base.is_empty() {
        return Err(
            "Describe declares incremental_snapshots, but the snapshot's last chunk carries no cursor"
                .into(),
        );
    }
    restore(b, whole, timeout).await.map_err(|s| {
        format!(
            "Restore of a whole snapshot failed ({:?}): {}",
            s.code(),
            s.message()
        )
    })?;
    for (method, payload) in calls {
        call(a, method, payload.clone(), timeout)
            .await
            .map_err(|s| {
                format!(
                    "{method} failed the second time ({:?}): {}",
                    s.code(),
                    s.message()
                )
            })?;
    }
    let delta = snapshot_since(a, base.clone(), timeout).await?;
    let first = delta.first().cloned().unwrap_or_default();
    if first.delta && first.base_cursor != base {
        return Err(format!(
            "a snapshot since cursor {} is a delta that says it follows {}",
            cursor_text(&base),
            cursor_text(&first.base_cursor)
        ));
    }
    let next = cursor_of(&delta);
    if next.is_empty() || next == base {
        return Err(format!(
            "a snapshot since a cursor must end with a new cursor; it ended with {}",
            cursor_text(&next)
        ));
    }
    let what = if first.delta {
        "a delta"
    } else {
        "a whole state"
    };
    restore(b, delta.clone(), timeout).await.map_err(|s| {
        format!(
            "the second instance refused {what} that follows the state it restored ({:?}): {}",
            s.code(),
            s.message()
        )
    })?;
    let (x, y) = (
        joined(&snapshot(a, timeout).await?),
        joined(&snapshot(b, timeout).await?),
    );
    if x != y {
        return Err(format!(
            "after the whole state and {what}, the second instance exports {} bytes where the first exports {}",
            y.len(),
            x.len()
        ));
    }
    if !first.delta {
        return Ok(format!(
            "the answer since a cursor was a whole state ({} bytes), which is allowed; no delta to check further",
            joined(&delta).len()
        ));
    }
    // The same delta again no longer follows what the second instance holds.
    match restore(b, delta.clone(), timeout).await {
        Err(s) if s.code() == Code::DataLoss => {}
        Err(s) => {
            return Err(format!(
                "a delta replayed out of order was refused with {:?} ({}), expected DATA_LOSS",
                s.code(),
                s.message()
            ));
        }
        Ok(_) => {
            return Err(
                "a delta replayed out of order was applied; it must be refused with DATA_LOSS"
                    .into(),
            );
        }
    }
    if joined(&snapshot(b, timeout).await?) != y {
        return Err("a refused delta changed the second instance's state".into());
    }
    Ok(format!(
        "whole state ({} bytes) then a delta ({} bytes) reproduced the state; a delta out of order refused with DATA_LOSS",
        x.len(),
        joined(&delta).len()
    ))
}
