//! A plugin that misbehaves on purpose, for the end-to-end tests. The first argument
//! picks the fault:
//!
//! - `ok`: a healthy plugin (started `FAULTY_START_DELAY_MS` late, if set) whose methods misbehave on request: `echo`, `pid`,
//!   `crash` (exits with code 3 mid-call), `abort` (dies by SIGABRT mid-call),
//!   `hang` (never answers), `stdout` (writes a stray line to stdout), `flood`
//!   (writes PAYLOAD MiB of 100-byte lines to stderr as fast as it can), `flood-log`
//!   (sends PAYLOAD lines through the host's `Log` service, back to back), `descendants`
//!   (starts two `sleep`s that ignore SIGTERM, one in the plugin's process group and one
//!   in a session of its own holding the plugin's stderr, each with `BATON_TEST_MARK` =
//!   PAYLOAD in its environment), `runtime` (the flavour and worker count of the runtime
//!   serving it, e.g. `current_thread 1`). `FAULTY_WORKERS` = N serves on
//!   `Server::worker_threads(N)`.
//!   `FAULTY_RESTORE` = `crash` | `hang` | `refuse` makes `Restore` misbehave, and
//!   `refuse-above:N` refuses a count above N (as a plugin's own check of its state
//!   would), `crash-above:N` aborts on one (as a segfault or an OOM kill would); otherwise it accepts any state (and keeps only its own 8-byte count). More faults, each by its own
//!   variable: `FAULTY_CHATTY` (prints on stdout in Describe), `FAULTY_UNKNOWN_CRASH`
//!   (exits on an unknown method), `FAULTY_SNAPSHOT_CLOCK` (a snapshot that is never
//!   the same twice), `FAULTY_IGNORE_SIGTERM`, `FAULTY_LINGER` (does not exit after
//!   `Shutdown`), `FAULTY_LEAK_AT_START` (holds that many MiB from the start).
//!   `write-file`, `open-files` and `spawn` push against its resource limits
//!   (`faulty/limits.rs`).
//! - `garbage`: prints something other than the handshake line.
//! - `wrong-version`: prints a handshake line for protocol version 99.
//! - `silent`: prints nothing and waits forever.
//! - `exit-at-start`: writes a reason to stderr and exits with code 3.
//! - `no-health`: prints a valid handshake line but serves nothing on the socket.
//! - `hog N` (started by the `hog-host-socket` method, not by a config): opens up to N
//!   connections to the host services, each showing the token with a `KvGet`, prints
//!   how many it holds, and holds them until its parent dies.

#[path = "faulty/limits.rs"]
mod limits;

use std::process::ExitCode;
use std::time::Duration;

use baton_plugin_sdk::{Bytes, Description, Plugin, Status, async_trait};

/// `hits` is the plugin's state (8 bytes, little-endian, in snapshots); `leaked`
/// holds memory on purpose.
#[derive(Default)]
struct Faulty {
    hits: std::sync::atomic::AtomicU64,
    leaked: std::sync::Mutex<Vec<Vec<u8>>>,
}

#[async_trait]
impl Plugin for Faulty {
    fn describe(&self) -> Description {
        if std::env::var_os("FAULTY_CHATTY").is_some() {
            println!("describing myself on stdout, by mistake");
        }
        let description = Description::new("faulty", "test")
            .method("echo", "returns the payload")
            .method("pid", "returns the process id")
            .method("hit", "counts one more hit (the state); returns the count")
            .method("leak", "holds PAYLOAD more MiB of memory")
            .method("spin", "burns CPU for PAYLOAD ms")
            .method(
                "spin-here",
                "burns CPU for PAYLOAD ms on the thread that runs the call",
            )
            .method("crash", "exits with code 3 before answering")
            .method("abort", "dies by SIGABRT before answering")
            .method("hang", "never answers")
            .method("stdout", "prints a stray line on stdout")
            .method("flood", "writes PAYLOAD MiB of lines to stderr")
            .method("flood-log", "sends PAYLOAD lines to the host's Log service")
            .method(
                "hold-partial",
                "PAYLOAD \"N MIB\": starts N Log calls to the host, each a MIB MiB message sent \
                 but for its last byte, and says how many the host answered within 8 s",
            )
            .method(
                "terminal-tricks",
                "writes control characters (escape sequences, a carriage return, a newline \
                 that forges a line) to stderr, the host's Log and an event",
            )
            .method(
                "yes",
                "writes two-byte lines to stderr as fast as it can, from now until it dies",
            )
            .method(
                "descendants",
                "starts two SIGTERM-proof children marked PAYLOAD",
            )
            .method("runtime", "the serving runtime's flavour and worker count")
            .method(
                "hog-host-socket",
                "PAYLOAD \"P N\": starts P processes that each hold up to N authenticated \
                 connections to the host services; returns how many they hold in all",
            )
            .method(
                "emit",
                "PAYLOAD \"KIND N\": emits N events of KIND through the host, as fast as \
                 the host's rate allows",
            );
        limits::METHODS
            .iter()
            .fold(description, |d, (name, what)| d.method(*name, *what))
    }

    async fn invoke(&self, method: &str, payload: Bytes) -> Result<Bytes, Status> {
        match method {
            "echo" => Ok(payload),
            "hit" => {
                let n = self.hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                Ok(Bytes::from(n.to_string()))
            }
            "leak" => {
                // Holds PAYLOAD MiB more, touched so it is resident.
                let mib: usize = std::str::from_utf8(&payload)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| Status::invalid_argument("payload: MiB to leak"))?;
                let mut leaked = self.leaked.lock().unwrap_or_else(|p| p.into_inner());
                for _ in 0..mib {
                    leaked.push(vec![1u8; 1 << 20]);
                }
                Ok(Bytes::from(format!("{} MiB held", leaked.len())))
            }
            "spin" => {
                // Burns CPU on a blocking thread for PAYLOAD ms.
                let ms = millis(&payload);
                let _ = tokio::task::spawn_blocking(move || burn(ms)).await;
                Ok(Bytes::new())
            }
            "spin-here" => {
                // What the SDK's docs warn against: it holds its thread for PAYLOAD ms.
                burn(millis(&payload));
                Ok(Bytes::new())
            }
            "pid" => Ok(Bytes::from(std::process::id().to_string())),
            "runtime" => {
                let handle = tokio::runtime::Handle::current();
                let flavor = match handle.runtime_flavor() {
                    tokio::runtime::RuntimeFlavor::CurrentThread => "current_thread",
                    tokio::runtime::RuntimeFlavor::MultiThread => "multi_thread",
                    _ => "other",
                };
                Ok(Bytes::from(format!(
                    "{flavor} {}",
                    handle.metrics().num_workers()
                )))
            }
            "descendants" => {
                use std::os::unix::process::CommandExt;
                let mark = String::from_utf8_lossy(&payload).into_owned();
                let sleeper = || {
                    let mut c = std::process::Command::new("sh");
                    // `trap '' TERM` ignores it, and `exec` keeps that for sleep.
                    c.args(["-c", "trap '' TERM; exec sleep 600"])
                        .env("BATON_TEST_MARK", &mark)
                        .stdin(std::process::Stdio::null())
                        .stdout(std::process::Stdio::null());
                    c
                };
                let grouped = sleeper();
                let mut detached = sleeper();
                // SAFETY: setsid is one async-signal-safe system call.
                unsafe {
                    detached.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(Into::into));
                }
                let spawn = |mut c: std::process::Command| {
                    c.spawn()
                        .map_err(|e| Status::internal(format!("cannot start sh: {e}")))
                };
                // Never waited for: these children are left behind on purpose.
                let (a, b) = (spawn(grouped)?, spawn(detached)?);
                Ok(Bytes::from(format!("{} {}", a.id(), b.id())))
            }
            "crash" => std::process::exit(3),
            "abort" => std::process::abort(),
            "hang" => loop {
                eprintln!("hanging on purpose");
                tokio::time::sleep(Duration::from_secs(3600)).await;
            },
            "stdout" => {
                println!("a stray line on stdout");
                Ok(Bytes::new())
            }
            "flood" => {
                let mib: usize = number(&payload)?;
                // Blocking writes on a thread of their own: the call returns only once the
                // host has read every byte, so a host that stops reading hangs the call.
                let written = tokio::task::spawn_blocking(move || {
                    use std::io::Write;
                    let line = format!("{}\n", "x".repeat(99));
                    let mut err = std::io::stderr().lock();
                    let mut written = 0usize;
                    while written < mib << 20 {
                        if err.write_all(line.as_bytes()).is_err() {
                            break;
                        }
                        written += line.len();
                    }
                    written
                })
                .await
                .map_err(|e| Status::internal(format!("the flood thread failed: {e}")))?;
                Ok(Bytes::from(written.to_string()))
            }
            "yes" => {
                // As `yes >&2` would: the shortest lines, in large writes, without end.
                std::thread::spawn(|| {
                    use std::io::Write;
                    let chunk = "y\n".repeat(32 << 10);
                    let mut err = std::io::stderr().lock();
                    while err.write_all(chunk.as_bytes()).is_ok() {}
                });
                Ok(Bytes::from_static(b"flooding"))
            }
            "terminal-tricks" => {
                eprintln!(
                    "\u{1b}[31mred\u{1b}]0;title\u{7} and back\roverwritten \u{202e}desrever"
                );
                let host = baton_plugin_sdk::HostClient::from_env()
                    .await
                    .map_err(|e| Status::failed_precondition(e.to_string()))?;
                host.log(
                    baton_plugin_sdk::LogLevel::Info,
                    "honest\n2026-01-01T00:00:00Z ERROR baton_host::host: FORGED by the plugin",
                    std::iter::empty::<(String, String)>(),
                )
                .await?;
                host.emit_event("tricks", "\u{1b}[2Jcleared the screen\rand more")
                    .await?;
                Ok(Bytes::from_static(b"done"))
            }
            "hold-partial" => {
                let text = std::str::from_utf8(&payload).unwrap_or_default();
                let (count, mib) = text
                    .split_once(' ')
                    .and_then(|(n, m)| Some((n.parse::<usize>().ok()?, m.parse::<usize>().ok()?)))
                    .ok_or_else(|| Status::invalid_argument("payload: \"N MIB\""))?;
                hold_partial(count, mib << 20)
                    .await
                    .map(Bytes::from)
                    .map_err(|e| Status::internal(format!("hold-partial: {e}")))
            }
            "emit" => {
                let text = std::str::from_utf8(&payload).unwrap_or_default();
                let (kind, count) = text
                    .split_once(' ')
                    .and_then(|(k, n)| Some((k, n.parse::<usize>().ok()?)))
                    .ok_or_else(|| Status::invalid_argument("payload: \"KIND N\""))?;
                emit(kind, count).await.map(|n| Bytes::from(n.to_string()))
            }
            "hog-host-socket" => {
                let text = std::str::from_utf8(&payload).unwrap_or_default();
                let (processes, each) = text
                    .split_once(' ')
                    .and_then(|(p, n)| Some((p.parse::<usize>().ok()?, n.parse::<usize>().ok()?)))
                    .ok_or_else(|| Status::invalid_argument("payload: \"P N\""))?;
                hog_host_socket(processes, each)
                    .await
                    .map(|held| Bytes::from(held.to_string()))
                    .map_err(|e| Status::internal(format!("hog-host-socket: {e}")))
            }
            "flood-log" => {
                let lines: usize = number(&payload)?;
                let host = baton_plugin_sdk::HostClient::from_env()
                    .await
                    .map_err(|e| Status::failed_precondition(e.to_string()))?;
                for i in 0..lines {
                    host.log(
                        baton_plugin_sdk::LogLevel::Info,
                        format!("flooding the host log, line {i} {}", "y".repeat(60)),
                        [("n", i.to_string())],
                    )
                    .await?;
                }
                Ok(Bytes::from(lines.to_string()))
            }
            other if let Some(result) = limits::call(other, &payload) => result,
            other if std::env::var_os("FAULTY_UNKNOWN_CRASH").is_some() => {
                eprintln!("panicking on unknown method {other:?}");
                std::process::exit(5)
            }
            other => Err(Status::unimplemented(format!(
                "faulty has no method {other:?}"
            ))),
        }
    }

    async fn snapshot(&self) -> Result<Bytes, Status> {
        if std::env::var_os("FAULTY_SNAPSHOT_CLOCK").is_some() {
            // A state that is different every time it is exported.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            return Ok(Bytes::copy_from_slice(&now.as_nanos().to_le_bytes()));
        }
        Ok(Bytes::copy_from_slice(
            &self
                .hits
                .load(std::sync::atomic::Ordering::SeqCst)
                .to_le_bytes(),
        ))
    }

    async fn restore(&self, schema_version: u32, state: Vec<u8>) -> Result<(), Status> {
        match std::env::var("FAULTY_RESTORE").as_deref() {
            Ok("crash") => {
                eprintln!("crashing in Restore on purpose");
                std::process::exit(4)
            }
            Ok("hang") => loop {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            },
            Ok("refuse") => Err(Status::failed_precondition(format!(
                "faulty refuses state schema {schema_version} on purpose"
            ))),
            Ok(other) if other.starts_with("crash-above:") => {
                let most: u64 = other["crash-above:".len()..].parse().unwrap_or(0);
                let count = count_in(&state)?;
                if count > most {
                    // Dies as a segfault or an OOM kill would: no answer, no clean exit.
                    eprintln!("faulty aborts in Restore on a count of {count}: more than {most}");
                    std::process::abort();
                }
                self.hits.store(count, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            }
            Ok(other) if other.starts_with("refuse-above:") => {
                let most: u64 = other["refuse-above:".len()..].parse().unwrap_or(0);
                let count = count_in(&state)?;
                if count > most {
                    return Err(Status::failed_precondition(format!(
                        "faulty refuses a count of {count}: more than {most}"
                    )));
                }
                self.hits.store(count, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            }
            _ => {
                // Its own 8-byte state; anything else (another plugin's) is accepted and dropped.
                if let Ok(bytes) = <[u8; 8]>::try_from(state.as_slice()) {
                    self.hits.store(
                        u64::from_le_bytes(bytes),
                        std::sync::atomic::Ordering::SeqCst,
                    );
                }
                Ok(())
            }
        }
    }
}

/// The count in faulty's own 8-byte state.
fn count_in(state: &[u8]) -> Result<u64, Status> {
    <[u8; 8]>::try_from(state)
        .map(u64::from_le_bytes)
        .map_err(|_| Status::invalid_argument("faulty's state is 8 bytes"))
}

/// Starts `processes` hogs (this binary, `hog EACH`) and adds up the connections they
/// say they hold; they keep holding them until this process dies.
async fn hog_host_socket(
    processes: usize,
    each: usize,
) -> Result<usize, Box<dyn std::error::Error>> {
    use tokio::io::AsyncBufReadExt;
    let mut lines = Vec::new();
    for _ in 0..processes {
        // The binary that runs is a private copy, removed once it ran: only this names it.
        let mut hog = tokio::process::Command::new("/proc/self/exe")
            .args(["hog", &each.to_string()])
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let stdout = hog.stdout.take().ok_or("the hog's stdout")?;
        lines.push(tokio::io::BufReader::new(stdout).lines());
        // Reaped by whoever outlives it; it dies with this process (PDEATHSIG).
        std::mem::forget(hog);
    }
    let mut held = 0;
    for mut hog in lines {
        let line = tokio::time::timeout(Duration::from_secs(60), hog.next_line())
            .await?
            .ok()
            .flatten()
            .unwrap_or_default();
        held += line.trim().parse::<usize>().unwrap_or(0);
        // The pipe stays open: a hog that wrote into a closed one would die of SIGPIPE.
        std::mem::forget(hog);
    }
    Ok(held)
}

/// `hog N`: holds up to N authenticated connections to the host services.
fn hog(each: usize) -> ExitCode {
    if nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).is_err() {
        return ExitCode::from(2);
    }
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return ExitCode::from(2);
    };
    runtime.block_on(async {
        let mut held = Vec::new();
        for _ in 0..each {
            let Ok(client) = baton_plugin_sdk::HostClient::from_env().await else {
                break;
            };
            if client.kv_get("hog").await.is_err() {
                break;
            }
            held.push(client);
        }
        println!("{}", held.len());
        loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    })
}

/// Emits `count` events of `kind`; over the host's rate, waits a moment and tries again.
async fn emit(kind: &str, count: usize) -> Result<usize, Status> {
    let host = baton_plugin_sdk::HostClient::from_env()
        .await
        .map_err(|e| Status::failed_precondition(e.to_string()))?;
    let mut sent = 0;
    while sent < count {
        match host
            .emit_event(kind, format!("event {sent} of {count}"))
            .await
        {
            Ok(()) => sent += 1,
            Err(e) if e.code() == tonic::Code::ResourceExhausted => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(sent)
}

/// A decimal number in a payload.
/// Starts `count` Log calls on the host-services socket, each a message of `bytes`
/// written but for its last byte, and waits up to 8 s for the host's answers; says
/// "answered A of N: CODES" (the `grpc-status` of each answer). Every stream is kept open
/// until then, so the host holds whatever it keeps of them.
async fn hold_partial(count: usize, bytes: usize) -> Result<String, Box<dyn std::error::Error>> {
    let socket = std::env::var(baton_proto::env::HOST_SOCKET)?;
    let token = std::env::var(baton_proto::env::TOKEN)?;
    let io = tokio::net::UnixStream::connect(socket).await?;
    let (mut client, connection) = h2::client::Builder::new()
        .initial_window_size(1 << 20)
        .handshake::<_, Bytes>(io)
        .await?;
    tokio::spawn(connection);
    // One buffer for every call's payload: the plugin itself stays small.
    let mut message = vec![0u8; 5 + bytes];
    message[1..5].copy_from_slice(&u32::try_from(bytes)?.to_be_bytes());
    let message = Bytes::from(message);
    let mut open = Vec::new();
    for _ in 0..count {
        let request = http::Request::post("http://host/baton.host.v1.Host/Log")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header(baton_proto::TOKEN_METADATA_KEY, &token)
            .body(())?;
        client = client.ready().await?;
        let (answer, mut stream) = client.send_request(request, false)?;
        stream.send_data(message.slice(..message.len() - 1), false)?;
        open.push((answer, stream));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    let mut codes = Vec::new();
    for (answer, _stream) in &mut open {
        if let Ok(Ok(answer)) = tokio::time::timeout_at(deadline, answer).await {
            let code = answer
                .headers()
                .get("grpc-status")
                .and_then(|c| c.to_str().ok())
                .unwrap_or("none")
                .to_owned();
            codes.push(code);
        }
    }
    Ok(format!(
        "answered {} of {count}: {}",
        codes.len(),
        codes.join(",")
    ))
}

fn number(payload: &[u8]) -> Result<usize, Status> {
    std::str::from_utf8(payload)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Status::invalid_argument("payload: a decimal number"))
}

fn socket() -> String {
    std::env::var("BATON_PLUGIN_SOCKET").unwrap_or_default()
}

fn wait_forever() -> ExitCode {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn main() -> ExitCode {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "ok".into());
    match mode.as_str() {
        "ok" => {
            if std::env::var_os("FAULTY_IGNORE_SIGTERM").is_some() {
                // Blocked before any thread starts, so no thread ever takes it.
                let mut set = nix::sys::signal::SigSet::empty();
                set.add(nix::sys::signal::Signal::SIGTERM);
                let _ = nix::sys::signal::pthread_sigmask(
                    nix::sys::signal::SigmaskHow::SIG_BLOCK,
                    Some(&set),
                    None,
                );
            }
            // Lets tests make a restart take a while, to see calls wait for it.
            if let Some(ms) = std::env::var("FAULTY_START_DELAY_MS")
                .ok()
                .and_then(|v| v.parse().ok())
            {
                std::thread::sleep(Duration::from_millis(ms));
            }
            let faulty = Faulty::default();
            // A process that is over a memory limit from its first moment.
            if let Some(mib) = std::env::var("FAULTY_LEAK_AT_START")
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
            {
                let mut leaked = faulty.leaked.lock().unwrap_or_else(|p| p.into_inner());
                for _ in 0..mib {
                    leaked.push(vec![1u8; 1 << 20]);
                }
            }
            let mut server = baton_plugin_sdk::Server::new(faulty);
            if let Some(n) = std::env::var("FAULTY_WORKERS")
                .ok()
                .and_then(|v| v.parse().ok())
            {
                server = server.worker_threads(n);
            }
            let code = server.serve();
            if std::env::var_os("FAULTY_LINGER").is_some() {
                eprintln!("lingering after shutdown");
                return wait_forever();
            }
            code
        }
        "garbage" => {
            println!("Hello! I am a plugin that prints banners.");
            wait_forever()
        }
        "wrong-version" => {
            println!("baton|99|unix|{}", socket());
            wait_forever()
        }
        "silent" => wait_forever(),
        "hog" => hog(std::env::args()
            .nth(2)
            .and_then(|n| n.parse().ok())
            .unwrap_or(64)),
        "exit-at-start" => {
            eprintln!("fatal: cannot open /nonexistent/faulty.conf");
            ExitCode::from(3)
        }
        "no-health" => {
            let _listener = std::os::unix::net::UnixListener::bind(socket());
            println!("baton|1|unix|{}", socket());
            wait_forever()
        }
        other => {
            eprintln!("faulty: unknown mode {other:?}");
            ExitCode::from(2)
        }
    }
}

/// PAYLOAD as a count of milliseconds; a second if it is not one.
fn millis(payload: &[u8]) -> u64 {
    std::str::from_utf8(payload)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000)
}

/// Keeps a CPU busy for `ms` milliseconds.
fn burn(ms: u64) -> u64 {
    let end = std::time::Instant::now() + Duration::from_millis(ms);
    let mut x = 0u64;
    while std::time::Instant::now() < end {
        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
    }
    x
}
