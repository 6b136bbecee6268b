//! `baton ctl` as a user runs it: to the end, or watched while it runs (on pipes or a
//! pseudo-terminal).

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::{bin, wait_until};

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
