//! `bench-kv`: a key-value plugin on the SDK's `StateMap`, with incremental snapshots,
//! for the live-handover benchmark. Methods: `fill` (`N SIZE`: entries `fill:NNNNNNNN`
//! holding SIZE bytes of [`pattern`]), `put` (key and value, as `KEY=VALUE`), `digest`
//! (CRC-32 of the whole state's bytes, then its length and entry count).

use baton_plugin_sdk::state_map::encode_full;
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
                let state = tokio::task::block_in_place(|| encode_full(&self.map.read()));
                Ok(Bytes::from(format!(
                    "{:08x} {} {}",
                    crc32fast::hash(&state),
                    state.len(),
                    self.map.len()
                )))
            }
            other => Err(Status::unimplemented(format!(
                "bench-kv has no method {other:?} (it has fill, put, digest)"
            ))),
        }
    }

    async fn snapshot(&self) -> Result<Bytes, Status> {
        Ok(tokio::task::block_in_place(|| encode_full(&self.map.read())).into())
    }

    async fn snapshot_since(&self, since: Option<Bytes>) -> Result<StateImage, Status> {
        // Encoding a large map takes a while: off the runtime's worker, so calls go on.
        Ok(tokio::task::block_in_place(|| {
            self.map.snapshot_since(since.as_deref())
        }))
    }

    async fn restore(&self, schema_version: u32, state: Vec<u8>) -> Result<(), Status> {
        if schema_version != SCHEMA {
            return Err(Status::failed_precondition(format!(
                "bench-kv reads schema {SCHEMA}, not {schema_version}"
            )));
        }
        tokio::task::block_in_place(|| self.map.restore(state))
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
