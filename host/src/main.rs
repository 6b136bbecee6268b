//! The `baton` command: `baton run` is the daemon, `baton ctl` talks to a running one.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use baton_host::control::{self, ControlService};
use baton_host::{Config, Host};
use baton_proto::host::supervisor_client::SupervisorClient;
use baton_proto::host::{
    EventsRequest, InvokeRequest, ListRequest, LogsRequest, PluginState, ReloadRequest,
    StatusRequest,
};
use clap::{Parser, Subcommand};

/// Exit code for a configuration the host cannot use (EX_USAGE).
const EXIT_CONFIG: u8 = 64;
/// How long control clients get to finish after the plugins have stopped; idle
/// client connections would otherwise hold the daemon open.
const CONTROL_DRAIN: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Parser)]
#[command(
    name = "baton",
    version,
    about = "Run gRPC plugins as supervised child processes"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the host with the plugins of a config file, until SIGINT or SIGTERM.
    Run {
        /// The config file.
        #[arg(long, short, default_value = "baton.toml")]
        config: PathBuf,
    },
    /// Check that a plugin keeps the baton contract: launch it as a host would and
    /// report each check on a line, with the reason when it fails. Exit code 1 when
    /// anything fails.
    Check {
        /// A call to make before the snapshot check, to give the plugin some state;
        /// METHOD=PAYLOAD, repeatable.
        #[arg(long = "call", value_name = "METHOD=PAYLOAD")]
        calls: Vec<String>,
        /// How long start-up and each call may take.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
        /// How long the plugin may take to exit after Shutdown or SIGTERM.
        #[arg(long, default_value_t = 3000)]
        grace_ms: u64,
        /// The plugin's command and arguments (after `--`).
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Talk to a running host.
    Ctl {
        /// The host's control socket.
        #[arg(long, env = "BATON_SOCKET", default_value = "baton.sock")]
        socket: PathBuf,
        #[command(subcommand)]
        command: CtlCmd,
    },
}

#[derive(Subcommand)]
enum CtlCmd {
    /// One line per plugin: name, state, generation, pid, restarts, last error.
    List,
    /// Call PLUGIN's METHOD; the answer goes to stdout.
    Invoke {
        /// The plugin's configured name.
        plugin: String,
        /// The method.
        method: String,
        /// The payload as text, or `-` to read it from stdin. Empty if left out.
        payload: Option<String>,
    },
    /// A table per plugin: state, generation, pid, uptime, restarts, reloads, memory,
    /// CPU, calls, errors, last event.
    Status {
        /// Only this plugin.
        plugin: Option<String>,
        /// One JSON array, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// A plugin's recent output lines, kept by the host.
    Logs {
        /// The plugin's configured name.
        plugin: String,
        /// Keep printing new lines as they come, until interrupted.
        #[arg(long, short)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<u32>,
    },
    /// Hand PLUGIN over to a fresh process, keeping its state (also revives a failed one).
    Reload {
        /// The plugin's configured name.
        plugin: String,
    },
    /// Print lifecycle events as they happen, until interrupted.
    Events {
        /// Only this plugin's events.
        plugin: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Run { config } => run(config),
        Cmd::Ctl { socket, command } => ctl(socket, command),
        Cmd::Check {
            calls,
            timeout_ms,
            grace_ms,
            command,
        } => check(calls, timeout_ms, grace_ms, command),
    }
}

fn check(calls: Vec<String>, timeout_ms: u64, grace_ms: u64, command: Vec<String>) -> ExitCode {
    let mut parsed = Vec::new();
    for c in &calls {
        match c.split_once('=') {
            Some((method, payload)) => {
                parsed.push((method.to_owned(), payload.as_bytes().to_vec()))
            }
            None => {
                eprintln!("error: --call {c:?}: expected METHOD=PAYLOAD");
                return ExitCode::from(2);
            }
        }
    }
    let Some((program, args)) = command.split_first() else {
        eprintln!("error: give the plugin's command after `--`");
        return ExitCode::from(2);
    };
    let opts = baton_host::check::CheckOptions {
        command: PathBuf::from(program),
        args: args.to_vec(),
        calls: parsed,
        timeout: std::time::Duration::from_millis(timeout_ms),
        grace: std::time::Duration::from_millis(grace_ms),
    };
    let rt = match runtime(1) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let report = rt.block_on(baton_host::check::run(&opts));
    let mut failed = 0;
    for line in &report {
        let (word, text) = match &line.verdict {
            baton_host::check::Verdict::Pass(t) => ("pass", t),
            baton_host::check::Verdict::Fail(t) => {
                failed += 1;
                ("FAIL", t)
            }
            baton_host::check::Verdict::Skip(t) => ("skip", t),
        };
        println!("{word}  {:<24} {text}", line.name);
    }
    if failed == 0 {
        println!("all checks passed: {}", command.join(" "));
        ExitCode::SUCCESS
    } else {
        println!("{failed} check(s) failed: {}", command.join(" "));
        ExitCode::FAILURE
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BATON_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn runtime(workers: usize) -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        })
}

/// The control socket is 0600 already; checking the peer too keeps the bound on
/// connections meaningful if its mode is ever widened.
fn control_gate() -> baton_host::accept::Gate {
    let host_uid = nix::unistd::geteuid().as_raw();
    baton_host::accept::Gate {
        what: "control API",
        admits: std::sync::Arc::new(move |uid| uid == host_uid || uid == 0),
        max_total: baton_host::accept::share_of_descriptors(16, 256),
        // Its calls carry no token: `baton ctl events --follow` may idle for days.
        auth_deadline: None,
    }
}

fn run(config_path: PathBuf) -> ExitCode {
    let config = match Config::load(&config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_logging();
    baton_host::accept::raise_descriptor_limit();
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
        let listener = match control::bind(&config.socket).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(
                    "cannot listen on the control socket {}: {e}",
                    config.socket.display()
                );
                return ExitCode::FAILURE;
            }
        };
        let host = match Host::start(&config).await {
            Ok(h) => h,
            Err(e) => {
                tracing::error!("{e}");
                let _ = std::fs::remove_file(&config.socket);
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
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ControlService::new(&host).into_server())
                .serve_with_incoming_shutdown(
                    baton_host::accept::incoming(listener, control_gate()),
                    async {
                        let _ = server_stopped.await;
                    },
                ),
        );
        notify_systemd(host.plugins().len());
        shutdown_signal().await;
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        tracing::info!("shutting down");
        let _ = stop_server.send(());
        // Plugins stop first, so calls still in flight through the control API end
        // (with an error naming the plugin) instead of holding the server open.
        host.shutdown().await;
        let _ = std::fs::remove_file(&config.socket);
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

fn ctl(socket: PathBuf, command: CtlCmd) -> ExitCode {
    let rt = match runtime(1) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(ctl_async(&socket, command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn status_line(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

fn state_name(state: i32) -> &'static str {
    match PluginState::try_from(state) {
        Ok(PluginState::Starting) => "starting",
        Ok(PluginState::Serving) => "serving",
        Ok(PluginState::HandingOver) => "handing-over",
        Ok(PluginState::Crashed) => "crashed",
        Ok(PluginState::Failed) => "failed",
        Ok(PluginState::Stopping) => "stopping",
        _ => "unknown",
    }
}

fn status_json(p: &baton_proto::host::PluginStatus) -> serde_json::Value {
    serde_json::json!({
        "name": p.name,
        "state": state_name(p.state),
        "generation": p.generation,
        "pid": (p.pid != 0).then_some(p.pid),
        "uptime_ms": p.uptime_ms,
        "restarts": p.restarts,
        "reloads": p.reloads,
        "rss_bytes": (p.rss_bytes != 0).then_some(p.rss_bytes),
        "cpu_percent": p.cpu_percent,
        "calls": p.calls,
        "errors": p.errors,
        "last_event": p.last_event,
        "last_error": p.last_error,
        "version": p.plugin_version,
        "methods": p.methods,
        "socket": p.socket,
    })
}

fn human_duration(ms: u64) -> String {
    match ms / 1000 {
        0 if ms == 0 => "-".into(),
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn print_status_table(plugins: &[baton_proto::host::PluginStatus]) {
    println!(
        "{:<16} {:<12} {:>4} {:>8} {:>8} {:>8} {:>7} {:>8} {:>6} {:>8} {:>6}  LAST EVENT",
        "PLUGIN",
        "STATE",
        "GEN",
        "PID",
        "UPTIME",
        "RESTARTS",
        "RELOADS",
        "RSS",
        "CPU%",
        "CALLS",
        "ERRORS"
    );
    for p in plugins {
        let pid = if p.pid == 0 {
            "-".to_owned()
        } else {
            p.pid.to_string()
        };
        let rss = if p.rss_bytes == 0 {
            "-".to_owned()
        } else {
            format!("{:.1}M", p.rss_bytes as f64 / f64::from(1u32 << 20))
        };
        let last: String = p.last_event.chars().take(60).collect();
        println!(
            "{:<16} {:<12} {:>4} {:>8} {:>8} {:>8} {:>7} {:>8} {:>6.1} {:>8} {:>6}  {}",
            p.name,
            state_name(p.state),
            p.generation,
            pid,
            human_duration(p.uptime_ms),
            p.restarts,
            p.reloads,
            rss,
            p.cpu_percent,
            p.calls,
            p.errors,
            last
        );
    }
}

async fn ctl_async(socket: &std::path::Path, command: CtlCmd) -> Result<(), String> {
    let channel = control::connect(socket)
        .await
        .map_err(|e| format!("cannot reach a baton host at {}: {e}", socket.display()))?;
    let mut client = SupervisorClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    match command {
        CtlCmd::List => {
            let list = client
                .list(ListRequest {})
                .await
                .map_err(|s| status_line(&s))?
                .into_inner();
            println!(
                "{:<20} {:<13} {:>4} {:>8} {:>8}  LAST ERROR",
                "PLUGIN", "STATE", "GEN", "PID", "RESTARTS"
            );
            for p in list.plugins {
                let pid = if p.pid == 0 {
                    "-".to_owned()
                } else {
                    p.pid.to_string()
                };
                println!(
                    "{:<20} {:<13} {:>4} {:>8} {:>8}  {}",
                    p.name,
                    state_name(p.state),
                    p.generation,
                    pid,
                    p.restarts,
                    p.last_error
                );
            }
        }
        CtlCmd::Status { plugin, json } => {
            let plugins = match plugin {
                Some(plugin) => vec![
                    client
                        .status(StatusRequest { plugin })
                        .await
                        .map_err(|s| status_line(&s))?
                        .into_inner(),
                ],
                None => {
                    client
                        .list(ListRequest {})
                        .await
                        .map_err(|s| status_line(&s))?
                        .into_inner()
                        .plugins
                }
            };
            if json {
                let rows: Vec<serde_json::Value> = plugins.iter().map(status_json).collect();
                println!("{}", serde_json::Value::Array(rows));
            } else {
                print_status_table(&plugins);
            }
        }
        CtlCmd::Logs {
            plugin,
            follow,
            tail,
        } => {
            let mut stream = client
                .logs(LogsRequest {
                    plugin,
                    follow,
                    tail: tail.unwrap_or(0),
                })
                .await
                .map_err(|s| status_line(&s))?
                .into_inner();
            let mut out = std::io::stdout().lock();
            while let Some(line) = stream.message().await.map_err(|s| status_line(&s))? {
                writeln!(
                    out,
                    "gen={} {}: {}",
                    line.generation, line.stream, line.text
                )
                .and_then(|()| out.flush())
                .map_err(|e| format!("cannot write to stdout: {e}"))?;
            }
        }
        CtlCmd::Invoke {
            plugin,
            method,
            payload,
        } => {
            let payload = match payload.as_deref() {
                Some("-") => {
                    let mut buf = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut buf)
                        .map_err(|e| format!("cannot read the payload from stdin: {e}"))?;
                    buf
                }
                Some(text) => text.as_bytes().to_vec(),
                None => Vec::new(),
            };
            let reply = client
                .invoke(InvokeRequest {
                    plugin,
                    method,
                    payload: payload.into(),
                    metadata: Default::default(),
                })
                .await
                .map_err(|s| status_line(&s))?
                .into_inner();
            let mut out = std::io::stdout().lock();
            out.write_all(&reply.payload)
                .and_then(|()| {
                    if reply.payload.last() != Some(&b'\n')
                        && std::io::IsTerminal::is_terminal(&out)
                    {
                        out.write_all(b"\n")?;
                    }
                    out.flush()
                })
                .map_err(|e| format!("cannot write the answer to stdout: {e}"))?;
        }
        CtlCmd::Reload { plugin } => {
            let reply = client
                .reload(ReloadRequest {
                    plugin: plugin.clone(),
                })
                .await
                .map_err(|s| status_line(&s))?
                .into_inner();
            println!("{plugin}: generation {} serving", reply.generation);
        }
        CtlCmd::Events { plugin } => {
            let mut stream = client
                .events(EventsRequest {
                    plugin: plugin.unwrap_or_default(),
                })
                .await
                .map_err(|s| status_line(&s))?
                .into_inner();
            while let Some(e) = stream.message().await.map_err(|s| status_line(&s))? {
                println!(
                    "{} {} gen={} {}: {}",
                    e.unix_ms, e.plugin, e.generation, e.kind, e.message
                );
            }
        }
    }
    Ok(())
}
