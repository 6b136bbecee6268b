//! Each plugin's budget for the host's log: lines over it are dropped from the host's
//! log (the plugin's ring keeps them), counted, and reported in one line a second at
//! most, naming the plugin.
//!
//! The report is scheduled by the drop that opens it, not by a ticking task per plugin:
//! with hundreds of quiet plugins, a timer each waking every second was most of an idle
//! daemon's CPU.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long after the first drop its report waits, gathering the drops that follow.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// How much of one plugin's logging reaches the host's log each second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimit {
    /// Lines a second (`log_lines_per_sec`).
    pub lines_per_sec: u32,
    /// Bytes of text a second (`log_bytes_per_sec`); a window's first line always
    /// passes, so one long line is never starved.
    pub bytes_per_sec: u64,
}

/// One plugin's budget for the host's log, shared by its output capture (every
/// generation) and its `Log` calls. Counted in one-second windows; what is dropped is
/// reported in one line a second at most, naming the plugin.
#[derive(Clone)]
pub struct LogLimiter {
    name: Arc<str>,
    window: Arc<Mutex<Window>>,
    /// Where a report is scheduled; without a runtime, drops are reported as windows
    /// roll over instead.
    runtime: Option<tokio::runtime::Handle>,
}

struct Window {
    /// In the window, so that a config reload can change it in place.
    limit: LogLimit,
    started: Instant,
    lines: u32,
    bytes: u64,
    /// Dropped since the last report, and since when (`Some` while a report is due).
    dropped_lines: u64,
    dropped_bytes: u64,
    dropped_since: Option<Instant>,
}

impl LogLimiter {
    /// A budget for plugin `name`. Created inside a tokio runtime, drops are reported
    /// a second after the first of them even when the plugin has gone quiet.
    pub fn new(name: Arc<str>, limit: LogLimit) -> Self {
        Self {
            name,
            runtime: tokio::runtime::Handle::try_current().ok(),
            window: Arc::new(Mutex::new(Window {
                limit,
                started: Instant::now(),
                lines: 0,
                bytes: 0,
                dropped_lines: 0,
                dropped_bytes: 0,
                dropped_since: None,
            })),
        }
    }

    /// Whether a line of `bytes` may go to the host's log now; if not, it is counted
    /// as dropped.
    pub fn admit(&self, bytes: usize) -> bool {
        let bytes = bytes as u64;
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if now.duration_since(w.started) >= Duration::from_secs(1) {
            if self.runtime.is_none() {
                report(&self.name, &mut w, now);
            }
            (w.started, w.lines, w.bytes) = (now, 0, 0);
        }
        let fits = w.lines < w.limit.lines_per_sec
            && (w.bytes == 0 || w.bytes + bytes <= w.limit.bytes_per_sec);
        if fits {
            w.lines += 1;
            w.bytes += bytes;
            return true;
        }
        w.dropped_lines += 1;
        w.dropped_bytes += bytes;
        if w.dropped_since.is_none() {
            w.dropped_since = Some(now);
            if let Some(runtime) = &self.runtime {
                let name = self.name.clone();
                let window = Arc::downgrade(&self.window);
                runtime.spawn(async move {
                    tokio::time::sleep(REPORT_EVERY).await;
                    if let Some(window) = window.upgrade() {
                        let mut w = window.lock().unwrap_or_else(|p| p.into_inner());
                        report(&name, &mut w, Instant::now());
                    }
                });
            }
        }
        false
    }

    /// A new budget, from the next line on (a config reload).
    pub fn set_limit(&self, limit: LogLimit) {
        self.window.lock().unwrap_or_else(|p| p.into_inner()).limit = limit;
    }
}

/// Logs what was dropped since the last report, if anything.
fn report(name: &str, w: &mut Window, now: Instant) {
    let Some(since) = w.dropped_since.take() else {
        return;
    };
    tracing::warn!(
        target: "baton::plugin",
        plugin = %name,
        "plugin {name}: {} lines ({} bytes) dropped in the last {:.1} s, over its log rate \
         (log_lines_per_sec = {}, log_bytes_per_sec = {}); `baton ctl logs {name}` shows the latest",
        w.dropped_lines,
        w.dropped_bytes,
        now.duration_since(since).as_secs_f64(),
        w.limit.lines_per_sec,
        w.limit.bytes_per_sec,
    );
    (w.dropped_lines, w.dropped_bytes) = (0, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(lines_per_sec: u32) -> LogLimiter {
        LogLimiter::new(
            "p".into(),
            LogLimit {
                lines_per_sec,
                bytes_per_sec: 1 << 20,
            },
        )
    }

    fn alive_tasks() -> usize {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    }

    async fn until_no_tasks(within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if alive_tasks() == 0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        alive_tasks() == 0
    }

    #[tokio::test(flavor = "current_thread")]
    async fn quiet_budgets_keep_no_task_and_a_drop_schedules_one_report() {
        let budgets: Vec<_> = (0..64).map(|_| limiter(2)).collect();
        assert_eq!(
            alive_tasks(),
            0,
            "a budget with nothing dropped needs no task"
        );

        let budget = &budgets[0];
        assert!(budget.admit(10) && budget.admit(10));
        for _ in 0..100 {
            assert!(!budget.admit(10));
        }
        assert_eq!(alive_tasks(), 1, "one report for the whole run of drops");
        {
            let w = budget.window.lock().unwrap_or_else(|p| p.into_inner());
            assert_eq!((w.dropped_lines, w.dropped_bytes), (100, 1000));
        }

        assert!(
            until_no_tasks(REPORT_EVERY * 3).await,
            "the report ran and ended"
        );
        let w = budget.window.lock().unwrap_or_else(|p| p.into_inner());
        assert_eq!(w.dropped_since, None, "reported");
        assert_eq!((w.dropped_lines, w.dropped_bytes), (0, 0));
    }

    #[test]
    fn without_a_runtime_drops_are_reported_when_the_window_rolls_over() {
        let budget = limiter(1);
        assert!(budget.admit(1));
        assert!(!budget.admit(1));
        budget
            .window
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .started -= Duration::from_secs(2);
        assert!(budget.admit(1), "a new window");
        let w = budget.window.lock().unwrap_or_else(|p| p.into_inner());
        assert_eq!((w.dropped_since, w.dropped_lines), (None, 0));
    }

    #[test]
    fn lines_over_the_rate_are_dropped_and_a_long_first_line_still_passes() {
        let limiter = LogLimiter::new(
            Arc::from("p"),
            LogLimit {
                lines_per_sec: 3,
                bytes_per_sec: 100,
            },
        );
        assert!(
            limiter.admit(500),
            "a window's first line passes whatever its size"
        );
        assert!(!limiter.admit(1), "the bytes are spent");
        let limiter = LogLimiter::new(
            Arc::from("p"),
            LogLimit {
                lines_per_sec: 3,
                bytes_per_sec: 100,
            },
        );
        let passed = (0..10).filter(|_| limiter.admit(10)).count();
        assert_eq!(passed, 3);
        let w = limiter.window.lock().unwrap_or_else(|p| p.into_inner());
        assert_eq!((w.dropped_lines, w.dropped_bytes), (7, 70));
    }
}
