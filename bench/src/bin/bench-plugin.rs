//! `bench-plugin`: a plugin whose state size is set at run time, so the benchmark can
//! time handovers of 1 KiB to 1 GiB. Methods: `fill N` (a state of N bytes), `get`
//! (the state's length, 8 bytes little-endian: cheap, so callers measure the path, not
//! the plugin), `digest` (CRC-32 and length of the whole state, to prove it survived),
//! `echo`.

use std::sync::Mutex;

use baton_plugin_sdk::{Bytes, Description, Plugin, Status, async_trait};

/// The state format: the raw bytes.
const SCHEMA: u32 = 1;

struct Bench {
    /// Bytes, so that `get` and `snapshot` never hold the lock while copying.
    state: Mutex<Bytes>,
}

impl Bench {
    fn state(&self) -> Bytes {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    fn set(&self, state: Bytes) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }
}

#[async_trait]
impl Plugin for Bench {
    fn describe(&self) -> Description {
        Description::new("bench", env!("CARGO_PKG_VERSION"))
            .state_schema(SCHEMA)
            .method(
                "fill",
                "payload: a decimal byte count N; the state becomes N bytes",
            )
            .method("get", "the state's length, u64 little-endian")
            .method(
                "digest",
                "CRC-32 then length of the state, both little-endian",
            )
            .method("echo", "returns the payload unchanged")
    }

    async fn invoke(&self, method: &str, payload: Bytes) -> Result<Bytes, Status> {
        match method {
            "echo" => Ok(payload),
            "get" => Ok(Bytes::copy_from_slice(
                &(self.state().len() as u64).to_le_bytes(),
            )),
            "digest" => {
                let state = self.state();
                let mut out = crc32fast::hash(&state).to_le_bytes().to_vec();
                out.extend_from_slice(&(state.len() as u64).to_le_bytes());
                Ok(out.into())
            }
            "fill" => {
                let n: usize = std::str::from_utf8(&payload)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .ok_or_else(|| Status::invalid_argument("fill wants a decimal byte count"))?;
                // A pattern, not zeros, so a transfer that lost or reordered bytes shows.
                let state: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
                self.set(state.into());
                Ok(Bytes::from_static(b"ok"))
            }
            other => Err(Status::unimplemented(format!(
                "bench has no method {other:?} (it has fill, get, digest, echo)"
            ))),
        }
    }

    async fn snapshot(&self) -> Result<Bytes, Status> {
        Ok(self.state())
    }

    async fn restore(&self, schema_version: u32, state: Vec<u8>) -> Result<(), Status> {
        if schema_version != SCHEMA {
            return Err(Status::failed_precondition(format!(
                "bench reads state schema {SCHEMA}, not {schema_version}"
            )));
        }
        self.set(state.into());
        Ok(())
    }
}

fn main() -> std::process::ExitCode {
    baton_plugin_sdk::serve(Bench {
        state: Mutex::new(Bytes::new()),
    })
}
