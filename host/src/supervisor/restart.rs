//! When to start a crashed plugin again: exponential backoff, and a breaker that marks
//! a plugin failed after too many crashes in a window.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::RestartConfig;

/// Exponential backoff with a crash-loop breaker.
#[derive(Debug)]
pub struct RestartPolicy {
    config: RestartConfig,
    /// Crashes in a row without a stable period between them.
    streak: u32,
    /// When recent crashes happened, for the breaker's window.
    recent: VecDeque<Instant>,
}

impl RestartPolicy {
    /// A policy with no crashes yet.
    pub fn new(config: RestartConfig) -> Self {
        Self {
            config,
            streak: 0,
            recent: VecDeque::new(),
        }
    }

    /// New settings from a config reload; the crashes counted so far still count.
    pub fn set_config(&mut self, config: RestartConfig) {
        self.config = config;
    }

    /// Records a crash of a process that had served for `uptime`; returns the delay
    /// before the next start, or `None` when the breaker trips.
    pub fn on_crash(&mut self, now: Instant, uptime: Duration) -> Option<Duration> {
        if uptime >= Duration::from_millis(self.config.stable_after_ms) {
            self.streak = 0;
            self.recent.clear();
        }
        self.streak = self.streak.saturating_add(1);
        let window = Duration::from_millis(self.config.crash_window_ms);
        self.recent.push_back(now);
        while self
            .recent
            .front()
            .is_some_and(|&t| now.duration_since(t) > window)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.config.max_crashes as usize {
            return None;
        }
        Some(self.delay())
    }

    /// Records a start that failed for the host's own reason (out of descriptors or
    /// memory): it waits like a crash, at least the initial backoff, but does not count
    /// toward the breaker, which judges the plugin.
    pub fn on_host_shortage(&mut self) -> Duration {
        self.streak = self.streak.saturating_add(1);
        self.delay()
            .max(Duration::from_millis(self.config.initial_backoff_ms))
    }

    fn delay(&self) -> Duration {
        // The first restart is immediate: a one-off crash should cost milliseconds.
        match self.streak {
            0 | 1 => Duration::ZERO,
            n => {
                let factor = 1u64.checked_shl(n - 2).unwrap_or(u64::MAX);
                Duration::from_millis(
                    self.config
                        .initial_backoff_ms
                        .saturating_mul(factor)
                        .min(self.config.max_backoff_ms),
                )
            }
        }
    }

    /// Forgets past crashes (after an operator revives the plugin).
    pub fn reset(&mut self) {
        self.streak = 0;
        self.recent.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_the_breaker_trips() {
        let mut p = RestartPolicy::new(RestartConfig {
            initial_backoff_ms: 100,
            max_backoff_ms: 250,
            max_crashes: 5,
            crash_window_ms: 60_000,
            stable_after_ms: 60_000,
        });
        let t = Instant::now();
        let ms = |d: Option<Duration>| d.map(|d| d.as_millis());
        assert_eq!(ms(p.on_crash(t, Duration::ZERO)), Some(0));
        assert_eq!(ms(p.on_crash(t, Duration::ZERO)), Some(100));
        assert_eq!(ms(p.on_crash(t, Duration::ZERO)), Some(200));
        assert_eq!(ms(p.on_crash(t, Duration::ZERO)), Some(250));
        assert_eq!(p.on_crash(t, Duration::ZERO), None);
    }

    #[test]
    fn a_stable_run_resets_the_backoff() {
        let mut p = RestartPolicy::new(RestartConfig::default());
        let t = Instant::now();
        for _ in 0..3 {
            p.on_crash(t, Duration::ZERO);
        }
        assert_eq!(
            p.on_crash(t, Duration::from_secs(120)),
            Some(Duration::ZERO)
        );
        assert_eq!(
            p.on_crash(t, Duration::ZERO),
            Some(Duration::from_millis(100))
        );
    }

    #[test]
    fn old_crashes_leave_the_window() {
        let mut p = RestartPolicy::new(RestartConfig {
            max_crashes: 2,
            crash_window_ms: 1_000,
            ..RestartConfig::default()
        });
        let t = Instant::now();
        assert!(p.on_crash(t, Duration::ZERO).is_some());
        assert!(
            p.on_crash(t + Duration::from_secs(5), Duration::ZERO)
                .is_some()
        );
        assert!(
            p.on_crash(t + Duration::from_millis(5_500), Duration::ZERO)
                .is_none()
        );
    }

    #[test]
    fn the_hosts_own_shortages_wait_but_never_trip_the_breaker() {
        let mut p = RestartPolicy::new(RestartConfig {
            max_crashes: 2,
            initial_backoff_ms: 100,
            max_backoff_ms: 400,
            ..RestartConfig::default()
        });
        let waits: Vec<u64> = (0..6)
            .map(|_| p.on_host_shortage().as_millis() as u64)
            .collect();
        assert_eq!(waits, [100, 100, 200, 400, 400, 400]);
        // The plugin's own first crash is still its first.
        assert!(p.on_crash(Instant::now(), Duration::ZERO).is_some());
    }
}
