//! The counter example plugin: named counters you can `incr` and `get`, whose state
//! survives handovers. The state format is documented in `STATE.md` beside this crate.
//! The counts live in a [`StateMap`], so handovers copy them while the plugin serves
//! and hold calls only for the counters changed during the copy.

use std::collections::BTreeMap;

use baton_plugin_sdk::{Bytes, Description, Plugin, StateImage, StateMap, Status, async_trait};

/// The state format version this build writes and reads.
pub const STATE_SCHEMA: u32 = 1;
const MAGIC: &[u8; 4] = b"BTNC";

/// Named counters. The map is ordered, which keeps the encoding deterministic: the
/// same counts always give the same snapshot bytes.
#[derive(Default)]
pub struct Counter {
    counts: StateMap<String, i64>,
}

/// Encodes counts in state format 1 (see `STATE.md`), given in key order: a whole
/// state, or a delta listing the counters that changed.
pub fn encode<'a>(counts: impl IntoIterator<Item = (&'a String, &'a i64)>) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&0u32.to_le_bytes());
    let mut count = 0u32;
    for (key, value) in counts {
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(&value.to_le_bytes());
        count += 1;
    }
    out[4..8].copy_from_slice(&count.to_le_bytes());
    out
}

/// Why bytes are not a valid format-1 state.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The first four bytes are not `BTNC`.
    #[error("counter state does not start with the magic bytes \"BTNC\"")]
    BadMagic,
    /// The bytes end in the middle of a field.
    #[error("counter state is truncated at byte {0}")]
    Truncated(usize),
    /// A key is not UTF-8.
    #[error("counter state key at byte {0} is not UTF-8")]
    BadKey(usize),
    /// The same key appears twice.
    #[error("counter state has the key {0:?} twice")]
    DuplicateKey(String),
    /// Bytes follow the last entry.
    #[error("counter state has {0} unexpected bytes after the last entry")]
    TrailingBytes(usize),
}

/// Decodes a format-1 state, refusing anything malformed.
pub fn decode(bytes: &[u8]) -> Result<BTreeMap<String, i64>, DecodeError> {
    let mut cur = Cursor { bytes, pos: 0 };
    if cur.take(4)? != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let count = cur.u32()?;
    let mut counts = BTreeMap::new();
    for _ in 0..count {
        let key_len = cur.u32()? as usize;
        let key_at = cur.pos;
        let key = std::str::from_utf8(cur.take(key_len)?)
            .map_err(|_| DecodeError::BadKey(key_at))?
            .to_owned();
        let value = i64::from_le_bytes(cur.array()?);
        if counts.insert(key.clone(), value).is_some() {
            return Err(DecodeError::DuplicateKey(key));
        }
    }
    match bytes.len() - cur.pos {
        0 => Ok(counts),
        rest => Err(DecodeError::TrailingBytes(rest)),
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or(DecodeError::Truncated(self.pos))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
}

fn key_of(payload: &[u8]) -> Result<&str, Status> {
    match std::str::from_utf8(payload) {
        Ok("") => Err(Status::invalid_argument(
            "the payload must be a counter name, got nothing",
        )),
        Ok(key) => Ok(key),
        Err(_) => Err(Status::invalid_argument("the counter name must be UTF-8")),
    }
}

fn schema_1(schema_version: u32) -> Result<(), Status> {
    if schema_version == STATE_SCHEMA {
        Ok(())
    } else {
        Err(Status::failed_precondition(format!(
            "counter reads state schema {STATE_SCHEMA}, was given schema {schema_version}"
        )))
    }
}

#[async_trait]
impl Plugin for Counter {
    fn describe(&self) -> Description {
        Description::new("counter", env!("CARGO_PKG_VERSION"))
            .state_schema(STATE_SCHEMA)
            .incremental()
            .method(
                "incr",
                "adds one to the counter named by the payload; returns the new value",
            )
            .method(
                "get",
                "returns the value of the counter named by the payload (0 if unset)",
            )
    }

    async fn invoke(&self, method: &str, payload: Bytes) -> Result<Bytes, Status> {
        let value = match method {
            "incr" => {
                let key = key_of(&payload)?;
                self.counts
                    .update(key.to_owned(), |v| v.copied().unwrap_or(0) + 1)
            }
            "get" => self.counts.get(key_of(&payload)?).unwrap_or(0),
            other => {
                return Err(Status::unimplemented(format!(
                    "counter has no method {other:?} (it has incr, get)"
                )));
            }
        };
        Ok(Bytes::from(value.to_string()))
    }

    async fn snapshot(&self) -> Result<Bytes, Status> {
        Ok(encode(&self.counts.read()).into())
    }

    async fn snapshot_since(&self, since: Option<Bytes>) -> Result<StateImage, Status> {
        Ok(self.counts.image_since(since.as_deref()).encode(
            |counts| encode(counts),
            // Counters are never removed: every changed one has a count.
            |changes| encode(changes.iter().filter_map(|(k, v)| Some((k, v.as_ref()?)))),
        ))
    }

    async fn restore(&self, schema_version: u32, state: Vec<u8>) -> Result<(), Status> {
        schema_1(schema_version)?;
        let counts = decode(&state).map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.counts.replace(counts.into_iter().collect());
        Ok(())
    }

    async fn restore_delta(&self, schema_version: u32, delta: Vec<u8>) -> Result<(), Status> {
        schema_1(schema_version)?;
        let changed = decode(&delta).map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.counts
            .apply(changed.into_iter().map(|(k, v)| (k, Some(v))));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_and_is_deterministic() {
        let mut counts = BTreeMap::new();
        counts.insert("a".to_owned(), 1);
        counts.insert("ünïcode".to_owned(), -7);
        counts.insert(String::new(), i64::MAX);
        let bytes = encode(&counts);
        assert_eq!(decode(&bytes), Ok(counts.clone()));
        assert_eq!(encode(&decode(&bytes).unwrap_or_default()), bytes);
        assert_eq!(decode(&encode(&BTreeMap::new())), Ok(BTreeMap::new()));
    }

    #[test]
    fn writes_the_shared_counter_state() {
        // The same bytes the Python, Go and TypeScript counters' tests check.
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../proto/testdata/state-vectors.json"
        );
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("read the vectors"))
                .expect("the vectors are JSON");
        let hex = doc["states"]
            .as_array()
            .expect("states")
            .iter()
            .find(|s| s["name"] == "counter: apples=3, pears=2")
            .and_then(|s| s["state"]["hex"].as_str())
            .expect("the counter state is in the vectors");
        let mut counts = BTreeMap::new();
        counts.insert("pears".to_owned(), 2);
        counts.insert("apples".to_owned(), 3);
        let encoded: String = encode(&counts).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(encoded, hex);
    }

    #[test]
    fn malformed_states_are_refused() {
        let mut counts = BTreeMap::new();
        counts.insert("key".to_owned(), 3);
        let good = encode(&counts);
        assert_eq!(decode(b"XXXX\0\0\0\0"), Err(DecodeError::BadMagic));
        for cut in 0..good.len() {
            assert!(
                matches!(decode(&good[..cut]), Err(DecodeError::Truncated(_))),
                "cut {cut}"
            );
        }
        let mut long = good.clone();
        long.push(0);
        assert_eq!(decode(&long), Err(DecodeError::TrailingBytes(1)));
        let mut twice = good.clone();
        twice[4] = 2;
        twice.extend_from_slice(&good[8..]);
        assert_eq!(decode(&twice), Err(DecodeError::DuplicateKey("key".into())));
        let mut bad_utf8 = good;
        bad_utf8[12] = 0xff;
        assert_eq!(decode(&bad_utf8), Err(DecodeError::BadKey(12)));
    }
}

/// Property tests: a restore hands the decoder bytes from any build, or from a
/// corrupted file, so it must refuse garbage without panicking.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn arbitrary_counts_round_trip(counts in proptest::collection::btree_map(".{0,12}", any::<i64>(), 0..16)) {
            prop_assert_eq!(decode(&encode(&counts)), Ok(counts));
        }

        #[test]
        fn a_valid_prefix_with_a_lying_length_is_refused(counts in proptest::collection::btree_map("[a-z]{1,4}", any::<i64>(), 1..4), extra in 1u32..1000) {
            let mut bytes = encode(&counts);
            let n = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) + extra;
            bytes[4..8].copy_from_slice(&n.to_le_bytes());
            prop_assert!(decode(&bytes).is_err());
        }
    }
}
