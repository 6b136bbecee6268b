//! Calls to a plugin's services through a host's daemon, as an outside program makes
//! them: any generated client on the control socket, `x-baton-plugin` on every call.

use std::path::Path;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::unix_channel;

/// Adds `x-baton-plugin: NAME` to every call; no header at all when `None`.
#[derive(Clone)]
pub struct ToPlugin(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for ToPlugin {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(name) = &self.0 {
            request
                .metadata_mut()
                .insert("x-baton-plugin", name.clone());
        }
        Ok(request)
    }
}

/// A channel for any generated client (`FooClient::new(...)`) to the control socket at
/// `socket`, naming `plugin` in `x-baton-plugin` on every call, or naming none.
pub async fn through_daemon(
    socket: &Path,
    plugin: Option<&str>,
) -> InterceptedService<Channel, ToPlugin> {
    let channel = unix_channel(socket)
        .await
        .expect("connect to the control socket");
    let name = plugin.map(|p| p.parse().expect("a plugin name is a header value"));
    InterceptedService::new(channel, ToPlugin(name))
}
