//! Accepting connections on the host's Unix sockets within bounds a hostile local peer
//! cannot push past: the peer's uid is checked at accept (`SO_PEERCRED`), connections
//! are capped per socket, per peer process and, where the socket can tell whose process
//! it is, per plugin; on a socket that wants a token, a connection that has not shown
//! one soon after connecting is closed.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tonic::transport::server::Connected;

/// How long a connection to a socket that wants a token may stay without showing one.
pub const AUTH_DEADLINE: Duration = Duration::from_secs(3);
/// Connections one peer process may hold on one socket.
pub const MAX_PER_PEER: usize = 64;

/// Who may connect to one socket, and how many.
pub struct Gate {
    /// The socket's role, for log lines (`host services`, `control API`).
    pub what: &'static str,
    /// Whether a peer with this uid may connect at all.
    pub admits: Arc<dyn Fn(u32) -> bool + Send + Sync>,
    /// Connections held at once on this socket.
    pub max_total: usize,
    /// Set for sockets whose calls carry a token: how long a connection may go without.
    pub auth_deadline: Option<Duration>,
    /// Set for sockets that can tell which plugin a peer process is part of.
    pub owners: Option<Owners>,
}

/// Whose a peer process is, and how many connections each owner may hold: counted from
/// the accept on, token or not, so no one owner's processes fill the socket.
pub struct Owners {
    /// The plugin the process with this pid is part of; `None` for one the host cannot
    /// place, all of which share one owner's allowance.
    pub of: Arc<dyn Fn(u32) -> Option<Arc<str>> + Send + Sync>,
    /// Connections one owner may hold at once.
    pub max_each: usize,
}

/// What the server knows about a connection's peer; in every request's extensions.
#[derive(Clone, Debug)]
pub struct Peer {
    /// The peer's user id, from the kernel.
    pub uid: u32,
    /// The peer's process id, from the kernel (0 if it did not say).
    pub pid: u32,
    authenticated: Arc<AtomicBool>,
}

impl Peer {
    /// Records that a request on this connection carried a valid token: the connection
    /// may then stay open as long as its peer likes.
    pub fn authenticated(&self) {
        self.authenticated.store(true, Ordering::Relaxed);
    }
}

/// A peer's owner: a plugin's name, or `None` for processes the host cannot place.
type Owner = Option<Arc<str>>;

#[derive(Default)]
struct Counts {
    total: usize,
    per_pid: HashMap<u32, usize>,
    per_owner: HashMap<Owner, usize>,
}

/// Takes one from `key`'s count, dropping the entry at zero so the map holds only those
/// with connections open.
fn give_back<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

/// One connection's place in its socket's counts, given back when it closes.
struct Slot {
    counts: Arc<Mutex<Counts>>,
    pid: u32,
    /// Set where the socket counts per owner.
    owner: Option<Owner>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.total = counts.total.saturating_sub(1);
        give_back(&mut counts.per_pid, &self.pid);
        if let Some(owner) = &self.owner {
            give_back(&mut counts.per_owner, owner);
        }
    }
}

/// An accepted connection within its socket's bounds.
pub struct Guarded {
    stream: baton_transport::QuietUnix,
    peer: Peer,
    /// Until a token is shown: when the connection is closed without one.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    _slot: Slot,
}

impl Connected for Guarded {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if let Some(deadline) = &mut this.deadline {
            if this.peer.authenticated.load(Ordering::Relaxed) {
                this.deadline = None;
            } else if deadline.as_mut().poll(cx).is_ready() {
                // The server always has a read pending, so the timer's wake-up lands here.
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no valid token in time",
                )));
            }
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Why a connection was turned away, for the rate-limited log line.
enum Refusal {
    Uid(u32),
    Total,
    PerPeer(u32),
    PerOwner(Owner, usize),
}

/// The connections a server should serve: those `gate` lets through. Accepting runs in
/// its own task; a connection that may not stay is closed at once, so a flood never
/// holds more descriptors than the bounds allow.
pub fn incoming(
    listener: UnixListener,
    gate: Gate,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<Guarded>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let counts = Arc::new(Mutex::new(Counts::default()));
        let mut refused = 0u64;
        // None until the first refusal, which is always reported.
        let mut last_report: Option<Instant> = None;
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => accepted,
                () = tx.closed() => return,
            };
            let stream = match stream {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors (EMFILE/ENFILE) and the like: the connection waits
                    // in the backlog; try again shortly rather than spin.
                    tracing::warn!("{}: cannot accept a connection: {e}", gate.what);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            match admit(&gate, &counts, stream) {
                Ok(guarded) => {
                    if tx.send(Ok(guarded)).await.is_err() {
                        return;
                    }
                }
                Err(why) => {
                    refused += 1;
                    if last_report.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                        let reason = match why {
                            Refusal::Uid(uid) => format!("uid {uid} may not use this socket"),
                            Refusal::Total => {
                                format!("{} connections are open already", gate.max_total)
                            }
                            Refusal::PerPeer(pid) => {
                                format!("pid {pid} holds {MAX_PER_PEER} connections already")
                            }
                            Refusal::PerOwner(Some(plugin), max) => format!(
                                "plugin {} holds {max} connections already, its share of {}",
                                crate::io::printable::printable(&plugin),
                                gate.max_total
                            ),
                            Refusal::PerOwner(None, max) => format!(
                                "processes that are no plugin's hold {max} connections already"
                            ),
                        };
                        tracing::warn!(
                            "{}: refused {refused} connection(s) in the last second; latest: {reason}",
                            gate.what
                        );
                        refused = 0;
                        last_report = Some(Instant::now());
                    }
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

fn admit(gate: &Gate, counts: &Arc<Mutex<Counts>>, stream: UnixStream) -> Result<Guarded, Refusal> {
    // A peer the kernel cannot vouch for is nobody we know.
    let cred = stream.peer_cred().map_err(|_| Refusal::Uid(u32::MAX))?;
    let (uid, pid) = (cred.uid(), cred.pid().unwrap_or(0).max(0) as u32);
    if !(gate.admits)(uid) {
        return Err(Refusal::Uid(uid));
    }
    // Registering with the runtime fails only when the process is out of resources: a
    // connection it cannot hold, like one past the bound.
    let stream = baton_transport::QuietUnix::new(stream).map_err(|_| Refusal::Total)?;
    // Looked up before the lock: it reads a few files under /proc.
    let owner = gate.owners.as_ref().map(|owners| (owners.of)(pid));
    {
        let mut counts = counts.lock().unwrap_or_else(|p| p.into_inner());
        if counts.total >= gate.max_total {
            return Err(Refusal::Total);
        }
        if counts.per_pid.get(&pid).copied().unwrap_or(0) >= MAX_PER_PEER {
            return Err(Refusal::PerPeer(pid));
        }
        if let (Some(owners), Some(owner)) = (&gate.owners, &owner) {
            let held = counts.per_owner.entry(owner.clone()).or_default();
            if *held >= owners.max_each {
                return Err(Refusal::PerOwner(owner.clone(), owners.max_each));
            }
            *held += 1;
        }
        *counts.per_pid.entry(pid).or_default() += 1;
        counts.total += 1;
    }
    Ok(Guarded {
        stream,
        peer: Peer {
            uid,
            pid,
            authenticated: Arc::new(AtomicBool::new(false)),
        },
        deadline: gate.auth_deadline.map(|d| Box::pin(tokio::time::sleep(d))),
        _slot: Slot {
            counts: counts.clone(),
            pid,
            owner,
        },
    })
}

/// Connections a socket may hold at once: a share of the descriptors this process may
/// open, so that a flood on one socket leaves room for plugins, pipes and the others.
pub fn share_of_descriptors(divisor: u64, cap: usize) -> usize {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft);
    usize::try_from(soft / divisor)
        .unwrap_or(cap)
        .clamp(16, cap)
}
