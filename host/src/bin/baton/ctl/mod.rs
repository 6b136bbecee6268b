//! `baton ctl`: the command-line client of a running host's control API.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use baton_host::daemon::control;
use baton_proto::host::supervisor_client::SupervisorClient;
use baton_proto::host::{InvokeRequest, ListRequest, LogsRequest, ReloadRequest, StatusRequest};
use clap::{Args, Subcommand};
use tonic::transport::Channel;

use crate::lifecycle_cmd::Lifecycle;
use crate::runtime;

mod follow;
mod format;
mod top;

use follow::Output;

/// The largest message gRPC's framing can carry (a 32-bit length).
const MAX_GRPC_MESSAGE: usize = u32::MAX as usize;
/// The control socket when neither `--socket` nor `BATON_SOCKET` says otherwise.
const DEFAULT_SOCKET: &str = "baton.sock";

/// `baton ctl`'s own options, and what to do.
#[derive(Args)]
pub(crate) struct Ctl {
    /// The host's control socket (the `socket` of its config) [default: baton.sock].
    /// Accepted anywhere on the line.
    #[arg(long, global = true, env = "BATON_SOCKET", value_name = "PATH")]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    command: CtlCmd,
}

#[derive(Subcommand)]
pub(crate) enum CtlCmd {
    /// One line per plugin: name, state, generation, pid, restarts, last error (with
    /// its age).
    List {
        /// One JSON array, for scripts (as `status --json`).
        #[arg(long)]
        json: bool,
    },
    /// Call PLUGIN's METHOD; the answer goes to stdout (with a newline added on a
    /// terminal; piped, the bytes are exactly the answer).
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
    /// A plugin's recent output lines, kept by the host, each with the local time the
    /// host read it.
    Logs {
        /// The plugin's configured name.
        plugin: String,
        /// Keep printing new lines as they come, until interrupted or the host stops.
        #[arg(long, short)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<u32>,
        /// One JSON object per line (`time` in RFC 3339), for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Hand PLUGIN over to a fresh process, keeping its state (also revives a failed one).
    Reload {
        /// The plugin's configured name.
        plugin: String,
    },
    /// Print the last few lifecycle events, then new ones as they happen, until
    /// interrupted or the host stops.
    Events {
        /// Only this plugin's events.
        plugin: Option<String>,
        /// How many past events to print first (the host keeps 128 per plugin, and 128
        /// of those it emitted); 0 for none.
        #[arg(long, default_value_t = 10, value_name = "N")]
        last: u32,
        /// One JSON object per line (`time` in RFC 3339), for scripts.
        #[arg(long)]
        json: bool,
    },
    /// A live table of the plugins (state, generation, calls/s, errors, p99 latency,
    /// memory, CPU, last event), refreshed in place on a terminal (q to quit); a table
    /// per refresh when stdout is not a terminal.
    Top {
        /// Time between refreshes, in milliseconds.
        #[arg(long, default_value_t = 1000, value_name = "MS")]
        interval: u64,
        /// Print one table (its rates measured over one interval) and exit.
        #[arg(long)]
        once: bool,
    },
    /// Stop PLUGIN (after a final checkpoint, if it keeps them) and keep it stopped:
    /// its calls fail at once, saying who stopped it, until `start`.
    Stop {
        /// The plugin's configured name.
        plugin: String,
        /// Stop a plugin that keeps no checkpoints although its state is then lost
        /// (without this, such a stop is refused, saying so).
        #[arg(long)]
        discard_state: bool,
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
    /// Read the config file again, once it has been still for half a second, and apply
    /// the difference (as SIGHUP does): prints what changed; a config with an error is
    /// refused whole and nothing changes.
    ReloadConfig {
        /// Apply a config with no plugins, stopping every one (refused otherwise).
        #[arg(long)]
        allow_empty: bool,
        /// Print what the reload would add, remove and change; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub(crate) fn ctl(args: Ctl) -> ExitCode {
    let rt = match runtime(1) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(ctl_async(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn status_line(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// A channel to the host at `socket`, or what to do when none answers there.
async fn connect(socket: Option<&Path>) -> Result<Channel, String> {
    let path = socket.unwrap_or(Path::new(DEFAULT_SOCKET));
    control::connect(path).await.map_err(|e| {
        let whose = match socket {
            None => " (the default)",
            Some(_) => "",
        };
        format!(
            "cannot reach a baton host at {}{whose}: {e}\n\
             hint: start one with `baton run --config baton.toml`, or name its control \
             socket (the `socket` of its config) with `--socket PATH` or BATON_SOCKET=PATH",
            path.display()
        )
    })
}

async fn ctl_async(Ctl { socket, command }: Ctl) -> Result<(), String> {
    let channel = connect(socket.as_deref()).await?;
    // No limits of the CLI's own: the host judges each payload against its plugin's
    // max_message_bytes, answers OUT_OF_RANGE naming them, and counts the failed call.
    // A limit here would fail first, with other words and other figures, uncounted.
    let mut client = SupervisorClient::new(channel.clone())
        .max_decoding_message_size(MAX_GRPC_MESSAGE)
        .max_encoding_message_size(MAX_GRPC_MESSAGE);
    let output = |json| if json { Output::Json } else { Output::Text };
    match command {
        CtlCmd::Call {
            plugin,
            method,
            json,
        } => crate::call::call(channel, &plugin, &method, json).await?,
        CtlCmd::Stop {
            plugin,
            discard_state,
        } => {
            let stop = Lifecycle::Stop {
                plugin,
                discard_state,
            };
            crate::lifecycle_cmd::run(&mut client, stop).await?;
        }
        CtlCmd::Start { plugin } => {
            crate::lifecycle_cmd::run(&mut client, Lifecycle::Start(plugin)).await?;
        }
        CtlCmd::Restart { plugin, fresh } => {
            crate::lifecycle_cmd::run(&mut client, Lifecycle::Restart { plugin, fresh }).await?;
        }
        CtlCmd::ReloadConfig {
            allow_empty,
            dry_run,
        } => {
            let reload = Lifecycle::ReloadConfig {
                allow_empty,
                dry_run,
            };
            crate::lifecycle_cmd::run(&mut client, reload).await?;
        }
        CtlCmd::List { json } => {
            let plugins = list(&mut client).await.map_err(|s| status_line(&s))?;
            if json {
                print_json_array(&plugins);
            } else {
                format::print_list(&plugins);
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
                None => list(&mut client).await.map_err(|s| status_line(&s))?,
            };
            if json {
                print_json_array(&plugins);
            } else {
                format::print_status_table(&plugins);
            }
        }
        CtlCmd::Logs {
            plugin,
            follow,
            tail,
            json,
        } => {
            let request = LogsRequest {
                plugin,
                follow,
                tail: tail.unwrap_or(0),
            };
            follow::logs(&mut client, request, output(json)).await?;
        }
        CtlCmd::Events { plugin, last, json } => {
            follow::events(&mut client, plugin, last, output(json)).await?;
        }
        CtlCmd::Top { interval, once } => {
            let every = std::time::Duration::from_millis(interval.max(100));
            let socket = socket.unwrap_or_else(|| DEFAULT_SOCKET.into());
            top::run(&mut client, &socket, every, once).await?;
        }
        CtlCmd::Invoke {
            plugin,
            method,
            payload,
        } => invoke(&mut client, plugin, method, payload).await?,
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
    }
    Ok(())
}

pub(crate) async fn list(
    client: &mut SupervisorClient<Channel>,
) -> Result<Vec<baton_proto::host::PluginStatus>, tonic::Status> {
    Ok(client.list(ListRequest {}).await?.into_inner().plugins)
}

fn print_json_array(plugins: &[baton_proto::host::PluginStatus]) {
    let rows: Vec<serde_json::Value> = plugins.iter().map(format::status_json).collect();
    println!("{}", serde_json::Value::Array(rows));
}

async fn invoke(
    client: &mut SupervisorClient<Channel>,
    plugin: String,
    method: String,
    payload: Option<String>,
) -> Result<(), String> {
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
    let answer = client
        .invoke(InvokeRequest {
            plugin: plugin.clone(),
            method: method.clone(),
            payload: payload.into(),
            metadata: Default::default(),
        })
        .await;
    let reply = match answer {
        Ok(reply) => reply.into_inner(),
        Err(status) => {
            let mut message = status_line(&status);
            message.push_str(&methods_hint(client, &plugin, &method).await);
            return Err(message);
        }
    };
    let mut out = std::io::stdout().lock();
    out.write_all(&reply.payload)
        .and_then(|()| {
            // A terminal's prompt would follow the answer on its last line; a pipe gets
            // the payload's bytes exactly.
            if reply.payload.last() != Some(&b'\n') && std::io::IsTerminal::is_terminal(&out) {
                out.write_all(b"\n")?;
            }
            out.flush()
        })
        .map_err(|e| format!("cannot write the answer to stdout: {e}"))
}

/// When `method` is not one the plugin describes: the methods it does (from its
/// `Describe`), to add to the error; empty otherwise, or when the host cannot say.
async fn methods_hint(
    client: &mut SupervisorClient<Channel>,
    plugin: &str,
    method: &str,
) -> String {
    let Ok(status) = client
        .status(StatusRequest {
            plugin: plugin.to_owned(),
        })
        .await
    else {
        return String::new();
    };
    let methods = status.into_inner().methods;
    if methods.is_empty() || methods.iter().any(|m| m == method) {
        return String::new();
    }
    // On the error's line: scripts and logs take an error as one line.
    // The method is the caller's own, echoed back cut like the host's messages cut it.
    format!(
        " (plugin {plugin} describes no method {}; its methods: {})",
        baton_host::daemon::printable::quoted(method, 64),
        methods.join(", ")
    )
}
