//! The control API's check of an `Invoke` request's size, made on the gRPC frame's
//! header before the body is read: a request over its plugin's `max_message_bytes` is
//! answered with OUT_OF_RANGE naming the plugin, and counted, however large it is.
//!
//! Without it, a request over the server's decoding limit got tonic's own message (with
//! the server's limit, not the plugin's) and was never counted, and one over the
//! client's encoding limit broke the HTTP/2 stream.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Frame;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::server::NamedService;

use crate::plugin_set::PluginSet;

/// The method whose requests carry payloads.
const INVOKE_PATH: &str = "/baton.host.v1.Supervisor/Invoke";
/// How much of a request is read to find its plugin and method names: the fields come
/// before the payload in every protobuf encoder's output (field-number order).
const PEEK_BYTES: usize = 4096;
/// Room around a payload for the plugin and method names, metadata and framing; a
/// request within its plugin's limit plus this is decoded and judged exactly.
pub(crate) const ALLOWANCE: usize = 64 << 10;

/// Wraps the control API's service; see the module docs.
#[derive(Clone)]
pub struct SizeGuard<S> {
    inner: S,
    plugins: PluginSet,
    /// The server's own decoding limit, for requests naming no known plugin.
    server_limit: usize,
}

impl<S> SizeGuard<S> {
    pub(crate) fn new(inner: S, plugins: PluginSet, server_limit: usize) -> Self {
        Self {
            inner,
            plugins,
            server_limit,
        }
    }
}

impl<S: NamedService> NamedService for SizeGuard<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<Request<Body>> for SizeGuard<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // The ready service goes to this call; a fresh clone waits for the next.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        if request.uri().path() != INVOKE_PATH {
            return Box::pin(inner.call(request));
        }
        let guard = self.clone();
        Box::pin(async move {
            let (parts, mut body) = request.into_parts();
            let mut peeked = BytesMut::new();
            let mut ended = false;
            // Enough to read the frame header and the fields before the payload.
            while peeked.len() < 5 + PEEK_BYTES && !ended {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            peeked.extend_from_slice(&data);
                        }
                    }
                    // A broken body: let the server report it as it would.
                    Some(Err(_)) | None => ended = true,
                }
                if let Some(frame_len) = frame_len(&peeked)
                    && peeked.len() >= 5 + frame_len.min(PEEK_BYTES)
                {
                    break;
                }
            }
            let peeked = peeked.freeze();
            if let Some(status) = guard.judge(&peeked) {
                // Dropping the rest of the body resets the stream with NO_ERROR once
                // the answer is sent: the client stops sending and reads the status.
                return Ok(status.into_http());
            }
            let body = Body::new(Prefixed {
                prefix: Some(peeked),
                rest: body,
            });
            inner.call(Request::from_parts(parts, body)).await
        })
    }
}

impl<S> SizeGuard<S> {
    /// The refusal for a request starting with `peeked`, if it is too large.
    fn judge(&self, peeked: &[u8]) -> Option<Status> {
        let frame_len = frame_len(peeked)?;
        if peeked[0] != 0 {
            // Compressed: the server refuses it anyway (it accepts no compression).
            return None;
        }
        let fields = Fields::parse(&peeked[5..]);
        match fields.plugin.and_then(|name| self.plugins.get(name)) {
            Some(handle) if frame_len > handle.max_message_bytes() + ALLOWANCE => {
                let method = fields.method.unwrap_or("");
                Some(handle.refuse_oversized(method, fields.payload_len.unwrap_or(frame_len)))
            }
            Some(_) => None,
            None if frame_len > self.server_limit => Some(Status::out_of_range(format!(
                "the request is {frame_len} bytes, over this host's largest max_message_bytes \
                 plus room for the request ({} bytes), and names no plugin of this host",
                self.server_limit
            ))),
            None => None,
        }
    }
}

/// The length a gRPC frame header announces, once its 5 bytes are in.
fn frame_len(peeked: &[u8]) -> Option<usize> {
    let header: [u8; 4] = peeked.get(1..5)?.try_into().ok()?;
    Some(u32::from_be_bytes(header) as usize)
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

/// A request body whose first bytes were already read.
struct Prefixed {
    prefix: Option<Bytes>,
    rest: Body,
}

impl hyper::body::Body for Prefixed {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(prefix) = self.prefix.take()
            && !prefix.is_empty()
        {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }
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
