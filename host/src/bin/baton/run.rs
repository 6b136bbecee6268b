//! `baton run`: the daemon. It loads the config, starts the host and serves the control
//! API until SIGINT or SIGTERM, then stops the plugins and cleans up. SIGHUP (and the
//! control API's `ReloadConfig`) reads the config file again and applies the difference.

use std::path::PathBuf;
use std::process::ExitCode;

use baton_host::daemon::control::{self, ControlService, ReloadConfigCall};
use baton_host::{Config, Host};
use baton_transport::socket_file::SocketPathError;

use crate::runtime;

/// Exit code for a configuration the host cannot use (EX_USAGE).
pub(crate) const EXIT_CONFIG: u8 = 64;
/// How long control clients get to finish after the plugins have stopped; idle
/// client connections would otherwise hold the daemon open.
const CONTROL_DRAIN: std::time::Duration = std::time::Duration::from_secs(1);

/// The crates whose logs are baton's own: what a bare level in `BATON_LOG` is about.
const BATON_CRATES: [&str; 3] = ["baton", "baton_host", "baton_proto"];
/// The gRPC and HTTP/2 plumbing: its debug logs are frames and connection states, a
/// flood that buries baton's own. Kept at `warn` unless `BATON_LOG` names them.
const TRANSPORT_CRATES: [&str; 7] = [
    "h2",
    "hyper",
    "hyper_util",
    "tower",
    "tonic",
    "tonic_health",
    "baton_transport",
];

/// `BATON_LOG` as the filter means it: a bare level (`debug`, or the `info` in
/// `info,baton::plugin=trace`) sets baton's own crates to it, other crates to it or
/// `info` (the quieter), and the transport crates to `warn` at most, unless named;
/// anything else is as `EnvFilter` reads it.
fn log_filter(spec: &str) -> String {
    use tracing_subscriber::filter::LevelFilter;
    let mut bare = None;
    let mut named = Vec::new();
    for directive in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        match directive.parse::<LevelFilter>() {
            Ok(level) if !directive.contains('=') => bare = Some(level),
            _ => named.push(directive),
        }
    }
    let Some(level) = bare else {
        return spec.to_owned();
    };
    let names = |krate: &str| {
        named.iter().any(|d| {
            let target = d.split(['=', '[']).next().unwrap_or_default();
            target == krate || target.starts_with(&format!("{krate}::"))
        })
    };
    let word = |level: LevelFilter| level.to_string().to_lowercase();
    let mut filter = vec![word(level.min(LevelFilter::INFO))];
    filter.extend(BATON_CRATES.iter().map(|c| format!("{c}={}", word(level))));
    filter.extend(
        TRANSPORT_CRATES
            .iter()
            .filter(|c| !names(c))
            .map(|c| format!("{c}={}", word(level.min(LevelFilter::WARN)))),
    );
    filter.extend(named.iter().map(|d| d.to_string()));
    filter.join(",")
}

fn init_logging() {
    let spec = std::env::var("BATON_LOG").unwrap_or_else(|_| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(log_filter(&spec)).unwrap_or_else(|e| {
        eprintln!("warning: BATON_LOG={spec:?} is not a log filter ({e}); logging at info");
        tracing_subscriber::EnvFilter::new(log_filter("info"))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .init();
}

/// The control socket is 0600 already; checking the peer too keeps the bound on
/// connections meaningful if its mode is ever widened.
fn control_gate() -> baton_host::daemon::accept::Gate {
    let host_uid = nix::unistd::geteuid().as_raw();
    baton_host::daemon::accept::Gate {
        what: "control API",
        admits: std::sync::Arc::new(move |uid| uid == host_uid || uid == 0),
        max_total: baton_host::daemon::accept::share_of_descriptors(16, 256),
        // Its calls carry no token: `baton ctl events --follow` may idle for days.
        auth_deadline: None,
        owners: None,
    }
}

pub(crate) fn run(config_path: PathBuf) -> ExitCode {
    let config = match Config::load(&config_path) {
        Ok(c) => c,
        Err(e) => {
            // Every mistake, each on its own line.
            for line in e.to_string().lines() {
                eprintln!("error: {line}");
            }
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_logging();
    baton_host::daemon::raise_descriptor_limit();
    // The daemon mostly forwards calls; the plugins need the cores more. On 2 cores one
    // worker gave 1.6x lower daemon latency and 1.15x more throughput than two
    // (baton-bench, docs/performance.md).
    let workers = config.worker_threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
    });
    let rt = match runtime(workers) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async move {
        let (listener, bound) = match control::bind(&config.socket).await {
            Ok(l) => l,
            Err(e @ SocketPathError::NotASocket { .. }) => {
                // The config points at something that is not ours: a config mistake.
                tracing::error!(
                    "{}: field `socket`: cannot listen on the control socket: {e}",
                    config_path.display()
                );
                return ExitCode::from(EXIT_CONFIG);
            }
            Err(e) => {
                tracing::error!("cannot listen on the control socket: {e}");
                return ExitCode::FAILURE;
            }
        };
        let mut host = match baton_host::HostBuilder::new(&config)
            .with_pid_namespaces(baton_host::this_executable())
            .start()
            .await
        {
            Ok(h) => h,
            Err(e) => {
                tracing::error!("{e}");
                bound.remove();
                // The environment is configuration too: a runtime directory too long
                // for sockets is the operator's to fix, not a failure to retry.
                if matches!(e, baton_host::HostError::RuntimeDirTooLong { .. }) {
                    return ExitCode::from(EXIT_CONFIG);
                }
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(
            socket = %config.socket.display(),
            "control API listening; try: baton ctl --socket {} list",
            config.socket.display()
        );
        let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
        let (reloads, mut reload_calls) = tokio::sync::mpsc::channel(4);
        let control = ControlService::new(&host).with_config_reloads(reloads);
        let streams_end = control.streams_end();
        let invoke = control.invoke_route();
        // Calls for a plugin's own services go to it before the router sees them.
        let routes = baton_transport::Router::new().add_service(control.into_server());
        let routes = match ControlService::with_reflection(routes.clone()) {
            Ok(with) => with,
            Err(e) => {
                tracing::error!("the control API serves no gRPC reflection: {e}");
                routes
            }
        };
        let service = tower::Layer::layer(&baton_host::daemon::forward_layer(&host), routes);
        let server = tokio::spawn(baton_transport::serve(
            baton_transport::ServerConfig::new("control socket")
                .spin(std::time::Duration::from_micros(config.control_spin_us))
                .unary(invoke),
            baton_host::daemon::accept::incoming(listener, control_gate()),
            service,
            async {
                let _ = server_stopped.await;
            },
        ));
        notify_systemd(host.plugins().len());
        let mut hangups =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::error!("cannot watch for SIGHUP (config reloads): {e}");
                    None
                }
            };
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        loop {
            let call = tokio::select! {
                () = &mut shutdown => break,
                Some(()) = async {
                    match hangups.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                } => ReloadConfigCall {
                    by: "SIGHUP".into(),
                    allow_empty: false,
                    dry_run: false,
                    reply: tokio::sync::oneshot::channel().0,
                },
                Some(call) = reload_calls.recv() => call,
            };
            let outcome = reload_config(&mut host, &config_path, &call).await;
            let _ = call.reply.send(outcome);
        }
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        tracing::info!("shutting down");
        let _ = stop_server.send(());
        // Plugins stop first, so calls still in flight through the control API end
        // (with an error naming the plugin) instead of holding the server open.
        host.shutdown().await;
        // Followers of events and logs have seen the plugins stop; their streams end
        // cleanly now, which lets the server finish.
        streams_end.end();
        bound.remove();
        match tokio::time::timeout(CONTROL_DRAIN, server).await {
            Ok(Ok(Ok(()))) | Err(_) => ExitCode::SUCCESS,
            Ok(Ok(Err(e))) => {
                tracing::error!("control API failed: {e}");
                ExitCode::FAILURE
            }
            Ok(Err(e)) => {
                tracing::error!("control API task failed: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Reads the config file again, once it has stopped changing, and applies it to
/// `host`; a config with an error is refused whole (its message names the file, line
/// and column) and nothing changes. So is one without plugins unless `call` allows it,
/// and a dry run only says what would change.
async fn reload_config(
    host: &mut Host,
    path: &std::path::Path,
    call: &ReloadConfigCall,
) -> Result<baton_host::ConfigReload, String> {
    let by = &call.by;
    let what = if call.dry_run { "dry run" } else { "reload" };
    tracing::info!(
        "config {what} asked for by {by}: reading {}",
        path.display()
    );
    let config = match baton_host::config::load_settled(
        path,
        baton_host::config::CONFIG_SETTLE,
        baton_host::config::CONFIG_SETTLE_LIMIT,
    )
    .await
    {
        Ok(config) => config,
        Err(e) => {
            // The count comes first: a long list reaches a client cut to its first lines
            // (baton_transport::MAX_STATUS_MESSAGE_BYTES), and is whole in this log.
            let count = match &e {
                baton_host::config::SettleError::Config(e) => e.each().len(),
                baton_host::config::SettleError::StillChanging { .. } => 1,
            };
            let why = match count {
                1 => format!("the config was refused, nothing changed: {e}"),
                n => format!(
                    "the config was refused, nothing changed: {n} errors (all of them in the \
                     host's log, and from `baton validate {}`):\n{e}",
                    path.display()
                ),
            };
            tracing::error!("{why}");
            return Err(why);
        }
    };
    if call.dry_run {
        let plan = host.plan_config(&config, call.allow_empty);
        tracing::info!(
            "config dry run for {by}: {} change(s) would be made, none made",
            plan.changes.len()
        );
        return Ok(plan);
    }
    if !call.allow_empty
        && let Some(why) = host.refuses_as_empty(&config)
    {
        tracing::error!("config reload asked for by {by} refused: {why}");
        return Err(why);
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
    let outcome = Ok(host.reload_config(&config).await);
    let status = format!("serving {} plugins", host.plugins().len());
    let _ = sd_notify::notify(
        false,
        &[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&status),
        ],
    );
    outcome
}

/// Under systemd (`Type=notify`): READY once the control API serves, and WATCHDOG
/// pings at half the configured interval while the runtime is alive. Without
/// NOTIFY_SOCKET these do nothing.
fn notify_systemd(plugins: usize) {
    let status = format!("serving {plugins} plugins");
    if let Err(e) = sd_notify::notify(
        false,
        &[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&status),
        ],
    ) {
        tracing::warn!("cannot notify systemd: {e}");
    }
    // As sd_watchdog_enabled(3): WATCHDOG_PID, when set, must be this process.
    let usec = std::env::var("WATCHDOG_USEC")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    let for_us = std::env::var("WATCHDOG_PID")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .is_none_or(|pid| pid == std::process::id());
    if let Some(usec) = usec.filter(|&u| u > 0 && for_us) {
        let every = std::time::Duration::from_micros(usec / 2);
        tracing::info!("systemd watchdog enabled; pinging every {every:?}");
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
            }
        });
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot watch for SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

#[cfg(test)]
mod tests {
    use super::log_filter;

    #[test]
    fn a_bare_level_is_for_baton_and_keeps_the_transport_quiet() {
        let debug = log_filter("debug");
        for part in [
            "baton=debug",
            "baton_host=debug",
            "h2=warn",
            "hyper=warn",
            "tonic=warn",
            "baton_transport=warn",
        ] {
            assert!(debug.split(',').any(|d| d == part), "{part} in {debug}");
        }
        assert!(
            debug.starts_with("info,"),
            "other crates stay at info: {debug}"
        );
        let named = log_filter("trace,h2=debug,baton::plugin=info");
        assert!(
            named.contains("h2=debug") && !named.contains("h2=warn"),
            "{named}"
        );
        assert!(
            named.contains("baton::plugin=info") && named.contains("baton=trace"),
            "{named}"
        );
        assert!(
            log_filter("error").contains("hyper=error"),
            "quieter than warn stays so"
        );
        assert_eq!(
            log_filter("baton_host=debug"),
            "baton_host=debug",
            "no bare level"
        );
    }
}
