//! Call metrics: how many calls each plugin got, by method and gRPC code, and how long
//! they took, counted per call without building a label set.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use tonic::Code;

use super::{CallLabels, Metrics, plugin_label};

/// Distinct `method` label values kept per plugin. Method names come from callers, and
/// every label value is kept for the host's lifetime, so the rest count as `other`.
pub const MAX_METHODS_PER_PLUGIN: usize = 64;
/// Longer method names count as `other`, for the same reason.
pub const MAX_METHOD_LABEL_BYTES: usize = 128;
/// The `method` label of calls past those limits.
pub const OTHER_METHOD: &str = "other";

/// gRPC code names as `tonic::Code`'s `Debug` spells them, indexed by code number.
const CODE_NAMES: [&str; 17] = [
    "Ok",
    "Cancelled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

impl Metrics {
    /// Makes a plugin's counters show from the start, at zero, so that rates over them
    /// work from the first scrape; returns the handle its calls are counted through.
    pub(crate) fn add_plugin(&self, plugin: &str) -> CallMetrics {
        let label = plugin_label(plugin);
        for family in [&self.reloads, &self.restarts, &self.crashes] {
            drop(family.get_or_create(&label));
        }
        for family in [&self.generation, &self.up] {
            drop(family.get_or_create(&label));
        }
        CallMetrics {
            plugin: plugin.to_owned(),
            calls: self.calls.clone(),
            duration: self.call_duration.get_or_create_owned(&label),
            methods: RwLock::new(HashMap::new()),
            other: MethodCalls::default(),
            recent: RecentLatencies::new(),
        }
    }
}

/// One plugin's call counters, resolved once per (method, code) so that a call does not
/// build a label set: a read lock, a hash of the method name and two atomic updates.
pub(crate) struct CallMetrics {
    plugin: String,
    calls: Family<CallLabels, Counter>,
    duration: Histogram,
    methods: RwLock<HashMap<Box<str>, MethodCalls>>,
    other: MethodCalls,
    recent: RecentLatencies,
}

/// One method's counters, by code number; made on the code's first use, so that only
/// codes that happened are exported.
#[derive(Default)]
struct MethodCalls {
    by_code: [OnceLock<Counter>; CODE_NAMES.len()],
}

impl CallMetrics {
    /// Counts one finished call.
    pub(crate) fn record(&self, method: &str, code: Code, elapsed: Duration) {
        self.duration.observe(elapsed.as_secs_f64());
        self.recent.record(elapsed);
        {
            let methods = self.methods.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(calls) = methods.get(method) {
                return self.count(calls, method, code);
            }
            if methods.len() >= MAX_METHODS_PER_PLUGIN || method.len() > MAX_METHOD_LABEL_BYTES {
                return self.count(&self.other, OTHER_METHOD, code);
            }
        }
        let mut methods = self.methods.write().unwrap_or_else(PoisonError::into_inner);
        // Another call may have filled the last place meanwhile.
        if methods.len() >= MAX_METHODS_PER_PLUGIN && !methods.contains_key(method) {
            return self.count(&self.other, OTHER_METHOD, code);
        }
        let calls = methods.entry(method.into()).or_default();
        self.count(calls, method, code);
    }

    /// The 99th percentile of the latency of the recent calls (see [`RecentLatencies`]).
    pub(crate) fn recent_p99(&self) -> Option<Duration> {
        self.recent.p99(Instant::now())
    }

    fn count(&self, calls: &MethodCalls, method: &str, code: Code) {
        let index = code as usize;
        let (Some(slot), Some(&name)) = (calls.by_code.get(index), CODE_NAMES.get(index)) else {
            return;
        };
        slot.get_or_init(|| {
            self.calls.get_or_create_owned(&CallLabels {
                plugin: self.plugin.clone(),
                method: method.to_owned(),
                code: name,
            })
        })
        .inc();
    }
}

/// Calls kept for a recent percentile: enough for a p99 that means something, small
/// enough to sort on each status request.
const RECENT_CALLS: usize = 1024;
/// Calls older than this do not count as recent, however few came since.
const RECENT_WINDOW: Duration = Duration::from_secs(60);

/// The latencies of a plugin's last [`RECENT_CALLS`] calls, each with the second it
/// ended in, for a p99 of what callers see now (the histogram holds every call since
/// the host started). A call costs one atomic increment and one store; the percentile
/// is worked out only when asked for.
pub(crate) struct RecentLatencies {
    epoch: Instant,
    next: AtomicUsize,
    /// The second since `epoch` (plus one: 0 is an empty slot) in the high half,
    /// microseconds (saturated) in the low half.
    slots: Box<[AtomicU64]>,
}

impl RecentLatencies {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            next: AtomicUsize::new(0),
            slots: (0..RECENT_CALLS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn second(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_secs() + 1
    }

    fn record(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros())
            .unwrap_or(u64::MAX)
            .min(u64::from(u32::MAX));
        let second = self.second(Instant::now()).min(u64::from(u32::MAX));
        let i = self.next.fetch_add(1, Ordering::Relaxed) % RECENT_CALLS;
        if let Some(slot) = self.slots.get(i) {
            slot.store(second << 32 | micros, Ordering::Relaxed);
        }
    }

    /// The 99th percentile (nearest rank) of the calls that ended within
    /// [`RECENT_WINDOW`] of `now`; `None` without any.
    fn p99(&self, now: Instant) -> Option<Duration> {
        let oldest = self.second(now).saturating_sub(RECENT_WINDOW.as_secs());
        let mut micros: Vec<u64> = self
            .slots
            .iter()
            .map(|slot| slot.load(Ordering::Relaxed))
            .filter(|&packed| packed != 0 && packed >> 32 >= oldest)
            .map(|packed| packed & u64::from(u32::MAX))
            .collect();
        if micros.is_empty() {
            return None;
        }
        let rank = (micros.len() * 99).div_ceil(100).max(1) - 1;
        let (_, p99, _) = micros.select_nth_unstable(rank);
        Some(Duration::from_micros(*p99))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::metrics::tests::sample;

    #[test]
    fn the_recent_p99_is_of_the_last_calls_within_the_window() {
        let recent = RecentLatencies::new();
        assert_eq!(recent.p99(Instant::now()), None);
        for ms in 1..=100 {
            recent.record(Duration::from_millis(ms));
        }
        assert_eq!(recent.p99(Instant::now()), Some(Duration::from_millis(99)));
        // Only the last RECENT_CALLS count: slow calls long gone are forgotten.
        for _ in 0..RECENT_CALLS {
            recent.record(Duration::from_micros(70));
        }
        assert_eq!(recent.p99(Instant::now()), Some(Duration::from_micros(70)));
        // And none older than the window, however few came since.
        let later = Instant::now() + RECENT_WINDOW + Duration::from_secs(2);
        assert_eq!(recent.p99(later), None);
    }

    #[test]
    fn code_names_match_tonic() {
        for (i, name) in CODE_NAMES.iter().enumerate() {
            assert_eq!(format!("{:?}", Code::from(i as i32)), *name);
            assert_eq!(Code::from(i as i32) as usize, i);
        }
    }

    #[test]
    fn calls_are_counted_by_method_and_code() {
        let m = Metrics::new();
        let calls = m.add_plugin("counter");
        for _ in 0..3 {
            calls.record("incr", Code::Ok, Duration::from_micros(80));
        }
        calls.record("incr", Code::InvalidArgument, Duration::from_micros(80));
        calls.record("nope", Code::Unimplemented, Duration::from_millis(2));
        let text = m.text();
        let calls_of = |method: &str, code: &str| {
            sample(
                &text,
                &format!(
                    "baton_calls_total{{plugin=\"counter\",method=\"{method}\",code=\"{code}\"}}"
                ),
            )
        };
        assert_eq!(calls_of("incr", "Ok"), Some(3.0), "{text}");
        assert_eq!(calls_of("incr", "InvalidArgument"), Some(1.0), "{text}");
        assert_eq!(calls_of("nope", "Unimplemented"), Some(1.0), "{text}");
        // Codes that never happened are not exported.
        assert_eq!(calls_of("nope", "Ok"), None, "{text}");
        assert_eq!(
            sample(
                &text,
                "baton_call_duration_seconds_count{plugin=\"counter\"}"
            ),
            Some(5.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                "baton_call_duration_seconds_bucket{le=\"0.0001\",plugin=\"counter\"}"
            )
            .or_else(|| sample(
                &text,
                "baton_call_duration_seconds_bucket{plugin=\"counter\",le=\"0.0001\"}"
            )),
            Some(4.0),
            "{text}"
        );
    }

    #[test]
    fn method_labels_are_capped_per_plugin() {
        let m = Metrics::new();
        let calls = m.add_plugin("p");
        let neighbour = m.add_plugin("q");
        for i in 0..MAX_METHODS_PER_PLUGIN + 10 {
            calls.record(&format!("m{i}"), Code::Ok, Duration::ZERO);
        }
        calls.record("m0", Code::Ok, Duration::ZERO);
        calls.record(
            &"x".repeat(MAX_METHOD_LABEL_BYTES + 1),
            Code::Ok,
            Duration::ZERO,
        );
        neighbour.record("long_but_allowed", Code::Ok, Duration::ZERO);
        let text = m.text();
        let series = |plugin: &str| {
            text.lines()
                .filter(|l| l.starts_with(&format!("baton_calls_total{{plugin=\"{plugin}\"")))
                .count()
        };
        assert_eq!(series("p"), MAX_METHODS_PER_PLUGIN + 1, "{text}");
        assert_eq!(series("q"), 1, "another plugin has its own budget");
        assert_eq!(
            sample(
                &text,
                "baton_calls_total{plugin=\"p\",method=\"m0\",code=\"Ok\"}"
            ),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &text,
                "baton_calls_total{plugin=\"p\",method=\"other\",code=\"Ok\"}"
            ),
            Some(11.0),
            "{text}"
        );
    }

    #[test]
    fn odd_method_names_are_escaped() {
        let m = Metrics::new();
        m.add_plugin("p")
            .record("a\"b\\c\nd", Code::Ok, Duration::ZERO);
        let text = m.text();
        assert!(
            text.contains(r#"method="a\"b\\c\nd""#),
            "label values must be escaped: {text}"
        );
        assert!(text.lines().all(|l| !l.starts_with('d')), "{text}");
    }
}
