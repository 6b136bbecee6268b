//! The client side of the host services: a plugin calling back into its host.

use std::path::{Path, PathBuf};

use baton_proto::host::host_client::HostClient as HostRpc;
use baton_proto::host::{
    EmitEventRequest, KvDeleteRequest, KvGetRequest, KvListRequest, KvPutRequest, LogRequest,
};
use baton_proto::{TOKEN_METADATA_KEY, env};
use baton_transport::UnixClient;
use bytes::Bytes;
use tonic::Status;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;

pub use baton_proto::host::LogLevel;

/// Matches the host's message limit, so a large value fails on the host's size check,
/// which names the limit, rather than in the transport.
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// A channel to the host-services socket that adds the launch token to every call. Give
/// it to the client of a service the embedding program offers:
/// `MyDbClient::new(host.channel())`.
pub type HostChannel = InterceptedService<UnixClient, AddToken>;

/// Adds the launch token to each call.
#[derive(Clone)]
pub struct AddToken(AsciiMetadataValue);

impl Interceptor for AddToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        req.metadata_mut()
            .insert(TOKEN_METADATA_KEY, self.0.clone());
        Ok(req)
    }
}

/// Why the host services cannot be reached.
#[derive(Debug, thiserror::Error)]
pub enum HostClientError {
    /// A variable the host sets is missing: not started by a host (or by an old one).
    #[error(
        "{0} is not set: the host services are there only for a plugin started by a baton host"
    )]
    MissingEnv(&'static str),
    /// The token cannot be sent as gRPC metadata.
    #[error("{} is not a valid token", env::TOKEN)]
    BadToken,
    /// The socket did not answer.
    #[error("cannot connect to the host services at {}: {source}", path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: baton_transport::NotSent,
    },
}

impl From<HostClientError> for Status {
    fn from(e: HostClientError) -> Self {
        Status::unavailable(e.to_string())
    }
}

/// A plugin's client of its host's services (`baton.host.v1.Host`): log through the
/// host, keep keys and values that outlive this process, and emit events. Cheap to clone.
///
/// ```no_run
/// # async fn demo() -> Result<(), baton_plugin_sdk::Status> {
/// use baton_plugin_sdk::{HostClient, LogLevel};
///
/// let host = HostClient::from_env().await?;
/// host.kv_put("greeting", "hello").await?;
/// host.log(LogLevel::Info, "greeting saved", [("key", "greeting")]).await?;
/// host.emit_event("greeting_saved", "a new greeting").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct HostClient {
    rpc: HostRpc<HostChannel>,
    channel: HostChannel,
}

impl std::fmt::Debug for HostClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostClient").finish_non_exhaustive()
    }
}

impl HostClient {
    /// Connects to the socket in `BATON_HOST_SOCKET` with the token in
    /// `BATON_PLUGIN_TOKEN`, both set by the host that launched this process.
    pub async fn from_env() -> Result<Self, HostClientError> {
        let var = |name| std::env::var_os(name).ok_or(HostClientError::MissingEnv(name));
        let socket = PathBuf::from(var(env::HOST_SOCKET)?);
        let token = var(env::TOKEN)?;
        let token = token.to_str().ok_or(HostClientError::BadToken)?;
        Self::connect(&socket, token).await
    }

    /// Connects to a host-services socket with a given token.
    pub async fn connect(socket: &Path, token: &str) -> Result<Self, HostClientError> {
        let token: AsciiMetadataValue = token.parse().map_err(|_| HostClientError::BadToken)?;
        // baton's own client: each call written from the caller's task, the socket
        // registered for reads only (docs/performance.md); connected now so that an
        // unreachable socket is reported here rather than at the first call.
        let channel = UnixClient::new(socket);
        channel
            .connect()
            .await
            .map_err(|source| HostClientError::Connect {
                path: socket.to_owned(),
                source,
            })?;
        let channel = InterceptedService::new(channel, AddToken(token));
        let rpc = HostRpc::new(channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Self { rpc, channel })
    }

    /// The token-adding channel, for clients of services the embedding program offers.
    pub fn channel(&self) -> HostChannel {
        self.channel.clone()
    }

    /// Writes a line to the host's log, tagged with this plugin's name and generation.
    pub async fn log<K, V>(
        &self,
        level: LogLevel,
        message: impl Into<String>,
        fields: impl IntoIterator<Item = (K, V)>,
    ) -> Result<(), Status>
    where
        K: Into<String>,
        V: Into<String>,
    {
        let request = LogRequest {
            level: level as i32,
            message: message.into(),
            fields: fields
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        };
        self.rpc.clone().log(request).await?;
        Ok(())
    }

    /// The value of `key` in this plugin's key-value store, if set.
    pub async fn kv_get(&self, key: &str) -> Result<Option<Bytes>, Status> {
        let reply = self
            .rpc
            .clone()
            .kv_get(KvGetRequest { key: key.into() })
            .await?
            .into_inner();
        Ok(reply.found.then_some(reply.value))
    }

    /// Sets `key` to `value` in this plugin's key-value store.
    pub async fn kv_put(&self, key: &str, value: impl Into<Bytes>) -> Result<(), Status> {
        let request = KvPutRequest {
            key: key.into(),
            value: value.into(),
        };
        self.rpc.clone().kv_put(request).await?;
        Ok(())
    }

    /// Removes `key`; returns whether it was set.
    pub async fn kv_delete(&self, key: &str) -> Result<bool, Status> {
        let reply = self
            .rpc
            .clone()
            .kv_delete(KvDeleteRequest { key: key.into() })
            .await?;
        Ok(reply.into_inner().existed)
    }

    /// Every key starting with `prefix`, in byte order (fetched page by page).
    pub async fn kv_list(&self, prefix: &str) -> Result<Vec<String>, Status> {
        let mut keys: Vec<String> = Vec::new();
        loop {
            let request = KvListRequest {
                prefix: prefix.into(),
                start_after: keys.last().cloned().unwrap_or_default(),
                limit: 0,
            };
            let page = self.rpc.clone().kv_list(request).await?.into_inner();
            // An empty page that claims more would repeat forever.
            let done = !page.more || page.keys.is_empty();
            keys.extend(page.keys);
            if done {
                return Ok(keys);
            }
        }
    }

    /// Publishes an event of kind `plugin:<kind>` on the host's event stream.
    pub async fn emit_event(&self, kind: &str, message: impl Into<String>) -> Result<(), Status> {
        let request = EmitEventRequest {
            kind: kind.into(),
            message: message.into(),
        };
        self.rpc.clone().emit_event(request).await?;
        Ok(())
    }
}
