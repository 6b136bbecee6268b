//! The refusals `Restore` owes: the bad chunk streams of the shared wire vectors
//! (`proto/testdata/state-vectors.json`, which every SDK's own tests read) replayed into
//! a plugin, each of which it must refuse rather than take as a state.

use std::time::Duration;

use baton_proto::plugin::StateChunk;
use serde_json::Value;
use tonic::Code;

use super::instance::Instance;
use super::probes::restore;

/// The shared vectors, built into the binary so that `baton check` needs no checkout.
const VECTORS: &str = include_str!("../../../../proto/testdata/state-vectors.json");

/// One stream a receiver must refuse.
struct BadStream {
    name: String,
    chunks: Vec<StateChunk>,
}

/// The vectors' streams that must be refused whatever the plugin's own size limit
/// (those with a `limit` of their own need that limit, which a plugin does not expose).
fn bad_streams() -> Result<Vec<BadStream>, String> {
    let doc: Value = serde_json::from_str(VECTORS)
        .map_err(|e| format!("internal: the built-in state vectors are not JSON: {e}"))?;
    let streams = doc["streams"]
        .as_array()
        .ok_or("internal: the built-in state vectors have no streams")?;
    let mut bad = Vec::new();
    for stream in streams {
        if stream["expect"]["error"].is_null() || !stream["limit"].is_null() {
            continue;
        }
        let name = stream["name"].as_str().unwrap_or("unnamed").to_owned();
        let chunks = stream["chunks"]
            .as_array()
            .ok_or_else(|| format!("internal: state vector {name:?} has no chunks"))?
            .iter()
            .map(chunk)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| format!("internal: state vector {name:?} has a malformed chunk"))?;
        bad.push(BadStream { name, chunks });
    }
    Ok(bad)
}

fn chunk(c: &Value) -> Option<StateChunk> {
    let hex = c["data_hex"].as_str()?;
    let data = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    Some(StateChunk {
        schema_version: u32::try_from(c["schema_version"].as_u64()?).ok()?,
        seq: c["seq"].as_u64()?,
        data: data.into(),
        last: c["last"].as_bool()?,
        checksum: u32::try_from(c["checksum"].as_u64()?).ok()?,
        total_bytes: c["total_bytes"].as_u64()?,
        ..Default::default()
    })
}

/// Replays every bad stream into `instance`'s `Restore`. A plugin that takes one may
/// have changed its state, so this runs last on an instance no other check uses after.
/// Fails naming every stream that was accepted, or the one the plugin died on.
pub(super) async fn check(instance: &mut Instance, timeout: Duration) -> Result<String, String> {
    let streams = bad_streams()?;
    let mut accepted = Vec::new();
    let mut silent = Vec::new();
    for stream in &streams {
        match restore(instance, stream.chunks.clone(), timeout).await {
            Ok(bytes) => accepted.push(format!("{:?} (as {bytes} bytes)", stream.name)),
            Err(s) if s.code() == Code::DeadlineExceeded => {
                silent.push(format!("{:?}", stream.name));
            }
            Err(s) if matches!(s.code(), Code::Unknown | Code::Unavailable | Code::Internal) => {
                // A broken connection usually means the process died; its exit shows soon.
                if let Some(exit) = instance.exit_within(Duration::from_millis(500)).await {
                    return Err(format!(
                        "the plugin exited ({exit}) when given the bad state stream {:?}, which it must refuse{}",
                        stream.name,
                        instance.stderr_tail()
                    ));
                }
            }
            // Refused, as it must be.
            Err(_) => {}
        }
    }
    if accepted.is_empty() && silent.is_empty() {
        return Ok(format!(
            "all {} bad state streams of the shared vectors refused",
            streams.len()
        ));
    }
    let mut problems = Vec::new();
    if !accepted.is_empty() {
        problems.push(format!(
            "Restore accepted {} of the {} bad state streams it must refuse: {}",
            accepted.len(),
            streams.len(),
            accepted.join(", ")
        ));
    }
    if !silent.is_empty() {
        problems.push(format!(
            "Restore did not answer within {timeout:?} for {}",
            silent.join(", ")
        ));
    }
    Err(format!(
        "{} (a receiver checks each chunk's seq and schema_version, that the stream ends with one chunk marked last, its checksum and total_bytes; the streams are in proto/testdata/state-vectors.json)",
        problems.join("; ")
    ))
}
