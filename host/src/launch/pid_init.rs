//! The small init that gives each plugin generation a PID namespace of its own, so that
//! nothing the plugin starts (`setsid` or not) outlives the generation, host SIGKILL
//! included: when a namespace's first process exits, the kernel kills the rest.
//!
//! The host runs it by executing a binary that calls [`run_if_requested`] first thing
//! in `main` (the `baton` binary does; `/proc/self/exe` names it). Three processes then
//! make one generation:
//!
//! ```text
//! host ── keeper (outside; the host's child, its exit mirrors the plugin's)
//!           └── init (PID 1 inside: reaps orphans, exits when the plugin does)
//!                 └── plugin (PID 2 inside: signals behave as for any process)
//! ```
//!
//! Each one dies with its parent (PR_SET_PDEATHSIG), so a host that is killed takes the
//! keeper, the init and with it the whole namespace. A fresh program rather than a fork
//! of the host: a fork that lives on would pin the host's memory copy-on-write.

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::ExitStatus;

use nix::sys::signal::{SigHandler, Signal, signal};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};

/// The first argument that makes a binary act as the init instead of itself.
pub(crate) const INIT_ARG: &str = "__baton-pid-init";
/// Asks the init only whether a PID namespace can be made here.
pub(crate) const PROBE_ARG: &str = "--probe";
/// The descriptor on which the plugin's pid (as the host sees it) is written.
pub(crate) const PID_FD: i32 = 3;

/// Signals the keeper and the init leave to the plugin: the host signals the whole
/// process group, and only the plugin should act on them.
const LEFT_TO_THE_PLUGIN: [Signal; 6] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// If this process was started as the init (`<binary> __baton-pid-init ...`), runs as
/// it and exits; otherwise returns at once. Call it first thing in `main`.
pub fn run_if_requested() {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(std::ffi::OsStr::new(INIT_ARG)) {
        return;
    }
    let rest: Vec<OsString> = args.collect();
    let code = match run(&rest) {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "baton pid init: {e}");
            127
        }
    };
    std::process::exit(code);
}

/// What the host asks the init to run.
struct Request {
    uid: Option<u32>,
    gid: Option<u32>,
    argv0: OsString,
    program: OsString,
    args: Vec<OsString>,
}

fn parse(args: &[OsString]) -> Result<Request, String> {
    let mut request = Request {
        uid: None,
        gid: None,
        argv0: OsString::new(),
        program: OsString::new(),
        args: Vec::new(),
    };
    let mut i = 0;
    let value = |i: usize| -> Result<&OsString, String> {
        args.get(i + 1)
            .ok_or_else(|| format!("{:?} needs a value", args[i]))
    };
    let number = |v: &OsString| -> Result<u32, String> {
        v.to_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{v:?} is not a number"))
    };
    while i < args.len() {
        match args[i].to_str() {
            Some("--uid") => request.uid = Some(number(value(i)?)?),
            Some("--gid") => request.gid = Some(number(value(i)?)?),
            Some("--argv0") => request.argv0 = value(i)?.clone(),
            Some("--") => {
                request.program = args.get(i + 1).cloned().ok_or("no program after --")?;
                request.args = args[i + 2..].to_vec();
                return Ok(request);
            }
            _ => return Err(format!("unexpected argument {:?}", args[i])),
        }
        i += 2;
    }
    Err("no program given (expected `-- PROGRAM ARGS...`)".into())
}

fn run(args: &[OsString]) -> Result<i32, String> {
    if args.first().is_some_and(|a| a == PROBE_ARG) {
        return probe();
    }
    let request = parse(args)?;
    for s in LEFT_TO_THE_PLUGIN {
        // SAFETY: SIG_IGN installs no handler code.
        unsafe { signal(s, SigHandler::SigIgn) }.map_err(|e| format!("signal: {e}"))?;
    }
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID)
        .map_err(|e| format!("cannot make a PID namespace: {e}"))?;
    // Tells the keeper how the plugin ended; its write end is the init's.
    let (status_read, status_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // Held open by the keeper: the init sees it close if the keeper is gone.
    let (alive_read, alive_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: this process is single-threaded (a fresh exec that started no threads).
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(status_read);
            drop(alive_write);
            init(request, status_write, alive_read)
        }
        ForkResult::Parent { child } => {
            drop(status_write);
            drop(alive_read);
            keep(child, status_read, alive_write)
        }
    }
}

/// The keeper: stays outside the namespace as the host's child, waits for the init,
/// and ends the way the plugin ended, so the host reads the plugin's exit status.
fn keep(init: Pid, status_read: OwnedFd, _alive: OwnedFd) -> Result<i32, String> {
    // The plugin's output pipes and pid pipe belong to it alone: the host sees them
    // close when the plugin is gone.
    close_stdio_and_pid_fd();
    loop {
        match waitpid(init, None) {
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => break,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("waitpid: {e}")),
        }
    }
    let mut raw = [0u8; 4];
    let read = nix::unistd::read(&status_read, &mut raw).unwrap_or(0);
    if read != raw.len() {
        return Err("the init ended without saying how the plugin did".into());
    }
    let status = ExitStatus::from_raw(i32::from_le_bytes(raw));
    if let Some(code) = status.code() {
        return Ok(code);
    }
    if let Some(number) = status.signal()
        && let Ok(sig) = Signal::try_from(number)
    {
        // No core file of this small process in the plugin's name.
        let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
        // SAFETY: restores the default action; no handler code.
        let _ = unsafe { signal(sig, SigHandler::SigDfl) };
        let _ = nix::sys::signal::raise(sig);
        return Ok(128 + number);
    }
    Ok(1)
}

/// The init: PID 1 of the namespace. Starts the plugin, reaps every orphan handed to
/// it, and exits when the plugin does (the kernel then kills whatever is left).
fn init(request: Request, status_write: OwnedFd, alive_read: OwnedFd) -> ! {
    let code = match start_plugin(request, &alive_read) {
        Ok(plugin) => {
            let status = reap_until(plugin);
            let _ = nix::unistd::write(&status_write, &status.to_le_bytes());
            0
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "{e}");
            // The keeper reports it as the plugin's exit.
            let _ = nix::unistd::write(&status_write, &(127i32 << 8).to_le_bytes());
            127
        }
    };
    std::process::exit(code)
}

fn start_plugin(request: Request, alive_read: &OwnedFd) -> Result<Pid, String> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| format!("prctl: {e}"))?;
    // The keeper may have died before that prctl: then its end of the pipe is closed.
    let mut fds = [nix::poll::PollFd::new(
        alive_read.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    if nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).unwrap_or(0) > 0 {
        return Err("the host went away during start".into());
    }
    // The plugin writes its pid there itself; nobody else keeps it open.
    // SAFETY: PID_FD was handed to this process by the host for this purpose.
    let pid_fd = unsafe { OwnedFd::from_raw_fd(PID_FD) };
    let _ = nix::fcntl::fcntl(
        &pid_fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    let mut command = std::process::Command::new(&request.program);
    command.arg0(&request.argv0).args(&request.args);
    if let Some(uid) = request.uid {
        command.uid(uid);
    }
    if let Some(gid) = request.gid {
        command.gid(gid);
    }
    let raw_pid_fd = pid_fd.as_raw_fd();
    // SAFETY: between fork and exec of a single-threaded process; the calls below are
    // plain system calls (sigaction, prctl, readlink, write).
    unsafe {
        command.pre_exec(move || {
            for s in LEFT_TO_THE_PLUGIN {
                signal(s, SigHandler::SigDfl).map_err(std::io::Error::from)?;
            }
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // /proc is the host's, so it names this process as the host knows it.
            let mut buf = [0u8; 32];
            let n = nix::libc::readlink(c"/proc/self".as_ptr(), buf.as_mut_ptr().cast(), buf.len());
            if n > 0 {
                let mut line = [0u8; 33];
                let n = n as usize;
                line[..n].copy_from_slice(&buf[..n]);
                line[n] = b'\n';
                nix::libc::write(raw_pid_fd, line.as_ptr().cast(), n + 1);
            }
            Ok(())
        });
    }
    let child = command.spawn().map_err(|e| {
        format!(
            "cannot run {}: {e}",
            std::path::Path::new(&request.program).display()
        )
    })?;
    drop(pid_fd);
    close_stdio_and_pid_fd();
    Ok(Pid::from_raw(child.id() as i32))
}

/// Reaps children until `plugin` has ended; returns its raw wait status.
fn reap_until(plugin: Pid) -> i32 {
    use nix::sys::wait::WaitPidFlag;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == plugin => return code << 8,
            Ok(WaitStatus::Signaled(pid, sig, core)) if pid == plugin => {
                return sig as i32 | if core { 0x80 } else { 0 };
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            // No children left at all: the plugin is gone without a status we saw.
            Err(_) => return 1 << 8,
        }
    }
}

/// Replaces stdin, stdout and stderr with /dev/null and closes the pid pipe: what is
/// left of the plugin's pipes is then the plugin's own.
fn close_stdio_and_pid_fd() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..=2 {
            // SAFETY: dup2 onto the standard descriptors of this process.
            unsafe { nix::libc::dup2(null.as_raw_fd(), fd) };
        }
    }
    // SAFETY: PID_FD is ours to close (already closed is harmless).
    unsafe { nix::libc::close(PID_FD) };
}

/// Whether a PID namespace (and a process in it) can be made here: exit 0 if so.
fn probe() -> Result<i32, String> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID)
        .map_err(|e| format!("cannot make a PID namespace: {e}"))?;
    // SAFETY: single-threaded, as above.
    match unsafe { fork() }.map_err(|e| format!("fork into the namespace: {e}"))? {
        ForkResult::Child => std::process::exit(0),
        ForkResult::Parent { child } => match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, 0)) => Ok(0),
            other => Err(format!("the probe process ended with {other:?}")),
        },
    }
}
