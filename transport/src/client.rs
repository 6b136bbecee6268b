//! A client's HTTP/2 connection to one Unix socket (the host's to a plugin process, a
//! caller's to the daemon), on the `h2` crate directly rather than through tonic's
//! `Channel`. A `Channel` puts every call through a buffer task, and hyper
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
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use tonic::body::Body;
use tonic::codegen::http;

use crate::body::{Pump, Received};
use crate::server::MAX_HEADER_BYTES;
use crate::unread::Outbound;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// HTTP/2 frame size: far above the protocol's 16 KiB default, so that a state streams in
/// few frames.
const MAX_FRAME_BYTES: u32 = 1 << 20;
/// Flow-control windows: a state streams through without waiting for window updates.
const STREAM_WINDOW_BYTES: u32 = 8 << 20;
const CONNECTION_WINDOW_BYTES: u32 = 16 << 20;

/// A call the server never received: the connection could not be made, or was gone
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

/// A lazily connecting HTTP/2 client for one Unix socket; it reconnects when its
/// connection is gone. Cheap to clone: clones share the connection. A tower service that
/// tonic-generated clients accept.
#[derive(Clone)]
pub struct UnixClient {
    shared: Arc<Shared>,
}

struct Shared {
    path: PathBuf,
    /// How long a call polls for its answer before its task sleeps.
    spin: Duration,
    /// The open connection: its request handle, and what its bytes say about its calls.
    /// `None` until the first call, or once found broken.
    conn: Mutex<Option<Conn>>,
    /// Held while connecting, so concurrent first calls make one connection.
    connecting: tokio::sync::Mutex<()>,
}

/// An open connection: its request handle, and what its bytes say about its calls.
#[derive(Clone)]
pub(crate) struct Conn {
    pub(crate) sender: SendRequest<Bytes>,
    pub(crate) outbound: Arc<Outbound>,
}

impl std::fmt::Debug for UnixClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnixClient")
            .field("path", &self.shared.path)
            .field("spin", &self.shared.spin)
            .finish()
    }
}

impl UnixClient {
    /// A client of the socket at `path`; nothing connects until the first call.
    pub fn new(path: &Path) -> Self {
        Self::with_spin(path, Duration::ZERO)
    }

    /// A client whose calls, once sent, poll for their answer for up to `spin` (at most
    /// [`MAX_SPIN`](crate::MAX_SPIN)) before their task sleeps: see
    /// [`spin_on`](crate::spin_on).
    pub fn with_spin(path: &Path, spin: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                path: path.to_owned(),
                spin: spin.min(crate::MAX_SPIN),
                conn: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Connects now, if not connected yet, rather than at the first call: for a caller
    /// that wants an unreachable socket reported up front.
    pub async fn connect(&self) -> Result<(), NotSent> {
        self.connection().await.map(drop)
    }

    fn cached(&self) -> Option<Conn> {
        self.shared
            .conn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A live connection, connecting if there is none.
    async fn connection(&self) -> Result<Conn, NotSent> {
        if let Some(conn) = self.cached() {
            return Ok(conn);
        }
        let _connecting = self.shared.connecting.lock().await;
        if let Some(conn) = self.cached() {
            return Ok(conn);
        }
        let (io, outbound) = tokio::net::UnixStream::connect(&self.shared.path)
            .await
            .and_then(crate::QuietUnix::watched)
            .map_err(|e| NotSent(e.into()))?;
        let (sender, connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            .max_frame_size(MAX_FRAME_BYTES)
            // Answer headers are bounded like a caller's request headers at a server.
            .max_header_list_size(MAX_HEADER_BYTES)
            .handshake::<_, Bytes>(io)
            .await
            .map_err(|e| NotSent(e.into()))?;
        let path = self.shared.path.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("the connection to {} ended: {e}", path.display());
            }
        });
        let conn = Conn { sender, outbound };
        *self.shared.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn.clone());
        Ok(conn)
    }

    /// How long a call polls for its answer before its task sleeps.
    pub(crate) fn spin(&self) -> Duration {
        self.shared.spin
    }

    /// Forgets the cached connection, found broken: the next call connects anew.
    fn forget(&self) {
        *self.shared.conn.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// A connection ready for one more stream: the cached one, or a new one when the
    /// cached one turns out to be gone.
    pub(crate) async fn ready(&self) -> Result<Conn, NotSent> {
        let conn = self.connection().await?;
        match conn.sender.ready().await {
            Ok(sender) => Ok(Conn { sender, ..conn }),
            Err(_) => {
                self.forget();
                let conn = self.connection().await?;
                let sender = conn.sender.ready().await.map_err(|e| NotSent(e.into()))?;
                Ok(Conn { sender, ..conn })
            }
        }
    }

    async fn send<B>(self, request: http::Request<B>) -> Result<http::Response<Body>, BoxError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let mut sender = self.ready().await?.sender;
        let (mut parts, body) = request.into_parts();
        parts.uri = with_origin(parts.uri)?;
        let head = http::Request::from_parts(parts, ());
        let body_done = body.is_end_stream();
        let (response, stream) = sender
            .send_request(head, body_done)
            .map_err(|e| NotSent(e.into()))?;
        if !body_done {
            let mut pump = Pump::request(body, stream);
            // Written from this task while the body has it ready (a unary call's one
            // message); only a body that has to wait gets a task of its own.
            let finished = std::future::poll_fn(|cx| Poll::Ready(pump.poll_pump(cx))).await;
            if finished.is_pending() {
                tokio::spawn(std::future::poll_fn(move |cx| pump.poll_pump(cx)));
            }
        }
        let response = crate::spin_on(response, self.shared.spin).await?;
        Ok(response.map(|recv| Body::new(Received::new(recv))))
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
    parts.authority = Some(http::uri::Authority::from_static("baton"));
    Ok(http::Uri::from_parts(parts)?)
}

impl<B> tower::Service<http::Request<B>> for UnixClient
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
