//! Forwarding calls to plugins' application services through the daemon: a gRPC call on
//! the control socket to any service but `baton.host.v1.Supervisor`, carrying metadata
//! `x-baton-plugin: NAME`, goes to that plugin as it is — frames in, frames out, no
//! descriptors needed — through a [`PluginChannel`], so it waits, holds, counts and
//! fails exactly as a library caller's would. Only the services the plugin describes
//! go through (see `forward_refusal.rs`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http;
use tower::Service;

use crate::calls::channel::PluginChannel;
use crate::calls::plugin_set::PluginSet;

use super::forward_refusal as refusal;
pub use super::forward_refusal::PLUGIN_METADATA_KEY;

/// The control API's own service: never forwarded.
const SUPERVISOR_PREFIX: &str = "/baton.host.v1.Supervisor/";
/// gRPC reflection, both versions: the daemon's own unless a plugin is named.
const REFLECTION_PREFIXES: [&str; 2] = [
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// Wraps the control socket's router: see the module's documentation.
#[derive(Clone)]
pub struct ForwardLayer {
    plugins: PluginSet,
}

impl ForwardLayer {
    /// Forwards to these plugins, by name, as the set is at each call.
    pub(crate) fn new(plugins: PluginSet) -> Self {
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
        let answer = |status: Status| -> Answer<S::Error> {
            Box::pin(async move { Ok(status.into_http()) })
        };
        let path = request.uri().path();
        if path.starts_with(SUPERVISOR_PREFIX) {
            // The control API's own calls, whatever metadata they carry.
            return Box::pin(self.inner.call(request));
        }
        if REFLECTION_PREFIXES.iter().any(|p| path.starts_with(p))
            && !request.headers().contains_key(PLUGIN_METADATA_KEY)
        {
            // Reflection naming no plugin describes the control API itself.
            return Box::pin(self.inner.call(request));
        }
        let name = match request
            .headers()
            .get(PLUGIN_METADATA_KEY)
            .map(|v| v.to_str())
        {
            Some(Ok(name)) => name.to_owned(),
            Some(Err(_)) => {
                return answer(Status::invalid_argument(format!(
                    "{PLUGIN_METADATA_KEY} is not a plugin name (not visible ASCII)"
                )));
            }
            // The router behind serves the Supervisor alone: this call was meant for a
            // plugin, and the message says how to name it.
            None => return answer(refusal::no_header(path, &self.plugins)),
        };
        let Some(handle) = self.plugins.get(&name) else {
            return answer(refusal::no_such_plugin(&name, path, &self.plugins));
        };
        let whole = request.uri().path_and_query().map_or(path, |p| p.as_str());
        let Some(service) = refusal::service_of(whole) else {
            return answer(refusal::not_a_method(&name, whole));
        };
        let serving = handle.serving_now();
        let described = serving.as_deref().map(|live| &live.services);
        if let Some(denied) = refusal::supervisors_own(&name, service, described) {
            return answer(denied);
        }
        // Whether the plugin describes the service is judged once a generation serves
        // the call, against that generation's Describe.
        let mut channel = PluginChannel::described_only(handle, self.plugins.clone());
        Box::pin(async move {
            match channel.call(request).await {
                Ok(response) => Ok(response),
                Err(never) => match never {},
            }
        })
    }
}
