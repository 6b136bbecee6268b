//! A unary gRPC call made by hand on a [`UnixClient`]'s connection, for the one call the
//! host makes most (`Invoke`). Through a tonic client the same call builds its request
//! from parts (the URI anew, five headers), wraps the request's body three times and
//! the answer's twice, copies the answer into a decoding buffer, and reads a successful
//! call's trailers through the full status parser: about a fifth of the caller's
//! instructions per call, for bytes on the wire that are the same either way. Here the
//! request is one prebuilt frame, the answer's message is a slice of the frame it came
//! in, and `grpc-status: 0` is recognised as such.
//!
//! The outcomes are tonic's: the same codes for the same failures (a transport error
//! becomes the status tonic would make of it, with the error as its source; an answer
//! without `grpc-status` is judged by its HTTP status), so callers cannot tell the two
//! clients apart, but by their speed.

use bytes::Bytes;
use tonic::codegen::http;
use tonic::{Code, Status};

use crate::NotSent;
use crate::client::UnixClient;
use crate::framing::{Assembler, Message};

/// What a `grpc-timeout` header says for `timeout`: whole microseconds while they fit
/// the header's 8 digits (under 100 s), then milliseconds, then seconds.
pub fn grpc_timeout_value(timeout: std::time::Duration) -> http::HeaderValue {
    const MAX: u128 = 99_999_999;
    let (value, unit) = match timeout.as_micros() {
        us if us <= MAX => (us, b'u'),
        _ => match timeout.as_millis() {
            ms if ms <= MAX => (ms, b'm'),
            _ => (u128::from(timeout.as_secs()).min(MAX), b'S'),
        },
    };
    let mut digits = [0u8; 9];
    let mut at = digits.len() - 1;
    digits[at] = unit;
    let mut rest = value;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    match http::HeaderValue::from_bytes(&digits[at..]) {
        Ok(value) => value,
        // Digits and a letter are always a valid header value.
        Err(_) => http::HeaderValue::from_static("99999999S"),
    }
}

impl UnixClient {
    /// Sends `frame` (one message, from [`grpc_frame`](crate::grpc_frame)) as a unary call to `uri` (a
    /// full URI, scheme and authority included) with `headers` (`content-type`, `te`,
    /// and whatever the call carries), and returns the answer's message (at most
    /// `max_answer` bytes, without its prefix, in the pieces it came in). A call that never reached the server
    /// fails with a status whose source is [`NotSent`], as through the tower service.
    pub async fn unary(
        &self,
        uri: http::Uri,
        headers: http::HeaderMap,
        frame: Bytes,
        max_answer: usize,
    ) -> Result<Message, Status> {
        let crate::client::Conn {
            mut sender,
            outbound,
        } = self
            .ready()
            .await
            .map_err(|e| Status::from_error(Box::new(e)))?;
        let mut head = http::Request::new(());
        *head.method_mut() = http::Method::POST;
        *head.uri_mut() = uri;
        *head.headers_mut() = headers;
        let (response, mut stream) = sender
            .send_request(head, false)
            .map_err(|e| Status::from_error(Box::new(NotSent(e.into()))))?;
        // The message goes at once, whatever the window (h2 holds what it does not
        // cover). Should the stream be gone already, the answer says why.
        let _ = stream.send_data(frame, true);
        let stream_id = u32::from(response.stream_id());
        let response = crate::spin_on(response, self.spin()).await.map_err(|e| {
            // The server died with the end of this request unread: it never ran it.
            if outbound.unread_end_of(stream_id) {
                Status::from_error(Box::new(NotSent(e.into())))
            } else {
                Status::from_error(Box::new(e))
            }
        })?;
        let (parts, mut body) = response.into_parts();
        if let Some(encoding) = parts.headers.get("grpc-encoding")
            && encoding != "identity"
        {
            return Err(Status::unimplemented(format!(
                "the answer is compressed ({encoding:?}), which this client does not accept"
            )));
        }
        // A trailers-only answer: its status is in the headers, and it has no message.
        if let Some(status) = Status::from_header_map(&parts.headers) {
            return Err(match status.code() {
                Code::Ok => no_message(),
                _ => status,
            });
        }
        let mut answer = Assembler::new(max_answer);
        while let Some(data) = body.data().await {
            let data = data.map_err(|e| Status::from_error(Box::new(e)))?;
            let _ = body.flow_control().release_capacity(data.len());
            answer.take(data)?;
        }
        let trailers = body
            .trailers()
            .await
            .map_err(|e| Status::from_error(Box::new(e)))?;
        end_status(trailers.as_ref(), parts.status)?;
        answer.into_message().ok_or_else(no_message)
    }
}

impl UnixClient {
    /// [`unary`](Self::unary) with a protobuf request and answer: `request` encoded into
    /// one frame (refused over `max_request`), `content-type` and `te` added to
    /// `headers`, and the answer (at most `max_answer`) decoded from the pieces it came
    /// in.
    pub async fn unary_message<A: prost::Message + Default>(
        &self,
        uri: http::Uri,
        mut headers: http::HeaderMap,
        request: &impl prost::Message,
        max_request: usize,
        max_answer: usize,
    ) -> Result<A, Status> {
        let len = request.encoded_len();
        if len > max_request {
            return Err(Status::out_of_range(format!(
                "the request is {len} bytes, over the limit of {max_request} bytes"
            )));
        }
        let frame = crate::grpc_frame(len, |buf| {
            // The buffer was made for `len` more bytes, so the encoding cannot run out.
            let _ = request.encode(buf);
        })?;
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/grpc"),
        );
        headers.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
        let path = uri.path().to_owned();
        let answer = self.unary(uri, headers, frame, max_answer).await?;
        A::decode(answer)
            .map_err(|e| Status::internal(format!("the answer to {path} does not decode: {e}")))
    }
}

fn no_message() -> Status {
    Status::internal("the answer to a unary call carried no message")
}

/// The call's outcome from its trailers, or, without `grpc-status` in them, from its
/// HTTP status (gRPC's mapping).
fn end_status(
    trailers: Option<&http::HeaderMap>,
    http_status: http::StatusCode,
) -> Result<(), Status> {
    if let Some(trailers) = trailers {
        if trailers.get("grpc-status").is_some_and(|s| s == "0") {
            return Ok(());
        }
        if let Some(status) = Status::from_header_map(trailers) {
            return match status.code() {
                Code::Ok => Ok(()),
                _ => Err(status),
            };
        }
    }
    let code = match http_status {
        http::StatusCode::BAD_REQUEST => Code::Internal,
        http::StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        http::StatusCode::FORBIDDEN => Code::PermissionDenied,
        http::StatusCode::NOT_FOUND => Code::Unimplemented,
        http::StatusCode::TOO_MANY_REQUESTS
        | http::StatusCode::BAD_GATEWAY
        | http::StatusCode::SERVICE_UNAVAILABLE
        | http::StatusCode::GATEWAY_TIMEOUT => Code::Unavailable,
        _ => Code::Unknown,
    };
    Err(Status::new(
        code,
        format!("the answer ended without a grpc-status (HTTP status {http_status})"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use http_body::{Body as _, Frame};
    use tonic::body::Body;

    /// A body of the frames given, in order.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl http_body::Body for Frames {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    fn trailers(pairs: &[(&'static str, &'static str)]) -> Frame<Bytes> {
        let mut map = http::HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, http::HeaderValue::from_static(v));
        }
        Frame::trailers(map)
    }

    /// The request's body, whole.
    async fn read_all(mut body: Body) -> Vec<u8> {
        let mut all = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            if let Ok(Ok(data)) = frame.map(|f| f.into_data()) {
                all.extend_from_slice(&data);
            }
        }
        all
    }

    /// A server on a real socket whose answer each path names: `echo` sends the
    /// request's message back; the others answer as their names say.
    async fn answer(request: http::Request<Body>) -> Result<http::Response<Frames>, Infallible> {
        let path = request.uri().path().to_owned();
        let token = request.headers().get("x-test").cloned();
        let te = request.headers().get("te").cloned();
        let sent = read_all(request.into_body()).await;
        let ok = [("grpc-status", "0")];
        let frames: Vec<Frame<Bytes>> = match path.as_str() {
            "/t.T/echo" => {
                assert_eq!(te.as_ref().map(|v| v.as_bytes()), Some(&b"trailers"[..]));
                assert_eq!(token.as_ref().map(|v| v.as_bytes()), Some(&b"yes"[..]));
                vec![Frame::data(Bytes::from(sent)), trailers(&ok)]
            }
            "/t.T/in-pieces" => {
                let whole = framed(b"three pieces");
                vec![
                    Frame::data(whole.slice(..3)),
                    Frame::data(whole.slice(3..9)),
                    Frame::data(whole.slice(9..)),
                    trailers(&ok),
                ]
            }
            "/t.T/trailers-only" => {
                let mut response = http::Response::new(Frames(VecDeque::new()));
                response
                    .headers_mut()
                    .insert("grpc-status", http::HeaderValue::from_static("5"));
                response
                    .headers_mut()
                    .insert("grpc-message", http::HeaderValue::from_static("gone%21"));
                return Ok(response);
            }
            "/t.T/late-error" => vec![
                Frame::data(framed(b"partial")),
                trailers(&[("grpc-status", "13"), ("grpc-message", "broke")]),
            ],
            "/t.T/big" => vec![Frame::data(framed(&[7u8; 100])), trailers(&ok)],
            "/t.T/no-status" => vec![Frame::data(framed(b"x"))],
            "/t.T/no-message" => vec![trailers(&ok)],
            _ => vec![trailers(&[("grpc-status", "12")])],
        };
        Ok(http::Response::new(Frames(frames.into())))
    }

    fn server() -> (tempfile::TempDir, UnixClient) {
        crate::test_socket::serve_on_a_socket(
            crate::ServerConfig::new("test"),
            tower::service_fn(answer),
        )
    }

    async fn call(
        client: &UnixClient,
        method: &str,
        message: &[u8],
        max: usize,
    ) -> Result<Bytes, Status> {
        let uri: http::Uri = format!("http://t/t.T/{method}").parse().expect("a uri");
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "content-type",
            http::HeaderValue::from_static("application/grpc"),
        );
        headers.insert("te", http::HeaderValue::from_static("trailers"));
        headers.insert("x-test", http::HeaderValue::from_static("yes"));
        client
            .unary(uri, headers, framed(message), max)
            .await
            .map(Message::into_bytes)
    }

    #[tokio::test]
    async fn unary_calls_end_as_their_answers_say() {
        let (_dir, client) = server();
        let echoed = call(&client, "echo", b"ping", 100).await.expect("echoed");
        // The server sent back the request's body as it came: one framed message.
        assert_eq!(&echoed[..], b"ping");
        let pieces = call(&client, "in-pieces", b"", 100)
            .await
            .expect("put together");
        assert_eq!(&pieces[..], b"three pieces");

        let failed = |r: Result<Bytes, Status>| r.expect_err("a failure");
        let gone = failed(call(&client, "trailers-only", b"", 100).await);
        assert_eq!((gone.code(), gone.message()), (Code::NotFound, "gone!"));
        let late = failed(call(&client, "late-error", b"", 100).await);
        assert_eq!((late.code(), late.message()), (Code::Internal, "broke"));
        assert_eq!(
            failed(call(&client, "big", b"", 10).await).code(),
            Code::OutOfRange
        );
        assert_eq!(
            failed(call(&client, "no-status", b"", 100).await).code(),
            Code::Unknown
        );
        assert_eq!(
            failed(call(&client, "no-message", b"", 100).await).code(),
            Code::Internal
        );
        assert_eq!(
            failed(call(&client, "nope", b"", 100).await).code(),
            Code::Unimplemented
        );
        // The connection outlives every failure above.
        assert!(call(&client, "echo", b"again", 100).await.is_ok());
    }

    #[tokio::test]
    async fn a_call_to_no_server_fails_as_never_sent() {
        let dir = tempfile::tempdir().expect("a directory");
        let client = UnixClient::new(&dir.path().join("nobody.sock"));
        let status = call(&client, "echo", b"ping", 100)
            .await
            .expect_err("nobody");
        let mut source = std::error::Error::source(&status);
        let mut found = false;
        while let Some(e) = source {
            found |= e.is::<NotSent>();
            source = e.source();
        }
        assert!(found, "{status:?}");
    }

    /// Bytes waiting to be read on `socket`.
    fn unread_bytes(socket: &std::os::unix::net::UnixStream) -> usize {
        use std::os::fd::AsRawFd;
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int through the pointer, which outlives the call.
        let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::FIONREAD, &mut n) };
        assert_eq!(rc, 0, "FIONREAD: {}", std::io::Error::last_os_error());
        usize::try_from(n).unwrap_or(0)
    }

    /// Reads whatever `socket` holds now.
    fn drain(socket: &mut std::os::unix::net::UnixStream) {
        use std::io::Read;
        let mut buf = vec![0u8; 1 << 16];
        while unread_bytes(socket) > 0 {
            let _ = socket.read(&mut buf).expect("read");
        }
    }

    /// Whether `status` says the call never reached the server.
    fn not_sent(status: &Status) -> bool {
        let mut source = std::error::Error::source(status);
        while let Some(e) = source {
            if e.is::<NotSent>() {
                return true;
            }
            source = e.source();
        }
        false
    }

    /// A client of a server that takes the connection and then does nothing but what
    /// the test says; the server's end of the socket, connected and drained.
    async fn silent_server() -> (
        tempfile::TempDir,
        UnixClient,
        std::os::unix::net::UnixStream,
    ) {
        let dir = tempfile::tempdir().expect("a directory");
        let path = dir.path().join("s.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        let client = UnixClient::new(&path);
        // The connection's opening (preface, settings) is written before this returns.
        client.connect().await.expect("connected");
        let (mut server, _) = listener.accept().expect("accepted");
        drain(&mut server);
        (dir, client, server)
    }

    async fn until_unread(server: &std::os::unix::net::UnixStream) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while unread_bytes(server) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the request never came"
            );
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_server_that_dies_with_the_request_unread_never_ran_it() {
        let (_dir, client, server) = silent_server().await;
        let call = tokio::spawn({
            let client = client.clone();
            async move { call(&client, "echo", b"ping", 100).await }
        });
        until_unread(&server).await;
        // Closed with the request still in its socket: as a process killed before it read.
        drop(server);
        let status = call.await.expect("joined").expect_err("no answer");
        assert!(not_sent(&status), "{status:?}");
    }

    #[tokio::test]
    async fn a_server_that_read_the_request_and_died_may_have_run_it() {
        let (_dir, client, mut server) = silent_server().await;
        let call = tokio::spawn({
            let client = client.clone();
            async move { call(&client, "echo", b"ping", 100).await }
        });
        // Everything up to the request's END_STREAM frame, however h2 split its writes.
        let seen = crate::unread::Outbound::default();
        let mut walker = crate::unread::FrameWalker::after_preface();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while seen.last_ended() != Some(1) {
            assert!(
                std::time::Instant::now() < deadline,
                "the request never came"
            );
            until_unread(&server).await;
            let mut buf = vec![0u8; unread_bytes(&server)];
            std::io::Read::read_exact(&mut server, &mut buf).expect("read");
            walker.wrote(&buf, &seen);
        }
        drop(server);
        let status = call.await.expect("joined").expect_err("no answer");
        assert!(!not_sent(&status), "read, so it may have run: {status:?}");
    }

    #[test]
    fn timeouts_are_written_in_the_finest_unit_that_fits_eight_digits() {
        let of = |d: Duration| grpc_timeout_value(d).to_str().map(str::to_owned).ok();
        assert_eq!(of(Duration::ZERO).as_deref(), Some("0u"));
        assert_eq!(of(Duration::from_micros(1500)).as_deref(), Some("1500u"));
        assert_eq!(of(Duration::from_secs(30)).as_deref(), Some("30000000u"));
        assert_eq!(of(Duration::from_secs(100)).as_deref(), Some("100000m"));
        assert_eq!(of(Duration::from_secs(200_000)).as_deref(), Some("200000S"));
        assert_eq!(of(Duration::MAX).as_deref(), Some("99999999S"));
    }

    fn framed(message: &[u8]) -> Bytes {
        crate::grpc_frame(message.len(), |b| b.extend_from_slice(message)).expect("a frame")
    }

    #[test]
    fn an_answer_without_grpc_status_is_judged_by_its_http_status() {
        let mut ok = http::HeaderMap::new();
        ok.insert("grpc-status", http::HeaderValue::from_static("0"));
        assert!(end_status(Some(&ok), http::StatusCode::OK).is_ok());
        let mut failed = http::HeaderMap::new();
        failed.insert("grpc-status", http::HeaderValue::from_static("5"));
        failed.insert("grpc-message", http::HeaderValue::from_static("no%20such"));
        let status = end_status(Some(&failed), http::StatusCode::OK).expect_err("failed");
        assert_eq!(
            (status.code(), status.message()),
            (Code::NotFound, "no such")
        );
        for (http_status, code) in [
            (http::StatusCode::OK, Code::Unknown),
            (http::StatusCode::NOT_FOUND, Code::Unimplemented),
            (http::StatusCode::SERVICE_UNAVAILABLE, Code::Unavailable),
        ] {
            let status = end_status(None, http_status).expect_err("no status");
            assert_eq!(status.code(), code, "{http_status}");
        }
    }
}
