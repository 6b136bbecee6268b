//! The plugin side of the launch handshake and the `Plugin` gRPC service.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use baton_proto::plugin::plugin_server::PluginServer;
use baton_proto::{PROTOCOL_VERSION, TOKEN_METADATA_KEY, env};
use baton_transport::socket_file::{BoundSocket, Claimant, SocketPathError};
use baton_transport::{Check, Router, ServerConfig, UnaryRoute};
use tokio::net::UnixListener;
use tokio::sync::Notify;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::Status;
use tonic::codegen::http;
use tonic::server::NamedService;

use crate::Plugin;
use crate::service::PluginService;

/// Largest message the SDK accepts or sends (payloads of `Invoke`).
const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// A plugin's words when its socket path is taken: the host chose the path.
const PLUGIN_SOCKET: Claimant = Claimant {
    in_use: "is a socket another process is listening on; it was left alone",
    not_a_socket: "the host must be given a path that is free",
};
/// The method the host calls most, served by hand rather than through tonic.
const INVOKE_PATH: &str = "/baton.plugin.v1.Plugin/Invoke";
/// HTTP/2 flow-control window per stream (the connection gets twice as much).
const TRANSFER_WINDOW_BYTES: u32 = 8 << 20;
/// The most worker threads [`WORKERS_ENV`] may ask for: a typo such as `40000` should
/// not start forty thousand threads.
const MAX_WORKERS: usize = 1024;

/// The environment variable that sets how many threads serve a plugin's calls, overriding
/// [`Server::worker_threads`]: an operator sets it in the plugin's `env` in the host's
/// config, without rebuilding. `1` is one thread (a current-thread runtime, the default),
/// `N` ≥ 2 a multi-thread runtime of N workers.
pub const WORKERS_ENV: &str = "BATON_PLUGIN_WORKERS";

/// What the host passed in the environment.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Where to bind.
    pub socket: PathBuf,
    /// The protocol version the host speaks.
    pub host_protocol_version: String,
    /// The secret every call must carry.
    pub token: String,
}

/// Why a plugin cannot start.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// A handshake variable is missing or empty: the program was not started by a host.
    #[error(
        "{0} is not set (or is empty): this program is a baton plugin and must be started by \
         a baton host (or by `baton check -- <this command>`)"
    )]
    MissingEnv(&'static str),
    /// The launch token is empty: every call would have to carry an empty one, which
    /// anyone can.
    #[error(
        "the launch token ({}) is empty: refusing to serve calls anyone could make",
        env::TOKEN
    )]
    EmptyToken,
    /// Something is at the socket path that is not a stale socket.
    #[error("cannot use the plugin socket path ({variable}): {0}", variable = env::SOCKET)]
    SocketPath(#[from] SocketPathError),
    /// The socket could not be bound.
    #[error("cannot bind the plugin socket {path}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Writing the handshake line failed (stdout closed).
    #[error("cannot write the handshake line to stdout: {0}")]
    Handshake(#[source] std::io::Error),
}

impl Launch {
    /// Reads the handshake variables.
    pub fn from_env() -> Result<Self, LaunchError> {
        let var = |name: &'static str| match std::env::var(name) {
            Ok(value) if !value.is_empty() => Ok(value),
            _ => Err(LaunchError::MissingEnv(name)),
        };
        Ok(Self {
            socket: PathBuf::from(var(env::SOCKET)?),
            host_protocol_version: var(env::PROTOCOL_VERSION)?,
            token: var(env::TOKEN)?,
        })
    }
}

/// Runs `plugin` until the host asks it to stop (or SIGTERM/SIGINT), and returns the
/// process's exit code. Call it from `main`. It serves on one thread unless
/// [`WORKERS_ENV`] asks for more ([Threads](crate#threads)). To serve application
/// services beside it, or choose the thread count in code, use [`Server`].
pub fn serve<P: Plugin>(plugin: P) -> ExitCode {
    Server::new(plugin).serve()
}

/// Binds the socket, prints the handshake line and serves `plugin` until shutdown,
/// inside an existing tokio runtime.
pub async fn serve_with_listener<P: Plugin>(plugin: P, launch: Launch) -> Result<(), LaunchError> {
    Server::new(plugin).serve_with_listener(launch).await
}

/// Adds one application service, behind the token check, to the plugin's routes.
type AddService = Box<dyn FnOnce(Router, Arc<Check>) -> Router + Send>;

/// A plugin and the application services it serves beside `baton.plugin.v1.Plugin`, on
/// its one socket, every one of them behind the launch token:
///
/// ```ignore
/// Server::new(MyPlugin::default())
///     .add_service(TriggerServer::new(MyTrigger::default()))
///     .serve()
/// ```
///
/// `Describe` lists the added services by their gRPC names, so a host that requires one
/// can tell before it sends any call.
pub struct Server<P> {
    plugin: P,
    names: Vec<String>,
    services: Vec<AddService>,
    /// Encoded file descriptor sets the reflection service describes.
    reflection: Vec<&'static [u8]>,
    /// Threads that run the plugin's tasks: 1 is a current-thread runtime.
    workers: usize,
}

impl<P: Plugin> Server<P> {
    /// A plugin with no application services yet.
    pub fn new(plugin: P) -> Self {
        Self {
            plugin,
            names: Vec::new(),
            services: Vec::new(),
            reflection: Vec::new(),
            workers: 1,
        }
    }

    /// Serves on `n` worker threads (a multi-thread runtime) when `n` ≥ 2, instead of
    /// the default one thread (a current-thread runtime). Ask for workers when handlers
    /// are CPU-heavy, or block (synchronous I/O, a blocking library, a long lock), so
    /// that one such call does not hold up every other; handlers that await need none.
    /// [`WORKERS_ENV`] in the plugin's environment overrides it. Only [`Server::serve`]
    /// reads it: [`Server::serve_with_listener`] runs on the caller's runtime.
    pub fn worker_threads(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// Serves gRPC server reflection (`grpc.reflection.v1.ServerReflection`, behind the
    /// token like every service) for the services in `file_descriptor_set` (an encoded
    /// `FileDescriptorSet`, as tonic-prost-build or `protoc -o` write it): the host can
    /// then check a new build's methods and message types before it goes live, and
    /// `baton ctl call` can call them by name with JSON.
    pub fn with_reflection(mut self, file_descriptor_set: &'static [u8]) -> Self {
        self.reflection.push(file_descriptor_set);
        self
    }

    /// Serves `service` (a tonic-generated server such as `TriggerServer::new(t)`) on
    /// the plugin's socket; calls without the launch token are refused.
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: tower::Service<
                tonic::codegen::http::Request<tonic::body::Body>,
                Response = tonic::codegen::http::Response<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME.to_owned());
        self.services.push(Box::new(move |routes, check| {
            routes.add_checked_service(service, check)
        }));
        self
    }

    /// Runs until the host asks the plugin to stop (or SIGTERM/SIGINT), and returns the
    /// process's exit code. Call it from `main`: it starts the runtime, of one thread
    /// unless [`Server::worker_threads`] or [`WORKERS_ENV`] ask for more.
    pub fn serve(self) -> ExitCode {
        init_logging();
        let launch = match Launch::from_env() {
            Ok(launch) => launch,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        let workers = workers_from_env(std::env::var(WORKERS_ENV).ok().as_deref(), self.workers);
        let runtime = match build_runtime(workers) {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("error: cannot start the async runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
        match runtime.block_on(self.serve_with_listener(launch)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e}");
                ExitCode::FAILURE
            }
        }
    }

    /// Binds the socket, prints the handshake line and serves until shutdown, inside an
    /// existing tokio runtime (of either flavour; its thread count is the caller's, so
    /// [`Server::worker_threads`] and [`WORKERS_ENV`] do not apply).
    pub async fn serve_with_listener(self, launch: Launch) -> Result<(), LaunchError> {
        let Self {
            plugin,
            names,
            services,
            reflection,
            workers: _,
        } = self;
        if launch.host_protocol_version != PROTOCOL_VERSION.to_string() {
            tracing::warn!(
                host = %launch.host_protocol_version,
                ours = PROTOCOL_VERSION,
                "the host speaks another protocol version; it will refuse this plugin's handshake"
            );
        }
        if launch.token.is_empty() {
            return Err(LaunchError::EmptyToken);
        }
        // A socket left by a killed predecessor at the same path would make bind fail;
        // anything else there is not ours to delete.
        PLUGIN_SOCKET.claim(&launch.socket).await?;
        let bind_error = |source| LaunchError::Bind {
            path: launch.socket.clone(),
            source,
        };
        let listener = UnixListener::bind(&launch.socket).map_err(bind_error)?;
        let bound = BoundSocket::bound(&launch.socket).map_err(bind_error)?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ =
                std::fs::set_permissions(&launch.socket, std::fs::Permissions::from_mode(0o600));
        }

        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_service_status(
                "baton.plugin.v1.Plugin",
                tonic_health::ServingStatus::Serving,
            )
            .await;

        let stop = Arc::new(Notify::new());
        let service = PluginService {
            plugin: Arc::new(plugin),
            stop: stop.clone(),
            services: Arc::new(names),
            applied: Arc::default(),
        };
        let token: Arc<str> = Arc::from(launch.token.as_str());
        let check: Arc<Check> = Arc::new(move |headers| check_token(headers, &token));
        let invoke = UnaryRoute::new(
            INVOKE_PATH,
            Some(check.clone()),
            MAX_MESSAGE_BYTES,
            service.invoke_by_hand(),
        );
        // What reflection may list: the services Describe names.
        let listed = service.services.clone();
        let plugin_server = PluginServer::new(service)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let mut routes = Router::new()
            .add_service(health_service)
            .add_checked_service(plugin_server, check.clone());
        for add in services {
            routes = add(routes, check.clone());
        }
        // With no application service there is nothing a client may call to describe.
        if !reflection.is_empty() && !listed.is_empty() {
            // Only the application services are listed: baton's own service and
            // health are the host's to call, never a client's, and reflection itself
            // is not listed, as in the other SDKs.
            let mut builder =
                tonic_reflection::server::Builder::configure().include_reflection_service(false);
            for name in listed.iter() {
                builder = builder.with_service_name(name.clone());
            }
            for set in reflection {
                builder = builder.register_encoded_file_descriptor_set(set);
            }
            match builder.build_v1() {
                Ok(service) => {
                    routes = routes.add_checked_service(service, check.clone());
                }
                // A descriptor set that does not decode is the author's bug: say so.
                Err(e) => tracing::error!("cannot serve reflection: {e}"),
            }
        }

        print_handshake(&launch)?;
        // The thread count and spin in the log, so an operator who set them can see they took.
        let workers = tokio::runtime::Handle::current().metrics().num_workers();
        let spin = spin_from_env(std::env::var(env::SPIN_US).ok().as_deref());
        tracing::info!(
            socket = %launch.socket.display(),
            workers,
            spin_us = spin.as_micros() as u64,
            "serving"
        );

        let shutdown = async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            let sigterm = async {
                match term.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = stop.notified() => tracing::info!("shutdown requested by the host"),
                _ = sigterm => tracing::info!("SIGTERM received, shutting down"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
            }
        };
        // Frames and windows far above the protocol's 16 KiB / 64 KiB defaults: a state
        // streams through without waiting for window updates, in few frames. On one
        // thread, calls run in their connection's task (no hand-off per call); on
        // several, each gets a task, so a CPU-heavy one holds up no other.
        let config = ServerConfig::new("plugin")
            .windows(TRANSFER_WINDOW_BYTES, TRANSFER_WINDOW_BYTES * 2)
            .spawn_calls(workers > 1)
            .spin(spin)
            .unary(invoke);
        let incoming = UnixListenerStream::new(listener)
            .map(|accepted| accepted.and_then(baton_transport::QuietUnix::new));
        let result = baton_transport::serve(config, incoming, routes, shutdown).await;
        bound.remove();
        let Ok(()) = result;
        tracing::info!("stopped");
        Ok(())
    }
}

/// How long to poll for the next call before sleeping: [`env::SPIN_US`] if it is a
/// count of µs (bounded by [`baton_transport::MAX_SPIN`]), else none.
fn spin_from_env(var: Option<&str>) -> Duration {
    let Some(text) = var else {
        return Duration::ZERO;
    };
    match text.trim().parse::<u64>() {
        Ok(us) => Duration::from_micros(us).min(baton_transport::MAX_SPIN),
        Err(_) => {
            tracing::warn!(
                "{}={text:?} is not a count of µs; not spinning",
                env::SPIN_US
            );
            Duration::ZERO
        }
    }
}

/// The worker count to serve on: [`WORKERS_ENV`]'s value (`var`) if it is one, else
/// the plugin's own choice, with a warning for a value that is not a count.
fn workers_from_env(var: Option<&str>, configured: usize) -> usize {
    let Some(text) = var else {
        return configured;
    };
    match text.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_WORKERS).contains(&n) => n,
        _ => {
            tracing::warn!(
                "{WORKERS_ENV}={text:?} is not a worker count from 1 to {MAX_WORKERS}; \
                 serving on {configured}"
            );
            configured
        }
    }
}

/// One thread unless more are asked for. A current-thread runtime serves a call without
/// handing it between threads: on a small VM each cross-thread wake-up costs tens of µs,
/// more than the rest of a small call. Its concurrency is the same for handlers that
/// await; only CPU-heavy or blocking handlers need workers (or `spawn_blocking`).
fn build_runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    }
}

fn print_handshake(launch: &Launch) -> Result<(), LaunchError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "baton|{PROTOCOL_VERSION}|unix|{}",
        launch.socket.display()
    )
    .and_then(|()| out.flush())
    .map_err(LaunchError::Handshake)
}

/// The gRPC and HTTP/2 plumbing, whose debug logs are frames and connection states.
const TRANSPORT_CRATES: [&str; 6] = [
    "h2",
    "hyper",
    "hyper_util",
    "tower",
    "tonic",
    "baton_transport",
];

/// `BATON_LOG` (which plugins inherit from the host in dev mode) as the host reads it:
/// a bare level is for the plugin's code; the transport crates stay at `warn` at most
/// unless named, so that `BATON_LOG=debug` does not bury the plugin's lines in frames.
fn log_filter(spec: &str) -> String {
    use tracing_subscriber::filter::LevelFilter;
    let directives: Vec<&str> = spec.split(',').map(str::trim).collect();
    let Some(level) = directives
        .iter()
        .filter(|d| !d.contains('='))
        .find_map(|d| d.parse::<LevelFilter>().ok())
    else {
        return spec.to_owned();
    };
    let quiet = level.min(LevelFilter::WARN).to_string().to_lowercase();
    let mut filter = spec.to_owned();
    for krate in TRANSPORT_CRATES {
        let named = directives.iter().any(|d| {
            let target = d.split(['=', '[']).next().unwrap_or_default();
            target == krate || target.starts_with(&format!("{krate}::"))
        });
        if !named {
            filter.push_str(&format!(",{krate}={quiet}"));
        }
    }
    filter
}

fn init_logging() {
    let spec = std::env::var("BATON_LOG").unwrap_or_else(|_| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(log_filter(&spec))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // The host timestamps every captured line, so the plugin's own clock is left out.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .without_time()
        .try_init();
}

/// The launch token check in front of every service but health: exactly one token
/// header, holding the token. A second header is refused even when both are right, so
/// no proxy's or library's choice of which one counts can matter.
fn check_token(headers: &http::HeaderMap, token: &str) -> Result<(), Status> {
    let mut got = headers.get_all(TOKEN_METADATA_KEY).iter();
    match (got.next(), got.next()) {
        (Some(got), None)
            if !token.is_empty() && constant_time_eq(got.as_bytes(), token.as_bytes()) =>
        {
            Ok(())
        }
        (Some(_), Some(_)) => Err(Status::unauthenticated(
            "more than one x-baton-token header: a call carries exactly one",
        )),
        (Some(_), None) => Err(Status::unauthenticated("wrong x-baton-token")),
        (None, _) => Err(Status::unauthenticated(
            "missing x-baton-token metadata: only the baton host that launched this plugin may call it",
        )),
    }
}

/// Compares without an early exit, so the time taken says nothing about the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::{
        MAX_WORKERS, build_runtime, check_token, log_filter, spin_from_env, workers_from_env,
    };
    use std::time::Duration;

    #[test]
    fn exactly_one_right_token_header_passes() {
        let headers = |tokens: &[&'static str]| {
            let mut map = tonic::codegen::http::HeaderMap::new();
            for token in tokens {
                map.append(
                    baton_proto::TOKEN_METADATA_KEY,
                    tonic::codegen::http::HeaderValue::from_static(token),
                );
            }
            map
        };
        assert!(check_token(&headers(&["t0k"]), "t0k").is_ok());
        for (tokens, expected) in [
            (&["t0k", "t0k"][..], "t0k"),
            (&["bad", "t0k"][..], "t0k"),
            (&["t0k", "bad"][..], "t0k"),
            (&["bad"][..], "t0k"),
            (&[][..], "t0k"),
            // A server given an empty token takes no call, not an empty header.
            (&[""][..], ""),
        ] {
            let refused = check_token(&headers(tokens), expected).expect_err("refused");
            assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{tokens:?}");
        }
    }

    #[test]
    fn the_spin_comes_from_the_environment_bounded_and_bad_values_spin_not() {
        assert_eq!(spin_from_env(None), Duration::ZERO);
        assert_eq!(spin_from_env(Some("200")), Duration::from_micros(200));
        assert_eq!(spin_from_env(Some(" 0 ")), Duration::ZERO);
        assert_eq!(spin_from_env(Some("99999")), baton_transport::MAX_SPIN);
        for bad in ["", "-5", "fast", "1.5"] {
            assert_eq!(spin_from_env(Some(bad)), Duration::ZERO, "{bad:?}");
        }
    }

    #[test]
    fn the_environment_overrides_the_plugins_worker_count_when_it_is_a_count() {
        assert_eq!(workers_from_env(None, 1), 1);
        assert_eq!(workers_from_env(None, 4), 4);
        assert_eq!(workers_from_env(Some("3"), 1), 3);
        assert_eq!(workers_from_env(Some(" 1 "), 4), 1);
        for bad in ["", "0", "-2", "many", "2.5", "1025"] {
            assert_eq!(workers_from_env(Some(bad), 2), 2, "{bad:?}");
        }
        assert_eq!(workers_from_env(Some("1024"), 1), MAX_WORKERS);
    }

    #[test]
    fn one_worker_is_a_current_thread_runtime_and_more_a_multi_thread_one() {
        use tokio::runtime::RuntimeFlavor;
        for (workers, flavor, threads) in [
            (1, RuntimeFlavor::CurrentThread, 1),
            (3, RuntimeFlavor::MultiThread, 3),
        ] {
            let rt = build_runtime(workers).expect("a runtime");
            let (got_flavor, got_threads) = rt.block_on(async {
                let handle = tokio::runtime::Handle::current();
                (handle.runtime_flavor(), handle.metrics().num_workers())
            });
            assert_eq!((got_flavor, got_threads), (flavor, threads));
        }
    }

    #[test]
    fn a_bare_level_leaves_the_transport_at_warn_unless_named() {
        assert_eq!(
            log_filter("debug"),
            "debug,h2=warn,hyper=warn,hyper_util=warn,tower=warn,tonic=warn,baton_transport=warn"
        );
        let named = log_filter("trace,h2=debug");
        assert!(
            named.contains("h2=debug") && !named.contains("h2=warn"),
            "{named}"
        );
        assert_eq!(log_filter("my_plugin=debug"), "my_plugin=debug");
    }
}
