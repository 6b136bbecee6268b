//! Host services: the one gRPC server a host runs for its own plugins, on
//! `<socket_dir>/host.sock`. It serves `baton.host.v1.Host` (log, a key-value store per
//! plugin, events) and any services the embedding program adds with
//! [`HostBuilder::with_service`](crate::HostBuilder::with_service).
//!
//! Every call must carry a running generation's launch token. The auth layer, in front
//! of every service on the socket, turns the token into a [`PluginIdentity`] that the
//! services read from the request's extensions.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use baton_proto::TOKEN_METADATA_KEY;
use baton_proto::host::host_server::{Host as HostApi, HostServer};
use baton_proto::host::{
    EmitEventRequest, EmitEventResponse, KvDeleteRequest, KvDeleteResponse, KvGetRequest,
    KvGetResponse, KvListRequest, KvListResponse, KvPutRequest, KvPutResponse, LogLevel,
    LogRequest, LogResponse,
};
use bytes::Bytes;
use tokio::sync::oneshot;
use tonic::service::{InterceptorLayer, RoutesBuilder};
use tonic::{Request, Response, Status};

use crate::events::{Event, EventSender};
use crate::launch::{LogLimiter, MAX_MESSAGE_BYTES};
use crate::socket_file::BoundSocket;

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

/// Which plugin, and which generation of it, made a call to the host socket. The auth
/// layer puts it in every request's extensions before any service sees the request.
///
/// ```no_run
/// # use baton_host::PluginIdentity;
/// # async fn query(request: tonic::Request<String>) -> Result<tonic::Response<String>, tonic::Status> {
/// let caller = PluginIdentity::of(&request)?;
/// tracing::info!(plugin = %caller.name, generation = caller.generation, "query");
/// # Ok(tonic::Response::new(String::new())) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginIdentity {
    /// The plugin's configured name.
    pub name: Arc<str>,
    /// The generation (process) that made the call.
    pub generation: u64,
}

impl PluginIdentity {
    /// The caller of `request`. Fails only for a request that did not come through the
    /// host socket, such as a service that is also served somewhere else.
    pub fn of<T>(request: &Request<T>) -> Result<&Self, Status> {
        request.extensions().get::<Self>().ok_or_else(|| {
            Status::unauthenticated("this call did not come through a baton host-services socket")
        })
    }
}

/// The launch tokens of the running generations, and whose they are.
///
/// Tokens are looked up in a `HashMap`, not compared one by one: the map's hash is keyed
/// per process (SipHash with a random key), so lookup time says nothing useful about a
/// guess, and a token is 256 random bits that only the host and its child ever see.
#[derive(Clone, Default)]
pub struct Registry {
    tokens: Arc<RwLock<HashMap<String, Admitted>>>,
}

/// What the host knows about one running generation's token.
struct Admitted {
    identity: PluginIdentity,
    /// The uid its processes run as.
    uid: u32,
    /// The budget its `Log` calls spend.
    log: LogLimiter,
}

impl Registry {
    /// Lets `token` call the host services as `identity`, from processes running as
    /// `uid`, until the returned admission is dropped (when its generation has ended);
    /// its `Log` calls spend `log`.
    pub(crate) fn admit(
        &self,
        token: &str,
        identity: PluginIdentity,
        uid: u32,
        log: LogLimiter,
    ) -> Admission {
        self.tokens
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token.to_owned(), Admitted { identity, uid, log });
        Admission {
            registry: self.clone(),
            token: token.to_owned(),
        }
    }

    fn identify(&self, token: &str) -> Option<(PluginIdentity, LogLimiter)> {
        self.tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .map(|a| (a.identity.clone(), a.log.clone()))
    }

    /// Whether some running generation runs as `uid`: nobody else has any business
    /// connecting to the host services.
    pub(crate) fn admits_uid(&self, uid: u32) -> bool {
        self.tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .any(|a| a.uid == uid)
    }

    /// The auth check in front of every service on the host socket.
    fn authenticate(&self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let identity = match request.metadata().get(TOKEN_METADATA_KEY) {
            None => {
                return Err(Status::unauthenticated(format!(
                    "missing {TOKEN_METADATA_KEY} metadata: the host services answer only this \
                     host's plugins, which send their BATON_PLUGIN_TOKEN"
                )));
            }
            Some(token) => token.to_str().ok().and_then(|t| self.identify(t)),
        };
        let (identity, log) = identity.ok_or_else(|| {
            Status::unauthenticated(format!(
                "unknown {TOKEN_METADATA_KEY}: no running plugin of this host holds it \
                 (a token ends with its process)"
            ))
        })?;
        if let Some(peer) = request.extensions().get::<crate::accept::Peer>() {
            peer.authenticated();
        }
        request.extensions_mut().insert(identity);
        request.extensions_mut().insert(log);
        Ok(request)
    }
}

/// A generation's right to call the host services; revoked when dropped.
pub(crate) struct Admission {
    registry: Registry,
    token: String,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.registry
            .tokens
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.token);
    }
}

/// Size limits of each plugin's key-value store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLimits {
    /// Longest key, in bytes. Default 1 KiB.
    pub max_key_bytes: usize,
    /// Largest value, in bytes. Default 1 MiB.
    pub max_value_bytes: usize,
    /// Most bytes of keys and values together that one plugin may keep. Default 64 MiB.
    pub max_total_bytes: usize,
}

impl Default for KvLimits {
    fn default() -> Self {
        Self {
            max_key_bytes: 1024,
            max_value_bytes: 1 << 20,
            max_total_bytes: 64 << 20,
        }
    }
}

/// One plugin's keys and values.
#[derive(Default)]
struct Store {
    entries: BTreeMap<String, Bytes>,
    /// Bytes of keys and values, for `max_total_bytes`.
    bytes: usize,
}

/// Every plugin's key-value store, by plugin name, so a new generation sees what the
/// old one wrote. In memory: it lasts as long as the host process.
pub(crate) struct Kv {
    limits: KvLimits,
    plugins: Mutex<HashMap<Arc<str>, Store>>,
}

/// A key as error messages show it: long keys are cut.
fn shown(key: &str) -> String {
    let cut: String = key.chars().take(64).collect();
    if cut.len() < key.len() {
        format!("{cut:?}...")
    } else {
        format!("{cut:?}")
    }
}

impl Kv {
    pub(crate) fn new(limits: KvLimits) -> Self {
        Self {
            limits,
            plugins: Mutex::new(HashMap::new()),
        }
    }

    fn plugins(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Store>> {
        // Every update below is complete before the lock is released, so a poisoned
        // lock still guards a consistent map.
        self.plugins.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_key(&self, plugin: &str, key: &str) -> Result<(), Status> {
        if key.is_empty() {
            return Err(Status::invalid_argument(format!(
                "key-value store of plugin {plugin}: the key is empty"
            )));
        }
        let max = self.limits.max_key_bytes;
        if key.len() > max {
            return Err(Status::invalid_argument(format!(
                "key-value store of plugin {plugin}: the key {} is {} bytes, over the limit of {max} bytes (max_key_bytes)",
                shown(key),
                key.len()
            )));
        }
        Ok(())
    }

    fn get(&self, plugin: &str, key: &str) -> Result<Option<Bytes>, Status> {
        self.check_key(plugin, key)?;
        Ok(self
            .plugins()
            .get(plugin)
            .and_then(|s| s.entries.get(key))
            .cloned())
    }

    fn put(&self, plugin: &Arc<str>, key: String, value: Bytes) -> Result<(), Status> {
        self.check_key(plugin, &key)?;
        let max = self.limits.max_value_bytes;
        if value.len() > max {
            return Err(Status::invalid_argument(format!(
                "key-value store of plugin {plugin}: the value for {} is {} bytes, over the limit of {max} bytes (max_value_bytes)",
                shown(&key),
                value.len()
            )));
        }
        let mut plugins = self.plugins();
        let store = plugins.entry(plugin.clone()).or_default();
        let replaced = store.entries.get(&key).map_or(0, |v| key.len() + v.len());
        let total = store.bytes - replaced + key.len() + value.len();
        let max = self.limits.max_total_bytes;
        if total > max {
            return Err(Status::resource_exhausted(format!(
                "key-value store of plugin {plugin}: storing {} would make it {total} bytes, over \
                 the limit of {max} bytes (max_total_bytes); delete keys first",
                shown(&key)
            )));
        }
        store.bytes = total;
        store.entries.insert(key, value);
        Ok(())
    }

    fn delete(&self, plugin: &str, key: &str) -> Result<bool, Status> {
        self.check_key(plugin, key)?;
        let mut plugins = self.plugins();
        let Some(store) = plugins.get_mut(plugin) else {
            return Ok(false);
        };
        match store.entries.remove(key) {
            Some(value) => {
                store.bytes -= key.len() + value.len();
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Up to `limit` keys starting with `prefix` and after `start_after`, and whether
    /// more follow.
    fn list(
        &self,
        plugin: &str,
        prefix: &str,
        start_after: &str,
        limit: usize,
    ) -> (Vec<String>, bool) {
        let plugins = self.plugins();
        let Some(store) = plugins.get(plugin) else {
            return (Vec::new(), false);
        };
        let from = if start_after >= prefix {
            Bound::Excluded(start_after)
        } else {
            Bound::Included(prefix)
        };
        let mut keys = store
            .entries
            .range::<str, _>((from, Bound::Unbounded))
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(prefix));
        let page: Vec<String> = keys.by_ref().take(limit).cloned().collect();
        let more = keys.next().is_some();
        (page, more)
    }
}

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
        let _ = self.events.send(event);
        Ok(Response::new(EmitEventResponse {}))
    }
}

/// The running host-services server.
pub(crate) struct Server {
    socket: BoundSocket,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

/// Binds `socket` (mode 0600) and serves `routes` plus `baton.host.v1.Host` on it, every
/// call checked against `registry`.
pub(crate) fn start(
    socket: PathBuf,
    registry: Registry,
    mut routes: RoutesBuilder,
    host: HostService,
) -> std::io::Result<Server> {
    let listener = tokio::net::UnixListener::bind(&socket)?;
    let socket = BoundSocket::bound(&socket)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(socket.path(), std::fs::Permissions::from_mode(0o600))?;
    }
    routes.add_service(
        HostServer::new(host)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
    );
    let gate = crate::accept::Gate {
        what: "host services",
        admits: {
            let registry = registry.clone();
            Arc::new(move |uid| registry.admits_uid(uid))
        },
        max_total: crate::accept::share_of_descriptors(8, 1024),
        auth_deadline: Some(crate::accept::AUTH_DEADLINE),
    };
    let auth = InterceptorLayer::new(move |request| registry.authenticate(request));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(auth)
            .add_routes(routes.routes())
            .serve_with_incoming_shutdown(
                crate::accept::incoming(listener, gate),
                // A host dropped without `shutdown` drops the sender: stop then too.
                async {
                    let _ = stopped.await;
                },
            ),
    );
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
            Ok(Ok(Err(e))) => tracing::warn!("the host-services server failed: {e}"),
            Ok(Err(_)) => {}
            Err(_) => abort.abort(),
        }
        // By inode: the directory is private, but a socket is removed by path only
        // while that path still holds the one this server bound.
        self.socket.remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_limiter() -> LogLimiter {
        LogLimiter::new(
            Arc::from("notes"),
            crate::PluginConfig::new("x").log_limit(),
        )
    }

    fn code<T: std::fmt::Debug>(r: Result<T, Status>) -> tonic::Code {
        r.expect_err("should be refused").code()
    }

    #[test]
    fn kv_limits_are_enforced_and_named() {
        let kv = Kv::new(KvLimits {
            max_key_bytes: 8,
            max_value_bytes: 16,
            max_total_bytes: 40,
        });
        let p: Arc<str> = Arc::from("notes");
        let put = |k: &str, v: &[u8]| kv.put(&p, k.to_owned(), Bytes::copy_from_slice(v));

        let err = put("", b"x").expect_err("empty key");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("plugin notes"), "{}", err.message());

        let err = put("123456789", b"x").expect_err("long key");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("max_key_bytes"), "{}", err.message());
        assert!(
            err.message().contains("limit of 8 bytes"),
            "{}",
            err.message()
        );
        assert_eq!(
            code(kv.get("notes", "123456789")),
            tonic::Code::InvalidArgument
        );

        let err = put("k", &[0; 17]).expect_err("big value");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(
            err.message().contains("max_value_bytes"),
            "{}",
            err.message()
        );

        // 2 x (1 + 16) = 34 bytes fit; a third entry of 17 does not.
        put("a", &[1; 16]).expect("fits");
        put("b", &[2; 16]).expect("fits");
        let err = put("c", &[3; 16]).expect_err("over the total");
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(
            err.message().contains("max_total_bytes"),
            "{}",
            err.message()
        );
        assert!(
            err.message().contains("limit of 40 bytes"),
            "{}",
            err.message()
        );
        // Replacing a value counts the new size, not both.
        put("a", &[4; 10]).expect("a smaller value for a");
        put("c", &[3; 5]).expect("fits now");
        assert_eq!(
            kv.get("notes", "a").expect("get").as_deref(),
            Some(&[4; 10][..])
        );
        assert!(kv.delete("notes", "b").expect("delete"));
        assert!(!kv.delete("notes", "b").expect("delete again"));
        put("d", &[5; 16]).expect("room again after the delete");
        // Another plugin has a store of its own.
        assert_eq!(kv.get("other", "a").expect("get"), None);
    }

    #[test]
    fn kv_lists_by_prefix_in_pages() {
        let kv = Kv::new(KvLimits::default());
        let p: Arc<str> = Arc::from("notes");
        for k in ["a", "b/1", "b/2", "b/3", "c"] {
            kv.put(&p, k.into(), Bytes::new()).expect("put");
        }
        assert_eq!(
            kv.list("notes", "b/", "", 2),
            (vec!["b/1".into(), "b/2".into()], true)
        );
        assert_eq!(
            kv.list("notes", "b/", "b/2", 2),
            (vec!["b/3".into()], false)
        );
        assert_eq!(kv.list("notes", "", "b/3", 10), (vec!["c".into()], false));
        assert_eq!(kv.list("notes", "z", "", 10), (vec![], false));
        assert_eq!(kv.list("nobody", "", "", 10), (vec![], false));
    }

    #[test]
    fn tokens_identify_until_their_generation_ends() {
        let registry = Registry::default();
        let who = PluginIdentity {
            name: Arc::from("notes"),
            generation: 3,
        };
        let admission = registry.admit("t0k3n", who.clone(), 0, test_limiter());
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert(TOKEN_METADATA_KEY, "t0k3n".parse().expect("metadata"));
        let admitted = registry.authenticate(request).expect("a known token");
        assert_eq!(PluginIdentity::of(&admitted).expect("identity"), &who);

        assert_eq!(
            code(registry.authenticate(Request::new(()))),
            tonic::Code::Unauthenticated
        );
        drop(admission);
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert(TOKEN_METADATA_KEY, "t0k3n".parse().expect("metadata"));
        assert_eq!(
            code(registry.authenticate(request)),
            tonic::Code::Unauthenticated
        );
    }

    #[tokio::test]
    async fn the_socket_checks_tokens_in_front_of_every_service() {
        use baton_proto::host::host_client::HostClient;
        let dir = tempfile::tempdir().expect("temp dir");
        let registry = Registry::default();
        let (events, mut heard) = tokio::sync::broadcast::channel(8);
        let server = start(
            dir.path().join(SOCKET_NAME),
            registry.clone(),
            RoutesBuilder::default(),
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
            tokio::sync::broadcast::channel(1).0,
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
