//! `baton ctl events` and `baton ctl logs`: streams printed as they come, a line (or a
//! JSON object) each. When the host stops, a stream ends with a line saying so and
//! exit code 0: the host ends it cleanly, and a connection that closes under an open
//! stream (a host killed) counts the same.

use std::io::Write;

use baton_proto::host::supervisor_client::SupervisorClient;
use baton_proto::host::{EventsRequest, LogsRequest};
use tonic::transport::Channel;

use super::format;
use super::status_line;

/// How each item is printed.
#[derive(Clone, Copy)]
pub(crate) enum Output {
    Text,
    Json,
}

/// Whether the connection itself failed (the host went away), rather than the host
/// ending the call with a status of its own: transport failures carry their cause.
pub(crate) fn connection_lost(status: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(
        status.code(),
        Code::Unknown | Code::Unavailable | Code::Internal | Code::Cancelled
    ) && std::error::Error::source(status).is_some()
}

/// Where a stream's items go: stdout, line by line, so that a follower sees each at once.
struct Printer {
    out: std::io::Stdout,
}

/// Why printing stopped.
enum Stop {
    /// The reader went away (`| head`): not an error.
    ReaderGone,
    Failed(String),
}

impl Printer {
    fn line(&mut self, text: &str) -> Result<(), Stop> {
        let mut out = self.out.lock();
        writeln!(out, "{text}")
            .and_then(|()| out.flush())
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::BrokenPipe => Stop::ReaderGone,
                _ => Stop::Failed(format!("cannot write to stdout: {e}")),
            })
    }
}

/// Prints every item of `stream` until it ends. `endless`: the stream ends only when
/// the host stops, which is then said on stderr.
async fn print_all<T>(
    mut stream: tonic::Streaming<T>,
    endless: bool,
    what: &str,
    show: impl Fn(&T) -> String,
) -> Result<(), String> {
    let mut printer = Printer {
        out: std::io::stdout(),
    };
    loop {
        match stream.message().await {
            Ok(Some(item)) => match printer.line(&show(&item)) {
                Ok(()) => {}
                Err(Stop::ReaderGone) => return Ok(()),
                Err(Stop::Failed(why)) => return Err(why),
            },
            Ok(None) if endless => {
                eprintln!("the host is stopping: no more {what}");
                return Ok(());
            }
            Ok(None) => return Ok(()),
            Err(status) if connection_lost(&status) => {
                eprintln!(
                    "the host closed the connection (it stopped): no more {what} ({})",
                    status.message()
                );
                return Ok(());
            }
            Err(status) => return Err(status_line(&status)),
        }
    }
}

pub(crate) async fn events(
    client: &mut SupervisorClient<Channel>,
    plugin: Option<String>,
    last: u32,
    output: Output,
) -> Result<(), String> {
    let stream = client
        .events(EventsRequest {
            plugin: plugin.unwrap_or_default(),
            last,
        })
        .await
        .map_err(|s| status_line(&s))?
        .into_inner();
    print_all(stream, true, "events", |e| match output {
        Output::Text => format::event_line(e),
        Output::Json => format::event_json(e).to_string(),
    })
    .await
}

pub(crate) async fn logs(
    client: &mut SupervisorClient<Channel>,
    request: LogsRequest,
    output: Output,
) -> Result<(), String> {
    let follow = request.follow;
    let stream = client
        .logs(request)
        .await
        .map_err(|s| status_line(&s))?
        .into_inner();
    print_all(stream, follow, "log lines", |l| match output {
        Output::Text => format::log_line(l),
        Output::Json => format::log_json(l).to_string(),
    })
    .await
}
