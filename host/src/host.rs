//! [`Host`]: a set of supervised plugins sharing one private socket directory, one
//! spawner thread, one event stream and one host-services socket. Embed it (through
//! [`HostBuilder`] to offer plugins services of your own), or run it as the `baton` daemon.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use baton_proto::host::host_server::HostServer;
use tokio::sync::broadcast;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;

use crate::config::{Config, Mode, PluginConfig, ReloadMode};
use crate::events::{Event, EventSender};
use crate::handle::PluginHandle;
use crate::process::{Launcher, LogRing, Spawner};
use crate::services::{self, HostService, Kv, KvLimits, Registry};
use crate::supervisor;
use crate::watch::BinaryWatcher;

/// A running set of plugins.
pub struct Host {
    plugins: BTreeMap<String, PluginHandle>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    socket_dir: tempfile::TempDir,
    events: EventSender,
    /// Nudges the plugins that reload on change.
    watcher: BinaryWatcher,
    /// The gRPC server plugins call back into.
    services: services::Server,
    callers: Registry,
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
    routes: RoutesBuilder,
    names: Vec<&'static str>,
    kv_limits: KvLimits,
}

impl HostBuilder {
    /// A host for the plugins of `config`, with the built-in host services only.
    pub fn new(config: &Config) -> Self {
        Self {
            config: config.clone(),
            routes: RoutesBuilder::default(),
            names: Vec::new(),
            kv_limits: KvLimits::default(),
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
        self.routes.add_service(service);
        self
    }

    /// Size limits for each plugin's key-value store.
    pub fn kv_limits(mut self, limits: KvLimits) -> Self {
        self.kv_limits = limits;
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
        let base = runtime_base();
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
        let (events, _) = broadcast::channel(1024);
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
        let spawner = Spawner::start().map_err(HostError::Spawner)?;
        let watcher = BinaryWatcher::start(
            config.watcher,
            std::time::Duration::from_millis(config.poll_interval_ms),
        )
        .map_err(HostError::Watcher)?;
        let mut host = Self {
            plugins: BTreeMap::new(),
            tasks: Vec::new(),
            socket_dir,
            events,
            watcher,
            services,
            callers,
        };
        for (name, plugin) in &config.plugins {
            host.add(name, plugin.clone(), config.mode, &spawner);
        }
        tracing::info!(
            plugins = host.plugins.len(),
            socket_dir = %host.socket_dir.path().display(),
            "host started"
        );
        Ok(host)
    }

    fn add(&mut self, name: &str, config: PluginConfig, mode: Mode, spawner: &Spawner) {
        let reload = config.reload_mode(mode);
        let launcher = Launcher {
            name: Arc::from(name),
            config,
            socket_dir: self.socket_dir.path().to_owned(),
            spawner: spawner.clone(),
            logs: LogRing::default(),
            host_socket: self.services.socket().to_owned(),
            callers: self.callers.clone(),
        };
        let changes = match reload {
            ReloadMode::Watch => {
                let set = launcher.watch_set();
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
        };
        let (handle, task) = supervisor::spawn(launcher, self.events.clone(), changes);
        self.plugins.insert(name.to_owned(), handle);
        self.tasks.push(task);
    }

    /// The handle of the plugin configured as `name`.
    pub fn plugin(&self, name: &str) -> Option<PluginHandle> {
        self.plugins.get(name).cloned()
    }

    /// Every plugin's handle, by name.
    pub fn plugins(&self) -> &BTreeMap<String, PluginHandle> {
        &self.plugins
    }

    /// A live stream of lifecycle events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    pub(crate) fn event_sender(&self) -> EventSender {
        self.events.clone()
    }

    /// The private directory holding the plugins' sockets.
    pub fn socket_dir(&self) -> &Path {
        self.socket_dir.path()
    }

    /// The host-services socket plugins call back into (`BATON_HOST_SOCKET`).
    pub fn services_socket(&self) -> &Path {
        self.services.socket()
    }

    /// Stops every plugin (`Shutdown`, grace period, SIGTERM, SIGKILL), reaps them, and
    /// removes the socket directory.
    pub async fn shutdown(self) {
        let mut stops = tokio::task::JoinSet::new();
        for handle in self.plugins.into_values() {
            stops.spawn(async move { handle.stop().await });
        }
        while stops.join_next().await.is_some() {}
        for task in self.tasks {
            let _ = task.await;
        }
        // After the plugins: they may log or write while they shut down.
        self.services.shutdown().await;
        let dir = self.socket_dir.path().to_owned();
        if let Err(e) = self.socket_dir.close() {
            tracing::warn!("cannot remove the socket directory {}: {e}", dir.display());
        }
        tracing::info!("host stopped");
    }
}

/// `$XDG_RUNTIME_DIR` when usable (a per-user tmpfs), else the system temp directory.
fn runtime_base() -> PathBuf {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir)
}
