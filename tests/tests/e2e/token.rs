//! Only the host that launched a plugin can call it.

use std::path::Path;
use std::time::Duration;

use baton_proto::plugin::plugin_client::PluginClient;
use baton_proto::plugin::{DescribeRequest, InvokeRequest};
use baton_tests::{TestHost, plugin, unix_channel};

#[tokio::test]
async fn calls_without_the_launch_token_are_refused() {
    let host = TestHost::start(&plugin("counter", "counter", &[], "")).await;
    let status = host.serving("counter", Duration::from_secs(10)).await;
    let channel = unix_channel(Path::new(&status.socket))
        .await
        .expect("connect to the plugin socket");
    let mut client = PluginClient::new(channel.clone());

    let err = client
        .invoke(InvokeRequest {
            method: "incr".into(),
            payload: "stolen".into(),
            metadata: Default::default(),
        })
        .await
        .expect_err("no token");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert!(err.message().contains("x-baton-token"), "{}", err.message());
    assert_eq!(
        client
            .describe(DescribeRequest {})
            .await
            .expect_err("no token")
            .code(),
        tonic::Code::Unauthenticated
    );

    let mut request = tonic::Request::new(InvokeRequest {
        method: "incr".into(),
        payload: "stolen".into(),
        metadata: Default::default(),
    });
    request
        .metadata_mut()
        .insert("x-baton-token", "0".repeat(64).parse().expect("metadata"));
    let err = client.invoke(request).await.expect_err("wrong token");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    // Nothing was counted by the refused calls.
    assert_eq!(host.call_text("counter", "get", "stolen").await, "0");

    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&status.socket)
            .expect("socket")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "plugin socket mode {mode:o}");
    }
}
