//! [`Host`]: a set of supervised plugins sharing one private socket directory, one
//! spawner thread, one event stream, one set of metrics and one host-services socket.
//! Embed it (through [`HostBuilder`] to offer plugins services of your own), or run it as
//! the `baton` daemon.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use baton_proto::host::host_server::HostServer;
use tokio::sync::broadcast;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;

use crate::calls::handle::PluginHandle;
use crate::calls::plugin_set::PluginSet;
use crate::checkpoint::CheckpointStore;
use crate::config::{Config, Mode, PluginConfig, ReloadMode};
use crate::launch::{self, Launcher, LogRing, Spawner};
use crate::observe::events::{Event, EventSender};
use crate::observe::metrics::{self, Metrics};
use crate::services::{self, HostService, Kv, KvLimits, Registry};
use crate::supervisor;
use crate::watch::BinaryWatcher;

mod monitor;
mod plan;
mod reconfigure;

pub use plan::ConfigReload;

/// A running set of plugins.
pub struct Host {
    plugins: PluginSet,
    /// Each plugin's supervisor task, by name.
    tasks: BTreeMap<String, tokio::task::JoinHandle<()>>,
    /// The config in force: what a config reload is compared with.
    config: Config,
    spawner: Spawner,
    socket_dir: tempfile::TempDir,
    events: EventSender,
    /// Nudges the plugins that reload on change.
    watcher: BinaryWatcher,
    /// The resource monitor thread runs while this lives.
    _monitor_alive: Arc<()>,
    /// The gRPC server plugins call back into.
    services: services::Server,
    callers: Registry,
    /// Set when generations run in PID namespaces of their own.
    pid_init: Option<launch::PidInit>,
    metrics: Arc<Metrics>,
    /// Where `GET /metrics` is served, if anywhere.
    metrics_addr: Option<SocketAddr>,
    /// The metrics' event feed and HTTP endpoint.
    background: Background,
}

/// Tasks that end with the host, even one dropped without [`Host::shutdown`].
struct Background(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Background {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Why a host could not start.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The private socket directory could not be made.
    #[error("cannot create the plugin socket directory under {}: {source}", base.display())]
    SocketDir {
        /// Where it was to be made.
        base: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Plugin socket paths under the runtime directory could outgrow the Unix limit.
    #[error(
        "the runtime directory {} is too long: plugin socket paths under it could reach {longest} bytes, over the {}-byte limit of a Unix socket path; point XDG_RUNTIME_DIR (or TMPDIR) at a shorter directory",
        base.display(),
        crate::io::socket_path::MAX_SOCKET_PATH
    )]
    RuntimeDirTooLong {
        /// `$XDG_RUNTIME_DIR` or the temp directory.
        base: PathBuf,
        /// The longest socket path it would lead to.
        longest: usize,
    },
    /// The file watcher could not start.
    #[error("cannot start the file watcher: {0}")]
    Watcher(#[source] notify::Error),
    /// The spawner thread could not start.
    #[error("cannot start the process spawner thread: {0}")]
    Spawner(#[source] std::io::Error),
    /// The host-services socket could not be served.
    #[error("cannot serve the host services on {}: {source}", path.display())]
    Services {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Two services on the host-services socket share a gRPC name.
    #[error(
        "two services named {0:?} on the host-services socket (the host serves baton.host.v1.Host itself)"
    )]
    DuplicateService(&'static str),
    /// The metrics endpoint's address could not be bound.
    #[error("cannot serve metrics on {addr} (metrics_addr): {source}")]
    Metrics {
        /// The configured address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Starts a [`Host`] that also offers plugins services of the embedding program, on the
/// host-services socket (`BATON_HOST_SOCKET` in every plugin's environment), next to
/// `baton.host.v1.Host`. The same launch-token check guards them, and each request
/// carries the caller's [`PluginIdentity`](crate::PluginIdentity) in its extensions.
///
/// ```no_run
/// # use baton_host::{Config, HostBuilder};
/// # async fn demo(config: Config) -> Result<(), baton_host::HostError> {
/// # let (_, my_db) = tonic_health::server::health_reporter();
/// // `my_db` is any tonic service, e.g. `MyDbServer::new(db)` generated from your proto.
/// let host = HostBuilder::new(&config).with_service(my_db).start().await?;
/// # host.shutdown().await; Ok(()) }
/// ```
pub struct HostBuilder {
    config: Config,
    routes: baton_transport::Router,
    names: Vec<&'static str>,
    kv_limits: KvLimits,
    pid_init: Option<PathBuf>,
}

impl HostBuilder {
    /// A host for the plugins of `config`, with the built-in host services only.
    pub fn new(config: &Config) -> Self {
        Self {
            config: config.clone(),
            routes: baton_transport::Router::new(),
            names: Vec::new(),
            kv_limits: KvLimits::default(),
            pid_init: None,
        }
    }

    /// Serves `service` (a tonic server such as `MyDbServer::new(db)`) to the plugins.
    /// Read the calling plugin with [`PluginIdentity::of`](crate::PluginIdentity::of).
    pub fn with_service<S>(mut self, service: S) -> Self
    where
        S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes = self.routes.add_service(service);
        self
    }

    /// Size limits for each plugin's key-value store.
    pub fn kv_limits(mut self, limits: KvLimits) -> Self {
        self.kv_limits = limits;
        self
    }

    /// Runs each plugin generation in a PID namespace of its own, so that nothing a
    /// plugin starts outlives it (host SIGKILL included), through `helper`: a binary
    /// that calls [`crate::launch::pid_init::run_if_requested`] first thing in `main`, usually
    /// this program itself ([`crate::launch::this_executable`]). Checked at start; where
    /// namespaces cannot be made (not root, or a sandbox forbids them) the host says so
    /// and runs plugins in process groups as without this.
    pub fn with_pid_namespaces(mut self, helper: impl Into<PathBuf>) -> Self {
        self.pid_init = Some(helper.into());
        self
    }

    /// Starts the host; see [`Host::start`].
    pub async fn start(self) -> Result<Host, HostError> {
        let mut names = self.names.clone();
        names.push(HostServer::<HostService>::NAME);
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(HostError::DuplicateService(pair[0]));
        }
        Host::start_with(self).await
    }
}

impl Host {
    /// Starts every plugin in `config`. Returns at once; calls wait for their plugin to
    /// come up (see [`PluginHandle::ready`]). Must run inside a tokio runtime. To offer
    /// plugins services of your own, use [`HostBuilder`].
    pub async fn start(config: &Config) -> Result<Self, HostError> {
        HostBuilder::new(config).start().await
    }

    async fn start_with(builder: HostBuilder) -> Result<Self, HostError> {
        let config = &builder.config;
        // Bound first: a taken port fails the start before any plugin runs.
        let listener = match config.metrics_addr {
            Some(addr) => {
                let bound = match config.refuse_public_metrics() {
                    Some(why) => Err(std::io::Error::new(
                        std::io::ErrorKind::PermissionDenied,
                        why,
                    )),
                    None => metrics::bind(addr).await,
                };
                Some(bound.map_err(|source| HostError::Metrics { addr, source })?)
            }
            None => None,
        };
        let base = Host::runtime_base()?;
        let socket_dir = tempfile::Builder::new()
            .prefix("baton-")
            .tempdir_in(&base)
            .map_err(|source| HostError::SocketDir {
                base: base.clone(),
                source,
            })?;
        // tempfile makes it 0700 already; be explicit, since it guards every plugin's socket.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(socket_dir.path(), std::fs::Permissions::from_mode(0o700))
                .map_err(|source| HostError::SocketDir { base, source })?;
        }
        remove_stale_runtime_dirs(socket_dir.path());
        // Lets a later host tell this directory is abandoned if this one is killed.
        let _ = std::fs::write(
            socket_dir.path().join(PID_FILE),
            std::process::id().to_string(),
        );
        let spawner = Spawner::start().map_err(HostError::Spawner)?;
        let pid_init = match &builder.pid_init {
            Some(helper) => match launch::PidInit::probe(helper).await {
                Ok(init) => {
                    tracing::info!("each plugin generation runs in a PID namespace of its own");
                    Some(init)
                }
                Err(why) => {
                    tracing::warn!(
                        "plugins run without PID namespaces ({why}): a process a plugin starts \
                         in a new session (setsid) can outlive it; see docs/security.md"
                    );
                    None
                }
            },
            None => None,
        };
        let watcher = BinaryWatcher::start(
            config.watcher,
            std::time::Duration::from_millis(config.poll_interval_ms),
        )
        .map_err(HostError::Watcher)?;
        let events = EventSender::new(1024);
        // Served before any plugin starts, so a plugin may call it during its start-up.
        let callers = Registry::default();
        let socket = socket_dir.path().join(services::SOCKET_NAME);
        let services = services::start(
            socket.clone(),
            callers.clone(),
            builder.routes,
            HostService::new(Arc::new(Kv::new(builder.kv_limits)), events.clone()),
        )
        .map_err(|source| HostError::Services {
            path: socket,
            source,
        })?;
        let metrics = Arc::new(Metrics::new());
        // Subscribed before any plugin starts, so that no event is missed.
        let mut background = vec![metrics.clone().follow(events.subscribe())];
        let mut metrics_addr = None;
        if let Some((listener, addr)) = listener {
            tracing::info!("metrics: serving http://{addr}/metrics");
            background.push(metrics::serve(listener, metrics.clone()));
            metrics_addr = Some(addr);
        }
        let plugins = PluginSet::default();
        background.push(crate::calls::deadline_anchor::spawn(plugins.clone()));
        let mut host = Self {
            plugins,
            tasks: BTreeMap::new(),
            config: config.clone(),
            spawner,
            socket_dir,
            events,
            watcher,
            _monitor_alive: Arc::new(()),
            services,
            callers,
            pid_init,
            metrics,
            metrics_addr,
            background: Background(background),
        };
        for (name, plugin) in &config.plugins {
            host.add(name, plugin.clone());
        }
        monitor::spawn(
            host.plugins.clone(),
            host.metrics.clone(),
            std::time::Duration::from_millis(config.resource_interval_ms.max(10)),
            Arc::downgrade(&host._monitor_alive),
        )
        .map_err(HostError::Spawner)?;
        tracing::info!(
            plugins = host.plugins.now().len(),
            socket_dir = %host.socket_dir.path().display(),
            "host started"
        );
        Ok(host)
    }

    fn add(&mut self, name: &str, config: PluginConfig) {
        let mode = self.config.mode;
        let checkpoints =
            CheckpointStore::new(self.config.state_dir.as_ref().map(|d| d.join(name)));
        let logs = LogRing::new(Arc::from(name), config.log_limit());
        let api = config
            .api_descriptors
            .as_ref()
            .map(|path| Arc::new(crate::api::api_check::load(path, &config.services)));
        let launcher = Launcher {
            name: Arc::from(name),
            config,
            socket_dir: self.socket_dir.path().to_owned(),
            spawner: self.spawner.clone(),
            logs,
            host_socket: self.services.socket().to_owned(),
            production: mode == Mode::Production,
            callers: self.callers.clone(),
            pid_init: self.pid_init.clone(),
            api,
            said_nproc_fallback: Default::default(),
        };
        let changes = self.subscribe_changes(name, &launcher.config);

        let calls = self.metrics.add_plugin(name);
        let (handle, task) =
            supervisor::spawn(launcher, self.events.clone(), changes, checkpoints, calls);
        self.plugins.insert(name, handle);
        self.tasks.insert(name.to_owned(), task);
    }

    /// A subscription to the file watcher for a plugin that reloads on change.
    fn subscribe_changes(
        &self,
        name: &str,
        config: &PluginConfig,
    ) -> Option<tokio::sync::mpsc::Receiver<()>> {
        match config.reload_mode(self.config.mode) {
            ReloadMode::Watch => {
                let set = launch::watch_set_of(config);
                if set.is_empty() {
                    tracing::warn!(
                        plugin = name,
                        "reload = \"watch\", but there is nothing to watch: the command is not a path and `watch` is empty"
                    );
                    None
                } else {
                    match self.watcher.subscribe(set) {
                        Ok(rx) => Some(rx),
                        Err(e) => {
                            tracing::error!(
                                plugin = name,
                                "{e}; this plugin reloads only on `baton ctl reload`"
                            );
                            None
                        }
                    }
                }
            }
            ReloadMode::Manual | ReloadMode::Off => None,
        }
    }

    /// The handle of the plugin configured as `name`.
    pub fn plugin(&self, name: &str) -> Option<PluginHandle> {
        self.plugins.get(name)
    }

    /// Every plugin's handle, by name, as the set is now (a config reload changes it).
    pub fn plugins(&self) -> Arc<BTreeMap<String, PluginHandle>> {
        self.plugins.now()
    }

    /// The plugins, as a set that follows config reloads: for what looks a plugin up
    /// per call.
    pub(crate) fn plugin_set(&self) -> PluginSet {
        self.plugins.clone()
    }

    /// A live stream of lifecycle events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    pub(crate) fn event_sender(&self) -> EventSender {
        self.events.clone()
    }

    /// The host's metrics, to read or to add resource figures to.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Every metric in the Prometheus text format, as `GET /metrics` serves it.
    pub fn metrics_text(&self) -> String {
        self.metrics.text()
    }

    /// The address `GET /metrics` is served on (the bound port, when port 0 was asked for).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The host-services socket plugins call back into (`BATON_HOST_SOCKET`).
    pub fn services_socket(&self) -> &Path {
        self.services.socket()
    }

    /// The private directory holding the plugins' sockets.
    pub fn socket_dir(&self) -> &Path {
        self.socket_dir.path()
    }

    /// Stops every plugin (`Shutdown`, grace period, SIGTERM, SIGKILL), reaps them, and
    /// removes the socket directory.
    pub async fn shutdown(self) {
        let mut stops = tokio::task::JoinSet::new();
        let plugins = self.plugins.now();
        for handle in plugins.values() {
            let handle = handle.clone();
            stops.spawn(async move { handle.stop().await });
        }
        while stops.join_next().await.is_some() {}
        for task in self.tasks.into_values() {
            let _ = task.await;
        }
        // After the plugins: they may log or write while they shut down.
        self.services.shutdown().await;
        drop(self.background);
        let dir = self.socket_dir.path().to_owned();
        if let Err(e) = self.socket_dir.close() {
            tracing::warn!("cannot remove the socket directory {}: {e}", dir.display());
        }
        tracing::info!("host stopped");
    }
}

/// Names the host that owns a runtime directory.
const PID_FILE: &str = "host.pid";

/// Removes the runtime directories of baton hosts that were killed (SIGKILL leaves no
/// chance to clean up) beside `ours`: same owner, with a pid file naming a process that
/// is gone.
fn remove_stale_runtime_dirs(ours: &Path) {
    use std::os::unix::fs::MetadataExt;
    let (Some(base), Ok(me)) = (ours.parent(), std::fs::metadata(ours)) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    let uid = me.uid();
    for entry in entries.flatten() {
        let path = entry.path();
        let ours = entry.file_name().to_string_lossy().starts_with("baton-")
            && std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir() && m.uid() == uid);
        if !ours {
            continue;
        }
        let Some(pid) = std::fs::read_to_string(path.join(PID_FILE))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        else {
            continue;
        };
        let gone = matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        );
        if gone && std::fs::remove_dir_all(&path).is_ok() {
            tracing::info!(
                "removed {}, left by a baton host (pid {pid}) that was killed",
                path.display()
            );
        }
    }
}

impl Host {
    /// Where the host makes its runtime directory, refused when plugin socket paths
    /// under it could outgrow the Unix limit: the environment's part of the
    /// configuration, which `baton validate` checks too.
    pub fn runtime_base() -> Result<PathBuf, HostError> {
        let base = runtime_base();
        // tempfile's `baton-XXXXXX`, then the longest a plugin's socket path can grow.
        let longest = base.as_os_str().len()
            + "/baton-XXXXXX".len()
            + crate::io::socket_path::plugin_socket_tail();
        if longest > crate::io::socket_path::MAX_SOCKET_PATH {
            return Err(HostError::RuntimeDirTooLong { base, longest });
        }
        Ok(base)
    }
}

/// `$XDG_RUNTIME_DIR` when usable (a per-user tmpfs), else the system temp directory.
fn runtime_base() -> PathBuf {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir)
}
