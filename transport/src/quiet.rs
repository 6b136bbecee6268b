//! A Unix stream that asks epoll to wake it for reads only. tokio registers every socket
//! for both directions, and for a Unix socket the kernel signals "writable" each time
//! the peer reads what was written: every answer a plugin writes wakes the plugin's
//! thread once more when the host reads it, a hop through the daemon wakes both of its
//! peers a second time per call, and each of those wake-ups is paid for by the reader
//! (the `unix_write_space` wake in a profile). Here writes go straight to the socket; only
//! a write that finds its buffer full registers for "writable", on a duplicate of the
//! descriptor, until it has gone through.

use std::io::{self, IoSlice, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tonic::transport::server::{Connected, UdsConnectInfo};

use crate::unread::{FrameWalker, Outbound};

/// A connected Unix stream registered for readability only; see the module's docs.
pub struct QuietUnix {
    read: AsyncFd<StdUnixStream>,
    /// Registered for writability while a write waits for room; `None` otherwise.
    write: Option<AsyncFd<OwnedFd>>,
    info: UdsConnectInfo,
    /// On a client's connection: what its writes and reads say about its calls.
    outbound: Option<(FrameWalker, Arc<Outbound>)>,
}

impl QuietUnix {
    /// Takes `stream` over from tokio's registration.
    pub fn new(stream: tokio::net::UnixStream) -> io::Result<Self> {
        let info = stream.connect_info();
        let stream = stream.into_std()?;
        stream.set_nonblocking(true)?;
        Ok(Self {
            read: register(stream, Interest::READABLE)?,
            write: None,
            info,
            outbound: None,
        })
    }

    /// [`new`](Self::new) for a client's connection, watched for proof that a unary
    /// call never reached the server (see [`Outbound`]).
    pub(crate) fn watched(stream: tokio::net::UnixStream) -> io::Result<(Self, Arc<Outbound>)> {
        let mut quiet = Self::new(stream)?;
        let outbound = Arc::new(Outbound::default());
        quiet.outbound = Some((FrameWalker::default(), outbound.clone()));
        Ok((quiet, outbound))
    }

    /// Writes with `op`, waiting for room only when the socket's buffer is full.
    fn poll_write_with(
        &mut self,
        cx: &mut Context<'_>,
        mut op: impl FnMut(&StdUnixStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            if let Some(room) = &self.write {
                let mut guard = ready!(room.poll_write_ready(cx))?;
                match guard.try_io(|_| op(self.read.get_ref())) {
                    Ok(done) => {
                        drop(guard);
                        // Through: stop listening for room, so the peer's reads wake
                        // nobody here again.
                        self.write = None;
                        return Poll::Ready(done);
                    }
                    // The readiness was stale and is cleared: wait for the next.
                    Err(_would_block) => continue,
                }
            }
            match op(self.read.get_ref()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Registering reports the socket's state now, so room made since the
                    // failed write is not missed.
                    let fd = self.read.get_ref().as_fd().try_clone_to_owned()?;
                    self.write = Some(register(fd, Interest::WRITABLE)?);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                done => return Poll::Ready(done),
            }
        }
    }
}

/// Registers a descriptor `inner` owns with the runtime.
fn register<T: AsRawFd>(inner: T, interest: Interest) -> io::Result<AsyncFd<T>> {
    // SAFETY: `inner` (a std stream or an `OwnedFd`) owns its descriptor, which stays open
    // and unchanged until the `AsyncFd` drops it with `inner`.
    Ok(unsafe { AsyncFd::register_with_interest(inner, interest) }?)
}

impl Connected for QuietUnix {
    type ConnectInfo = UdsConnectInfo;

    fn connect_info(&self) -> UdsConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for QuietUnix {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.read.poll_read_ready(cx))?;
            // Read into the buffer's spare room as it is: zeroing it first, as a safe
            // `read` needs, cost more per call than the rest of the read (h2 hands over
            // several KiB of room each time).
            // SAFETY: only `read(2)` writes there, and only the bytes it reports are
            // marked filled below.
            let room = unsafe { buf.unfilled_mut() };
            let wanted = room.len();
            let read = guard.try_io(|stream| {
                // SAFETY: the pointer and length describe `room`, writable memory that
                // outlives the call; the descriptor is the stream's own, open.
                let n = unsafe {
                    libc::read(
                        stream.get_ref().as_raw_fd(),
                        room.as_mut_ptr().cast(),
                        wanted,
                    )
                };
                usize::try_from(n).map_err(|_| io::Error::last_os_error())
            });
            match read {
                Ok(Ok(n)) => {
                    // A read that did not fill the buffer emptied the socket (epoll is
                    // edge-triggered): the next read waits for news instead of making
                    // a syscall only to hear "would block", as tokio's own streams do.
                    if 0 < n && n < wanted {
                        guard.clear_ready();
                    }
                    // SAFETY: `read(2)` initialized these `n` bytes.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => {
                    if let Some((_, outbound)) = &self.outbound {
                        outbound.read_failed(&e);
                    }
                    return Poll::Ready(Err(e));
                }
                Err(_would_block) => {}
            }
        }
    }
}

impl AsyncWrite for QuietUnix {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(this.poll_write_with(cx, |mut stream| stream.write(data)))?;
        if let Some((walker, outbound)) = &mut this.outbound {
            walker.wrote(&data[..n], outbound);
        }
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(this.poll_write_with(cx, |mut stream| stream.write_vectored(bufs)))?;
        if let Some((walker, outbound)) = &mut this.outbound {
            let mut left = n;
            for buf in bufs {
                if left == 0 {
                    break;
                }
                let take = left.min(buf.len());
                walker.wrote(&buf[..take], outbound);
                left -= take;
            }
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.read.get_ref().shutdown(std::net::Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(flavor = "current_thread")]
    async fn a_write_larger_than_the_socket_buffer_waits_for_room_and_all_of_it_arrives() {
        let (a, b) = tokio::net::UnixStream::pair().expect("a socket pair");
        let (mut a, mut b) = (
            QuietUnix::new(a).expect("quiet"),
            QuietUnix::new(b).expect("quiet"),
        );
        // Far beyond a Unix socket's buffer: the writer must wait for the reader.
        let sent: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
        let expected = sent.clone();
        let writer = tokio::spawn(async move {
            a.write_all(&sent).await.expect("write");
            a.shutdown().await.expect("shutdown");
            a
        });
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.expect("read");
        assert!(
            got == expected,
            "{} bytes of {} arrived, or out of order",
            got.len(),
            expected.len()
        );
        let a = writer.await.expect("writer");
        assert!(
            a.write.is_none(),
            "still registered for room after the write went through"
        );
    }

    /// Voluntary context switches of thread `tid` of this process, and whether it is
    /// asleep now.
    fn thread_state(tid: i32) -> (u64, bool) {
        let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status"))
            .expect("the thread's status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
                .unwrap_or_default()
                .to_owned()
        };
        let switches = field("voluntary_ctxt_switches:").parse().expect("a count");
        (switches, field("State:").starts_with('S'))
    }

    fn until_asleep(tid: i32) -> u64 {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let (switches, asleep) = thread_state(tid);
            if asleep {
                return switches;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the thread never slept"
            );
            std::thread::yield_now();
        }
    }

    /// How many times a runtime thread that wrote 50 messages on one end of a socket
    /// pair, and waits to read, wakes while the other end reads them one at a time.
    fn wakeups_while_the_peer_reads(quiet: bool) -> u64 {
        use std::io::Read as _;
        let (a, mut b) = std::os::unix::net::UnixStream::pair().expect("a socket pair");
        a.set_nonblocking(true).expect("non-blocking");
        let (ready, written) = std::sync::mpsc::channel();
        let writer = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let a = tokio::net::UnixStream::from_std(a).expect("registered");
                let mut a: Pin<Box<dyn Duplex>> = if quiet {
                    Box::pin(QuietUnix::new(a).expect("quiet"))
                } else {
                    Box::pin(a)
                };
                for _ in 0..50 {
                    a.write_all(&[7u8; 64]).await.expect("write");
                }
                // SAFETY: gettid has no preconditions.
                let _ = ready.send(unsafe { libc::gettid() });
                let mut end = [0u8; 1];
                a.read_exact(&mut end).await.expect("the last byte");
            });
        });
        let tid = written.recv().expect("the writer's thread id");
        let before = until_asleep(tid);
        let mut message = [0u8; 64];
        for _ in 0..50 {
            b.read_exact(&mut message).expect("a message");
            until_asleep(tid);
        }
        let after = until_asleep(tid);
        std::io::Write::write_all(&mut b, b"x").expect("the last byte");
        writer.join().expect("the writer thread");
        after - before
    }

    trait Duplex: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send {}
    impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send> Duplex for T {}

    #[test]
    fn the_peers_reads_do_not_wake_the_writers_thread() {
        // The premise: on tokio's own stream each read wakes the writer's thread.
        let plain = wakeups_while_the_peer_reads(false);
        assert!(
            plain >= 40,
            "tokio's stream woke {plain} times for 50 reads"
        );
        let quiet = wakeups_while_the_peer_reads(true);
        assert!(
            quiet <= 5,
            "the quiet stream woke {quiet} times for 50 reads"
        );
    }
}
