//! A child process run to its end within a time bound and with its output bounded: pip
//! and venv for the plugins' environments. A child past its time is killed, and so is
//! one whose caller goes away.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

/// A child started with its three standard streams piped to tsdb, killed if dropped.
pub(crate) struct Piped {
    /// The program, quoted, for errors.
    pub program: String,
    pub child: Child,
    pub stdin: ChildStdin,
    pub stdout: ChildStdout,
    pub stderr: ChildStderr,
}

/// Starts `command` with its stdin, stdout and stderr piped, killed when dropped.
pub(crate) fn spawn_piped(mut command: Command) -> Result<Piped, String> {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let program = format!("{:?}", command.as_std().get_program());
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(format!("{program}: its pipes were not made"));
    };
    Ok(Piped {
        program,
        child,
        stdin,
        stdout,
        stderr,
    })
}

/// What a child left: its exit, the head of its stdout, the tail of its stderr.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

/// Runs `command` with `input` on its stdin, for at most `limit`; keeps the first
/// `max_stdout` bytes of stdout and the last `max_stderr` of stderr (where an error
/// message is). The error says what could not be done.
pub async fn run(
    command: Command,
    input: &[u8],
    limit: Duration,
    max_stdout: usize,
    max_stderr: usize,
) -> Result<Finished, String> {
    let Piped {
        program,
        mut child,
        mut stdin,
        stdout,
        stderr,
    } = spawn_piped(command)?;
    let input = input.to_vec();
    let feed = async move {
        // A child that exits without reading its input is not an error here: its
        // exit status says what happened.
        let _ = stdin.write_all(&input).await;
        drop(stdin);
    };
    let work = async {
        let ((), out, err, status) = tokio::join!(
            feed,
            head(stdout, max_stdout),
            tail(stderr, max_stderr),
            child.wait()
        );
        (out, err, status)
    };
    let outcome = tokio::time::timeout(limit, work).await;
    match outcome {
        Ok((stdout, stderr, Ok(status))) => Ok(Finished {
            status,
            stdout,
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }),
        Ok((_, _, Err(e))) => Err(format!("{program}: {e}")),
        Err(_) => {
            let _ = child.kill().await;
            Err(format!(
                "{program} did not finish within {limit:?} and was killed"
            ))
        }
    }
}

/// The first `max` bytes, the rest read and dropped so that the child never blocks on
/// a full pipe.
async fn head(mut from: impl AsyncRead + Unpin, max: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = max.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    kept
}

/// The last `max` bytes.
pub(crate) async fn tail(mut from: impl AsyncRead + Unpin, max: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > max {
            kept.drain(..kept.len() - max);
        }
    }
    kept
}
