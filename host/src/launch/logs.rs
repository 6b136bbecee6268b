//! A plugin's stdout and stderr: captured line by line into the host's log, with the
//! plugin's name, generation and pid, and kept in a bounded ring for `baton ctl logs`.
//!
//! What reaches the host's log is rate limited per plugin ([`LogLimiter`], shared with
//! the plugin's `Log` calls); the pipe is always read, and lines over the rate are
//! dropped from the host's log, counted, and reported (see `log_limit`). The ring keeps
//! every line, dropped or not: it is bounded by itself, and the last lines before a
//! crash are the ones start-up errors and `baton ctl logs` must show.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::sync::broadcast;

use crate::io::log_limit::{LogLimit, LogLimiter};
use crate::io::printable::printable;

/// Longest log line kept whole; longer lines are cut.
const MAX_LOG_LINE: usize = 16 * 1024;
/// Bytes of a plugin's output read at a time.
const READ_CHUNK: usize = 64 * 1024;
/// Lines of output kept per plugin for error messages and `baton ctl logs`.
const LOG_RING_LINES: usize = 500;
/// Lines a follower of the logs may lag behind the plugin before it misses some.
const FEED_LINES: usize = 256;
/// Generations whose first error line is kept: a failed start reads its own at once.
const FIRST_ERRORS_KEPT: usize = 8;
/// Lines of stderr a failed start's message ends with.
const START_FAILURE_TAIL: usize = 5;

/// Recent output lines of one plugin, across its generations, a feed of new ones, and
/// the plugin's budget for the host's log.
#[derive(Clone)]
pub struct LogRing {
    lines: Arc<Mutex<Ring>>,
    /// Each recent generation's first stderr line that reads as an error, kept apart
    /// from the ring: a long stack after it must not push it out before a failed start
    /// reports it.
    first_errors: Arc<Mutex<VecDeque<(u64, String)>>>,
    limiter: LogLimiter,
}

/// The kept lines and, while someone follows them, the feed of new ones: one lock, so a
/// follower gets each line once, either in the kept lines or from the feed.
#[derive(Default)]
struct Ring {
    lines: VecDeque<LogLine>,
    /// Made by the first follower and dropped when the last has gone: a feed keeps room
    /// for `FEED_LINES` lines, which most plugins, followed by nobody, never need.
    feed: Option<broadcast::Sender<LogLine>>,
}

impl LogRing {
    /// An empty ring for plugin `name`, whose lines reach the host's log within `limit`.
    pub fn new(name: Arc<str>, limit: LogLimit) -> Self {
        Self {
            lines: Arc::default(),
            first_errors: Arc::default(),
            limiter: LogLimiter::new(name, limit),
        }
    }

    /// The plugin's budget for the host's log.
    pub fn limiter(&self) -> &LogLimiter {
        &self.limiter
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
    /// When the host read it, in Unix milliseconds.
    pub unix_ms: u64,
}

/// Now, in Unix milliseconds.
pub(crate) fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl LogRing {
    fn push(&self, line: LogLine) {
        let mut ring = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(feed) = &ring.feed {
            if feed.receiver_count() == 0 {
                ring.feed = None;
            } else {
                // A follower that lags behind loses lines (and is told so), not the ring.
                let _ = feed.send(line.clone());
            }
        }
        if ring.lines.len() == LOG_RING_LINES {
            ring.lines.pop_front();
        }
        ring.lines.push_back(line);
    }

    /// The kept lines, and a feed of every line after them (none missed in between, none
    /// given twice).
    pub fn follow(&self) -> (Vec<LogLine>, broadcast::Receiver<LogLine>) {
        let mut ring = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        let feed = match &ring.feed {
            Some(feed) => feed.subscribe(),
            None => {
                let (feed, rx) = broadcast::channel(FEED_LINES);
                ring.feed = Some(feed);
                rx
            }
        };
        (ring.lines.iter().cloned().collect(), feed)
    }

    /// Whether anyone follows the lines now (a feed is kept).
    #[cfg(test)]
    fn followed(&self) -> bool {
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .feed
            .is_some()
    }

    /// The last `n` lines of `generation`'s stderr.
    pub fn tail_of(&self, generation: u64, n: usize) -> Vec<String> {
        let ring = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        let mut lines: Vec<String> = ring
            .lines
            .iter()
            .rev()
            .filter(|l| l.generation == generation && l.stream == "stderr")
            .take(n)
            .map(|l| l.text.clone())
            .collect();
        lines.reverse();
        lines
    }

    /// What a failed start of `generation` reports of its stderr: the first line that
    /// reads as an error, and the last lines.
    pub fn start_failure_excerpt(&self, generation: u64) -> StderrExcerpt {
        let first_error = self
            .first_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(g, _)| *g == generation)
            .map(|(_, line)| line.clone());
        StderrExcerpt::new(first_error, self.tail_of(generation, START_FAILURE_TAIL))
    }

    fn note_first_error(&self, generation: u64, line: &str) {
        let mut kept = self.first_errors.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() == FIRST_ERRORS_KEPT {
            kept.pop_front();
        }
        kept.push_back((generation, line.to_owned()));
    }

    /// Every kept line, oldest first.
    pub fn lines(&self) -> Vec<LogLine> {
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .lines
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
    let mut reader = BufReader::with_capacity(READ_CHUNK, reader);
    let mut buf = Vec::new();
    let mut python = PythonErrors::default();
    let mut error_noted = false;
    loop {
        // Lines come out of the reader's buffer without another read, so without this
        // a plugin writing short lines fast (`yes >&2`) would keep the worker, and
        // every plugin's calls on it, for as long as it went on.
        tokio::task::coop::consume_budget().await;
        buf.clear();
        match (&mut reader)
            .take(MAX_LOG_LINE as u64)
            .read_until(b'\n', &mut buf)
            .await
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let unix_ms = unix_ms_now();
        let mut text = String::from_utf8_lossy(&buf)
            .trim_end_matches(['\n', '\r'])
            .to_owned();
        // Each invalid byte became a three-byte U+FFFD: cut back to the line's bound, so
        // that the ring holds what its size says.
        if text.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        let python_error = python.is_error(&text);
        // Over the rate, a line is kept in the ring only; the reader goes on either way,
        // so the plugin never blocks on a full pipe.
        let logged = ring.limiter.admit(text.len());
        if logged && stream == "stdout" {
            let text = printable(&text);
            tracing::warn!(target: "baton::plugin", plugin = %name, generation, pid, "stray stdout after the handshake (logs belong on stderr): {text}");
        } else if logged {
            let (level, rest) = if python_error {
                (tracing::Level::ERROR, text.as_str())
            } else {
                level_of(&text)
            };
            let rest = printable(rest);
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
        if stream == "stderr" && !error_noted && looks_like_error(&text) {
            ring.note_first_error(generation, &text);
            error_noted = true;
        }
        ring.push(LogLine {
            generation,
            stream,
            text,
            unix_ms,
        });
    }
}

/// Follows a Python plugin's stderr for the error reports the interpreter writes
/// itself, without a level word: a traceback (from its `Traceback (most recent call
/// last):` line to the exception line that ends it, chained ones included), a syntax
/// error's `File "...", line N` block, and any line that starts with an exception's
/// name (`SyntaxError: ...`, `mymod.BadConfig: ...`). All of them are errors.
#[derive(Default)]
struct PythonErrors {
    in_report: bool,
}

impl PythonErrors {
    /// Whether `line` is part of an error report, given the lines before it.
    fn is_error(&mut self, line: &str) -> bool {
        let trimmed = line.trim_start();
        let starts_report = trimmed.starts_with("Traceback (most recent call last):")
            || trimmed.starts_with("Exception Group Traceback (most recent call last):")
            || (line.starts_with("  File \"") && line.contains("\", line "));
        if starts_report {
            self.in_report = true;
            return true;
        }
        if self.in_report {
            // The frames and source lines are indented; the first line that is not
            // names the exception and ends the report.
            if line.is_empty() || line.starts_with([' ', '\t']) {
                return true;
            }
            self.in_report = false;
            return true;
        }
        is_exception_line(line)
            || line.starts_with("During handling of the above exception")
            || line.starts_with("The above exception was the direct cause")
    }
}

/// Whether `line` starts with an exception's (possibly dotted) name ending in `Error`
/// or `Exception`, then `:` or nothing: how Python's last line of a report reads.
fn is_exception_line(line: &str) -> bool {
    let name = line.split_once(':').map_or(line, |(name, _)| name);
    let simple = name.rsplit('.').next().unwrap_or(name);
    !name.is_empty()
        && name.split('.').all(|part| {
            part.chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_')
                && part.chars().all(|c| c.is_alphanumeric() || c == '_')
        })
        && (simple.ends_with("Error") || simple.ends_with("Exception"))
}

/// What a failed start's message shows of the plugin's stderr.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StderrExcerpt {
    /// The first line that reads as an error, when it is not among `last`: Node.js,
    /// the JVM and others print the error first and a long stack after it, so the last
    /// lines alone show only the stack.
    pub first_error: Option<String>,
    /// The last lines, oldest first.
    pub last: Vec<String>,
}

impl StderrExcerpt {
    /// The excerpt of one process's stderr lines, oldest first.
    pub fn of_lines(lines: &[String]) -> Self {
        let last = lines[lines.len().saturating_sub(START_FAILURE_TAIL)..].to_vec();
        let first_error = lines.iter().find(|l| looks_like_error(l)).cloned();
        Self::new(first_error, last)
    }

    fn new(first_error: Option<String>, last: Vec<String>) -> Self {
        Self {
            first_error: first_error.filter(|line| !last.contains(line)),
            last,
        }
    }

    /// Whether there is nothing to show.
    pub fn is_empty(&self) -> bool {
        self.first_error.is_none() && self.last.is_empty()
    }
}

/// `its stderr said first: ERROR LINE … and ended with: A | B`, or, when the error is
/// among the last lines (or there is none), `its stderr ended with: A | B`.
impl fmt::Display for StderrExcerpt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.first_error, self.last.is_empty()) {
            (None, true) => Ok(()),
            (None, false) => write!(f, "its stderr ended with: {}", self.last.join(" | ")),
            (Some(error), _) => write!(
                f,
                "its stderr said first: {error} … and ended with: {}",
                self.last.join(" | ")
            ),
        }
    }
}

/// Whether a line of stderr reads as an error report: a level word first (`ERROR`,
/// `error:`, `FATAL`, ...), an error or exception type first (`Error: ...`,
/// `TypeError: ...`, `Error [ERR_MODULE_NOT_FOUND]: ...`, `ModuleNotFoundError: ...`,
/// `java.lang.IllegalStateException: ...`, also after Node's `Uncaught `), Go's
/// `panic:` and `fatal error:`, or Rust's `panicked at`.
fn looks_like_error(line: &str) -> bool {
    let line = line.trim_start();
    if level_of(line).0 == tracing::Level::ERROR || line.contains(" panicked at ") {
        return true;
    }
    let Some((head, _)) = line
        .strip_prefix("Uncaught ")
        .unwrap_or(line)
        .split_once(':')
    else {
        return false;
    };
    if head == "panic" || head == "fatal error" {
        return true;
    }
    // Node.js puts a code in brackets after the type: `Error [ERR_X]`.
    let name = match head.split_once(" [") {
        Some((name, code)) if code.ends_with(']') => name,
        _ => head,
    };
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '$')
        && (name.ends_with("Error") || name.ends_with("Exception"))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> LogLine {
        LogLine {
            generation: 1,
            stream: "stderr",
            text: text.into(),
            unix_ms: 0,
        }
    }

    #[tokio::test]
    async fn a_line_of_invalid_bytes_is_kept_within_the_line_bound() {
        let limit = LogLimit {
            lines_per_sec: 100,
            bytes_per_sec: 1 << 20,
        };
        let ring = LogRing::new(Arc::from("p"), limit);
        let mut output = vec![0xffu8; MAX_LOG_LINE - 1];
        output.push(b'\n');
        output.extend_from_slice(b"after\n");
        capture_lines(&output[..], Arc::from("p"), 1, 1, "stderr", ring.clone()).await;
        let lines = ring.lines();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].text.len() <= MAX_LOG_LINE,
            "{} bytes kept",
            lines[0].text.len()
        );
        assert!(lines[0].text.starts_with('\u{fffd}'));
        assert_eq!(lines[1].text, "after");
    }

    #[test]
    fn a_follower_gets_each_line_once_and_a_ring_nobody_follows_keeps_no_feed() {
        let limit = LogLimit {
            lines_per_sec: 100,
            bytes_per_sec: 10_000,
        };
        let ring = LogRing::new(Arc::from("p"), limit);
        ring.push(line("before"));
        assert!(!ring.followed(), "a feed made before anyone follows");

        let (kept, mut feed) = ring.follow();
        assert!(ring.followed());
        ring.push(line("after"));
        let texts = |lines: &[LogLine]| lines.iter().map(|l| l.text.clone()).collect::<Vec<_>>();
        assert_eq!(texts(&kept), ["before"]);
        assert_eq!(
            feed.try_recv().map(|l| l.text).ok().as_deref(),
            Some("after")
        );
        assert!(feed.try_recv().is_err(), "a line given twice");

        // A second follower shares the feed; the feed goes with the last of them.
        let (kept, second) = ring.follow();
        assert_eq!(texts(&kept), ["before", "after"]);
        drop(feed);
        ring.push(line("one follower left"));
        assert!(ring.followed());
        drop(second);
        ring.push(line("nobody follows"));
        assert!(!ring.followed(), "the feed outlived its followers");
        assert_eq!(ring.lines().len(), 4);
    }

    #[test]
    fn python_tracebacks_and_exception_lines_are_errors() {
        let stderr = [
            ("INFO starting", false),
            ("Traceback (most recent call last):", true),
            ("  File \"/srv/plugin.py\", line 3, in <module>", true),
            ("    import nope", true),
            ("ModuleNotFoundError: No module named 'nope'", true),
            ("after the report", false),
            ("  File \"/srv/bad.py\", line 7", true),
            ("    def f(", true),
            ("         ^", true),
            ("SyntaxError: '(' was never closed", true),
            ("", false),
            ("ValueError: raised without a traceback", true),
            ("grpc._channel._InactiveRpcError: <details>", true),
            (
                "During handling of the above exception, another exception occurred:",
                true,
            ),
            ("KeyError", true),
            ("Errors: 3 of 10 (not an exception)", false),
            ("the word Error: inside a sentence", false),
            ("  File listing done", false),
        ];
        let mut python = PythonErrors::default();
        for (line, error) in stderr {
            assert_eq!(python.is_error(line), error, "{line:?}");
        }
    }

    #[test]
    fn error_lines_are_told_from_stack_lines() {
        for error in [
            "Error: Cannot find module 'left-pad'",
            "Error [ERR_MODULE_NOT_FOUND]: Cannot find package 'x' imported from /p/main.js",
            "TypeError: Cannot read properties of undefined (reading 'x')",
            "Uncaught ReferenceError: x is not defined",
            "ModuleNotFoundError: No module named 'grpc'",
            "java.lang.IllegalStateException: no config",
            "panic: runtime error: index out of range [3] with length 3",
            "fatal error: all goroutines are asleep - deadlock!",
            "thread 'main' panicked at src/main.rs:3:5:",
            "ERROR cannot bind the plugin socket",
            "error: BATON_PLUGIN_SOCKET is not set",
        ] {
            assert!(looks_like_error(error), "{error}");
        }
        for other in [
            "    at Module._load (node:internal/modules/cjs/loader:1019:12)",
            "node:internal/modules/cjs/loader:1228",
            "  throw err;",
            "Traceback (most recent call last):",
            "goroutine 1 [running]:",
            "INFO serving socket=/tmp/p.sock",
            "Require stack:",
            "The Error: is in the middle",
            "",
        ] {
            assert!(!looks_like_error(other), "{other}");
        }
    }

    #[test]
    fn an_excerpt_keeps_the_first_error_line_and_the_last_lines() {
        let mut lines = vec!["node:internal/x:1".to_owned(), "Error: boom".to_owned()];
        lines.extend((0..20).map(|i| format!("    at f{i} (x.js:{i})")));
        let excerpt = StderrExcerpt::of_lines(&lines);
        assert_eq!(excerpt.first_error.as_deref(), Some("Error: boom"));
        assert_eq!(excerpt.last.len(), START_FAILURE_TAIL);
        assert_eq!(
            excerpt.to_string(),
            format!(
                "its stderr said first: Error: boom … and ended with: {}",
                lines[lines.len() - START_FAILURE_TAIL..].join(" | ")
            )
        );
        // Python's error comes last: said once.
        let python = ["Traceback (most recent call last):", "ValueError: bad"].map(String::from);
        let excerpt = StderrExcerpt::of_lines(&python);
        assert_eq!(excerpt.first_error, None);
        assert_eq!(
            excerpt.to_string(),
            "its stderr ended with: Traceback (most recent call last): | ValueError: bad"
        );
        assert!(StderrExcerpt::of_lines(&[]).is_empty());
        assert_eq!(StderrExcerpt::of_lines(&[]).to_string(), "");
    }
}
