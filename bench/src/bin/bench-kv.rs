//! `bench-kv`: a key-value plugin on the SDK's `StateMap`, with incremental snapshots,
//! for the live-handover benchmark. Methods: `fill` (`N SIZE`: entries `fill:NNNNNNNN`
//! holding SIZE bytes of [`pattern`]), `put` (key and value, as `KEY=VALUE`), `digest`
//! (CRC-32 of the whole state's bytes, then its length and entry count).

use baton_plugin_sdk::state_map::{decode_full, encode_delta, encode_full};
use baton_plugin_sdk::{Bytes, Description, Plugin, StateImage, StateMap, Status, async_trait};

const SCHEMA: u32 = 1;

/// The bytes of fill entry `i`: the benchmark computes the same to check the state.
fn pattern(i: usize, size: usize) -> Vec<u8> {
    (0..size).map(|j| ((i * 7 + j) % 251) as u8).collect()
}

#[derive(Default)]
struct BenchKv {
    map: StateMap<Bytes, Bytes>,
}

fn bad(what: &str) -> Status {
    Status::invalid_argument(format!("bench-kv: {what}"))
}

/// Runs `work` on a blocking thread. Encoding or decoding a large map takes a while: on
/// the runtime's thread (the SDK serves on one) it would hold up every call meanwhile.
async fn off_thread<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Status::internal(format!("bench-kv: the encoding thread failed: {e}")))
}

#[async_trait]
impl Plugin for BenchKv {
    fn describe(&self) -> Description {
        Description::new("bench-kv", env!("CARGO_PKG_VERSION"))
            .state_schema(SCHEMA)
            .incremental()
            .method("fill", "N SIZE: N entries of SIZE bytes")
            .method("put", "KEY=VALUE")
            .method(
                "digest",
                "CRC-32, length and entry count of the whole state",
            )
    }

    async fn invoke(&self, method: &str, payload: Bytes) -> Result<Bytes, Status> {
        match method {
            "put" => {
                let at = payload
                    .iter()
                    .position(|&b| b == b'=')
                    .ok_or_else(|| bad("put takes KEY=VALUE"))?;
                self.map
                    .insert(payload.slice(..at), payload.slice(at + 1..));
                Ok(Bytes::new())
            }
            "fill" => {
                let text = std::str::from_utf8(&payload).map_err(|_| bad("fill takes N SIZE"))?;
                let (n, size) = text
                    .split_once(' ')
                    .and_then(|(n, s)| Some((n.parse::<usize>().ok()?, s.parse::<usize>().ok()?)))
                    .ok_or_else(|| bad("fill takes N SIZE"))?;
                for i in 0..n {
                    self.map
                        .insert(Bytes::from(format!("fill:{i:08}")), pattern(i, size).into());
                }
                Ok(Bytes::new())
            }
            "digest" => {
                // A copy costs one pointer; the count comes from the same copy.
                let map = self.map.read();
                let (state, entries) = off_thread(move || (encode_full(&map), map.len())).await?;
                Ok(Bytes::from(format!(
                    "{:08x} {} {}",
                    crc32fast::hash(&state),
                    state.len(),
                    entries
                )))
            }
            other => Err(Status::unimplemented(format!(
                "bench-kv has no method {other:?} (it has fill, put, digest)"
            ))),
        }
    }

    async fn snapshot(&self) -> Result<Bytes, Status> {
        let map = self.map.read();
        Ok(off_thread(move || encode_full(&map)).await?.into())
    }

    async fn snapshot_since(&self, since: Option<Bytes>) -> Result<StateImage, Status> {
        // Taking the image is quick (a root pointer and the changed keys); encoding it
        // is not, so that part runs off the runtime's thread and calls go on.
        let image = self.map.image_since(since.as_deref());
        off_thread(move || image.encode(encode_full, encode_delta)).await
    }

    async fn restore(&self, schema_version: u32, state: Vec<u8>) -> Result<(), Status> {
        if schema_version != SCHEMA {
            return Err(Status::failed_precondition(format!(
                "bench-kv reads schema {SCHEMA}, not {schema_version}"
            )));
        }
        // As `StateMap::restore`, with the decoding off the runtime's thread.
        let map = off_thread(move || decode_full(Bytes::from(state)))
            .await?
            .map_err(|e| bad(&e.to_string()))?;
        self.map.replace(map);
        Ok(())
    }

    async fn restore_delta(&self, schema_version: u32, delta: Vec<u8>) -> Result<(), Status> {
        if schema_version != SCHEMA {
            return Err(Status::failed_precondition(format!(
                "bench-kv reads schema {SCHEMA}, not {schema_version}"
            )));
        }
        self.map.restore_delta(delta)
    }
}

fn main() -> std::process::ExitCode {
    baton_plugin_sdk::serve(BenchKv::default())
}
