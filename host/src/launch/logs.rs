//! A plugin's stdout and stderr: captured line by line into the host's log, with the
//! plugin's name, generation and pid, and kept in a bounded ring for `baton ctl logs`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};

/// Longest log line kept whole; longer lines are cut.
const MAX_LOG_LINE: usize = 16 * 1024;
/// Lines of output kept per plugin for error messages and `baton ctl logs`.
const LOG_RING_LINES: usize = 500;

/// Recent output lines of one plugin, across its generations, and a feed of new ones.
#[derive(Clone)]
pub struct LogRing {
    lines: Arc<Mutex<VecDeque<LogLine>>>,
    feed: tokio::sync::broadcast::Sender<LogLine>,
}

impl Default for LogRing {
    fn default() -> Self {
        Self {
            lines: Arc::default(),
            feed: tokio::sync::broadcast::channel(256).0,
        }
    }
}

/// One captured line.
#[derive(Clone, Debug)]
pub struct LogLine {
    /// Which generation wrote it.
    pub generation: u64,
    /// `stderr` or `stdout`.
    pub stream: &'static str,
    /// The text, without the newline.
    pub text: String,
}

impl LogRing {
    fn push(&self, line: LogLine) {
        {
            let mut ring = self.lines.lock().unwrap_or_else(|p| p.into_inner());
            if ring.len() == LOG_RING_LINES {
                ring.pop_front();
            }
            ring.push_back(line.clone());
        }
        // Nobody following is the usual case, and fine.
        let _ = self.feed.send(line);
    }

    /// The kept lines, and a feed of every line after them (none missed in between).
    pub fn follow(&self) -> (Vec<LogLine>, tokio::sync::broadcast::Receiver<LogLine>) {
        let ring = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        (ring.iter().cloned().collect(), self.feed.subscribe())
    }

    /// The last `n` lines of `generation`'s stderr.
    pub fn tail_of(&self, generation: u64, n: usize) -> Vec<String> {
        let ring = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        let mut lines: Vec<String> = ring
            .iter()
            .rev()
            .filter(|l| l.generation == generation && l.stream == "stderr")
            .take(n)
            .map(|l| l.text.clone())
            .collect();
        lines.reverse();
        lines
    }

    /// Every kept line, oldest first.
    pub fn lines(&self) -> Vec<LogLine> {
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

/// Sends each line of a plugin's output to the log, with the plugin's name, generation
/// and pid, and keeps it in the ring.
pub(super) async fn capture_lines<R: AsyncRead + Unpin>(
    reader: R,
    name: Arc<str>,
    generation: u64,
    pid: u32,
    stream: &'static str,
    ring: LogRing,
) {
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match (&mut reader)
            .take(MAX_LOG_LINE as u64)
            .read_until(b'\n', &mut buf)
            .await
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&buf)
            .trim_end_matches(['\n', '\r'])
            .to_owned();
        if stream == "stdout" {
            tracing::warn!(target: "baton::plugin", plugin = %name, generation, pid, "stray stdout after the handshake (logs belong on stderr): {text}");
        } else {
            let (level, rest) = level_of(&text);
            match level {
                tracing::Level::ERROR => {
                    tracing::error!(target: "baton::plugin", plugin = %name, generation, pid, "{rest}")
                }
                tracing::Level::WARN => {
                    tracing::warn!(target: "baton::plugin", plugin = %name, generation, pid, "{rest}")
                }
                tracing::Level::DEBUG | tracing::Level::TRACE => {
                    tracing::debug!(target: "baton::plugin", plugin = %name, generation, pid, "{rest}")
                }
                _ => {
                    tracing::info!(target: "baton::plugin", plugin = %name, generation, pid, "{rest}")
                }
            }
        }
        ring.push(LogLine {
            generation,
            stream,
            text,
        });
    }
}

/// The level a plugin's line announces in its first word, and the line without that
/// word (the host's own log line shows the level already).
fn level_of(line: &str) -> (tracing::Level, &str) {
    let trimmed = line.trim_start();
    let (word, rest) = trimmed.split_once(' ').unwrap_or((trimmed, ""));
    let level = match word.trim_end_matches(':') {
        "ERROR" | "error" | "CRITICAL" | "FATAL" => tracing::Level::ERROR,
        "WARN" | "WARNING" | "warn" | "warning" => tracing::Level::WARN,
        "INFO" | "info" => tracing::Level::INFO,
        "DEBUG" | "debug" => tracing::Level::DEBUG,
        "TRACE" | "trace" => tracing::Level::TRACE,
        _ => return (tracing::Level::INFO, line),
    };
    (level, rest.trim_start())
}
