//! A key-value plugin on the SDK's `StateMap`, with incremental snapshots, for the
//! end-to-end tests of live handovers. Methods: `put` (`key=value`), `get` (a key),
//! `len`, `fill` (`N SIZE`: N entries `fill:NNNNNNNN` of SIZE bytes each), `digest`
//! (CRC-32 of the whole state's bytes, then the entry count), `missing` (`PREFIX N`:
//! which of `PREFIX-0` … `PREFIX-(N-1)` are absent or do not hold `v0` … `v(N-1)`),
//! `pid`, and `fault`, which makes this process misbehave from then on:
//! `wrong-base` (its deltas claim to follow a cursor it never gave), `exit-on-delta`
//! (exits when asked for a delta: a crash between pre-copy rounds), `no-shrink` (every
//! delta lists every entry, so deltas never get smaller).
//!
//! From the environment: `DELTAS_PLAIN=1` declares no incremental snapshots;
//! `DELTAS_FAULT=exit-on-restore-delta` exits while applying a delta (a crash of n+1).

use std::fmt::Write as _;
use std::sync::Mutex;

use baton_plugin_sdk::state_map::{encode_delta, encode_full};
use baton_plugin_sdk::{Bytes, Description, Plugin, StateImage, StateMap, Status, async_trait};

const SCHEMA: u32 = 1;

#[derive(Default)]
struct Deltas {
    map: StateMap<Bytes, Bytes>,
    fault: Mutex<String>,
}

fn text(payload: &[u8]) -> Result<&str, Status> {
    std::str::from_utf8(payload).map_err(|_| Status::invalid_argument("the payload must be UTF-8"))
}

fn two<'a>(payload: &'a [u8], what: &str) -> Result<(&'a str, usize), Status> {
    text(payload)?
        .split_once(' ')
        .and_then(|(a, n)| Some((a, n.parse().ok()?)))
        .ok_or_else(|| Status::invalid_argument(format!("the payload must be {what}")))
}

#[async_trait]
impl Plugin for Deltas {
    fn describe(&self) -> Description {
        let d = Description::new("deltas", "test")
            .state_schema(SCHEMA)
            .method("put", "key=value")
            .method("get", "a key's value")
            .method("len", "the number of entries")
            .method("fill", "N SIZE: N entries of SIZE bytes")
            .method("digest", "CRC-32 of the whole state, and its entry count")
            .method(
                "missing",
                "PREFIX N: the writes PREFIX-i=vi that are not there",
            )
            .method("pid", "the process id")
            .method("fault", "wrong-base | exit-on-delta | no-shrink");
        if std::env::var_os("DELTAS_PLAIN").is_some() {
            d
        } else {
            d.incremental()
        }
    }

    async fn invoke(&self, method: &str, payload: Bytes) -> Result<Bytes, Status> {
        match method {
            "put" => {
                let (k, v) = text(&payload)?
                    .split_once('=')
                    .ok_or_else(|| Status::invalid_argument("put takes key=value"))?;
                self.map.insert(
                    Bytes::copy_from_slice(k.as_bytes()),
                    Bytes::copy_from_slice(v.as_bytes()),
                );
                Ok(Bytes::from_static(b"ok"))
            }
            "get" => self.map.get(&payload[..]).ok_or_else(|| {
                Status::not_found(format!("no key {:?}", String::from_utf8_lossy(&payload)))
            }),
            "len" => Ok(Bytes::from(self.map.len().to_string())),
            "fill" => {
                let (n, size) = two(&payload, "N SIZE")?;
                let n: usize = n.parse().map_err(|_| Status::invalid_argument("N"))?;
                for i in 0..n {
                    let value: Vec<u8> = (0..size).map(|j| ((i * 7 + j) % 251) as u8).collect();
                    self.map
                        .insert(Bytes::from(format!("fill:{i:08}")), Bytes::from(value));
                }
                Ok(Bytes::from_static(b"ok"))
            }
            "digest" => {
                let map = self.map.read();
                Ok(Bytes::from(format!(
                    "{:08x} {}",
                    crc32fast::hash(&encode_full(&map)),
                    map.len()
                )))
            }
            "missing" => {
                let (prefix, n) = two(&payload, "PREFIX N")?;
                let map = self.map.read();
                let mut missing = String::new();
                for i in 0..n {
                    let want = format!("v{i}");
                    let key = format!("{prefix}-{i}");
                    if map
                        .get(key.as_bytes())
                        .is_none_or(|v| v[..] != *want.as_bytes())
                    {
                        let _ = write!(missing, "{key} ");
                    }
                }
                Ok(Bytes::from(missing))
            }
            "pid" => Ok(Bytes::from(std::process::id().to_string())),
            "fault" => {
                *self.fault.lock().unwrap_or_else(|p| p.into_inner()) = text(&payload)?.to_owned();
                Ok(Bytes::from_static(b"ok"))
            }
            other => Err(Status::unimplemented(format!(
                "deltas has no method {other:?}"
            ))),
        }
    }

    async fn snapshot(&self) -> Result<Bytes, Status> {
        Ok(encode_full(&self.map.read()).into())
    }

    async fn snapshot_since(&self, since: Option<Bytes>) -> Result<StateImage, Status> {
        let fault = self.fault.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut image = self.map.snapshot_since(since.as_deref());
        if image.delta {
            match fault.as_str() {
                "exit-on-delta" => {
                    eprintln!("deltas: exiting when asked for a delta, as told");
                    std::process::exit(3);
                }
                "wrong-base" => image.base_cursor = Bytes::from_static(b"a cursor never given"),
                "no-shrink" => {
                    let every: Vec<_> = self
                        .map
                        .read()
                        .into_iter()
                        .map(|(k, v)| (k, Some(v)))
                        .collect();
                    image.data = encode_delta(&every).into();
                }
                _ => {}
            }
        }
        Ok(image)
    }

    async fn restore(&self, schema_version: u32, state: Vec<u8>) -> Result<(), Status> {
        if schema_version != SCHEMA {
            return Err(Status::failed_precondition(format!(
                "deltas reads schema {SCHEMA}, not {schema_version}"
            )));
        }
        self.map.restore(state)
    }

    async fn restore_delta(&self, schema_version: u32, delta: Vec<u8>) -> Result<(), Status> {
        if schema_version != SCHEMA {
            return Err(Status::failed_precondition(format!(
                "deltas reads schema {SCHEMA}, not {schema_version}"
            )));
        }
        if std::env::var("DELTAS_FAULT").as_deref() == Ok("exit-on-restore-delta") {
            eprintln!("deltas: exiting while applying a delta, as told");
            std::process::exit(3);
        }
        self.map.restore_delta(delta)
    }
}

fn main() -> std::process::ExitCode {
    baton_plugin_sdk::serve(Deltas::default())
}
