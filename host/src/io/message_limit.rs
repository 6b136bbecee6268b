//! A request body that holds each gRPC message to the plugin's `max_message_bytes`: it
//! reads every message's 5-byte prefix as the bytes go by (no message is buffered) and
//! stops the request with OUT_OF_RANGE, naming the plugin, the size and the limit, at
//! the first one that is larger.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body::Frame;
use tonic::Status;
use tonic::body::Body;

/// Largest message sent to or accepted from a plugin, and the control API's default.
pub(crate) const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// See the module's documentation.
pub(crate) struct LimitedBody {
    inner: Body,
    limit: usize,
    /// What the refusal says, once the size is known: `(size) -> Status`.
    refuse: Box<dyn Fn(usize) -> Status + Send>,
    /// Where the refusal is kept for the caller: HTTP/2 reports a request body that
    /// stopped with an error only as a reset stream, without the error itself.
    refused: Arc<OnceLock<Status>>,
    /// Bytes of the current message still to pass.
    rest: u64,
    /// The next message's prefix, as far as it has come.
    prefix: [u8; 5],
    have: usize,
}

impl LimitedBody {
    /// The limited body, and where its refusal will be, if it refuses.
    pub(crate) fn new(
        inner: Body,
        limit: usize,
        refuse: Box<dyn Fn(usize) -> Status + Send>,
    ) -> (Self, Arc<OnceLock<Status>>) {
        let refused = Arc::new(OnceLock::new());
        let body = Self {
            inner,
            limit,
            refuse,
            refused: refused.clone(),
            rest: 0,
            prefix: [0; 5],
            have: 0,
        };
        (body, refused)
    }

    /// Follows the messages through one chunk; the size of the first one over the limit.
    fn scan(&mut self, mut data: &[u8]) -> Option<usize> {
        while !data.is_empty() {
            if self.rest > 0 {
                let skip = data
                    .len()
                    .min(usize::try_from(self.rest).unwrap_or(usize::MAX));
                data.advance(skip);
                self.rest -= skip as u64;
                continue;
            }
            let take = (5 - self.have).min(data.len());
            self.prefix[self.have..self.have + take].copy_from_slice(&data[..take]);
            self.have += take;
            data.advance(take);
            if self.have == 5 {
                self.have = 0;
                let len = u32::from_be_bytes([
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ]);
                let len = usize::try_from(len).unwrap_or(usize::MAX);
                if len > self.limit {
                    return Some(len);
                }
                self.rest = len as u64;
            }
        }
        None
    }
}

impl http_body::Body for LimitedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        let frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
            && let Some(size) = this.scan(data)
        {
            let status = (this.refuse)(size);
            let _ = this.refused.set(status.clone());
            return Poll::Ready(Some(Err(status)));
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limited(limit: usize) -> LimitedBody {
        let refuse = Box::new(|n: usize| Status::out_of_range(n.to_string()));
        LimitedBody::new(Body::empty(), limit, refuse).0
    }

    fn message(len: u32) -> Vec<u8> {
        let mut m = vec![0];
        m.extend_from_slice(&len.to_be_bytes());
        m.extend(std::iter::repeat_n(7u8, len as usize));
        m
    }

    #[test]
    fn messages_are_followed_across_any_chunking() {
        let mut stream = message(10);
        stream.extend(message(3));
        stream.extend(message(11));
        for chunk in 1..=stream.len() {
            let mut body = limited(10);
            let over = stream.chunks(chunk).find_map(|c| body.scan(c));
            assert_eq!(over, Some(11), "chunks of {chunk}");
        }
        let mut body = limited(11);
        assert_eq!(body.scan(&stream), None);
    }
}
