//! A child process spoken with in lines: requests to its stdin, what it says read from
//! its stdout one bounded line at a time, the tail of its stderr kept for an error. The
//! plugin test's runner asks tsdb its queries this way before it answers. The child is
//! killed when this is dropped (past its time, or its caller gone), so every wait here
//! is bounded by the caller's timeout around the whole conversation.

use std::process::ExitStatus;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;

use crate::bounded_child::{Piped, spawn_piped, tail};

/// One line the child said, or why there is none.
#[derive(Debug, PartialEq)]
pub enum Said {
    /// A whole line, without its newline (or the last bytes before the child closed
    /// its stdout without one).
    Line(Vec<u8>),
    /// The child closed its stdout.
    End,
    /// The line went past the bound; the conversation cannot go on.
    TooLong,
}

/// A running child (see the module's documentation).
pub struct LineChild {
    program: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

impl LineChild {
    /// Starts `command`, its stderr's last `max_stderr` bytes kept.
    pub fn start(command: Command, max_stderr: usize) -> Result<Self, String> {
        let Piped {
            program,
            child,
            stdin,
            stdout,
            stderr,
        } = spawn_piped(command)?;
        // Read all along, so that a child writing much to stderr never blocks on it
        // while tsdb waits for its next line.
        let stderr = tokio::spawn(tail(stderr, max_stderr));
        Ok(Self {
            program,
            child,
            stdin: Some(stdin),
            stdout: BufReader::new(stdout),
            stderr: Some(stderr),
        })
    }

    /// Writes `line` and a newline to the child's stdin. A child that has exited or
    /// closed its stdin is no error here: what it said (or its exit) tells.
    pub async fn send(&mut self, line: &[u8]) {
        let Some(stdin) = self.stdin.as_mut() else {
            return;
        };
        let sent = async {
            stdin.write_all(line).await?;
            stdin.write_all(b"\n").await?;
            stdin.flush().await
        };
        if sent.await.is_err() {
            self.stdin = None;
        }
    }

    /// The child's next line of at most `max` bytes.
    pub async fn next_line(&mut self, max: usize) -> Said {
        let mut line = Vec::new();
        // One byte past the bound (and its newline) tells a line of exactly `max`
        // from a longer one without reading all of the longer one.
        let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
        let read = (&mut self.stdout)
            .take(limit)
            .read_until(b'\n', &mut line)
            .await;
        match read {
            Err(_) | Ok(0) => Said::End,
            Ok(_) => {
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                if line.len() > max {
                    Said::TooLong
                } else {
                    Said::Line(line)
                }
            }
        }
    }

    /// Closes the child's stdin and waits for it to exit; its status and its
    /// stderr's tail.
    pub async fn finish(mut self) -> Result<(ExitStatus, String), String> {
        self.stdin = None;
        // What the child still writes on stdout is read and dropped, so that it
        // cannot block on a full pipe before it exits.
        let drain = async {
            let mut buf = [0u8; 8192];
            while let Ok(n) = self.stdout.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        };
        let ((), status) = tokio::join!(drain, self.child.wait());
        let status = status.map_err(|e| format!("{}: {e}", self.program))?;
        Ok((status, self.stderr_tail().await))
    }

    /// Kills the child (it said something that ends the conversation); its stderr's
    /// tail.
    pub async fn abandon(mut self) -> String {
        let _ = self.child.kill().await;
        self.stderr_tail().await
    }

    /// What the child wrote on stderr (the tail), once it has closed it.
    async fn stderr_tail(&mut self) -> String {
        match self.stderr.take() {
            Some(task) => String::from_utf8_lossy(&task.await.unwrap_or_default()).into_owned(),
            None => String::new(),
        }
    }
}

impl Drop for LineChild {
    fn drop(&mut self) {
        // The child itself is killed by `kill_on_drop`; a grandchild holding its
        // stderr open must not keep the reader alive.
        if let Some(task) = self.stderr.take() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(script: &str) -> LineChild {
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        LineChild::start(command, 64).expect("sh starts")
    }

    #[tokio::test]
    async fn lines_go_both_ways_and_a_long_one_is_refused() {
        let mut child = shell("read a; echo \"got $a\"; echo 123456789; printf tail");
        child.send(b"hello").await;
        assert_eq!(child.next_line(16).await, Said::Line(b"got hello".to_vec()));
        assert_eq!(child.next_line(8).await, Said::TooLong);
        assert_eq!(child.abandon().await, "");
        let mut child = shell("echo 12345678; printf tail; echo oops >&2");
        assert_eq!(child.next_line(8).await, Said::Line(b"12345678".to_vec()));
        assert_eq!(child.next_line(8).await, Said::Line(b"tail".to_vec()));
        assert_eq!(child.next_line(8).await, Said::End);
        let (status, stderr) = child.finish().await.expect("sh exits");
        assert!(status.success());
        assert_eq!(stderr, "oops\n");
    }

    #[tokio::test]
    async fn a_child_that_exits_early_ends_the_conversation() {
        let mut child = shell("exit 3");
        child.send(b"ignored").await;
        child.send(b"ignored").await;
        assert_eq!(child.next_line(8).await, Said::End);
        let (status, _) = child.finish().await.expect("sh exits");
        assert_eq!(status.code(), Some(3));
    }
}
