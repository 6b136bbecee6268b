//! Host services: the one gRPC server a host runs for its own plugins, on
//! `<socket_dir>/host.sock`. It serves `baton.host.v1.Host` (log, a key-value store per
//! plugin, events) and any services the embedding program adds with
//! [`HostBuilder::with_service`](crate::HostBuilder::with_service).
//!
//! Every call must carry a running generation's launch token. The auth layer, in front
//! of every service on the socket, turns the token into a [`PluginIdentity`] that the
//! services read from the request's extensions.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_proto::host::host_server::{Host as HostApi, HostServer};
use baton_proto::host::{
    EmitEventRequest, EmitEventResponse, KvDeleteRequest, KvDeleteResponse, KvGetRequest,
    KvGetResponse, KvListRequest, KvListResponse, KvPutRequest, KvPutResponse, LogLevel,
    LogRequest, LogResponse,
};
use baton_transport::socket_file::BoundSocket;
use tokio::sync::oneshot;
use tonic::service::InterceptorLayer;
use tonic::{Request, Response, Status};

use crate::io::log_limit::LogLimiter;
use crate::io::message_limit::MAX_MESSAGE_BYTES;
use crate::observe::events::{Event, EventSender};

mod ancestry;
mod budget;
mod identity;
mod kv;

pub(crate) use identity::Admission;
pub use identity::{PluginIdentity, Registry};
pub(crate) use kv::Kv;
pub use kv::KvLimits;
use kv::shown;

/// Bytes of messages not yet whole that one plugin's calls may hold at once: room for
/// two of the largest, however many calls and connections carry them.
pub(crate) const UNFINISHED_BYTES_PER_PLUGIN: usize = 2 * MAX_MESSAGE_BYTES;

/// The host-services socket's file name in the host's socket directory.
pub const SOCKET_NAME: &str = "host.sock";
/// Longest log message, and longest rendering of its fields, kept whole.
const MAX_LOG_BYTES: usize = 16 * 1024;
/// Longest event kind a plugin may emit (before the `plugin:` prefix).
const MAX_EVENT_KIND: usize = 64;
/// Longest event message a plugin may emit.
const MAX_EVENT_MESSAGE: usize = 4096;
/// Events one plugin may emit per second; the broadcast to `baton ctl events` is shared
/// by every plugin, and a flood would make its listeners lag and drop out.
const EVENTS_PER_SECOND: u32 = 100;
/// Keys per KvList page when the request leaves it to the host, and the most it allows.
const DEFAULT_LIST_LIMIT: u32 = 1000;
const MAX_LIST_LIMIT: u32 = 10_000;
/// How long the server may take to finish its calls after the plugins have stopped.
const DRAIN: Duration = Duration::from_secs(1);

/// `baton.host.v1.Host`.
pub(crate) struct HostService {
    kv: Arc<Kv>,
    events: EventSender,
    /// Per plugin: when its current one-second window began, and events emitted in it.
    event_budget: Mutex<HashMap<Arc<str>, (Instant, u32)>>,
}

impl HostService {
    pub(crate) fn new(kv: Arc<Kv>, events: EventSender) -> Self {
        Self {
            kv,
            events,
            event_budget: Mutex::new(HashMap::new()),
        }
    }

    fn spend_event(&self, plugin: &Arc<str>) -> Result<(), Status> {
        let mut budget = self.event_budget.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let (since, count) = budget.entry(plugin.clone()).or_insert((now, 0));
        if now.duration_since(*since) >= Duration::from_secs(1) {
            (*since, *count) = (now, 0);
        }
        if *count >= EVENTS_PER_SECOND {
            return Err(Status::resource_exhausted(format!(
                "plugin {plugin} emitted more than {EVENTS_PER_SECOND} events within a second; \
                 events are news for operators, not a data stream"
            )));
        }
        *count += 1;
        Ok(())
    }
}

/// Cuts `text` to at most `max` bytes, on a character boundary, saying so.
fn cut(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes cut)", &text[..end], text.len() - end).into()
}

/// `key=value` pairs in key order, quoted where a plain rendering would be ambiguous.
fn render_fields(fields: &HashMap<String, String>) -> String {
    let quoted = |s: &str| {
        if s.is_empty() || s.contains(|c: char| c.is_whitespace() || c == '=' || c == '"') {
            format!("{s:?}")
        } else {
            s.to_owned()
        }
    };
    let sorted: BTreeMap<&String, &String> = fields.iter().collect();
    let pairs: Vec<String> = sorted
        .into_iter()
        .map(|(k, v)| format!("{}={}", quoted(k), quoted(v)))
        .collect();
    pairs.join(" ")
}

fn valid_event_kind(kind: &str) -> bool {
    (1..=MAX_EVENT_KIND).contains(&kind.len())
        && kind
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[tonic::async_trait]
impl HostApi for HostService {
    async fn log(&self, request: Request<LogRequest>) -> Result<Response<LogResponse>, Status> {
        let who = PluginIdentity::of(&request)?.clone();
        let budget = request.extensions().get::<LogLimiter>().cloned();
        let req = request.into_inner();
        let message = cut(&req.message, MAX_LOG_BYTES);
        let fields = render_fields(&req.fields);
        let fields = cut(&fields, MAX_LOG_BYTES);
        // Over the plugin's rate the line is dropped, not refused: logging must not
        // fail a plugin's work, and the host reports the drops once a second.
        if budget.is_some_and(|b| !b.admit(message.len() + fields.len())) {
            return Ok(Response::new(LogResponse {}));
        }
        let (name, generation) = (&*who.name, who.generation);
        let (message, fields) = (
            crate::io::printable::printable(&message),
            crate::io::printable::printable(&fields),
        );
        // The same target as the plugin's captured stderr, so one filter covers both.
        macro_rules! log_at {
            ($level:ident) => {
                if fields.is_empty() {
                    tracing::$level!(target: "baton::plugin", plugin = %name, generation, "{message}")
                } else {
                    tracing::$level!(target: "baton::plugin", plugin = %name, generation, "{message} {fields}")
                }
            };
        }
        match LogLevel::try_from(req.level).unwrap_or(LogLevel::Info) {
            LogLevel::Error => log_at!(error),
            LogLevel::Warn => log_at!(warn),
            LogLevel::Debug => log_at!(debug),
            LogLevel::Trace => log_at!(trace),
            LogLevel::Info | LogLevel::Unspecified => log_at!(info),
        }
        Ok(Response::new(LogResponse {}))
    }

    async fn kv_get(
        &self,
        request: Request<KvGetRequest>,
    ) -> Result<Response<KvGetResponse>, Status> {
        let who = PluginIdentity::of(&request)?;
        let value = self.kv.get(&who.name, &request.get_ref().key)?;
        Ok(Response::new(KvGetResponse {
            found: value.is_some(),
            value: value.unwrap_or_default(),
        }))
    }

    async fn kv_put(
        &self,
        request: Request<KvPutRequest>,
    ) -> Result<Response<KvPutResponse>, Status> {
        let who = PluginIdentity::of(&request)?.clone();
        let req = request.into_inner();
        self.kv.put(&who.name, req.key, req.value)?;
        Ok(Response::new(KvPutResponse {}))
    }

    async fn kv_delete(
        &self,
        request: Request<KvDeleteRequest>,
    ) -> Result<Response<KvDeleteResponse>, Status> {
        let who = PluginIdentity::of(&request)?;
        let existed = self.kv.delete(&who.name, &request.get_ref().key)?;
        Ok(Response::new(KvDeleteResponse { existed }))
    }

    async fn kv_list(
        &self,
        request: Request<KvListRequest>,
    ) -> Result<Response<KvListResponse>, Status> {
        let who = PluginIdentity::of(&request)?;
        let req = request.get_ref();
        let limit = match req.limit {
            0 => DEFAULT_LIST_LIMIT,
            n => n.min(MAX_LIST_LIMIT),
        };
        let (keys, more) = self
            .kv
            .list(&who.name, &req.prefix, &req.start_after, limit as usize);
        Ok(Response::new(KvListResponse { keys, more }))
    }

    async fn emit_event(
        &self,
        request: Request<EmitEventRequest>,
    ) -> Result<Response<EmitEventResponse>, Status> {
        let who = PluginIdentity::of(&request)?.clone();
        let req = request.into_inner();
        if !valid_event_kind(&req.kind) {
            return Err(Status::invalid_argument(format!(
                "plugin {}: the event kind {} is not 1 to {MAX_EVENT_KIND} ASCII letters, digits, '_', '-' or '.'",
                who.name,
                shown(&req.kind)
            )));
        }
        if req.message.len() > MAX_EVENT_MESSAGE {
            return Err(Status::invalid_argument(format!(
                "plugin {}: the event message is {} bytes, over the limit of {MAX_EVENT_MESSAGE} bytes",
                who.name,
                req.message.len()
            )));
        }
        self.spend_event(&who.name)?;
        let event = Event::new(
            &who.name,
            who.generation,
            format!("plugin:{}", req.kind),
            req.message,
        );
        // Nobody listening is fine: events are for whoever watches.
        self.events.send(event);
        Ok(Response::new(EmitEventResponse {}))
    }
}

/// The running host-services server.
pub(crate) struct Server {
    socket: BoundSocket,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), std::convert::Infallible>>,
}

/// Binds `socket` (mode 0600) and serves `routes` plus `baton.host.v1.Host` on it, every
/// call checked against `registry`.
pub(crate) fn start(
    socket: PathBuf,
    registry: Registry,
    routes: baton_transport::Router,
    host: HostService,
) -> std::io::Result<Server> {
    let listener = tokio::net::UnixListener::bind(&socket)?;
    let socket = BoundSocket::bound(&socket)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(socket.path(), std::fs::Permissions::from_mode(0o600))?;
    }
    let routes = routes.add_service(
        HostServer::new(host)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
    );
    let max_total = crate::io::accept::share_of_descriptors(8, 1024);
    let gate = crate::io::accept::Gate {
        what: "host services",
        admits: {
            let registry = registry.clone();
            Arc::new(move |uid| registry.admits_uid(uid))
        },
        max_total,
        auth_deadline: Some(crate::io::accept::AUTH_DEADLINE),
        owners: Some(crate::io::accept::Owners {
            of: {
                let registry = registry.clone();
                Arc::new(move |pid| registry.owner_of(pid))
            },
            // A quarter: one plugin, and the processes the host cannot place, leave half
            // of the socket to the others however many connections they open.
            max_each: (max_total / 4).max(1),
        }),
    };
    let auth = InterceptorLayer::new(move |request| registry.authenticate(request));
    let (stop, stopped) = oneshot::channel::<()>();
    let budget = budget::BudgetLayer(budget::Budgets::new(UNFINISHED_BYTES_PER_PLUGIN));
    let service = tower::Layer::layer(&auth, tower::Layer::layer(&budget, routes));
    let task = tokio::spawn(baton_transport::serve(
        baton_transport::ServerConfig::new("host services"),
        crate::io::accept::incoming(listener, gate),
        service,
        // A host dropped without `shutdown` drops the sender: stop then too.
        async {
            let _ = stopped.await;
        },
    ));
    Ok(Server { socket, stop, task })
}

impl Server {
    /// The socket plugins call.
    pub(crate) fn socket(&self) -> &Path {
        self.socket.path()
    }

    /// Stops serving: calls in flight get a moment to finish.
    pub(crate) async fn shutdown(self) {
        let _ = self.stop.send(());
        let abort = self.task.abort_handle();
        match tokio::time::timeout(DRAIN, self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(never))) => match never {},
            Ok(Err(_)) => {}
            Err(_) => abort.abort(),
        }
        // By inode: the directory is private, but a socket is removed by path only
        // while that path still holds the one this server bound.
        self.socket.remove();
    }
}

/// A log budget for the tests of this module and its children.
#[cfg(test)]
fn test_limiter() -> LogLimiter {
    LogLimiter::new(
        Arc::from("notes"),
        crate::PluginConfig::new("x").log_limit(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_proto::TOKEN_METADATA_KEY;

    #[tokio::test]
    async fn the_socket_checks_tokens_in_front_of_every_service() {
        use baton_proto::host::host_client::HostClient;
        let dir = tempfile::tempdir().expect("temp dir");
        let registry = Registry::default();
        let events = EventSender::new(8);
        let mut heard = events.subscribe();
        let server = start(
            dir.path().join(SOCKET_NAME),
            registry.clone(),
            baton_transport::Router::new(),
            HostService::new(Arc::new(Kv::new(KvLimits::default())), events),
        )
        .expect("serve");
        let _admission = registry.admit(
            "s3cret",
            PluginIdentity {
                name: Arc::from("notes"),
                generation: 2,
            },
            nix::unistd::geteuid().as_raw(),
            test_limiter(),
        );
        let mut client = HostClient::new(crate::launch::unix_channel(server.socket()));
        let with_token = |token: &str, kind: &str| {
            let mut request = Request::new(EmitEventRequest {
                kind: kind.into(),
                message: "hello".into(),
            });
            request
                .metadata_mut()
                .insert(TOKEN_METADATA_KEY, token.parse().expect("metadata"));
            request
        };
        let refused = client
            .emit_event(with_token("guess", "x"))
            .await
            .expect_err("unknown token");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        let refused = client
            .kv_get(KvGetRequest { key: "k".into() })
            .await
            .expect_err("no token");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);

        client
            .emit_event(with_token("s3cret", "saved"))
            .await
            .expect("a known token");
        let event = heard.recv().await.expect("the event");
        assert_eq!(
            (&*event.plugin, event.generation, &*event.kind),
            ("notes", 2, "plugin:saved")
        );
        server.shutdown().await;
    }

    #[tokio::test]
    async fn a_second_service_with_a_taken_name_is_refused_before_anything_starts() {
        let ours = HostServer::new(HostService::new(
            Arc::new(Kv::new(KvLimits::default())),
            EventSender::new(1),
        ));
        let refused = crate::HostBuilder::new(&crate::Config::empty())
            .with_service(ours)
            .start()
            .await;
        assert!(
            matches!(
                refused,
                Err(crate::HostError::DuplicateService("baton.host.v1.Host"))
            ),
            "{:?}",
            refused.err()
        );
    }

    #[test]
    fn plugin_events_are_checked_and_fields_rendered() {
        assert!(valid_event_kind("note_saved"));
        assert!(valid_event_kind("cache.v2-flushed"));
        assert!(!valid_event_kind(""));
        assert!(!valid_event_kind("plugin:started"));
        assert!(!valid_event_kind(&"x".repeat(65)));
        let fields = HashMap::from([
            ("z".to_owned(), "last".to_owned()),
            ("key".to_owned(), "two words".to_owned()),
            ("empty".to_owned(), String::new()),
        ]);
        assert_eq!(render_fields(&fields), r#"empty="" key="two words" z=last"#);
        assert_eq!(cut("héllo", 2), "h... (5 bytes cut)");
    }
}
