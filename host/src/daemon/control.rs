//! The `Supervisor` gRPC service a daemon serves on its control socket, and the client
//! side `baton ctl` uses.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use baton_proto::host::supervisor_server::{Supervisor, SupervisorServer};
use baton_proto::host::{
    self as pb, EventsRequest, InvokeRequest, InvokeResponse, LifecycleRequest, LifecycleResponse,
    ListRequest, ListResponse, LogsRequest, ReloadConfigRequest, ReloadConfigResponse,
    ReloadRequest, ReloadResponse, StatusRequest,
};
use baton_transport::socket_file::{BoundSocket, Claimant, SocketPathError};
use tokio::net::UnixListener;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_stream::Stream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::calls::handle::PluginHandle;
use crate::calls::plugin_set::PluginSet;
use crate::daemon::invoke_size;
use crate::host::ConfigReload;
use crate::io::accept::Peer;
use crate::io::message_limit::MAX_MESSAGE_BYTES;
use crate::observe::events::{Event, EventSender};
use crate::observe::status::{PluginState, PluginStatus};
use crate::{Host, PluginState as State};

/// A config reload asked for through the control API: who asked (as the host
/// verified it), and where the outcome goes.
pub struct ReloadConfigCall {
    /// Who asked, e.g. "baton ctl (uid 1000, pid 4242)".
    pub by: String,
    /// Whether a config with no plugins may stop every plugin.
    pub allow_empty: bool,
    /// Whether only to say what would change.
    pub dry_run: bool,
    /// The outcome, or why the config was refused (its file:line:column message).
    pub reply: oneshot::Sender<Result<ConfigReload, String>>,
}

/// Ends the control API's endless streams (`Events`, and `Logs` with `follow`) when the
/// host stops: each sends what it has left and ends cleanly, so that a follower sees
/// the host stop rather than a connection dropped mid-stream.
#[derive(Clone)]
pub struct StreamsEnd(Arc<watch::Sender<bool>>);

impl StreamsEnd {
    /// Ends every open stream, and every stream opened from now on once it has sent
    /// what it was asked for.
    pub fn end(&self) {
        self.0.send_replace(true);
    }

    /// Resolves once the streams are to end (or nothing can end them any more).
    async fn ended(mut watching: watch::Receiver<bool>) {
        let _ = watching.wait_for(|ended| *ended).await;
    }
}

/// The control API over a host's plugins.
pub struct ControlService {
    plugins: PluginSet,
    /// Room for the largest payload any plugin takes, and the request around it.
    max_message_bytes: usize,
    events: EventSender,
    /// Where `ReloadConfig` calls go: the daemon, which owns the config file.
    reloads: Option<mpsc::Sender<ReloadConfigCall>>,
    streams_end: StreamsEnd,
}

impl ControlService {
    /// A control service for `host`'s plugins.
    pub fn new(host: &Host) -> Self {
        let largest = host
            .plugins()
            .values()
            .map(|h| h.max_message_bytes())
            .max()
            .unwrap_or(MAX_MESSAGE_BYTES);
        Self {
            plugins: host.plugin_set(),
            events: host.event_sender(),
            max_message_bytes: largest + invoke_size::ALLOWANCE,
            reloads: None,
            streams_end: StreamsEnd(Arc::new(watch::channel(false).0)),
        }
    }

    /// What ends this service's endless streams; the daemon uses it once its plugins
    /// have stopped (their last events sent).
    pub fn streams_end(&self) -> StreamsEnd {
        self.streams_end.clone()
    }

    /// Sends `ReloadConfig` calls to `reloads`; without it they are refused (a host
    /// embedded in a program has no config file of its own to read again).
    pub fn with_config_reloads(mut self, reloads: mpsc::Sender<ReloadConfigCall>) -> Self {
        self.reloads = Some(reloads);
        self
    }

    /// `Invoke`, served by hand: serve it beside [`into_server`](Self::into_server)
    /// (`baton_transport::ServerConfig::unary`), which it takes the calls of. It judges
    /// a request's size from its start, refusing one over its plugin's limit with
    /// OUT_OF_RANGE naming the plugin, and counted, however large it is.
    pub fn invoke_route(&self) -> baton_transport::UnaryRoute {
        crate::daemon::control_invoke::route(self.plugins.clone(), self.max_message_bytes)
    }

    /// The tonic service. It reads requests of at most [`MAX_CONTROL_REQUEST_BYTES`]:
    /// every method's request is small but `Invoke`'s, which belongs to
    /// [`invoke_route`](Self::invoke_route), to be served beside it. (tonic sets aside
    /// room for the length a request announces before its bytes come, so a larger limit
    /// would let a client make the daemon reserve that much per call for nothing.)
    pub fn into_server(self) -> SupervisorServer<Self> {
        let limit = self.max_message_bytes;
        SupervisorServer::new(self)
            .max_decoding_message_size(MAX_CONTROL_REQUEST_BYTES)
            .max_encoding_message_size(limit)
    }

    /// gRPC reflection of the control API alone (`baton.host.v1.Supervisor`), in
    /// `grpc.reflection.v1` and the older `v1alpha` that some clients still ask first,
    /// so that grpcurl and other generic clients need no .proto files. Served on the
    /// control socket, behind the same peer-credential gate as the API itself; a
    /// reflection call naming a plugin (`x-baton-plugin`) is that plugin's.
    pub fn with_reflection(
        routes: baton_transport::Router,
    ) -> Result<baton_transport::Router, String> {
        let builder = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(baton_proto::FILE_DESCRIPTOR_SET)
                .with_service_name("baton.host.v1.Supervisor")
                .include_reflection_service(false)
        };
        let v1 = builder().build_v1().map_err(|e| e.to_string())?;
        let v1alpha = builder().build_v1alpha().map_err(|e| e.to_string())?;
        Ok(routes.add_service(v1).add_service(v1alpha))
    }

    fn plugin(&self, name: &str) -> Result<PluginHandle, Status> {
        self.plugins.find(name)
    }
}

/// The largest request the control API's tonic service reads (`Invoke` is read by hand,
/// up to the plugin's own limit).
pub const MAX_CONTROL_REQUEST_BYTES: usize = 64 << 10;

/// Who asks, for events and for the errors of calls to a plugin stopped on request:
/// what the client says it is (bounded, printable), and the uid and pid the kernel
/// vouches for.
fn asked_by<T>(request: &Request<T>, says: &str) -> String {
    let says: String = says.chars().filter(|c| !c.is_control()).take(64).collect();
    let says = if says.trim().is_empty() {
        "the control API".to_owned()
    } else {
        says
    };
    match request.extensions().get::<Peer>() {
        Some(peer) => format!("{says} (uid {}, pid {})", peer.uid, peer.pid),
        None => says,
    }
}

fn to_proto(s: PluginStatus) -> pb::PluginStatus {
    let state = match s.state {
        PluginState::Starting => pb::PluginState::Starting,
        PluginState::Serving => pb::PluginState::Serving,
        PluginState::HandingOver => pb::PluginState::HandingOver,
        PluginState::Crashed => pb::PluginState::Crashed,
        PluginState::Failed => pb::PluginState::Failed,
        PluginState::Stopping => pb::PluginState::Stopping,
        PluginState::Stopped => pb::PluginState::Stopped,
    };
    pb::PluginStatus {
        name: s.name,
        state: state as i32,
        generation: s.generation,
        pid: s.pid.unwrap_or(0),
        socket: s
            .socket
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        restarts: s.restarts,
        last_error: s.last_error.unwrap_or_default(),
        plugin_version: s.plugin_version,
        methods: s.methods,
        uptime_ms: s.ready_at.map_or(0, |t| t.elapsed().as_millis() as u64),
        reloads: s.reloads,
        rss_bytes: s.rss_bytes.unwrap_or(0),
        cpu_percent: s.cpu_percent.unwrap_or(0.0),
        calls: s.calls,
        errors: s.errors,
        last_event: s.last_event.unwrap_or_default(),
        last_error_unix_ms: s.last_error_at.map_or(0, |t| {
            t.duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        }),
        p99_latency_us: s.p99_latency.map_or(0, |d| d.as_micros() as u64),
    }
}

fn to_proto_event(e: Event) -> pb::Event {
    pb::Event {
        unix_ms: e.unix_ms,
        plugin: e.plugin,
        generation: e.generation,
        kind: e.kind.into_owned(),
        message: e.message,
        hold_us: e.hold_us,
        state_bytes: e.state_bytes,
        duration_us: e.duration_us,
        drain_us: e.drain_us,
        precopy_bytes: e.precopy_bytes,
        final_bytes: e.final_bytes,
        precopy: e.precopy.into_owned(),
    }
}

#[tonic::async_trait]
impl Supervisor for ControlService {
    async fn list(&self, _: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        Ok(Response::new(ListResponse {
            plugins: self
                .plugins
                .now()
                .values()
                .map(|h| to_proto(h.status()))
                .collect(),
        }))
    }

    async fn invoke(
        &self,
        request: Request<InvokeRequest>,
    ) -> Result<Response<InvokeResponse>, Status> {
        let req = request.into_inner();
        let reply = self
            .plugin(&req.plugin)?
            .call(&req.method, req.payload, req.metadata)
            .await?;
        Ok(Response::new(InvokeResponse {
            payload: reply.payload,
            generation: reply.generation,
        }))
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<pb::PluginStatus>, Status> {
        let status = self.plugin(&request.get_ref().plugin)?.status();
        Ok(Response::new(to_proto(status)))
    }

    async fn reload(
        &self,
        request: Request<ReloadRequest>,
    ) -> Result<Response<ReloadResponse>, Status> {
        let generation = self
            .plugin(&request.get_ref().plugin)?
            .reload()
            .await
            .map_err(Status::failed_precondition)?;
        Ok(Response::new(ReloadResponse { generation }))
    }

    async fn stop(
        &self,
        request: Request<LifecycleRequest>,
    ) -> Result<Response<LifecycleResponse>, Status> {
        let by = asked_by(&request, &request.get_ref().by);
        let message = self
            .plugin(&request.get_ref().plugin)?
            .suspend(&by, request.get_ref().discard_state)
            .await
            .map_err(Status::failed_precondition)?;
        Ok(Response::new(LifecycleResponse {
            generation: 0,
            message,
        }))
    }

    async fn start(
        &self,
        request: Request<LifecycleRequest>,
    ) -> Result<Response<LifecycleResponse>, Status> {
        let by = asked_by(&request, &request.get_ref().by);
        let plugin = &request.get_ref().plugin;
        let handle = self.plugin(plugin)?;
        if handle.status().state != State::Stopped {
            return Err(Status::failed_precondition(format!(
                "plugin {plugin} is not stopped (it is {:?}); `baton ctl restart {plugin}` replaces its process",
                handle.status().state
            )));
        }
        let generation = handle
            .start(&by)
            .await
            .map_err(Status::failed_precondition)?;
        Ok(Response::new(LifecycleResponse {
            generation,
            message: format!("plugin {plugin} started: generation {generation} serves"),
        }))
    }

    async fn restart(
        &self,
        request: Request<LifecycleRequest>,
    ) -> Result<Response<LifecycleResponse>, Status> {
        let by = asked_by(&request, &request.get_ref().by);
        let LifecycleRequest { plugin, fresh, .. } = request.get_ref();
        let generation = self
            .plugin(plugin)?
            .restart(*fresh, &by)
            .await
            .map_err(Status::failed_precondition)?;
        let how = if *fresh {
            "started fresh, its state dropped"
        } else {
            "handed over, state kept"
        };
        Ok(Response::new(LifecycleResponse {
            generation,
            message: format!("plugin {plugin} restarted ({how}): generation {generation} serves"),
        }))
    }

    async fn reload_config(
        &self,
        request: Request<ReloadConfigRequest>,
    ) -> Result<Response<ReloadConfigResponse>, Status> {
        let Some(reloads) = &self.reloads else {
            return Err(Status::unimplemented(
                "this host has no config file to read again (it is embedded in a program)",
            ));
        };
        let by = asked_by(&request, &request.get_ref().by);
        let (allow_empty, dry_run) = (request.get_ref().allow_empty, request.get_ref().dry_run);
        let (reply, outcome) = oneshot::channel();
        let stopping = || Status::unavailable("the host is stopping");
        reloads
            .send(ReloadConfigCall {
                by,
                allow_empty,
                dry_run,
                reply,
            })
            .await
            .map_err(|_| stopping())?;
        let done = outcome
            .await
            .map_err(|_| stopping())?
            .map_err(Status::invalid_argument)?;
        Ok(Response::new(ReloadConfigResponse {
            added: done.added,
            removed: done.removed,
            restarted: done.restarted,
            updated: done.updated,
            unchanged: done.unchanged,
            changes: done.changes,
            problems: done.problems,
        }))
    }

    type LogsStream = Pin<Box<dyn Stream<Item = Result<pb::LogLine, Status>> + Send>>;

    async fn logs(
        &self,
        request: Request<LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let req = request.into_inner();
        let (recent, mut feed) = self.plugin(&req.plugin)?.follow_logs();
        let skip = match req.tail {
            0 => 0,
            n => recent.len().saturating_sub(n as usize),
        };
        let to_proto = |l: crate::launch::LogLine| pb::LogLine {
            generation: l.generation,
            stream: l.stream.to_owned(),
            text: l.text,
            unix_ms: l.unix_ms,
        };
        let ended = StreamsEnd::ended(self.streams_end.0.subscribe());
        Ok(Response::new(feed_stream(move |tx| async move {
            for line in recent.into_iter().skip(skip) {
                if tx.send(Ok(to_proto(line))).await.is_err() {
                    return;
                }
            }
            if !req.follow {
                return;
            }
            tokio::pin!(ended);
            loop {
                let next = tokio::select! {
                    next = feed.recv() => next,
                    // The client hung up: stop waiting for lines nobody will read.
                    () = tx.closed() => return,
                    () = &mut ended => {
                        // The host stops: the lines it read before go out, then the end.
                        while let Ok(line) = feed.try_recv() {
                            if tx.send(Ok(to_proto(line))).await.is_err() {
                                return;
                            }
                        }
                        return;
                    }
                };
                let line = match next {
                    Ok(line) => Ok(to_proto(line)),
                    Err(broadcast::error::RecvError::Lagged(n)) => Ok(pb::LogLine {
                        generation: 0,
                        stream: "baton".into(),
                        text: format!("[{n} lines dropped: the client read too slowly]"),
                        unix_ms: crate::launch::unix_ms_now(),
                    }),
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if tx.send(line).await.is_err() {
                    return;
                }
            }
        })))
    }

    type EventsStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

    async fn events(
        &self,
        request: Request<EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        let EventsRequest { plugin: only, last } = request.into_inner();
        if !only.is_empty() {
            self.plugin(&only)?;
        }
        let wanted = move |e: &Event| only.is_empty() || e.plugin == only;
        let (recent, mut rx) = self.events.subscribe_after(last as usize, &wanted);
        let ended = StreamsEnd::ended(self.streams_end.0.subscribe());
        Ok(Response::new(feed_stream(move |tx| async move {
            for e in recent {
                if tx.send(Ok(to_proto_event(e))).await.is_err() {
                    return;
                }
            }
            tokio::pin!(ended);
            loop {
                let next = tokio::select! {
                    next = rx.recv() => next,
                    () = tx.closed() => return,
                    () = &mut ended => {
                        // The host stops: its last events (plugins stopping) go out first.
                        while let Ok(e) = rx.try_recv() {
                            if wanted(&e) && tx.send(Ok(to_proto_event(e))).await.is_err() {
                                return;
                            }
                        }
                        return;
                    }
                };
                match next {
                    Ok(e) if wanted(&e) => {
                        if tx.send(Ok(to_proto_event(e))).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let _ = tx
                            .send(Err(Status::data_loss(format!(
                                "{n} events were dropped: the client read too slowly"
                            ))))
                            .await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        })))
    }
}

/// A stream of `T` fed by a task through a small channel.
fn feed_stream<T, F, Fut>(body: F) -> Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>
where
    T: Send + 'static,
    F: FnOnce(mpsc::Sender<Result<T, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(body(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// The daemon's words when its control socket path is taken: the config names the path.
const CONTROL_SOCKET: Claimant = Claimant {
    in_use: "is in use by another running baton host",
    not_a_socket: "choose another path, or move the file away",
};

/// Binds the control socket, refusing to take over one a live host still serves or a
/// path that holds anything but a stale socket. The returned [`BoundSocket`] removes
/// the socket later only if the path still holds this one.
pub async fn bind(path: &Path) -> Result<(UnixListener, BoundSocket), SocketPathError> {
    CONTROL_SOCKET.claim(path).await?;
    let io = |what, source| SocketPathError::Io {
        path: path.to_owned(),
        what,
        source,
    };
    let listener = UnixListener::bind(path).map_err(|e| io("bind the socket", e))?;
    let bound = BoundSocket::bound(path).map_err(|e| io("check the socket just bound", e))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| io("make the socket 0600", e))?;
    Ok((listener, bound))
}

/// A channel to a host's control socket.
pub async fn connect(path: &Path) -> Result<Channel, std::io::Error> {
    // Connect once eagerly, so a missing or dead host is reported here, plainly.
    tokio::net::UnixStream::connect(path).await?;
    Ok(crate::launch::unix_channel(path))
}
