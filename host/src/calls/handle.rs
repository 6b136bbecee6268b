//! [`PluginHandle`]: the cheap, cloneable way to call a plugin. A call reads the current
//! route (a `watch` borrow, no lock held across an await), waits while the plugin is
//! starting or restarting, and fails fast, naming the plugin, when it has failed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_proto::plugin::InvokeRequest;
use bytes::Bytes;
use tokio::sync::{oneshot, watch};
use tonic::{Code, Status};

use crate::calls::command::{Command, CommandSender};
use crate::calls::route::{InFlight, Live, Route};
use crate::config::{Limits, PluginConfig};
use crate::launch::{LogLine, LogRing};
use crate::observe::metrics::CallMetrics;
use crate::observe::status::PluginStatus;

mod operator;

/// How long a failed call waits to learn whether the process died, to say so.
const EXIT_GRACE: Duration = Duration::from_millis(500);

/// One call waiting for the plugin to serve; counted out when dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn join(inner: &'a Inner) -> Result<Self, Status> {
        let now = inner.waiting.fetch_add(1, Ordering::Relaxed) + 1;
        let waiting = Waiting(&inner.waiting);
        let max = inner.max_waiting.load(Ordering::Relaxed);
        if now > max {
            return Err(Status::resource_exhausted(format!(
                "plugin {} is not serving and {max} calls already wait for it (max_held_calls)",
                inner.name
            )));
        }
        Ok(waiting)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How a failed call ends.
enum Failure {
    /// The plugin never received the call; it may go to the next generation.
    NeverSent,
    /// The caller gets this status.
    Status(Status),
}

/// Whether the transport failed before the request could reach the plugin. Four
/// things prove that: a failed connect; the transport finding the connection gone
/// before the request was handed to it ([`NotSent`](crate::launch::NotSent), or hyper's
/// unsent request on a tonic channel); a unary request whose end the plugin's socket
/// still held unread when the plugin died (also `NotSent`: see the transport's
/// `unread.rs`); and an HTTP/2 REFUSED_STREAM, which by the protocol's rules means the
/// peer processed nothing. Any other reset or broken pipe on an open connection proves
/// nothing (the plugin may have run the call before dying), so such calls are not
/// retried.
pub(crate) fn never_sent(status: &Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<crate::launch::NotSent>() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
            )
        {
            return true;
        }
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_canceled)
        {
            return true;
        }
        if e.downcast_ref::<h2::Error>()
            .is_some_and(|h2| h2.reason() == Some(h2::Reason::REFUSED_STREAM))
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// Counts a call in the metrics when it ends, as `Cancelled` if the caller dropped it.
struct Counted<'a> {
    metrics: &'a CallMetrics,
    method: &'a str,
    started: std::time::Instant,
    code: Code,
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.metrics
            .record(self.method, self.code, self.started.elapsed());
    }
}

/// A successful call's result.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The method's output.
    pub payload: Bytes,
    /// The generation that served the call.
    pub generation: u64,
}

/// A cheap, cloneable handle to one plugin.
#[derive(Clone)]
pub struct PluginHandle {
    inner: Arc<Inner>,
}

struct Inner {
    name: Arc<str>,
    /// Calls waiting for a generation to serve (held during a handover or restart).
    waiting: AtomicUsize,
    /// Past this many waiting calls, more are refused rather than queued without end.
    /// This and the next two are the config's, replaced in place by a config reload.
    max_waiting: AtomicUsize,
    /// The plugin's `max_message_bytes`.
    max_message_bytes: AtomicUsize,
    call_timeout_ms: AtomicU64,
    /// Its resource limits, as the monitor checks them.
    limits: Mutex<Limits>,
    calls: AtomicU64,
    errors: AtomicU64,
    route: watch::Receiver<Route>,
    status: Arc<Mutex<PluginStatus>>,
    commands: CommandSender,
    logs: LogRing,
    metrics: CallMetrics,
}

impl std::fmt::Debug for PluginHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHandle")
            .field("name", &self.inner.name)
            .finish()
    }
}

impl PluginHandle {
    pub(crate) fn new(
        name: Arc<str>,
        config: &PluginConfig,
        route: watch::Receiver<Route>,
        status: Arc<Mutex<PluginStatus>>,
        commands: CommandSender,
        logs: LogRing,
        metrics: CallMetrics,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                name,
                waiting: AtomicUsize::new(0),
                max_waiting: AtomicUsize::new(config.max_held_calls),
                max_message_bytes: AtomicUsize::new(config.max_message_bytes),
                call_timeout_ms: AtomicU64::new(config.call_timeout_ms),
                limits: Mutex::new(Limits::of(config)),
                calls: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                route,
                status,
                commands,
                logs,
                metrics,
            }),
        }
    }

    /// The plugin's configured name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Calls `method` with `payload` and returns the plugin's answer. Errors are gRPC
    /// statuses whose message names the plugin.
    pub async fn invoke(&self, method: &str, payload: impl Into<Bytes>) -> Result<Bytes, Status> {
        self.call(method, payload.into(), HashMap::new())
            .await
            .map(|r| r.payload)
    }

    /// Like [`invoke`](Self::invoke), with caller metadata, returning the serving generation too.
    pub async fn call(
        &self,
        method: &str,
        payload: Bytes,
        metadata: HashMap<String, String>,
    ) -> Result<Reply, Status> {
        let mut counted = Counted {
            metrics: &self.inner.metrics,
            method,
            started: std::time::Instant::now(),
            code: Code::Cancelled,
        };
        let result = self.route_call(method, payload, metadata).await;
        counted.code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
        self.count(result.is_err());
        result
    }

    fn count(&self, failed: bool) {
        self.inner.calls.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.inner.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The OUT_OF_RANGE a call with a payload of `bytes` gets, naming the plugin, the
    /// size, the limit and its config key.
    pub(crate) fn oversized(&self, method: &str, bytes: usize) -> Status {
        Status::out_of_range(format!(
            "plugin {}: the payload of {} is {bytes} bytes, over max_message_bytes = {} \
             (the plugin's limit in the host's config)",
            self.inner.name,
            crate::io::printable::quoted(method, 64),
            self.max_message_bytes()
        ))
    }

    /// The OUT_OF_RANGE a caller gets when the plugin's answer to `path` holds a
    /// message of `bytes`, over the plugin's limit.
    pub(crate) fn oversized_answer(&self, path: &str, bytes: usize) -> Status {
        Status::out_of_range(format!(
            "plugin {}: its answer to {path:?} holds a message of {bytes} bytes, over \
             max_message_bytes = {} (the plugin's limit in the host's config)",
            self.inner.name,
            self.max_message_bytes()
        ))
    }

    /// Refuses, and counts as a failed call, a call the control API judged too large
    /// before reading all of it (`bytes` is its payload's size, or the request's when
    /// the payload's could not be seen).
    pub(crate) fn refuse_oversized(&self, method: &str, bytes: usize) -> Status {
        let status = self.oversized(method, bytes);
        self.inner
            .metrics
            .record(method, status.code(), std::time::Duration::ZERO);
        self.count(true);
        status
    }

    async fn route_call(
        &self,
        method: &str,
        payload: Bytes,
        metadata: HashMap<String, String>,
    ) -> Result<Reply, Status> {
        // tonic reports an oversized request as a broken HTTP/2 stream; say it plainly.
        // The allowance covers the method name, metadata and protobuf framing.
        let allowance = method.len()
            + metadata
                .iter()
                .map(|(k, v)| k.len() + v.len() + 8)
                .sum::<usize>()
            + 64;
        if payload.len() + allowance > self.max_message_bytes() {
            return Err(self.oversized(method, payload.len()));
        }
        let deadline = tokio::time::Instant::now() + self.call_timeout();
        let mut dead_generation = None;
        loop {
            let live = self.serving(deadline, dead_generation).await?;
            let request = InvokeRequest {
                method: method.to_owned(),
                payload: payload.clone(),
                metadata: metadata.clone(),
            };
            let timeout = deadline.saturating_duration_since(tokio::time::Instant::now());
            let call = live
                .transport
                .invoke(&request, timeout, self.max_message_bytes());
            let outcome = tokio::time::timeout_at(deadline, call).await;
            // The call is over: a handover waiting for this generation to drain may go on.
            let live = live.leave();
            return match outcome {
                Ok(Ok(response)) => Ok(Reply {
                    payload: response.payload,
                    generation: live.generation,
                }),
                Ok(Err(status)) => match self.explain(&live, method, status).await {
                    Failure::NeverSent => {
                        // The process was gone before the call reached it: the call
                        // waits for the next generation like any call made during a restart.
                        dead_generation = Some(live.generation);
                        continue;
                    }
                    Failure::Status(status) => Err(status),
                },
                Err(_) => Err(Status::deadline_exceeded(format!(
                    "plugin {} did not answer {} within {:?}",
                    self.inner.name,
                    crate::io::printable::quoted(method, 64),
                    self.call_timeout()
                ))),
            };
        }
    }

    /// The serving generation, waiting (until `deadline`) while one is on its way.
    /// A generation known to be dead (`skip`) counts as not serving yet.
    pub(crate) async fn serving(
        &self,
        deadline: tokio::time::Instant,
        skip: Option<u64>,
    ) -> Result<InFlight, Status> {
        // Fast path: one borrow, one atomic increment, one Arc clone.
        if let Route::Serving(live) = &*self.inner.route.borrow()
            && Some(live.generation) != skip
        {
            return Ok(live.enter());
        }
        let _waiting = Waiting::join(&self.inner)?;
        let mut route = self.inner.route.clone();
        loop {
            let waiting_for = match &*route.borrow_and_update() {
                Route::Serving(live) if Some(live.generation) != skip => return Ok(live.enter()),
                Route::Serving(live) => {
                    format!("to replace generation {}, which exited", live.generation)
                }
                Route::Refusing { reason } => return Err(Status::unavailable(reason.to_string())),
                Route::Stopped => {
                    return Err(Status::unavailable(format!(
                        "plugin {} is stopped",
                        self.inner.name
                    )));
                }
                Route::Starting => "to start".to_owned(),
                Route::Waiting { reason } => format!("to start: {reason}"),
                Route::Held => "to finish a handover".to_owned(),
                Route::Restarting { reason } => format!("to restart after: {reason}"),
            };
            match tokio::time::timeout_at(deadline, route.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    return Err(Status::unavailable(format!(
                        "plugin {} is stopped",
                        self.inner.name
                    )));
                }
                Err(_) => {
                    return Err(Status::unavailable(format!(
                        "plugin {} is not serving: waited {:?} for it {waiting_for}",
                        self.inner.name,
                        self.call_timeout()
                    )));
                }
            }
        }
    }

    /// The generation serving now, if one is (not counted as a call): for messages
    /// that say what it serves.
    pub(crate) fn serving_now(&self) -> Option<Arc<Live>> {
        match &*self.inner.route.borrow() {
            Route::Serving(live) => Some(live.clone()),
            _ => None,
        }
    }

    /// How long a call waits for the plugin to serve.
    pub(crate) fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.inner.call_timeout_ms.load(Ordering::Relaxed))
    }

    /// Counts an application-service call that ended with `code`, by its gRPC path.
    pub(crate) fn record_typed(&self, path: &str, code: Code, started: std::time::Instant) {
        self.inner.metrics.record(path, code, started.elapsed());
        self.count(code != Code::Ok);
    }

    /// Names the plugin in a failed application-service call's status, and says so when
    /// the process died under it.
    pub(crate) async fn explain_typed(&self, live: &Live, path: &str, status: Status) -> Status {
        match self.explain(live, path, status).await {
            Failure::Status(status) => status,
            Failure::NeverSent => Status::unavailable(format!(
                "plugin {} (generation {}, pid {}) was gone before the call to {path} reached it",
                self.inner.name, live.generation, live.pid
            )),
        }
    }

    /// The status a caller gets when a response stream from `live` breaks: UNAVAILABLE
    /// (the stream may be reopened), saying how the process ended if it did.
    pub(crate) async fn explain_stream(&self, live: &Live, path: &str, status: Status) -> Status {
        let named = self.explain_typed(live, path, status).await;
        if named.code() == Code::Unavailable {
            return named;
        }
        Status::unavailable(format!(
            "plugin {} (generation {}, pid {}) broke off the stream of {path}: {}",
            self.inner.name,
            live.generation,
            live.pid,
            named.message()
        ))
    }

    /// How `live`'s process ended, waiting briefly (a failed call usually learns of a
    /// death before the supervisor does); `None` while it still runs.
    async fn exit_of(&self, live: &Live) -> Option<Option<String>> {
        let mut exited = live.exited.clone();
        let died = tokio::time::timeout(EXIT_GRACE, exited.wait_for(|e| e.is_some())).await;
        match died {
            Ok(Ok(how)) => Some(how.clone()),
            _ => None,
        }
    }

    /// Whether `live`'s process is dead (or dies within a moment).
    pub(crate) async fn died(&self, live: &Live) -> bool {
        self.exit_of(live).await.is_some()
    }

    /// Turns a failed call's status into one that names the plugin, and says so when
    /// the process died under the call.
    async fn explain(&self, live: &Live, method: &str, status: Status) -> Failure {
        let transport_like = matches!(
            status.code(),
            Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
        );
        if transport_like && let Some(how) = self.exit_of(live).await {
            if never_sent(&status) {
                return Failure::NeverSent;
            }
            return Failure::Status(Status::unavailable(format!(
                "plugin {} (generation {}, pid {}) exited during the call to {}: {}",
                self.inner.name,
                live.generation,
                live.pid,
                crate::io::printable::quoted(method, 64),
                how.as_deref().unwrap_or("unknown status")
            )));
        }
        Failure::Status(Status::new(
            status.code(),
            format!("plugin {}: {}", self.inner.name, status.message()),
        ))
    }

    /// What the host knows about the plugin now.
    pub fn status(&self) -> PluginStatus {
        let mut status = self
            .inner
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        status.calls = self.inner.calls.load(Ordering::Relaxed);
        status.errors = self.inner.errors.load(Ordering::Relaxed);
        status.p99_latency = self.inner.metrics.recent_p99();
        status
    }

    /// The serving process's pid, if one serves (without the rest of [`status`](Self::status)).
    pub(crate) fn pid(&self) -> Option<u32> {
        self.inner
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pid
    }

    /// Records what the resource monitor measured for the serving process `pid`.
    pub(crate) fn set_resources(&self, pid: u32, rss_bytes: u64, cpu_percent: f32) {
        let mut status = self.inner.status.lock().unwrap_or_else(|p| p.into_inner());
        if status.pid == Some(pid) {
            status.rss_bytes = Some(rss_bytes);
            status.cpu_percent = Some(cpu_percent);
        }
    }

    /// Tells the supervisor that process `pid` crossed a limit; never waits.
    pub(crate) fn over_limit(&self, pid: u32, reason: String) {
        let _ = self
            .inner
            .commands
            .try_send(Command::OverLimit { pid, reason });
    }

    /// Waits until the plugin serves, or `timeout` passes; returns the serving generation.
    pub async fn ready(&self, timeout: Duration) -> Result<u64, Status> {
        let live = self
            .serving(tokio::time::Instant::now() + timeout, None)
            .await?;
        Ok(live.generation)
    }

    /// Recent lines of the plugin's output, oldest first.
    pub fn logs(&self) -> Vec<LogLine> {
        self.inner.logs.lines()
    }

    /// Recent lines, and a feed of the lines that come after them.
    pub fn follow_logs(&self) -> (Vec<LogLine>, tokio::sync::broadcast::Receiver<LogLine>) {
        self.inner.logs.follow()
    }

    /// The largest message the plugin's calls may carry.
    pub fn max_message_bytes(&self) -> usize {
        self.inner.max_message_bytes.load(Ordering::Relaxed)
    }

    /// Hands the plugin over to a fresh process (its state kept), even if nothing
    /// changed; returns the new generation, or why the old one still serves. Revives a
    /// failed plugin.
    pub async fn reload(&self) -> Result<u64, String> {
        let (reply, answer) = oneshot::channel();
        let gone = || format!("plugin {} is stopped", self.inner.name);
        self.inner
            .commands
            .send(Command::Reload(reply))
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Stops the plugin for good and waits until its process is reaped.
    pub async fn stop(&self) {
        let (ack, done) = oneshot::channel();
        if self.inner.commands.send(Command::Stop(ack)).await.is_ok() {
            let _ = done.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connect_counts_as_never_sent() {
        let dir = std::env::temp_dir().join(format!("baton-never-sent-{}", std::process::id()));
        let path = dir.join("gone.sock");
        let channel = tonic::transport::Endpoint::from_static("http://x")
            .connect_with_connector_lazy(tower::service_fn(move |_: tonic::transport::Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }));
        let mut client = baton_proto::plugin::plugin_client::PluginClient::new(channel);
        let status = client
            .describe(baton_proto::plugin::DescribeRequest {})
            .await
            .expect_err("nothing listens there");
        assert!(never_sent(&status), "{status:?}");
        assert!(!never_sent(&Status::unavailable("the plugin said so")));
    }
}
