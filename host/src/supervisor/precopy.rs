//! Copying a plugin's state while its old generation keeps serving (pre-copy), for
//! plugins with incremental snapshots: a whole snapshot first, then deltas while they
//! keep shrinking, so that the handover holds calls only for the last small delta.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::transfer::transfer;
use crate::launch::PluginRpc;

/// Pre-copy rounds at most, the whole snapshot included.
const MAX_ROUNDS: usize = 8;
/// A delta this small is the last one moved while serving: moving what follows it with
/// calls held costs about as little as another round would.
const SMALL_DELTA_BYTES: u64 = 64 << 10;
/// A delta round this short likewise: the next one would not be much shorter.
const SHORT_ROUND: Duration = Duration::from_millis(2);

/// How a pre-copy ended; its cursor is where the final delta starts.
pub(super) struct PreCopy {
    /// Bytes moved in each round: the whole state, then the deltas.
    pub rounds: Vec<u64>,
    /// The cursor of the last round; empty if the plugin gave none.
    pub cursor: Bytes,
    /// Why it stopped, as a short stable word (the `precopy` of `handover_done`).
    pub outcome: &'static str,
}

impl PreCopy {
    /// The rounds and why they stopped, in words, for the handover's message.
    pub fn describe(&self) -> String {
        let bytes: Vec<String> = self.rounds.iter().map(u64::to_string).collect();
        let why = match self.outcome {
            "converged" => "the deltas shrank to a small one",
            "not_shrinking" => {
                "a delta was not clearly smaller than the one before (writes outpaced the copy), so the rest moved with calls held"
            }
            "round_limit" => "it reached its round limit",
            "time_limit" => "it used its share of handover_timeout_ms",
            "no_cursor" => {
                "the plugin's snapshot carried no cursor, so the whole state moved again with calls held"
            }
            other => other,
        };
        format!(
            "{} pre-copy round{} while serving ({} bytes), stopped because {why}",
            self.rounds.len(),
            if self.rounds.len() == 1 { "" } else { "s" },
            bytes.join(" + ")
        )
    }
}

/// Copies `from`'s state into `to` while `from` serves, in rounds, until a delta is
/// small, stops shrinking, or the rounds or `budget` run out. Any failed round fails
/// the whole (the handover then rolls back).
pub(super) async fn precopy(
    plugin: &str,
    limit: u64,
    from: (u64, PluginRpc),
    to: (u64, PluginRpc),
    budget: Duration,
) -> Result<PreCopy, String> {
    let started = Instant::now();
    let mut rounds: Vec<u64> = Vec::new();
    let mut since = Bytes::new();
    loop {
        let round = Instant::now();
        let moved = transfer(plugin, limit, from.clone(), to.clone(), since)
            .await
            .map_err(|e| {
                format!(
                    "{e} (in pre-copy round {}, while generation {} served)",
                    rounds.len() + 1,
                    from.0
                )
            })?;
        rounds.push(moved.bytes);
        since = moved.cursor;
        let done = |outcome| PreCopy {
            rounds: rounds.clone(),
            cursor: since.clone(),
            outcome,
        };
        if since.is_empty() {
            return Ok(done("no_cursor"));
        }
        let n = rounds.len();
        let previous = (n > 1).then(|| rounds[n - 2]);
        if moved.bytes <= SMALL_DELTA_BYTES
            || (previous.is_some() && round.elapsed() <= SHORT_ROUND)
        {
            return Ok(done("converged"));
        }
        if previous.is_some_and(|p| moved.bytes.saturating_mul(2) > p) {
            return Ok(done("not_shrinking"));
        }
        if n >= MAX_ROUNDS {
            return Ok(done("round_limit"));
        }
        if started.elapsed() >= budget {
            return Ok(done("time_limit"));
        }
    }
}
