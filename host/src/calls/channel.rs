//! [`PluginChannel`]: a plugin's application services (its own `.proto`) called through
//! any tonic-generated client, on the same route as `invoke`: a call waits while the
//! plugin starts, restarts or hands over, counts as in flight until its response ends
//! (a stream, until its last message), carries the launch token, and fails with a
//! status that names the plugin.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::{Code, Status};
use tower::{Service, ServiceExt};

use crate::calls::handle::{self, PluginHandle};
use crate::calls::plugin_set::PluginSet;
use crate::calls::reclaim::Reclaimable;
use crate::calls::route::{Live, StreamSlot};
use crate::io::message_limit::LimitedBody;

/// Calls a plugin's application services: `TriggerClient::new(handle.channel())`.
/// Cheap to clone; every clone follows the plugin across restarts and handovers.
#[derive(Clone, Debug)]
pub struct PluginChannel {
    handle: PluginHandle,
    /// Set for the daemon's forwarding (the plugins it forwards to, named in its
    /// refusals): only the services the serving generation's `Describe` lists (and
    /// reflection) are called. A library's own code calls what its clients name.
    described_only: Option<PluginSet>,
}

impl PluginChannel {
    pub(crate) fn new(handle: PluginHandle) -> Self {
        Self {
            handle,
            described_only: None,
        }
    }

    /// A channel for calls from outside the host: each is refused, before it reaches
    /// the plugin, unless the generation that would serve it describes its service.
    pub(crate) fn described_only(handle: PluginHandle, plugins: PluginSet) -> Self {
        Self {
            handle,
            described_only: Some(plugins),
        }
    }
}

impl PluginHandle {
    /// A channel to the plugin's application services, for any tonic-generated client
    /// (`TriggerClient::new(handle.channel())`); see [`PluginChannel`].
    pub fn channel(&self) -> PluginChannel {
        PluginChannel::new(self.clone())
    }
}

impl tower::Service<http::Request<Body>> for PluginChannel {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Readiness is the route's: each call waits for a serving generation itself.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let handle = self.handle.clone();
        let described_only = self.described_only.clone();
        Box::pin(async move { Ok(send(handle, request, described_only).await) })
    }
}

/// One call: wait for a serving generation, send, and wrap the answer so that the call
/// stays counted in flight (and in the metrics) until its response ends.
async fn send(
    handle: PluginHandle,
    request: http::Request<Body>,
    described_only: Option<PluginSet>,
) -> http::Response<Body> {
    let path: Arc<str> = Arc::from(request.uri().path());
    // Judged whole by a described-only channel: a query must not slip past the check.
    let whole = request
        .uri()
        .path_and_query()
        .map_or_else(|| path.to_string(), |p| p.as_str().to_owned());
    let started = std::time::Instant::now();
    // Each message of the request is held to the plugin's max_message_bytes as it goes.
    let (parts, mut body, refused) = {
        let (parts, body) = request.into_parts();
        let (limiter, named) = (handle.clone(), path.clone());
        let refuse = Box::new(move |size| limiter.oversized(&named, size));
        let (body, refused) = LimitedBody::new(body, handle.max_message_bytes(), refuse);
        (parts, Reclaimable::new(Body::new(body)), refused)
    };
    let end = |code: Code| handle.record_typed(&path, code, started);
    let deadline = tokio::time::Instant::now() + handle.call_timeout();
    let mut dead_generation = None;
    loop {
        let live = match handle.serving(deadline, dead_generation).await {
            Ok(live) => live,
            Err(status) => {
                end(status.code());
                return status.into_http();
            }
        };
        // Judged against the generation that would serve it: a handover may bring a
        // build that describes other services. Never counted: it never reached the
        // plugin, and a client's made-up names would each become a metric.
        if let Some(plugins) = &described_only
            && let Some(refusal) = crate::calls::forward_refusal::undescribed(
                handle.name(),
                &live.services,
                &whole,
                plugins,
            )
        {
            return refusal.into_http();
        }
        // Registered from the start: a call still waiting for its answer (a client
        // stream the caller keeps sending on, say) is ended like an open response
        // stream when a handover has waited `stream_drain_ms` for it.
        let generation = live.live();
        let slot = Arc::new(StreamSlot::holding(live, body.finished()));
        generation.register_stream(&slot);
        let mut transport = generation.transport.clone();
        let request = http::Request::from_parts(parts.clone(), body.attempt());
        let answer = tokio::select! {
            answer = async {
                match ServiceExt::<http::Request<Body>>::ready(&mut transport).await {
                    Ok(transport) => transport.call(request).await,
                    Err(e) => Err(e),
                }
            } => answer,
            status = slot.ended() => {
                end(status.code());
                return status.into_http();
            }
        };
        // A request that stopped itself at a message over max_message_bytes: that is
        // the whole story, whatever came back (a reset stream, or the plugin's view of
        // a cut one).
        if let Some(status) = refused.get() {
            drop(slot);
            end(status.code());
            return status.clone().into_http();
        }
        let e = match answer {
            Ok(response) => {
                return answered(&handle, response, slot, generation, path, started, refused);
            }
            Err(e) => e,
        };
        drop(slot);
        let status = Status::from_error(e);
        // Refused before any of it left, by a process found dead: the call waits for
        // the next generation like one made during a restart.
        if handle::never_sent(&status)
            && let Some(unsent) = body.reclaim()
            && handle.died(&generation).await
        {
            body = unsent;
            dead_generation = Some(generation.generation);
            continue;
        }
        let status = handle.explain_typed(&generation, &path, status).await;
        end(status.code());
        return status.into_http();
    }
}

/// The caller's view of an answer that came: a trailers-only one says it all; any
/// other is a body that stays counted in flight until it ends.
fn answered(
    handle: &PluginHandle,
    response: http::Response<Body>,
    slot: Arc<StreamSlot>,
    generation: Arc<Live>,
    path: Arc<str>,
    started: std::time::Instant,
    refused: Arc<OnceLock<Status>>,
) -> http::Response<Body> {
    if let Some(code) = grpc_code(response.headers()) {
        handle.record_typed(&path, code, started);
        return response;
    }
    let (parts, body) = response.into_parts();
    slot.answering.store(true, Ordering::Relaxed);
    // The plugin's answers are held to its max_message_bytes too: a plugin cannot make
    // its caller (or the daemon, forwarding) take in more than its config allows.
    let (limiter, named) = (handle.clone(), path.clone());
    let refuse = Box::new(move |size| limiter.oversized_answer(&named, size));
    let (body, _) = LimitedBody::new(body, handle.max_message_bytes(), refuse);
    let body = CallBody {
        inner: Body::new(body),
        slot,
        generation,
        handle: handle.clone(),
        path,
        started,
        refused,
        done: false,
        broken: None,
    };
    http::Response::from_parts(parts, Body::new(body))
}

/// The gRPC status in a header map (trailers, or a trailers-only response's headers).
fn grpc_code(headers: &http::HeaderMap) -> Option<Code> {
    let value = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    Some(Code::from(value))
}

/// A response body on its way from a generation to a caller.
struct CallBody {
    inner: Body,
    slot: Arc<StreamSlot>,
    /// The generation answering, to name it if the stream breaks.
    generation: Arc<Live>,
    handle: PluginHandle,
    path: Arc<str>,
    started: std::time::Instant,
    /// Where the request's refusal is, if it stopped at a message over the limit.
    refused: Arc<OnceLock<Status>>,
    done: bool,
    /// After the stream broke: the status its caller gets, once known.
    broken: Option<Pin<Box<dyn Future<Output = Status> + Send>>>,
}

impl CallBody {
    fn finish(&mut self, code: Code) {
        if !self.done {
            self.done = true;
            self.slot.release();
            self.handle.record_typed(&self.path, code, self.started);
        }
    }
}

impl http_body::Body for CallBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(broken) = &mut this.broken {
            let status = std::task::ready!(broken.as_mut().poll(cx));
            this.broken = None;
            this.finish(status.code());
            return Poll::Ready(Some(Err(status)));
        }
        if let Some(status) = this.slot.ended_or_wake(cx.waker()) {
            this.finish(status.code());
            return Poll::Ready(Some(Ok(Frame::trailers(status_trailers(&status)))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_code) {
                    this.finish(code);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(status))) => {
                // A request cut at a message over the limit resets the stream, whose
                // answer may have begun (a bidirectional call): the refusal says why.
                if let Some(refusal) = this.refused.get() {
                    let refusal = refusal.clone();
                    this.finish(refusal.code());
                    return Poll::Ready(Some(Err(refusal)));
                }
                // An answer over the limit, stopped here: nothing to explain.
                if status.code() == Code::OutOfRange {
                    this.finish(status.code());
                    return Poll::Ready(Some(Err(status)));
                }
                // Learn (briefly) whether the process died, to say so.
                let (handle, live, path) = (
                    this.handle.clone(),
                    this.generation.clone(),
                    this.path.clone(),
                );
                this.broken = Some(Box::pin(async move {
                    handle.explain_stream(&live, &path, status).await
                }));
                self.poll_frame(cx)
            }
            Poll::Ready(None) => {
                this.finish(Code::Ok);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for CallBody {
    fn drop(&mut self) {
        // A caller that drops a stream before its end cancelled it.
        self.finish(Code::Cancelled);
    }
}

/// Trailers carrying `status`, as a gRPC server ends a stream with it.
fn status_trailers(status: &Status) -> http::HeaderMap {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from(status.code() as i32));
    // The message travels percent-encoded, as gRPC requires.
    let message: String = status
        .message()
        .bytes()
        .map(|b| {
            if (0x20..0x7f).contains(&b) && b != b'%' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    if let Ok(value) = http::HeaderValue::from_str(&message) {
        trailers.insert("grpc-message", value);
    }
    trailers
}
