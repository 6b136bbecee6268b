//! A gRPC server on the `h2` crate directly, for the daemon's control socket, the
//! host-services socket and the Rust plugin SDK. hyper's server (under tonic's) runs each
//! call as a task of its own beside the connection's task, so every call crosses between
//! tasks, and threads, twice. Here each connection's task reads and writes its socket and
//! runs its calls itself, interleaved: a call forwarded to a plugin is woken straight by
//! the plugin's answer. On a multi-thread runtime whose handlers may hog a thread, calls
//! can be given tasks of their own instead ([`ServerConfig::spawn_calls`]). The calls are
//! tonic services like any other (a router, with whatever layers in front).

use std::convert::Infallible;
use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use h2::RecvStream;
use h2::server::SendResponse;
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::transport::server::Connected;
use tower::{Service, ServiceExt};

use crate::body::{Pump, Received};
use crate::spin::MAX_SPIN;
use crate::unary_route::UnaryRoute;

/// Bytes of headers per request or answer (h2's own default is 16 MiB; hyper's server
/// kept 16 KiB): metadata beyond this is refused, not held.
pub const MAX_HEADER_BYTES: u32 = 64 << 10;

/// How long a connection may take to open HTTP/2 (its client's preface): one that sends
/// nothing would otherwise hold one of its socket's connection slots for ever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How a server treats its connections. The defaults suit a socket an untrusted peer
/// reaches: small windows, bounded streams and headers.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Names the socket in log lines ("control socket", "host services", "plugin").
    what: &'static str,
    stream_window: u32,
    connection_window: u32,
    max_frame: u32,
    max_streams: u32,
    spawn_calls: bool,
    spin: Duration,
    /// Methods served by hand rather than by the service.
    unary: std::sync::Arc<Vec<UnaryRoute>>,
}

impl ServerConfig {
    /// The defaults, for the socket `what` names: per stream, a peer may send 1 MiB before
    /// its data is read and 2 MiB per connection (what hyper's server kept), in frames of
    /// up to 1 MiB; 1024 calls at once per connection (each is a call this server runs,
    /// so a peer does not get to add them without end); calls run in the connection's
    /// task; no spinning.
    pub fn new(what: &'static str) -> Self {
        Self {
            what,
            stream_window: 1 << 20,
            connection_window: 2 << 20,
            max_frame: 1 << 20,
            max_streams: 1024,
            spawn_calls: false,
            spin: Duration::ZERO,
            unary: std::sync::Arc::default(),
        }
    }

    /// Flow-control windows, per stream and per connection: what a peer may send before
    /// the server reads it. Large windows let a large message (a plugin's state) stream
    /// through without waiting for window updates.
    pub fn windows(mut self, stream: u32, connection: u32) -> Self {
        self.stream_window = stream;
        self.connection_window = connection;
        self
    }

    /// Runs each call as a task of its own rather than in its connection's task: on a
    /// multi-thread runtime, a handler that hogs its thread (CPU-heavy, or blocking)
    /// then holds up no other call on the same connection, at the price of a hand-off
    /// between tasks per call.
    pub fn spawn_calls(mut self, spawn: bool) -> Self {
        self.spawn_calls = spawn;
        self
    }

    /// Serves `route`'s method by hand (see [`UnaryRoute`]); calls to every other path go
    /// to the service as before.
    pub fn unary(mut self, route: UnaryRoute) -> Self {
        let routes = std::sync::Arc::make_mut(&mut self.unary);
        routes.retain(|r| r.path != route.path);
        routes.push(route);
        self
    }

    /// After a call's answer is written, keeps polling the connection for the next call
    /// for up to `budget` (at most [`MAX_SPIN`]) before the task sleeps: see
    /// [`spin_on`](crate::spin_on). Zero (the default) sleeps at once.
    pub fn spin(mut self, budget: Duration) -> Self {
        self.spin = budget.min(MAX_SPIN);
        self
    }
}

/// Serves `service` on each connection `incoming` yields until `shutdown` completes;
/// then asks every connection to finish (HTTP/2 GOAWAY: calls in flight go on, no new
/// ones start) and returns once they have. Each connection's `connect_info` is put in
/// its requests' extensions, as tonic's server does.
pub async fn serve<I, T, S, B>(
    config: ServerConfig,
    mut incoming: I,
    service: S,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Infallible>
where
    I: futures_util::Stream<Item = std::io::Result<T>> + Unpin,
    T: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    T::ConnectInfo: Clone + Send + Sync + 'static,
    S: Service<http::Request<Body>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError>,
{
    let (stop, stopping) = watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            next = incoming.next() => match next {
                Some(Ok(io)) => {
                    connections.spawn(connection(
                        config.clone(),
                        io,
                        service.clone(),
                        stopping.clone(),
                    ));
                }
                Some(Err(e)) => tracing::debug!("{}: a connection failed: {e}", config.what),
                None => break,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = &mut shutdown => break,
        }
    }
    let _ = stop.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

async fn connection<T, S, B>(
    config: ServerConfig,
    io: T,
    service: S,
    mut stopping: watch::Receiver<bool>,
) where
    T: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    T::ConnectInfo: Clone + Send + Sync + 'static,
    S: Service<http::Request<Body>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError>,
{
    let info = io.connect_info();
    let what = config.what;
    let handshake = h2::server::Builder::new()
        .initial_window_size(config.stream_window)
        .initial_connection_window_size(config.connection_window)
        .max_frame_size(config.max_frame)
        .max_concurrent_streams(config.max_streams)
        .max_header_list_size(MAX_HEADER_BYTES)
        .handshake::<_, Bytes>(io);
    let mut conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!("{what}: no HTTP/2 handshake: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!("{what}: no HTTP/2 handshake within {HANDSHAKE_TIMEOUT:?}: closed");
            return;
        }
    };
    let mut calls: FuturesUnordered<BoxFuture<'static, ()>> = FuturesUnordered::new();
    let mut asked_to_stop = *stopping.borrow();
    if asked_to_stop {
        conn.graceful_shutdown();
    }
    // Until when to keep polling rather than sleep: set as each answer is written.
    let mut spin_until: Option<Instant> = None;
    loop {
        let spinning = spin_until.is_some_and(|until| Instant::now() < until);
        tokio::select! {
            biased;
            Some(()) = calls.next(), if !calls.is_empty() => {
                if !config.spin.is_zero() {
                    spin_until = Some(Instant::now() + config.spin);
                }
            }
            accepted = conn.accept() => match accepted {
                Some(Ok((request, respond))) => {
                    let by_hand = config.unary.iter().find(|r| r.path == request.uri().path());
                    let answer: BoxFuture<'static, ()> = match by_hand {
                        Some(route) => {
                            let timeout = grpc_timeout(request.headers());
                            Box::pin(route.clone().serve(request, respond, timeout))
                        }
                        None => Box::pin(call(request, respond, service.clone(), info.clone())),
                    };
                    if config.spawn_calls {
                        let task = tokio::spawn(answer);
                        calls.push(Box::pin(async move {
                            let _ = task.await;
                        }));
                    } else {
                        calls.push(answer);
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!("{what}: a connection ended: {e}");
                    break;
                }
                None => break,
            },
            Ok(()) = stopping.changed(), if !asked_to_stop => {
                asked_to_stop = true;
                conn.graceful_shutdown();
            }
            // Tokio polls the I/O driver, without blocking, before it runs a yielded
            // task again: the next call is read as soon as it lands.
            () = tokio::task::yield_now(), if spinning => {}
        }
    }
    // The connection is gone; what the calls still write goes nowhere, but they end.
    while calls.next().await.is_some() {}
}

async fn call<S, C, B>(
    request: http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    mut service: S,
    info: C,
) where
    S: Service<http::Request<Body>, Response = http::Response<B>, Error = Infallible>,
    C: Clone + Send + Sync + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError>,
{
    let (mut parts, recv) = request.into_parts();
    parts.extensions.insert(info);
    let timeout = grpc_timeout(&parts.headers);
    let request = http::Request::from_parts(parts, Body::new(Received::new(recv)));
    let answer = async {
        match service.ready().await {
            Ok(service) => match service.call(request).await {
                Ok(response) => response.map(Body::new),
                Err(never) => match never {},
            },
            Err(never) => match never {},
        }
    };
    let response = match timeout {
        Some(t) => tokio::time::timeout(t, answer).await.unwrap_or_else(|_| {
            Status::deadline_exceeded(format!("no answer within the call's deadline of {t:?}"))
                .into_http()
        }),
        None => answer.await,
    };
    let (mut parts, body) = response.into_parts();
    // A trailers-only answer carries its status here.
    crate::header_block::bound(&mut parts.headers);
    let end = body.is_end_stream();
    let Ok(stream) = respond.send_response(http::Response::from_parts(parts, ()), end) else {
        return;
    };
    if !end {
        let mut pump = Pump::answer(body, stream);
        std::future::poll_fn(|cx| pump.poll_pump(cx)).await;
    }
}

/// The call's deadline from its `grpc-timeout` header (digits and a unit: H, M, S, m, u,
/// n), as gRPC defines it; none if absent or malformed.
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_are_read_as_grpc_writes_them() {
        let of = |v: &'static str| {
            let mut h = http::HeaderMap::new();
            h.insert("grpc-timeout", http::HeaderValue::from_static(v));
            grpc_timeout(&h)
        };
        assert_eq!(of("2S"), Some(Duration::from_secs(2)));
        assert_eq!(of("150m"), Some(Duration::from_millis(150)));
        assert_eq!(of("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(of("99999999u"), Some(Duration::from_micros(99_999_999)));
        for bad in ["", "S", "5", "5x", "123456789S", "-1S"] {
            assert_eq!(of(bad), None, "{bad}");
        }
    }
}
