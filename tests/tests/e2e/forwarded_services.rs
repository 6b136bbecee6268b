//! What the daemon forwards: a plugin's application services (those its `Describe`
//! lists) and reflection for them, never the plugin's own lifecycle service or its
//! health, which only its supervisor may call (the launch token goes with every
//! forwarded call, so the plugin cannot tell a client from its host).

use std::time::Duration;

use baton_proto::host::PluginState;
use baton_proto::plugin::plugin_client::PluginClient;
use baton_proto::plugin::{
    DescribeRequest, InvokeRequest, ShutdownRequest, SnapshotRequest, StateChunk,
};
use baton_tests::trigger::batch;
use baton_tests::trigger::trigger_client::TriggerClient;
use baton_tests::{TestHost, bin, through_daemon};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const TRIGGER: &str = "mydb.trigger.v1.Trigger";

/// Asserts that a forwarded call was refused as the supervisor's own, naming why.
fn refused<T: std::fmt::Debug>(what: &str, answer: Result<T, tonic::Status>) {
    let status = match answer {
        Ok(answer) => panic!("{what} was forwarded to the plugin: {answer:?}"),
        Err(status) => status,
    };
    assert_eq!(
        status.code(),
        tonic::Code::PermissionDenied,
        "{what}: {status:?}"
    );
    let message = status.message();
    assert!(
        message.contains("plugin trigger")
            && message.contains("only its supervisor calls")
            && message.contains(TRIGGER),
        "{what}: {message}"
    );
}

#[tokio::test]
async fn the_plugins_lifecycle_and_health_are_refused_and_its_own_service_still_forwards() {
    let host = TestHost::start(&format!(
        "[plugins.trigger]\ncommand = \"{}\"\nservices = [\"{TRIGGER}\"]\n",
        bin("trigger").display()
    ))
    .await;
    let before = host.serving("trigger", Duration::from_secs(10)).await;
    let mut trigger = TriggerClient::new(through_daemon(&host.socket, Some("trigger")).await);
    let total = |answer: Result<tonic::Response<_>, tonic::Status>| {
        let answer: baton_tests::trigger::TriggerResult =
            answer.expect("OnWrite is forwarded").into_inner();
        answer.total
    };
    assert_eq!(total(trigger.on_write(batch("a", &[1.0, 2.0])).await), 2);

    let to_plugin = through_daemon(&host.socket, Some("trigger")).await;
    let mut lifecycle = PluginClient::new(to_plugin.clone());
    refused("Describe", lifecycle.describe(DescribeRequest {}).await);
    refused(
        "Invoke",
        lifecycle
            .invoke(InvokeRequest {
                method: "total".into(),
                ..Default::default()
            })
            .await,
    );
    refused(
        "Snapshot",
        lifecycle.snapshot(SnapshotRequest::default()).await,
    );
    // A forged state, well formed: 1000 points never written.
    let data = 1000u64.to_le_bytes().to_vec();
    let forged = StateChunk {
        schema_version: 1,
        seq: 0,
        checksum: crc32fast::hash(&data),
        total_bytes: data.len() as u64,
        data: data.into(),
        last: true,
        ..Default::default()
    };
    refused(
        "Restore",
        lifecycle.restore(tokio_stream::iter([forged])).await,
    );
    refused("Shutdown", lifecycle.shutdown(ShutdownRequest {}).await);
    let mut health = HealthClient::new(to_plugin);
    let check = HealthCheckRequest {
        service: String::new(),
    };
    refused("Health/Check", health.check(check.clone()).await);
    refused("Health/Watch", health.watch(check).await);

    // The plugin never saw any of it: the same process, no crash counted, its state
    // as its own calls left it.
    let after = host.status("trigger").await;
    assert_eq!(
        (after.state, after.generation, after.pid, after.restarts),
        (
            PluginState::Serving as i32,
            before.generation,
            before.pid,
            0
        )
    );
    assert_eq!(total(trigger.on_write(batch("a", &[3.0])).await), 3);
    assert!(after.last_error.is_empty(), "{}", after.last_error);
}
