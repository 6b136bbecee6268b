//! A real `baton run` host for a test: its config, socket and log, calls and events,
//! load against it, and hosts that are expected to refuse their config.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use baton_proto::host::supervisor_client::SupervisorClient;
use baton_proto::host::{InvokeRequest, ListRequest, PluginStatus, StatusRequest};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tonic::transport::Channel;

use crate::{bin, ctl_at, unix_channel, wait_until};

/// Starts `command` so that it is told to stop (SIGTERM) when this test process dies,
/// even one killed mid-run, which never runs a host's `Drop`. The signal follows the
/// thread that forked, so every host is started from one thread that lives as long as
/// the process, not from a test's own, which ends with the test.
pub(crate) fn spawn_dying_with_us(mut command: Command) -> std::io::Result<Child> {
    type Job = (Command, std::sync::mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: std::sync::OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<Job>>> =
        std::sync::OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("test-host-spawner".into())
            .spawn(move || {
                for (mut command, reply) in queue {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("a thread to start hosts from");
        std::sync::Mutex::new(jobs)
    });
    // SAFETY: one raw syscall between fork and exec (after any change of user, which
    // would clear it).
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?;
            Ok(())
        });
    }
    let (reply, answer) = std::sync::mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((command, reply))
        .map_err(|_| std::io::Error::other("the host spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| std::io::Error::other("the host spawner thread is gone"))?
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
        Self::launch(None, plugins_toml, env, None, None, false).await
    }

    /// Like [`start`](Self::start), with the host's open-files limit (soft and hard) set to
    /// `limit`, as a tight `LimitNOFILE=` would.
    pub async fn start_with_open_files(plugins_toml: &str, limit: u64) -> Self {
        Self::launch(None, plugins_toml, &[], Some((limit, limit)), None, false).await
    }

    /// Like [`start`](Self::start), with the host's soft open-files limit at `soft` and
    /// its hard limit as this test's: the ordinary limit a daemon starts with, below
    /// what it may raise itself to.
    pub async fn start_with_soft_open_files(plugins_toml: &str, soft: u64) -> Self {
        let hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map_or(soft, |(_, hard)| hard);
        Self::launch(None, plugins_toml, &[], Some((soft, hard)), None, false).await
    }

    /// Like [`start`](Self::start), with the control socket at `socket` instead of in
    /// the host's own directory (for hosts that meet at one path).
    pub async fn start_at(socket: &Path, plugins_toml: &str) -> Self {
        Self::launch(
            Some(socket.to_owned()),
            plugins_toml,
            &[],
            None,
            None,
            false,
        )
        .await
    }

    /// Like [`start`](Self::start), with the host running as `user` (uid, gid) rather
    /// than as this test's user: for hosts without root's privileges.
    pub async fn start_as(plugins_toml: &str, user: (u32, u32)) -> Self {
        Self::launch(None, plugins_toml, &[], None, Some(user), false).await
    }

    /// Like [`start`](Self::start), with the host root but without CAP_SYS_ADMIN, as in
    /// a sandbox that denies `unshare`: it cannot make PID namespaces, so it forks and
    /// switches each plugin's user itself. Only for a test running as root.
    pub async fn start_without_pid_namespaces(plugins_toml: &str) -> Self {
        Self::launch(None, plugins_toml, &[], None, None, true).await
    }

    async fn launch(
        socket: Option<PathBuf>,
        plugins_toml: &str,
        env: &[(&str, &str)],
        open_files: Option<(u64, u64)>,
        user: Option<(u32, u32)>,
        no_namespaces: bool,
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
        if let Some((soft, hard)) = open_files {
            // SAFETY: one raw syscall between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    nix::sys::resource::setrlimit(
                        nix::sys::resource::Resource::RLIMIT_NOFILE,
                        soft,
                        hard,
                    )
                    .map_err(std::io::Error::from)
                });
            }
        }
        if no_namespaces {
            const CAP_SYS_ADMIN: nix::libc::c_ulong = 21;
            // SAFETY: one raw syscall between fork and exec.
            unsafe {
                command.pre_exec(|| {
                    if nix::libc::prctl(nix::libc::PR_CAPBSET_DROP, CAP_SYS_ADMIN, 0, 0, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("hand over the dir");
            command.uid(uid).gid(gid);
        }
        let child = spawn_dying_with_us(command).expect("start baton");
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
