//! Forwarding calls to plugins' application services through the daemon: a gRPC call on
//! the control socket to any service but `baton.host.v1.Supervisor`, carrying metadata
//! `x-baton-plugin: NAME`, goes to that plugin as it is — frames in, frames out, no
//! descriptors needed — through [`PluginHandle::channel`], so it waits, holds, counts
//! and fails exactly as a library caller's would.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http;
use tower::Service;

use crate::plugin_set::PluginSet;

/// The metadata key that names the plugin a forwarded call is for.
pub const PLUGIN_METADATA_KEY: &str = "x-baton-plugin";

/// The control API's own service: never forwarded.
const SUPERVISOR_PREFIX: &str = "/baton.host.v1.Supervisor/";

/// Wraps the control socket's router: see the module's documentation.
#[derive(Clone)]
pub struct ForwardLayer {
    plugins: PluginSet,
}

impl ForwardLayer {
    /// Forwards to these plugins, by name, as the set is at each call.
    pub fn new(plugins: PluginSet) -> Self {
        Self { plugins }
    }
}

impl<S> tower::Layer<S> for ForwardLayer {
    type Service = Forward<S>;

    fn layer(&self, inner: S) -> Forward<S> {
        Forward {
            inner,
            plugins: self.plugins.clone(),
        }
    }
}

/// The router, with calls for plugins taken out in front of it.
#[derive(Clone)]
pub struct Forward<S> {
    inner: S,
    plugins: PluginSet,
}

type Answer<E> = Pin<Box<dyn Future<Output = Result<http::Response<Body>, E>> + Send>>;

impl<S> Service<http::Request<Body>> for Forward<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Answer<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Answer<S::Error> {
        let wanted = request
            .headers()
            .get(PLUGIN_METADATA_KEY)
            .map(|v| v.to_str().map(str::to_owned));
        let ours = request.uri().path().starts_with(SUPERVISOR_PREFIX);
        let name = match wanted {
            Some(_) if ours => None,
            None => None,
            Some(Ok(name)) => Some(name),
            Some(Err(_)) => {
                let status = Status::invalid_argument(format!(
                    "{PLUGIN_METADATA_KEY} is not a plugin name (not visible ASCII)"
                ));
                return Box::pin(async move { Ok(status.into_http()) });
            }
        };
        let Some(name) = name else {
            let answer = self.inner.call(request);
            return Box::pin(answer);
        };
        match self.plugins.get(&name) {
            Some(handle) => {
                let mut channel = handle.channel();
                Box::pin(async move {
                    match channel.call(request).await {
                        Ok(response) => Ok(response),
                        Err(never) => match never {},
                    }
                })
            }
            None => {
                let status = Status::not_found(format!(
                    "no plugin named {} in this host (it has: {}); {PLUGIN_METADATA_KEY} names the plugin a call is for",
                    crate::printable::quoted(&name, 64),
                    self.plugins.names().join(", ")
                ));
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}
