//! Running a generation inside a PID namespace of its own, through the init in
//! [`crate::launch::pid_init`]: what the host probes at start, how it starts the init, and how
//! it learns the plugin's pid.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::AsyncReadExt;

use crate::launch::pid_init::{INIT_ARG, PID_FD, PROBE_ARG};

/// A binary that acts as the init when asked (see [`crate::launch::pid_init::run_if_requested`]),
/// known to work here.
#[derive(Clone, Debug)]
pub struct PidInit {
    helper: Arc<Path>,
}

impl PidInit {
    /// Checks that `helper` can make a PID namespace on this machine (root, or
    /// CAP_SYS_ADMIN, and a kernel and sandbox that allow it); says why not if it cannot.
    pub async fn probe(helper: &Path) -> Result<Self, String> {
        let out = tokio::process::Command::new(helper)
            .args([INIT_ARG, PROBE_ARG])
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| format!("cannot run {}: {e}", helper.display()))?;
        if out.status.success() {
            Ok(Self {
                helper: Arc::from(helper),
            })
        } else {
            let why = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            Err(if why.is_empty() {
                format!(
                    "{} {INIT_ARG} {PROBE_ARG} ended with {}",
                    helper.display(),
                    out.status
                )
            } else {
                why
            })
        }
    }

    /// The command that starts `exec` (named `argv0`, with `args`) as PID 2 of a new
    /// namespace, as `uid`/`gid` if given. The init switches user itself: the namespace
    /// must be made before privileges are dropped.
    pub fn command(
        &self,
        exec: &Path,
        argv0: &Path,
        args: &[String],
        user: Option<(u32, u32)>,
    ) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&*self.helper);
        command.arg(INIT_ARG);
        if let Some((uid, gid)) = user {
            command.args(["--uid", &uid.to_string(), "--gid", &gid.to_string()]);
        }
        command
            .arg("--argv0")
            .arg(argv0)
            .arg("--")
            .arg(exec)
            .args(args.iter().map(OsString::from));
        command
    }
}

/// The pipe on which the plugin reports its pid: the host keeps the read end, the init
/// gets the write end as [`PID_FD`].
pub struct PidPipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl PidPipe {
    /// Both ends close on exec; [`hand_over`](Self::hand_over) gives the child its own.
    pub fn new() -> std::io::Result<Self> {
        // Non-blocking for tokio; a few bytes into an empty pipe never block the writer.
        let (read, write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
        Ok(Self { read, write })
    }

    /// The write end's number, for [`hand_over`](Self::hand_over) in the child.
    pub fn write_fd(&self) -> RawFd {
        self.write.as_raw_fd()
    }

    /// In the child between fork and exec: puts the write end at [`PID_FD`], open across
    /// exec. Only async-signal-safe calls.
    pub fn hand_over(write: RawFd) -> std::io::Result<()> {
        if write == PID_FD {
            // dup2 onto itself would leave close-on-exec set.
            let flags = nix::fcntl::FdFlag::empty();
            // SAFETY: `write` is open in this process (inherited from the host).
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(write) };
            nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(flags))?;
            return Ok(());
        }
        // SAFETY: plain dup2 of descriptors this process holds.
        if unsafe { nix::libc::dup2(write, PID_FD) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// After the spawn: waits (until `deadline`) for the plugin's pid, which it writes
    /// just before it execs. `None` if it never did (its start failed; its stderr says why).
    pub async fn plugin_pid(self, deadline: tokio::time::Instant) -> Option<u32> {
        drop(self.write);
        let mut reader = tokio::net::unix::pipe::Receiver::from_owned_fd(self.read).ok()?;
        let mut text = Vec::with_capacity(16);
        let read = async {
            // At most one short line: every writer closes its end after it.
            let _ = (&mut reader).take(32).read_to_end(&mut text).await;
        };
        tokio::time::timeout_at(deadline, read).await.ok()?;
        std::str::from_utf8(&text).ok()?.trim().parse().ok()
    }
}

/// Where the `baton` binary (or any binary that calls
/// [`crate::launch::pid_init::run_if_requested`]) is: the running executable.
pub fn this_executable() -> PathBuf {
    PathBuf::from("/proc/self/exe")
}
