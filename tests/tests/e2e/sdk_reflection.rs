//! Every SDK's reflection lists only what a client may call: the application services
//! the plugin's `Describe` lists, not baton's lifecycle service, health, nor reflection.

use baton_tests::{SDK_START, SDK_TEST_TOKEN, SdkPlugin, for_each_sdk, with_tokens};
use tonic::transport::Channel;

#[tokio::test]
async fn each_sdks_reflection_lists_only_the_application_services() {
    for_each_sdk(lists_only_its_services).await;
}

async fn lists_only_its_services(plugin: SdkPlugin) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut launched = plugin.launch(&dir.path().join("plugin.sock"), Some(SDK_TEST_TOKEN));
    launched.handshake(SDK_START).await?;
    let channel = launched.channel().await;
    let mut answered = 0;
    // Each version a plugin serves must say the same.
    for version in [Version::V1, Version::V1Alpha] {
        let Some(listed) = list_services(channel.clone(), version).await? else {
            continue;
        };
        answered += 1;
        if listed != plugin.services {
            return Err(format!(
                "reflection {version:?} lists {listed:?}, not {:?}",
                plugin.services
            ));
        }
    }
    if answered == 0 {
        return Err("no reflection served".into());
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Version {
    V1,
    V1Alpha,
}

/// The services `ListServices` names, sorted; `None` when the plugin does not serve
/// this version of reflection.
async fn list_services(channel: Channel, version: Version) -> Result<Option<Vec<String>>, String> {
    // The two versions' messages are alike field for field, in modules of their own.
    macro_rules! list_in {
        ($pb:path) => {{
            use pb::server_reflection_request::MessageRequest as Q;
            use pb::server_reflection_response::MessageResponse as R;
            use $pb as pb;
            let request = pb::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(Q::ListServices(String::new())),
            };
            let answer = pb::server_reflection_client::ServerReflectionClient::new(channel)
                .server_reflection_info(with_tokens(
                    tokio_stream::iter([request]),
                    &[SDK_TEST_TOKEN],
                ))
                .await;
            let first = match answer {
                Ok(stream) => stream.into_inner().message().await,
                Err(status) => Err(status),
            };
            match first {
                Err(status) if status.code() == tonic::Code::Unimplemented => return Ok(None),
                Ok(Some(pb::ServerReflectionResponse {
                    message_response: Some(R::ListServicesResponse(list)),
                    ..
                })) => list.service.into_iter().map(|s| s.name).collect::<Vec<_>>(),
                other => return Err(format!("ListServices ({version:?}) answered {other:?}")),
            }
        }};
    }
    let mut names = match version {
        Version::V1 => list_in!(tonic_reflection::pb::v1),
        Version::V1Alpha => list_in!(tonic_reflection::pb::v1alpha),
    };
    names.sort();
    Ok(Some(names))
}
