//! `baton ctl`: the command-line client of a running host's control API.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use baton_host::control;
use baton_proto::host::supervisor_client::SupervisorClient;
use baton_proto::host::{
    EventsRequest, InvokeRequest, ListRequest, LogsRequest, PluginState, ReloadRequest,
    StatusRequest,
};
use clap::Subcommand;

use crate::lifecycle_cmd::Lifecycle;
use crate::runtime;

/// The largest message gRPC's framing can carry (a 32-bit length).
const MAX_GRPC_MESSAGE: usize = u32::MAX as usize;

#[derive(Subcommand)]
pub(crate) enum CtlCmd {
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
    /// Call one method of PLUGIN's application service by name with a JSON request
    /// (`-` reads it from stdin; `{}` if left out), printing the answer as JSON (one
    /// line per message of a stream). A method taking a stream takes JSON values one
    /// after another (from stdin as typed, with `-`). Uses the plugin's gRPC reflection.
    Call {
        /// The plugin's configured name.
        plugin: String,
        /// The method, as `package.Service/Method`.
        method: String,
        /// The request, in protobuf's JSON mapping (several, for a stream).
        json: Option<String>,
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
    /// Stop PLUGIN (after a final checkpoint, if it keeps them) and keep it stopped:
    /// its calls fail at once, saying who stopped it, until `start`.
    Stop {
        /// The plugin's configured name.
        plugin: String,
    },
    /// Start PLUGIN after a `stop` (from its last checkpoint, if it keeps them).
    Start {
        /// The plugin's configured name.
        plugin: String,
    },
    /// Replace PLUGIN's process: a handover that keeps its state, like `reload`.
    Restart {
        /// The plugin's configured name.
        plugin: String,
        /// Drop the state instead: the new process starts from nothing, and the
        /// plugin's checkpoints are deleted (for a build that cannot read the old state).
        #[arg(long)]
        fresh: bool,
    },
    /// Read the config file again and apply the difference (as SIGHUP does): prints
    /// what changed; a config with an error is refused whole and nothing changes.
    ReloadConfig,
}

pub(crate) fn ctl(socket: PathBuf, command: CtlCmd) -> ExitCode {
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
        Ok(PluginState::Stopped) => "stopped",
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
    // No limits of the CLI's own: the host judges each payload against its plugin's
    // max_message_bytes, answers OUT_OF_RANGE naming them, and counts the failed call.
    // A limit here would fail first, with other words and other figures, uncounted.
    let mut client = SupervisorClient::new(channel.clone())
        .max_decoding_message_size(MAX_GRPC_MESSAGE)
        .max_encoding_message_size(MAX_GRPC_MESSAGE);
    match command {
        CtlCmd::Call {
            plugin,
            method,
            json,
        } => crate::call::call(channel, &plugin, &method, json).await?,
        CtlCmd::Stop { plugin } => {
            crate::lifecycle_cmd::run(&mut client, Lifecycle::Stop(plugin)).await?;
        }
        CtlCmd::Start { plugin } => {
            crate::lifecycle_cmd::run(&mut client, Lifecycle::Start(plugin)).await?;
        }
        CtlCmd::Restart { plugin, fresh } => {
            crate::lifecycle_cmd::run(&mut client, Lifecycle::Restart { plugin, fresh }).await?;
        }
        CtlCmd::ReloadConfig => {
            crate::lifecycle_cmd::run(&mut client, Lifecycle::ReloadConfig).await?;
        }
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
                        .take(MAX_GRPC_MESSAGE as u64 + 1)
                        .read_to_end(&mut buf)
                        .map_err(|e| format!("cannot read the payload from stdin: {e}"))?;
                    if buf.len() > MAX_GRPC_MESSAGE {
                        return Err(format!(
                            "the payload on stdin is over {MAX_GRPC_MESSAGE} bytes, more than \
                             one gRPC message can carry"
                        ));
                    }
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
                    last: 0,
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
