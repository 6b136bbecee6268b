//! A unary method served by hand, beside the tower service that serves the rest: the
//! server side of [`UnixClient::unary`](crate::UnixClient::unary), for the Rust SDK's
//! `Invoke`. Through tonic's server the same call puts its request through the body
//! wrappers and a decoding buffer, and its answer through an encoding body written frame
//! by frame; here the request's message is a slice of the DATA frame it came in, the
//! handler gets it with the request's headers, and the answer goes out as its headers,
//! one DATA frame and the `grpc-status: 0` trailers. A failure is answered as tonic
//! answers one: its status in the headers, and nothing more.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use h2::RecvStream;
use h2::server::SendResponse;
use tonic::Status;
use tonic::codegen::http;

use crate::framing::{Assembler, PREFIX};
use crate::router::Check;

/// Answers a request's message (given with the request's headers) with the answer's
/// frame, or a status.
pub type UnaryHandler =
    dyn Fn(http::HeaderMap, Bytes) -> BoxFuture<'static, Result<Framed, Status>> + Send + Sync;

/// An answer's frame (prefix and message), in one piece or two: a message that ends in a
/// large byte field can pass that field on as the second piece, without copying it
/// into a buffer of its own (a 64 KiB copy per call, and a heap that grows and shrinks
/// with it).
pub struct Framed {
    /// The prefix and the message, or its start.
    pub head: Bytes,
    /// The rest of the message; may be empty.
    pub tail: Bytes,
}

impl From<Bytes> for Framed {
    /// A frame in one piece, as [`grpc_frame`](crate::grpc_frame) makes it.
    fn from(head: Bytes) -> Self {
        Self {
            head,
            tail: Bytes::new(),
        }
    }
}

/// One method served by hand: its path, the check its calls pass first, the largest
/// message either way, and its handler.
#[derive(Clone)]
pub struct UnaryRoute {
    pub(crate) path: &'static str,
    check: Option<Arc<Check>>,
    max_message: usize,
    handler: Arc<UnaryHandler>,
}

impl std::fmt::Debug for UnaryRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnaryRoute")
            .field("path", &self.path)
            .field("max_message", &self.max_message)
            .finish()
    }
}

impl UnaryRoute {
    /// `path` (`/package.Service/Method`) answered by `handler`, for calls `check` lets
    /// through, whose request and answer are each at most `max_message` bytes.
    pub fn new(
        path: &'static str,
        check: Option<Arc<Check>>,
        max_message: usize,
        handler: Arc<UnaryHandler>,
    ) -> Self {
        Self {
            path,
            check,
            max_message,
            handler,
        }
    }

    /// Serves one call of this method, within `timeout` if the call has one.
    pub(crate) async fn serve(
        self,
        request: http::Request<RecvStream>,
        mut respond: SendResponse<Bytes>,
        timeout: Option<std::time::Duration>,
    ) {
        let (parts, body) = request.into_parts();
        let answer = async {
            if let Some(check) = &self.check {
                check(&parts.headers)?;
            }
            let message = read_message(body, self.max_message).await?;
            let frame = (self.handler)(parts.headers, message).await?;
            let len = frame.head.len() + frame.tail.len();
            if len > PREFIX + self.max_message {
                return Err(Status::out_of_range(format!(
                    "the answer is {} bytes, over the limit of {} bytes",
                    len.saturating_sub(PREFIX),
                    self.max_message
                )));
            }
            Ok(frame)
        };
        let answer = match timeout {
            Some(t) => tokio::time::timeout(t, answer).await.unwrap_or_else(|_| {
                Err(Status::deadline_exceeded(format!(
                    "no answer within the call's deadline of {t:?}"
                )))
            }),
            None => answer.await,
        };
        match answer {
            Ok(frame) => {
                let mut head = http::Response::new(());
                head.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/grpc"),
                );
                let Ok(mut stream) = respond.send_response(head, false) else {
                    return;
                };
                if stream.send_data(frame.head, false).is_err() {
                    return;
                }
                if !frame.tail.is_empty() && stream.send_data(frame.tail, false).is_err() {
                    return;
                }
                let mut trailers = http::HeaderMap::with_capacity(1);
                trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                let _ = stream.send_trailers(trailers);
            }
            Err(status) => {
                let (head, ()) = status.into_http::<()>().into_parts();
                let _ = respond.send_response(http::Response::from_parts(head, ()), true);
            }
        }
    }
}

/// The request's one message, read to the end of its stream.
async fn read_message(mut body: RecvStream, max: usize) -> Result<Bytes, Status> {
    let mut message = Assembler::new(max);
    while let Some(data) = body.data().await {
        let data = data.map_err(|e| Status::from_error(Box::new(e)))?;
        let _ = body.flow_control().release_capacity(data.len());
        message.take(data)?;
    }
    message
        .into_message()
        .map(crate::framing::Message::into_bytes)
        .ok_or_else(|| Status::internal("the request of a unary call carried no message"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::time::Duration;

    use tonic::Code;
    use tonic::body::Body;

    use crate::UnixClient;

    /// A server on a real socket with `/t.T/Echo` served by hand (the message back,
    /// after a pause as long as its first byte says in ms; `fail` answers its status)
    /// for calls carrying `x-test: yes`, and the service answering every other path.
    fn server(max: usize) -> (tempfile::TempDir, UnixClient) {
        let check: Arc<Check> = Arc::new(|headers| match headers.get("x-test") {
            Some(v) if v == "yes" => Ok(()),
            _ => Err(Status::unauthenticated("no x-test")),
        });
        let handler: Arc<UnaryHandler> = Arc::new(|_headers, message: Bytes| {
            Box::pin(async move {
                if &message[..] == b"fail" {
                    return Err(Status::not_found("asked to fail"));
                }
                let pause = message.first().copied().unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(u64::from(pause))).await;
                // In two pieces: the prefix and the first byte, then the rest.
                let split = message.len().min(1);
                let head = crate::grpc_frame_start(message.len(), &message[..split])?;
                Ok(Framed {
                    head,
                    tail: message.slice(split..),
                })
            })
        });
        let config = crate::ServerConfig::new("test").unary(UnaryRoute::new(
            "/t.T/Echo",
            Some(check),
            max,
            handler,
        ));
        let service = tower::service_fn(|_: http::Request<Body>| async {
            Ok::<_, Infallible>(Status::unimplemented("by the service").into_http::<Body>())
        });
        crate::test_socket::serve_on_a_socket(config, service)
    }

    async fn call(
        client: &UnixClient,
        path: &str,
        message: &[u8],
        pass: &'static str,
        timeout: Option<Duration>,
    ) -> Result<Bytes, Status> {
        let uri: http::Uri = format!("http://t{path}").parse().expect("a uri");
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "content-type",
            http::HeaderValue::from_static("application/grpc"),
        );
        headers.insert("x-test", http::HeaderValue::from_static(pass));
        if let Some(t) = timeout {
            headers.insert("grpc-timeout", crate::grpc_timeout_value(t));
        }
        let frame = crate::grpc_frame(message.len(), |b| b.extend_from_slice(message))?;
        client
            .unary(uri, headers, frame, 1 << 20)
            .await
            .map(crate::Message::into_bytes)
    }

    #[tokio::test]
    async fn a_method_served_by_hand_answers_checks_bounds_and_times_out_as_tonic_would() {
        let (_dir, client) = server(64);
        let echoed = call(&client, "/t.T/Echo", b"\x00ping", "yes", None).await;
        assert_eq!(echoed.expect("echoed").as_ref(), b"\x00ping");

        let code = |r: Result<Bytes, Status>| r.expect_err("a failure").code();
        let refused = call(&client, "/t.T/Echo", b"\x00ping", "no", None).await;
        assert_eq!(code(refused), Code::Unauthenticated);
        let failed = call(&client, "/t.T/Echo", b"fail", "yes", None).await;
        let failed = failed.expect_err("failed");
        assert_eq!(
            (failed.code(), failed.message()),
            (Code::NotFound, "asked to fail")
        );
        let big = call(&client, "/t.T/Echo", &[0u8; 65], "yes", None).await;
        assert_eq!(code(big), Code::OutOfRange);
        let slow = call(
            &client,
            "/t.T/Echo",
            b"\xc8slow",
            "yes",
            Some(Duration::from_millis(20)),
        )
        .await;
        assert_eq!(code(slow), Code::DeadlineExceeded);
        // Other paths are the service's, and the connection is still good.
        let other = call(&client, "/t.T/Other", b"\x00", "yes", None).await;
        assert_eq!(code(other), Code::Unimplemented);
        let again = call(&client, "/t.T/Echo", b"\x00again", "yes", None).await;
        assert_eq!(again.expect("echoed").as_ref(), b"\x00again");
    }
}
