//! Helpers for baton's end-to-end tests: start a real `baton` host with real plugin
//! processes, call it, wait for conditions with deadlines, and clean up every process.

/// The example application API (`example-plugins/trigger`), what an embedder's own
/// `.proto` would be, with what the tests need around it.
pub mod trigger {
    pub use trigger_plugin::api::*;

    /// The same API as a later build changed it (`TriggerResult.total` a string, made by
    /// `tests/build.rs`): what a plugin that broke the API would describe.
    pub const CHANGED_FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/trigger_changed_descriptor.bin"));

    /// A batch of points of one series, numbered by the plugin.
    pub fn batch(series: &str, values: &[f64]) -> WriteBatch {
        WriteBatch {
            points: values
                .iter()
                .map(|&value| Point {
                    series: series.into(),
                    value,
                    sequence: 0,
                })
                .collect(),
        }
    }
}

use std::future::Future;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use baton_proto::host::supervisor_client::SupervisorClient;
use baton_proto::host::{InvokeRequest, ListRequest, PluginStatus, StatusRequest};
use hyper_util::rt::TokioIo;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tonic::transport::{Channel, Endpoint};

/// The directory holding the workspace's built binaries (`target/debug`).
pub fn bin_dir() -> PathBuf {
    // Test binaries live in target/<profile>/deps.
    let exe = std::env::current_exe().expect("the test binary knows its path");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test binary is inside target/<profile>/deps")
        .to_owned()
}

/// A workspace binary, checked to exist.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (`cargo build --workspace`)",
        path.display()
    );
    path
}

/// Polls `check` until it returns `Some`, or panics naming `what` after `timeout`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether a process is running (not gone, not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state letter follows the parenthesised command name.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next());
            !matches!(state, Some('Z') | Some('X') | None)
        }
        Err(_) => false,
    }
}

/// A channel to a Unix socket.
pub async fn unix_channel(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = path.to_owned();
    Endpoint::from_static("http://test")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
}

/// A `baton run` process with its own config, socket and log, in a temporary directory.
pub struct TestHost {
    /// The host process.
    pub child: Child,
    /// Holds the config, the control socket and the host's log.
    pub dir: tempfile::TempDir,
    /// The control socket.
    pub socket: PathBuf,
    client: Option<SupervisorClient<Channel>>,
}

impl TestHost {
    /// Writes `plugins_toml` (the `[plugins.*]` tables) into a config and starts a host on it,
    /// returning once its control API answers.
    pub async fn start(plugins_toml: &str) -> Self {
        Self::start_with_env(plugins_toml, &[]).await
    }

    /// Like [`start`](Self::start), with extra environment variables for the host.
    pub async fn start_with_env(plugins_toml: &str, env: &[(&str, &str)]) -> Self {
        Self::launch(None, plugins_toml, env, None, None).await
    }

    /// Like [`start`](Self::start), with the host's open-files limit (soft and hard) set to
    /// `limit`, as a tight `LimitNOFILE=` would.
    pub async fn start_with_open_files(plugins_toml: &str, limit: u64) -> Self {
        Self::launch(None, plugins_toml, &[], Some(limit), None).await
    }

    /// Like [`start`](Self::start), with the control socket at `socket` instead of in
    /// the host's own directory (for hosts that meet at one path).
    pub async fn start_at(socket: &Path, plugins_toml: &str) -> Self {
        Self::launch(Some(socket.to_owned()), plugins_toml, &[], None, None).await
    }

    /// Like [`start`](Self::start), with the host running as `user` (uid, gid) rather
    /// than as this test's user: for hosts without root's privileges.
    pub async fn start_as(plugins_toml: &str, user: (u32, u32)) -> Self {
        Self::launch(None, plugins_toml, &[], None, Some(user)).await
    }

    async fn launch(
        socket: Option<PathBuf>,
        plugins_toml: &str,
        env: &[(&str, &str)],
        open_files: Option<u64>,
        user: Option<(u32, u32)>,
    ) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("baton-test-")
            .tempdir()
            .expect("a temp dir");
        let socket = socket.unwrap_or_else(|| dir.path().join("baton.sock"));
        let config = dir.path().join("baton.toml");
        std::fs::write(
            &config,
            format!("socket = \"{}\"\n\n{plugins_toml}", socket.display()),
        )
        .expect("write the config");
        let log = std::fs::File::create(dir.path().join("host.log")).expect("create the log");
        let mut command = Command::new(bin("baton"));
        command
            .args(["run", "--config"])
            .arg(&config)
            .env("BATON_LOG", "info,baton::plugin=debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup the log"))
            .stderr(log)
            .process_group(0);
        if let Some(limit) = open_files {
            // SAFETY: one raw syscall between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    nix::sys::resource::setrlimit(
                        nix::sys::resource::Resource::RLIMIT_NOFILE,
                        limit,
                        limit,
                    )
                    .map_err(std::io::Error::from)
                });
            }
        }
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("hand over the dir");
            command.uid(uid).gid(gid);
        }
        let child = command.spawn().expect("start baton");
        let mut host = Self {
            child,
            dir,
            socket,
            client: None,
        };
        let socket = host.socket.clone();
        let channel = wait_until(
            "the host's control API answers",
            Duration::from_secs(10),
            || {
                let socket = socket.clone();
                async move { unix_channel(&socket).await.ok() }
            },
        )
        .await;
        host.client = Some(
            SupervisorClient::new(channel)
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
        );
        host
    }

    /// Runs `baton ctl ARGS...` against this host to the end: whether it succeeded,
    /// its stdout and its stderr.
    pub fn ctl(&self, args: &[&str]) -> (bool, String, String) {
        let (code, out, err) = ctl_at(&self.socket, args, &[]);
        (code == Some(0), out, err)
    }

    /// A client of the control API.
    pub fn client(&self) -> SupervisorClient<Channel> {
        self.client.clone().expect("the host was started")
    }

    /// Calls a plugin through the host.
    pub async fn invoke(
        &self,
        plugin: &str,
        method: &str,
        payload: impl Into<Vec<u8>>,
    ) -> Result<Vec<u8>, tonic::Status> {
        self.client()
            .invoke(InvokeRequest {
                plugin: plugin.into(),
                method: method.into(),
                payload: payload.into().into(),
                metadata: Default::default(),
            })
            .await
            .map(|r| r.into_inner().payload.to_vec())
    }

    /// Calls a plugin and returns the answer as text, panicking on error.
    pub async fn call_text(&self, plugin: &str, method: &str, payload: &str) -> String {
        match self.invoke(plugin, method, payload).await {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(status) => panic!("{plugin}.{method}({payload:?}) failed: {status:?}"),
        }
    }

    /// 100 echoes through `plugin`, 2 ms apart: calls close enough that a side which
    /// spins after each answer (`spin_us`, `control_spin_us`, 1 ms) is still spinning
    /// when the next one comes.
    pub async fn paced_echoes(&self, plugin: &str) {
        for i in 0..100 {
            let text = format!("call {i}");
            assert_eq!(self.call_text(plugin, "echo", &text).await, text);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The host's view of one plugin.
    pub async fn status(&self, plugin: &str) -> PluginStatus {
        self.client()
            .status(StatusRequest {
                plugin: plugin.into(),
            })
            .await
            .expect("status")
            .into_inner()
    }

    /// Every plugin's status.
    pub async fn list(&self) -> Vec<PluginStatus> {
        self.client()
            .list(ListRequest {})
            .await
            .expect("list")
            .into_inner()
            .plugins
    }

    /// Waits until `plugin` serves and returns its status.
    pub async fn serving(&self, plugin: &str, timeout: Duration) -> PluginStatus {
        wait_until(&format!("{plugin} serves"), timeout, || async {
            let s = self.status(plugin).await;
            (s.state == baton_proto::host::PluginState::Serving as i32).then_some(s)
        })
        .await
    }

    /// Everything the host has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("host.log")).unwrap_or_default()
    }

    /// The host's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits (bounded) for the host to exit; returns its exit code.
    pub fn stop(&mut self, timeout: Duration) -> Option<i32> {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// SIGKILLs the host, as a crash or the OOM killer would, and reaps it.
    pub fn kill(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Shown with the failed test's output: what the host saw is usually the why.
            eprintln!(
                "---- host log ----\n{}---- end of host log ----",
                self.log()
            );
        }
        // A graceful stop first, so the host cleans its runtime directory up.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.stop(Duration::from_secs(3));
        }
        // Plugins die with the host (PDEATHSIG); the group kill covers anything else.
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `[plugins.NAME]` table running a workspace binary with extra settings.
pub fn plugin(name: &str, binary: &str, args: &[&str], extra: &str) -> String {
    let args: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
    format!(
        "[plugins.{name}]\ncommand = \"{}\"\nargs = [{}]\n{extra}\n",
        bin(binary).display(),
        args.join(", ")
    )
}

/// Every lifecycle event a host emits, collected in the background from its Events stream.
pub struct EventLog {
    events: std::sync::Arc<std::sync::Mutex<Vec<baton_proto::host::Event>>>,
    task: tokio::task::JoinHandle<()>,
}

impl EventLog {
    /// Subscribes to `host`'s events; returns once the subscription is live.
    pub async fn start(host: &TestHost) -> Self {
        let mut stream = host
            .client()
            .events(baton_proto::host::EventsRequest::default())
            .await
            .expect("subscribe to events")
            .into_inner();
        let events: std::sync::Arc<std::sync::Mutex<Vec<baton_proto::host::Event>>> =
            Default::default();
        let sink = events.clone();
        let task = tokio::spawn(async move {
            while let Ok(Some(e)) = stream.message().await {
                sink.lock().expect("event log").push(e);
            }
        });
        Self { events, task }
    }

    /// The events so far.
    pub fn all(&self) -> Vec<baton_proto::host::Event> {
        self.events.lock().expect("event log").clone()
    }

    /// The events of one kind so far.
    pub fn of_kind(&self, kind: &str) -> Vec<baton_proto::host::Event> {
        self.all().into_iter().filter(|e| e.kind == kind).collect()
    }

    /// Waits until there are `n` events of `kind`; returns them.
    pub async fn wait_for(
        &self,
        kind: &str,
        n: usize,
        timeout: Duration,
    ) -> Vec<baton_proto::host::Event> {
        wait_until(&format!("{n} {kind} events"), timeout, || async {
            let found = self.of_kind(kind);
            (found.len() >= n).then_some(found)
        })
        .await
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// CPU time `pid` has used (all threads, user + system).
pub fn cpu_time(pid: u32) -> std::io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let malformed = || std::io::Error::other(format!("malformed /proc/{pid}/stat"));
    // Fields after the parenthesised name: state is field 3; utime and stime are 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(malformed)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> std::io::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(malformed)
    };
    let total = ticks(11)? + ticks(12)?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&h| h > 0)
        .unwrap_or(100) as u64;
    Ok(Duration::from_nanos(total * 1_000_000_000 / hz))
}

/// CPU time the process `pid` uses while `work` runs.
pub async fn cpu_used_during<F: std::future::Future<Output = ()>>(pid: u32, work: F) -> Duration {
    let before = cpu_time(pid).expect("the process's CPU time");
    work.await;
    cpu_time(pid)
        .expect("the process's CPU time")
        .saturating_sub(before)
}

/// The number of open file descriptors of a process.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The children of a process, lowest pid first, each with its state letter from
/// `/proc/<pid>/stat` (`Z` for a zombie). A process that ends while the table is read is
/// left out.
pub fn children_with_state(pid: u32) -> Vec<(u32, char)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // After the parenthesised name: the state, then the parent's pid.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next());
        let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
        if let (Some(state), Some(parent)) = (state, ppid)
            && parent == pid
        {
            found.push((child, state));
        }
    }
    found.sort_unstable();
    found
}

/// Zombie children of a process (exited, never reaped).
pub fn zombie_children(pid: u32) -> Vec<u32> {
    children_with_state(pid)
        .into_iter()
        .filter_map(|(child, state)| (state == 'Z').then_some(child))
        .collect()
}

/// Replaces `path` with `content` the way deploys do: write a temp file beside it, rename over.
pub fn replace_by_rename(path: &Path, content: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("tmp-new");
    std::fs::write(&tmp, content).expect("write the new file");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::rename(&tmp, path).expect("rename over");
}

/// Replaces `path` by a hard link to `source`, as cargo does (remove, then link).
pub fn replace_by_hard_link(path: &Path, source: &Path) {
    let _ = std::fs::remove_file(path);
    std::fs::hard_link(source, path).expect("hard link");
}

/// Rewrites `path` in place (same inode), as `cp` over an existing file does.
pub fn rewrite_in_place(path: &Path, content: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .expect("open for rewrite");
    f.write_all(content).expect("rewrite");
}

/// A shell script that runs `command` (for plugins replaced by a wrapper).
pub fn script(body: &str) -> Vec<u8> {
    format!("#!/bin/sh\n{body}\n").into_bytes()
}

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_owned()
}

/// The repository's Python, with grpcio and the baton SDK (made by setup-python.sh).
pub fn venv_python() -> PathBuf {
    let python = repo_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `bash plugin-sdk/python/setup-python.sh` (scripts/test.sh does)",
        python.display()
    );
    python
}

/// Runs `baton check` on a plugin command; returns (exit code, stdout).
pub fn baton_check(
    extra: &[&str],
    command: &[&str],
    env: &[(&str, &str)],
) -> (Option<i32>, String) {
    let out = Command::new(bin("baton"))
        .arg("check")
        .args(extra)
        .arg("--")
        .args(command)
        .envs(env.iter().copied())
        .output()
        .expect("run baton check");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Callers that keep calling one method of a plugin through the host until stopped,
/// counting successes and keeping every failure.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ok: std::sync::Arc<std::sync::atomic::AtomicU64>,
    callers: Vec<tokio::task::JoinHandle<Vec<tonic::Status>>>,
}

impl Load {
    /// Starts `callers` tasks calling `plugin.method(payload)` back to back (each at
    /// most 1,000,000 times).
    pub fn start(
        host: &TestHost,
        callers: usize,
        plugin: &str,
        method: &str,
        payload: &str,
    ) -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ok = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let callers = (0..callers)
            .map(|_| {
                let (mut client, stop, ok) = (host.client(), stop.clone(), ok.clone());
                let request = InvokeRequest {
                    plugin: plugin.into(),
                    method: method.into(),
                    payload: payload.as_bytes().to_vec().into(),
                    metadata: Default::default(),
                };
                tokio::spawn(async move {
                    let mut failures = Vec::new();
                    for _ in 0..1_000_000 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        match client.invoke(request.clone()).await {
                            Ok(_) => {
                                ok.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(status) => failures.push(status),
                        }
                    }
                    failures
                })
            })
            .collect();
        Self { stop, ok, callers }
    }

    /// Stops the callers; returns the number of successful calls and every failure.
    pub async fn finish(self) -> (u64, Vec<tonic::Status>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut failures = Vec::new();
        for caller in self.callers {
            failures.extend(caller.await.expect("a caller task panicked"));
        }
        (self.ok.load(std::sync::atomic::Ordering::SeqCst), failures)
    }
}

/// Runs `baton run --config config` until it exits, killing it after `timeout` (a host
/// that should have refused to start but did not); returns its exit code (`None` when
/// it had to be killed) and what it wrote to stderr.
pub fn run_until_exit(config: &Path, timeout: Duration) -> (Option<i32>, String) {
    let mut child = Command::new(bin("baton"))
        .args(["run", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("run baton");
    let deadline = Instant::now() + timeout;
    let code = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status.code();
        }
        if Instant::now() >= deadline {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
    }
    (code, stderr)
}

/// Runs `baton run` on `text` saved as `file_name` in a fresh directory, expecting it to
/// refuse; returns its exit code and stderr.
pub fn run_refused_config(file_name: &str, text: &str) -> (Option<i32>, String) {
    run_refused_config_with_env(file_name, text, &[])
}

/// Like [`run_refused_config`], with extra environment variables for the host.
pub fn run_refused_config_with_env(
    file_name: &str,
    text: &str,
    env: &[(&str, &str)],
) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(file_name);
    std::fs::write(&path, text).expect("write config");
    let out = Command::new(bin("baton"))
        .args(["run", "--config"])
        .arg(&path)
        .envs(env.iter().copied())
        .output()
        .expect("run baton");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One variable of a running process's environment (as it was started).
pub fn process_env(pid: u32, key: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ.split(|b| *b == 0).find_map(|entry| {
        let entry = String::from_utf8_lossy(entry);
        entry
            .strip_prefix(key)
            .and_then(|rest| rest.strip_prefix('='))
            .map(str::to_owned)
    })
}

/// The `nobody` user, when this test runs as root; `None` (with a line saying the test
/// is skipped, and why) otherwise.
pub fn nobody_when_root(why: &str) -> Option<nix::unistd::User> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: {why} needs root");
        return None;
    }
    Some(
        nix::unistd::User::from_name("nobody")
            .ok()
            .flatten()
            .expect("the nobody user exists"),
    )
}

/// The Python stubs of the example application API, generated as any Python plugin author
/// would (grpcio-tools), into a fresh directory for PYTHONPATH.
pub fn trigger_python_stubs() -> tempfile::TempDir {
    let stubs = tempfile::tempdir().expect("temp dir");
    let generated = Command::new(venv_python())
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(repo_root().join("example-plugins/trigger/proto"))
        .arg(format!("--python_out={}", stubs.path().display()))
        .arg(format!("--grpc_python_out={}", stubs.path().display()))
        .arg(repo_root().join("example-plugins/trigger/proto/mydb/trigger/v1/trigger.proto"))
        .status()
        .expect("run grpc_tools.protoc");
    assert!(generated.success(), "grpc_tools.protoc failed");
    stubs
}

/// Whether `tool` runs here (`tool version_arg` exits 0); when it does not, prints a
/// line saying that `what` is skipped and why, so a machine without Go or Node.js still
/// runs every other test and says what it left out.
pub fn tool_or_skip(tool: &str, version_arg: &str, what: &str) -> bool {
    let found = Command::new(tool)
        .arg(version_arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("skipped: {what} needs `{tool}`, which is not installed here");
    }
    found
}

/// Runs a build step in `dir`, panicking with its output if it fails.
fn build_step(dir: &Path, program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} in {}: {e}", dir.display()));
    assert!(
        out.status.success(),
        "`{program} {}` in {} failed:\n{}{}",
        args.join(" "),
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Go counter (`example-plugins/go-counter`), built once per test run into
/// `target/go/`; `None`, with a line saying so, where Go is not installed.
pub fn go_counter() -> Option<PathBuf> {
    static BUILT: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| go_example("go-counter", ".", "go-counter", "the Go counter"))
        .clone()
}

/// The go-kv example (`example-plugins/go-kv`: the go-plugin port), built once per
/// test run into `target/go/`; `None`, with a line saying so, where Go is not installed.
pub fn go_kv() -> Option<PathBuf> {
    static BUILT: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| go_example("go-kv", ".", "go-kv", "the go-kv example"))
        .clone()
}

/// go-kv's Go client (`example-plugins/go-kv/client`), which calls the plugin through
/// a daemon with the generated kv.v1 client, built like [`go_kv`].
pub fn go_kv_client() -> Option<PathBuf> {
    static BUILT: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| go_example("go-kv", "./client", "go-kv-client", "go-kv's client"))
        .clone()
}

/// Builds `package` of the module `example-plugins/<module>` with `go build` into
/// `target/go/<binary>`.
fn go_example(module: &str, package: &str, binary: &str, what: &str) -> Option<PathBuf> {
    if !tool_or_skip("go", "version", what) {
        return None;
    }
    let out = repo_root().join("target/go").join(binary);
    let out_arg = out.to_str().expect("a UTF-8 repository path");
    build_step(
        &repo_root().join("example-plugins").join(module),
        "go",
        &["build", "-o", out_arg, package],
    );
    Some(out)
}

/// The command of the TypeScript counter (`example-plugins/ts-counter`): `node` and its
/// compiled script, built once per test run (npm ci the first time, then tsc, for the SDK
/// and the counter); `None`, with a line saying so, where Node.js or npm is not installed.
pub fn ts_counter() -> Option<Vec<String>> {
    static BUILT: std::sync::OnceLock<Option<Vec<String>>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            if !tool_or_skip("node", "--version", "the TypeScript counter")
                || !tool_or_skip("npm", "--version", "the TypeScript counter")
            {
                return None;
            }
            for dir in ["plugin-sdk/node", "example-plugins/ts-counter"] {
                let dir = repo_root().join(dir);
                if !dir.join("node_modules").exists() {
                    build_step(&dir, "npm", &["ci", "--no-audit", "--no-fund"]);
                }
                build_step(&dir, "npm", &["run", "build"]);
            }
            let script = repo_root().join("example-plugins/ts-counter/dist/src/main.js");
            Some(vec![
                "node".to_owned(),
                script.to_str().expect("a UTF-8 repository path").to_owned(),
            ])
        })
        .clone()
}

/// Runs `baton ctl --socket SOCKET ARGS...` to the end; returns its exit code, stdout and
/// stderr.
pub fn ctl_at(socket: &Path, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let out = Command::new(bin("baton"))
        .arg("ctl")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run baton ctl");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running `baton ctl` (or any) process whose output is collected as it comes, on
/// pipes or on a pseudo-terminal; killed, with its process group, when dropped.
pub struct Watched {
    child: Child,
    stdout: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    /// The terminal's side the test types on, when the process runs on one.
    terminal: Option<std::fs::File>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

type Collected = (
    std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    std::thread::JoinHandle<()>,
);

fn collect(mut from: impl std::io::Read + Send + 'static) -> Collected {
    let sink = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let into = sink.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        // A terminal's reader gets EIO once the last process holding it has exited.
        while let Ok(n @ 1..) = from.read(&mut buf) {
            into.lock().expect("output").extend_from_slice(&buf[..n]);
        }
    });
    (sink, reader)
}

impl Watched {
    /// Starts `command` with stdout and stderr on pipes.
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("start the process");
        let (stdout, out_reader) = collect(child.stdout.take().expect("stdout"));
        let (stderr, err_reader) = collect(child.stderr.take().expect("stderr"));
        Self {
            child,
            stdout,
            stderr,
            terminal: None,
            readers: vec![out_reader, err_reader],
        }
    }

    /// Starts `command` on a new pseudo-terminal of `cols` x `rows` (stdin, stdout and
    /// stderr), in a session of its own, as a shell would in a terminal window.
    pub fn on_terminal(mut command: Command, cols: u16, rows: u16) -> Self {
        let size = nix::pty::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
        let slave = std::fs::File::from(pty.slave);
        let io = |f: &std::fs::File| Stdio::from(f.try_clone().expect("dup the terminal"));
        command
            .stdin(io(&slave))
            .stdout(io(&slave))
            .stderr(io(&slave));
        // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                nix::unistd::setsid()
                    .map(drop)
                    .map_err(std::io::Error::from)
            });
        }
        let child = command.spawn().expect("start the process on a terminal");
        // Only the child holds the terminal now, so its exit ends the reader.
        drop(slave);
        let master = std::fs::File::from(pty.master);
        let (stdout, reader) = collect(master.try_clone().expect("dup the terminal"));
        Self {
            child,
            stdout,
            stderr: Default::default(),
            terminal: Some(master),
            readers: vec![reader],
        }
    }

    /// The process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it wrote to stdout so far (on a terminal: everything it wrote there).
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().expect("output")).into_owned()
    }

    /// What it wrote to stderr so far (empty on a terminal: see `stdout`).
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().expect("output")).into_owned()
    }

    /// Types `text` on its terminal, or writes it to its stdin.
    pub fn type_in(&mut self, text: &str) {
        use std::io::Write;
        let written = match (&mut self.terminal, self.child.stdin.as_mut()) {
            (Some(terminal), _) => terminal.write_all(text.as_bytes()),
            (None, Some(stdin)) => stdin.write_all(text.as_bytes()),
            (None, None) => Ok(()),
        };
        written.expect("type into the process");
    }

    /// Waits until its stdout satisfies `check`, or panics naming `what` with what it
    /// printed.
    pub async fn wait_for_stdout(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&str) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        while !check(&self.stdout()) {
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting until {what}; stdout:\n{}\nstderr:\n{}",
                self.stdout(),
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sends it `signal`.
    pub fn signal(&self, signal: Signal) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), signal);
    }

    /// Waits (bounded) for it to exit; its exit code, or `None` if it had to be killed or
    /// died by a signal.
    pub async fn exit_code(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                // Its last words: the readers end at end of file.
                wait_until("its output is read to the end", timeout, || async {
                    self.readers.iter().all(|r| r.is_finished()).then_some(())
                })
                .await;
                return status.code();
            }
            if Instant::now() >= deadline {
                let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
                let _ = self.child.wait();
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// `baton ctl --socket SOCKET ARGS...`, ready to spawn.
pub fn ctl_command(socket: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(bin("baton"));
    command.arg("ctl").arg("--socket").arg(socket).args(args);
    command
}

#[cfg(test)]
mod proc_tests {
    use super::*;

    #[test]
    fn a_child_is_listed_and_is_a_zombie_once_it_exits_unreaped() {
        let me = std::process::id();
        let mut child = std::process::Command::new("sleep")
            .arg("0.2")
            .spawn()
            .expect("start sleep");
        let pid = child.id();
        assert!(
            children_with_state(me).iter().any(|&(c, _)| c == pid),
            "{pid} not among {:?}",
            children_with_state(me)
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !zombie_children(me).contains(&pid) {
            assert!(Instant::now() < deadline, "{pid} never showed as a zombie");
            std::thread::sleep(Duration::from_millis(10));
        }
        child.wait().expect("reap sleep");
        assert!(!children_with_state(me).iter().any(|&(c, _)| c == pid));
    }
}
