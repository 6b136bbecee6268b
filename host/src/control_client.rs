//! A Rust program's client of a daemon's control socket: `Invoke` made by hand
//! (`baton_transport::UnixClient::unary_message`), so that the first hop of a call
//! through the daemon costs what the daemon's own call to the plugin costs, and the
//! generated `Supervisor` client, on the same connection, for everything else.

use std::path::Path;
use std::time::Duration;

use baton_proto::host::supervisor_client::SupervisorClient;
use baton_proto::host::{InvokeRequest, InvokeResponse};
use baton_transport::UnixClient;
use tonic::Status;
use tonic::codegen::http::{HeaderMap, HeaderName, Uri};

use crate::invoke_size::ALLOWANCE;
use crate::message_limit::MAX_MESSAGE_BYTES;

/// `Invoke`'s path, with the origin HTTP/2 wants.
static INVOKE_URI: std::sync::LazyLock<Uri> =
    std::sync::LazyLock::new(|| Uri::from_static("http://baton/baton.host.v1.Supervisor/Invoke"));

/// A connection to a daemon's control socket. Cheap to clone: clones share it.
#[derive(Clone, Debug)]
pub struct ControlClient {
    inner: UnixClient,
    max_message: usize,
    timeout: Option<Duration>,
}

impl ControlClient {
    /// Connects to the control socket at `path`, once, at once: a missing or dead daemon
    /// is reported here. Later calls reconnect by themselves.
    pub async fn connect(path: &Path) -> Result<Self, std::io::Error> {
        let inner = UnixClient::new(path);
        inner
            .connect()
            .await
            .map_err(|e| std::io::Error::other(format!("{}: {}", path.display(), e.0)))?;
        Ok(Self {
            inner,
            max_message: MAX_MESSAGE_BYTES + ALLOWANCE,
            timeout: None,
        })
    }

    /// The largest answer taken (requests are the daemon's to judge); by default the
    /// host's default `max_message_bytes` and room around it.
    pub fn max_message(mut self, bytes: usize) -> Self {
        self.max_message = bytes;
        self
    }

    /// A deadline each call carries (`grpc-timeout`): the daemon gives up on the call
    /// when it passes, and the caller gets DEADLINE_EXCEEDED.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Calls `request.method` of `request.plugin` through the daemon, with the same
    /// outcomes as the generated client's `invoke`.
    pub async fn invoke(&self, request: InvokeRequest) -> Result<InvokeResponse, Status> {
        let mut headers = HeaderMap::with_capacity(3);
        if let Some(timeout) = self.timeout {
            headers.insert(
                HeaderName::from_static("grpc-timeout"),
                baton_transport::grpc_timeout_value(timeout),
            );
        }
        // Any request goes: the daemon judges its size against its plugin's limit,
        // naming the plugin and counting the call, which a refusal here could not.
        self.inner
            .unary_message(
                INVOKE_URI.clone(),
                headers,
                &request,
                usize::MAX,
                self.max_message,
            )
            .await
    }

    /// The generated client on this connection, for the rest of the control API.
    pub fn supervisor(&self) -> SupervisorClient<UnixClient> {
        SupervisorClient::new(self.inner.clone())
            .max_decoding_message_size(self.max_message)
            .max_encoding_message_size(self.max_message)
    }
}
