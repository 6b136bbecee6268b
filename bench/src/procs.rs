//! Processes the benchmark starts itself: a plugin launched by hand for the bare-tonic
//! baseline, and `baton run` daemons. Each is in its own process group, dies with the
//! benchmark (PR_SET_PDEATHSIG), and is killed with its group when dropped.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use baton_proto::host::supervisor_client::SupervisorClient;
use baton_proto::plugin::plugin_client::PluginClient;
use hyper_util::rt::TokioIo;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncBufReadExt;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, Endpoint};

use crate::Error;

/// Largest message either side accepts (the host's and the SDK's limit).
pub const MAX_MESSAGE: usize = 64 << 20;

fn die_with_us(command: &mut Command) {
    // SAFETY: between fork and exec this only makes the prctl syscall, which is
    // async-signal-safe. The benchmark forks from tokio worker threads, which live as
    // long as the runtime (never from the blocking pool, whose threads come and go), so
    // the signal fires when the benchmark ends.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            Ok(())
        });
    }
    command.process_group(0);
}

fn kill_group(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// A channel to a Unix socket, connected now: with HTTP/2's default frame and window
/// sizes, or with the large ones the host uses for its plugins (`large_windows`).
pub async fn unix_channel(path: &Path, large_windows: bool) -> Result<Channel, Error> {
    let path = path.to_owned();
    let shown = path.display().to_string();
    let mut endpoint = Endpoint::from_static("http://bench");
    if large_windows {
        endpoint = endpoint
            .max_frame_size(1 << 20)
            .initial_stream_window_size(8 << 20)
            .initial_connection_window_size(16 << 20);
    }
    endpoint
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .map_err(|e| format!("cannot connect to {shown}: {e}").into())
}

/// A plugin started by hand, as a host would: the floor every host path is compared with.
pub struct BarePlugin {
    child: Child,
    _dir: tempfile::TempDir,
    /// A plain tonic client on the plugin's own socket.
    pub client: PluginClient<Channel>,
    /// The launch token every call must carry.
    pub token: AsciiMetadataValue,
    /// The socket the plugin serves on.
    pub socket: PathBuf,
}

impl BarePlugin {
    /// Launches `binary` with the handshake variables and connects to the socket it names,
    /// with HTTP/2's default windows.
    pub async fn start(binary: &Path) -> Result<Self, Error> {
        Self::start_with(binary, false).await
    }

    /// As [`BarePlugin::start`], with the host's large frames and windows if `large_windows`.
    pub async fn start_with(binary: &Path, large_windows: bool) -> Result<Self, Error> {
        let dir = tempfile::Builder::new().prefix("baton-bench-").tempdir()?;
        let socket = dir.path().join("bare.sock");
        let token = format!(
            "{:032x}",
            std::process::id() as u128 * 0x9e37_79b9_7f4a_7c15
        );
        let mut command = Command::new(binary);
        command
            .env(baton_proto::env::SOCKET, &socket)
            .env(baton_proto::env::PROTOCOL_VERSION, "1")
            .env(baton_proto::env::TOKEN, &token)
            .env("BATON_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        die_with_us(&mut command);
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or("the plugin's stdout was not captured")?;
        let mut plugin = Self {
            child,
            _dir: dir,
            client: PluginClient::new(Channel::from_static("http://unused").connect_lazy()),
            token: AsciiMetadataValue::try_from(token.as_str())
                .map_err(|e| format!("bad token: {e}"))?,
            socket: PathBuf::new(),
        };
        let mut line = String::new();
        let mut reader = tokio::io::BufReader::new(tokio::process::ChildStdout::from_std(stdout)?);
        tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line))
            .await
            .map_err(|_| "the plugin printed no handshake line within 10 s")??;
        let line = line.trim_end();
        let path = match line.splitn(4, '|').collect::<Vec<_>>().as_slice() {
            ["baton", "1", "unix", path] => PathBuf::from(path),
            _ => return Err(format!("unexpected handshake line {line:?}").into()),
        };
        let channel = unix_channel(&path, large_windows).await?;
        plugin.socket = path;
        plugin.client = PluginClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        // Keep reading stdout, so a stray line never blocks the plugin on a full pipe.
        tokio::spawn(async move {
            let mut sink = String::new();
            for _ in 0..10_000 {
                sink.clear();
                if !matches!(reader.read_line(&mut sink).await, Ok(n) if n > 0) {
                    break;
                }
            }
        });
        Ok(plugin)
    }
}

impl BarePlugin {
    /// The plugin's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for BarePlugin {
    fn drop(&mut self) {
        kill_group(self.child.id());
        let _ = self.child.wait();
    }
}

/// `bench-relay` in front of a bare plugin: the floor for the daemon path.
pub struct Relay {
    child: Child,
    _dir: tempfile::TempDir,
    /// A client of its `Supervisor/Invoke`.
    pub client: SupervisorClient<Channel>,
    /// Where it listens (raw frames for `x-baton-plugin` calls, too).
    pub socket: PathBuf,
}

impl Relay {
    pub async fn start(binary: &Path, plugin: &BarePlugin) -> Result<Self, Error> {
        let dir = tempfile::Builder::new().prefix("baton-bench-").tempdir()?;
        let socket = dir.path().join("relay.sock");
        let mut command = Command::new(binary);
        command
            .arg(&socket)
            .arg(&plugin.socket)
            .env("BENCH_RELAY_TOKEN", plugin.token.to_str()?)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        die_with_us(&mut command);
        let child = command
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
        let mut relay = Self {
            child,
            _dir: dir,
            client: SupervisorClient::new(Channel::from_static("http://unused").connect_lazy()),
            socket: socket.clone(),
        };
        let timeout = Duration::from_secs(10);
        let child = &mut relay.child;
        relay.client = supervisor_client(&socket, timeout, || child.try_wait().ok().flatten())
            .await
            .map_err(|e| match e {
                NotListening::Exited(status) => format!("bench-relay exited at start ({status})"),
                NotListening::TimedOut => format!("bench-relay did not listen within {timeout:?}"),
            })?;
        Ok(relay)
    }
}

impl Relay {
    /// The relay's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        kill_group(self.child.id());
        let _ = self.child.wait();
    }
}

/// Why a process just started does not serve on its socket.
enum NotListening {
    Exited(std::process::ExitStatus),
    TimedOut,
}

/// A `Supervisor` client on `socket`, once the process there listens: tries every 10 ms
/// for up to `timeout`, and gives up at once if `exited` reports the process gone.
async fn supervisor_client(
    socket: &Path,
    timeout: Duration,
    mut exited: impl FnMut() -> Option<std::process::ExitStatus>,
) -> Result<SupervisorClient<Channel>, NotListening> {
    let deadline = tokio::time::Instant::now() + timeout;
    let channel = loop {
        if let Ok(c) = unix_channel(socket, false).await {
            break c;
        }
        if let Some(status) = exited() {
            return Err(NotListening::Exited(status));
        }
        if tokio::time::Instant::now() > deadline {
            return Err(NotListening::TimedOut);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    Ok(SupervisorClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE))
}

/// A `baton run` process on a config written into a temporary directory.
pub struct Daemon {
    child: Option<Child>,
    /// Holds the config, the control socket and the daemon's log.
    pub dir: tempfile::TempDir,
    /// A client of its control API.
    pub client: SupervisorClient<Channel>,
}

impl Daemon {
    /// Starts `baton run` with `plugins_toml` and waits (up to `timeout`) for its control API.
    pub async fn start(baton: &Path, plugins_toml: &str, timeout: Duration) -> Result<Self, Error> {
        let dir = tempfile::Builder::new().prefix("baton-bench-").tempdir()?;
        let socket = dir.path().join("baton.sock");
        let config = dir.path().join("baton.toml");
        std::fs::write(
            &config,
            format!("socket = \"{}\"\n\n{plugins_toml}", socket.display()),
        )?;
        let log = std::fs::File::create(dir.path().join("baton.log"))?;
        let mut command = Command::new(baton);
        command
            .args(["run", "--config"])
            .arg(&config)
            .env("BATON_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        die_with_us(&mut command);
        let child = command
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", baton.display()))?;
        let mut daemon = Self {
            child: Some(child),
            dir,
            client: SupervisorClient::new(Channel::from_static("http://unused").connect_lazy()),
        };
        let child = &mut daemon.child;
        let connected = supervisor_client(&socket, timeout, || {
            child.as_mut().and_then(|c| c.try_wait().ok().flatten())
        })
        .await;
        daemon.client = connected.map_err(|e| match e {
            NotListening::Exited(status) => format!(
                "baton run exited at start ({status}); its log: {}",
                daemon.log_tail()
            ),
            NotListening::TimedOut => {
                format!("baton run did not serve its control API within {timeout:?}")
            }
        })?;
        Ok(daemon)
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("baton.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(5).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }

    /// SIGTERM (the daemon stops its plugins), then SIGKILL after `grace`.
    pub async fn stop(mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                kill_group(child.id());
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        kill_group(child.id());
        let _ = child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            // The daemon's plugins die with it (they are its children with PDEATHSIG).
            kill_group(child.id());
            let _ = child.wait();
        }
    }
}

/// Resident memory of `pid`, in bytes (VmRSS).
pub fn rss_bytes(pid: u32) -> Result<u64, Error> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| format!("no VmRSS in /proc/{pid}/status").into())
}

/// CPU time `pid` has used (all threads, user + system).
pub fn cpu_time(pid: u32) -> Result<Duration, Error> {
    Ok(baton_tests::cpu_time(pid)?)
}

/// The processes whose parent is `pid`, lowest pid first.
pub fn children(pid: u32) -> Result<Vec<u32>, Error> {
    Ok(baton_tests::children_with_state(pid)
        .into_iter()
        .map(|(child, _)| child)
        .collect())
}

/// The deepest process below `pid` (breadth first, so the last one found): a daemon's
/// plugin, under the daemon's pid-namespace init processes when it uses them.
pub fn deepest_descendant(pid: u32) -> Result<Option<u32>, Error> {
    let mut level = vec![pid];
    let mut deepest = None;
    // Bounded: a process tree deeper than this is not one the benchmark made.
    for _ in 0..8 {
        let mut next = Vec::new();
        for &p in &level {
            next.extend(children(p)?);
        }
        if next.is_empty() {
            break;
        }
        deepest = next.last().copied();
        level = next;
    }
    Ok(deepest)
}

/// Context switches of `pid` so far, voluntary and involuntary, summed over its
/// threads (`/proc/<pid>/task/*/status`; a thread that has ended is no longer counted).
pub fn context_switches(pid: u32) -> Result<u64, Error> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let Ok(status) = std::fs::read_to_string(task?.path().join("status")) else {
            continue;
        };
        for line in status.lines() {
            if let Some(n) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                total += n.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    Ok(total)
}

/// A process the benchmark drives over its stdin and stdout, one command a line and
/// one JSON line back (`bench-floor`, `go-plugin-peer`): it times its own calls, and
/// the benchmark reads the figures. Its first line names its pids:
/// `{"ready":true,"client":PID,"server":PID}`. Killed with its group when dropped.
pub struct Driver {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    name: String,
    /// Its pid, which is its process group's id.
    group: u32,
    /// The process making the calls.
    pub client: u32,
    /// The process answering them.
    pub server: u32,
    /// A process passing them on between the two, where there is one (`"relay":PID`).
    pub relay: Option<u32>,
}

impl Driver {
    /// Starts `binary` and waits (up to `timeout`) for its ready line.
    pub async fn start(binary: &Path, timeout: Duration) -> Result<Self, Error> {
        Self::start_with(binary, timeout, &[], &[]).await
    }

    /// As [`Driver::start`], with `args` and with `env` added to the driver's
    /// environment (its children's too).
    pub async fn start_with(
        binary: &Path,
        timeout: Duration,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self, Error> {
        let name = binary.file_name().map_or_else(
            || binary.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let mut command = Command::new(binary);
        command
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        die_with_us(&mut command);
        let mut command = tokio::process::Command::from(command);
        command.kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
        let group = child.id().ok_or("the driver exited at once")?;
        let stdin = child
            .stdin
            .take()
            .ok_or("the driver's stdin was not piped")?;
        let stdout = child
            .stdout
            .take()
            .ok_or("the driver's stdout was not piped")?;
        let mut driver = Self {
            child,
            stdin,
            lines: tokio::io::BufReader::new(stdout).lines(),
            name,
            group,
            client: 0,
            server: 0,
            relay: None,
        };
        let ready = driver.answer(timeout).await?;
        let pid = |key: &str| {
            ready[key]
                .as_u64()
                .and_then(|p| u32::try_from(p).ok())
                .filter(|&p| p > 0)
        };
        match (pid("client"), pid("server")) {
            (Some(client), Some(server)) => {
                driver.client = client;
                driver.server = server;
                driver.relay = pid("relay");
                Ok(driver)
            }
            _ => Err(format!("{}: unexpected ready line {ready}", driver.name).into()),
        }
    }

    async fn answer(&mut self, timeout: Duration) -> Result<serde_json::Value, Error> {
        let line = tokio::time::timeout(timeout, self.lines.next_line())
            .await
            .map_err(|_| format!("{} did not answer within {timeout:?}", self.name))??
            .ok_or_else(|| format!("{} exited", self.name))?;
        let value: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| format!("{} answered {line:?}: {e}", self.name))?;
        if let Some(e) = value.get("error") {
            return Err(format!("{}: {e}", self.name).into());
        }
        Ok(value)
    }

    /// Sends one command and waits (up to `timeout`) for its answer.
    pub async fn ask(
        &mut self,
        command: &str,
        timeout: Duration,
    ) -> Result<serde_json::Value, Error> {
        use tokio::io::AsyncWriteExt;
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await?;
        self.stdin.flush().await?;
        self.answer(timeout).await
    }

    /// `latency SIZE COUNT`: µs per call of `count` sequential calls.
    pub async fn latency(&mut self, size: usize, count: usize) -> Result<Vec<f64>, Error> {
        let answer = self
            .ask(&format!("latency {size} {count}"), Duration::from_secs(120))
            .await?;
        let times: Option<Vec<f64>> = answer["us"]
            .as_array()
            .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect());
        match times {
            Some(t) if t.len() == count => Ok(t),
            _ => Err(format!("{}: unexpected answer {answer}", self.name).into()),
        }
    }

    /// `rate CALLERS SIZE MILLIS`: calls made and the seconds they took.
    pub async fn rate(
        &mut self,
        callers: usize,
        size: usize,
        window: Duration,
    ) -> Result<(u64, f64), Error> {
        let command = format!("rate {callers} {size} {}", window.as_millis());
        let answer = self
            .ask(&command, window * 3 + Duration::from_secs(30))
            .await?;
        match (answer["calls"].as_u64(), answer["secs"].as_f64()) {
            (Some(calls), Some(secs)) if secs > 0.0 => Ok((calls, secs)),
            _ => Err(format!("{}: unexpected answer {answer}", self.name).into()),
        }
    }

    /// Asks it to stop, then kills its group after `grace`.
    pub async fn stop(mut self, grace: Duration) {
        use tokio::io::AsyncWriteExt;
        let _ = self.stdin.write_all(b"quit\n").await;
        let _ = tokio::time::timeout(grace, self.child.wait()).await;
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Its server too, whether or not it has exited (a group outlives its leader).
        kill_group(self.group);
    }
}
