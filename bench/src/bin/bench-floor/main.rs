//! `bench-floor`: the floor under every call path, for the `peers` scenario. Two
//! processes ping-pong length-prefixed messages over Unix socketpairs with blocking reads
//! and writes: no HTTP/2, no gRPC, no runtime, one thread per socket on each side. What
//! a call costs here is what the kernel and the scheduler charge for a round trip
//! between two processes: any transport's floor on this machine.
//!
//! Run with no argument it is the client: it makes `PAIRS` socketpairs, each with a
//! caller thread of its own, starts itself as `bench-floor serve FD…` with the other ends
//! (each answered by a thread of its own),
//! and then takes commands on stdin, one per line, answering each with one JSON line on
//! stdout (the same protocol as `bench/go-plugin-peer`):
//!
//! ```text
//! (at start)                  {"ready":true,"client":PID,"server":PID}
//! latency SIZE COUNT          {"us":[...]}            COUNT sequential calls on one pair
//! rate CALLERS SIZE MILLIS    {"calls":N,"secs":S}    CALLERS threads, one pair each
//! quit (or end of input)      the server is stopped and the client exits
//! ```
//!
//! A failure answers `{"error":"..."}` and exits with status 1.
//!
//! `bench-floor async` is the same with every socket driven by a tokio current-thread
//! runtime (epoll, non-blocking reads and writes, one runtime per thread) on both sides:
//! the floor of any transport written on tokio, and so what the runtime alone adds to
//! the kernel's.
//!
//! `bench-floor h2` makes each round trip a gRPC unary call in standard HTTP/2 bytes,
//! made and served by the `h2` crate with no runtime (see [`h2_blocking`]): the floor of
//! any transport on h2.
//!
//! `bench-floor relay` puts a third process between the two, as the daemon stands between
//! its caller and a plugin: each message goes client → relay → server and back, over
//! blocking socketpairs, one relay thread per pair (the ready line adds `"relay":PID`).
//! The floor of any path of two hops: what the kernel and the scheduler charge for
//! handing a call across three processes.

use std::io::{BufRead, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

/// Socketpairs made at start: the most callers a `rate` command may ask for.
const PAIRS: usize = 16;
/// The largest payload either side accepts.
const MAX_PAYLOAD: usize = 1 << 20;

mod h2_blocking;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// How both sides drive their sockets.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Blocking reads and writes: the kernel's floor.
    Blocking,
    /// A tokio current-thread runtime per thread.
    Tokio,
    /// gRPC over h2, blocking, no runtime.
    H2,
    /// Blocking, through a relay process: two hops.
    Relay,
}

impl Mode {
    fn parse(word: &str) -> Option<Self> {
        match word {
            "async" => Some(Self::Tokio),
            "h2" => Some(Self::H2),
            "relay" => Some(Self::Relay),
            _ => None,
        }
    }

    fn word(self) -> Option<&'static str> {
        match self {
            Self::Blocking => None,
            Self::Tokio => Some("async"),
            Self::H2 => Some("h2"),
            Self::Relay => Some("relay"),
        }
    }
}

/// One message into `buf`: 4 bytes of length (little-endian), then the payload. Returns
/// the frame's length, or `None` at end of input. The peers strictly alternate (one
/// message out, one back), so a read never takes bytes of the next message and a small
/// message arrives in one `read`.
fn read_frame(socket: &mut UnixStream, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
    let mut have = 0;
    let mut want = 4;
    while have < want {
        let n = socket.read(&mut buf[have..])?;
        if n == 0 {
            return if have == 0 {
                Ok(None)
            } else {
                Err(std::io::ErrorKind::UnexpectedEof.into())
            };
        }
        have += n;
        if want == 4 && have >= 4 {
            want = 4 + payload_len(buf)?;
        }
    }
    Ok(Some(want))
}

/// The payload length a frame's first 4 bytes give, bounded.
fn payload_len(buf: &[u8]) -> std::io::Result<usize> {
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(std::io::Error::other(format!("a {len}-byte message")));
    }
    Ok(len)
}

/// [`read_frame`] on a tokio socket.
async fn read_frame_async(
    socket: &mut tokio::net::UnixStream,
    buf: &mut [u8],
) -> std::io::Result<Option<usize>> {
    use tokio::io::AsyncReadExt;
    let mut have = 0;
    let mut want = 4;
    while have < want {
        let n = socket.read(&mut buf[have..]).await?;
        if n == 0 {
            return if have == 0 {
                Ok(None)
            } else {
                Err(std::io::ErrorKind::UnexpectedEof.into())
            };
        }
        have += n;
        if want == 4 && have >= 4 {
            want = 4 + payload_len(buf)?;
        }
    }
    Ok(Some(want))
}

/// A current-thread runtime for one socket's thread.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
}

/// A std socket handed to tokio, on `rt`.
fn to_tokio(
    rt: &tokio::runtime::Runtime,
    socket: UnixStream,
) -> std::io::Result<tokio::net::UnixStream> {
    socket.set_nonblocking(true)?;
    let _entered = rt.enter();
    tokio::net::UnixStream::from_std(socket)
}

fn frame(size: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(4 + size);
    f.extend_from_slice(&(size as u32).to_le_bytes());
    f.resize(4 + size, 0x5a);
    f
}

/// The server: echo every message on `fd` until its peer closes it.
fn serve_one(fd: RawFd) {
    // SAFETY: the fd was inherited from the client for this thread alone, and nothing
    // else in this process owns or closes it.
    let mut socket = unsafe { UnixStream::from_raw_fd(fd) };
    let mut buf = vec![0u8; 4 + MAX_PAYLOAD];
    while let Ok(Some(len)) = read_frame(&mut socket, &mut buf) {
        if socket.write_all(&buf[..len]).is_err() {
            return;
        }
    }
}

/// [`serve_one`] on a tokio runtime of the thread's own.
fn serve_one_async(fd: RawFd) {
    use tokio::io::AsyncWriteExt;
    // SAFETY: as in `serve_one`.
    let socket = unsafe { UnixStream::from_raw_fd(fd) };
    let Ok(rt) = runtime() else { return };
    let Ok(mut socket) = to_tokio(&rt, socket) else {
        return;
    };
    rt.block_on(async {
        let mut buf = vec![0u8; 4 + MAX_PAYLOAD];
        while let Ok(Some(len)) = read_frame_async(&mut socket, &mut buf).await {
            if socket.write_all(&buf[..len]).await.is_err() {
                return;
            }
        }
    });
}

/// [`serve_one`] in gRPC over h2.
fn serve_one_h2(fd: RawFd) {
    // SAFETY: as in `serve_one`.
    let socket = unsafe { UnixStream::from_raw_fd(fd) };
    if let Err(e) = h2_blocking::serve(socket) {
        eprintln!("bench-floor serve h2: {e}");
    }
}

/// The relay: every message from `up` goes on to `down`, and its answer back, until
/// either peer closes.
fn relay_one(up: RawFd, down: RawFd) {
    // SAFETY: as in `serve_one`; each fd is this thread's alone.
    let (mut up, mut down) =
        unsafe { (UnixStream::from_raw_fd(up), UnixStream::from_raw_fd(down)) };
    let mut buf = vec![0u8; 4 + MAX_PAYLOAD];
    while let Ok(Some(len)) = read_frame(&mut up, &mut buf) {
        if down.write_all(&buf[..len]).is_err() {
            return;
        }
        let Ok(Some(len)) = read_frame(&mut down, &mut buf) else {
            return;
        };
        if up.write_all(&buf[..len]).is_err() {
            return;
        }
    }
}

fn serve(fds: &[RawFd], mode: Mode) -> ExitCode {
    // A relay is given its callers' ends, then as many ends towards the server.
    let (ups, downs) = match mode {
        Mode::Relay if fds.len().is_multiple_of(2) => fds.split_at(fds.len() / 2),
        Mode::Relay => {
            eprintln!("bench-floor serve relay: wants as many fds down as up");
            return ExitCode::from(2);
        }
        _ => (fds, &[][..]),
    };
    std::thread::scope(|s| {
        for (i, &fd) in ups.iter().enumerate() {
            match mode {
                Mode::Blocking => s.spawn(move || serve_one(fd)),
                Mode::Tokio => s.spawn(move || serve_one_async(fd)),
                Mode::H2 => s.spawn(move || serve_one_h2(fd)),
                Mode::Relay => {
                    let down = downs[i];
                    s.spawn(move || relay_one(fd, down))
                }
            };
        }
    });
    ExitCode::SUCCESS
}

/// One caller's end of a pair, with its buffers.
struct Pair {
    socket: Socket,
    buf: Vec<u8>,
}

enum Socket {
    Blocking(UnixStream),
    /// Made on the caller's thread, which drives it with its runtime.
    Async(
        Option<UnixStream>,
        Option<(tokio::runtime::Runtime, tokio::net::UnixStream)>,
    ),
    /// Connected on the caller's thread, by its first call.
    H2(Option<UnixStream>, Option<Box<h2_blocking::Client>>),
}

impl Pair {
    /// One round trip of a `size`-byte payload, `out` being its frame.
    fn call(&mut self, out: &[u8]) -> Result<(), Error> {
        let echoed = match &mut self.socket {
            Socket::Blocking(socket) => {
                socket.write_all(out)?;
                read_frame(socket, &mut self.buf)?
            }
            Socket::Async(std, driven) => {
                if let Some(socket) = std.take() {
                    let rt = runtime()?;
                    let socket = to_tokio(&rt, socket)?;
                    *driven = Some((rt, socket));
                }
                let Some((rt, socket)) = driven else {
                    return Err("no runtime for the socket".into());
                };
                rt.block_on(async {
                    use tokio::io::AsyncWriteExt;
                    socket.write_all(out).await?;
                    read_frame_async(socket, &mut self.buf).await
                })?
            }
            Socket::H2(std, client) => {
                if let Some(socket) = std.take() {
                    *client = Some(Box::new(h2_blocking::Client::connect(socket)?));
                }
                let Some(client) = client else {
                    return Err("no connection for the socket".into());
                };
                // The same frame length the others echo back, for the check below.
                Some(4 + client.call(out.len() - 4)?)
            }
        };
        match echoed {
            Some(n) if n == out.len() => Ok(()),
            Some(n) => Err(format!("echoed {} bytes, not {}", n - 4, out.len() - 4).into()),
            None => Err("the server closed the socket".into()),
        }
    }
}

/// Starts the server process on the other ends of `PAIRS` socketpairs (in `relay` mode,
/// the relay on them, and the server behind it).
fn start(mode: Mode) -> Result<(Servers, Vec<Pair>), Error> {
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..PAIRS {
        let (a, b) = UnixStream::pair()?;
        ours.push(Pair {
            socket: match mode {
                Mode::Blocking => Socket::Blocking(a),
                Mode::Tokio => Socket::Async(Some(a), None),
                Mode::H2 => Socket::H2(Some(a), None),
                Mode::Relay => Socket::Blocking(a),
            },
            buf: vec![0u8; 4 + MAX_PAYLOAD],
        });
        theirs.push(b);
    }
    let mut servers = Servers::default();
    if mode == Mode::Relay {
        // The server the relay calls, on pairs of their own; the relay gets both ends.
        let mut relay_ends = Vec::new();
        let mut server_ends = Vec::new();
        for _ in 0..PAIRS {
            let (a, b) = UnixStream::pair()?;
            relay_ends.push(a);
            server_ends.push(b);
        }
        servers.server = Some(spawn_serving(None, &server_ends)?);
        drop(server_ends);
        theirs.extend(relay_ends);
        servers.relay = Some(spawn_serving(mode.word(), &theirs)?);
    } else {
        servers.server = Some(spawn_serving(mode.word(), &theirs)?);
    }
    Ok((servers, ours))
}

/// The processes answering the client's calls, killed when dropped (a start that fails
/// half way leaves none behind).
#[derive(Default)]
struct Servers {
    server: Option<Child>,
    relay: Option<Child>,
}

impl Drop for Servers {
    fn drop(&mut self) {
        for child in [&mut self.relay, &mut self.server].into_iter().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts this program as `serve [WORD] FD…`, giving it `sockets`.
fn spawn_serving(word: Option<&str>, sockets: &[UnixStream]) -> Result<Child, Error> {
    let fds: Vec<RawFd> = sockets.iter().map(AsRawFd::as_raw_fd).collect();
    let mut command = Command::new(std::env::current_exe()?);
    command
        .arg("serve")
        .args(word)
        .args(fds.iter().map(|fd| fd.to_string()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    // SAFETY: between fork and exec this makes only fcntl and prctl syscalls, which are
    // async-signal-safe. It runs on the main thread, which lives as long as this
    // process, so PDEATHSIG fires when the client ends.
    unsafe {
        command.pre_exec(move || {
            for &fd in &fds {
                let fd = std::os::fd::BorrowedFd::borrow_raw(fd);
                nix::fcntl::fcntl(
                    fd,
                    nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
                )?;
            }
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
            Ok(())
        });
    }
    Ok(command.spawn()?)
}

fn latency(pair: &mut Pair, size: usize, count: usize) -> Result<Vec<f64>, Error> {
    let out = frame(size);
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        pair.call(&out)?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(times)
}

/// Calls without pause until `stop` is set or `deadline` passes; returns the count.
fn calls_until(
    pair: &mut Pair,
    size: usize,
    stop: &AtomicBool,
    deadline: Instant,
) -> Result<u64, Error> {
    let out = frame(size);
    let mut calls = 0;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        pair.call(&out)?;
        calls += 1;
    }
    Ok(calls)
}

enum Job {
    Latency {
        size: usize,
        count: usize,
    },
    Rate {
        size: usize,
        stop: Arc<AtomicBool>,
        deadline: Instant,
    },
}

enum Done {
    Latency(Result<Vec<f64>, Error>),
    Rate(Result<u64, Error>),
}

/// A caller thread that owns one pair for the process's life: threads that lived as long
/// as one command would take their context switches with them when they end, and
/// `/proc/<pid>/task/*/status` would no longer count them.
struct Worker {
    jobs: mpsc::Sender<Job>,
    done: mpsc::Receiver<Done>,
}

impl Worker {
    fn start(mut pair: Pair) -> Self {
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (done_tx, done) = mpsc::channel();
        std::thread::spawn(move || {
            for job in job_rx {
                let done = match job {
                    Job::Latency { size, count } => Done::Latency(latency(&mut pair, size, count)),
                    Job::Rate {
                        size,
                        stop,
                        deadline,
                    } => Done::Rate(calls_until(&mut pair, size, &stop, deadline)),
                };
                if done_tx.send(done).is_err() {
                    return;
                }
            }
        });
        Self { jobs, done }
    }

    fn send(&self, job: Job) -> Result<(), Error> {
        self.jobs
            .send(job)
            .map_err(|_| "a caller thread ended".into())
    }

    fn latency(&self, size: usize, count: usize) -> Result<Vec<f64>, Error> {
        self.send(Job::Latency { size, count })?;
        match self.done.recv() {
            Ok(Done::Latency(times)) => times,
            _ => Err("a caller thread ended".into()),
        }
    }
}

/// `workers.len()` callers, one pair each, calling without pause for `window` (each
/// stops at the window's end, and no later than 3 × window).
fn rate(workers: &[Worker], size: usize, window: Duration) -> Result<(u64, f64), Error> {
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let deadline = start + window * 3;
    for worker in workers {
        worker.send(Job::Rate {
            size,
            stop: stop.clone(),
            deadline,
        })?;
    }
    std::thread::sleep(window);
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    let mut failed = None;
    for worker in workers {
        match worker.done.recv() {
            Ok(Done::Rate(Ok(calls))) => total += calls,
            Ok(Done::Rate(Err(e))) => failed = Some(e),
            _ => failed = Some("a caller thread ended".into()),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    match failed {
        Some(e) => Err(e),
        None => Ok((total, secs)),
    }
}

fn numbers(words: &[&str]) -> Result<Vec<usize>, Error> {
    words
        .iter()
        .map(|w| match w.parse::<usize>() {
            Ok(n) if n > 0 && n <= 1 << 26 => Ok(n),
            _ => Err(format!("bad number {w:?}").into()),
        })
        .collect()
}

fn answer(line: &str, workers: &[Worker]) -> Result<Option<serde_json::Value>, Error> {
    let words: Vec<&str> = line.split_whitespace().collect();
    Ok(match words.as_slice() {
        [] => Some(serde_json::Value::Null),
        ["quit"] => None,
        ["latency", rest @ ..] if rest.len() == 2 => {
            let n = numbers(rest)?;
            if n[0] > MAX_PAYLOAD {
                return Err(format!("at most {MAX_PAYLOAD} bytes").into());
            }
            Some(serde_json::json!({ "us": workers[0].latency(n[0], n[1])? }))
        }
        ["rate", rest @ ..] if rest.len() == 3 => {
            let n = numbers(rest)?;
            if n[0] > PAIRS || n[1] > MAX_PAYLOAD || n[2] > 600_000 {
                return Err(format!("at most {PAIRS} callers, {MAX_PAYLOAD} bytes, 600 s").into());
            }
            let window = Duration::from_millis(n[2] as u64);
            let (calls, secs) = rate(&workers[..n[0]], n[1], window)?;
            Some(serde_json::json!({ "calls": calls, "secs": secs }))
        }
        _ => return Err(format!("unknown command {line:?}").into()),
    })
}

fn client(mode: Mode) -> Result<(), Error> {
    let (servers, pairs) = start(mode)?;
    let workers: Vec<Worker> = pairs.into_iter().map(Worker::start).collect();
    let result = (|| {
        workers[0].latency(4, 200)?;
        let mut stdout = std::io::stdout().lock();
        let mut ready = serde_json::json!({
            "ready": true,
            "client": std::process::id(),
            "server": servers.server.as_ref().map(Child::id),
        });
        if let Some(relay) = &servers.relay {
            ready["relay"] = relay.id().into();
        }
        writeln!(stdout, "{ready}")?;
        stdout.flush()?;
        for line in std::io::stdin().lock().lines() {
            match answer(&line?, &workers)? {
                None => break,
                Some(serde_json::Value::Null) => {}
                Some(reply) => {
                    writeln!(stdout, "{reply}")?;
                    stdout.flush()?;
                }
            }
        }
        Ok(())
    })();
    // Closing our ends (the workers' threads end with their channels) ends the servers'
    // threads; they are killed anyway should one hang.
    drop(workers);
    drop(servers);
    result
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let serving = args.first().map(String::as_str) == Some("serve");
    if serving {
        args.remove(0);
    }
    let mode = match args.first().and_then(|a| Mode::parse(a)) {
        Some(mode) => {
            args.remove(0);
            mode
        }
        None => Mode::Blocking,
    };
    if serving {
        let fds: Result<Vec<RawFd>, _> = args.iter().map(|a| a.parse()).collect();
        return match fds {
            Ok(fds) => serve(&fds, mode),
            Err(e) => {
                eprintln!("bench-floor serve: bad fd: {e}");
                ExitCode::from(2)
            }
        };
    }
    if let Some(other) = args.first() {
        eprintln!("bench-floor: unknown argument {other:?} (wants nothing, async, h2 or relay)");
        return ExitCode::from(2);
    }
    match client(mode) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("{}", serde_json::json!({ "error": e.to_string() }));
            ExitCode::FAILURE
        }
    }
}
