//! Splitting a state into `StateChunk`s and putting it back together, with the checks
//! the contract asks for: one schema version, chunks in order, a final chunk, a checksum.

use crate::plugin::StateChunk;
use bytes::Bytes;

/// Size of each chunk's data. Small enough that the old process's `Snapshot` and the
/// new one's `Restore` overlap while the host pipes one into the other (a 1 MiB state
/// crosses in 16 pieces; with 1 MiB chunks the two ran one after the other and the
/// hold window was ~1.6x longer), big enough that per-message costs stay small.
pub const CHUNK_SIZE: usize = 64 << 10;

/// Splits `state` into chunks of at most [`CHUNK_SIZE`] bytes, made as they are taken:
/// the first carries the total length, the last the CRC-32.
pub fn chunks(schema_version: u32, state: Bytes) -> Chunks {
    Chunks {
        schema_version,
        count: state.len().div_ceil(CHUNK_SIZE).max(1) as u64,
        state,
        seq: 0,
        hasher: crc32fast::Hasher::new(),
        marks: Marks::default(),
    }
}

/// The longest cursor a plugin may send: cursors are opaque, but the host keeps them
/// and sends them back, so a plugin does not get to make them large.
pub const MAX_CURSOR_BYTES: usize = 256;

/// A cursor as people read it in a message: its bytes in hex, or "(none)".
pub fn cursor_text(cursor: &[u8]) -> String {
    if cursor.is_empty() {
        return "(none)".into();
    }
    cursor.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a snapshot says of itself beyond its data, for incremental snapshots: whether it
/// is a delta, the cursor it follows, and the cursor it is consistent as of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marks {
    /// A delta (the changes since `base_cursor`), not a whole state.
    pub delta: bool,
    /// For a delta: the cursor it follows.
    pub base_cursor: Bytes,
    /// The cursor this snapshot is consistent as of; empty from a plugin without
    /// incremental snapshots.
    pub cursor: Bytes,
}

impl Chunks {
    /// The same chunks, marked: `delta` and `base_cursor` on the first, `cursor` on the last.
    pub fn marked(mut self, marks: Marks) -> Self {
        self.marks = marks;
        self
    }
}

/// The chunks of one state. The checksum is computed chunk by chunk as they are taken,
/// so the first chunk leaves at once instead of after a pass over the whole state
/// (a 1 GiB state takes ~0.1 s to hash; done up front, nothing else moved meanwhile).
/// The data is shared with the state, never copied.
#[derive(Debug)]
pub struct Chunks {
    schema_version: u32,
    state: Bytes,
    seq: u64,
    count: u64,
    hasher: crc32fast::Hasher,
    marks: Marks,
}

impl Iterator for Chunks {
    type Item = StateChunk;

    fn next(&mut self) -> Option<StateChunk> {
        if self.seq == self.count {
            return None;
        }
        let start = self.seq as usize * CHUNK_SIZE;
        let end = (start + CHUNK_SIZE).min(self.state.len());
        let data = self.state.slice(start..end);
        self.hasher.update(&data);
        let first = self.seq == 0;
        let last = self.seq + 1 == self.count;
        let chunk = StateChunk {
            schema_version: self.schema_version,
            seq: self.seq,
            data,
            last,
            checksum: if last {
                self.hasher.clone().finalize()
            } else {
                0
            },
            total_bytes: if first { self.state.len() as u64 } else { 0 },
            delta: first && self.marks.delta,
            base_cursor: if first {
                self.marks.base_cursor.clone()
            } else {
                Bytes::new()
            },
            cursor: if last {
                self.marks.cursor.clone()
            } else {
                Bytes::new()
            },
        };
        self.seq += 1;
        Some(chunk)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.count - self.seq) as usize;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Chunks {}

/// Why a stream of chunks does not make a state.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReassemblyError {
    /// A chunk came with a different `seq` than the next expected one.
    #[error("state chunk out of order: expected seq {expected}, got {got}")]
    OutOfOrder { expected: u64, got: u64 },
    /// A chunk's schema version differs from the first chunk's.
    #[error("state chunk {seq} has schema version {got}, but the snapshot started with {expected}")]
    SchemaChanged { seq: u64, expected: u32, got: u32 },
    /// A chunk came after the one marked last.
    #[error("state chunk {seq} arrived after the last chunk")]
    AfterLast { seq: u64 },
    /// The stream ended without a chunk marked last.
    #[error("state stream ended after {chunks} chunks without a last chunk (truncated)")]
    Truncated { chunks: u64 },
    /// The CRC-32 of the data does not match the last chunk's checksum.
    #[error(
        "state checksum mismatch: the last chunk says {expected:08x}, the data hashes to {got:08x}"
    )]
    Checksum { expected: u32, got: u32 },
    /// The state is larger than the receiver accepts: `got` bytes (announced, or
    /// arrived so far) against a limit of `limit`.
    #[error("a state of at least {got} bytes exceeds the limit of {limit} bytes")]
    TooLarge { limit: usize, got: u64 },
    /// The chunks' data does not add up to the length the first chunk announced.
    #[error(
        "state length mismatch: the first chunk announced {announced} bytes, the chunks carry {got}"
    )]
    Length { announced: u64, got: u64 },
    /// A cursor longer than [`MAX_CURSOR_BYTES`].
    #[error("state chunk {seq} carries a cursor of {len} bytes; the limit is {MAX_CURSOR_BYTES}")]
    CursorTooLong { seq: u64, len: usize },
}

/// Checks a stream of chunks as it passes, without keeping their data: what the host
/// does while it pipes a `Snapshot` into a `Restore`.
#[derive(Debug)]
pub struct ChunkCheck {
    schema_version: Option<u32>,
    next_seq: u64,
    bytes: u64,
    hasher: crc32fast::Hasher,
    done: bool,
    limit: u64,
    announced: Option<u64>,
    marks: Marks,
}

impl ChunkCheck {
    /// A check accepting at most `limit` bytes of state.
    pub fn new(limit: u64) -> Self {
        Self {
            schema_version: None,
            next_seq: 0,
            bytes: 0,
            hasher: crc32fast::Hasher::new(),
            done: false,
            limit,
            announced: None,
            marks: Marks::default(),
        }
    }

    /// The snapshot's marks as read so far: `delta` and `base_cursor` from the first
    /// chunk, `cursor` from the last (complete once [`ChunkCheck::finish`] succeeds).
    pub fn marks(&self) -> &Marks {
        &self.marks
    }

    /// The state's length as the first chunk announced it, once that chunk has passed
    /// (`None` if the sender did not say). Never more than the limit.
    pub fn announced(&self) -> Option<u64> {
        self.announced
    }

    /// Checks the next chunk.
    pub fn push(&mut self, chunk: &StateChunk) -> Result<(), ReassemblyError> {
        if self.done {
            return Err(ReassemblyError::AfterLast { seq: chunk.seq });
        }
        if chunk.seq != self.next_seq {
            return Err(ReassemblyError::OutOfOrder {
                expected: self.next_seq,
                got: chunk.seq,
            });
        }
        match self.schema_version {
            None => self.schema_version = Some(chunk.schema_version),
            Some(v) if v != chunk.schema_version => {
                return Err(ReassemblyError::SchemaChanged {
                    seq: chunk.seq,
                    expected: v,
                    got: chunk.schema_version,
                });
            }
            Some(_) => {}
        }
        for cursor in [&chunk.base_cursor, &chunk.cursor] {
            if cursor.len() > MAX_CURSOR_BYTES {
                return Err(ReassemblyError::CursorTooLong {
                    seq: chunk.seq,
                    len: cursor.len(),
                });
            }
        }
        if chunk.seq == 0 {
            self.marks.delta = chunk.delta;
            self.marks.base_cursor = chunk.base_cursor.clone();
        }
        if chunk.seq == 0 && chunk.total_bytes != 0 {
            if chunk.total_bytes > self.limit {
                return Err(ReassemblyError::TooLarge {
                    limit: self.limit as usize,
                    got: chunk.total_bytes,
                });
            }
            self.announced = Some(chunk.total_bytes);
        }
        self.bytes += chunk.data.len() as u64;
        if self.bytes > self.limit {
            return Err(ReassemblyError::TooLarge {
                limit: self.limit as usize,
                got: self.bytes,
            });
        }
        if let Some(announced) = self.announced
            && (self.bytes > announced || (chunk.last && self.bytes != announced))
        {
            return Err(ReassemblyError::Length {
                announced,
                got: self.bytes,
            });
        }
        self.hasher.update(&chunk.data);
        self.next_seq += 1;
        if chunk.last {
            self.done = true;
            self.marks.cursor = chunk.cursor.clone();
            let got = self.hasher.clone().finalize();
            if got != chunk.checksum {
                return Err(ReassemblyError::Checksum {
                    expected: chunk.checksum,
                    got,
                });
            }
        }
        Ok(())
    }

    /// The schema version and byte count, once the last chunk has passed.
    pub fn finish(&self) -> Result<(u32, u64), ReassemblyError> {
        if !self.done {
            return Err(ReassemblyError::Truncated {
                chunks: self.next_seq,
            });
        }
        Ok((self.schema_version.unwrap_or(0), self.bytes))
    }
}

/// Collects chunks, checking each as it comes: what a plugin does in `Restore`.
#[derive(Debug)]
pub struct Reassembly {
    check: ChunkCheck,
    data: Vec<u8>,
}

impl Reassembly {
    /// An empty reassembly accepting at most `limit` bytes of state.
    pub fn new(limit: usize) -> Self {
        Self {
            check: ChunkCheck::new(limit as u64),
            data: Vec::new(),
        }
    }

    /// Takes the next chunk.
    pub fn push(&mut self, chunk: StateChunk) -> Result<(), ReassemblyError> {
        self.check.push(&chunk)?;
        if chunk.seq == 0
            && let Some(total) = self.check.announced()
        {
            reserve_state(&mut self.data, total as usize);
        }
        self.data.extend_from_slice(&chunk.data);
        Ok(())
    }

    /// The schema version and the whole state, once the last chunk has arrived.
    pub fn finish(self) -> Result<(u32, Vec<u8>), ReassemblyError> {
        let (schema, _) = self.check.finish()?;
        Ok((schema, self.data))
    }

    /// The schema version, the state and its marks, once the last chunk has arrived.
    pub fn finish_marked(self) -> Result<(u32, Vec<u8>, Marks), ReassemblyError> {
        let (schema, _) = self.check.finish()?;
        Ok((schema, self.data, self.check.marks))
    }
}

/// Room for a state of `total` bytes in one allocation: growing by doubling copied a
/// 1 GiB state about once more in all and faulted in twice the memory. (Asking for
/// huge pages or pre-faulting the buffer were tried too: both made a 1 GiB handover
/// slower here, by direct compaction stalls and by faulting serially.)
///
/// `total` comes from the sender, so an allocation it cannot have is not an abort: the
/// buffer then grows as the data really arrives (and the chunk check stops a sender
/// whose data outruns what it announced).
fn reserve_state(data: &mut Vec<u8>, total: usize) {
    let _ = data.try_reserve_exact(total);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reassemble(chunks: Vec<StateChunk>) -> Result<(u32, Vec<u8>), ReassemblyError> {
        let mut r = Reassembly::new(usize::MAX);
        for c in chunks {
            r.push(c)?;
        }
        r.finish()
    }

    fn split(schema: u32, state: Bytes) -> Vec<StateChunk> {
        chunks(schema, state).collect()
    }

    #[test]
    fn round_trips_empty_small_and_multi_chunk_states() {
        for len in [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE * 2 + 17] {
            let state: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let cs = split(7, Bytes::from(state.clone()));
            assert_eq!(cs.len(), len.div_ceil(CHUNK_SIZE).max(1));
            assert_eq!(reassemble(cs), Ok((7, state)));
        }
    }

    #[test]
    fn refuses_reordered_truncated_and_corrupted_streams() {
        let state = Bytes::from(vec![5u8; CHUNK_SIZE * 3]);
        let mut cs = split(1, state.clone());
        cs.swap(0, 1);
        assert_eq!(
            reassemble(cs),
            Err(ReassemblyError::OutOfOrder {
                expected: 0,
                got: 1
            })
        );

        let mut cs = split(1, state.clone());
        cs.pop();
        assert_eq!(
            reassemble(cs),
            Err(ReassemblyError::Truncated { chunks: 2 })
        );

        let mut cs = split(1, state.clone());
        let mut corrupted = cs[1].data.to_vec();
        corrupted[3] ^= 1;
        cs[1].data = Bytes::from(corrupted);
        assert!(matches!(
            reassemble(cs),
            Err(ReassemblyError::Checksum { .. })
        ));

        let mut cs = split(1, state);
        cs[2].schema_version = 2;
        assert!(matches!(
            reassemble(cs),
            Err(ReassemblyError::SchemaChanged { .. })
        ));
    }

    #[test]
    fn the_announced_length_is_kept_to() {
        let state = Bytes::from(vec![3u8; CHUNK_SIZE * 2 + 5]);
        let cs = split(1, state.clone());
        assert_eq!(cs[0].total_bytes, state.len() as u64);
        assert!(cs[1..].iter().all(|c| c.total_bytes == 0));

        // A sender that announces less than it sends, or more than it sends.
        for announced in [CHUNK_SIZE as u64, state.len() as u64 + 1] {
            let mut cs = split(1, state.clone());
            cs[0].total_bytes = announced;
            assert!(matches!(
                reassemble(cs),
                Err(ReassemblyError::Length { announced: a, .. }) if a == announced
            ));
        }

        // An announcement over the limit is refused on the first chunk.
        let mut r = Reassembly::new(CHUNK_SIZE);
        assert_eq!(
            r.push(split(1, state.clone()).remove(0)),
            Err(ReassemblyError::TooLarge {
                limit: CHUNK_SIZE,
                got: state.len() as u64
            })
        );

        // Senders that do not announce (0) are still accepted.
        let mut cs = split(1, state.clone());
        cs[0].total_bytes = 0;
        assert_eq!(reassemble(cs), Ok((1, state.to_vec())));
    }

    #[test]
    fn an_impossible_announcement_is_no_abort() {
        let mut data = Vec::new();
        reserve_state(&mut data, usize::MAX);
        assert_eq!(data.capacity(), 0);
        let mut check = ChunkCheck::new(u64::MAX);
        let mut chunk = split(1, Bytes::from_static(b"abc")).remove(0);
        chunk.total_bytes = u64::MAX;
        // The checker accepts the announcement (its limit is u64::MAX) and then catches
        // the data falling short of it.
        assert!(matches!(
            check.push(&chunk),
            Err(ReassemblyError::Length { .. })
        ));
    }

    #[test]
    fn marks_ride_on_the_first_and_last_chunks_and_long_cursors_are_refused() {
        let marks = Marks {
            delta: true,
            base_cursor: Bytes::from_static(b"base"),
            cursor: Bytes::from_static(b"next"),
        };
        let cs: Vec<_> = chunks(1, Bytes::from(vec![1u8; CHUNK_SIZE * 2 + 1]))
            .marked(marks.clone())
            .collect();
        assert!(cs[0].delta && cs[0].base_cursor == marks.base_cursor && cs[0].cursor.is_empty());
        assert!(!cs[1].delta && cs[1].base_cursor.is_empty() && cs[1].cursor.is_empty());
        assert!(!cs[2].delta && cs[2].cursor == marks.cursor);
        let mut r = Reassembly::new(usize::MAX);
        for c in cs.clone() {
            r.push(c).expect("a good chunk");
        }
        assert_eq!(r.finish_marked().map(|(_, _, m)| m), Ok(marks));

        let mut long = cs;
        long[2].cursor = Bytes::from(vec![0u8; MAX_CURSOR_BYTES + 1]);
        let mut check = ChunkCheck::new(u64::MAX);
        check.push(&long[0]).expect("first");
        check.push(&long[1]).expect("second");
        assert_eq!(
            check.push(&long[2]),
            Err(ReassemblyError::CursorTooLong {
                seq: 2,
                len: MAX_CURSOR_BYTES + 1
            })
        );
    }

    #[test]
    fn enforces_the_size_limit() {
        let mut r = Reassembly::new(10);
        let cs = split(1, Bytes::from(vec![0u8; 11]));
        assert_eq!(
            r.push(cs[0].clone()),
            Err(ReassemblyError::TooLarge { limit: 10, got: 11 })
        );
    }
}

/// Property tests: a plugin or a peer controls every field of every chunk, so no
/// sequence of chunks may panic the checker, and every honest split must round-trip.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn chunk() -> impl Strategy<Value = StateChunk> {
        (
            0u32..3,
            0u64..6,
            proptest::collection::vec(any::<u8>(), 0..64),
            any::<bool>(),
            any::<u32>(),
            prop_oneof![Just(0u64), 0u64..128, any::<u64>()],
        )
            .prop_map(|(schema_version, seq, data, last, checksum, total_bytes)| {
                StateChunk {
                    schema_version,
                    seq,
                    data: Bytes::from(data),
                    last,
                    checksum,
                    total_bytes,
                    ..Default::default()
                }
            })
    }

    proptest! {
        #[test]
        fn arbitrary_chunk_streams_never_panic(chunks in proptest::collection::vec(chunk(), 0..8), limit in 0usize..512) {
            let mut r = Reassembly::new(limit);
            for c in chunks {
                if r.push(c).is_err() {
                    break;
                }
            }
            let _ = r.finish();
        }

        #[test]
        fn honest_streams_round_trip(state in proptest::collection::vec(any::<u8>(), 0..4096), schema in any::<u32>()) {
            let mut r = Reassembly::new(usize::MAX);
            for c in chunks(schema, Bytes::from(state.clone())) {
                r.push(c).map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
            prop_assert_eq!(r.finish(), Ok((schema, state)));
        }

        #[test]
        fn any_flipped_bit_is_caught(state in proptest::collection::vec(any::<u8>(), 1..2048), at in any::<usize>(), bit in 0u8..8) {
            let mut cs: Vec<StateChunk> = chunks(1, Bytes::from(state.clone())).collect();
            let mut data = cs[0].data.to_vec();
            let i = at % data.len();
            data[i] ^= 1 << bit;
            cs[0].data = Bytes::from(data);
            let mut check = ChunkCheck::new(u64::MAX);
            let caught = cs.iter().any(|c| check.push(c).is_err());
            prop_assert!(caught, "a flipped bit passed the checksum");
        }
    }
}
