//! One client connection: HTTP/1.1 or HTTP/2 (h2c, prior knowledge), its requests sent
//! to the gRPC Flight service by content type and to the HTTP routes otherwise, and the
//! bounds that keep an idle, trickling or stalled client from holding a connection slot.

use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tower::ServiceExt;

use super::flight::{DO_GET_PATH, Flight};
use super::peer::Peer;
use super::{HEADER_TIMEOUT, Refusal, read_body};

/// A connection with no request in progress this long is closed (HTTP/1's keep-alive
/// and HTTP/2 alike), as is one that sends no first request within it.
pub const IDLE_TIMEOUT: Duration = HEADER_TIMEOUT;
/// Requests (streams) one HTTP/2 connection may have in progress at once.
pub const MAX_STREAMS: u32 = 16;
/// The largest header list an HTTP/2 request may send.
pub const MAX_HEADER_LIST: u32 = 64 << 10;
/// How often an HTTP/2 client is pinged, and how long it has to answer, so that a
/// peer gone without a FIN does not hold its slot.
const PING_EVERY: Duration = Duration::from_secs(20);
const PING_TIMEOUT: Duration = Duration::from_secs(20);
/// After a graceful close starts, the time the peer has to let it finish.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Where a connection's requests go.
#[derive(Clone)]
pub struct Services {
    pub router: Router,
    pub flight: FlightServiceServer<Flight>,
    pub tokens: Arc<crate::tokens::Tokens>,
}

/// Requests in progress on one connection: counted from the request's head until its
/// answer's body is dropped (sent or abandoned), so a streamed answer counts as work.
#[derive(Clone)]
struct InProgress(Arc<watch::Sender<usize>>);

/// One request's share of `InProgress`; dropping it ends the request.
struct Working(Arc<watch::Sender<usize>>);

impl InProgress {
    fn start(&self) -> Working {
        self.0.send_modify(|n| *n += 1);
        Working(self.0.clone())
    }
}

impl Drop for Working {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Serves `stream` until the client closes it or it stays idle past `IDLE_TIMEOUT`.
pub async fn serve(stream: TcpStream, services: Services) {
    let (counter, mut changes) = watch::channel(0usize);
    let in_progress = InProgress(Arc::new(counter));
    let peer = match (stream.peer_addr(), stream.local_addr()) {
        (Ok(remote), Ok(local)) => Some(Peer { remote, local }),
        _ => None,
    };
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        let services = services.clone();
        if let Some(peer) = peer {
            request.extensions_mut().insert(peer);
        }
        let working = in_progress.start();
        async move {
            let response = dispatch(request, services).await;
            // The guard rides in the body, so the request ends when its answer does.
            Ok::<_, std::convert::Infallible>(response.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    let _ = &working;
                    frame
                }))
            }))
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(MAX_HEADER_LIST)
        .keep_alive_interval(PING_EVERY)
        .keep_alive_timeout(PING_TIMEOUT);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    // Neither hyper's HTTP/2 nor its version sniffing (which waits for the first bytes
    // without a deadline) closes an idle connection: this loop does, restarting the
    // clock whenever a request starts or ends.
    loop {
        let idle = *changes.borrow_and_update() == 0;
        tokio::select! {
            _ = connection.as_mut() => return,
            changed = changes.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            _ = tokio::time::sleep(IDLE_TIMEOUT), if idle => break,
        }
    }
    connection.as_mut().graceful_shutdown();
    // A peer that never acknowledges the close (HTTP/2's GOAWAY and ping) is cut.
    let _ = tokio::time::timeout(CLOSE_GRACE, connection).await;
}

/// gRPC (`application/grpc...`) to the Flight service, the rest to the HTTP routes.
async fn dispatch(request: Request<Incoming>, services: Services) -> Response {
    let grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    // One gate for both: a Flight query needs the same token as `query_sql`.
    if let Err(why) = super::auth::gate(
        &services.tokens,
        request.method(),
        request.uri(),
        request.headers(),
    ) {
        return if grpc {
            tonic::Status::unauthenticated(why).into_http::<Body>()
        } else {
            unauthorized(why)
        };
    }
    if !grpc {
        return services.router.oneshot(request).await.into_response();
    }
    let (parts, body) = request.into_parts();
    // DoGet's request is one small message: read whole with the HTTP bounds, so a
    // stream that sends its head and then nothing cannot hold the connection. The
    // other RPCs are refused without reading their bodies.
    let body = if parts.uri.path() == DO_GET_PATH {
        match read_body(&parts.headers, Body::new(body)).await {
            Ok(bytes) => Body::from(bytes),
            Err(refusal) => return grpc_refusal(refusal),
        }
    } else {
        Body::new(body)
    };
    match services
        .flight
        .oneshot(Request::from_parts(parts, body))
        .await
    {
        Ok(response) => response.map(Body::new),
        Err(never) => match never {},
    }
}

/// A 401 that says which scheme to answer with.
fn unauthorized(why: String) -> Response {
    let mut response = super::error(StatusCode::UNAUTHORIZED, why);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"tsdb\""),
    );
    response
}

/// A body refused by the HTTP bounds, as the gRPC status a Flight client reads.
fn grpc_refusal(Refusal(code, why): Refusal) -> Response {
    let status = match code {
        StatusCode::PAYLOAD_TOO_LARGE => tonic::Status::resource_exhausted(why),
        StatusCode::REQUEST_TIMEOUT => tonic::Status::deadline_exceeded(why),
        _ => tonic::Status::invalid_argument(why),
    };
    status.into_http::<Body>()
}
