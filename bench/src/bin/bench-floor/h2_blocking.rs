//! `bench-floor h2`: the floor of standard gRPC bytes. Each call is a gRPC unary call as
//! any gRPC peer would send and answer it (HEADERS, one DATA frame holding the 5-byte
//! message prefix and the payload, the answer's HEADERS, DATA and `grpc-status: 0`
//! trailers), made and served with the `h2` crate, but with no runtime on either side:
//! the socket stays blocking and each side drives its h2 connection from its own thread
//! with a loop of its own, so a call makes the kernel floor's system calls (one `writev`
//! and one `read` per side) and nothing else. What it costs above the kernel floor is
//! HTTP/2's and gRPC's framing as h2 does it, with no event loop: the least any transport
//! built on h2 can cost.
//!
//! How the loop avoids blocking too early: h2 reads before it writes what a poll queued
//! (it flushes once reading would wait), so a read that blocked there would hold back
//! the request it was waiting for. Reads are allowed to block only on a pass the loop
//! marks as such, after a pass in which every read returns `Pending` and the queued
//! frames go out; on a marked pass the first read blocks and the rest return `Pending`.
//! Nothing is ever woken: every pass polls again whatever is waiting.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::Error;

/// What both sides ask of each other: the host's own settings (one frame carries a whole
/// 1 MiB message; windows never stall an echo of one).
const MAX_FRAME: u32 = 1 << 20;
const WINDOW: u32 = 8 << 20;

/// A blocking socket whose reads block only on passes marked for it.
struct Blocking {
    socket: UnixStream,
    may_block: Arc<AtomicBool>,
}

impl AsyncRead for Blocking {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.may_block.swap(false, Ordering::Relaxed) {
            return Poll::Pending;
        }
        // SAFETY: read(2) writes at most `spare.len()` bytes into `spare`, and only the
        // `n` it reports are marked filled.
        let spare = unsafe { buf.unfilled_mut() };
        let n = unsafe {
            nix::libc::read(
                self.socket.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                spare.len(),
            )
        };
        let Ok(n) = usize::try_from(n) else {
            return Poll::Ready(Err(std::io::Error::last_os_error()));
        };
        // SAFETY: as above, the kernel filled `n` bytes.
        unsafe { buf.assume_init(n) };
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Blocking {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready((&self.socket).write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready((&self.socket).write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn blocking(socket: UnixStream) -> std::io::Result<(Blocking, Arc<AtomicBool>)> {
    socket.set_nonblocking(false)?;
    let may_block = Arc::new(AtomicBool::new(false));
    let io = Blocking {
        socket,
        may_block: may_block.clone(),
    };
    Ok((io, may_block))
}

/// Polls `poll` until it is ready, a pass that may not block, then one that may.
fn drive<T>(may_block: &AtomicBool, mut poll: impl FnMut(&mut Context<'_>) -> Poll<T>) -> T {
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        may_block.store(false, Ordering::Relaxed);
        if let Poll::Ready(v) = poll(&mut cx) {
            return v;
        }
        may_block.store(true, Ordering::Relaxed);
        if let Poll::Ready(v) = poll(&mut cx) {
            return v;
        }
    }
}

/// Serves echo calls on `socket` until its peer closes it or breaks the protocol.
pub fn serve(socket: UnixStream) -> Result<(), Error> {
    let (io, may_block) = blocking(socket)?;
    let mut handshake = std::pin::pin!(
        h2::server::Builder::new()
            .initial_window_size(WINDOW)
            .initial_connection_window_size(WINDOW)
            .max_frame_size(MAX_FRAME)
            .handshake::<_, Bytes>(io)
    );
    let mut conn = drive(&may_block, |cx| handshake.as_mut().poll(cx))?;
    loop {
        let Some(next) = drive(&may_block, |cx| conn.poll_accept(cx)) else {
            return Ok(());
        };
        let (request, mut respond) = next?;
        let mut body = request.into_body();
        let mut message = BytesMut::new();
        while let Some(data) = drive(&may_block, |cx| {
            match body.poll_data(cx) {
                Poll::Pending => {}
                ready => return ready,
            }
            // Only the connection's poll reads more of the body.
            match conn.poll_closed(cx) {
                Poll::Ready(_) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            }
        }) {
            let data = data?;
            let _ = body.flow_control().release_capacity(data.len());
            if message.is_empty() {
                message = data.into();
            } else {
                message.extend_from_slice(&data);
            }
        }
        let answer = http::Response::builder()
            .status(200)
            .header("content-type", "application/grpc")
            .body(())?;
        let mut out = respond.send_response(answer, false)?;
        out.send_data(message.freeze(), false)?;
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        out.send_trailers(trailers)?;
        // The answer goes out on the next accept's first pass.
    }
}

/// Polls `poll`, driving `conn` until it is ready.
fn until<T>(
    conn: &mut h2::client::Connection<Blocking, Bytes>,
    may_block: &AtomicBool,
    mut poll: impl FnMut(&mut Context<'_>) -> Poll<Result<T, h2::Error>>,
) -> Result<T, Error> {
    drive(may_block, |cx| {
        if let Poll::Ready(v) = poll(cx) {
            return Poll::Ready(v.map_err(Error::from));
        }
        match Pin::new(&mut *conn).poll(cx) {
            Poll::Pending => poll(cx).map_err(Error::from),
            Poll::Ready(Ok(())) => Poll::Ready(Err("the server closed the connection".into())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
        }
    })
}

/// One caller's connection.
pub struct Client {
    send: h2::client::SendRequest<Bytes>,
    conn: h2::client::Connection<Blocking, Bytes>,
    may_block: Arc<AtomicBool>,
    /// The last call's message (prefix and payload), kept while calls repeat its size.
    message: Bytes,
}

impl Client {
    pub fn connect(socket: UnixStream) -> Result<Self, Error> {
        let (io, may_block) = blocking(socket)?;
        let mut handshake = std::pin::pin!(
            h2::client::Builder::new()
                .initial_window_size(WINDOW)
                .initial_connection_window_size(WINDOW)
                .max_frame_size(MAX_FRAME)
                .handshake::<_, Bytes>(io)
        );
        let (send, conn) = drive(&may_block, |cx| handshake.as_mut().poll(cx))?;
        Ok(Self {
            send,
            conn,
            may_block,
            message: Bytes::new(),
        })
    }

    /// One echo call of `size` bytes; returns the payload's length as it came back.
    pub fn call(&mut self, size: usize) -> Result<usize, Error> {
        if self.message.len() != 5 + size {
            let mut m = vec![0u8; 5];
            m[1..5].copy_from_slice(&u32::try_from(size)?.to_be_bytes());
            m.resize(5 + size, 0x5a);
            self.message = m.into();
        }
        until(&mut self.conn, &self.may_block, |cx| {
            self.send.poll_ready(cx)
        })?;
        let request = http::Request::builder()
            .method("POST")
            .uri("http://localhost/baton.plugin.v1.Plugin/Invoke")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())?;
        let (mut answer, mut stream) = self.send.send_request(request, false)?;
        stream.send_data(self.message.clone(), true)?;
        let answer = until(&mut self.conn, &self.may_block, |cx| {
            Pin::new(&mut answer).poll(cx)
        })?;
        if answer.status() != 200 {
            return Err(format!("HTTP status {}", answer.status()).into());
        }
        let mut body = answer.into_body();
        let mut got = 0;
        while let Some(data) = until(&mut self.conn, &self.may_block, |cx| {
            match body.poll_data(cx) {
                Poll::Ready(None) => Poll::Ready(Ok(None)),
                Poll::Ready(Some(d)) => Poll::Ready(d.map(Some)),
                Poll::Pending => Poll::Pending,
            }
        })? {
            got += data.len();
            let _ = body.flow_control().release_capacity(data.len());
        }
        let trailers = until(&mut self.conn, &self.may_block, |cx| body.poll_trailers(cx))?;
        let status = trailers.as_ref().and_then(|t| t.get("grpc-status"));
        if status.map(|s| s.as_bytes()) != Some(b"0") {
            return Err(format!("the call ended with grpc-status {status:?}").into());
        }
        got.checked_sub(5)
            .ok_or_else(|| format!("an answer of {got} bytes").into())
    }
}
