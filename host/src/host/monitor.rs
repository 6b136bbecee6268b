//! Measuring the plugins' memory and CPU from /proc, and telling a plugin's supervisor
//! when it crosses `max_rss_mb` or `max_cpu_percent`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::calls::handle::PluginHandle;
use crate::calls::plugin_set::PluginSet;
use crate::config::Limits;
use crate::observe::metrics::Metrics;
use crate::observe::proc_stat::{self, Units};

/// The shortest interval between samples: CPU use over less is mostly noise.
const MIN_INTERVAL: Duration = Duration::from_millis(200);

/// What the monitor remembers about one plugin's current process.
#[derive(Default)]
struct Watched {
    pid: Option<u32>,
    /// When this process was first measured.
    since: Option<Instant>,
    cpu: VecDeque<(Instant, f32)>,
    /// Set once a limit was reported for this pid, so it is reported once.
    reported: bool,
    /// The last sample's CPU time, and when it was read.
    last: Option<(Duration, Instant)>,
}

/// Starts the monitor thread; it ends when `alive` can no longer be upgraded (the host
/// is gone). A thread, not a task: /proc is read synchronously.
pub(crate) fn spawn(
    plugins: PluginSet,
    metrics: Arc<Metrics>,
    interval: Duration,
    alive: Weak<()>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("baton-resources".into())
        .spawn(move || {
            let interval = interval.max(MIN_INTERVAL);
            let units = Units::of_this_system();
            let mut watched: HashMap<String, Watched> = HashMap::new();
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
                    .filter_map(|h| h.pid().map(|pid| (h.clone(), pid)))
                    .collect();
                watched.retain(|name, _| current.iter().any(|(h, _)| h.name() == name));
                for (handle, pid) in current {
                    // Gone since it was listed: the supervisor hears of it on its own.
                    let Ok(usage) = proc_stat::usage(pid, units) else {
                        continue;
                    };
                    let now = Instant::now();
                    let w = watched.entry(handle.name().to_owned()).or_default();
                    if w.pid != Some(pid) {
                        *w = Watched {
                            pid: Some(pid),
                            ..Watched::default()
                        };
                    }
                    // Percent of one core since the last sample (0 at the first).
                    let cpu = w.last.map_or(0.0, |(cpu, at)| {
                        let busy = usage.cpu.saturating_sub(cpu).as_secs_f64();
                        let wall = now.duration_since(at).as_secs_f64();
                        if wall > 0.0 {
                            (busy / wall * 100.0) as f32
                        } else {
                            0.0
                        }
                    });
                    w.last = Some((usage.cpu, now));
                    let rss = usage.rss_bytes;
                    handle.set_resources(pid, rss, cpu);
                    metrics.set_resources(handle.name(), rss, f64::from(cpu) / 100.0);
                    if let Some(reason) = check(w, &handle.limits(), rss, cpu) {
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
