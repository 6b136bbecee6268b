//! Prometheus metrics: calls by plugin, method and gRPC code, call latency, and the
//! plugins' lifecycle (reloads, rollbacks, restarts, crashes, handover times), served as
//! text on `GET /metrics` when `metrics_addr` is set, and by [`Metrics::text`] always.
//!
//! Lifecycle metrics are fed from the host's event stream, so the supervisor knows
//! nothing of them; calls are counted by [`PluginHandle::call`](crate::PluginHandle::call).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

mod calls;
mod endpoint;
mod lifecycle;

pub(crate) use calls::CallMetrics;
pub(crate) use endpoint::{bind, serve};

/// Bucket bounds in seconds, 50 µs to 10 s: a call over a local socket takes tens of
/// microseconds, a handover with a large state or a slow start seconds.
const BUCKETS: [f64; 17] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabel {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    plugin: String,
    method: String,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RollbackLabels {
    plugin: String,
    reason: &'static str,
}

/// When state moved in a handover: `serving` (pre-copy rounds) or `held` (calls held).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateMovedLabels {
    plugin: String,
    phase: &'static str,
}

type Histograms = Family<PluginLabel, Histogram, fn() -> Histogram>;

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// Every metric a host keeps, in one registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    call_duration: Histograms,
    reloads: Family<PluginLabel, Counter>,
    rollbacks: Family<RollbackLabels, Counter>,
    restarts: Family<PluginLabel, Counter>,
    crashes: Family<PluginLabel, Counter>,
    handover_hold: Histograms,
    handover_duration: Histograms,
    handover_state: Family<StateMovedLabels, Counter>,
    rss: Family<PluginLabel, Gauge>,
    cpu: Family<PluginLabel, Gauge<f64, AtomicU64>>,
    generation: Family<PluginLabel, Gauge>,
    up: Family<PluginLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// An empty set of metrics, every family registered.
    pub fn new() -> Self {
        let histograms = || Histograms::new_with_constructor(histogram);
        let mut m = Self {
            registry: Registry::default(),
            calls: Family::default(),
            call_duration: histograms(),
            reloads: Family::default(),
            rollbacks: Family::default(),
            restarts: Family::default(),
            crashes: Family::default(),
            handover_hold: histograms(),
            handover_duration: histograms(),
            handover_state: Family::default(),
            rss: Family::default(),
            cpu: Family::default(),
            generation: Family::default(),
            up: Family::default(),
        };
        let r = &mut m.registry;
        // Counters get `_total` and unit-bearing metrics their unit appended on encoding.
        r.register(
            "baton_calls",
            "Calls to plugins through the host, by plugin, method and gRPC code; methods past the first 64 of a plugin count as \"other\"",
            m.calls.clone(),
        );
        r.register_with_unit(
            "baton_call_duration",
            "Call latency as callers see it, including any wait for a start, restart or handover",
            Unit::Seconds,
            m.call_duration.clone(),
        );
        r.register(
            "baton_reloads",
            "Completed handovers to a new generation",
            m.reloads.clone(),
        );
        r.register(
            "baton_rollbacks",
            "Handovers given up, the old generation serving on, by reason",
            m.rollbacks.clone(),
        );
        r.register(
            "baton_restarts",
            "Processes brought back to serving after a crash or a failed start",
            m.restarts.clone(),
        );
        r.register(
            "baton_crashes",
            "Serving processes that exited unasked",
            m.crashes.clone(),
        );
        r.register_with_unit(
            "baton_handover_hold",
            "How long calls were held during a handover",
            Unit::Seconds,
            m.handover_hold.clone(),
        );
        r.register_with_unit(
            "baton_handover_duration",
            "Whole handovers, from starting the new process to switching calls to it",
            Unit::Seconds,
            m.handover_duration.clone(),
        );
        r.register_with_unit(
            "baton_handover_state",
            "State moved in handovers, by phase: \"serving\" (copied by pre-copy rounds while the old generation served) or \"held\" (moved while calls were held)",
            Unit::Bytes,
            m.handover_state.clone(),
        );
        r.register_with_unit(
            "baton_plugin_rss",
            "Resident memory of the serving process",
            Unit::Bytes,
            m.rss.clone(),
        );
        r.register_with_unit(
            "baton_plugin_cpu",
            "CPU time of the serving process per second of wall time (1 = one core)",
            Unit::Other("ratio".into()),
            m.cpu.clone(),
        );
        r.register(
            "baton_plugin_generation",
            "The serving generation",
            m.generation.clone(),
        );
        r.register(
            "baton_plugin_up",
            "1 while a process serves the plugin's calls, else 0",
            m.up.clone(),
        );
        m
    }

    /// Every metric in the Prometheus text format (version 0.0.4).
    pub fn text(&self) -> String {
        let mut out = String::new();
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        {
            tracing::error!("cannot encode the metrics: {e}");
        }
        out
    }

    /// Every metric in the OpenMetrics text format, ending in `# EOF`.
    pub fn openmetrics_text(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!("cannot encode the metrics: {e}");
        }
        out
    }

    /// Records a plugin's serving process's resident memory and CPU use (CPU seconds
    /// per second, so 2.0 is two busy cores).
    pub fn set_resources(&self, plugin: &str, rss_bytes: u64, cpu_ratio: f64) {
        let label = plugin_label(plugin);
        self.rss
            .get_or_create(&label)
            .set(i64::try_from(rss_bytes).unwrap_or(i64::MAX));
        self.cpu.get_or_create(&label).set(cpu_ratio);
    }
}

fn plugin_label(plugin: &str) -> PluginLabel {
    PluginLabel {
        plugin: plugin.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tonic::Code;

    use super::*;
    use crate::observe::events::Event;

    /// The value of the sample line `name{labels}`, if exported.
    pub(super) fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
    }

    pub(super) fn event(plugin: &str, generation: u64, kind: &'static str, message: &str) -> Event {
        Event::new(plugin, generation, kind, message.to_owned())
    }

    #[test]
    fn resources_are_set_per_plugin() {
        let m = Metrics::new();
        m.set_resources("counter", 12 << 20, 0.25);
        m.set_resources("counter", 13 << 20, 1.5);
        m.set_resources("echo", u64::MAX, 0.0);
        let text = m.text();
        assert_eq!(
            sample(&text, "baton_plugin_rss_bytes{plugin=\"counter\"}"),
            Some((13 << 20) as f64),
            "{text}"
        );
        assert_eq!(
            sample(&text, "baton_plugin_cpu_ratio{plugin=\"counter\"}"),
            Some(1.5),
            "{text}"
        );
        assert_eq!(
            sample(&text, "baton_plugin_rss_bytes{plugin=\"echo\"}"),
            Some(i64::MAX as f64)
        );
    }

    #[test]
    fn both_text_formats_name_every_family() {
        let m = Metrics::new();
        m.add_plugin("p")
            .record("m", Code::Unavailable, Duration::ZERO);
        m.set_resources("p", 1, 0.5);
        m.observe(&event("p", 2, "handover_done", ""));
        m.observe(&event("p", 1, "rollback", ""));
        let prometheus = m.text();
        let openmetrics = m.openmetrics_text();
        assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
        for name in [
            "baton_calls_total",
            "baton_call_duration_seconds",
            "baton_reloads_total",
            "baton_rollbacks_total",
            "baton_restarts_total",
            "baton_crashes_total",
            "baton_handover_hold_seconds",
            "baton_handover_duration_seconds",
            "baton_handover_state_bytes_total",
            "baton_plugin_rss_bytes",
            "baton_plugin_cpu_ratio",
            "baton_plugin_generation",
            "baton_plugin_up",
        ] {
            assert!(
                prometheus.contains(&format!("# TYPE {name} ")),
                "{name}: {prometheus}"
            );
            let family = name.strip_suffix("_total").unwrap_or(name);
            assert!(
                openmetrics.contains(&format!("# TYPE {family} ")),
                "{name}: {openmetrics}"
            );
        }
    }
}
