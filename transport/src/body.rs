//! HTTP/2 message bodies on the `h2` crate, for the host's client to its plugins and its
//! server on the control socket: a body written into a stream within the peer's window,
//! and a stream read as a body that gives the peer its window back as it goes.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use h2::{RecvStream, SendStream};
use http_body::{Body as _, Frame};
use tonic::codegen::http;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How much of a body is written ahead of the peer's window before the writer waits for
/// it: bounds what a slow reader makes the host hold for one stream.
const SEND_AHEAD_BYTES: usize = 1 << 20;

/// Writes a body into its HTTP/2 stream, within the peer's window.
pub(crate) struct Pump<B> {
    body: Pin<Box<B>>,
    stream: SendStream<Bytes>,
    /// Data taken from the body and not yet written.
    pending: Option<(Bytes, bool)>,
    /// Whether a message has been written.
    started: bool,
    /// Writing a server's answer: a body that fails with a status ends the stream with
    /// it (see [`Pump::answer`]).
    answer: bool,
}

impl<B> Pump<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    /// Writes the request `body` into `stream`; a body that fails resets the stream
    /// (a request has no trailers to say why, and the server must not take what was
    /// sent as whole).
    pub(crate) fn request(body: B, stream: SendStream<Bytes>) -> Self {
        Self {
            body: Box::pin(body),
            stream,
            pending: None,
            started: false,
            answer: false,
        }
    }

    /// Writes a server's answer `body` into `stream`. A body that fails with a
    /// `tonic::Status` (a forwarded stream whose plugin died, or whose answer was over
    /// its size limit) ends the stream with that status in trailers, as a handler's
    /// error does: a reset would tell the client only CANCELLED, and the message
    /// naming the plugin would never arrive. Any other failure resets the stream.
    pub(crate) fn answer(body: B, stream: SendStream<Bytes>) -> Self {
        Self {
            answer: true,
            ..Self::request(body, stream)
        }
    }

    /// `Ready` once the body is written (or abandoned: the stream was reset, or the body
    /// failed, which resets it).
    pub(crate) fn poll_pump(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if let Some((data, end)) = self.pending.take() {
                // The first message goes at once, whatever the window: h2 holds what the
                // window does not cover (a stream is only given capacity once the
                // connection task has opened it, and waiting for that would send a
                // unary call's one message through another task). Later ones wait for
                // room, which bounds what a slow reader makes the host hold.
                let first = !self.started;
                self.started = true;
                let want = data.len().min(SEND_AHEAD_BYTES);
                if !first && !data.is_empty() && self.stream.capacity() < want {
                    self.stream.reserve_capacity(SEND_AHEAD_BYTES);
                }
                if first || data.is_empty() || self.stream.capacity() >= want {
                    if self.stream.send_data(data, end).is_err() || end {
                        return Poll::Ready(());
                    }
                    continue;
                }
                match self.stream.poll_capacity(cx) {
                    Poll::Ready(Some(Ok(_))) => {
                        let room = self.stream.capacity();
                        if room >= data.len() {
                            self.pending = Some((data, end));
                        } else {
                            let mut data = data;
                            let rest = data.split_off(room);
                            if self.stream.send_data(data, false).is_err() {
                                return Poll::Ready(());
                            }
                            self.pending = Some((rest, end));
                        }
                        continue;
                    }
                    Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(()),
                    Poll::Pending => {
                        self.pending = Some((data, end));
                        return Poll::Pending;
                    }
                }
            }
            match self.body.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        // Marked last in the same frame when the body knows it has ended.
                        let end = self.body.is_end_stream();
                        self.pending = Some((data, end));
                    }
                    Err(frame) => {
                        if let Ok(mut trailers) = frame.into_trailers() {
                            crate::header_block::bound(&mut trailers);
                            let _ = self.stream.send_trailers(trailers);
                        }
                        return Poll::Ready(());
                    }
                },
                Poll::Ready(None) => {
                    let _ = self.stream.send_data(Bytes::new(), true);
                    return Poll::Ready(());
                }
                Poll::Ready(Some(Err(e))) => {
                    let e: BoxError = e.into();
                    if self.answer
                        && let Some(trailers) = status_trailers(e)
                    {
                        let _ = self.stream.send_trailers(trailers);
                        return Poll::Ready(());
                    }
                    self.stream.send_reset(h2::Reason::CANCEL);
                    return Poll::Ready(());
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Trailers ending a stream with the status `e` is, bounded as every status this
/// server sends; `None` when `e` is no status (or cannot be written as one).
fn status_trailers(e: BoxError) -> Option<http::HeaderMap> {
    let e = match e.downcast::<tonic::Status>() {
        Ok(status) => status,
        Err(e) => {
            tracing::debug!("an answer's body failed: {e}");
            return None;
        }
    };
    let mut trailers = http::HeaderMap::new();
    e.add_header(&mut trailers).ok()?;
    crate::header_block::bound(&mut trailers);
    Some(trailers)
}

/// A body read from its HTTP/2 stream, giving the peer its window back as the
/// data is taken.
pub(crate) struct Received {
    recv: RecvStream,
    /// The data has all been read; the trailers are next.
    trailers: bool,
    /// The trailers have been read too.
    done: bool,
}

impl Received {
    /// The body of `recv`.
    pub(crate) fn new(recv: RecvStream) -> Self {
        Self {
            recv,
            trailers: false,
            done: false,
        }
    }
}

impl http_body::Body for Received {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if !self.trailers {
            match self.recv.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => self.trailers = true,
                Poll::Pending => return Poll::Pending,
            }
        }
        if self.done {
            return Poll::Ready(None);
        }
        match self.recv.poll_trailers(cx) {
            Poll::Ready(Ok(Some(trailers))) => {
                self.done = true;
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            Poll::Ready(Ok(None)) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        // h2 counts unread trailers as pending, so this is true of a trailers-only
        // answer (its status in the headers), which a proxy must pass on as one.
        self.done || self.recv.is_end_stream()
    }
}
