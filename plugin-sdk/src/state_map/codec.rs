//! The byte format of a `StateMap<Bytes, Bytes>`, whole and as a delta: documented in
//! docs/incremental-state.md and written the same by the Python SDK.

use bytes::Bytes;
use imbl::OrdMap;

const FULL_MAGIC: &[u8; 4] = b"BTKV";
const DELTA_MAGIC: &[u8; 4] = b"BTKD";

/// Why bytes are not a state map or a delta of one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The first four bytes are not the format's magic.
    #[error("state map {what} does not start with the magic bytes {magic:?}")]
    BadMagic {
        /// "state" or "delta".
        what: &'static str,
        /// The magic expected.
        magic: &'static str,
    },
    /// The bytes end in the middle of a field.
    #[error("state map bytes are truncated at byte {0}")]
    Truncated(usize),
    /// A key is not greater than the one before it (a duplicate, or out of order).
    #[error("state map key at byte {0} is not greater than the key before it")]
    Unsorted(usize),
    /// A delta entry's tag is neither 0 (removed) nor 1 (set).
    #[error("state map delta entry at byte {at} has tag {tag} (0: removed, 1: set)")]
    BadTag {
        /// Where the tag is.
        at: usize,
        /// The tag found.
        tag: u8,
    },
    /// Bytes follow the last entry.
    #[error("state map has {0} unexpected bytes after the last entry")]
    TrailingBytes(usize),
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// The whole map: `BTKV`, the entry count (u64), then each entry in key order as a
/// length-prefixed (u32) key and value. All integers little-endian.
pub fn encode_full(map: &OrdMap<Bytes, Bytes>) -> Vec<u8> {
    let size = 12
        + map
            .iter()
            .map(|(k, v)| 8 + k.len() + v.len())
            .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(FULL_MAGIC);
    out.extend_from_slice(&(map.len() as u64).to_le_bytes());
    for (k, v) in map {
        put(&mut out, k);
        put(&mut out, v);
    }
    out
}

/// The changes: `BTKD`, the entry count (u64), then each entry in key order as a
/// length-prefixed key, a tag (1: set, 0: removed) and, if set, a length-prefixed value.
pub fn encode_delta(changes: &[(Bytes, Option<Bytes>)]) -> Vec<u8> {
    let size = 12
        + changes
            .iter()
            .map(|(k, v)| 9 + k.len() + v.as_ref().map_or(0, |v| 4 + v.len()))
            .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(DELTA_MAGIC);
    out.extend_from_slice(&(changes.len() as u64).to_le_bytes());
    for (k, v) in changes {
        put(&mut out, k);
        match v {
            Some(v) => {
                out.push(1);
                put(&mut out, v);
            }
            None => out.push(0),
        }
    }
    out
}

struct Reader {
    bytes: Bytes,
    pos: usize,
}

impl Reader {
    fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or(DecodeError::Truncated(self.pos))?;
        // A slice shares the buffer: a restored 1 GiB map is not copied again.
        let s = self.bytes.slice(self.pos..end);
        self.pos = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(&b);
        Ok(u64::from_le_bytes(a))
    }

    fn field(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    fn magic(&mut self, magic: &'static [u8; 4], what: &'static str) -> Result<(), DecodeError> {
        match self.take(4) {
            Ok(m) if m[..] == magic[..] => Ok(()),
            _ => Err(DecodeError::BadMagic {
                what,
                magic: if what == "state" { "BTKV" } else { "BTKD" },
            }),
        }
    }

    /// The next key, which must sort after `previous`.
    fn key(&mut self, previous: &Option<Bytes>) -> Result<Bytes, DecodeError> {
        let at = self.pos;
        let key = self.field()?;
        if previous.as_ref().is_some_and(|p| *p >= key) {
            return Err(DecodeError::Unsorted(at));
        }
        Ok(key)
    }

    fn end(&self) -> Result<(), DecodeError> {
        match self.bytes.len() - self.pos {
            0 => Ok(()),
            rest => Err(DecodeError::TrailingBytes(rest)),
        }
    }
}

/// Reads a whole map written by [`encode_full`], refusing anything malformed.
pub fn decode_full(bytes: Bytes) -> Result<OrdMap<Bytes, Bytes>, DecodeError> {
    let mut r = Reader { bytes, pos: 0 };
    r.magic(FULL_MAGIC, "state")?;
    let count = r.u64()?;
    let mut map = OrdMap::new();
    let mut previous = None;
    for _ in 0..count {
        let key = r.key(&previous)?;
        let value = r.field()?;
        map.insert(key.clone(), value);
        previous = Some(key);
    }
    r.end()?;
    Ok(map)
}

/// Reads changes written by [`encode_delta`], refusing anything malformed.
pub fn decode_delta(bytes: Bytes) -> Result<Vec<(Bytes, Option<Bytes>)>, DecodeError> {
    let mut r = Reader { bytes, pos: 0 };
    r.magic(DELTA_MAGIC, "delta")?;
    let count = r.u64()?;
    // Not trusted for an allocation: each entry takes at least 5 bytes.
    let mut changes = Vec::with_capacity((count as usize).min(r.bytes.len() / 5));
    let mut previous = None;
    for _ in 0..count {
        let key = r.key(&previous)?;
        let at = r.pos;
        let tag = r.take(1)?[0];
        let value = match tag {
            1 => Some(r.field()?),
            0 => None,
            tag => return Err(DecodeError::BadTag { at, tag }),
        };
        previous = Some(key.clone());
        changes.push((key, value));
    }
    r.end()?;
    Ok(changes)
}
