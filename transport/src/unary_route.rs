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

use crate::framing::{Assembler, Framed, PREFIX, announced_len};
use crate::router::Check;

/// Answers a request's message (given with the request's headers) with the answer's
/// frame, or a status.
pub type UnaryHandler =
    dyn Fn(http::HeaderMap, Bytes) -> BoxFuture<'static, Result<Framed, Status>> + Send + Sync;

/// Judges a request from the length its frame's prefix announces and the first bytes of
/// its message (up to the route's peek), before the rest is read: a refusal here is
/// answered at once, however large the message, and can say more than the route's
/// limit alone (whose limit the message is over, say). It must change nothing: a caller
/// whose server dies before reading the whole request may send it again elsewhere
/// (`crate::unread`), so a judge may see a request that is run somewhere else.
pub type EarlyJudge = dyn Fn(usize, &[u8]) -> Result<(), Status> + Send + Sync;

/// One method served by hand: its path, the check its calls pass first, the largest
/// message either way, and its handler.
#[derive(Clone)]
pub struct UnaryRoute {
    pub(crate) path: &'static str,
    check: Option<Arc<Check>>,
    max_message: usize,
    handler: Arc<UnaryHandler>,
    early: Option<(usize, Arc<EarlyJudge>)>,
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
            early: None,
        }
    }

    /// Has `judge` look at each request's length and first `peek` bytes (fewer if the
    /// message is shorter) before the route's own limit is applied and the rest read.
    pub fn judged_early(mut self, peek: usize, judge: Arc<EarlyJudge>) -> Self {
        self.early = Some((peek, judge));
        self
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
            let early = self.early.as_ref().map(|(peek, judge)| (*peek, &**judge));
            let message = read_message(body, self.max_message, early).await?;
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
                let (mut head, ()) = status.into_http::<()>().into_parts();
                crate::header_block::bound(&mut head.headers);
                let _ = respond.send_response(http::Response::from_parts(head, ()), true);
            }
        }
    }
}

/// The request's one message, read to the end of its stream; `early`, if given, judges
/// its start first.
async fn read_message(
    mut body: RecvStream,
    max: usize,
    early: Option<(usize, &EarlyJudge)>,
) -> Result<Bytes, Status> {
    let mut message = Assembler::new(max);
    let mut start = early.map(|(peek, judge)| Start::new(peek, judge));
    while let Some(data) = body.data().await {
        let data = data.map_err(|e| Status::from_error(Box::new(e)))?;
        let _ = body.flow_control().release_capacity(data.len());
        match &mut start {
            Some(pending) => {
                if let Some(judged) = pending.take(data)? {
                    start = None;
                    for piece in judged {
                        message.take(piece)?;
                    }
                }
            }
            None => message.take(data)?,
        }
    }
    if let Some(pending) = start {
        message.take(pending.end()?)?;
    }
    message
        .into_message()
        .map(crate::framing::Message::into_bytes)
        .ok_or_else(|| Status::internal("the request of a unary call carried no message"))
}

/// A request's start, held until an [`EarlyJudge`] has seen enough of it: the prefix and
/// `peek` bytes of the message (or all of a shorter one). At most that much is copied,
/// and only when the first DATA frame holds less.
struct Start<'a> {
    peek: usize,
    judge: &'a EarlyJudge,
    held: bytes::BytesMut,
}

impl<'a> Start<'a> {
    fn new(peek: usize, judge: &'a EarlyJudge) -> Self {
        Self {
            peek,
            judge,
            held: bytes::BytesMut::new(),
        }
    }

    /// How many bytes are wanted before judging, once the prefix is in.
    fn wanted(&self, seen: &[u8]) -> Option<(usize, usize)> {
        let prefix: &[u8; PREFIX] = seen.get(..PREFIX)?.try_into().ok()?;
        let len = announced_len(prefix);
        Some((len, PREFIX + len.min(self.peek)))
    }

    /// Takes one DATA frame; once enough is in, judges it and gives back the pieces to
    /// read on from: the start and whatever came after it (empty if nothing did).
    fn take(&mut self, data: Bytes) -> Result<Option<[Bytes; 2]>, Status> {
        if self.held.is_empty()
            && let Some((len, wanted)) = self.wanted(&data)
            && data.len() >= wanted
        {
            self.judge_start(len, &data)?;
            return Ok(Some([data, Bytes::new()]));
        }
        let room = (PREFIX + self.peek).saturating_sub(self.held.len());
        let copied = room.min(data.len());
        self.held.extend_from_slice(&data[..copied]);
        match self.wanted(&self.held) {
            Some((len, wanted)) if self.held.len() >= wanted => {
                self.judge_start(len, &self.held)?;
                let start = std::mem::take(&mut self.held).freeze();
                Ok(Some([start, data.slice(copied..)]))
            }
            _ => Ok(None),
        }
    }

    /// The stream ended before enough came: judged on what there is, if the prefix is.
    fn end(self) -> Result<Bytes, Status> {
        if let Some((len, _)) = self.wanted(&self.held) {
            self.judge_start(len, &self.held)?;
        }
        Ok(self.held.freeze())
    }

    fn judge_start(&self, len: usize, seen: &[u8]) -> Result<(), Status> {
        // A compressed message is the assembler's to refuse.
        if seen[0] != 0 {
            return Ok(());
        }
        let end = seen.len().min(PREFIX + len.min(self.peek));
        (self.judge)(len, &seen[PREFIX..end])
    }
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
        server_judged(max, None)
    }

    fn server_judged(
        max: usize,
        early: Option<(usize, Arc<EarlyJudge>)>,
    ) -> (tempfile::TempDir, UnixClient) {
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
                let head = crate::framing::grpc_frame_start(message.len(), &message[..split])?;
                Ok(Framed {
                    head,
                    tail: message.slice(split..),
                })
            })
        });
        let mut route = UnaryRoute::new("/t.T/Echo", Some(check), max, handler);
        if let Some((peek, judge)) = early {
            route = route.judged_early(peek, judge);
        }
        let config = crate::ServerConfig::new("test").unary(route);
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

    #[tokio::test]
    async fn an_early_judge_sees_the_length_and_start_before_the_limit_and_the_rest() {
        // Refuses messages starting with "no", naming their length; records what it saw.
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let judge: Arc<EarlyJudge> = Arc::new({
            let seen = seen.clone();
            move |len, start: &[u8]| {
                if let Ok(mut seen) = seen.lock() {
                    seen.push((len, start.to_vec()));
                }
                if start.starts_with(b"no") {
                    return Err(Status::permission_denied(format!("judged: {len} bytes")));
                }
                Ok(())
            }
        });
        let (_dir, client) = server_judged(64 << 10, Some((20_000, judge)));
        let last_seen = || seen.lock().expect("seen").pop().expect("judged");

        // Over the route's limit, and refused by the judge first, with its own words.
        let refused = call(
            &client,
            "/t.T/Echo",
            &[b'n', b'o', 0].repeat(30_000),
            "yes",
            None,
        )
        .await
        .expect_err("refused");
        assert_eq!(
            (refused.code(), refused.message()),
            (Code::PermissionDenied, "judged: 90000 bytes")
        );
        assert_eq!(last_seen().1.len(), 20_000);

        // Let through, then over the limit: the route's own refusal.
        let over = call(&client, "/t.T/Echo", &[0u8; 70_000], "yes", None).await;
        assert_eq!(over.expect_err("over").code(), Code::OutOfRange);
        assert_eq!(last_seen().0, 70_000);

        // A message longer than the peek: the judge sees its start, and the message
        // still arrives whole.
        let mut long: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        long[0] = 0;
        let echoed = call(&client, "/t.T/Echo", &long, "yes", None).await;
        assert_eq!(echoed.expect("echoed").as_ref(), &long[..]);
        let (len, start) = last_seen();
        assert_eq!((len, &start[..]), (40_000, &long[..20_000]));

        // A message shorter than the peek: judged on all of it.
        let echoed = call(&client, "/t.T/Echo", b"\x00short", "yes", None).await;
        assert_eq!(echoed.expect("echoed").as_ref(), b"\x00short");
        assert_eq!(last_seen(), (6, b"\x00short".to_vec()));
        // The checks before the judge still come first.
        let refused = call(&client, "/t.T/Echo", b"no", "no", None).await;
        assert_eq!(refused.expect_err("refused").code(), Code::Unauthenticated);
    }

    /// What a judge saw, and the pieces read on from, when a request's frame came in
    /// `pieces`.
    fn judged_in(pieces: &[&[u8]], peek: usize) -> (Vec<(usize, Vec<u8>)>, Vec<u8>) {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let judge = {
            let seen = seen.clone();
            move |len, start: &[u8]| {
                seen.lock().expect("seen").push((len, start.to_vec()));
                Ok(())
            }
        };
        let mut start = Start::new(peek, &judge);
        let mut read_on = Vec::new();
        let mut judged = false;
        for piece in pieces {
            let piece = Bytes::copy_from_slice(piece);
            if judged {
                read_on.extend_from_slice(&piece);
            } else if let Some(out) = start.take(piece).expect("judged") {
                judged = true;
                out.iter().for_each(|p| read_on.extend_from_slice(p));
            }
        }
        if !judged {
            read_on.extend_from_slice(&start.end().expect("judged"));
        }
        let seen = seen.lock().expect("seen").clone();
        (seen, read_on)
    }

    #[test]
    fn a_start_split_across_frames_is_put_together_once_and_nothing_is_lost() {
        let message: Vec<u8> = (0..300u32).map(|i| (i % 251) as u8).collect();
        let frame =
            crate::grpc_frame(message.len(), |b| b.extend_from_slice(&message)).expect("framed");
        let whole: Vec<&[u8]> = vec![&frame[..]];
        let halves: Vec<&[u8]> = vec![&frame[..3], &frame[3..150], &frame[150..]];
        let bytewise: Vec<&[u8]> = frame.chunks(1).collect();
        for pieces in [whole, halves, bytewise] {
            let (seen, read_on) = judged_in(&pieces, 100);
            assert_eq!(
                seen,
                vec![(300, message[..100].to_vec())],
                "{} pieces",
                pieces.len()
            );
            assert_eq!(read_on, frame.to_vec(), "{} pieces", pieces.len());
        }
        // Cut short before the peek: judged on what came, once, at the end.
        let (seen, read_on) = judged_in(&[&frame[..40]], 100);
        assert_eq!(seen, vec![(300, message[..35].to_vec())]);
        assert_eq!(read_on, frame[..40].to_vec());
        // Not even a prefix: nothing to judge; the assembler reports the missing message.
        let (seen, _) = judged_in(&[&frame[..3]], 100);
        assert!(seen.is_empty());
    }
}
