//! Starting one plugin process and bringing it to SERVING: fork it from the spawner
//! thread, read its handshake, connect, wait for health and Describe; and stopping it.

mod access;
mod affinity;
mod binary;
mod channel;
mod child_steps;
mod connect;
mod error;
mod generation;
mod handshake;
mod identity;
mod isolation;
mod logs;
mod no_handshake;
pub mod pid_init;
mod pids_cgroup;
mod rlimits;
mod spawner;
mod user_switch;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_proto::PROTOCOL_VERSION;
use nix::sys::signal::Signal;
use tokio::io::BufReader;
use tokio::process::Command;
use tokio::sync::watch;

use crate::config::PluginConfig;
use crate::config::pin_file;
use crate::services::{PluginIdentity, Registry};
use crate::watch::WatchSet;

use crate::io::socket_path::socket_tag;
use access::Runner;
pub use baton_transport::{NotSent, UnixClient};
use binary::{BinaryPolicy, copy_binary, is_script, verify_binary};
pub(crate) use channel::plugin_rpc;
pub use channel::{PluginRpc, TokenService, unix_channel};
pub use error::StartError;
use generation::kill_group;
pub use generation::{Generation, describe_exit};
use handshake::read_handshake_line;
pub use handshake::{check_handshake, new_token};
use identity::Identity;
use isolation::PidPipe;
pub use isolation::{PidInit, this_executable};
use logs::capture_lines;
pub(crate) use logs::unix_ms_now;
pub use logs::{LogLine, LogRing, StderrExcerpt};
pub use rlimits::raise_descriptor_limit;
pub use spawner::Spawner;

/// Everything needed to start processes of one plugin.
pub struct Launcher {
    /// The plugin's configured name.
    pub name: Arc<str>,
    /// Its configuration.
    pub config: PluginConfig,
    /// The host's private socket directory.
    pub socket_dir: PathBuf,
    /// The forking thread.
    pub spawner: Spawner,
    /// Where output lines are kept.
    pub logs: LogRing,
    /// The host-services socket, passed to the plugin as `BATON_HOST_SOCKET`.
    pub host_socket: PathBuf,
    /// Production mode: binaries must be pinned and owner-writable only, and the
    /// environment is cleared to an allow-list.
    pub production: bool,
    /// Who may call the host services: each generation is admitted with its token.
    pub callers: Registry,
    /// The init that gives each generation a PID namespace, where that works.
    pub pid_init: Option<PidInit>,
    /// The application's descriptors of the services the plugin must serve (from
    /// `api_descriptors`), or why they could not be read.
    pub api: Option<Arc<Result<prost_reflect::DescriptorPool, String>>>,
    /// Whether the log has said why `max_processes` is an RLIMIT_NPROC, not a cgroup.
    pub(crate) said_nproc_fallback: std::sync::atomic::AtomicBool,
}

impl Launcher {
    /// Starts generation `number` and waits until it is SERVING and described.
    pub async fn launch(&self, number: u64) -> Result<Generation, StartError> {
        let started = Instant::now();
        let timeout = self.config.handshake_timeout();
        let identity = self.identity()?;
        let dir = self.plugin_dir(identity.as_ref())?;
        // Never the socket directory: the host deletes it when it exits, and with it
        // whatever a plugin kept in its working directory.
        let cwd = self
            .config
            .cwd
            .clone()
            .or_else(|| std::env::current_dir().ok());
        if let Some(id) = &identity {
            self.check_reachable(id, &dir, cwd.as_deref())?;
        }
        let socket = dir.join(format!("{number}.sock"));
        let _ = std::fs::remove_file(&socket);
        let token = new_token()?;
        // Admitted before the process starts: it may call the host during its start-up.
        let admission = self.callers.admit(
            &token,
            PluginIdentity {
                name: self.name.clone(),
                generation: number,
            },
            identity
                .as_ref()
                .map_or_else(|| nix::unistd::geteuid().as_raw(), |id| id.uid),
            self.logs.limiter().clone(),
        );

        let program = self.config.command.clone();
        let private_copy = self.private_copy(number);
        let copy = private_copy.clone();
        let exec = private_copy.as_deref().unwrap_or(&program);
        let pid_pipe = match &self.pid_init {
            Some(_) => Some(
                PidPipe::new()
                    .map_err(|e| StartError::spawn(&program, "cannot make the pid pipe", e))?,
            ),
            None => None,
        };
        let mut command = match &self.pid_init {
            Some(init) => init.command(
                exec,
                &program,
                &self.config.args,
                identity.as_ref().map(|id| (id.uid, id.gid)),
            ),
            None => {
                let mut command = Command::new(exec);
                command.arg0(&program).args(&self.config.args);
                command
            }
        };
        if self.production {
            command.env_clear();
            for (key, value) in std::env::vars_os() {
                let key_text = key.to_string_lossy();
                let allowed = ENV_ALLOW.contains(&key_text.as_ref())
                    || key_text.starts_with("LC_")
                    || self.config.inherit_env.iter().any(|k| *k == key_text);
                if allowed {
                    command.env(key, value);
                }
            }
        }
        command
            .envs(&self.config.env)
            .env(baton_proto::env::SOCKET, &socket)
            .env(
                baton_proto::env::PROTOCOL_VERSION,
                PROTOCOL_VERSION.to_string(),
            )
            .env(baton_proto::env::TOKEN, &token)
            .env(baton_proto::env::PLUGIN_NAME, &*self.name)
            // systemd's channel is the host's; a plugin writing to it would confuse it.
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env(baton_proto::env::HOST_SOCKET, &self.host_socket)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if self.config.spin_us > 0 {
            command.env(baton_proto::env::SPIN_US, self.config.spin_us.to_string());
        }
        // In a PID namespace, the init switches user after making it; otherwise the
        // child does, once it is in its cgroup and under its limits (see user_switch).
        let switch = match (&identity, &self.pid_init) {
            (Some(id), None) => Some(
                user_switch::UserSwitch::new(id.uid, id.gid, cwd.as_deref()).map_err(|why| {
                    StartError::Refused {
                        path: program.clone(),
                        why,
                    }
                })?,
            ),
            _ => {
                if let Some(dir) = &cwd {
                    command.current_dir(dir);
                }
                None
            }
        };
        let runner = identity
            .as_ref()
            .map_or_else(Runner::host, |id| Runner::user(id.uid, id.gid));
        let policy = BinaryPolicy {
            production: self.production,
            pin: self.config.sha256.clone(),
        };
        let affinity = affinity::cpu_set(self.config.cpus.as_ref(), &program)?;
        let (cgroup, nproc) = self.pids_cgroup(number, identity.as_ref())?;
        let rlimits = rlimits::Rlimits::of(&self.config, nproc);
        if let Some(why) = rlimits.refusal() {
            return Err(StartError::Refused {
                path: program.clone(),
                why,
            });
        }
        let procs = cgroup.as_ref().map(|c| c.procs().to_owned());
        let limits = rlimits::LimitsInForce {
            file_bytes: self.config.max_file_bytes,
            processes: self.config.max_processes,
            cgroup: cgroup.map(Arc::new),
        };
        let cpus = self.config.cpus.clone();
        let host_pid = nix::unistd::getpid();
        let pid_write = pid_pipe.as_ref().map(PidPipe::write_fd);
        let steps = child_steps::StepReport::new()
            .map_err(|e| StartError::spawn(&program, "cannot make the step pipe", e))?;
        let step_fd = steps.writer();
        // SAFETY: the closure runs between fork and exec and only makes raw syscalls
        // (prctl, getppid, open/write/close, setrlimit, setgroups/setgid/setuid, chdir,
        // sched_setaffinity, dup2/fcntl), all async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                use child_steps::{Step, report};
                // First: whatever the child starts from here on is counted.
                if let Some(procs) = &procs {
                    report(step_fd, Step::Cgroup, pids_cgroup::enter(procs))?;
                }
                rlimits.apply(step_fd)?;
                // Before prctl: a change of user clears the parent-death signal.
                if let Some(switch) = &switch {
                    switch.apply(step_fd)?;
                }
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                // The host may have died between fork and prctl; then nobody would kill us.
                if nix::unistd::getppid() != host_pid {
                    return Err(std::io::Error::other("the baton host exited during start"));
                }
                if let Some(set) = &affinity {
                    affinity::apply(set)?;
                }
                if let Some(fd) = pid_write {
                    PidPipe::hand_over(fd)?;
                }
                Ok(())
            });
        }
        let mut child = self
            .spawner
            .run(Box::new(move || {
                if let Some(copy) = &private_copy {
                    copy_binary(&program, copy, &runner)?;
                }
                // Checked on what will run: the private copy cannot change after this.
                if let Err(e) = verify_binary(&program, private_copy.as_deref(), &policy) {
                    if let Some(copy) = &private_copy {
                        let _ = std::fs::remove_file(copy);
                    }
                    return Err(e);
                }
                let spawned = spawn_through_busy_text(&mut command).map_err(|source| {
                    let source = steps.explain(source);
                    StartError::spawn(&program, "", affinity::explain(source, cpus.as_ref()))
                });
                if let (Some(copy), Err(_)) = (&private_copy, &spawned) {
                    let _ = std::fs::remove_file(copy);
                }
                spawned
            }))
            .await?;
        // The clock starts once the process runs: copying a large binary is the host's
        // work, not the plugin's.
        let deadline = tokio::time::Instant::now() + timeout;
        let group = child.id().unwrap_or(0);
        admission.rooted_at(group);
        // In a namespace, the host's child is the init's keeper; the plugin says its pid
        // just before it execs (if it never does, its start failed and stderr says why).
        let pid = match pid_pipe {
            Some(pipe) => pipe.plugin_pid(deadline).await.unwrap_or(group),
            None => group,
        };
        // A running binary needs no name on disk (the kernel holds the inode), so its
        // copy goes once it runs and a killed host leaks nothing big; a script's
        // interpreter opens the file after exec, so that copy stays until its
        // generation ends.
        let remove_copy_once_running = copy.clone().filter(|c| !is_script(c));
        let (stdout, stderr) = match (child.stdout.take(), child.stderr.take()) {
            (Some(o), Some(e)) => (o, e),
            _ => {
                return Err(StartError::Handshake(
                    "the plugin's stdout/stderr were not captured".into(),
                ));
            }
        };
        let stderr_done = tokio::spawn(capture_lines(
            stderr,
            self.name.clone(),
            number,
            pid,
            "stderr",
            self.logs.clone(),
        ));
        let stderr_reader = stderr_done.abort_handle();
        let mut stdout = BufReader::new(stdout);

        let result = async {
            let line = tokio::select! {
                line = read_handshake_line(&mut stdout) => match line {
                    Ok(line) => line,
                    // A process that exits closes stdout first: say how it exited.
                    Err(e) => match tokio::time::timeout(Duration::from_millis(500), child.wait()).await {
                        Ok(status) => {
                            let _ = tokio::time::timeout(Duration::from_millis(500), stderr_done).await;
                            return Err(StartError::Exited {
                                status: describe_exit(&status),
                                hint: no_handshake::hint(&self.config, cwd.as_deref()),
                                stderr: self.logs.start_failure_excerpt(number),
                            });
                        }
                        Err(_) => return Err(e),
                    },
                },
                status = child.wait() => {
                    let status = describe_exit(&status);
                    // Let the stderr reader drain, so the message shows why it exited.
                    let _ = tokio::time::timeout(Duration::from_millis(500), stderr_done).await;
                    return Err(StartError::Exited {
                        status,
                        hint: no_handshake::hint(&self.config, cwd.as_deref()),
                        stderr: self.logs.start_failure_excerpt(number),
                    });
                }
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(StartError::Timeout {
                        what: format!("printed no handshake line (expected `baton|{PROTOCOL_VERSION}|unix|{}`)", socket.display()),
                        timeout,
                        stderr: self.logs.start_failure_excerpt(number),
                    });
                }
            };
            check_handshake(&line, &socket)?;
            tokio::select! {
                ready = self.connect(&socket, &token, deadline) => ready,
                status = child.wait() => Err(StartError::Exited {
                    status: describe_exit(&status),
                    hint: String::new(),
                    stderr: self.logs.start_failure_excerpt(number),
                }),
            }
        }
        .await;
        if let Some(copy) = &remove_copy_once_running {
            let _ = std::fs::remove_file(copy);
        }

        match result {
            Ok((rpc, transport, describe)) => {
                let stdout_reader = tokio::spawn(capture_lines(
                    stdout,
                    self.name.clone(),
                    number,
                    pid,
                    "stdout",
                    self.logs.clone(),
                ))
                .abort_handle();
                let (exit_tx, exited) = watch::channel(None);
                tracing::info!(
                    plugin = %self.name, generation = number, pid,
                    version = %describe.plugin_version,
                    ms = started.elapsed().as_millis() as u64,
                    "plugin process ready"
                );
                Ok(Generation {
                    number,
                    pid,
                    group,
                    socket,
                    rpc,
                    transport,
                    token: Arc::from(token.as_str()),
                    max_message: self.config.max_message_bytes,
                    describe,
                    ready_at: Instant::now(),
                    exited,
                    exit_tx,
                    child,
                    copy,
                    readers: [stdout_reader, stderr_reader],
                    _admission: admission,
                    limits,
                })
            }
            Err(e) => {
                kill_group(group, Signal::SIGKILL);
                let _ = child.wait().await;
                let _ = std::fs::remove_file(&socket);
                if let Some(copy) = &copy {
                    let _ = std::fs::remove_file(copy);
                }
                if let Some(cgroup) = limits.cgroup {
                    tokio::spawn(async move { cgroup.remove().await });
                }
                Err(e)
            }
        }
    }

    /// The plugin's code, for the file watcher: the binary (if a path), its pin file,
    /// and `watch`.
    pub fn watch_set(&self) -> WatchSet {
        watch_set_of(&self.config)
    }

    /// Where generation `number` runs its private copy of the binary, if it gets one:
    /// in the host's own directory even for a plugin with its own user, which must not
    /// be able to plant anything where the host writes.
    fn private_copy(&self, number: u64) -> Option<PathBuf> {
        (self.config.copy_binary && self.config.command.components().count() > 1).then(|| {
            self.socket_dir
                .join("bin")
                .join(format!("{}.{number}", self.name))
        })
    }

    /// The pids cgroup that holds `max_processes` for generation `number`, or whether
    /// RLIMIT_NPROC is to hold it instead: only for a plugin with a user of its own (it
    /// counts every process of that user), never for root (whom it does not bind) or
    /// the host's own user (whose count includes the host's threads).
    fn pids_cgroup(
        &self,
        number: u64,
        identity: Option<&Identity>,
    ) -> Result<(Option<pids_cgroup::PidsCgroup>, bool), StartError> {
        let Some(max) = self.config.max_processes else {
            return Ok((None, false));
        };
        // The namespace's keeper and init are the host's, not the plugin's.
        let helpers = if self.pid_init.is_some() { 2 } else { 0 };
        let why =
            match pids_cgroup::PidsCgroup::create(&socket_tag(&self.name), number, max + helpers) {
                Ok(cgroup) => return Ok((Some(cgroup), false)),
                Err(why) => why,
            };
        let host = nix::unistd::geteuid().as_raw();
        match identity {
            Some(id) if id.uid != 0 && id.uid != host => {
                use std::sync::atomic::Ordering;
                if !self.said_nproc_fallback.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        plugin = %self.name,
                        "max_processes = {max} is held by RLIMIT_NPROC, which counts every \
                         process of user {}, not a pids cgroup: {why}",
                        id.name
                    );
                }
                Ok((None, true))
            }
            _ => Err(StartError::Refused {
                path: self.config.command.clone(),
                why: format!(
                    "max_processes = {max} cannot be held: {why}; and RLIMIT_NPROC would not \
                     hold it for a plugin running as the host's user or root (give it a \
                     `user` of its own, or run the host where it can make pids cgroups)"
                ),
            }),
        }
    }

    /// Refuses a start whose user could not reach its socket directory (`socket`) or
    /// its working directory (`cwd`): it would fail inside the plugin, again at every
    /// restart, as if it had crashed.
    fn check_reachable(
        &self,
        id: &Identity,
        socket: &std::path::Path,
        cwd: Option<&std::path::Path>,
    ) -> Result<(), StartError> {
        let closed = |what, path: &std::path::Path, shut, fix: String| StartError::Closed {
            what,
            path: path.to_owned(),
            user: id.name.clone(),
            closed: shut,
            fix,
        };
        let runner = Runner::user(id.uid, id.gid);
        if let Some(shut) = runner.first_closed(socket) {
            let fix = format!(
                "point XDG_RUNTIME_DIR (or TMPDIR) of the host at a directory the user can \
                 pass through (such as a root-owned /run/baton of mode 0711), or let it \
                 search {}",
                shut.dir.display()
            );
            return Err(closed("the runtime directory", socket, shut, fix));
        }
        if let Some(cwd) = cwd
            && let Some(shut) = runner.first_closed(cwd)
        {
            let fix = format!(
                "set the plugin's `cwd` to a directory the user can enter, or let it search {}",
                shut.dir.display()
            );
            return Err(closed("the working directory", cwd, shut, fix));
        }
        Ok(())
    }

    /// Where this plugin's sockets live: a directory of its own in the host's, named
    /// by [`socket_tag`]. For a plugin with its own user, that user owns it (the host's
    /// directory, then mode 0711, lets it through without letting anyone list it).
    fn plugin_dir(&self, identity: Option<&Identity>) -> Result<PathBuf, StartError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
        let path = self.socket_dir.join(socket_tag(&self.name));
        let fail = |e: std::io::Error| StartError::Refused {
            path: path.clone(),
            why: format!("cannot prepare the plugin's directory: {e}"),
        };
        match std::fs::DirBuilder::new().mode(0o700).create(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(fail(e)),
            _ => {}
        }
        let Some(id) = identity else {
            return Ok(path);
        };
        std::fs::set_permissions(&self.socket_dir, std::fs::Permissions::from_mode(0o711))
            .map_err(fail)?;
        // Handed over on the open directory, never by path: the plugin's user owns what
        // is inside, and only the socket it binds is meant to be there.
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(&path)
            .map_err(fail)?;
        nix::unistd::fchown(&dir, Some(id.uid.into()), Some(id.gid.into()))
            .map_err(|e| fail(e.into()))?;
        // The host-services socket is then reachable by the plugin's user; the launch
        // token still decides who may use it.
        let _ = std::fs::set_permissions(&self.host_socket, std::fs::Permissions::from_mode(0o666));
        Ok(path)
    }
}

/// Variables a production plugin keeps from the host's environment (and `LC_*`).
const ENV_ALLOW: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "TZ",
    "TMPDIR",
    "BATON_LOG",
    "RUST_LOG",
];

/// What a plugin's code is made of, for noticing changes: its binary (when the command
/// is a path), the pin beside it, and its `watch` list.
pub fn watch_set_of(config: &PluginConfig) -> WatchSet {
    let binary = (config.command.components().count() > 1).then_some(config.command.as_path());
    let set = WatchSet::new(binary, &config.watch);
    match binary {
        // A deploy may write the pin after the binary; its arrival is a change too.
        Some(binary) => set.optional(&pin_file(binary)),
        None => set,
    }
}

/// Spawns `command`, trying again for a moment while its program is "text file busy".
/// A private copy is written on the spawner thread, but a fork on any other thread of
/// the process (an embedding program's own children, another host) made while the copy
/// was open for writing holds that descriptor until its child execs: the copy cannot be
/// executed until then, for a few milliseconds at most.
fn spawn_through_busy_text(command: &mut Command) -> std::io::Result<tokio::process::Child> {
    const BUSY: i32 = nix::errno::Errno::ETXTBSY as i32;
    let mut tries = 0;
    loop {
        match command.spawn() {
            Err(e) if e.raw_os_error() == Some(BUSY) && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            other => return other,
        }
    }
}
