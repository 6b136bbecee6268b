//! The gRPC channel to a plugin's socket, and the token every call to it carries.

use std::path::Path;

use baton_proto::plugin::plugin_client::PluginClient;
use baton_proto::plugin::{InvokeRequest, InvokeResponse};
use hyper_util::rt::TokioIo;
use tonic::codegen::http::{HeaderName, HeaderValue};
use tonic::transport::{Channel, Endpoint};

/// A gRPC client for one generation, adding its token to every call.
pub type PluginRpc = PluginClient<TokenService<super::UnixClient>>;

/// Adds the launch token to each call's headers.
///
/// A tower service rather than a tonic `Interceptor`: an interceptor takes every request
/// apart into a `tonic::Request` and builds it again (cloning its URI, moving every
/// header into a new map), which callgrind showed costing more per call than adding one
/// header here. The header value is built once per launch; cloning it is a refcount bump.
#[derive(Clone)]
pub struct TokenService<S> {
    inner: S,
    name: HeaderName,
    token: HeaderValue,
}

impl<S> TokenService<S> {
    /// Wraps `inner`; `None` if the token cannot be a header value.
    pub fn new(inner: S, token: &str) -> Option<Self> {
        Some(Self {
            inner,
            name: HeaderName::from_static(baton_proto::TOKEN_METADATA_KEY),
            token: HeaderValue::try_from(token).ok()?,
        })
    }
}

/// `Invoke`'s path, with the origin HTTP/2 wants.
static INVOKE_URI: std::sync::LazyLock<tonic::codegen::http::Uri> =
    std::sync::LazyLock::new(|| {
        tonic::codegen::http::Uri::from_static("http://baton/baton.plugin.v1.Plugin/Invoke")
    });

impl TokenService<super::UnixClient> {
    /// `Plugin.Invoke` on this generation, made by hand rather than through the
    /// generated client (see `baton_transport::UnixClient::unary`): the call the host
    /// makes most, with the same bytes on the wire and the same statuses.
    pub async fn invoke(
        &self,
        request: &InvokeRequest,
        timeout: std::time::Duration,
        max_message: usize,
    ) -> Result<InvokeResponse, tonic::Status> {
        let mut headers = tonic::codegen::http::HeaderMap::with_capacity(4);
        headers.insert(
            HeaderName::from_static("grpc-timeout"),
            baton_transport::grpc_timeout_value(timeout),
        );
        headers.insert(self.name.clone(), self.token.clone());
        self.inner
            .unary_message(
                INVOKE_URI.clone(),
                headers,
                request,
                max_message,
                max_message,
            )
            .await
    }
}

impl<S, B> tower::Service<tonic::codegen::http::Request<B>> for TokenService<S>
where
    S: tower::Service<tonic::codegen::http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: tonic::codegen::http::Request<B>) -> Self::Future {
        req.headers_mut()
            .insert(self.name.clone(), self.token.clone());
        self.inner.call(req)
    }
}

/// A lazily connecting gRPC channel to a Unix socket; it reconnects by itself.
pub fn unix_channel(path: &Path) -> Channel {
    let path = path.to_owned();
    Endpoint::from_static("http://baton-plugin")
        // Frames and windows far above the protocol's 16 KiB / 64 KiB defaults: a state
        // streams through without waiting for window updates while calls are held.
        .max_frame_size(1 << 20)
        .initial_stream_window_size(8 << 20)
        .initial_connection_window_size(16 << 20)
        .connect_with_connector_lazy(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
}

/// The client for one generation on `channel`, carrying its token, and the same as a
/// plain transport; `None` if the token cannot be a header value.
pub(crate) fn plugin_rpc(
    channel: super::UnixClient,
    token: &str,
    max_message: usize,
) -> Option<(PluginRpc, TokenService<super::UnixClient>)> {
    let transport = TokenService::new(channel, token)?;
    let rpc = PluginClient::new(transport.clone())
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    Some((rpc, transport))
}
