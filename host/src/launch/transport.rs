//! The HTTP/2 connection to one plugin process, on the `h2` crate directly rather than
//! through tonic's `Channel`. A `Channel` puts every call through a buffer task, and hyper
//! through a dispatch task and, for a request body not known to be complete, a task of
//! its own per call that writes HEADERS and DATA separately: on a 2-vCPU machine, each
//! hand-off between tasks on different threads costs a wake-up. Here the caller's task
//! opens the stream and writes the request body itself (a task of its own only for a body
//! that has to wait: a client stream), and the one connection task reads and writes the
//! socket. The bytes on the socket are the same gRPC over HTTP/2.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use h2::client::SendRequest;
use h2::{RecvStream, SendStream};
use http_body::{Body as _, Frame};
use tonic::body::Body;
use tonic::codegen::http;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// HTTP/2 frame size: far above the protocol's 16 KiB default, so that a state streams in
/// few frames.
const MAX_FRAME_BYTES: u32 = 1 << 20;
/// Flow-control windows: a state streams through without waiting for window updates.
const STREAM_WINDOW_BYTES: u32 = 8 << 20;
const CONNECTION_WINDOW_BYTES: u32 = 16 << 20;
/// How much of a request body is written ahead of the peer's window before the writer
/// waits for it: bounds what a slow plugin makes the host buffer for one stream.
const SEND_AHEAD_BYTES: usize = 1 << 20;

/// A call the plugin never received: the connection could not be made, or was gone
/// before the request was handed to it. Such a call may go to another process.
#[derive(Debug)]
pub struct NotSent(pub BoxError);

impl std::fmt::Display for NotSent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the call was not sent: {}", self.0)
    }
}

impl std::error::Error for NotSent {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref())
    }
}

/// A lazily connecting HTTP/2 client for one plugin's socket; it reconnects when its
/// connection is gone. Cheap to clone: clones share the connection.
#[derive(Clone)]
pub struct PluginTransport {
    shared: Arc<Shared>,
}

struct Shared {
    path: PathBuf,
    /// The open connection's request handle; `None` until the first call, or once found
    /// broken.
    sender: Mutex<Option<SendRequest<Bytes>>>,
    /// Held while connecting, so concurrent first calls make one connection.
    connecting: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for PluginTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginTransport")
            .field("path", &self.shared.path)
            .finish()
    }
}

impl PluginTransport {
    /// A transport to the socket at `path`; nothing connects until the first call.
    pub fn new(path: &Path) -> Self {
        Self {
            shared: Arc::new(Shared {
                path: path.to_owned(),
                sender: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
            }),
        }
    }

    fn cached(&self) -> Option<SendRequest<Bytes>> {
        self.shared
            .sender
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A request handle on a live connection, connecting if there is none.
    async fn sender(&self) -> Result<SendRequest<Bytes>, NotSent> {
        if let Some(sender) = self.cached() {
            return Ok(sender);
        }
        let _connecting = self.shared.connecting.lock().await;
        if let Some(sender) = self.cached() {
            return Ok(sender);
        }
        let io = tokio::net::UnixStream::connect(&self.shared.path)
            .await
            .map_err(|e| NotSent(e.into()))?;
        let (sender, connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            .max_frame_size(MAX_FRAME_BYTES)
            .handshake::<_, Bytes>(io)
            .await
            .map_err(|e| NotSent(e.into()))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("plugin connection ended: {e}");
            }
        });
        *self.shared.sender.lock().unwrap_or_else(|p| p.into_inner()) = Some(sender.clone());
        Ok(sender)
    }

    /// Forgets the cached connection, found broken: the next call connects anew.
    fn forget(&self) {
        *self.shared.sender.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// A request handle ready for one more stream: on the cached connection, or on a new
    /// one when the cached one turns out to be gone.
    async fn ready(&self) -> Result<SendRequest<Bytes>, NotSent> {
        let sender = self.sender().await?;
        match sender.ready().await {
            Ok(ready) => Ok(ready),
            Err(_) => {
                self.forget();
                let sender = self.sender().await?;
                sender.ready().await.map_err(|e| NotSent(e.into()))
            }
        }
    }

    async fn send<B>(self, request: http::Request<B>) -> Result<http::Response<Body>, BoxError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let mut sender = self.ready().await?;
        let (mut parts, body) = request.into_parts();
        parts.uri = with_origin(parts.uri)?;
        let head = http::Request::from_parts(parts, ());
        let body_done = body.is_end_stream();
        let (response, stream) = sender
            .send_request(head, body_done)
            .map_err(|e| NotSent(e.into()))?;
        if !body_done {
            let mut pump = Pump {
                body: Box::pin(body),
                stream,
                pending: None,
                started: false,
            };
            // Written from this task while the body has it ready (a unary call's one
            // message); only a body that has to wait gets a task of its own.
            let finished = std::future::poll_fn(|cx| Poll::Ready(pump.poll_pump(cx))).await;
            if finished.is_pending() {
                tokio::spawn(std::future::poll_fn(move |cx| pump.poll_pump(cx)));
            }
        }
        let response = response.await?;
        Ok(response.map(|recv| {
            Body::new(Received {
                recv,
                trailers: false,
                done: false,
            })
        }))
    }
}

/// HTTP/2 needs the scheme and authority the generated clients leave out (a tonic
/// `Channel` adds them from its endpoint).
fn with_origin(uri: http::Uri) -> Result<http::Uri, BoxError> {
    if uri.scheme().is_some() {
        return Ok(uri);
    }
    let mut parts = uri.into_parts();
    parts.scheme = Some(http::uri::Scheme::HTTP);
    parts.authority = Some(http::uri::Authority::from_static("baton-plugin"));
    Ok(http::Uri::from_parts(parts)?)
}

impl<B> tower::Service<http::Request<B>> for PluginTransport
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<http::Response<Body>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness is per call: each waits for its connection in `send`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        Box::pin(self.clone().send(request))
    }
}

/// Writes a request body into its HTTP/2 stream, within the peer's window.
struct Pump<B> {
    body: Pin<Box<B>>,
    stream: SendStream<Bytes>,
    /// Data taken from the body and not yet written.
    pending: Option<(Bytes, bool)>,
    /// Whether a message has been written.
    started: bool,
}

impl<B> Pump<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    /// `Ready` once the body is written (or abandoned: the stream was reset, or the body
    /// failed, which resets it).
    fn poll_pump(&mut self, cx: &mut Context<'_>) -> Poll<()> {
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
                        if let Ok(trailers) = frame.into_trailers() {
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
                    tracing::debug!("a request body failed: {e}");
                    self.stream.send_reset(h2::Reason::CANCEL);
                    return Poll::Ready(());
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// A response body read from its HTTP/2 stream, giving the peer its window back as the
/// data is taken.
struct Received {
    recv: RecvStream,
    /// The data has all been read; the trailers are next.
    trailers: bool,
    /// The trailers have been read too.
    done: bool,
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
