//! The daemon's gRPC server on its control socket, on the `h2` crate directly. hyper's
//! server (under tonic's) runs each call as a task of its own beside the connection's
//! task, so every call crosses between tasks, and threads, twice. Here each connection's
//! task reads and writes its socket and runs its calls itself, interleaved: a call
//! forwarded to a plugin is woken straight by the plugin's answer. The calls are tonic
//! services like any other (the control API's router, with forwarding in front).

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
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

use crate::h2_body::{Pump, Received};

const MAX_FRAME_BYTES: u32 = 1 << 20;
/// Flow-control windows: what a peer may send before its data is read, per stream and
/// per connection. A plugin reaches the host-services socket, so these bound what it can
/// make the host hold (hyper's server, before, kept 1 MiB for each).
const STREAM_WINDOW_BYTES: u32 = 1 << 20;
const CONNECTION_WINDOW_BYTES: u32 = 2 << 20;
/// Streams one connection may have open at once: each is a call this connection's task
/// runs, so a peer (a plugin, on the host-services socket) does not get to add them
/// without end.
const MAX_STREAMS: u32 = 1024;
/// Bytes of headers per request (h2's own default is 16 MiB; hyper's server kept 16 KiB):
/// metadata beyond this is refused, not held.
pub(crate) const MAX_HEADER_BYTES: u32 = 64 << 10;

/// Serves `service` on each connection `incoming` yields until `shutdown` completes;
/// then asks every connection to finish (HTTP/2 GOAWAY: calls in flight go on, no new
/// ones start) and returns once they have. Each connection's `connect_info` is put in
/// its requests' extensions, as tonic's server does.
pub async fn serve<I, T, S, B>(
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
                    connections.spawn(connection(io, service.clone(), stopping.clone()));
                }
                Some(Err(e)) => tracing::debug!("control socket: a connection failed: {e}"),
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

async fn connection<T, S, B>(io: T, service: S, mut stopping: watch::Receiver<bool>)
where
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
    let mut conn = match h2::server::Builder::new()
        .initial_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(MAX_HEADER_BYTES)
        .handshake::<_, Bytes>(io)
        .await
    {
        Ok(conn) => conn,
        Err(e) => {
            tracing::debug!("control socket: no HTTP/2 handshake: {e}");
            return;
        }
    };
    let mut calls = FuturesUnordered::new();
    let mut asked_to_stop = *stopping.borrow();
    if asked_to_stop {
        conn.graceful_shutdown();
    }
    loop {
        tokio::select! {
            accepted = conn.accept() => match accepted {
                Some(Ok((request, respond))) => {
                    calls.push(call(request, respond, service.clone(), info.clone()));
                }
                Some(Err(e)) => {
                    tracing::debug!("control socket: a connection ended: {e}");
                    break;
                }
                None => break,
            },
            Some(()) = calls.next(), if !calls.is_empty() => {}
            Ok(()) = stopping.changed(), if !asked_to_stop => {
                asked_to_stop = true;
                conn.graceful_shutdown();
            }
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
    let (parts, body) = response.into_parts();
    let end = body.is_end_stream();
    let Ok(stream) = respond.send_response(http::Response::from_parts(parts, ()), end) else {
        return;
    };
    if !end {
        let mut pump = Pump::new(body, stream);
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
