//! The shared wire vectors (`proto/testdata/state-vectors.json`), read by this crate's
//! chunking and reassembly: the Go, TypeScript and Python SDKs' tests read the same file,
//! so a state any of them sends is one every other accepts, chunk for chunk.

use bytes::Bytes;
use serde_json::Value;

use crate::plugin::StateChunk;
use crate::state::{CHUNK_SIZE, Reassembly, ReassemblyError, chunks};

fn vectors() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/proto/testdata/state-vectors.json"
    );
    let text = std::fs::read_to_string(path).expect("read state-vectors.json");
    serde_json::from_str(&text).expect("state-vectors.json is JSON")
}

fn u64_of(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is a number in {v}"))
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn state_of(entry: &Value) -> Vec<u8> {
    let source = &entry["state"];
    match (source["hex"].as_str(), source["fill"].as_u64()) {
        (Some(h), _) => hex(h),
        (None, Some(n)) => (0..n).map(|i| (i % 251) as u8).collect(),
        _ => panic!("state of {entry} is neither hex nor fill"),
    }
}

fn error_name(e: &ReassemblyError) -> &'static str {
    match e {
        ReassemblyError::OutOfOrder { .. } => "out_of_order",
        ReassemblyError::SchemaChanged { .. } => "schema_changed",
        ReassemblyError::AfterLast { .. } => "after_last",
        ReassemblyError::Truncated { .. } => "truncated",
        ReassemblyError::Checksum { .. } => "checksum",
        ReassemblyError::TooLarge { .. } => "too_large",
        ReassemblyError::Length { .. } => "length",
        ReassemblyError::CursorTooLong { .. } => "cursor_too_long",
    }
}

#[test]
fn states_split_into_the_published_chunks_and_back() {
    let doc = vectors();
    assert_eq!(u64_of(&doc, "chunk_size"), CHUNK_SIZE as u64);
    let states = doc["states"].as_array().expect("states");
    assert!(!states.is_empty());
    for entry in states {
        let name = entry["name"].as_str().expect("name");
        let schema = u64_of(entry, "schema_version") as u32;
        let state = state_of(entry);
        assert_eq!(state.len() as u64, u64_of(entry, "length"), "{name}");
        assert_eq!(
            crc32fast::hash(&state) as u64,
            u64_of(entry, "crc32"),
            "{name}"
        );
        let made: Vec<StateChunk> = chunks(schema, Bytes::from(state.clone())).collect();
        let want = entry["chunks"].as_array().expect("chunks");
        assert_eq!(made.len(), want.len(), "{name}");
        for (got, want) in made.iter().zip(want) {
            let offset = u64_of(want, "offset") as usize;
            let length = u64_of(want, "length") as usize;
            assert_eq!(got.schema_version, schema, "{name}");
            assert_eq!(got.seq, u64_of(want, "seq"), "{name}");
            assert_eq!(&got.data[..], &state[offset..offset + length], "{name}");
            assert_eq!(got.last, want["last"].as_bool().expect("last"), "{name}");
            assert_eq!(got.checksum as u64, u64_of(want, "checksum"), "{name}");
            assert_eq!(got.total_bytes, u64_of(want, "total_bytes"), "{name}");
        }
        let mut r = Reassembly::new(usize::MAX);
        for c in made {
            r.push(c).expect(name);
        }
        assert_eq!(r.finish(), Ok((schema, state)), "{name}");
    }
}

#[test]
fn streams_are_accepted_or_refused_as_published() {
    let doc = vectors();
    let streams = doc["streams"].as_array().expect("streams");
    assert!(!streams.is_empty());
    for stream in streams {
        let name = stream["name"].as_str().expect("name");
        let limit = stream["limit"].as_u64().map_or(usize::MAX, |l| l as usize);
        let mut r = Reassembly::new(limit);
        let mut result = Ok(());
        for c in stream["chunks"].as_array().expect("chunks") {
            let chunk = StateChunk {
                schema_version: u64_of(c, "schema_version") as u32,
                seq: u64_of(c, "seq"),
                data: Bytes::from(hex(c["data_hex"].as_str().expect("data_hex"))),
                last: c["last"].as_bool().expect("last"),
                checksum: u64_of(c, "checksum") as u32,
                total_bytes: u64_of(c, "total_bytes"),
                ..Default::default()
            };
            result = r.push(chunk);
            if result.is_err() {
                break;
            }
        }
        let outcome = result.and_then(|()| r.finish());
        let expect = &stream["expect"];
        match expect["error"].as_str() {
            Some(error) => match outcome {
                Err(e) => assert_eq!(error_name(&e), error, "{name}: {e}"),
                Ok(_) => panic!("{name}: accepted, but should fail with {error}"),
            },
            None => assert_eq!(
                outcome,
                Ok((
                    u64_of(expect, "schema_version") as u32,
                    hex(expect["state_hex"].as_str().expect("state_hex"))
                )),
                "{name}"
            ),
        }
    }
}
