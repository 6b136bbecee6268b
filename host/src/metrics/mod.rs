//! Prometheus metrics: calls by plugin, method and gRPC code, call latency, and the
//! plugins' lifecycle (reloads, rollbacks, restarts, crashes, handover times), served as
//! text on `GET /metrics` when `metrics_addr` is set, and by [`Metrics::text`] always.
//!
//! Lifecycle metrics are fed from the host's event stream, so the supervisor knows
//! nothing of them; calls are counted by [`PluginHandle::call`](crate::PluginHandle::call).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, header};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tonic::Code;

use crate::events::Event;

/// Distinct `method` label values kept per plugin. Method names come from callers, and
/// every label value is kept for the host's lifetime, so the rest count as `other`.
pub const MAX_METHODS_PER_PLUGIN: usize = 64;
/// Longer method names count as `other`, for the same reason.
pub const MAX_METHOD_LABEL_BYTES: usize = 128;
/// The `method` label of calls past those limits.
pub const OTHER_METHOD: &str = "other";

/// Bucket bounds in seconds, 50 µs to 10 s: a call over a local socket takes tens of
/// microseconds, a handover with a large state or a slow start seconds.
const BUCKETS: [f64; 17] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

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

/// Connections the HTTP endpoint serves at once; more wait to be accepted.
const MAX_HTTP_CONNECTIONS: usize = 16;

/// The OpenMetrics text format, for scrapers that ask for it.
const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

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
        }
    }

    /// Updates the lifecycle metrics for one event.
    pub fn observe(&self, event: &Event) {
        let label = plugin_label(&event.plugin);
        let generation = i64::try_from(event.generation).unwrap_or(i64::MAX);
        match event.kind.as_ref() {
            "started" | "restarted" => {
                if event.kind == "restarted" {
                    self.restarts.get_or_create(&label).inc();
                }
                self.generation.get_or_create(&label).set(generation);
                self.up.get_or_create(&label).set(1);
            }
            "handover_done" => {
                self.reloads.get_or_create(&label).inc();
                self.generation.get_or_create(&label).set(generation);
                self.up.get_or_create(&label).set(1);
                let seconds = |us: u64| Duration::from_micros(us).as_secs_f64();
                self.handover_hold
                    .get_or_create(&label)
                    .observe(seconds(event.hold_us));
                self.handover_duration
                    .get_or_create(&label)
                    .observe(seconds(event.duration_us));
            }
            "rollback" => {
                self.rollbacks
                    .get_or_create(&RollbackLabels {
                        plugin: label.plugin,
                        reason: rollback_reason(&event.message),
                    })
                    .inc();
            }
            "crashed" => {
                self.crashes.get_or_create(&label).inc();
                self.up.get_or_create(&label).set(0);
            }
            "start_failed" | "failed" | "stopped" => {
                self.up.get_or_create(&label).set(0);
            }
            _ => {}
        }
    }

    /// Feeds the lifecycle metrics from `events` until the stream closes.
    pub(crate) fn follow(
        self: Arc<Self>,
        mut events: broadcast::Receiver<Event>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(event) => self.observe(&event),
                    Err(broadcast::error::RecvError::Lagged(n)) => tracing::warn!(
                        "the metrics missed {n} lifecycle events; their counters are short by as many"
                    ),
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        })
    }
}

fn plugin_label(plugin: &str) -> PluginLabel {
    PluginLabel {
        plugin: plugin.to_owned(),
    }
}

/// A short, stable category for a rollback, from its message. Only the host's own words
/// are looked at: a plugin's output quoted in the message (its stderr, a bad handshake
/// line) could say anything.
pub fn rollback_reason(message: &str) -> &'static str {
    let reason = message
        .split_once("keeps serving: ")
        .map_or(message, |(_, r)| r);
    // "generation N failed to start: ...", "generation N refused the state ...".
    let after_generation = reason
        .strip_prefix("generation ")
        .and_then(|r| r.split_once(' '))
        .map(|(_, rest)| rest);
    match after_generation {
        Some(rest) => {
            if let Some(why) = rest.strip_prefix("failed to start: ") {
                if why.starts_with("did not report SERVING") {
                    "health"
                } else if why.starts_with("exited during start-up") || why.starts_with("cannot run")
                {
                    "start_failed"
                } else {
                    // A bad or missing handshake line, Describe failing or lying.
                    "handshake"
                }
            } else if rest.starts_with("refused the state") {
                "restore_refused"
            } else if rest.starts_with("exited during the handover") {
                "crashed"
            } else if rest.starts_with("did not start within the handover timeout") {
                "timeout"
            } else {
                "other"
            }
        }
        None if reason.starts_with("the handover outran its timeout") => "timeout",
        None => "other",
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

/// Serves `GET /metrics` on `listener` until the task is aborted, which also ends the
/// connections it serves.
pub(crate) fn serve(listener: TcpListener, metrics: Arc<Metrics>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            while connections.try_join_next().is_some() {}
            if connections.len() >= MAX_HTTP_CONNECTIONS {
                connections.join_next().await;
                continue;
            }
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, most likely: wait instead of spinning.
                    tracing::warn!("metrics endpoint: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let metrics = metrics.clone();
            connections.spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let response = respond(&metrics, &request);
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
                let served = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
                if let Err(e) = served {
                    tracing::debug!("metrics endpoint: connection ended: {e}");
                }
            });
        }
    })
}

/// Binds the metrics endpoint's address; returns the listener and the bound address.
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    Ok((listener, bound))
}

fn respond<B>(metrics: &Metrics, request: &Request<B>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = header::HeaderValue::from_str(content_type) {
            response.headers_mut().insert(header::CONTENT_TYPE, value);
        }
        response
    };
    if request.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: metrics are at /metrics\n".into(),
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET\n".into(),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let openmetrics = request
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    if openmetrics {
        reply(
            StatusCode::OK,
            OPENMETRICS_CONTENT_TYPE,
            metrics.openmetrics_text(),
        )
    } else {
        reply(
            StatusCode::OK,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            metrics.text(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample line `name{labels}`, if exported.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
    }

    fn event(plugin: &str, generation: u64, kind: &'static str, message: &str) -> Event {
        Event::new(plugin, generation, kind, message.to_owned())
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

    #[test]
    fn lifecycle_events_feed_the_counters_and_gauges() {
        let m = Metrics::new();
        m.add_plugin("counter");
        let series = |name: &str| format!("{name}{{plugin=\"counter\"}}");
        assert_eq!(sample(&m.text(), &series("baton_reloads_total")), Some(0.0));

        m.observe(&event("counter", 1, "started", "up"));
        let mut done = event("counter", 2, "handover_done", "done");
        done.hold_us = 1_500;
        done.duration_us = 40_000;
        m.observe(&done);
        m.observe(&event("counter", 2, "crashed", "killed"));
        let text = m.text();
        assert_eq!(sample(&text, &series("baton_plugin_up")), Some(0.0));
        m.observe(&event("counter", 3, "restarted", "back"));
        m.observe(&event(
            "counter",
            3,
            "rollback",
            "plugin counter rolled back, the old generation keeps serving: generation 4 refused the state (InvalidArgument): unknown schema 9",
        ));

        let text = m.text();
        assert_eq!(sample(&text, &series("baton_reloads_total")), Some(1.0));
        assert_eq!(sample(&text, &series("baton_restarts_total")), Some(1.0));
        assert_eq!(sample(&text, &series("baton_crashes_total")), Some(1.0));
        assert_eq!(sample(&text, &series("baton_plugin_generation")), Some(3.0));
        assert_eq!(sample(&text, &series("baton_plugin_up")), Some(1.0));
        assert_eq!(
            sample(&text, &series("baton_handover_hold_seconds_sum")),
            Some(0.0015)
        );
        assert_eq!(
            sample(&text, &series("baton_handover_duration_seconds_sum")),
            Some(0.04)
        );
        assert_eq!(
            sample(
                &text,
                "baton_rollbacks_total{plugin=\"counter\",reason=\"restore_refused\"}"
            ),
            Some(1.0),
            "{text}"
        );
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
    fn rollback_messages_fall_into_stable_categories() {
        let rolled = |reason: &str| {
            rollback_reason(&format!(
                "plugin health rolled back, the old generation keeps serving: {reason}"
            ))
        };
        for (reason, category) in [
            (
                "generation 3 failed to start: exited during start-up (exit code 3); its stderr ended with: refused the state",
                "start_failed",
            ),
            (
                "generation 3 failed to start: cannot run /x/counter: No such file or directory",
                "start_failed",
            ),
            (
                "generation 3 failed to start: printed `hello` on stdout where the handshake line `baton|1|unix|/s` was expected",
                "handshake",
            ),
            (
                "generation 3 failed to start: printed no handshake line (expected `baton|1|unix|/s`) within 5s",
                "handshake",
            ),
            (
                "generation 3 failed to start: Describe failed: boom (Internal)",
                "handshake",
            ),
            (
                "generation 3 failed to start: did not report SERVING for baton.plugin.v1.Plugin on its health service (last: no answer) within 5s",
                "health",
            ),
            (
                "generation 3 refused the state (InvalidArgument): unknown schema version 9",
                "restore_refused",
            ),
            (
                "generation 3 exited during the handover: killed by signal 9 (SIGKILL) (generation 3 stopped reading the state)",
                "crashed",
            ),
            (
                "generation 3 did not start within the handover timeout of 10s",
                "timeout",
            ),
            (
                "the handover outran its timeout of 10s (calls in flight on generation 2 did not finish, or the state transfer was too slow)",
                "timeout",
            ),
            ("Snapshot of generation 2 failed: unimplemented", "other"),
            ("no generation is serving", "other"),
        ] {
            assert_eq!(rolled(reason), category, "{reason}");
        }
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

    #[tokio::test]
    async fn the_endpoint_serves_metrics_and_nothing_else() -> Result<(), Box<dyn std::error::Error>>
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let metrics = Arc::new(Metrics::new());
        metrics
            .add_plugin("p")
            .record("m", Code::Ok, Duration::ZERO);
        let (listener, addr) = bind("127.0.0.1:0".parse()?).await?;
        let server = serve(listener, metrics);
        let get = |request: String| async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await?;
            stream.write_all(request.as_bytes()).await?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await?;
            Ok::<_, std::io::Error>(answer)
        };
        let ok =
            get("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into()).await?;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("content-type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            "{ok}"
        );
        assert!(
            ok.contains("baton_calls_total{plugin=\"p\",method=\"m\",code=\"Ok\"} 1\n"),
            "{ok}"
        );
        let om = get("GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\nConnection: close\r\n\r\n".into()).await?;
        assert!(om.contains(OPENMETRICS_CONTENT_TYPE), "{om}");
        assert!(om.ends_with("# EOF\n"), "{om}");
        let missing =
            get("GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into()).await?;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        let post = get(
            "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                .into(),
        )
        .await?;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        server.abort();
        Ok(())
    }
}
