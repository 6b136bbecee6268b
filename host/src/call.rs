//! `baton ctl call PLUGIN pkg.Service/Method JSON`: calls one method of a plugin's
//! application service by name, with a JSON request, through the daemon's forwarding,
//! and prints the answer (each message of a stream) as a JSON line. The method's types
//! come from the plugin's own gRPC reflection, so the CLI needs no descriptors.

use std::io::Read;

use baton_host::forward::PLUGIN_METADATA_KEY;
use baton_host::reflect::{DynamicCodec, descriptors};
use prost_reflect::DynamicMessage;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Sends every call to one plugin.
#[derive(Clone)]
struct ToPlugin(AsciiMetadataValue);

impl tonic::service::Interceptor for ToPlugin {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert(PLUGIN_METADATA_KEY, self.0.clone());
        Ok(request)
    }
}

pub(crate) async fn call(
    channel: Channel,
    plugin: &str,
    target: &str,
    json: Option<String>,
) -> Result<(), String> {
    let (service, method_name) = target
        .trim_start_matches('/')
        .rsplit_once('/')
        .ok_or_else(|| format!("{target:?} is not pkg.Service/Method"))?;
    let header = AsciiMetadataValue::try_from(plugin)
        .map_err(|_| format!("{plugin:?} is not a plugin name"))?;
    let routed = InterceptedService::new(channel, ToPlugin(header));
    let pool = descriptors(routed.clone(), service)
        .await
        .map_err(|e| format!("plugin {plugin}: {e}"))?;
    let described = pool.get_service_by_name(service).ok_or_else(|| {
        let known: Vec<String> = pool.services().map(|s| s.full_name().to_owned()).collect();
        format!(
            "plugin {plugin} describes no service {service} (it describes: {})",
            known.join(", ")
        )
    })?;
    let method = described
        .methods()
        .find(|m| m.name() == method_name)
        .ok_or_else(|| {
            let known: Vec<String> = described.methods().map(|m| m.name().to_owned()).collect();
            format!(
                "{service} has no method {method_name:?} (it has: {})",
                known.join(", ")
            )
        })?;
    if method.is_client_streaming() {
        return Err(format!(
            "{service}/{method_name} takes a stream of requests, which the command line cannot send"
        ));
    }
    let text = match json.as_deref() {
        None => "{}".to_owned(),
        Some("-") => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| format!("cannot read the request from stdin: {e}"))?;
            text
        }
        Some(text) => text.to_owned(),
    };
    let input = method.input();
    let mut reader = serde_json::Deserializer::from_str(&text);
    let request = DynamicMessage::deserialize(input.clone(), &mut reader)
        .and_then(|m| reader.end().map(|()| m))
        .map_err(|e| format!("the request is not a {} in JSON: {e}", input.full_name()))?;
    let path =
        tonic::codegen::http::uri::PathAndQuery::try_from(format!("/{service}/{method_name}"))
            .map_err(|e| format!("{target:?}: {e}"))?;
    let mut grpc = tonic::client::Grpc::new(routed);
    grpc.ready()
        .await
        .map_err(|e| format!("the host is not reachable: {e}"))?;
    let codec = DynamicCodec::new(method.output());
    let failed = |s: tonic::Status| format!("{:?}: {}", s.code(), s.message());
    let print = |message: &DynamicMessage| {
        serde_json::to_string(message)
            .map(|line| println!("{line}"))
            .map_err(|e| format!("cannot show the answer as JSON: {e}"))
    };
    if method.is_server_streaming() {
        let mut stream = grpc
            .server_streaming(tonic::Request::new(request), path, codec)
            .await
            .map_err(failed)?
            .into_inner();
        while let Some(message) = stream.message().await.map_err(failed)? {
            print(&message)?;
        }
    } else {
        let answer = grpc
            .unary(tonic::Request::new(request), path, codec)
            .await
            .map_err(failed)?
            .into_inner();
        print(&answer)?;
    }
    Ok(())
}
