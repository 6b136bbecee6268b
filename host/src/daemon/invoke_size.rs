//! The control API's check of an `Invoke` request's size, made on the length its gRPC
//! frame announces and the fields at its start, before the rest is read: a request over
//! its plugin's `max_message_bytes` is answered with OUT_OF_RANGE naming the plugin, and
//! counted, however large it is.
//!
//! Without it, a request over the server's decoding limit got a message with the
//! server's limit, not the plugin's, and was never counted.

use bytes::Buf;
use tonic::Status;

use crate::calls::plugin_set::PluginSet;

/// How much of a request is looked at to find its plugin and method names: the fields
/// come before the payload in every protobuf encoder's output (field-number order).
pub(crate) const PEEK_BYTES: usize = 4096;
/// Room around a payload for the plugin and method names, metadata and framing; a
/// request within its plugin's limit plus this is decoded and judged exactly.
pub(crate) const ALLOWANCE: usize = 64 << 10;

/// Refuses a request of `len` bytes starting with `start` if it is too large: over its
/// plugin's limit (naming the plugin, counted as its failed call), or over the server's
/// own `server_limit` when it names no plugin of this host.
pub(crate) fn judge(
    plugins: &PluginSet,
    server_limit: usize,
    len: usize,
    start: &[u8],
) -> Result<(), Status> {
    let fields = Fields::parse(start);
    match fields.plugin.and_then(|name| plugins.get(name)) {
        Some(handle) if len > handle.max_message_bytes() + ALLOWANCE => {
            let method = fields.method.unwrap_or("");
            Err(handle.refuse_oversized(method, fields.payload_len.unwrap_or(len)))
        }
        Some(_) => Ok(()),
        None if len > server_limit => Err(Status::out_of_range(format!(
            "the request is {len} bytes, over this host's largest max_message_bytes \
             plus room for the request ({server_limit} bytes), and names no plugin of this host"
        ))),
        None => Ok(()),
    }
}

/// What the start of an `InvokeRequest` says (`plugin = 1`, `method = 2`, `payload = 3`).
#[derive(Debug, Default, PartialEq)]
struct Fields<'a> {
    plugin: Option<&'a str>,
    method: Option<&'a str>,
    payload_len: Option<usize>,
}

impl<'a> Fields<'a> {
    /// Reads fields from the start of a message until the payload's length, or until
    /// the bytes run out or stop making sense.
    fn parse(mut bytes: &'a [u8]) -> Self {
        let mut fields = Self::default();
        while let Some(tag) = varint(&mut bytes) {
            let (number, wire_type) = (tag >> 3, tag & 7);
            if wire_type != 2 {
                break;
            }
            let Some(len) = varint(&mut bytes).and_then(|l| usize::try_from(l).ok()) else {
                break;
            };
            if number == 3 {
                fields.payload_len = Some(len);
                break;
            }
            let Some(value) = bytes.get(..len) else {
                break;
            };
            let text = std::str::from_utf8(value).ok();
            match number {
                1 => fields.plugin = text,
                2 => fields.method = text,
                _ => {}
            }
            bytes.advance(len);
        }
        fields
    }
}

fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn the_names_and_payload_size_are_read_from_the_start_of_a_request() {
        let request = baton_proto::host::InvokeRequest {
            plugin: "echo".into(),
            method: "echo".into(),
            payload: vec![7u8; 100_000].into(),
            metadata: Default::default(),
        };
        let bytes = request.encode_to_vec();
        assert_eq!(
            Fields::parse(&bytes[..64]),
            Fields {
                plugin: Some("echo"),
                method: Some("echo"),
                payload_len: Some(100_000)
            }
        );
        // Cut inside the plugin's name: nothing is made up.
        assert_eq!(Fields::parse(&bytes[..4]), Fields::default());
        assert_eq!(Fields::parse(&[0xff; 16]), Fields::default());
    }
}
