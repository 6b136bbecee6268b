//! Measuring the plugins' memory and CPU with sysinfo, refreshing only their own pids,
//! and telling a plugin's supervisor when it crosses `max_rss_mb` or `max_cpu_percent`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

use crate::config::PluginConfig;
use crate::handle::PluginHandle;
use crate::metrics::Metrics;
use crate::plugin_set::PluginSet;

/// The limits of one plugin.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    max_rss_bytes: Option<u64>,
    max_cpu_percent: Option<f64>,
    cpu_window: Duration,
}

impl Limits {
    pub(crate) fn of(config: &PluginConfig) -> Self {
        Self {
            max_rss_bytes: config.max_rss_mb.map(|mb| mb.saturating_mul(1 << 20)),
            max_cpu_percent: config.max_cpu_percent,
            cpu_window: Duration::from_millis(config.cpu_window_ms),
        }
    }
}

/// What the monitor remembers about one plugin's current process.
#[derive(Default)]
struct Watched {
    pid: Option<u32>,
    /// When this process was first measured.
    since: Option<Instant>,
    cpu: VecDeque<(Instant, f32)>,
    /// Set once a limit was reported for this pid, so it is reported once.
    reported: bool,
}

/// Starts the monitor thread; it ends when `alive` can no longer be upgraded (the host
/// is gone). A thread, not a task: sysinfo reads /proc synchronously.
pub(crate) fn spawn(
    plugins: PluginSet,
    metrics: Arc<Metrics>,
    interval: Duration,
    alive: Weak<()>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("baton-resources".into())
        .spawn(move || {
            // sysinfo reports no CPU use for samples closer together than this.
            let interval = interval.max(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
            let mut system = System::new();
            let mut watched: HashMap<String, Watched> = HashMap::new();
            let mut previous: Vec<Pid> = Vec::new();
            let refresh = ProcessRefreshKind::nothing().with_memory().with_cpu();
            loop {
                std::thread::sleep(interval);
                if alive.upgrade().is_none() {
                    return;
                }
                // The set as it is now: a config reload adds and removes plugins, and
                // changes their limits.
                let current: Vec<(PluginHandle, u32)> = plugins
                    .now()
                    .values()
                    .filter_map(|h| h.status().pid.map(|pid| (h.clone(), pid)))
                    .collect();
                watched.retain(|name, _| current.iter().any(|(h, _)| h.name() == name));
                let pids: Vec<Pid> = current.iter().map(|(_, pid)| Pid::from_u32(*pid)).collect();
                // Last round's pids are listed too: sysinfo forgets a dead process (and
                // closes the /proc file it keeps open for it) only when asked about it.
                let mut asked = pids.clone();
                asked.extend(previous.iter().filter(|p| !pids.contains(p)));
                system.refresh_processes_specifics(ProcessesToUpdate::Some(&asked), true, refresh);
                previous = pids;
                for (handle, pid) in current {
                    let limits = &handle.limits();
                    let Some(process) = system.process(Pid::from_u32(pid)) else {
                        continue;
                    };
                    let rss = process.memory();
                    let cpu = process.cpu_usage();
                    handle.set_resources(pid, rss, cpu);
                    metrics.set_resources(handle.name(), rss, f64::from(cpu) / 100.0);
                    let w = watched.entry(handle.name().to_owned()).or_default();
                    if w.pid != Some(pid) {
                        *w = Watched {
                            pid: Some(pid),
                            ..Watched::default()
                        };
                    }
                    if let Some(reason) = check(w, limits, rss, cpu) {
                        w.reported = true;
                        handle.over_limit(pid, reason);
                    }
                }
            }
        })
        .map(|_| ())
}

/// A limit `w`'s process crossed with this sample, if any (once per process).
fn check(w: &mut Watched, limits: &Limits, rss: u64, cpu: f32) -> Option<String> {
    let now = Instant::now();
    let since = *w.since.get_or_insert(now);
    w.cpu.push_back((now, cpu));
    while w
        .cpu
        .front()
        .is_some_and(|&(t, _)| now.duration_since(t) > limits.cpu_window)
    {
        w.cpu.pop_front();
    }
    if w.reported {
        return None;
    }
    if let Some(max) = limits.max_rss_bytes
        && rss > max
    {
        return Some(format!(
            "uses {} MiB of memory, over max_rss_mb = {}",
            rss >> 20,
            max >> 20
        ));
    }
    if let Some(max) = limits.max_cpu_percent {
        // Judged only over a full window, so a busy start-up is not punished.
        let spans_window = now.duration_since(since) >= limits.cpu_window;
        let average = w.cpu.iter().map(|&(_, c)| f64::from(c)).sum::<f64>() / w.cpu.len() as f64;
        if spans_window && average > max {
            return Some(format!(
                "used {average:.0}% CPU on average over {:?}, over max_cpu_percent = {max}",
                limits.cpu_window
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rss_mb: Option<u64>, cpu: Option<f64>) -> Limits {
        Limits {
            max_rss_bytes: rss_mb.map(|m| m << 20),
            max_cpu_percent: cpu,
            cpu_window: Duration::from_millis(50),
        }
    }

    #[test]
    fn memory_over_the_limit_is_reported_once() {
        let mut w = Watched::default();
        let l = limits(Some(100), None);
        assert_eq!(check(&mut w, &l, 50 << 20, 0.0), None);
        let reason = check(&mut w, &l, 150 << 20, 0.0);
        assert!(reason.is_some_and(|r| r.contains("150 MiB") && r.contains("max_rss_mb = 100")));
        w.reported = true;
        assert_eq!(check(&mut w, &l, 150 << 20, 0.0), None);
    }

    #[test]
    fn cpu_is_judged_over_a_full_window() {
        let mut w = Watched::default();
        let l = limits(None, Some(80.0));
        assert_eq!(
            check(&mut w, &l, 0, 100.0),
            None,
            "one sample is not a window"
        );
        std::thread::sleep(Duration::from_millis(60));
        let reason = check(&mut w, &l, 0, 100.0);
        assert!(reason.is_some_and(|r| r.contains("max_cpu_percent = 80")));
    }
}
