//! What a plugin of each SDK does with what it finds at its socket path: a stale socket
//! (its listener gone) is replaced; anything else is left as it is, and the plugin
//! exits with an error naming the path, as the host does with its own socket.

use std::time::Duration;

use baton_proto::plugin::DescribeRequest;
use baton_proto::plugin::plugin_client::PluginClient;
use baton_tests::{SDK_START, SDK_TEST_TOKEN, SdkPlugin, for_each_sdk, with_tokens};

#[tokio::test]
async fn no_sdk_deletes_a_file_or_a_live_socket_at_its_socket_path() {
    for_each_sdk(leaves_what_is_not_a_stale_socket).await;
}

async fn leaves_what_is_not_a_stale_socket(plugin: SdkPlugin) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("plugin.sock");
    let named = path.display().to_string();
    std::fs::write(&path, "precious").expect("write the file");
    let (code, stderr) = plugin
        .launch(&path, Some(SDK_TEST_TOKEN))
        .exit(SDK_START)
        .await?;
    if std::fs::read_to_string(&path).ok().as_deref() != Some("precious") {
        return Err("the regular file at the socket path was deleted".into());
    }
    if code.is_none_or(|c| c == 0) || !stderr.contains(&named) || !stderr.contains("not a socket") {
        return Err(format!(
            "over a regular file it exited with {code:?}, not naming {named} as not a \
             socket:\n{stderr}"
        ));
    }

    // Someone else's live socket is not taken over either.
    std::fs::remove_file(&path).expect("remove the file");
    let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
    let (code, stderr) = plugin
        .launch(&path, Some(SDK_TEST_TOKEN))
        .exit(SDK_START)
        .await?;
    if std::os::unix::net::UnixStream::connect(&path).is_err() {
        return Err("it took over a live socket at its socket path".into());
    }
    drop(listener);
    if code.is_none_or(|c| c == 0) || !stderr.contains(&named) {
        return Err(format!(
            "over a live socket it exited with {code:?}, not naming {named}:\n{stderr}"
        ));
    }
    Ok(())
}

#[tokio::test]
async fn every_sdk_replaces_a_stale_socket_at_its_socket_path() {
    for_each_sdk(replaces_a_stale_socket).await;
}

async fn replaces_a_stale_socket(plugin: SdkPlugin) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("plugin.sock");
    // What a killed predecessor leaves: the file of a socket nobody listens on.
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
    let mut launched = plugin.launch(&path, Some(SDK_TEST_TOKEN));
    launched.handshake(SDK_START).await?;
    let described = tokio::time::timeout(
        Duration::from_secs(10),
        PluginClient::new(launched.channel().await)
            .describe(with_tokens(DescribeRequest {}, &[SDK_TEST_TOKEN])),
    )
    .await
    .map_err(|_| "no answer to Describe within 10 s".to_owned())?;
    described.map(drop).map_err(|status| {
        format!(
            "over a stale socket, Describe answered {status:?}\n{}",
            launched.stderr()
        )
    })
}
